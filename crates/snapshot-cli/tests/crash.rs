//! Crash safety (docs/DESIGN.md §3.3, issue 5) through the real binary (loop tier: root).
//!
//! The tool is killed (SIGKILL) or terminated (SIGTERM) at every fault-injection step while
//! it snapshots a btrfs filesystem (a real snapshot), an ext4 one (the bind fallback) and runs
//! a writer hook; `snapshot cleanup` never removes what the tool did not make; sessions run
//! side by side; hanging writers do not hang the tool.
//!
//! Every session gets `--runtime-dir` and `--state-dir` inside the test's own scratch
//! directory ([`Running::start`]), so nothing here touches `/run/snapshot` or
//! `/var/lib/snapshot`; the only sweeping is `snapshot cleanup` over the test's own state
//! directory.

mod common;
use common::*;
use rstest::rstest;
use rustix::process::Signal;
use snapshot_core::recovery::journal::{Journal, ObjectState, Record, SnapshotEntry};
use snapshot_core::recovery::liveness::LivenessToken;
use snapshot_core::Created;
use snapshot_testkit::{run, TestMount};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `snapshot status --json` over `state`.
fn status_json(state: &Path) -> serde_json::Value {
    let (code, out, err) = run_bin("snapshot", &["status", "--json", "--state-dir", s(state)]);
    assert_eq!(code, 0, "snapshot status: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json: {e}: {out}"))
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

/// Writes and fsyncs a file in each directory, each within 5 s: no filesystem is frozen.
fn assert_writable_promptly(dirs: &[&Path]) {
    for dir in dirs {
        let path = dir.join("crash-write-probe");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let r = std::fs::File::create(&path)
                .and_then(|mut f| f.write_all(b"probe").and_then(|()| f.sync_all()));
            let _ = tx.send(r);
        });
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("writing in {dir:?}: {e}"),
            Err(_) => panic!("a write in {dir:?} did not complete within 5 s: frozen?"),
        }
    }
}

