//! The one trait every snapshot mechanism implements.
//!
//! The session calls, for each snapshot unit: `probe` (planning, no side effects) → `create`
//! (inside the frozen window, nothing else) → `mount` (after the writers are thawed, once per
//! mount of the unit that holds a DIR) → at teardown `verify` then `remove`.

use crate::mountinfo::Mount;
use crate::sys::DetachedMount;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A mounted filesystem as the planner sees it: the exact mount that holds one or more DIRs.
#[derive(Debug, Clone, Serialize)]
pub struct Filesystem {
    pub mount: Mount,
}

/// What a provider says of a filesystem.
///
/// A provider makes an acceptance with [`Probe::accept`], from its own plan type; the plan is
/// kept as JSON (it is shown by `snapshot plan --json`) and read back typed with
/// [`UnitRequest::data`].
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

impl Probe {
    /// Accepts with `plan` as the unit's plan data. A plan that cannot be written as JSON (a
    /// map with keys that are not strings; never a plain struct) declines, saying so.
    pub fn accept<T: Serialize>(unit: impl Into<String>, plan: &T, consistent: bool) -> Self {
        let unit = unit.into();
        match serde_json::to_value(plan) {
            Ok(data) => Probe::Accept {
                unit,
                data,
                consistent,
            },
            Err(e) => Probe::Decline(format!("unit {unit}: cannot record the plan: {e}")),
        }
    }
}

/// One snapshot unit to create.
#[derive(Debug, Clone)]
pub struct UnitRequest {
    pub unit: String,
    /// The plan of the probe that accepted the unit, as JSON: read it with
    /// [`data`](Self::data).
    pub data: serde_json::Value,
    /// Every mount of the unit that holds a DIR, parents first.
    pub mounts: Vec<Mount>,
}

impl UnitRequest {
    /// The probe's plan, as the provider's type. `provider` names it in the error.
    pub fn data<T: DeserializeOwned>(&self, provider: &str) -> Result<T, ProviderError> {
        T::deserialize(&self.data).map_err(|error| ProviderError::Data {
            provider: provider.to_owned(),
            object: DataOf::Unit(self.unit.clone()),
            error: format!("unreadable plan: {error}"),
        })
    }
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

/// What `create` made; serialisable so a later process can remove it. This is what the
/// journal keeps of a snapshot (docs/DESIGN.md §3.3): `data` is the provider's own record, as
/// JSON, written with [`Created::new`] and read with [`Created::data`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Created {
    pub provider: String,
    pub unit: String,
    /// The object's name (carries the session id), for logs and cleanup.
    pub name: String,
    pub consistent: bool,
    pub data: serde_json::Value,
}

impl Created {
    /// The record of the snapshot `name` of `unit`, made by `provider`, with `data` as the
    /// provider's record. Fails only for data that cannot be written as JSON (a map with keys
    /// that are not strings; never a plain struct).
    pub fn new<T: Serialize>(
        provider: &str,
        unit: &str,
        name: impl Into<String>,
        consistent: bool,
        data: &T,
    ) -> Result<Self, ProviderError> {
        let name = name.into();
        let data = serde_json::to_value(data).map_err(|e| ProviderError::Data {
            provider: provider.to_owned(),
            object: DataOf::Snapshot(name.clone()),
            error: format!("cannot write the record: {e}"),
        })?;
        Ok(Self {
            provider: provider.to_owned(),
            unit: unit.to_owned(),
            name,
            consistent,
            data,
        })
    }

    /// The record a unit's plan alone makes (the trait's default [`Provider::expected`]): the
    /// session object's name and the probe's plan data as it is.
    pub fn planned(
        provider: &str,
        unit: &UnitRequest,
        ctx: &SessionContext,
        consistent: bool,
    ) -> Self {
        Self {
            provider: provider.to_owned(),
            unit: unit.unit.clone(),
            name: ctx.object_name(),
            consistent,
            data: unit.data.clone(),
        }
    }

    /// The provider's record, as its type.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, ProviderError> {
        T::deserialize(&self.data).map_err(|error| ProviderError::Data {
            provider: self.provider.clone(),
            object: DataOf::Snapshot(self.name.clone()),
            error: format!("unreadable record: {error}"),
        })
    }
}

/// Whose provider data failed to read or write, for [`ProviderError::Data`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataOf {
    /// A unit's plan (its key).
    Unit(String),
    /// A snapshot's record (the object's name).
    Snapshot(String),
}

