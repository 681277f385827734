//! freeze: a point-in-time copy of a filesystem that has no snapshots of its own (XFS, ext4,
//! ext3) — quiesce it with `FIFREEZE`, copy the block device underneath, `FITHAW` at once
//! (docs/DESIGN.md §3.2).
//!
//! # Taking a filesystem
//!
//! The filesystem must support `FIFREEZE` (xfs, ext4, ext3; btrfs has its own provider, tried
//! earlier), have a writable superblock, and sit on a block device that can be copied:
//!
//! 1. **Built in:** a loop device (`/sys/dev/block/M:m/loop/backing_file`) whose backing file
//!    lives on a reflink-capable filesystem (btrfs, or XFS made with `reflink=1`). The copy is
//!    a `FICLONE` of the backing file: instant and copy-on-write. Preferred when both apply,
//!    since nothing is spawned inside the frozen window.
//! 2. **Configured:** any other block device, when an administrator configured a
//!    device-snapshot command (`--freeze-command PATH`) — a SAN, hypervisor or cloud-volume
//!    snapshot.
//!
//! Otherwise it declines, saying why (`not a loop device and no --freeze-command configured`,
//! `backing file … on ext4: no reflink`…).
//!
//! # One point in time
//!
//! Every mount this provider takes gets the same unit key, so all of a session's freeze
//! filesystems form one unit and one `create`: each is frozen and copied, then all are thawed
//! (in reverse), so there is an instant at which all are frozen and every copy shows that
//! instant. Filesystems are taken in device-number order, except that a filesystem whose
//! backing file lives on another one of the set goes first: its clone is written to that one,
//! which must not be frozen yet. Before `FIFREEZE` of each, the session's watchdog is told
//! ([`snapshot_core::recovery::watchdog::FreezeGuard`]): it thaws the filesystem if this process dies or
//! the freeze outlasts `--freeze-timeout`. A copy that took longer than that is refused, since
//! the watchdog may have thawed the filesystem under it.
//!
//! The frozen window of the built-in path holds ioctls only (`FIFREEZE`, `FICLONE`, `FITHAW`)
//! and the watchdog messages: the clone files are created and the backing files opened before,
//! nothing is logged before the thaw (a log on a frozen filesystem would block).
//!
//! # Where copies live
//!
//! A clone must be on the same mount as the backing file (`FICLONE` refuses to cross mounts),
//! so it goes next to it, hidden: `.<session>-<unit>-<n>.img` (`n` numbers the unit's
//! filesystems). If the backing file lies inside a directory being backed up, the clone shows
//! in that directory's view as well (as the backing file itself does): keep loop images out of
//! backed-up trees, or exclude `.snapshot-*.img`.
//!
//! # Mounting
//!
//! Each copy is mounted once, privately, at `<runtime_dir>/freeze-<unit>-<n>`: a clone through
//! a new read-only loop device that detaches itself when unmounted (autoclear); with
//! `ro,nouuid,norecovery` for XFS (the origin with the same UUID is mounted; a frozen XFS has
//! everything written back), `ro,noload` for ext4/ext3. The view gets a read-only bind of the
//! mount's root directory in it, so several mounts of one filesystem share one copy.
//!
//! # Removal
//!
//! `remove` unmounts the staging mounts (only when the loop device under one reads our clone),
//! detaches loop devices whose backing file is exactly our clone, deletes the clone files (only
//! names carrying the session id), or runs the command's `remove`. Already gone is success.
//!
//! # The device-snapshot command
//!
//! ```text
//! CMD create DEVICE NAME               inside the frozen window
//! CMD remove DEVICE NAME COPY_DEVICE   at teardown, or by `snapshot cleanup`
//! ```
//!
//! - `DEVICE`: the block device of the frozen filesystem (the mount's source, e.g. `/dev/sdb1`).
//! - `NAME`: a name for the copy carrying the session id (`snapshot-1a2b3c4d-0-0`); name the
//!   snapshot object after it, so that `remove` can find it by name alone.
//! - `create` prints, as the last line of its stdout, the path of a block device holding the
//!   point-in-time copy; exit 0. It runs while the filesystem is frozen: be quick, and write
//!   nothing to a filesystem being snapshotted (that would block until the watchdog thaws it).
//! - `remove` gets the device `create` printed, or an empty `COPY_DEVICE` when the session died
//!   before it was known: then remove by `NAME`. It must succeed when the copy is already gone.
//! - stdin is `/dev/null`; stderr goes into the error message. See `examples/freeze-command.sh`.
//! - It runs as root, so it must pass the trust rule ([`snapshot_core::trust`]: owned by root,
//!   writable only by root, in directories that are too); otherwise the provider declines,
//!   saying why, and `remove` refuses to run it.

use serde::{Deserialize, Serialize};
use snapshot_core::exec;
use snapshot_core::provider::{
    Created, Filesystem, Probe, Provider, ProviderError, SessionContext, UnitRequest, Validity,
};
use snapshot_core::recovery::watchdog::FreezeGuard;
use snapshot_core::sys::DetachedMount;
use snapshot_core::{sys, trust, Mount, MountTable};
use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const NAME: &str = "freeze";

/// The one unit key: every freeze filesystem of a session is in one unit, one point in time.
const UNIT: &str = "freeze";

/// Filesystems whose `FIFREEZE` works and whose copy can be mounted read-only without
/// writing to it.
const FREEZABLE: &[&str] = &["xfs", "ext4", "ext3"];

const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;
const XFS_SUPER_MAGIC: i64 = 0x5846_5342;

/// The freeze provider; `command` is the configured device-snapshot command.
#[derive(Debug, Clone, Default)]
pub struct FreezeProvider {
    command: Option<PathBuf>,
}

impl FreezeProvider {
    pub fn new(command: Option<PathBuf>) -> Self {
        Self { command }
    }
}

/// How the copy of one filesystem is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum Method {
    /// `FICLONE` of the loop device's backing file.
    Clone {
        #[serde(with = "snapshot_core::path_json")]
        backing: PathBuf,
        /// Next to `backing`, named with the session id.
        #[serde(with = "snapshot_core::path_json")]
        clone: PathBuf,
        /// The loop device's window on the file, reproduced on the clone's loop device.
        offset: u64,
        sizelimit: u64,
    },
    /// The configured device-snapshot command.
    Command {
        #[serde(with = "snapshot_core::path_json")]
        command: PathBuf,
        /// The `NAME` argument.
        name: String,
        /// What `create` printed; `None` in the record journalled before creation.
        #[serde(default, with = "snapshot_core::path_json::option")]
        copy_device: Option<PathBuf>,
    },
}

