//! `start-snapshot` / `stop-snapshot`: a detached `snapshot --holder` process keeps the view;
//! its state lives in `RUNTIME/held/<target>.{json,log,status,offset}` — root's alone (the
//! directories 0700, the files 0600): `stop-snapshot` signals the pid it finds there.

use crate::args::SessionArgs;
use crate::exit;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, Serialize, Deserialize)]
pub struct HeldState {
    pub pid: u32,
    #[serde(with = "snapshot_core::path_json")]
    pub target: PathBuf,
    pub session: String,
    /// Where the holder is: at its barrier (`--barrier`), or holding a ready view.
    #[serde(default)]
    pub phase: HeldPhase,
    /// Once ready after a barrier: the ready line (`snapshot go` prints it; start-snapshot
    /// had returned at the barrier).
    #[serde(default)]
    pub ready_line: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeldPhase {
    Frozen,
    #[default]
    Ready,
}

#[derive(Debug)]
pub struct HeldPaths {
    pub state: PathBuf,
    pub log: PathBuf,
    pub status: PathBuf,
    pub offset: PathBuf,
}

impl HeldPaths {
    pub fn new(runtime: &Path, target: &Path) -> Self {
        let target = target.canonicalize().unwrap_or_else(|_| target.to_owned());
        let base = runtime
            .join("held")
            .join(snapshot_core::lock::escape_path(&target));
        let with = |ext: &str| {
            let mut p = base.clone().into_os_string();
            p.push(ext);
            PathBuf::from(p)
        };
        Self {
            state: with(".json"),
            log: with(".log"),
            status: with(".status"),
            offset: with(".offset"),
        }
    }
}

/// `RUNTIME/held`, checked to be root's alone (and created 0700 with `RUNTIME` when missing
/// and `create`); `Ok(false)`: missing.
fn check_held_dir(runtime: &Path, create: bool) -> anyhow::Result<bool> {
    Ok(snapshot_core::lock::private_child(runtime, "held", create)?.is_some())
}

/// Holder side: records who holds the target (before the ready line goes out); after a
/// barrier, with the ready line for `snapshot go`.
pub fn holder_ready(
    runtime: &Path,
    target: &Path,
    session: &str,
    ready_line: Option<String>,
) -> anyhow::Result<()> {
    write_state(
        runtime,
        target,
        HeldState {
            pid: std::process::id(),
            target: target.to_owned(),
            session: session.to_owned(),
            phase: HeldPhase::Ready,
            ready_line,
        },
    )
}

/// Holder side, `--barrier`: records that it waits at the barrier (for `snapshot go` and
/// `stop-snapshot` to find it), before start-snapshot returns.
pub fn holder_frozen(runtime: &Path, target: &Path) -> std::io::Result<()> {
    let state = HeldState {
        pid: std::process::id(),
        target: target.to_owned(),
        session: String::new(),
        phase: HeldPhase::Frozen,
        ready_line: None,
    };
    write_state(runtime, target, state).map_err(std::io::Error::other)
}

fn write_state(runtime: &Path, target: &Path, state: HeldState) -> anyhow::Result<()> {
    let paths = HeldPaths::new(runtime, target);
    check_held_dir(runtime, true)?;
    snapshot_core::lock::write_private_atomic(&paths.state, &serde_json::to_vec(&state)?, true)
        .with_context(|| format!("writing {:?}", paths.state))
}

/// Holder side: leaves the exit status for `stop-snapshot`, and withdraws the state.
pub fn holder_finished(runtime: &Path, target: &Path, status: u8) {
    let paths = HeldPaths::new(runtime, target);
    if let Err(e) = snapshot_core::lock::write_private_atomic(
        &paths.status,
        status.to_string().as_bytes(),
        true,
    ) {
        log::error!("writing {:?}: {e}", paths.status);
    }
    let _ = std::fs::remove_file(&paths.state);
}

/// The holder's state, when there is one that only root could have written.
fn read_state(paths: &HeldPaths) -> Option<HeldState> {
    let mut data = Vec::new();
    match snapshot_core::lock::open_private_file(&paths.state) {
        Ok(mut f) => f.read_to_end(&mut data).ok()?,
        Err(snapshot_core::lock::PrivateDirError::Io { .. }) => return None,
        Err(e) => {
            log::warn!("{e}");
            return None;
        }
    };
    serde_json::from_slice(&data).ok()
}

/// start-snapshot and stop-snapshot act as root, on root's state.
fn require_root(program: &str) -> Option<u8> {
    if snapshot_core::sys::is_root() {
        return None;
    }
    say!("{program}: error: must run as root: snapshots and mounts need CAP_SYS_ADMIN");
    Some(exit::NO_PERMISSION)
}

/// Whether `pid` is a live `snapshot --holder` (not a recycled pid).
fn is_holder(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|&b| b == 0).any(|a| a == b"--holder"))
        .unwrap_or(false)
}

