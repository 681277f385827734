//! `/proc/self/mountinfo`: parsing and lookup.
//!
//! Format (proc(5)): `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS`.
//! Paths are escaped by the kernel: space, tab, newline and backslash appear as `\040`, `\011`,
//! `\012`, `\134`.

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
    /// Per-superblock options (`rw,subvolid=5,subvol=/`…).
    pub super_options: String,
}

impl Mount {
    /// Value of a per-superblock option (`subvol`, `subvolid`…); `Some("")` for a flag.
    pub fn super_option(&self, key: &str) -> Option<&str> {
        find_option(&self.super_options, key)
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
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
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

impl MountTable {
    /// Reads `/proc/self/mountinfo`.
    pub fn read() -> Result<Self, MountInfoError> {
        Self::read_from(Path::new("/proc/self/mountinfo"))
    }

    pub fn read_from(path: &Path) -> Result<Self, MountInfoError> {
        let text = std::fs::read(path).map_err(|source| MountInfoError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&String::from_utf8_lossy(&text))
    }

    pub fn parse(text: &str) -> Result<Self, MountInfoError> {
        let mut mounts = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            mounts.push(parse_line(line).map_err(|reason| MountInfoError::Parse {
                line: i + 1,
                reason,
                text: line.to_owned(),
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

fn parse_line(line: &str) -> Result<Mount, &'static str> {
    let (head, tail) = line
        .split_once(" - ")
        .ok_or("no ' - ' separator before the filesystem type")?;
    let mut f = head.split(' ');
    let id = f.next().and_then(|s| s.parse().ok()).ok_or("bad mount id")?;
    let parent_id = f.next().and_then(|s| s.parse().ok()).ok_or("bad parent id")?;
    let (major, minor) = f
        .next()
        .and_then(|s| s.split_once(':'))
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or("bad major:minor")?;
    let root = unescape(f.next().ok_or("missing root")?);
    let mount_point = unescape(f.next().ok_or("missing mount point")?);
    let options = f.next().ok_or("missing mount options")?.to_owned();
    let optional = f.filter(|s| !s.is_empty()).map(str::to_owned).collect();
    let mut t = tail.split(' ');
    let fstype = t.next().filter(|s| !s.is_empty()).ok_or("missing fstype")?;
    let source = t.next().ok_or("missing source")?;
    let super_options = t.next().unwrap_or("");
    Ok(Mount {
        id,
        parent_id,
        major,
        minor,
        root,
        mount_point,
        options,
        optional,
        fstype: unescape_str(fstype),
        source: unescape_str(source),
        super_options: super_options.to_owned(),
    })
}

/// Undoes the kernel's octal escapes (`\040` → space); anything else is kept verbatim.
fn unescape_bytes(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u16 * 64 + (b[i + 2] - b'0') as u16 * 8 + (b[i + 3] - b'0') as u16;
            if v <= 255 {
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn unescape(s: &str) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape_bytes(s)))
}

fn unescape_str(s: &str) -> String {
    String::from_utf8_lossy(&unescape_bytes(s)).into_owned()
}
