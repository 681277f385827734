//! Loop devices (`include/uapi/linux/loop.h`) through their ioctls — no `losetup` — and the
//! one fact about a backing file's filesystem the freeze provider needs: can it reflink
//! (`XFS_IOC_FSGEOMETRY`). Argument structures are `#[repr(C)]`, their sizes checked against
//! the kernel's by the tests below.
#![allow(unsafe_code)]

use rustix::fd::{AsFd, AsRawFd, OwnedFd};
use rustix::fs::{open, Mode, OFlags};
use rustix::io::Errno;
use rustix::ioctl::{ioctl, opcode, Getter, Ioctl, IoctlOutput, NoArg, Opcode, Setter};
use std::io;
use std::path::{Path, PathBuf};

/// `LO_FLAGS_READ_ONLY`: the device refuses writes.
const LO_FLAGS_READ_ONLY: u32 = 1;
/// `LO_FLAGS_AUTOCLEAR`: the device detaches itself when its last opener closes it.
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

// The loop ioctls are plain numbers ('L' << 8 | nr), which is what _IO encodes.
const LOOP_CLR_FD: Opcode = opcode::none(b'L', 0x01);
const LOOP_GET_STATUS64: Opcode = opcode::none(b'L', 0x05);
const LOOP_CONFIGURE: Opcode = opcode::none(b'L', 0x0A);
const LOOP_CTL_GET_FREE: Opcode = opcode::none(b'L', 0x82);
// _IOR('X', 124, struct xfs_fsop_geom_v4): the oldest geometry call that has the flags.
const XFS_IOC_FSGEOMETRY_V4: Opcode = opcode::read::<XfsGeomV4>(b'X', 124);
/// `XFS_FSOP_GEOM_FLAGS_REFLINK`.
const XFS_GEOM_FLAGS_REFLINK: u32 = 1 << 20;

/// `struct loop_info64`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// `struct xfs_fsop_geom_v4`.
#[repr(C)]
struct XfsGeomV4 {
    blocksize: u32,
    rtextsize: u32,
    agblocks: u32,
    agcount: u32,
    logblocks: u32,
    sectsize: u32,
    inodesize: u32,
    imaxpct: u32,
    datablocks: u64,
    rtblocks: u64,
    rtextents: u64,
    logstart: u64,
    uuid: [u8; 16],
    sunit: u32,
    swidth: u32,
    version: i32,
    flags: u32,
    logsectsize: u32,
    rtsectsize: u32,
    dirblocksize: u32,
    logsunit: u32,
}

impl LoopInfo64 {
    fn zeroed() -> Self {
        Self {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: 0,
            lo_file_name: [0; LO_NAME_SIZE],
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; LO_KEY_SIZE],
            lo_init: [0; 2],
        }
    }
}

/// `LOOP_CTL_GET_FREE`: its result is the ioctl's return value, which rustix's patterns drop.
struct GetFree;

// SAFETY: LOOP_CTL_GET_FREE takes no argument and returns the free device's number.
unsafe impl Ioctl for GetFree {
    type Output = u32;
    const IS_MUTATING: bool = false;
    fn opcode(&self) -> Opcode {
        LOOP_CTL_GET_FREE
    }
    fn as_ptr(&mut self) -> *mut core::ffi::c_void {
        core::ptr::null_mut()
    }
    unsafe fn output_from_ptr(
        out: IoctlOutput,
        _: *mut core::ffi::c_void,
    ) -> rustix::io::Result<u32> {
        u32::try_from(out).map_err(|_| Errno::INVAL)
    }
}

/// What the kernel says of an attached loop device (`LOOP_GET_STATUS64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopStatus {
    /// `st_dev` of the backing file (the kernel's encoding, as `stat` returns it).
    pub backing_dev: u64,
    /// Inode number of the backing file.
    pub backing_ino: u64,
    pub offset: u64,
    pub sizelimit: u64,
    pub read_only: bool,
}

fn open_device(path: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    Ok(open(path, flags | OFlags::CLOEXEC, Mode::empty())?)
}

