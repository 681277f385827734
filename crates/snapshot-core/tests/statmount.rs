//! `MountTable::for_paths` (statx + statmount) against `/proc/self/mountinfo`, on real mounts:
//! for every mount the host has (and the fixtures below add) that a path reaches, the Mount
//! rebuilt from statmount must equal the parsed mountinfo line, field for field.
//!
//! Privileged (root, loop devices, btrfs-progs): without them the tests say SKIPPED, and with
//! `CI` set they fail. The fixtures are the testkit's (named `snaptest-statmount-*`, removed
//! on drop, mounts last made first).

use snapshot_core::mountinfo::{Lookup, Mount, MountTable};
use snapshot_core::sys;
use snapshot_testkit::{require_privileges, run, FsKind, LoopFs, Scratch, TestMount};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Test paths as `&str` (the scratch directory's are UTF-8 where a tool gets them).
fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 test path")
}

/// A btrfs on a loop device, its top level mounted at `top`, for more mounts of it.
fn btrfs(name: &str, top: &Path) -> LoopFs {
    LoopFs::new(name, FsKind::Btrfs, 128, top).unwrap()
}

fn btrfs_mount(fs: &LoopFs, options: &str, target: &Path) -> TestMount {
    TestMount::new(&["-t", "btrfs", "-o", options, s(&fs.device)], target).unwrap()
}

fn tmpfs(source: &str, options: &str, target: &Path) -> TestMount {
    TestMount::new(&["-t", "tmpfs", "-o", options, source], target).unwrap()
}

/// A bind of a directory or, onto an empty file made for it, of a file.
fn bind(source: &Path, target: &Path) -> TestMount {
    if !source.is_dir() {
        std::fs::write(target, "").unwrap();
    }
    TestMount::new(&["--bind", s(source)], target).unwrap()
}

fn make(propagation: &str, target: &Path) {
    run("mount", &[propagation, s(target)]).unwrap();
}

/// Linux 6.15 reports what statmount supports: from there on, every mount must go through
/// statmount. Before, an empty field is indistinguishable from a missing one and the fallback
/// is allowed.
fn statmount_is_certain() -> bool {
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy().into_owned();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 15)
}

fn check_lookup(lookup: &Lookup, what: &Path) {
    if statmount_is_certain() {
        assert_eq!(*lookup, Lookup::Statmount, "{what:?}");
    } else if let Lookup::Mountinfo { reason } = lookup {
        eprintln!("{what:?}: fell back to mountinfo: {reason}");
    }
}

/// Checks `for_paths` of the mount point of every mount in mountinfo that its path reaches
/// (statx there names it: not covered by a later mount). The comparison counts when the
/// mount was the same in mountinfo before and after the call (other processes mount and
/// unmount meanwhile); otherwise it is tried again. Returns the mount points checked.
fn check_every_reachable_mount() -> Vec<PathBuf> {
    let mut checked = Vec::new();
    let before = MountTable::read().unwrap();
    for m in &before.mounts {
        // statx on an autofs mount point would trigger the automount.
        if m.fstype == "autofs" {
            continue;
        }
        let mut m = m.clone();
        for attempt in 1.. {
            if sys::mount_id(&m.mount_point).ok() != Some(m.id) {
                break; // covered by another mount, or gone
            }
            let (table, lookup) = MountTable::for_paths_via(&[m.mount_point.clone()]).unwrap();
            let after = MountTable::read().unwrap();
            match after.by_id(m.id) {
                Some(now) if *now == m && sys::mount_id(&m.mount_point).ok() == Some(m.id) => {
                    check_lookup(&lookup, &m.mount_point);
                    if lookup == Lookup::Statmount {
                        assert_eq!(table.mounts, [m.clone()], "{:?}", m.mount_point);
                    } else {
                        assert_eq!(table.by_id(m.id), Some(&m));
                    }
                    checked.push(m.mount_point.clone());
                    break;
                }
                Some(now) if attempt < 5 => m = now.clone(),
                _ => break, // gone, or changing all the time: not this test's business
            }
        }
    }
    checked
}

