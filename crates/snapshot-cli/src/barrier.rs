//! `--barrier` (docs/DESIGN.md §2.5): one instant across machines. Once every writer has
//! frozen, and before any snapshot is made, the session says `frozen` and waits for the
//! coordinator's `go` (or `abort`), at most `--barrier-timeout`:
//!
//! - the protocol ([`StdioBarrier`]): `frozen` is a line on stdout; `go` or `abort` a line on
//!   stdin (end of input is an abort);
//! - start-snapshot's holder ([`HeldBarrier`]): `frozen` is the line start-snapshot prints
//!   before it returns; `snapshot go -t TARGET` sends SIGUSR2 (go), `stop-snapshot` SIGUSR1
//!   (abort).
//!
//! Whatever the coordinator does, the wait is bounded, and the watchdog thaws the writers if
//! this process dies.

use snapshot_core::session::{Barrier, BarrierError, Interrupt};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a wait looks at the signals that end it.
const TICK: Duration = Duration::from_millis(20);

/// The line that says every writer is frozen.
pub const FROZEN: &str = "frozen";

/// The coordinator on stdin and stdout.
#[derive(Debug)]
pub struct StdioBarrier {
    pub timeout: Duration,
    pub interrupt: Arc<Interrupt>,
}

impl Barrier for StdioBarrier {
    fn frozen(&self) -> Result<(), BarrierError> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{FROZEN}")
            .and_then(|()| out.flush())
            .map_err(BarrierError::Io)?;
        drop(out);
        let line = read_line(self.timeout, &self.interrupt)?;
        decide(line)
    }
}

/// `go`, `abort`, or something else.
fn decide(line: Option<String>) -> Result<(), BarrierError> {
    match line.as_deref().map(str::trim) {
        Some("go") => Ok(()),
        Some("abort") => Err(BarrierError::Aborted),
        None => Err(BarrierError::Gone),
        Some(other) => Err(BarrierError::Unexpected(other.to_owned())),
    }
}

/// One line from stdin (without reading past it: the rest is the protocol's), `None` at end
/// of input; within `timeout`, and cut short by a signal.
fn read_line(timeout: Duration, interrupt: &Interrupt) -> Result<Option<String>, BarrierError> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let stdin = std::io::stdin();
    let deadline = Instant::now() + timeout;
    let mut line = Vec::new();
    loop {
        let sig = interrupt.load(Ordering::SeqCst);
        if sig != 0 {
            return Err(BarrierError::Interrupted(sig as i32));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(BarrierError::TimedOut(timeout));
        }
        let wait = Timespec::try_from(left.min(TICK)).unwrap_or(Timespec {
            tv_sec: 0,
            tv_nsec: 20_000_000,
        });
        let mut fds = [PollFd::new(&stdin, PollFlags::IN)];
        match poll(&mut fds, Some(&wait)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(BarrierError::Io(e.into())),
        }
        let mut byte = [0u8; 1];
        match rustix::io::read(&stdin, &mut byte) {
            Ok(0) => return Ok((!line.is_empty()).then(|| String::from_utf8_lossy(&line).into())),
            Ok(_) if byte[0] == b'\n' => return Ok(Some(String::from_utf8_lossy(&line).into())),
            Ok(_) if line.len() < 64 => line.push(byte[0]),
            Ok(_) => {
                return Err(BarrierError::Unexpected(
                    String::from_utf8_lossy(&line).into(),
                ))
            }
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
            Err(e) => return Err(BarrierError::Io(e.into())),
        }
    }
}

/// What the holder does once frozen, before start-snapshot returns: records its state, so
/// that `snapshot go` finds it.
pub type OnFrozen = Box<dyn Fn() -> std::io::Result<()> + Send + Sync>;

/// start-snapshot's holder: says `frozen` on its stdout (start-snapshot's pipe) and closes
/// it, so start-snapshot returns; then waits for SIGUSR2 (`snapshot go`) or SIGUSR1
/// (`stop-snapshot`: abort).
pub struct HeldBarrier {
    pub timeout: Duration,
    pub interrupt: Arc<Interrupt>,
    go: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    on_frozen: OnFrozen,
}

impl std::fmt::Debug for HeldBarrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldBarrier")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HeldBarrier {
    /// Registers SIGUSR2 (go) and SIGUSR1 (abort) for the wait.
    pub fn install(
        timeout: Duration,
        interrupt: Arc<Interrupt>,
        on_frozen: OnFrozen,
    ) -> std::io::Result<Self> {
        let (go, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        signal_hook::flag::register(signal_hook::consts::SIGUSR2, go.clone())?;
        signal_hook::flag::register(signal_hook::consts::SIGUSR1, stop.clone())?;
        Ok(Self {
            timeout,
            interrupt,
            go,
            stop,
            on_frozen,
        })
    }
}

impl Barrier for HeldBarrier {
    fn frozen(&self) -> Result<(), BarrierError> {
        (self.on_frozen)().map_err(BarrierError::Io)?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{FROZEN}")
            .and_then(|()| out.flush())
            .map_err(BarrierError::Io)?;
        drop(out);
        // EOF for start-snapshot; the ready line will go to the state directory.
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .map_err(BarrierError::Io)?;
        rustix::stdio::dup2_stdout(&null).map_err(|e| BarrierError::Io(e.into()))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            if self.go.load(Ordering::SeqCst) {
                return Ok(());
            }
            if self.stop.load(Ordering::SeqCst) {
                return Err(BarrierError::Aborted);
            }
            let sig = self.interrupt.load(Ordering::SeqCst);
            if sig != 0 {
                return Err(BarrierError::Interrupted(sig as i32));
            }
            if Instant::now() >= deadline {
                return Err(BarrierError::TimedOut(self.timeout));
            }
            std::thread::sleep(TICK);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coordinators_words() {
        assert!(decide(Some("go".into())).is_ok());
        assert!(decide(Some("go \r".into())).is_ok());
        assert!(matches!(
            decide(Some("abort".into())),
            Err(BarrierError::Aborted)
        ));
        assert!(matches!(decide(None), Err(BarrierError::Gone)));
        assert!(matches!(
            decide(Some("gogo".into())),
            Err(BarrierError::Unexpected(w)) if w == "gogo"
        ));
    }
}