/// `LOOP_GET_STATUS64` of the loop device `dev`; `ENXIO` when nothing is attached.
pub fn loop_status(dev: &Path) -> io::Result<LoopStatus> {
    let fd = open_device(dev, OFlags::RDONLY)?;
    // SAFETY: LOOP_GET_STATUS64 fills a `struct loop_info64`, which `LoopInfo64` mirrors.
    let info = unsafe { ioctl(&fd, Getter::<LOOP_GET_STATUS64, LoopInfo64>::new()) }?;
    Ok(LoopStatus {
        backing_dev: info.lo_device,
        backing_ino: info.lo_inode,
        offset: info.lo_offset,
        sizelimit: info.lo_sizelimit,
        read_only: info.lo_flags & LO_FLAGS_READ_ONLY != 0,
    })
}

/// A loop device attached by [`attach_read_only`]. It detaches itself (autoclear) when its
/// last opener closes it: keep this alive until the device is mounted (the mount then holds
/// it), and drop it after.
#[derive(Debug)]
pub struct AttachedLoop {
    pub device: PathBuf,
    fd: OwnedFd,
}

impl AsFd for AttachedLoop {
    fn as_fd(&self) -> rustix::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Attaches `file` read-only to a free loop device, with autoclear, showing the bytes from
/// `offset` on (`sizelimit` of them; 0 = to the end).
pub fn attach_read_only(file: &Path, offset: u64, sizelimit: u64) -> io::Result<AttachedLoop> {
    let backing = open_device(file, OFlags::RDONLY)?;
    let control = open_device(Path::new("/dev/loop-control"), OFlags::RDWR)?;
    let mut info = LoopInfo64::zeroed();
    info.lo_offset = offset;
    info.lo_sizelimit = sizelimit;
    info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
    // Informational (losetup shows it); the kernel reports the real path in sysfs.
    let name = file.as_os_str().as_encoded_bytes();
    let n = name.len().min(LO_NAME_SIZE - 1);
    info.lo_file_name[..n].copy_from_slice(&name[..n]);
    let mut last = Errno::BUSY;
    // Another process may take the device GET_FREE named before we configure it: retry.
    for _ in 0..16 {
        // SAFETY: see `GetFree`.
        let number = unsafe { ioctl(&control, GetFree) }?;
        let device = PathBuf::from(format!("/dev/loop{number}"));
        let fd = match open_device(&device, OFlags::RDWR) {
            Ok(fd) => fd,
            // udev has not made the node yet, or it went away: ask for another.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                last = Errno::NOENT;
                continue;
            }
            Err(e) => return Err(e),
        };
        let config = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 0,
            info,
            reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which `LoopConfig` mirrors;
        // the descriptor in it is open for the duration of the call.
        match unsafe { ioctl(&fd, Setter::<LOOP_CONFIGURE, LoopConfig>::new(config)) } {
            Ok(()) => return Ok(AttachedLoop { device, fd }),
            Err(Errno::BUSY) => last = Errno::BUSY,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other(format!(
        "no free loop device could be configured ({last})"
    )))
}

/// Detaches the loop device `dev` (`LOOP_CLR_FD`). A device in use (mounted) is only marked
/// to detach when its last user closes it. Nothing attached is success.
pub fn detach_loop(dev: &Path) -> io::Result<()> {
    let fd = match open_device(dev, OFlags::RDONLY) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    // SAFETY: LOOP_CLR_FD takes no argument.
    match unsafe { ioctl(&fd, NoArg::<LOOP_CLR_FD>::new()) } {
        Ok(()) | Err(Errno::NXIO) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Does the XFS filesystem holding `path` support reflinks (FICLONE)?
pub fn xfs_has_reflink(path: &Path) -> io::Result<bool> {
    let fd = open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    // SAFETY: XFS_IOC_FSGEOMETRY_V4 fills a `struct xfs_fsop_geom_v4`, mirrored by `XfsGeomV4`.
    let geom = unsafe { ioctl(&fd, Getter::<XFS_IOC_FSGEOMETRY_V4, XfsGeomV4>::new()) }?;
    Ok(geom.flags & XFS_GEOM_FLAGS_REFLINK != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structure_sizes_match_the_kernel() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
        assert_eq!(std::mem::size_of::<XfsGeomV4>(), 112);
        assert_eq!(std::mem::offset_of!(XfsGeomV4, flags), 92);
        assert_eq!(LOOP_CONFIGURE as u64, 0x4C0A);
        assert_eq!(LOOP_CTL_GET_FREE as u64, 0x4C82);
        assert_eq!(XFS_IOC_FSGEOMETRY_V4 as u64, 0x8070_587C);
    }
}
