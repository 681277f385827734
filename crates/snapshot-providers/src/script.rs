//! Compatibility with the original tool's provider scripts in `/usr/lib/snapshot/filesystems.d`
//! (docs/DESIGN.md §2.3), called the way the original tool called them:
//!
//! - `SCRIPT snapshot SOURCE TARGET`: snapshot the filesystem mounted at SOURCE and mount the
//!   snapshot at `"$TARGET$SOURCE"` (string concatenation: for SOURCE `/`, TARGET itself), a
//!   directory that exists before the call; exit 0 means "handled", anything else "not mine".
//! - `SCRIPT remove SOURCE TARGET`, with the same two arguments: unmount `"$TARGET$SOURCE"` and
//!   remove the snapshot.
//!
//! TARGET is a private staging root of the session (`RUNTIME/script-INDEX`, 0700 root, under
//! the root-only runtime directory), made for the unit: not the view. The view then gets a
//! read-only clone of the mount at `TARGET + SOURCE`. Scripts are tried in lexical order; the
//! first that handles a filesystem wins.
//!
//! Scripts run as root, in the session's own mount namespace (they see the host's mounts, as
//! the session does), with `PATH` set to the system directories and `LANG`/`LC_ALL=C`, stdin
//! from `/dev/null`, stdout and stderr to the log, in a process group of their own that is
//! killed when a script outlasts the freeze timeout ([`exec::run_hook`], as writer hooks run).
//! The directory and every script must pass the trust rule ([`snapshot_core::trust`]), or
//! the provider declines, naming the one refused.

use serde::{Deserialize, Serialize};
use snapshot_core::exec::{self, HookError};
use snapshot_core::provider::{
    Created, Filesystem, Probe, Provider, ProviderError, SessionContext, UnitRequest,
};
use snapshot_core::sys::DetachedMount;
use snapshot_core::trust::{self, TrustError};
use snapshot_core::writers::hook_executables;
use snapshot_core::{sys, Mount, MountTable};
use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Where the original tool installed its provider scripts.
pub const DEFAULT_DIR: &str = "/usr/lib/snapshot/filesystems.d";

/// How long a script may run when no `--freeze-timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// `PATH` of a script: the system directories, whatever the caller's was (a cron job's lacks
/// the sbin ones, where `lvcreate`, `zfs` and `tune2fs` live).
pub const SCRIPT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const NAME: &str = "script";

/// Bound on unmounts under one staging root, so that a mount that keeps reappearing cannot
/// loop forever.
const MAX_UNMOUNTS: usize = 64;

#[derive(Debug, Clone)]
pub struct ScriptProvider {
    dir: PathBuf,
    timeout: Duration,
}

impl Default for ScriptProvider {
    fn default() -> Self {
        Self::new(DEFAULT_DIR)
    }
}

/// Where a script mounts the snapshot of SOURCE: `"$TARGET$SOURCE"`, the original tool's string
/// concatenation, written without a doubled or trailing slash — for SOURCE `/`, TARGET itself.
/// `None` for a SOURCE that is not absolute or has a `..` component (a mount point never has:
/// mountinfo shows canonical paths), which would lead out of TARGET. Any other bytes (spaces,
/// newlines, non-UTF-8) are kept as they are.
pub fn snapshot_mount_point(target: &Path, source: &Path) -> Option<PathBuf> {
    if !source.has_root() {
        return None;
    }
    let mut at = target.to_path_buf();
    for c in source.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => at.push(name),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(at)
}

impl ScriptProvider {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// How long one call of a script may take before its process group is killed.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The scripts to try, in lexical (byte) order of their names: executable regular files
    /// (symlinks to one count), minus the names writer directories ignore too. A missing
    /// directory holds none.
    pub fn scripts(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut found = hook_executables(&self.dir, "provider script")?;
        found.sort();
        Ok(found.into_iter().map(|(_, path)| path).collect())
    }

    fn no_scripts(&self) -> String {
        format!("no scripts in {}", self.dir.display())
    }

    /// [`scripts`](Self::scripts), each of them and the directory passing the trust rule
    /// ([`trust`]): one refused script refuses them all, since which script takes a
    /// filesystem depends on all of them (the first that exits 0).
    fn trusted_scripts(&self) -> Result<Vec<PathBuf>, ScriptsError> {
        let scripts = self.scripts().map_err(ScriptsError::Read)?;
        if !scripts.is_empty() {
            trust::check("scripts directory", &self.dir)?;
        }
        for script in &scripts {
            trust::check("provider script", script)?;
        }
        Ok(scripts)
    }

