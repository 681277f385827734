//! The watchdog process: the tool's own executable, started with a hidden flag, reading the
//! session's messages ([`super::Message`]) from its stdin. If the session dies (the pipe
//! reaches EOF without `Done`), it sends `thaw` to the writers and thaws the filesystems; a
//! filesystem frozen longer than its deadline is thawed at once whatever the session does — a
//! frozen filesystem blocks every writer on the machine.

use super::Message;
use crate::freeze_only::FreezeEnd;
use crate::recovery::journal::Journal;
use crate::recovery::liveness::{watchdog_token, LivenessToken};
use crate::writers::{WriterEnv, Writers};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What the watchdog must undo if the session dies.
#[derive(Debug, Default)]
struct Pending {
    writers: Option<(Writers, Vec<PathBuf>)>,
    journal: Option<PathBuf>,
    /// Mount path → deadline.
    filesystems: BTreeMap<PathBuf, Instant>,
    /// `snapshot freeze`: the caller left everything frozen to us.
    detached: Option<Detached>,
}

#[derive(Debug)]
struct Detached {
    deadline: Instant,
    /// The freeze-only state file, where how it ended is recorded.
    state: PathBuf,
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
                let recorded =
                    Journal::open(&path).and_then(|mut j| j.update(|r| r.frozen_writers = None));
                if let Err(e) = recorded {
                    log::warn!("watchdog: recording the thaw: {e}");
                }
            }
        }
    }
}

/// How often a detached watchdog looks at its thaw request.
const TICK: Duration = Duration::from_millis(50);

/// The watchdog's main loop over `input` (its stdin). Returns when the session said `Done`,
/// or after undoing everything when the session vanished; detached (`snapshot freeze`), when
/// thawing was asked for (SIGUSR1) or the deadline came.
pub fn run(input: impl std::io::Read + std::os::fd::AsFd) -> i32 {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut pending = Pending::default();
    let fd = input.as_fd().try_clone_to_owned();
    let Ok(fd) = fd else {
        return 1;
    };
    let thaw_asked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGUSR1, thaw_asked.clone()) {
        log::warn!("watchdog: no SIGUSR1 handler ({e}); `snapshot thaw` cannot reach it");
    }
    let mut reader = BufReader::new(input);
    let mut line = String::new();
    // Held from the first message on, until this process exits.
    let mut _token = None;
    let mut input_open = true;
    loop {
        // Wait for a message, or for the nearest deadline.
        let now = Instant::now();
        if let Some(d) = &pending.detached {
            let asked = thaw_asked.load(std::sync::atomic::Ordering::SeqCst);
            // A filesystem's own deadline ends the whole freeze too, in one step: `snapshot
            // thaw` must not find it half thawed and take it for its own doing.
            let late = d.deadline <= now || pending.filesystems.values().any(|x| *x <= now);
            if asked || late {
                let ended = if late {
                    FreezeEnd::Deadline
                } else {
                    FreezeEnd::Thawed
                };
                let state = d.state.clone();
                pending.undo_all(if late {
                    "frozen past its deadline (--freeze-timeout)"
                } else {
                    "thaw asked for (snapshot thaw)"
                });
                crate::freeze_only::record_end(&state, ended);
                return 0;
            }
        }
        if let Some((path, _)) = pending.filesystems.iter().find(|(_, d)| **d <= now) {
            let path = path.clone();
            pending.thaw_filesystem(&path, "frozen past its deadline (--freeze-timeout)");
            continue;
        }
        let mut wait = pending
            .filesystems
            .values()
            .min()
            .map(|d| d.saturating_duration_since(now));
        if pending.detached.is_some() {
            wait = Some(wait.map_or(TICK, |w| w.min(TICK)));
        }
        if !input_open {
            std::thread::sleep(wait.unwrap_or(TICK));
            continue;
        }
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
            Ok(0) | Err(_) if pending.detached.is_some() => {
                input_open = false;
                continue;
            }
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
                _token = LivenessToken::acquire(&watchdog_token(&session)).ok();
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
            Message::Detach { deadline_ms, state } => {
                pending.detached = Some(Detached {
                    deadline: Instant::now() + Duration::from_millis(deadline_ms),
                    state,
                });
            }
        }
    }
}
