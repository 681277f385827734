//! The btrfs provider end to end through the real binary (loop tier: root).

mod common;
use common::*;
use snapshot_testkit::{run, TestMount};
use std::path::Path;

/// `btrfs subvolume list -a` lines naming a snapshot of session `id` (or of any session).
fn leftover_snapshots(mount_point: &Path, id: Option<&str>) -> Vec<String> {
    run("btrfs", &["subvolume", "list", "-a", s(mount_point)])
        .unwrap()
        .lines()
        .filter(|l| l.contains(id.unwrap_or("snapshot-")))
        .map(str::to_owned)
        .collect()
}

/// Starts a session over `dirs`, checks that every mount is a btrfs snapshot (unless listed in
/// `bind`), changes each `(file, origin)` after ready and checks the view kept the old
/// content, checks read-only, tears down, checks nothing is left; returns the manifest.
fn round_trip(
    scratch: &Scratch,
    dirs: &[&Path],
    files: &[&Path],
    bind: &[&Path],
) -> serde_json::Value {
    let target = scratch.join("T");
    std::fs::create_dir_all(&target).unwrap();
    let rt = scratch.join("run");
    for f in files {
        std::fs::write(f, "before").unwrap();
    }
    let mut args = vec!["--no-writers", "--json", "-v", "-t", s(&target)];
    args.extend(dirs.iter().map(|d| s(d)));
    let mut run = Running::start(&args, &rt);
    let manifest: serde_json::Value = serde_json::from_str(&run.ready()).expect("manifest");
    for m in manifest["mounts"].as_array().unwrap() {
        let mp = m["mount_point"].as_str().unwrap();
        let want = if bind.iter().any(|b| s(b) == mp) {
            "bind"
        } else {
            "btrfs"
        };
        assert_eq!(m["provider"], want, "{manifest}");
        assert_eq!(m["consistent"], want == "btrfs", "{manifest}");
    }
    for f in files {
        std::fs::write(f, "after").unwrap();
        let seen = std::fs::read_to_string(in_view(&target, f)).unwrap();
        let is_bind = bind.iter().any(|b| f.starts_with(b));
        assert_eq!(
            seen,
            if is_bind { "after" } else { "before" },
            "{f:?} in the view"
        );
    }
    for d in dirs {
        assert_read_only(&in_view(&target, d));
    }
    let session = manifest["session"].as_str().unwrap().to_owned();
    let (status, stderr) = run.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_clean(&target);
    assert_no_journal(&rt);
    let _ = session;
    manifest
}

#[test]
fn top_level_mount() {
    if !require_privileges("btrfs top_level_mount") {
        return;
    }
    let sc = Scratch::new("b-top").unwrap();
    let m = sc.join("data");
    let fs = LoopFs::new("b-top", FsKind::Btrfs, 128, &m).unwrap();
    let manifest = round_trip(&sc, &[&m], &[&m.join("f")], &[]);
    assert!(leftover_snapshots(&fs.mount_point, manifest["session"].as_str()).is_empty());
}

