//! Mounting through file descriptors (Linux ≥ 5.12 for `mount_setattr`; the rest 5.2/5.6):
//! paths a user may swap at any moment are opened once, without following symlinks, and
//! every later step works on the descriptor, so a mount lands where the session meant it to
//! or nowhere (README "Security").
//!
//! - [`open_dir_nofollow`], [`open_dir_beneath`]: `openat2` with `RESOLVE_NO_SYMLINKS`
//!   (and `RESOLVE_BENEATH` below a directory descriptor).
//! - [`DetachedMount`]: a mount tree attached nowhere (`open_tree(OPEN_TREE_CLONE)` of a
//!   directory, or a fresh tmpfs from `fsopen`/`fsmount`), made read-only before anyone can
//!   see it, then attached with `move_mount` onto a directory descriptor.
#![allow(unsafe_code)]

use rustix::fs::{openat2, statx, AtFlags, Mode, OFlags, ResolveFlags, StatxFlags, CWD};
use rustix::mount::{
    fsconfig_create, fsconfig_reconfigure, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen,
    fspick, move_mount, open_tree, FsMountFlags, FsOpenFlags, FsPickFlags, MountAttrFlags,
    MoveMountFlags, OpenTreeFlags,
};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

fn nofollow() -> ResolveFlags {
    ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

fn dir_flags() -> OFlags {
    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC
}

/// Opens the directory at the absolute `path` (`O_PATH`), failing with `ELOOP` when any
/// component is a symlink: the path must already be canonical.
pub fn open_dir_nofollow(path: &Path) -> io::Result<OwnedFd> {
    Ok(openat2(CWD, path, dir_flags(), Mode::empty(), nofollow())?)
}

/// Opens the directory `rel` beneath `dir` (`O_PATH`) without following any symlink and
/// without leaving `dir` (`..` may not climb above it); with `cross_mounts` false it may not
/// cross a mount either. An empty `rel` opens `dir` itself.
pub fn open_dir_beneath(
    dir: BorrowedFd<'_>,
    rel: &Path,
    cross_mounts: bool,
) -> io::Result<OwnedFd> {
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let mut resolve = nofollow() | ResolveFlags::BENEATH;
    if !cross_mounts {
        resolve |= ResolveFlags::NO_XDEV;
    }
    Ok(openat2(dir, rel, dir_flags(), Mode::empty(), resolve)?)
}

/// Creates the directory `name` (one component, no `/`) in the directory `parent` (mode 0755)
/// and opens it; an existing directory is opened as it is.
pub fn make_dir_in(parent: BorrowedFd<'_>, name: &std::ffi::OsStr) -> io::Result<OwnedFd> {
    // `mkdirat` needs a real directory descriptor, not O_PATH.
    let dir = openat2(
        parent,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        nofollow(),
    )?;
    match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    open_dir_beneath(dir.as_fd(), Path::new(name), false)
}

/// Whether the directory behind `dir` has no entries.
pub fn dir_is_empty(dir: BorrowedFd<'_>) -> io::Result<bool> {
    let fd = openat2(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        nofollow(),
    )?;
    for e in rustix::fs::Dir::read_from(&fd)? {
        let name = e?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The identity of the mount that `fd` lies on: statx's unique mount id where the kernel has
/// one (Linux 6.8; never reused), else the reusable one (as in mountinfo), and that one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountIds {
    /// Unique where available, else equal to `reusable`.
    pub unique: u64,
    pub reusable: u64,
}

pub fn mount_ids_of(fd: BorrowedFd<'_>) -> io::Result<MountIds> {
    let reusable = statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID)?;
    if reusable.stx_mask & StatxFlags::MNT_ID.bits() == 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the kernel did not report a mount id (statx STATX_MNT_ID needs Linux 5.8)",
        ));
    }
    // STATX_MNT_ID_UNIQUE (Linux 6.8), which rustix does not name.
    const UNIQUE: u32 = 0x4000;
    let unique = match statx(
        fd,
        "",
        AtFlags::EMPTY_PATH,
        StatxFlags::from_bits_retain(UNIQUE),
    ) {
        Ok(st) if st.stx_mask & UNIQUE != 0 => st.stx_mnt_id,
        _ => reusable.stx_mnt_id,
    };
    Ok(MountIds {
        unique,
        reusable: reusable.stx_mnt_id,
    })
}

