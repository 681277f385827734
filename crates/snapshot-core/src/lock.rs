//! One session per TARGET: an exclusive `flock` on a file named after the target. And the
//! directories that hold what `snapshot cleanup` acts on — journals, locks, liveness tokens,
//! scratch mounts, start-snapshot's state — which must be root's alone ([`private_dir`]).

use rustix::fs::{flock, AtFlags, FileType, FlockOperation, Mode, OFlags};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// Default directory for runtime state (locks, per-session scratch mounts, start-snapshot state).
pub const RUNTIME_DIR: &str = "/run/snapshot";

/// systemd-escape style name for a path: `/srv/a-b` → `srv-a\x2db`.
pub fn escape_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let trimmed = bytes.strip_prefix(b"/").unwrap_or(bytes);
    if trimmed.is_empty() {
        return "-".into();
    }
    let mut s = String::new();
    for (i, &b) in trimmed.iter().enumerate() {
        match b {
            b'/' => s.push('-'),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => s.push(b as char),
            b'.' if i > 0 => s.push('.'),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

/// A directory (or file) that should be root's alone and is not: others could forge what
/// `snapshot cleanup` acts on, or fake a session's liveness.
#[derive(Debug, thiserror::Error)]
pub enum PrivateDirError {
    /// It exists, but someone other than root could change what is in it.
    #[error("{path:?} {why}: snapshot keeps state there that only root may change, and refuses to use it; fix: {fix}")]
    Unsafe {
        path: PathBuf,
        why: String,
        fix: String,
    },
    #[error("{path:?}: {error}")]
    Io { path: PathBuf, error: io::Error },
}

impl From<PrivateDirError> for io::Error {
    fn from(e: PrivateDirError) -> Self {
        let kind = match &e {
            PrivateDirError::Unsafe { .. } => io::ErrorKind::PermissionDenied,
            PrivateDirError::Io { error, .. } => error.kind(),
        };
        io::Error::new(kind, e)
    }
}

fn io_error(path: &Path, e: impl Into<io::Error>) -> PrivateDirError {
    PrivateDirError::Io {
        path: path.to_owned(),
        error: e.into(),
    }
}

/// The fix for a directory of ours that is not private.
fn own_fix(path: &Path) -> String {
    format!("chown root:root {p} && chmod 0700 {p}", p = path.display())
}

/// Checks the directory `path` (just `fstat`ed as `st`). `own`: one of ours, which nobody but
/// its owner may write; otherwise a directory above one of ours, which others may write only
/// when it is sticky (`/tmp`: nobody can rename or remove what they do not own).
fn check_dir(path: &Path, st: &rustix::fs::Stat, own: bool) -> Result<(), PrivateDirError> {
    let mode = st.st_mode & 0o7777;
    let unsafe_because = |why: String| {
        let fix = if own {
            own_fix(path)
        } else {
            format!("chown root:root {p} && chmod go-w {p}", p = path.display())
        };
        Err(PrivateDirError::Unsafe {
            path: path.to_owned(),
            why,
            fix,
        })
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return unsafe_because("is not a directory".into());
    }
    if !crate::trust::trusted_owner(st.st_uid) {
        return unsafe_because(format!("is owned by uid {}, not by root", st.st_uid));
    }
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && (own || !sticky) {
        return unsafe_because(format!(
            "is writable by its group or others (mode {mode:04o})"
        ));
    }
    Ok(())
}

/// Opens `name` in `parent` (whose path is `path`'s parent) as one of our private
/// directories: created 0700 when missing (`create`), never through a symlink, owned by
/// root, writable by root alone; an existing one with permissions beyond 0700 is narrowed to
/// 0700 (when `create`). `Ok(None)`: missing and not `create`.
fn open_own(
    parent: BorrowedFd<'_>,
    path: &Path,
    name: &OsStr,
    create: bool,
) -> Result<Option<OwnedFd>, PrivateDirError> {
    let symlink = || PrivateDirError::Unsafe {
        path: path.to_owned(),
        why: "is a symbolic link".into(),
        fix: format!(
            "replace it with a directory: rm {p} && mkdir -m 0700 {p}",
            p = path.display()
        ),
    };
    match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => return Err(symlink()),
        Ok(_) => {}
        Err(rustix::io::Errno::NOENT) if create => {
            match rustix::fs::mkdirat(parent, name, Mode::RWXU) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(io_error(path, e)),
            }
        }
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(io_error(path, e)),
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(parent, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP) => return Err(symlink()),
        Err(rustix::io::Errno::NOTDIR) => {
            return Err(PrivateDirError::Unsafe {
                path: path.to_owned(),
                why: "is not a directory".into(),
                fix: format!("remove it: rm {}", path.display()),
            })
        }
        Err(rustix::io::Errno::NOENT) if !create => return Ok(None),
        Err(e) => return Err(io_error(path, e)),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| io_error(path, e))?;
    check_dir(path, &st, true)?;
    if create && st.st_mode & 0o077 != 0 {
        // Root's already and written by root alone: only others' reading goes.
        rustix::fs::fchmod(&fd, Mode::RWXU).map_err(|e| io_error(path, e))?;
    }
    Ok(Some(fd))
}

