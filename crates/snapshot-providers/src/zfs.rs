//! ZFS: snapshots of datasets, all datasets of one pool in one atomic `zfs snapshot` call.
//!
//! # Probe
//!
//! A mount of fstype `zfs` shows a dataset: mountinfo's source is its name (`tank/home`). The
//! unit key is the *pool* (`pool:tank`), so the session hands every mount of one pool to one
//! [`Provider::create`], which snapshots all their datasets with one `zfs snapshot a@n b@n …`
//! (atomic: one transaction group, one point in time). Different pools are different units,
//! which the session creates in parallel. `zfs list -Hp` and `zpool list -Hp` (tab-separated,
//! exact numbers) tell what the dataset is — one call each for all the mounts of a plan
//! ([`Provider::probe_all`]), naming only their datasets and pools, so that the cost does not
//! grow with the datasets on the machine; declined with the reason:
//! - `zfs` not installed;
//! - the mount is itself a snapshot (`pool/ds@snap`: an automount under `.zfs/snapshot/` or a
//!   `mount -t zfs` of a snapshot) — already read-only and point-in-time, and ZFS cannot
//!   snapshot a snapshot;
//! - the dataset is gone or not a filesystem; the pool is imported read-only or not healthy
//!   enough to write; the snapshot's name would exceed ZFS's name length. (`snapshot_limit`
//!   does not bind root, so it is no reason.)
//!
//! What the mountpoint properties say does not matter: the provider works from the mount table
//! and mounts the snapshot itself. A `mountpoint=legacy` dataset mounted with `mount -t zfs`,
//! a `canmount=noauto` one mounted by hand and an inherited mountpoint are all the same
//! mount of a dataset; a `canmount=off` dataset is never mounted, so its directory belongs to
//! the mount above it (and the files there to that dataset).
//!
//! # Create (inside the frozen window)
//!
//! One spawn: `zfs snapshot DS1@NAME DS2@NAME …` where NAME is the session object name
//! (`snapshot-<id>-<index>`); logged at `-v`. Nothing else: the hold is placed outside the
//! window.
//!
//! # Mount
//!
//! The first mount of a unit places the hold: `zfs hold NAME DS1@NAME DS2@NAME …` (the tag is
//! the object name too, so it carries the session id), so that no pruning tool (sanoid,
//! zfs-auto-snapshot) can destroy the snapshots during the backup. A hold costs a
//! transaction-group sync like the snapshot itself: inside the window it would double it.
//! Each mount then gets its own dataset's snapshot, read-only, as `mount -t zfs -o ro
//! DS@NAME DIR` does (mount(2) with the snapshot's name as the source, made private). A mount
//! that shows a subdirectory of its dataset (a bind mount) gets it through a private staging
//! mount of the whole snapshot under the session's runtime directory.
//!
//! # Verify and remove
//!
//! Valid while every snapshot exists (one `zfs list` of the unit's snapshots). `remove` unmounts
//! the staging mounts, releases the session's hold with one `zfs release NAME DS1@NAME …` where
//! it is set, and destroys each snapshot with `zfs destroy DS@NAME`. When this process placed
//! the hold and verified the unit just before, that listing and the hold tell what exists and
//! is held; a remove from a journal (another process) lists the snapshots and `zfs holds`
//! first. Destruction goes only through [`destroy_target`], which accepts nothing but a recorded
//! dataset's snapshot named after the entry's own session object: never a dataset (no `@`),
//! never another snapshot. Already gone is success.

use serde::{Deserialize, Serialize};
use snapshot_core::exec::{self, CommandError};
use snapshot_core::provider::{
    Created, Filesystem, Probe, Provider, ProviderError, SessionContext, UnitRequest, Validity,
};
use snapshot_core::sys::DetachedMount;
use snapshot_core::{sys, Mount, MountTable};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

/// Prefix of every object a session creates (`snapshot-<id>-<index>`).
pub const SESSION_PREFIX: &str = "snapshot-";

/// ZFS's limit on a full dataset or snapshot name: `ZFS_MAX_DATASET_NAME_LEN` (256) less the
/// terminating NUL.
const MAX_NAME_LEN: usize = 255;

/// The longest session object name: `snapshot-` + 8 hex digits + `-` + a unit index.
const MAX_OBJECT_NAME_LEN: usize = SESSION_PREFIX.len() + 8 + 1 + 5;

/// Is `name` a session object name (`snapshot-<8 hex>-<index>`)? The only snapshot names (and
/// hold tags) this provider ever destroys (or releases).
pub fn is_session_object_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(SESSION_PREFIX) else {
        return false;
    };
    let Some((id, index)) = rest.split_once('-') else {
        return false;
    };
    id.len() == 8
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && !index.is_empty()
        && index.bytes().all(|b| b.is_ascii_digit())
}

