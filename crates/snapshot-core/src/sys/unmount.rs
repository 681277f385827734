//! The one patient unmount: retried while busy, lazily detached as a last resort. The view's
//! teardown, the cleanup of a dead session and the providers' staging mounts all use it.

use super::unmount;
use rustix::io::Errno;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often a busy mount is tried again before it is detached lazily.
const ATTEMPTS: u64 = 20;

/// Why [`unmount_patiently`] could not unmount. The messages say the OS errors; nothing is
/// chained as a source, so each shows once.
#[derive(Debug, thiserror::Error)]
pub enum UnmountError {
    /// umount2 failed, and not because the mount was busy.
    #[error("unmounting {path:?}: {error}")]
    Failed { path: PathBuf, error: io::Error },
    /// Busy after every retry, and the lazy detach failed too.
    #[error("unmounting {path:?}: {busy}; lazy detach: {detach}")]
    Detach {
        path: PathBuf,
        busy: io::Error,
        detach: io::Error,
    },
}

/// Unmounts `path` (a plain path: a symlink at its end is not followed), retrying while busy
/// (a backup program or a walker may just be closing its files); detaches it lazily as a last
/// resort, with a warning. Nothing mounted there (any more), or no such path (a concurrent
/// cleanup unmounted the tmpfs it lay in), is success.
pub fn unmount_patiently(path: &Path) -> Result<(), UnmountError> {
    unmount_patiently_as(path, path, false)
}

/// [`unmount_patiently`], with `follow` for a `/proc/self/fd` path (its magic link, which names
/// a descriptor's mount, is followed), named `shown` in messages.
pub fn unmount_patiently_as(path: &Path, shown: &Path, follow: bool) -> Result<(), UnmountError> {
    let mut busy = None;
    for attempt in 0..ATTEMPTS {
        match unmount(path, follow, false) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(Errno::BUSY.raw_os_error()) => {
                busy = Some(e);
                std::thread::sleep(Duration::from_millis(50 * (attempt + 1).min(4)));
            }
            Err(e)
                if e.raw_os_error() == Some(Errno::INVAL.raw_os_error())
                    || e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) =>
            {
                return Ok(());
            }
            Err(error) => {
                return Err(UnmountError::Failed {
                    path: shown.to_owned(),
                    error,
                })
            }
        }
    }
    let busy = busy.unwrap_or_else(|| io::Error::from_raw_os_error(Errno::BUSY.raw_os_error()));
    log::warn!("{shown:?} is still busy ({busy}); detaching it lazily");
    unmount(path, follow, true).map_err(|detach| UnmountError::Detach {
        path: shown.to_owned(),
        busy,
        detach,
    })
}
