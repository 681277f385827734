//! Running external programs: never on the caller's stdout (it is the protocol), stdin from
//! `/dev/null`, stderr captured into the error.
//!
//! [`run_hook`] runs the site's programs (writer hooks, provider scripts) the way writer hooks
//! have always run (docs/DESIGN.md §2.2): in a process group of their own, output line by line
//! to the log, killed with their whole group when they outlast a timeout.

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::pipe::PipeFlags;
use rustix::process::{kill_process_group, pidfd_open, Pid, PidfdFlags, Signal};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Directories searched for an external tool after `PATH`: a cron job's or a non-login
/// shell's `PATH` lacks the sbin ones, where `lvcreate`, `zfs` and `losetup` live.
pub const SYSTEM_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// Full path of the external tool `name`: the first regular file of that name in `PATH`, then
/// in [`SYSTEM_DIRS`].
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SYSTEM_DIRS.map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A command for the external tool `name` ([`find_tool`]), ready for [`run`]; `package` is
/// what installs it, for the error when it is not there.
pub fn tool_command(name: &str, package: &str) -> Result<Command, CommandError> {
    let path = find_tool(name).ok_or_else(|| CommandError::NotFound {
        program: name.to_owned(),
        package: package.to_owned(),
    })?;
    Ok(Command::new(path))
}

/// An external command that could not be run or failed. The messages say the cause (the OS
/// error, the exit status and stderr); nothing is chained as a source, so it shows once.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{program} not found (is {package} installed?)")]
    NotFound { program: String, package: String },
    #[error("cannot run {program}: {error}")]
    Spawn {
        program: String,
        error: std::io::Error,
    },
    #[error("{command} failed ({status}){}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
}

/// Output of a successful command.
#[derive(Debug)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

/// Shell-like rendering of a command for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion; non-zero exit is an error carrying its stderr.
pub fn run(cmd: &mut Command) -> Result<Output, CommandError> {
    let command = describe(cmd);
    log::debug!("running {command}");
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|error| CommandError::Spawn {
            program: cmd.get_program().to_string_lossy().into_owned(),
            error,
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if out.status.success() {
        Ok(Output { stdout, stderr })
    } else {
        Err(CommandError::Failed {
            command,
            status: out.status.to_string(),
            stderr,
        })
    }
}

/// Why a hook run by [`run_hook`] has no exit status to show. The messages say the OS error;
/// it is not chained as a source too.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("cannot run it: {0}")]
    Spawn(std::io::Error),
    #[error("did not finish within {0:?}; its process group was killed")]
    TimedOut(Duration),
    #[error("cannot wait for it: {0}")]
    Wait(std::io::Error),
}

/// How a hook run by [`run_hook`] exited.
#[derive(Debug)]
pub struct HookExit {
    pub status: ExitStatus,
    /// When it failed: the end of what it wrote to stderr (at most [`STDERR_TAIL`] bytes,
    /// trimmed), for the error message; its output is in the log anyway. Empty on success.
    pub stderr: String,
}

/// Most of a failed hook's stderr kept for its error message.
pub const STDERR_TAIL: usize = 2048;

/// Longest line forwarded to the log in one piece, so a hook cannot make us buffer without end.
const MAX_LINE: u64 = 16 * 1024;

/// How long to wait for a killed hook to be reaped before leaving that to a thread.
const REAP_GRACE: Duration = Duration::from_secs(2);

/// How long a failed hook's stderr may take to reach end-of-file after it exited (a helper
/// it left running may hold it open): only its error message waits for it.
const STDERR_GRACE: Duration = Duration::from_millis(500);

