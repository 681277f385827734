//! btrfs: a read-only snapshot of the subvolume a mount shows, through the kernel's ioctls
//! (no `btrfs` program anywhere).
//!
//! # Snapshot unit
//!
//! The subvolume the mount shows: its `subvolid=`/`subvol=` super options (top level: id 5,
//! `/`). The unit key is `MAJOR:MINOR:SUBVOLID` (the superblock's device number is the same for
//! every mount of one btrfs filesystem), so two mounts of one subvolume share one snapshot.
//!
//! A mount whose root is a plain directory inside the subvolume (a bind mount of
//! `/@home/alice`: `root` = `/@home/alice`, `subvol=/@home`) is handled: the containing
//! subvolume is snapshotted and the view shows the same subdirectory of the snapshot.
//!
//! Nested subvolumes are not part of a snapshot: btrfs shows them in it as empty directories.
//! A DIR living in a nested subvolume that is not itself a mount needs its own unit; see
//! [`nested_subvolume_mounts`], which turns it into synthetic mounts for the planner.
//!
//! # Where snapshots live
//!
//! In the filesystem's top level (subvolume 5), as `.snapshot-<session>-<index>`: on the same
//! filesystem as required, outside every subvolume that distributions mount (`@`, `@home`,
//! `root`, `home`…), hidden from `ls` when the top level itself is mounted, and never inside
//! the view: a snapshot of the top level does not contain the snapshot being created in it,
//! and any other subvolume shows in a snapshot only as an empty directory.
//!
//! The top level is reached through a private staging mount of the same device with
//! `subvolid=5`, at `<runtime_dir>/btrfs-<index>` (one per unit, so parallel creates share
//! nothing). The trait has no step before the frozen window, so `create` makes it: for an
//! already mounted filesystem this reuses the superblock and costs a fraction of the snapshot
//! ioctl itself (which commits a transaction). The staging mount stays until `remove`.
//!
//! # Mounting
//!
//! A read-only, private, non-recursive bind of `<staging>/<snapshot>/<subdir>` (the snapshot
//! subvolume is read-only as well).
//!
//! # Removal
//!
//! `remove` deletes the snapshot subvolume by name through the staging mount, after checking
//! that the name still holds the subvolume id recorded at creation (never anything else),
//! then unmounts the staging mount and removes its directory. A later process (journal
//! replay after a crash, when `/run` is gone) uses a detached top-level mount (`fsmount`, never
//! attached to any directory) of a device whose filesystem UUID matches the recorded one.
//! Already gone is success. The record journalled before creation ([`Provider::expected`])
//! has no snapshot id yet: removal from it deletes a subvolume only under the exact
//! session-unique name, and refuses a plain directory.

use serde::{Deserialize, Serialize};
use snapshot_core::provider::{
    Created, Filesystem, Probe, Provider, ProviderError, SessionContext, UnitRequest, Validity,
};
use snapshot_core::sys::DetachedMount;
use snapshot_core::sys::{self, ioctl};
use snapshot_core::Mount;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The btrfs snapshot provider.
#[derive(Debug, Default, Clone, Copy)]
pub struct BtrfsProvider;

const NAME: &str = "btrfs";

/// What `probe` plans for a unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct UnitPlan {
    /// A device of the filesystem (the mount's source).
    #[serde(with = "snapshot_core::path_json")]
    device: PathBuf,
    subvol_id: u64,
    /// Path of the subvolume from the top level (`/` for the top level itself): any bytes.
    #[serde(with = "snapshot_core::path_json")]
    subvol: PathBuf,
}

/// What `create` made ([`Created::data`]): enough to remove it from another process. The
/// record journalled before creation ([`Provider::expected`]) lacks what only creation
/// learns (`snapshot_id`, maybe `fsid`); removal then relies on the session-unique name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotData {
    /// Filesystem UUID, as `/sys/fs/btrfs/<fsid>` names it.
    #[serde(default)]
    pub fsid: Option<String>,
    /// The device the staging mount is made from.
    #[serde(with = "snapshot_core::path_json")]
    pub device: PathBuf,
    /// Where the top level is mounted (privately) for the session.
    #[serde(with = "snapshot_core::path_json")]
    pub staging: PathBuf,
    /// Name of the snapshot subvolume in the top level.
    pub snapshot: String,
    /// Its subvolume id: checked before deletion.
    #[serde(default)]
    pub snapshot_id: Option<u64>,
    /// The snapshotted subvolume: path from the top level, and id.
    #[serde(with = "snapshot_core::path_json")]
    pub origin_subvol: PathBuf,
    pub origin_subvol_id: u64,
}