/// One filesystem of the unit and its copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copy {
    /// Device number of the origin filesystem: which mounts this copy serves.
    pub major: u32,
    pub minor: u32,
    /// The origin's block device (mount source).
    #[serde(with = "snapshot_core::path_json")]
    pub device: PathBuf,
    pub fstype: String,
    /// Where the origin is frozen and thawed through: any user's name.
    #[serde(with = "snapshot_core::path_json")]
    pub mount_point: PathBuf,
    /// Where the copy is mounted privately for the view's binds.
    #[serde(with = "snapshot_core::path_json")]
    pub staging: PathBuf,
    #[serde(flatten)]
    pub method: Method,
}

/// The plan of a freeze unit ([`UnitRequest::data`]): how the first mount's device is copied,
/// for `snapshot plan` (`create` resolves every mount again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
struct ProbeData {
    method: &'static str,
}

/// [`Created::data`] of a freeze unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreezeData {
    /// In device-number order (the numbering of the copies' names).
    pub copies: Vec<Copy>,
}

impl FreezeData {
    fn from_created(created: &Created) -> Result<Self, ProviderError> {
        created.data()
    }
}

/// What probing found out about one filesystem's device.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Plan {
    Clone {
        backing: PathBuf,
        offset: u64,
        sizelimit: u64,
    },
    Command {
        command: PathBuf,
        device: PathBuf,
    },
}

/// A loop device as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LoopBacking {
    /// `loopN`.
    name: String,
    backing: PathBuf,
    offset: u64,
    sizelimit: u64,
}

/// Why a mount's filesystem cannot be frozen at all (fstype, read-only superblock).
fn check_freezable(m: &Mount) -> Result<(), String> {
    if !FREEZABLE.contains(&m.fstype.as_str()) {
        return Err(match m.fstype.as_str() {
            "ext2" => "ext2 does not support FIFREEZE".into(),
            other => format!("{other} is not a filesystem this provider freezes (xfs, ext4, ext3)"),
        });
    }
    if m.super_option("ro").is_some() {
        return Err("the filesystem is read-only (superblock ro): nothing to freeze".into());
    }
    Ok(())
}

/// The decision, from the facts gathered: the built-in path when the device is a loop device
/// whose backing file can be cloned, else the command when one is configured (and usable).
fn choose(
    m: &Mount,
    looped: Option<Result<LoopBacking, String>>,
    reflink: impl FnOnce(&LoopBacking) -> Result<(), String>,
    device: Result<PathBuf, String>,
    command: Option<Result<&Path, String>>,
) -> Result<Plan, String> {
    check_freezable(m)?;
    let builtin = match looped {
        None => Err(format!(
            "{} ({}:{}) is not a loop device",
            m.source, m.major, m.minor
        )),
        Some(Err(e)) => Err(e),
        Some(Ok(l)) => reflink(&l).map(|()| Plan::Clone {
            backing: l.backing,
            offset: l.offset,
            sizelimit: l.sizelimit,
        }),
    };
    let builtin_reason = match builtin {
        Ok(plan) => return Ok(plan),
        Err(reason) => reason,
    };
    match command {
        None => Err(format!(
            "{builtin_reason} and no --freeze-command configured"
        )),
        Some(Err(unusable)) => Err(format!("{builtin_reason}, and {unusable}")),
        Some(Ok(command)) => {
            let device = device.map_err(|e| format!("{builtin_reason}, and {e}"))?;
            Ok(Plan::Command {
                command: command.to_owned(),
                device,
            })
        }
    }
}

/// The loop device behind `major:minor`, from sysfs; `None` when it is no loop device.
fn loop_backing(major: u32, minor: u32) -> Option<Result<LoopBacking, String>> {
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let name = std::fs::read_link(&sys)
        .ok()?
        .file_name()?
        .to_string_lossy()
        .into_owned();
    if !sys.join("loop").is_dir() {
        // A partition of a loop device has its `loop` directory in the parent.
        if sys.join("partition").exists() && sys.join("../loop").is_dir() {
            return Some(Err(format!(
                "{name} is a partition of a loop device (only whole loop devices are cloned)"
            )));
        }
        return None;
    }
    let read = |f: &str| {
        std::fs::read(sys.join("loop").join(f))
            .map_err(|e| format!("reading /sys/block/{name}/loop/{f}: {e}"))
    };
    let number = |f: &str| -> Result<u64, String> {
        String::from_utf8_lossy(&read(f)?)
            .trim()
            .parse()
            .map_err(|_| format!("unreadable /sys/block/{name}/loop/{f}"))
    };
    Some((|| {
        let mut raw = read("backing_file")?;
        while raw.last().is_some_and(|b| b.is_ascii_whitespace()) {
            raw.pop();
        }
        if raw.ends_with(b" (deleted)") {
            return Err(format!("the backing file of {name} was deleted"));
        }
        let backing =
            PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(raw));
        Ok(LoopBacking {
            name: name.clone(),
            backing,
            offset: number("offset")?,
            sizelimit: number("sizelimit")?,
        })
    })())
}

/// Can the backing file be cloned in its own directory? (btrfs, XFS with reflink; writable.)
fn reflink_capable(l: &LoopBacking) -> Result<(), String> {
    let b = &l.backing;
    let fail = |e: io::Error| format!("backing file {} of {}: {e}", b.display(), l.name);
    let fs = rustix::fs::statfs(b).map_err(|e| fail(e.into()))?;
    let vfs = rustix::fs::statvfs(b).map_err(|e| fail(e.into()))?;
    let fstype = || {
        sys::mount_id(b)
            .ok()
            .and_then(|id| MountTable::read().ok()?.by_id(id).map(|m| m.fstype.clone()))
            .unwrap_or_else(|| format!("filesystem type {:#x}", fs.f_type))
    };
    #[allow(clippy::unnecessary_cast)] // f_type's type differs between architectures.
    let ok = match fs.f_type as i64 {
        BTRFS_SUPER_MAGIC => true,
        XFS_SUPER_MAGIC => {
            if !sys::xfs_has_reflink(b).map_err(fail)? {
                return Err(format!(
                    "backing file {} of {} on xfs without reflink (mkfs.xfs -m reflink=1)",
                    b.display(),
                    l.name
                ));
            }
            true
        }
        _ => false,
    };
    if !ok {
        return Err(format!(
            "backing file {} of {} on {}: no reflink",
            b.display(),
            l.name,
            fstype()
        ));
    }
    if vfs.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
        return Err(format!(
            "backing file {} of {} is on a read-only mount: no room for a clone",
            b.display(),
            l.name
        ));
    }
    Ok(())
}