/// The pool a dataset belongs to (the part before the first `/`).
pub fn pool_of(dataset: &str) -> &str {
    dataset.split('/').next().unwrap_or(dataset)
}

// ----------------------------------------------------------------------------------------
// The zfs and zpool commands

/// A ZFS command ([`exec::tool_command`]: PATH, then the sbin directories).
fn command(name: &str) -> Result<Command, ProviderError> {
    Ok(exec::tool_command(name, "zfsutils-linux")?)
}

fn run(cmd: &mut Command) -> Result<exec::Output, ProviderError> {
    let out = exec::run(cmd)?;
    if !out.stderr.is_empty() {
        log::debug!("{}: {}", exec::describe(cmd), out.stderr);
    }
    Ok(out)
}

/// Rows of `zfs … -H` / `zpool … -H` output: tab-separated fields, one line per object.
pub fn parse_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

/// True when a ZFS command failed because the dataset or snapshot does not exist.
fn is_not_found(e: &ProviderError) -> bool {
    match e {
        ProviderError::Command(CommandError::Failed { stderr, .. }) => {
            stderr.contains("does not exist") || stderr.contains("could not find any snapshots")
        }
        _ => false,
    }
}

// ----------------------------------------------------------------------------------------
// Probe

/// Fields asked of `zfs list -Hp` in probe.
const DATASET_FIELDS: &str = "name,type";

/// One row of `zfs list -Hp -o` [`DATASET_FIELDS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRow {
    pub name: String,
    pub kind: String,
}

pub fn parse_dataset_rows(text: &str) -> Result<Vec<DatasetRow>, String> {
    parse_rows(text)
        .into_iter()
        .map(|f| match f.as_slice() {
            [name, kind] => Ok(DatasetRow {
                name: name.clone(),
                kind: kind.clone(),
            }),
            _ => Err(format!("unreadable zfs list line: {:?}", f.join("\t"))),
        })
        .collect()
}

/// One row of `zpool list -Hp -o name,health,readonly`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRow {
    pub name: String,
    pub health: String,
    pub readonly: bool,
}

pub fn parse_pool_rows(text: &str) -> Result<Vec<PoolRow>, String> {
    parse_rows(text)
        .into_iter()
        .map(|f| match f.as_slice() {
            [name, health, readonly] => Ok(PoolRow {
                name: name.clone(),
                health: health.clone(),
                readonly: readonly == "on",
            }),
            _ => Err(format!("unreadable zpool list line: {:?}", f.join("\t"))),
        })
        .collect()
}

/// Why a dataset cannot be snapshotted, from what `zfs list` and `zpool list` said of it.
fn refusal(dataset: &DatasetRow, pool: &PoolRow) -> Option<String> {
    if dataset.kind != "filesystem" {
        return Some(format!(
            "{} is a ZFS {}, not a filesystem",
            dataset.name, dataset.kind
        ));
    }
    if pool.readonly {
        return Some(format!(
            "pool {} is imported read-only: no snapshot can be made in it",
            pool.name
        ));
    }
    if !matches!(pool.health.as_str(), "ONLINE" | "DEGRADED") {
        return Some(format!(
            "pool {} is {}: it cannot take snapshots",
            pool.name, pool.health
        ));
    }
    if dataset.name.len() + 1 + MAX_OBJECT_NAME_LEN > MAX_NAME_LEN {
        return Some(format!(
            "{}: the snapshot's name would exceed ZFS's {MAX_NAME_LEN} characters",
            dataset.name
        ));
    }
    None
}

/// What `probe` plans for a unit ([`UnitRequest::data`]): the pool. The datasets are the
/// sources of the unit's mounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct UnitPlan {
    pool: String,
}

/// The dataset a mount shows, or the reason to decline, from the mount alone.
fn dataset_of(m: &Mount) -> Result<&str, String> {
    if m.fstype != "zfs" {
        return Err(format!("not ZFS ({})", m.fstype));
    }
    let dataset = m.source.as_str();
    if dataset.contains('@') {
        return Err(format!(
            "{dataset} is a ZFS snapshot (mounted through .zfs/snapshot or mount -t zfs): \
             already read-only and point-in-time, and ZFS cannot snapshot a snapshot"
        ));
    }
    if dataset.is_empty() {
        return Err("the mount names no dataset".into());
    }
    Ok(dataset)
}

