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
    let Ok(fd) = input.as_fd().try_clone_to_owned() else {
        return 1;
    };
    let thaw_asked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGUSR1, thaw_asked.clone()) {
        log::warn!("watchdog: no SIGUSR1 handler ({e}); `snapshot thaw` cannot reach it");
    }
    let mut pending = Pending::default();
    let mut reader = BufReader::new(input);
    let mut line = String::new();
    // Held from the first message on, until this process exits.
    let mut token = None;
    let mut input_open = true;
    loop {
        let now = Instant::now();
        if pending.end_of_detached(&thaw_asked, now) {
            return 0;
        }
        if let Some((path, _)) = pending.filesystems.iter().find(|(_, d)| **d <= now) {
            let path = path.clone();
            pending.thaw_filesystem(&path, "frozen past its deadline (--freeze-timeout)");
            continue;
        }
        let wait = pending.next_wait(now);
        if !input_open {
            std::thread::sleep(wait.unwrap_or(TICK));
            continue;
        }
        if reader.buffer().is_empty() && !input_ready(&fd, wait) {
            continue;
        }
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) if pending.detached.is_some() => input_open = false,
            Ok(0) | Err(_) => {
                if pending.writers.is_some() || !pending.filesystems.is_empty() {
                    pending.undo_all("the session ended without thawing");
                }
                return 0;
            }
            Ok(_) => match serde_json::from_str::<Message>(line.trim()) {
                Ok(Message::Done) => return 0,
                Ok(msg) => pending.take(msg, &mut token),
                Err(e) => log::error!("watchdog: bad message {line:?}: {e}"),
            },
        }
    }
}

/// Waits at most `wait` (forever: `None`) for input on `fd`; false when none came.
fn input_ready(fd: &std::os::fd::OwnedFd, wait: Option<Duration>) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let ts = wait.map(|w| Timespec {
        tv_sec: w.as_secs() as i64,
        tv_nsec: w.subsec_nanos() as i64,
    });
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    !matches!(
        poll(&mut fds, ts.as_ref()),
        Ok(0) | Err(rustix::io::Errno::INTR)
    )
}

impl Pending {
    /// Records what a message says is frozen or thawed now.
    fn take(&mut self, msg: Message, token: &mut Option<LivenessToken>) {
        match msg {
            Message::WritersFreezing {
                writers,
                dirs,
                session,
                target,
                timeout_ms,
                journal,
            } => {
                *token = LivenessToken::acquire(&watchdog_token(&session)).ok();
                self.journal = journal;
                let w = Writers::recorded(
                    &writers,
                    Duration::from_millis(timeout_ms),
                    WriterEnv { session, target },
                );
                self.writers = Some((w, dirs));
            }
            Message::WritersThawed => self.writers = None,
            Message::FsFreezing { path, deadline_ms } => {
                self.filesystems
                    .insert(path, Instant::now() + Duration::from_millis(deadline_ms));
            }
            Message::FsThawed { path } => {
                self.filesystems.remove(&path);
            }
            Message::Done => {}
            Message::Detach { deadline_ms, state } => {
                self.detached = Some(Detached {
                    deadline: Instant::now() + Duration::from_millis(deadline_ms),
                    state,
                });
            }
        }
    }

    /// How long to wait for input: until the nearest deadline, and briefly when detached
    /// (a thaw request is a signal, not input).
    fn next_wait(&self, now: Instant) -> Option<Duration> {
        let wait = self
            .filesystems
            .values()
            .min()
            .map(|d| d.saturating_duration_since(now));
        match self.detached {
            Some(_) => Some(wait.map_or(TICK, |w| w.min(TICK))),
            None => wait,
        }
    }

    /// Detached (`snapshot freeze`): when thawing was asked for or a deadline came, thaws
    /// everything, records which, and says the watchdog is done. A filesystem's own deadline
    /// ends the whole freeze in one step: `snapshot thaw` must not find it half thawed and
    /// take it for its own doing.
    fn end_of_detached(
        &mut self,
        thaw_asked: &std::sync::atomic::AtomicBool,
        now: Instant,
    ) -> bool {
        let Some(d) = &self.detached else {
            return false;
        };
        let asked = thaw_asked.load(std::sync::atomic::Ordering::SeqCst);
        let late = d.deadline <= now || self.filesystems.values().any(|x| *x <= now);
        if !asked && !late {
            return false;
        }
        let state = d.state.clone();
        let (ended, why) = if late {
            (
                FreezeEnd::Deadline,
                "frozen past its deadline (--freeze-timeout)",
            )
        } else {
            (FreezeEnd::Thawed, "thaw asked for (snapshot thaw)")
        };
        self.undo_all(why);
        crate::freeze_only::record_end(&state, ended);
        true
    }
}
