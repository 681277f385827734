//! Safe wrappers over the btrfs ioctls (`include/uapi/linux/btrfs.h`) that rustix does not
//! know. The only `unsafe` code of the workspace: each call passes a `#[repr(C)]` argument
//! structure whose layout is checked against the kernel's by the tests below.

#![allow(unsafe_code)]

use rustix::fd::{AsRawFd, OwnedFd};
use rustix::fs::{open, Mode, OFlags};
use rustix::io::Errno;
use rustix::ioctl::{ioctl, opcode, Opcode, Setter, Updater};
use std::io;
use std::path::Path;

const BTRFS_IOCTL_MAGIC: u8 = 0x94;
/// `flags` of `btrfs_ioctl_vol_args_v2`: create the snapshot read-only.
const BTRFS_SUBVOL_RDONLY: u64 = 1 << 1;
/// `flags` of `btrfs_ioctl_vol_args_v2`: the union holds `subvolid`, not `name`.
const BTRFS_SUBVOL_SPEC_BY_ID: u64 = 1 << 4;
const BTRFS_PATH_NAME_MAX: usize = 4087;
const BTRFS_SUBVOL_NAME_MAX: usize = 4039;
const BTRFS_INO_LOOKUP_PATH_MAX: usize = 4080;
/// Longest name of a directory entry (`BTRFS_NAME_LEN`), hence of a subvolume.
const BTRFS_NAME_LEN: usize = 255;

/// Inode number of every subvolume's root directory.
pub const BTRFS_FIRST_FREE_OBJECTID: u64 = 256;
/// Subvolume id of a filesystem's top level.
pub const BTRFS_FS_TREE_OBJECTID: u64 = 5;

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; BTRFS_PATH_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_vol_args_v2`. The second union (`name` | `devid` | `subvolid`) is
/// `name`; `subvolid` is its first 8 bytes in native byte order.
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    /// Union of `{ size, qgroup_inherit }` and `unused[4]`; we set neither.
    unused: [u64; 4],
    name: [u8; BTRFS_SUBVOL_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_ino_lookup_args`.
#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; BTRFS_INO_LOOKUP_PATH_MAX],
}

/// `struct btrfs_ioctl_fs_info_args`.
#[repr(C)]
struct FsInfoArgs {
    max_id: u64,
    num_devices: u64,
    fsid: [u8; 16],
    nodesize: u32,
    sectorsize: u32,
    clone_alignment: u32,
    csum_type: u16,
    csum_size: u16,
    flags: u64,
    generation: u64,
    metadata_uuid: [u8; 16],
    reserved: [u8; 944],
}

const BTRFS_IOC_SNAP_DESTROY: Opcode = opcode::write::<VolArgs>(BTRFS_IOCTL_MAGIC, 15);
const BTRFS_IOC_INO_LOOKUP: Opcode = opcode::read_write::<InoLookupArgs>(BTRFS_IOCTL_MAGIC, 18);
const BTRFS_IOC_SNAP_CREATE_V2: Opcode = opcode::write::<VolArgsV2>(BTRFS_IOCTL_MAGIC, 23);
const BTRFS_IOC_FS_INFO: Opcode = opcode::read::<FsInfoArgs>(BTRFS_IOCTL_MAGIC, 31);
const BTRFS_IOC_SNAP_DESTROY_V2: Opcode = opcode::write::<VolArgsV2>(BTRFS_IOCTL_MAGIC, 63);

impl VolArgsV2 {
    fn zeroed() -> Self {
        Self {
            fd: 0,
            transid: 0,
            flags: 0,
            unused: [0; 4],
            name: [0; BTRFS_SUBVOL_NAME_MAX + 1],
        }
    }
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// A subvolume name: one path component, no NUL, at most 255 bytes.
fn check_name(name: &str) -> io::Result<&[u8]> {
    let bytes = name.as_bytes();
    if bytes.is_empty()
        || bytes.len() > BTRFS_NAME_LEN
        || name == "."
        || name == ".."
        || bytes.contains(&b'/')
        || bytes.contains(&0)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid subvolume name {name:?}"),
        ));
    }
    Ok(bytes)
}