impl SnapshotData {
    fn from_created(created: &Created) -> Result<Self, ProviderError> {
        let d: Self = created.data()?;
        // The record's data must name the entry's own object: a journal is never trusted to
        // point removal at a subvolume that does not carry the session's name.
        if d.snapshot != format!(".{}", created.name) {
            return Err(ProviderError::Other(format!(
                "btrfs snapshot {}: the record names subvolume {:?}, not .{}; refusing to touch it",
                created.name, d.snapshot, created.name
            )));
        }
        Ok(d)
    }
}

impl Provider for BtrfsProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn nested(&self, mount: &Mount, dir: &Path) -> Vec<Mount> {
        nested_subvolume_mounts(mount, dir).unwrap_or_else(|e| {
            log::warn!(
                "{dir:?}: cannot look for btrfs subvolumes below {:?}: {e}",
                mount.mount_point
            );
            Vec::new()
        })
    }

    fn probe(&self, fs: &Filesystem) -> Probe {
        match plan_unit(&fs.mount) {
            Ok((unit, plan)) => Probe::accept(unit, &plan, true),
            Err(reason) => Probe::Decline(reason),
        }
    }

    fn expected(&self, unit: &UnitRequest, ctx: &SessionContext) -> Created {
        let planned = UnitPlan::from_request(unit).and_then(|plan| {
            let mut d = SnapshotData::planned(plan, ctx);
            // The fsid lets a later process find the filesystem whatever its device is called.
            d.fsid = unit
                .mounts
                .first()
                .and_then(|m| ioctl::btrfs_fs_info(&m.mount_point).ok())
                .map(|info| info.fsid_string());
            self.created(unit, ctx, &d)
        });
        // create will fail the same way; journal what there is.
        planned.unwrap_or_else(|_| Created::planned(self.name(), unit, ctx, true))
    }

    fn create(&self, unit: &UnitRequest, ctx: &SessionContext) -> Result<Created, ProviderError> {
        let plan = UnitPlan::from_request(unit)?;
        let started = Instant::now();
        let mut d = SnapshotData::planned(plan.clone(), ctx);
        // Normally mounted by `prepare`, before the frozen window.
        if !staging_mounted(&d)? {
            mount_staging(&d.device, &d.staging)?;
        }
        match snapshot_in_staging(&plan, unit, &d.staging, &d.snapshot) {
            Ok((fsid, id)) => {
                d.fsid = Some(fsid);
                d.snapshot_id = Some(id);
            }
            Err(e) => {
                if let Err(e2) = unmount_staging(&d.staging) {
                    log::warn!("btrfs: after a failed create: {e2}");
                }
                return Err(e);
            }
        }
        log::debug!(
            "btrfs: {} of subvolume {} (id {}) in {:?}",
            d.describe(),
            plan.subvol.display(),
            plan.subvol_id,
            started.elapsed()
        );
        self.created(unit, ctx, &d)
    }

    /// Mounts the top level privately before the frozen window: the mount is the slowest part
    /// of reaching the filesystem and has nothing to do with the point in time.
    fn prepare(&self, unit: &UnitRequest, ctx: &SessionContext) -> Result<(), ProviderError> {
        let plan = UnitPlan::from_request(unit)?;
        let d = SnapshotData::planned(plan, ctx);
        if !staging_mounted(&d)? {
            mount_staging(&d.device, &d.staging)?;
        }
        Ok(())
    }

    fn mount(&self, created: &Created, mount: &Mount) -> Result<DetachedMount, ProviderError> {
        let d = SnapshotData::from_created(created)?;
        let subdir = subdir_of(&mount.root, &d.origin_subvol).map_err(ProviderError::Other)?;
        if !staging_mounted(&d)? {
            // Another process than the one that created it (or the staging mount was lost).
            mount_staging(&d.device, &d.staging)?;
            if let Err(e) = check_fsid(&d.staging, d.fsid.as_deref()) {
                let _ = unmount_staging(&d.staging);
                return Err(e);
            }
        }
        let inside = Path::new(&d.snapshot).join(&subdir);
        sys::clone_beneath(&d.staging, &inside).map_err(|e| {
            ProviderError::io(
                format!(
                    "cloning {} ({}) read-only",
                    d.describe(),
                    d.staging.join(&inside).display()
                ),
                e,
            )
        })
    }

    fn verify(&self, created: &Created) -> Validity {
        let Ok(d) = SnapshotData::from_created(created) else {
            return Validity::Invalid(format!(
                "btrfs snapshot {}: unreadable record",
                created.name
            ));
        };
        match staging_mounted(&d) {
            Ok(true) => match snapshot_state(&d.staging, &d) {
                Ok(SnapshotState::Present) => Validity::Valid,
                Ok(SnapshotState::Gone) => {
                    Validity::Invalid(format!("{} no longer exists", d.describe()))
                }
                Err(e) => Validity::Invalid(e.to_string()),
            },
            // Nothing to look through without mounting: removal will tell.
            _ => Validity::Valid,
        }
    }

    fn remove(&self, created: &Created) -> Result<(), ProviderError> {
        let d = SnapshotData::from_created(created)?;
        if staging_mounted(&d)? {
            let deleted = check_fsid(&d.staging, d.fsid.as_deref())
                .and_then(|()| delete_snapshot(&d.staging, &d));
            // Unmount the staging mount either way: a retry can reach the top level without it.
            let unmounted = unmount_staging(&d.staging);
            deleted?;
            unmounted?;
        } else {
            let top = detached_top_level(&d)?;
            let top_path = PathBuf::from(format!("/proc/self/fd/{}", fd_number(&top)));
            delete_snapshot(&top_path, &d)?;
            drop(top);
            // A staging directory left by a process that died after unmounting it.
            remove_staging_dir(&d.staging)?;
        }
        log::debug!("btrfs: removed {}", d.describe());
        Ok(())
    }
}

