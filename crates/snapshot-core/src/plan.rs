//! Planning: DIR → the exact mount that holds it → snapshot unit → provider.

use crate::mountinfo::{Mount, MountTable};
use crate::provider::{Filesystem, Probe, Provider};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("DIR {dir:?}: cannot find its mount: {error}")]
    MountId { dir: PathBuf, error: std::io::Error },
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
pub fn plan_live(
    dirs: &[PathBuf],
    providers: &[Box<dyn Provider>],
) -> Result<Plan, PlanErrorOrTable> {
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
    let dir_mounts = mounts_of(dirs, table, mount_id_of)?;
    // Each distinct mount is probed once, by each provider once over all of them
    // (`Provider::probe_all`): the answers serve both the nested lookup and the plan.
    let mut probes = Probes::default();
    probes.probe_new(dir_mounts.iter().map(|(_, m)| *m), providers);
    let mut mounts = group_by_holder(dir_mounts, &probes, providers);
    // The nested units' entries were not probed yet.
    probes.probe_new(mounts.iter().map(|pm| &pm.mount), providers);
    let units = assign_units(&mut mounts, &probes, providers)?;
    Ok(Plan { mounts, units })
}

/// Synthetic nested entries share their mount's id: mounts are told apart by mount point too.
fn same(a: &Mount, b: &Mount) -> bool {
    a.id == b.id && a.mount_point == b.mount_point
}

/// DIR → the mount holding it.
fn mounts_of<'a, 't>(
    dirs: &'a [PathBuf],
    table: &'t MountTable,
    mount_id_of: impl Fn(&Path) -> std::io::Result<u64>,
) -> Result<Vec<(&'a PathBuf, &'t Mount)>, PlanError> {
    dirs.iter()
        .map(|dir| {
            let id = mount_id_of(dir).map_err(|source| PlanError::MountId {
                dir: dir.clone(),
                error: source,
            })?;
            let mount = table.by_id(id).ok_or(PlanError::UnknownMount {
                dir: dir.clone(),
                id,
            })?;
            Ok((dir, mount))
        })
        .collect()
}

/// The providers' answers for the mounts probed so far.
#[derive(Default)]
struct Probes(Vec<(Mount, Probed)>);

impl Probes {
    fn of(&self, mount: &Mount) -> Option<&Probed> {
        self.0.iter().find(|(m, _)| same(m, mount)).map(|(_, p)| p)
    }

    /// Probes those of `mounts` not probed yet (each once).
    fn probe_new<'m>(
        &mut self,
        mounts: impl Iterator<Item = &'m Mount>,
        providers: &[Box<dyn Provider>],
    ) {
        let mut fresh: Vec<Mount> = Vec::new();
        for m in mounts {
            if self.of(m).is_none() && !fresh.iter().any(|f| same(f, m)) {
                fresh.push(m.clone());
            }
        }
        let answers = first_acceptors(&fresh, providers);
        self.0.extend(fresh.into_iter().zip(answers));
    }
}

/// DIR → the mount, or the unit nested in it (a btrfs subvolume), that holds it; grouped by
/// that, parents before children.
fn group_by_holder(
    dir_mounts: Vec<(&PathBuf, &Mount)>,
    probes: &Probes,
    providers: &[Box<dyn Provider>],
) -> Vec<PlannedMount> {
    let mut mounts: Vec<PlannedMount> = Vec::new();
    for (dir, mount) in dir_mounts {
        let nested = probes
            .of(mount)
            .and_then(|p| p.accepted.as_ref())
            .map(|a| providers[a.provider].nested(mount, dir))
            .unwrap_or_default();
        let mount = nested.last().unwrap_or(mount);
        match mounts.iter_mut().find(|m| same(&m.mount, mount)) {
            Some(m) => m.dirs.push(dir.clone()),
            None => mounts.push(PlannedMount {
                mount: mount.clone(),
                dirs: vec![dir.clone()],
                unit: usize::MAX,
                declined: Vec::new(),
            }),
        }
    }
    // A mount point's ancestors have fewer components.
    mounts.sort_by(|a, b| {
        let depth = |m: &PlannedMount| m.mount.mount_point.components().count();
        depth(a)
            .cmp(&depth(b))
            .then_with(|| a.mount.mount_point.cmp(&b.mount.mount_point))
    });
    mounts
}

