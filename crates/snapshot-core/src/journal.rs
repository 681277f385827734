//! The session journal (DESIGN.md §3.3): one JSON file per session under
//! `/var/lib/snapshot/sessions/` (persistent: snapshots survive a reboot, `/run` does not).
//! Every object is recorded *before* it is created and updated after; every write is atomic
//! (write, fsync, rename, fsync the directory), so a crash at any instant leaves a record that
//! `snapshot cleanup` can replay backwards.

use crate::provider::Created;
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

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
    pub writers: Vec<PathBuf>,
    pub dirs: Vec<PathBuf>,
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
    pub target: PathBuf,
    /// The session's scratch directory (`/run/snapshot/<id>`); everything mounted below is its own.
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
    #[error("journal {path:?}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// A live session's token: an abstract-namespace unix socket named after the session id.
/// It needs no file, is visible whatever state or runtime directory a session uses, and
/// vanishes with the process — so "is session X alive?" has one answer machine-wide.
#[derive(Debug)]
pub struct LivenessToken {
    _listener: std::os::unix::net::UnixListener,
}

fn token_addr(session: &str) -> io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(format!("snapshot-session/{session}"))
}

impl LivenessToken {
    pub fn acquire(session: &str) -> io::Result<Self> {
        let listener = std::os::unix::net::UnixListener::bind_addr(&token_addr(session)?)?;
        Ok(Self {
            _listener: listener,
        })
    }

    /// True when a live process holds the token of `session`.
    pub fn is_held(session: &str) -> bool {
        match token_addr(session).and_then(|a| std::os::unix::net::UnixListener::bind_addr(&a)) {
            Ok(_probe) => false,
            Err(e) => e.kind() == io::ErrorKind::AddrInUse,
        }
    }
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
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
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

/// Write to a temporary file, rename over: a reader sees the old record or the new one, never
/// half of one. `durable` adds the fsyncs (file, then directory) that make it survive a crash
/// of the machine.
fn write_atomic(path: &Path, data: &[u8], durable: bool) -> io::Result<()> {
    let dir = path.parent().expect("journal path has a parent");
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
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
    /// Creates the journal of a new session.
    pub fn create(state_dir: &Path, record: Record) -> Result<Self, JournalError> {
        let dir = sessions_dir(state_dir);
        let path = dir.join(format!("{}.json", record.session));
        std::fs::create_dir_all(&dir).map_err(|source| JournalError::Io {
            path: dir.clone(),
            source,
        })?;
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

    /// Opens an existing journal (of another session, for cleanup).
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let data = std::fs::read(path).map_err(|source| JournalError::Io {
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

    /// Every journal in the state directory (sorted by name), readable or not.
    pub fn list(state_dir: &Path) -> Vec<Result<Self, JournalError>> {
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
mod tests {
    use super::*;

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

    #[test]
    fn liveness_token_is_machine_wide_and_dies_with_its_holder() {
        let id = format!("snapshot-{:08x}", std::process::id());
        assert!(!LivenessToken::is_held(&id));
        let token = LivenessToken::acquire(&id).unwrap();
        assert!(LivenessToken::is_held(&id));
        assert!(
            LivenessToken::acquire(&id).is_err(),
            "one holder per session"
        );
        drop(token);
        assert!(!LivenessToken::is_held(&id));
    }

    #[test]
    fn process_start_handles_odd_command_names() {
        assert!(process_start(std::process::id()).is_some());
        assert_eq!(process_start(u32::MAX), None);
    }
}