    /// `script snapshot SOURCE TARGET` for the script of `data`, into `at`: `Took` when it
    /// mounted the snapshot there; `Passed` (why) when it declined or was killed and left
    /// nothing mounted, so the next script may try; an error when the session cannot go on
    /// (the staging root removed where it can be).
    fn try_script(&self, data: &ScriptData, at: &Path) -> Result<Attempt, ProviderError> {
        let (staging, source) = (&data.staging, &data.source);
        let Some(script) = data.script.as_deref() else {
            return Err(ProviderError::Other(format!(
                "no script to try for {source:?}"
            )));
        };
        // `mkdir -p "$TARGET$SOURCE"` inside the private root, again for each script: one
        // that failed may have removed it.
        if let Err(e) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(at)
        {
            let _ = remove_staging(staging);
            return Err(ProviderError::io(format!("creating {at:?}"), e));
        }
        if let Err(e) = mark_running(staging, script) {
            let _ = remove_staging(staging);
            return Err(ProviderError::io(
                format!("recording {script:?} beside {staging:?}"),
                e,
            ));
        }
        match self.run(script, "snapshot", data) {
            Ok(()) => match is_mounted(at) {
                Ok(true) => {
                    log::info!("{script:?} snapshotted {source:?} at {at:?}");
                    Ok(Attempt::Took)
                }
                Ok(false) => {
                    // The script claims success: let it undo whatever it did make.
                    let hint = if at != staging.as_path() && is_mounted(staging).unwrap_or(false) {
                        " (it mounted at TARGET itself: scripts mount at \"$TARGET$SOURCE\")"
                    } else {
                        ""
                    };
                    let undo = self.undo(script, data);
                    let _ = remove_staging(staging);
                    Err(ProviderError::Other(format!(
                        "filesystems.d script {script:?} exited 0 for {source:?} but \
                         mounted nothing at {at:?}{hint}{undo}"
                    )))
                }
                Err(e) => {
                    let undo = self.undo(script, data);
                    let _ = remove_staging(staging);
                    Err(ProviderError::Other(format!(
                        "after {script:?} snapshot {source:?}: {e}{undo}"
                    )))
                }
            },
            Err(e @ RunFailure::Declined(_)) => {
                log::debug!("{script:?} did not take {source:?}: {e}");
                // A script that failed must not leave a mount for the next one to find.
                unmount_below(staging).map_err(|e| {
                    ProviderError::Other(format!(
                        "{script:?} failed for {source:?} but left a mount under \
                         {staging:?} that cannot be removed: {e}"
                    ))
                })?;
                Ok(Attempt::Passed(format!("{}: {e}", file_name(script))))
            }
            Err(e @ RunFailure::Killed(_)) => {
                log::warn!("provider script {script:?} snapshot {source:?}: {e}");
                let undo = self.undo(script, data);
                if is_mounted_below(staging).unwrap_or(true) {
                    return Err(ProviderError::Other(format!(
                        "{script:?} was killed for {source:?} and left a mount under \
                         {staging:?} that cannot be removed{undo}"
                    )));
                }
                Ok(Attempt::Passed(format!("{}: {e}{undo}", file_name(script))))
            }
        }
    }

    /// `SCRIPT ACTION SOURCE TARGET`, each argument one argv element as it is (no shell).
    fn run(&self, script: &Path, action: &str, data: &ScriptData) -> Result<(), RunFailure> {
        let mut cmd = Command::new(script);
        cmd.arg(action)
            .arg(&data.source)
            .arg(&data.staging)
            .env("PATH", SCRIPT_PATH)
            .env("LANG", "C")
            .env("LC_ALL", "C");
        let label = format!("provider script {}", file_name(script));
        log::debug!("{label}: {action} {:?} {:?}", data.source, data.staging);
        match exec::run_hook(cmd, &label, self.timeout) {
            Ok(exit) if exit.status.success() => Ok(()),
            Ok(exit) if exit.stderr.is_empty() => {
                Err(RunFailure::Declined(exit.status.to_string()))
            }
            Ok(exit) => Err(RunFailure::Declined(format!(
                "{}: {}",
                exit.status, exit.stderr
            ))),
            Err(e @ HookError::Spawn(_)) => Err(RunFailure::Declined(e.to_string())),
            Err(e @ (HookError::TimedOut(_) | HookError::Wait(_))) => {
                Err(RunFailure::Killed(e.to_string()))
            }
        }
    }

    /// After a script claimed success but left no usable snapshot, or was killed: run its
    /// `remove` (so that it can undo what it made), clear the staging root but keep it for
    /// the next script. Returns what went wrong, as a suffix for the error message.
    fn undo(&self, script: &Path, data: &ScriptData) -> String {
        let mut problems = Vec::new();
        if let Err(e) = self.run(script, "remove", data) {
            problems.push(format!("its remove failed too: {e}"));
        }
        if let Err(e) = unmount_below(&data.staging) {
            problems.push(format!("unmounting under {:?}: {e}", data.staging));
        }
        problems.iter().map(|p| format!("; {p}")).collect()
    }
}

/// Why there are no scripts to run.
#[derive(Debug, thiserror::Error)]
enum ScriptsError {
    #[error("{0}")]
    Read(std::io::Error),
    #[error(transparent)]
    Untrusted(#[from] TrustError),
}

/// What one script made of a `create`.
enum Attempt {
    /// It mounted the snapshot at `"$TARGET$SOURCE"`.
    Took,
    /// It declined (or was killed) and left nothing mounted: why, for the error if none takes.
    Passed(String),
}

/// How a script's call went wrong.
#[derive(Debug, thiserror::Error)]
enum RunFailure {
    /// It exited non-zero (with the end of its stderr), or could not be started: by the
    /// convention it made nothing.
    #[error("{0}")]
    Declined(String),
    /// It outlasted the timeout (its process group was killed) or could not be waited for:
    /// what it made is unknown.
    #[error("{0}")]
    Killed(String),
}

impl Provider for ScriptProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn probe(&self, fs: &Filesystem) -> Probe {
        // Whether a script handles this filesystem is only known by running it, which is not
        // side-effect free: accept every mount while there is a script, and let `create`
        // decline when none takes it.
        match self.trusted_scripts() {
            Ok(scripts) if scripts.is_empty() => Probe::Decline(self.no_scripts()),
            Ok(scripts) => Probe::accept(fs.mount.id.to_string(), &ProbeData { scripts }, true),
            Err(ScriptsError::Read(e)) => {
                Probe::Decline(format!("cannot read {}: {e}", self.dir.display()))
            }
            Err(e @ ScriptsError::Untrusted(_)) => Probe::Decline(e.to_string()),
        }
    }

    fn expected(&self, unit: &UnitRequest, ctx: &SessionContext) -> Created {
        // Which script will handle it is not known yet; without one, `remove` can still clear
        // the staging root.
        let data = ScriptData {
            script: None,
            source: source_of(unit).unwrap_or_default(),
            staging: staging_root(ctx),
        };
        Created::new(NAME, &unit.unit, ctx.object_name(), true, &data)
            .unwrap_or_else(|_| Created::planned(NAME, unit, ctx, true))
    }

