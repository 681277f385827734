//! `/proc/self/mountinfo`: parsing and lookup; and the same lines rebuilt from statmount(2)
//! for just the mounts of some paths ([`MountTable::for_paths`]).
//!
//! Format (proc(5)): `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS`.
//! Paths are escaped by the kernel: space, tab, newline and backslash appear as `\040`, `\011`,
//! `\012`, `\134`. Any other byte — including bytes that are not UTF-8 — is written raw, so the
//! parser works on bytes and builds paths from them without any lossy conversion.

use crate::sys::statmount::{attr, mask, propagation, sb, StatMount};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub id: u64,
    pub parent_id: u64,
    pub major: u32,
    pub minor: u32,
    /// The directory of the filesystem that this mount shows at its mount point
    /// (`/` for a whole filesystem; a subdirectory for bind mounts and btrfs subvolumes).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,relatime`…).
    pub options: String,
    /// Optional fields such as `shared:1`, `master:2`.
    pub optional: Vec<String>,
    pub fstype: String,
    pub source: String,
    /// Per-superblock options (`rw,subvolid=5,subvol=/`…), as the kernel wrote them: values
    /// keep their escapes (`subvol=/a\040b`), because an unescaped `,` or `=` would break the
    /// option list apart; bytes that are not UTF-8 are escaped the same way (`\351`). Use
    /// [`Mount::super_option_unescaped`] for the real value.
    pub super_options: String,
}

impl Mount {
    /// Value of a per-superblock option (`subvol`, `subvolid`…); `Some("")` for a flag.
    /// The value is as the kernel wrote it (escaped); see [`Mount::super_option_unescaped`].
    pub fn super_option(&self, key: &str) -> Option<&str> {
        find_option(&self.super_options, key)
    }

    /// Value of a per-superblock option with the kernel's octal escapes undone (the kernel
    /// escapes `,`, `=`, space, tab, newline and backslash in option values), as raw bytes in
    /// an `OsString` since a value such as `subvol=` is a path and need not be UTF-8.
    pub fn super_option_unescaped(&self, key: &str) -> Option<OsString> {
        self.super_option(key)
            .map(|v| OsString::from_vec(unescape_bytes(v.as_bytes(), OPTION_UNESCAPES)))
    }

    /// Value of a per-mount option; `Some("")` for a flag.
    pub fn option(&self, key: &str) -> Option<&str> {
        find_option(&self.options, key)
    }

    pub fn is_read_only(&self) -> bool {
        self.option("ro").is_some()
    }

    /// `st_rdev`-style device number of the filesystem.
    pub fn dev(&self) -> (u32, u32) {
        (self.major, self.minor)
    }

    /// The mount exactly as its mountinfo line shows it (`show_mountinfo()` in
    /// fs/proc_namespace.c), from a statmount reply to [`STATMOUNT_MASK`]. `mandlock`: the
    /// superblock has `SB_MANDLOCK` (mountinfo's `mand`, which statmount does not report).
    /// The error says which field the reply lacks.
    pub fn from_statmount(sm: &StatMount, mandlock: bool) -> Result<Mount, String> {
        let missing = STATMOUNT_NEEDED & !sm.supported();
        if missing != 0 {
            return Err(format!(
                "statmount returned no {} (all known to Linux 6.13; before 6.15, which reports \
                 what it supports, an empty field looks the same)",
                mask_names(missing)
            ));
        }
        // Present whenever supported: fs_type and mnt_root are never empty; mnt_point is
        // empty only for a mount outside this process's root, which a path cannot lead to.
        let string = |s: &Option<Vec<u8>>, bit: u64| {
            s.clone()
                .ok_or_else(|| format!("statmount returned no {}", mask_names(bit)))
        };
        let fs_type = string(&sm.fs_type, mask::FS_TYPE)?;
        let root = string(&sm.mnt_root, mask::MNT_ROOT)?;
        let mount_point = string(&sm.mnt_point, mask::MNT_POINT)?;
        // Empty strings leave their bit out (mountinfo shows them empty).
        let empty = Vec::new();
        let subtype = sm.fs_subtype.as_ref().unwrap_or(&empty);
        let source = sm.sb_source.as_ref().unwrap_or(&empty);
        let fs_opts = sm.mnt_opts.as_ref().unwrap_or(&empty);

        let mut fstype = fs_type;
        if !subtype.is_empty() {
            fstype.push(b'.');
            fstype.extend_from_slice(subtype);
        }
        Ok(Mount {
            id: sm.mnt_id_old.into(),
            parent_id: sm.mnt_parent_id_old.into(),
            major: sm.sb_dev_major,
            minor: sm.sb_dev_minor,
            root: PathBuf::from(OsString::from_vec(root)),
            mount_point: PathBuf::from(OsString::from_vec(mount_point)),
            options: mount_options(sm.mnt_attr),
            optional: optional_fields(sm),
            fstype: text(&fstype),
            source: text(source),
            super_options: super_options(sm.sb_flags, mandlock, fs_opts),
        })
    }
}

/// What [`MountTable::for_paths`] asks statmount for.
pub const STATMOUNT_MASK: u64 = STATMOUNT_NEEDED | mask::SUPPORTED_MASK;

/// The statmount fields a mountinfo line is made of.
const STATMOUNT_NEEDED: u64 = mask::SB_BASIC
    | mask::MNT_BASIC
    | mask::PROPAGATE_FROM
    | mask::MNT_ROOT
    | mask::MNT_POINT
    | mask::FS_TYPE
    | mask::MNT_OPTS
    | mask::FS_SUBTYPE
    | mask::SB_SOURCE;

