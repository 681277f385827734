//! Building the packages: release binaries with their debug symbols split off, then the
//! `.deb`, the RPM and the tarball from the one asset list.

use super::assets::{self, Asset};
use crate::{cargo, root, run};
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The binaries of the package.
pub const BINARIES: [&str; 3] = ["snapshot", "start-snapshot", "stop-snapshot"];

/// What [`all`] built.
#[derive(Debug)]
pub struct Built {
    pub deb: PathBuf,
    pub rpm: PathBuf,
    pub tarball: PathBuf,
    pub assets: Vec<Asset>,
}

/// `cargo build --release` with debug information, then each binary stripped into
/// `OUT/bin/` with its symbols in `OUT/debug/NAME.debug` (linked by `.gnu_debuglink`).
pub fn binaries(out: &Path) -> Result<()> {
    run(cargo()
        .args(["build", "--release", "--quiet", "-p", "snapshot-cli"])
        .env("CARGO_PROFILE_RELEASE_DEBUG", "true"))?;
    let (bin, debug) = (out.join("bin"), out.join("debug"));
    for d in [&bin, &debug] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {d:?}"))?;
    }
    for name in BINARIES {
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
/// beside each `NAME.1` (`gzip -n`: no name or time stamp, so the result is reproducible).
pub fn compress_man_pages(out: &Path) -> Result<()> {
    let man = out.join("man");
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

/// The three packages in `out`.
pub fn all(out: &Path) -> Result<Built> {
    compress_man_pages(out)?;
    let assets = assets::list()?;
    Ok(Built {
        deb: deb(out)?,
        rpm: rpm(out, &assets)?,
        tarball: tarball(out, &assets)?,
        assets,
    })
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

fn deb(out: &Path) -> Result<PathBuf> {
    ensure_tool("deb", "cargo-deb")?;
    let deb = out.join(format!("snapshot_{}-1_amd64.deb", version()));
    run(cargo()
        .args([
            "deb",
            "-p",
            "snapshot-cli",
            "--no-build",
            "--no-strip",
            "--output",
        ])
        .arg(&deb))?;
    Ok(deb)
}

/// The RPM from the same list: cargo-generate-rpm with the list as a metadata overwrite.
fn rpm(out: &Path, assets: &[Asset]) -> Result<PathBuf> {
    ensure_tool("generate-rpm", "cargo-generate-rpm")?;
    let meta = out.join("rpm-metadata.toml");
    std::fs::write(&meta, rpm_metadata(assets)).with_context(|| format!("writing {meta:?}"))?;
    let rpm = out.join(format!("snapshot-{}-1.x86_64.rpm", version()));
    run(cargo()
        .args([
            "generate-rpm",
            "-p",
            "crates/snapshot-cli",
            "--metadata-overwrite",
        ])
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

/// `snapshot-VERSION-x86_64-linux.tar.gz`: `root/` (the installed tree), `MANIFEST` (mode and
/// path of each file) and `install.sh` (installs them, or removes them with `--uninstall`).
fn tarball(out: &Path, assets: &[Asset]) -> Result<PathBuf> {
    let name = format!("snapshot-{}-x86_64-linux", version());
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
    let install = root().join("packaging/install.sh");
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
