//! Three "hosts" on this machine for the cross-host tests (tests/barrier.rs,
//! tests/ansible.rs): each a btrfs filesystem of its own, and one writer whose every record
//! spans all three (a line appended to each filesystem's log, under an exclusive lock), paused
//! by a writer hook on `freeze` (a shared lock held until `thaw`).

#![allow(dead_code)] // each test target uses a part of it

use crate::common::*;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const HOSTS: usize = 3;

/// The three hosts' filesystems, the writer's lock, and the hook that pauses the writer.
pub struct Cluster {
    pub fss: Vec<LoopFs>,
    pub lock: PathBuf,
    pub hooks: PathBuf,
    /// Last: fields drop in order, and the scratch directory is removed only when nothing is
    /// mounted in it any more (the filesystems above go first).
    pub scratch: Scratch,
}

impl Cluster {
    pub fn new(name: &str) -> Self {
        let scratch = Scratch::new(name).unwrap();
        let fss: Vec<LoopFs> = (0..HOSTS)
            .map(|i| {
                LoopFs::new(
                    &format!("{name}-{i}"),
                    FsKind::Btrfs,
                    128,
                    &scratch.join(format!("host{i}")),
                )
                .unwrap()
            })
            .collect();
        let lock = scratch.join("writer.lock");
        std::fs::write(&lock, "").unwrap();
        let hooks = scratch.join("hooks");
        std::fs::create_dir(&hooks).unwrap();
        snapshot_testkit::set_mode(&hooks, 0o755);
        // freeze: hold a shared lock (the writer needs it exclusive) in the background until
        // thaw removes the session's pause file; return once the lock is held.
        script(
            &hooks.join("10-pause-writer"),
            &format!(
                r#"pause={dir}/pause-$SNAPSHOT_SESSION
case "$1" in
  freeze)
    touch "$pause"
    setsid flock -s {lock} -c "touch $pause.held; while [ -e $pause ]; do sleep 0.005; done" \
      </dev/null >/dev/null 2>&1 &
    while [ ! -e "$pause.held" ]; do sleep 0.005; done ;;
  thaw) rm -f "$pause" "$pause.held" ;;
esac"#,
                dir = s(scratch.path()),
                lock = s(&lock),
            ),
        );
        Self {
            scratch,
            fss,
            lock,
            hooks,
        }
    }

    pub fn target(&self, i: usize) -> PathBuf {
        let t = self.scratch.join(format!("T{i}"));
        let _ = std::fs::create_dir(&t);
        t
    }

    /// `snapshot [--barrier] --json -t T_i host_i`, pipes on stdin and stdout.
    pub fn session(&self, i: usize, barrier: bool, extra: &[&str]) -> Host {
        let rt = self.scratch.join(format!("run{i}"));
        let mut cmd = Command::new(bin("snapshot"));
        cmd.args(["--json", "--writers-dir", s(&self.hooks)])
            .args(["--runtime-dir", s(&rt), "--state-dir", s(&rt.join("state"))])
            .args(["-t", s(&self.target(i))])
            .args(extra);
        if barrier {
            cmd.arg("--barrier");
        }
        let mut child = cmd
            .arg(&self.fss[i].mount_point)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Host {
            child,
            stdin,
            stdout,
        }
    }

    /// The last record in host `i`'s log as the view shows it.
    pub fn last_in_view(&self, i: usize) -> u64 {
        let log = in_view(&self.target(i), &self.fss[i].mount_point).join("log");
        last_record(&log)
    }
}

pub fn last_record(log: &Path) -> u64 {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .last()
        .and_then(|l| l.parse().ok())
        .unwrap_or(0)
}

pub struct Host {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Host {
    pub fn line(&mut self) -> String {
        let mut l = String::new();
        self.stdout.read_line(&mut l).unwrap();
        l
    }

    pub fn say(&mut self, word: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{word}").unwrap();
        stdin.flush().unwrap();
    }

    /// Closes stdin (teardown, or an abort at the barrier); the exit status and stderr.
    pub fn finish(mut self) -> (Option<i32>, String) {
        drop(self.stdin.take());
        let status = wait_timeout(&mut self.child, Duration::from_secs(60));
        let mut err = String::new();
        std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut err).unwrap();
        (status.code(), err)
    }
}

/// The writer: record after record, each a line in all three logs, under the exclusive lock.
pub struct Writer {
    stop: Arc<AtomicBool>,
    pub written: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    pub fn start(cluster: &Cluster) -> Self {
        let logs: Vec<PathBuf> = cluster
            .fss
            .iter()
            .map(|f| f.mount_point.join("log"))
            .collect();
        let lock = std::fs::File::open(&cluster.lock).unwrap();
        let (stop, written) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s, w) = (stop.clone(), written.clone());
        let thread = std::thread::spawn(move || {
            use rustix::fs::{flock, FlockOperation};
            let mut files: Vec<std::fs::File> = logs
                .iter()
                .map(|p| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)
                        .unwrap()
                })
                .collect();
            let mut n = 0u64;
            while !s.load(Ordering::SeqCst) {
                n += 1;
                flock(&lock, FlockOperation::LockExclusive).unwrap();
                for f in &mut files {
                    writeln!(f, "{n}").unwrap();
                }
                flock(&lock, FlockOperation::Unlock).unwrap();
                w.store(n, Ordering::SeqCst);
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        Self {
            stop,
            written,
            thread: Some(thread),
        }
    }

    pub fn wait_for(&self, records: u64) {
        let t = Instant::now();
        while self.written.load(Ordering::SeqCst) < records {
            assert!(t.elapsed() < Duration::from_secs(30), "the writer is stuck");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
