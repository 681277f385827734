//! What `snapshot cleanup` acts on is root's alone, and only a live session can say it is
//! alive (issue 12; loop tier: root).
//!
//! The attack: a session is killed (SIGKILL) and leaves its view, snapshot and journal; an
//! unprivileged user who knows its id (the view's tmpfs shows it in the mount table) tries to
//! make it look alive, so that `snapshot cleanup` leaves everything in place — or forges a
//! journal. Liveness is now an exclusive `flock` on a file in `/run/snapshot/live` (0700
//! root), and every directory of state is refused unless it is root's alone.
//!
//! Each test has its own `--runtime-dir` and `--state-dir` in its scratch directory; the
//! liveness directory is machine-wide by design (`/run/snapshot/live`), and only its own
//! session's token is looked at there.

mod common;
use common::*;
use snapshot_core::recovery::liveness::{LivenessToken, LIVENESS_DIR};
use snapshot_testkit::{mode_of, set_mode};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
}

/// Owned by root, and exactly `want`.
fn assert_private(path: &Path, want: u32) {
    let md = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    assert_eq!(md.uid(), 0, "{path:?} owned by root");
    assert_eq!(mode_of(path), want, "mode of {path:?}");
}

/// The journals in a state directory.
fn journals(state: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(state.join("sessions"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

/// Every line of /proc/self/mountinfo that mentions `text`.
fn mountinfo_mentioning(text: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(text))
        .map(str::to_owned)
        .collect()
}

/// A refusal: status 1, the reason naming `dir` and the fix.
fn assert_refused(code: i32, stderr: &str, dir: &Path, why: &str) {
    assert_eq!(code, 1, "refused (internal error): {stderr}");
    assert!(
        stderr.contains(&format!("{dir:?}")),
        "names {dir:?}: {stderr}"
    );
    assert!(stderr.contains(why), "says {why:?}: {stderr}");
    assert!(
        stderr.contains(&format!(
            "chown root:root {d} && chmod 0700 {d}",
            d = dir.display()
        )),
        "says how to fix it: {stderr}"
    );
}

/// Runs `snapshot cleanup` over a state directory on drop when journals are left there (a
/// failed test's killed session), before the filesystems under it go.
struct CleanupOnDrop(PathBuf);

impl Drop for CleanupOnDrop {
    fn drop(&mut self) {
        if !journals(&self.0).is_empty() {
            eprintln!("test: journals left in {:?}; cleaning up", self.0);
            let _ = Command::new(bin("snapshot"))
                .args(["cleanup", "--state-dir", s(&self.0)])
                .stdin(Stdio::null())
                .status();
        }
    }
}

/// One filesystem (btrfs: a real snapshot; ext4: the bind fallback) with a file, an empty
/// target, and the runtime directory (`rt`; the state directory is `rt/state`, as
/// [`Running::start`] sets it). Fields drop in order: the cleanup first, the scratch last.
struct World {
    _cleanup: CleanupOnDrop,
    fs: LoopFs,
    m: PathBuf,
    target: PathBuf,
    rt: PathBuf,
    state: PathBuf,
    scratch: Scratch,
}

impl World {
    fn new(name: &str, kind: FsKind) -> Self {
        let scratch = Scratch::new(name).unwrap();
        let m = scratch.join("m");
        let fs = LoopFs::new(name, kind, kind.min_size_mb(), &m).unwrap();
        fs.write("f", "before").unwrap();
        let target = scratch.join("T");
        std::fs::create_dir(&target).unwrap();
        let rt = scratch.join("run");
        let state = rt.join("state");
        World {
            _cleanup: CleanupOnDrop(state.clone()),
            fs,
            m,
            target,
            rt,
            state,
            scratch,
        }
    }

    fn start(&self, extra: &[&str], env: &[(&str, &str)]) -> Running {
        let mut args = vec!["--no-writers", "--json", "-t", s(&self.target)];
        args.extend_from_slice(extra);
        args.push(s(&self.m));
        Running::start_env(&args, &self.rt, env)
    }

    /// `start-snapshot` over the filesystem: status, stdout, stderr.
    fn start_snapshot(&self) -> (i32, String, String) {
        run_bin(
            "start-snapshot",
            &[
                "--no-writers",
                "--runtime-dir",
                s(&self.rt),
                "--state-dir",
                s(&self.state),
                "-t",
                s(&self.target),
                s(&self.m),
            ],
        )
    }

    /// `stop-snapshot` of the target: status, stdout, stderr.
    fn stop_snapshot(&self) -> (i32, String, String) {
        run_bin(
            "stop-snapshot",
            &["--runtime-dir", s(&self.rt), "-t", s(&self.target)],
        )
    }

    /// A session that must be refused: no ready line; returns status and stderr.
    fn refused(&self) -> (i32, String) {
        let mut run = self.start(&[], &[]);
        assert_eq!(run.ready(), "", "no ready line");
        let (status, stderr) = run.finish();
        (status.code().unwrap_or(-1), stderr)
    }

    /// A session that works: ready, the view shows the file, a clean teardown. Returns its id.
    fn works(&self) -> String {
        let mut run = self.start(&[], &[]);
        let id = session_of(&run.ready());
        assert_eq!(
            std::fs::read_to_string(in_view(&self.target, &self.m).join("f")).unwrap(),
            "before"
        );
        let (status, stderr) = run.finish();
        assert_eq!(status.code(), Some(0), "{stderr}");
        self.assert_nothing_left(&id);
        id
    }

    /// Nothing mounted under the target or the runtime directory, an empty target, no
    /// snapshot (btrfs), no journal, no liveness token, nothing in the mount table carrying
    /// the session's id.
    fn assert_nothing_left(&self, id: &str) {
        assert_clean(&self.target);
        assert_eq!(mounts_under(&self.rt), Vec::<PathBuf>::new());
        if self.fs.kind == FsKind::Btrfs {
            assert_eq!(subvolumes(&self.m, "snapshot-"), Vec::<String>::new());
        }
        assert_eq!(journals(&self.state), Vec::<PathBuf>::new());
        assert!(!self.rt.join(id).exists(), "runtime directory of {id} left");
        assert!(
            !Path::new(LIVENESS_DIR).join(id).exists(),
            "liveness token of {id} left"
        );
        assert_eq!(mountinfo_mentioning(id), Vec::<String>::new());
    }
}

/// The session id in a `--json` ready line.
fn session_of(ready: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(ready).unwrap_or_else(|e| panic!("manifest: {e}: {ready:?}"));
    v["session"].as_str().unwrap().to_owned()
}

/// (1) A state directory owned by another user (uid 65534) is refused: the session exits 1
/// before anything is frozen or created, naming the directory and the fix; `snapshot
/// cleanup` and `snapshot status` refuse it too, and a symlinked state directory likewise.
/// Positive control: the same directory owned by root, mode 0700, works.
#[test]
fn state_dir_owned_by_another_user_is_refused() {
    if !require_privileges("state_dir_owned_by_another_user_is_refused") {
        return;
    }
    let w = World::new("state-owner", FsKind::Btrfs);
    std::fs::create_dir_all(&w.state).unwrap();
    set_mode(&w.rt, 0o700);
    set_mode(&w.state, 0o700);
    chown(&w.state, 65534);

    let (code, stderr) = w.refused();
    assert_refused(
        code,
        &stderr,
        &w.state,
        "is owned by uid 65534, not by root",
    );
    assert_clean(&w.target);
    assert_eq!(subvolumes(&w.m, "snapshot-"), Vec::<String>::new());
    assert!(!w.state.join("sessions").exists(), "nothing written there");
    assert_eq!(mounts_under(&w.rt), Vec::<PathBuf>::new());

    for cmd in ["cleanup", "status"] {
        let (code, out, stderr) = run_bin("snapshot", &[cmd, "--state-dir", s(&w.state)]);
        assert_refused(code, &stderr, &w.state, "is owned by uid 65534");
        assert_eq!(out, "", "{cmd}: nothing reported from it");
    }
    // Its `sessions/` owned by another user: the same.
    chown(&w.state, 0);
    std::fs::create_dir(w.state.join("sessions")).unwrap();
    set_mode(&w.state.join("sessions"), 0o700);
    chown(&w.state.join("sessions"), 65534);
    let (code, stderr) = w.refused();
    assert_refused(
        code,
        &stderr,
        &w.state.join("sessions"),
        "is owned by uid 65534",
    );
    std::fs::remove_dir(w.state.join("sessions")).unwrap();

    // A symlink to a good directory is refused too: the link could be changed.
    let real = w.scratch.join("real-state");
    std::fs::create_dir(&real).unwrap();
    set_mode(&real, 0o700);
    std::fs::remove_dir(&w.state).unwrap();
    std::os::unix::fs::symlink(&real, &w.state).unwrap();
    let (code, stderr) = w.refused();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("{:?} is a symbolic link", w.state)),
        "{stderr}"
    );
    assert!(!real.join("sessions").exists());
    assert_clean(&w.target);

    // Positive control.
    std::fs::remove_file(&w.state).unwrap();
    std::fs::create_dir(&w.state).unwrap();
    set_mode(&w.state, 0o700);
    w.works();
    let (code, out, stderr) = run_bin("snapshot", &["cleanup", "--state-dir", s(&w.state)]);
    assert_eq!(
        (code, out.as_str()),
        (0, "nothing to clean up\n"),
        "{stderr}"
    );
}

