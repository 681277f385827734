//! Freeze-only mode (docs/DESIGN.md §2.6): `snapshot freeze DIR...` pauses the writers and
//! FIFREEZEs every filesystem holding the DIRs that supports it, then returns with everything
//! frozen, for an external snapshot engine (a cloud volume snapshot, a CSI VolumeSnapshot, a
//! hypervisor) to take its snapshot; `snapshot thaw` ends it. The freeze watchdog holds it in
//! between: it thaws everything when asked (SIGUSR1, from `snapshot thaw`) or at the deadline
//! (`--freeze-timeout`) whatever happens to the caller, and records how it ended in the state
//! file `RUNTIME/frozen/<session>.json` (root's alone), which `snapshot thaw` and `snapshot
//! status` read; its log goes to `<session>.log` beside it.

use crate::lock::{create_private_file, private_child, PrivateDirError};
use crate::recovery::watchdog::{Message, Watchdog};
use crate::validate::{validate_dirs, ValidationError};
use crate::writers::{WriterConfig, WriterEnv, WriterError, Writers};
use crate::{sys, MountTable};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The subdirectory of the runtime directory holding freeze-only state files.
const STATE_DIR: &str = "frozen";

/// What `snapshot freeze` needs.
#[derive(Debug, Clone)]
pub struct FreezeRequest {
    pub dirs: Vec<PathBuf>,
    pub writers: Option<WriterConfig>,
    /// The longest everything stays frozen: the watchdog thaws it then.
    pub timeout: Duration,
    pub runtime_dir: PathBuf,
    /// The tool's executable, started as the watchdog.
    pub watchdog_exe: PathBuf,
}

/// How a freeze ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FreezeEnd {
    /// `snapshot thaw` asked for it.
    Thawed,
    /// The deadline came first: a snapshot taken after it is not consistent.
    Deadline,
}

/// The state file of one freeze.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrozenState {
    pub session: String,
    pub watchdog_pid: u32,
    #[serde(with = "crate::path_json::many")]
    pub dirs: Vec<PathBuf>,
    /// Mount points frozen (FIFREEZE).
    #[serde(with = "crate::path_json::many")]
    pub frozen: Vec<PathBuf>,
    /// Mount points whose filesystem cannot be frozen, and why.
    pub not_frozen: Vec<(String, String)>,
    /// Writer hooks sent `freeze` (to thaw if the watchdog is gone).
    #[serde(with = "crate::path_json::many")]
    pub writers: Vec<PathBuf>,
    pub writer_timeout_ms: u64,
    /// Clock time (Unix seconds) at which the watchdog thaws everything.
    pub deadline: f64,
    /// Set by the watchdog when it ended.
    #[serde(default)]
    pub ended: Option<FreezeEnd>,
}