fn mask_names(bits: u64) -> String {
    [
        (mask::SB_BASIC, "sb_basic"),
        (mask::MNT_BASIC, "mnt_basic"),
        (mask::PROPAGATE_FROM, "propagate_from"),
        (mask::MNT_ROOT, "mnt_root"),
        (mask::MNT_POINT, "mnt_point"),
        (mask::FS_TYPE, "fs_type"),
        (mask::MNT_OPTS, "mnt_opts"),
        (mask::FS_SUBTYPE, "fs_subtype"),
        (mask::SB_SOURCE, "sb_source"),
    ]
    .iter()
    .filter(|(bit, _)| bits & bit != 0)
    .map(|(_, name)| *name)
    .collect::<Vec<_>>()
    .join(", ")
}

/// Per-mount options as `show_mountinfo()` writes them: `ro`/`rw`, then `show_mnt_opts()`'s
/// flags in its order. Strict atime shows as no atime flag at all.
fn mount_options(a: u64) -> String {
    let atime = a & attr::ATIME_MASK;
    let mut s = String::from(if a & attr::RDONLY != 0 { "ro" } else { "rw" });
    for (on, flag) in [
        (a & attr::NOSUID != 0, ",nosuid"),
        (a & attr::NODEV != 0, ",nodev"),
        (a & attr::NOEXEC != 0, ",noexec"),
        (atime == attr::NOATIME, ",noatime"),
        (a & attr::NODIRATIME != 0, ",nodiratime"),
        (atime == attr::RELATIME, ",relatime"),
        (a & attr::NOSYMFOLLOW != 0, ",nosymfollow"),
        (a & attr::IDMAP != 0, ",idmapped"),
    ] {
        if on {
            s.push_str(flag);
        }
    }
    s
}

/// The tagged fields: `shared:N`, `master:N`, `propagate_from:N` (only when it differs from
/// the master), `unbindable`.
fn optional_fields(sm: &StatMount) -> Vec<String> {
    let p = sm.mnt_propagation;
    let mut v = Vec::new();
    if p & propagation::SHARED != 0 {
        v.push(format!("shared:{}", sm.mnt_peer_group));
    }
    if p & propagation::SLAVE != 0 {
        v.push(format!("master:{}", sm.mnt_master));
        if sm.propagate_from != 0 && sm.propagate_from != sm.mnt_master {
            v.push(format!("propagate_from:{}", sm.propagate_from));
        }
    }
    if p & propagation::UNBINDABLE != 0 {
        v.push("unbindable".into());
    }
    v
}

/// Per-superblock options as `show_mountinfo()` writes them: `ro`/`rw`, `show_sb_opts()`'s
/// flags, then the security and filesystem options (statmount's `mnt_opts`, escaped as in
/// mountinfo, without the leading comma).
fn super_options(sb_flags: u32, mandlock: bool, fs_opts: &[u8]) -> String {
    let mut s = String::from(if sb_flags & sb::RDONLY != 0 {
        "ro"
    } else {
        "rw"
    });
    for (on, flag) in [
        (sb_flags & sb::SYNCHRONOUS != 0, ",sync"),
        (sb_flags & sb::DIRSYNC != 0, ",dirsync"),
        (mandlock, ",mand"),
        (sb_flags & sb::LAZYTIME != 0, ",lazytime"),
    ] {
        if on {
            s.push_str(flag);
        }
    }
    if !fs_opts.is_empty() {
        s.push(',');
        s.push_str(&option_text(fs_opts));
    }
    s
}

fn find_option<'a>(options: &'a str, key: &str) -> Option<&'a str> {
    options.split(',').find_map(|o| match o.split_once('=') {
        Some((k, v)) if k == key => Some(v),
        None if o == key => Some(""),
        _ => None,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum MountInfoError {
    #[error("reading {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("mountinfo line {line}: {reason}: {text:?}")]
    Parse {
        line: usize,
        reason: &'static str,
        text: String,
    },
}

/// The whole mount table, in mountinfo order (parents before children, later mounts after
/// earlier ones at the same place).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountTable {
    pub mounts: Vec<Mount>,
}

/// How [`MountTable::for_paths_via`] found the mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// statmount(2), one call per mount.
    Statmount,
    /// The whole of `/proc/self/mountinfo`, because statmount could not serve (why).
    Mountinfo { reason: String },
}

impl std::fmt::Display for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lookup::Statmount => f.write_str("statmount"),
            Lookup::Mountinfo { reason } => write!(f, "mountinfo: {reason}"),
        }
    }
}

impl MountTable {
    /// Reads `/proc/self/mountinfo`.
    pub fn read() -> Result<Self, MountInfoError> {
        Self::read_from(Path::new("/proc/self/mountinfo"))
    }

    /// The mounts that hold `paths` — for each, the mount statx names, as
    /// [`crate::sys::mount_id`] does — once each, in mountinfo order, with every field as
    /// mountinfo shows it; looked up with one statmount(2) per mount, so the cost does not
    /// grow with the machine's mount table. Where statmount cannot give every field (before
    /// Linux 6.13, or anything failing), the whole table: a superset, which lookups by id do
    /// not mind.
    pub fn for_paths(paths: &[PathBuf]) -> Result<Self, MountInfoError> {
        Self::for_paths_via(paths).map(|(table, _)| table)
    }

