//! RAII fixtures: scratch directories and real filesystems on loop devices ([`LoopFs`]),
//! LVM volume groups, thin pools and LVs on loop files ([`lvm`]), ZFS pools on sparse files
//! and their datasets ([`zfs`]), PostgreSQL and MariaDB servers of their own ([`db`]). Each
//! `Drop` logs and never panics, and removes exactly what its value made.
//!
//! Used by the dev-only testkit (`snapshot-testkit`, which re-exports all of it) and by the
//! certification harness (`snapshot-certify`, a shipped binary): nothing here is test-only
//! (no skipping, no panicking on a missing privilege), so production code may link it.
//!
//! Every object carries the `snaptest-` prefix (scratch dirs in `/tmp`, backing files in
//! `/var/tmp` or where the caller says), so a leak check can find exactly what was made
//! ([`loops_backed_by`], [`mounts_under`]). Nothing here ever touches an object it did not
//! create: no `losetup -D`, no unmount by pattern, no killing by name.

pub mod db;
pub mod lvm;
pub mod zfs;

use anyhow::{bail, Context, Result};
use rustix::io::Errno;
use rustix::mount::{mount, unmount, MountFlags, UnmountFlags};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Prefix of every object the testkit creates.
pub const PREFIX: &str = "snaptest-";

static SEQ: AtomicU64 = AtomicU64::new(0);

