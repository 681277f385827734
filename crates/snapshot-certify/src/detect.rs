//! What this machine offers: for each provider × filesystem, whether its fixtures can be built
//! here (kernel support, tools), and if not, why — so that a run says what it skipped instead
//! of passing in silence. Nothing is changed: a kernel module counts as present when it is
//! loaded, built in, or loadable (`modprobe -n`); the fixture loads it when it builds.

use crate::fixtures::{Backing, Kind, ProviderSpec};
use snapshot_fixtures::{find_tool, FsKind};
use std::path::Path;
use std::process::{Command, Stdio};

/// Why `spec` cannot certify `kind` on this machine, or `None` when it can.
pub fn unavailable(spec: &ProviderSpec, kind: Kind, scripts: Option<&Path>) -> Option<String> {
    let mut missing: Vec<String> = Vec::new();
    if spec.needs_scripts && spec.example.is_none() && scripts.is_none() {
        return Some("needs the scripts to certify (--scripts-dir DIR)".into());
    }
    if !Path::new("/dev/loop-control").exists() && !module("loop") {
        missing.push("loop devices (/dev/loop-control; module loop)".into());
    }
    let mut tools: Vec<&str> = vec!["losetup"];
    match kind {
        Kind::Fs(k) => {
            tools.push(k.mkfs().0);
            if !filesystem(k.name()) {
                missing.push(format!("{} in the kernel", k.name()));
            }
            if k == FsKind::Btrfs {
                tools.push("btrfs");
            }
        }
        Kind::Zfs => {}
    }
    match spec.backing {
        Backing::Plain => {}
        Backing::Reflink => {
            // The backing files sit in a btrfs made for the run, so that they can be cloned.
            tools.push("mkfs.btrfs");
            if !filesystem("btrfs") {
                missing.push("btrfs in the kernel (holds the backing files to clone)".into());
            }
        }
        Backing::LvmClassic | Backing::LvmThin => {
            tools.extend(snapshot_fixtures::lvm::TOOLS);
            if !Path::new("/dev/mapper/control").exists() && !module("dm_mod") {
                missing.push("device-mapper (/dev/mapper/control; module dm_mod)".into());
            } else if spec.backing == Backing::LvmClassic && !module("dm_snapshot") {
                missing.push("device-mapper snapshots (module dm_snapshot)".into());
            } else if spec.backing == Backing::LvmThin && !module("dm_thin_pool") {
                missing.push("device-mapper thin provisioning (module dm_thin_pool)".into());
            }
            if spec.backing == Backing::LvmThin {
                // lvm2 checks a thin pool's metadata with it on activation.
                tools.push("thin_check");
            }
        }
        Backing::ZfsPool => {
            tools.extend(["zfs", "zpool"]);
            if !Path::new("/dev/zfs").exists() && !module("zfs") {
                missing.push("ZFS in the kernel (/dev/zfs; module zfs)".into());
            }
        }
    }
    tools.sort_unstable();
    tools.dedup();
    let absent: Vec<&str> = tools
        .into_iter()
        .filter(|t| find_tool(t).is_none())
        .collect();
    if !absent.is_empty() {
        missing.push(format!("tools {}", absent.join(", ")));
    }
    (!missing.is_empty()).then(|| format!("missing {}", missing.join("; ")))
}

/// A filesystem type the kernel has (`/proc/filesystems`) or can load.
fn filesystem(name: &str) -> bool {
    let listed = std::fs::read_to_string("/proc/filesystems")
        .is_ok_and(|t| t.lines().any(|l| l.split_whitespace().last() == Some(name)));
    listed || module(name)
}

/// A kernel module that is loaded or built in (`/sys/module/NAME`), or that `modprobe -n`
/// could load.
fn module(name: &str) -> bool {
    if Path::new("/sys/module").join(name).exists() {
        return true;
    }
    let Some(modprobe) = find_tool("modprobe") else {
        return false;
    };
    Command::new(modprobe)
        .args(["-n", "-q", name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::PROVIDERS;

    #[test]
    fn the_script_provider_needs_scripts() {
        let script = PROVIDERS.iter().find(|p| p.name == "script").unwrap();
        let why = unavailable(script, Kind::EXT4, None).unwrap();
        assert!(why.contains("--scripts-dir"), "{why}");
    }

    #[test]
    fn reasons_name_what_is_missing() {
        // Whatever this machine has, a reason is one line naming what is missing.
        for p in PROVIDERS {
            for k in p.takes {
                if let Some(why) = unavailable(p, *k, Some(Path::new("/x"))) {
                    assert!(why.starts_with("missing ") && !why.contains('\n'), "{why}");
                }
            }
        }
        assert!(!module("snaptest-no-such-module"));
        assert!(!filesystem("snaptest-no-such-fs"));
    }
}
