//! One mount's mountinfo data by its id, without reading the whole mount table: statx(2)'s
//! unique mount id (`STATX_MNT_ID_UNIQUE`) and statmount(2) (`include/uapi/linux/mount.h`),
//! both Linux 6.8. The one `unsafe` call is the raw syscall (glibc has no wrapper, rustix no
//! binding); the kernel's reply is parsed from plain bytes, every offset checked.

use rustix::fd::AsFd;
use rustix::fs::{fstatvfs, open, statx, AtFlags, Mode, OFlags, StatVfsMountFlags, StatxFlags};
use std::io;
use std::path::Path;

/// statx mask bit: `stx_mnt_id` holds the 64-bit unique mount id, never reused (Linux 6.8;
/// older kernels ignore the bit and leave it out of `stx_mask`).
const STATX_MNT_ID_UNIQUE: u32 = 0x4000;

/// `STATMOUNT_*` request and reply bits, with the kernel that added each. A kernel ignores the
/// bits it does not know (they stay out of the reply's mask).
pub mod mask {
    /// `sb_dev_major`, `sb_dev_minor`, `sb_magic`, `sb_flags` (6.8).
    pub const SB_BASIC: u64 = 0x1;
    /// The ids, `mnt_attr`, `mnt_propagation`, `mnt_peer_group`, `mnt_master` (6.8).
    pub const MNT_BASIC: u64 = 0x2;
    /// `propagate_from` (6.8).
    pub const PROPAGATE_FROM: u64 = 0x4;
    /// `mnt_root`, unescaped (6.8).
    pub const MNT_ROOT: u64 = 0x8;
    /// `mnt_point`, unescaped (6.8).
    pub const MNT_POINT: u64 = 0x10;
    /// `fs_type`, without the subtype (6.8).
    pub const FS_TYPE: u64 = 0x20;
    /// `mnt_ns_id` (6.11).
    pub const MNT_NS_ID: u64 = 0x40;
    /// `mnt_opts`: the security and filesystem options as mountinfo shows them (escaped), no
    /// leading comma (6.11).
    pub const MNT_OPTS: u64 = 0x80;
    /// `fs_subtype` (6.13).
    pub const FS_SUBTYPE: u64 = 0x100;
    /// `sb_source`, unescaped (6.13).
    pub const SB_SOURCE: u64 = 0x200;
    /// `opt_array`, `opt_num` (6.14).
    pub const OPT_ARRAY: u64 = 0x400;
    /// `opt_sec_array`, `opt_sec_num` (6.14).
    pub const OPT_SEC_ARRAY: u64 = 0x800;
    /// `supported_mask`: every bit this kernel knows (6.15). Without it an absent string bit
    /// is ambiguous: the kernel leaves a string's bit out when the string is empty.
    pub const SUPPORTED_MASK: u64 = 0x1000;
}

/// `sb_flags` bits (the `SB_*` / `MS_*` values).
pub mod sb {
    pub const RDONLY: u32 = 1;
    pub const SYNCHRONOUS: u32 = 16;
    pub const DIRSYNC: u32 = 128;
    pub const LAZYTIME: u32 = 1 << 25;
}

/// `mnt_attr` bits (`MOUNT_ATTR_*`).
pub mod attr {
    pub const RDONLY: u64 = 0x1;
    pub const NOSUID: u64 = 0x2;
    pub const NODEV: u64 = 0x4;
    pub const NOEXEC: u64 = 0x8;
    /// The atime field; `RELATIME` is its value 0.
    pub const ATIME_MASK: u64 = 0x70;
    pub const RELATIME: u64 = 0x0;
    pub const NOATIME: u64 = 0x10;
    pub const STRICTATIME: u64 = 0x20;
    pub const NODIRATIME: u64 = 0x80;
    pub const IDMAP: u64 = 0x10_0000;
    pub const NOSYMFOLLOW: u64 = 0x20_0000;
}

/// `mnt_propagation` bits (`MS_*`).
pub mod propagation {
    pub const UNBINDABLE: u64 = 1 << 17;
    pub const PRIVATE: u64 = 1 << 18;
    pub const SLAVE: u64 = 1 << 19;
    pub const SHARED: u64 = 1 << 20;
}