/// (2) A runtime directory its group can write (root's, mode 0770) is refused by a session
/// (exit 1, naming it and the fix, nothing created), by start-snapshot and by stop-snapshot;
/// a sticky world-writable one too. Positive control: mode 0700 works.
#[test]
fn group_writable_runtime_dir_is_refused() {
    if !require_privileges("group_writable_runtime_dir_is_refused") {
        return;
    }
    let w = World::new("state-rt", FsKind::Ext4);
    std::fs::create_dir(&w.rt).unwrap();
    for m in [0o770, 0o1777] {
        set_mode(&w.rt, m);
        let (code, stderr) = w.refused();
        assert_refused(code, &stderr, &w.rt, "is writable by its group or others");
        assert_clean(&w.target);
        assert_eq!(mounts_under(&w.rt), Vec::<PathBuf>::new());
        assert!(!w.rt.join("state").exists(), "nothing created in it");

        let (code, out, stderr) = w.start_snapshot();
        assert_refused(code, &stderr, &w.rt, "is writable by its group or others");
        assert_eq!(out, "");
        assert!(!w.rt.join("held").exists());
        assert_clean(&w.target);
        let (code, _, stderr) = w.stop_snapshot();
        assert_refused(code, &stderr, &w.rt, "is writable by its group or others");
        assert_eq!(mode_of(&w.rt), m, "a refused directory is left as it was");
    }
    // Its `locks/`, writable by others: the same.
    set_mode(&w.rt, 0o700);
    std::fs::create_dir(w.rt.join("locks")).unwrap();
    set_mode(&w.rt.join("locks"), 0o777);
    let (code, stderr) = w.refused();
    assert_refused(
        code,
        &stderr,
        &w.rt.join("locks"),
        "writable by its group or others",
    );
    set_mode(&w.rt.join("locks"), 0o700);

    // Positive control.
    w.works();
}

