//! What a certification run is made of: which provider takes which filesystem on this machine,
//! and the fixtures of one provider × filesystem — two filesystems of that kind (on loop
//! devices, two LVs of one VG, or two datasets of one ZFS pool: cross-filesystem
//! consistency), the writer hook that pauses the cooperative workload, and the session's
//! directories. Everything lives under one `snaptest-certify-*` scratch directory and
//! `snaptest-*` backing files, VGs and pools, and is removed by `Drop` on every path.

use crate::workloads::{Roots, PAUSE_ACK, PAUSE_REQUEST};
use anyhow::{bail, Context, Result};
use snapshot_fixtures::lvm::{LvFs, ThinPool, Vg};
use snapshot_fixtures::zfs::{zfs_tool, Dataset, Mountpoint, Pool};
pub use snapshot_fixtures::FsKind;
use snapshot_fixtures::{LoopFs, Scratch};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What the fixture's two filesystems are: made by mkfs (on loop devices or LVs), or two
/// datasets of one ZFS pool. Equal to the [`FsKind`] it wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Fs(FsKind),
    Zfs,
}

impl Kind {
    pub const EXT4: Kind = Kind::Fs(FsKind::Ext4);
    pub const XFS: Kind = Kind::Fs(FsKind::Xfs);
    pub const BTRFS: Kind = Kind::Fs(FsKind::Btrfs);
    pub const ALL: [Kind; 4] = [Kind::EXT4, Kind::XFS, Kind::BTRFS, Kind::Zfs];

    pub fn name(&self) -> &'static str {
        match self {
            Kind::Fs(k) => k.name(),
            Kind::Zfs => "zfs",
        }
    }
}

impl PartialEq<FsKind> for Kind {
    fn eq(&self, other: &FsKind) -> bool {
        *self == Kind::Fs(*other)
    }
}

/// A provider the harness can certify here, and the filesystems it takes on this machine
/// (a provider is selected by building fixtures its probe accepts and no earlier one does).
#[derive(Debug, Clone, Copy)]
pub struct ProviderSpec {
    pub name: &'static str,
    pub takes: &'static [Kind],
    /// Where the loop devices' backing files live.
    pub backing: Backing,
    /// Needs the maintainer's `filesystems.d` scripts (`--scripts-dir`).
    pub needs_scripts: bool,
    /// The shipped example script certified when no `--scripts-dir` is given: its file
    /// name and text (`examples/filesystems.d/`), installed in a trusted directory of the
    /// run's scratch directory.
    pub example: Option<(&'static str, &'static str)>,
    /// The provider that must take the fixtures: the session gets `--providers` with it
    /// alone (bind stays the fallback, which the manifest would show), so that no other
    /// provider can take them first.
    pub provider: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// tmpfs (or `/var/tmp`): no reflink, so the freeze provider declines.
    Plain,
    /// Inside a btrfs filesystem made for the run: reflink-capable, so the freeze provider
    /// can clone the backing files.
    Reflink,
    /// Two classic LVs of one VG on loop files (device-mapper: the VM tier).
    LvmClassic,
    /// Two thin LVs of one thin pool (device-mapper: the VM tier).
    LvmThin,
    /// Two datasets of one ZFS pool on a sparse file in `/var/tmp` (ZFS: the VM tier).
    ZfsPool,
}

/// `examples/filesystems.d/50-lvm`, embedded: the installed tool (and the guest of `cargo
/// xtask vm-test`) has the binary, not the source tree.
pub const EXAMPLE_LVM: (&str, &str) = (
    "50-lvm",
    include_str!("../../../examples/filesystems.d/50-lvm"),
);

/// `examples/filesystems.d/60-zfs`, embedded.
pub const EXAMPLE_ZFS: (&str, &str) = (
    "60-zfs",
    include_str!("../../../examples/filesystems.d/60-zfs"),
);