    /// [`MountTable::for_paths`], and which way it went.
    pub fn for_paths_via(paths: &[PathBuf]) -> Result<(Self, Lookup), MountInfoError> {
        match Self::statmount_paths(paths) {
            Ok(table) => Ok((table, Lookup::Statmount)),
            Err(reason) => {
                log::debug!("mount lookup falls back to the whole mount table: {reason}");
                Ok((Self::read()?, Lookup::Mountinfo { reason }))
            }
        }
    }

    fn statmount_paths(paths: &[PathBuf]) -> Result<Self, String> {
        // Unique id → (SB_MANDLOCK, the first path on that mount, for messages).
        let mut found: Vec<(u64, bool, &Path)> = Vec::new();
        for path in paths {
            let pm = crate::sys::path_mount(path).map_err(|e| format!("statx of {path:?}: {e}"))?;
            if !found.iter().any(|(id, ..)| *id == pm.unique_id) {
                found.push((pm.unique_id, pm.mandlock, path));
            }
        }
        // mountinfo lists a namespace's mounts in unique-id order (Linux 6.8, the same
        // release as unique ids): parents before children, as the parser's tables.
        found.sort_by_key(|(id, ..)| *id);
        let mut mounts = Vec::with_capacity(found.len());
        for (id, mandlock, path) in found {
            let sm = crate::sys::statmount(id, STATMOUNT_MASK)
                .map_err(|e| format!("statmount of mount {id} (of {path:?}): {e}"))?;
            mounts.push(
                Mount::from_statmount(&sm, mandlock)
                    .map_err(|e| format!("mount {id} (of {path:?}): {e}"))?,
            );
        }
        Ok(Self { mounts })
    }

    pub fn read_from(path: &Path) -> Result<Self, MountInfoError> {
        let bytes = std::fs::read(path).map_err(|source| MountInfoError::Read {
            path: path.to_owned(),
            error: source,
        })?;
        Self::parse_bytes(&bytes)
    }

    /// Parses mountinfo text. Prefer [`MountTable::parse_bytes`] for what the kernel wrote:
    /// mount points need not be UTF-8.
    pub fn parse(text: &str) -> Result<Self, MountInfoError> {
        Self::parse_bytes(text.as_bytes())
    }

    /// Parses mountinfo as the kernel writes it (raw bytes, one mount per `\n`-terminated line;
    /// blank lines are skipped). Line numbers in errors count from 1.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, MountInfoError> {
        let mut mounts = Vec::new();
        // Split on `\n` only: a raw `\r` (or any byte but the four escaped ones) may be part of
        // a mount point.
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            mounts.push(parse_line(line).map_err(|reason| MountInfoError::Parse {
                line: i + 1,
                reason,
                text: String::from_utf8_lossy(line).into_owned(),
            })?);
        }
        Ok(Self { mounts })
    }

    pub fn by_id(&self, id: u64) -> Option<&Mount> {
        self.mounts.iter().find(|m| m.id == id)
    }

    /// The mount visible at exactly `path` (the last one mounted there), if any.
    pub fn mounted_at(&self, path: &Path) -> Option<&Mount> {
        self.mounts.iter().rev().find(|m| m.mount_point == path)
    }

    /// Mounts whose mount point is `path` or lies below it.
    pub fn at_or_below<'a>(&'a self, path: &'a Path) -> impl Iterator<Item = &'a Mount> + 'a {
        self.mounts
            .iter()
            .filter(move |m| m.mount_point.starts_with(path))
    }
}

fn parse_line(line: &[u8]) -> Result<Mount, &'static str> {
    // Fields are separated by exactly one space; the kernel escapes spaces inside paths, so no
    // field holds one. (An empty source — `mount -t tmpfs "" /x` — shows as two spaces in a row,
    // which is why this is not a split on runs of whitespace.)
    let mut f = line.split(|&b| b == b' ');
    let id = f.next().and_then(number).ok_or("bad mount id")?;
    let parent_id = f.next().and_then(number).ok_or("bad parent id")?;
    let (major, minor) = f
        .next()
        .and_then(|s| {
            let colon = s.iter().position(|&b| b == b':')?;
            Some((number(&s[..colon])?, number(&s[colon + 1..])?))
        })
        .ok_or("bad major:minor")?;
    let root = path_field(f.next()).ok_or("missing root")?;
    let mount_point = path_field(f.next()).ok_or("missing mount point")?;
    let options = text(
        f.next()
            .filter(|s| !s.is_empty())
            .ok_or("missing mount options")?,
    );
    // Zero or more optional fields, up to the field that is exactly `-`. Because spaces in
    // paths are escaped, this is the same as splitting the line at the first " - ": a mount
    // point such as "/a - b" appears as "/a\040-\040b", one field that is not `-`.
    let mut optional = Vec::new();
    loop {
        match f.next() {
            None => return Err("no ' - ' separator before the filesystem type"),
            Some(b"-") => break,
            Some(b"") => {}
            Some(field) => optional.push(text(field)),
        }
    }
    let fstype = f.next().filter(|s| !s.is_empty()).ok_or("missing fstype")?;
    let source = f.next().ok_or("missing source")?;
    // Whatever remains is the super options; rejoin so that a stray space in a filesystem's
    // own option output is not silently cut off.
    let super_options = f.collect::<Vec<_>>().join(&b' ');
    Ok(Mount {
        id,
        parent_id,
        major,
        minor,
        root,
        mount_point,
        options,
        optional,
        fstype: text(&unescape_bytes(fstype, PATH_ESCAPES)),
        source: text(&unescape_bytes(source, PATH_ESCAPES)),
        super_options: option_text(&super_options),
    })
}

