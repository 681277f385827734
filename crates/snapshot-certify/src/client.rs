//! `--client`: who reads each cycle's view. `copy` is the harness's own reader (in name order,
//! like a backup); the others are the backup programs people use, as Debian ships them, and
//! the invariants are checked on what they *restore*:
//!
//! - `restic` and `borg` back up in a mount namespace of their own where each view is bound
//!   over its filesystem's own path, as `snapshot run --in-place` does, so the archive holds the
//!   real paths; then the cycle's archive is restored into the scratch directory;
//! - `rsync` mirrors each view into a directory (incrementally, `--delete`) and copies it back;
//! - `tar` archives the views from TARGET and extracts them.
//!
//! A file the client could not read (it vanished under a live view) is a violation, as it is
//! for `copy`. The repositories live in the fixture's scratch directory, one per run, so the
//! backups after the first are incremental.

use crate::workloads::Roots;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Client {
    Copy,
    Restic,
    Borg,
    Rsync,
    Tar,
}

/// The password of the scratch repositories.
const PASSWORD: &str = "snaptest-certify";

impl Client {
    pub fn name(self) -> &'static str {
        match self {
            Client::Copy => "copy",
            Client::Restic => "restic",
            Client::Borg => "borg",
            Client::Rsync => "rsync",
            Client::Tar => "tar",
        }
    }

    /// The program it needs, for the up-front check.
    pub fn program(self) -> Option<&'static str> {
        match self {
            Client::Copy => None,
            Client::Borg => Some("borg"),
            other => Some(other.name()),
        }
    }
}

/// One cycle's backup and restore.
#[derive(Debug)]
pub struct Cycle<'a> {
    pub client: Client,
    pub cycle: u32,
    /// `(view, original mount point)` of each fixture filesystem.
    pub views: [(&'a Path, &'a Path); 2],
    /// TARGET (tar archives from there).
    pub target: &'a Path,
    /// Emptied each cycle: the restore goes here.
    pub work: &'a Path,
    /// Kept across cycles: the repository.
    pub repo: &'a Path,
}

