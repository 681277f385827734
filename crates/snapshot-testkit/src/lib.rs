//! Dev-only test fixtures for snapshot's privileged tests: the RAII fixtures of
//! `snapshot-fixtures` (scratch directories, filesystems on loop devices, LVM, ZFS; re-exported
//! here), the skip-or-fail rule of privileged tests ([`require_privileges`], `CI` set: fail),
//! the provider conformance suite and proptest settings.

pub mod conformance;
pub mod lvm;
pub mod prop;
pub mod zfs;

pub use snapshot_fixtures::{
    db, find_tool, loops_backed_by, mounts_under, run, FsKind, LoopFs, MountedFs, Scratch,
    TestMount, PREFIX,
};
use std::path::Path;

/// Tools the privileged tests run.
const TOOLS: &[&str] = &["losetup", "mkfs.ext4", "mkfs.xfs", "mkfs.btrfs"];

fn missing_privilege() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not running as root".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("/dev/loop-control does not exist (no loop device support)".into());
    }
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|t| find_tool(t).is_none())
        .collect();
    if !missing.is_empty() {
        return Some(format!("missing tools: {}", missing.join(", ")));
    }
    None
}

/// True when privileged tests can run (root, /dev/loop-control, losetup, mkfs.ext4/xfs/btrfs).
///
/// Otherwise: with `CI` set it panics (a privileged test never passes by skipping in CI);
/// without, it says `SKIPPED <test>: <reason>` on stderr and returns false.
pub fn require_privileges(test: &str) -> bool {
    match missing_privilege() {
        None => true,
        Some(reason) if std::env::var_os("CI").is_some() => {
            panic!("{test}: cannot run privileged test: {reason}")
        }
        Some(reason) => {
            eprintln!("SKIPPED {test}: {reason}");
            false
        }
    }
}

/// Sets the permission bits of `path` (tests make files with the modes they test, explicitly).
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// The permission bits of `path` itself (a symlink's own, not its target's).
pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_fixtures_clean_up() {
        if !require_privileges("loop_fixtures_clean_up") {
            return;
        }
        let scratch = Scratch::new("fixtures").unwrap();
        for kind in FsKind::ALL {
            let mp = scratch.join(kind.name());
            let fs = LoopFs::new(&format!("fixture-{}", kind.name()), kind, 0, &mp).unwrap();
            fs.write("dir/file", "hello").unwrap();
            assert_eq!(
                std::fs::read_to_string(mp.join("dir/file")).unwrap(),
                "hello"
            );
            assert_eq!(mounts_under(&mp), vec![mp.clone()]);
            let backing = fs.backing.clone();
            let device = fs.device.clone();
            assert_eq!(loops_backed_by(&backing), vec![device.clone()]);
            drop(fs);
            assert!(
                mounts_under(&mp).is_empty(),
                "{} still mounted",
                kind.name()
            );
            assert!(
                loops_backed_by(&backing).is_empty(),
                "{} still attached",
                device.display()
            );
            assert!(!backing.exists(), "{} left", backing.display());
        }
    }

    #[test]
    fn failed_construction_undoes_its_steps() {
        if !require_privileges("failed_construction_undoes_its_steps") {
            return;
        }
        let scratch = Scratch::new("failing").unwrap();
        // A mount point under a regular file cannot be created: fails after mkfs.
        std::fs::write(scratch.join("file"), "").unwrap();
        let mp = scratch.join("file/mnt");
        let before = loops_backed_by(Path::new("/var/tmp/snaptest-failing-"));
        let err = LoopFs::new("failing", FsKind::Ext4, 16, &mp).unwrap_err();
        assert!(format!("{err:#}").contains("creating"), "{err:#}");
        assert_eq!(
            loops_backed_by(Path::new("/var/tmp/snaptest-failing-")),
            before
        );
    }
}
