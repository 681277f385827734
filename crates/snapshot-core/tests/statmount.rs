//! `MountTable::for_paths` (statx + statmount) against `/proc/self/mountinfo`, on real mounts:
//! for every mount the host has (and the fixtures below add) that a path reaches, the Mount
//! rebuilt from statmount must equal the parsed mountinfo line, field for field.
//!
//! Privileged (root, loop devices, btrfs-progs): without them the tests say SKIPPED, and with
//! `CI` set they fail. The fixtures live in a scratch directory under /tmp and a backing file
//! in /var/tmp, all named `snaptest-statmount-*`, and are removed on drop (mounts last made
//! first). snapshot-testkit is not a dependency of this crate, so the few fixtures needed are
//! here.

use snapshot_core::mountinfo::{Lookup, Mount, MountTable};
use snapshot_core::sys;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const TOOLS: &[&str] = &["mount", "losetup", "mkfs.btrfs", "btrfs"];

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// True when the test can run; otherwise SKIPPED on stderr, or a failure under `CI`.
fn require_privileges(test: &str) -> bool {
    let reason = if !sys::is_root() {
        Some("not running as root".to_owned())
    } else if !Path::new("/dev/loop-control").exists() {
        Some("/dev/loop-control does not exist".to_owned())
    } else {
        let missing: Vec<_> = TOOLS.iter().filter(|t| find_tool(t).is_none()).collect();
        (!missing.is_empty()).then(|| format!("missing tools: {missing:?}"))
    };
    match reason {
        None => true,
        Some(r) if std::env::var_os("CI").is_some() => {
            panic!("{test}: cannot run privileged test: {r}")
        }
        Some(r) => {
            eprintln!("SKIPPED {test}: {r}");
            false
        }
    }
}

/// Runs a tool; its stdout, or a panic with its stderr.
fn run(tool: &str, args: &[&OsStr]) -> String {
    let path = find_tool(tool).unwrap_or_else(|| panic!("{tool} not found"));
    let out = Command::new(&path)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// `/tmp/snaptest-statmount-<name>-<pid>`, removed on drop only when nothing is mounted at or
/// below it (`remove_dir_all` would descend into a mount).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("snaptest-statmount-{name}-{}", std::process::id()));
        std::fs::create_dir(&p).unwrap_or_else(|e| panic!("creating {}: {e}", p.display()));
        Self(p)
    }

    fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let left: Vec<_> = MountTable::read()
            .map(|t| {
                t.at_or_below(&self.0)
                    .map(|m| m.mount_point.clone())
                    .collect()
            })
            .unwrap_or_default();
        if !left.is_empty() {
            eprintln!("leaving {}: still mounted: {left:?}", self.0.display());
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("removing {}: {e}", self.0.display());
        }
    }
}

/// `mount ARGS... TARGET`; unmounted on drop while it is still the top mount at TARGET.
struct Mounted {
    target: PathBuf,
    id: u64,
}

impl Mounted {
    fn new(args: &[&OsStr], target: &Path) -> Self {
        let mut argv = args.to_vec();
        argv.push(target.as_os_str());
        run("mount", &argv);
        Self {
            target: target.to_owned(),
            id: sys::mount_id(target).unwrap(),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        for _ in 0..20 {
            if sys::mount_id(&self.target).ok() != Some(self.id) {
                return;
            }
            match sys::unmount_path(&self.target) {
                Ok(()) => return,
                Err(e) if e.raw_os_error() == Some(16) => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => {
                    eprintln!("unmounting {}: {e}", self.target.display());
                    return;
                }
            }
        }
        if let Err(e) = sys::detach_path(&self.target) {
            eprintln!("detaching {}: {e}", self.target.display());
        }
    }
}

/// A btrfs on a loop device over a sparse file in /var/tmp, mounted at `top`.
struct LoopBtrfs {
    backing: PathBuf,
    device: PathBuf,
    top: Option<Mounted>,
}

impl LoopBtrfs {
    fn new(name: &str, top: &Path) -> Self {
        let backing = PathBuf::from(format!(
            "/var/tmp/snaptest-statmount-{name}-{}.img",
            std::process::id()
        ));
        let f = std::fs::File::create(&backing).unwrap();
        f.set_len(128 << 20).unwrap();
        drop(f);
        let mut fs = Self {
            backing,
            device: PathBuf::new(),
            top: None,
        };
        let out = run(
            "losetup",
            &[os("--find"), os("--show"), fs.backing.as_os_str()],
        );
        fs.device = PathBuf::from(out.trim());
        run("mkfs.btrfs", &[os("-q"), os("-f"), fs.device.as_os_str()]);
        std::fs::create_dir_all(top).unwrap();
        fs.top = Some(Mounted::new(
            &[os("-t"), os("btrfs"), fs.device.as_os_str()],
            top,
        ));
        fs
    }

    fn mount(&self, options: &str, target: &Path) -> Mounted {
        std::fs::create_dir_all(target).unwrap();
        Mounted::new(
            &[
                os("-t"),
                os("btrfs"),
                os("-o"),
                os(options),
                self.device.as_os_str(),
            ],
            target,
        )
    }
}

impl Drop for LoopBtrfs {
    fn drop(&mut self) {
        drop(self.top.take());
        if !self.device.as_os_str().is_empty() {
            let _ = Command::new(find_tool("losetup").unwrap())
                .arg("-d")
                .arg(&self.device)
                .status();
        }
        let _ = std::fs::remove_file(&self.backing);
    }
}

fn tmpfs(source: &str, options: &str, target: &Path) -> Mounted {
    std::fs::create_dir_all(target).unwrap();
    Mounted::new(
        &[os("-t"), os("tmpfs"), os("-o"), os(options), os(source)],
        target,
    )
}

fn bind(source: &Path, target: &Path) -> Mounted {
    if source.is_dir() {
        std::fs::create_dir_all(target).unwrap();
    } else {
        std::fs::write(target, "").unwrap();
    }
    Mounted::new(&[os("--bind"), source.as_os_str()], target)
}

fn make(propagation: &str, target: &Path) {
    run("mount", &[os(propagation), target.as_os_str()]);
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
    let scratch = Scratch::new("every");
    let btrfs = LoopBtrfs::new("every", &scratch.join("btrfs top"));
    let top = scratch.join("btrfs top");
    run(
        "btrfs",
        &[
            os("-q"),
            os("subvolume"),
            os("create"),
            top.join("@home").as_os_str(),
        ],
    );
    run(
        "btrfs",
        &[
            os("-q"),
            os("subvolume"),
            os("create"),
            top.join("@odd name,x").as_os_str(),
        ],
    );
    std::fs::create_dir_all(top.join("@home/alice")).unwrap();
    let odd_id = sys::ioctl::btrfs_subvol_id(&top.join("@odd name,x")).unwrap();

    let mut mounts = Vec::new();
    let home = scratch.join("home");
    mounts.push(btrfs.mount("subvol=@home", &home));
    mounts.push(btrfs.mount(&format!("subvolid={odd_id}"), &scratch.join("odd mnt")));
    mounts.push(btrfs.mount("ro,subvol=/@home", &scratch.join("home ro")));
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
    run("mount", &[os("-o"), os("remount,bind,ro"), sub.as_os_str()]);
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
    check_lookup(&lookup, &scratch.0);
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
    let scratch = Scratch::new("names");
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
    check_lookup(&lookup, &scratch.0);
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
