//! Thin safe wrappers over the kernel interfaces the engine and providers use: mount(2),
//! umount2(2), the descriptor-based mount API and openat2(2) (`mountfd.rs`), statx(2),
//! statmount(2), unshare(2) and the ioctls. This is the one module
//! allowed to hold `unsafe` code (ioctls whose argument structures rustix does not know, the
//! statmount syscall it has no binding for, the `pre_exec` of `snapshot run --in-place`);
//! everything else calls these.

mod fsfreeze;
pub use fsfreeze::{clone_file, freeze_filesystem, thaw_filesystem};
mod loopdev;
pub use loopdev::{
    attach_read_only, detach_loop, loop_status, xfs_has_reflink, AttachedLoop, LoopStatus,
};

pub mod ioctl;
mod namespace;
pub use namespace::{in_private_namespace, InPlace, InPlaceBind, LiveBind, NewRoot};
mod mountfd;
pub use mountfd::{
    clone_beneath, clone_live_mount, detach_fd_mount, dir_is_empty, fd_path, file_identity,
    lookup_failure, make_dir_in, mount_ids_of, open_dir_beneath, open_dir_nofollow,
    seal_superblock, stat_identity, DetachedMount, MountIds,
};
pub mod statmount;
pub use statmount::{path_mount, statmount, PathMount, StatMount};
mod unmount;
pub use unmount::{unmount_patiently, unmount_patiently_as, UnmountError};

use rustix::fs::{statx, AtFlags, StatxFlags, CWD};
use rustix::mount::{
    mount, mount_bind, mount_change, mount_remount, MountFlags, MountPropagationFlags, UnmountFlags,
};
use std::io;
use std::path::Path;

/// The mount id (as in mountinfo) of the mount that holds `path`. Unlike `st_dev`, it tells
/// bind mounts and btrfs subvolume mounts apart.
pub fn mount_id(path: &Path) -> io::Result<u64> {
    let st = statx(CWD, path, AtFlags::empty(), StatxFlags::MNT_ID)?;
    if st.stx_mask & StatxFlags::MNT_ID.bits() == 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the kernel did not report a mount id (statx STATX_MNT_ID needs Linux 5.8)",
        ));
    }
    Ok(st.stx_mnt_id)
}

/// Whether `path` is a mount point (its mount differs from its parent's); false when it does
/// not exist. One statx each, instead of reading the whole mount table.
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    let Some(parent) = path.parent() else {
        return Ok(true);
    };
    match mount_id(path) {
        Ok(id) => Ok(id != mount_id(parent)?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Read-only flags for every view mount: no device nodes, no set-uid.
fn view_flags() -> MountFlags {
    MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV
}

/// Non-recursive bind of `source` at `target`, made private at once (so that nothing mounted
/// under it propagates back to the source's peers) and then read-only.
pub fn bind_readonly(source: &Path, target: &Path) -> io::Result<()> {
    mount_bind(source, target)?;
    let rest = make_private(target).and_then(|()| {
        mount_remount(target, view_flags() | MountFlags::BIND, "").map_err(io::Error::from)
    });
    if let Err(e) = rest {
        let _ = rustix::mount::unmount(target, UnmountFlags::empty());
        return Err(e);
    }
    Ok(())
}

/// Mounts a filesystem read-only (`mount -t FSTYPE -o ro,DATA SOURCE TARGET`), made private.
pub fn mount_readonly(source: &Path, target: &Path, fstype: &str, data: &str) -> io::Result<()> {
    let data = std::ffi::CString::new(data)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in mount options"))?;
    mount(source, target, fstype, view_flags(), data.as_c_str())?;
    if let Err(e) = make_private(target) {
        let _ = rustix::mount::unmount(target, UnmountFlags::empty());
        return Err(e);
    }
    Ok(())
}

pub fn make_private(target: &Path) -> io::Result<()> {
    mount_change(target, MountPropagationFlags::PRIVATE).map_err(Into::into)
}

/// Unmounts `target` (not lazily: a busy mount is an error the caller reports).
pub fn unmount_path(target: &Path) -> io::Result<()> {
    unmount(target, false, false)
}

/// Detaches `target` lazily: last resort for a busy mount.
pub fn detach_path(target: &Path) -> io::Result<()> {
    unmount(target, false, true)
}

/// umount2(2) of `target`, lazily with `detach`. With `follow` a symlink at its end is
/// followed: for `/proc/self/fd/N` paths, which name a descriptor's mount, not a place a user
/// could change; otherwise it is not.
pub fn unmount(target: &Path, follow: bool, detach: bool) -> io::Result<()> {
    let mut flags = UnmountFlags::empty();
    if !follow {
        flags |= UnmountFlags::NOFOLLOW;
    }
    if detach {
        flags |= UnmountFlags::DETACH;
    }
    rustix::mount::unmount(target, flags).map_err(Into::into)
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