impl BtrfsProvider {
    fn created(
        &self,
        unit: &UnitRequest,
        ctx: &SessionContext,
        data: &SnapshotData,
    ) -> Result<Created, ProviderError> {
        Created::new(self.name(), &unit.unit, ctx.object_name(), true, data)
    }
}

impl UnitPlan {
    fn from_request(unit: &UnitRequest) -> Result<Self, ProviderError> {
        unit.data(NAME)
    }
}

impl SnapshotData {
    /// Everything but what only creation learns.
    fn planned(plan: UnitPlan, ctx: &SessionContext) -> Self {
        Self {
            fsid: None,
            device: plan.device,
            staging: ctx.runtime_dir.join(format!("btrfs-{}", ctx.index)),
            snapshot: format!(".{}", ctx.object_name()),
            snapshot_id: None,
            origin_subvol: plan.subvol,
            origin_subvol_id: plan.subvol_id,
        }
    }

    /// `btrfs snapshot NAME (subvolume ID)`, for messages.
    fn describe(&self) -> String {
        match self.snapshot_id {
            Some(id) => format!("btrfs snapshot {} (subvolume {id})", self.snapshot),
            None => format!("btrfs snapshot {}", self.snapshot),
        }
    }
}

/// The unit key and plan for a mount, or why not.
fn plan_unit(m: &Mount) -> Result<(String, UnitPlan), String> {
    if m.fstype != "btrfs" {
        return Err(format!("not btrfs ({})", m.fstype));
    }
    if m.super_option("ro").is_some() {
        return Err("the filesystem is read-only (superblock ro): btrfs cannot snapshot it".into());
    }
    let subvol_id: u64 = m
        .super_option("subvolid")
        .ok_or("no subvolid= in the superblock options (kernel older than 4.2?)")?
        .parse()
        .map_err(|_| format!("unreadable subvolid= in {:?}", m.super_options))?;
    let subvol = PathBuf::from(
        m.super_option_unescaped("subvol")
            .ok_or("no subvol= in the superblock options")?,
    );
    if !subvol.is_absolute() {
        return Err(format!(
            "subvol={} is not an absolute path",
            subvol.display()
        ));
    }
    subdir_of(&m.root, &subvol)?;
    let device = PathBuf::from(&m.source);
    if !device.is_absolute() {
        return Err(format!(
            "mount source {:?} is not a device path (needed to reach the top level)",
            m.source
        ));
    }
    Ok((
        format!("{}:{}:{}", m.major, m.minor, subvol_id),
        UnitPlan {
            device,
            subvol_id,
            subvol,
        },
    ))
}