/// `struct mnt_id_req`, first version (`MNT_ID_REQ_SIZE_VER0`): every kernel with statmount
/// takes it.
#[repr(C)]
struct MntIdReq {
    size: u32,
    /// `spare` (6.8), later a union of `mnt_ns_fd` / `mnt_fd`: 0 means "this namespace".
    spare: u32,
    mnt_id: u64,
    /// The request mask.
    param: u64,
}
const MNT_ID_REQ_SIZE_VER0: u32 = 24;

/// `sizeof(struct statmount)`: the fixed part, kept at 512 bytes by its spare fields; the
/// string table (`char str[]`) follows it.
const STATMOUNT_SIZE: usize = 512;

// Byte offsets of the fields of `struct statmount`.
const OFF_SIZE: usize = 0;
const OFF_MNT_OPTS: usize = 4;
const OFF_MASK: usize = 8;
const OFF_SB_DEV_MAJOR: usize = 16;
const OFF_SB_DEV_MINOR: usize = 20;
const OFF_SB_MAGIC: usize = 24;
const OFF_SB_FLAGS: usize = 32;
const OFF_FS_TYPE: usize = 36;
const OFF_MNT_ID: usize = 40;
const OFF_MNT_PARENT_ID: usize = 48;
const OFF_MNT_ID_OLD: usize = 56;
const OFF_MNT_PARENT_ID_OLD: usize = 60;
const OFF_MNT_ATTR: usize = 64;
const OFF_MNT_PROPAGATION: usize = 72;
const OFF_MNT_PEER_GROUP: usize = 80;
const OFF_MNT_MASTER: usize = 88;
const OFF_PROPAGATE_FROM: usize = 96;
const OFF_MNT_ROOT: usize = 104;
const OFF_MNT_POINT: usize = 108;
const OFF_FS_SUBTYPE: usize = 120;
const OFF_SB_SOURCE: usize = 124;
const OFF_SUPPORTED_MASK: usize = 144;

/// First reply buffer; doubled on `EOVERFLOW` up to [`MAX_BUFFER`]. Long option strings
/// (overlayfs layer lists) are what outgrows it.
const FIRST_BUFFER: usize = 4096;
const MAX_BUFFER: usize = 16 << 20;

/// What statmount(2) said about one mount. Strings are raw bytes, `None` when their bit is
/// not in `mask` — which a kernel does both for a field it does not know and for an empty
/// string; [`StatMount::supported`] tells the two apart where the kernel allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatMount {
    pub mask: u64,
    /// `supported_mask`, when the reply has [`mask::SUPPORTED_MASK`].
    pub supported_mask: Option<u64>,
    pub sb_dev_major: u32,
    pub sb_dev_minor: u32,
    pub sb_magic: u64,
    pub sb_flags: u32,
    pub mnt_id: u64,
    pub mnt_parent_id: u64,
    /// The ids mountinfo and `STATX_MNT_ID` use.
    pub mnt_id_old: u32,
    pub mnt_parent_id_old: u32,
    pub mnt_attr: u64,
    pub mnt_propagation: u64,
    pub mnt_peer_group: u64,
    pub mnt_master: u64,
    pub propagate_from: u64,
    pub fs_type: Option<Vec<u8>>,
    pub mnt_root: Option<Vec<u8>>,
    pub mnt_point: Option<Vec<u8>>,
    pub mnt_opts: Option<Vec<u8>>,
    pub fs_subtype: Option<Vec<u8>>,
    pub sb_source: Option<Vec<u8>>,
}

impl StatMount {
    /// The bits this kernel knows: `supported_mask` (6.15), else only what it returned —
    /// a lower bound, as empty strings leave their bit out.
    pub fn supported(&self) -> u64 {
        self.supported_mask.unwrap_or(self.mask)
    }

