//! LVM: snapshots of logical volumes, classic (copy-on-write, `lvm`) and thin (`lvm-thin`).
//!
//! # Probe
//!
//! A mount is an LV when its device number (mountinfo `MAJ:MIN`) belongs to a device-mapper
//! device that LVM made (`/sys/dev/block/MAJ:MIN/dm/uuid` starts with `LVM-`) and `lvs`
//! reports an LV with that kernel device number — never a guess from names. Sysfs also tells,
//! before any LVM command, which VG to ask about (the device-mapper name) and whether the LV is
//! thin (its device stands on a pool's `-tpool` device), so that the provider of the other
//! kind declines without running LVM. The planner hands all its mounts to one
//! [`Provider::probe_all`]: one `lvs --reportformat json` over their VGs, whatever the number
//! of mounts, with the VGs' free space and extent size in the same report (no `vgs`); LVs of
//! other VGs are never listed. A classic snapshot needs free extents in the VG for its
//! copy-on-write space: `--lvm-size` (default `10%ORIGIN`, or `NN%ORIGIN`, or absolute such
//! as `512M`), rounded up to whole extents, checked against the VG's free space before
//! anything is frozen. A thin LV is declined when its pool's data or metadata is already
//! [`THIN_POOL_FULL`] % full.
//!
//! # Create (inside the frozen window)
//!
//! `lvcreate --snapshot` alone: device-mapper suspends the origin with its filesystem frozen
//! while it takes the snapshot (no FIFREEZE of our own on top). Classic snapshots are made
//! read-write so that the kernel can replay ext4's journal and orphan list (and XFS its log)
//! when the snapshot is mounted read-only. Thin snapshots carry LVM's activation-skip flag:
//! they are activated (`lvchange -ay -K`) when mounted, after the writers are thawed. Several
//! LVs of one session are created in parallel by the session; LVM serialises commands on one
//! VG with its own VG lock, so no extra locking is needed here.
//!
//! # Mount
//!
//! The snapshot's device is `/dev/mapper/` + its device-mapper name (as LVM names it), waited
//! for: no `lvs`. Read-only: ext4 with no options (`noload` as a fallback), XFS with `nouuid` (the snapshot
//! has the origin's UUID; `nouuid,norecovery` as a fallback). A mount that shows a
//! subdirectory of the filesystem (a bind mount) gets it through a private staging mount of
//! the whole snapshot under the session's runtime directory.
//!
//! # Verify and remove
//!
//! A classic snapshot that overflowed (attribute state `I`/`S`, or `snap_percent` 100) or a
//! thin snapshot whose pool filled up is [`Validity::Invalid`]. The provider notes each unit
//! of a session at `prepare` (by session id, in this process): the session's first `verify`
//! reads one `lvs` over all their VGs, which every other `verify` and `remove` of the session
//! uses, until its last unit is removed; a snapshot this process did not prepare (a dead
//! session's, from its journal) gets an `lvs` of its own VG. `remove` runs
//! `lvremove -f VG/NAME` only through [`removable`], which accepts nothing but an LV carrying
//! the session prefix that is a snapshot (its `origin` set) of the recorded origin: the origin
//! LV is never the target of `lvremove`. Already gone is success.
//!
//! # Names
//!
//! LVM reserves LV names that start with `snapshot`, so the snapshot LV of the session object
//! `snapshot-<id>-<index>` is `lvm-snapshot-<id>-<index>` ([`lv_name`]); the session id is in
//! it, and `Created::name` stays the session object's name.

use serde::{Deserialize, Serialize};
use snapshot_core::exec::{self, CommandError};
use snapshot_core::provider::{
    Created, Filesystem, Probe, Provider, ProviderError, SessionContext, UnitRequest, Validity,
};
use snapshot_core::sys::DetachedMount;
use snapshot_core::{sys, Mount, MountTable};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Prefix of every object a session creates (`snapshot-<id>-<index>`).
pub const SESSION_PREFIX: &str = "snapshot-";

/// What goes before the session object's name in a snapshot LV's name (LVM rejects names
/// starting with `snapshot`). `lvm-snapshot-…` are the only LV names `lvremove` is ever given.
pub const LV_PREFIX: &str = "lvm-";

/// The snapshot LV's name for a session object name (`snapshot-<id>-<index>`).
pub fn lv_name(object_name: &str) -> String {
    format!("{LV_PREFIX}{object_name}")
}

/// Is `name` a snapshot LV name this tool makes (`lvm-snapshot-…`)?
pub fn is_session_lv_name(name: &str) -> bool {
    name.strip_prefix(LV_PREFIX)
        .is_some_and(|rest| rest.starts_with(SESSION_PREFIX) && rest.len() > SESSION_PREFIX.len())
}

/// Pool usage (data or metadata, %) from which `lvm-thin` declines: the snapshot's writes
/// could fill the pool during the backup.
pub const THIN_POOL_FULL: f64 = 95.0;

/// Fields asked of `lvs` (all as plain strings in its JSON); the VG's free space and extent
/// size come in the same report, so that planning needs no `vgs`.
const LV_FIELDS: &str = "lv_name,vg_name,lv_attr,lv_size,lv_kernel_major,lv_kernel_minor,\
                         pool_lv,origin,data_percent,metadata_percent,snap_percent,lv_dm_path,\
                         vg_free,vg_extent_size";

// ----------------------------------------------------------------------------------------
// --lvm-size

/// Size of a classic snapshot's copy-on-write space (`--lvm-size`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LvmSize {
    /// `NN%ORIGIN`: a share of the origin LV's size.
    PercentOfOrigin(f64),
    /// An absolute size in bytes.
    Bytes(u64),
}

impl Default for LvmSize {
    fn default() -> Self {
        LvmSize::PercentOfOrigin(10.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LvmSizeError {
    #[error("{0:?}: expected SIZE (e.g. 512M, 1G, 4m; a plain number is MiB as in lvcreate -L) or NN%ORIGIN")]
    Syntax(String),
    #[error("{0:?}: the percentage must be above 0 and at most 100")]
    Percent(String),
    #[error("{0:?}: the size must be above 0")]
    Zero(String),
}

impl FromStr for LvmSize {
    type Err = LvmSizeError;

    /// `NN%ORIGIN` (case-insensitive), or a number with an optional unit as `lvcreate -L`
    /// reads it: binary multiples whatever the case (`k`, `m`, `g`, `t`, `p`, `e`, optionally
    /// followed by `b`/`ib`), `b` bytes, `s` 512-byte sectors; no unit means MiB.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let syntax = || LvmSizeError::Syntax(s.to_owned());
        let upper = text.to_ascii_uppercase();
        if let Some(num) = upper.strip_suffix("%ORIGIN") {
            let p: f64 = num.trim().parse().map_err(|_| syntax())?;
            if !(p.is_finite() && p > 0.0 && p <= 100.0) {
                return Err(LvmSizeError::Percent(s.to_owned()));
            }
            return Ok(LvmSize::PercentOfOrigin(p));
        }
        let split = upper
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(upper.len());
        let (num, unit) = upper.split_at(split);
        let value: f64 = num.parse().map_err(|_| syntax())?;
        let unit = unit.trim();
        let unit = unit
            .strip_suffix("IB")
            .or_else(|| unit.strip_suffix('B').filter(|u| !u.is_empty()))
            .unwrap_or(unit);
        let multiplier: f64 = match unit {
            "" | "M" => (1u64 << 20) as f64,
            "B" => 1.0,
            "S" => 512.0,
            "K" => 1024.0,
            "G" => (1u64 << 30) as f64,
            "T" => (1u64 << 40) as f64,
            "P" => (1u64 << 50) as f64,
            "E" => (1u64 << 60) as f64,
            _ => return Err(syntax()),
        };
        let bytes = (value * multiplier).ceil();
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(syntax());
        }
        if bytes < 1.0 {
            return Err(LvmSizeError::Zero(s.to_owned()));
        }
        Ok(LvmSize::Bytes(bytes as u64))
    }
}

impl fmt::Display for LvmSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LvmSize::PercentOfOrigin(p) => write!(f, "{p}%ORIGIN"),
            LvmSize::Bytes(b) => write!(f, "{}", human(*b)),
        }
    }
}

