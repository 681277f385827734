//! One instant across machines (`--barrier`; loop tier: root). Three "hosts" — three sessions,
//! each over a btrfs filesystem of its own — and one writer whose every record spans all
//! three (a line appended to each filesystem's log, under an exclusive lock), paused by a
//! writer hook on `freeze` (a shared lock held until `thaw`). A coordinator drives the
//! sessions through pipes as a cluster tool would: with the barrier (every session `frozen`,
//! then `go` to all), the three views hold the same records in every cycle; without it (the
//! three sessions one after another, as three independent hosts would run them) they do not —
//! the negative control. Also: abort, end of input and timeout at the barrier undo everything
//! (82), and start-snapshot's detached form (`start-snapshot --barrier`, `snapshot go`).

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HOSTS: usize = 3;
const CYCLES: usize = 5;

/// The three hosts' filesystems, the writer's lock, and the hook that pauses the writer.
struct Cluster {
    scratch: Scratch,
    fss: Vec<LoopFs>,
    lock: PathBuf,
    hooks: PathBuf,
}

impl Cluster {
    fn new(name: &str) -> Self {
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

    fn target(&self, i: usize) -> PathBuf {
        let t = self.scratch.join(format!("T{i}"));
        let _ = std::fs::create_dir(&t);
        t
    }

    /// `snapshot [--barrier] --json -t T_i host_i`, pipes on stdin and stdout.
    fn session(&self, i: usize, barrier: bool, extra: &[&str]) -> Host {
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
    fn last_in_view(&self, i: usize) -> u64 {
        let log = in_view(&self.target(i), &self.fss[i].mount_point).join("log");
        last_record(&log)
    }
}

fn last_record(log: &Path) -> u64 {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .last()
        .and_then(|l| l.parse().ok())
        .unwrap_or(0)
}

struct Host {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Host {
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.stdout.read_line(&mut l).unwrap();
        l
    }

    fn say(&mut self, word: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{word}").unwrap();
        stdin.flush().unwrap();
    }

    /// Closes stdin (teardown, or an abort at the barrier); the exit status and stderr.
    fn finish(mut self) -> (Option<i32>, String) {
        drop(self.stdin.take());
        let status = wait_timeout(&mut self.child, Duration::from_secs(60));
        let mut err = String::new();
        std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut err).unwrap();
        (status.code(), err)
    }
}

/// The writer: record after record, each a line in all three logs, under the exclusive lock.
struct Writer {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(cluster: &Cluster) -> Self {
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