    /// Parses a reply: the fixed part, then the NUL-terminated strings its offsets point at.
    pub fn parse(buf: &[u8]) -> io::Result<Self> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        if buf.len() < STATMOUNT_SIZE {
            return Err(bad(format!(
                "statmount reply of {} bytes, shorter than struct statmount",
                buf.len()
            )));
        }
        let u32_at = |o: usize| u32::from_ne_bytes(buf[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_ne_bytes(buf[o..o + 8].try_into().expect("8 bytes"));
        let size = u32_at(OFF_SIZE) as usize;
        if size < STATMOUNT_SIZE || size > buf.len() {
            return Err(bad(format!(
                "statmount reply says {size} bytes, buffer holds {}",
                buf.len()
            )));
        }
        let strings = &buf[STATMOUNT_SIZE..size];
        let mask = u64_at(OFF_MASK);
        let string = |bit: u64, field: usize, name: &str| -> io::Result<Option<Vec<u8>>> {
            if mask & bit == 0 {
                return Ok(None);
            }
            let off = u32_at(field) as usize;
            let s = strings.get(off..).unwrap_or_default();
            match s.iter().position(|&b| b == 0) {
                Some(end) => Ok(Some(s[..end].to_vec())),
                None => Err(bad(format!(
                    "statmount {name}: offset {off} has no NUL-terminated string in {} bytes",
                    strings.len()
                ))),
            }
        };
        Ok(Self {
            mask,
            supported_mask: (mask & mask::SUPPORTED_MASK != 0).then(|| u64_at(OFF_SUPPORTED_MASK)),
            sb_dev_major: u32_at(OFF_SB_DEV_MAJOR),
            sb_dev_minor: u32_at(OFF_SB_DEV_MINOR),
            sb_magic: u64_at(OFF_SB_MAGIC),
            sb_flags: u32_at(OFF_SB_FLAGS),
            mnt_id: u64_at(OFF_MNT_ID),
            mnt_parent_id: u64_at(OFF_MNT_PARENT_ID),
            mnt_id_old: u32_at(OFF_MNT_ID_OLD),
            mnt_parent_id_old: u32_at(OFF_MNT_PARENT_ID_OLD),
            mnt_attr: u64_at(OFF_MNT_ATTR),
            mnt_propagation: u64_at(OFF_MNT_PROPAGATION),
            mnt_peer_group: u64_at(OFF_MNT_PEER_GROUP),
            mnt_master: u64_at(OFF_MNT_MASTER),
            propagate_from: u64_at(OFF_PROPAGATE_FROM),
            fs_type: string(mask::FS_TYPE, OFF_FS_TYPE, "fs_type")?,
            mnt_root: string(mask::MNT_ROOT, OFF_MNT_ROOT, "mnt_root")?,
            mnt_point: string(mask::MNT_POINT, OFF_MNT_POINT, "mnt_point")?,
            mnt_opts: string(mask::MNT_OPTS, OFF_MNT_OPTS, "mnt_opts")?,
            fs_subtype: string(mask::FS_SUBTYPE, OFF_FS_SUBTYPE, "fs_subtype")?,
            sb_source: string(mask::SB_SOURCE, OFF_SB_SOURCE, "sb_source")?,
        })
    }
}

/// statmount(2) of the mount with unique id `mnt_id` in this mount namespace, asking for the
/// bits of `want` (see [`mask`]). Errors as the kernel gives them: `ENOSYS` before 6.8 (or
/// under a seccomp filter, which may say `EPERM`), `EINVAL` for an id that is not a unique
/// one, `ENOENT` for a mount that is gone; `EOVERFLOW` (reply too big) is retried with a
/// bigger buffer.
pub fn statmount(mnt_id: u64, want: u64) -> io::Result<StatMount> {
    let req = MntIdReq {
        size: MNT_ID_REQ_SIZE_VER0,
        spare: 0,
        mnt_id,
        param: want,
    };
    let mut len = FIRST_BUFFER;
    loop {
        let mut buf = vec![0u8; len];
        match statmount_syscall(&req, &mut buf) {
            Ok(()) => return StatMount::parse(&buf),
            Err(e) if e.raw_os_error() == Some(EOVERFLOW) && len < MAX_BUFFER => len *= 2,
            Err(e) => return Err(e),
        }
    }
}

const EOVERFLOW: i32 = rustix::io::Errno::OVERFLOW.raw_os_error();

/// statmount's number: the one table every architecture has shared since 4.20's new
/// syscalls, except the few with their own offsets (alpha, mips, ia64), where the call is
/// not made.
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64",
    target_arch = "riscv32",
    target_arch = "loongarch64",
    target_arch = "powerpc64",
    target_arch = "powerpc",
    target_arch = "s390x"
))]
const SYS_STATMOUNT: std::ffi::c_long = 457;

