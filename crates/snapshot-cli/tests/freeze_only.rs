//! Freeze-only mode (`snapshot freeze` / `snapshot thaw`; loop tier: root), for external
//! snapshot engines. A freeze nobody thaws is thawed by the watchdog at --freeze-timeout (the
//! origin accepts writes again) and `snapshot thaw` then says so (80); `freeze` → an external
//! snapshot (a FICLONE of the loop device's backing file, standing in for a cloud volume
//! snapshot) → `thaw` gives a copy that holds what was written just before the freeze —
//! negative control: the same clone without the freeze lacks it (still in the page cache).

mod common;

use common::*;
use snapshot_testkit::TestMount;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn snapshot(args: &[&str]) -> (i32, String, String) {
    run_bin("snapshot", args)
}

#[test]
fn a_freeze_nobody_thaws_is_thawed_at_the_timeout() {
    if !require_privileges("a_freeze_nobody_thaws_is_thawed_at_the_timeout") {
        return;
    }
    let scratch = Scratch::new("fzonly-timeout").unwrap();
    let m = scratch.join("m");
    let _fs = LoopFs::new("fzonly-timeout", FsKind::Ext4, 32, &m).unwrap();
    let rt = scratch.join("run");
    let rts = s(&rt);
    let t = Instant::now();
    let (code, out, err) = snapshot(&[
        "freeze",
        "--no-writers",
        "--freeze-timeout",
        "2s",
        "--runtime-dir",
        rts,
        s(&m),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("frozen {}\n", s(&m)));
    assert!(!writable_within(&m, Duration::from_millis(300)), "frozen");
    let (code, out, _) = snapshot(&[
        "status",
        "--runtime-dir",
        rts,
        "--state-dir",
        &format!("{rts}/state"),
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("FROZEN (freeze-only"), "{out}");
    // The watchdog thaws it at the deadline, whatever the caller does.
    assert!(
        writable_within(&m, Duration::from_secs(10)),
        "still frozen {:?} after the freeze",
        t.elapsed()
    );
    assert!(t.elapsed() >= Duration::from_millis(1500), "thawed early");
    let (code, _, err) = snapshot(&["thaw", "--runtime-dir", rts]);
    assert_eq!(
        code, 80,
        "a late thaw says the copy may be inconsistent: {err}"
    );
    assert!(err.contains("--freeze-timeout"), "{err}");
    let (code, _, _) = snapshot(&["thaw", "--runtime-dir", rts]);
    assert_eq!(code, 69, "nothing left to thaw");
}

/// The external snapshot: a reflink copy of the backing file, mounted read-only.
fn clone_and_read(backing: &Path, scratch: &Scratch, name: &str, opts: &str) -> Option<String> {
    // Beside the backing file: a reflink stays within its (btrfs) filesystem.
    let copy = backing.with_file_name(format!("snaptest-{name}.img"));
    let st = Command::new("cp")
        .args(["--reflink=always", s(backing), s(&copy)])
        .status()
        .unwrap();
    assert!(st.success());
    let mp = scratch.join(name);
    let _m = TestMount::new(&["-o", &format!("loop,{opts}"), s(&copy)], &mp).unwrap();
    std::fs::read_to_string(mp.join("just-written")).ok()
}

#[test]
fn freeze_external_snapshot_thaw_is_a_point_in_time_copy() {
    if !require_privileges("freeze_external_snapshot_thaw_is_a_point_in_time_copy") {
        return;
    }
    let scratch = Scratch::new("fzonly-clone").unwrap();
    let base = scratch.join("base");
    let _base = LoopFs::new("fzonly-base", FsKind::Btrfs, 512, &base).unwrap();
    let m = scratch.join("m");
    let fs = LoopFs::new_in(&base, "fzonly-clone", FsKind::Ext4, 64, &m).unwrap();
    let backing = fs.backing.clone();
    let rt = scratch.join("run");
    let rts = s(&rt);

    // Negative control: written (not synced) just before a clone without a freeze.
    std::fs::write(m.join("just-written"), "before the clone\n").unwrap();
    let seen = clone_and_read(&backing, &scratch, "unfrozen", "ro,noload");
    assert_ne!(
        seen.as_deref(),
        Some("before the clone\n"),
        "without the freeze the copy already had the unsynced write: the check cannot tell"
    );

    std::fs::write(m.join("just-written"), "before the freeze\n").unwrap();
    let (code, out, err) = snapshot(&[
        "freeze",
        "--no-writers",
        "--freeze-timeout",
        "20s",
        "--runtime-dir",
        rts,
        "--json",
        s(&m),
    ]);
    assert_eq!(code, 0, "{err}");
    let state: serde_json::Value = serde_json::from_str(&out).expect(&out);
    assert_eq!(state["frozen"][0], s(&m));
    let copy_at = backing.with_file_name("snaptest-frozen.img");
    let st = Command::new("cp")
        .args(["--reflink=always", s(&backing), s(&copy_at)])
        .status()
        .unwrap();
    assert!(st.success());
    let (code, out, err) = snapshot(&["thaw", "--runtime-dir", rts]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("thawed {}\n", s(&m)));
    assert!(writable_within(&m, Duration::from_secs(5)), "thawed");
    std::fs::write(m.join("just-written"), "after the thaw\n").unwrap();
    let mp = scratch.join("frozen");
    let _mount = TestMount::new(&["-o", "loop,ro", s(&copy_at)], &mp).unwrap();
    assert_eq!(
        std::fs::read_to_string(mp.join("just-written")).unwrap(),
        "before the freeze\n",
        "the copy holds the freeze's instant"
    );
}