#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("must run as root: FIFREEZE needs CAP_SYS_ADMIN")]
    NotRoot,
    #[error("{0}")]
    State(#[from] PrivateDirError),
    #[error("reading the mount table: {0}")]
    MountTable(String),
    #[error("{dir:?}: finding its mount: {error}")]
    Mount { dir: PathBuf, error: std::io::Error },
    #[error(transparent)]
    Writers(#[from] WriterError),
    #[error("starting the freeze watchdog {exe:?}: {error}")]
    Watchdog { exe: PathBuf, error: std::io::Error },
    #[error("no filesystem holding the DIRs can be frozen: {}", .0.join("; "))]
    NothingFrozen(Vec<String>),
    #[error("writing the state file {path:?}: {error}")]
    WriteState {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("no freeze is in effect{}", .0.as_ref().map(|s| format!(" for session {s}")).unwrap_or_default())]
    NothingToThaw(Option<String>),
}

fn state_dir(runtime_dir: &Path, create: bool) -> Result<Option<PathBuf>, PrivateDirError> {
    Ok(private_child(runtime_dir, STATE_DIR, create)?.map(|_| runtime_dir.join(STATE_DIR)))
}

/// `snapshot freeze`: everything frozen, handed to the watchdog; the state recorded.
pub fn freeze(req: &FreezeRequest) -> Result<FrozenState, FreezeError> {
    if !sys::is_root() {
        return Err(FreezeError::NotRoot);
    }
    let (dirs, _) = validate_dirs(&req.dirs)?;
    let mounts = mounts_of(&dirs)?;
    let dir = state_dir(&req.runtime_dir, true)?.unwrap_or_default();
    let session = crate::session::new_session_id();
    let state_path = dir.join(format!("{session}.json"));
    let env = WriterEnv {
        session: session.clone(),
        target: PathBuf::new(),
    };
    let writers = match &req.writers {
        Some(cfg) => Some(Writers::discover(cfg.clone(), env)?),
        None => None,
    };
    let log_path = dir.join(format!("{session}.log"));
    let log = create_private_file(&log_path).map_err(|error| FreezeError::WriteState {
        path: log_path.clone(),
        error,
    })?;
    let mut watchdog = Watchdog::spawn_logging_to(
        &req.watchdog_exe,
        &[crate::session::WATCHDOG_FLAG],
        log.into(),
    )
    .map_err(|error| FreezeError::Watchdog {
        exe: req.watchdog_exe.clone(),
        error,
    })?;
    let writer_timeout = req.writers.as_ref().map_or(req.timeout, |c| c.timeout);
    let (sent, refused) = freeze_writers(
        &mut watchdog,
        writers.as_ref(),
        &dirs,
        &session,
        writer_timeout,
    );
    if let Some(e) = refused {
        // --strict-writers: a writer failed freeze; nothing else is frozen yet.
        if let Some(w) = &writers {
            w.thaw(&sent, &dirs);
        }
        watchdog.send(&Message::WritersThawed);
        watchdog.finish();
        return Err(FreezeError::Writers(e));
    }
    let (frozen, not_frozen) = freeze_filesystems(&mut watchdog, &mounts, req.timeout);
    if frozen.is_empty() {
        if let Some(w) = &writers {
            w.thaw(&sent, &dirs);
        }
        watchdog.send(&Message::WritersThawed);
        watchdog.finish();
        return Err(FreezeError::NothingFrozen(
            not_frozen
                .iter()
                .map(|(m, why)| format!("{m}: {why}"))
                .collect(),
        ));
    }
    let deadline = SystemTime::now() + req.timeout;
    let state = FrozenState {
        session,
        watchdog_pid: watchdog.pid().unwrap_or(0),
        dirs,
        frozen,
        not_frozen,
        writers: sent.iter().map(|w| w.path.clone()).collect(),
        writer_timeout_ms: writer_timeout.as_millis() as u64,
        deadline: deadline
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
        ended: None,
    };
    write_state(&state_path, &state)?;
    watchdog.detach(req.timeout, &state_path);
    Ok(state)
}

/// Each distinct filesystem holding a DIR: its mount point (the first DIR's mount of it).
fn mounts_of(dirs: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, FreezeError> {
    let table = MountTable::read().map_err(|e| FreezeError::MountTable(e.to_string()))?;
    let mut out: Vec<(PathBuf, String)> = Vec::new();
    let mut devices = Vec::new();
    for dir in dirs {
        let id = sys::mount_id(dir).map_err(|error| FreezeError::Mount {
            dir: dir.clone(),
            error,
        })?;
        let m = table.by_id(id).ok_or_else(|| FreezeError::Mount {
            dir: dir.clone(),
            error: std::io::Error::other(format!("mount {id} is not in the mount table")),
        })?;
        if !devices.contains(&(m.major, m.minor)) {
            devices.push((m.major, m.minor));
            out.push((m.mount_point.clone(), m.fstype.clone()));
        }
    }
    Ok(out)
}

/// Writers `freeze`, told to the watchdog first: the writers sent it, and the error that
/// stops everything under `--strict-writers`.
fn freeze_writers(
    watchdog: &mut Watchdog,
    writers: Option<&Writers>,
    dirs: &[PathBuf],
    session: &str,
    timeout: Duration,
) -> (Vec<crate::writers::Writer>, Option<WriterError>) {
    let Some(writers) = writers else {
        return (Vec::new(), None);
    };
    watchdog.send(&Message::WritersFreezing {
        writers: writers.writers.iter().map(|w| w.path.clone()).collect(),
        dirs: dirs.to_vec(),
        session: session.to_owned(),
        target: PathBuf::new(),
        timeout_ms: timeout.as_millis() as u64,
        journal: None,
    });
    let outcome = writers.freeze(dirs);
    (outcome.sent, outcome.error)
}

/// FIFREEZE each filesystem, told to the watchdog first: (frozen, (not frozen, why)).
#[allow(clippy::type_complexity)]
fn freeze_filesystems(
    watchdog: &mut Watchdog,
    mounts: &[(PathBuf, String)],
    timeout: Duration,
) -> (Vec<PathBuf>, Vec<(String, String)>) {
    let (mut frozen, mut not_frozen) = (Vec::new(), Vec::new());
    for (path, fstype) in mounts {
        watchdog.send(&Message::FsFreezing {
            path: path.clone(),
            deadline_ms: timeout.as_millis() as u64,
        });
        match sys::freeze_filesystem(path) {
            Ok(()) => {
                log::info!("froze {path:?} ({fstype})");
                frozen.push(path.clone());
            }
            Err(e) => {
                watchdog.send(&Message::FsThawed { path: path.clone() });
                let why = match e.raw_os_error() {
                    Some(c) if c == rustix::io::Errno::OPNOTSUPP.raw_os_error() => {
                        format!("{fstype} cannot be frozen (FIFREEZE not supported)")
                    }
                    _ => format!("FIFREEZE failed: {e}"),
                };
                log::warn!("{path:?}: {why}");
                not_frozen.push((path.display().to_string(), why));
            }
        }
    }
    (frozen, not_frozen)
}

fn write_state(path: &Path, state: &FrozenState) -> Result<(), FreezeError> {
    let fail = |error| FreezeError::WriteState {
        path: path.to_owned(),
        error,
    };
    let data = serde_json::to_vec(state).map_err(|e| fail(std::io::Error::other(e)))?;
    crate::lock::write_private_atomic(path, &data, true).map_err(fail)
}

fn read_state(path: &Path) -> Option<FrozenState> {
    let mut data = Vec::new();
    crate::lock::open_private_file(path)
        .ok()?
        .read_to_end(&mut data)
        .ok()?;
    serde_json::from_slice(&data).ok()
}

/// The watchdog's last word: how the freeze ended, in its state file.
pub fn record_end(path: &Path, ended: FreezeEnd) {
    let Some(mut state) = read_state(path) else {
        log::warn!("watchdog: freeze state {path:?} unreadable; not recording the end");
        return;
    };
    state.ended = Some(ended);
    if let Err(e) = write_state(path, &state) {
        log::warn!("watchdog: {e}");
    }
}

/// Every freeze recorded (in effect, or ended and not yet collected by `snapshot thaw`).
pub fn list(runtime_dir: &Path) -> Vec<(PathBuf, FrozenState)> {
    let Ok(Some(dir)) = state_dir(runtime_dir, false) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, FrozenState)> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .filter_map(|p| read_state(&p).map(|s| (p, s)))
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.1.session.cmp(&b.1.session));
    out
}

