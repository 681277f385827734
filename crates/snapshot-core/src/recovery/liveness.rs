//! Liveness tokens (docs/DESIGN.md §3.3): whether a session, or its watchdog, still lives —
//! an exclusive `flock` on a file only root can reach, which the kernel drops when the holder
//! dies, however it dies.

use crate::lock::{private_child, PrivateDirError};
use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags};
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// Where liveness tokens live: one fixed, machine-wide directory, whatever runtime or state
/// directory a session uses (a cleanup over any state directory must see every live session),
/// and root's alone (0700, like its parent `/run/snapshot`): nobody else can create, open or
/// lock a token there.
pub const LIVENESS_DIR: &str = "/run/snapshot/live";

/// Checks [`LIVENESS_DIR`] and its parent without creating them (what `snapshot cleanup`
/// trusts).
pub fn check_dir() -> Result<(), PrivateDirError> {
    token_dir(Path::new(LIVENESS_DIR), false).map(|_| ())
}

/// The name of a session's watchdog token: while it is held, cleanup leaves the (dead)
/// session to its watchdog.
pub fn watchdog_token(session: &str) -> String {
    format!("{session}.watchdog")
}

/// A live session's token (and its watchdog's, [`watchdog_token`]): an
/// exclusive `flock` held on [`LIVENESS_DIR`]`/<name>` for the holder's life. The kernel
/// drops the lock when the holder dies, however it dies; the descriptor is close-on-exec, so
/// no child inherits it. Only root can reach the file, so only root can assert that a
/// session lives: a name in another namespace (the abstract unix socket this used to be) or a
/// file elsewhere proves nothing. The holder removes the file when it lets go; a killed
/// holder's file stays, unlocked (stale), until `snapshot cleanup` removes it.
#[derive(Debug)]
pub struct LivenessToken {
    _file: std::fs::File,
    dir: OwnedFd,
    name: String,
    /// Device and inode of the file locked.
    identity: (u64, u64),
}

/// A token's name is a file name: a session id, or one with a suffix (`.watchdog`).
fn valid_token_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// The liveness directory `live` ([`LIVENESS_DIR`], or another for tests) and its parent,
/// checked to be root's alone (and created when `create`); `Ok(None)`: it does not exist.
fn token_dir(live: &Path, create: bool) -> Result<Option<OwnedFd>, PrivateDirError> {
    let (Some(base), Some(name)) = (live.parent(), live.file_name().and_then(|n| n.to_str()))
    else {
        return Err(PrivateDirError::Io {
            path: live.to_owned(),
            error: io::Error::new(io::ErrorKind::InvalidInput, "not a liveness directory"),
        });
    };
    private_child(base, name, create)
}

fn invalid_name(name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{name:?} is not a liveness token name"),
    )
}

impl LivenessToken {
    /// Takes the token `name` in [`LIVENESS_DIR`] (created, and checked to be root's alone).
    /// Fails when another process holds it.
    pub fn acquire(name: &str) -> io::Result<Self> {
        Self::acquire_in(Path::new(LIVENESS_DIR), name)
    }

    /// [`LivenessToken::acquire`] in another liveness directory `dir` (checked, with its
    /// parent, like [`LIVENESS_DIR`]): for tests.
    pub fn acquire_in(dir: &Path, name: &str) -> io::Result<Self> {
        Self::acquire_at(token_dir(dir, true)?.expect("created"), name)
    }