/// The mount's source, if it is the block device of the filesystem.
fn source_device(m: &Mount) -> Result<PathBuf, String> {
    let p = PathBuf::from(&m.source);
    let meta = std::fs::metadata(&p)
        .map_err(|e| format!("mount source {:?} is not usable as a device: {e}", m.source))?;
    let rdev = meta.rdev();
    let (maj, min) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
    if !meta.file_type().is_block_device() || (maj, min) != (m.major, m.minor) {
        return Err(format!(
            "mount source {:?} is not the block device {}:{}",
            m.source, m.major, m.minor
        ));
    }
    Ok(p)
}

fn plan_mount(m: &Mount, command: Option<&Path>) -> Result<Plan, String> {
    choose(
        m,
        loop_backing(m.major, m.minor),
        reflink_capable,
        source_device(m),
        command.map(|c| check_command(c).map(|()| c)),
    )
}

/// The command is usable: an executable file that passes the trust rule ([`trust`]), since
/// it runs as root.
fn check_command(command: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(command) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => trust_command(command),
        Ok(_) => Err(format!(
            "--freeze-command {} is not an executable file",
            command.display()
        )),
        Err(e) => Err(format!("--freeze-command {}: {e}", command.display())),
    }
}

fn trust_command(command: &Path) -> Result<(), String> {
    trust::check("--freeze-command", command)
        .map(drop)
        .map_err(|e| e.to_string())
}

impl Provider for FreezeProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn freezes(&self) -> bool {
        true
    }

    fn probe(&self, fs: &Filesystem) -> Probe {
        match plan_mount(&fs.mount, self.command.as_deref()) {
            Ok(plan) => {
                let method = match plan {
                    Plan::Clone { .. } => "clone",
                    Plan::Command { .. } => "command",
                };
                // The same unit for every mount: one unit, one point in time.
                Probe::accept(UNIT, &ProbeData { method }, true)
            }
            Err(reason) => Probe::Decline(reason),
        }
    }

    fn expected(&self, unit: &UnitRequest, ctx: &SessionContext) -> Created {
        // Whatever resolves: create fails on the rest the same way.
        let copies = self
            .resolve(unit, ctx)
            .unwrap_or_else(|(partial, _)| partial);
        self.created(unit, ctx, &FreezeData { copies })
            .unwrap_or_else(|_| Created::planned(NAME, unit, ctx, true))
    }

    fn create(&self, unit: &UnitRequest, ctx: &SessionContext) -> Result<Created, ProviderError> {
        let copies = self
            .resolve(unit, ctx)
            .map_err(|(_, e)| ProviderError::Other(e))?;
        let copies = freeze_and_copy(copies, ctx)?;
        self.created(unit, ctx, &FreezeData { copies })
    }

    fn mount(&self, created: &Created, mount: &Mount) -> Result<DetachedMount, ProviderError> {
        let d = FreezeData::from_created(created)?;
        let copy = d
            .copies
            .iter()
            .find(|c| (c.major, c.minor) == (mount.major, mount.minor))
            .ok_or_else(|| {
                ProviderError::Other(format!(
                    "freeze snapshot {} has no copy of {} ({}:{})",
                    created.name, mount.source, mount.major, mount.minor
                ))
            })?;
        stage(copy)?;
        let rel = mount.root.strip_prefix("/").unwrap_or(&mount.root);
        sys::clone_beneath(&copy.staging, rel).map_err(|e| {
            ProviderError::io(
                format!(
                    "cloning the copy of {} ({}) read-only",
                    copy.mount_point.display(),
                    copy.staging.join(rel).display()
                ),
                e,
            )
        })
    }

    fn verify(&self, created: &Created) -> Validity {
        let Ok(d) = FreezeData::from_created(created) else {
            return Validity::Invalid(format!(
                "freeze snapshot {}: unreadable record",
                created.name
            ));
        };
        for c in &d.copies {
            let gone = match &c.method {
                Method::Clone { clone, .. } => (!clone.exists()).then(|| clone.clone()),
                Method::Command {
                    copy_device: Some(dev),
                    ..
                } => (!dev.exists()).then(|| dev.clone()),
                Method::Command { .. } => None,
            };
            if let Some(p) = gone {
                return Validity::Invalid(format!(
                    "the copy of {} ({}) no longer exists",
                    c.mount_point.display(),
                    p.display()
                ));
            }
        }
        Validity::Valid
    }

    fn remove(&self, created: &Created) -> Result<(), ProviderError> {
        let d = FreezeData::from_created(created)?;
        let mut problems = Vec::new();
        // Staging mounts first: they hold the clones' loop devices.
        for c in &d.copies {
            if let Err(e) = unstage(c, &created.name) {
                problems.push(e.to_string());
            }
        }
        for c in &d.copies {
            let r = match &c.method {
                Method::Clone { clone, .. } => remove_clone(clone, &created.name),
                Method::Command {
                    command,
                    name,
                    copy_device,
                } => run_command_remove(command, &c.device, name, copy_device.as_deref()),
            };
            if let Err(e) = r {
                problems.push(e.to_string());
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ProviderError::Other(problems.join("; ")))
        }
    }
}

impl FreezeProvider {
    fn created(
        &self,
        unit: &UnitRequest,
        ctx: &SessionContext,
        data: &FreezeData,
    ) -> Result<Created, ProviderError> {
        Created::new(NAME, &unit.unit, ctx.object_name(), true, data)
    }

