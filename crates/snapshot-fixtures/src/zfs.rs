//! ZFS fixtures (the ZFS module: a distribution kernel with it, or the guest of the VM tier): a pool on a sparse file vdev in
//! `/var/tmp` (in the guest: the scratch disk; a whole-disk vdev would wait 30 s for udev,
//! which the guest does not run, and fail), and datasets mounted in the ways a system mounts
//! them. Every `Drop` logs and never panics, and removes exactly what its value made: the pool
//! is `snaptest-<name>-<pid>-<seq>` (destroyed with `zpool destroy`, by that name only), its
//! backing file `/var/tmp/<pool>.img`, datasets live in that pool only.
//!
//! Declare fixtures in creation order (pool, parent, child): Rust drops them in reverse.

use crate::{mounts_under, MountedFs};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// `snaptest-<name>-<pid>-<seq>` (pool names allow `[A-Za-z0-9_.:-]`, starting with a letter).
fn unique_name(name: &str) -> String {
    crate::unique_name_keeping(name, |c| c.is_ascii_alphanumeric())
}

/// Runs `zfs`/`zpool`/`mount`… with stdin from /dev/null; stdout, or an error with stderr.
pub fn zfs_tool(tool: &str, args: &[&str]) -> Result<String> {
    crate::run_tool_env(tool, args, &[])
}

fn log_err(what: &str, r: Result<String>) {
    if let Err(e) = r {
        eprintln!("fixtures: {what}: {e:#}");
    }
}

/// A pool of this test on a sparse file. Drop destroys the pool (with whatever is still in
/// it) and removes the file.
#[derive(Debug)]
pub struct Pool {
    name: String,
    backing: PathBuf,
    created: bool,
}

impl Pool {
    /// A pool on a sparse file of `size_mb` (64 at least) in `/var/tmp`; its root dataset is
    /// not mounted (`mountpoint=none`), and it is not written to any cache file.
    pub fn on_file(name: &str, size_mb: u64) -> Result<Self> {
        let name = unique_name(name);
        let backing = PathBuf::from(format!("/var/tmp/{name}.img"));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&backing)
            .with_context(|| format!("creating {}", backing.display()))?;
        // Made before anything can fail, so Drop removes the file.
        let mut pool = Pool {
            name,
            backing,
            created: false,
        };
        file.set_len(size_mb.max(64) << 20)
            .with_context(|| format!("sizing {}", pool.backing.display()))?;
        drop(file);
        zfs_tool(
            "zpool",
            &[
                "create",
                "-f",
                "-o",
                "cachefile=none",
                "-O",
                "mountpoint=none",
                &pool.name,
                &pool.backing.to_string_lossy(),
            ],
        )
        .with_context(|| format!("creating pool {}", pool.name))?;
        pool.created = true;
        Ok(pool)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `POOL/rel`, mounted as `how` says.
    pub fn dataset(&self, rel: &str, how: Mountpoint<'_>) -> Result<Dataset> {
        Dataset::create(&format!("{}/{rel}", self.name), how)
    }

    /// Every snapshot in the pool.
    pub fn snapshots(&self) -> Vec<String> {
        zfs_tool(
            "zfs",
            &[
                "list", "-H", "-t", "snapshot", "-o", "name", "-r", &self.name,
            ],
        )
        .map(|o| o.lines().map(str::to_owned).collect())
        .unwrap_or_default()
    }

