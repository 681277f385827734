//! `snapshot run --in-place`: a command started in a private mount namespace of its own, where
//! read-only binds cover the original paths. The namespace is made between fork and exec
//! (`pre_exec`), so it holds the command and its children only, and the binds vanish with the
//! last of them: nothing to unmount, nothing that can leak.
#![allow(unsafe_code)]

use rustix::mount::{mount_bind, mount_change, mount_remount, MountFlags, MountPropagationFlags};
use rustix::thread::UnshareFlags;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Makes `cmd` start in a new mount namespace in which every mount is private (nothing made
/// there propagates back to the caller's namespace) and each `(source, target)` of `binds`,
/// in order, is bound non-recursively over `target` and made read-only, nosuid, nodev. The
/// child then changes to its working directory again, so that a relative path it starts from
/// resolves in the binds too. Fails here on a path with a NUL byte; a failing bind makes the
/// spawn fail with that bind's error.
pub fn in_private_namespace(cmd: &mut Command, binds: &[(PathBuf, PathBuf)]) -> io::Result<()> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} holds a NUL byte", p.display()),
            )
        })
    };
    let binds = binds
        .iter()
        .map(|(s, t)| Ok((c(s)?, c(t)?)))
        .collect::<io::Result<Vec<_>>>()?;
    let cwd = std::env::current_dir().ok().and_then(|d| c(&d).ok());
    let flags = MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV;
    // SAFETY: the closure runs in the forked child before exec. It allocates nothing (the
    // paths were made into C strings above) and makes only system calls — unshare(2),
    // mount(2), chdir(2) — which are async-signal-safe, so it is sound even though the parent
    // has other threads. It touches no state shared with the parent.
    unsafe {
        cmd.pre_exec(move || {
            // SAFETY: NEWNS alone unshares no file descriptor table (the caveat of
            // `unshare_unsafe` is about UnshareFlags::FILES).
            rustix::thread::unshare_unsafe(UnshareFlags::NEWNS)?;
            mount_change(
                c"/",
                MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
            )?;
            for (source, target) in &binds {
                mount_bind(source.as_c_str(), target.as_c_str())?;
                mount_remount(target.as_c_str(), flags, c"")?;
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