/// `zfs list -Hp -o name,type` of `datasets` in one call; when one is missing (which fails
/// the whole call), one call each.
fn list_datasets(datasets: &[&str]) -> Result<Vec<DatasetRow>, ProviderError> {
    let list = |names: &[&str]| -> Result<Vec<DatasetRow>, ProviderError> {
        let mut cmd = command("zfs")?;
        cmd.args(["list", "-Hp", "-o", DATASET_FIELDS]).args(names);
        let out = run(&mut cmd)?;
        parse_dataset_rows(&out.stdout).map_err(ProviderError::Other)
    };
    match list(datasets) {
        Err(e) if is_not_found(&e) && datasets.len() > 1 => {
            let mut rows = Vec::new();
            for d in datasets {
                match list(&[d]) {
                    Ok(r) => rows.extend(r),
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(rows)
        }
        other => other,
    }
}

/// `zpool list -Hp -o name,health,readonly` of `pools` in one call (one each when one is
/// missing).
fn list_pools(pools: &[&str]) -> Result<Vec<PoolRow>, ProviderError> {
    let list = |names: &[&str]| -> Result<Vec<PoolRow>, ProviderError> {
        let mut cmd = command("zpool")?;
        cmd.args(["list", "-Hp", "-o", "name,health,readonly"])
            .args(names);
        let out = run(&mut cmd)?;
        parse_pool_rows(&out.stdout).map_err(ProviderError::Other)
    };
    match list(pools) {
        Err(_) if pools.len() > 1 => {
            let mut rows = Vec::new();
            for p in pools {
                if let Ok(r) = list(&[p]) {
                    rows.extend(r);
                }
            }
            Ok(rows)
        }
        other => other,
    }
}

/// The plans for `filesystems`, one answer each: one `zfs list` of all their datasets and one
/// `zpool list` of all their pools, whatever their number (docs/DESIGN.md §3.2).
fn plan_all(filesystems: &[Filesystem]) -> Vec<Result<UnitPlan, String>> {
    let seen: Vec<Result<&str, String>> =
        filesystems.iter().map(|f| dataset_of(&f.mount)).collect();
    let mut datasets: Vec<&str> = seen
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    datasets.sort_unstable();
    datasets.dedup();
    let mut pools: Vec<&str> = datasets.iter().map(|d| pool_of(d)).collect();
    pools.sort_unstable();
    pools.dedup();
    let listed: Result<(Vec<DatasetRow>, Vec<PoolRow>), String> = if datasets.is_empty() {
        Ok(Default::default())
    } else if exec::find_tool("zfs").is_none() || exec::find_tool("zpool").is_none() {
        Err("zfs/zpool not found (install zfsutils-linux)".into())
    } else {
        list_datasets(&datasets)
            .and_then(|d| Ok((d, list_pools(&pools)?)))
            .map_err(|e| e.to_string())
    };
    seen.into_iter()
        .map(|dataset| {
            let dataset = dataset?;
            let (rows, pools) = listed.as_ref().map_err(Clone::clone)?;
            let pool = pool_of(dataset);
            let row = rows
                .iter()
                .find(|r| r.name == dataset)
                .ok_or_else(|| format!("zfs list does not show dataset {dataset}"))?;
            let p = pools
                .iter()
                .find(|r| r.name == pool)
                .ok_or_else(|| format!("zpool list does not show pool {pool}"))?;
            if let Some(why) = refusal(row, p) {
                return Err(why);
            }
            Ok(UnitPlan {
                pool: pool.to_owned(),
            })
        })
        .collect()
}

// ----------------------------------------------------------------------------------------
// What a unit's snapshot is

/// What a unit's snapshots are ([`Created::data`]): enough to mount, check and remove them
/// from any process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotData {
    pub pool: String,
    /// The snapshotted datasets, parents first: each has the snapshot `DATASET@name`.
    pub datasets: Vec<String>,
    /// The snapshot name and hold tag: the session object name.
    pub name: String,
    /// Staging mounts of whole snapshots for mounts that show a subdirectory:
    /// `<staging>/<index of the dataset>`.
    pub staging: PathBuf,
}

impl SnapshotData {
    fn new(plan: UnitPlan, unit: &UnitRequest, ctx: &SessionContext) -> Self {
        let mut datasets: Vec<String> = Vec::new();
        for m in &unit.mounts {
            // Two mounts of one dataset share its snapshot.
            if !datasets.contains(&m.source) {
                datasets.push(m.source.clone());
            }
        }
        Self {
            pool: plan.pool,
            datasets,
            name: ctx.object_name(),
            staging: ctx.runtime_dir.join(format!("zfs-{}", ctx.index)),
        }
    }

    /// The record of a journal entry, refused unless it can only name the entry's own
    /// snapshots: the session object name, datasets of the recorded pool.
    fn from_created(c: &Created) -> Result<Self, ProviderError> {
        let d: Self = c.data()?;
        let refuse = |why: String| {
            ProviderError::Other(format!(
                "ZFS snapshot {}: {why}; refusing to touch it",
                c.name
            ))
        };
        if d.name != c.name || !is_session_object_name(&d.name) {
            return Err(refuse(format!(
                "the record names snapshot {:?}, not the session object",
                d.name
            )));
        }
        for ds in &d.datasets {
            if !valid_dataset_name(ds) || pool_of(ds) != d.pool {
                return Err(refuse(format!(
                    "the record names {ds:?}, not a dataset of pool {}",
                    d.pool
                )));
            }
        }
        Ok(d)
    }

    /// `DATASET@name` for every dataset.
    pub fn snapshots(&self) -> Vec<String> {
        self.datasets
            .iter()
            .map(|d| format!("{d}@{}", self.name))
            .collect()
    }

    fn staging_for(&self, dataset: &str) -> Option<PathBuf> {
        let i = self.datasets.iter().position(|d| d == dataset)?;
        Some(self.staging.join(i.to_string()))
    }
}

/// A dataset name as ZFS allows it: no snapshot (`@`) or bookmark (`#`) part, no empty
/// component.
fn valid_dataset_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains(['@', '#', ' ', '\t', '\n'])
        && name.split('/').all(|c| !c.is_empty())
}