    /// The unit's filesystems (one per device, in device-number order) and how each is copied;
    /// on failure, what did resolve and why the rest did not.
    fn resolve(
        &self,
        unit: &UnitRequest,
        ctx: &SessionContext,
    ) -> Result<Vec<Copy>, (Vec<Copy>, String)> {
        let mut mounts: Vec<&Mount> = Vec::new();
        for m in &unit.mounts {
            if !mounts
                .iter()
                .any(|o| (o.major, o.minor) == (m.major, m.minor))
            {
                mounts.push(m);
            }
        }
        mounts.sort_by_key(|m| (m.major, m.minor));
        let command = self.command.as_deref();
        let object = ctx.object_name();
        let mut copies = Vec::new();
        let mut errors = Vec::new();
        for (n, m) in mounts.into_iter().enumerate() {
            let method = match plan_mount(m, command) {
                Ok(Plan::Clone {
                    backing,
                    offset,
                    sizelimit,
                }) => Method::Clone {
                    clone: clone_path(&backing, &object, n),
                    backing,
                    offset,
                    sizelimit,
                },
                Ok(Plan::Command { command, .. }) => Method::Command {
                    command,
                    name: format!("{object}-{n}"),
                    copy_device: None,
                },
                Err(reason) => {
                    errors.push(format!("{}: {reason}", m.mount_point.display()));
                    continue;
                }
            };
            copies.push(Copy {
                major: m.major,
                minor: m.minor,
                device: PathBuf::from(&m.source),
                fstype: m.fstype.clone(),
                mount_point: m.mount_point.clone(),
                staging: ctx.runtime_dir.join(format!("freeze-{}-{n}", ctx.index)),
                method,
            });
        }
        if errors.is_empty() {
            Ok(copies)
        } else {
            Err((copies, errors.join("; ")))
        }
    }
}

/// `<dir of backing>/.<session>-<unit>-<n>.img`.
fn clone_path(backing: &Path, object: &str, n: usize) -> PathBuf {
    backing
        .parent()
        .unwrap_or(Path::new("/"))
        .join(format!(".{object}-{n}.img"))
}

