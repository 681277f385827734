//! The session journal (docs/DESIGN.md §3.3): one JSON file per session under
//! `/var/lib/snapshot/sessions/` (persistent: snapshots survive a reboot, `/run` does not).
//! Every object is recorded *before* it is created and updated after; every write is atomic
//! (write, fsync, rename, fsync the directory), so a crash at any instant leaves a record that
//! `snapshot cleanup` can replay backwards.

use crate::lock::{create_private_file, open_private_file, private_child, PrivateDirError};
use crate::provider::Created;
use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags};
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Default state directory.
pub const STATE_DIR: &str = "/var/lib/snapshot";

const VERSION: u32 = 1;

/// Whether a recorded object exists for sure, or may exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectState {
    /// About to be created: it may or may not exist.
    Intent,
    /// Created.
    Done,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotEntry {
    pub state: ObjectState,
    pub created: Created,
}

/// Writers sent `freeze` and not yet `thaw`: a cleanup in the same boot thaws them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrozenWriters {
    #[serde(with = "path_json::many")]
    pub writers: Vec<PathBuf>,
    #[serde(with = "path_json::many")]
    pub dirs: Vec<PathBuf>,
}

/// Paths in a record without loss: a string when UTF-8 (nearly always), else the array of
/// its bytes. A TARGET, a DIR or a writer may be named with any bytes, which serde's own
/// `PathBuf` refuses to write. Either form is read.
pub mod path_json {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr<'a> {
        Text(std::borrow::Cow<'a, str>),
        Bytes(std::borrow::Cow<'a, [u8]>),
    }

    fn repr(p: &Path) -> Repr<'_> {
        match p.to_str() {
            Some(s) => Repr::Text(s.into()),
            None => Repr::Bytes(p.as_os_str().as_bytes().into()),
        }
    }

    fn path(r: Repr<'_>) -> PathBuf {
        match r {
            Repr::Text(s) => PathBuf::from(s.into_owned()),
            Repr::Bytes(b) => PathBuf::from(OsString::from_vec(b.into_owned())),
        }
    }

    pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        repr(p).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        Repr::deserialize(d).map(path)
    }

    /// The same for a list of paths.
    pub mod many {
        use super::*;

        pub fn serialize<S: Serializer>(v: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(v.iter().map(|p| repr(p)))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
            Vec::<Repr<'_>>::deserialize(d).map(|v| v.into_iter().map(path).collect())
        }
    }

    /// The same for an optional path (`null` when absent).
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
            p.as_deref().map(repr).serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
            Option::<Repr<'_>>::deserialize(d).map(|p| p.map(path))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    pub session: String,
    pub pid: u32,
    /// Start time of `pid` (clock ticks after boot, /proc/PID/stat field 22): tells a live
    /// session from a recycled pid.
    pub pid_start: u64,
    pub boot_id: String,
    /// Seconds since the epoch.
    pub started: u64,
    #[serde(with = "path_json")]
    pub target: PathBuf,
    /// The session's scratch directory (`/run/snapshot/<id>`); everything mounted below is its own.
    #[serde(with = "path_json")]
    pub runtime_dir: PathBuf,
    /// The view's tmpfs at `target` may exist (it is named after the session).
    pub view: Option<ObjectState>,
    pub snapshots: Vec<SnapshotEntry>,
    pub frozen_writers: Option<FrozenWriters>,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path:?}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The state directory, or the journal, is not root's alone: it could be forged.
    #[error(transparent)]
    Unsafe(#[from] PrivateDirError),
    #[error("journal {path:?}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Where liveness tokens live: one fixed, machine-wide directory, whatever runtime or state
/// directory a session uses (a cleanup over any state directory must see every live session),
/// and root's alone (0700, like its parent `/run/snapshot`): nobody else can create, open or
/// lock a token there.
pub const LIVENESS_DIR: &str = "/run/snapshot/live";

/// A live session's token (and its watchdog's, [`crate::watchdog::token_name`]): an
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
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a liveness directory"),
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

/// This process's liveness identity.
pub fn self_identity() -> (u32, u64, String) {
    let pid = std::process::id();
    (pid, process_start(pid).unwrap_or(0), boot_id())
}

/// `/proc/sys/kernel/random/boot_id`.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Start time of a process, from /proc/PID/stat (field 22; the command may contain spaces
/// and parentheses, so count from the last ')').
pub fn process_start(pid: u32) -> Option<u64> {
    stat_start_time(&std::fs::read(format!("/proc/{pid}/stat")).ok()?)
}

/// Field 22 of a `/proc/PID/stat` line. The command name may hold any bytes (not UTF-8: cut
/// at 15 bytes inside a character), spaces and `)` included.
fn stat_start_time(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 2..)?).ok()?;
    rest.split(' ').nth(19)?.parse().ok()
}

