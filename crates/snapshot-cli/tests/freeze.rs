//! The freeze provider end to end (loop tier: root): XFS and ext4 on loop devices whose backing
//! files live on a btrfs fixture (reflinks), a configured device-snapshot command, and the
//! watchdog that thaws what a dead session froze.

#[path = "common/bodies.rs"]
mod bodies;
mod common;

use bodies::{point_in_time, Expect};
use common::*;
use rstest::rstest;
use snapshot_testkit::loops_backed_by;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A btrfs filesystem to hold the backing files of the filesystems under test (reflinks).
fn reflink_base(sc: &Scratch) -> LoopFs {
    LoopFs::new("fz-base", FsKind::Btrfs, 1024, &sc.join("base")).unwrap()
}

/// An ext4 filesystem to hold backing files that cannot be cloned (no reflink on ext4),
/// whatever `/var/tmp` is on this machine.
fn plain_base(sc: &Scratch) -> LoopFs {
    LoopFs::new("fz-plain", FsKind::Ext4, 512, &sc.join("plain")).unwrap()
}

/// A filesystem of `kind` on a loop device backed by a file in `dir`.
fn fs_in(dir: &Path, sc: &Scratch, kind: FsKind, name: &str) -> LoopFs {
    LoopFs::new_in(dir, &format!("fz-{name}"), kind, 0, &sc.join(name)).unwrap()
}

/// Clone files (`.snapshot-*.img`) in `dir`.
fn clones_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".snapshot-") && n.ends_with(".img"))
        })
        .collect();
    v.sort();
    v
}

/// Nothing of the freeze provider left in `dir`: no clone file, no loop device reading one.
fn assert_no_clones(dir: &Path) {
    assert_eq!(clones_in(dir), Vec::<PathBuf>::new(), "clone files left");
    assert_eq!(
        loops_backed_by(&dir.join(".snapshot-")),
        Vec::<PathBuf>::new(),
        "clone loop devices left attached"
    );
}

/// Thaws a filesystem the test froze, whatever happens to the test.
struct Thaw(PathBuf);

impl Drop for Thaw {
    fn drop(&mut self) {
        if let Err(e) = snapshot_core::sys::thaw_filesystem(&self.0) {
            eprintln!("test: thawing {}: {e}", self.0.display());
        }
    }
}

#[rstest]
#[case::xfs(FsKind::Xfs)]
#[case::ext4(FsKind::Ext4)]
fn builtin_clone_is_a_point_in_time(#[case] kind: FsKind) {
    if !require_privileges(&format!("freeze builtin_clone_is_a_point_in_time {kind:?}")) {
        return;
    }
    let sc = Scratch::new(&format!("fz-pit-{}", kind.name())).unwrap();
    let base = reflink_base(&sc);
    let fs = fs_in(&base.mount_point, &sc, kind, kind.name());
    let seen = point_in_time(
        &[Expect {
            fs: &fs,
            provider: "freeze",
        }],
        &sc,
        &[],
    );
    assert!(
        seen.stderr.contains("frozen window"),
        "timings logged: {}",
        seen.stderr
    );
    assert_no_clones(&base.mount_point);
}

#[rstest]
#[case::xfs(FsKind::Xfs)]
#[case::ext4(FsKind::Ext4)]
fn origin_writable_after_ready_and_clone_gone_after_teardown(#[case] kind: FsKind) {
    if !require_privileges(&format!("freeze origin_writable_after_ready {kind:?}")) {
        return;
    }
    let sc = Scratch::new(&format!("fz-rw-{}", kind.name())).unwrap();
    let base = reflink_base(&sc);
    let fs = fs_in(&base.mount_point, &sc, kind, kind.name());
    fs.write("f", "before").unwrap();
    let target = sc.join("T");
    std::fs::create_dir(&target).unwrap();
    let rt = sc.join("run");
    let mut r = Running::start(
        &[
            "--no-writers",
            "--json",
            "-t",
            s(&target),
            s(&fs.mount_point),
        ],
        &rt,
    );
    let manifest: serde_json::Value = serde_json::from_str(&r.ready()).unwrap();
    assert!(
        writable_within(&fs.mount_point, Duration::from_secs(1)),
        "{:?} not writable within 1 s of ready",
        fs.mount_point
    );
    fs.write("f", "after").unwrap();
    assert_eq!(
        std::fs::read_to_string(in_view(&target, &fs.mount_point).join("f")).unwrap(),
        "before"
    );
    // While held: one clone next to the backing file, read by one (read-only) loop device.
    let session = manifest["session"].as_str().unwrap();
    let clones = clones_in(&base.mount_point);
    assert_eq!(clones.len(), 1, "{clones:?}");
    let name = clones[0].file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with(&format!(".{session}-")), "{name}");
    let loops = loops_backed_by(&clones[0]);
    assert_eq!(loops.len(), 1, "{loops:?}");
    let ro = std::fs::read_to_string(format!(
        "/sys/block/{}/ro",
        loops[0].file_name().unwrap().to_str().unwrap()
    ))
    .unwrap();
    assert_eq!(ro.trim(), "1", "the clone's loop device is read-only");

    let (status, stderr) = r.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_clean(&target);
    assert_no_journal(&rt);
    assert_no_clones(&base.mount_point);
    assert!(
        !rt.join(session).exists(),
        "runtime directory of the session left"
    );
}