/// Is `clone` a name this session's unit `object` gives its clones?
fn is_our_clone(clone: &Path, object: &str) -> bool {
    clone
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix(&format!(".{object}-")))
        .and_then(|n| n.strip_suffix(".img"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && object.starts_with("snapshot-")
}

/// The order to freeze and copy in: by device number, except that a filesystem holding
/// another's backing file comes after it (its clone is written there). `items`: each
/// filesystem's device and the device its backing file is on. Indexes into `items`.
fn freeze_order(items: &[(u64, Option<u64>)]) -> Result<Vec<usize>, String> {
    let mut left: Vec<usize> = (0..items.len()).collect();
    left.sort_by_key(|&i| items[i].0);
    let mut order = Vec::with_capacity(items.len());
    while !left.is_empty() {
        let pos = left
            .iter()
            .position(|&i| {
                !left
                    .iter()
                    .any(|&j| j != i && items[j].1 == Some(items[i].0))
            })
            .ok_or("the loop devices' backing files lie on each other in a cycle")?;
        order.push(left.remove(pos));
    }
    Ok(order)
}

/// A copy being made: what was opened before the frozen window.
struct Pending {
    copy: Copy,
    /// Clone: (backing file, the new empty clone file, which this create made).
    files: Option<(File, File)>,
}

/// Opens each backing file (checking it is what the loop device reads) and creates the empty
/// clone files, all before anything is frozen.
fn prepare(copies: Vec<Copy>) -> Result<Vec<Pending>, (Vec<Pending>, ProviderError)> {
    let mut out: Vec<Pending> = Vec::new();
    for copy in copies {
        let Method::Clone { backing, clone, .. } = &copy.method else {
            out.push(Pending { copy, files: None });
            continue;
        };
        let opened = (|| -> Result<(File, File), ProviderError> {
            let src = File::open(backing).map_err(|e| {
                ProviderError::io(format!("opening backing file {}", backing.display()), e)
            })?;
            check_backing(&copy, &src)?;
            let dest = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(clone)
                .map_err(|e| ProviderError::io(format!("creating {}", clone.display()), e))?;
            Ok((src, dest))
        })();
        match opened {
            Ok(files) => out.push(Pending {
                copy,
                files: Some(files),
            }),
            Err(e) => return Err((out, e)),
        }
    }
    Ok(out)
}

/// The path sysfs gave is the file the loop device reads (same device and inode).
fn check_backing(copy: &Copy, src: &File) -> Result<(), ProviderError> {
    let sys_link = format!("/sys/dev/block/{}:{}", copy.major, copy.minor);
    let dev = std::fs::read_link(&sys_link)
        .ok()
        .and_then(|l| l.file_name().map(|n| Path::new("/dev").join(n)))
        .ok_or_else(|| {
            ProviderError::Other(format!(
                "{}:{} ({}) is no longer a block device",
                copy.major,
                copy.minor,
                copy.device.display()
            ))
        })?;
    let status = sys::loop_status(&dev)
        .map_err(|e| ProviderError::io(format!("reading the status of {}", dev.display()), e))?;
    let meta = src.metadata().map_err(|e| {
        ProviderError::io(
            format!("reading the status of {}'s backing file", dev.display()),
            e,
        )
    })?;
    if (status.backing_dev, status.backing_ino) != (meta.dev(), meta.ino()) {
        return Err(ProviderError::Other(format!(
            "{} does not read the file its sysfs entry names (another mount namespace?)",
            dev.display()
        )));
    }
    Ok(())
}

/// Phase timings of one freeze, for the debug log and the bench.
#[derive(Debug, Default)]
struct Window {
    freeze: Duration,
    copy: Duration,
    thaw: Duration,
    total: Duration,
}

/// Freezes and copies every filesystem, thaws all; on error thaws what it froze and removes
/// what it made.
fn freeze_and_copy(copies: Vec<Copy>, ctx: &SessionContext) -> Result<Vec<Copy>, ProviderError> {
    let mut pending = match prepare(copies) {
        Ok(p) => p,
        Err((made, e)) => {
            discard(&made);
            return Err(e);
        }
    };
    let order = match order_of(&pending) {
        Ok(o) => o,
        Err(e) => {
            discard(&pending);
            return Err(ProviderError::Other(e));
        }
    };
    let window = frozen_window(&pending, &order, &ctx.guard);
    window.log();
    let mut failure = window.failure;
    record_copy_devices(&mut pending, window.outputs, &mut failure);
    let timeout = ctx.guard.timeout();
    if failure.is_none() && !timeout.is_zero() && window.held >= timeout {
        failure = Some(ProviderError::Other(format!(
            "the filesystems stayed frozen {:.1} s, past --freeze-timeout {:.1} s: the watchdog \
             may have thawed them mid-copy, so the copy is not a point in time",
            window.held.as_secs_f64(),
            timeout.as_secs_f64()
        )));
    }
    if failure.is_none() && !window.thaw_errors.is_empty() {
        failure = Some(ProviderError::Other(window.thaw_errors.join("; ")));
    }
    match failure {
        None => Ok(pending.into_iter().map(|p| p.copy).collect()),
        Some(e) => {
            discard(&pending);
            Err(e)
        }
    }
}

/// The order to freeze in: a filesystem holding another's backing file after it.
fn order_of(pending: &[Pending]) -> Result<Vec<usize>, String> {
    let items: Vec<(u64, Option<u64>)> = pending
        .iter()
        .map(|p| {
            let dev = rustix::fs::makedev(p.copy.major, p.copy.minor);
            let backing_dev = p
                .files
                .as_ref()
                .and_then(|(src, _)| src.metadata().ok())
                .map(|m| m.dev());
            (dev, backing_dev)
        })
        .collect();
    freeze_order(&items)
}

/// What happened in the frozen window.
#[derive(Debug)]
struct WindowOutcome {
    /// Indices into `pending` that were frozen, in order.
    frozen: Vec<usize>,
    /// Per copy attempted: the command's output (empty for a clone) or the error.
    outputs: Vec<(usize, Result<String, ProviderError>)>,
    /// A FIFREEZE that failed.
    failure: Option<ProviderError>,
    thaw_errors: Vec<String>,
    /// First FIFREEZE to last FITHAW.
    held: Duration,
    timings: Window,
}

/// The frozen window: nothing but the ioctls (or the command) and the watchdog messages. Each
/// filesystem is frozen and copied in `order`, stopping at the first failure; every one
/// frozen is thawed, whatever happened (no early return, no panic path in between).
fn frozen_window(pending: &[Pending], order: &[usize], guard: &FreezeGuard) -> WindowOutcome {
    let mut out = WindowOutcome {
        frozen: Vec::new(),
        outputs: Vec::new(),
        failure: None,
        thaw_errors: Vec::new(),
        held: Duration::ZERO,
        timings: Window::default(),
    };
    let start = Instant::now();
    for &i in order {
        let p = &pending[i];
        guard.freezing(&p.copy.mount_point);
        let t = Instant::now();
        if let Err(e) = sys::freeze_filesystem(&p.copy.mount_point) {
            guard.thawed(&p.copy.mount_point);
            out.failure = Some(ProviderError::io(
                format!("freezing {} (FIFREEZE)", p.copy.mount_point.display()),
                e,
            ));
            break;
        }
        out.timings.freeze += t.elapsed();
        out.frozen.push(i);
        let t = Instant::now();
        let r = copy_one(p);
        out.timings.copy += t.elapsed();
        let failed = r.is_err();
        out.outputs.push((i, r));
        if failed {
            break;
        }
    }
    out.held = start.elapsed();
    let t = Instant::now();
    out.thaw_errors = thaw_all(pending, &out.frozen, guard);
    out.timings.thaw = t.elapsed();
    out.timings.total = start.elapsed();
    out
}

/// Copies one frozen filesystem: FICLONE of its backing file, or the configured command.
fn copy_one(p: &Pending) -> Result<String, ProviderError> {
    match (&p.files, &p.copy.method) {
        (Some((src, dest)), Method::Clone { backing, clone, .. }) => sys::clone_file(src, dest)
            .map(|()| String::new())
            .map_err(|e| {
                ProviderError::io(
                    format!(
                        "cloning {} to {} (FICLONE)",
                        backing.display(),
                        clone.display()
                    ),
                    e,
                )
            }),
        (_, Method::Command { command, name, .. }) => {
            run_command_create(command, &p.copy.device, name)
        }
        // `prepare` opens every clone's files; an error, not a panic, inside the window.
        (None, Method::Clone { clone, .. }) => Err(ProviderError::Other(format!(
            "{}: its files were not opened before the window",
            clone.display()
        ))),
    }
}

/// Thaws what was frozen, last first; returns what could not be thawed (the watchdog still
/// has those and thaws them at their deadline).
fn thaw_all(pending: &[Pending], frozen: &[usize], guard: &FreezeGuard) -> Vec<String> {
    let mut errors = Vec::new();
    for &i in frozen.iter().rev() {
        let mp = &pending[i].copy.mount_point;
        if let Err(e) = sys::thaw_filesystem(mp) {
            errors.push(format!("thawing {} (FITHAW): {e}", mp.display()));
            continue;
        }
        guard.thawed(mp);
    }
    errors
}

impl WindowOutcome {
    /// Outside the window: the timings and what could not be thawed.
    fn log(&self) {
        let w = &self.timings;
        log::debug!(
            "freeze: {} filesystem(s) frozen {:.3} ms (FIFREEZE {:.3} ms, copy {:.3} ms, FITHAW {:.3} ms)",
            self.frozen.len(),
            w.total.as_secs_f64() * 1e3,
            w.freeze.as_secs_f64() * 1e3,
            w.copy.as_secs_f64() * 1e3,
            w.thaw.as_secs_f64() * 1e3
        );
        for e in &self.thaw_errors {
            log::error!("freeze: {e}");
        }
    }
}

/// The copy device each command printed, recorded in its copy; the first failure is kept.
fn record_copy_devices(
    pending: &mut [Pending],
    outputs: Vec<(usize, Result<String, ProviderError>)>,
    failure: &mut Option<ProviderError>,
) {
    for (i, r) in outputs {
        let out = match r {
            Ok(out) => out,
            Err(e) => {
                failure.get_or_insert(e);
                continue;
            }
        };
        let device = pending[i].copy.device.clone();
        if let Method::Command { copy_device, .. } = &mut pending[i].copy.method {
            match parse_copy_device(&out) {
                Ok(dev) => *copy_device = Some(dev),
                Err(e) => {
                    failure.get_or_insert(ProviderError::Other(format!(
                        "freeze command for {}: {e}",
                        device.display()
                    )));
                }
            }
        }
    }
}

/// Undoes what a failed create made: the clone files it created, the command copies whose
/// device is known.
fn discard(pending: &[Pending]) {
    for p in pending {
        match &p.copy.method {
            Method::Clone { clone, .. } if p.files.is_some() => {
                if let Err(e) = std::fs::remove_file(clone) {
                    log::warn!(
                        "freeze: removing {} after a failed create: {e}",
                        clone.display()
                    );
                }
            }
            Method::Command {
                command,
                name,
                copy_device: Some(dev),
            } => {
                if let Err(e) = run_command_remove(command, &p.copy.device, name, Some(dev)) {
                    log::warn!("freeze: after a failed create: {e}");
                }
            }
            _ => {}
        }
    }
}

fn run_command_create(command: &Path, device: &Path, name: &str) -> Result<String, ProviderError> {
    let out = exec::run(Command::new(command).arg("create").arg(device).arg(name))?;
    Ok(out.stdout)
}

/// The last non-empty line of `create`'s stdout: an absolute path to a block device.
fn parse_copy_device(stdout: &str) -> Result<PathBuf, String> {
    let line = stdout
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .ok_or("`create` printed no device")?;
    let p = PathBuf::from(line);
    if !p.is_absolute() {
        return Err(format!(
            "`create` printed {line:?}, not an absolute device path"
        ));
    }
    let meta = std::fs::metadata(&p).map_err(|e| format!("`create` printed {line:?}: {e}"))?;
    if !meta.file_type().is_block_device() {
        return Err(format!(
            "`create` printed {line:?}, which is not a block device"
        ));
    }
    Ok(p)
}

fn run_command_remove(
    command: &Path,
    device: &Path,
    name: &str,
    copy_device: Option<&Path>,
) -> Result<(), ProviderError> {
    // From the journal, perhaps long after `create`: checked again before it runs as root.
    trust_command(command).map_err(ProviderError::Other)?;
    exec::run(
        Command::new(command)
            .arg("remove")
            .arg(device)
            .arg(name)
            .arg(copy_device.unwrap_or(Path::new(""))),
    )?;
    Ok(())
}

/// Mount options of a read-only copy.
fn mount_options(fstype: &str) -> &'static str {
    match fstype {
        // The origin, with the same UUID, is mounted; a frozen XFS has its log quiesced.
        "xfs" => "nouuid,norecovery",
        // Never replay a journal on a read-only device.
        _ => "noload",
    }
}

