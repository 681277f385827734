//! FIFREEZE / FITHAW / FICLONE: the generic VFS ioctls (linux/fs.h).
#![allow(unsafe_code)]

use rustix::ioctl::{ioctl, opcode, IntegerSetter, NoArg, Opcode};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

// _IOWR('X', 119, int), _IOWR('X', 120, int): the argument is ignored by the kernel.
const FIFREEZE: Opcode = opcode::read_write::<rustix::ffi::c_int>(b'X', 119);
const FITHAW: Opcode = opcode::read_write::<rustix::ffi::c_int>(b'X', 120);
// _IOW(0x94, 9, int): the argument is the source file descriptor.
const FICLONE: Opcode = opcode::write::<rustix::ffi::c_int>(0x94, 9);

fn open_dir(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// Freezes the filesystem mounted at `path` (every write to it blocks until thawed).
pub fn freeze_filesystem(path: &Path) -> io::Result<()> {
    let f = open_dir(path)?;
    // SAFETY: FIFREEZE takes no argument the kernel reads; `f` is a valid open descriptor.
    unsafe { ioctl(&f, NoArg::<FIFREEZE>::new()) }.map_err(Into::into)
}

/// Thaws the filesystem mounted at `path`. EINVAL (not frozen) is success: thawing is
/// idempotent, so a watchdog and the session may both try.
pub fn thaw_filesystem(path: &Path) -> io::Result<()> {
    let f = open_dir(path)?;
    // SAFETY: as for FIFREEZE.
    match unsafe { ioctl(&f, NoArg::<FITHAW>::new()) } {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Makes `dest` share `src`'s extents (a reflink copy: instant, copy-on-write).
pub fn clone_file(src: &File, dest: &File) -> io::Result<()> {
    // SAFETY: FICLONE's argument is an integer (the source descriptor), passed by value.
    unsafe {
        ioctl(
            dest,
            IntegerSetter::<FICLONE>::new_usize(src.as_raw_fd() as usize),
        )
    }
    .map_err(Into::into)
}