impl Record {
    pub fn new(session: &str, target: &Path, runtime_dir: &Path) -> Self {
        let (pid, pid_start, boot_id) = self_identity();
        Self {
            version: VERSION,
            session: session.to_owned(),
            pid,
            pid_start,
            boot_id,
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            target: target.to_owned(),
            runtime_dir: runtime_dir.to_owned(),
            view: None,
            snapshots: Vec::new(),
            frozen_writers: None,
        }
    }

    /// True while the process that wrote the record runs (same boot, same pid, same start).
    pub fn is_live(&self) -> bool {
        self.boot_id == boot_id() && process_start(self.pid) == Some(self.pid_start)
    }

    /// True when this boot is the one the record was written in.
    pub fn same_boot(&self) -> bool {
        self.boot_id == boot_id()
    }
}

/// An open journal, rewritten whole on every update.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    pub record: Record,
}

pub fn sessions_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("sessions")
}

/// Checks that the state directory and its `sessions/` are root's alone (not symlinks, owned
/// by root, mode 0700), creating them when missing and `create`. `Ok(false)`: one is missing
/// (and not `create`).
pub fn check_state_dir(state_dir: &Path, create: bool) -> Result<bool, PrivateDirError> {
    Ok(private_child(state_dir, "sessions", create)?.is_some())
}

/// Checks, without creating anything, the directories whose content `snapshot cleanup` acts
/// on or trusts: the state directory and its `sessions/`, and [`LIVENESS_DIR`] with its
/// parent. An error names the directory and the command that fixes it.
pub fn check_cleanup_dirs(state_dir: &Path) -> Result<(), PrivateDirError> {
    check_state_dir(state_dir, false)?;
    token_dir(Path::new(LIVENESS_DIR), false)?;
    Ok(())
}

/// Write to a temporary file, rename over: a reader sees the old record or the new one, never
/// half of one. `durable` adds the fsyncs (file, then directory) that make it survive a crash
/// of the machine.
fn write_atomic(path: &Path, data: &[u8], durable: bool) -> io::Result<()> {
    let dir = path.parent().expect("journal path has a parent");
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = create_private_file(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
    }
    std::fs::rename(&tmp, path)?;
    if durable {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Journal {
    /// Creates the journal of a new session (mode 0600), and the state directory and its
    /// `sessions/` (0700) when missing; refuses directories that are not root's alone.
    pub fn create(state_dir: &Path, record: Record) -> Result<Self, JournalError> {
        check_state_dir(state_dir, true)?;
        let path = sessions_dir(state_dir).join(format!("{}.json", record.session));
        let j = Self { path, record };
        j.write(true)?;
        Ok(j)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&self, durable: bool) -> Result<(), JournalError> {
        let data = serde_json::to_vec_pretty(&self.record).expect("a record serialises");
        write_atomic(&self.path, &data, durable).map_err(|source| JournalError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Changes the record and writes it durably (it survives a crash of the machine).
    pub fn update(&mut self, f: impl FnOnce(&mut Record)) -> Result<(), JournalError> {
        f(&mut self.record);
        self.write(true)
    }

    /// Changes the record atomically but without fsync: for updates that only refine a record
    /// that is already durable and sufficient on its own (an intent becoming done, an object
    /// removed), where losing the update in a machine crash only makes cleanup redo
    /// idempotent work. Keeps fsyncs off the path to readiness and out of teardown.
    pub fn refine(&mut self, f: impl FnOnce(&mut Record)) -> Result<(), JournalError> {
        f(&mut self.record);
        self.write(false)
    }

    /// Deletes the journal: the session left nothing behind.
    pub fn remove(self) -> Result<(), JournalError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(JournalError::Io {
                path: self.path,
                source,
            }),
        }
    }

    /// Opens an existing journal (of another session, for cleanup): a regular file (not a
    /// symlink) owned by root that nobody else may write.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let mut data = Vec::new();
        open_private_file(path)?
            .read_to_end(&mut data)
            .map_err(|source| JournalError::Io {
                path: path.to_owned(),
                source,
            })?;
        let record = serde_json::from_slice(&data).map_err(|source| JournalError::Parse {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            path: path.to_owned(),
            record,
        })
    }

    /// Every journal in the state directory (sorted by name), readable or not; just an
    /// error when the state directory is not root's alone (its journals could be forged).
    pub fn list(state_dir: &Path) -> Vec<Result<Self, JournalError>> {
        match check_state_dir(state_dir, false) {
            Ok(true) => {}
            Ok(false) => return Vec::new(),
            Err(e) => return vec![Err(e.into())],
        }
        let dir = sessions_dir(state_dir);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|e| e == "json")
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("snapshot-"))
            })
            .collect();
        paths.sort();
        paths.iter().map(|p| Self::open(p)).collect()
    }
}