/// Every provider the harness can certify, in report order: `--provider all` tries each on
/// the filesystems it takes, and skips (saying why) what this machine cannot set up
/// ([`crate::detect`]): LVM needs device-mapper and ZFS its module, as on a distribution
/// kernel or in the guest of `cargo xtask vm-test`.
pub const PROVIDERS: &[ProviderSpec] = &[
    ProviderSpec {
        name: "btrfs",
        takes: &[Kind::BTRFS],
        backing: Backing::Plain,
        needs_scripts: false,
        example: None,
        provider: "btrfs",
    },
    ProviderSpec {
        name: "freeze",
        takes: &[Kind::EXT4, Kind::XFS],
        backing: Backing::Reflink,
        needs_scripts: false,
        example: None,
        provider: "freeze",
    },
    ProviderSpec {
        name: "lvm",
        takes: &[Kind::EXT4, Kind::XFS],
        backing: Backing::LvmClassic,
        needs_scripts: false,
        example: None,
        provider: "lvm",
    },
    ProviderSpec {
        name: "lvm-thin",
        takes: &[Kind::EXT4, Kind::XFS],
        backing: Backing::LvmThin,
        needs_scripts: false,
        example: None,
        provider: "lvm-thin",
    },
    // One pool, two datasets: the provider snapshots both in one atomic `zfs snapshot`.
    ProviderSpec {
        name: "zfs",
        takes: &[Kind::Zfs],
        backing: Backing::ZfsPool,
        needs_scripts: false,
        example: None,
        provider: "zfs",
    },
    // The maintainer's scripts (`--scripts-dir`) over ext4/XFS on plain loop devices (which
    // no built-in provider but bind takes).
    ProviderSpec {
        name: "script",
        takes: &[Kind::EXT4, Kind::XFS],
        backing: Backing::Plain,
        needs_scripts: true,
        example: None,
        provider: "script",
    },
    // The maintainer's scripts (`--scripts-dir`; without it, the shipped example for the
    // fixture) over the LVM and ZFS fixtures: the script provider alone may take them
    // (`--providers script`).
    ProviderSpec {
        name: "script-lvm",
        takes: &[Kind::EXT4, Kind::XFS],
        backing: Backing::LvmClassic,
        needs_scripts: true,
        example: Some(EXAMPLE_LVM),
        provider: "script",
    },
    ProviderSpec {
        name: "script-zfs",
        takes: &[Kind::Zfs],
        backing: Backing::ZfsPool,
        needs_scripts: true,
        example: Some(EXAMPLE_ZFS),
        provider: "script",
    },
    // The negative control: a live read-only bind, declared not consistent.
    ProviderSpec {
        name: "bind",
        takes: &[Kind::EXT4, Kind::XFS],
        backing: Backing::Plain,
        needs_scripts: false,
        example: None,
        provider: "bind",
    },
];

pub fn parse_fs(s: &str) -> Result<Vec<Kind>> {
    match s {
        "all" => Ok(Kind::ALL.to_vec()),
        _ => Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .map(|k| vec![k])
            .with_context(|| format!("--fs {s}: expected ext4, xfs, btrfs, zfs or all")),
    }
}