/// `path` made absolute, without `.` or `..`: its parent and its last name.
fn split_path(path: &Path) -> Result<(PathBuf, std::ffi::OsString), PrivateDirError> {
    let abs = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()
            .map_err(|e| io_error(path, e))?
            .join(path)
    };
    if abs.components().any(|c| c == Component::ParentDir) {
        return Err(io_error(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "`..` in a state directory"),
        ));
    }
    let abs: PathBuf = abs.components().collect();
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => Ok((parent.to_owned(), name.to_owned())),
        _ => Err(io_error(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "not a state directory"),
        )),
    }
}

/// Walks to `path`'s parent from `/`, one directory at a time without following a symlink
/// (the existing part of the path is made canonical first: symlinks above the directory, like
/// `/var/run`, are root's own), checking each on the way: none may be writable by others
/// unless sticky. Missing ones are created 0700 when `create`; `Ok(None)` otherwise.
fn open_parent(parent: &Path, create: bool) -> Result<Option<OwnedFd>, PrivateDirError> {
    let (existing, missing) = parent
        .ancestors()
        .find_map(|a| {
            let canonical = a.canonicalize().ok()?;
            let rest = parent.strip_prefix(a).ok()?.to_owned();
            Some((canonical, rest))
        })
        .ok_or_else(|| io_error(parent, io::Error::from(io::ErrorKind::NotFound)))?;
    let root = Path::new("/");
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut fd = rustix::fs::open(root, flags, Mode::empty()).map_err(|e| io_error(root, e))?;
    check_dir(
        root,
        &rustix::fs::fstat(&fd).map_err(|e| io_error(root, e))?,
        false,
    )?;
    let mut here = root.to_path_buf();
    let names = |p: &Path| -> Vec<std::ffi::OsString> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_owned()),
                _ => None,
            })
            .collect()
    };
    let (existing_names, missing_names) = (names(&existing), names(&missing));
    for (i, name) in existing_names.iter().chain(&missing_names).enumerate() {
        here.push(name);
        if i >= existing_names.len() {
            if !create {
                return Ok(None);
            }
            match rustix::fs::mkdirat(&fd, name.as_os_str(), Mode::RWXU) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(io_error(&here, e)),
            }
        }
        let next = rustix::fs::openat(
            &fd,
            name.as_os_str(),
            flags | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::NOENT if !create => None,
            e => Some(io_error(&here, e)),
        });
        fd = match next {
            Ok(fd) => fd,
            Err(None) => return Ok(None),
            Err(Some(e)) => return Err(e),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| io_error(&here, e))?;
        check_dir(&here, &st, false)?;
    }
    Ok(Some(fd))
}

