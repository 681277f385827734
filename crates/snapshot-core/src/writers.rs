//! Writer hooks (docs/DESIGN.md §2.2): executables that flush and pause applications on `freeze`
//! and let them go on `thaw`, compatible with the QEMU guest agent's fsfreeze hooks.
//!
//! Each writer runs as `WRITER freeze|thaw DIR...` in its own process group, with stdin from
//! `/dev/null` and its output sent to the log (never to our stdout, the protocol channel).
//! An invocation ends when the writer process exits, not when its output closes: a writer may
//! leave a helper running (one that holds a database lock until `thaw`, say).

use serde::Serialize;
use std::collections::HashSet;
use std::io::ErrorKind;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::exec::{self, HookError};
use crate::trust::{self, Reason, TrustError};

/// Writer directories in the order they are searched: the administrator's, the package's, the
/// QEMU guest agent's. A name is taken by the first directory that has it, as systemd's `/etc`
/// overrides `/usr/lib`: a file of the same name in `/etc/snapshot/writers.d` replaces the
/// shipped one, and a symlink there to `/dev/null` disables it.
pub const DEFAULT_DIRS: [&str; 3] = [
    "/etc/snapshot/writers.d",
    "/usr/lib/snapshot/writers.d",
    "/etc/qemu/fsfreeze-hook.d",
];

/// What a symlink that disables a writer of the same name in a later directory points to.
const MASK: &str = "/dev/null";

#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub dirs: Vec<PathBuf>,
    /// Per-invocation timeout; the writer's process group is killed when it runs out.
    pub timeout: Duration,
    /// A writer that fails `freeze` is an error (otherwise a warning).
    pub strict: bool,
}

/// What writers get in their environment besides `SNAPSHOT_PHASE`.
#[derive(Debug, Clone)]
pub struct WriterEnv {
    pub session: String,
    pub target: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Writer {
    /// Path as found in its directory.
    pub path: PathBuf,
    /// File name, for logs and ordering.
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("writer directory {dir:?}: {error}")]
    ReadDir { dir: PathBuf, error: std::io::Error },
    #[error("writer {writer:?}: cannot run it for {phase}: {error}")]
    Spawn {
        writer: PathBuf,
        phase: &'static str,
        error: std::io::Error,
    },
    #[error("writer {writer:?} {phase} failed ({status})")]
    Failed {
        writer: PathBuf,
        phase: &'static str,
        status: String,
    },
    /// Refused by the trust rule ([`crate::trust`]): never run.
    #[error(transparent)]
    Untrusted(#[from] TrustError),
    #[error(
        "writer {writer:?} {phase} did not finish within {timeout:?}; its process group was killed"
    )]
    TimedOut {
        writer: PathBuf,
        phase: &'static str,
        timeout: Duration,
    },
}

/// Result of sending `freeze` to the writers.
#[derive(Debug, Default)]
pub struct FreezeOutcome {
    /// Every writer that was sent `freeze` (also those that failed it), in the order sent:
    /// each must get `thaw`.
    pub sent: Vec<Writer>,
    /// Failures tolerated (not `strict`).
    pub warnings: Vec<WriterError>,
    /// With `strict`, the failure that stopped the freezing.
    pub error: Option<WriterError>,
}

#[derive(Debug)]
pub struct Writers {
    pub config: WriterConfig,
    pub env: WriterEnv,
    pub writers: Vec<Writer>,
}

impl Writers {
    /// The writers a journal or the watchdog's message recorded as frozen (their paths, in
    /// freeze order), to send them `thaw` from another process; `timeout` per invocation.
    pub fn recorded(paths: &[PathBuf], timeout: Duration, env: WriterEnv) -> Self {
        let writers = paths
            .iter()
            .map(|path| Writer {
                name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                path: path.clone(),
            })
            .collect();
        Writers {
            config: WriterConfig {
                dirs: Vec::new(),
                timeout,
                strict: false,
            },
            env,
            writers,
        }
    }