    fn create(&self, unit: &UnitRequest, ctx: &SessionContext) -> Result<Created, ProviderError> {
        let source = source_of(unit)
            .ok_or_else(|| ProviderError::Other(format!("unit {}: no mount", unit.unit)))?;
        // The directory is read again rather than trusting the plan's list: it is what will
        // actually run, and file names need not survive JSON.
        let scripts = self.trusted_scripts().map_err(|e| match e {
            ScriptsError::Read(e) => ProviderError::io(format!("reading {:?}", self.dir), e),
            ScriptsError::Untrusted(e) => ProviderError::Declined(e.to_string()),
        })?;
        if scripts.is_empty() {
            return Err(ProviderError::Declined(self.no_scripts()));
        }

        let staging = staging_root(ctx);
        let at = snapshot_mount_point(&staging, &source).ok_or_else(|| {
            ProviderError::Declined(format!("{source:?} is not an absolute, plain path"))
        })?;
        // Fails when it exists: it must be this session's alone.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(|e| ProviderError::io(format!("creating staging root {staging:?}"), e))?;

        let mut failures = Vec::new();
        for script in &scripts {
            let data = ScriptData {
                script: Some(script.clone()),
                source: source.clone(),
                staging: staging.clone(),
            };
            match self.try_script(&data, &at)? {
                Attempt::Took => {
                    return Created::new(NAME, &unit.unit, ctx.object_name(), true, &data);
                }
                Attempt::Passed(why) => failures.push(why),
            }
        }
        if let Err(e) = remove_staging(&staging) {
            log::warn!("removing staging root {staging:?}: {e}");
        }
        Err(ProviderError::Declined(format!(
            "no filesystems.d script took {source:?}: {}",
            failures.join("; ")
        )))
    }

    fn mount(&self, created: &Created, _mount: &Mount) -> Result<DetachedMount, ProviderError> {
        let data: ScriptData = created.data()?;
        let at = data.mount_point()?;
        sys::clone_beneath(&at, Path::new("")).map_err(|e| {
            ProviderError::io(
                format!("cloning {at:?} (snapshot of {:?}) read-only", data.source),
                e,
            )
        })
    }

    fn remove(&self, created: &Created) -> Result<(), ProviderError> {
        let data: ScriptData = created.data()?;
        let staging = &data.staging;
        // The staging root goes last: when it is gone, everything is.
        match std::fs::symlink_metadata(staging) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                log::debug!("{}: {staging:?} already gone", created.name);
                return remove_marker(staging).map_err(|e| {
                    ProviderError::io(format!("removing the marker of {staging:?}"), e)
                });
            }
            Err(e) => return Err(ProviderError::io(format!("checking {staging:?}"), e)),
            Ok(_) => {}
        }
        // Journaled before `create` only: the marker beside the staging root says which
        // script was running (a crash before the session recorded what `create` made).
        let marked = data
            .script
            .is_none()
            .then(|| marked_script(staging))
            .flatten();
        let script_result = match data.script.as_ref().or(marked.as_ref()) {
            // The script comes from the journal or the marker: checked again before it runs.
            Some(script) => match trust::check("provider script", script) {
                Ok(_) => self.run(script, "remove", &data).map_err(|e| {
                    ProviderError::Other(format!(
                        "{script:?} remove {:?} {staging:?}: {e}",
                        data.source
                    ))
                }),
                Err(e) => Err(ProviderError::Other(e.to_string())),
            },
            None => {
                // Journaled before `create` and never completed: no script is known to have
                // taken it, and running another's `remove` could undo what is not ours.
                log::warn!(
                    "{}: no record of which filesystems.d script handled {:?}; only clearing \
                     {staging:?}",
                    created.name,
                    data.source
                );
                Ok(())
            }
        };
        if let Err(e) = &script_result {
            log::warn!("{e}");
        }
        // Whatever the script did, the session is over: nothing may stay mounted there.
        unmount_below(staging)
            .map_err(|e| ProviderError::io(format!("unmounting under {staging:?}"), e))?;
        // The script failing keeps the staging root, so that a later `cleanup` runs its
        // `remove` again.
        script_result?;
        remove_staging(staging)
            .map_err(|e| ProviderError::io(format!("removing staging root {staging:?}"), e))
    }
}

/// Beside the staging root `RUNTIME/script-INDEX`: `script-INDEX.script`, naming the script
/// that runs (or ran) `snapshot` there, written before it starts. `remove` given the record
/// journaled before `create` reads it, so that a crash between `create` and the journal's
/// record of it still gets the right script's `remove`. In the private runtime directory,
/// like the staging root; gone with it.
fn marker_of(staging: &Path) -> PathBuf {
    let mut name = staging.file_name().unwrap_or_default().to_owned();
    name.push(".script");
    staging.with_file_name(name)
}

fn mark_running(staging: &Path, script: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(marker_of(staging))?;
    std::io::Write::write_all(&mut f, script.as_os_str().as_bytes())?;
    f.sync_all()
}

fn marked_script(staging: &Path) -> Option<PathBuf> {
    let bytes = std::fs::read(marker_of(staging)).ok()?;
    (!bytes.is_empty()).then(|| PathBuf::from(OsString::from_vec(bytes)))
}

fn file_name(script: &Path) -> String {
    script.file_name().map_or_else(
        || script.display().to_string(),
        |n| n.to_string_lossy().into(),
    )
}

/// SOURCE: where the unit's (first) mount is mounted.
fn source_of(unit: &UnitRequest) -> Option<PathBuf> {
    unit.mounts.first().map(|m| m.mount_point.clone())
}

/// TARGET for the scripts: `RUNTIME/script-INDEX`, with the runtime directory resolved,
/// because mountinfo shows resolved paths and the mounts under it are looked up there.
fn staging_root(ctx: &SessionContext) -> PathBuf {
    std::fs::canonicalize(&ctx.runtime_dir)
        .unwrap_or_else(|_| ctx.runtime_dir.clone())
        .join(format!("script-{}", ctx.index))
}

fn is_mounted(path: &Path) -> std::io::Result<bool> {
    let table = MountTable::read().map_err(std::io::Error::other)?;
    Ok(table.mounted_at(path).is_some())
}

fn is_mounted_below(root: &Path) -> std::io::Result<bool> {
    let table = MountTable::read().map_err(std::io::Error::other)?;
    let found = table.at_or_below(root).next().is_some();
    Ok(found)
}