/// Mounts the copy at its staging directory, unless it already is.
fn stage(copy: &Copy) -> Result<(), ProviderError> {
    let table = MountTable::read().map_err(|e| ProviderError::Other(e.to_string()))?;
    if table.mounted_at(&copy.staging).is_some() {
        return Ok(());
    }
    match std::fs::DirBuilder::new().mode(0o700).create(&copy.staging) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(ProviderError::io(
                format!("creating {}", copy.staging.display()),
                e,
            ))
        }
    }
    let r = match &copy.method {
        Method::Clone {
            clone,
            offset,
            sizelimit,
            ..
        } => sys::attach_read_only(clone, *offset, *sizelimit)
            .map_err(|e| {
                ProviderError::io(format!("attaching {} to a loop device", clone.display()), e)
            })
            .and_then(|attached| {
                // `attached` keeps the autoclear device alive until the mount holds it.
                mount_copy(copy, &attached.device)
            }),
        Method::Command {
            copy_device: Some(dev),
            ..
        } => mount_copy(copy, dev),
        Method::Command { .. } => Err(ProviderError::Other(format!(
            "the copy of {} has no device",
            copy.mount_point.display()
        ))),
    };
    if r.is_err() {
        let _ = std::fs::remove_dir(&copy.staging);
    }
    r
}

fn mount_copy(copy: &Copy, device: &Path) -> Result<(), ProviderError> {
    sys::mount_readonly(
        device,
        &copy.staging,
        &copy.fstype,
        mount_options(&copy.fstype),
    )
    .map_err(|e| {
        ProviderError::io(
            format!(
                "mounting the copy of {} ({} {}) read-only at {}",
                copy.mount_point.display(),
                copy.fstype,
                device.display(),
                copy.staging.display()
            ),
            e,
        )
    })
}

/// Unmounts the staging mount when it is ours, and removes its directory.
fn unstage(copy: &Copy, object: &str) -> Result<(), ProviderError> {
    // The staging directory is `<runtime>/<session>/freeze-…`: never act on anything else.
    let session_dir = copy
        .staging
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str());
    let named = copy
        .staging
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("freeze-"));
    if !named || !session_dir.is_some_and(|s| object.starts_with(s) && !s.is_empty()) {
        return Err(ProviderError::Other(format!(
            "{} is not a staging directory of {object}; left alone",
            copy.staging.display()
        )));
    }
    let table = MountTable::read().map_err(|e| ProviderError::Other(e.to_string()))?;
    if let Some(m) = table.mounted_at(&copy.staging) {
        let ours = match &copy.method {
            Method::Clone { clone, .. } => Path::new(&m.source)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| loop_reads(n, clone)),
            Method::Command { copy_device, .. } => {
                copy_device.as_deref() == Some(Path::new(&m.source))
            }
        };
        if !ours {
            return Err(ProviderError::Other(format!(
                "{} is mounted from {}, not from this session's copy; left alone",
                copy.staging.display(),
                m.source
            )));
        }
        sys::unmount_patiently(&copy.staging)?;
    }
    match std::fs::remove_dir(&copy.staging) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ProviderError::io(
            format!("removing {}", copy.staging.display()),
            e,
        )),
    }
}

/// Does loop device `name` (`loopN`) read exactly `file`?
fn loop_reads(name: &str, file: &Path) -> bool {
    let Ok(mut raw) = std::fs::read(format!("/sys/block/{name}/loop/backing_file")) else {
        return false;
    };
    while raw.last().is_some_and(|b| b.is_ascii_whitespace()) {
        raw.pop();
    }
    let want = file.as_os_str().as_encoded_bytes();
    raw == want || raw.strip_suffix(b" (deleted)") == Some(want)
}

/// Loop devices (`loopN`) reading exactly `file`.
fn loops_reading(file: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("loop") && loop_reads(n, file))
        .collect()
}

