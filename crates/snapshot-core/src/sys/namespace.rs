//! `snapshot run --in-place`: a command started in a private mount namespace of its own, where
//! read-only snapshots cover the original paths. The namespace is made between fork and exec
//! (`pre_exec`), so it holds the command and its children only, and the mounts vanish with the
//! last of them: nothing to unmount, nothing that can leak.
//!
//! The snapshots arrive as detached mount trees cloned from the view in the parent; the child
//! attaches each onto its DIR, looked up again in the new namespace without following a
//! symlink and checked to be the directory validated at the start (device and inode), so a DIR
//! swapped meanwhile makes the spawn fail instead of covering something else.
//!
//! With `/` among the DIRs the command's root *becomes* the view (docs/DESIGN.md §2.4): the
//! child finds the view on TARGET (checked by identity), binds the live `/proc`, `/sys`,
//! `/dev`, `/run`, `/tmp` and the `--writable` paths into it, and `pivot_root`s there.
#![allow(unsafe_code)]

use super::DetachedMount;
use rustix::fs::{fstat, openat2, Mode, OFlags, ResolveFlags, CWD};
use rustix::io::Errno;
use rustix::mount::{mount_change, move_mount, MountPropagationFlags, MoveMountFlags};
use rustix::thread::UnshareFlags;
use std::ffi::CString;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What `snapshot run --in-place` puts in the command's namespace, in this order.
#[derive(Debug, Default)]
pub struct InPlace {
    /// `/` is a DIR: the command's root becomes the view.
    pub new_root: Option<NewRoot>,
    /// With a `new_root`: the live `/proc`, `/dev`… the command needs, bound first.
    pub system: Vec<LiveBind>,
    /// Snapshots over DIRs, parents first. With a `new_root` the view shows them already,
    /// but for those inside a `system` path, which would hide them.
    pub binds: Vec<InPlaceBind>,
    /// Live trees bound writable at their own paths, over everything else, parents first.
    pub writable: Vec<LiveBind>,
}

/// The view that becomes the command's root.
#[derive(Debug)]
pub struct NewRoot {
    /// TARGET, canonical.
    pub target: PathBuf,
    /// Device and inode of the root of `/`'s snapshot in the view (what TARGET must show).
    pub identity: (u64, u64),
}

/// A live directory the command needs as it is (its cache, a local repository, `/proc`).
#[derive(Debug)]
pub struct LiveBind {
    /// A recursive clone of it, writable.
    pub tree: DetachedMount,
    /// Its path (absolute, canonical), where it goes in the command's namespace.
    pub path: PathBuf,
}

/// One snapshot to put over a DIR in the command's namespace.
#[derive(Debug)]
pub struct InPlaceBind {
    /// The DIR's snapshot, read-only (a clone of its place in the view).
    pub tree: DetachedMount,
    /// The DIR, canonical.
    pub dir: PathBuf,
    /// Device and inode of the DIR as validated.
    pub identity: (u64, u64),
}

fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} holds a NUL byte", p.display()),
        )
    })
}

/// Makes `cmd` start in a new mount namespace in which every mount is private (nothing made
/// there propagates back to the caller's namespace) and each of `binds`, in order (parents
/// first), covers its DIR — or, with a `new_root`, whose root is the view — and each `live`
/// tree is bound at its path. The child then changes to its working directory again, so that
/// a relative path it starts from resolves in the snapshots too. Fails here on a path with a
/// NUL byte; a DIR or TARGET that changed makes the spawn fail with `ESTALE` (`ELOOP` for a
/// symlink), a live path missing in the view with `ENOENT`.
pub fn in_private_namespace(cmd: &mut Command, in_place: InPlace) -> io::Result<()> {
    let prepared = Prepared::from(in_place)?;
    // SAFETY: the closure runs in the forked child before exec. It allocates nothing (the
    // paths were made into C strings before, the trees are descriptors) and makes only system
    // calls — unshare(2), mount(2), openat2(2), fstat(2), move_mount(2), fchdir(2),
    // pivot_root(2), umount2(2), chdir(2) — which are async-signal-safe, so it is sound even
    // though the parent has other threads. It touches no state shared with the parent.
    unsafe {
        cmd.pre_exec(move || prepared.enter());
    }
    Ok(())
}

/// A DIR's snapshot to attach: the tree, the DIR, its identity, the earlier DIR it lies below
/// (index, path relative to it), its path relative to `/`.
type DirBind = (
    DetachedMount,
    CString,
    (u64, u64),
    Option<(usize, CString)>,
    CString,
);

/// A live tree to attach: the tree, its path, its path relative to `/`.
type LiveTree = (DetachedMount, CString, CString);

/// [`InPlace`] with every path a C string, so that the child allocates nothing.
struct Prepared {
    new_root: Option<(CString, (u64, u64))>,
    system: Vec<LiveTree>,
    binds: Vec<DirBind>,
    writable: Vec<LiveTree>,
    cwd: Option<CString>,
}