/// A snapshot [`destroy_target`] found safe to give to `zfs destroy`. Only
/// [`destroy_target`] makes one: no other code path reaches `zfs destroy`.
#[derive(Debug, PartialEq, Eq)]
pub struct DestroyTarget(String);

impl DestroyTarget {
    pub fn name(&self) -> &str {
        &self.0
    }
}

/// The gate in front of `zfs destroy`: `snapshot` must be `DATASET@NAME` for a dataset of the
/// record and the record's session object name. A dataset (no `@`) or any other snapshot is
/// refused.
pub fn destroy_target(data: &SnapshotData, snapshot: &str) -> Result<DestroyTarget, String> {
    let Some((dataset, name)) = snapshot.split_once('@') else {
        return Err(format!(
            "refusing to destroy {snapshot:?}: not a snapshot (no @)"
        ));
    };
    if name != data.name || !is_session_object_name(name) {
        return Err(format!(
            "refusing to destroy {snapshot:?}: not the session's snapshot {}",
            data.name
        ));
    }
    if !data.datasets.iter().any(|d| d == dataset) || !valid_dataset_name(dataset) {
        return Err(format!(
            "refusing to destroy {snapshot:?}: {dataset:?} is not a recorded dataset"
        ));
    }
    Ok(DestroyTarget(snapshot.to_owned()))
}

// ----------------------------------------------------------------------------------------
// Create, mount, verify, remove

/// The ZFS provider. Remembers which units' holds it placed (the hold goes with the first
/// mount of a unit) and what the last `verify` of a unit listed, for its `remove`.
#[derive(Debug, Default)]
pub struct ZfsProvider {
    held: Mutex<HashSet<String>>,
    /// Unit (object name) → its snapshots that `verify` found, with their user hold counts.
    listed: Mutex<HashMap<String, Vec<(String, u64)>>>,
}

/// The provider's name.
const NAME: &str = "zfs";

fn plan_of(unit: &UnitRequest) -> Result<UnitPlan, ProviderError> {
    unit.data(NAME)
}

fn created(
    unit: &UnitRequest,
    ctx: &SessionContext,
    data: &SnapshotData,
) -> Result<Created, ProviderError> {
    Created::new(NAME, &unit.unit, ctx.object_name(), true, data)
}

/// `zfs snapshot DS1@NAME DS2@NAME …`: all of them or none, at one instant.
fn snapshot_command(data: &SnapshotData) -> Result<Command, ProviderError> {
    let mut cmd = command("zfs")?;
    cmd.arg("snapshot").args(data.snapshots());
    Ok(cmd)
}

fn is_mounted_at(path: &Path) -> Result<bool, ProviderError> {
    let table = MountTable::read().map_err(|e| ProviderError::Other(e.to_string()))?;
    Ok(table.mounted_at(path).is_some())
}

fn mount_snapshot(snapshot: &str, at: &Path) -> Result<(), ProviderError> {
    sys::mount_readonly(Path::new(snapshot), at, "zfs", "").map_err(|e| {
        ProviderError::io(
            format!(
                "mounting ZFS snapshot {snapshot} read-only at {}",
                at.display()
            ),
            e,
        )
    })
}

/// Which of `snapshots` exist, and their user hold counts.
fn existing(snapshots: &[String]) -> Result<Vec<(String, u64)>, ProviderError> {
    let mut cmd = command("zfs")?;
    cmd.args(["list", "-Hp", "-t", "snapshot", "-o", "name,userrefs"])
        .args(snapshots);
    match run(&mut cmd) {
        Ok(out) => Ok(parse_userrefs(&out.stdout)),
        // One missing snapshot fails the whole listing: ask for each one.
        Err(e) if is_not_found(&e) => existing_one_by_one(snapshots),
        Err(e) => Err(e),
    }
}

