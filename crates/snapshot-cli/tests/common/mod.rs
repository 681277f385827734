//! Shared by the integration tests: run the real binaries over pipes.
#![allow(dead_code, unused_imports)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use snapshot_testkit::{mounts_under, require_privileges, FsKind, LoopFs, Scratch};

pub fn bin(name: &str) -> PathBuf {
    match name {
        "snapshot" => PathBuf::from(env!("CARGO_BIN_EXE_snapshot")),
        "start-snapshot" => PathBuf::from(env!("CARGO_BIN_EXE_start-snapshot")),
        "stop-snapshot" => PathBuf::from(env!("CARGO_BIN_EXE_stop-snapshot")),
        _ => panic!("no binary {name}"),
    }
}

/// Runs `program ARGS...` (one of the tool's binaries) to completion, at most a minute;
/// returns status, stdout, stderr (stderr is echoed for the test's log).
pub fn run_bin(program: &str, args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(bin(program))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let status = wait_timeout(&mut child, Duration::from_secs(60));
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    eprint!("{err}");
    (status.code().unwrap_or(-1), out, err)
}

/// A `snapshot` session driven like a backup script would: stdin and stdout are pipes.
pub struct Running {
    pub child: Child,
    stdout: Option<ChildStdout>,
    stderr: mpsc::Receiver<String>,
}

impl Running {
    pub fn start(args: &[&str], runtime: &Path) -> Self {
        Self::start_env(args, runtime, &[])
    }

    /// [`Running::start`] with extra environment variables (e.g. `SNAPSHOT_FAULT`).
    pub fn start_env(args: &[&str], runtime: &Path, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(bin("snapshot"))
            .args(args)
            .envs(env.iter().copied())
            .arg("--runtime-dir")
            .arg(runtime)
            .arg("--state-dir")
            .arg(runtime.join("state"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn snapshot");
        let stdout = child.stdout.take();
        let mut err = child.stderr.take().unwrap();
        let (tx, stderr) = mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            eprint!("{s}");
            let _ = tx.send(s);
        });
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// Reads stdout to EOF: the ready line (or nothing on failure). Must arrive within `limit`.
    pub fn ready_within(&mut self, limit: Duration) -> String {
        let stdout = self.stdout.take().expect("ready read once");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(stdout).read_to_string(&mut s);
            let _ = tx.send(s);
        });
        rx.recv_timeout(limit).unwrap_or_else(|_| {
            let _ = self.child.kill();
            panic!("no EOF on stdout within {limit:?}")
        })
    }

    pub fn ready(&mut self) -> String {
        self.ready_within(Duration::from_secs(60))
    }

    /// Closes stdin (the end of the backup) and waits; returns the status and stderr.
    pub fn finish(mut self) -> (ExitStatus, String) {
        drop(self.child.stdin.take());
        self.wait()
    }

    pub fn wait(mut self) -> (ExitStatus, String) {
        let status = wait_timeout(&mut self.child, Duration::from_secs(60));
        let err = self
            .stderr
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_default();
        (status, err)
    }

    pub fn pid(&self) -> rustix::process::Pid {
        rustix::process::Pid::from_raw(self.child.id() as i32).unwrap()
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }
}

