//! The freeze watchdog: a separate process (the tool's own executable, started with a hidden
//! flag) that the session tells, over a pipe, what it is about to freeze. If the session dies
//! (the pipe reaches EOF without `Done`), the watchdog sends `thaw` to the writers and thaws
//! the filesystems; a filesystem frozen longer than its deadline is thawed at once whatever
//! the session does — a frozen filesystem blocks every writer on the machine.

use crate::writers::{WriterEnv, Writers};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// One line of the pipe, JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "kebab-case")]
pub enum Message {
    /// Writers about to be sent `freeze`, in order.
    WritersFreezing {
        // Paths of any bytes (README "Security"): see `journal::path_json`.
        #[serde(with = "crate::journal::path_json::many")]
        writers: Vec<PathBuf>,
        #[serde(with = "crate::journal::path_json::many")]
        dirs: Vec<PathBuf>,
        session: String,
        #[serde(with = "crate::journal::path_json")]
        target: PathBuf,
        timeout_ms: u64,
        /// The session's journal: after thawing the writers of a dead session the watchdog
        /// records it there, so that cleanup does not send `thaw` a second time.
        #[serde(default, with = "crate::journal::path_json::option")]
        journal: Option<PathBuf>,
    },
    /// Every writer was sent `thaw`.
    WritersThawed,
    /// A filesystem (mounted at `path`) is about to be frozen with FIFREEZE.
    FsFreezing {
        #[serde(with = "crate::journal::path_json")]
        path: PathBuf,
        deadline_ms: u64,
    },
    FsThawed {
        #[serde(with = "crate::journal::path_json")]
        path: PathBuf,
    },
    /// The session is done with freezing: exit quietly.
    Done,
}

/// The session side.
#[derive(Debug)]
pub struct Watchdog {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
}

impl Watchdog {
    /// Starts `exe ARGS...`, which must call [`run`] on its stdin.
    pub fn spawn(exe: &Path, args: &[&str]) -> std::io::Result<Self> {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            // Its own process group: a Ctrl-C meant for the session does not kill it too.
            .process_group(0)
            .spawn()?;
        let stdin = child.stdin.take();
        Ok(Self {
            child: Some(child),
            stdin,
        })
    }

    /// Tells the watchdog; a watchdog that is gone is logged, never fatal.
    pub fn send(&mut self, msg: &Message) {
        let Some(stdin) = self.stdin.as_mut() else {
            return;
        };
        let mut line = serde_json::to_vec(msg).expect("messages serialise");
        line.push(b'\n');
        if let Err(e) = stdin.write_all(&line).and_then(|()| stdin.flush()) {
            log::warn!("freeze watchdog is gone ({e}); continuing without it");
            self.stdin = None;
        }
    }

    /// Sends `Done`, closes the pipe, and leaves the reaping to a thread: the watchdog's exit
    /// has nothing to do with the view, so the path to readiness does not wait for it.
    pub fn finish(&mut self) {
        self.send(&Message::Done);
        drop(self.stdin.take());
        if let Some(mut child) = self.child.take() {
            std::thread::spawn(move || {
                let _ = child.wait();
            });
        }
    }
}

/// A provider's handle on the session's watchdog: say what you freeze before FIFREEZE and
/// what you thawed after FITHAW, and the watchdog thaws it if this process dies or the
/// deadline passes. Cheap to clone; a no-op when the session runs no watchdog.
#[derive(Clone, Default)]
pub struct FreezeGuard {
    watchdog: Option<std::sync::Arc<std::sync::Mutex<Watchdog>>>,
    timeout: Duration,
}

impl std::fmt::Debug for FreezeGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FreezeGuard")
            .field("active", &self.watchdog.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl FreezeGuard {
    pub fn new(
        watchdog: Option<std::sync::Arc<std::sync::Mutex<Watchdog>>>,
        timeout: Duration,
    ) -> Self {
        Self { watchdog, timeout }
    }

    /// The longest a filesystem may stay frozen (`--freeze-timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn send(&self, msg: &Message) {
        if let Some(w) = &self.watchdog {
            if let Ok(mut w) = w.lock() {
                w.send(msg);
            }
        }
    }

    /// Call before FIFREEZE of the filesystem mounted at `path`.
    pub fn freezing(&self, path: &Path) {
        self.send(&Message::FsFreezing {
            path: path.to_owned(),
            deadline_ms: self.timeout.as_millis() as u64,
        });
    }

    /// Call after FITHAW of `path`.
    pub fn thawed(&self, path: &Path) {
        self.send(&Message::FsThawed {
            path: path.to_owned(),
        });
    }
}