impl Prepared {
    fn from(in_place: InPlace) -> io::Result<Self> {
        let InPlace {
            new_root,
            system,
            binds,
            writable,
        } = in_place;
        let dirs: Vec<PathBuf> = binds.iter().map(|b| b.dir.clone()).collect();
        let mut prepared = Vec::new();
        for (i, b) in binds.into_iter().enumerate() {
            // A DIR below an earlier one lies in that one's snapshot once it is attached: its
            // place is looked up beneath that snapshot (the innermost such DIR).
            let under = (0..i)
                .rev()
                .find(|&j| b.dir.starts_with(&dirs[j]))
                .map(|j| Ok::<_, io::Error>((j, c_path(relative_to(&b.dir, &dirs[j]))?)))
                .transpose()?;
            let rel = c_path(relative_to(&b.dir, Path::new("/")))?;
            prepared.push((b.tree, c_path(&b.dir)?, b.identity, under, rel));
        }
        let live = |trees: Vec<LiveBind>| {
            trees
                .into_iter()
                .map(|l| {
                    let rel = relative_to(&l.path, Path::new("/"));
                    Ok((l.tree, c_path(&l.path)?, c_path(rel)?))
                })
                .collect::<io::Result<Vec<_>>>()
        };
        Ok(Self {
            new_root: new_root
                .map(|r| Ok::<_, io::Error>((c_path(&r.target)?, r.identity)))
                .transpose()?,
            system: live(system)?,
            binds: prepared,
            writable: live(writable)?,
            cwd: std::env::current_dir().ok().and_then(|d| c_path(&d).ok()),
        })
    }

    /// In the child: a namespace of its own, every DIR checked, the view found (with `/`),
    /// the trees attached, the root pivoted, the working directory entered again.
    fn enter(&self) -> io::Result<()> {
        // SAFETY: NEWNS alone unshares no file descriptor table (the caveat of
        // `unshare_unsafe` is about UnshareFlags::FILES).
        unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNS)? };
        mount_change(
            c"/",
            MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
        )?;
        self.check_dirs()?;
        let top = self.find_view()?;
        for (tree, path, rel) in &self.system {
            attach(tree, &place(top.as_ref(), path, rel)?)?;
        }
        for (tree, dir, _, under, rel) in &self.binds {
            let at = match under {
                None => place(top.as_ref(), dir, rel)?,
                Some((j, below)) => beneath(self.binds[*j].0.root(), below)?,
            };
            attach(tree, &at)?;
        }
        for (tree, path, rel) in &self.writable {
            attach(tree, &place(top.as_ref(), path, rel)?)?;
        }
        if let Some(top) = &top {
            pivot_into(top)?;
        }
        if let Some(cwd) = &self.cwd {
            // A directory gone or covered differently: stay where the kernel put us.
            let _ = rustix::process::chdir(cwd.as_c_str());
        }
        Ok(())
    }

    /// Every DIR must still be the directory validated, before anything covers it.
    fn check_dirs(&self) -> io::Result<()> {
        for (_, dir, identity, _, _) in &self.binds {
            check_identity(
                &openat2(CWD, dir.as_c_str(), dir_flags(), Mode::empty(), nofollow())?,
                *identity,
            )?;
        }
        Ok(())
    }

    /// With `/` as a DIR: the view on TARGET, which must still show `/`'s snapshot.
    fn find_view(&self) -> io::Result<Option<rustix::fd::OwnedFd>> {
        let Some((target, identity)) = &self.new_root else {
            return Ok(None);
        };
        let top = openat2(
            CWD,
            target.as_c_str(),
            dir_flags(),
            Mode::empty(),
            nofollow(),
        )?;
        check_identity(&top, *identity)?;
        Ok(Some(top))
    }
}

fn check_identity(at: &rustix::fd::OwnedFd, identity: (u64, u64)) -> io::Result<()> {
    let st = fstat(at)?;
    if (st.st_dev, st.st_ino) != identity {
        return Err(Errno::STALE.into());
    }
    Ok(())
}

/// Where `path` (or `rel`, beneath the new root `top`) is in the command's namespace now.
fn place(
    top: Option<&rustix::fd::OwnedFd>,
    path: &CString,
    rel: &CString,
) -> io::Result<rustix::fd::OwnedFd> {
    Ok(match top {
        None => openat2(CWD, path.as_c_str(), dir_flags(), Mode::empty(), nofollow())?,
        Some(top) => beneath(top.as_fd(), rel)?,
    })
}

/// `rel` beneath `root`, without symlinks.
fn beneath(root: std::os::fd::BorrowedFd<'_>, rel: &CString) -> io::Result<rustix::fd::OwnedFd> {
    Ok(openat2(
        root,
        rel.as_c_str(),
        dir_flags(),
        Mode::empty(),
        nofollow() | ResolveFlags::BENEATH,
    )?)
}

fn attach(tree: &DetachedMount, at: &rustix::fd::OwnedFd) -> io::Result<()> {
    Ok(move_mount(
        tree.root(),
        c"",
        at.as_fd(),
        c"",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )?)
}

/// pivot_root(".", "."): the old root ends up stacked on the new one, and detaching it
/// leaves the view as the root (no directory for the old root needed in a read-only
/// snapshot).
fn pivot_into(top: &rustix::fd::OwnedFd) -> io::Result<()> {
    rustix::process::fchdir(top)?;
    rustix::process::pivot_root(c".", c".")?;
    rustix::mount::unmount(c".", rustix::mount::UnmountFlags::DETACH)?;
    rustix::process::chdir(c"/")?;
    Ok(())
}

fn dir_flags() -> OFlags {
    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC
}

fn nofollow() -> ResolveFlags {
    ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// `dir` relative to its ancestor `base` (`.` for the same directory).
fn relative_to<'a>(dir: &'a Path, base: &Path) -> &'a Path {
    match dir.strip_prefix(base) {
        Ok(r) if !r.as_os_str().is_empty() => r,
        _ => Path::new("."),
    }
}
