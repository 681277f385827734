//! Writer hooks through the real binary (loop tier: root).

mod common;
use common::*;
use std::time::{Duration, Instant};

/// Writers get `freeze DIR...` in lexical order before the view exists and `thaw DIR...` in
/// reverse order, with the session's environment; their output never reaches stdout.
#[test]
fn writers_order_arguments_and_environment() {
    if !require_privileges("writers_order_arguments_and_environment") {
        return;
    }
    let scratch = Scratch::new("writers").unwrap();
    let m = scratch.join("m");
    let _fs = LoopFs::new("writers", FsKind::Ext4, 32, &m).unwrap();
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let (d1, d2) = (scratch.join("w1"), scratch.join("w2"));
    std::fs::create_dir(&d1).unwrap();
    std::fs::create_dir(&d2).unwrap();
    let log = scratch.join("log");
    // Each writer records its name, arguments, env and whether the view exists yet, and prints
    // to stdout (which must not reach the protocol channel).
    let body = format!(
        "echo \"$(basename $0) $* $SNAPSHOT_PHASE $SNAPSHOT_SESSION $SNAPSHOT_TARGET view=$(ls -A {t} | wc -l)\" >> {log}\necho noise-on-stdout\nexit 0",
        t = target.display(),
        log = log.display()
    );
    script(&d1.join("20-b"), &body);
    script(&d2.join("10-a"), &body);
    script(&d1.join("30-c"), &body);
    script(&d1.join("15-ignored.sample"), &body);
    script(&d1.join(".hidden"), &body);
    let mut run = Running::start(
        &[
            "--writers-dir",
            s(&d1),
            "--writers-dir",
            s(&d2),
            "--json",
            "-t",
            s(&target),
            s(&m),
        ],
        &scratch.join("run"),
    );
    let ready = run.ready();
    let manifest: serde_json::Value =
        serde_json::from_str(&ready).expect("stdout holds only the manifest");
    let session = manifest["session"].as_str().unwrap().to_owned();
    let (status, _) = run.finish();
    assert_eq!(status.code(), Some(0));
    let got = lines(&log);
    let t = s(&target);
    let want: Vec<String> = [
        "10-a freeze",
        "20-b freeze",
        "30-c freeze",
        "30-c thaw",
        "20-b thaw",
        "10-a thaw",
    ]
    .iter()
    .map(|w| {
        let (name, phase) = w.split_once(' ').unwrap();
        format!("{name} {phase} {} {phase} {session} {t} view=0", s(&m))
    })
    .collect();
    assert_eq!(got, want);
}

/// A writer that leaves a background process holding its stdout does not delay readiness.
#[test]
fn background_child_holding_stdout_does_not_delay_ready() {
    if !require_privileges("background_child_holding_stdout_does_not_delay_ready") {
        return;
    }
    let scratch = Scratch::new("bg").unwrap();
    let m = scratch.join("m");
    let _fs = LoopFs::new("bg", FsKind::Ext4, 32, &m).unwrap();
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let wd = scratch.join("w");
    std::fs::create_dir(&wd).unwrap();
    let pidfile = scratch.join("bg.pid");
    script(
        &wd.join("holder"),
        &format!(
            "[ \"$1\" = freeze ] && {{ sleep 30 & echo $! > {}; }}\nexit 0",
            pidfile.display()
        ),
    );
    let t = Instant::now();
    let mut run = Running::start(
        &["--writers-dir", s(&wd), "-t", s(&target), s(&m)],
        &scratch.join("run"),
    );
    assert_eq!(run.ready_within(Duration::from_secs(10)), "done\n");
    let ready_after = t.elapsed();
    let (status, _) = run.finish();
    // Our own background child: end it by its recorded pid.
    if let Ok(pid) = std::fs::read_to_string(&pidfile) {
        if let Some(pid) = pid
            .trim()
            .parse()
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
    assert!(
        ready_after < Duration::from_secs(5),
        "ready took {ready_after:?}"
    );
    assert_eq!(status.code(), Some(0));
    assert_clean(&target);
}

/// A writer that hangs on freeze is killed at --freeze-timeout and still sent thaw; with
/// --strict-writers a failing writer stops the session (79) after thawing.
#[test]
fn hanging_and_failing_writers() {
    if !require_privileges("hanging_and_failing_writers") {
        return;
    }
    let scratch = Scratch::new("hang").unwrap();
    let m = scratch.join("m");
    let _fs = LoopFs::new("hang", FsKind::Ext4, 32, &m).unwrap();
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let wd = scratch.join("w");
    std::fs::create_dir(&wd).unwrap();
    let log = scratch.join("log");
    script(
        &wd.join("hang"),
        &format!(
            "echo \"$1\" >> {}\n[ \"$1\" = freeze ] && sleep 60\nexit 0",
            log.display()
        ),
    );
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
        &scratch.join("run"),
    );
    assert_eq!(run.ready(), "done\n");
    assert!(t.elapsed() < Duration::from_secs(10));
    let (status, stderr) = run.finish();
    assert_eq!(status.code(), Some(0), "a timeout is a warning by default");
    assert!(stderr.contains("did not finish"), "{stderr}");
    assert_eq!(lines(&log), ["freeze", "thaw"]);
    assert_clean(&target);

    std::fs::remove_file(&log).unwrap();
    script(
        &wd.join("hang"),
        &format!(
            "echo \"$1\" >> {}\n[ \"$1\" = freeze ] && exit 1\nexit 0",
            log.display()
        ),
    );
    let mut run = Running::start(
        &[
            "--writers-dir",
            s(&wd),
            "--strict-writers",
            "-t",
            s(&target),
            s(&m),
        ],
        &scratch.join("run"),
    );
    assert_eq!(run.ready(), "");
    let (status, stderr) = run.finish();
    assert_eq!(status.code(), Some(79), "{stderr}");
    assert_eq!(lines(&log), ["freeze", "thaw"]);
    assert_clean(&target);
}