/// Detaches the loop devices reading `clone`, waits for them to go, deletes the file.
fn remove_clone(clone: &Path, object: &str) -> Result<(), ProviderError> {
    if !is_our_clone(clone, object) {
        return Err(ProviderError::Other(format!(
            "{} is not a clone named after {object}; left alone",
            clone.display()
        )));
    }
    for name in loops_reading(clone) {
        let dev = Path::new("/dev").join(&name);
        sys::detach_loop(&dev)
            .map_err(|e| ProviderError::io(format!("detaching {}", dev.display()), e))?;
    }
    // Detaching completes when the last opener lets go, possibly a moment later.
    let t = Instant::now();
    loop {
        let left = loops_reading(clone);
        if left.is_empty() {
            break;
        }
        if t.elapsed() > Duration::from_secs(5) {
            // Keep the file: a retry finds the device by it.
            return Err(ProviderError::Other(format!(
                "{} still reads {} (in use?)",
                left.join(", "),
                clone.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    match std::fs::remove_file(clone) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ProviderError::io(
            format!("deleting {}", clone.display()),
            e,
        )),
    }
}

#[cfg(test)]
#[path = "freeze_proptests.rs"]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(line: &str) -> Mount {
        MountTable::parse(line).unwrap().mounts.remove(0)
    }

    fn looped(backing: &str) -> Option<Result<LoopBacking, String>> {
        Some(Ok(LoopBacking {
            name: "loop7".into(),
            backing: backing.into(),
            offset: 0,
            sizelimit: 0,
        }))
    }

    const XFS: &str = "50 27 7:7 / /srv rw,relatime - xfs /dev/loop7 rw,attr2,inode64";
    const SDB: &str = "51 27 8:17 / /data rw - ext4 /dev/sdb1 rw";

    fn no_reflink(l: &LoopBacking) -> Result<(), String> {
        Err(format!(
            "backing file {} of {} on ext4: no reflink",
            l.backing.display(),
            l.name
        ))
    }

    #[test]
    fn declines_what_it_cannot_freeze() {
        let p = FreezeProvider::default();
        let decline = |line: &str| match p.probe(&Filesystem { mount: mount(line) }) {
            Probe::Decline(r) => r,
            a => panic!("accepted {line}: {a:?}"),
        };
        assert!(
            decline("1 0 0:39 / /b rw - btrfs /dev/sda rw,subvolid=5,subvol=/")
                .contains("btrfs is not a filesystem this provider freezes")
        );
        assert!(decline("2 0 0:22 / /t rw - tmpfs tmpfs rw").contains("tmpfs"));
        assert!(decline("3 0 8:3 / /e2 rw - ext2 /dev/sda3 rw").contains("FIFREEZE"));
        assert!(decline("4 0 7:7 / /ro ro - xfs /dev/loop7 ro,attr2").contains("read-only"));
        // No such device on any machine: not a loop device, no command.
        let r = decline("5 0 4095:4095 / /x rw - xfs /dev/nonexistent rw");
        assert!(
            r.contains("not a loop device and no --freeze-command configured"),
            "{r}"
        );
    }

    #[test]
    fn a_missing_command_is_named_in_the_reason() {
        let p = FreezeProvider::new(Some("/nonexistent/freeze-cmd".into()));
        match p.probe(&Filesystem {
            mount: mount("5 0 4095:4095 / /x rw - xfs /dev/nonexistent rw"),
        }) {
            Probe::Decline(r) => assert!(r.contains("/nonexistent/freeze-cmd"), "{r}"),
            a => panic!("accepted: {a:?}"),
        }
    }

    #[test]
    fn a_command_failing_the_trust_rule_declines_with_the_reason() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cmd = dir.path().canonicalize().unwrap().join("freeze-cmd");
        std::fs::write(&cmd, "#!/bin/sh\nexit 1\n").unwrap();
        std::fs::set_permissions(&cmd, std::fs::Permissions::from_mode(0o777)).unwrap();
        let p = FreezeProvider::new(Some(cmd.clone()));
        let sdb = Filesystem {
            mount: mount("5 0 4095:4095 / /x rw - xfs /dev/nonexistent rw"),
        };
        match p.probe(&sdb) {
            Probe::Decline(r) => assert!(
                r.contains(&format!(
                    "--freeze-command {}: not trusted: {} is writable by group and others",
                    cmd.display(),
                    cmd.display()
                )),
                "{r}"
            ),
            a => panic!("accepted: {a:?}"),
        }
        assert_eq!(
            check_command(&cmd).unwrap_err(),
            trust_command(&cmd).unwrap_err()
        );
        // The journaled command is checked again before `remove` runs it.
        let e = run_command_remove(&cmd, Path::new("/dev/x"), "snapshot-0-0", None).unwrap_err();
        assert!(e.to_string().contains("not trusted"), "{e}");
        // Positive control.
        std::fs::set_permissions(&cmd, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check_command(&cmd), Ok(()));
    }

    #[test]
    fn chooses_clone_then_command() {
        let m = mount(XFS);
        let ok = |_: &LoopBacking| Ok(());
        let dev = || Ok(PathBuf::from("/dev/loop7"));
        assert_eq!(
            choose(&m, looped("/b/x.img"), ok, dev(), None).unwrap(),
            Plan::Clone {
                backing: "/b/x.img".into(),
                offset: 0,
                sizelimit: 0
            }
        );
        // The built-in path wins over a configured command.
        assert!(matches!(
            choose(
                &m,
                looped("/b/x.img"),
                ok,
                dev(),
                Some(Ok(Path::new("/cmd")))
            )
            .unwrap(),
            Plan::Clone { .. }
        ));
        let r = choose(&m, looped("/var/tmp/x.img"), no_reflink, dev(), None).unwrap_err();
        assert_eq!(
            r,
            "backing file /var/tmp/x.img of loop7 on ext4: no reflink and no --freeze-command configured"
        );
        assert_eq!(
            choose(
                &m,
                looped("/var/tmp/x.img"),
                no_reflink,
                dev(),
                Some(Ok(Path::new("/cmd")))
            )
            .unwrap(),
            Plan::Command {
                command: "/cmd".into(),
                device: "/dev/loop7".into()
            }
        );
        let sdb = mount(SDB);
        let r = choose(&sdb, None, ok, Ok("/dev/sdb1".into()), None).unwrap_err();
        assert_eq!(
            r,
            "/dev/sdb1 (8:17) is not a loop device and no --freeze-command configured"
        );
        assert!(matches!(
            choose(
                &sdb,
                None,
                ok,
                Ok("/dev/sdb1".into()),
                Some(Ok(Path::new("/cmd")))
            ),
            Ok(Plan::Command { .. })
        ));
        let r = choose(
            &sdb,
            None,
            ok,
            Err("mount source \"/dev/root\" is not the block device 8:17".into()),
            Some(Ok(Path::new("/cmd"))),
        )
        .unwrap_err();
        assert!(r.contains("not a loop device, and mount source"), "{r}");
        let r = choose(
            &m,
            Some(Err("the backing file of loop7 was deleted".into())),
            ok,
            dev(),
            None,
        )
        .unwrap_err();
        assert!(
            r.starts_with("the backing file of loop7 was deleted"),
            "{r}"
        );
    }

    #[test]
    fn every_mount_is_one_unit() {
        // Whatever the mount, an accepted probe says "freeze": one unit, one point in time.
        assert_eq!(UNIT, "freeze");
    }

    #[test]
    fn freeze_order_puts_filesystems_before_the_one_holding_their_backing_file() {
        assert_eq!(
            freeze_order(&[(3, None), (1, None), (2, None)]).unwrap(),
            vec![1, 2, 0]
        );
        // 1's backing file is on 2, 2's is on 3: 1, 2, 3 whatever the device numbers say.
        assert_eq!(
            freeze_order(&[(30, None), (10, Some(20)), (20, Some(30))]).unwrap(),
            vec![1, 2, 0]
        );
        assert_eq!(
            freeze_order(&[(10, Some(30)), (30, None), (20, None)]).unwrap(),
            vec![0, 2, 1]
        );
        // Backing files elsewhere (a btrfs outside the set) change nothing.
        assert_eq!(
            freeze_order(&[(2, Some(99)), (1, Some(99))]).unwrap(),
            vec![1, 0]
        );
        assert!(freeze_order(&[(1, Some(2)), (2, Some(1))]).is_err());
    }

    #[test]
    fn clone_names_carry_the_session_id() {
        let c = clone_path(Path::new("/b/images/x.img"), "snapshot-0a1b2c3d-0", 1);
        assert_eq!(c, Path::new("/b/images/.snapshot-0a1b2c3d-0-1.img"));
        assert!(is_our_clone(&c, "snapshot-0a1b2c3d-0"));
        assert!(!is_our_clone(&c, "snapshot-0a1b2c3d-1"));
        assert!(!is_our_clone(
            Path::new("/b/images/x.img"),
            "snapshot-0a1b2c3d-0"
        ));
        assert!(!is_our_clone(
            Path::new("/b/.snapshot-0a1b2c3d-0-.img"),
            "snapshot-0a1b2c3d-0"
        ));
        assert!(!is_our_clone(Path::new("/b/.x-0-1.img"), "x-0"));
    }

    #[test]
    fn copy_device_is_the_last_line_and_a_block_device() {
        assert!(parse_copy_device("").is_err());
        assert!(parse_copy_device("loop0\n")
            .unwrap_err()
            .contains("absolute"));
        assert!(parse_copy_device("/etc/hostname\n")
            .unwrap_err()
            .contains("not a block device"));
        assert!(parse_copy_device("/nonexistent/dev\n").is_err());
        if Path::new("/dev/loop-control").exists() {
            // Any block device will do; loop0 exists wherever loop devices do.
            if Path::new("/dev/loop0").exists() {
                assert_eq!(
                    parse_copy_device("making a copy…\n/dev/loop0\n\n").unwrap(),
                    Path::new("/dev/loop0")
                );
            }
        }
    }

    #[test]
    fn created_data_round_trips() {
        let d = FreezeData {
            copies: vec![
                Copy {
                    major: 7,
                    minor: 7,
                    device: "/dev/loop7".into(),
                    fstype: "xfs".into(),
                    mount_point: "/srv".into(),
                    staging: "/run/snapshot/snapshot-0a1b2c3d/freeze-0-0".into(),
                    method: Method::Clone {
                        backing: "/b/x.img".into(),
                        clone: "/b/.snapshot-0a1b2c3d-0-0.img".into(),
                        offset: 0,
                        sizelimit: 0,
                    },
                },
                Copy {
                    major: 8,
                    minor: 17,
                    device: "/dev/sdb1".into(),
                    fstype: "ext4".into(),
                    mount_point: "/data".into(),
                    staging: "/run/snapshot/snapshot-0a1b2c3d/freeze-0-1".into(),
                    method: Method::Command {
                        command: "/usr/local/sbin/san-snap".into(),
                        name: "snapshot-0a1b2c3d-0-1".into(),
                        copy_device: Some("/dev/sdz".into()),
                    },
                },
            ],
        };
        let c = Created {
            provider: NAME.into(),
            unit: UNIT.into(),
            name: "snapshot-0a1b2c3d-0".into(),
            consistent: true,
            data: serde_json::to_value(&d).unwrap(),
        };
        let back: Created = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(FreezeData::from_created(&back).unwrap(), d);
        // The journalled intent (no copy device yet) reads too.
        let mut v = serde_json::to_value(&d).unwrap();
        v["copies"][1]
            .as_object_mut()
            .unwrap()
            .remove("copy_device");
        let intent: FreezeData = serde_json::from_value(v).unwrap();
        assert!(matches!(
            &intent.copies[1].method,
            Method::Command {
                copy_device: None,
                ..
            }
        ));
    }

    #[test]
    fn remove_refuses_names_without_the_session_id() {
        let copy = Copy {
            major: 7,
            minor: 7,
            device: "/dev/loop7".into(),
            fstype: "xfs".into(),
            mount_point: "/srv".into(),
            staging: "/run/snapshot/other/freeze-0-0".into(),
            method: Method::Clone {
                backing: "/b/x.img".into(),
                clone: "/b/x.img".into(),
                offset: 0,
                sizelimit: 0,
            },
        };
        assert!(unstage(&copy, "snapshot-0a1b2c3d-0")
            .unwrap_err()
            .to_string()
            .contains("left alone"));
        assert!(remove_clone(Path::new("/b/x.img"), "snapshot-0a1b2c3d-0")
            .unwrap_err()
            .to_string()
            .contains("left alone"));
    }
}