/// What `snapshot thaw` did for one freeze.
#[derive(Debug, Clone, Serialize)]
pub struct ThawReport {
    pub session: String,
    pub ended: FreezeEnd,
    #[serde(with = "crate::path_json::many")]
    pub thawed: Vec<PathBuf>,
}

/// `snapshot thaw`: ends every freeze in effect (or `session`'s): asks its watchdog, waits
/// for it; thaws by itself what a vanished watchdog left.
pub fn thaw(runtime_dir: &Path, session: Option<&str>) -> Result<Vec<ThawReport>, FreezeError> {
    if !sys::is_root() {
        return Err(FreezeError::NotRoot);
    }
    let found: Vec<_> = list(runtime_dir)
        .into_iter()
        .filter(|(_, s)| session.is_none_or(|id| s.session == id))
        .collect();
    if found.is_empty() {
        return Err(FreezeError::NothingToThaw(session.map(str::to_owned)));
    }
    Ok(found
        .into_iter()
        .map(|(path, state)| thaw_one(&path, state))
        .collect())
}

fn thaw_one(path: &Path, state: FrozenState) -> ThawReport {
    let ended = match state.ended {
        Some(ended) => ended,
        None => match ask_watchdog(state.watchdog_pid) {
            true => read_state(path)
                .and_then(|s| s.ended)
                .unwrap_or(FreezeEnd::Thawed),
            false => {
                thaw_ourselves(&state);
                FreezeEnd::Thawed
            }
        },
    };
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("log"));
    ThawReport {
        session: state.session,
        ended,
        thawed: state.frozen,
    }
}

/// SIGUSR1 to the watchdog (checked to be one, pinned by a pidfd) and wait for its exit;
/// false when there is no such watchdog.
fn ask_watchdog(pid: u32) -> bool {
    use rustix::event::{poll, PollFd, PollFlags};
    use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
    let Some(p) = Pid::from_raw(pid as i32) else {
        return false;
    };
    let Ok(fd) = pidfd_open(p, PidfdFlags::empty()) else {
        return false;
    };
    let is_watchdog = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|&b| b == 0)
                .any(|a| a == crate::session::WATCHDOG_FLAG.as_bytes())
        })
        .unwrap_or(false);
    if !is_watchdog || pidfd_send_signal(&fd, Signal::USR1).is_err() {
        return false;
    }
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    while poll(&mut fds, None).is_err() {}
    let _ = fd.as_fd();
    true
}

/// The watchdog is gone without recording an end: thaw what the state names.
fn thaw_ourselves(state: &FrozenState) {
    log::warn!(
        "freeze {}: its watchdog (pid {}) is gone; thawing here",
        state.session,
        state.watchdog_pid
    );
    for m in &state.frozen {
        if let Err(e) = sys::thaw_filesystem(m) {
            log::error!("thawing {m:?}: {e}");
        }
    }
    if !state.writers.is_empty() {
        let w = Writers::recorded(
            &state.writers,
            Duration::from_millis(state.writer_timeout_ms),
            WriterEnv {
                session: state.session.clone(),
                target: PathBuf::new(),
            },
        );
        let sent = w.writers.clone();
        w.thaw(&sent, &state.dirs);
    }
}
