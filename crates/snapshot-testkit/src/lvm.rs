//! LVM fixtures (`snapshot_fixtures::lvm`, re-exported) and the skip-or-fail rule of the
//! LVM tests.

pub use snapshot_fixtures::lvm::*;

use crate::find_tool;
use std::path::Path;

/// True when the LVM tests can run: root, device-mapper (`/dev/mapper/control`), loop
/// devices and the LVM and mkfs tools. Otherwise it panics when `CI` is set (a privileged test
/// never passes by skipping), and says `SKIPPED` on stderr and returns false when not.
pub fn require_lvm(test: &str) -> bool {
    let missing = if !rustix::process::geteuid().is_root() {
        Some("not running as root".to_owned())
    } else if !Path::new("/dev/mapper/control").exists() {
        Some("no device-mapper (/dev/mapper/control); run `cargo xtask vm-test`".to_owned())
    } else if !Path::new("/dev/loop-control").exists() {
        Some("no loop device support".to_owned())
    } else {
        let absent: Vec<&str> = TOOLS
            .iter()
            .copied()
            .filter(|t| find_tool(t).is_none())
            .collect();
        (!absent.is_empty()).then(|| format!("missing tools: {}", absent.join(", ")))
    };
    match missing {
        None => true,
        Some(reason) if std::env::var_os("CI").is_some() => {
            panic!("{test}: cannot run LVM test: {reason}")
        }
        Some(reason) => {
            eprintln!("SKIPPED {test}: {reason}");
            false
        }
    }
}
