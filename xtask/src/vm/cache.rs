//! The artifact cache: one directory per artifact kind and key (`kernel-<key>/`,
//! `rootfs-<key>.img`, `initrd-<key>.cpio`), the kernel packages (`debs/`, kept: superseded
//! kernels leave the archive), and per-run scratch (`runs/`). Builds happen in a temporary
//! name and are renamed into place, so a crash never leaves a half-built artifact under a key.

use anyhow::{Context, Result};
use rustix::fs::{flock, FlockOperation};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
}

/// A held lock on the cache (released on drop, or when the process dies).
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
}

impl Cache {
    pub fn open(explicit: Option<PathBuf>) -> Result<Self> {
        let dir = match explicit.or_else(|| std::env::var_os("SNAPSHOT_VM_CACHE").map(Into::into)) {
            Some(d) => d,
            None => {
                let base = std::env::var_os("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                    .context("neither XDG_CACHE_HOME nor HOME is set; pass --cache-dir")?;
                base.join("snapshot-vm")
            }
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the VM cache {}", dir.display()))?;
        eprintln!("vm-test: cache {}", dir.display());
        Ok(Self { dir })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn debs_dir(&self) -> Result<PathBuf> {
        self.subdir("debs")
    }

    pub fn runs_dir(&self) -> Result<PathBuf> {
        self.subdir("runs")
    }

    fn subdir(&self, name: &str) -> Result<PathBuf> {
        let d = self.dir.join(name);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(d)
    }

    fn lock(&self, op: FlockOperation) -> Result<CacheLock> {
        let path = self.dir.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if flock(&file, op_nonblocking(op)).is_err() {
            eprintln!(
                "vm-test: waiting for another vm-test using {}",
                self.dir.display()
            );
            flock(&file, op).with_context(|| format!("locking {}", path.display()))?;
        }
        Ok(CacheLock { _file: file })
    }

    /// For building and pruning artifacts.
    pub fn lock_exclusive(&self) -> Result<CacheLock> {
        self.lock(FlockOperation::LockExclusive)
    }

    /// For using them.
    pub fn lock_shared(&self) -> Result<CacheLock> {
        self.lock(FlockOperation::LockShared)
    }

    /// Removes every `<kind>-*` entry but `keep` (older keys of the same artifact), and
    /// leftovers of interrupted builds (`*.tmp-*`). Call with the exclusive lock held.
    pub fn prune(&self, kind: &str, keep: &Path) -> Result<()> {
        let prefix = format!("{kind}-");
        for entry in std::fs::read_dir(&self.dir)
            .with_context(|| format!("listing {}", self.dir.display()))?
        {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            if !name.starts_with(&prefix) || path == keep {
                continue;
            }
            eprintln!("vm-test: pruning old cache entry {}", path.display());
            remove_path(&path)?;
        }
        Ok(())
    }
}

impl Cache {
    /// Removes per-run directories older than `age`: left by a vm-test that was killed
    /// (a finished run removes its own). No run lasts that long: its timeout is far shorter.
    pub fn prune_stale_runs(&self, age: std::time::Duration) -> Result<()> {
        let runs = self.runs_dir()?;
        for entry in std::fs::read_dir(&runs)?.flatten() {
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|e| e > age);
            if stale
                && entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("snapshot-vm-run-")
            {
                eprintln!(
                    "vm-test: removing the stale run directory {}",
                    entry.path().display()
                );
                remove_path(&entry.path())?;
            }
        }
        Ok(())
    }
}

fn op_nonblocking(op: FlockOperation) -> FlockOperation {
    match op {
        FlockOperation::LockShared => FlockOperation::NonBlockingLockShared,
        FlockOperation::LockExclusive => FlockOperation::NonBlockingLockExclusive,
        other => other,
    }
}

/// Removes a file or a directory tree — refusing when anything is mounted under it (a
/// debootstrap tree interrupted while its /proc was mounted must not be walked into).
pub fn remove_path(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
    };
    if meta.is_dir() {
        let mounted = snapshot_testkit::mounts_under(path);
        if !mounted.is_empty() {
            anyhow::bail!(
                "not removing {}: still mounted under it: {mounted:?}",
                path.display()
            );
        }
        std::fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))
    } else {
        std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))
    }
}

/// A cache key: the first 16 hex digits of the SHA-256 of `name=value` lines.
#[derive(Debug, Default)]
pub struct Key {
    text: String,
}

impl Key {
    pub fn add(&mut self, name: &str, value: impl AsRef<str>) -> &mut Self {
        // Length-prefixed so that no two different inputs render the same.
        let v = value.as_ref();
        self.text.push_str(&format!("{name}={}:{v}\n", v.len()));
        self
    }

    pub fn hex(&self) -> String {
        let digest = Sha256::digest(self.text.as_bytes());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The inputs, for the log.
    pub fn describe(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_change_with_inputs() {
        let mut a = Key::default();
        a.add("pkg", "lvm2=2.03.16-2");
        let mut b = Key::default();
        b.add("pkg", "lvm2=2.03.16-3");
        assert_ne!(a.hex(), b.hex());
        assert_eq!(a.hex().len(), 16);
        let mut c = Key::default();
        c.add("pkg", "lvm2=2.03.16-2");
        assert_eq!(a.hex(), c.hex());
    }
}