    /// Finds the writers in `config.dirs`; a missing directory holds none. A name is taken by
    /// the first directory that has it (a writer, or a symlink to `/dev/null` that disables
    /// the name); the same name in a later directory is overridden.
    pub fn discover(config: WriterConfig, env: WriterEnv) -> Result<Self, WriterError> {
        // (raw file name, path): the raw name gives byte order.
        let mut found: Vec<(Vec<u8>, PathBuf)> = Vec::new();
        let mut taken: HashSet<Vec<u8>> = HashSet::new();
        for dir in &config.dirs {
            let read = |e| WriterError::ReadDir {
                dir: dir.clone(),
                error: e,
            };
            let masked = masked_names(dir).map_err(read)?;
            let hooks = hook_executables(dir, "writer").map_err(read)?;
            for (name, path) in hooks {
                if taken.contains(&name) {
                    log::debug!("writer {path:?}: overridden by an earlier directory");
                } else {
                    found.push((name, path));
                }
            }
            for name in masked {
                log::debug!(
                    "writer {:?} disabled (a symlink to {MASK})",
                    dir.join(std::ffi::OsStr::from_bytes(&name))
                );
                taken.insert(name);
            }
            taken.extend(found.iter().map(|(n, _)| n.clone()));
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));

        let mut seen = HashSet::new();
        let mut writers = Vec::with_capacity(found.len());
        for (name, path) in found {
            let resolved = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if !seen.insert(resolved) {
                log::debug!("writer {path:?}: already found through another path, skipped");
                continue;
            }
            writers.push(Writer {
                path,
                name: String::from_utf8_lossy(&name).into_owned(),
            });
        }
        log::debug!(
            "writers: {:?}",
            writers.iter().map(|w| &w.path).collect::<Vec<_>>()
        );
        Ok(Self {
            config,
            env,
            writers,
        })
    }

    /// Sends `freeze DIR...` to each writer in order. Writers the trust rule refuses are left
    /// out (a warning); under `strict` one refused writer stops it before any is frozen.
    pub fn freeze(&self, dirs: &[PathBuf]) -> FreezeOutcome {
        let mut outcome = FreezeOutcome::default();
        let mut trusted = Vec::with_capacity(self.writers.len());
        for writer in &self.writers {
            match check_trust(writer, PHASE_FREEZE) {
                Ok(()) => trusted.push(writer),
                Err(e) if self.config.strict => {
                    outcome.error = Some(e);
                    return outcome;
                }
                Err(e) => {
                    log::warn!("{e}");
                    outcome.warnings.push(e);
                }
            }
        }
        for writer in trusted {
            match self.invoke(writer, PHASE_FREEZE, dirs) {
                Ok(()) => outcome.sent.push(writer.clone()),
                Err(e) => {
                    // A writer that ran (even if it failed or hung) may have paused something.
                    if !matches!(e, WriterError::Spawn { .. }) {
                        outcome.sent.push(writer.clone());
                    }
                    if self.config.strict {
                        outcome.error = Some(e);
                        break;
                    }
                    log::warn!("{e}");
                    outcome.warnings.push(e);
                }
            }
        }
        outcome
    }

    /// Sends `thaw DIR...` to `sent` in reverse order, every one of them; returns the failures.
    /// Each is checked against the trust rule first: `sent` may come from a journal (the
    /// watchdog, cleanup), not from [`freeze`](Self::freeze), which checked them.
    pub fn thaw(&self, sent: &[Writer], dirs: &[PathBuf]) -> Vec<WriterError> {
        let mut failures = Vec::new();
        for writer in sent.iter().rev() {
            let result = check_trust(writer, PHASE_THAW)
                .and_then(|()| self.invoke(writer, PHASE_THAW, dirs));
            if let Err(e) = result {
                log::warn!("{e}");
                failures.push(e);
            }
        }
        failures
    }

    /// Runs `WRITER PHASE DIR...` to completion of the writer process (not of its output).
    fn invoke(
        &self,
        writer: &Writer,
        phase: &'static str,
        dirs: &[PathBuf],
    ) -> Result<(), WriterError> {
        let started = Instant::now();
        log::debug!("writer {}: running {phase} {dirs:?}", writer.name);
        let result = self.run(writer, phase, dirs);
        log::debug!(
            "writer {}: {phase} took {:?}: {}",
            writer.name,
            started.elapsed(),
            match &result {
                Ok(()) => "ok".to_owned(),
                Err(e) => e.to_string(),
            }
        );
        result
    }

    fn run(
        &self,
        writer: &Writer,
        phase: &'static str,
        dirs: &[PathBuf],
    ) -> Result<(), WriterError> {
        let mut cmd = Command::new(&writer.path);
        cmd.arg(phase)
            .args(dirs)
            .env("SNAPSHOT_PHASE", phase)
            .env("SNAPSHOT_TARGET", &self.env.target)
            .env("SNAPSHOT_SESSION", &self.env.session);
        let timeout = self.config.timeout;
        match exec::run_hook(cmd, &format!("writer {}", writer.name), timeout) {
            Ok(exit) if exit.status.success() => Ok(()),
            Ok(exit) => Err(WriterError::Failed {
                writer: writer.path.clone(),
                phase,
                status: exit.status.to_string(),
            }),
            Err(HookError::Spawn(source)) => Err(WriterError::Spawn {
                writer: writer.path.clone(),
                phase,
                error: source,
            }),
            Err(HookError::TimedOut(timeout)) => Err(WriterError::TimedOut {
                writer: writer.path.clone(),
                phase,
                timeout,
            }),
            Err(e @ HookError::Wait(_)) => Err(WriterError::Failed {
                writer: writer.path.clone(),
                phase,
                status: e.to_string(),
            }),
        }
    }
}