/// Opens the directory `path` for state that only root may change, creating it (mode 0700)
/// and any missing directory above it: it is refused (with the command that fixes it) when it
/// is a symlink, is owned by anyone but root, or is writable by its group or others — or when
/// a directory above it is writable by others and not sticky.
pub fn private_dir(path: &Path) -> Result<OwnedFd, PrivateDirError> {
    let (parent, name) = split_path(path)?;
    let dir = open_parent(&parent, true)?.expect("created");
    Ok(open_own(dir.as_fd(), &parent.join(&name), &name, true)?.expect("created"))
}

/// [`private_dir`] without creating anything: `Ok(None)` when `path` does not exist.
pub fn check_private_dir(path: &Path) -> Result<Option<OwnedFd>, PrivateDirError> {
    let (parent, name) = split_path(path)?;
    match open_parent(&parent, false)? {
        Some(dir) => open_own(dir.as_fd(), &parent.join(&name), &name, false),
        None => Ok(None),
    }
}

/// The private directory `name` inside the private directory `parent` (at `parent_path`),
/// created 0700 when missing; checked like [`private_dir`].
pub fn private_subdir(
    parent: BorrowedFd<'_>,
    parent_path: &Path,
    name: &str,
) -> Result<OwnedFd, PrivateDirError> {
    Ok(open_own(parent, &parent_path.join(name), OsStr::new(name), true)?.expect("created"))
}

/// [`private_subdir`] without creating it: `Ok(None)` when it does not exist.
pub fn check_private_subdir(
    parent: BorrowedFd<'_>,
    parent_path: &Path,
    name: &str,
) -> Result<Option<OwnedFd>, PrivateDirError> {
    open_own(parent, &parent_path.join(name), OsStr::new(name), false)
}

/// The private directory `name` inside the private directory `base`, both checked like
/// [`private_dir`]: created 0700 when missing and `create`; otherwise `Ok(None)` when either is
/// missing. The state directory's `sessions/`, the runtime directory's `locks/` and `held/`,
/// and the liveness directory are such.
pub fn private_child(
    base: &Path,
    name: &str,
    create: bool,
) -> Result<Option<OwnedFd>, PrivateDirError> {
    if create {
        let dir = private_dir(base)?;
        return private_subdir(dir.as_fd(), base, name).map(Some);
    }
    match check_private_dir(base)? {
        Some(dir) => check_private_subdir(dir.as_fd(), base, name),
        None => Ok(None),
    }
}

/// Writes `data` to `path` (mode 0600) through `PATH.tmp` and a rename: a reader sees the old
/// content or the new, never half of it. `durable`: the file, then its directory, are synced,
/// so the new content survives a crash as soon as this returns.
pub fn write_private_atomic(path: &Path, data: &[u8], durable: bool) -> io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    {
        let mut f = create_private_file(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
    }
    std::fs::rename(&tmp, path)?;
    if durable {
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
    }
    Ok(())
}

/// Creates (or truncates) the file `path` for writing, mode 0600, without following a symlink
/// at its end; an existing file's mode is narrowed to 0600 too.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags((OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32)
        .open(path)?;
    if f.metadata()?.permissions().mode() & 0o7777 != 0o600 {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(f)
}

/// Checks a file of ours opened for reading (a journal, start-snapshot's state): a regular
/// file owned by root that nobody else may write.
pub fn check_private_file(path: &Path, file: &File) -> Result<(), PrivateDirError> {
    let st = rustix::fs::fstat(file).map_err(|e| io_error(path, e))?;
    let why = if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        "is not a regular file".to_owned()
    } else if !crate::trust::trusted_owner(st.st_uid) {
        format!("is owned by uid {}, not by root", st.st_uid)
    } else if st.st_mode & 0o022 != 0 {
        format!(
            "is writable by its group or others (mode {:04o})",
            st.st_mode & 0o7777
        )
    } else {
        return Ok(());
    };
    Err(PrivateDirError::Unsafe {
        path: path.to_owned(),
        why,
        fix: format!(
            "someone else may have written it: look at it, remove it, and check who can write {}",
            path.parent().unwrap_or(path).display()
        ),
    })
}