/// The fixtures cover what the planner and providers read: ids, device numbers, a btrfs
/// `subvol=` with escapes, bind roots, read-only mounts (per mount and per superblock), every
/// flag mountinfo prints, propagation, empty and odd sources, odd mount points, a file.
#[test]
fn for_paths_reproduces_mountinfo_for_every_reachable_mount() {
    if !require_privileges("for_paths_reproduces_mountinfo_for_every_reachable_mount") {
        return;
    }
    let scratch = Scratch::new("statmount-every").unwrap();
    let top = scratch.join("btrfs top");
    let fs = btrfs("statmount-every", &top);
    for sub in ["@home", "@odd name,x"] {
        run("btrfs", &["-q", "subvolume", "create", s(&top.join(sub))]).unwrap();
    }
    std::fs::create_dir_all(top.join("@home/alice")).unwrap();
    let odd_id = sys::ioctl::btrfs_subvol_id(&top.join("@odd name,x")).unwrap();

    let mut mounts = Vec::new();
    let home = scratch.join("home");
    mounts.push(btrfs_mount(&fs, "subvol=@home", &home));
    let odd = format!("subvolid={odd_id}");
    mounts.push(btrfs_mount(&fs, &odd, &scratch.join("odd mnt")));
    mounts.push(btrfs_mount(
        &fs,
        "ro,subvol=/@home",
        &scratch.join("home ro"),
    ));
    mounts.push(bind(&home.join("alice"), &scratch.join("alice")));

    // Every per-mount and per-superblock flag mountinfo prints.
    mounts.push(tmpfs(
        "src flags",
        "mand,sync,dirsync,lazytime,nosymfollow,noatime,nodiratime,nosuid,nodev,noexec,size=1m",
        &scratch.join("flags dir"),
    ));
    // Read-only superblock, strict atime (no atime flag), empty source, a tab in the path.
    mounts.push(tmpfs(
        "",
        "ro,strictatime,size=1m",
        &scratch.join("ro\ttab"),
    ));
    // Escapes in the source; a newline and bytes that are not UTF-8 in the mount point.
    let odd_point = scratch.join(OsString::from_vec(b"new\nline caf\xe9 \\x".to_vec()));
    mounts.push(tmpfs("a\\b c", "size=1m,mode=0755", &odd_point));

    // A bind of a subdirectory (root is not /), made read-only per mount; a bind of a file.
    let base = scratch.join("base");
    mounts.push(tmpfs("base", "size=1m", &base));
    std::fs::create_dir_all(base.join("sub dir/inner")).unwrap();
    std::fs::write(base.join("file"), "x").unwrap();
    let sub = scratch.join("bind of sub");
    mounts.push(bind(&base.join("sub dir"), &sub));
    run("mount", &["-o", "remount,bind,ro", s(&sub)]).unwrap();
    mounts.push(bind(&base.join("file"), &scratch.join("file mount")));

    // Propagation: a shared mount and its peer, a slave that is also shared, an unbindable.
    let shared = scratch.join("shared");
    mounts.push(tmpfs("shared", "size=1m", &shared));
    make("--make-shared", &shared);
    mounts.push(bind(&shared, &scratch.join("peer")));
    let slave = scratch.join("slave");
    mounts.push(bind(&shared, &slave));
    make("--make-slave", &slave);
    make("--make-shared", &slave);
    let unbindable = scratch.join("unbindable");
    mounts.push(tmpfs("unbindable", "size=1m", &unbindable));
    make("--make-unbindable", &unbindable);

    let checked = check_every_reachable_mount();
    let table = MountTable::read().unwrap();
    let fixture = |p: &Path| {
        assert!(checked.iter().any(|c| c == p), "{p:?} was not checked");
        table.mounted_at(p).unwrap().clone()
    };
    // The fixtures are what they should be (so that the comparison above covered them).
    let h = fixture(&home);
    assert_eq!(
        (h.fstype.as_str(), h.root.as_path()),
        ("btrfs", Path::new("/@home"))
    );
    assert_eq!(h.super_option("subvol"), Some("/@home"));
    let o = fixture(&scratch.join("odd mnt"));
    assert_eq!(o.super_option("subvol"), Some(r"/@odd\040name\054x"));
    let r = fixture(&scratch.join("home ro"));
    assert!(r.is_read_only(), "{r:?}");
    assert_eq!(
        fixture(&scratch.join("alice")).root,
        Path::new("/@home/alice")
    );
    let f = fixture(&scratch.join("flags dir"));
    assert_eq!(
        f.options,
        "rw,nosuid,nodev,noexec,noatime,nodiratime,nosymfollow"
    );
    assert!(
        f.super_options
            .starts_with("rw,sync,dirsync,mand,lazytime,"),
        "{}",
        f.super_options
    );
    assert_eq!(f.source, "src flags");
    let t = fixture(&scratch.join("ro\ttab"));
    assert_eq!((t.options.as_str(), t.source.as_str()), ("ro", ""));
    assert!(t.super_options.starts_with("ro,"), "{}", t.super_options);
    let p = fixture(&odd_point);
    assert_eq!(
        p.mount_point.as_os_str().as_bytes(),
        odd_point.as_os_str().as_bytes()
    );
    assert_eq!(p.source, "a\\b c");
    let s = fixture(&sub);
    assert_eq!(s.root, Path::new("/sub dir"));
    assert!(
        s.is_read_only() && s.super_options.starts_with("rw,"),
        "{s:?}"
    );
    assert_eq!(
        fixture(&scratch.join("file mount")).root,
        Path::new("/file")
    );
    let sh = fixture(&shared);
    assert!(sh.optional[0].starts_with("shared:"), "{sh:?}");
    assert_eq!(fixture(&scratch.join("peer")).optional, sh.optional);
    let sl = fixture(&slave);
    assert_eq!(sl.optional.len(), 2, "{sl:?}");
    assert!(sl.optional[0].starts_with("shared:"), "{sl:?}");
    assert_eq!(sl.optional[1], sh.optional[0].replace("shared:", "master:"));
    assert_eq!(fixture(&unbindable).optional, ["unbindable"]);

    // All the fixtures at once: each once, in mountinfo order.
    let points: Vec<PathBuf> = mounts.iter().map(|m| m.target.clone()).collect();
    let mut dirs: Vec<PathBuf> = points.iter().rev().cloned().collect();
    dirs.push(home.join("alice"));
    dirs.push(base.join("sub dir"));
    let (together, lookup) = MountTable::for_paths_via(&dirs).unwrap();
    check_lookup(&lookup, scratch.path());
    if lookup == Lookup::Statmount {
        let now = MountTable::read().unwrap();
        let expected: Vec<Mount> = now
            .mounts
            .iter()
            .filter(|m| points.contains(&m.mount_point))
            .cloned()
            .collect();
        assert_eq!(together.mounts, expected);
    }
    drop(mounts);
}