/// The trust rule ([`crate::trust`]) for one writer: the path as found, so that the directory
/// holding a symlink counts as well as its target. A writer that is gone (or cannot be looked
/// at) cannot be run either: that is said as such.
fn check_trust(writer: &Writer, phase: &'static str) -> Result<(), WriterError> {
    match trust::check("writer", &writer.path) {
        Ok(_) => Ok(()),
        Err(TrustError {
            reason: Reason::Io { error: source, .. },
            ..
        }) => Err(WriterError::Spawn {
            writer: writer.path.clone(),
            phase,
            error: source,
        }),
        Err(e) => Err(WriterError::Untrusted(e)),
    }
}

const PHASE_FREEZE: &str = "freeze";
const PHASE_THAW: &str = "thaw";

/// The executables of a hook directory (writers.d, filesystems.d), as the QEMU fsfreeze-hook
/// dispatcher finds them: regular files with an x bit (symlinks followed), minus ignored
/// names ([`is_ignored_name`]); `(raw file name, path)`, unsorted. A missing directory holds
/// none. `what` names the hooks in debug logs.
pub fn hook_executables(dir: &Path, what: &str) -> std::io::Result<Vec<(Vec<u8>, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            log::debug!("{what} directory {dir:?} does not exist");
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let path = entry.path();
        if is_ignored_name(name.as_bytes()) {
            log::debug!("{what} {path:?}: ignored by name");
            continue;
        }
        // `metadata` follows symlinks: a link to an executable file counts.
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {
                found.push((name.into_vec(), path));
            }
            Ok(_) => log::debug!("{what} {path:?}: not an executable file, ignored"),
            Err(e) => log::debug!("{what} {path:?}: {e}, ignored"),
        }
    }
    Ok(found)
}

/// Names in `dir` that are symlinks to `/dev/null`: writers disabled there and in every later
/// directory. A missing directory masks none.
fn masked_names(dir: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut masked = Vec::new();
    for entry in entries {
        let entry = entry?;
        if std::fs::read_link(entry.path()).is_ok_and(|t| t == Path::new(MASK)) {
            masked.push(entry.file_name().into_vec());
        }
    }
    Ok(masked)
}