/// The name of a session's watchdog liveness token (a file name in
/// [`crate::journal::LIVENESS_DIR`]): while it is held, cleanup leaves the (dead) session to
/// its watchdog.
pub fn token_name(session: &str) -> String {
    format!("{session}.watchdog")
}

/// What the watchdog must undo if the session dies.
#[derive(Debug, Default)]
struct Pending {
    writers: Option<(Writers, Vec<PathBuf>)>,
    journal: Option<PathBuf>,
    /// Mount path → deadline.
    filesystems: BTreeMap<PathBuf, Instant>,
}

impl Pending {
    fn thaw_filesystem(&mut self, path: &Path, why: &str) {
        self.filesystems.remove(path);
        log::warn!("watchdog: thawing {path:?}: {why}");
        if let Err(e) = crate::sys::thaw_filesystem(path) {
            log::error!("watchdog: thawing {path:?}: {e}");
        }
    }

    fn undo_all(&mut self, why: &str) {
        let paths: Vec<PathBuf> = self.filesystems.keys().cloned().collect();
        for p in paths {
            self.thaw_filesystem(&p, why);
        }
        if let Some((writers, dirs)) = self.writers.take() {
            log::warn!("watchdog: sending thaw to the writers: {why}");
            let sent = writers.writers.clone();
            writers.thaw(&sent, &dirs);
            if let Some(path) = self.journal.take() {
                let recorded = crate::journal::Journal::open(&path)
                    .and_then(|mut j| j.update(|r| r.frozen_writers = None));
                if let Err(e) = recorded {
                    log::warn!("watchdog: recording the thaw: {e}");
                }
            }
        }
    }
}

/// The watchdog's main loop over `input` (its stdin). Returns when the session said `Done`,
/// or after undoing everything when the session vanished.
pub fn run(input: impl std::io::Read + std::os::fd::AsFd) -> i32 {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut pending = Pending::default();
    let fd = input.as_fd().try_clone_to_owned();
    let Ok(fd) = fd else {
        return 1;
    };
    let mut reader = BufReader::new(input);
    let mut line = String::new();
    // Held from the first message on, until this process exits.
    let mut _token = None;
    loop {
        // Wait for a message, or for the nearest deadline.
        let now = Instant::now();
        if let Some((path, _)) = pending.filesystems.iter().find(|(_, d)| **d <= now) {
            let path = path.clone();
            pending.thaw_filesystem(&path, "frozen past its deadline (--freeze-timeout)");
            continue;
        }
        let wait = pending
            .filesystems
            .values()
            .min()
            .map(|d| d.saturating_duration_since(now));
        if reader.buffer().is_empty() {
            let ts = wait.map(|w| Timespec {
                tv_sec: w.as_secs() as i64,
                tv_nsec: w.subsec_nanos() as i64,
            });
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            match poll(&mut fds, ts.as_ref()) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => {}
            }
        }
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => {
                if pending.writers.is_some() || !pending.filesystems.is_empty() {
                    pending.undo_all("the session ended without thawing");
                }
                return 0;
            }
            Ok(_) => {}
        }
        let msg: Message = match serde_json::from_str(line.trim()) {
            Ok(m) => m,
            Err(e) => {
                log::error!("watchdog: bad message {line:?}: {e}");
                continue;
            }
        };
        match msg {
            Message::WritersFreezing {
                writers,
                dirs,
                session,
                target,
                timeout_ms,
                journal,
            } => {
                _token = crate::journal::LivenessToken::acquire(&token_name(&session)).ok();
                pending.journal = journal;
                let w = Writers::recorded(
                    &writers,
                    Duration::from_millis(timeout_ms),
                    WriterEnv { session, target },
                );
                pending.writers = Some((w, dirs));
            }
            Message::WritersThawed => pending.writers = None,
            Message::FsFreezing { path, deadline_ms } => {
                pending
                    .filesystems
                    .insert(path, Instant::now() + Duration::from_millis(deadline_ms));
            }
            Message::FsThawed { path } => {
                pending.filesystems.remove(&path);
            }
            Message::Done => return 0,
        }
    }
}