/// The mount's root relative to its subvolume: empty for a subvolume mount, the directory
/// for a bind mount of a plain directory inside the subvolume.
fn subdir_of(root: &Path, subvol: &Path) -> Result<PathBuf, String> {
    root.strip_prefix(subvol)
        .map(Path::to_path_buf)
        .map_err(|_| {
            format!(
                "mount root {} is not inside its subvolume {} (renamed or deleted subvolume?)",
                root.display(),
                subvol.display()
            )
        })
}

/// Creates the snapshot through the staging mount; returns the fsid and the snapshot's id.
fn snapshot_in_staging(
    plan: &UnitPlan,
    unit: &UnitRequest,
    staging: &Path,
    snapshot: &str,
) -> Result<(String, u64), ProviderError> {
    let fsid = ioctl::btrfs_fs_info(staging)
        .map_err(|e| ProviderError::io(format!("reading btrfs facts of {}", staging.display()), e))?
        .fsid_string();
    // The device may have changed hands since planning: make sure the staging mount is the
    // filesystem the DIRs live on.
    if let Some(origin) = unit.mounts.first() {
        let origin_fsid = ioctl::btrfs_fs_info(&origin.mount_point)
            .map_err(|e| {
                ProviderError::io(
                    format!("reading btrfs facts of {}", origin.mount_point.display()),
                    e,
                )
            })?
            .fsid_string();
        if origin_fsid != fsid {
            return Err(ProviderError::Other(format!(
                "{} is btrfs {fsid}, but {} is btrfs {origin_fsid}",
                plan.device.display(),
                origin.mount_point.display()
            )));
        }
    }
    let source = staging.join(plan.subvol.strip_prefix("/").unwrap_or(&plan.subvol));
    let id = subvolume_root_id(&source).map_err(|e| {
        ProviderError::io(format!("looking up subvolume {}", plan.subvol.display()), e)
    })?;
    if id != Some(plan.subvol_id) {
        return Err(ProviderError::Other(format!(
            "{} is not subvolume {} any more (found {id:?})",
            plan.subvol.display(),
            plan.subvol_id
        )));
    }
    ioctl::btrfs_snapshot_readonly(&source, staging, snapshot).map_err(|e| {
        ProviderError::io(
            format!(
                "creating read-only btrfs snapshot {snapshot} of subvolume {} ({})",
                plan.subvol.display(),
                plan.device.display()
            ),
            e,
        )
    })?;
    match ioctl::btrfs_subvol_id(&staging.join(snapshot)) {
        Ok(id) => Ok((fsid, id)),
        Err(e) => {
            // Just made under this session's unique name: ours to undo.
            if let Err(e2) = ioctl::btrfs_subvol_delete(staging, snapshot) {
                log::warn!("btrfs: deleting {snapshot} after a failed create: {e2}");
            }
            Err(ProviderError::io(
                format!("looking up the id of btrfs snapshot {snapshot}"),
                e,
            ))
        }
    }
}

/// `Some(id)` when `path` is the root directory of a subvolume (inode 256), else `None`.
fn subvolume_root_id(path: &Path) -> io::Result<Option<u64>> {
    let st = rustix::fs::stat(path)?;
    if st.st_ino != ioctl::BTRFS_FIRST_FREE_OBJECTID {
        return Ok(None);
    }
    ioctl::btrfs_subvol_id(path).map(Some)
}

/// Mounts the top level of the filesystem on `device` privately at `staging` (created).
fn mount_staging(device: &Path, staging: &Path) -> Result<(), ProviderError> {
    match std::fs::create_dir(staging) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(ProviderError::io(
                format!("creating btrfs staging directory {}", staging.display()),
                e,
            ))
        }
    }
    // Not noexec: the view's clone keeps these flags, and with `run --in-place /` the backup
    // program runs from the view of `/`.
    let flags = rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV;
    let r = rustix::mount::mount(device, staging, "btrfs", flags, c"subvolid=5")
        .map_err(io::Error::from)
        .and_then(|()| {
            sys::make_private(staging).inspect_err(|_| {
                let _ = sys::detach_path(staging);
            })
        });
    if let Err(e) = r {
        let _ = std::fs::remove_dir(staging);
        return Err(ProviderError::io(
            format!(
                "mounting the top level of btrfs {} at {}",
                device.display(),
                staging.display()
            ),
            e,
        ));
    }
    Ok(())
}

