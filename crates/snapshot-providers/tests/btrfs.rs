//! Loop tier: the btrfs provider on real btrfs filesystems on loop devices (root).

use snapshot_core::provider::{
    Created, Filesystem, Probe, Provider, SessionContext, UnitRequest, Validity,
};
use snapshot_core::{sys, Mount, MountTable};
use snapshot_providers::btrfs::{nested_subvolume_mounts, BtrfsProvider};
use snapshot_testkit::{require_privileges, run, FsKind, LoopFs, Scratch, TestMount};
use std::path::{Path, PathBuf};

/// A btrfs fixture in a scratch directory: `scratch/fs` is the top level.
fn btrfs(scratch: &Scratch, name: &str) -> LoopFs {
    LoopFs::new(name, FsKind::Btrfs, 128, &scratch.join("fs")).unwrap()
}

fn mount_at(path: &Path) -> Mount {
    MountTable::read()
        .unwrap()
        .mounted_at(path)
        .unwrap_or_else(|| panic!("nothing mounted at {}", path.display()))
        .clone()
}

fn probe(m: &Mount) -> (String, serde_json::Value) {
    match BtrfsProvider.probe(&Filesystem { mount: m.clone() }) {
        Probe::Accept {
            unit,
            data,
            consistent,
        } => {
            assert!(consistent);
            (unit, data)
        }
        Probe::Decline(r) => panic!("{}: declined: {r}", m.mount_point.display()),
    }
}

fn ctx(scratch: &Scratch, index: usize) -> SessionContext {
    let runtime_dir = scratch.join("run");
    std::fs::create_dir_all(&runtime_dir).unwrap();
    SessionContext {
        id: "snapshot-7e57".into(),
        index,
        runtime_dir,
        guard: Default::default(),
    }
}

fn request(mounts: &[&Mount]) -> UnitRequest {
    let (unit, data) = probe(mounts[0]);
    UnitRequest {
        unit,
        data,
        mounts: mounts.iter().map(|m| (*m).clone()).collect(),
    }
}

fn subvolume_create(path: &Path) {
    run("btrfs", &["subvolume", "create", path.to_str().unwrap()]).unwrap();
}

/// `btrfs subvolume list -a` lines naming a snapshot of ours.
fn our_snapshots(fs: &LoopFs) -> Vec<String> {
    run(
        "btrfs",
        &["subvolume", "list", "-a", fs.mount_point.to_str().unwrap()],
    )
    .unwrap()
    .lines()
    .filter(|l| l.contains(".snapshot-7e57"))
    .map(str::to_owned)
    .collect()
}

/// Unmounts a view mount made by `Provider::mount` (the session's job in production).
struct View(PathBuf);

impl View {
    fn new(created: &Created, origin: &Mount, at: PathBuf) -> Self {
        std::fs::create_dir_all(&at).unwrap();
        let tree = BtrfsProvider.mount(created, origin).unwrap();
        let dir = sys::open_dir_nofollow(&at.canonicalize().unwrap()).unwrap();
        tree.attach(std::os::fd::AsFd::as_fd(&dir)).unwrap();
        View(at)
    }
}

impl Drop for View {
    fn drop(&mut self) {
        // Retried while busy: a process another test forks meanwhile holds copies of this
        // process's descriptors (of the view's place, say) until it execs.
        if let Err(e) = snapshot_core::sys::unmount_patiently(&self.0) {
            eprintln!("unmounting view {}: {e}", self.0.display());
        }
    }
}