impl LvmSize {
    /// Bytes of copy-on-write space for an origin of `origin_bytes` in a VG with extents of
    /// `extent_bytes`: rounded up to whole extents, at least one; `u64::MAX` (more than any VG
    /// has) when that does not fit.
    pub fn snapshot_bytes(&self, origin_bytes: u64, extent_bytes: u64) -> u64 {
        let wanted = match *self {
            LvmSize::PercentOfOrigin(p) => (origin_bytes as f64 * p / 100.0).ceil() as u64,
            LvmSize::Bytes(b) => b,
        };
        let extent = extent_bytes.max(1);
        wanted.div_ceil(extent).max(1).saturating_mul(extent)
    }
}

/// `4.0 MiB`, `1.5 GiB`: for messages.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

// ----------------------------------------------------------------------------------------
// lvs / vgs

/// One row of `lvs --reportformat json --units b --nosuffix -o` [`LV_FIELDS`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct LvRow {
    pub lv_name: String,
    pub vg_name: String,
    pub lv_attr: String,
    pub lv_size: String,
    pub lv_kernel_major: String,
    pub lv_kernel_minor: String,
    pub pool_lv: String,
    pub origin: String,
    pub data_percent: String,
    pub metadata_percent: String,
    pub snap_percent: String,
    pub lv_dm_path: String,
    /// The VG's free space (bytes) and extent size: VG fields, the same on every row of a VG.
    pub vg_free: String,
    pub vg_extent_size: String,
}

impl LvRow {
    fn attr(&self, i: usize) -> char {
        self.lv_attr.chars().nth(i).unwrap_or('-')
    }

    /// Volume type (attribute 1): `V` thin volume, `s` snapshot, `o` origin, `-` plain…
    pub fn kind(&self) -> char {
        self.attr(0)
    }

    pub fn is_thin(&self) -> bool {
        self.kind() == 'V'
    }

    fn size_bytes(&self) -> Option<u64> {
        self.lv_size.trim().parse().ok()
    }

    fn device_number(&self) -> Option<(u32, u32)> {
        Some((
            self.lv_kernel_major.trim().parse().ok()?,
            self.lv_kernel_minor.trim().parse().ok()?,
        ))
    }

    fn describe(&self) -> String {
        format!("{}/{}", self.vg_name, self.lv_name)
    }
}

/// A percentage field: empty when it does not apply.
fn percent(field: &str) -> Option<f64> {
    field.trim().parse().ok()
}

#[derive(Debug, Deserialize)]
struct Report<T> {
    report: Vec<T>,
}

#[derive(Debug, Deserialize)]
struct LvSection {
    #[serde(default)]
    lv: Vec<LvRow>,
}

/// Parses the JSON `lvs --reportformat json` prints.
pub fn parse_lvs(json: &str) -> Result<Vec<LvRow>, String> {
    let r: Report<LvSection> =
        serde_json::from_str(json).map_err(|e| format!("unreadable lvs JSON: {e}"))?;
    Ok(r.report.into_iter().flat_map(|s| s.lv).collect())
}

/// An LVM command ([`exec::tool_command`]: PATH, then the sbin directories), ready for
/// [`exec::run`] (stdin /dev/null, stderr into the error). `LVM_SUPPRESS_FD_WARNINGS`:
/// descriptors our own caller leaked to us (we open everything close-on-exec) would otherwise
/// make LVM print a warning per descriptor.
fn lvm_command(name: &str) -> Result<Command, ProviderError> {
    let mut cmd = exec::tool_command(name, "lvm2")?;
    cmd.env("LVM_SUPPRESS_FD_WARNINGS", "1");
    Ok(cmd)
}

fn run_lvm(cmd: &mut Command) -> Result<exec::Output, ProviderError> {
    let out = exec::run(cmd)?;
    if !out.stderr.is_empty() {
        log::debug!("{}: {}", exec::describe(cmd), out.stderr);
    }
    Ok(out)
}

/// `lvs` reporting `fields` as JSON, sizes in bytes without a unit.
fn report_command(name: &str, fields: &str) -> Result<Command, ProviderError> {
    let mut cmd = lvm_command(name)?;
    cmd.args([
        "--reportformat",
        "json",
        "--units",
        "b",
        "--nosuffix",
        "-o",
        fields,
    ]);
    Ok(cmd)
}

/// One `lvs` over the VGs `vgs` (each a VG name; none: every VG).
fn lvs<S: AsRef<std::ffi::OsStr>>(vgs: &[S]) -> Result<Vec<LvRow>, ProviderError> {
    let mut cmd = report_command("lvs", LV_FIELDS)?;
    cmd.args(vgs);
    let t = Instant::now();
    let out = run_lvm(&mut cmd)?;
    log::debug!(
        "lvm: {} took {:.0} ms",
        exec::describe(&cmd),
        t.elapsed().as_secs_f64() * 1e3
    );
    parse_lvs(&out.stdout).map_err(ProviderError::Other)
}

/// True when an LVM command failed because the VG or LV does not exist.
fn is_not_found(e: &ProviderError) -> bool {
    match e {
        ProviderError::Command(CommandError::Failed { stderr, .. }) => {
            stderr.contains("not found") || stderr.contains("Failed to find")
        }
        _ => false,
    }
}

// ----------------------------------------------------------------------------------------
// Probe

/// What sysfs says of the device under a mount, before any LVM command is run.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DmLv {
    major: u32,
    minor: u32,
    /// The VG, from the device-mapper name LVM gave the device (`VG-LV`, `-` doubled inside
    /// each name): which VGs to ask `lvs` about. The LV itself is found by device number.
    vg: String,
    /// A thin LV: its device-mapper device stands on a thin pool's (`-tpool`) device.
    thin: bool,
}

/// The VG part of an LVM device-mapper name (`VG-LV[-layer]`, a `-` inside a name doubled).
fn vg_of_dm_name(name: &str) -> Option<String> {
    let mut vg = String::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '-' {
            vg.push(c);
        } else if chars.peek() == Some(&'-') {
            chars.next();
            vg.push('-');
        } else {
            return (!vg.is_empty()).then_some(vg);
        }
    }
    None
}

/// The device-mapper name LVM gives `VG/LV`: `VG-LV`, every `-` inside a name doubled.
fn dm_name(vg: &str, lv: &str) -> String {
    format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"))
}