/// DIRs deep inside mounts: each names the mount statx names, which is also the id the
/// planner looks up; a path covered by a later mount names the later one.
#[test]
fn for_paths_finds_the_mount_statx_names() {
    if !require_privileges("for_paths_finds_the_mount_statx_names") {
        return;
    }
    let scratch = Scratch::new("statmount-names").unwrap();
    let outer = scratch.join("outer");
    let _outer = tmpfs("outer", "size=1m", &outer);
    std::fs::create_dir_all(outer.join("a/b")).unwrap();
    let inner = outer.join("a/inner");
    let _inner = tmpfs("inner", "size=1m", &inner);
    std::fs::create_dir_all(inner.join("deep/er")).unwrap();
    // Two mounts at one place: the later one covers the first.
    let twice = scratch.join("twice");
    let _first = tmpfs("first", "size=1m", &twice);
    let _second = tmpfs("second", "size=1m", &twice);

    let dirs: Vec<PathBuf> = [
        inner.join("deep/er"),
        outer.join("a/b"),
        twice.clone(),
        inner.clone(),
        outer.clone(),
        outer.join("a"),
    ]
    .into();
    let (table, lookup) = MountTable::for_paths_via(&dirs).unwrap();
    check_lookup(&lookup, scratch.path());
    for d in &dirs {
        let m = table.by_id(sys::mount_id(d).unwrap()).unwrap();
        assert!(d.starts_with(&m.mount_point), "{d:?} in {m:?}");
    }
    assert_eq!(
        table.by_id(sys::mount_id(&twice).unwrap()).unwrap().source,
        "second"
    );
    if lookup == Lookup::Statmount {
        let sources: Vec<_> = table.mounts.iter().map(|m| m.source.as_str()).collect();
        assert_eq!(sources, ["outer", "inner", "second"]);
    }
}