fn assert_read_only(dir: &Path) {
    let err = std::fs::write(dir.join("new-file"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(30), "EROFS expected, got {err}");
    let m = mount_at(dir);
    assert!(m.is_read_only(), "view mount options: {}", m.options);
}

/// After remove: no snapshot, no staging mount, no staging directory.
fn assert_removed(fs: &LoopFs, scratch: &Scratch, created: &Created) {
    assert_eq!(our_snapshots(fs), Vec::<String>::new());
    let run_dir = scratch.join("run");
    assert_eq!(
        snapshot_testkit::mounts_under(&run_dir),
        Vec::<PathBuf>::new()
    );
    assert!(
        std::fs::read_dir(&run_dir).unwrap().next().is_none(),
        "staging directory left in {}",
        run_dir.display()
    );
    BtrfsProvider
        .remove(created)
        .expect("second remove is a no-op");
}

/// The must-show, for one origin mount: a file changed after create is unchanged in
/// the mounted snapshot, the view is read-only, removal leaves nothing, twice.
fn snapshot_round_trip(scratch: &Scratch, fs: &LoopFs, origin: &Mount) {
    let file = origin.mount_point.join("data.txt");
    std::fs::write(&file, "before").unwrap();
    let unit = request(&[origin]);
    let ctx = ctx(scratch, 0);
    let created = BtrfsProvider.create(&unit, &ctx).unwrap();
    assert_eq!(created.name, "snapshot-7e57-0");
    std::fs::write(&file, "after").unwrap();
    std::fs::write(origin.mount_point.join("later.txt"), "new").unwrap();
    {
        let view = View::new(&created, origin, scratch.join("view"));
        assert_eq!(
            std::fs::read_to_string(view.0.join("data.txt")).unwrap(),
            "before"
        );
        assert!(!view.0.join("later.txt").exists());
        assert!(
            !view.0.join(".snapshot-7e57-0").exists(),
            "the snapshot shows inside itself"
        );
        assert_read_only(&view.0);
        assert_eq!(our_snapshots(fs).len(), 1);
        assert_eq!(BtrfsProvider.verify(&created), Validity::Valid);
    }
    BtrfsProvider.remove(&created).unwrap();
    assert_removed(fs, scratch, &created);
}

#[test]
fn top_level_mount() {
    if !require_privileges("btrfs::top_level_mount") {
        return;
    }
    let scratch = Scratch::new("btrfs-top").unwrap();
    let fs = btrfs(&scratch, "btrfs-top");
    let origin = mount_at(&fs.mount_point);
    assert_eq!(
        probe(&origin).0,
        format!("{}:{}:5", origin.major, origin.minor)
    );
    snapshot_round_trip(&scratch, &fs, &origin);
}

#[test]
fn subvol_mount() {
    if !require_privileges("btrfs::subvol_mount") {
        return;
    }
    let scratch = Scratch::new("btrfs-subvol").unwrap();
    let fs = btrfs(&scratch, "btrfs-subvol");
    subvolume_create(&fs.mount_point.join("@data"));
    let dev = fs.device.to_str().unwrap();
    let _sub = TestMount::new(&["-o", "subvol=/@data", dev], &scratch.join("data")).unwrap();
    let origin = mount_at(&scratch.join("data"));
    assert_eq!(origin.root, Path::new("/@data"));
    let (unit, _) = probe(&origin);
    assert!(!unit.ends_with(":5"), "{unit}");
    snapshot_round_trip(&scratch, &fs, &origin);
}

#[test]
fn bind_mount_of_a_plain_directory_shows_the_same_subdirectory() {
    if !require_privileges("btrfs::bind_mount_of_a_plain_directory") {
        return;
    }
    let scratch = Scratch::new("btrfs-subdir").unwrap();
    let fs = btrfs(&scratch, "btrfs-subdir");
    subvolume_create(&fs.mount_point.join("@home"));
    fs.write("@home/alice/notes.txt", "alice").unwrap();
    fs.write("@home/bob/notes.txt", "bob").unwrap();
    let alice = fs.mount_point.join("@home/alice");
    let _bind =
        TestMount::new(&["--bind", alice.to_str().unwrap()], &scratch.join("alice")).unwrap();
    let origin = mount_at(&scratch.join("alice"));
    assert_eq!(origin.root, Path::new("/@home/alice"));
    let unit = request(&[&origin]);
    let created = BtrfsProvider.create(&unit, &ctx(&scratch, 0)).unwrap();
    {
        let view = View::new(&created, &origin, scratch.join("view"));
        assert_eq!(
            std::fs::read_to_string(view.0.join("notes.txt")).unwrap(),
            "alice"
        );
        assert!(!view.0.join("alice").exists() && !view.0.join("bob").exists());
    }
    BtrfsProvider.remove(&created).unwrap();
    assert_removed(&fs, &scratch, &created);
}

#[test]
fn two_mounts_of_one_subvolume_share_a_unit_and_two_subvolumes_are_created_in_parallel() {
    if !require_privileges("btrfs::two_subvolumes") {
        return;
    }
    let scratch = Scratch::new("btrfs-two").unwrap();
    let fs = btrfs(&scratch, "btrfs-two");
    subvolume_create(&fs.mount_point.join("a"));
    subvolume_create(&fs.mount_point.join("b"));
    fs.write("a/f", "a1").unwrap();
    fs.write("b/f", "b1").unwrap();
    let dev = fs.device.to_str().unwrap();
    let _a = TestMount::new(&["-o", "subvol=/a", dev], &scratch.join("a")).unwrap();
    let _a2 = TestMount::new(&["-o", "subvol=/a", dev], &scratch.join("a2")).unwrap();
    let _b = TestMount::new(&["-o", "subvol=/b", dev], &scratch.join("b")).unwrap();
    let (a, a2, b) = (
        mount_at(&scratch.join("a")),
        mount_at(&scratch.join("a2")),
        mount_at(&scratch.join("b")),
    );
    assert_eq!(probe(&a).0, probe(&a2).0);
    assert_ne!(probe(&a).0, probe(&b).0);

    let units = [request(&[&a, &a2]), request(&[&b])];
    let created: Vec<Created> = std::thread::scope(|s| {
        let handles: Vec<_> = units
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let ctx = ctx(&scratch, i);
                s.spawn(move || BtrfsProvider.create(u, &ctx))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    fs.write("a/f", "a2").unwrap();
    fs.write("b/f", "b2").unwrap();
    assert_eq!(our_snapshots(&fs).len(), 2);
    {
        let va = View::new(&created[0], &a, scratch.join("view/a"));
        let va2 = View::new(&created[0], &a2, scratch.join("view/a2"));
        let vb = View::new(&created[1], &b, scratch.join("view/b"));
        for (v, want) in [(&va, "a1"), (&va2, "a1"), (&vb, "b1")] {
            assert_eq!(std::fs::read_to_string(v.0.join("f")).unwrap(), want);
        }
    }
    for c in &created {
        BtrfsProvider.remove(c).unwrap();
    }
    assert_removed(&fs, &scratch, &created[0]);
}

#[test]
fn dir_inside_a_nested_subvolume() {
    if !require_privileges("btrfs::dir_inside_a_nested_subvolume") {
        return;
    }
    let scratch = Scratch::new("btrfs-nested").unwrap();
    let fs = btrfs(&scratch, "btrfs-nested");
    fs.write("top.txt", "top").unwrap();
    subvolume_create(&fs.mount_point.join("vm"));
    fs.write("vm/images/disk.img", "v1").unwrap();
    let top = mount_at(&fs.mount_point);
    let dir = fs.mount_point.join("vm/images");

    let nested = nested_subvolume_mounts(&top, &dir).unwrap();
    assert_eq!(nested.len(), 1, "{nested:?}");
    assert_eq!(nested[0].mount_point, fs.mount_point.join("vm"));
    assert_eq!(nested[0].root, Path::new("/vm"));
    assert!(nested_subvolume_mounts(&top, &fs.mount_point)
        .unwrap()
        .is_empty());
    assert_ne!(probe(&nested[0]).0, probe(&top).0);

    let ct = BtrfsProvider
        .create(&request(&[&top]), &ctx(&scratch, 0))
        .unwrap();
    let cn = BtrfsProvider
        .create(&request(&[&nested[0]]), &ctx(&scratch, 1))
        .unwrap();
    fs.write("vm/images/disk.img", "v2").unwrap();
    {
        let vt = View::new(&ct, &top, scratch.join("view"));
        // The nested subvolume is an empty directory in the top level's snapshot…
        assert!(std::fs::read_dir(vt.0.join("vm")).unwrap().next().is_none());
        // …and its own unit, mounted over it, shows the DIR as it was.
        let vn = View::new(&cn, &nested[0], vt.0.join("vm"));
        assert_eq!(
            std::fs::read_to_string(vn.0.join("images/disk.img")).unwrap(),
            "v1"
        );
        drop(vn);
    }
    BtrfsProvider.remove(&cn).unwrap();
    BtrfsProvider.remove(&ct).unwrap();
    assert_removed(&fs, &scratch, &ct);
}

/// Unmounts a staging mount as a crash would leave it gone. Retried while busy, as the
/// provider does: a process another test forks meanwhile holds copies of this process's
/// descriptors until it execs (close-on-exec), which makes the mount busy for a moment.
fn unmount_staging(path: &Path) {
    snapshot_core::sys::unmount_patiently(path).unwrap();
}

#[test]
fn remove_from_another_process_and_from_the_journalled_intent() {
    if !require_privileges("btrfs::remove_from_another_process") {
        return;
    }
    let scratch = Scratch::new("btrfs-replay").unwrap();
    let fs = btrfs(&scratch, "btrfs-replay");
    let origin = mount_at(&fs.mount_point);
    let unit = request(&[&origin]);

    // A crash after create: the staging mount and /run are gone; only the record remains.
    let ctx0 = ctx(&scratch, 0);
    let created = BtrfsProvider.create(&unit, &ctx0).unwrap();
    let staging = scratch.join("run/btrfs-0");
    unmount_staging(&staging);
    std::fs::remove_dir(&staging).unwrap();
    assert_eq!(our_snapshots(&fs).len(), 1);
    BtrfsProvider.remove(&created).unwrap();
    assert_eq!(our_snapshots(&fs), Vec::<String>::new());

    // A crash between the journal write and the end of create: only `expected` was recorded.
    let ctx1 = ctx(&scratch, 1);
    let intent = BtrfsProvider.expected(&unit, &ctx1);
    assert!(intent.data["fsid"].is_string(), "{}", intent.data);
    BtrfsProvider
        .remove(&intent)
        .expect("nothing made yet: a no-op");
    let created = BtrfsProvider.create(&unit, &ctx1).unwrap();
    unmount_staging(&scratch.join("run/btrfs-1"));
    BtrfsProvider.remove(&intent).unwrap();
    assert_removed(&fs, &scratch, &created);
}

#[test]
fn failed_create_leaves_nothing_and_never_deletes_what_is_not_ours() {
    if !require_privileges("btrfs::failed_create_leaves_nothing") {
        return;
    }
    let scratch = Scratch::new("btrfs-fail").unwrap();
    let fs = btrfs(&scratch, "btrfs-fail");
    let origin = mount_at(&fs.mount_point);

    // The planned subvolume id no longer matches (a subvolume replaced since planning).
    let mut unit = request(&[&origin]);
    unit.data["subvol_id"] = 999.into();
    let err = BtrfsProvider.create(&unit, &ctx(&scratch, 0)).unwrap_err();
    assert!(err.to_string().contains("not subvolume 999"), "{err}");
    assert_eq!(our_snapshots(&fs), Vec::<String>::new());
    assert_eq!(
        snapshot_testkit::mounts_under(&scratch.join("run")),
        Vec::<PathBuf>::new()
    );
    assert!(!scratch.join("run/btrfs-0").exists());

    // A name already taken (by a plain directory): create fails, removal refuses to touch it.
    std::fs::create_dir(fs.mount_point.join(".snapshot-7e57-1")).unwrap();
    let unit = request(&[&origin]);
    let ctx1 = ctx(&scratch, 1);
    let err = BtrfsProvider.create(&unit, &ctx1).unwrap_err();
    assert!(err.to_string().contains("File exists"), "{err}");
    let intent = BtrfsProvider.expected(&unit, &ctx1);
    let err = BtrfsProvider.remove(&intent).unwrap_err();
    assert!(err.to_string().contains("plain directory"), "{err}");
    assert!(fs.mount_point.join(".snapshot-7e57-1").is_dir());
}

#[test]
fn declines_other_filesystems() {
    if !require_privileges("btrfs::declines_other_filesystems") {
        return;
    }
    let scratch = Scratch::new("btrfs-ext4").unwrap();
    let fs = LoopFs::new("btrfs-ext4", FsKind::Ext4, 16, &scratch.join("fs")).unwrap();
    match BtrfsProvider.probe(&Filesystem {
        mount: mount_at(&fs.mount_point),
    }) {
        Probe::Decline(r) => assert!(r.contains("not btrfs"), "{r}"),
        a => panic!("accepted ext4: {a:?}"),
    }
}
