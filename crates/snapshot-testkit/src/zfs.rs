//! ZFS fixtures (`snapshot_fixtures::zfs`, re-exported) and the skip-or-fail rule of the ZFS
//! tests.

pub use snapshot_fixtures::zfs::*;

use crate::find_tool;
use std::path::Path;

/// True when the ZFS tests can run: root, the `zfs` module (loaded here when needed) and
/// the zfs/zpool tools. Otherwise it panics when `CI` is set (a privileged test never
/// passes by skipping), and says `SKIPPED` on stderr and returns false when not.
pub fn require_zfs(test: &str) -> bool {
    let missing = if !rustix::process::geteuid().is_root() {
        Some("not running as root".to_owned())
    } else if find_tool("zfs").is_none() || find_tool("zpool").is_none() {
        Some("zfs/zpool not found (zfsutils-linux); run `cargo xtask vm-test`".to_owned())
    } else if !Path::new("/dev/zfs").exists() {
        // Loaded on first use, so that guest runs without ZFS tests do not pay for it.
        match zfs_tool("modprobe", &["zfs"]) {
            Ok(_) if Path::new("/dev/zfs").exists() => None,
            Ok(_) => Some("modprobe zfs made no /dev/zfs".to_owned()),
            Err(e) => Some(format!(
                "no ZFS in this kernel ({e:#}); run `cargo xtask vm-test`"
            )),
        }
    } else {
        None
    };
    match missing {
        None => true,
        Some(reason) if std::env::var_os("CI").is_some() => {
            panic!("{test}: cannot run ZFS test: {reason}")
        }
        Some(reason) => {
            eprintln!("SKIPPED {test}: {reason}");
            false
        }
    }
}
