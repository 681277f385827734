//! The example provider scripts shipped in `examples/filesystems.d/`, embedded at build time
//! (the VM guest's payload carries test executables, not the source tree) and installed by a
//! test into a scripts directory the trust rule accepts.
//!
//! Declare from a test file with `mod common;` and
//! `#[path = "common/examples.rs"] mod examples;`.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// `examples/filesystems.d/50-lvm`: classic and thin LVM snapshots.
pub const LVM: (&str, &str) = (
    "50-lvm",
    include_str!("../../../../examples/filesystems.d/50-lvm"),
);

/// `examples/filesystems.d/60-zfs`: ZFS snapshots.
pub const ZFS: (&str, &str) = (
    "60-zfs",
    include_str!("../../../../examples/filesystems.d/60-zfs"),
);

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh scripts directory `/var/tmp/snaptest-scripts-<pid>-<seq>` (root's, 0755: the trust
/// rule wants every directory up to `/` writable by root only, or sticky) holding the given
/// scripts, root's and 0755. Drop removes it.
#[derive(Debug)]
pub struct ScriptsDir {
    pub path: PathBuf,
}

impl ScriptsDir {
    pub fn with(scripts: &[(&str, &str)]) -> Self {
        let path = PathBuf::from(format!(
            "/var/tmp/snaptest-scripts-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("creating {path:?}: {e}"));
        let dir = ScriptsDir { path };
        set_mode(&dir.path, 0o755);
        for (name, body) in scripts {
            let file = dir.path.join(name);
            std::fs::write(&file, body).unwrap_or_else(|e| panic!("writing {file:?}: {e}"));
            set_mode(&file, 0o755);
        }
        dir
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {path:?}: {e}"));
}

impl Drop for ScriptsDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("removing {}: {e}", self.path.display());
        }
    }
}