#[test]
fn two_filesystems_are_one_unit() {
    if !require_privileges("freeze two_filesystems_are_one_unit") {
        return;
    }
    let sc = Scratch::new("fz-two").unwrap();
    let base = reflink_base(&sc);
    let xfs = fs_in(&base.mount_point, &sc, FsKind::Xfs, "xfs");
    let ext4 = fs_in(&base.mount_point, &sc, FsKind::Ext4, "ext4");
    let seen = point_in_time(
        &[
            Expect {
                fs: &xfs,
                provider: "freeze",
            },
            Expect {
                fs: &ext4,
                provider: "freeze",
            },
        ],
        &sc,
        &[],
    );
    let mounts = seen.manifest["mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 2);
    assert_eq!(
        mounts[0]["snapshot"], mounts[1]["snapshot"],
        "one unit, one snapshot: {}",
        seen.manifest
    );
    assert_no_clones(&base.mount_point);
}

/// The btrfs filesystem holding the backing file is backed up in the same session: its own
/// snapshot (btrfs provider, in parallel) and the clone made on it do not get in each other's way.
#[test]
fn beside_the_btrfs_holding_its_backing_file() {
    if !require_privileges("freeze beside_the_btrfs_holding_its_backing_file") {
        return;
    }
    let sc = Scratch::new("fz-beside").unwrap();
    let base = reflink_base(&sc);
    let xfs = fs_in(&base.mount_point, &sc, FsKind::Xfs, "xfs");
    point_in_time(
        &[
            Expect {
                fs: &base,
                provider: "btrfs",
            },
            Expect {
                fs: &xfs,
                provider: "freeze",
            },
        ],
        &sc,
        &[],
    );
    assert_no_clones(&base.mount_point);
}

#[test]
fn plan_says_why_it_declines() {
    if !require_privileges("freeze plan_says_why_it_declines") {
        return;
    }
    let sc = Scratch::new("fz-plan").unwrap();
    let plain = plain_base(&sc);
    let fs = fs_in(&plain.mount_point, &sc, FsKind::Xfs, "xfs");
    let out = Command::new(bin("snapshot"))
        .args(["plan", "--json", s(&fs.mount_point)])
        .output()
        .unwrap();
    assert!(out.status.success());
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let declined = plan["mounts"][0]["declined"].as_array().unwrap();
    let freeze = declined
        .iter()
        .find(|d| d["provider"] == "freeze")
        .unwrap_or_else(|| panic!("freeze did not decline: {plan}"));
    let reason = freeze["reason"].as_str().unwrap();
    assert!(
        reason.contains("on ext4: no reflink and no --freeze-command configured"),
        "{reason}"
    );
    assert!(reason.contains(s(&fs.backing)), "{reason}");
}

/// The device-snapshot command the configured-command test uses: copies the loop device's
/// backing file (a reflink where the filesystem can) and attaches the copy read-only;
/// `remove` detaches it and deletes it. Every call is logged.
fn copy_command(dir: &Path) -> PathBuf {
    let cmd = dir.join("freeze-cmd");
    let d = s(dir);
    script(
        &cmd,
        &format!(
            r#"set -e
echo "$*" >> {d}/calls
case "$1" in
create)
    back=$(losetup --noheadings --output BACK-FILE "$2" | sed 's/ *$//')
    cp --reflink=auto --sparse=always "$back" "{d}/$3.img"
    losetup --find --show --read-only "{d}/$3.img"
    ;;
remove)
    if [ -n "$4" ]; then losetup -d "$4" || true; fi
    # Detached only once closed, when a tool probing every block device (mkfs.btrfs in a
    # parallel test) holds it for a moment: wait for that, as a careful command would.
    i=0
    while [ $i -lt 100 ] && [ -n "$(losetup --noheadings --output NAME --associated "{d}/$3.img")" ]; do
        sleep 0.1; i=$((i + 1))
    done
    rm -f "{d}/$3.img"
    ;;
*) exit 2 ;;
esac"#
        ),
    );
    cmd
}