#[cfg(test)]
#[path = "journal_proptests.rs"]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use snapshot_testkit::{mode_of, set_mode};

    #[test]
    fn round_trip_and_liveness() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = Record::new("snapshot-0badf00d", Path::new("/t"), Path::new("/run/x"));
        assert!(rec.is_live(), "this process is alive");
        let mut j = Journal::create(dir.path(), rec.clone()).unwrap();
        j.update(|r| {
            r.view = Some(ObjectState::Intent);
            r.snapshots.push(SnapshotEntry {
                state: ObjectState::Intent,
                created: Created {
                    provider: "btrfs".into(),
                    unit: "u".into(),
                    name: "snapshot-0badf00d-0".into(),
                    consistent: true,
                    data: serde_json::json!({"k": 1}),
                },
            });
        })
        .unwrap();
        let listed = Journal::list(dir.path());
        assert_eq!(listed.len(), 1);
        let back = listed.into_iter().next().unwrap().unwrap();
        assert_eq!(back.record, j.record);
        assert!(!dir
            .path()
            .join("sessions/snapshot-0badf00d.json.tmp")
            .exists());
        rec.pid_start += 1;
        assert!(!rec.is_live(), "a recycled pid is not the session");
        rec.pid_start -= 1;
        rec.boot_id = "other-boot".into();
        assert!(!rec.is_live() && !rec.same_boot());
        j.remove().unwrap();
        assert!(Journal::list(dir.path()).is_empty());
    }

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
        let watchdog = crate::watchdog::token_name(&id);
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

    #[test]
    fn journals_are_private() {
        let t = tempfile::tempdir().unwrap();
        let state = t.path().join("state");
        let id = "snapshot-0badf00e";
        let rec = Record::new(id, Path::new("/t"), Path::new("/run/x"));
        let j = Journal::create(&state, rec.clone()).unwrap();
        assert_eq!(mode_of(&state), 0o700);
        assert_eq!(mode_of(&state.join("sessions")), 0o700);
        assert_eq!(mode_of(j.path()), 0o600);
        check_state_dir(&state, false).unwrap();

        // A journal others could have written is not trusted.
        set_mode(j.path(), 0o666);
        let listed = Journal::list(&state);
        let e = listed[0].as_ref().unwrap_err().to_string();
        assert!(e.contains(&format!("{:?}", j.path())), "{e}");
        set_mode(j.path(), 0o600);
        assert!(Journal::list(&state)[0].is_ok());

        // Nor a state directory others can write: nothing of it is listed, and no journal
        // is created there.
        for dir in [state.clone(), state.join("sessions")] {
            set_mode(&dir, 0o777);
            let listed = Journal::list(&state);
            assert_eq!(listed.len(), 1);
            let e = listed[0].as_ref().unwrap_err().to_string();
            assert!(
                e.contains(&format!("{dir:?}")) && e.contains("chmod 0700"),
                "{e}"
            );
            assert!(check_state_dir(&state, false).is_err());
            let e = Journal::create(
                &state,
                Record::new("snapshot-0badf00f", Path::new("/t"), Path::new("/r")),
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains(&format!("{dir:?}")), "{e}");
            assert!(!state.join("sessions/snapshot-0badf00f.json").exists());
            set_mode(&dir, 0o700);
        }

        // A symlinked state directory is refused, even to a good one.
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&state, &link).unwrap();
        let e = Journal::create(&link, rec).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{link:?}")) && e.contains("symbolic link"),
            "{e}"
        );
        assert_eq!(Journal::list(&link).len(), 1);
        assert!(Journal::list(&link)[0].is_err());
        // A missing one has no journals, and a check creates nothing.
        let none = t.path().join("none");
        assert!(Journal::list(&none).is_empty());
        assert!(!check_state_dir(&none, false).unwrap());
        assert!(!none.exists());
        j.remove().unwrap();
    }

    #[test]
    fn process_start_handles_odd_command_names() {
        assert!(process_start(std::process::id()).is_some());
        assert_eq!(process_start(u32::MAX), None);
    }
}