/// The attacker of [`killed_session_liveness_cannot_be_faked`], run (as uid 65534) from a
/// copy of this test binary; does nothing in a normal test run. With
/// `SNAPSHOT_TEST_FAKER=SESSION:STATE_DIR` it tries every way an unprivileged user has to make
/// SESSION look alive or to forge a journal, prints `faker: WHAT: ok` or `faker: WHAT: errno
/// N` for each, then `faker: ready`, and keeps whatever it got until its stdin closes.
#[test]
fn liveness_faker() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};
    let Ok(spec) = std::env::var("SNAPSHOT_TEST_FAKER") else {
        return;
    };
    let (session, state) = spec.split_once(':').unwrap();
    let say = |what: &str, r: std::io::Result<()>| match r {
        Ok(()) => println!("faker: {what}: ok"),
        Err(e) => println!("faker: {what}: errno {}", e.raw_os_error().unwrap_or(-1)),
    };
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    // What made a session look alive before: its abstract socket name.
    for name in [
        format!("snapshot-session/{session}"),
        format!("snapshot-session/{session}/watchdog"),
    ] {
        let r = SocketAddr::from_abstract_name(&name)
            .and_then(|a| UnixListener::bind_addr(&a))
            .map(|l| keep.push(Box::new(l)));
        say(&format!("bind @{name}"), r);
    }
    // The token files: make one, or open the stale one and lock it.
    let live = Path::new(LIVENESS_DIR);
    for name in [session.to_owned(), format!("{session}.watchdog")] {
        let path = live.join(&name);
        let r = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map(|f| keep.push(Box::new(f)));
        say(&format!("create {}", path.display()), r);
        let r = std::fs::File::open(&path).and_then(|f| {
            rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive)?;
            keep.push(Box::new(f));
            Ok(())
        });
        say(&format!("lock {}", path.display()), r);
    }
    say(
        &format!("list {}", live.display()),
        std::fs::read_dir(live).map(drop),
    );
    let run = live.parent().unwrap();
    say(
        &format!("mkdir {}", run.join("live2").display()),
        std::fs::create_dir(run.join("live2")),
    );
    say(
        &format!("rename {}", live.display()),
        std::fs::rename(live, run.join("live-moved")),
    );
    // A forged journal, and a journal of the session rewritten.
    let sessions = Path::new(state).join("sessions");
    say(
        "forge a journal",
        std::fs::write(sessions.join("snapshot-0badc0de.json"), "{}"),
    );
    say(
        "rewrite the session's journal",
        std::fs::OpenOptions::new()
            .write(true)
            .open(sessions.join(format!("{session}.json")))
            .map(drop),
    );
    println!("faker: ready");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(keep);
}

