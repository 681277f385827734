//! `snapshot run` without `-t` (and no `target` in the configuration): the view goes in a
//! private directory of the run's own, `RUNTIME/views/run-<pid>-<n>` (0700 under the root-only
//! runtime directory), never `/mnt` — the command finds it in `SNAPSHOT_TARGET`, and a `/mnt`
//! in use elsewhere does not matter. The protocol commands keep `/mnt`, as the original tool.

use crate::args::SessionArgs;
use clap::parser::ValueSource;
use std::path::{Path, PathBuf};

/// The private view directory, removed (when empty) on drop with its target lock file: no
/// other session will name this target, and the name is new each run (the files would pile up
/// in the runtime directory until reboot).
#[derive(Debug)]
pub struct PrivateTarget {
    path: PathBuf,
    runtime_dir: PathBuf,
}

impl Drop for PrivateTarget {
    fn drop(&mut self) {
        // Left when not empty: a view still mounted there is `snapshot cleanup`'s to remove,
        // and the lock file with it.
        if let Err(e) = std::fs::remove_dir(&self.path) {
            log::warn!("removing the private target {:?}: {e}", self.path);
            return;
        }
        use snapshot_core::lock::TargetLock;
        match TargetLock::remove_unused(&self.runtime_dir, &self.path) {
            Ok(true) => {}
            Ok(false) => log::warn!("the lock of the private target {:?} is held", self.path),
            Err(e) => log::warn!(
                "removing the lock of the private target {:?}: {e}",
                self.path
            ),
        }
    }
}

/// Points `args.target` at a fresh private directory unless the command line or the
/// configuration named one. `matches` are `run`'s.
pub fn private_unless_given(
    args: &mut SessionArgs,
    matches: &clap::ArgMatches,
) -> Result<Option<PrivateTarget>, String> {
    let on_command_line = matches.value_source("target") == Some(ValueSource::CommandLine);
    // Not root: the session refuses with its own status before using any target.
    if on_command_line || args.target_from_config || !snapshot_core::sys::is_root() {
        return Ok(None);
    }
    let path = make(&args.runtime_dir)?;
    args.target = path.clone();
    Ok(Some(PrivateTarget {
        path,
        runtime_dir: args.runtime_dir.clone(),
    }))
}

fn make(runtime_dir: &Path) -> Result<PathBuf, String> {
    let views = runtime_dir.join("views");
    use std::os::unix::fs::DirBuilderExt;
    // Checked root-only all the way up (refused otherwise): a plain path below is safe.
    snapshot_core::lock::private_child(runtime_dir, "views", true)
        .map_err(|e| format!("the private target's directory: {e}"))?;
    for n in 0..100u32 {
        let path = views.join(format!("run-{}-{n}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("creating a private target in {views:?}: {e}")),
        }
    }
    Err(format!("{views:?}: no free name for a private target"))
}