/// Opens `path` for reading without following a symlink at its end.
fn open_nofollow(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32)
        .open(path)
}

/// Opens `path` for reading without following a symlink at its end, and checks it with
/// [`check_private_file`].
pub fn open_private_file(path: &Path) -> Result<File, PrivateDirError> {
    let f = open_nofollow(path).map_err(|e| io_error(path, e))?;
    check_private_file(path, &f)?;
    Ok(f)
}

/// Held for the life of a session; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct TargetLock {
    _file: File,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("target {target:?} is in use by another snapshot session (lock {lock:?})")]
    Busy { target: PathBuf, lock: PathBuf },
    #[error("lock {lock:?}: {error}")]
    Io { lock: PathBuf, error: io::Error },
}

pub fn lock_path(runtime_dir: &Path, target: &Path) -> PathBuf {
    runtime_dir
        .join("locks")
        .join(format!("{}.lock", escape_path(target)))
}

impl TargetLock {
    pub fn acquire(runtime_dir: &Path, target: &Path) -> Result<Self, LockError> {
        let path = lock_path(runtime_dir, target);
        let io_err = |source| LockError::Io {
            lock: path.clone(),
            error: source,
        };
        // The runtime directory and its `locks/` are root's alone, like everything in them.
        let locks = private_child(runtime_dir, "locks", true)
            .map_err(|e| io_err(e.into()))?
            .expect("created");
        let name = path.file_name().expect("a lock file name");
        let file = rustix::fs::openat(
            &locks,
            name,
            OFlags::CREATE | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        )
        .map(File::from)
        .map_err(|e| io_err(e.into()))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Self { _file: file, path }),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(LockError::Busy {
                target: target.to_owned(),
                lock: path,
            }),
            Err(e) => Err(io_err(e.into())),
        }
    }

    /// Removes the lock file of `target` when no session holds it: taken first, unlinked while
    /// held. Only for targets no other session will ever name (a `snapshot run`'s private
    /// target, which is new each time): a lock file shared by sessions stays, because one that
    /// opened it just before the unlink would lock a file the next one no longer finds.
    /// `Ok(false)`: held by a session, left.
    pub fn remove_unused(runtime_dir: &Path, target: &Path) -> io::Result<bool> {
        let path = lock_path(runtime_dir, target);
        // Through the checked root-only `locks/`, as `acquire` opens it: never in a directory
        // someone else could have replaced.
        let Some(locks) = private_child(runtime_dir, "locks", false).map_err(io::Error::from)?
        else {
            return Ok(true);
        };
        let name = path.file_name().expect("a lock file name");
        let file = match rustix::fs::openat(
            &locks,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Err(rustix::io::Errno::NOENT) => return Ok(true),
            other => File::from(other?),
        };
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        match rustix::fs::unlinkat(&locks, name, AtFlags::empty()) {
            Err(e) if e != rustix::io::Errno::NOENT => Err(e.into()),
            _ => Ok(true),
        }
    }

    /// True when a live session holds the lock for `target` (probed without creating anything).
    pub fn is_held(runtime_dir: &Path, target: &Path) -> bool {
        let path = lock_path(runtime_dir, target);
        let Ok(file) = open_nofollow(&path) else {
            return false;
        };
        match flock(&file, FlockOperation::NonBlockingLockShared) {
            Ok(()) => false,
            Err(e) => e == rustix::io::Errno::WOULDBLOCK,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapshot_testkit::{mode_of, set_mode};

    #[test]
    fn escapes_paths_like_systemd() {
        assert_eq!(escape_path(Path::new("/srv/a-b")), "srv-a\\x2db");
        assert_eq!(escape_path(Path::new("/")), "-");
        assert_eq!(escape_path(Path::new("/mnt/.x y")), "mnt-.x\\x20y");
    }

    #[test]
    fn second_lock_on_one_target_is_busy() {
        let rt = tempfile::tempdir().unwrap();
        let t = Path::new("/some/target");
        let first = TargetLock::acquire(rt.path(), t).unwrap();
        assert!(TargetLock::is_held(rt.path(), t));
        assert!(matches!(
            TargetLock::acquire(rt.path(), t),
            Err(LockError::Busy { .. })
        ));
        drop(first);
        assert!(!TargetLock::is_held(rt.path(), t));
        TargetLock::acquire(rt.path(), t).unwrap();
    }

    /// The refusal names the directory and how to fix it.
    fn assert_refused(r: Result<impl std::fmt::Debug, PrivateDirError>, dir: &Path, why: &str) {
        let e = r.expect_err("refused");
        let msg = e.to_string();
        assert!(matches!(e, PrivateDirError::Unsafe { .. }), "{msg}");
        assert!(msg.contains(&format!("{dir:?}")), "names {dir:?}: {msg}");
        assert!(msg.contains(why), "says {why:?}: {msg}");
    }

    #[test]
    fn private_dirs_are_created_0700_and_narrowed_to_0700() {
        let t = tempfile::tempdir().unwrap();
        let deep = t.path().join("a/b/state");
        assert!(check_private_dir(&deep).unwrap().is_none());
        assert!(!t.path().join("a").exists(), "a check creates nothing");
        private_dir(&deep).unwrap();
        for d in [t.path().join("a"), t.path().join("a/b"), deep.clone()] {
            assert_eq!(mode_of(&d), 0o700, "{d:?}");
        }
        assert!(check_private_dir(&deep).unwrap().is_some());
        // Root's already and written by nobody else: others' reading goes.
        let open = t.path().join("readable");
        std::fs::create_dir(&open).unwrap();
        set_mode(&open, 0o755);
        private_dir(&open).unwrap();
        assert_eq!(mode_of(&open), 0o700);
        let fd = private_dir(t.path()).unwrap();
        let sub = private_subdir(fd.as_fd(), t.path(), "sub").unwrap();
        drop(sub);
        assert_eq!(mode_of(&t.path().join("sub")), 0o700);
        assert!(check_private_subdir(fd.as_fd(), t.path(), "none")
            .unwrap()
            .is_none());
        // `.` is dropped; `..` is refused.
        private_dir(&t.path().join("./dot")).unwrap();
        assert!(private_dir(&t.path().join("a/../b")).is_err());
    }

    #[test]
    fn private_dirs_others_can_write_are_refused() {
        let t = tempfile::tempdir().unwrap();
        for m in [0o770, 0o707, 0o1777, 0o720] {
            let d = t.path().join(format!("m{m:o}"));
            std::fs::create_dir(&d).unwrap();
            set_mode(&d, m);
            assert_refused(private_dir(&d), &d, "writable by its group or others");
            assert_refused(check_private_dir(&d), &d, "chmod 0700");
            assert_eq!(mode_of(&d), m, "a refused directory is left as it was");
            // Nor can one be a parent of ours, unless sticky: what is in it could be swapped.
            if m & 0o1000 == 0 {
                assert_refused(
                    private_dir(&d.join("state")),
                    &d,
                    "writable by its group or others",
                );
                assert!(!d.join("state").exists());
            }
        }
        // A sticky directory above ours is fine (/tmp): nobody renames what is not theirs.
        let sticky = t.path().join("sticky");
        std::fs::create_dir(&sticky).unwrap();
        set_mode(&sticky, 0o1777);
        private_dir(&sticky.join("state")).unwrap();
    }

    #[test]
    fn symlinks_and_files_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_refused(private_dir(&link), &link, "symbolic link");
        assert_refused(check_private_dir(&link), &link, "symbolic link");
        let fd = private_dir(t.path()).unwrap();
        assert_refused(
            private_subdir(fd.as_fd(), t.path(), "link"),
            &link,
            "symbolic link",
        );
        let file = t.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert_refused(private_dir(&file), &file, "not a directory");
        // A symlink above ours is resolved first (like /var/run -> /run): that is the real
        // directory's business, checked as such.
        private_dir(&link.join("state")).unwrap();
        assert_eq!(mode_of(&real.join("state")), 0o700);
    }

    #[test]
    fn private_dirs_owned_by_another_user_are_refused() {
        if !snapshot_testkit::require_privileges("private_dirs_owned_by_another_user_are_refused") {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("state");
        std::fs::create_dir(&d).unwrap();
        set_mode(&d, 0o700);
        std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
        assert_refused(private_dir(&d), &d, "owned by uid 65534, not by root");
        assert_refused(
            private_dir(&d),
            &d,
            &format!("chown root:root {}", d.display()),
        );
        assert_refused(private_dir(&d.join("sub")), &d, "owned by uid 65534");
        std::os::unix::fs::chown(&d, Some(0), Some(0)).unwrap();
        private_dir(&d).unwrap();
    }

    #[test]
    fn private_files_are_0600_and_no_symlink() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        std::fs::write(&f, "old").unwrap();
        set_mode(&f, 0o644);
        create_private_file(&f).unwrap();
        assert_eq!(mode_of(&f), 0o600);
        assert_eq!(std::fs::read(&f).unwrap(), b"", "truncated");
        open_private_file(&f).unwrap();
        set_mode(&f, 0o620);
        assert_refused(open_private_file(&f), &f, "writable by its group or others");
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(create_private_file(&link).is_err(), "not through a symlink");
        assert!(open_private_file(&link).is_err(), "not through a symlink");
        assert_eq!(mode_of(&f), 0o620);
    }

    #[test]
    fn an_unused_lock_file_is_removed_and_a_held_one_left() {
        let t = tempfile::tempdir().unwrap();
        let rt = t.path().join("run");
        let target = Path::new("/views/run-1-0");
        let lock = TargetLock::acquire(&rt, target).unwrap();
        assert!(
            !TargetLock::remove_unused(&rt, target).unwrap(),
            "held: left"
        );
        assert!(lock.path.exists());
        let path = lock.path.clone();
        drop(lock);
        assert!(TargetLock::remove_unused(&rt, target).unwrap());
        assert!(!path.exists(), "unused: removed");
        assert!(
            TargetLock::remove_unused(&rt, target).unwrap(),
            "none: done"
        );

        // Attack: `locks/` writable by others (someone could have put anything there) is
        // refused, and the file stays; the same file is removed once the mode is right.
        drop(TargetLock::acquire(&rt, target).unwrap());
        set_mode(&rt.join("locks"), 0o777);
        let e = TargetLock::remove_unused(&rt, target)
            .unwrap_err()
            .to_string();
        assert!(e.contains("locks"), "{e}");
        assert!(path.exists(), "left in an untrusted directory");
        set_mode(&rt.join("locks"), 0o700);
        assert!(TargetLock::remove_unused(&rt, target).unwrap());
        assert!(!path.exists());

        // Attack: the lock file swapped for a symlink to a file elsewhere: not followed (the
        // flock would be on the other file), refused, both left as they are.
        let elsewhere = t.path().join("elsewhere");
        std::fs::write(&elsewhere, "x").unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        assert!(TargetLock::remove_unused(&rt, target).is_err());
        assert!(path.is_symlink() && elsewhere.exists());
    }

    #[test]
    fn target_locks_live_in_a_private_runtime_directory() {
        let t = tempfile::tempdir().unwrap();
        let rt = t.path().join("run");
        let target = Path::new("/some/target");
        let lock = TargetLock::acquire(&rt, target).unwrap();
        assert_eq!(mode_of(&rt), 0o700);
        assert_eq!(mode_of(&rt.join("locks")), 0o700);
        assert_eq!(mode_of(&lock.path), 0o600);
        drop(lock);
        set_mode(&rt, 0o770);
        let e = TargetLock::acquire(&rt, target).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{rt:?}")) && e.contains("chmod 0700"),
            "{e}"
        );
        set_mode(&rt, 0o700);
        set_mode(&rt.join("locks"), 0o777);
        let e = TargetLock::acquire(&rt, target).unwrap_err().to_string();
        assert!(e.contains(&format!("{:?}", rt.join("locks"))), "{e}");
    }
}