/// The faker, running as uid 65534 until dropped (its stdin closes; then killed by its pid if
/// it lingers).
struct Faker {
    child: Child,
    /// `(what, result)` per attempt.
    results: Vec<(String, String)>,
}

impl Faker {
    fn start(scratch: &Scratch, session: &str, state: &Path) -> Self {
        // A copy the unprivileged user can execute, wherever the build is.
        let exe = scratch.join("faker");
        if !exe.exists() {
            std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
            set_mode(&exe, 0o755);
            set_mode(scratch.path(), 0o755);
        }
        let mut child = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&exe)
            .args([
                "--exact",
                "liveness_faker",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SNAPSHOT_TEST_FAKER", format!("{session}:{}", s(state)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("setpriv (util-linux)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // The test harness may print its own words before the faker's on a line.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Some(at) = line.find("faker: ") else {
                    continue;
                };
                // Read to the end: the faker's last words must not meet a closed pipe.
                let _ = tx.send(line[at + "faker: ".len()..].to_owned());
            }
        });
        let mut faker = Faker {
            child,
            results: Vec::new(),
        };
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("the faker reports within 30 s");
            if line == "ready" {
                break;
            }
            let (what, result) = line.rsplit_once(": ").unwrap();
            faker.results.push((what.to_owned(), result.to_owned()));
        }
        eprintln!("faker (uid 65534): {:#?}", faker.results);
        faker
    }

    /// The abstract socket names were free to bind (nothing asserts liveness with them any
    /// more) and every other attempt was refused with EACCES.
    fn assert_only_sockets_bound(&self) {
        assert_eq!(self.results.len(), 11, "{:?}", self.results);
        for (what, result) in &self.results {
            let want = if what.starts_with("bind @") {
                "ok"
            } else {
                "errno 13"
            };
            assert_eq!(result, want, "{what}");
        }
    }

    fn finish(mut self) {
        drop(self.child.stdin.take());
        let status = wait_timeout(&mut self.child, Duration::from_secs(30));
        assert!(status.success(), "faker: {status}");
    }
}

impl Drop for Faker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            drop(self.child.stdin.take());
            std::thread::sleep(Duration::from_millis(200));
            if matches!(self.child.try_wait(), Ok(None)) {
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
    }
}

