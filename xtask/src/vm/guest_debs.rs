//! `vm-test --guest-packages`: Debian packages the root image lacks, for one run's guest only
//! (the database servers of `bench --db --lvm`), so that the cached image every machine and CI
//! boot stays as it is. On the host: the guest's dpkg status is read out of the root image
//! (debugfs), apt simulates installing the packages against it with the host's lists (the same
//! Debian release), and exactly the packages it would install are downloaded into the cache.
//! They go into the payload; the guest script installs them with dpkg into the root's
//! overlay, which is gone after the run.

use super::cache::Cache;
use super::host;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One package apt would install: name, version, architecture.
#[derive(Debug, PartialEq)]
struct Inst {
    name: String,
    version: String,
    arch: String,
}

impl Inst {
    /// The file name `apt-get download` gives it (an epoch's colon is escaped).
    fn deb_name(&self) -> String {
        format!(
            "{}_{}_{}.deb",
            self.name,
            self.version.replace(':', "%3a"),
            self.arch
        )
    }
}

/// The .debs that install `pkgs` (without recommends) on the guest whose root image is
/// `rootfs`, downloaded into the cache's `guest-debs/` unless already there.
pub fn fetch(cache: &Cache, rootfs: &Path, pkgs: &[String]) -> Result<Vec<PathBuf>> {
    let dir = cache.path("guest-debs");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let status = dir.join("guest-status");
    let text = host::output(
        Command::new("debugfs")
            .arg("-R")
            .arg("cat /var/lib/dpkg/status")
            .arg(rootfs),
    )
    .context("reading the guest's dpkg status out of the root image")?;
    if !text.contains("Package: ") {
        bail!(
            "{}: no dpkg status read out of the root image",
            rootfs.display()
        );
    }
    std::fs::write(&status, text).with_context(|| format!("writing {}", status.display()))?;
    let plan = host::output(
        Command::new("apt-get")
            .args(["-s", "-q", "install", "--no-install-recommends"])
            .arg(format!("-oDir::State::status={}", status.display()))
            .args(pkgs),
    )
    .context("apt-get -s install against the guest's dpkg status")?;
    let insts = parse_simulation(&plan);
    if insts.is_empty() {
        bail!("apt would install nothing for {pkgs:?} in the guest:\n{plan}");
    }
    let missing: Vec<String> = insts
        .iter()
        .filter(|i| !dir.join(i.deb_name()).exists())
        .map(|i| format!("{}:{}={}", i.name, i.arch, i.version))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "vm-test: downloading {} of {} packages for the guest",
            missing.len(),
            insts.len()
        );
        host::run_quiet(
            Command::new("apt-get")
                .args(["download", "-q"])
                .args(&missing)
                .current_dir(&dir),
        )
        .context("downloading the guest's packages")?;
    }
    insts
        .iter()
        .map(|i| {
            let deb = dir.join(i.deb_name());
            if deb.exists() {
                Ok(deb)
            } else {
                bail!("apt-get download did not produce {}", deb.display())
            }
        })
        .collect()
}

/// `Inst NAME [OLD] (VERSION ORIGIN [ARCH])` lines of `apt-get -s install`.
fn parse_simulation(out: &str) -> Vec<Inst> {
    out.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("Inst ")?;
            let (name, rest) = rest.split_once(' ')?;
            let paren = &rest[rest.find('(')? + 1..rest.rfind(')')?];
            let version = paren.split_whitespace().next()?;
            let arch = paren.rsplit_once('[')?.1.strip_suffix(']')?;
            Some(Inst {
                name: name.to_owned(),
                version: version.to_owned(),
                arch: arch.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_packages_apt_would_install() {
        let out = "Reading package lists...\n\
            Inst perl-base [5.36.0-7+deb12u3] (5.36.0-7+deb12u4 Debian-Security:12/oldstable-security [amd64])\n\
            Inst perl-modules-5.36 (5.36.0-7+deb12u4 Debian-Security:12/oldstable-security [all])\n\
            Inst libfoo1 (1:2.0-1 Debian:12.15/oldstable [amd64]) []\n\
            Conf perl-base (5.36.0-7+deb12u4 Debian-Security:12/oldstable-security [amd64])\n";
        let got = parse_simulation(out);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(
            got[0],
            Inst {
                name: "perl-base".into(),
                version: "5.36.0-7+deb12u4".into(),
                arch: "amd64".into()
            }
        );
        assert_eq!(got[1].arch, "all");
        assert_eq!(got[2].deb_name(), "libfoo1_1%3a2.0-1_amd64.deb");
    }
}