/// Provider × filesystem pairs selected by `--provider` and `--fs`, in report order; whether
/// this machine can run each is [`crate::detect`]'s to say. `all` selects every provider; a
/// provider named alone must take one of the filesystems asked for.
pub fn matrix(
    provider: &str,
    fs: &[Kind],
    scripts: Option<&Path>,
) -> Result<Vec<(ProviderSpec, Kind)>> {
    let specs: Vec<ProviderSpec> = match provider {
        "all" => PROVIDERS.to_vec(),
        name => vec![*PROVIDERS.iter().find(|p| p.name == name).with_context(|| {
            format!(
                "--provider {name}: expected {} or all",
                PROVIDERS
                    .iter()
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?],
    };
    if provider != "all" {
        if let Some(p) = specs
            .iter()
            .find(|p| p.needs_scripts && p.example.is_none() && scripts.is_none())
        {
            bail!("--provider {}: needs --scripts-dir DIR", p.name);
        }
    }
    let out: Vec<_> = specs
        .iter()
        .flat_map(|p| {
            p.takes
                .iter()
                .filter(|k| fs.contains(k))
                .map(move |k| (*p, *k))
        })
        .collect();
    if out.is_empty() {
        bail!(
            "no provider in --provider {provider} takes {} ({})",
            fs.iter().map(|k| k.name()).collect::<Vec<_>>().join(", "),
            specs
                .iter()
                .map(|p| format!(
                    "{} takes {}",
                    p.name,
                    p.takes
                        .iter()
                        .map(|k| k.name())
                        .collect::<Vec<_>>()
                        .join("/")
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    Ok(out)
}

/// Size of each fixture filesystem (sparse; for ZFS, of the pool holding both datasets): room
/// for the workloads and, on btrfs and ZFS, for the copy-on-write of snapshots taken several
/// times a second — deleted snapshots are freed by the btrfs cleaner (ZFS: an asynchronous
/// destroy) a while later, and at 512 MiB the btrfs writers ran into ENOSPC.
fn size_mb(kind: Kind) -> u64 {
    match kind {
        Kind::Fs(FsKind::Btrfs) | Kind::Zfs => 2048,
        Kind::Fs(k) => k.min_size_mb().max(512),
    }
}

/// Where the backing files go: `/dev/shm` when it is a tmpfs with room to spare, else
/// `/var/tmp`. On tmpfs an fsync through the loop device costs no disk flush, so the writers
/// run many times faster — more interleavings per second for a snapshot (or a live copy) to
/// cut through; what is certified is the filesystem and the provider, not the disk.
fn backing_dir() -> PathBuf {
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    const ROOM: u64 = 4 << 30;
    let shm = Path::new("/dev/shm");
    match rustix::fs::statfs(shm) {
        Ok(st) if st.f_type as u64 == TMPFS_MAGIC && st.f_bavail * st.f_bsize as u64 >= ROOM => {
            shm.to_owned()
        }
        _ => PathBuf::from("/var/tmp"),
    }
}

/// One filesystem of a fixture: on a loop device, on an LV, or a ZFS dataset.
#[derive(Debug)]
pub enum CertFs {
    Loop(LoopFs),
    Lv(LvFs),
    Zfs(Dataset),
}

impl CertFs {
    pub fn mount_point(&self) -> &Path {
        match self {
            CertFs::Loop(f) => &f.mount_point,
            CertFs::Lv(f) => &f.mount_point,
            CertFs::Zfs(d) => &d.mount_point,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            CertFs::Loop(f) => Kind::Fs(f.kind),
            CertFs::Lv(f) => Kind::Fs(f.kind),
            CertFs::Zfs(_) => Kind::Zfs,
        }
    }

    /// The loop device's backing file (where the freeze provider puts its clones).
    pub fn backing(&self) -> Option<&Path> {
        match self {
            CertFs::Loop(f) => Some(&f.backing),
            CertFs::Lv(_) | CertFs::Zfs(_) => None,
        }
    }

    /// The LV's volume group.
    pub fn vg(&self) -> Option<&str> {
        match self {
            CertFs::Loop(_) | CertFs::Zfs(_) => None,
            CertFs::Lv(f) => Some(&f.vg),
        }
    }

    /// The ZFS dataset.
    pub fn dataset(&self) -> Option<&str> {
        match self {
            CertFs::Loop(_) | CertFs::Lv(_) => None,
            CertFs::Zfs(d) => Some(&d.name),
        }
    }
}

/// The VG (and thin pool) under LVM fixtures, dropped after the LVs: pool, then VG.
#[derive(Debug)]
struct LvmHold {
    _pool: Option<ThinPool>,
    _vg: Vg,
}

/// Two filesystems and the session's directories. Fields drop in order: the filesystems are
/// unmounted (ZFS: destroyed) before what holds them (btrfs host, VG, pool) and before the
/// scratch directory holding their mount points is removed.
#[derive(Debug)]
pub struct Fixture {
    pub fs1: CertFs,
    pub fs2: CertFs,
    /// The btrfs holding the backing files of `fs1` and `fs2` ([`Backing::Reflink`]); held for
    /// its `Drop`, after theirs.
    _host: Option<LoopFs>,
    /// The VG of `fs1` and `fs2` ([`Backing::LvmClassic`], [`Backing::LvmThin`]).
    _lvm: Option<LvmHold>,
    /// The pool of `fs1` and `fs2` ([`Backing::ZfsPool`]).
    _zfs: Option<Pool>,
    /// The control directory of the pause protocol (not on a snapshotted filesystem).
    pub ctl: PathBuf,
    /// `--writers-dir`: the hook pausing the cooperative workload.
    pub hooks: PathBuf,
    /// `--scripts-dir`: the maintainer's scripts, or an empty directory (so that scripts
    /// installed on the machine cannot take the filesystems of another provider's run).
    pub scripts: PathBuf,
    pub target: PathBuf,
    pub runtime: PathBuf,
    /// `--providers`: the provider under test ([`ProviderSpec::provider`]).
    pub provider: &'static str,
    /// `--config`: an empty file, so that the machine's `/etc/snapshot/snapshot.toml` (a
    /// `freeze_command`, say) cannot change which provider takes the fixtures.
    pub config: PathBuf,
    /// Where each cycle's copy of the view goes (emptied after the check).
    pub copy: PathBuf,
    /// Held for its `Drop`, which removes the directory (last).
    _scratch: Scratch,
}

impl Fixture {
    pub fn build(spec: &ProviderSpec, kind: Kind, scripts: Option<&Path>) -> Result<Self> {
        let tag = format!("certify-{}-{}", spec.name, kind.name());
        let scratch = Scratch::new(&tag)?;
        let host = match spec.backing {
            Backing::Plain | Backing::LvmClassic | Backing::LvmThin | Backing::ZfsPool => None,
            Backing::Reflink => Some(LoopFs::new_in(
                &backing_dir(),
                &format!("{tag}-host"),
                FsKind::Btrfs,
                2 * size_mb(kind) + 512,
                &scratch.join("host"),
            )?),
        };
        let backing = host
            .as_ref()
            .map_or_else(backing_dir, |h| h.mount_point.clone());
        let (fs1, fs2, lvm, zfs) = match (spec.backing, kind) {
            (Backing::Plain | Backing::Reflink, Kind::Fs(kind)) => {
                let fs1 = LoopFs::new_in(
                    &backing,
                    &format!("{tag}-1"),
                    kind,
                    size_mb(Kind::Fs(kind)),
                    &scratch.join("fs1"),
                )?;
                let fs2 = LoopFs::new_in(
                    &backing,
                    &format!("{tag}-2"),
                    kind,
                    size_mb(Kind::Fs(kind)),
                    &scratch.join("fs2"),
                )?;
                (CertFs::Loop(fs1), CertFs::Loop(fs2), None, None)
            }
            (Backing::LvmClassic | Backing::LvmThin, Kind::Fs(kind)) => {
                let (fs1, fs2, hold) = lvm_pair(spec.backing, &tag, kind, &scratch)?;
                (CertFs::Lv(fs1), CertFs::Lv(fs2), Some(hold), None)
            }
            (Backing::ZfsPool, Kind::Zfs) => {
                let (fs1, fs2, pool) = zfs_pair(&tag, &scratch)?;
                (CertFs::Zfs(fs1), CertFs::Zfs(fs2), None, Some(pool))
            }
            (backing, kind) => bail!("no {} fixture on {backing:?}", kind.name()),
        };
        let dir = |name: &str| -> Result<PathBuf> {
            let p = scratch.join(name);
            std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
            Ok(p)
        };
        let fx = Fixture {
            ctl: dir("ctl")?,
            hooks: dir("writers.d")?,
            scripts: match (scripts, spec.example) {
                (Some(s), _) => s.to_owned(),
                (None, Some(example)) => install_example(&scratch, example)?,
                (None, None) => dir("filesystems.d")?,
            },
            target: dir("view")?,
            runtime: dir("run")?,
            provider: spec.provider,
            config: scratch.join("snapshot.toml"),
            copy: scratch.join("copy"),
            fs1,
            fs2,
            _host: host,
            _lvm: lvm,
            _zfs: zfs,
            _scratch: scratch,
        };
        write_pause_hook(&fx.hooks.join("50-certify-pause"), &fx.ctl)?;
        std::fs::write(&fx.config, "")
            .with_context(|| format!("writing {}", fx.config.display()))?;
        Ok(fx)
    }

    pub fn roots(&self) -> Roots {
        Roots {
            fs1: self.fs1.mount_point().to_owned(),
            fs2: self.fs2.mount_point().to_owned(),
        }
    }

    pub fn state(&self) -> PathBuf {
        self.runtime.join("state")
    }
}

/// Installs a shipped example script as `filesystems.d/NAME` of the scratch directory, where
/// the trust rule accepts it: the script, its directory and the scratch directory root's and
/// 0755 (the scratch directory's parent is `/tmp`, root's and sticky).
fn install_example(scratch: &Scratch, (name, text): (&str, &str)) -> Result<PathBuf> {
    let chmod = |p: &Path| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", p.display()))
    };
    chmod(scratch.path())?;
    let dir = scratch.join("filesystems.d");
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    chmod(&dir)?;
    let script = dir.join(name);
    std::fs::write(&script, text).with_context(|| format!("writing {}", script.display()))?;
    chmod(&script)?;
    eprintln!(
        "certify: the shipped example examples/filesystems.d/{name}, installed as {}",
        script.display()
    );
    Ok(dir)
}

/// Two LVs of one VG (on a loop file in `/var/tmp`, the guest's scratch disk), classic or
/// thin, with a `kind` filesystem each. Classic: room in the VG for the default snapshot size
/// (10 % of each origin) several times over.
fn lvm_pair(
    backing: Backing,
    tag: &str,
    kind: FsKind,
    scratch: &Scratch,
) -> Result<(LvFs, LvFs, LvmHold)> {
    if !Path::new("/dev/mapper/control").exists() {
        snapshot_fixtures::run("modprobe", &["dm_mod"]).context("loading device-mapper")?;
    }
    let lv_mb = size_mb(Kind::Fs(kind));
    let vg = Vg::on_loop_files(tag, 1, 3 * lv_mb + 512)?;
    let (fs1, fs2, pool) = if backing == Backing::LvmThin {
        let pool = vg.thin_pool("pool", 2 * lv_mb + 256)?;
        let fs1 = pool.thin_lv("lv1", lv_mb, kind, &scratch.join("fs1"));
        // On an error the LVs made so far go before the pool and the VG.
        let fs1 = match fs1 {
            Ok(f) => f,
            Err(e) => {
                drop(pool);
                return Err(e);
            }
        };
        match pool.thin_lv("lv2", lv_mb, kind, &scratch.join("fs2")) {
            Ok(fs2) => (fs1, fs2, Some(pool)),
            Err(e) => {
                drop(fs1);
                drop(pool);
                return Err(e);
            }
        }
    } else {
        let fs1 = vg.classic_lv("lv1", lv_mb, kind, &scratch.join("fs1"))?;
        let fs2 = vg.classic_lv("lv2", lv_mb, kind, &scratch.join("fs2"))?;
        (fs1, fs2, None)
    };
    Ok((
        fs1,
        fs2,
        LvmHold {
            _pool: pool,
            _vg: vg,
        },
    ))
}

/// Two datasets of one pool (on a sparse file in `/var/tmp`, the guest's scratch disk: a
/// whole-disk vdev would wait for udev, which the guest does not run), mounted by ZFS at
/// `fs1` and `fs2` of the scratch directory. The `zfs` module is loaded when it is not yet.
/// On an error, what was made goes in reverse order (datasets, then the pool).
fn zfs_pair(tag: &str, scratch: &Scratch) -> Result<(Dataset, Dataset, Pool)> {
    if !Path::new("/dev/zfs").exists() {
        zfs_tool("modprobe", &["zfs"]).context("loading the zfs module")?;
    }
    let pool = Pool::on_file(tag, size_mb(Kind::Zfs))?;
    let fs1 = pool.dataset("fs1", Mountpoint::At(&scratch.join("fs1")))?;
    let fs2 = pool.dataset("fs2", Mountpoint::At(&scratch.join("fs2")))?;
    Ok((fs1, fs2, pool))
}

/// The writer hook of the cooperative pair: on `freeze`, asks the workload to pause at its
/// consistent point and returns once it has (a session-unique request, so a late answer to an
/// earlier session never counts); on `thaw`, withdraws the request.
fn write_pause_hook(path: &Path, ctl: &Path) -> Result<()> {
    let ctl = ctl.to_str().context("UTF-8 control path")?;
    if ctl.contains('\'') {
        bail!("control path {ctl:?} cannot be quoted");
    }
    let script = format!(
        r#"#!/bin/sh
# Written by snapshot-certify: pauses the cooperative pair workload.
ctl='{ctl}'
case "$1" in
freeze)
    printf '%s\n' "$SNAPSHOT_SESSION" > "$ctl/.{PAUSE_REQUEST}.tmp" &&
        mv "$ctl/.{PAUSE_REQUEST}.tmp" "$ctl/{PAUSE_REQUEST}" || exit 2
    i=0
    while [ "$i" -lt 20000 ]; do
        got=
        [ -f "$ctl/{PAUSE_ACK}" ] && read -r got < "$ctl/{PAUSE_ACK}"
        [ "$got" = "$SNAPSHOT_SESSION" ] && exit 0
        sleep 0.0005
        i=$((i + 1))
    done
    echo "the workload did not pause" >&2
    exit 2
    ;;
thaw)
    rm -f "$ctl/{PAUSE_REQUEST}"
    ;;
esac
exit 0
"#
    );
    std::fs::write(path, script).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_selects_what_each_provider_takes() {
        let all = parse_fs("all").unwrap();
        let names = |m: Vec<(ProviderSpec, Kind)>| -> Vec<(&str, &str)> {
            m.iter().map(|(p, k)| (p.name, k.name())).collect()
        };
        assert_eq!(
            names(matrix("all", &all, None).unwrap()),
            [
                ("btrfs", "btrfs"),
                ("freeze", "ext4"),
                ("freeze", "xfs"),
                ("lvm", "ext4"),
                ("lvm", "xfs"),
                ("lvm-thin", "ext4"),
                ("lvm-thin", "xfs"),
                ("zfs", "zfs"),
                // Selected, and skipped by detect without --scripts-dir.
                ("script", "ext4"),
                ("script", "xfs"),
                ("script-lvm", "ext4"),
                ("script-lvm", "xfs"),
                ("script-zfs", "zfs"),
                ("bind", "ext4"),
                ("bind", "xfs")
            ]
        );
        assert_eq!(
            names(matrix("all", &parse_fs("btrfs").unwrap(), None).unwrap()),
            [("btrfs", "btrfs")]
        );
        let m = matrix("bind", &parse_fs("xfs").unwrap(), None).unwrap();
        assert_eq!(m.len(), 1);
        assert!(matrix("btrfs", &parse_fs("ext4").unwrap(), None).is_err());
        assert!(matrix("script", &all, None).is_err());
        assert_eq!(names(matrix("zfs", &all, None).unwrap()), [("zfs", "zfs")]);
        assert_eq!(matrix("lvm", &all, None).unwrap().len(), 2);
        assert!(matrix("zfs", &parse_fs("ext4").unwrap(), None).is_err());
        assert!(matrix("freeze", &parse_fs("zfs").unwrap(), None).is_err());
        assert!(matrix("nfs", &all, None).is_err());
        // The maintainer's scripts over LVM or ZFS fixtures; without --scripts-dir, the
        // shipped examples.
        let m = matrix("script-lvm", &all, None).unwrap();
        assert_eq!(m.len(), 2);
        assert!(m.iter().all(|(p, _)| p.example == Some(EXAMPLE_LVM)));
        let m = matrix("script-zfs", &all, None).unwrap();
        assert!(m.iter().all(|(p, _)| p.example == Some(EXAMPLE_ZFS)));
        assert!(EXAMPLE_LVM.1.starts_with("#!/bin/sh\n") && EXAMPLE_ZFS.1.contains("zfs snapshot"));
        let m = matrix("script-lvm", &all, Some(Path::new("/x"))).unwrap();
        assert_eq!(m.len(), 2);
        assert!(m.iter().all(|(p, _)| p.provider == "script"));
        let m = matrix("script-zfs", &all, Some(Path::new("/x"))).unwrap();
        let names: Vec<_> = m.iter().map(|(p, k)| (p.provider, k.name())).collect();
        assert_eq!(names, [("script", "zfs")]);
        for p in PROVIDERS {
            assert!(
                ["zfs", "btrfs", "lvm-thin", "lvm", "freeze", "script", "bind"]
                    .contains(&p.provider),
                "{}",
                p.provider
            );
        }
        assert!(parse_fs("ntfs").is_err());
        assert!(Kind::BTRFS == FsKind::Btrfs && Kind::Zfs != FsKind::Btrfs);
    }
}