impl std::fmt::Display for DataOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataOf::Unit(unit) => write!(f, "unit {unit}"),
            DataOf::Snapshot(name) => write!(f, "snapshot {name}"),
        }
    }
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
    /// The message says the cause; it is not chained as a source, so it shows once.
    #[error("{what}: {error}")]
    Io { what: String, error: std::io::Error },
    #[error(transparent)]
    Command(#[from] crate::exec::CommandError),
    #[error(transparent)]
    Unmount(#[from] crate::sys::UnmountError),
    /// A unit's plan or a snapshot's record that is not what the provider writes (a journal
    /// from another version, or edited), or a record that cannot be written.
    #[error("{provider} {object}: {error}")]
    Data {
        provider: String,
        object: DataOf,
        /// What failed, with serde's words.
        error: String,
    },
    #[error("{0}")]
    Other(String),
}

impl ProviderError {
    pub fn io(what: impl Into<String>, error: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            error,
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

    /// [`probe`](Self::probe) of several filesystems at once, one answer each in their order:
    /// the planner asks each provider once about all the mounts no provider before it took, so
    /// that a provider whose probe runs a tool (`lvs`, `zfs list`) runs it once per plan, not
    /// once per mount (docs/DESIGN.md §3.1). Must answer as `probe` would for each.
    fn probe_all(&self, filesystems: &[Filesystem]) -> Vec<Probe> {
        filesystems.iter().map(|fs| self.probe(fs)).collect()
    }

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
        Created::planned(self.name(), unit, ctx, true)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Plan {
        #[serde(with = "crate::path_json")]
        device: PathBuf,
        id: u64,
    }

    fn ctx() -> SessionContext {
        SessionContext {
            id: "snapshot-0a1b2c3d".into(),
            index: 2,
            runtime_dir: "/run/snapshot/snapshot-0a1b2c3d".into(),
            guard: Default::default(),
        }
    }

    fn request(probe: Probe) -> UnitRequest {
        let Probe::Accept { unit, data, .. } = probe else {
            panic!("declined: {probe:?}");
        };
        UnitRequest {
            unit,
            data,
            mounts: Vec::new(),
        }
    }

    #[test]
    fn plan_and_record_round_trip_typed() {
        use std::os::unix::ffi::OsStringExt;
        let device = PathBuf::from(std::ffi::OsString::from_vec(b"/dev/caf\xe9".to_vec()));
        let plan = Plan { device, id: 7 };
        let unit = request(Probe::accept("u1", &plan, true));
        assert_eq!(unit.data::<Plan>("test").unwrap(), plan);
        let c = Created::new("test", &unit.unit, ctx().object_name(), true, &plan).unwrap();
        assert_eq!(c.name, "snapshot-0a1b2c3d-2");
        // Through the journal's text.
        let back: Created = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back.data::<Plan>().unwrap(), plan);
        // The default `expected` keeps the plan as it is.
        assert_eq!(Created::planned("test", &unit, &ctx(), true).data, c.data);
    }

    #[test]
    fn unreadable_data_names_provider_object_and_what() {
        let unit = UnitRequest {
            unit: "vg/lv".into(),
            data: serde_json::json!({ "device": 3, "id": 1 }),
            mounts: Vec::new(),
        };
        let e = unit.data::<Plan>("lvm").unwrap_err().to_string();
        assert!(e.starts_with("lvm unit vg/lv: unreadable plan: "), "{e}");
        assert!(e.contains("expected a path"), "{e}");
        let c = Created {
            provider: "zfs".into(),
            unit: "pool:tank".into(),
            name: "snapshot-0a1b2c3d-0".into(),
            consistent: true,
            data: serde_json::json!({ "device": "/dev/x" }),
        };
        let e = c.data::<Plan>().unwrap_err().to_string();
        assert_eq!(
            e,
            "zfs snapshot snapshot-0a1b2c3d-0: unreadable record: missing field `id`"
        );
    }

    #[test]
    fn data_that_cannot_be_written_is_an_error_not_a_panic() {
        // JSON object keys must be strings.
        let bad: BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        assert!(
            matches!(Probe::accept("u", &bad, true), Probe::Decline(why) if why.contains("cannot record the plan"))
        );
        let e = Created::new("test", "u", "snapshot-0a1b2c3d-0", true, &bad).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("test snapshot snapshot-0a1b2c3d-0: cannot write the record: "),
            "{e}"
        );
    }
}
