//! Planning: DIR → the exact mount that holds it → snapshot unit → provider.

use crate::mountinfo::{Mount, MountTable};
use crate::provider::{Filesystem, Probe, Provider};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("DIR {dir:?}: cannot find its mount: {source}")]
    MountId {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("DIR {dir:?}: mount id {id} is not in the mount table")]
    UnknownMount { dir: PathBuf, id: u64 },
    #[error("{mount_point:?} ({fstype}): no provider takes it: {reasons}")]
    NoProvider {
        mount_point: PathBuf,
        fstype: String,
        reasons: String,
    },
}

/// Why one provider declined one mount.
#[derive(Debug, Clone, Serialize)]
pub struct Declined {
    pub provider: String,
    pub reason: String,
}

/// A mount that holds at least one DIR.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedMount {
    pub mount: Mount,
    /// The DIRs it holds, canonical.
    pub dirs: Vec<PathBuf>,
    /// Index into [`Plan::units`].
    pub unit: usize,
    /// Providers tried before the one that accepted, with their reasons.
    pub declined: Vec<Declined>,
}

/// One snapshot to take.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedUnit {
    /// Index into the provider list the plan was made with.
    #[serde(skip)]
    pub provider_index: usize,
    pub provider: String,
    pub unit: String,
    #[serde(skip)]
    pub data: serde_json::Value,
    pub consistent: bool,
    /// Indexes into [`Plan::mounts`], parents first.
    pub mounts: Vec<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Parents before children.
    pub mounts: Vec<PlannedMount>,
    pub units: Vec<PlannedUnit>,
}

impl Plan {
    /// True when every unit is a point-in-time snapshot.
    pub fn consistent(&self) -> bool {
        self.units.iter().all(|u| u.consistent)
    }
}

/// Plans with the live mount table and statx mount ids.
pub fn plan_live(dirs: &[PathBuf], providers: &[Box<dyn Provider>]) -> Result<Plan, PlanErrorOrTable> {
    let table = MountTable::read().map_err(PlanErrorOrTable::Table)?;
    plan(dirs, &table, crate::sys::mount_id, providers).map_err(PlanErrorOrTable::Plan)
}

#[derive(Debug, thiserror::Error)]
pub enum PlanErrorOrTable {
    #[error(transparent)]
    Table(#[from] crate::mountinfo::MountInfoError),
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// Plans over a given mount table; `mount_id_of` tells which mount holds a path (statx in
/// production, a map in tests). `dirs` must be canonical and deduplicated.
pub fn plan(
    dirs: &[PathBuf],
    table: &MountTable,
    mount_id_of: impl Fn(&Path) -> std::io::Result<u64>,
    providers: &[Box<dyn Provider>],
) -> Result<Plan, PlanError> {
    // DIR → mount, grouped by mount.
    let mut mounts: Vec<PlannedMount> = Vec::new();
    for dir in dirs {
        let id = mount_id_of(dir).map_err(|source| PlanError::MountId {
            dir: dir.clone(),
            source,
        })?;
        let mount = table.by_id(id).ok_or(PlanError::UnknownMount {
            dir: dir.clone(),
            id,
        })?;
        match mounts.iter_mut().find(|m| m.mount.id == id) {
            Some(m) => m.dirs.push(dir.clone()),
            None => mounts.push(PlannedMount {
                mount: mount.clone(),
                dirs: vec![dir.clone()],
                unit: usize::MAX,
                declined: Vec::new(),
            }),
        }
    }
    // Parents before children: a mount point's ancestors have fewer components.
    mounts.sort_by(|a, b| {
        let depth = |m: &PlannedMount| m.mount.mount_point.components().count();
        depth(a)
            .cmp(&depth(b))
            .then_with(|| a.mount.mount_point.cmp(&b.mount.mount_point))
    });

    // Mount → first accepting provider → unit (shared by mounts with the same unit key).
    let mut units: Vec<PlannedUnit> = Vec::new();
    for (mi, pm) in mounts.iter_mut().enumerate() {
        let fs = Filesystem {
            mount: pm.mount.clone(),
        };
        let mut accepted = None;
        for (pi, provider) in providers.iter().enumerate() {
            match provider.probe(&fs) {
                Probe::Accept {
                    unit,
                    data,
                    consistent,
                } => {
                    accepted = Some((pi, unit, data, consistent));
                    break;
                }
                Probe::Decline(reason) => pm.declined.push(Declined {
                    provider: provider.name().to_owned(),
                    reason,
                }),
            }
        }
        let Some((pi, key, data, consistent)) = accepted else {
            return Err(PlanError::NoProvider {
                mount_point: pm.mount.mount_point.clone(),
                fstype: pm.mount.fstype.clone(),
                reasons: pm
                    .declined
                    .iter()
                    .map(|d| format!("{}: {}", d.provider, d.reason))
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        };
        let existing = units
            .iter()
            .position(|u| u.provider_index == pi && u.unit == key);
        pm.unit = match existing {
            Some(ui) => {
                units[ui].mounts.push(mi);
                ui
            }
            None => {
                units.push(PlannedUnit {
                    provider_index: pi,
                    provider: providers[pi].name().to_owned(),
                    unit: key,
                    data,
                    consistent,
                    mounts: vec![mi],
                });
                units.len() - 1
            }
        };
    }
    Ok(Plan { mounts, units })
}