/// Unmounts whatever is mounted at or below `root` (the private staging root, where only the
/// session and its scripts mount), the last mounted first, until nothing is.
fn unmount_below(root: &Path) -> std::io::Result<()> {
    for _ in 0..MAX_UNMOUNTS {
        let table = MountTable::read().map_err(std::io::Error::other)?;
        let Some(m) = table.at_or_below(root).last() else {
            return Ok(());
        };
        log::debug!("unmounting {:?}", m.mount_point);
        sys::unmount_path(&m.mount_point)?;
    }
    if is_mounted_below(root)? {
        return Err(std::io::Error::other(format!(
            "still mounted after {MAX_UNMOUNTS} unmounts"
        )));
    }
    Ok(())
}

/// Deletes the staging root and what the scripts left in it, once nothing is mounted there
/// (checked just before: a mount below would have its files deleted through it). The path
/// may come from a journal: only a directory named `script-*`, ours (root's) and private to
/// us (as `create` made it), is deleted with its contents; anything else only when empty.
fn remove_staging(root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if is_mounted_below(root)? {
        return Err(std::io::Error::other(format!(
            "{root:?}: something is still mounted under it"
        )));
    }
    let meta = match std::fs::symlink_metadata(root) {
        Err(e) if e.kind() == ErrorKind::NotFound => return remove_marker(root),
        other => other?,
    };
    let ours = meta.is_dir()
        && meta.uid() == rustix::process::geteuid().as_raw()
        && meta.mode() & 0o077 == 0
        && root
            .file_name()
            .is_some_and(|n| n.as_bytes().starts_with(b"script-"));
    let removed = if ours {
        std::fs::remove_dir_all(root)
    } else {
        std::fs::remove_dir(root)
    };
    match removed {
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        other => other?,
    }
    remove_marker(root)
}

fn remove_marker(staging: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(marker_of(staging)) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The plan of a script unit ([`UnitRequest::data`]): the scripts there were when probing,
/// for `snapshot plan` (`create` reads the directory again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ProbeData {
    #[serde(with = "snapshot_core::path_json::many")]
    scripts: Vec<PathBuf>,
}

/// What the journal keeps of a script snapshot ([`Created::data`]), to call the script's
/// `remove` with the same arguments from another process. Paths keep any bytes
/// ([`snapshot_core::path_json`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ScriptData {
    /// The script that handled it; `None` (left out) in the record journaled before `create`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "snapshot_core::path_json::option"
    )]
    script: Option<PathBuf>,
    /// SOURCE: the mount point of the filesystem.
    #[serde(with = "snapshot_core::path_json")]
    source: PathBuf,
    /// TARGET: the staging root.
    #[serde(with = "snapshot_core::path_json")]
    staging: PathBuf,
}

impl ScriptData {
    /// Where the snapshot is mounted: `TARGET + SOURCE`.
    fn mount_point(&self) -> Result<PathBuf, ProviderError> {
        snapshot_mount_point(&self.staging, &self.source).ok_or_else(|| {
            ProviderError::Other(format!(
                "script snapshot record: source {:?} is not an absolute, plain path",
                self.source
            ))
        })
    }
}