/// `snaptest-<name>-<pid>-<seq>`: unique within the machine while this process lives.
fn unique_name(name: &str) -> String {
    unique_name_keeping(name, |c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `snaptest-<name>-<pid>-<seq>` where the characters of `name` that `keep` refuses become `_`
/// (each tool allows its own set in names).
pub(crate) fn unique_name_keeping(name: &str, keep: impl Fn(char) -> bool) -> String {
    let clean: String = name
        .chars()
        .map(|c| if keep(c) { c } else { '_' })
        .collect();
    format!(
        "{PREFIX}{clean}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Full path of a tool: `PATH`, then the sbin directories (a non-login root shell may lack
/// them): [`snapshot_core::exec::find_tool`], as the providers look their tools up.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    snapshot_core::exec::find_tool(name)
}

/// A scratch directory `/tmp/snaptest-<name>-<pid>-<seq>/`, removed on drop unless something
/// is still mounted at or under it (then it is left, and said so on stderr).
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(unique_name(name));
        std::fs::create_dir(&path)
            .with_context(|| format!("creating scratch directory {}", path.display()))?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let left = mounts_under(&self.path);
        if !left.is_empty() {
            eprintln!(
                "fixtures: leaving scratch {}: still mounted: {:?}",
                self.path.display(),
                left
            );
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("fixtures: removing scratch {}: {e}", self.path.display());
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    Ext4,
    Xfs,
    Btrfs,
}

impl FsKind {
    pub const ALL: [FsKind; 3] = [FsKind::Ext4, FsKind::Xfs, FsKind::Btrfs];

    pub fn name(&self) -> &'static str {
        match self {
            FsKind::Ext4 => "ext4",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
        }
    }

    /// Smallest size mkfs accepts (XFS: 300 MB; btrfs: 114 MB with default profiles).
    pub fn min_size_mb(&self) -> u64 {
        match self {
            FsKind::Ext4 => 8,
            FsKind::Xfs => 300,
            FsKind::Btrfs => 114,
        }
    }

    /// The mkfs tool and its options.
    pub fn mkfs(&self) -> (&'static str, &'static [&'static str]) {
        match self {
            FsKind::Ext4 => ("mkfs.ext4", &["-q", "-F"]),
            FsKind::Xfs => ("mkfs.xfs", &["-q", "-f"]),
            FsKind::Btrfs => ("mkfs.btrfs", &["-q", "-f"]),
        }
    }
}

/// A real filesystem: sparse backing file → loop device → mkfs → mounted at `mount_point`.
/// Drop unmounts it, detaches this loop device and removes the backing file.
#[derive(Debug)]
pub struct LoopFs {
    pub backing: PathBuf,
    /// `/dev/loopN` (empty until attached during construction).
    pub device: PathBuf,
    pub mount_point: PathBuf,
    pub kind: FsKind,
    name: String,
    file_created: bool,
    attached: bool,
    mounted: bool,
}

impl LoopFs {
    /// Backing file in `/var/tmp` (not tmpfs: a sparse file on disk costs no memory).
    /// `size_mb` is raised to the filesystem's minimum.
    pub fn new(name: &str, kind: FsKind, size_mb: u64, mount_point: &Path) -> Result<Self> {
        Self::new_in(Path::new("/var/tmp"), name, kind, size_mb, mount_point)
    }

    /// Like [`LoopFs::new`], with the backing file in `dir`.
    pub fn new_in(
        dir: &Path,
        name: &str,
        kind: FsKind,
        size_mb: u64,
        mount_point: &Path,
    ) -> Result<Self> {
        let name = unique_name(name);
        let mut fs = LoopFs {
            backing: dir.join(format!("{name}.img")),
            device: PathBuf::new(),
            mount_point: mount_point.to_owned(),
            kind,
            name,
            file_created: false,
            attached: false,
            mounted: false,
        };
        // On error `fs` is dropped here, and Drop undoes exactly the steps that were done.
        fs.build(size_mb.max(kind.min_size_mb()))?;
        Ok(fs)
    }

    fn build(&mut self, size_mb: u64) -> Result<()> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&self.backing)
            .with_context(|| format!("{}: creating {}", self.name, self.backing.display()))?;
        self.file_created = true;
        file.set_len(size_mb * 1024 * 1024)
            .with_context(|| format!("{}: sizing {}", self.name, self.backing.display()))?;
        drop(file);

        let out = run_tool(
            "losetup",
            &[
                "--find".as_ref(),
                "--show".as_ref(),
                self.backing.as_os_str(),
            ],
        )
        .with_context(|| format!("{}: attaching a loop device", self.name))?;
        let dev = out.trim();
        if !dev.starts_with("/dev/loop") {
            bail!("{}: losetup printed {dev:?}, not a loop device", self.name);
        }
        self.device = PathBuf::from(dev);
        self.attached = true;

        let (mkfs, args) = self.kind.mkfs();
        let mut argv: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        argv.push(self.device.as_os_str());
        run_tool(mkfs, &argv)
            .with_context(|| format!("{}: {mkfs} {}", self.name, self.device.display()))?;

        std::fs::create_dir_all(&self.mount_point)
            .with_context(|| format!("{}: creating {}", self.name, self.mount_point.display()))?;
        mount(
            &self.device,
            &self.mount_point,
            self.kind.name(),
            MountFlags::empty(),
            c"",
        )
        .with_context(|| {
            format!(
                "{}: mounting {} at {}",
                self.name,
                self.device.display(),
                self.mount_point.display()
            )
        })?;
        self.mounted = true;
        Ok(())
    }

    /// The fixture's unique name (`snaptest-<name>-<pid>-<seq>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Writes `mount_point/rel`, creating parent directories.
    pub fn write(&self, rel: &str, content: &str) -> Result<()> {
        let path = self.mount_point.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))
    }

    /// Is our device the topmost mount at our mount point?
    fn our_mount_on_top(&self) -> bool {
        read_mountinfo()
            .iter()
            .rev()
            .find(|m| m.mount_point == self.mount_point)
            .is_some_and(|m| Path::new(&m.source) == self.device)
    }

    fn unmount(&mut self) {
        if !self.our_mount_on_top() {
            eprintln!(
                "fixtures: {}: {} is not the top mount at {} any more; not unmounting",
                self.name,
                self.device.display(),
                self.mount_point.display()
            );
            return;
        }
        let who = format!("{}: ", self.name);
        unmount_patiently(&self.mount_point, &who, || self.our_mount_on_top());
    }
}

impl LoopFs {
    /// The kernel may finish a detach asynchronously (the last opener of the device, e.g. the
    /// just-unmounted filesystem, lets go a moment later). Wait for it so that leak checks
    /// right after a drop are deterministic.
    fn wait_detached(&self) {
        for _ in 0..50 {
            if !loops_backed_by(&self.backing).contains(&self.device) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "fixtures: {}: {} still attached 1 s after losetup -d (autoclear pending)",
            self.name,
            self.device.display()
        );
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            self.unmount();
        }
        if self.attached {
            // Detach exactly our device; if it is still busy the kernel marks it autoclear.
            match run_tool("losetup", &["-d".as_ref(), self.device.as_os_str()]) {
                Ok(_) => self.wait_detached(),
                Err(e) => eprintln!(
                    "fixtures: {}: detaching {}: {e:#}",
                    self.name,
                    self.device.display()
                ),
            }
        }
        if self.file_created {
            if let Err(e) = std::fs::remove_file(&self.backing) {
                eprintln!(
                    "fixtures: {}: removing {}: {e}",
                    self.name,
                    self.backing.display()
                );
            }
        }
    }
}