    fn wait_for(&self, records: u64) {
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

/// One cycle with the barrier: the last record of each view.
fn cycle_with_barrier(c: &Cluster) -> Vec<u64> {
    let mut hosts: Vec<Host> = (0..HOSTS).map(|i| c.session(i, true, &[])).collect();
    for h in &mut hosts {
        assert_eq!(h.line(), "frozen\n");
    }
    for h in &mut hosts {
        h.say("go");
    }
    for h in &mut hosts {
        let ready: serde_json::Value = serde_json::from_str(&h.line()).unwrap();
        let instant = &ready["mounts"][0]["instant"];
        assert!(instant["start"].as_f64().unwrap() <= instant["end"].as_f64().unwrap());
    }
    let seen = (0..HOSTS).map(|i| c.last_in_view(i)).collect();
    for h in hosts {
        let (code, err) = h.finish();
        assert_eq!(code, Some(0), "{err}");
    }
    seen
}

/// One cycle without it: three independent sessions, one after another.
fn cycle_without_barrier(c: &Cluster) -> Vec<u64> {
    let mut seen = Vec::new();
    let mut hosts = Vec::new();
    for i in 0..HOSTS {
        let mut h = c.session(i, false, &[]);
        assert!(h.line().starts_with('{'));
        seen.push(c.last_in_view(i));
        hosts.push(h);
        std::thread::sleep(Duration::from_millis(20));
    }
    for h in hosts {
        let (code, err) = h.finish();
        assert_eq!(code, Some(0), "{err}");
    }
    seen
}

#[test]
fn the_barrier_gives_one_instant_across_hosts() {
    if !require_privileges("the_barrier_gives_one_instant_across_hosts") {
        return;
    }
    let c = Cluster::new("barrier");
    let writer = Writer::start(&c);
    writer.wait_for(50);
    for cycle in 0..CYCLES {
        let seen = cycle_with_barrier(&c);
        assert!(seen[0] > 0, "cycle {cycle}: {seen:?}");
        assert!(
            seen.iter().all(|&n| n == seen[0]),
            "cycle {cycle}: the views hold different records with the barrier: {seen:?}"
        );
    }
    // Negative control: the same check breaks without the barrier.
    let broken = (0..CYCLES)
        .filter(|_| {
            let seen = cycle_without_barrier(&c);
            !seen.iter().all(|&n| n == seen[0])
        })
        .count();
    assert!(
        broken > 0,
        "without the barrier the check never broke: it cannot tell"
    );
    drop(writer);
    for i in 0..HOSTS {
        assert_clean(&c.target(i));
    }
}

/// `abort`, end of input, and no word within --barrier-timeout: exit 82, the writer paused
/// by the hook goes on (thawed), nothing is left.
#[test]
fn no_go_at_the_barrier_undoes_everything() {
    if !require_privileges("no_go_at_the_barrier_undoes_everything") {
        return;
    }
    let c = Cluster::new("barrier-nogo");
    let writer = Writer::start(&c);
    writer.wait_for(10);
    for how in ["abort", "eof", "timeout"] {
        let extra: &[&str] = if how == "timeout" {
            &["--barrier-timeout", "500ms"]
        } else {
            &[]
        };
        let mut h = c.session(0, true, extra);
        assert_eq!(h.line(), "frozen\n", "{how}");
        let paused_at = writer.written.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            writer.written.load(Ordering::SeqCst),
            paused_at,
            "{how}: the writer goes on while frozen at the barrier"
        );
        match how {
            "abort" => h.say("abort"),
            "timeout" => std::thread::sleep(Duration::from_millis(700)),
            _ => {}
        }
        let (code, err) = h.finish();
        assert_eq!(code, Some(82), "{how}: {err}");
        assert!(err.contains("barrier"), "{how}: {err}");
        writer.wait_for(paused_at + 10);
        assert_clean(&c.target(0));
        let subvolumes =
            snapshot_testkit::run("btrfs", &["subvolume", "list", s(&c.fss[0].mount_point)])
                .unwrap();
        assert!(!subvolumes.contains("snapshot-"), "{how}: {subvolumes}");
    }
    // Refused: a timeout the freeze timeout would cut short, and run --barrier.
    let (code, _, err) = run_bin(
        "snapshot",
        &[
            "--barrier",
            "--barrier-timeout",
            "40s",
            "-t",
            s(&c.target(1)),
            s(&c.fss[1].mount_point),
        ],
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--barrier-timeout"), "{err}");
}

/// The detached form: `start-snapshot --barrier` returns at the barrier (printing `frozen`),
/// `snapshot go` releases it and prints the ready line, `stop-snapshot` tears down; a second
/// holder is aborted by `stop-snapshot` at its barrier (82); `snapshot go` with nothing
/// waiting says so (69).
#[test]
fn start_snapshot_at_the_barrier_and_snapshot_go() {
    if !require_privileges("start_snapshot_at_the_barrier_and_snapshot_go") {
        return;
    }
    let c = Cluster::new("barrier-held");
    let writer = Writer::start(&c);
    writer.wait_for(10);
    let rt = c.scratch.join("run-held");
    let target = c.target(0);
    let common = [
        "--runtime-dir",
        s(&rt),
        "--state-dir",
        &format!("{}/state", s(&rt)),
        "--writers-dir",
        s(&c.hooks),
        "-t",
        s(&target),
    ];
    let mut start = vec!["--barrier", "--json"];
    start.extend(common);
    start.push(s(&c.fss[0].mount_point));
    let (code, out, err) = run_bin("start-snapshot", &start);
    assert_eq!((code, out.as_str()), (0, "frozen\n"), "{err}");
    let paused_at = writer.written.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(writer.written.load(Ordering::SeqCst), paused_at, "frozen");
    let go = ["go", "--runtime-dir", s(&rt), "-t", s(&target)];
    let (code, out, err) = run_bin("snapshot", &go);
    assert_eq!(code, 0, "{err}");
    let ready: serde_json::Value = serde_json::from_str(&out).expect(&out);
    assert_eq!(ready["mounts"][0]["provider"], "btrfs");
    assert_eq!(
        c.last_in_view(0),
        paused_at,
        "the view holds the barrier's instant"
    );
    writer.wait_for(paused_at + 10);
    let stop = ["--runtime-dir", s(&rt), "-t", s(&target)];
    let (code, _, err) = run_bin("stop-snapshot", &stop);
    assert_eq!(code, 0, "{err}");
    assert_clean(&target);

    let (code, out, err) = run_bin("start-snapshot", &start);
    assert_eq!((code, out.as_str()), (0, "frozen\n"), "{err}");
    let (code, _, err) = run_bin("stop-snapshot", &stop);
    assert_eq!(code, 82, "stop at the barrier aborts: {err}");
    assert_clean(&target);
    let (code, _, err) = run_bin("snapshot", &go);
    assert_eq!(code, 69, "{err}");
    drop(writer);
}