/// Is the staging directory the mount point of a btrfs top-level mount?
/// Is the staging mount in place? Only this provider mounts there (a directory of the
/// session's private runtime directory), so "something is mounted there" suffices — checked
/// with two statx calls rather than a read of the whole mount table.
fn staging_mounted(d: &SnapshotData) -> Result<bool, ProviderError> {
    sys::is_mount_point(&d.staging)
        .map_err(|e| ProviderError::io(format!("inspecting {}", d.staging.display()), e))
}

/// Does the filesystem mounted at `top` have the recorded fsid? (Unknown: nothing to check.)
fn check_fsid(top: &Path, fsid: Option<&str>) -> Result<(), ProviderError> {
    let Some(fsid) = fsid else {
        return Ok(());
    };
    let found = ioctl::btrfs_fs_info(top)
        .map_err(|e| ProviderError::io(format!("reading btrfs facts of {}", top.display()), e))?
        .fsid_string();
    if found != fsid {
        return Err(ProviderError::Other(format!(
            "{} holds btrfs {found}, not the snapshot's filesystem {fsid}",
            top.display()
        )));
    }
    Ok(())
}

/// Unmounts the staging mount (retried while a walker is still inside, then lazily:
/// [`sys::unmount_patiently`]) and removes its directory.
fn unmount_staging(staging: &Path) -> Result<(), ProviderError> {
    sys::unmount_patiently(staging)?;
    remove_staging_dir(staging)
}

fn remove_staging_dir(staging: &Path) -> Result<(), ProviderError> {
    // remove_dir, never remove_dir_all: it must fail rather than walk into a mount.
    match std::fs::remove_dir(staging) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ProviderError::io(
            format!("removing btrfs staging directory {}", staging.display()),
            e,
        )),
    }
}

enum SnapshotState {
    Present,
    Gone,
}

/// Is our snapshot (by name *and* id) in the top level mounted at `top`?
fn snapshot_state(top: &Path, d: &SnapshotData) -> Result<SnapshotState, ProviderError> {
    let path = top.join(&d.snapshot);
    let id = match subvolume_root_id(&path) {
        Ok(id) => id,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(SnapshotState::Gone),
        Err(e) => {
            return Err(ProviderError::io(
                format!("looking up btrfs snapshot {}", d.snapshot),
                e,
            ))
        }
    };
    match (id, d.snapshot_id) {
        (Some(found), Some(expected)) if found == expected => Ok(SnapshotState::Present),
        // Journalled before creation: the session-unique name is all there is to go by.
        (Some(_), None) => Ok(SnapshotState::Present),
        (found, _) => Err(ProviderError::Other(format!(
            "{} in the top level is not the {} this session made: found {}",
            d.snapshot,
            d.describe(),
            found.map_or("a plain directory".to_owned(), |id| format!(
                "subvolume {id}"
            ))
        ))),
    }
}

fn delete_snapshot(top: &Path, d: &SnapshotData) -> Result<(), ProviderError> {
    match snapshot_state(top, d)? {
        SnapshotState::Gone => Ok(()),
        SnapshotState::Present => ioctl::btrfs_subvol_delete(top, &d.snapshot)
            .map_err(|e| ProviderError::io(format!("deleting {}", d.describe()), e)),
    }
}

fn fd_number(fd: &rustix::fd::OwnedFd) -> i32 {
    use rustix::fd::AsRawFd;
    fd.as_raw_fd()
}