/// A mount made by a test with the `mount` program (`mount ARGS... TARGET`; TARGET created as
/// a directory unless it exists, so a file can be a bind target),
/// unmounted on drop (retrying while busy, lazily as a last resort) if it is still the top
/// mount at TARGET. Declare it after the fixtures it depends on, so that it drops first.
#[derive(Debug)]
pub struct TestMount {
    pub target: PathBuf,
    /// The mount id (from mountinfo) this guard owns.
    id: u64,
}

impl TestMount {
    pub fn new(args: &[&str], target: &Path) -> Result<Self> {
        if !target.exists() {
            std::fs::create_dir_all(target)
                .with_context(|| format!("creating {}", target.display()))?;
        }
        let mut argv: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        argv.push(target.as_os_str());
        run_tool("mount", &argv)?;
        let id = read_mountinfo()
            .iter()
            .rev()
            .find(|m| m.mount_point == target)
            .map(|m| m.id)
            .with_context(|| format!("mount {args:?} {}: not in mountinfo", target.display()))?;
        Ok(Self {
            target: target.to_owned(),
            id,
        })
    }

    fn on_top(&self) -> bool {
        read_mountinfo()
            .iter()
            .rev()
            .find(|m| m.mount_point == self.target)
            .is_some_and(|m| m.id == self.id)
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        unmount_patiently(&self.target, "", || self.on_top());
    }
}

/// Runs a tool (found like [`find_tool`]) with stdin from /dev/null; returns its stdout.
pub fn run(tool: &str, args: &[&str]) -> Result<String> {
    let argv: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    run_tool(tool, &argv)
}

/// Runs a tool with stdin from /dev/null; returns its stdout, or an error with its stderr.
fn run_tool(tool: &str, args: &[&std::ffi::OsStr]) -> Result<String> {
    run_tool_env(tool, args, &[])
}

