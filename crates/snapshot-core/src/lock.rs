//! One session per TARGET: an exclusive `flock` on a file named after the target.

use rustix::fs::{flock, FlockOperation};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

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
    #[error("lock {lock:?}: {source}")]
    Io {
        lock: PathBuf,
        #[source]
        source: io::Error,
    },
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
            source,
        };
        std::fs::create_dir_all(path.parent().expect("lock path has a parent")).map_err(io_err)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Self { _file: file, path }),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(LockError::Busy {
                target: target.to_owned(),
                lock: path,
            }),
            Err(e) => Err(io_err(e.into())),
        }
    }

    /// True when a live session holds the lock for `target` (probed without creating anything).
    pub fn is_held(runtime_dir: &Path, target: &Path) -> bool {
        let path = lock_path(runtime_dir, target);
        let Ok(file) = File::open(&path) else {
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
}