fn existing_one_by_one(snapshots: &[String]) -> Result<Vec<(String, u64)>, ProviderError> {
    let mut found = Vec::new();
    for s in snapshots {
        let mut cmd = command("zfs")?;
        cmd.args(["list", "-Hp", "-t", "snapshot", "-o", "name,userrefs", s]);
        match run(&mut cmd) {
            Ok(out) => found.extend(parse_userrefs(&out.stdout)),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(found)
}

fn parse_userrefs(text: &str) -> Vec<(String, u64)> {
    parse_rows(text)
        .into_iter()
        .filter_map(|f| match f.as_slice() {
            [name, refs] => Some((name.clone(), refs.parse().unwrap_or(0))),
            _ => None,
        })
        .collect()
}

/// Snapshots among `snapshots` that carry the hold `tag` (`zfs holds -H`: `NAME TAG TIME`).
fn held_by(snapshots: &[String], tag: &str) -> Result<Vec<String>, ProviderError> {
    if snapshots.is_empty() {
        return Ok(Vec::new());
    }
    let mut cmd = command("zfs")?;
    cmd.args(["holds", "-H"]).args(snapshots);
    let out = run(&mut cmd)?;
    Ok(parse_holds(&out.stdout, tag))
}

pub fn parse_holds(text: &str, tag: &str) -> Vec<String> {
    parse_rows(text)
        .into_iter()
        .filter(|f| f.get(1).is_some_and(|t| t.trim() == tag))
        .map(|f| f[0].trim().to_owned())
        .collect()
}

impl ZfsProvider {
    /// `zfs hold NAME DS1@NAME …` once per unit.
    fn hold(&self, data: &SnapshotData) -> Result<(), ProviderError> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.contains(&data.name) {
            return Ok(());
        }
        let mut cmd = command("zfs")?;
        cmd.args(["hold", &data.name]).args(data.snapshots());
        let t = Instant::now();
        run(&mut cmd)?;
        log::debug!(
            "zfs: held {} snapshot(s) of pool {} as {} in {:.1} ms",
            data.datasets.len(),
            data.pool,
            data.name,
            t.elapsed().as_secs_f64() * 1e3
        );
        held.insert(data.name.clone());
        Ok(())
    }

    /// Releases the unit's hold and destroys its snapshots. When this process placed the hold
    /// and has just verified the unit, it knows which snapshots exist and carry its tag: one
    /// `zfs release` and the destroys, no listing; otherwise (another process's journal) it
    /// lists them and their holds first.
    fn destroy_all(&self, data: &SnapshotData) -> Result<(), ProviderError> {
        let listed = self
            .listed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&data.name);
        let we_hold = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&data.name);
        let present = match listed {
            Some(p) => p,
            None => existing(&data.snapshots())?,
        };
        let ours: Vec<String> = present
            .iter()
            .filter(|(name, _)| destroy_target(data, name).is_ok())
            .map(|(name, _)| name.clone())
            .collect();
        let with_holds: Vec<String> = present
            .iter()
            .filter(|(name, refs)| *refs > 0 && ours.contains(name))
            .map(|(name, _)| name.clone())
            .collect();
        // `zfs hold TAG a b …` placed the tag on every one of them, or on none.
        let to_release = if we_hold {
            with_holds
        } else {
            held_by(&with_holds, &data.name)?
        };
        if !to_release.is_empty() {
            let mut cmd = command("zfs")?;
            cmd.args(["release", &data.name]).args(&to_release);
            match run(&mut cmd) {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
        }
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&data.name);
        let mut problems = Vec::new();
        for name in &ours {
            let target = destroy_target(data, name).map_err(ProviderError::Other)?;
            let mut cmd = command("zfs")?;
            cmd.args(["destroy", target.name()]);
            match run(&mut cmd) {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => problems.push(e.to_string()),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ProviderError::Other(problems.join("; ")))
        }
    }
}