/// Is the mount on an LV, which VG's, thin or not? From sysfs alone: `Err` is the reason to
/// decline.
fn dm_lv(m: &Mount) -> Result<DmLv, String> {
    let (major, minor) = m.dev();
    let dm = format!("/sys/dev/block/{major}:{minor}/dm");
    match std::fs::read_to_string(format!("{dm}/uuid")) {
        Ok(uuid) if uuid.starts_with("LVM-") => {}
        Ok(_) => {
            return Err(format!(
                "{} ({major}:{minor}) is a device-mapper device that LVM did not make",
                m.source
            ))
        }
        Err(_) => {
            return Err(format!(
                "{} ({major}:{minor}) is not an LVM logical volume",
                m.source
            ))
        }
    }
    let name = std::fs::read_to_string(format!("{dm}/name")).unwrap_or_default();
    let vg = vg_of_dm_name(name.trim()).ok_or_else(|| {
        format!(
            "{} ({major}:{minor}): unreadable device-mapper name {:?}",
            m.source,
            name.trim()
        )
    })?;
    let thin = std::fs::read_dir(format!("/sys/dev/block/{major}:{minor}/slaves"))
        .map(|rd| {
            rd.filter_map(Result::ok).any(|e| {
                std::fs::read_to_string(e.path().join("dm/uuid"))
                    .is_ok_and(|u| u.trim_end().ends_with("-tpool"))
            })
        })
        .unwrap_or(false);
    Ok(DmLv {
        major,
        minor,
        vg,
        thin,
    })
}

/// The `lvs` row of the LV under a mount, from one report of its VG.
fn row_of<'a>(m: &Mount, dm: &DmLv, rows: &'a [LvRow]) -> Result<&'a LvRow, String> {
    rows.iter()
        .find(|r| r.device_number() == Some((dm.major, dm.minor)))
        .ok_or_else(|| {
            format!(
                "lvs reports no LV with device {}:{} ({})",
                dm.major, dm.minor, m.source
            )
        })
}

/// What `probe` plans for a unit ([`UnitRequest::data`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct UnitPlan {
    vg: String,
    lv: String,
    fstype: String,
    /// Copy-on-write space of a classic snapshot (bytes, whole extents); `None`: thin.
    size_bytes: Option<u64>,
    /// The thin pool of a thin LV.
    pool: Option<String>,
}

/// What a snapshot is ([`Created::data`]): enough to mount, check and remove it from any
/// process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotData {
    pub vg: String,
    /// The snapshot LV (`lvm-snapshot-<id>-<index>`).
    pub name: String,
    /// The LV it is a snapshot of.
    pub origin: String,
    pub fstype: String,
    pub size_bytes: Option<u64>,
    pub pool: Option<String>,
    /// Where the whole snapshot is mounted when a mount shows only a subdirectory of it.
    pub staging: PathBuf,
}

impl SnapshotData {
    fn new(plan: UnitPlan, ctx: &SessionContext) -> Self {
        Self {
            vg: plan.vg,
            name: lv_name(&ctx.object_name()),
            origin: plan.lv,
            fstype: plan.fstype,
            size_bytes: plan.size_bytes,
            pool: plan.pool,
            staging: ctx.runtime_dir.join(format!("lvm-{}", ctx.index)),
        }
    }

    fn from_created(c: &Created) -> Result<Self, ProviderError> {
        let d: Self = c.data()?;
        // Removal may only ever target the entry's own, session-named LV.
        if d.name != lv_name(&c.name) {
            return Err(ProviderError::Other(format!(
                "LVM snapshot {}: the record names LV {:?}; refusing to touch it",
                c.name, d.name
            )));
        }
        Ok(d)
    }

    fn is_thin(&self) -> bool {
        self.pool.is_some()
    }

    fn path(&self) -> String {
        format!("{}/{}", self.vg, self.name)
    }
}

/// Volume types (lv_attr 1) a classic snapshot can be taken of: plain, origin (already has
/// snapshots), mirror, RAID, cached.
const CLASSIC_KINDS: &str = "-omMrRC";

/// Which snapshots an [`LvmProvider`] makes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LvmKind {
    /// Classic (copy-on-write) snapshots of LVs that are not thin, with `size` of
    /// copy-on-write space (`--lvm-size`): the provider `lvm`.
    Classic { size: LvmSize },
    /// Thin snapshots of thin LVs: the provider `lvm-thin`.
    Thin,
}

/// LVM snapshots, classic or thin ([`LvmKind`]); the two differ only in what they take
/// (probe) and in how `lvcreate` is called and the snapshot activated, which the record says
/// (its `pool`).
#[derive(Debug)]
pub struct LvmProvider {
    kind: LvmKind,
    /// This process's sessions, for one `lvs` per teardown.
    sessions: Sessions,
}

impl Default for LvmProvider {
    /// Classic snapshots of the default size.
    fn default() -> Self {
        Self::classic(LvmSize::default())
    }
}

impl LvmProvider {
    /// `lvm`: classic snapshots with `size` of copy-on-write space.
    pub fn classic(size: LvmSize) -> Self {
        Self {
            kind: LvmKind::Classic { size },
            sessions: Sessions::default(),
        }
    }

    /// `lvm-thin`: thin snapshots.
    pub fn thin() -> Self {
        Self {
            kind: LvmKind::Thin,
            sessions: Sessions::default(),
        }
    }

    pub fn kind(&self) -> LvmKind {
        self.kind
    }

    /// Plans for `filesystems`, one answer each: sysfs first (not an LV, or an LV of the
    /// other kind: declined without an LVM command), then one `lvs` over the VGs of those
    /// left, whatever their number (docs/DESIGN.md §3.2).
    fn plan_all(&self, filesystems: &[Filesystem]) -> Vec<Result<UnitPlan, String>> {
        let thin = matches!(self.kind, LvmKind::Thin);
        let seen: Vec<Result<DmLv, String>> = filesystems
            .iter()
            .map(|fs| {
                let dm = dm_lv(&fs.mount)?;
                match (thin, dm.thin) {
                    (true, false) => Err(format!("{} is not a thin LV", fs.mount.source)),
                    (false, true) => Err(format!(
                        "{} is a thin LV (lvm-thin takes those)",
                        fs.mount.source
                    )),
                    _ => Ok(dm),
                }
            })
            .collect();
        let mut vgs: Vec<&str> = seen
            .iter()
            .filter_map(|r| r.as_ref().ok().map(|d| d.vg.as_str()))
            .collect();
        vgs.sort_unstable();
        vgs.dedup();
        let report: Result<Vec<LvRow>, String> = if vgs.is_empty() {
            Ok(Vec::new())
        } else if exec::find_tool("lvs").is_none() {
            Err("lvs not found (install lvm2)".into())
        } else {
            lvs(&vgs).map_err(|e| e.to_string())
        };
        filesystems
            .iter()
            .zip(seen)
            .map(|(fs, dm)| {
                let dm = dm?;
                let rows = report.as_ref().map_err(Clone::clone)?;
                let lv = row_of(&fs.mount, &dm, rows)?;
                match self.kind {
                    LvmKind::Classic { size } => plan_classic(fs, size, lv),
                    LvmKind::Thin => plan_thin(fs, lv, rows),
                }
            })
            .collect()
    }
}