/// A test that fails with its session still running (perhaps stopped by fault injection)
/// must not leave it holding mounts: end it in order (TERM, CONT), by its pid, then KILL.
impl Drop for Running {
    fn drop(&mut self) {
        use rustix::process::{kill_process, Signal};
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let pid = self.pid();
        eprintln!("test: session pid {pid:?} still running at drop; sending TERM");
        let _ = kill_process(pid, Signal::TERM);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            let _ = kill_process(pid, Signal::CONT);
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("test: session pid {pid:?} ignored TERM for 30 s; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// TARGET + path.
pub fn in_view(target: &Path, path: &Path) -> PathBuf {
    target.join(path.strip_prefix("/").unwrap())
}

/// Asserts that creating a file in `dir` fails with EROFS.
pub fn assert_read_only(dir: &Path) {
    let err = std::fs::write(dir.join(".snaptest-write-probe"), "x")
        .expect_err(&format!("{dir:?} is writable"));
    assert_eq!(
        err.raw_os_error(),
        Some(30),
        "{dir:?}: expected EROFS, got {err}"
    );
}

/// No journal left in the runtime directory's state dir (as `Running::start` sets it).
pub fn assert_no_journal(runtime: &Path) {
    let dir = runtime.join("state/sessions");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "journals left: {left:?}");
}

/// Nothing mounted under `target`, and `target` empty.
pub fn assert_clean(target: &Path) {
    assert_eq!(
        mounts_under(target),
        Vec::<PathBuf>::new(),
        "mounts left under {target:?}"
    );
    let left: Vec<_> = std::fs::read_dir(target)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "{target:?} not empty: {left:?}");
}

/// Path as a &str (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Lines of a file, or none.
pub fn lines(p: &Path) -> Vec<String> {
    std::fs::File::open(p)
        .map(|f| BufReader::new(f).lines().map(Result::unwrap).collect())
        .unwrap_or_default()
}

/// Writes an executable shell script.
pub fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Does a write (with fsync) to `dir` complete within `limit`? A frozen filesystem blocks it;
/// the writing thread then finishes whenever the filesystem is thawed.
pub fn writable_within(dir: &Path, limit: Duration) -> bool {
    use std::io::Write;
    let path = dir.join("snaptest-probe-write");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(b"x").and_then(|()| f.sync_all()));
        let _ = tx.send(r.is_ok());
    });
    rx.recv_timeout(limit).unwrap_or(false)
}

/// Whether process `pid` is stopped (state `T` in /proc/PID/stat).
pub fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| st.rfind(')').map(|i| st[i + 2..].starts_with('T')))
        .unwrap_or(false)
}

/// Waits (at most `limit`) until the child stops itself (fault injection `STEP:stop`).
pub fn wait_stopped(child: &mut Child, limit: Duration) {
    let t = Instant::now();
    while !is_stopped(child.id()) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("exited ({status}) before the fault struck");
        }
        assert!(
            t.elapsed() < limit,
            "the fault did not strike within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `snapshot cleanup --json [--dry-run]` over `state`: status and report.
pub fn cleanup_json(state: &Path, dry_run: bool) -> (i32, serde_json::Value) {
    let mut args = vec!["cleanup", "--json", "-v", "--state-dir", s(state)];
    if dry_run {
        args.push("--dry-run");
    }
    let (code, out, _) = run_bin("snapshot", &args);
    let report =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("cleanup --json: {e}: {out}"));
    (code, report)
}

/// The entry of `session` in a status or cleanup report.
pub fn session_entry<'a>(report: &'a serde_json::Value, session: &str) -> &'a serde_json::Value {
    report["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["session"] == session)
        .unwrap_or_else(|| panic!("no session {session} in {report}"))
}

/// `btrfs subvolume list -a` lines (paths) naming anything with `pattern`.
pub fn subvolumes(mount_point: &Path, pattern: &str) -> Vec<String> {
    snapshot_testkit::run("btrfs", &["subvolume", "list", "-a", s(mount_point)])
        .unwrap()
        .lines()
        .filter(|l| l.contains(pattern))
        .map(|l| l.rsplit(' ').next().unwrap().to_owned())
        .collect()
}

/// A handshake with the command `snapshot run` runs: the command says it started (file
/// `ready`) and waits, at most 10 s, for the test's `go`, so that the test can change the live
/// files in between and then look at what the command read.
pub struct Handshake {
    ready: PathBuf,
    go: PathBuf,
}

impl Handshake {
    /// `ready` and `go` in `dir`, which the command must be able to write.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ready: dir.join("ready"),
            go: dir.join("go"),
        }
    }

    /// Shell that says ready, waits for go, then runs `then`.
    pub fn script(&self, then: &str) -> String {
        format!(
            "touch {ready}; i=0; while [ ! -e {go} ] && [ $i -lt 500 ]; do sleep 0.02; i=$((i+1)); done; {then}",
            ready = s(&self.ready),
            go = s(&self.go),
        )
    }

    /// Waits (at most 30 s) until the command said ready; panics if `child` exits first.
    pub fn wait_ready(&self, child: &mut Child) {
        let t = Instant::now();
        while !self.ready.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the command never started"
            );
            assert!(child.try_wait().unwrap().is_none(), "snapshot exited early");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Says go, waits (at most 60 s) for `child` to succeed and returns its stderr.
    pub fn go_and_finish(&self, child: &mut Child) -> String {
        std::fs::write(&self.go, "").unwrap();
        let status = wait_timeout(child, Duration::from_secs(60));
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert_eq!(status.code(), Some(0), "{stderr}");
        stderr
    }
}