#[test]
fn subvol_mount_and_two_subvolumes_of_one_filesystem() {
    if !require_privileges("btrfs subvol_mount_and_two_subvolumes_of_one_filesystem") {
        return;
    }
    let sc = Scratch::new("b-subvol").unwrap();
    let top = sc.join("top");
    let fs = LoopFs::new("b-subvol", FsKind::Btrfs, 128, &top).unwrap();
    run("btrfs", &["subvolume", "create", s(&top.join("@a"))]).unwrap();
    run("btrfs", &["subvolume", "create", s(&top.join("@b"))]).unwrap();
    let (a, b) = (sc.join("srv/a"), sc.join("srv/b"));
    let dev = s(&fs.device);
    let _ma = TestMount::new(&["-t", "btrfs", "-o", "subvol=@a", dev], &a).unwrap();
    let _mb = TestMount::new(&["-t", "btrfs", "-o", "subvol=/@b", dev], &b).unwrap();
    let manifest = round_trip(&sc, &[&a, &b], &[&a.join("fa"), &b.join("fb")], &[]);
    let snaps: Vec<_> = manifest["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["snapshot"].clone())
        .collect();
    assert_eq!(snaps.len(), 2);
    assert_ne!(snaps[0], snaps[1], "two subvolumes, two snapshots");
    assert!(leftover_snapshots(&top, manifest["session"].as_str()).is_empty());
}

#[test]
fn dir_inside_a_nested_subvolume() {
    if !require_privileges("btrfs dir_inside_a_nested_subvolume") {
        return;
    }
    let sc = Scratch::new("b-nested").unwrap();
    let m = sc.join("data");
    let _fs = LoopFs::new("b-nested", FsKind::Btrfs, 128, &m).unwrap();
    run("btrfs", &["subvolume", "create", s(&m.join("inner"))]).unwrap();
    std::fs::create_dir(m.join("inner/deep")).unwrap();
    let deep = m.join("inner/deep");
    // Both the outer mount and a DIR in the nested subvolume: two units, the inner mounted over
    // the empty directory btrfs leaves in the outer snapshot.
    let manifest = round_trip(
        &sc,
        &[&m, &deep],
        &[&m.join("top-file"), &deep.join("f")],
        &[],
    );
    assert_eq!(
        manifest["mounts"].as_array().unwrap().len(),
        2,
        "{manifest}"
    );
    // And the nested DIR alone.
    round_trip(&sc, &[&deep], &[&deep.join("f")], &[]);
}

#[test]
fn btrfs_beside_ext4_bind() {
    if !require_privileges("btrfs btrfs_beside_ext4_bind") {
        return;
    }
    let sc = Scratch::new("b-mixed").unwrap();
    let (a, e) = (sc.join("srv/btrfs"), sc.join("srv/ext4"));
    let _fa = LoopFs::new("b-mixed-a", FsKind::Btrfs, 128, &a).unwrap();
    let _fe = LoopFs::new("b-mixed-e", FsKind::Ext4, 32, &e).unwrap();
    round_trip(&sc, &[&a, &e], &[&a.join("f"), &e.join("f")], &[&e]);
}

/// A session that fails after its snapshot was made (the view cannot be built because a
/// non-DIR mount makes the path unreachable is hard to arrange; a strict writer failing on
/// freeze is not after creation) — so: the mount step fails because a DIR vanished? Use the
/// simplest reliable failure after creation: SIGTERM before ready is racy; instead check that
/// a session refused by a strict writer leaves no snapshot, and one ended by SIGTERM during
/// the hold leaves none either.
#[test]
fn failed_and_interrupted_sessions_leave_no_snapshot() {
    if !require_privileges("btrfs failed_and_interrupted_sessions_leave_no_snapshot") {
        return;
    }
    let sc = Scratch::new("b-fail").unwrap();
    let m = sc.join("data");
    let _fs = LoopFs::new("b-fail", FsKind::Btrfs, 128, &m).unwrap();
    let target = sc.join("T");
    std::fs::create_dir(&target).unwrap();
    let rt = sc.join("run");
    let wd = sc.join("w");
    std::fs::create_dir(&wd).unwrap();
    script(&wd.join("fails"), "[ \"$1\" = freeze ] && exit 3\nexit 0");
    let mut r = Running::start(
        &[
            "--strict-writers",
            "--writers-dir",
            s(&wd),
            "-t",
            s(&target),
            s(&m),
        ],
        &rt,
    );
    assert_eq!(r.ready(), "");
    assert_eq!(r.finish().0.code(), Some(79));
    assert!(leftover_snapshots(&m, None).is_empty());
    assert_clean(&target);

    let mut r = Running::start(&["--no-writers", "-t", s(&target), s(&m)], &rt);
    assert_eq!(r.ready(), "done\n");
    assert_eq!(
        leftover_snapshots(&m, None).len(),
        1,
        "the session's snapshot exists while held"
    );
    r.signal(rustix::process::Signal::TERM);
    assert_eq!(r.wait().0.code(), Some(143));
    assert!(leftover_snapshots(&m, None).is_empty());
    assert_clean(&target);
    assert_no_journal(&rt);
}