/// The plan of a classic snapshot of `lv`, the LV under `fs`, with `wanted` copy-on-write
/// space, or why not.
fn plan_classic(fs: &Filesystem, wanted: LvmSize, lv: &LvRow) -> Result<UnitPlan, String> {
    let lv = lv.clone();
    let name = lv.describe();
    if lv.is_thin() {
        return Err(format!("{name} is a thin LV (lvm-thin takes those)"));
    }
    if !lv.origin.is_empty() || matches!(lv.kind(), 's' | 'S') {
        return Err(format!(
            "{name} is itself a snapshot: LVM cannot snapshot it"
        ));
    }
    if !CLASSIC_KINDS.contains(lv.kind()) {
        return Err(format!(
            "{name} has attributes {}: not a kind of LV that takes a classic snapshot",
            lv.lv_attr
        ));
    }
    let origin = lv
        .size_bytes()
        .ok_or_else(|| format!("lvs gave no size for {name}: {:?}", lv.lv_size))?;
    let parse = |what: &str, v: &str| {
        v.trim()
            .parse::<u64>()
            .map_err(|_| format!("lvs gave an unreadable {what} for {}: {v:?}", lv.vg_name))
    };
    let free = parse("vg_free", &lv.vg_free)?;
    let extent = parse("vg_extent_size", &lv.vg_extent_size)?;
    let size = wanted.snapshot_bytes(origin, extent);
    if size > free {
        return Err(format!(
            "VG {} has {} free, and a snapshot of {name} needs {} (--lvm-size {} of {}, in \
             {} extents): free extents in the VG or give a smaller --lvm-size",
            lv.vg_name,
            human(free),
            human(size),
            wanted,
            human(origin),
            human(extent)
        ));
    }
    Ok(UnitPlan {
        vg: lv.vg_name,
        lv: lv.lv_name,
        fstype: fs.mount.fstype.clone(),
        size_bytes: Some(size),
        pool: None,
    })
}

/// The plan of a thin snapshot of `lv`, the thin LV under `fs`, with `all` the rows of its
/// VG, or why not.
fn plan_thin(fs: &Filesystem, lv: &LvRow, all: &[LvRow]) -> Result<UnitPlan, String> {
    let lv = lv.clone();
    let name = lv.describe();
    if !lv.is_thin() {
        return Err(format!("{name} is not a thin LV"));
    }
    let pool = all
        .iter()
        .find(|r| r.vg_name == lv.vg_name && r.lv_name == lv.pool_lv)
        .ok_or_else(|| format!("lvs does not show the thin pool {:?} of {name}", lv.pool_lv))?;
    if let Some(reason) = pool_too_full(pool, THIN_POOL_FULL) {
        return Err(format!(
            "{reason}: a snapshot of {name} could fill it during the backup"
        ));
    }
    Ok(UnitPlan {
        vg: lv.vg_name,
        lv: lv.lv_name,
        fstype: fs.mount.fstype.clone(),
        size_bytes: None,
        pool: Some(lv.pool_lv),
    })
}

/// Why a thin pool is at or above `limit` % (data or metadata), or in a failed state.
fn pool_too_full(pool: &LvRow, limit: f64) -> Option<String> {
    let name = pool.describe();
    match pool.attr(8) {
        'F' => return Some(format!("thin pool {name} has failed")),
        'D' => return Some(format!("thin pool {name} is out of data space")),
        'M' => return Some(format!("thin pool {name} has read-only metadata")),
        _ => {}
    }
    for (what, field) in [
        ("data", &pool.data_percent),
        ("metadata", &pool.metadata_percent),
    ] {
        if let Some(p) = percent(field) {
            if p >= limit {
                return Some(format!("thin pool {name} {what} is {p}% full"));
            }
        }
    }
    None
}

// ----------------------------------------------------------------------------------------
// Create, mount, verify, remove (the same for both kinds)

fn created(
    provider: &str,
    unit: &UnitRequest,
    ctx: &SessionContext,
    data: &SnapshotData,
) -> Result<Created, ProviderError> {
    Created::new(provider, &unit.unit, ctx.object_name(), true, data)
}

fn create(
    provider: &str,
    unit: &UnitRequest,
    ctx: &SessionContext,
) -> Result<Created, ProviderError> {
    let data = SnapshotData::new(unit.data(provider)?, ctx);
    let mut cmd = lvm_command("lvcreate")?;
    cmd.args(["--snapshot", "--name", &data.name]);
    if let Some(size) = data.size_bytes {
        // Read-write (LVM's default, said explicitly): the kernel replays ext4's journal and
        // XFS's log on the snapshot when mounting it read-only.
        cmd.args(["--size", &format!("{size}b"), "--permission", "rw"]);
    }
    cmd.arg(format!("{}/{}", data.vg, data.origin));
    let t = Instant::now();
    if let Err(e) = run_lvm(&mut cmd) {
        // It may have got as far as making the LV: remove it (guarded) before reporting.
        if let Err(e2) = remove_snapshot_lv(&data, None) {
            log::warn!(
                "{provider}: removing {} after a failed lvcreate: {e2}",
                data.path()
            );
        }
        return Err(e);
    }
    log::debug!(
        "{provider}: lvcreate of {} took {:.0} ms",
        data.path(),
        t.elapsed().as_secs_f64() * 1e3
    );
    created(provider, unit, ctx, &data)
}

/// Read-only mount options to try for a filesystem type, best first.
fn mount_options(fstype: &str) -> &'static [&'static str] {
    match fstype {
        // The snapshot LV is writable, so a read-only mount still replays the journal;
        // `noload` (skip it) only if that fails.
        "ext4" | "ext3" => &["", "noload"],
        // The snapshot has the origin's UUID: `nouuid`. `norecovery` if the log cannot be
        // replayed.
        "xfs" => &["nouuid", "nouuid,norecovery"],
        _ => &[""],
    }
}