    /// Every user hold in the pool: (snapshot, tag).
    pub fn holds(&self) -> Vec<(String, String)> {
        let snaps = self.snapshots();
        if snaps.is_empty() {
            return Vec::new();
        }
        let mut args = vec!["holds", "-H"];
        args.extend(snaps.iter().map(String::as_str));
        zfs_tool("zfs", &args)
            .map(|o| {
                o.lines()
                    .filter_map(|l| {
                        let mut f = l.split('\t');
                        Some((f.next()?.trim().to_owned(), f.next()?.trim().to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Mount points of this pool's snapshots (mountinfo sources `POOL…@…`).
    pub fn snapshot_mounts(&self) -> Vec<PathBuf> {
        crate::read_mountinfo()
            .into_iter()
            .filter(|m| {
                let in_pool = m.source == self.name
                    || m.source.starts_with(&format!("{}/", self.name))
                    || m.source.starts_with(&format!("{}@", self.name));
                in_pool && m.source.contains('@')
            })
            .map(|m| m.mount_point)
            .collect()
    }

    /// A snapshot of the test's own (not the tool's) of `dataset`, with a hold `tag` when
    /// given (as sanoid or a backup tool would leave them).
    pub fn user_snapshot(
        &self,
        dataset: &Dataset,
        name: &str,
        hold: Option<&str>,
    ) -> Result<UserSnapshot> {
        let snap = UserSnapshot {
            name: format!("{}@{name}", dataset.name),
            hold: None,
        };
        zfs_tool("zfs", &["snapshot", &snap.name])?;
        let mut snap = snap;
        if let Some(tag) = hold {
            zfs_tool("zfs", &["hold", tag, &snap.name])?;
            snap.hold = Some(tag.to_owned());
        }
        Ok(snap)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if self.created {
            // Holds would make the destroy fail: release the ones in this pool first.
            for (snap, tag) in self.holds() {
                log_err(
                    &format!("zfs release {tag} {snap}"),
                    zfs_tool("zfs", &["release", &tag, &snap]),
                );
            }
            log_err(
                &format!("zpool destroy {}", self.name),
                zfs_tool("zpool", &["destroy", "-f", &self.name]),
            );
        }
        if let Err(e) = std::fs::remove_file(&self.backing) {
            eprintln!("fixtures: removing {}: {e}", self.backing.display());
        }
    }
}

/// A snapshot a test made itself. Drop releases its hold and destroys it (that snapshot only).
#[derive(Debug)]
pub struct UserSnapshot {
    /// `DATASET@NAME`
    pub name: String,
    hold: Option<String>,
}

impl Drop for UserSnapshot {
    fn drop(&mut self) {
        if let Some(tag) = &self.hold {
            log_err(
                &format!("zfs release {tag} {}", self.name),
                zfs_tool("zfs", &["release", tag, &self.name]),
            );
        }
        log_err(
            &format!("zfs destroy {}", self.name),
            zfs_tool("zfs", &["destroy", &self.name]),
        );
    }
}

/// How a test dataset is mounted.
#[derive(Debug, Clone, Copy)]
pub enum Mountpoint<'a> {
    /// `mountpoint=PATH`: ZFS mounts it there.
    At(&'a Path),
    /// Inherited from the parent dataset (`PARENT_MOUNTPOINT/last-component`).
    Inherit,
    /// `mountpoint=legacy`, then `mount -t zfs DATASET PATH` (as fstab would).
    Legacy(&'a Path),
    /// `canmount=noauto,mountpoint=PATH`, then `zfs mount` by hand.
    NoAuto(&'a Path),
}

/// A mounted dataset. Drop unmounts it (legacy) and destroys it (`zfs destroy -f`: force
/// the unmount; never `-r`, so no snapshot or child goes with it).
#[derive(Debug)]
pub struct Dataset {
    pub name: String,
    pub mount_point: PathBuf,
    legacy: bool,
    created: bool,
}

impl Dataset {
    fn create(name: &str, how: Mountpoint<'_>) -> Result<Self> {
        let mut args: Vec<String> = vec!["create".into()];
        match how {
            Mountpoint::At(p) => args.extend(["-o".into(), format!("mountpoint={}", p.display())]),
            Mountpoint::Inherit => {}
            Mountpoint::Legacy(_) => args.extend(["-o".into(), "mountpoint=legacy".into()]),
            Mountpoint::NoAuto(p) => args.extend([
                "-o".into(),
                "canmount=noauto".into(),
                "-o".into(),
                format!("mountpoint={}", p.display()),
            ]),
        }
        args.push(name.to_owned());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        zfs_tool("zfs", &argv).with_context(|| format!("creating dataset {name}"))?;
        let mut ds = Dataset {
            name: name.to_owned(),
            mount_point: PathBuf::new(),
            legacy: false,
            created: true,
        };
        match how {
            Mountpoint::At(p) => ds.mount_point = p.to_owned(),
            Mountpoint::Inherit => {
                let mp = zfs_tool("zfs", &["list", "-H", "-o", "mountpoint", name])?;
                ds.mount_point = PathBuf::from(mp.trim());
            }
            Mountpoint::Legacy(p) => {
                std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
                zfs_tool("mount", &["-t", "zfs", name, &p.to_string_lossy()])?;
                ds.legacy = true;
                ds.mount_point = p.to_owned();
            }
            Mountpoint::NoAuto(p) => {
                zfs_tool("zfs", &["mount", name])?;
                ds.mount_point = p.to_owned();
            }
        }
        if !mounts_under(&ds.mount_point).contains(&ds.mount_point) {
            bail!(
                "dataset {name} is not mounted at {}",
                ds.mount_point.display()
            );
        }
        Ok(ds)
    }
}

impl Drop for Dataset {
    fn drop(&mut self) {
        if self.legacy && mounts_under(&self.mount_point).contains(&self.mount_point) {
            log_err(
                &format!("umount {}", self.mount_point.display()),
                zfs_tool("umount", &[&self.mount_point.to_string_lossy()]),
            );
        }
        if self.created {
            log_err(
                &format!("zfs destroy {}", self.name),
                zfs_tool("zfs", &["destroy", "-f", &self.name]),
            );
        }
    }
}

impl MountedFs for Dataset {
    fn mount_point(&self) -> &Path {
        &self.mount_point
    }
    fn fstype(&self) -> &str {
        "zfs"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix_and_suit_zfs() {
        let n = unique_name("two pools/a");
        assert!(n.starts_with("snaptest-two_pools_a-"), "{n}");
        assert!(n.starts_with(|c: char| c.is_ascii_alphabetic()));
        assert!(n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c)));
    }
}