/// (3) A session killed after ready (its view, snapshot and journal left; its token file
/// stale) whose liveness an unprivileged process (uid 65534) tries to fake every way it has —
/// binding the abstract socket names that used to be the token, creating or locking the
/// token files, replacing the liveness directory, forging or rewriting a journal: it gets
/// only the socket names, and `snapshot cleanup` still takes the session for dead and removes
/// everything (no mount, snapshot, journal or token left). Positive control: while a real
/// session is alive — the faker at work on its id too — cleanup leaves it alone.
#[test]
fn killed_session_liveness_cannot_be_faked() {
    if !require_privileges("killed_session_liveness_cannot_be_faked") {
        return;
    }
    let w = World::new("state-fake", FsKind::Btrfs);
    let mut killed = w.start(
        &["--fault-injection"],
        &[("SNAPSHOT_FAULT", "after-ready:kill")],
    );
    let id = session_of(&killed.ready());
    assert_eq!(killed.wait().0.signal(), Some(9), "killed after ready");
    assert_eq!(journals(&w.state).len(), 1);
    assert_eq!(subvolumes(&w.m, &id).len(), 1, "its snapshot is left");
    assert!(
        !LivenessToken::is_held(&id),
        "nobody holds a dead session's token"
    );
    // (Its token file stays, unlocked — unless a concurrent cleanup swept it already.)

    let faker = Faker::start(&w.scratch, &id, &w.state);
    faker.assert_only_sockets_bound();
    assert!(
        !LivenessToken::is_held(&id),
        "the names the faker bound are no token"
    );

    let (code, report) = cleanup_json(&w.state, false);
    assert_eq!(code, 0, "{report}");
    let dead = session_entry(&report, &id);
    assert_eq!(dead["live"], false, "{report}");
    assert_eq!(dead["problems"], serde_json::json!([]), "{report}");
    let actions = dead["actions"].to_string();
    assert!(
        actions.contains(&format!("remove btrfs snapshot {id}"))
            && actions.contains("delete journal"),
        "{report}"
    );
    w.assert_nothing_left(&id);
    faker.finish();

    // Positive control: a live session, the faker at work on its id; cleanup spares it.
    let mut live = w.start(&[], &[]);
    let id = session_of(&live.ready());
    assert!(LivenessToken::is_held(&id));
    let token = Path::new(LIVENESS_DIR).join(&id);
    assert_private(&token, 0o600);
    let faker = Faker::start(&w.scratch, &id, &w.state);
    faker.assert_only_sockets_bound();
    let (code, report) = cleanup_json(&w.state, false);
    assert_eq!(code, 0, "{report}");
    let alive = session_entry(&report, &id);
    assert_eq!(alive["live"], true, "{report}");
    assert_eq!(alive["actions"], serde_json::json!([]), "{report}");
    assert_eq!(
        std::fs::read_to_string(in_view(&w.target, &w.m).join("f")).unwrap(),
        "before"
    );
    assert_eq!(subvolumes(&w.m, &id).len(), 1);
    assert!(token.exists() && LivenessToken::is_held(&id));
    faker.finish();
    let (status, stderr) = live.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    w.assert_nothing_left(&id);
}

/// (4) Everything a session and start-snapshot write is root's alone: the runtime
/// directory, `locks/`, the session's scratch directory, the state directory and `sessions/`,
/// `/run/snapshot` and its `live/` are 0700; journals, lock and token files, and
/// start-snapshot's state and log are 0600. A runtime directory that was root's but readable
/// by others (0755) is narrowed to 0700.
#[test]
fn state_is_private() {
    if !require_privileges("state_is_private") {
        return;
    }
    let w = World::new("state-modes", FsKind::Ext4);
    std::fs::create_dir(&w.rt).unwrap();
    set_mode(&w.rt, 0o755);
    let mut run = w.start(&[], &[]);
    let id = session_of(&run.ready());
    for dir in [
        w.rt.clone(),
        w.rt.join("locks"),
        w.rt.join(&id),
        w.state.clone(),
        w.state.join("sessions"),
        PathBuf::from(LIVENESS_DIR),
        Path::new(LIVENESS_DIR).parent().unwrap().to_owned(),
    ] {
        assert_private(&dir, 0o700);
    }
    let locks: Vec<_> = std::fs::read_dir(w.rt.join("locks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(locks.len(), 1);
    for file in [
        locks[0].clone(),
        w.state.join("sessions").join(format!("{id}.json")),
        Path::new(LIVENESS_DIR).join(&id),
    ] {
        assert_private(&file, 0o600);
    }
    let (status, stderr) = run.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    w.assert_nothing_left(&id);

    // start-snapshot's holder state.
    let (code, out, stderr) = w.start_snapshot();
    assert_eq!((code, out.as_str()), (0, "done\n"), "{stderr}");
    let held = w.rt.join("held");
    assert_private(&held, 0o700);
    let files: Vec<_> = std::fs::read_dir(&held)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "json"))
            && files
                .iter()
                .any(|f| f.extension().is_some_and(|e| e == "log")),
        "{files:?}"
    );
    for f in &files {
        assert_private(f, 0o600);
    }
    let (code, _, stderr) = w.stop_snapshot();
    assert_eq!(code, 0, "{stderr}");
    assert_clean(&w.target);
    assert_eq!(journals(&w.state), Vec::<PathBuf>::new());
}