/// Why a lookup without symlinks ([`open_dir_nofollow`], [`open_dir_beneath`]) failed, in
/// words: what the user who changed the path did.
pub fn lookup_failure(e: &io::Error) -> String {
    use rustix::io::Errno;
    let is = |errno: Errno| e.raw_os_error() == Some(errno.raw_os_error());
    if is(Errno::LOOP) {
        "a symlink is on its path".into()
    } else if is(Errno::NOENT) {
        "it is gone".into()
    } else if is(Errno::NOTDIR) {
        "it is not a directory".into()
    } else if is(Errno::XDEV) {
        "it leads out of the tree".into()
    } else {
        e.to_string()
    }
}

/// Device and inode of what `fd` refers to: tells whether a path still leads to the object
/// opened earlier.
pub fn file_identity(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    Ok(stat_identity(&rustix::fs::fstat(fd)?))
}

/// Device and inode of a `stat` result.
pub fn stat_identity(st: &rustix::fs::Stat) -> (u64, u64) {
    #[allow(clippy::unnecessary_cast)] // c_ulong on some targets
    (st.st_dev as u64, st.st_ino as u64)
}

/// `/proc/self/fd/N/REL`: a path that starts at an open descriptor. Only for the calls that
/// have no descriptor form (umount2): walking it follows the descriptor, not a name someone
/// could have renamed. `REL` must lie in a tree that cannot change (the sealed view).
pub fn fd_path(fd: BorrowedFd<'_>, rel: &Path) -> PathBuf {
    let base = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    if rel.as_os_str().is_empty() {
        base
    } else {
        base.join(rel)
    }
}

/// A mount tree attached nowhere: invisible to everyone until [`attach`](Self::attach)ed; the
/// kernel frees it if the descriptor is dropped unattached, so an error path leaks nothing.
#[derive(Debug)]
pub struct DetachedMount(OwnedFd);

/// View mounts are read-only and honour no device nodes or set-uid bits.
fn view_attrs() -> u64 {
    (MountAttrFlags::MOUNT_ATTR_RDONLY
        | MountAttrFlags::MOUNT_ATTR_NOSUID
        | MountAttrFlags::MOUNT_ATTR_NODEV)
        .bits() as u64
}

impl DetachedMount {
    /// A non-recursive clone of the mount at `dir` (the directory `dir` refers to becomes the
    /// clone's root), made read-only, nosuid, nodev before it is attached anywhere.
    pub fn clone_readonly(dir: BorrowedFd<'_>) -> io::Result<Self> {
        let fd = open_tree(
            dir,
            "",
            OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_EMPTY_PATH,
        )?;
        mount_setattr(fd.as_fd(), view_attrs(), 0, 0)?;
        Ok(Self(fd))
    }

    /// A recursive clone of the tree at `dir`, as it is — writable if it was (a live path a
    /// command needs: `/proc`, its cache, a local repository).
    pub fn clone_live(dir: BorrowedFd<'_>) -> io::Result<Self> {
        let fd = open_tree(
            dir,
            "",
            OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_EMPTY_PATH
                | OpenTreeFlags::AT_RECURSIVE,
        )?;
        Ok(Self(fd))
    }

    /// A fresh tmpfs (mode 0755, 1 MiB, nosuid, nodev, noexec) named `name` in the mount
    /// table: the view's skeleton of directories.
    pub fn new_tmpfs(name: &str) -> io::Result<Self> {
        let fs = fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC)?;
        fsconfig_set_string(&fs, "source", name)?;
        fsconfig_set_string(&fs, "mode", "0755")?;
        fsconfig_set_string(&fs, "size", "1m")?;
        fsconfig_create(&fs)?;
        let fd = fsmount(
            &fs,
            FsMountFlags::FSMOUNT_CLOEXEC,
            MountAttrFlags::MOUNT_ATTR_NOSUID
                | MountAttrFlags::MOUNT_ATTR_NODEV
                | MountAttrFlags::MOUNT_ATTR_NOEXEC,
        )?;
        Ok(Self(fd))
    }

    /// The tree's root, while detached (to fill a tmpfs before attaching it, say).
    pub fn root(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    /// Attaches the tree on top of the directory `at` refers to — that very directory, whatever
    /// its name is by now — and makes it private (nothing mounted under it later propagates to
    /// other mounts). Returns a descriptor of the attached tree's root.
    pub fn attach(self, at: BorrowedFd<'_>) -> io::Result<OwnedFd> {
        move_mount(
            self.0.as_fd(),
            "",
            at,
            "",
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
        )?;
        if let Err(e) = mount_setattr(self.0.as_fd(), 0, 0, MS_PRIVATE) {
            let _ = detach_fd_mount(self.0.as_fd());
            return Err(e);
        }
        Ok(self.0)
    }
}