#[cfg(test)]
#[path = "script_proptests.rs"]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use snapshot_testkit::set_mode;
    use std::io::Write;
    use std::process::Stdio;

    fn tempdir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("snaptest-script-")
            .tempdir()
            .expect("temporary directory")
    }

    /// Writes a file through a child process, so that this test process never holds it open
    /// for writing: a descriptor inherited by a process another test thread forks at that
    /// moment would make executing the script fail with ETXTBSY.
    fn write_file(path: &Path, body: &str, mode: u32) {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(r#"cat > "$1" && chmod "$2" "$1""#)
            .arg("sh")
            .arg(path)
            .arg(format!("{mode:o}"))
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawning sh");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "writing {path:?}");
    }

    /// A script that appends "NAME ARGS" to `log`, then runs `body`.
    fn script(dir: &Path, name: &str, log: &Path, body: &str) -> PathBuf {
        let path = dir.join(name);
        let text = format!(
            "#!/bin/sh\necho \"$(basename \"$0\") $*\" >> '{}'\n{body}\n",
            log.display()
        );
        write_file(&path, &text, 0o755);
        path
    }

    fn read_log(log: &Path) -> Vec<String> {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn fake_mount(id: u64, mount_point: &Path) -> Mount {
        Mount {
            id,
            parent_id: 1,
            major: 0,
            minor: 99,
            root: "/".into(),
            mount_point: mount_point.into(),
            options: "rw,relatime".into(),
            optional: Vec::new(),
            fstype: "ext4".into(),
            source: "/dev/snaptest".into(),
            super_options: "rw".into(),
        }
    }

    fn probe(provider: &ScriptProvider) -> Probe {
        provider.probe(&Filesystem {
            mount: fake_mount(7, Path::new("/srv")),
        })
    }

    /// Unmounts whatever a test left mounted under its own temporary directory (exact mount
    /// points read from the mount table, deepest first), and only then lets the directory be
    /// deleted; if a mount cannot be removed, the directory is leaked rather than deleted
    /// through the mount.
    struct MountGuard(Option<tempfile::TempDir>);

    impl MountGuard {
        fn new() -> Self {
            Self(Some(tempdir()))
        }

        fn path(&self) -> PathBuf {
            std::fs::canonicalize(self.0.as_ref().unwrap().path()).unwrap()
        }
    }

    impl Drop for MountGuard {
        fn drop(&mut self) {
            // No unwrap here: a panic while unwinding would abort the test binary.
            let raw = self.0.as_ref().unwrap().path();
            let base = std::fs::canonicalize(raw).unwrap_or_else(|_| raw.to_owned());
            for _ in 0..MAX_UNMOUNTS {
                let Ok(table) = MountTable::read() else { break };
                let Some(m) = table.at_or_below(&base).last() else {
                    return; // TempDir's own drop removes the files
                };
                if let Err(e) = sys::unmount_path(&m.mount_point) {
                    eprintln!("cleanup: unmounting {:?}: {e}", m.mount_point);
                    let _ = sys::detach_path(&m.mount_point);
                }
            }
            let dir = self.0.take().unwrap().keep();
            eprintln!("cleanup: mounts left under {dir:?}; not deleting it");
        }
    }

    /// A session-like setup: scripts in `root/filesystems.d`, runtime dir `root/run`, the
    /// mount to snapshot at `root/src`, a view directory `root/view`.
    struct Setup {
        root: MountGuard,
        view: PathBuf,
        scripts: PathBuf,
        log: PathBuf,
        ctx: SessionContext,
        request: UnitRequest,
    }

    impl Setup {
        fn new() -> Self {
            let root = MountGuard::new();
            let base = root.path();
            let scripts = base.join("filesystems.d");
            let run = base.join("run");
            let src = base.join("src");
            let view = base.join("view");
            for d in [&scripts, &run, &src, &view] {
                std::fs::create_dir(d).unwrap();
            }
            Self {
                log: base.join("calls.log"),
                ctx: SessionContext {
                    id: "snapshot-0123abcd".into(),
                    index: 3,
                    runtime_dir: run,
                    guard: Default::default(),
                },
                request: UnitRequest {
                    unit: "42".into(),
                    data: serde_json::Value::Null,
                    mounts: vec![fake_mount(42, &src)],
                },
                scripts,
                view,
                root,
            }
        }

        fn provider(&self) -> ScriptProvider {
            ScriptProvider::new(&self.scripts)
        }

        fn src(&self) -> &Path {
            &self.request.mounts[0].mount_point
        }

        /// TARGET: the staging root.
        fn staging(&self) -> PathBuf {
            self.ctx.runtime_dir.join("script-3")
        }

        /// `"$TARGET$SOURCE"`.
        fn at(&self) -> PathBuf {
            snapshot_mount_point(&self.staging(), self.src()).unwrap()
        }

        fn script(&self, name: &str, body: &str) -> PathBuf {
            script(&self.scripts, name, &self.log, body)
        }

        fn calls(&self) -> Vec<String> {
            read_log(&self.log)
        }
    }

    #[test]
    fn probe_declines_when_the_directory_is_missing() {
        let root = tempdir();
        let dir = root.path().join("filesystems.d");
        match probe(&ScriptProvider::new(&dir)) {
            Probe::Decline(reason) => {
                assert_eq!(reason, format!("no scripts in {}", dir.display()))
            }
            other => panic!("expected a decline, got {other:?}"),
        }
    }

    #[test]
    fn probe_declines_for_an_empty_directory() {
        let root = tempdir();
        assert!(matches!(
            probe(&ScriptProvider::new(root.path())),
            Probe::Decline(r) if r.starts_with("no scripts in ")
        ));
    }

    #[test]
    fn probe_ignores_backups_samples_dot_files_and_non_executables() {
        let root = tempdir();
        let dir = root.path();
        for name in [
            ".hidden",
            "lvm~",
            "lvm.bak",
            "lvm.orig",
            "lvm.rpmnew",
            "lvm.rpmorig",
            "lvm.rpmsave",
            "lvm.sample",
            "lvm.dpkg-old",
            "lvm.dpkg-dist",
        ] {
            write_file(&dir.join(name), "#!/bin/sh\nexit 0\n", 0o755);
        }
        write_file(&dir.join("not-executable"), "#!/bin/sh\nexit 0\n", 0o644);
        std::fs::create_dir(dir.join("a-directory")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/snaptest", dir.join("dangling")).unwrap();
        let provider = ScriptProvider::new(dir);
        assert_eq!(provider.scripts().unwrap(), Vec::<PathBuf>::new());
        assert!(matches!(probe(&provider), Probe::Decline(_)));
    }

    #[test]
    fn probe_accepts_with_scripts_in_lexical_order() {
        let root = tempdir();
        let dir = root.path();
        for name in ["20-lvm", "3-zfs", "10-custom", "B-upper", "20-lvm.sample"] {
            write_file(&dir.join(name), "#!/bin/sh\nexit 1\n", 0o755);
        }
        // A symlink to an executable is a script, like in the writer directories.
        std::os::unix::fs::symlink(dir.join("3-zfs"), dir.join("50-link")).unwrap();
        let provider = ScriptProvider::new(dir);
        let expected: Vec<PathBuf> = ["10-custom", "20-lvm", "3-zfs", "50-link", "B-upper"]
            .iter()
            .map(|n| dir.join(n))
            .collect();
        assert_eq!(provider.scripts().unwrap(), expected);
        match probe(&provider) {
            Probe::Accept {
                unit,
                data,
                consistent,
            } => {
                assert_eq!(unit, "7");
                assert!(consistent);
                let plan = ProbeData::deserialize(&data).unwrap();
                assert_eq!(plan.scripts, expected);
            }
            other => panic!("expected an accept, got {other:?}"),
        }
        assert_eq!(provider.name(), "script");
    }

    #[test]
    fn probe_declines_when_a_script_fails_the_trust_rule() {
        let root = tempdir();
        let dir = root.path().canonicalize().unwrap();
        write_file(&dir.join("10-fine"), "#!/bin/sh\nexit 1\n", 0o755);
        let open = dir.join("20-open");
        write_file(&open, "#!/bin/sh\nexit 1\n", 0o757);
        let provider = ScriptProvider::new(&dir);
        match probe(&provider) {
            Probe::Decline(r) => assert!(
                r.starts_with(&format!(
                    "provider script {}: not trusted: {} is writable by others (mode 0757)",
                    open.display(),
                    open.display()
                )),
                "{r}"
            ),
            other => panic!("expected a decline, got {other:?}"),
        }
        // Positive control.
        set_mode(&open, 0o755);
        assert!(matches!(probe(&provider), Probe::Accept { .. }));
    }

    #[test]
    fn probe_declines_when_the_directory_fails_the_trust_rule() {
        let root = tempdir();
        let dir = root.path().canonicalize().unwrap().join("filesystems.d");
        std::fs::create_dir(&dir).unwrap();
        write_file(&dir.join("10-lvm"), "#!/bin/sh\nexit 1\n", 0o755);
        set_mode(&dir, 0o775);
        match probe(&ScriptProvider::new(&dir)) {
            Probe::Decline(r) => assert!(
                r.starts_with(&format!(
                    "scripts directory {}: not trusted: {} is writable by group (mode 0775)",
                    dir.display(),
                    dir.display()
                )),
                "{r}"
            ),
            other => panic!("expected a decline, got {other:?}"),
        }
        set_mode(&dir, 0o755);
        assert!(matches!(
            probe(&ScriptProvider::new(&dir)),
            Probe::Accept { .. }
        ));
    }

    #[test]
    fn create_runs_no_script_when_one_fails_the_trust_rule() {
        let s = Setup::new();
        s.script("10-first", "exit 1");
        let open = s.script("20-open", "exit 1");
        set_mode(&open, 0o777);
        let err = s.provider().create(&s.request, &s.ctx).unwrap_err();
        assert!(
            matches!(&err, ProviderError::Declined(r) if r.contains("not trusted")),
            "{err}"
        );
        assert!(s.calls().is_empty(), "{:?}", s.calls());
        assert!(!s.staging().exists());
    }

    #[test]
    fn remove_does_not_run_a_script_that_fails_the_trust_rule() {
        let s = Setup::new();
        let script = s.script("10-remover", "exit 0");
        std::fs::create_dir(s.staging()).unwrap();
        let created = created_for(&s, &script);
        set_mode(&script, 0o775);
        let err = s.provider().remove(&created).unwrap_err();
        assert!(err.to_string().contains("not trusted"), "{err}");
        assert!(s.calls().is_empty());
        // Kept, so that cleanup can try again once the script is fixed.
        assert!(s.staging().is_dir());
        set_mode(&script, 0o755);
        s.provider().remove(&created).unwrap();
        assert_eq!(s.calls().len(), 1);
        assert!(!s.staging().exists());
    }

    #[test]
    fn default_directory() {
        assert_eq!(
            ScriptProvider::default().dir(),
            Path::new("/usr/lib/snapshot/filesystems.d")
        );
    }

    #[test]
    fn create_without_scripts_declines_and_creates_nothing() {
        let s = Setup::new();
        let err = s.provider().create(&s.request, &s.ctx).unwrap_err();
        assert!(
            matches!(&err, ProviderError::Declined(r) if r.starts_with("no scripts in")),
            "{err}"
        );
        assert!(!s.staging().exists());
    }

    #[test]
    fn create_declines_and_cleans_up_when_no_script_takes_it() {
        let s = Setup::new();
        let mode_log = s.root.path().join("mode");
        s.script(
            "10-first",
            &format!(
                "stat -c %a \"$3\" > '{}'; echo 'not mine' >&2; exit 1",
                mode_log.display()
            ),
        );
        s.script("20-second", "exit 3");
        let err = s.provider().create(&s.request, &s.ctx).unwrap_err();
        let ProviderError::Declined(reason) = &err else {
            panic!("expected a decline, got {err:?}");
        };
        assert!(reason.contains(&format!("{:?}", s.src())), "{reason}");
        let first = reason
            .find("10-first: exit status: 1: not mine")
            .expect(reason);
        let second = reason.find("20-second: exit status: 3").expect(reason);
        assert!(first < second, "{reason}");
        let staging = s.staging();
        assert_eq!(
            s.calls(),
            [
                format!(
                    "10-first snapshot {} {}",
                    s.src().display(),
                    staging.display()
                ),
                format!(
                    "20-second snapshot {} {}",
                    s.src().display(),
                    staging.display()
                ),
            ]
        );
        assert!(!staging.exists(), "staging directory left behind");
        // Private to root while it existed.
        assert_eq!(std::fs::read_to_string(mode_log).unwrap().trim(), "700");
    }

    #[test]
    fn create_fails_when_a_script_exits_0_but_mounts_nothing() {
        let s = Setup::new();
        s.script("10-liar", "exit 0");
        s.script("20-never", "exit 0");
        let err = s.provider().create(&s.request, &s.ctx).unwrap_err();
        assert!(matches!(err, ProviderError::Other(_)), "{err:?}");
        assert!(err.to_string().contains("mounted nothing"), "{err}");
        let staging = s.staging();
        // Its `remove` ran so that it can undo whatever it made; the next script did not run.
        assert_eq!(
            s.calls(),
            [
                format!(
                    "10-liar snapshot {} {}",
                    s.src().display(),
                    staging.display()
                ),
                format!("10-liar remove {} {}", s.src().display(), staging.display()),
            ]
        );
        assert!(!staging.exists(), "staging directory left behind");
    }

    #[test]
    fn mount_point_is_target_and_source_concatenated() {
        let t = Path::new("/run/snapshot/snapshot-1/script-0");
        let at = |src: &[u8]| {
            snapshot_mount_point(t, Path::new(std::ffi::OsStr::from_bytes(src)))
                .map(|p| p.into_os_string().into_vec())
        };
        // SOURCE `/`: TARGET itself, no trailing or doubled slash.
        assert_eq!(at(b"/"), Some(t.as_os_str().as_bytes().to_vec()));
        assert_eq!(
            at(b"/srv/data"),
            Some(b"/run/snapshot/snapshot-1/script-0/srv/data".to_vec())
        );
        assert_eq!(at(b"//srv//data/"), at(b"/srv/data"));
        assert_eq!(at(b"/srv/./data"), at(b"/srv/data"));
        // Odd bytes stay as they are.
        assert_eq!(
            at(b"/srv/a b\nc\xff"),
            Some(b"/run/snapshot/snapshot-1/script-0/srv/a b\nc\xff".to_vec())
        );
        // Nothing that could lead out of TARGET.
        assert_eq!(at(b"srv"), None);
        assert_eq!(at(b""), None);
        assert_eq!(at(b"/srv/../etc"), None);
        assert_eq!(at(b"/.."), None);
    }

    #[test]
    fn scripts_get_source_and_target_as_single_arguments_and_a_system_environment() {
        let mut s = Setup::new();
        // A mount point with a space and a newline: each argument one argv element.
        let odd = s.root.path().join("odd dir\nx");
        std::fs::create_dir(&odd).unwrap();
        s.request.mounts[0].mount_point = odd.clone();
        let out = s.root.path().join("seen");
        std::fs::create_dir(&out).unwrap();
        s.script(
            "10-look",
            &format!(
                "cd '{}' || exit 9\nprintf %s \"$#\" > argc\nprintf %s \"$2\" > source\n\
                 printf %s \"$3\" > target\n[ -d \"$3$2\" ] && echo yes > made\n\
                 stat -c %a \"$3\" > mode\nprintf %s \"$PATH\" > path\n\
                 printf %s \"$LANG/$LC_ALL\" > lang\nexit 1",
                out.display()
            ),
        );
        let err = s.provider().create(&s.request, &s.ctx).unwrap_err();
        assert!(matches!(err, ProviderError::Declined(_)), "{err:?}");
        let read = |n: &str| std::fs::read(out.join(n)).unwrap();
        assert_eq!(read("argc"), b"3");
        assert_eq!(read("source"), odd.as_os_str().as_bytes());
        assert_eq!(read("target"), s.staging().as_os_str().as_bytes());
        // `"$TARGET$SOURCE"` existed before the call, in a root-only TARGET.
        assert_eq!(read("made"), b"yes\n");
        assert_eq!(read("mode"), b"700\n");
        assert_eq!(read("path"), SCRIPT_PATH.as_bytes());
        assert_eq!(read("lang"), b"C/C");
        assert!(!s.staging().exists(), "staging root left behind");
    }

    #[test]
    fn a_hung_script_is_killed_with_its_group_and_the_next_one_is_tried() {
        let s = Setup::new();
        let pidfile = s.root.path().join("child.pid");
        s.script(
            "10-hang",
            &format!(
                "case \"$1\" in snapshot) sleep 1000 & echo $! > '{}'; wait ;; \
                 remove) exit 0 ;; esac",
                pidfile.display()
            ),
        );
        s.script("20-decline", "echo 'not mine either' >&2; exit 1");
        let provider = s.provider().with_timeout(Duration::from_millis(700));
        let started = std::time::Instant::now();
        let err = provider.create(&s.request, &s.ctx).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(15));
        let ProviderError::Declined(reason) = &err else {
            panic!("expected a decline, got {err:?}");
        };
        assert!(
            reason.contains("10-hang: did not finish within 700ms; its process group was killed"),
            "{reason}"
        );
        assert!(
            reason.contains("20-decline: exit status: 1: not mine either"),
            "{reason}"
        );
        let src = s.src().display();
        let stg = s.staging();
        let stg = stg.display();
        // It was asked to undo what it may have made, with the same arguments.
        assert_eq!(
            s.calls(),
            [
                format!("10-hang snapshot {src} {stg}"),
                format!("10-hang remove {src} {stg}"),
                format!("20-decline snapshot {src} {stg}"),
            ]
        );
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        // Its child went with it (gone, or a zombie for init to reap).
        while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
            st.rsplit_once(") ")
                .is_some_and(|(_, r)| !r.starts_with('Z'))
        }) {
            assert!(
                std::time::Instant::now() < deadline,
                "the script's child {pid} survived"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!s.staging().exists(), "staging root left behind");
    }

    #[test]
    fn create_refuses_an_existing_staging_directory() {
        let s = Setup::new();
        s.script("10-any", "exit 1");
        std::fs::create_dir(s.staging()).unwrap();
        let err = s.provider().create(&s.request, &s.ctx).unwrap_err();
        assert!(matches!(err, ProviderError::Io { .. }), "{err:?}");
        assert!(s.calls().is_empty());
    }

    fn created_for(s: &Setup, script: &Path) -> Created {
        let data = ScriptData {
            script: Some(script.into()),
            source: s.src().into(),
            staging: s.staging(),
        };
        Created::new("script", "42", s.ctx.object_name(), true, &data).unwrap()
    }

    #[test]
    fn expected_record_lets_remove_clear_an_unfinished_create() {
        let s = Setup::new();
        s.script("10-any", "exit 0");
        let provider = s.provider();
        let expected = provider.expected(&s.request, &s.ctx);
        assert_eq!(
            (expected.provider.as_str(), expected.unit.as_str()),
            ("script", "42")
        );
        assert_eq!(expected.name, "snapshot-0123abcd-3");
        assert!(expected.consistent);
        let data: ScriptData = expected.data().unwrap();
        assert_eq!(data.script, None);
        assert_eq!(data.source, s.src());
        assert_eq!(data.staging, s.staging());

        // A crash after the staging directory was made, before any script ran: `remove`
        // clears it without running any script's `remove`.
        std::fs::create_dir(s.staging()).unwrap();
        provider.remove(&expected).unwrap();
        assert!(!s.staging().exists());
        assert!(s.calls().is_empty());
    }

    #[test]
    fn remove_is_idempotent_when_staging_is_gone() {
        let s = Setup::new();
        let script = s.script("10-remover", "exit 1");
        let created = created_for(&s, &script);
        ScriptProvider::new(&s.scripts).remove(&created).unwrap();
        // Nothing left to undo: the script is not even asked.
        assert!(s.calls().is_empty());
    }

    #[test]
    fn remove_keeps_staging_for_a_retry_when_the_script_fails() {
        let s = Setup::new();
        let script = s.script("10-remover", "echo 'lv busy' >&2; exit 5");
        std::fs::create_dir(s.staging()).unwrap();
        let created = created_for(&s, &script);
        let provider = s.provider();
        let err = provider.remove(&created).unwrap_err();
        assert!(err.to_string().contains("lv busy"), "{err}");
        assert!(s.staging().is_dir());

        s.script("10-remover", "exit 0");
        provider.remove(&created).unwrap();
        assert!(!s.staging().exists());
        let expected = format!(
            "10-remover remove {} {}",
            s.src().display(),
            s.staging().display()
        );
        assert_eq!(s.calls(), [expected.clone(), expected]);
        provider.remove(&created).unwrap();
        assert_eq!(s.calls().len(), 2);
    }

    #[test]
    fn remove_rejects_a_bad_record() {
        let created = Created {
            provider: "script".into(),
            unit: "1".into(),
            name: "snapshot-0-0".into(),
            consistent: true,
            data: serde_json::json!({ "script": "/x", "staging": "/nonexistent" }),
        };
        let err = ScriptProvider::default().remove(&created).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("script snapshot snapshot-0-0: unreadable record: ")
                && err.to_string().contains("missing field `source`"),
            "{err}"
        );
        let created = Created {
            data: serde_json::json!({ "script": 3, "source": "/", "staging": "/nonexistent" }),
            ..created
        };
        let err = ScriptProvider::default().remove(&created).unwrap_err();
        assert!(err.to_string().contains("expected a path"), "{err}");
    }

    #[test]
    fn record_keeps_non_utf8_paths() {
        let data = ScriptData {
            script: Some("/usr/lib/snapshot/filesystems.d/10-lvm".into()),
            source: PathBuf::from(OsString::from_vec(b"/srv/caf\xe9".to_vec())),
            staging: "/run/snapshot/snapshot-1/script-0".into(),
        };
        let created = Created::new("script", "1", "snapshot-1-0", true, &data).unwrap();
        assert_eq!(
            created.data["script"],
            "/usr/lib/snapshot/filesystems.d/10-lvm"
        );
        // Through text, as the journal stores it.
        let text = serde_json::to_string(&created).unwrap();
        let back: Created = serde_json::from_str(&text).unwrap();
        assert_eq!(back.data::<ScriptData>().unwrap(), data);
    }

    /// Whether a test that needs root can run: in CI it must (a skipped privileged test would
    /// hide a regression), elsewhere it is skipped with a note.
    fn privileged(test: &str) -> bool {
        if sys::is_root() {
            return true;
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "{test} needs root, and CI is set: it must not be skipped"
        );
        eprintln!("skipping {test}: needs root");
        false
    }

    #[test]
    fn create_mount_remove_with_a_tmpfs_script() {
        if !privileged("create_mount_remove_with_a_tmpfs_script") {
            return;
        }
        let s = Setup::new();
        let view = s.view.clone();
        s.script("10-not-mine", "echo 'not my filesystem' >&2; exit 1");
        s.script(
            "20-tmpfs",
            r#"case "$1" in
  snapshot) mount -t tmpfs -o size=1m snaptest-script "$3$2" && echo "snapshot of $2" > "$3$2/marker" ;;
  remove) umount "$3$2" ;;
  *) exit 2 ;;