#[cfg(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64",
    target_arch = "riscv32",
    target_arch = "loongarch64",
    target_arch = "powerpc64",
    target_arch = "powerpc",
    target_arch = "s390x"
))]
#[allow(unsafe_code)]
fn statmount_syscall(req: &MntIdReq, buf: &mut [u8]) -> io::Result<()> {
    use std::ffi::c_long;
    extern "C" {
        // The C library's generic system-call entry (std links it on Linux).
        fn syscall(number: c_long, ...) -> c_long;
    }
    let len = c_long::try_from(buf.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "statmount buffer too big"))?;
    let flags: c_long = 0;
    // SAFETY: `req` is a live `#[repr(C)]` mnt_id_req of `req.size` bytes that the kernel only
    // reads; `buf` is a live, writable buffer of exactly `len` bytes, the most the kernel
    // writes. Neither is retained after the call returns.
    let ret = unsafe {
        syscall(
            SYS_STATMOUNT,
            req as *const MntIdReq,
            buf.as_mut_ptr(),
            len,
            flags,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64",
    target_arch = "riscv32",
    target_arch = "loongarch64",
    target_arch = "powerpc64",
    target_arch = "powerpc",
    target_arch = "s390x"
)))]
fn statmount_syscall(_req: &MntIdReq, _buf: &mut [u8]) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(
        rustix::io::Errno::NOSYS.raw_os_error(),
    ))
}

/// The mount that holds a path, as one open descriptor sees it (so that both answers are
/// about the same mount, whatever is mounted or unmounted meanwhile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathMount {
    /// statx's `STATX_MNT_ID_UNIQUE`: what [`statmount`] takes.
    pub unique_id: u64,
    /// The superblock has `SB_MANDLOCK` (mountinfo's `mand`), which statmount does not report
    /// (statfs does, as `ST_MANDLOCK`).
    pub mandlock: bool,
}

/// [`PathMount`] of `path`, following symlinks. A directory is opened with `O_DIRECTORY`,
/// which triggers an automount there like the plain statx of [`super::mount_id`] does, so
/// that both name the same mount. `Unsupported` when the kernel has no unique mount ids.
pub fn path_mount(path: &Path) -> io::Result<PathMount> {
    let flags = OFlags::PATH | OFlags::CLOEXEC;
    let fd = match open(path, flags | OFlags::DIRECTORY, Mode::empty()) {
        Err(rustix::io::Errno::NOTDIR) => open(path, flags, Mode::empty())?,
        other => other?,
    };
    let st = statx(
        fd.as_fd(),
        c"",
        AtFlags::EMPTY_PATH,
        StatxFlags::from_bits_retain(STATX_MNT_ID_UNIQUE),
    )?;
    if st.stx_mask & STATX_MNT_ID_UNIQUE == 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the kernel did not report a unique mount id (statx STATX_MNT_ID_UNIQUE needs Linux 6.8)",
        ));
    }
    let vfs = fstatvfs(fd.as_fd())?;
    Ok(PathMount {
        unique_id: st.stx_mnt_id,
        mandlock: vfs.f_flag.contains(StatVfsMountFlags::MANDLOCK),
    })
}