/// A decimal number made of ASCII digits only (no sign, no spaces).
fn number<T: std::str::FromStr>(s: &[u8]) -> Option<T> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

fn path_field(s: Option<&[u8]>) -> Option<PathBuf> {
    let s = s.filter(|s| !s.is_empty())?;
    Some(PathBuf::from(OsString::from_vec(unescape_bytes(
        s,
        PATH_ESCAPES,
    ))))
}

fn text(s: &[u8]) -> String {
    String::from_utf8_lossy(s).into_owned()
}

/// What the kernel escapes in paths, sources and fstypes (`mangle()` in fs/proc_namespace.c).
const PATH_ESCAPES: &[u8] = b" \t\n\\";
/// What it escapes in option values (`seq_show_option()`): also `,` and `=`.
const OPTION_ESCAPES: &[u8] = b" \t\n\\,=";
/// What [`Mount::super_option_unescaped`] undoes: [`OPTION_ESCAPES`], and the bytes that are
/// not UTF-8 (all at or above 0x80), which [`option_text`] escapes.
const OPTION_UNESCAPES: &[u8] = &{
    let mut set = [0u8; OPTION_ESCAPES.len() + 128];
    let mut i = 0;
    while i < set.len() {
        set[i] = if i < OPTION_ESCAPES.len() {
            OPTION_ESCAPES[i]
        } else {
            (0x80 + i - OPTION_ESCAPES.len()) as u8
        };
        i += 1;
    }
    set
};

/// Option text without loss: UTF-8 as it is, each byte that is not UTF-8 as `\ooo` (the
/// kernel escapes a backslash in an option value, so such an escape is never its own text).
/// A btrfs `subvol=` is a path, and its bytes must come back whole from
/// [`Mount::super_option_unescaped`].
fn option_text(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for chunk in s.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\{b:03o}"));
        }
    }
    out
}