/// Mount → its first accepting provider → unit (shared by mounts with the same unit key).
fn assign_units(
    mounts: &mut [PlannedMount],
    probes: &Probes,
    providers: &[Box<dyn Provider>],
) -> Result<Vec<PlannedUnit>, PlanError> {
    let mut units: Vec<PlannedUnit> = Vec::new();
    for (mi, pm) in mounts.iter_mut().enumerate() {
        // Every planned mount was probed; none found would read as nobody taking it.
        let answer = probes.of(&pm.mount).cloned().unwrap_or_default();
        pm.declined = answer.declined;
        let Some(accepted) = answer.accepted else {
            return Err(no_provider(pm));
        };
        let existing = units
            .iter()
            .position(|u| u.provider_index == accepted.provider && u.unit == accepted.unit);
        pm.unit = match existing {
            Some(ui) => {
                units[ui].mounts.push(mi);
                ui
            }
            None => {
                units.push(PlannedUnit {
                    provider_index: accepted.provider,
                    provider: providers[accepted.provider].name().to_owned(),
                    unit: accepted.unit,
                    data: accepted.data,
                    consistent: accepted.consistent,
                    mounts: vec![mi],
                });
                units.len() - 1
            }
        };
    }
    Ok(units)
}

fn no_provider(pm: &PlannedMount) -> PlanError {
    PlanError::NoProvider {
        mount_point: pm.mount.mount_point.clone(),
        fstype: pm.mount.fstype.clone(),
        reasons: pm
            .declined
            .iter()
            .map(|d| format!("{}: {}", d.provider, d.reason))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// The provider that took a mount, with its probe's answer.
#[derive(Debug, Clone)]
struct Accepted {
    provider: usize,
    unit: String,
    data: serde_json::Value,
    consistent: bool,
}

/// What the providers said of one mount: the first that accepted it, and those before it that
/// declined.
#[derive(Debug, Clone, Default)]
struct Probed {
    accepted: Option<Accepted>,
    declined: Vec<Declined>,
}

/// Each of `mounts` probed by the providers in order until one accepts: each provider is asked
/// once, with [`Provider::probe_all`], about the mounts no provider before it took.
fn first_acceptors(mounts: &[Mount], providers: &[Box<dyn Provider>]) -> Vec<Probed> {
    let mut answers: Vec<Probed> = vec![Probed::default(); mounts.len()];
    for (pi, provider) in providers.iter().enumerate() {
        let open: Vec<usize> = (0..mounts.len())
            .filter(|&i| answers[i].accepted.is_none())
            .collect();
        if open.is_empty() {
            break;
        }
        let filesystems: Vec<Filesystem> = open
            .iter()
            .map(|&i| Filesystem {
                mount: mounts[i].clone(),
            })
            .collect();
        let probes = provider.probe_all(&filesystems);
        for (k, &i) in open.iter().enumerate() {
            match probes.get(k) {
                Some(Probe::Accept {
                    unit,
                    data,
                    consistent,
                }) => {
                    answers[i].accepted = Some(Accepted {
                        provider: pi,
                        unit: unit.clone(),
                        data: data.clone(),
                        consistent: *consistent,
                    })
                }
                Some(Probe::Decline(reason)) => answers[i].declined.push(Declined {
                    provider: provider.name().to_owned(),
                    reason: reason.clone(),
                }),
                None => answers[i].declined.push(Declined {
                    provider: provider.name().to_owned(),
                    reason: format!("gave {} answers for {} mounts", probes.len(), open.len()),
                }),
            }
        }
    }
    answers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mountinfo::MountTable;
    use crate::provider::{Created, ProviderError, SessionContext, UnitRequest};
    use std::collections::HashMap;

    /// Root on ext4; btrfs subvolumes (one of them mounted twice, one nested); an XFS /var with
    /// a tmpfs below it; two sibling mounts under the plain directory /srv.
    const TABLE: &str = "\
21 1 254:1 / / rw,relatime shared:1 - ext4 /dev/mapper/vg0-root rw,errors=remount-ro
40 21 0:31 /@home /home rw,noatime shared:30 - btrfs /dev/sdb rw,subvolid=256,subvol=/@home
41 21 0:31 /@home /mnt/home2 rw,noatime shared:30 - btrfs /dev/sdb rw,subvolid=256,subvol=/@home
42 21 0:31 /@data /data rw,noatime shared:31 - btrfs /dev/sdb rw,subvolid=257,subvol=/@data
43 42 0:31 /@data/sub /data/sub rw,noatime shared:32 - btrfs /dev/sdb rw,subvolid=258,subvol=/@data/sub
50 21 254:3 / /var rw,relatime shared:35 - xfs /dev/mapper/vg0-var rw,attr2,inode64
51 50 0:40 / /var/lib/docker rw,relatime shared:36 - tmpfs tmpfs rw,size=1024k
60 21 254:4 / /srv/a rw,relatime shared:37 - ext4 /dev/mapper/vg0-a rw
61 21 254:5 / /srv/b rw,relatime shared:38 - ext4 /dev/mapper/vg0-b rw
";

    /// Which mount holds each path, as statx would say.
    fn ids() -> HashMap<PathBuf, u64> {
        [
            ("/", 21),
            ("/etc", 21),
            ("/srv", 21),
            ("/home", 40),
            ("/home/alice", 40),
            ("/home/bob", 40),
            ("/mnt/home2", 41),
            ("/mnt/home2/bob", 41),
            ("/data", 42),
            ("/data/sub", 43),
            ("/data/sub/deep", 43),
            ("/var", 50),
            ("/var/lib", 50),
            ("/var/lib/docker", 51),
            ("/srv/a", 60),
            ("/srv/b", 61),
            ("/srv/b/x", 61),
            ("/ghost", 999),
        ]
        .into_iter()
        .map(|(p, id)| (PathBuf::from(p), id))
        .collect()
    }

    /// Snapshots btrfs only; one unit per subvolume of one filesystem.
    #[derive(Debug)]
    struct FakeSnap;

    /// Takes everything, one unit per mount, not consistent (like the bind fallback).
    #[derive(Debug)]
    struct FakeBind;

    /// Declines everything.
    #[derive(Debug)]
    struct FakeNever;

    fn no_side_effects() -> ProviderError {
        ProviderError::Other("fake provider: planning only".into())
    }

    macro_rules! planning_only {
        () => {
            fn create(
                &self,
                _: &UnitRequest,
                _: &SessionContext,
            ) -> Result<Created, ProviderError> {
                Err(no_side_effects())
            }
            fn mount(
                &self,
                _: &Created,
                _: &Mount,
            ) -> Result<crate::sys::DetachedMount, ProviderError> {
                Err(no_side_effects())
            }
            fn remove(&self, _: &Created) -> Result<(), ProviderError> {
                Err(no_side_effects())
            }
        };
    }

    impl Provider for FakeSnap {
        fn name(&self) -> &str {
            "snap"
        }
        fn probe(&self, fs: &Filesystem) -> Probe {
            let m = &fs.mount;
            if m.fstype != "btrfs" {
                return Probe::Decline(format!("not btrfs ({})", m.fstype));
            }
            Probe::Accept {
                unit: format!("{}:{}:{}", m.major, m.minor, m.root.display()),
                data: serde_json::json!({ "subvol": m.super_option("subvol") }),
                consistent: true,
            }
        }
        planning_only!();
    }

    impl Provider for FakeBind {
        fn name(&self) -> &str {
            "bind"
        }
        fn probe(&self, fs: &Filesystem) -> Probe {
            Probe::Accept {
                unit: fs.mount.id.to_string(),
                data: serde_json::Value::Null,
                consistent: false,
            }
        }
        planning_only!();
    }

    impl Provider for FakeNever {
        fn name(&self) -> &str {
            "never"
        }
        fn probe(&self, _: &Filesystem) -> Probe {
            Probe::Decline("takes nothing".into())
        }
        planning_only!();
    }

    fn snap_then_bind() -> Vec<Box<dyn Provider>> {
        vec![Box::new(FakeSnap), Box::new(FakeBind)]
    }

    fn run(dirs: &[&str], providers: &[Box<dyn Provider>]) -> Result<Plan, PlanError> {
        let table = MountTable::parse(TABLE).unwrap();
        let ids = ids();
        let dirs: Vec<PathBuf> = dirs.iter().map(PathBuf::from).collect();
        plan(
            &dirs,
            &table,
            |p| {
                ids.get(p).copied().ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, "not in the test map")
                })
            },
            providers,
        )
    }

    fn mount_points(plan: &Plan) -> Vec<&Path> {
        plan.mounts
            .iter()
            .map(|m| m.mount.mount_point.as_path())
            .collect()
    }

    /// Every mount points at a unit that lists it, and every unit lists its mounts in plan
    /// order (parents first).
    fn assert_indexes_consistent(plan: &Plan) {
        for (mi, m) in plan.mounts.iter().enumerate() {
            assert!(plan.units[m.unit].mounts.contains(&mi), "mount {mi}");
        }
        for (ui, u) in plan.units.iter().enumerate() {
            assert!(!u.mounts.is_empty());
            assert!(u.mounts.windows(2).all(|w| w[0] < w[1]), "unit {ui}");
            assert!(u.mounts.iter().all(|&mi| plan.mounts[mi].unit == ui));
        }
    }

    #[test]
    fn several_dirs_on_one_filesystem_make_one_mount_and_one_unit() {
        let plan = run(&["/home/alice", "/home/bob", "/home"], &snap_then_bind()).unwrap();
        assert_eq!(mount_points(&plan), [Path::new("/home")]);
        assert_eq!(
            plan.mounts[0].dirs,
            ["/home/alice", "/home/bob", "/home"].map(PathBuf::from)
        );
        assert_eq!(plan.units.len(), 1);
        let u = &plan.units[0];
        assert_eq!((u.provider.as_str(), u.provider_index), ("snap", 0));
        assert_eq!(u.unit, "0:31:/@home");
        assert_eq!(u.data, serde_json::json!({ "subvol": "/@home" }));
        assert_eq!(u.mounts, [0]);
        assert!(plan.mounts[0].declined.is_empty());
        assert!(plan.consistent());
        assert_indexes_consistent(&plan);
    }

    #[test]
    fn one_filesystem_at_two_places_shares_a_snapshot_unit() {
        let plan = run(&["/mnt/home2/bob", "/home/alice"], &snap_then_bind()).unwrap();
        assert_eq!(
            mount_points(&plan),
            [Path::new("/home"), Path::new("/mnt/home2")]
        );
        assert_eq!(plan.units.len(), 1);
        assert_eq!(plan.units[0].mounts, [0, 1]);
        assert_eq!(plan.mounts[1].dirs, [PathBuf::from("/mnt/home2/bob")]);
        assert_indexes_consistent(&plan);
    }

    #[test]
    fn one_filesystem_at_two_places_makes_two_bind_units() {
        let bind: Vec<Box<dyn Provider>> = vec![Box::new(FakeBind)];
        let plan = run(&["/mnt/home2/bob", "/home/alice"], &bind).unwrap();
        assert_eq!(plan.mounts.len(), 2);
        assert_eq!(plan.units.len(), 2);
        let keys: Vec<_> = plan.units.iter().map(|u| u.unit.as_str()).collect();
        assert_eq!(keys, ["40", "41"]);
        assert!(!plan.consistent());
        assert_indexes_consistent(&plan);
    }

    #[test]
    fn dir_that_is_a_mount_point() {
        let plan = run(&["/var"], &snap_then_bind()).unwrap();
        assert_eq!(plan.mounts.len(), 1);
        let m = &plan.mounts[0];
        assert_eq!(m.mount.id, 50);
        assert_eq!(m.mount.mount_point, Path::new("/var"));
        assert_eq!(m.dirs, [PathBuf::from("/var")]);
        assert_eq!(plan.units[0].provider, "bind");
    }

    #[test]
    fn nested_mounts_are_ordered_parent_first() {
        // Children given first, to see the planner reorder them.
        let plan = run(
            &[
                "/var/lib/docker",
                "/data/sub/deep",
                "/var/lib",
                "/data",
                "/etc",
            ],
            &snap_then_bind(),
        )
        .unwrap();
        assert_eq!(
            mount_points(&plan),
            ["/", "/data", "/var", "/data/sub", "/var/lib/docker"].map(Path::new)
        );
        // Every mount comes after its parent mount, when the parent is in the plan.
        for (i, m) in plan.mounts.iter().enumerate() {
            if let Some(p) = plan
                .mounts
                .iter()
                .position(|p| p.mount.id == m.mount.parent_id)
            {
                assert!(p < i, "{:?} before its parent", m.mount.mount_point);
            }
        }
        // Nested btrfs subvolumes are separate snapshot units.
        let data = &plan.units[plan.mounts[1].unit];
        let sub = &plan.units[plan.mounts[3].unit];
        assert_eq!(data.unit, "0:31:/@data");
        assert_eq!(sub.unit, "0:31:/@data/sub");
        assert_eq!(plan.units.len(), 5);
        assert_indexes_consistent(&plan);
    }

    #[test]
    fn sibling_mounts_under_a_plain_directory() {
        let plan = run(&["/srv/b/x", "/srv", "/srv/a"], &snap_then_bind()).unwrap();
        assert_eq!(
            mount_points(&plan),
            ["/", "/srv/a", "/srv/b"].map(Path::new)
        );
        // /srv is no mount: it is planned through the root filesystem.
        assert_eq!(plan.mounts[0].dirs, [PathBuf::from("/srv")]);
        assert_eq!(plan.mounts[1].dirs, [PathBuf::from("/srv/a")]);
        assert_eq!(plan.mounts[2].dirs, [PathBuf::from("/srv/b/x")]);
        assert!(plan.mounts.iter().all(|m| m.mount.fstype == "ext4"));
        assert_eq!(plan.units.len(), 3);
        assert_indexes_consistent(&plan);
    }

    #[test]
    fn declines_are_recorded_with_provider_and_reason() {
        let providers: Vec<Box<dyn Provider>> =
            vec![Box::new(FakeNever), Box::new(FakeSnap), Box::new(FakeBind)];
        let plan = run(&["/etc", "/home"], &providers).unwrap();
        let root = &plan.mounts[0];
        let got: Vec<_> = root
            .declined
            .iter()
            .map(|d| (d.provider.as_str(), d.reason.as_str()))
            .collect();
        assert_eq!(
            got,
            [("never", "takes nothing"), ("snap", "not btrfs (ext4)")]
        );
        assert_eq!(plan.units[root.unit].provider, "bind");
        assert_eq!(plan.units[root.unit].provider_index, 2);
        // Providers after the accepting one are not asked.
        let home = &plan.mounts[1];
        assert_eq!(home.declined.len(), 1);
        assert_eq!(home.declined[0].provider, "never");
        assert_eq!(plan.units[home.unit].provider, "snap");
        // `snapshot plan --json` shows them.
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["mounts"][0]["declined"][1]["provider"], "snap");
        assert_eq!(
            json["mounts"][0]["declined"][1]["reason"],
            "not btrfs (ext4)"
        );
    }

    #[test]
    fn no_accepting_provider_names_the_mount_point() {
        let providers: Vec<Box<dyn Provider>> = vec![Box::new(FakeNever), Box::new(FakeSnap)];
        let err = run(&["/home/alice", "/var/lib"], &providers).unwrap_err();
        match &err {
            PlanError::NoProvider {
                mount_point,
                fstype,
                reasons,
            } => {
                assert_eq!(mount_point, Path::new("/var"));
                assert_eq!(fstype, "xfs");
                assert_eq!(reasons, "never: takes nothing; snap: not btrfs (xfs)");
            }
            other => panic!("expected NoProvider, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("\"/var\"") && msg.contains("xfs"), "{msg}");
        // No provider at all.
        assert!(matches!(
            run(&["/home"], &[]),
            Err(PlanError::NoProvider { reasons, .. }) if reasons.is_empty()
        ));
    }

    #[test]
    fn mount_id_missing_from_the_table() {
        let err = run(&["/home", "/ghost"], &snap_then_bind()).unwrap_err();
        match &err {
            PlanError::UnknownMount { dir, id } => {
                assert_eq!(dir, Path::new("/ghost"));
                assert_eq!(*id, 999);
            }
            other => panic!("expected UnknownMount, got {other:?}"),
        }
        assert!(err.to_string().contains("/ghost"));
    }

    #[test]
    fn mount_id_lookup_failure_names_the_dir() {
        let err = run(&["/nowhere"], &snap_then_bind()).unwrap_err();
        assert!(
            matches!(&err, PlanError::MountId { dir, .. } if dir == Path::new("/nowhere")),
            "{err:?}"
        );
        assert!(err.to_string().contains("/nowhere"));
    }

    #[test]
    fn consistency_of_the_whole_plan() {
        let all_snap = run(&["/home", "/data", "/mnt/home2"], &snap_then_bind()).unwrap();
        assert!(all_snap.units.iter().all(|u| u.consistent));
        assert!(all_snap.consistent());

        let mixed = run(&["/home", "/etc"], &snap_then_bind()).unwrap();
        let by_provider: Vec<_> = mixed
            .units
            .iter()
            .map(|u| (u.provider.as_str(), u.consistent))
            .collect();
        assert_eq!(by_provider, [("bind", false), ("snap", true)]);
        assert!(!mixed.consistent());

        let empty = run(&[], &snap_then_bind()).unwrap();
        assert!(empty.mounts.is_empty() && empty.units.is_empty());
        assert!(empty.consistent());
    }
}
