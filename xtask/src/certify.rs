//! `cargo xtask certify`: the certification harness of `snapshot-certify` (the library of
//! `crates/snapshot-certify`, the same code as the installed tool) with the workspace's own
//! `snapshot`: built here (debug) unless `--snapshot-bin` names one (the VM guest's, which
//! has no cargo).

use anyhow::{bail, Result};
use snapshot_certify::Outcome;
use std::path::PathBuf;

pub use snapshot_certify::CertifyArgs;

pub fn run(args: &CertifyArgs) -> Result<()> {
    let snapshot = match &args.snapshot_bin {
        Some(b) => b.clone(),
        None => {
            crate::install_deps()?;
            crate::run(crate::cargo().args(["build", "--quiet", "-p", "snapshot-cli"]))?;
            snapshot_binary()
        }
    };
    match snapshot_certify::run(args, &snapshot)? {
        Outcome::Passed => Ok(()),
        Outcome::Failed => bail!("certification failed (see the verdicts above)"),
        Outcome::Interrupted => bail!("interrupted: the report is incomplete"),
    }
}

/// The `snapshot` binary built by this xtask: `$CARGO_TARGET_DIR` (relative to the workspace)
/// when set, else `<workspace>/target`.
fn snapshot_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_absolute() {
                t
            } else {
                crate::root().join(t)
            }
        })
        .unwrap_or_else(|| crate::root().join("target"));
    target.join("debug/snapshot")
}