    fn acquire_at(dir: OwnedFd, name: &str) -> io::Result<Self> {
        if !valid_token_name(name) {
            return Err(invalid_name(name));
        }
        // A cleanup probing the token (a shared lock, for an instant) or removing it as stale
        // (an exclusive lock, then unlink) can be in the way: try again for a while.
        let deadline = Instant::now() + Duration::from_millis(500);
        loop {
            let fd = rustix::fs::openat(
                &dir,
                name,
                OFlags::CREATE
                    | OFlags::RDWR
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC
                    | OFlags::NONBLOCK,
                Mode::RUSR | Mode::WUSR,
            )?;
            let st = rustix::fs::fstat(&fd)?;
            if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile
            {
                return Err(io::Error::other(format!(
                    "{LIVENESS_DIR}/{name} is not a regular file"
                )));
            }
            match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {
                    // Still the file under that name? A cleanup may have removed it as stale
                    // between the open and the lock: then make a new one.
                    let now = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW);
                    if now.is_ok_and(|now| {
                        crate::sys::stat_identity(&now) == crate::sys::stat_identity(&st)
                    }) {
                        return Ok(Self {
                            _file: std::fs::File::from(fd),
                            dir,
                            name: name.to_owned(),
                            identity: crate::sys::stat_identity(&st),
                        });
                    }
                }
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    if Instant::now() >= deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::AddrInUse,
                            format!("liveness token {name} is held by another process"),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// True when a live process holds the token `name`. When [`LIVENESS_DIR`] is not root's
    /// alone the answer cannot be trusted either way: true (leave things alone), with a
    /// warning; `snapshot cleanup` refuses to start then anyway.
    pub fn is_held(name: &str) -> bool {
        Self::is_held_in(Path::new(LIVENESS_DIR), name)
    }

    /// [`LivenessToken::is_held`] in another liveness directory: for tests.
    pub fn is_held_in(dir: &Path, name: &str) -> bool {
        match token_dir(dir, false) {
            Ok(None) => false,
            Ok(Some(dir)) => held_at(&dir, name),
            Err(e) => {
                log::warn!("{e}; taking {name} for alive");
                true
            }
        }
    }

    /// Removes the token file `name` when no process holds it (a killed holder's). Returns
    /// whether it removed one.
    pub fn remove_stale(name: &str) -> io::Result<bool> {
        Self::remove_stale_in(Path::new(LIVENESS_DIR), name)
    }

    /// [`LivenessToken::remove_stale`] in another liveness directory: for tests.
    pub fn remove_stale_in(dir: &Path, name: &str) -> io::Result<bool> {
        match token_dir(dir, false)? {
            Some(dir) => remove_stale_at(&dir, name),
            None => Ok(false),
        }
    }

    /// Removes every token file that no process holds; returns their names.
    pub fn sweep_stale() -> io::Result<Vec<String>> {
        Self::sweep_stale_in(Path::new(LIVENESS_DIR))
    }

    /// [`LivenessToken::sweep_stale`] in another liveness directory: for tests.
    pub fn sweep_stale_in(dir: &Path) -> io::Result<Vec<String>> {
        match token_dir(dir, false)? {
            Some(dir) => sweep_stale_at(&dir),
            None => Ok(Vec::new()),
        }
    }
}

impl Drop for LivenessToken {
    /// Removes the file (still locked: nobody can mistake it for a stale one meanwhile), then
    /// the lock goes with the descriptor.
    fn drop(&mut self) {
        let ours = rustix::fs::statat(&self.dir, self.name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| crate::sys::stat_identity(&st) == self.identity);
        if ours {
            let _ = rustix::fs::unlinkat(&self.dir, self.name.as_str(), AtFlags::empty());
        }
    }
}

/// Opens the token file `name` in `dir` for a lock probe; `Ok(None)`: no such file.
fn open_token(dir: &OwnedFd, name: &str) -> io::Result<Option<OwnedFd>> {
    if !valid_token_name(name) {
        return Ok(None);
    }
    match rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn held_at(dir: &OwnedFd, name: &str) -> bool {
    // A shared lock, for an instant: it conflicts with the holder's exclusive one only.
    let result = open_token(dir, name).and_then(|fd| match fd {
        None => Ok(false),
        Some(fd) => match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockShared) {
            Ok(()) => Ok(false),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(true),
            Err(e) => Err(e.into()),
        },
    });
    result.unwrap_or_else(|e| {
        log::warn!("probing the liveness token {name}: {e}; taking it for alive");
        true
    })
}

fn remove_stale_at(dir: &OwnedFd, name: &str) -> io::Result<bool> {
    let Some(fd) = open_token(dir, name)? else {
        return Ok(false);
    };
    match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    // Locked by us, so nobody holds it; unlinked only if it is still the file locked (a new
    // holder that opened it meanwhile sees it gone after its lock, and makes a new one).
    let st = rustix::fs::fstat(&fd)?;
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(now) if crate::sys::stat_identity(&now) == crate::sys::stat_identity(&st) => {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

fn sweep_stale_at(dir: &OwnedFd) -> io::Result<Vec<String>> {
    let mut removed = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if valid_token_name(name) && remove_stale_at(dir, name)? {
            removed.push(name.to_owned());
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapshot_testkit::{mode_of, set_mode};

    fn token_id() -> String {
        format!("snapshot-{:08x}", std::process::id())
    }

    #[test]
    fn liveness_token_is_a_lock_on_a_private_file() {
        let t = tempfile::tempdir().unwrap();
        let live = t.path().join("live");
        let id = token_id();
        assert!(!LivenessToken::is_held_in(&live, &id), "no directory yet");
        let token = LivenessToken::acquire_in(&live, &id).unwrap();
        assert_eq!(mode_of(&live), 0o700);
        assert_eq!(mode_of(&live.join(&id)), 0o600);
        assert!(LivenessToken::is_held_in(&live, &id));
        // A probe (a shared lock for an instant) does not disturb the holder.
        assert!(LivenessToken::is_held_in(&live, &id));
        let e = LivenessToken::acquire_in(&live, &id).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "one holder: {e}");
        assert!(!LivenessToken::remove_stale_in(&live, &id).unwrap());
        assert!(live.join(&id).exists(), "a held token is not stale");
        let watchdog = watchdog_token(&id);
        let w = LivenessToken::acquire_in(&live, &watchdog).unwrap();
        assert!(LivenessToken::is_held_in(&live, &watchdog));
        drop(token);
        assert!(!LivenessToken::is_held_in(&live, &id));
        assert!(!live.join(&id).exists(), "the holder removes its file");
        assert!(LivenessToken::is_held_in(&live, &watchdog));
        drop(w);
        // Names are file names in the directory, nothing else.
        for bad in ["", "../x", "a/b", ".hidden", "snapshot-x\n"] {
            assert!(LivenessToken::acquire_in(&live, bad).is_err(), "{bad:?}");
            assert!(!LivenessToken::is_held_in(&live, bad), "{bad:?}");
        }
    }

    /// A holder that dies (here `flock(1)`, killed) leaves an unlocked, stale file: not held;
    /// `remove_stale` and `sweep_stale` remove such files and only those.
    #[test]
    fn a_killed_holders_token_is_stale() {
        let t = tempfile::tempdir().unwrap();
        let live = t.path().join("live");
        crate::lock::private_dir(&live).unwrap();
        let id = token_id();
        let mut holder = std::process::Command::new("flock")
            .args(["--exclusive", "--nonblock", "--no-fork"])
            .arg(live.join(&id))
            .args(["sleep", "60"])
            .spawn()
            .expect("flock(1) from util-linux");
        let t0 = Instant::now();
        while !LivenessToken::is_held_in(&live, &id) {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "flock(1) did not lock"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(LivenessToken::acquire_in(&live, &id).is_err());
        holder.kill().unwrap();
        holder.wait().unwrap();
        // The lock went with the process (`--no-fork`: flock(1) became `sleep`).
        assert!(!LivenessToken::is_held_in(&live, &id));
        assert!(live.join(&id).exists(), "a killed holder leaves its file");
        assert!(LivenessToken::remove_stale_in(&live, &id).unwrap());
        assert!(!live.join(&id).exists());
        assert!(!LivenessToken::remove_stale_in(&live, &id).unwrap());

        // A stale file and a held token: the sweep takes the first only.
        std::fs::write(live.join("snapshot-0000dead"), "").unwrap();
        let held = LivenessToken::acquire_in(&live, &id).unwrap();
        assert_eq!(
            LivenessToken::sweep_stale_in(&live).unwrap(),
            ["snapshot-0000dead"]
        );
        assert!(LivenessToken::is_held_in(&live, &id));
        drop(held);
        // A token acquired over a stale file of the same name is held like a new one.
        std::fs::write(live.join(&id), "").unwrap();
        let again = LivenessToken::acquire_in(&live, &id).unwrap();
        assert!(LivenessToken::is_held_in(&live, &id));
        drop(again);
    }

    #[test]
    fn liveness_directories_others_can_write_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let live = t.path().join("live");
        let id = token_id();
        std::fs::create_dir(&live).unwrap();
        set_mode(&live, 0o777);
        let e = LivenessToken::acquire_in(&live, &id)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("{live:?}")) && e.contains("chmod 0700"),
            "{e}"
        );
        // Anyone could have made a token there: the answer cannot be trusted, and a
        // cleanup leaves the session alone rather than take it for dead.
        std::fs::write(live.join(&id), "").unwrap();
        assert!(LivenessToken::is_held_in(&live, &id));
        assert!(LivenessToken::remove_stale_in(&live, &id).is_err());
        let link = t.path().join("link");
        set_mode(&live, 0o700);
        std::os::unix::fs::symlink(&live, &link).unwrap();
        let e = LivenessToken::acquire_in(&link, &id)
            .unwrap_err()
            .to_string();
        assert!(e.contains("symbolic link"), "{e}");
    }
}