impl Cycle<'_> {
    /// Backs the views up with the client and restores them under `work`; the restored roots,
    /// and what the client could not read.
    pub fn run(&self) -> Result<(Roots, Vec<String>)> {
        std::fs::create_dir_all(self.work).with_context(|| format!("{:?}", self.work))?;
        match self.client {
            Client::Copy => bail!("the copy reader is the harness's own"),
            Client::Restic => self.restic(),
            Client::Borg => self.borg(),
            Client::Rsync => self.rsync(),
            Client::Tar => self.tar(),
        }
    }

    /// The restored copy of a filesystem mounted at `original`, restored under `self.work`.
    fn restored(&self, original: &Path) -> PathBuf {
        self.work
            .join(original.strip_prefix("/").unwrap_or(original))
    }

    fn roots(&self) -> Roots {
        Roots {
            fs1: self.restored(self.views[0].1),
            fs2: self.restored(self.views[1].1),
        }
    }

    /// `sh -c SCRIPT` in a private mount namespace where each view covers its original path.
    fn in_place(&self, script: &str) -> Command {
        let mut binds = String::new();
        for (view, original) in self.views {
            binds.push_str(&format!(
                "mount --bind {} {} && ",
                quote(view),
                quote(original)
            ));
        }
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!("{binds}{script}"))
            .env("RESTIC_PASSWORD", PASSWORD)
            .env("BORG_PASSPHRASE", PASSWORD)
            .env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes")
            .env("BORG_RELOCATED_REPO_ACCESS_IS_OK", "yes");
        cmd
    }

    fn originals(&self) -> String {
        self.views
            .iter()
            .map(|(_, o)| quote(o))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn restic(&self) -> Result<(Roots, Vec<String>)> {
        let repo = quote(self.repo);
        if !self.repo.join("config").exists() {
            run(&mut self.in_place(&format!("restic -r {repo} init")))?;
        }
        let out = self
            .in_place(&format!(
                "restic -r {repo} backup --tag c{} {}",
                self.cycle,
                self.originals()
            ))
            .output()
            .context("running restic backup")?;
        // 3: some files could not be read (the snapshot is saved without them).
        let unread = match out.status.code() {
            Some(0) => Vec::new(),
            Some(3) => vec![format!("restic could not read: {}", stderr(&out))],
            _ => bail!("restic backup failed: {}", stderr(&out)),
        };
        run(&mut self.in_place(&format!(
            "restic -r {repo} restore latest --tag c{} --target {}",
            self.cycle,
            quote(self.work)
        )))?;
        Ok((self.roots(), unread))
    }

    fn borg(&self) -> Result<(Roots, Vec<String>)> {
        let repo = quote(self.repo);
        if !self.repo.join("config").exists() {
            run(&mut self.in_place(&format!("borg init --encryption=repokey {repo}")))?;
        }
        let archive = format!("{repo}::c{}", self.cycle);
        let out = self
            .in_place(&format!("borg create {archive} {}", self.originals()))
            .output()
            .context("running borg create")?;
        // 1: warnings (a file changed or vanished while it was read).
        let unread = match out.status.code() {
            Some(0) => Vec::new(),
            Some(1) => vec![format!("borg warned: {}", stderr(&out))],
            _ => bail!("borg create failed: {}", stderr(&out)),
        };
        run(&mut self.in_place(&format!(
            "cd {} && borg extract {archive}",
            quote(self.work)
        )))?;
        Ok((self.roots(), unread))
    }

    fn rsync(&self) -> Result<(Roots, Vec<String>)> {
        let mut unread = Vec::new();
        for (view, original) in self.views {
            let mirror = self
                .repo
                .join(original.strip_prefix("/").unwrap_or(original));
            std::fs::create_dir_all(&mirror)?;
            // --checksum: rsync's quick check (size and mtime to the second) misses a file
            // rewritten within the same second at the same size — the mirror would keep the
            // old content, which the invariants catch. README "Backup recipes" says so.
            let out = Command::new("rsync")
                .args(["-a", "--delete", "--checksum"])
                .arg(format!("{}/", view.display()))
                .arg(format!("{}/", mirror.display()))
                .output()
                .context("running rsync")?;
            match out.status.code() {
                Some(0) => {}
                // 24: some source files vanished.
                Some(23 | 24) => unread.push(format!("rsync: {}", stderr(&out))),
                _ => bail!("rsync failed: {}", stderr(&out)),
            }
            let restored = self.restored(original);
            std::fs::create_dir_all(&restored)?;
            run(Command::new("rsync")
                .arg("-a")
                .arg(format!("{}/", mirror.display()))
                .arg(format!("{}/", restored.display())))?;
        }
        Ok((self.roots(), unread))
    }

    fn tar(&self) -> Result<(Roots, Vec<String>)> {
        let archive = self.repo.join(format!("c{}.tar", self.cycle));
        std::fs::create_dir_all(self.repo)?;
        let rel = |v: &Path| -> Result<PathBuf> {
            Ok(v.strip_prefix(self.target)
                .with_context(|| format!("{v:?} is not under TARGET"))?
                .to_owned())
        };
        let out = Command::new("tar")
            .arg("-C")
            .arg(self.target)
            .arg("-cf")
            .arg(&archive)
            .arg(rel(self.views[0].0)?)
            .arg(rel(self.views[1].0)?)
            .output()
            .context("running tar")?;
        // 1: some files differ (changed while read).
        let unread = match out.status.code() {
            Some(0) => Vec::new(),
            Some(1) => vec![format!("tar: {}", stderr(&out))],
            _ => bail!("tar failed: {}", stderr(&out)),
        };
        run(Command::new("tar")
            .arg("-C")
            .arg(self.work)
            .arg("-xf")
            .arg(&archive))?;
        std::fs::remove_file(&archive)?;
        Ok((self.roots(), unread))
    }
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

fn stderr(out: &Output) -> String {
    let s = String::from_utf8_lossy(&out.stderr);
    s.lines().take(5).collect::<Vec<_>>().join("; ")
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed ({}): {}", out.status, stderr(&out));
    }
    Ok(())
}