const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Runs `cmd` as a hook: stdin from `/dev/null`, in its own process group (so that a timeout
/// kills whatever it started too), stdout and stderr line by line to the log as
/// `LABEL: line` (never to our stdout, the protocol channel). Returns when the process
/// exits, not when its output closes: it may leave a helper running. After `timeout` its
/// process group is killed: [`HookError::TimedOut`].
pub fn run_hook(mut cmd: Command, label: &str, timeout: Duration) -> Result<HookExit, HookError> {
    cmd.stdin(Stdio::null()).process_group(0);
    let output = OutputToLog::new(label).map_err(HookError::Spawn)?;
    let tail = output.tail.clone();
    let stderr_done = output.stderr_done;
    cmd.stdout(output.stdout).stderr(output.stderr);
    let mut child = spawn_retrying(&mut cmd).map_err(HookError::Spawn)?;
    // `cmd` drops our copies of the pipes' write ends, so that the forwarders see
    // end-of-file once the hook (and its descendants) are done.
    drop(cmd);
    match wait_timeout(&mut child, timeout) {
        Ok(Some(status)) if status.success() => Ok(HookExit {
            status,
            stderr: String::new(),
        }),
        Ok(Some(status)) => {
            if let Some(done) = stderr_done {
                let _ = done.recv_timeout(STDERR_GRACE);
            }
            let stderr = tail
                .map(|t| t.lock().map(|t| t.text()).unwrap_or_default())
                .unwrap_or_default();
            Ok(HookExit { status, stderr })
        }
        Ok(None) => {
            kill_and_reap(child, label);
            Err(HookError::TimedOut(timeout))
        }
        Err(e) => {
            kill_and_reap(child, label);
            Err(HookError::Wait(e))
        }
    }
}

/// The end of a stream, at most [`STDERR_TAIL`] bytes of whole lines (one longer line cut).
#[derive(Debug, Default)]
struct Tail(std::collections::VecDeque<String>, usize);

impl Tail {
    fn push(&mut self, line: &str) {
        let line: String = line.chars().take(STDERR_TAIL).collect();
        self.1 += line.len() + 1;
        self.0.push_back(line);
        while self.1 > STDERR_TAIL + 1 && self.0.len() > 1 {
            if let Some(old) = self.0.pop_front() {
                self.1 -= old.len() + 1;
            }
        }
    }

    fn text(&self) -> String {
        self.0
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
            .trim()
            .to_owned()
    }
}

/// Pipes for a hook's stdout and stderr whose lines detached threads send to the log. If a
/// thread cannot be started, that output goes to /dev/null rather than blocking the hook on
/// a full pipe.
struct OutputToLog {
    stdout: Stdio,
    stderr: Stdio,
    /// The end of stderr, as far as read.
    tail: Option<Arc<Mutex<Tail>>>,
    /// Closed (disconnected) when stderr reached end-of-file.
    stderr_done: Option<mpsc::Receiver<()>>,
}

impl OutputToLog {
    fn new(label: &str) -> std::io::Result<Self> {
        let stdout = forwarder(label, None)?.0;
        let tail = Arc::new(Mutex::new(Tail::default()));
        let (stderr, done) = forwarder(label, Some(tail.clone()))?;
        Ok(Self {
            stdout,
            stderr,
            tail: done.is_some().then_some(tail),
            stderr_done: done,
        })
    }
}

fn forwarder(
    label: &str,
    tail: Option<Arc<Mutex<Tail>>>,
) -> std::io::Result<(Stdio, Option<mpsc::Receiver<()>>)> {
    // CLOEXEC so that processes spawned concurrently by other threads do not inherit it.
    let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
    let owned = label.to_owned();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("hook-log".to_owned())
        .spawn(move || {
            forward_lines(File::from(read), &owned, tail.as_deref());
            drop(done_tx);
        });
    match spawned {
        Ok(_) => Ok((Stdio::from(write), Some(done_rx))),
        Err(e) => {
            log::warn!("{label}: cannot start a thread to log its output, discarding it: {e}");
            Ok((Stdio::null(), None))
        }
    }
}

fn forward_lines(read: File, label: &str, tail: Option<&Mutex<Tail>>) {
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end();
                log::info!("{label}: {text}");
                if let Some(Ok(mut tail)) = tail.map(Mutex::lock) {
                    tail.push(text);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                log::debug!("{label}: reading its output: {e}");
                break;
            }
        }
    }
}

/// `spawn`, retried briefly on ETXTBSY: a hook being written (or whose file descriptor
/// another thread's fork has just inherited) cannot be executed for that moment.
fn spawn_retrying(cmd: &mut Command) -> std::io::Result<Child> {
    let mut attempts = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(Errno::TXTBSY.raw_os_error()) && attempts < 10 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(10 * attempts));
            }
            result => return result,
        }
    }
}

/// Waits for `child` to exit, at most `timeout`; `None` when it is still running.
fn wait_timeout(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let pidfd = match pidfd_open(Pid::from_child(child), PidfdFlags::empty()) {
        Ok(fd) => Some(fd),
        // Kernels before 5.3 (or a seccomp filter) lack it; anything else (out of file
        // descriptors) is no reason to give up on the hook either.
        Err(e) => {
            if e != Errno::NOSYS {
                log::debug!("pidfd_open: {e}; polling for the hook's exit instead");
            }
            None
        }
    };
    wait_with(child, timeout, pidfd)
}

