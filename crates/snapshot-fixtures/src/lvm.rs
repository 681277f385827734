//! LVM fixtures (device-mapper: a distribution kernel, or the guest of the VM tier): a volume group on loop
//! files or on given block devices, classic LVs and thin pools with thin LVs, each with a
//! filesystem mounted. Every `Drop` logs and never panics, and removes exactly what its value
//! made: the VG is `snaptest-<name>-<pid>-<seq>`, loop backing files are
//! `/var/tmp/snaptest-…img`, and LVs live in that VG only.
//!
//! Declare fixtures in creation order (VG, pool, LVs): Rust drops them in reverse.

use crate::{mounts_under, unmount_patiently, FsKind, MountedFs};
use anyhow::{bail, Context, Result};
use rustix::mount::{mount, MountFlags};
use std::path::{Path, PathBuf};

/// `snaptest-<name>-<pid>-<seq>` (LVM allows `[A-Za-z0-9+_.-]`).
fn unique_name(name: &str) -> String {
    crate::unique_name_keeping(name, |c| c.is_ascii_alphanumeric())
}

/// The tools the fixtures run (and the LVM provider needs).
pub const TOOLS: &[&str] = &[
    "pvcreate",
    "vgcreate",
    "lvcreate",
    "lvremove",
    "vgremove",
    "pvremove",
    "lvs",
    "losetup",
    "mkfs.ext4",
    "mkfs.xfs",
];

/// Runs an LVM (or other) tool with stdin from /dev/null; returns stdout, or an error with
/// stderr. `LVM_SUPPRESS_FD_WARNINGS`: the test harness may hold descriptors LVM would list.
pub fn lvm(tool: &str, args: &[&str]) -> Result<String> {
    crate::run_tool_env(tool, args, &[("LVM_SUPPRESS_FD_WARNINGS", "1")])
}

/// Logs a failed cleanup step; never panics.
fn log_err(what: &str, r: Result<String>) {
    if let Err(e) = r {
        eprintln!("fixtures: {what}: {e:#}");
    }
}

/// One LV as `lvs` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvInfo {
    pub name: String,
    /// Set for snapshots.
    pub origin: String,
    pub attr: String,
}

/// LVs of `vg` (empty when the VG does not exist).
pub fn lvs_in(vg: &str) -> Vec<LvInfo> {
    let Ok(out) = lvm(
        "lvs",
        &[
            "--noheadings",
            "--separator",
            "|",
            "-o",
            "lv_name,origin,lv_attr",
            vg,
        ],
    ) else {
        return Vec::new();
    };
    out.lines()
        .filter_map(|l| {
            let mut f = l.trim().split('|');
            Some(LvInfo {
                name: f.next()?.to_owned(),
                origin: f.next().unwrap_or_default().to_owned(),
                attr: f.next().unwrap_or_default().to_owned(),
            })
        })
        .collect()
}

#[derive(Debug)]
enum PvSource {
    /// A block device the caller gave.
    Device,
    /// A loop device on a backing file this fixture created.
    Loop { backing: PathBuf },
}

#[derive(Debug)]
struct Pv {
    device: PathBuf,
    source: PvSource,
    labelled: bool,
}

/// A volume group of this test. Drop removes the VG (with whatever LVs are still in it),
/// the PV labels, and the loop devices and backing files it made.
#[derive(Debug)]
pub struct Vg {
    name: String,
    pvs: Vec<Pv>,
    created: bool,
}