/// The shipped example, `examples/freeze-command.sh`, keeping its copies in `dir`.
fn example_command(dir: &Path) -> PathBuf {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/freeze-command.sh");
    let cmd = dir.join("freeze-cmd");
    script(
        &cmd,
        &format!(
            "echo \"$*\" >> {d}/calls\nCOPY_DIR={d} exec {} \"$@\"",
            s(&example),
            d = s(dir)
        ),
    );
    cmd
}

#[rstest]
#[case::own_script(copy_command as fn(&Path) -> PathBuf)]
#[case::shipped_example(example_command as fn(&Path) -> PathBuf)]
fn configured_command(#[case] command: fn(&Path) -> PathBuf) {
    if !require_privileges("freeze configured_command") {
        return;
    }
    let sc = Scratch::new("fz-cmd").unwrap();
    // Backing file on ext4, no reflink: only the command can copy it.
    let plain = plain_base(&sc);
    let fs = fs_in(&plain.mount_point, &sc, FsKind::Ext4, "ext4");
    let copies = sc.join("copies");
    std::fs::create_dir(&copies).unwrap();
    let cmd = command(&copies);
    let seen = point_in_time(
        &[Expect {
            fs: &fs,
            provider: "freeze",
        }],
        &sc,
        &["--freeze-command", s(&cmd)],
    );
    let calls = lines(&copies.join("calls"));
    let snapshot = seen.manifest["mounts"][0]["snapshot"].as_str().unwrap();
    let name = format!("{snapshot}-0");
    let dev = s(&fs.device);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0], format!("create {dev} {name}"));
    let (head, copy_dev) = calls[1].rsplit_once(' ').unwrap();
    assert_eq!(head, format!("remove {dev} {name}"));
    assert!(copy_dev.starts_with("/dev/loop"), "{calls:?}");
    assert_eq!(loops_backed_by(&copies), Vec::<PathBuf>::new());
    assert!(!copies.join(format!("{name}.img")).exists());
    assert!(
        !std::fs::read_dir(&copies).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".img")),
        "copies left"
    );
}

/// A session killed (SIGKILL) inside the frozen window — by its own device-snapshot command —
/// leaves no frozen filesystem: the watchdog thaws it. `snapshot cleanup` then removes the
/// rest through the command.
#[test]
fn sigkill_in_the_frozen_window_leaves_nothing_frozen() {
    if !require_privileges("freeze sigkill_in_the_frozen_window_leaves_nothing_frozen") {
        return;
    }
    let sc = Scratch::new("fz-kill").unwrap();
    let plain = plain_base(&sc);
    let fs = fs_in(&plain.mount_point, &sc, FsKind::Xfs, "xfs");
    let _thaw = Thaw(fs.mount_point.clone());
    let dir = sc.join("cmd");
    std::fs::create_dir(&dir).unwrap();
    let cmd = dir.join("freeze-cmd");
    script(
        &cmd,
        &format!(
            "echo \"$*\" >> {d}/calls\n[ \"$1\" = create ] && kill -9 $PPID\nexit 0",
            d = s(&dir)
        ),
    );
    let target = sc.join("T");
    std::fs::create_dir(&target).unwrap();
    let rt = sc.join("run");
    let mut r = Running::start(
        &[
            "--no-writers",
            "--freeze-command",
            s(&cmd),
            "-t",
            s(&target),
            s(&fs.mount_point),
        ],
        &rt,
    );
    assert_eq!(r.ready(), "", "no ready line from a killed session");
    let (status, _) = r.wait();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    assert!(
        writable_within(&fs.mount_point, Duration::from_secs(2)),
        "{:?} still frozen after its session died",
        fs.mount_point
    );
    let out = Command::new(bin("snapshot"))
        .args(["cleanup", "--state-dir", s(&rt.join("state"))])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = lines(&dir.join("calls"));
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[0].starts_with("create "), "{calls:?}");
    // The intent had no copy device yet: remove by name, with an empty COPY_DEVICE.
    assert!(
        calls[1].starts_with("remove ") && calls[1].ends_with(' '),
        "{calls:?}"
    );
    assert_no_journal(&rt);
}

