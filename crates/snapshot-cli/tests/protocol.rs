//! The seed protocol end to end on real loop-device filesystems (loop tier: root).

mod common;
use common::*;
use rstest::rstest;
use std::time::{Duration, Instant};

/// `/srv/a`, `/srv/b` and `/srv/a/nested` are three filesystems and `/srv` is not a mount point:
/// every one shows under TARGET, nothing there is writable, and teardown leaves nothing.
#[rstest]
#[case::ext4(FsKind::Ext4)]
#[case::xfs(FsKind::Xfs)]
#[case::btrfs(FsKind::Btrfs)]
fn nested_and_sibling_filesystems(#[case] kind: FsKind) {
    if !require_privileges("nested_and_sibling_filesystems") {
        return;
    }
    let scratch = Scratch::new(&format!("nest-{}", kind.name())).unwrap();
    let (a, b) = (scratch.join("srv/a"), scratch.join("srv/b"));
    let size = kind.min_size_mb();
    let fa = LoopFs::new("nest-a", kind, size, &a).unwrap();
    let fb = LoopFs::new("nest-b", kind, size, &b).unwrap();
    let nested = a.join("nested");
    let fn_ = LoopFs::new("nest-n", kind, size, &nested).unwrap();
    fa.write("in-a", "A").unwrap();
    fb.write("in-b", "B").unwrap();
    fn_.write("in-nested", "N").unwrap();
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let rt = scratch.join("run");

    let mut run = Running::start(
        &[
            "--no-writers",
            "-v",
            "-t",
            s(&target),
            s(&a),
            s(&b),
            s(&nested),
        ],
        &rt,
    );
    assert_eq!(run.ready(), "done\n");
    assert_eq!(
        std::fs::read_to_string(in_view(&target, &a).join("in-a")).unwrap(),
        "A"
    );
    assert_eq!(
        std::fs::read_to_string(in_view(&target, &b).join("in-b")).unwrap(),
        "B"
    );
    assert_eq!(
        std::fs::read_to_string(in_view(&target, &nested).join("in-nested")).unwrap(),
        "N"
    );
    for dir in [
        target.clone(),
        in_view(&target, &scratch.join("srv")),
        in_view(&target, &a),
        in_view(&target, &b),
        in_view(&target, &nested),
    ] {
        assert_read_only(&dir);
    }
    let (status, _) = run.finish();
    assert_eq!(status.code(), Some(0));
    assert_clean(&target);
    assert_no_journal(&rt);
    drop((fn_, fa, fb));
}