/// [`wait_timeout`] with the pidfd of `child`, or without one: then by polling `try_wait`.
pub(crate) fn wait_with(
    child: &mut Child,
    timeout: Duration,
    mut pidfd: Option<OwnedFd>,
) -> std::io::Result<Option<ExitStatus>> {
    // `None`: the timeout is too large to matter.
    let deadline = Instant::now().checked_add(timeout);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let remaining = match deadline {
            Some(deadline) => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    return Ok(None);
                }
                Some(remaining)
            }
            None => None,
        };
        let Some(fd) = &pidfd else {
            std::thread::sleep(remaining.map_or(POLL_INTERVAL, |r| r.min(POLL_INTERVAL)));
            continue;
        };
        // The pidfd becomes readable when the process exits.
        let timespec = remaining.and_then(|r| Timespec::try_from(r).ok());
        match poll(&mut [PollFd::new(fd, PollFlags::IN)], timespec.as_ref()) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => {
                log::debug!("poll on a pidfd: {e}; polling for the hook's exit instead");
                pidfd = None;
            }
        }
    }
}

/// Kills the hook's process group (and the hook itself, should it have left the group),
/// then reaps it; one that does not die promptly (stuck in the kernel) is reaped by a thread.
pub(crate) fn kill_and_reap(mut child: Child, label: &str) {
    let pid = Pid::from_child(&child);
    match kill_process_group(pid, Signal::KILL) {
        Ok(()) | Err(Errno::SRCH) => {}
        Err(e) => log::warn!("{label}: cannot kill its process group {pid}: {e}"),
    }
    if let Err(e) = child.kill() {
        log::debug!("{label}: kill: {e}");
    }
    match wait_timeout(&mut child, REAP_GRACE) {
        Ok(Some(_)) => {}
        Ok(None) | Err(_) => {
            log::warn!("{label}: still not gone {REAP_GRACE:?} after SIGKILL; reaping it later");
            let owned = label.to_owned();
            let spawned = std::thread::Builder::new()
                .name("hook-reap".to_owned())
                .spawn(move || {
                    if let Err(e) = child.wait() {
                        log::warn!("{owned}: cannot reap it: {e}");
                    }
                });
            if let Err(e) = spawned {
                log::warn!("{label}: cannot start a thread to reap it: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines_within_the_bound() {
        let mut t = Tail::default();
        assert_eq!(t.text(), "");
        t.push("first");
        t.push("second");
        assert_eq!(t.text(), "first\nsecond");
        for i in 0..1000 {
            t.push(&format!("line {i}"));
        }
        let text = t.text();
        assert!(text.len() <= STDERR_TAIL, "{}", text.len());
        assert!(text.ends_with("line 999"), "{text}");
        assert!(!text.contains("first"));
        // One line longer than the bound is cut, not dropped.
        t.push(&"x".repeat(3 * STDERR_TAIL));
        assert_eq!(t.text(), "x".repeat(STDERR_TAIL));
    }

    #[test]
    fn a_failed_hook_s_stderr_comes_back_and_a_hung_one_is_killed_with_its_group() {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "echo out; echo 'it broke' >&2; exit 4"]);
        let exit = run_hook(cmd, "test hook", Duration::from_secs(20)).unwrap();
        assert_eq!(exit.status.code(), Some(4));
        assert_eq!(exit.stderr, "it broke");

        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "echo quiet >&2; exit 0"]);
        let exit = run_hook(cmd, "test hook", Duration::from_secs(20)).unwrap();
        assert!(exit.status.success());
        assert_eq!(exit.stderr, "");

        // A child in the background that would outlive its parent: killed with the group.
        let dir = tempfile::Builder::new()
            .prefix("snaptest-exec-")
            .tempdir()
            .unwrap();
        let pidfile = dir.path().join("child");
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg("sleep 1000 & echo $! > \"$1\"; wait")
            .arg("sh")
            .arg(&pidfile);
        let started = Instant::now();
        let err = run_hook(cmd, "test hook", Duration::from_millis(500)).unwrap_err();
        assert!(matches!(err, HookError::TimedOut(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Gone, or a zombie about to be reaped by init: not running `sleep` any more.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            let alive = state.is_some_and(|s| {
                s.rsplit_once(") ")
                    .is_some_and(|(_, rest)| !rest.starts_with('Z'))
            });
            if !alive {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "child {pid} survived the timeout"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
