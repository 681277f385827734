//! `cargo xtask dist --check`, per package: the `.deb`, the RPM and the tarball install the
//! same files (the asset list; the `.deb` adds only its generated copyright file and
//! changelog), lintian reports no error on the `.deb`, and the tarball's `install.sh` installs
//! exactly the list into a scratch root and `--uninstall` removes it all again. Installing the `.deb` on a system (apt, man pages,
//! completions, purge) is the VM tier's.

use super::package::Built;
use crate::run;
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

pub fn all(built: &Built) -> Result<()> {
    // Files the `.deb` has beside the asset list: cargo-deb writes them (Debian's policy).
    let deb_only =
        ["copyright", "changelog.Debian.gz"].map(|f| format!("/usr/share/doc/{}/{f}", built.name));
    let want: BTreeSet<String> = built
        .assets
        .iter()
        .map(|a| a.dest.display().to_string())
        .collect();
    let deb = deb_files(&built.deb)?;
    let rpm = rpm_files(&built.rpm)?;
    let deb_listed: BTreeSet<String> = deb
        .iter()
        .filter(|f| !deb_only.contains(f))
        .cloned()
        .collect();
    same("the .deb", &deb_listed, &want)?;
    same("the RPM", &rpm, &want)?;
    eprintln!(
        "dist check: {}: the .deb and the RPM hold the same {} files (the .deb also {:?})",
        built.name,
        want.len(),
        deb_only
    );
    lintian(&built.deb)?;
    tarball(&built.tarball, &want)?;
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Regular files of the `.deb` (`dpkg-deb -c`: `./usr/sbin/snapshot` → `/usr/sbin/snapshot`).
fn deb_files(deb: &Path) -> Result<BTreeSet<String>> {
    let listing = output(Command::new("dpkg-deb").arg("-c").arg(deb))?;
    Ok(listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.').to_owned())
        .collect())
}

/// Files of the RPM (`rpm -qlp`), directories left out.
fn rpm_files(rpm: &Path) -> Result<BTreeSet<String>> {
    let listing = output(
        Command::new("rpm")
            .args(["-qp", "--qf", "[%{FILEMODES:perms} %{FILENAMES}\\n]"])
            .arg(rpm),
    )?;
    Ok(listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_once(' ').map(|(_, p)| p.to_owned()))
        .collect())
}

fn same(what: &str, got: &BTreeSet<String>, want: &BTreeSet<String>) -> Result<()> {
    let extra: Vec<_> = got.difference(want).collect();
    let missing: Vec<_> = want.difference(got).collect();
    if !extra.is_empty() || !missing.is_empty() {
        bail!("{what} differs from the asset list: extra {extra:?}, missing {missing:?}");
    }
    Ok(())
}

/// lintian on the `.deb`: no error (warnings are shown, not fatal).
fn lintian(deb: &Path) -> Result<()> {
    let out = Command::new("lintian")
        .args(["--no-tag-display-limit", "--fail-on", "error"])
        .arg(deb)
        .output()
        .context("running lintian")?;
    let report = String::from_utf8_lossy(&out.stdout);
    eprint!("{report}");
    if !out.status.success() {
        bail!("lintian found errors in {deb:?} ({})", out.status);
    }
    eprintln!(
        "dist check: lintian: no error ({} warnings)",
        report.lines().filter(|l| l.starts_with("W:")).count()
    );
    Ok(())
}

/// The tarball's script into a scratch root: exactly the list, then nothing after
/// `--uninstall`.
fn tarball(tarball: &Path, want: &BTreeSet<String>) -> Result<()> {
    let scratch = tempfile::tempdir().context("a scratch directory")?;
    run(Command::new("tar")
        .arg("-C")
        .arg(scratch.path())
        .arg("-xzf")
        .arg(tarball))?;
    let dir = std::fs::read_dir(scratch.path())?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .context("the tarball holds no directory")?;
    let dest = scratch.path().join("root");
    std::fs::create_dir(&dest)?;
    let install = |args: &[&str]| {
        run(Command::new("sh")
            .arg(dir.join("install.sh"))
            .args(args)
            .env("DESTDIR", &dest))
    };
    install(&[])?;
    let installed = files_under(&dest)?;
    same("the tarball's install.sh", &installed, want)?;
    install(&["--uninstall"])?;
    let left = files_under(&dest)?;
    if !left.is_empty() {
        bail!("install.sh --uninstall left {left:?}");
    }
    eprintln!(
        "dist check: the tarball's install.sh installs the same {} files and removes them",
        want.len()
    );
    Ok(())
}

/// Regular files under `root`, as absolute paths of the installed system.
fn files_under(root: &Path) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("reading {dir:?}"))? {
            let path = e?.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(root) {
                out.insert(format!("/{}", rel.display()));
            }
        }
    }
    Ok(out)
}