esac"#,
        );
        s.script("30-never", "exit 0");
        let provider = s.provider();

        let created = provider.create(&s.request, &s.ctx).expect("create");
        let staging = s.staging();
        assert_eq!(created.provider, "script");
        assert_eq!(created.unit, "42");
        assert_eq!(created.name, "snapshot-0123abcd-3");
        assert!(created.consistent);
        let data: ScriptData = created.data().unwrap();
        assert_eq!(data.script, Some(s.scripts.join("20-tmpfs")));
        assert_eq!(data.source, s.src());
        assert_eq!(data.staging, staging);
        let table = MountTable::read().unwrap();
        assert!(table.mounted_at(&staging).is_none());
        let m = table
            .mounted_at(&s.at())
            .expect("snapshot mounted at TARGET + SOURCE");
        assert_eq!(
            (m.fstype.as_str(), m.source.as_str()),
            ("tmpfs", "snaptest-script")
        );

        let tree = provider
            .mount(&created, &s.request.mounts[0])
            .expect("mount");
        let at = sys::open_dir_nofollow(&view.canonicalize().unwrap()).unwrap();
        tree.attach(std::os::fd::AsFd::as_fd(&at)).expect("attach");
        assert_eq!(
            std::fs::read_to_string(view.join("marker")).unwrap(),
            format!("snapshot of {}\n", s.src().display())
        );
        let write = std::fs::write(view.join("new"), "x").unwrap_err();
        assert_eq!(
            write.raw_os_error(),
            Some(rustix::io::Errno::ROFS.raw_os_error())
        );
        assert!(MountTable::read()
            .unwrap()
            .mounted_at(&view)
            .unwrap()
            .is_read_only());
        // The session unmounts view mounts before `remove`.
        sys::unmount_path(&view).unwrap();

        provider.remove(&created).expect("remove");
        assert!(!staging.exists());
        let table = MountTable::read().unwrap();
        assert!(table.mounted_at(&staging).is_none());
        assert!(table.at_or_below(&s.root.path()).next().is_none());
        provider.remove(&created).expect("second remove");

        let src = s.src().display();
        let stg = staging.display();
        assert_eq!(
            s.calls(),
            [
                format!("10-not-mine snapshot {src} {stg}"),
                format!("20-tmpfs snapshot {src} {stg}"),
                format!("20-tmpfs remove {src} {stg}"),
            ]
        );
    }

    /// A script that mounts at TARGET itself rather than at `"$TARGET$SOURCE"` (the convention
    /// of this project's first releases) is told so, its `remove` runs, nothing is left.
    #[test]
    fn a_mount_at_target_itself_is_refused_with_a_hint() {
        if !privileged("a_mount_at_target_itself_is_refused_with_a_hint") {
            return;
        }
        let s = Setup::new();
        s.script(
            "10-at-target",
            r#"case "$1" in
  snapshot) mount -t tmpfs -o size=1m snaptest-script "$3" ;;
  remove) umount "$3" ;;
esac"#,
        );
        let err = s.provider().create(&s.request, &s.ctx).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("mounted nothing at"), "{text}");
        assert!(
            text.contains("it mounted at TARGET itself: scripts mount at \"$TARGET$SOURCE\""),
            "{text}"
        );
        assert_eq!(s.calls().len(), 2, "{:?}", s.calls());
        assert!(s.calls()[1].starts_with("10-at-target remove "));
        assert!(!s.staging().exists());
        assert!(MountTable::read()
            .unwrap()
            .at_or_below(&s.root.path())
            .next()
            .is_none());
    }
}