/// Undoes the kernel's three-digit octal escapes (`\040` → space) for the bytes in `escaped`;
/// any other backslash sequence is kept verbatim, since the kernel never writes one.
fn unescape_bytes(s: &[u8], escaped: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' {
            if let Some(v) = s.get(i + 1..i + 4).and_then(octal) {
                if escaped.contains(&v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// Three octal digits → a byte value, if they fit in one.
fn octal(d: &[u8]) -> Option<u8> {
    d.iter()
        .try_fold(0u16, |acc, &c| {
            (b'0'..=b'7')
                .contains(&c)
                .then(|| acc * 8 + u16::from(c - b'0'))
        })
        .and_then(|v| u8::try_from(v).ok())
}

#[cfg(test)]
#[path = "mountinfo_proptests.rs"]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    /// A Debian 12 host with LVM, recorded in the kernel's format.
    const DEBIAN: &str = "\
21 1 254:1 / / rw,relatime shared:1 - ext4 /dev/mapper/vg0-root rw,errors=remount-ro
22 21 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
23 21 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
24 21 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=8119420k,nr_inodes=2029855,mode=755,inode64
25 24 0:23 / /dev/pts rw,nosuid,noexec,relatime shared:3 - devpts devpts rw,gid=5,mode=620,ptmxmode=000
26 21 0:24 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,size=1631500k,mode=755,inode64
27 22 0:6 / /sys/kernel/security rw,nosuid,nodev,noexec,relatime shared:8 - securityfs securityfs rw
28 24 0:25 / /dev/shm rw,nosuid,nodev shared:4 - tmpfs tmpfs rw,inode64
29 26 0:26 / /run/lock rw,nosuid,nodev,noexec,relatime shared:6 - tmpfs tmpfs rw,size=5120k,inode64
30 22 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
31 22 0:28 / /sys/fs/pstore rw,nosuid,nodev,noexec,relatime shared:10 - pstore pstore rw
32 23 0:31 / /proc/sys/fs/binfmt_misc rw,relatime shared:13 - autofs systemd-1 rw,fd=30,pgrp=1,timeout=0,minproto=5,maxproto=5,direct,pipe_ino=15036
45 21 8:1 / /boot rw,relatime shared:29 - ext2 /dev/sda1 rw
47 45 8:2 / /boot/efi rw,relatime shared:31 - vfat /dev/sda2 rw,fmask=0077,dmask=0077,codepage=437,iocharset=ascii,shortname=mixed,utf8,errors=remount-ro
49 21 254:2 / /home rw,relatime shared:33 - ext4 /dev/mapper/vg0-home rw
51 21 254:3 / /var rw,relatime shared:35 - xfs /dev/mapper/vg0-var rw,attr2,inode64,logbufs=8,logbsize=32k,noquota
53 21 254:4 / /srv ro,nosuid,nodev,relatime shared:37 - ext4 /dev/mapper/vg0-srv ro
612 26 0:52 / /run/user/1000 rw,nosuid,nodev,relatime shared:301 - tmpfs tmpfs rw,size=1631496k,nr_inodes=407874,mode=700,uid=1000,gid=1000,inode64
";

    fn table(text: &str) -> MountTable {
        MountTable::parse(text).expect("sample parses")
    }

    fn at<'a>(t: &'a MountTable, path: &str) -> &'a Mount {
        t.mounted_at(Path::new(path))
            .unwrap_or_else(|| panic!("nothing mounted at {path}"))
    }

    #[test]
    fn debian_host_table() {
        let t = table(DEBIAN);
        assert_eq!(t.mounts.len(), 18);
        let root = at(&t, "/");
        assert_eq!(
            *root,
            Mount {
                id: 21,
                parent_id: 1,
                major: 254,
                minor: 1,
                root: "/".into(),
                mount_point: "/".into(),
                options: "rw,relatime".into(),
                optional: vec!["shared:1".into()],
                fstype: "ext4".into(),
                source: "/dev/mapper/vg0-root".into(),
                super_options: "rw,errors=remount-ro".into(),
            }
        );
        let efi = at(&t, "/boot/efi");
        assert_eq!((efi.id, efi.parent_id), (47, 45));
        assert_eq!(efi.fstype, "vfat");
        assert_eq!(efi.dev(), (8, 2));
        assert_eq!(t.by_id(45).unwrap().mount_point, Path::new("/boot"));
        assert_eq!(at(&t, "/var").fstype, "xfs");
        assert!(at(&t, "/srv").is_read_only());
        assert!(!at(&t, "/home").is_read_only());
        assert!(t.by_id(9999).is_none());
        assert!(t.mounted_at(Path::new("/home/user")).is_none());
        let boot: Vec<_> = t
            .at_or_below(Path::new("/boot"))
            .map(|m| m.mount_point.clone())
            .collect();
        assert_eq!(boot, [PathBuf::from("/boot"), PathBuf::from("/boot/efi")]);
        // Component-wise: /run/user/1000 is below /run, /runx would not be.
        assert_eq!(t.at_or_below(Path::new("/run")).count(), 3);
        assert_eq!(t.at_or_below(Path::new("/ru")).count(), 0);
    }

    #[test]
    fn parse_str_and_bytes_agree() {
        assert_eq!(
            MountTable::parse(DEBIAN).unwrap(),
            MountTable::parse_bytes(DEBIAN.as_bytes()).unwrap()
        );
    }

    #[test]
    fn empty_input_and_blank_lines() {
        assert!(MountTable::parse("").unwrap().mounts.is_empty());
        let t = table("\n21 1 8:1 / / rw - ext4 /dev/sda1 rw\n\n   \n");
        assert_eq!(t.mounts.len(), 1);
        // No trailing newline on the last line.
        let t = table("21 1 8:1 / / rw - ext4 /dev/sda1 rw");
        assert_eq!(t.mounts[0].super_options, "rw");
    }

    #[test]
    fn escapes_in_paths_and_source() {
        let t = table(
            r"21 1 8:1 / / rw - ext4 /dev/sda1 rw
60 21 8:1 /data/with\040space /srv/with\040space rw - ext4 /dev/sda1 rw
61 21 8:1 / /srv/tab\011here rw - ext4 /dev/sda1 rw
62 21 8:1 / /srv/new\012line rw - ext4 /dev/sda1 rw
63 21 8:1 / /srv/back\134slash rw - ext4 /dev/sda1 rw
64 21 8:1 / /srv/all\040\011\012\134\134 rw - fuse.sshfs user@host:/my\040files rw
",
        );
        let m = &t.mounts;
        assert_eq!(m[1].mount_point, Path::new("/srv/with space"));
        assert_eq!(m[1].root, Path::new("/data/with space"));
        assert_eq!(m[2].mount_point, Path::new("/srv/tab\there"));
        assert_eq!(m[3].mount_point, Path::new("/srv/new\nline"));
        assert_eq!(m[4].mount_point, Path::new("/srv/back\\slash"));
        assert_eq!(m[5].mount_point, Path::new("/srv/all \t\n\\\\"));
        assert_eq!(m[5].source, "user@host:/my files");
        assert!(t.mounted_at(Path::new("/srv/with space")).is_some());
    }

    #[test]
    fn unknown_escapes_are_kept_verbatim() {
        let t = table(
            r"70 1 8:1 / /a\101 rw - ext4 /dev/sda1 rw
71 1 8:1 / /b\999 rw - ext4 /dev/sda1 rw
72 1 8:1 / /c\04 rw - ext4 /dev/sda1 rw
73 1 8:1 / /d\ rw - ext4 /dev/sda1 rw
74 1 8:1 / /e\777x rw - ext4 /dev/sda1 rw
75 1 8:1 / /f\0400 rw - ext4 /dev/sda1 rw
",
        );
        let points: Vec<_> = t.mounts.iter().map(|m| m.mount_point.clone()).collect();
        assert_eq!(
            points,
            [r"/a\101", r"/b\999", r"/c\04", r"/d\", r"/e\777x", "/f 0",].map(PathBuf::from)
        );
    }

    #[test]
    fn non_utf8_mount_point_keeps_its_bytes() {
        let mut text = b"21 1 8:1 / / rw - ext4 /dev/sda1 rw\n".to_vec();
        text.extend_from_slice(
            b"80 21 8:1 /caf\xe9 /srv/caf\xe9\\040\xff rw - ext4 /dev/sda1 rw\n",
        );
        let t = MountTable::parse_bytes(&text).unwrap();
        assert_eq!(t.mounts[1].root.as_os_str().as_bytes(), b"/caf\xe9");
        assert_eq!(
            t.mounts[1].mount_point.as_os_str().as_bytes(),
            b"/srv/caf\xe9 \xff"
        );

        // Through a file, as `read` does.
        let dir = tempfile::Builder::new()
            .prefix("snaptest-")
            .tempdir()
            .unwrap();
        let file = dir.path().join("mountinfo");
        std::fs::write(&file, &text).unwrap();
        assert_eq!(MountTable::read_from(&file).unwrap(), t);
    }

    #[test]
    fn raw_carriage_return_is_part_of_the_path() {
        // The kernel escapes only space, tab, newline and backslash.
        let t = table("21 1 8:1 / /srv/cr\r rw - ext4 /dev/sda1 rw\r\n");
        assert_eq!(t.mounts[0].mount_point, Path::new("/srv/cr\r"));
        assert_eq!(t.mounts[0].super_options, "rw\r");
    }

    #[test]
    fn read_error_names_the_file() {
        let err = MountTable::read_from(Path::new("/nonexistent/snaptest-mountinfo")).unwrap_err();
        assert!(matches!(err, MountInfoError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/snaptest-mountinfo"));
    }

    #[test]
    fn live_table_has_a_root() {
        let t = MountTable::read().expect("/proc/self/mountinfo");
        assert!(t.mounted_at(Path::new("/")).is_some());
    }

    #[test]
    fn optional_fields_none_one_and_several() {
        let t = table(
            "\
21 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
22 21 8:2 / /a rw,relatime shared:1 - ext4 /dev/sda2 rw
23 21 8:3 / /b rw,relatime shared:1 master:2 propagate_from:3 unbindable - ext4 /dev/sda3 rw
24 21 8:4 / /c rw,relatime master:7 - ext4 /dev/sda4 rw
",
        );
        assert!(t.mounts[0].optional.is_empty());
        assert_eq!(t.mounts[1].optional, ["shared:1"]);
        assert_eq!(
            t.mounts[2].optional,
            ["shared:1", "master:2", "propagate_from:3", "unbindable"]
        );
        assert_eq!(t.mounts[3].optional, ["master:7"]);
        for m in &t.mounts {
            assert_eq!(m.fstype, "ext4");
            assert_eq!(m.options, "rw,relatime");
            assert_eq!(m.super_options, "rw");
        }
    }

    #[test]
    fn dashes_inside_paths_are_not_the_separator() {
        // The mount point "/srv/a - b": its spaces are escaped, so the raw line's first " - "
        // is still the real separator (the reason splitting there is correct).
        let line = r"90 21 8:1 /x\040-\040y /srv/a\040-\040b rw shared:4 - ext4 /dev/sda1 rw";
        let first = line.find(" - ").unwrap();
        assert_eq!(&line[first - 8..first], "shared:4");
        let t = table(line);
        let m = &t.mounts[0];
        assert_eq!(m.root, Path::new("/x - y"));
        assert_eq!(m.mount_point, Path::new("/srv/a - b"));
        assert_eq!(m.optional, ["shared:4"]);
        assert_eq!(
            (m.fstype.as_str(), m.source.as_str()),
            ("ext4", "/dev/sda1")
        );

        // Dashes that are whole path components, and a " - " among the super options.
        let t = table("91 21 8:1 /- /srv/- rw - ext4 /dev/sda1 rw,x=a - b");
        let m = &t.mounts[0];
        assert_eq!(m.root, Path::new("/-"));
        assert_eq!(m.mount_point, Path::new("/srv/-"));
        assert!(m.optional.is_empty());
        assert_eq!(m.super_options, "rw,x=a - b");
    }

    #[test]
    fn empty_source() {
        // `mount -t tmpfs "" /x` shows an empty source: two spaces in a row.
        let t = table("92 21 0:60 / /x rw,relatime - tmpfs  rw,size=1024k");
        let m = &t.mounts[0];
        assert_eq!(m.source, "");
        assert_eq!(m.super_options, "rw,size=1024k");
    }

    #[test]
    fn bind_mount_of_a_subdirectory() {
        let t = table(
            "\
21 1 254:1 / / rw,relatime shared:1 - ext4 /dev/mapper/vg0-root rw
49 21 254:2 / /data rw,relatime shared:33 - ext4 /dev/mapper/vg0-data rw
70 21 254:2 /sub /srv/x rw,relatime shared:33 - ext4 /dev/mapper/vg0-data rw
",
        );
        let x = at(&t, "/srv/x");
        assert_eq!(x.root, Path::new("/sub"));
        assert_eq!(x.dev(), at(&t, "/data").dev());
        assert_ne!(x.id, at(&t, "/data").id);
    }

    #[test]
    fn btrfs_subvolume_mounts() {
        let t = table(
            r"21 1 0:31 /@ / rw,noatime shared:1 - btrfs /dev/nvme0n1p2 rw,ssd,discard=async,space_cache=v2,subvolid=257,subvol=/@
40 21 0:31 /@home /home rw,noatime shared:30 - btrfs /dev/nvme0n1p2 rw,ssd,discard=async,space_cache=v2,subvolid=256,subvol=/@home
41 21 0:31 /@odd\040name /srv/odd rw,noatime shared:31 - btrfs /dev/nvme0n1p2 rw,subvolid=300,subvol=/@odd\040name\054x
",
        );
        let home = at(&t, "/home");
        assert_eq!(home.fstype, "btrfs");
        assert_eq!(home.root, Path::new("/@home"));
        assert_eq!(home.super_option("subvolid"), Some("256"));
        assert_eq!(home.super_option("subvol"), Some("/@home"));
        assert_eq!(home.super_option("ssd"), Some(""));
        assert_eq!(home.super_option("discard"), Some("async"));
        assert_eq!(home.super_option("subvolume"), None);
        // Same filesystem, different subvolume: same dev, different root.
        assert_eq!(home.dev(), at(&t, "/").dev());
        assert_eq!(at(&t, "/").super_option("subvol"), Some("/@"));
        let odd = at(&t, "/srv/odd");
        assert_eq!(odd.root, Path::new("/@odd name"));
        assert_eq!(odd.super_option("subvol"), Some(r"/@odd\040name\054x"));
        assert_eq!(
            odd.super_option_unescaped("subvol"),
            Some(OsString::from("/@odd name,x"))
        );
        assert_eq!(odd.super_option_unescaped("nope"), None);
    }

    #[test]
    fn same_filesystem_mounted_twice() {
        let t = table(
            "\
21 1 254:1 / / rw,relatime shared:1 - ext4 /dev/mapper/vg0-root rw
49 21 254:2 / /data rw,relatime shared:33 - ext4 /dev/mapper/vg0-data rw
50 21 254:2 / /mnt/data rw,relatime shared:33 - ext4 /dev/mapper/vg0-data rw
",
        );
        let a = at(&t, "/data");
        let b = at(&t, "/mnt/data");
        assert_eq!(a.dev(), (254, 2));
        assert_eq!(a.dev(), b.dev());
        assert_eq!(a.root, b.root);
        assert_ne!(a.id, b.id);
        assert_eq!(t.by_id(50).unwrap().mount_point, Path::new("/mnt/data"));
    }

    #[test]
    fn overmounted_mount_point_shows_the_later_mount() {
        let t = table(
            "\
21 1 254:1 / / rw,relatime shared:1 - ext4 /dev/mapper/vg0-root rw
60 21 0:40 / /srv rw,relatime - tmpfs first rw
61 21 0:41 / /srv rw,relatime - tmpfs second rw
62 61 0:42 / /srv/inner rw,relatime - tmpfs third rw
",
        );
        let srv = at(&t, "/srv");
        assert_eq!((srv.id, srv.source.as_str()), (61, "second"));
        assert_eq!(t.by_id(60).unwrap().source, "first");
        assert_eq!(t.at_or_below(Path::new("/srv")).count(), 3);
    }

    #[test]
    fn option_lookups() {
        let t = table(DEBIAN);
        let pts = at(&t, "/dev/pts");
        assert_eq!(pts.option("nosuid"), Some(""));
        assert_eq!(pts.option("relatime"), Some(""));
        assert_eq!(pts.option("nodev"), None);
        assert_eq!(pts.option("rel"), None);
        // `mode` must not match `ptmxmode`.
        assert_eq!(pts.super_option("mode"), Some("620"));
        assert_eq!(pts.super_option("ptmxmode"), Some("000"));
        assert_eq!(pts.super_option("gid"), Some("5"));
        assert_eq!(pts.super_option("rw"), Some(""));
        assert_eq!(pts.super_option("uid"), None);
        let root = at(&t, "/");
        assert_eq!(root.super_option("errors"), Some("remount-ro"));
        assert_eq!(root.option("ro"), None);
        assert_eq!(at(&t, "/srv").option("ro"), Some(""));
    }

    /// A statmount reply for a btrfs subvolume mount, as the kernel would give it for
    /// `41 21 0:31 /@odd\040name /srv/odd rw,noatime shared:31 - btrfs /dev/nvme0n1p2 rw,...`.
    fn reply() -> StatMount {
        StatMount {
            mask: STATMOUNT_MASK,
            supported_mask: Some(0x7fff),
            sb_dev_major: 0,
            sb_dev_minor: 31,
            sb_flags: 0,
            mnt_id: (1 << 32) + 41,
            mnt_parent_id: (1 << 32) + 21,
            mnt_id_old: 41,
            mnt_parent_id_old: 21,
            mnt_attr: attr::NOATIME,
            mnt_propagation: propagation::SHARED,
            mnt_peer_group: 31,
            fs_type: Some(b"btrfs".to_vec()),
            mnt_root: Some(b"/@odd name".to_vec()),
            mnt_point: Some(b"/srv/odd".to_vec()),
            mnt_opts: Some(br"ssd,subvolid=300,subvol=/@odd\040name".to_vec()),
            fs_subtype: None,
            sb_source: Some(b"/dev/nvme0n1p2".to_vec()),
            ..StatMount::default()
        }
    }

    #[test]
    fn statmount_reply_becomes_the_mountinfo_line() {
        let line = r"41 21 0:31 /@odd\040name /srv/odd rw,noatime shared:31 - btrfs /dev/nvme0n1p2 rw,ssd,subvolid=300,subvol=/@odd\040name";
        let parsed = table(line).mounts.remove(0);
        assert_eq!(Mount::from_statmount(&reply(), false), Ok(parsed));
    }

    #[test]
    fn mount_flags_in_show_mnt_opts_order() {
        let opts = mount_options;
        assert_eq!(opts(attr::RELATIME), "rw,relatime");
        assert_eq!(opts(attr::STRICTATIME), "rw");
        assert_eq!(
            opts(attr::RDONLY | attr::NOSUID | attr::NODEV | attr::NOEXEC | attr::NOATIME),
            "ro,nosuid,nodev,noexec,noatime"
        );
        // nodiratime sits between noatime and relatime.
        assert_eq!(
            opts(attr::NODIRATIME | attr::NOATIME),
            "rw,noatime,nodiratime"
        );
        assert_eq!(opts(attr::NODIRATIME), "rw,nodiratime,relatime");
        assert_eq!(
            opts(attr::NOSYMFOLLOW | attr::IDMAP | attr::STRICTATIME),
            "rw,nosymfollow,idmapped"
        );
    }

    #[test]
    fn superblock_flags_then_filesystem_options() {
        assert_eq!(super_options(0, false, b""), "rw");
        assert_eq!(
            super_options(sb::RDONLY, false, b"errors=remount-ro"),
            "ro,errors=remount-ro"
        );
        assert_eq!(
            super_options(
                sb::SYNCHRONOUS | sb::DIRSYNC | sb::LAZYTIME,
                true,
                b"size=1024k,inode64"
            ),
            "rw,sync,dirsync,mand,lazytime,size=1024k,inode64"
        );
    }

    #[test]
    fn propagation_fields() {
        let with = |p, peer, master, from| {
            optional_fields(&StatMount {
                mnt_propagation: p,
                mnt_peer_group: peer,
                mnt_master: master,
                propagate_from: from,
                ..StatMount::default()
            })
        };
        assert!(with(propagation::PRIVATE, 7, 0, 0).is_empty());
        assert_eq!(with(propagation::SHARED, 7, 0, 0), ["shared:7"]);
        assert_eq!(with(propagation::SLAVE, 0, 3, 3), ["master:3"]);
        assert_eq!(
            with(
                propagation::SHARED | propagation::SLAVE | propagation::UNBINDABLE,
                9,
                3,
                5
            ),
            ["shared:9", "master:3", "propagate_from:5", "unbindable"]
        );
    }

    #[test]
    fn subtype_and_empty_strings() {
        let mut sm = reply();
        sm.fs_type = Some(b"fuse".to_vec());
        sm.fs_subtype = Some(b"sshfs".to_vec());
        sm.sb_source = None; // empty: its bit is left out
        sm.mnt_opts = None;
        let m = Mount::from_statmount(&sm, false).unwrap();
        assert_eq!(m.fstype, "fuse.sshfs");
        assert_eq!(m.source, "");
        assert_eq!(m.super_options, "rw");
    }

    #[test]
    fn an_older_kernel_reply_is_refused_with_the_missing_fields() {
        // 6.8–6.12: no sb_source, no fs_subtype, and nothing saying what is supported.
        let mut sm = reply();
        sm.supported_mask = None;
        sm.mask &= !(mask::SB_SOURCE | mask::FS_SUBTYPE | mask::SUPPORTED_MASK);
        let err = Mount::from_statmount(&sm, false).unwrap_err();
        assert!(err.contains("fs_subtype, sb_source"), "{err}");
        // With supported_mask, an absent mount point is a real absence.
        let mut sm = reply();
        sm.mnt_point = None;
        sm.mask &= !mask::MNT_POINT;
        assert!(Mount::from_statmount(&sm, false)
            .unwrap_err()
            .contains("mnt_point"));
    }

    #[test]
    fn a_path_statx_cannot_reach_falls_back_to_the_whole_table() {
        let missing = PathBuf::from("/nonexistent/snaptest-for-paths");
        let (t, lookup) = MountTable::for_paths_via(&[missing]).unwrap();
        match lookup {
            Lookup::Mountinfo { reason } => {
                assert!(reason.contains("snaptest-for-paths"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(t.mounted_at(Path::new("/")).is_some());
    }

    #[test]
    fn for_paths_of_the_root() {
        // Unprivileged: statmount needs no capability for a mount the caller can reach.
        let (t, lookup) = MountTable::for_paths_via(&[PathBuf::from("/")]).unwrap();
        let root = t
            .by_id(crate::sys::mount_id(Path::new("/")).unwrap())
            .unwrap();
        assert_eq!(root.mount_point, Path::new("/"));
        if lookup == Lookup::Statmount {
            assert_eq!(t.mounts.len(), 1);
            let full = MountTable::read().unwrap();
            assert_eq!(Some(root), full.by_id(root.id));
        }
    }

    #[test]
    fn malformed_lines_report_their_line_number() {
        let good = "21 1 8:1 / / rw - ext4 /dev/sda1 rw";
        let cases = [
            ("22 21 8:1 / /a rw ext4 /dev/sda1 rw", "separator"),
            ("22 21 8:1 / /a rw shared:1", "separator"),
            ("x 21 8:1 / /a rw - ext4 /dev/sda1 rw", "mount id"),
            ("+22 21 8:1 / /a rw - ext4 /dev/sda1 rw", "mount id"),
            ("22 -1 8:1 / /a rw - ext4 /dev/sda1 rw", "parent id"),
            ("22 21 8-1 / /a rw - ext4 /dev/sda1 rw", "major:minor"),
            ("22 21 8: / /a rw - ext4 /dev/sda1 rw", "major:minor"),
            ("22 21 8:1 / /a rw -", "fstype"),
            ("22 21 8:1 / /a rw -  /dev/sda1 rw", "fstype"),
            ("22 21 8:1 / /a rw - ext4", "source"),
            ("22 21 8:1", "root"),
            ("22 21 8:1 /", "mount point"),
            ("22 21 8:1 / /a", "mount options"),
            ("22  21 8:1 / /a rw - ext4 /dev/sda1 rw", "parent id"),
        ];
        for (bad, reason_part) in cases {
            // Line 4: a good line, a blank line (counted), a good line, then the bad one.
            let text = format!("{good}\n\n{good}\n{bad}\n{good}\n");
            match MountTable::parse(&text) {
                Err(MountInfoError::Parse { line, reason, text }) => {
                    assert_eq!(line, 4, "{bad}");
                    assert!(reason.contains(reason_part), "{bad}: {reason}");
                    assert_eq!(text, bad);
                }
                other => panic!("{bad}: expected a parse error, got {other:?}"),
            }
        }
        let err = MountTable::parse("garbage").unwrap_err().to_string();
        assert!(err.starts_with("mountinfo line 1: "), "{err}");
        assert!(err.contains("garbage"), "{err}");
    }
}
