//! `snapshot run --in-place`: a command started in a private mount namespace of its own, where
//! read-only snapshots cover the original paths. The namespace is made between fork and exec
//! (`pre_exec`), so it holds the command and its children only, and the mounts vanish with the
//! last of them: nothing to unmount, nothing that can leak.
//!
//! The snapshots arrive as detached mount trees cloned from the view in the parent; the child
//! attaches each onto its DIR, looked up again in the new namespace without following a
//! symlink and checked to be the directory validated at the start (device and inode), so a DIR
//! swapped meanwhile makes the spawn fail instead of covering something else.
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
/// first), covers its DIR. The child then changes to its working directory again, so that a
/// relative path it starts from resolves in the snapshots too. Fails here on a path with a NUL
/// byte; a DIR that changed makes the spawn fail with `ESTALE` (`ELOOP` for a symlink).
pub fn in_private_namespace(cmd: &mut Command, binds: Vec<InPlaceBind>) -> io::Result<()> {
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
        prepared.push((b.tree, c_path(&b.dir)?, b.identity, under));
    }
    let cwd = std::env::current_dir().ok().and_then(|d| c_path(&d).ok());
    // SAFETY: the closure runs in the forked child before exec. It allocates nothing (the
    // paths were made into C strings above, the trees are descriptors) and makes only system
    // calls — unshare(2), mount(2), openat2(2), fstat(2), move_mount(2), chdir(2) — which are
    // async-signal-safe, so it is sound even though the parent has other threads. It touches
    // no state shared with the parent.
    unsafe {
        cmd.pre_exec(move || {
            // SAFETY: NEWNS alone unshares no file descriptor table (the caveat of
            // `unshare_unsafe` is about UnshareFlags::FILES).
            rustix::thread::unshare_unsafe(UnshareFlags::NEWNS)?;
            mount_change(
                c"/",
                MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
            )?;
            // Every DIR must still be the directory validated, before anything covers it.
            for (_, dir, identity, _) in &prepared {
                let at = openat2(CWD, dir.as_c_str(), dir_flags(), Mode::empty(), nofollow())?;
                let st = fstat(&at)?;
                if (st.st_dev, st.st_ino) != *identity {
                    return Err(Errno::STALE.into());
                }
            }
            for (tree, dir, _, under) in &prepared {
                let at = match under {
                    None => openat2(CWD, dir.as_c_str(), dir_flags(), Mode::empty(), nofollow())?,
                    Some((j, rel)) => openat2(
                        prepared[*j].0.root(),
                        rel.as_c_str(),
                        dir_flags(),
                        Mode::empty(),
                        nofollow() | ResolveFlags::BENEATH,
                    )?,
                };
                move_mount(
                    tree.root(),
                    c"",
                    at.as_fd(),
                    c"",
                    MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH
                        | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
                )?;
            }
            if let Some(cwd) = &cwd {
                // A directory gone or covered differently: stay where the kernel put us.
                let _ = rustix::process::chdir(cwd.as_c_str());
            }
            Ok(())
        });
    }
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