impl Provider for ZfsProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn probe(&self, fs: &Filesystem) -> Probe {
        self.probe_all(std::slice::from_ref(fs))
            .pop()
            .unwrap_or_else(|| Probe::Decline("no answer".into()))
    }

    fn probe_all(&self, filesystems: &[Filesystem]) -> Vec<Probe> {
        plan_all(filesystems)
            .into_iter()
            .map(|plan| match plan {
                Ok(plan) => Probe::accept(format!("pool:{}", plan.pool), &plan, true),
                Err(reason) => Probe::Decline(reason),
            })
            .collect()
    }

    fn expected(&self, unit: &UnitRequest, ctx: &SessionContext) -> Created {
        plan_of(unit)
            .and_then(|plan| created(unit, ctx, &SnapshotData::new(plan, unit, ctx)))
            // Unreachable with the session's own plans; keep what there is.
            .unwrap_or_else(|_| Created::planned(self.name(), unit, ctx, true))
    }

    fn create(&self, unit: &UnitRequest, ctx: &SessionContext) -> Result<Created, ProviderError> {
        let data = SnapshotData::new(plan_of(unit)?, unit, ctx);
        let mut cmd = snapshot_command(&data)?;
        log::info!(
            "zfs: pool {}: {} dataset(s) in one atomic call: {}",
            data.pool,
            data.datasets.len(),
            exec::describe(&cmd)
        );
        let t = Instant::now();
        if let Err(e) = run(&mut cmd) {
            // `zfs snapshot` of several is all or nothing; remove any that exist anyway
            // (guarded) before reporting.
            if let Err(e2) = self.destroy_all(&data) {
                log::warn!("zfs: removing {} after a failed snapshot: {e2}", data.name);
            }
            return Err(e);
        }
        log::debug!(
            "zfs: zfs snapshot of pool {} took {:.1} ms",
            data.pool,
            t.elapsed().as_secs_f64() * 1e3
        );
        created(unit, ctx, &data)
    }

    fn mount(&self, created: &Created, mount: &Mount) -> Result<DetachedMount, ProviderError> {
        let data = SnapshotData::from_created(created)?;
        let dataset = mount.source.as_str();
        if !data.datasets.iter().any(|d| d == dataset) {
            return Err(ProviderError::Other(format!(
                "ZFS snapshot {}: dataset {dataset} (mounted at {}) is not among its datasets {:?}",
                data.name,
                mount.mount_point.display(),
                data.datasets
            )));
        }
        self.hold(&data)?;
        let snapshot = format!("{dataset}@{}", data.name);
        // The whole snapshot goes to its private staging directory once; the part the mount
        // showed is cloned from there.
        let Some(staging) = data.staging_for(dataset) else {
            return Err(ProviderError::Other(format!(
                "no staging place for {dataset}"
            )));
        };
        if !matches!(sys::is_mount_point(&staging), Ok(true)) {
            std::fs::create_dir_all(&staging)
                .map_err(|e| ProviderError::io(format!("creating {}", staging.display()), e))?;
            mount_snapshot(&snapshot, &staging)?;
        }
        let rel = mount.root.strip_prefix("/").unwrap_or(&mount.root);
        sys::clone_beneath(&staging, rel).map_err(|e| {
            ProviderError::io(
                format!("zfs: cloning {} read-only", staging.join(rel).display()),
                e,
            )
        })
    }

    fn verify(&self, created: &Created) -> Validity {
        let data = match SnapshotData::from_created(created) {
            Ok(d) => d,
            Err(e) => return Validity::Invalid(e.to_string()),
        };
        let present = match existing(&data.snapshots()) {
            Ok(p) => {
                // Kept for the `remove` that follows at teardown.
                self.listed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(data.name.clone(), p.clone());
                p
            }
            Err(e) => {
                return Validity::Invalid(format!(
                    "could not check the ZFS snapshots {}: {e}",
                    data.name
                ))
            }
        };
        let missing: Vec<String> = data
            .snapshots()
            .into_iter()
            .filter(|s| !present.iter().any(|(n, _)| n == s))
            .collect();
        if missing.is_empty() {
            Validity::Valid
        } else {
            Validity::Invalid(format!(
                "ZFS snapshot(s) {} disappeared during the backup",
                missing.join(", ")
            ))
        }
    }

    fn remove(&self, created: &Created) -> Result<(), ProviderError> {
        let data = SnapshotData::from_created(created)?;
        for i in 0..data.datasets.len() {
            let staging = data.staging.join(i.to_string());
            if is_mounted_at(&staging)? {
                sys::unmount_path(&staging).map_err(|e| {
                    ProviderError::io(format!("unmounting {}", staging.display()), e)
                })?;
            }
            remove_dir_if_exists(&staging)?;
        }
        remove_dir_if_exists(&data.staging)?;
        self.destroy_all(&data)
    }
}

fn remove_dir_if_exists(dir: &Path) -> Result<(), ProviderError> {
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ProviderError::io(format!("removing {}", dir.display()), e)),
    }
}