/// The snapshot's device node (`/dev/mapper/` and its device-mapper name, as LVM names it),
/// once it exists (LVM or udev make it): no `lvs` to look it up.
fn device_of(data: &SnapshotData) -> Result<PathBuf, ProviderError> {
    let path = PathBuf::from("/dev/mapper").join(dm_name(&data.vg, &data.name));
    let t = Instant::now();
    while !path.exists() {
        if t.elapsed() > Duration::from_secs(10) {
            return Err(ProviderError::Other(format!(
                "device {} of snapshot LV {} did not appear within 10 s",
                path.display(),
                data.path()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(path)
}

fn mount_snapshot(device: &Path, fstype: &str, at: &Path) -> Result<(), ProviderError> {
    let mut errors = Vec::new();
    for opts in mount_options(fstype) {
        match sys::mount_readonly(device, at, fstype, opts) {
            Ok(()) => {
                if !errors.is_empty() {
                    log::warn!(
                        "{}: mounted read-only with {opts:?} after: {}",
                        device.display(),
                        errors.join("; ")
                    );
                }
                return Ok(());
            }
            Err(e) => errors.push(format!("-o ro,{opts}: {e}")),
        }
    }
    Err(ProviderError::Other(format!(
        "mounting {} ({fstype}) read-only at {}: {}",
        device.display(),
        at.display(),
        errors.join("; ")
    )))
}

fn is_mounted_at(path: &Path) -> Result<bool, ProviderError> {
    let table = MountTable::read().map_err(|e| ProviderError::Other(e.to_string()))?;
    Ok(table.mounted_at(path).is_some())
}

fn mount(provider: &str, created: &Created, mount: &Mount) -> Result<DetachedMount, ProviderError> {
    let data = SnapshotData::from_created(created)?;
    if data.is_thin() {
        // Thin snapshots skip activation by default; -K overrides that.
        let mut cmd = lvm_command("lvchange")?;
        run_lvm(cmd.args(["--activate", "y", "--ignoreactivationskip", &data.path()]))?;
    }
    let device = device_of(&data)?;
    // The whole snapshot goes to the private staging directory once; the part the mount
    // showed is cloned from there.
    if !matches!(sys::is_mount_point(&data.staging), Ok(true)) {
        std::fs::create_dir_all(&data.staging)
            .map_err(|e| ProviderError::io(format!("creating {}", data.staging.display()), e))?;
        mount_snapshot(&device, &data.fstype, &data.staging)?;
    }
    let rel = mount.root.strip_prefix("/").unwrap_or(&mount.root);
    sys::clone_beneath(&data.staging, rel).map_err(|e| {
        ProviderError::io(
            format!(
                "{provider}: cloning {} read-only",
                data.staging.join(rel).display()
            ),
            e,
        )
    })
}

/// The session id in a session object's name (`snapshot-<id>-<index>` → `snapshot-<id>`).
fn session_of(object_name: &str) -> &str {
    object_name
        .rsplit_once('-')
        .map_or(object_name, |(session, _)| session)
}

/// What this process knows of its sessions' snapshots between `prepare` and `remove`, so that
/// teardown reads one `lvs` report for all of a session's snapshots (docs/DESIGN.md §3.1):
/// session id → its units and, once its first snapshot is verified, that report.
#[derive(Debug, Default)]
struct Sessions(Mutex<HashMap<String, SessionUnits>>);

#[derive(Debug, Default)]
struct SessionUnits {
    /// The snapshot LVs (VG, name) prepared and not yet removed.
    units: Vec<(String, String)>,
    /// One `lvs` of all their VGs, read at the session's first `verify`.
    report: Option<Vec<LvRow>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionUnits>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, session: &str, data: &SnapshotData) {
        let mut map = self.lock();
        let units = &mut map.entry(session.to_owned()).or_default().units;
        let unit = (data.vg.clone(), data.name.clone());
        if !units.contains(&unit) {
            units.push(unit);
        }
    }

    /// The teardown report for `data`'s session: read once (one `lvs` over every VG of the
    /// session's units) and kept until the last of them is removed. A snapshot this process
    /// did not prepare (a dead session's, from its journal) gets an `lvs` of its own VG.
    fn report(&self, created: &Created, data: &SnapshotData) -> Result<Vec<LvRow>, ProviderError> {
        let mut map = self.lock();
        let Some(session) = map.get_mut(session_of(&created.name)) else {
            drop(map);
            return lvs(&[&data.vg]);
        };
        if let Some(rows) = &session.report {
            return Ok(rows.clone());
        }
        let mut vgs: Vec<&str> = session.units.iter().map(|(vg, _)| vg.as_str()).collect();
        vgs.push(&data.vg);
        vgs.sort_unstable();
        vgs.dedup();
        let rows = lvs(&vgs)?;
        session.report = Some(rows.clone());
        Ok(rows)
    }

    /// The rows of the teardown report already read for `created`'s session, if any.
    fn cached(&self, created: &Created) -> Option<Vec<LvRow>> {
        self.lock()
            .get(session_of(&created.name))
            .and_then(|s| s.report.clone())
    }

    /// `data` is removed: forget it, and the session once none of its units is left.
    fn removed(&self, created: &Created, data: &SnapshotData) {
        let mut map = self.lock();
        let session = session_of(&created.name);
        if let Some(s) = map.get_mut(session) {
            s.units
                .retain(|(vg, name)| !(vg == &data.vg && name == &data.name));
            if s.units.is_empty() {
                map.remove(session);
            }
        }
    }
}

/// The verdict on a snapshot from the rows of its VG.
fn validity(data: &SnapshotData, rows: &[LvRow]) -> Validity {
    let Some(snap) = rows.iter().find(|r| r.lv_name == data.name) else {
        return Validity::Invalid(format!(
            "snapshot LV {} disappeared during the backup",
            data.path()
        ));
    };
    match &data.pool {
        None => {
            let full = percent(&snap.snap_percent).is_some_and(|p| p >= 100.0);
            if matches!(snap.attr(4), 'I' | 'S') || full {
                let size = data.size_bytes.map(human).unwrap_or_else(|| "?".to_owned());
                return Validity::Invalid(format!(
                    "LVM snapshot {} of {}/{} overflowed: its {size} of copy-on-write space \
                     filled up with changes to the origin during the backup, and LVM \
                     invalidated it (give a larger --lvm-size)",
                    data.path(),
                    data.vg,
                    data.origin
                ));
            }
            Validity::Valid
        }
        Some(pool) => {
            let Some(p) = rows.iter().find(|r| &r.lv_name == pool) else {
                return Validity::Invalid(format!(
                    "the thin pool {}/{pool} of snapshot {} is gone",
                    data.vg,
                    data.path()
                ));
            };
            match pool_too_full(p, 100.0) {
                Some(reason) => Validity::Invalid(format!(
                    "thin snapshot {} is unreliable: {reason} (it filled up during the backup)",
                    data.path()
                )),
                None if snap.attr(8) == 'F' => {
                    Validity::Invalid(format!("thin snapshot {} has failed", data.path()))
                }
                None => Validity::Valid,
            }
        }
    }
}

/// An LV that [`removable`] found safe to give to `lvremove`. Only [`removable`] makes one:
/// no other code path reaches `lvremove`.
#[derive(Debug, PartialEq, Eq)]
pub struct RemovableSnapshot(String);

/// The gate in front of `lvremove`: `row` must be the recorded snapshot — named with the
/// session prefix, in the recorded VG, a snapshot (its `origin` set) of the recorded origin,
/// and not the origin itself. Anything else is refused, so the origin LV can never be removed.
pub fn removable(data: &SnapshotData, row: &LvRow) -> Result<RemovableSnapshot, String> {
    let what = row.describe();
    if !is_session_lv_name(&row.lv_name) || row.lv_name != data.name {
        return Err(format!(
            "refusing to remove {what}: not the session's snapshot {}",
            data.path()
        ));
    }
    if row.vg_name != data.vg {
        return Err(format!("refusing to remove {what}: not in VG {}", data.vg));
    }
    if row.origin.is_empty() {
        return Err(format!(
            "refusing to remove {what}: it is not a snapshot (no origin)"
        ));
    }
    if row.origin != data.origin || row.lv_name == data.origin {
        return Err(format!(
            "refusing to remove {what}: a snapshot of {}, not of the recorded origin {}",
            row.origin, data.origin
        ));
    }
    Ok(RemovableSnapshot(format!(
        "{}/{}",
        row.vg_name, row.lv_name
    )))
}

/// Arguments of `lvremove` for a snapshot that passed [`removable`]: `-f VG/NAME`.
fn lvremove_args(target: &RemovableSnapshot) -> [&str; 2] {
    ["-f", &target.0]
}

fn lvremove_command(target: &RemovableSnapshot) -> Result<Command, ProviderError> {
    let mut cmd = lvm_command("lvremove")?;
    cmd.args(lvremove_args(target));
    Ok(cmd)
}

/// Removes the snapshot LV if it exists; success when it is already gone. `rows`: a report
/// of its VG read at this teardown (none: one is read now).
fn remove_snapshot_lv(data: &SnapshotData, rows: Option<Vec<LvRow>>) -> Result<(), ProviderError> {
    let rows = match rows.map_or_else(|| lvs(&[&data.vg]), Ok) {
        Ok(r) => r,
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    let Some(row) = rows.iter().find(|r| r.lv_name == data.name) else {
        return Ok(());
    };
    let target = removable(data, row).map_err(ProviderError::Other)?;
    match run_lvm(&mut lvremove_command(&target)?) {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

fn remove(sessions: &Sessions, created: &Created) -> Result<(), ProviderError> {
    let data = SnapshotData::from_created(created)?;
    if is_mounted_at(&data.staging)? {
        sys::unmount_path(&data.staging)
            .map_err(|e| ProviderError::io(format!("unmounting {}", data.staging.display()), e))?;
    }
    match std::fs::remove_dir(&data.staging) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(ProviderError::io(
                format!("removing {}", data.staging.display()),
                e,
            ))
        }
    }
    remove_snapshot_lv(&data, sessions.cached(created))?;
    sessions.removed(created, &data);
    Ok(())
}

fn expected(provider: &str, unit: &UnitRequest, ctx: &SessionContext) -> Created {
    unit.data(provider)
        .and_then(|plan| created(provider, unit, ctx, &SnapshotData::new(plan, ctx)))
        // Unreachable with the session's own plans; keep what there is.
        .unwrap_or_else(|_| Created::planned(provider, unit, ctx, true))
}

impl Provider for LvmProvider {
    fn name(&self) -> &str {
        match self.kind {
            LvmKind::Classic { .. } => "lvm",
            LvmKind::Thin => "lvm-thin",
        }
    }

    fn probe(&self, fs: &Filesystem) -> Probe {
        self.probe_all(std::slice::from_ref(fs))
            .pop()
            .unwrap_or_else(|| Probe::Decline("no answer".into()))
    }

    fn probe_all(&self, filesystems: &[Filesystem]) -> Vec<Probe> {
        self.plan_all(filesystems)
            .into_iter()
            .map(|plan| match plan {
                Ok(plan) => Probe::accept(format!("{}/{}", plan.vg, plan.lv), &plan, true),
                Err(reason) => Probe::Decline(reason),
            })
            .collect()
    }

    fn expected(&self, unit: &UnitRequest, ctx: &SessionContext) -> Created {
        expected(self.name(), unit, ctx)
    }

    /// Notes the unit as its session's, for one report at teardown.
    fn prepare(&self, unit: &UnitRequest, ctx: &SessionContext) -> Result<(), ProviderError> {
        let data = SnapshotData::new(unit.data(self.name())?, ctx);
        self.sessions.register(&ctx.id, &data);
        Ok(())
    }

    fn create(&self, unit: &UnitRequest, ctx: &SessionContext) -> Result<Created, ProviderError> {
        create(self.name(), unit, ctx)
    }

    fn mount(&self, created: &Created, m: &Mount) -> Result<DetachedMount, ProviderError> {
        mount(self.name(), created, m)
    }

    fn verify(&self, created: &Created) -> Validity {
        let data = match SnapshotData::from_created(created) {
            Ok(d) => d,
            Err(e) => return Validity::Invalid(e.to_string()),
        };
        match self.sessions.report(created, &data) {
            Ok(rows) => validity(&data, &rows),
            Err(e) => {
                Validity::Invalid(format!("could not check snapshot LV {}: {e}", data.path()))
            }
        }
    }

    fn remove(&self, created: &Created) -> Result<(), ProviderError> {
        remove(&self.sessions, created)
    }
}

#[cfg(test)]
#[path = "lvm_proptests.rs"]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    /// `lvs --reportformat json --units b --nosuffix -o LV_FIELDS mvg`, recorded in the VM
    /// guest (lvm2 2.03.16): two plain LVs (one an origin), a thin pool, a classic snapshot, a
    /// thin LV and its thin snapshot (not yet activated: kernel numbers -1).
    const LVS: &str = r#"  {
      "report": [
          {
              "lv": [
                  {"lv_name":"lv1", "vg_name":"mvg", "lv_attr":"owi-aos---", "lv_size":"268435456", "lv_kernel_major":"253", "lv_kernel_minor":"0", "pool_lv":"", "origin":"", "data_percent":"", "metadata_percent":"", "snap_percent":"", "lv_dm_path":"/dev/mapper/mvg-lv1"},
                  {"lv_name":"lv2", "vg_name":"mvg", "lv_attr":"-wi-ao----", "lv_size":"268435456", "lv_kernel_major":"253", "lv_kernel_minor":"1", "pool_lv":"", "origin":"", "data_percent":"", "metadata_percent":"", "snap_percent":"", "lv_dm_path":"/dev/mapper/mvg-lv2"},
                  {"lv_name":"pool", "vg_name":"mvg", "lv_attr":"twi-aotz--", "lv_size":"268435456", "lv_kernel_major":"253", "lv_kernel_minor":"4", "pool_lv":"", "origin":"", "data_percent":"9.59", "metadata_percent":"11.33", "snap_percent":"9.59", "lv_dm_path":"/dev/mapper/mvg-pool"},
                  {"lv_name":"s1", "vg_name":"mvg", "lv_attr":"swi-a-s---", "lv_size":"8388608", "lv_kernel_major":"253", "lv_kernel_minor":"9", "pool_lv":"", "origin":"lv1", "data_percent":"0.15", "metadata_percent":"", "snap_percent":"0.15", "lv_dm_path":"/dev/mapper/mvg-s1"},
                  {"lv_name":"thin1", "vg_name":"mvg", "lv_attr":"Vwi-aotz--", "lv_size":"536870912", "lv_kernel_major":"253", "lv_kernel_minor":"6", "pool_lv":"pool", "origin":"", "data_percent":"4.79", "metadata_percent":"", "snap_percent":"4.79", "lv_dm_path":"/dev/mapper/mvg-thin1"},
                  {"lv_name":"ts", "vg_name":"mvg", "lv_attr":"Vwi---tz-k", "lv_size":"536870912", "lv_kernel_major":"-1", "lv_kernel_minor":"-1", "pool_lv":"pool", "origin":"thin1", "data_percent":"", "metadata_percent":"", "snap_percent":"", "lv_dm_path":"/dev/mapper/mvg-ts"}
              ]
          }
      ]
  }
"#;

    /// The classic snapshot `s1` (8 MiB) after 16 MiB were written to its origin: LVM
    /// invalidated it (state `I`).
    const OVERFLOWED: &str = r#"{"report": [{"lv": [
        {"lv_name":"s1", "vg_name":"mvg", "lv_attr":"swi-I-s---", "lv_size":"8388608", "lv_kernel_major":"253", "lv_kernel_minor":"9", "pool_lv":"", "origin":"lv1", "data_percent":"100.00", "metadata_percent":"", "snap_percent":"100.00", "lv_dm_path":"/dev/mapper/mvg-s1"}
    ]}]}"#;

    /// `lvs` of a missing LV: an empty report on stdout (the error goes to stderr, exit 5).
    const NOT_FOUND: &str = r#"  {
      "report": [
          {
              "lv": [
              ]
          }
      ]
  }