#[cfg(test)]
#[path = "statmount_proptests.rs"]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout_matches_the_kernel() {
        assert_eq!(
            std::mem::size_of::<MntIdReq>(),
            MNT_ID_REQ_SIZE_VER0 as usize
        );
        assert_eq!(std::mem::align_of::<MntIdReq>(), 8);
    }

    /// A reply as the kernel lays it out: fixed part, then `\0` and the strings.
    fn reply(mask: u64, strings: &[(usize, &[u8])], extra: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
        let mut buf = vec![0u8; STATMOUNT_SIZE];
        let mut table = vec![0u8]; // the empty string unset offsets point at
        for (field, s) in strings {
            let off = table.len() as u32;
            buf[*field..*field + 4].copy_from_slice(&off.to_ne_bytes());
            table.extend_from_slice(s);
            table.push(0);
        }
        buf[OFF_MASK..OFF_MASK + 8].copy_from_slice(&mask.to_ne_bytes());
        extra(&mut buf);
        let size = (STATMOUNT_SIZE + table.len()) as u32;
        buf[OFF_SIZE..OFF_SIZE + 4].copy_from_slice(&size.to_ne_bytes());
        buf.extend_from_slice(&table);
        buf.extend_from_slice(&[0xAA; 64]); // unused tail of the caller's buffer
        buf
    }

    #[test]
    fn parses_fixed_fields_and_strings() {
        let m = mask::SB_BASIC
            | mask::MNT_BASIC
            | mask::FS_TYPE
            | mask::MNT_ROOT
            | mask::MNT_POINT
            | mask::SB_SOURCE
            | mask::SUPPORTED_MASK;
        let buf = reply(
            m,
            &[
                (OFF_FS_TYPE, b"btrfs"),
                (OFF_MNT_ROOT, b"/@home"),
                (OFF_MNT_POINT, b"/srv/a b\xff"),
                (OFF_SB_SOURCE, b"/dev/loop0"),
            ],
            |b| {
                b[OFF_SB_DEV_MAJOR..OFF_SB_DEV_MAJOR + 4].copy_from_slice(&0u32.to_ne_bytes());
                b[OFF_SB_DEV_MINOR..OFF_SB_DEV_MINOR + 4].copy_from_slice(&45u32.to_ne_bytes());
                b[OFF_MNT_ID..OFF_MNT_ID + 8].copy_from_slice(&(1u64 << 32 | 7).to_ne_bytes());
                b[OFF_MNT_ID_OLD..OFF_MNT_ID_OLD + 4].copy_from_slice(&77u32.to_ne_bytes());
                b[OFF_MNT_PARENT_ID_OLD..OFF_MNT_PARENT_ID_OLD + 4]
                    .copy_from_slice(&21u32.to_ne_bytes());
                b[OFF_SUPPORTED_MASK..OFF_SUPPORTED_MASK + 8]
                    .copy_from_slice(&0x7fffu64.to_ne_bytes());
            },
        );
        let sm = StatMount::parse(&buf).unwrap();
        assert_eq!(sm.mask, m);
        assert_eq!(sm.supported_mask, Some(0x7fff));
        assert_eq!(sm.supported(), 0x7fff);
        assert_eq!((sm.sb_dev_major, sm.sb_dev_minor), (0, 45));
        assert_eq!(sm.mnt_id, 1 << 32 | 7);
        assert_eq!((sm.mnt_id_old, sm.mnt_parent_id_old), (77, 21));
        assert_eq!(sm.fs_type.as_deref(), Some(&b"btrfs"[..]));
        assert_eq!(sm.mnt_root.as_deref(), Some(&b"/@home"[..]));
        assert_eq!(sm.mnt_point.as_deref(), Some(&b"/srv/a b\xff"[..]));
        assert_eq!(sm.sb_source.as_deref(), Some(&b"/dev/loop0"[..]));
        // Not asked for or empty: no bit, no string.
        assert_eq!(sm.mnt_opts, None);
        assert_eq!(sm.fs_subtype, None);
    }

    #[test]
    fn without_supported_mask_the_reply_mask_is_the_lower_bound() {
        let sm = StatMount::parse(&reply(mask::MNT_BASIC, &[], |_| {})).unwrap();
        assert_eq!(sm.supported_mask, None);
        assert_eq!(sm.supported(), mask::MNT_BASIC);
    }

    #[test]
    fn rejects_malformed_replies() {
        assert!(StatMount::parse(&[0u8; 100]).is_err());
        // A size beyond the buffer, or inside the fixed part.
        let mut buf = reply(0, &[], |_| {});
        let len = buf.len() as u32;
        buf[..4].copy_from_slice(&(len + 1).to_ne_bytes());
        assert!(StatMount::parse(&buf).is_err());
        buf[..4].copy_from_slice(&100u32.to_ne_bytes());
        assert!(StatMount::parse(&buf).is_err());
        // An offset past the table, and a string without its NUL.
        let mut buf = reply(mask::FS_TYPE, &[(OFF_FS_TYPE, b"ext4")], |_| {});
        buf[OFF_FS_TYPE..OFF_FS_TYPE + 4].copy_from_slice(&999u32.to_ne_bytes());
        let err = StatMount::parse(&buf).unwrap_err();
        assert!(err.to_string().contains("fs_type"), "{err}");
        let mut buf = reply(mask::FS_TYPE, &[(OFF_FS_TYPE, b"ext4")], |_| {});
        let size = u32::from_ne_bytes(buf[..4].try_into().unwrap()) - 1;
        buf[..4].copy_from_slice(&size.to_ne_bytes());
        assert!(StatMount::parse(&buf).is_err());
    }

    #[test]
    fn a_non_unique_id_is_refused() {
        // Ids up to 2^31 are the old, reusable kind: the kernel says EINVAL (or ENOSYS before
        // 6.8). Either way no reply.
        assert!(statmount(1, mask::MNT_BASIC).is_err());
    }
}
