//! The session journal (docs/DESIGN.md §3.3): one JSON file per session under
//! `/var/lib/snapshot/sessions/` (persistent: snapshots survive a reboot, `/run` does not).
//! Every object is recorded *before* it is created and updated after; every write is atomic
//! (write, fsync, rename, fsync the directory), so a crash at any instant leaves a record that
//! `snapshot cleanup` can replay backwards.

use super::liveness;
use crate::lock::{open_private_file, private_child, PrivateDirError};
use crate::path_json;
use crate::provider::Created;
use serde::{Deserialize, Serialize};
use std::io::{self, Read};
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
    #[serde(with = "path_json::many")]
    pub writers: Vec<PathBuf>,
    #[serde(with = "path_json::many")]
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
    #[error("journal {path:?}: {error}")]
    Io { path: PathBuf, error: io::Error },
    /// The state directory, or the journal, is not root's alone: it could be forged.
    #[error(transparent)]
    Unsafe(#[from] PrivateDirError),
    #[error("journal {path:?}: {error}")]
    Parse {
        path: PathBuf,
        error: serde_json::Error,
    },
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
/// on or trusts: the state directory and its `sessions/`, and [`liveness::LIVENESS_DIR`] with its
/// parent. An error names the directory and the command that fixes it.
pub fn check_cleanup_dirs(state_dir: &Path) -> Result<(), PrivateDirError> {
    check_state_dir(state_dir, false)?;
    liveness::check_dir()?;
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
        crate::lock::write_private_atomic(&self.path, &data, durable).map_err(|source| {
            JournalError::Io {
                path: self.path.clone(),
                error: source,
            }
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
                error: source,
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
                error: source,
            })?;
        let record = serde_json::from_slice(&data).map_err(|source| JournalError::Parse {
            path: path.to_owned(),
            error: source,
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
