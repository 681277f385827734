//! The session's side of the watchdog: the messages of the pipe, the handle that starts the
//! watchdog process and writes to it, and the [`FreezeGuard`] providers report freezes
//! through. Depends on nothing of the crate but the path encoding of the messages, so that
//! providers can hold a guard without reaching the recovery machinery.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

/// One line of the pipe, JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "kebab-case")]
pub enum Message {
    /// Writers about to be sent `freeze`, in order.
    WritersFreezing {
        // Paths of any bytes (README "Security"): see `crate::path_json`.
        #[serde(with = "crate::path_json::many")]
        writers: Vec<PathBuf>,
        #[serde(with = "crate::path_json::many")]
        dirs: Vec<PathBuf>,
        session: String,
        #[serde(with = "crate::path_json")]
        target: PathBuf,
        timeout_ms: u64,
        /// The session's journal: after thawing the writers of a dead session the watchdog
        /// records it there, so that cleanup does not send `thaw` a second time.
        #[serde(default, with = "crate::path_json::option")]
        journal: Option<PathBuf>,
    },
    /// Every writer was sent `thaw`.
    WritersThawed,
    /// A filesystem (mounted at `path`) is about to be frozen with FIFREEZE.
    FsFreezing {
        #[serde(with = "crate::path_json")]
        path: PathBuf,
        deadline_ms: u64,
    },
    FsThawed {
        #[serde(with = "crate::path_json")]
        path: PathBuf,
    },
    /// The session is done with freezing: exit quietly.
    Done,
    /// `snapshot freeze`: the caller leaves with everything still frozen. Keep it so until
    /// SIGUSR1 (`snapshot thaw`) or the deadline, then thaw it all, record how it ended in
    /// `state` (the freeze-only state file) and exit.
    Detach {
        deadline_ms: u64,
        #[serde(with = "crate::path_json")]
        state: PathBuf,
    },
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
        Self::spawn_logging_to(exe, args, Stdio::inherit())
    }

    /// [`spawn`](Self::spawn) with its log (stderr) going to `log`: a watchdog that outlives
    /// its caller (`snapshot freeze`) must not hold the caller's stderr open, or whoever
    /// reads it to its end would wait for the watchdog.
    pub fn spawn_logging_to(exe: &Path, args: &[&str], log: Stdio) -> std::io::Result<Self> {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
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

    /// The watchdog's process id (`snapshot freeze` records it for `snapshot thaw`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `snapshot freeze`: hands everything frozen over to the watchdog (see
    /// [`Message::Detach`]) and lets it go on alone.
    pub fn detach(mut self, deadline: Duration, state: &Path) {
        self.send(&Message::Detach {
            deadline_ms: deadline.as_millis() as u64,
            state: state.to_owned(),
        });
        drop(self.stdin.take());
        // Not waited for: it outlives this process (and is reparented to init).
        drop(self.child.take());
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