impl Vg {
    /// A VG on `count` sparse loop files of `size_mb` each in `/var/tmp` (in the guest: the
    /// scratch disk).
    pub fn on_loop_files(name: &str, count: usize, size_mb: u64) -> Result<Self> {
        let mut vg = Vg {
            name: unique_name(name),
            pvs: Vec::new(),
            created: false,
        };
        for i in 0..count {
            let backing = PathBuf::from(format!("/var/tmp/{}-pv{i}.img", vg.name));
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&backing)
                .with_context(|| format!("creating {}", backing.display()))?;
            // Registered before anything can fail, so Drop removes the file.
            vg.pvs.push(Pv {
                device: PathBuf::new(),
                source: PvSource::Loop {
                    backing: backing.clone(),
                },
                labelled: false,
            });
            file.set_len(size_mb << 20)
                .with_context(|| format!("sizing {}", backing.display()))?;
            drop(file);
            let dev = lvm("losetup", &["--find", "--show", &backing.to_string_lossy()])?;
            let dev = dev.trim();
            if !dev.starts_with("/dev/loop") {
                bail!("losetup printed {dev:?}, not a loop device");
            }
            vg.pvs.last_mut().expect("just pushed").device = PathBuf::from(dev);
        }
        vg.build()?;
        Ok(vg)
    }

    /// A VG on the given block devices (wiped: everything on them is lost).
    pub fn on_devices(name: &str, devices: &[PathBuf]) -> Result<Self> {
        let mut vg = Vg {
            name: unique_name(name),
            pvs: devices
                .iter()
                .map(|d| Pv {
                    device: d.clone(),
                    source: PvSource::Device,
                    labelled: false,
                })
                .collect(),
            created: false,
        };
        vg.build()?;
        Ok(vg)
    }

    fn build(&mut self) -> Result<()> {
        for pv in &mut self.pvs {
            let dev = pv.device.to_string_lossy().into_owned();
            lvm("pvcreate", &["-y", "-ff", &dev])
                .with_context(|| format!("{}: pvcreate {dev}", self.name))?;
            pv.labelled = true;
        }
        let devs: Vec<String> = self
            .pvs
            .iter()
            .map(|p| p.device.to_string_lossy().into_owned())
            .collect();
        let mut args = vec![self.name.as_str()];
        args.extend(devs.iter().map(String::as_str));
        lvm("vgcreate", &args).with_context(|| format!("vgcreate {}", self.name))?;
        self.created = true;
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Free bytes in the VG.
    pub fn free_bytes(&self) -> Result<u64> {
        let out = lvm(
            "vgs",
            &[
                "--noheadings",
                "--units",
                "b",
                "--nosuffix",
                "-o",
                "vg_free",
                &self.name,
            ],
        )?;
        out.trim()
            .parse()
            .with_context(|| format!("vgs vg_free of {}: {out:?}", self.name))
    }

    /// A classic LV of `size_mb` with a `kind` filesystem mounted at `mount_point`.
    pub fn classic_lv(
        &self,
        name: &str,
        size_mb: u64,
        kind: FsKind,
        mount_point: &Path,
    ) -> Result<LvFs> {
        let size = format!("{}M", size_mb.max(kind.min_size_mb()));
        LvFs::make(
            &self.name,
            name,
            &["-y", "-L", &size, "-n", name, &self.name],
            kind,
            mount_point,
        )
    }

    /// A thin pool of `size_mb` (data).
    pub fn thin_pool(&self, name: &str, size_mb: u64) -> Result<ThinPool> {
        let mut pool = ThinPool {
            vg: self.name.clone(),
            name: name.to_owned(),
            created: false,
        };
        lvm(
            "lvcreate",
            &[
                "-y",
                "-L",
                &format!("{size_mb}M"),
                "-T",
                &format!("{}/{name}", self.name),
            ],
        )?;
        pool.created = true;
        Ok(pool)
    }

    /// An LV without a filesystem taking `extents` (LVM syntax: `100%FREE`, `50%VG`…), e.g.
    /// to use up the VG's free space.
    pub fn raw_lv(&self, name: &str, extents: &str) -> Result<RawLv> {
        lvm("lvcreate", &["-y", "-l", extents, "-n", name, &self.name])?;
        Ok(RawLv {
            vg: self.name.clone(),
            name: name.to_owned(),
        })
    }

    /// LVs of this VG that are snapshots, or carry the tool's session prefix in their name.
    pub fn snapshot_lvs(&self) -> Vec<LvInfo> {
        lvs_in(&self.name)
            .into_iter()
            .filter(|l| !l.origin.is_empty() || l.name.contains("snapshot-"))
            .collect()
    }
}

impl Drop for Vg {
    fn drop(&mut self) {
        if self.created {
            log_err(
                &format!("vgremove {}", self.name),
                lvm("vgremove", &["-f", "-y", &self.name]),
            );
        }
        for pv in &self.pvs {
            let dev = pv.device.to_string_lossy().into_owned();
            if pv.labelled {
                log_err(
                    &format!("pvremove {dev}"),
                    lvm("pvremove", &["-y", "-ff", &dev]),
                );
            }
            if let PvSource::Loop { backing } = &pv.source {
                if !dev.is_empty() {
                    log_err(&format!("losetup -d {dev}"), lvm("losetup", &["-d", &dev]));
                }
                if let Err(e) = std::fs::remove_file(backing) {
                    eprintln!("fixtures: removing {}: {e}", backing.display());
                }
            }
        }
    }
}