fn print_log_from(log: &Path, offset: u64) {
    if let Ok(mut f) = std::fs::File::open(log) {
        let mut s = String::new();
        if f.seek(SeekFrom::Start(offset)).is_ok() && f.read_to_string(&mut s).is_ok() {
            use std::io::Write as _;
            let _ = std::io::stderr().write_all(s.as_bytes());
        }
    }
}

/// `start-snapshot`: returns once the view is ready (0) or failed (the holder's status).
pub fn start(args: &SessionArgs, forwarded: Vec<std::ffi::OsString>) -> anyhow::Result<u8> {
    if let Some(code) = require_root("start-snapshot") {
        return Ok(code);
    }
    // Before anything is read from it: the runtime directory and `held/` are root's alone.
    check_held_dir(&args.runtime_dir, true)?;
    let paths = HeldPaths::new(&args.runtime_dir, &args.target);
    if let Some(state) = read_state(&paths) {
        if is_holder(state.pid) {
            say!(
                "start-snapshot: error: target {:?} is already held by session {} (pid {}); run stop-snapshot -t {:?} first",
                state.target, state.session, state.pid, state.target
            );
            return Ok(exit::BUSY);
        }
    }
    for stale in [&paths.status, &paths.offset] {
        let _ = std::fs::remove_file(stale);
    }
    let log = snapshot_core::lock::create_private_file(&paths.log)
        .with_context(|| format!("creating {:?}", paths.log))?;
    let exe = std::env::current_exe()
        .context("finding this program")?
        .with_file_name("snapshot");
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new(&exe)
            .args(forwarded)
            .arg("--holder")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            // Its own process group: a Ctrl-C meant for the caller's job does not end the view.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {exe:?}"))?
    };
    let mut ready = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut ready)
        .context("reading the holder's ready line")?;
    if !ready.is_empty() {
        return relay_ready(&paths, 0, &ready);
    }
    let status = child.wait().context("waiting for the holder")?;
    print_log_from(&paths.log, 0);
    let _ = std::fs::remove_file(&paths.status);
    let code = match status.code() {
        Some(0) | None => exit::FAILURE,
        Some(c) => c as u8,
    };
    Ok(code)
}

/// Prints the holder's log from byte `from` (what no caller has shown yet), records how far it
/// got for the next caller, and passes the ready line on to stdout.
fn relay_ready(paths: &HeldPaths, from: u64, ready: &str) -> anyhow::Result<u8> {
    print_log_from(&paths.log, from);
    let shown = std::fs::metadata(&paths.log).map(|m| m.len()).unwrap_or(0);
    snapshot_core::lock::write_private_atomic(&paths.offset, shown.to_string().as_bytes(), true)
        .with_context(|| format!("writing {:?}", paths.offset))?;
    let mut stdout = std::io::stdout();
    stdout.write_all(ready.as_bytes())?;
    stdout.flush()?;
    Ok(exit::OK)
}

