//! Building the packages — snapshot and snapshot-certify ([`PACKAGES`]): release binaries with
//! their debug symbols split off, then for each package the `.deb`, the RPM and the tarball
//! from its one asset list.

use super::assets::{self, Asset};
use crate::{cargo, root, run};
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A package: its name, the crate whose manifest holds its asset list, its binaries, where
/// its build products go under OUT, and its tarball's install script.
#[derive(Debug)]
pub struct Package {
    pub name: &'static str,
    pub krate: &'static str,
    pub binaries: &'static [&'static str],
    /// Below OUT: `bin/` (stripped binaries) and `man/` of this package.
    pub dir: &'static str,
    pub install: &'static str,
}

/// snapshot, and snapshot-certify (which depends on it) in a package of its own: a backup
/// host needs no certification harness, a distribution's QA needs both.
pub const PACKAGES: [Package; 2] = [
    Package {
        name: "snapshot",
        krate: "snapshot-cli",
        binaries: &["snapshot", "start-snapshot", "stop-snapshot"],
        dir: "",
        install: "packaging/install.sh",
    },
    Package {
        name: "snapshot-certify",
        krate: "snapshot-certify",
        binaries: &["snapshot-certify"],
        dir: "certify",
        install: "packaging/install-certify.sh",
    },
];

/// What [`all`] built of one package.
#[derive(Debug)]
pub struct Built {
    pub name: &'static str,
    pub deb: PathBuf,
    pub rpm: PathBuf,
    pub tarball: PathBuf,
    pub assets: Vec<Asset>,
}

/// `cargo build --release` with debug information, then each binary stripped into
/// `OUT/[DIR/]bin/` with its symbols in `OUT/debug/NAME.debug` (linked by `.gnu_debuglink`).
pub fn binaries(out: &Path) -> Result<()> {
    let mut build = cargo();
    build.args(["build", "--release", "--quiet"]);
    for p in &PACKAGES {
        build.args(["-p", p.krate]);
    }
    run(build.env("CARGO_PROFILE_RELEASE_DEBUG", "true"))?;
    for p in &PACKAGES {
        strip(out, p)?;
    }
    Ok(())
}

fn strip(out: &Path, p: &Package) -> Result<()> {
    let (bin, debug) = (out.join(p.dir).join("bin"), out.join("debug"));
    for d in [&bin, &debug] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {d:?}"))?;
    }
    for name in p.binaries {
        let built = root().join("target/release").join(name);
        let symbols = debug.join(format!("{name}.debug"));
        let stripped = bin.join(name);
        run(Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(&built)
            .arg(&symbols))?;
        run(Command::new("objcopy")
            .arg("--strip-all")
            .arg(format!("--add-gnu-debuglink={}", symbols.display()))
            .arg(&built)
            .arg(&stripped))?;
    }
    Ok(())
}

/// Man pages compressed as Debian's policy (and RPM's own habit) wants them: `NAME.1.gz`
/// beside each `NAME.1` of `dir` (`gzip -n`: no name or time stamp, so the result is
/// reproducible).
pub fn compress_man_pages(dir: &Path) -> Result<()> {
    let man = dir.join("man");
    for e in std::fs::read_dir(&man).with_context(|| format!("reading {man:?}"))? {
        let page = e?.path();
        if page.extension().is_some_and(|x| x == "1") {
            run(Command::new("gzip")
                .args(["-9", "-n", "-k", "-f"])
                .arg(&page))?;
        }
    }
    Ok(())
}

/// The `.deb`, the RPM and the tarball of each package, in `out`.
pub fn all(out: &Path) -> Result<Vec<Built>> {
    PACKAGES
        .iter()
        .map(|p| {
            compress_man_pages(&out.join(p.dir))?;
            let assets = assets::list(p.krate)?;
            Ok(Built {
                name: p.name,
                deb: deb(out, p)?,
                rpm: rpm(out, p, &assets)?,
                tarball: tarball(out, p, &assets)?,
                assets,
            })
        })
        .collect()
}

/// Installs a cargo subcommand when missing (the xtask's own set-up).
fn ensure_tool(subcommand: &str, krate: &str) -> Result<()> {
    let present = cargo()
        .args([subcommand, "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        run(cargo().args(["install", "--locked", krate]))?;
    }
    Ok(())
}

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

fn deb(out: &Path, p: &Package) -> Result<PathBuf> {
    ensure_tool("deb", "cargo-deb")?;
    let deb = out.join(format!("{}_{}-1_amd64.deb", p.name, version()));
    run(cargo()
        .args(["deb", "-p", p.krate, "--no-build", "--no-strip", "--output"])
        .arg(&deb))?;
    Ok(deb)
}

/// The RPM from the same list: cargo-generate-rpm with the list as a metadata overwrite.
fn rpm(out: &Path, p: &Package, assets: &[Asset]) -> Result<PathBuf> {
    ensure_tool("generate-rpm", "cargo-generate-rpm")?;
    let meta = out.join(format!("rpm-metadata-{}.toml", p.name));
    std::fs::write(&meta, rpm_metadata(assets)).with_context(|| format!("writing {meta:?}"))?;
    let rpm = out.join(format!("{}-{}-1.x86_64.rpm", p.name, version()));
    run(cargo()
        .args(["generate-rpm", "-p"])
        .arg(format!("crates/{}", p.krate))
        .arg("--metadata-overwrite")
        .arg(&meta)
        .arg("-o")
        .arg(&rpm))?;
    Ok(rpm)
}

/// The asset list as cargo-generate-rpm's `assets` (the rest of its metadata is in the
/// manifest).
fn rpm_metadata(assets: &[Asset]) -> String {
    let mut t = String::from("assets = [\n");
    for a in assets {
        let config = if a.is_conffile() {
            ", config = \"noreplace\""
        } else {
            ""
        };
        let _ = writeln!(
            t,
            "  {{ source = {:?}, dest = {:?}, mode = \"{:o}\"{config} }},",
            a.source.display().to_string(),
            a.dest.display().to_string(),
            a.mode
        );
    }
    t.push_str("]\n");
    t
}

/// `NAME-VERSION-x86_64-linux.tar.gz`: `root/` (the installed tree), `MANIFEST` (mode and
/// path of each file) and `install.sh` (installs them, or removes them with `--uninstall`).
fn tarball(out: &Path, p: &Package, assets: &[Asset]) -> Result<PathBuf> {
    let name = format!("{}-{}-x86_64-linux", p.name, version());
    let dir = out.join(&name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {dir:?}"))?;
    }
    let mut manifest = String::new();
    for a in assets {
        let rel = a.dest.strip_prefix("/").unwrap_or(&a.dest);
        let to = dir.join("root").join(rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {parent:?}"))?;
        }
        std::fs::copy(&a.source, &to).with_context(|| format!("copying {:?}", a.source))?;
        let _ = writeln!(manifest, "{:o} {}", a.mode, a.dest.display());
    }
    std::fs::write(dir.join("MANIFEST"), manifest)?;
    let install = root().join(p.install);
    std::fs::copy(&install, dir.join("install.sh")).with_context(|| format!("{install:?}"))?;
    let tarball = out.join(format!("{name}.tar.gz"));
    run(Command::new("tar")
        .arg("-C")
        .arg(out)
        .arg("--owner=root")
        .arg("--group=root")
        .arg("-czf")
        .arg(&tarball)
        .arg(&name))?;
    if !tarball.is_file() {
        bail!("{tarball:?} was not written");
    }
    Ok(tarball)
}