/// A top-level mount of the snapshot's filesystem that is attached nowhere (gone when the fd
/// closes): for removal by a process that has no staging mount.
fn detached_top_level(d: &SnapshotData) -> Result<rustix::fd::OwnedFd, ProviderError> {
    use rustix::mount::{
        fsconfig_create, fsconfig_set_string, fsmount, fsopen, FsMountFlags, FsOpenFlags,
        MountAttrFlags,
    };
    // The recorded device first, then every device the kernel knows for this fsid (device
    // names change across reboots).
    let mut candidates = vec![d.device.clone()];
    if let Some(entries) = d.fsid.as_ref().and_then(|fsid| {
        std::fs::read_dir(Path::new("/sys/fs/btrfs").join(fsid).join("devices")).ok()
    }) {
        candidates.extend(
            entries
                .flatten()
                .map(|e| Path::new("/dev").join(e.file_name())),
        );
    }
    let mut errors = Vec::new();
    for dev in candidates {
        let attempt = (|| -> io::Result<rustix::fd::OwnedFd> {
            let fs = fsopen("btrfs", FsOpenFlags::FSOPEN_CLOEXEC)?;
            fsconfig_set_string(&fs, "source", &dev)?;
            fsconfig_set_string(&fs, "subvolid", "5")?;
            fsconfig_create(&fs)?;
            Ok(fsmount(
                &fs,
                FsMountFlags::FSMOUNT_CLOEXEC,
                MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
            )?)
        })();
        match attempt {
            Ok(fd) => {
                let path = PathBuf::from(format!("/proc/self/fd/{}", fd_number(&fd)));
                match check_fsid(&path, d.fsid.as_deref()) {
                    Ok(()) => return Ok(fd),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            Err(e) => errors.push(format!("{}: {e}", dev.display())),
        }
    }
    Err(ProviderError::Other(format!(
        "cannot reach btrfs filesystem {} to delete {}: {}",
        d.fsid.as_deref().unwrap_or("(fsid unknown)"),
        d.describe(),
        errors.join("; ")
    )))
}

/// For a DIR held by `mount` (a btrfs mount) but living in subvolumes nested below the
/// mount's root (plain subvolumes, not mounts of their own): those subvolumes as synthetic
/// mounts, outermost first, ready for [`Provider::probe`]. Each has the mount point of the
/// nested subvolume's root directory, its `root`, and `subvolid=`/`subvol=` of its own; the
/// other fields (including `id`) are `mount`'s, so a planner must tell them apart by mount
/// point. Every one of them needs a unit and a view mount: a nested subvolume shows as an
/// empty directory in its parent's snapshot, so the inner ones are mounted over those.
/// Empty when `dir` lives in the mount's own subvolume or the mount is not btrfs.
pub fn nested_subvolume_mounts(mount: &Mount, dir: &Path) -> io::Result<Vec<Mount>> {
    use std::os::unix::fs::MetadataExt;
    if mount.fstype != "btrfs" {
        return Ok(Vec::new());
    }
    let rel = dir.strip_prefix(&mount.mount_point).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not under mount point {}",
                dir.display(),
                mount.mount_point.display()
            ),
        )
    })?;
    // Every subvolume has its own st_dev: a change of st_dev between a directory and its
    // parent, inside one mount, is a subvolume boundary.
    let mut roots = Vec::new();
    let mut cur = dir.to_path_buf();
    let mut dev = std::fs::metadata(&cur)?.dev();
    for _ in rel.components() {
        let parent = cur.parent().map(Path::to_path_buf).unwrap_or_default();
        let parent_dev = std::fs::metadata(&parent)?.dev();
        if parent_dev != dev {
            roots.push(cur.clone());
        }
        cur = parent;
        dev = parent_dev;
    }
    roots.reverse();
    roots
        .into_iter()
        .map(|sub| {
            let id = ioctl::btrfs_subvol_id(&sub)?;
            let rel = sub
                .strip_prefix(&mount.mount_point)
                .unwrap_or(Path::new(""));
            let root = mount.root.join(rel);
            let super_options = mount
                .super_options
                .split(',')
                .filter(|o| !o.starts_with("subvolid=") && !o.starts_with("subvol="))
                .chain([
                    format!("subvolid={id}").as_str(),
                    format!("subvol={}", escape_option(&root)).as_str(),
                ])
                .collect::<Vec<_>>()
                .join(",");
            Ok(Mount {
                parent_id: mount.id,
                root,
                mount_point: sub,
                super_options,
                ..mount.clone()
            })
        })
        .collect()
}

/// The kernel's escaping of option values (`seq_show_option`): ` \t\n\\,=` as `\ooo`; and,
/// as the mountinfo parser keeps them, bytes that are not UTF-8 as `\ooo` too.
fn escape_option(p: &Path) -> String {
    let mut out = String::new();
    for chunk in p.as_os_str().as_encoded_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            if " \t\n\\,=".contains(c) {
                out.push_str(&format!("\\{:03o}", u32::from(c)));
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\{b:03o}"));
        }
    }
    out
}