/// `snapshot go`: releases the holder of `target` waiting at its barrier (SIGUSR2), waits
/// until its view is ready (prints the ready line, 0) or it failed (its log, its status).
pub fn go(runtime: &Path, target: &Path) -> anyhow::Result<u8> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    use rustix::process::{pidfd_open, Pid, PidfdFlags};
    if let Some(code) = require_root("snapshot go") {
        return Ok(code);
    }
    let held = check_held_dir(runtime, false)?;
    let paths = HeldPaths::new(runtime, target);
    let state = read_state(&paths).filter(|_| held);
    let Some(state) = state.filter(|s| s.phase == HeldPhase::Frozen) else {
        say!("snapshot go: error: no start-snapshot --barrier session waits at its barrier for {target:?}");
        return Ok(exit::UNAVAILABLE);
    };
    let pid = Pid::from_raw(state.pid as i32).context("bad pid in the state file")?;
    let pidfd = match pidfd_open(pid, PidfdFlags::empty()) {
        Ok(fd) if is_holder(state.pid) => fd,
        _ => {
            say!(
                "snapshot go: error: the holder of {target:?} (pid {}) is gone",
                state.pid
            );
            return Ok(exit::UNAVAILABLE);
        }
    };
    rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::USR2)
        .with_context(|| format!("signalling the holder (pid {})", state.pid))?;
    let tick = Timespec {
        tv_sec: 0,
        tv_nsec: 20_000_000,
    };
    loop {
        if let Some(ready) = read_state(&paths)
            .filter(|s| s.phase == HeldPhase::Ready)
            .and_then(|s| s.ready_line)
        {
            let seen = std::fs::read_to_string(&paths.offset)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            return relay_ready(&paths, seen, &ready);
        }
        let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
        if matches!(poll(&mut fds, Some(&tick)), Ok(n) if n > 0) {
            // The holder ended before its view was ready: its log and status say why.
            print_log_from(&paths.log, 0);
            let status = std::fs::read_to_string(&paths.status)
                .ok()
                .and_then(|s| s.trim().parse::<u8>().ok());
            for f in [&paths.status, &paths.offset, &paths.log, &paths.state] {
                let _ = std::fs::remove_file(f);
            }
            return Ok(status.unwrap_or(exit::FAILURE));
        }
    }
}

/// `stop-snapshot`: tears down what `start-snapshot` made, waits, reports its status.
pub fn stop(runtime: &Path, target: &Path) -> anyhow::Result<u8> {
    use rustix::event::{poll, PollFd, PollFlags};
    use rustix::process::{pidfd_open, Pid, PidfdFlags};
    if let Some(code) = require_root("stop-snapshot") {
        return Ok(code);
    }
    // A pid read from a file others could write is not one to signal.
    let held = check_held_dir(runtime, false)?;
    let paths = HeldPaths::new(runtime, target);
    let Some(state) = read_state(&paths).filter(|_| held) else {
        say!("stop-snapshot: error: no start-snapshot session holds {target:?}");
        return Ok(exit::UNAVAILABLE);
    };
    let pid = Pid::from_raw(state.pid as i32).context("bad pid in the state file")?;
    // A pidfd pins the process: the check below and the signal reach the same one.
    let pidfd = match pidfd_open(pid, PidfdFlags::empty()) {
        Ok(fd) if is_holder(state.pid) => fd,
        _ => {
            let _ = std::fs::remove_file(&paths.state);
            say!(
                "stop-snapshot: error: the holder of {target:?} (session {}, pid {}) is gone without tearing down; run `snapshot cleanup`",
                state.session, state.pid
            );
            return Ok(exit::TEARDOWN_INCOMPLETE);
        }
    };
    rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::USR1)
        .with_context(|| format!("signalling the holder (pid {})", state.pid))?;
    let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
    while poll(&mut fds, None).is_err() {}
    let offset = std::fs::read_to_string(&paths.offset)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    print_log_from(&paths.log, offset);
    let status = std::fs::read_to_string(&paths.status)
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok());
    for f in [&paths.status, &paths.offset, &paths.log, &paths.state] {
        let _ = std::fs::remove_file(f);
    }
    Ok(status.unwrap_or_else(|| {
        say!("stop-snapshot: error: the holder ended without reporting its teardown; run `snapshot cleanup`");
        exit::TEARDOWN_INCOMPLETE
    }))
}

#[cfg(test)]
#[path = "held_proptests.rs"]
mod proptests;
