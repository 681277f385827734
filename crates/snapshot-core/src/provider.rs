//! The one trait every snapshot mechanism implements.
//!
//! The session calls, for each snapshot unit: `probe` (planning, no side effects) → `create`
//! (inside the frozen window, nothing else) → `mount` (after the writers are thawed, once per
//! mount of the unit that holds a DIR) → at teardown `verify` then `remove`.

use crate::mountinfo::Mount;
use crate::sys::DetachedMount;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A mounted filesystem as the planner sees it: the exact mount that holds one or more DIRs.
#[derive(Debug, Clone, Serialize)]
pub struct Filesystem {
    pub mount: Mount,
}

/// What a provider says of a filesystem.
#[derive(Debug, Clone)]
pub enum Probe {
    /// It can take it. Mounts whose probes return the same `unit` key (for the same provider)
    /// share one snapshot — e.g. two mounts of one btrfs subvolume.
    Accept {
        unit: String,
        /// Provider-private plan, handed back in [`UnitRequest::data`].
        data: serde_json::Value,
        /// True for a point-in-time snapshot, false for a live view (bind).
        consistent: bool,
    },
    /// It cannot, and why (shown by `snapshot plan` and `-v`).
    Decline(String),
}

/// One snapshot unit to create.
#[derive(Debug, Clone)]
pub struct UnitRequest {
    pub unit: String,
    pub data: serde_json::Value,
    /// Every mount of the unit that holds a DIR, parents first.
    pub mounts: Vec<Mount>,
}

/// Session facts a provider may use to name and place what it creates.
#[derive(Debug, Clone)]
pub struct SessionContext {
    /// `snapshot-<hex>`: prefix of every object the session creates.
    pub id: String,
    /// Index of this unit in the session, for unique object names.
    pub index: usize,
    /// A private, root-only directory for this session's scratch mounts (`/run/snapshot/<id>`).
    pub runtime_dir: PathBuf,
    /// For providers that FIFREEZE: report freezes to the session's watchdog.
    pub guard: crate::recovery::watchdog::FreezeGuard,
}

impl SessionContext {
    /// `snapshot-<hex>-<index>`: the name for this unit's snapshot object.
    pub fn object_name(&self) -> String {
        format!("{}-{}", self.id, self.index)
    }
}

/// What `create` made; serialisable so a later process can remove it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Created {
    pub provider: String,
    pub unit: String,
    /// The object's name (carries the session id), for logs and cleanup.
    pub name: String,
    pub consistent: bool,
    pub data: serde_json::Value,
}

/// Whether a snapshot stayed usable for the whole backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "lowercase")]
pub enum Validity {
    Valid,
    Invalid(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider found, at creation time, that it cannot handle this unit after all
    /// (a `filesystems.d` script that exits non-zero); the session falls back to the next one.
    #[error("declined: {0}")]
    Declined(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Command(#[from] crate::exec::CommandError),
    #[error("{0}")]
    Other(String),
}

impl ProviderError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

pub trait Provider: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &str;

    /// True for a provider that freezes filesystems itself (FIFREEZE): the session then runs
    /// the watchdog and hands it over in [`SessionContext::guard`].
    fn freezes(&self) -> bool {
        false
    }

    /// Cheap and without side effects.
    fn probe(&self, fs: &Filesystem) -> Probe;

    /// Snapshot units that lie between `mount`'s root and `dir` without being mounts of their
    /// own (btrfs subvolumes nested in the mounted one, which a snapshot of the outer one shows
    /// as empty directories): synthetic mount entries, outermost first, whose `mount_point` is
    /// where each unit's root appears. The planner gives `dir` to the innermost. Only asked of
    /// the provider that accepts `mount`. Cheap, no side effects.
    fn nested(&self, _mount: &Mount, _dir: &Path) -> Vec<Mount> {
        Vec::new()
    }

    /// What [`create`](Self::create) will make, named and described well enough for
    /// [`remove`](Self::remove) to undo it from another process: the session journals it
    /// *before* calling `create`, so a crash in between leaves a record. `create` must return
    /// the same or a superset. The default suits providers whose probe data plus the object
    /// name identify the snapshot.
    fn expected(&self, unit: &UnitRequest, ctx: &SessionContext) -> Created {
        Created {
            provider: self.name().to_owned(),
            unit: unit.unit.clone(),
            name: ctx.object_name(),
            consistent: true,
            data: unit.data.clone(),
        }
    }

    /// Work that does not belong in the frozen window (mounting a scratch area, opening
    /// files), done just before it, after [`expected`](Self::expected) is journaled. What it
    /// makes must be undone by [`remove`](Self::remove) given the expected record.
    fn prepare(&self, _unit: &UnitRequest, _ctx: &SessionContext) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Creates the snapshot. The only call inside the frozen window: keep it short.
    fn create(&self, unit: &UnitRequest, ctx: &SessionContext) -> Result<Created, ProviderError>;

    /// The part of the snapshot that `mount` showed, as a detached read-only mount tree
    /// (`DetachedMount::clone_readonly` of the directory holding it), which the session
    /// attaches in the view. Called once per mount of the unit. A path inside the snapshot is
    /// looked up beneath the snapshot's root without following symlinks or crossing mounts
    /// (`sys::open_dir_beneath`): its components were the filesystem's users' to name.
    /// Mounting the snapshot itself, where needed, happens under the session's private
    /// runtime directory (`SessionContext::runtime_dir`), which only root can change.
    fn mount(&self, created: &Created, mount: &Mount) -> Result<DetachedMount, ProviderError>;

    /// Still valid at teardown?
    fn verify(&self, _created: &Created) -> Validity {
        Validity::Valid
    }

    /// Removes the snapshot. Idempotent: success when it is already gone. The session has
    /// unmounted every view mount of it before.
    fn remove(&self, created: &Created) -> Result<(), ProviderError>;
}