/// The session is killed (SIGKILL) right after `create` returns (after the thaw), or while it
/// holds the view: nothing frozen, and `snapshot cleanup` removes the view, the staging mount,
/// the clone's loop device and the clone from the journal alone.
#[rstest]
#[case::after_create("after-create")]
#[case::after_ready("after-ready")]
fn killed_then_cleanup_removes_the_clone(#[case] step: &str) {
    if !require_privileges(&format!(
        "freeze killed_then_cleanup_removes_the_clone {step}"
    )) {
        return;
    }
    let sc = Scratch::new(&format!("fz-{step}")).unwrap();
    let base = reflink_base(&sc);
    let fs = fs_in(&base.mount_point, &sc, FsKind::Xfs, "xfs");
    let target = sc.join("T");
    std::fs::create_dir(&target).unwrap();
    let rt = sc.join("run");
    let mut r = Running::start_env(
        &[
            "--no-writers",
            "--fault-injection",
            "-t",
            s(&target),
            s(&fs.mount_point),
        ],
        &rt,
        &[("SNAPSHOT_FAULT", step)],
    );
    let _ = r.ready();
    let (status, _) = r.wait();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    assert!(writable_within(&fs.mount_point, Duration::from_secs(1)));
    assert_eq!(clones_in(&base.mount_point).len(), 1);
    if step == "after-ready" {
        assert_eq!(
            loops_backed_by(&base.mount_point.join(".snapshot-")).len(),
            1
        );
    }
    let out = Command::new(bin("snapshot"))
        .args(["cleanup", "--state-dir", s(&rt.join("state"))])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_clones(&base.mount_point);
    assert_no_journal(&rt);
    assert_clean(&target);
}

/// `snapshot --watchdog` as a session starts it, told that `path` is about to be frozen.
fn watchdog_for(path: &Path, deadline_ms: u64) -> std::process::Child {
    let mut wd = Command::new(bin("snapshot"))
        .arg("--watchdog")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let msg = serde_json::json!({ "msg": "fs-freezing", "path": path, "deadline_ms": deadline_ms });
    writeln!(wd.stdin.as_mut().unwrap(), "{msg}").unwrap();
    wd
}

#[test]
fn watchdog_thaws_when_its_session_goes() {
    if !require_privileges("freeze watchdog_thaws_when_its_session_goes") {
        return;
    }
    let sc = Scratch::new("fz-wd").unwrap();
    let fs = LoopFs::new("fz-wd", FsKind::Ext4, 16, &sc.join("ext4")).unwrap();
    let mut wd = watchdog_for(&fs.mount_point, 60_000);
    snapshot_core::sys::freeze_filesystem(&fs.mount_point).unwrap();
    let _thaw = Thaw(fs.mount_point.clone());
    assert!(
        !writable_within(&fs.mount_point, Duration::from_millis(300)),
        "the freeze did not hold"
    );
    drop(wd.stdin.take());
    assert!(
        writable_within(&fs.mount_point, Duration::from_secs(1)),
        "the watchdog did not thaw when its pipe closed"
    );
    assert!(wait_timeout(&mut wd, Duration::from_secs(10)).success());
}

#[test]
fn watchdog_thaws_at_the_deadline() {
    if !require_privileges("freeze watchdog_thaws_at_the_deadline") {
        return;
    }
    let sc = Scratch::new("fz-wd-deadline").unwrap();
    let fs = LoopFs::new("fz-wd-deadline", FsKind::Xfs, 0, &sc.join("xfs")).unwrap();
    let mut wd = watchdog_for(&fs.mount_point, 300);
    let t = Instant::now();
    snapshot_core::sys::freeze_filesystem(&fs.mount_point).unwrap();
    let _thaw = Thaw(fs.mount_point.clone());
    assert!(
        writable_within(&fs.mount_point, Duration::from_secs(2)),
        "the watchdog did not thaw at the deadline"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "thawed before the deadline"
    );
    drop(wd.stdin.take());
    assert!(wait_timeout(&mut wd, Duration::from_secs(10)).success());
}