/// A thin pool; Drop removes it (after the thin LVs, which must be dropped first).
#[derive(Debug)]
pub struct ThinPool {
    vg: String,
    name: String,
    created: bool,
}

impl ThinPool {
    /// A thin LV of `virtual_mb` with a `kind` filesystem mounted at `mount_point`.
    pub fn thin_lv(
        &self,
        name: &str,
        virtual_mb: u64,
        kind: FsKind,
        mount_point: &Path,
    ) -> Result<LvFs> {
        let size = format!("{}M", virtual_mb.max(kind.min_size_mb()));
        let pool = format!("{}/{}", self.vg, self.name);
        LvFs::make(
            &self.vg,
            name,
            &["-y", "-V", &size, "-T", &pool, "-n", name],
            kind,
            mount_point,
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ThinPool {
    fn drop(&mut self) {
        if self.created {
            let lv = format!("{}/{}", self.vg, self.name);
            log_err(
                &format!("lvremove {lv}"),
                lvm("lvremove", &["-f", "-y", &lv]),
            );
        }
    }
}

/// An LV without a filesystem; Drop removes it.
#[derive(Debug)]
pub struct RawLv {
    vg: String,
    name: String,
}

impl Drop for RawLv {
    fn drop(&mut self) {
        let lv = format!("{}/{}", self.vg, self.name);
        log_err(
            &format!("lvremove {lv}"),
            lvm("lvremove", &["-f", "-y", &lv]),
        );
    }
}

/// An LV (classic or thin) with a filesystem mounted. Drop unmounts it and removes the LV.
#[derive(Debug)]
pub struct LvFs {
    pub vg: String,
    pub lv: String,
    pub device: PathBuf,
    pub mount_point: PathBuf,
    pub kind: FsKind,
    created: bool,
    mounted: bool,
}

impl LvFs {
    fn make(
        vg: &str,
        lv: &str,
        lvcreate: &[&str],
        kind: FsKind,
        mount_point: &Path,
    ) -> Result<Self> {
        let mut fs = LvFs {
            vg: vg.to_owned(),
            lv: lv.to_owned(),
            device: PathBuf::from(format!("/dev/{vg}/{lv}")),
            mount_point: mount_point.to_owned(),
            kind,
            created: false,
            mounted: false,
        };
        lvm("lvcreate", lvcreate).with_context(|| format!("creating LV {vg}/{lv}"))?;
        fs.created = true;
        let dev = fs.device.to_string_lossy().into_owned();
        let (mkfs, force) = match kind {
            FsKind::Ext4 => ("mkfs.ext4", "-F"),
            FsKind::Xfs => ("mkfs.xfs", "-f"),
            FsKind::Btrfs => ("mkfs.btrfs", "-f"),
        };
        lvm(mkfs, &["-q", force, &dev]).with_context(|| format!("{mkfs} {dev}"))?;
        std::fs::create_dir_all(mount_point)
            .with_context(|| format!("creating {}", mount_point.display()))?;
        mount(
            &fs.device,
            mount_point,
            kind.name(),
            MountFlags::empty(),
            c"",
        )
        .with_context(|| format!("mounting {dev} at {}", mount_point.display()))?;
        fs.mounted = true;
        Ok(fs)
    }

    /// `VG/LV`.
    pub fn path(&self) -> String {
        format!("{}/{}", self.vg, self.lv)
    }

    fn unmount(&self) {
        unmount_patiently(&self.mount_point, "", || {
            mounts_under(&self.mount_point).contains(&self.mount_point)
        });
    }
}

impl Drop for LvFs {
    fn drop(&mut self) {
        if self.mounted {
            self.unmount();
        }
        if self.created {
            let lv = self.path();
            log_err(
                &format!("lvremove {lv}"),
                lvm("lvremove", &["-f", "-y", &lv]),
            );
        }
    }
}

impl MountedFs for LvFs {
    fn mount_point(&self) -> &Path {
        &self.mount_point
    }
    fn fstype(&self) -> &str {
        self.kind.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix_and_suit_lvm() {
        let n = unique_name("root/home x");
        assert!(n.starts_with("snaptest-root_home_x-"), "{n}");
        assert!(n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+_.-".contains(c)));
    }
}