/// Makes the superblock of the (tmpfs) mount whose root `root` refers to read-only.
pub fn seal_superblock(root: BorrowedFd<'_>) -> io::Result<()> {
    let fs = fspick(
        root,
        "",
        FsPickFlags::FSPICK_EMPTY_PATH | FsPickFlags::FSPICK_CLOEXEC,
    )?;
    fsconfig_set_flag(&fs, "ro")?;
    fsconfig_reconfigure(&fs)?;
    Ok(())
}

/// Lazily detaches the mount whose root `root` refers to (and what is mounted below it):
/// undoes an [`DetachedMount::attach`] that must not stand.
pub fn detach_fd_mount(root: BorrowedFd<'_>) -> io::Result<()> {
    rustix::mount::unmount(
        fd_path(root, Path::new("")).as_path(),
        rustix::mount::UnmountFlags::DETACH,
    )
    .map_err(Into::into)
}

const MS_PRIVATE: u64 = 1 << 18;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// The same number on every architecture but alpha (Linux 5.12's unified syscall table).
const SYS_MOUNT_SETATTR: std::ffi::c_long = 442;

/// mount_setattr(2) on the mount `fd` is the root of (attached or not): sets `attr_set`
/// and clears `attr_clr` (MOUNT_ATTR_*), sets the propagation type (0: unchanged). rustix has no binding for it.
fn mount_setattr(
    fd: BorrowedFd<'_>,
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
) -> io::Result<()> {
    use std::ffi::{c_int, c_long, c_uint};
    extern "C" {
        // The C library's generic system-call entry (std links it on Linux).
        fn syscall(number: c_long, ...) -> c_long;
    }
    let attr = MountAttr {
        attr_set,
        attr_clr,
        propagation,
        userns_fd: 0,
    };
    let flags: c_uint = AtFlags::EMPTY_PATH.bits();
    // SAFETY: the path is a valid NUL-terminated empty string, `attr` a live `#[repr(C)]`
    // mount_attr of the size passed, which the kernel only reads; nothing is retained.
    let ret = unsafe {
        syscall(
            SYS_MOUNT_SETATTR,
            fd.as_raw_fd() as c_int,
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A read-only clone of the directory `rel` inside the filesystem mounted at `root` (a path
/// only root can change: a staging mount under the session's runtime directory). `rel` is
/// looked up beneath `root` without following a symlink or crossing a mount: its components
/// lie in the snapshot, where a user may have put a symlink before the snapshot instant.
pub fn clone_beneath(root: &Path, rel: &Path) -> io::Result<DetachedMount> {
    let base = open_dir_nofollow(root)?;
    let dir = open_dir_beneath(base.as_fd(), rel, false).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "{:?} in the snapshot changed during the session: {}",
                rel,
                lookup_failure(&e)
            ),
        )
    })?;
    DetachedMount::clone_readonly(dir.as_fd())
}

/// A read-only clone of the live mount at `mount_point`, which must still be the mount with
/// the (mountinfo) id `mount_id` that planning saw; no symlink is followed on the way.
pub fn clone_live_mount(mount_point: &Path, mount_id: u64) -> io::Result<DetachedMount> {
    let dir = open_dir_nofollow(mount_point)?;
    let now = mount_ids_of(dir.as_fd())?.reusable;
    if now != mount_id {
        return Err(io::Error::other(format!(
            "{mount_point:?} is mount {now} now, not mount {mount_id} as planned"
        )));
    }
    DetachedMount::clone_readonly(dir.as_fd())
}