/// Creates a read-only snapshot of the subvolume whose root directory is `source_subvol_dir`,
/// as `dest_parent_dir/name` (`BTRFS_IOC_SNAP_CREATE_V2` with `BTRFS_SUBVOL_RDONLY`). Both
/// must be on the same btrfs filesystem, and `dest_parent_dir` on a writable mount.
pub fn btrfs_snapshot_readonly(
    source_subvol_dir: &Path,
    dest_parent_dir: &Path,
    name: &str,
) -> io::Result<()> {
    let bytes = check_name(name)?;
    let source = open_dir(source_subvol_dir)?;
    let dest = open_dir(dest_parent_dir)?;
    let mut args = VolArgsV2::zeroed();
    args.fd = i64::from(source.as_raw_fd());
    args.flags = BTRFS_SUBVOL_RDONLY;
    args.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: the opcode is BTRFS_IOC_SNAP_CREATE_V2, whose argument is exactly this
    // #[repr(C)] struct (size checked in the tests); `source` stays open across the call.
    let r = unsafe { ioctl(&dest, Setter::<BTRFS_IOC_SNAP_CREATE_V2, _>::new(args)) };
    drop(source);
    r.map_err(io::Error::from)
}

/// Deletes the subvolume `parent_dir/name` (`BTRFS_IOC_SNAP_DESTROY_V2`, or the v1 ioctl on
/// kernels before 5.7). Already gone (`ENOENT`) is success. A plain directory is refused by
/// the kernel (`EINVAL`/`ENOTDIR`), never deleted.
pub fn btrfs_subvol_delete(parent_dir: &Path, name: &str) -> io::Result<()> {
    let bytes = check_name(name)?;
    let parent = match open_dir(parent_dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        r => r?,
    };
    let mut args = VolArgsV2::zeroed();
    args.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: BTRFS_IOC_SNAP_DESTROY_V2 takes this #[repr(C)] struct (size checked in tests).
    let r = unsafe { ioctl(&parent, Setter::<BTRFS_IOC_SNAP_DESTROY_V2, _>::new(args)) };
    let r = match r {
        Err(Errno::NOTTY) | Err(Errno::OPNOTSUPP) => {
            let mut v1 = VolArgs {
                fd: 0,
                name: [0; BTRFS_PATH_NAME_MAX + 1],
            };
            v1.name[..bytes.len()].copy_from_slice(bytes);
            // SAFETY: BTRFS_IOC_SNAP_DESTROY takes this #[repr(C)] struct (size checked).
            unsafe { ioctl(&parent, Setter::<BTRFS_IOC_SNAP_DESTROY, _>::new(v1)) }
        }
        r => r,
    };
    match r {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the subvolume with id `subvol_id` of the filesystem that holds `any_dir`
/// (`BTRFS_IOC_SNAP_DESTROY_V2` with `BTRFS_SUBVOL_SPEC_BY_ID`, Linux 5.7). Already gone is
/// success. For cleanup when the subvolume's path is not reachable from any mount.
pub fn btrfs_subvol_delete_by_id(any_dir: &Path, subvol_id: u64) -> io::Result<()> {
    if subvol_id < BTRFS_FIRST_FREE_OBJECTID {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to delete btrfs subvolume id {subvol_id} (the top level or a tree)"),
        ));
    }
    let dir = open_dir(any_dir)?;
    let mut args = VolArgsV2::zeroed();
    args.flags = BTRFS_SUBVOL_SPEC_BY_ID;
    args.name[..8].copy_from_slice(&subvol_id.to_ne_bytes());
    // SAFETY: BTRFS_IOC_SNAP_DESTROY_V2 takes this #[repr(C)] struct; with SPEC_BY_ID the
    // kernel reads the union as a u64 at the offset of `name`.
    match unsafe { ioctl(&dir, Setter::<BTRFS_IOC_SNAP_DESTROY_V2, _>::new(args)) } {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Id of the subvolume that holds `path` (`BTRFS_IOC_INO_LOOKUP` with `treeid` 0: the kernel
/// answers with the tree of the inode the fd refers to). Needs CAP_SYS_ADMIN.
pub fn btrfs_subvol_id(path: &Path) -> io::Result<u64> {
    let dir = open_dir(path)?;
    let mut args = InoLookupArgs {
        treeid: 0,
        objectid: BTRFS_FIRST_FREE_OBJECTID,
        name: [0; BTRFS_INO_LOOKUP_PATH_MAX],
    };
    // SAFETY: BTRFS_IOC_INO_LOOKUP reads and writes this #[repr(C)] struct (size checked).
    unsafe { ioctl(&dir, Updater::<BTRFS_IOC_INO_LOOKUP, _>::new(&mut args)) }?;
    Ok(args.treeid)
}

/// What `BTRFS_IOC_FS_INFO` tells of a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BtrfsFsInfo {
    /// The filesystem UUID (as in `/sys/fs/btrfs/<fsid>` and `blkid`).
    pub fsid: [u8; 16],
    pub num_devices: u64,
}

impl BtrfsFsInfo {
    /// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, as `/sys/fs/btrfs/` names it.
    pub fn fsid_string(&self) -> String {
        let h: String = self.fsid.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

/// Facts of the btrfs filesystem that holds `path`.
pub fn btrfs_fs_info(path: &Path) -> io::Result<BtrfsFsInfo> {
    let dir = open_dir(path)?;
    let mut args = FsInfoArgs {
        max_id: 0,
        num_devices: 0,
        fsid: [0; 16],
        nodesize: 0,
        sectorsize: 0,
        clone_alignment: 0,
        csum_type: 0,
        csum_size: 0,
        // in/out: no optional facts requested.
        flags: 0,
        generation: 0,
        metadata_uuid: [0; 16],
        reserved: [0; 944],
    };
    // SAFETY: BTRFS_IOC_FS_INFO reads `flags` from and writes this #[repr(C)] struct.
    unsafe { ioctl(&dir, Updater::<BTRFS_IOC_FS_INFO, _>::new(&mut args)) }?;
    Ok(BtrfsFsInfo {
        fsid: args.fsid,
        num_devices: args.num_devices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn struct_layouts_match_the_kernel() {
        assert_eq!(size_of::<VolArgs>(), 4096);
        assert_eq!(size_of::<VolArgsV2>(), 4096);
        assert_eq!(offset_of!(VolArgsV2, unused), 24);
        assert_eq!(offset_of!(VolArgsV2, name), 56);
        assert_eq!(align_of::<VolArgsV2>(), 8);
        assert_eq!(size_of::<InoLookupArgs>(), 4096);
        assert_eq!(size_of::<FsInfoArgs>(), 1024);
        assert_eq!(offset_of!(FsInfoArgs, flags), 48);
        assert_eq!(offset_of!(FsInfoArgs, metadata_uuid), 64);
    }

    #[test]
    fn opcodes_match_the_kernel() {
        // Values of the C macros on x86_64 / aarch64 (asm-generic ioctl encoding).
        assert_eq!(BTRFS_IOC_SNAP_CREATE_V2 as u64, 0x5000_9417);
        assert_eq!(BTRFS_IOC_SNAP_DESTROY as u64, 0x5000_940f);
        assert_eq!(BTRFS_IOC_SNAP_DESTROY_V2 as u64, 0x5000_943f);
        assert_eq!(BTRFS_IOC_INO_LOOKUP as u64, 0xd000_9412);
        assert_eq!(BTRFS_IOC_FS_INFO as u64, 0x8400_941f);
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", ".", "..", "a/b", "a\0b", &"x".repeat(256)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(".snapshot-1a2b-0").is_ok());
    }

    #[test]
    fn fsid_is_formatted_like_sysfs() {
        let info = BtrfsFsInfo {
            fsid: [
                0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55,
                0x66, 0x77,
            ],
            num_devices: 1,
        };
        assert_eq!(info.fsid_string(), "01234567-89ab-cdef-0011-223344556677");
    }
}