/// Several DIRs on one filesystem, one of them the mount point itself, the other a subdirectory:
/// one mount in the view; the JSON manifest says what is where and that bind is not consistent.
#[test]
fn json_manifest_and_several_dirs_on_one_filesystem() {
    if !require_privileges("json_manifest_and_several_dirs_on_one_filesystem") {
        return;
    }
    let scratch = Scratch::new("json").unwrap();
    let m = scratch.join("data");
    let fs = LoopFs::new("json", FsKind::Ext4, 32, &m).unwrap();
    fs.write("sub/file", "x").unwrap();
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let mut run = Running::start(
        &[
            "--no-writers",
            "--json",
            "-t",
            s(&target),
            s(&m),
            s(&m.join("sub")),
        ],
        &scratch.join("run"),
    );
    let manifest: serde_json::Value = serde_json::from_str(&run.ready()).unwrap();
    assert_eq!(manifest["consistent"], false);
    let mounts = manifest["mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 1, "{manifest}");
    assert_eq!(mounts[0]["provider"], "bind");
    assert_eq!(mounts[0]["consistent"], false);
    assert_eq!(mounts[0]["mount_point"], s(&m));
    assert_eq!(mounts[0]["path"], s(&in_view(&target, &m)));
    assert_eq!(mounts[0]["dirs"].as_array().unwrap().len(), 2);
    assert!(manifest["session"]
        .as_str()
        .unwrap()
        .starts_with("snapshot-"));
    assert_eq!(
        std::fs::read_to_string(in_view(&target, &m).join("sub/file")).unwrap(),
        "x"
    );
    let (status, stderr) = run.finish();
    assert_eq!(status.code(), Some(0));
    assert!(
        stderr.contains("NOT consistent"),
        "the bind fallback warns: {stderr}"
    );
    assert_clean(&target);
}

/// A child mount that is not a DIR shows as the empty directory it covers (non-recursive).
#[test]
fn child_mount_not_a_dir_is_not_in_the_view() {
    if !require_privileges("child_mount_not_a_dir_is_not_in_the_view") {
        return;
    }
    let scratch = Scratch::new("child").unwrap();
    let a = scratch.join("a");
    let fa = LoopFs::new("child-a", FsKind::Ext4, 32, &a).unwrap();
    let fc = LoopFs::new("child-c", FsKind::Ext4, 32, &a.join("c")).unwrap();
    fc.write("hidden", "h").unwrap();
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let mut run = Running::start(
        &["--no-writers", "-t", s(&target), s(&a)],
        &scratch.join("run"),
    );
    assert_eq!(run.ready(), "done\n");
    let c = in_view(&target, &a.join("c"));
    assert!(c.is_dir());
    assert_eq!(
        std::fs::read_dir(&c).unwrap().count(),
        0,
        "a non-DIR child mount must not show"
    );
    assert_eq!(run.finish().0.code(), Some(0));
    assert_clean(&target);
    drop((fc, fa));
}

/// A DIR below a mount that is not a DIR, below a DIR's mount: the view keeps the path.
#[test]
fn dir_below_an_intermediate_mount_that_is_not_a_dir() {
    if !require_privileges("dir_below_an_intermediate_mount_that_is_not_a_dir") {
        return;
    }
    let scratch = Scratch::new("between").unwrap();
    let a = scratch.join("a");
    let fa = LoopFs::new("between-a", FsKind::Ext4, 32, &a).unwrap();
    let fx = LoopFs::new("between-x", FsKind::Ext4, 32, &a.join("x")).unwrap();
    let deep = a.join("x/y/deep");
    let fd = LoopFs::new("between-d", FsKind::Ext4, 32, &deep).unwrap();
    fd.write("f", "deep").unwrap();
    fa.write("f", "top").unwrap();
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let mut run = Running::start(
        &["--no-writers", "-t", s(&target), s(&a), s(&deep)],
        &scratch.join("run"),
    );
    assert_eq!(run.ready(), "done\n");
    assert_eq!(
        std::fs::read_to_string(in_view(&target, &a).join("f")).unwrap(),
        "top"
    );
    assert_eq!(
        std::fs::read_to_string(in_view(&target, &deep).join("f")).unwrap(),
        "deep"
    );
    assert_eq!(run.finish().0.code(), Some(0));
    assert_clean(&target);
    drop((fd, fx, fa));
}

/// SIGTERM during the hold: orderly teardown, 128+15, nothing left.
#[test]
fn sigterm_during_hold_tears_down() {
    if !require_privileges("sigterm_during_hold_tears_down") {
        return;
    }
    let scratch = Scratch::new("term").unwrap();
    let m = scratch.join("m");
    let _fs = LoopFs::new("term", FsKind::Ext4, 32, &m).unwrap();
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let mut run = Running::start(
        &["--no-writers", "-t", s(&target), s(&m)],
        &scratch.join("run"),
    );
    assert_eq!(run.ready(), "done\n");
    run.signal(rustix::process::Signal::TERM);
    let (status, _) = run.wait();
    assert_eq!(status.code(), Some(128 + 15));
    assert_clean(&target);
}

/// A mount stacked over TARGET during the hold hides the view, and unmounting by path would
/// remove it: the teardown leaves it alone (it is not the session's), reports what it could
/// not remove (81, journal kept), never claims a clean exit; once its owner has removed it,
/// `snapshot cleanup` removes the rest (view, snapshot, journal).
#[test]
fn a_mount_stacked_over_the_view_is_left_alone_and_reported() {
    if !require_privileges("a_mount_stacked_over_the_view_is_left_alone_and_reported") {
        return;
    }
    let scratch = Scratch::new("stacked").unwrap();
    let m = scratch.join("m");
    let _fs = LoopFs::new("stacked", FsKind::Btrfs, 128, &m).unwrap();
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let rt = scratch.join("run");
    let mut run = Running::start(&["--no-writers", "-t", s(&target), s(&m)], &rt);
    assert_eq!(run.ready(), "done\n");
    let mount = |args: &[&str]| {
        let st = std::process::Command::new(args[0])
            .args(&args[1..])
            .status()
            .unwrap();
        assert!(st.success(), "{args:?}");
    };
    mount(&["mount", "-t", "tmpfs", "snaptest-stacked", s(&target)]);
    std::fs::write(target.join("theirs"), "x").unwrap();
    let (status, stderr) = run.finish();
    assert_eq!(status.code(), Some(81), "{stderr}");
    assert!(
        stderr.contains("covered by a mount this session did not make"),
        "{stderr}"
    );
    // Still there, untouched: the stacked tmpfs is on top at TARGET.
    assert_eq!(
        std::fs::read_to_string(target.join("theirs")).unwrap(),
        "x",
        "the foreign mount was removed"
    );
    mount(&["umount", s(&target)]);
    let out = std::process::Command::new(bin("snapshot"))
        .args(["cleanup", "--state-dir", s(&rt.join("state"))])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_clean(&target);
    assert_no_journal(&rt);
    assert_eq!(run_btrfs_list(&m), Vec::<String>::new(), "snapshots left");
}

/// A second session on the same target is refused as busy (75) and disturbs nothing.
#[test]
fn second_session_on_one_target_is_busy() {
    if !require_privileges("second_session_on_one_target_is_busy") {
        return;
    }
    let scratch = Scratch::new("busy").unwrap();
    let m = scratch.join("m");
    let fs = LoopFs::new("busy", FsKind::Ext4, 32, &m).unwrap();
    fs.write("f", "1").unwrap();
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let rt = scratch.join("run");
    let mut first = Running::start(&["--no-writers", "-t", s(&target), s(&m)], &rt);
    assert_eq!(first.ready(), "done\n");
    let mut second = Running::start(&["--no-writers", "-t", s(&target), s(&m)], &rt);
    assert_eq!(second.ready(), "");
    let (status, stderr) = second.finish();
    assert_eq!(status.code(), Some(75), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(in_view(&target, &m).join("f")).unwrap(),
        "1"
    );
    assert_eq!(first.finish().0.code(), Some(0));
    assert_clean(&target);
}

/// `--require-snapshot` with only the bind fallback available: 69 before anything is made.
#[test]
fn require_snapshot_refuses_bind_only() {
    if !require_privileges("require_snapshot_refuses_bind_only") {
        return;
    }
    let scratch = Scratch::new("req").unwrap();
    let m = scratch.join("m");
    let _fs = LoopFs::new("req", FsKind::Ext4, 32, &m).unwrap();
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let log = scratch.join("writer.log");
    let wd = scratch.join("writers");
    std::fs::create_dir(&wd).unwrap();
    script(&wd.join("w"), &format!("echo \"$1\" >> {}", log.display()));
    let mut run = Running::start(
        &[
            "--require-snapshot",
            "--writers-dir",
            s(&wd),
            "-t",
            s(&target),
            s(&m),
        ],
        &scratch.join("run"),
    );
    assert_eq!(run.ready(), "");
    let (status, stderr) = run.finish();
    assert_eq!(status.code(), Some(69), "{stderr}");
    assert!(stderr.contains(s(&m)), "names the filesystem: {stderr}");
    assert!(lines(&log).is_empty(), "nothing may be frozen");
    assert_clean(&target);
}

/// `start-snapshot` returns with the view ready and a holder detached; `stop-snapshot` removes
/// everything, waits for the holder, and reports success.
#[test]
fn start_and_stop_snapshot() {
    if !require_privileges("start_and_stop_snapshot") {
        return;
    }
    let scratch = Scratch::new("startstop").unwrap();
    let m = scratch.join("m");
    let fs = LoopFs::new("startstop", FsKind::Ext4, 32, &m).unwrap();
    fs.write("f", "held").unwrap();
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let rt = scratch.join("run");
    let out = std::process::Command::new(bin("start-snapshot"))
        .args([
            "--no-writers",
            "--runtime-dir",
            s(&rt),
            "--state-dir",
            s(&rt.join("state")),
            "-t",
            s(&target),
            s(&m),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
    assert_eq!(
        std::fs::read_to_string(in_view(&target, &m).join("f")).unwrap(),
        "held"
    );
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read_dir(rt.join("held"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "json"))
            .map(|p| std::fs::read(p).unwrap())
            .expect("holder state"),
    )
    .unwrap();
    let pid = state["pid"].as_u64().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());

    let out = std::process::Command::new(bin("stop-snapshot"))
        .args(["--runtime-dir", s(&rt), "-t", s(&target)])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_clean(&target);
    let t = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "holder {pid} still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Nothing to stop any more.
    let out = std::process::Command::new(bin("stop-snapshot"))
        .args(["--runtime-dir", s(&rt), "-t", s(&target)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
}

/// start-snapshot reports a failure with the session's status and leaves nothing running.
#[test]
fn start_snapshot_failure_reports_the_reason() {
    if !require_privileges("start_snapshot_failure_reports_the_reason") {
        return;
    }
    let scratch = Scratch::new("startfail").unwrap();
    let m = scratch.join("m");
    let _fs = LoopFs::new("startfail", FsKind::Ext4, 32, &m).unwrap();
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let out = std::process::Command::new(bin("start-snapshot"))
        .args([
            "--no-writers",
            "--require-snapshot",
            "--runtime-dir",
            s(&scratch.join("run")),
            "--state-dir",
            s(&scratch.join("run/state")),
            "-t",
            s(&target),
            s(&m),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--require-snapshot"));
    assert_clean(&target);
}

/// `snapshot run DIR -- CMD`: CMD sees the view (and its environment), the status is CMD's,
/// and the view is gone afterwards; a missing CMD is 127, still with a clean teardown.
#[test]
fn run_command_with_the_view() {
    if !require_privileges("run_command_with_the_view") {
        return;
    }
    let scratch = Scratch::new("run").unwrap();
    let m = scratch.join("m");
    let fs = LoopFs::new("run", FsKind::Btrfs, 128, &m).unwrap();
    fs.write("f", "seen\n").unwrap();
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let rt = scratch.join("run");
    let out_file = scratch.join("out");
    let cmd = format!(
        "cat \"$SNAPSHOT_TARGET{}/f\" > {out}; echo \"$SNAPSHOT_SESSION\" >> {out}; exit 7",
        s(&m),
        out = s(&out_file)
    );
    let state = rt.join("state");
    let base = [
        "--runtime-dir",
        s(&rt),
        "--state-dir",
        s(&state),
        "--no-writers",
        "-t",
        s(&target),
        s(&m),
    ];
    let out = std::process::Command::new(bin("snapshot"))
        .arg("run")
        .args(base)
        .args(["--", "sh", "-c", &cmd])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "no ready line in run mode");
    let got = lines(&out_file);
    assert_eq!(got[0], "seen");
    assert!(got[1].starts_with("snapshot-"));
    assert_clean(&target);
    assert_no_journal(&rt);

    let out = std::process::Command::new(bin("snapshot"))
        .arg("run")
        .args(base)
        .args(["--", "/nonexistent/snaptest-cmd"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert_clean(&target);
}

/// `snapshot run --in-place`: the command sees each DIR's snapshot at the DIR's own path
/// (a btrfs DIR and another btrfs DIR mounted inside it; relative paths from its working directory
/// too), read-only, while the caller's namespace keeps the live filesystems; the binds vanish
/// with the command. (`/` as a DIR: tests/root.rs.)
#[test]
fn run_in_place_covers_the_dirs_for_the_command_only() {
    if !require_privileges("run_in_place_covers_the_dirs_for_the_command_only") {
        return;
    }
    let scratch = Scratch::new("inplace").unwrap();
    let a = scratch.join("srv/a");
    let fa = LoopFs::new("inplace-a", FsKind::Btrfs, 128, &a).unwrap();
    let nested = a.join("nested");
    let fnested = LoopFs::new("inplace-n", FsKind::Btrfs, 128, &nested).unwrap();
    fa.write("f", "v1\n").unwrap();
    fnested.write("g", "v1\n").unwrap();
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let rt = scratch.join("run");
    let state = rt.join("state");
    let out = scratch.join("out");
    let handshake = Handshake::in_dir(scratch.path());
    // Once the test has changed the live files: reads (relative to its working directory in
    // the DIR, and absolute), then tries a write to each DIR.
    let cmd = handshake.script(&format!(
        "cat f > {out}; cat {a}/f >> {out}; cat {n}/g >> {out}; \
         if echo x > {a}/new 2>/dev/null; then echo writable >> {out}; else echo read-only >> {out}; fi; \
         if echo x > {n}/new 2>/dev/null; then echo writable >> {out}; else echo read-only >> {out}; fi",
        out = s(&out),
        a = s(&a),
        n = s(&nested),
    ));
    let base = [
        "--runtime-dir",
        s(&rt),
        "--state-dir",
        s(&state),
        "--no-writers",
        "-t",
        s(&target),
    ];
    let a_mount = snapshot_core::sys::mount_id(&a).unwrap();
    let mut child = std::process::Command::new(bin("snapshot"))
        .args(["run", "--in-place", "-v"])
        .args(base)
        .args([s(&a), s(&nested), "--", "sh", "-c", &cmd])
        .current_dir(&a)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    handshake.wait_ready(&mut child);
    // The caller's namespace: the live filesystems, no bind over the DIRs.
    assert_eq!(snapshot_core::sys::mount_id(&a).unwrap(), a_mount);
    fa.write("f", "v2\n").unwrap();
    fnested.write("g", "v2\n").unwrap();
    assert_eq!(std::fs::read_to_string(a.join("f")).unwrap(), "v2\n");
    let stderr = handshake.go_and_finish(&mut child);
    assert_eq!(
        lines(&out),
        ["v1", "v1", "v1", "read-only", "read-only"],
        "the command must see the snapshots at the DIRs' paths: {stderr}"
    );
    assert!(stderr.contains("in place:"), "{stderr}");
    assert!(!a.join("new").exists() && !nested.join("new").exists());
    assert_eq!(snapshot_core::sys::mount_id(&a).unwrap(), a_mount);
    assert_clean(&target);
    assert_no_journal(&rt);
}

/// `snapshot run` without `-t` builds its view in a private directory of its own under the
/// runtime directory (never `/mnt`, which may be in use), tells the command where in
/// `SNAPSHOT_TARGET`, and removes the directory after; `-t` still puts it where asked.
#[test]
fn run_without_a_target_uses_a_private_one() {
    if !require_privileges("run_without_a_target_uses_a_private_one") {
        return;
    }
    let scratch = Scratch::new("run-private").unwrap();
    let a = scratch.join("a");
    let fa = LoopFs::new("run-private", FsKind::Btrfs, 128, &a).unwrap();
    fa.write("f", "v1\n").unwrap();
    let rt = scratch.join("run");
    let out = scratch.join("out");
    let cmd = format!(
        "echo \"$SNAPSHOT_TARGET\" > {o}; cat \"$SNAPSHOT_TARGET\"{a}/f >> {o}; ls {l} >> {o}",
        o = s(&out),
        a = s(&a),
        l = s(&rt.join("locks"))
    );
    let (code, _, err) = run_bin(
        "snapshot",
        &[
            "run",
            "--runtime-dir",
            s(&rt),
            "--state-dir",
            s(&rt.join("state")),
            "--no-writers",
            s(&a),
            "--",
            "sh",
            "-c",
            &cmd,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let seen = lines(&out);
    let target = std::path::PathBuf::from(&seen[0]);
    assert!(
        target.starts_with(rt.join("views")),
        "the view went to {target:?}"
    );
    assert_eq!(seen[1], "v1");
    assert!(!target.exists(), "the private target is removed after");
    // Its lock file too (a new name each run: they would pile up until reboot). Control: the
    // command saw it while the session held it.
    let lock = snapshot_core::lock::lock_path(&rt, &target);
    let lock_name = lock.file_name().unwrap().to_str().unwrap();
    assert!(
        seen[2..].iter().any(|l| l == lock_name),
        "the private target's lock {lock_name} was not seen during the run: {seen:?}"
    );
    assert!(
        !lock.exists(),
        "the private target's lock file is removed after"
    );
    assert_eq!(mounts_under(&rt), Vec::<std::path::PathBuf>::new());
    drop(fa);
}

/// The caller dies before the view is ready, closing the read ends of stdout and stderr: the
/// session cannot announce readiness, must not panic on the broken pipes, and tears down.
#[test]
fn caller_gone_before_ready_still_tears_down() {
    if !require_privileges("caller_gone_before_ready_still_tears_down") {
        return;
    }
    let scratch = Scratch::new("gone").unwrap();
    let m = scratch.join("m");
    let _fs = LoopFs::new("gone", FsKind::Btrfs, 128, &m).unwrap();
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let rt = scratch.join("run");
    let wd = scratch.join("w");
    std::fs::create_dir(&wd).unwrap();
    // Keeps the session in the frozen window while the caller goes away.
    script(&wd.join("slow"), "[ \"$1\" = freeze ] && sleep 1\nexit 0");
    let mut child = std::process::Command::new(bin("snapshot"))
        .args(["-v", "--writers-dir", s(&wd), "--runtime-dir", s(&rt)])
        .args(["--state-dir", s(&rt.join("state")), "-t", s(&target), s(&m)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status = wait_timeout(&mut child, std::time::Duration::from_secs(30));
    assert_ne!(status.code(), Some(101), "panicked on a broken pipe");
    assert_ne!(status.code(), Some(0), "readiness could not be announced");
    assert_clean(&target);
    assert_no_journal(&rt);
    assert!(
        run_btrfs_list(&m).iter().all(|l| !l.contains("snapshot-")),
        "snapshot left behind"
    );
}

fn run_btrfs_list(m: &std::path::Path) -> Vec<String> {
    snapshot_testkit::run("btrfs", &["subvolume", "list", "-a", s(m)])
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}