/// Sends SIGCONT whenever the child is stopped (a step may strike once per snapshot or mount)
/// until it exits.
fn continue_until_exit(child: &mut Child) -> ExitStatus {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if is_stopped(child.id()) {
            rustix::process::kill_process(pid, Signal::CONT).unwrap();
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "did not exit within 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `snapshot cleanup` over a state directory on drop when journals are left there: what
/// a failed test's killed sessions left goes before the filesystems under it do.
struct CleanupOnDrop(PathBuf);

impl Drop for CleanupOnDrop {
    fn drop(&mut self) {
        let left = std::fs::read_dir(self.0.join("sessions"))
            .map(|d| d.count())
            .unwrap_or(0);
        if left > 0 {
            eprintln!("test: {left} journal(s) left in {:?}; cleaning up", self.0);
            let _ = Command::new(bin("snapshot"))
                .args(["cleanup", "--state-dir", s(&self.0)])
                .stdin(Stdio::null())
                .status();
        }
    }
}

/// A btrfs filesystem (a real snapshot), an ext4 one (the bind fallback), a writer hook that
/// logs `PHASE SESSION`, an empty target, and the sessions' runtime and state directories.
/// Fields drop in order: the cleanup first, the scratch directory last.
struct World {
    _cleanup: CleanupOnDrop,
    _btrfs_fs: LoopFs,
    _ext4_fs: LoopFs,
    btrfs: PathBuf,
    ext4: PathBuf,
    target: PathBuf,
    /// `--runtime-dir`; `--state-dir` is `rt/state` ([`Running::start`]).
    rt: PathBuf,
    state: PathBuf,
    writers: PathBuf,
    log: PathBuf,
    _scratch: Scratch,
}

impl World {
    fn new(name: &str) -> Self {
        let scratch = Scratch::new(name).unwrap();
        let (btrfs, ext4) = (scratch.join("srv/btrfs"), scratch.join("srv/ext4"));
        let btrfs_fs = LoopFs::new(&format!("{name}-b"), FsKind::Btrfs, 128, &btrfs).unwrap();
        let ext4_fs = LoopFs::new(&format!("{name}-e"), FsKind::Ext4, 16, &ext4).unwrap();
        btrfs_fs.write("f", "btrfs-before").unwrap();
        ext4_fs.write("f", "ext4-before").unwrap();
        let target = scratch.join("T");
        std::fs::create_dir(&target).unwrap();
        let writers = scratch.join("writers");
        std::fs::create_dir(&writers).unwrap();
        let log = scratch.join("writer.log");
        script(
            &writers.join("10-log"),
            &format!("echo \"$1 $SNAPSHOT_SESSION\" >> {}\nexit 0", log.display()),
        );
        let rt = scratch.join("run");
        let state = rt.join("state");
        World {
            _cleanup: CleanupOnDrop(state.clone()),
            _btrfs_fs: btrfs_fs,
            _ext4_fs: ext4_fs,
            btrfs,
            ext4,
            target,
            rt,
            state,
            writers,
            log,
            _scratch: scratch,
        }
    }

    /// A session over both filesystems with the writer hook; `fault`: `SNAPSHOT_FAULT`.
    fn start(&self, fault: Option<&str>) -> Running {
        let mut args = vec![
            "--writers-dir",
            s(&self.writers),
            "-v",
            "-t",
            s(&self.target),
        ];
        if fault.is_some() {
            args.push("--fault-injection");
        }
        args.extend([s(&self.btrfs), s(&self.ext4)]);
        let env: Vec<(&str, &str)> = fault.map(|f| ("SNAPSHOT_FAULT", f)).into_iter().collect();
        Running::start_env(&args, &self.rt, &env)
    }

    /// The writer log: `(phase, session)` per invocation.
    fn writer_log(&self) -> Vec<(String, String)> {
        lines(&self.log)
            .iter()
            .map(|l| {
                let (phase, session) = l.split_once(' ').unwrap();
                (phase.to_owned(), session.to_owned())
            })
            .collect()
    }

    /// The session of the last `freeze` in the writer log.
    fn last_session(&self) -> String {
        self.writer_log()
            .into_iter()
            .rev()
            .find(|(p, _)| p == "freeze")
            .expect("a writer was sent freeze")
            .1
    }

    /// Waits (at most 5 s) until the writer log has a `thaw` for `session`; returns the log.
    fn wait_for_thaw(&self, session: &str) -> Vec<(String, String)> {
        let t = Instant::now();
        loop {
            let log = self.writer_log();
            if log.iter().any(|(p, s)| p == "thaw" && s == session) || t.elapsed().as_secs() >= 5 {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The session's snapshots in the btrfs top level.
    fn snapshots_of(&self, session: &str) -> Vec<String> {
        subvolumes(&self.btrfs, session)
    }

    /// No mount under the target or the runtime directory, an empty target, no btrfs
    /// snapshot, no journal, no runtime directory of `session`, and nothing in the mount
    /// table carrying its id.
    fn assert_nothing_left(&self, session: &str) {
        assert_clean(&self.target);
        assert_eq!(
            mounts_under(&self.rt),
            Vec::<PathBuf>::new(),
            "mounts left in the runtime directory"
        );
        assert_eq!(
            subvolumes(&self.btrfs, "snapshot-"),
            Vec::<String>::new(),
            "btrfs snapshots left"
        );
        assert_no_journal(&self.rt);
        assert!(
            !self.rt.join(session).exists(),
            "runtime directory of {session} left"
        );
        assert_eq!(mountinfo_mentioning(session), Vec::<String>::new());
    }

    /// A new session on the same target: ready, the view shows the files, clean teardown.
    fn assert_new_session_works(&self) {
        let mut again = self.start(None);
        assert_eq!(again.ready(), "done\n");
        let session = self.last_session();
        for (dir, want) in [(&self.btrfs, "btrfs-before"), (&self.ext4, "ext4-before")] {
            let seen = std::fs::read_to_string(in_view(&self.target, dir).join("f")).unwrap();
            assert_eq!(seen, want);
        }
        assert_eq!(self.snapshots_of(&session).len(), 1);
        let (status, stderr) = again.finish();
        assert_eq!(status.code(), Some(0), "{stderr}");
        self.assert_nothing_left(&session);
        let log = self.writer_log();
        assert_eq!(
            log[log.len() - 2..],
            [
                ("freeze".to_owned(), session.clone()),
                ("thaw".to_owned(), session)
            ]
        );
    }
}

const STEPS_BEFORE_READY: [&str; 3] = ["after-writers-freeze", "after-create", "during-mount"];

/// SIGKILL at each step: (a) no filesystem stays frozen and the writer was sent `thaw` (by
/// the watchdog, when the kill struck between freeze and thaw); `snapshot status` shows the
/// dead session and what it had made; (b) `snapshot cleanup` leaves no mount, no snapshot,
/// no journal; (c) a new session on the same target works.
#[rstest]
#[case::after_writers_freeze("after-writers-freeze")]
#[case::after_create("after-create")]
#[case::during_mount("during-mount")]
#[case::after_ready("after-ready")]
#[case::mid_teardown("mid-teardown")]
fn sigkill_at(#[case] step: &str) {
    if !require_privileges(&format!("sigkill_at {step}")) {
        return;
    }
    let w = World::new(&format!("kill-{step}"));
    let fault = format!("{step}:kill");
    let mut killed = w.start(Some(&fault));
    let ready = killed.ready();
    let want_ready = if STEPS_BEFORE_READY.contains(&step) {
        ""
    } else {
        "done\n"
    };
    assert_eq!(ready, want_ready);
    // Closing stdin ends the hold: the mid-teardown fault strikes in the teardown it starts.
    let (status, stderr) = killed.finish();
    assert_eq!(
        status.signal(),
        Some(9),
        "the fault must strike at {step}: {status}\n{stderr}"
    );
    let session = w.last_session();

    // (a) Writers thawed — by the watchdog if the kill struck in the frozen window, before
    // any cleanup ran — and every origin writable.
    let log = w.wait_for_thaw(&session);
    assert_eq!(
        log,
        [
            ("freeze".to_owned(), session.clone()),
            ("thaw".to_owned(), session.clone())
        ],
        "the writer must have been sent thaw"
    );
    assert_writable_promptly(&[&w.btrfs, &w.ext4]);

    // The journal tells a dead session, and how far it got.
    let status = status_json(&w.state);
    let sessions = status["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{status}");
    let dead = &sessions[0];
    assert_eq!(dead["session"], session.as_str());
    assert_eq!(dead["live"], false, "{status}");
    let (snapshots, view) = match step {
        // The first (and only durable) record already names the view to be.
        "after-writers-freeze" | "after-create" => ("intent", "intent".into()),
        "during-mount" => ("done", "intent".into()),
        "after-ready" => ("done", "done".into()),
        _ => ("done", serde_json::Value::Null),
    };
    let states: Vec<_> = dead["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, [snapshots, snapshots], "{status}");
    assert_eq!(dead["view"], view, "{status}");
    let made = w.snapshots_of(&session);
    match step {
        "after-writers-freeze" => assert_eq!(made, Vec::<String>::new()),
        // Units are created in parallel: the bind unit may strike before btrfs is done.
        "after-create" => assert!(made.len() <= 1, "{made:?}"),
        _ => assert_eq!(made.len(), 1, "{made:?}"),
    }

    // (b) A dry run changes nothing; cleanup removes everything.
    let (code, dry) = cleanup_json(&w.state, true);
    assert_eq!(code, 0, "{dry}");
    let planned = session_entry(&dry, &session);
    assert_eq!(planned["live"], false);
    assert!(
        planned["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().starts_with("delete journal")),
        "{dry}"
    );
    assert_eq!(
        status_json(&w.state)["sessions"].as_array().unwrap().len(),
        1
    );
    assert_eq!(w.snapshots_of(&session), made);

    let (code, report) = cleanup_json(&w.state, false);
    assert_eq!(code, 0, "{report}");
    let done = session_entry(&report, &session);
    assert_eq!(done["problems"], serde_json::json!([]), "{report}");
    w.assert_nothing_left(&session);
    // Cleanup may send thaw again (the journal says the writers were frozen); never freeze.
    let log = w.writer_log();
    assert_eq!(log[0], ("freeze".to_owned(), session.clone()));
    assert!(
        log[1..].iter().all(|(p, s)| p == "thaw" && *s == session),
        "{log:?}"
    );
    assert_writable_promptly(&[&w.btrfs, &w.ext4]);

    // (c)
    w.assert_new_session_works();
}

/// SIGTERM at each step (the process stops itself there, gets TERM, then CONT): an orderly
/// teardown, exit status 128+15, writers thawed exactly once, nothing left, no journal.
#[rstest]
#[case::after_writers_freeze("after-writers-freeze")]
#[case::after_create("after-create")]
#[case::during_mount("during-mount")]
#[case::after_ready("after-ready")]
#[case::mid_teardown("mid-teardown")]
fn sigterm_at(#[case] step: &str) {
    if !require_privileges(&format!("sigterm_at {step}")) {
        return;
    }
    let w = World::new(&format!("term-{step}"));
    let fault = format!("{step}:stop");
    let mut run = w.start(Some(&fault));
    let before_ready = STEPS_BEFORE_READY.contains(&step);
    if !before_ready {
        assert_eq!(run.ready(), "done\n");
    }
    if step == "mid-teardown" {
        // TERM ends the hold; the teardown it starts stops half-way, and gets a second TERM.
        run.signal(Signal::TERM);
    }
    wait_stopped(&mut run.child, Duration::from_secs(30));
    // Stopped inside the frozen window, the writer has had `freeze` and not yet `thaw`.
    let in_window = matches!(step, "after-writers-freeze" | "after-create");
    assert_eq!(w.writer_log().len(), if in_window { 1 } else { 2 });
    run.signal(Signal::TERM);
    continue_until_exit(&mut run.child);
    if before_ready {
        let ready = run.ready();
        if step == "after-writers-freeze" {
            assert_eq!(ready, "", "no ready line after a signal before ready");
        } else {
            // The signal reaches the session through signal-hook's thread. These steps strike
            // once per snapshot or mount, and a second strike can stop the process before
            // that thread has recorded the signal: then the hold sees it, just after ready.
            assert!(ready.is_empty() || ready == "done\n", "{ready:?}");
        }
    }
    let (status, stderr) = run.wait();
    assert_eq!(status.code(), Some(143), "{step}: {stderr}");
    let session = w.last_session();
    assert_eq!(
        w.writer_log(),
        [
            ("freeze".to_owned(), session.clone()),
            ("thaw".to_owned(), session.clone())
        ]
    );
    w.assert_nothing_left(&session);
    assert_eq!(status_json(&w.state)["sessions"], serde_json::json!([]));
    assert_writable_promptly(&[&w.btrfs, &w.ext4]);

    if step == "mid-teardown" {
        // A TERM that arrives after the backup ended (stdin EOF) interrupts nothing: the
        // teardown completes and the status reports it (0).
        let mut run = w.start(Some(&fault));
        assert_eq!(run.ready(), "done\n");
        drop(run.child.stdin.take());
        wait_stopped(&mut run.child, Duration::from_secs(30));
        run.signal(Signal::TERM);
        continue_until_exit(&mut run.child);
        let (status, stderr) = run.wait();
        assert_eq!(status.code(), Some(0), "{stderr}");
        w.assert_nothing_left(&w.last_session());
    }
}

/// A session killed after ready leaves its view on TARGET, its snapshot and its journal: the
/// next session on the same target cleans them up at its start (no `snapshot cleanup`) and
/// works.
///
/// Other tests of this file run in parallel with their own state directories, and their
/// startup cleanups rightly unmount any view named after a session that is neither in their
/// journals nor alive (an orphan view) — this one too, if they come first. The next session
/// therefore starts at once, and its log must show it unmounted the dead view itself; when a
/// concurrent sweep came first, the scenario is run again.
#[test]
fn next_session_cleans_up_after_a_killed_one() {
    if !require_privileges("next_session_cleans_up_after_a_killed_one") {
        return;
    }
    let w = World::new("kill-next");
    for attempt in 1..=10 {
        let mut killed = w.start(Some("after-ready:kill"));
        assert_eq!(killed.ready(), "done\n");
        assert_eq!(killed.wait().0.signal(), Some(9));
        let mut next = w.start(None);
        assert_eq!(next.ready(), "done\n");
        let live = w.last_session();
        let dead = lines(&w.log)
            .iter()
            .rev()
            .filter_map(|l| l.strip_prefix("freeze "))
            .nth(1)
            .unwrap()
            .to_owned();
        assert_ne!(live, dead);
        assert_eq!(w.snapshots_of(&dead), Vec::<String>::new());
        assert_eq!(w.snapshots_of(&live).len(), 1);
        assert!(!w.rt.join(&dead).exists());
        let status = status_json(&w.state);
        let sessions = status["sessions"].as_array().unwrap();
        assert_eq!(sessions.len(), 1, "{status}");
        assert_eq!(sessions[0]["session"], live.as_str());
        assert_eq!(sessions[0]["live"], true);
        let (code, stderr) = next.finish();
        assert_eq!(code.code(), Some(0), "{stderr}");
        w.assert_nothing_left(&live);
        let cleaned = stderr
            .lines()
            .find(|l| l.contains(&format!("cleaned up after dead session {dead}")))
            .unwrap_or_else(|| panic!("the startup cleanup is logged: {stderr}"));
        if cleaned.contains(&format!("unmount {:?}", w.target)) {
            return;
        }
        eprintln!("attempt {attempt}: a concurrent cleanup unmounted the dead view first; again");
    }
    panic!("a concurrent cleanup unmounted the dead view first, ten times");
}

/// `snapshot cleanup` removes only what dead sessions of the tool made. Decoys on the same
/// btrfs filesystem and in the mount table, with names like the tool's, survive:
///
/// - subvolumes `snapshot-decoy` and `.snapshot-snapshot-deadbeef-0`: no journal names them.
///   Cleanup removes snapshots only from journals; the name prefix alone is trusted for view
///   tmpfs mounts, never for snapshots (docs/DESIGN.md §3.3: a journal *or* the prefix permits a
///   removal, it never obliges one);
/// - a tmpfs with source `snapshot-nothex1`: not a session id;
/// - a live session's view (tmpfs named with its id) and snapshot: its journal is this
///   process's (pid, start time), and it holds the session's liveness token like a real one;
/// - a dead session's journal that names a snapshot not carrying its session id: left alone
///   and reported (status 81, journal kept for a human), and a mount at its recorded target
///   that is not its view.
///
/// The positive control: a tmpfs named with a session id that has no journal and no live
/// holder (an orphan view) is unmounted, by design.
#[test]
fn cleanup_spares_decoys() {
    if !require_privileges("cleanup_spares_decoys") {
        return;
    }
    let scratch = Scratch::new("decoys").unwrap();
    let m = scratch.join("btrfs");
    let fs = LoopFs::new("decoys", FsKind::Btrfs, 128, &m).unwrap();
    let state = scratch.join("run/state");
    let _cleanup = CleanupOnDrop(state.clone());
    fs.write("f", "data").unwrap();
    run(
        "btrfs",
        &["subvolume", "create", s(&m.join("snapshot-decoy"))],
    )
    .unwrap();
    let prefixed = m.join(".snapshot-snapshot-deadbeef-0");
    run(
        "btrfs",
        &["subvolume", "snapshot", "-r", s(&m), s(&prefixed)],
    )
    .unwrap();

    // A live session (this process), with a view and a snapshot.
    let live = snapshot_core::session::new_session_id();
    let _token = LivenessToken::acquire(&live).unwrap();
    let live_view = scratch.join("live-view");
    let _live_mount = TestMount::new(&["-t", "tmpfs", &live], &live_view).unwrap();
    let live_snap = format!(".{live}-0");
    run(
        "btrfs",
        &["subvolume", "snapshot", "-r", s(&m), s(&m.join(&live_snap))],
    )
    .unwrap();
    let btrfs_data = |snapshot: &str, session: &str| {
        serde_json::json!({
            "device": fs.device,
            "staging": scratch.join("run").join(session).join("btrfs-0"),
            "snapshot": snapshot,
            "origin_subvol": "/",
            "origin_subvol_id": 5,
        })
    };
    let mut rec = Record::new(&live, &live_view, &scratch.join("run").join(&live));
    rec.view = Some(ObjectState::Done);
    rec.snapshots.push(SnapshotEntry {
        state: ObjectState::Done,
        created: Created {
            provider: "btrfs".into(),
            unit: "u".into(),
            name: format!("{live}-0"),
            consistent: true,
            data: btrfs_data(&live_snap, &live),
        },
    });
    assert!(rec.is_live());
    Journal::create(&state, rec).unwrap();

    // A dead session whose journal names a snapshot without its id, and whose target holds
    // a tmpfs that is not its view (and not named with any session id).
    let dead = snapshot_core::session::new_session_id();
    let dead_target = scratch.join("dead-target");
    let _nothex = TestMount::new(&["-t", "tmpfs", "snapshot-nothex1"], &dead_target).unwrap();
    let mut rec = Record::new(&dead, &dead_target, &scratch.join("run").join(&dead));
    rec.pid_start += 1; // this pid, another start time: not this process
    rec.view = Some(ObjectState::Done);
    rec.snapshots.push(SnapshotEntry {
        state: ObjectState::Done,
        created: Created {
            provider: "btrfs".into(),
            unit: "u".into(),
            name: "snapshot-decoy".into(),
            consistent: true,
            data: btrfs_data("snapshot-decoy", &dead),
        },
    });
    assert!(!rec.is_live());
    Journal::create(&state, rec).unwrap();

    // The positive control: an orphan view. Its token keeps the startup cleanups of tests
    // running in parallel off it until just before the cleanup under test.
    let orphan = snapshot_core::session::new_session_id();
    let orphan_token = LivenessToken::acquire(&orphan).unwrap();
    let orphan_view = scratch.join("orphan-view");
    let _orphan_mount = TestMount::new(&["-t", "tmpfs", &orphan], &orphan_view).unwrap();

    let status = status_json(&state);
    assert_eq!(session_entry(&status, &live)["live"], true);
    assert_eq!(session_entry(&status, &dead)["live"], false);

    drop(orphan_token);
    let (code, report) = cleanup_json(&state, false);
    assert_eq!(
        code, 81,
        "a journal it must not follow is a problem: {report}"
    );
    let l = session_entry(&report, &live);
    assert_eq!(l["live"], true);
    assert_eq!(l["actions"], serde_json::json!([]), "{report}");
    let d = session_entry(&report, &dead);
    let problems = d["problems"].to_string();
    assert!(
        problems.contains("snapshot-decoy") && problems.contains("left alone"),
        "{report}"
    );
    assert!(
        d["actions"].to_string().contains("snapshot-nothex1"),
        "the mount at its target is not its view: {report}"
    );
    // (A concurrent test's startup cleanup may have swept the orphan first: either way it is
    // gone, checked below.)
    if let Some(o) = report["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["session"] == orphan.as_str())
    {
        assert!(o["actions"].to_string().contains("unmount"), "{report}");
    }

    let survivors = [
        "snapshot-decoy".to_owned(),
        ".snapshot-snapshot-deadbeef-0".to_owned(),
        live_snap.clone(),
    ];
    let check_survivors = || {
        let left = subvolumes(&m, "snapshot-");
        for name in &survivors {
            assert!(left.contains(name), "{name} removed; left: {left:?}");
        }
        assert_eq!(mounts_under(&live_view), std::slice::from_ref(&live_view));
        assert_eq!(
            mounts_under(&dead_target),
            std::slice::from_ref(&dead_target)
        );
    };
    check_survivors();
    assert_eq!(mounts_under(&orphan_view), Vec::<PathBuf>::new());
    let status = status_json(&state);
    assert_eq!(session_entry(&status, &live)["live"], true);
    assert_eq!(
        session_entry(&status, &dead)["live"],
        false,
        "its journal is kept"
    );

    // A real session on the same filesystem (its startup cleanup sees the same journals)
    // removes its own snapshot and nothing else.
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let mut session = Running::start(
        &["--no-writers", "-t", s(&target), s(&m)],
        &scratch.join("run"),
    );
    assert_eq!(session.ready(), "done\n");
    assert_eq!(subvolumes(&m, "snapshot-").len(), survivors.len() + 1);
    let (code, stderr) = session.finish();
    assert_eq!(code.code(), Some(0), "{stderr}");
    assert_clean(&target);
    assert_eq!(subvolumes(&m, "snapshot-").len(), survivors.len());
    check_survivors();
}

/// Two sessions on different targets (one filesystem, one state directory) both work; a
/// second session on a held target is refused as busy (75) and disturbs nothing; a live
/// session's view and snapshot survive another session's startup cleanup and an explicit
/// `snapshot cleanup`.
#[test]
fn concurrent_sessions() {
    if !require_privileges("concurrent_sessions") {
        return;
    }
    let scratch = Scratch::new("concurrent").unwrap();
    let m = scratch.join("btrfs");
    let fs = LoopFs::new("concurrent", FsKind::Btrfs, 128, &m).unwrap();
    let rt = scratch.join("run");
    let _cleanup = CleanupOnDrop(rt.join("state"));
    let (ta, tb) = (scratch.join("TA"), scratch.join("TB"));
    std::fs::create_dir(&ta).unwrap();
    std::fs::create_dir(&tb).unwrap();
    let start = |t: &Path| Running::start(&["--no-writers", "--json", "-t", s(t), s(&m)], &rt);
    let manifest = |r: &mut Running| -> String {
        let v: serde_json::Value = serde_json::from_str(&r.ready()).expect("manifest");
        v["session"].as_str().unwrap().to_owned()
    };

    fs.write("f", "at-A").unwrap();
    let mut a = start(&ta);
    let id_a = manifest(&mut a);
    fs.write("f", "at-B").unwrap();
    let mut b = start(&tb);
    let id_b = manifest(&mut b);
    fs.write("f", "later").unwrap();
    let a_intact = || {
        assert_eq!(
            std::fs::read_to_string(in_view(&ta, &m).join("f")).unwrap(),
            "at-A"
        );
        assert_eq!(subvolumes(&m, &id_a).len(), 1, "A's snapshot");
        assert!(rt
            .join("state/sessions")
            .join(format!("{id_a}.json"))
            .exists());
    };
    // B's startup cleanup ran while A was live.
    a_intact();
    assert_eq!(
        std::fs::read_to_string(in_view(&tb, &m).join("f")).unwrap(),
        "at-B"
    );

    // A third session on A's target: busy, nothing created, A undisturbed.
    let mut c = start(&ta);
    assert_eq!(c.ready(), "");
    let (code, stderr) = c.finish();
    assert_eq!(code.code(), Some(75), "{stderr}");
    a_intact();
    assert_eq!(subvolumes(&m, "snapshot-").len(), 2);

    // An explicit cleanup sees two live sessions and does nothing.
    let (code, report) = cleanup_json(&rt.join("state"), false);
    assert_eq!(code, 0, "{report}");
    for id in [&id_a, &id_b] {
        assert_eq!(session_entry(&report, id)["live"], true);
        assert_eq!(session_entry(&report, id)["actions"], serde_json::json!([]));
    }
    a_intact();

    let (code, stderr) = b.finish();
    assert_eq!(code.code(), Some(0), "{stderr}");
    assert_clean(&tb);
    a_intact();
    let (code, stderr) = a.finish();
    assert_eq!(code.code(), Some(0), "{stderr}");
    assert_clean(&ta);
    assert_eq!(subvolumes(&m, "snapshot-"), Vec::<String>::new());
    assert_no_journal(&rt);
}

/// A writer that hangs on `thaw` is killed (with what it started) at --freeze-timeout and
/// does not hold up the view nor the teardown. (A writer hanging on `freeze`:
/// tests/writers.rs, `hanging_and_failing_writers`.)
#[test]
fn writer_hanging_on_thaw_does_not_prevent_teardown() {
    if !require_privileges("writer_hanging_on_thaw_does_not_prevent_teardown") {
        return;
    }
    let scratch = Scratch::new("thaw-hang").unwrap();
    let m = scratch.join("m");
    let _fs = LoopFs::new("thaw-hang", FsKind::Ext4, 16, &m).unwrap();
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let wd = scratch.join("w");
    std::fs::create_dir(&wd).unwrap();
    let log = scratch.join("log");
    let pidfile = scratch.join("sleeper.pid");
    script(
        &wd.join("hang"),
        &format!(
            "echo \"$1\" >> {log}\n[ \"$1\" = thaw ] && {{ sleep 60 & echo $! > {pid}; wait; }}\nexit 0",
            log = log.display(),
            pid = pidfile.display()
        ),
    );
    let rt = scratch.join("run");
    let t = Instant::now();
    let mut run = Running::start(
        &[
            "--writers-dir",
            s(&wd),
            "--freeze-timeout",
            "500ms",
            "-t",
            s(&target),
            s(&m),
        ],
        &rt,
    );
    assert_eq!(run.ready(), "done\n");
    let (status, stderr) = run.finish();
    let took = t.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "a thaw timeout is a warning: {stderr}"
    );
    assert!(stderr.contains("did not finish"), "{stderr}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_eq!(lines(&log), ["freeze", "thaw"]);
    assert_clean(&target);
    assert_no_journal(&rt);
    // The writer's process group went with it: its background sleep is gone.
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let t = Instant::now();
    let gone = || {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| !c.starts_with(b"sleep"))
            .unwrap_or(true)
    };
    while !gone() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !gone() {
        // Ours: end it by its pid before failing.
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            Signal::KILL,
        );
        panic!("the hanging writer's child {pid} survived the timeout");
    }
}