#[cfg(test)]
#[path = "zfs_proptests.rs"]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(source: &str, mount_point: &str, fstype: &str) -> Mount {
        Mount {
            id: 1,
            parent_id: 0,
            major: 0,
            minor: 50,
            root: "/".into(),
            mount_point: mount_point.into(),
            options: "rw".into(),
            optional: vec![],
            fstype: fstype.into(),
            source: source.into(),
            super_options: "rw,xattr,noacl".into(),
        }
    }

    fn ctx(index: usize) -> SessionContext {
        SessionContext {
            id: "snapshot-0a1b2c3d".into(),
            index,
            runtime_dir: "/run/snapshot/snapshot-0a1b2c3d".into(),
            guard: Default::default(),
        }
    }

    fn unit(mounts: Vec<Mount>) -> UnitRequest {
        UnitRequest {
            unit: "pool:tank".into(),
            data: serde_json::to_value(UnitPlan {
                pool: "tank".into(),
            })
            .unwrap(),
            mounts,
        }
    }

    fn data(datasets: &[&str]) -> SnapshotData {
        SnapshotData {
            pool: "tank".into(),
            datasets: datasets.iter().map(|d| d.to_string()).collect(),
            name: "snapshot-0a1b2c3d-1".into(),
            staging: "/run/snapshot/snapshot-0a1b2c3d/zfs-1".into(),
        }
    }

    /// `zfs list -Hp -o name,type -r`, recorded in the VM guest (zfs 2.1.11).
    const LIST: &str = "tank\tfilesystem\ntank/a\tfilesystem\ntank/a/b\tfilesystem\n";
    /// `zpool list -Hp -o name,health,readonly`, same guest: imported normally, then with
    /// `zpool import -o readonly=on`.
    const POOL: &str = "tank\tONLINE\toff\n";
    const POOL_READONLY: &str = "tank\tONLINE\ton\n";

    #[test]
    fn parses_zfs_and_zpool_list() {
        let rows = parse_dataset_rows(LIST).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[1],
            DatasetRow {
                name: "tank/a".into(),
                kind: "filesystem".into(),
            }
        );
        assert!(parse_dataset_rows("tank/a filesystem\n").is_err());
        assert_eq!(
            parse_pool_rows(POOL).unwrap(),
            vec![PoolRow {
                name: "tank".into(),
                health: "ONLINE".into(),
                readonly: false,
            }]
        );
        assert!(parse_pool_rows(POOL_READONLY).unwrap()[0].readonly);
    }

    #[test]
    fn refusals_say_why() {
        let ds = &parse_dataset_rows(LIST).unwrap()[1];
        let pool = parse_pool_rows(POOL).unwrap().remove(0);
        assert_eq!(refusal(ds, &pool), None);
        let ro = parse_pool_rows(POOL_READONLY).unwrap().remove(0);
        assert!(refusal(ds, &ro).unwrap().contains("read-only"));
        let faulted = PoolRow {
            health: "SUSPENDED".into(),
            ..pool.clone()
        };
        assert!(refusal(ds, &faulted).unwrap().contains("SUSPENDED"));
        let vol = DatasetRow {
            kind: "volume".into(),
            ..ds.clone()
        };
        assert!(refusal(&vol, &pool).unwrap().contains("volume"));
        let long = DatasetRow {
            name: format!("tank/{}", "x".repeat(240)),
            ..ds.clone()
        };
        assert!(refusal(&long, &pool).unwrap().contains("exceed"));
    }

    #[test]
    fn declines_without_running_zfs() {
        let p = ZfsProvider::default();
        let decline = |m: Mount| match p.probe(&Filesystem { mount: m }) {
            Probe::Decline(why) => why,
            Probe::Accept { .. } => panic!("accepted"),
        };
        assert!(decline(mount("/dev/sda1", "/srv", "ext4")).contains("not ZFS"));
        let why = decline(mount("tank/a@daily", "/tank/a/.zfs/snapshot/daily", "zfs"));
        assert!(why.contains("is a ZFS snapshot"), "{why}");
    }

    #[test]
    fn one_unit_names_every_dataset_once_parents_first() {
        let u = unit(vec![
            mount("tank/a", "/a", "zfs"),
            mount("tank/a/b", "/a/b", "zfs"),
            // A second mount of tank/a (a bind mount elsewhere) shares its snapshot.
            mount("tank/a", "/elsewhere", "zfs"),
        ]);
        let p = ZfsProvider::default();
        let c = p.expected(&u, &ctx(1));
        assert_eq!(c.provider, "zfs");
        assert_eq!(c.name, "snapshot-0a1b2c3d-1");
        let d = SnapshotData::from_created(&c).unwrap();
        assert_eq!(d.datasets, ["tank/a", "tank/a/b"]);
        assert_eq!(
            d.snapshots(),
            ["tank/a@snapshot-0a1b2c3d-1", "tank/a/b@snapshot-0a1b2c3d-1"]
        );
        assert_eq!(
            d.staging,
            PathBuf::from("/run/snapshot/snapshot-0a1b2c3d/zfs-1")
        );
        assert_eq!(
            d.staging_for("tank/a/b"),
            Some(PathBuf::from("/run/snapshot/snapshot-0a1b2c3d/zfs-1/1"))
        );
        // The one atomic call.
        if exec::find_tool("zfs").is_some() {
            let cmd = snapshot_command(&d).unwrap();
            let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
            assert_eq!(
                args,
                [
                    "snapshot",
                    "tank/a@snapshot-0a1b2c3d-1",
                    "tank/a/b@snapshot-0a1b2c3d-1"
                ]
            );
        }
    }

    #[test]
    fn zfs_destroy_is_only_ever_given_the_sessions_snapshots() {
        let d = data(&["tank/a", "tank/a/b"]);
        assert_eq!(
            destroy_target(&d, "tank/a/b@snapshot-0a1b2c3d-1")
                .unwrap()
                .name(),
            "tank/a/b@snapshot-0a1b2c3d-1"
        );
        for bad in [
            // A dataset, never.
            "tank/a",
            "tank",
            // Another snapshot of a recorded dataset.
            "tank/a@daily-2024-01-01",
            "tank/a@snapshot-ffffffff-1",
            "tank/a@snapshot-0a1b2c3d-2",
            // The session's name on a dataset not recorded.
            "tank/other@snapshot-0a1b2c3d-1",
            "tank@snapshot-0a1b2c3d-1",
            // Recursive or multi-snapshot syntax.
            "tank/a@snapshot-0a1b2c3d-1,daily",
            "tank/a@snapshot-0a1b2c3d-1%daily",
        ] {
            assert!(destroy_target(&d, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_record_naming_something_else_is_refused() {
        let good = Created {
            provider: "zfs".into(),
            unit: "pool:tank".into(),
            name: "snapshot-0a1b2c3d-1".into(),
            consistent: true,
            data: serde_json::to_value(data(&["tank/a"])).unwrap(),
        };
        assert!(SnapshotData::from_created(&good).is_ok());
        let with = |d: SnapshotData| Created {
            data: serde_json::to_value(d).unwrap(),
            ..good.clone()
        };
        let other_name = SnapshotData {
            name: "daily".into(),
            ..data(&["tank/a"])
        };
        let other_pool = data(&["rpool/a"]);
        let snapshot_as_dataset = data(&["tank/a@daily"]);
        let empty_component = data(&["tank//a"]);
        for bad in [other_name, other_pool, snapshot_as_dataset, empty_component] {
            let err = SnapshotData::from_created(&with(bad.clone()))
                .unwrap_err()
                .to_string();
            assert!(err.contains("refusing"), "{bad:?}: {err}");
        }
        // Not even the entry's own name when it is not a session object name.
        let odd = Created {
            name: "daily".into(),
            data: serde_json::to_value(SnapshotData {
                name: "daily".into(),
                ..data(&["tank/a"])
            })
            .unwrap(),
            ..good
        };
        assert!(SnapshotData::from_created(&odd).is_err());
    }

    #[test]
    fn session_object_names() {
        assert!(is_session_object_name("snapshot-0a1b2c3d-0"));
        assert!(is_session_object_name("snapshot-0a1b2c3d-12"));
        assert!(!is_session_object_name("snapshot-0a1b2c3d"));
        assert!(!is_session_object_name("snapshot-0a1b2c3d-"));
        assert!(!is_session_object_name("snapshot-0A1B2C3D-0"));
        assert!(!is_session_object_name("snapshot-0a1b2c3-0"));
        assert!(!is_session_object_name("autosnap_2024-01-01_daily"));
        assert!(!is_session_object_name("snapshot-0a1b2c3d-1,x"));
        assert_eq!(pool_of("tank/a/b"), "tank");
        assert_eq!(pool_of("tank"), "tank");
    }

    #[test]
    fn holds_and_userrefs() {
        // `zfs holds -H` and `zfs list -Hp -t snapshot -o name,userrefs`, in the format the
        // guest printed.
        let holds = "tank/a@snapshot-0a1b2c3d-1\tsnapshot-0a1b2c3d-1\tSun Nov 22 04:59 2026\n\
                     tank/a@snapshot-0a1b2c3d-1\tsanoid\tSun Nov 22 04:59 2026\n\
                     tank/a/b@snapshot-0a1b2c3d-1\tother\tSun Nov 22 04:59 2026\n";
        assert_eq!(
            parse_holds(holds, "snapshot-0a1b2c3d-1"),
            ["tank/a@snapshot-0a1b2c3d-1"]
        );
        assert_eq!(
            parse_userrefs("tank/a@snapshot-0a1b2c3d-1\t2\ntank/a/b@snapshot-0a1b2c3d-1\t0\n"),
            [
                ("tank/a@snapshot-0a1b2c3d-1".to_owned(), 2),
                ("tank/a/b@snapshot-0a1b2c3d-1".to_owned(), 0)
            ]
        );
    }
}