#[cfg(test)]
#[path = "btrfs_proptests.rs"]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(line: &str) -> Mount {
        snapshot_core::MountTable::parse(line)
            .unwrap()
            .mounts
            .remove(0)
    }

    fn accept(m: &Mount) -> (String, UnitPlan) {
        match BtrfsProvider.probe(&Filesystem { mount: m.clone() }) {
            Probe::Accept {
                unit,
                data,
                consistent,
            } => {
                assert!(consistent);
                (unit, serde_json::from_value(data).unwrap())
            }
            Probe::Decline(r) => panic!("declined: {r}"),
        }
    }

    fn decline(m: &Mount) -> String {
        match BtrfsProvider.probe(&Filesystem { mount: m.clone() }) {
            Probe::Decline(r) => r,
            a => panic!("accepted: {a:?}"),
        }
    }

    #[test]
    fn top_level_mount() {
        let m = mount("46 27 0:39 / /data rw,relatime - btrfs /dev/loop3 rw,space_cache=v2,subvolid=5,subvol=/");
        let (unit, plan) = accept(&m);
        assert_eq!(unit, "0:39:5");
        assert_eq!(plan.subvol, Path::new("/"));
        assert_eq!(plan.device, Path::new("/dev/loop3"));
        assert_eq!(subdir_of(&m.root, &plan.subvol).unwrap(), Path::new(""));
    }

    #[test]
    fn subvolume_mounts_share_a_unit_and_a_subdir_bind_is_handled() {
        let a = mount("47 27 0:39 /@home /home rw - btrfs /dev/sdb rw,subvolid=257,subvol=/@home");
        let b = mount(
            "48 27 0:39 /@home/alice /srv/alice rw - btrfs /dev/sdb rw,subvolid=257,subvol=/@home",
        );
        let (ua, pa) = accept(&a);
        let (ub, pb) = accept(&b);
        assert_eq!(ua, ub);
        assert_eq!(pa, pb);
        assert_eq!(subdir_of(&b.root, &pb.subvol).unwrap(), Path::new("alice"));
    }

    #[test]
    fn escaped_subvolume_names() {
        let m = mount(
            r"47 27 0:39 /my\040vol /v rw - btrfs /dev/sdb rw,subvolid=258,subvol=/my\040vol",
        );
        let (_, plan) = accept(&m);
        assert_eq!(plan.subvol, Path::new("/my vol"));
        assert_eq!(escape_option(Path::new("/a b,c=d")), r"/a\040b\054c\075d");
        assert_eq!(escape_option(Path::new("/été")), "/été");
    }

    #[test]
    fn declines_with_reasons() {
        assert!(decline(&mount("1 0 8:1 / / rw - ext4 /dev/sda1 rw")).contains("not btrfs"));
        assert!(decline(&mount(
            "2 1 0:40 / /ro ro - btrfs /dev/sdc ro,subvolid=5,subvol=/"
        ))
        .contains("read-only"));
        assert!(decline(&mount(
            "3 1 0:41 /x /odd rw - btrfs /dev/sdd rw,subvolid=300,subvol=/y"
        ))
        .contains("not inside its subvolume"));
        assert!(decline(&mount(
            "4 1 0:42 / /n rw - btrfs none rw,subvolid=5,subvol=/"
        ))
        .contains("not a device path"));
    }

    #[test]
    fn created_data_round_trips() {
        let d = SnapshotData {
            fsid: Some("01234567-89ab-cdef-0011-223344556677".into()),
            device: "/dev/sdb".into(),
            staging: "/run/snapshot/snapshot-1a2b/btrfs-0".into(),
            snapshot: ".snapshot-1a2b-0".into(),
            snapshot_id: Some(260),
            origin_subvol: "/@home".into(),
            origin_subvol_id: 257,
        };
        let c = Created {
            provider: "btrfs".into(),
            unit: "0:39:257".into(),
            name: "snapshot-1a2b-0".into(),
            consistent: true,
            data: serde_json::to_value(&d).unwrap(),
        };
        let back: Created = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(SnapshotData::from_created(&back).unwrap(), d);
        // A record whose data points at another subvolume than the entry's name is refused:
        // removal never follows a journal to an object without the session's name.
        let mut other = c.clone();
        other.name = "snapshot-ab12cd34-0".into();
        let err = SnapshotData::from_created(&other).unwrap_err().to_string();
        assert!(err.contains("refusing"), "{err}");
        assert!(BtrfsProvider.remove(&other).is_err());
    }
}