/// Names the QEMU guest agent's fsfreeze-hook dispatcher ignores: `*~ *.bak *.orig *.rpmnew
/// *.rpmorig *.rpmsave *.sample *.dpkg-*`; dot files too. The `filesystems.d` scripts use
/// the same list.
pub fn is_ignored_name(name: &[u8]) -> bool {
    const SUFFIXES: [&[u8]; 7] = [
        b"~",
        b".bak",
        b".orig",
        b".rpmnew",
        b".rpmorig",
        b".rpmsave",
        b".sample",
    ];
    name.starts_with(b".")
        || SUFFIXES.iter().any(|s| name.ends_with(s))
        || name.windows(b".dpkg-".len()).any(|w| w == b".dpkg-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::process::{Pid, Signal};
    use std::os::unix::process::CommandExt;
    use std::path::Path;
    use std::sync::Mutex;

    const SESSION: &str = "sess-42";
    const TARGET: &str = "/run/target view";
    const QUICK: Duration = Duration::from_millis(300);
    /// For writers that are expected to finish: generous, the machine may be busy.
    const SLOW: Duration = Duration::from_secs(20);

    /// Writes an executable `#!/bin/sh` script.
    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// A line in `log` recording how the script was called.
    fn record(log: &Path) -> String {
        format!(
            "echo \"$0 $@ $SNAPSHOT_PHASE $SNAPSHOT_SESSION $SNAPSHOT_TARGET\" >> '{}'",
            log.display()
        )
    }

    fn discover(dirs: &[&Path], timeout: Duration, strict: bool) -> Writers {
        Writers::discover(
            WriterConfig {
                dirs: dirs.iter().map(|d| d.to_path_buf()).collect(),
                timeout,
                strict,
            },
            WriterEnv {
                session: SESSION.to_owned(),
                target: PathBuf::from(TARGET),
            },
        )
        .unwrap()
    }

    fn names(writers: &[Writer]) -> Vec<&str> {
        writers.iter().map(|w| w.name.as_str()).collect()
    }

    fn read_log(log: &Path) -> Vec<String> {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// What `record` writes for `script` called with `phase dirs...`.
    fn line(script: &Path, phase: &str, dirs: &[PathBuf]) -> String {
        let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        format!(
            "{} {phase} {} {phase} {SESSION} {TARGET}",
            script.display(),
            dirs.join(" ")
        )
    }

    /// Waits until process `pid` is gone (or a zombie: killed, its reaper not done yet).
    fn assert_dies(pid: i32) {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => return,
                Ok(stat) => {
                    let state = stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
                    if state == Some("Z") {
                        return;
                    }
                }
            }
            assert!(Instant::now() < deadline, "process {pid} is still alive");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn read_pid(file: &Path) -> i32 {
        std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("{file:?}: {e}"))
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn ignored_names() {
        for name in [
            "a~",
            "a.bak",
            "a.orig",
            "a.rpmnew",
            "a.rpmorig",
            "a.rpmsave",
            "a.sample",
            "a.dpkg-old",
            "a.dpkg-dist",
            "a.dpkg-new",
            ".hidden",
            ".",
        ] {
            assert!(is_ignored_name(name.as_bytes()), "{name}");
        }
        for name in ["mysql", "10-db.sh", "a.bak2", "sample", "dpkg-x", "a.b"] {
            assert!(!is_ignored_name(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn discover_skips_ignored_names_non_executables_and_dot_files() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        for name in [
            "a~",
            "b.bak",
            "c.orig",
            "d.rpmnew",
            "e.rpmorig",
            "f.rpmsave",
            "g.sample",
            "h.dpkg-old",
            "i.dpkg-dist",
            ".hidden",
            "ok",
        ] {
            script(d, name, "exit 0");
        }
        std::fs::write(d.join("not-exec"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(d.join("not-exec"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        // Any execute bit will do.
        let group_x = script(d, "group-x", "exit 0");
        std::fs::set_permissions(&group_x, std::fs::Permissions::from_mode(0o610)).unwrap();
        std::fs::create_dir(d.join("subdir")).unwrap();
        std::os::unix::fs::symlink(d.join("nowhere"), d.join("dangling")).unwrap();
        std::os::unix::fs::symlink(d.join("ok"), d.join("via-link")).unwrap();
        std::os::unix::fs::symlink(d.join("subdir"), d.join("dir-link")).unwrap();

        let w = discover(&[d], SLOW, false);
        // `via-link` resolves to `ok`, which sorts first.
        assert_eq!(names(&w.writers), ["group-x", "ok"]);
        assert_eq!(w.writers[1].path, d.join("ok"));
    }

    #[test]
    fn discover_orders_by_name_across_dirs() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        script(&a, "10-b", "exit 0");
        script(&a, "30-d", "exit 0");
        script(&a, "same", "exit 0");
        script(&b, "20-c", "exit 0");
        script(&b, "05-a", "exit 0");
        script(&b, "Upper", "exit 0");
        script(&b, "same", "exit 0");
        let w = discover(&[&a, &b], SLOW, false);
        // Byte order: digits < upper case < lower case; a name is the first directory's.
        assert_eq!(
            names(&w.writers),
            ["05-a", "10-b", "20-c", "30-d", "Upper", "same"]
        );
        assert_eq!(w.writers[5].path, a.join("same"));
    }

    /// The package's layout: `/etc/snapshot/writers.d` before `/usr/lib/snapshot/writers.d`.
    /// A file of the same name replaces the shipped writer; a symlink to /dev/null disables it
    /// (and is not run itself); the other shipped writers run.
    #[test]
    fn the_administrators_directory_overrides_and_masks_shipped_writers() {
        let t = tempfile::tempdir().unwrap();
        let (etc, lib) = (t.path().join("etc"), t.path().join("lib"));
        std::fs::create_dir(&etc).unwrap();
        std::fs::create_dir(&lib).unwrap();
        for name in ["mariadb", "postgresql", "other"] {
            script(&lib, name, "exit 0");
        }
        script(&etc, "postgresql", "exit 0");
        std::os::unix::fs::symlink("/dev/null", etc.join("mariadb")).unwrap();
        let w = discover(&[&etc, &lib], SLOW, false);
        assert_eq!(names(&w.writers), ["other", "postgresql"]);
        assert_eq!(w.writers[1].path, etc.join("postgresql"));
        // Positive control: without the administrator's directory, all three run.
        let w = discover(&[&lib], SLOW, false);
        assert_eq!(names(&w.writers), ["mariadb", "other", "postgresql"]);
    }

    #[test]
    fn discover_runs_a_writer_reachable_twice_once() {
        let t = tempfile::tempdir().unwrap();
        let main = t.path().join("writers.d");
        let compat = t.path().join("fsfreeze-hook.d");
        std::fs::create_dir(&main).unwrap();
        script(&main, "db", "exit 0");
        script(&main, "mail", "exit 0");
        // The original package's layout: the compatibility directory is a symlink.
        std::os::unix::fs::symlink(&main, &compat).unwrap();
        let w = discover(&[&main, &compat], SLOW, false);
        assert_eq!(names(&w.writers), ["db", "mail"]);
        assert!(w.writers.iter().all(|w| w.path.starts_with(&main)));

        // A symlinked file: the first in order wins, whichever directory it is in.
        let other = t.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::os::unix::fs::symlink(main.join("mail"), other.join("00-mail")).unwrap();
        std::os::unix::fs::symlink(main.join("db"), other.join("zz-db")).unwrap();
        script(&other, "own", "exit 0");
        let w = discover(&[&main, &other], SLOW, false);
        assert_eq!(names(&w.writers), ["00-mail", "db", "own"]);
        assert_eq!(w.writers[0].path, other.join("00-mail"));
        assert_eq!(w.writers[1].path, main.join("db"));
    }

    #[test]
    fn discover_missing_dir_is_empty_unreadable_dir_is_error() {
        let t = tempfile::tempdir().unwrap();
        let missing = t.path().join("missing");
        let w = discover(&[&missing], SLOW, false);
        assert!(w.writers.is_empty());

        let file = t.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = Writers::discover(
            WriterConfig {
                dirs: vec![missing, file.clone()],
                timeout: SLOW,
                strict: false,
            },
            WriterEnv {
                session: SESSION.to_owned(),
                target: PathBuf::from(TARGET),
            },
        )
        .unwrap_err();
        assert!(matches!(err, WriterError::ReadDir { dir, .. } if dir == file));
    }

    #[test]
    fn freeze_and_thaw_get_arguments_environment_and_order() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("w");
        std::fs::create_dir(&d).unwrap();
        let log = t.path().join("log");
        let scripts: Vec<PathBuf> = ["a", "b", "c"]
            .iter()
            .map(|n| script(&d, n, &record(&log)))
            .collect();
        let w = discover(&[&d], SLOW, true);
        let dirs = vec![PathBuf::from("/srv/data"), PathBuf::from("/home")];

        let outcome = w.freeze(&dirs);
        assert!(outcome.error.is_none() && outcome.warnings.is_empty());
        assert_eq!(names(&outcome.sent), ["a", "b", "c"]);
        let failures = w.thaw(&outcome.sent, &dirs);
        assert!(failures.is_empty(), "{failures:?}");

        let expected: Vec<String> = scripts
            .iter()
            .map(|s| line(s, "freeze", &dirs))
            .chain(scripts.iter().rev().map(|s| line(s, "thaw", &dirs)))
            .collect();
        assert_eq!(read_log(&log), expected);
    }

    /// Writers a, b, c where b runs `b_body` after recording its call.
    fn abc(t: &Path, b_body: &str) -> (PathBuf, PathBuf, Vec<PathBuf>) {
        let d = t.join("w");
        std::fs::create_dir(&d).unwrap();
        let log = t.join("log");
        let scripts = vec![
            script(&d, "a", &record(&log)),
            script(&d, "b", &format!("{}\n{b_body}", record(&log))),
            script(&d, "c", &record(&log)),
        ];
        (d, log, scripts)
    }

    #[test]
    fn failing_freeze_is_a_warning_and_still_thawed() {
        let t = tempfile::tempdir().unwrap();
        let (d, log, s) = abc(t.path(), r#"[ "$1" = freeze ] && exit 1; exit 0"#);
        let w = discover(&[&d], SLOW, false);
        let dirs = vec![PathBuf::from("/data")];
        let outcome = w.freeze(&dirs);
        assert!(outcome.error.is_none());
        assert_eq!(names(&outcome.sent), ["a", "b", "c"]);
        assert_eq!(outcome.warnings.len(), 1);
        assert!(
            matches!(&outcome.warnings[0], WriterError::Failed { writer, phase: "freeze", .. } if *writer == s[1]),
            "{:?}",
            outcome.warnings
        );
        assert!(w.thaw(&outcome.sent, &dirs).is_empty());
        assert_eq!(
            read_log(&log),
            [
                line(&s[0], "freeze", &dirs),
                line(&s[1], "freeze", &dirs),
                line(&s[2], "freeze", &dirs),
                line(&s[2], "thaw", &dirs),
                line(&s[1], "thaw", &dirs),
                line(&s[0], "thaw", &dirs),
            ]
        );
    }

    #[test]
    fn failing_freeze_is_an_error_when_strict_and_still_thawed() {
        let t = tempfile::tempdir().unwrap();
        let (d, log, s) = abc(t.path(), r#"[ "$1" = freeze ] && exit 1; exit 0"#);
        let w = discover(&[&d], SLOW, true);
        let dirs = vec![PathBuf::from("/data")];
        let outcome = w.freeze(&dirs);
        assert!(outcome.warnings.is_empty());
        assert!(
            matches!(&outcome.error, Some(WriterError::Failed { writer, phase: "freeze", status }) if *writer == s[1] && status.contains('1')),
            "{:?}",
            outcome.error
        );
        // c was never frozen; b was sent freeze, so it gets thaw.
        assert_eq!(names(&outcome.sent), ["a", "b"]);
        assert!(w.thaw(&outcome.sent, &dirs).is_empty());
        assert_eq!(
            read_log(&log),
            [
                line(&s[0], "freeze", &dirs),
                line(&s[1], "freeze", &dirs),
                line(&s[1], "thaw", &dirs),
                line(&s[0], "thaw", &dirs),
            ]
        );
    }

    #[test]
    fn untrusted_writer_is_not_run_and_is_a_warning() {
        let t = tempfile::tempdir().unwrap();
        let (d, log, s) = abc(t.path(), "exit 0");
        // Anyone could have written b: it must not run as root.
        std::fs::set_permissions(&s[1], std::fs::Permissions::from_mode(0o777)).unwrap();
        let w = discover(&[&d], SLOW, false);
        let dirs = vec![PathBuf::from("/data")];
        let outcome = w.freeze(&dirs);
        assert!(outcome.error.is_none());
        assert_eq!(names(&outcome.sent), ["a", "c"]);
        assert!(
            matches!(&outcome.warnings[..], [WriterError::Untrusted(e)] if e.path == s[1]),
            "{:?}",
            outcome.warnings
        );
        let msg = outcome.warnings[0].to_string();
        assert!(
            msg.starts_with(&format!("writer {}: not trusted: ", s[1].display())),
            "{msg}"
        );
        assert!(w.thaw(&outcome.sent, &dirs).is_empty());
        assert_eq!(
            read_log(&log),
            [
                line(&s[0], "freeze", &dirs),
                line(&s[2], "freeze", &dirs),
                line(&s[2], "thaw", &dirs),
                line(&s[0], "thaw", &dirs),
            ]
        );

        // Positive control: the same writer, writable only by its owner, runs.
        std::fs::set_permissions(&s[1], std::fs::Permissions::from_mode(0o755)).unwrap();
        let outcome = w.freeze(&dirs);
        assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);
        assert_eq!(names(&outcome.sent), ["a", "b", "c"]);
    }

    #[test]
    fn untrusted_writer_when_strict_stops_before_anything_is_frozen() {
        let t = tempfile::tempdir().unwrap();
        let (d, log, s) = abc(t.path(), "exit 0");
        std::fs::set_permissions(&s[2], std::fs::Permissions::from_mode(0o757)).unwrap();
        let w = discover(&[&d], SLOW, true);
        let outcome = w.freeze(&[]);
        assert!(
            matches!(&outcome.error, Some(WriterError::Untrusted(e)) if e.path == s[2]),
            "{:?}",
            outcome.error
        );
        // Not even a, which sorts before the refused one.
        assert!(outcome.sent.is_empty());
        assert!(read_log(&log).is_empty());
    }

    #[test]
    fn untrusted_writer_directory_and_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let open = t.path().join("open");
        std::fs::create_dir(&open).unwrap();
        let log = t.path().join("log");
        let hook = script(t.path(), "hook", &record(&log));
        // A writer directory its group can write; a link in it to a trusted hook.
        std::os::unix::fs::symlink(&hook, open.join("10-link")).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o775)).unwrap();
        let w = discover(&[&open], SLOW, false);
        assert_eq!(names(&w.writers), ["10-link"]);
        let outcome = w.freeze(&[]);
        assert!(outcome.sent.is_empty());
        assert!(
            matches!(&outcome.warnings[..], [WriterError::Untrusted(e)] if e.to_string().contains(&format!("{} is writable by group (mode 0775)", open.display()))),
            "{:?}",
            outcome.warnings
        );
        // Thaw from a journal (the watchdog, cleanup) is refused the same way.
        let failures = w.thaw(&w.writers, &[]);
        assert!(matches!(&failures[..], [WriterError::Untrusted(_)]));
        assert!(read_log(&log).is_empty());

        // Positive control: the directory fixed, the link runs its target.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        let outcome = w.freeze(&[]);
        assert_eq!(names(&outcome.sent), ["10-link"]);
        assert_eq!(read_log(&log).len(), 1);
    }

    #[test]
    fn writer_that_cannot_start_is_not_sent() {
        let t = tempfile::tempdir().unwrap();
        let (d, _log, s) = abc(t.path(), "exit 0");
        let w = discover(&[&d], SLOW, false);
        std::fs::remove_file(&s[1]).unwrap();
        let outcome = w.freeze(&[]);
        assert_eq!(names(&outcome.sent), ["a", "c"]);
        assert!(matches!(
            &outcome.warnings[..],
            [WriterError::Spawn {
                phase: "freeze",
                ..
            }]
        ));

        let strict = discover(&[&d], SLOW, true);
        std::fs::remove_file(&s[0]).unwrap();
        let outcome = strict.freeze(&[]);
        assert!(outcome.sent.is_empty());
        assert!(matches!(outcome.error, Some(WriterError::Spawn { .. })));
    }

    #[test]
    fn hanging_freeze_is_killed_with_its_group_and_still_thawed() {
        let t = tempfile::tempdir().unwrap();
        let pidfile = t.path().join("pid");
        let (d, log, s) = abc(
            t.path(),
            &format!(
                r#"if [ "$1" = freeze ]; then
                     sleep 60 &
                     echo $! > '{p}.tmp' && mv '{p}.tmp' '{p}'
                     sleep 60
                   fi"#,
                p = pidfile.display()
            ),
        );
        let w = discover(&[&d], QUICK, false);
        let dirs = vec![PathBuf::from("/data")];
        let started = Instant::now();
        let outcome = w.freeze(&dirs);
        let took = started.elapsed();
        assert!(took >= QUICK && took < Duration::from_secs(5), "{took:?}");
        assert!(
            matches!(
                &outcome.warnings[..],
                [WriterError::TimedOut { phase: "freeze", timeout: QUICK, writer }] if *writer == s[1]
            ),
            "{:?}",
            outcome.warnings
        );
        assert_dies(read_pid(&pidfile));
        assert_eq!(names(&outcome.sent), ["a", "b", "c"]);
        assert!(w.thaw(&outcome.sent, &dirs).is_empty());
        assert_eq!(
            read_log(&log),
            [
                line(&s[0], "freeze", &dirs),
                line(&s[1], "freeze", &dirs),
                line(&s[2], "freeze", &dirs),
                line(&s[2], "thaw", &dirs),
                line(&s[1], "thaw", &dirs),
                line(&s[0], "thaw", &dirs),
            ]
        );
    }

    #[test]
    fn hanging_freeze_is_an_error_when_strict() {
        let t = tempfile::tempdir().unwrap();
        let (d, _log, _s) = abc(t.path(), r#"[ "$1" = freeze ] && exec sleep 60"#);
        let w = discover(&[&d], QUICK, true);
        let outcome = w.freeze(&[]);
        assert!(matches!(outcome.error, Some(WriterError::TimedOut { .. })));
        assert_eq!(names(&outcome.sent), ["a", "b"]);
    }

    #[test]
    fn background_child_holding_the_output_does_not_delay() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("w");
        std::fs::create_dir(&d).unwrap();
        let pidfile = t.path().join("pid");
        // Like a writer leaving a helper that holds a lock until thaw: its stdout is our pipe.
        script(
            &d,
            "helper",
            &format!(
                "sleep 30 &\necho $! > '{}'\necho started helper\nexit 0",
                pidfile.display()
            ),
        );
        let w = discover(&[&d], SLOW, true);
        let started = Instant::now();
        let outcome = w.freeze(&[]);
        let took = started.elapsed();
        let pid = read_pid(&pidfile);
        // Ours to clean up, by its pid.
        let _ = rustix::process::kill_process(Pid::from_raw(pid).unwrap(), Signal::KILL);
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert!(outcome.error.is_none() && outcome.warnings.is_empty());
        assert_eq!(names(&outcome.sent), ["helper"]);
    }

    #[test]
    fn hanging_thaw_is_killed_and_the_others_still_thawed() {
        let t = tempfile::tempdir().unwrap();
        let (d, log, s) = abc(t.path(), r#"[ "$1" = thaw ] && sleep 60; exit 0"#);
        let w = discover(&[&d], QUICK, true);
        let dirs = vec![PathBuf::from("/data"), PathBuf::from("/var/lib/db")];
        let outcome = w.freeze(&dirs);
        assert!(outcome.error.is_none(), "{:?}", outcome.error);
        let started = Instant::now();
        let failures = w.thaw(&outcome.sent, &dirs);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            matches!(
                &failures[..],
                [WriterError::TimedOut { phase: "thaw", writer, .. }] if *writer == s[1]
            ),
            "{failures:?}"
        );
        let log = read_log(&log);
        assert_eq!(
            log[3..],
            [
                line(&s[2], "thaw", &dirs),
                line(&s[1], "thaw", &dirs),
                line(&s[0], "thaw", &dirs),
            ]
        );
    }

    #[test]
    fn waiting_without_pidfd_polls() {
        let mut hang = Command::new("sleep")
            .arg("60")
            .process_group(0)
            .spawn()
            .unwrap();
        let started = Instant::now();
        assert!(exec::wait_with(&mut hang, QUICK, None).unwrap().is_none());
        assert!(started.elapsed() >= QUICK);
        exec::kill_and_reap(hang, "hang");

        let mut quick = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let status = exec::wait_with(&mut quick, SLOW, None).unwrap().unwrap();
        assert_eq!(status.code(), Some(3));
    }

    /// Collects log messages, to check where writers' output goes.
    struct Capture(Mutex<Vec<String>>);

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            self.0.lock().unwrap().push(record.args().to_string());
        }
        fn flush(&self) {}
    }

    static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

    #[test]
    fn output_goes_to_the_log_and_cannot_block_the_writer() {
        let installed = log::set_logger(&CAPTURE).is_ok();
        log::set_max_level(log::LevelFilter::Trace);
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("w");
        std::fs::create_dir(&d).unwrap();
        // Far more than a pipe holds: the forwarder must keep reading while the writer runs.
        script(
            &d,
            "talker",
            "echo to-stdout\necho to-stderr >&2\ni=0\nwhile [ $i -lt 4000 ]; do \
             echo \"filler line $i .........................................\"; i=$((i+1)); \
             done\necho last-line",
        );
        let w = discover(&[&d], SLOW, true);
        let outcome = w.freeze(&[]);
        assert!(outcome.error.is_none(), "{:?}", outcome.error);
        if !installed {
            return; // Another logger owns this process; the output check needs ours.
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        let wanted = [
            "writer talker: to-stdout",
            "writer talker: to-stderr",
            "writer talker: last-line",
        ];
        loop {
            let logged = CAPTURE.0.lock().unwrap().clone();
            if wanted.iter().all(|w| logged.iter().any(|l| l == w)) {
                break;
            }
            assert!(Instant::now() < deadline, "missing output in the log");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