/// Runs `tool` with `args`, `env` added and stdin from /dev/null; returns stdout, or an error
/// with stderr.
pub(crate) fn run_tool_env<S: AsRef<std::ffi::OsStr>>(
    tool: &str,
    args: &[S],
    env: &[(&str, &str)],
) -> Result<String> {
    let path = find_tool(tool).with_context(|| format!("{tool} not found"))?;
    let out = Command::new(&path)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", path.display()))?;
    if !out.status.success() {
        let argv: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
        bail!(
            "{tool} {} failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

struct MountLine {
    id: u64,
    mount_point: PathBuf,
    source: String,
}

/// Mount points and sources of /proc/self/mountinfo, in order; empty when unreadable.
fn read_mountinfo() -> Vec<MountLine> {
    match std::fs::read("/proc/self/mountinfo") {
        Ok(text) => parse_mountinfo(&text),
        Err(e) => {
            eprintln!("fixtures: reading /proc/self/mountinfo: {e}");
            Vec::new()
        }
    }
}

/// The lines of a mountinfo text, as bytes: a mount point may hold any byte but the escaped
/// ones, UTF-8 or not.
fn parse_mountinfo(text: &[u8]) -> Vec<MountLine> {
    let field = |b: &u8| *b == b' ';
    text.split(|b| *b == b'\n')
        .filter_map(|line| {
            let sep = line.windows(3).position(|w| w == b" - ")?;
            let (head, tail) = (&line[..sep], &line[sep + 3..]);
            let mut head = head.split(field);
            let id = std::str::from_utf8(head.next()?).ok()?.parse().ok()?;
            let mount_point = head.nth(3)?;
            let source = tail.split(field).nth(1)?;
            Some(MountLine {
                id,
                mount_point: PathBuf::from(unescape(mount_point)),
                source: unescape(source).to_string_lossy().into_owned(),
            })
        })
        .collect()
}

/// Undoes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` `\`).
fn unescape(b: &[u8]) -> OsString {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = (oct[0] - b'0') as u32 * 64
                    + (oct[1] - b'0') as u32 * 8
                    + (oct[2] - b'0') as u32;
                if v <= 255 {
                    out.push(v as u8);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    OsString::from_vec(out)
}

/// Unmounts `target` as long as `ours()` says the mount there is still the one we made: retries
/// for 2 s while busy, then detaches lazily. Runs in `Drop`, so failures go to stderr, prefixed
/// with `who`.
pub(crate) fn unmount_patiently(target: &Path, who: &str, ours: impl Fn() -> bool) {
    for _ in 0..20 {
        if !ours() {
            return;
        }
        match unmount(target, UnmountFlags::NOFOLLOW) {
            Ok(()) => return,
            Err(Errno::BUSY) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => {
                eprintln!("fixtures: {who}unmounting {}: {e}", target.display());
                return;
            }
        }
    }
    eprintln!(
        "fixtures: {who}{} still busy after 2 s; detaching lazily",
        target.display()
    );
    if let Err(e) = unmount(target, UnmountFlags::NOFOLLOW | UnmountFlags::DETACH) {
        eprintln!("fixtures: {who}lazy unmount of {}: {e}", target.display());
    }
}

/// Mount points at or under `path` (component-wise), from /proc/self/mountinfo.
pub fn mounts_under(path: &Path) -> Vec<PathBuf> {
    read_mountinfo()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(path))
        .collect()
}

/// Loop devices (`/dev/loopN`) whose backing file path starts with `prefix` (string prefix,
/// so `/var/tmp/snaptest-` matches every testkit backing file) — for leak checks.
pub fn loops_backed_by(prefix: &Path) -> Vec<PathBuf> {
    let prefix = prefix.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if !name.starts_with("loop") {
                return None;
            }
            let backing = std::fs::read(e.path().join("loop/backing_file")).ok()?;
            backing
                .starts_with(prefix)
                .then(|| PathBuf::from("/dev").join(name))
        })
        .collect();
    found.sort();
    found
}

/// A mounted test filesystem, whatever made it (loop device here, an LV or a ZFS dataset in
/// the VM tier): the shared provider test bodies take these.
pub trait MountedFs {
    fn mount_point(&self) -> &Path;
    /// Filesystem type as mountinfo shows it (`ext4`, `xfs`, `btrfs`, `zfs`).
    fn fstype(&self) -> &str;
    /// Writes `mount_point/rel`, creating parent directories.
    fn write_file(&self, rel: &str, content: &str) -> Result<()> {
        let p = self.mount_point().join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(&p, content)?;
        Ok(())
    }
}

impl MountedFs for LoopFs {
    fn mount_point(&self) -> &Path {
        &self.mount_point
    }
    fn fstype(&self) -> &str {
        self.kind.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_octal() {
        assert_eq!(
            unescape(br"/a\040b\011c\134d"),
            OsString::from("/a b\tc\\d")
        );
        assert_eq!(unescape(br"/trailing\04"), OsString::from(r"/trailing\04"));
        assert_eq!(unescape(br"\"), OsString::from(r"\"));
        // A mount point that is not UTF-8 comes through byte for byte.
        let line = b"36 25 0:33 / /tmp/new\\012line\\040caf\xe9 rw - tmpfs a\\134b rw\n";
        let m = parse_mountinfo(line);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].id, 36);
        assert_eq!(
            m[0].mount_point.as_os_str().as_encoded_bytes(),
            b"/tmp/new\nline caf\xe9"
        );
        assert_eq!(m[0].source, "a\\b");
    }

    #[test]
    fn unique_names_carry_prefix_and_differ() {
        let a = unique_name("x/y");
        let b = unique_name("x/y");
        assert!(a.starts_with("snaptest-x_y-"));
        assert_ne!(a, b);
    }

    #[test]
    fn scratch_is_removed_on_drop() {
        let s = Scratch::new("scratch").unwrap();
        std::fs::write(s.join("f"), "x").unwrap();
        let p = s.path().to_owned();
        assert!(p.starts_with("/tmp") || p.starts_with(std::env::temp_dir()));
        drop(s);
        assert!(!p.exists());
    }
}