"#;

    fn row<'a>(rows: &'a [LvRow], name: &str) -> &'a LvRow {
        rows.iter().find(|r| r.lv_name == name).unwrap()
    }

    fn data(name: &str, origin: &str, pool: Option<&str>) -> SnapshotData {
        SnapshotData {
            vg: "mvg".into(),
            name: name.into(),
            origin: origin.into(),
            fstype: "ext4".into(),
            size_bytes: pool.is_none().then_some(8 << 20),
            pool: pool.map(Into::into),
            staging: "/run/snapshot/snapshot-0a1b2c3d/lvm-0".into(),
        }
    }

    #[test]
    fn a_record_pointing_at_another_lv_is_refused() {
        let good = Created {
            provider: "lvm".into(),
            unit: "mvg/lv1".into(),
            name: "snapshot-0a1b2c3d-0".into(),
            consistent: true,
            data: serde_json::to_value(data("lvm-snapshot-0a1b2c3d-0", "lv1", None)).unwrap(),
        };
        assert!(SnapshotData::from_created(&good).is_ok());
        for lv in ["lv1", "lvm-snapshot-deadbeef-0"] {
            let bad = Created {
                data: serde_json::to_value(data(lv, "lv1", None)).unwrap(),
                ..good.clone()
            };
            let err = SnapshotData::from_created(&bad).unwrap_err().to_string();
            assert!(err.contains("refusing"), "{lv}: {err}");
        }
    }

    /// A row as LVM would show the session's snapshot of `lv1`.
    fn session_snapshot_row() -> LvRow {
        LvRow {
            lv_name: "lvm-snapshot-0a1b2c3d-0".into(),
            ..row(&parse_lvs(LVS).unwrap(), "s1").clone()
        }
    }

    #[test]
    fn parses_recorded_lvs_json() {
        let rows = parse_lvs(LVS).unwrap();
        assert_eq!(rows.len(), 6);
        let lv1 = row(&rows, "lv1");
        assert_eq!(lv1.device_number(), Some((253, 0)));
        assert_eq!(lv1.size_bytes(), Some(256 << 20));
        assert_eq!(lv1.kind(), 'o');
        assert!(!lv1.is_thin());
        let thin = row(&rows, "thin1");
        assert!(thin.is_thin());
        assert_eq!(thin.pool_lv, "pool");
        // An inactive LV has no device: never matched to a mount.
        assert_eq!(row(&rows, "ts").device_number(), None);
        assert_eq!(row(&rows, "s1").origin, "lv1");
        assert_eq!(percent(&row(&rows, "pool").metadata_percent), Some(11.33));
        assert_eq!(percent(&lv1.snap_percent), None);
        assert!(parse_lvs(NOT_FOUND).unwrap().is_empty());
        assert!(parse_lvs("not json").is_err());
    }

    #[test]
    fn lvm_size_syntax() {
        let p = |s: &str| s.parse::<LvmSize>();
        assert_eq!(p("10%ORIGIN"), Ok(LvmSize::PercentOfOrigin(10.0)));
        assert_eq!(p("25%origin"), Ok(LvmSize::PercentOfOrigin(25.0)));
        assert_eq!(p("100%ORIGIN"), Ok(LvmSize::PercentOfOrigin(100.0)));
        assert_eq!(p("1G"), Ok(LvmSize::Bytes(1 << 30)));
        assert_eq!(p("1g"), Ok(LvmSize::Bytes(1 << 30)));
        assert_eq!(p("512M"), Ok(LvmSize::Bytes(512 << 20)));
        assert_eq!(p("512MiB"), Ok(LvmSize::Bytes(512 << 20)));
        assert_eq!(p("4m"), Ok(LvmSize::Bytes(4 << 20)));
        assert_eq!(p("1.5G"), Ok(LvmSize::Bytes(3 << 29)));
        assert_eq!(
            p("100"),
            Ok(LvmSize::Bytes(100 << 20)),
            "no unit: MiB, as lvcreate -L"
        );
        assert_eq!(p("4096b"), Ok(LvmSize::Bytes(4096)));
        assert_eq!(p("8s"), Ok(LvmSize::Bytes(4096)));
        assert_eq!(p("2T"), Ok(LvmSize::Bytes(2 << 40)));
        for bad in ["", "abc", "10%VG", "-5M", "5X", "1.2.3M", "M"] {
            assert!(
                matches!(p(bad), Err(LvmSizeError::Syntax(_))),
                "{bad:?}: {:?}",
                p(bad)
            );
        }
        assert!(matches!(p("0%ORIGIN"), Err(LvmSizeError::Percent(_))));
        assert!(matches!(p("150%ORIGIN"), Err(LvmSizeError::Percent(_))));
        assert!(matches!(p("0"), Err(LvmSizeError::Zero(_))));
        assert_eq!(LvmSize::default(), LvmSize::PercentOfOrigin(10.0));
        assert_eq!(LvmSize::default().to_string(), "10%ORIGIN");
        assert_eq!(LvmSize::Bytes(4 << 20).to_string(), "4.0 MiB");
    }

    #[test]
    fn snapshot_size_rounds_up_to_whole_extents() {
        const EXT: u64 = 4 << 20;
        // 10% of 256 MiB = 25.6 MiB → 7 extents.
        assert_eq!(
            LvmSize::PercentOfOrigin(10.0).snapshot_bytes(256 << 20, EXT),
            28 << 20
        );
        assert_eq!(
            LvmSize::PercentOfOrigin(50.0).snapshot_bytes(256 << 20, EXT),
            128 << 20
        );
        // 10% of 8 MiB = 0.8 MiB → at least one extent.
        assert_eq!(
            LvmSize::PercentOfOrigin(10.0).snapshot_bytes(8 << 20, EXT),
            EXT
        );
        assert_eq!(
            LvmSize::Bytes(1 << 30).snapshot_bytes(1 << 40, EXT),
            1 << 30
        );
        assert_eq!(LvmSize::Bytes(3 << 20).snapshot_bytes(0, EXT), EXT);
        assert_eq!(LvmSize::Bytes(EXT + 1).snapshot_bytes(0, EXT), 2 * EXT);
        // Other extent sizes (vgcreate -s 32M).
        assert_eq!(
            LvmSize::Bytes(100 << 20).snapshot_bytes(0, 32 << 20),
            128 << 20
        );
    }

    #[test]
    fn lvremove_is_only_ever_given_the_sessions_snapshot() {
        let rows = parse_lvs(LVS).unwrap();
        let ours = data("lvm-snapshot-0a1b2c3d-0", "lv1", None);
        let snap = session_snapshot_row();
        let target = removable(&ours, &snap).unwrap();
        assert_eq!(
            lvremove_args(&target),
            ["-f", "mvg/lvm-snapshot-0a1b2c3d-0"]
        );

        // The origin LV, whatever the record says.
        let origin = row(&rows, "lv1");
        assert!(removable(&ours, origin).is_err());
        let corrupt = data("lv1", "lv1", None);
        assert!(
            removable(&corrupt, origin).is_err(),
            "origin named as snapshot"
        );
        // A thin origin, and an LV that is not a snapshot.
        assert!(removable(&data("thin1", "", Some("pool")), row(&rows, "thin1")).is_err());
        assert!(removable(&data("lv2", "lv1", None), row(&rows, "lv2")).is_err());
        // A session-named LV that is not a snapshot (origin empty).
        let not_snapshot = LvRow {
            origin: String::new(),
            ..snap.clone()
        };
        assert!(removable(&ours, &not_snapshot).is_err());
        // A snapshot of another origin than recorded.
        assert!(removable(&data("lvm-snapshot-0a1b2c3d-0", "lv2", None), &snap).is_err());
        // Another VG.
        let elsewhere = LvRow {
            vg_name: "other".into(),
            ..snap.clone()
        };
        assert!(removable(&ours, &elsewhere).is_err());
        // A snapshot without the session prefix (not ours), even if recorded so.
        assert!(removable(&data("s1", "lv1", None), row(&rows, "s1")).is_err());
        // Another session's snapshot.
        let other = LvRow {
            lv_name: "lvm-snapshot-ffffffff-0".into(),
            ..snap.clone()
        };
        assert!(removable(&ours, &other).is_err());
    }

    #[test]
    fn device_mapper_names() {
        assert_eq!(
            dm_name("mvg", "lvm-snapshot-0a1b2c3d-0"),
            "mvg-lvm--snapshot--0a1b2c3d--0"
        );
        assert_eq!(dm_name("my-vg", "lv"), "my--vg-lv");
        assert_eq!(vg_of_dm_name("my--vg-lv").as_deref(), Some("my-vg"));
        assert_eq!(vg_of_dm_name("mvg-pool-tpool").as_deref(), Some("mvg"));
        assert_eq!(
            vg_of_dm_name(&dm_name("a-b--c", "x-y")).as_deref(),
            Some("a-b--c")
        );
        assert_eq!(vg_of_dm_name("novg"), None);
        assert_eq!(vg_of_dm_name("-lv"), None);
        assert_eq!(session_of("snapshot-0a1b2c3d-12"), "snapshot-0a1b2c3d");
    }

    #[test]
    fn plans_from_one_report_without_vgs() {
        let rows: Vec<LvRow> = parse_lvs(LVS)
            .unwrap()
            .into_iter()
            .map(|r| LvRow {
                vg_free: "1321205760".into(),
                vg_extent_size: "4194304".into(),
                ..r
            })
            .collect();
        let fs = |source: &str, fstype: &str| Filesystem {
            mount: Mount {
                id: 1,
                parent_id: 0,
                major: 253,
                minor: 0,
                root: "/".into(),
                mount_point: "/srv".into(),
                options: "rw".into(),
                optional: vec![],
                fstype: fstype.into(),
                source: source.into(),
                super_options: "rw".into(),
            },
        };
        let plan = plan_classic(
            &fs("/dev/mapper/mvg-lv1", "ext4"),
            LvmSize::default(),
            row(&rows, "lv1"),
        )
        .unwrap();
        assert_eq!(plan.size_bytes, Some(28 << 20));
        let full = LvRow {
            vg_free: "4194304".into(),
            ..row(&rows, "lv1").clone()
        };
        let why = plan_classic(
            &fs("/dev/mapper/mvg-lv1", "ext4"),
            LvmSize::default(),
            &full,
        )
        .unwrap_err();
        assert!(why.contains("free extents"), "{why}");
        let thin = plan_thin(
            &fs("/dev/mapper/mvg-thin1", "xfs"),
            row(&rows, "thin1"),
            &rows,
        )
        .unwrap();
        assert_eq!(thin.pool.as_deref(), Some("pool"));
    }

    #[test]
    fn session_lv_names() {
        assert_eq!(lv_name("snapshot-0a1b2c3d-2"), "lvm-snapshot-0a1b2c3d-2");
        assert!(is_session_lv_name("lvm-snapshot-0a1b2c3d-2"));
        assert!(!is_session_lv_name("lvm-snapshot-"));
        assert!(!is_session_lv_name("snapshot-0a1b2c3d-2"));
        assert!(!is_session_lv_name("root"));
        assert!(!is_session_lv_name("lvm-root"));
    }

    #[test]
    fn overflowed_classic_snapshot_is_invalid() {
        let d = data("s1", "lv1", None);
        assert_eq!(validity(&d, &parse_lvs(LVS).unwrap()), Validity::Valid);
        match validity(&d, &parse_lvs(OVERFLOWED).unwrap()) {
            Validity::Invalid(why) => {
                assert!(why.contains("overflowed"), "{why}");
                assert!(why.contains("mvg/s1"), "{why}");
                assert!(why.contains("--lvm-size"), "{why}");
            }
            v => panic!("{v:?}"),
        }
        // 100% but not (yet) marked invalid: still overflowed.
        let full = LvRow {
            lv_attr: "swi-a-s---".into(),
            ..parse_lvs(OVERFLOWED).unwrap()[0].clone()
        };
        assert!(matches!(validity(&d, &[full]), Validity::Invalid(_)));
        // Gone.
        assert!(matches!(validity(&d, &[]), Validity::Invalid(w) if w.contains("disappeared")));
    }

    #[test]
    fn thin_snapshot_validity_follows_its_pool() {
        let rows = parse_lvs(LVS).unwrap();
        let d = data("ts", "thin1", Some("pool"));
        assert_eq!(validity(&d, &rows), Validity::Valid);
        let mut full = rows.clone();
        full.iter_mut()
            .find(|r| r.lv_name == "pool")
            .unwrap()
            .data_percent = "100.00".into();
        assert!(
            matches!(validity(&d, &full), Validity::Invalid(w) if w.contains("data is 100% full"))
        );
        let mut meta = rows.clone();
        meta.iter_mut()
            .find(|r| r.lv_name == "pool")
            .unwrap()
            .metadata_percent = "100.00".into();
        assert!(matches!(validity(&d, &meta), Validity::Invalid(w) if w.contains("metadata")));
        let mut out_of_space = rows;
        out_of_space
            .iter_mut()
            .find(|r| r.lv_name == "pool")
            .unwrap()
            .lv_attr = "twi-aotzD-".into();
        assert!(matches!(validity(&d, &out_of_space), Validity::Invalid(_)));
    }

    #[test]
    fn thin_pool_fullness_for_probe() {
        let rows = parse_lvs(LVS).unwrap();
        let pool = row(&rows, "pool");
        assert_eq!(pool_too_full(pool, THIN_POOL_FULL), None);
        let busy = LvRow {
            metadata_percent: "96.20".into(),
            ..pool.clone()
        };
        let why = pool_too_full(&busy, THIN_POOL_FULL).unwrap();
        assert!(why.contains("metadata is 96.2% full"), "{why}");
    }

    #[test]
    fn read_only_mount_options() {
        assert_eq!(mount_options("ext4"), &["", "noload"]);
        assert_eq!(mount_options("xfs"), &["nouuid", "nouuid,norecovery"]);
        assert_eq!(mount_options("btrfs"), &[""]);
    }

    #[test]
    fn expected_matches_what_create_records() {
        let plan = UnitPlan {
            vg: "mvg".into(),
            lv: "lv1".into(),
            fstype: "xfs".into(),
            size_bytes: Some(28 << 20),
            pool: None,
        };
        let Probe::Accept { data, .. } = Probe::accept("mvg/lv1", &plan, true) else {
            panic!("a plain plan is accepted");
        };
        let unit = UnitRequest {
            unit: "mvg/lv1".into(),
            data,
            mounts: vec![],
        };
        let ctx = SessionContext {
            id: "snapshot-0a1b2c3d".into(),
            index: 3,
            runtime_dir: "/run/snapshot/snapshot-0a1b2c3d".into(),
            guard: Default::default(),
        };
        let c = LvmProvider::default().expected(&unit, &ctx);
        assert_eq!(c.name, "snapshot-0a1b2c3d-3", "the session's object name");
        assert_eq!(c.provider, "lvm");
        let d: SnapshotData = c.data().unwrap();
        assert_eq!(d.name, "lvm-snapshot-0a1b2c3d-3");
        assert_eq!(d.vg, "mvg");
        assert_eq!(d.origin, "lv1");
        assert_eq!(d.size_bytes, Some(28 << 20));
        assert_eq!(
            d.staging,
            PathBuf::from("/run/snapshot/snapshot-0a1b2c3d/lvm-3")
        );
        assert_eq!(
            LvmProvider::thin().expected(&unit, &ctx).provider,
            "lvm-thin"
        );
    }

    #[test]
    fn a_mount_that_is_not_an_lv_is_declined_without_running_lvm() {
        let mount = Mount {
            id: 1,
            parent_id: 0,
            major: 0,
            minor: 4242,
            root: "/".into(),
            mount_point: "/srv".into(),
            options: "rw".into(),
            optional: vec![],
            fstype: "ext4".into(),
            source: "/dev/nothing".into(),
            super_options: "rw".into(),
        };
        let fs = Filesystem { mount };
        for p in [
            &LvmProvider::default() as &dyn Provider,
            &LvmProvider::thin() as &dyn Provider,
        ] {
            match p.probe(&fs) {
                Probe::Decline(why) => {
                    assert!(why.contains("not an LVM logical volume"), "{why}")
                }
                Probe::Accept { .. } => panic!("{} accepted a non-LV", p.name()),
            }
        }
    }
}
