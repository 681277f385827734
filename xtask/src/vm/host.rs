//! Host side: the Debian packages the VM tier needs (installed when missing), apt queries,
//! and running the build tools with their output captured.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// (check, package): a program (searched in PATH and the sbin directories) or a file.
const HOST_NEEDS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("debootstrap", "debootstrap"),
    ("depmod", "kmod"),
    ("modprobe", "kmod"),
    ("xz", "xz-utils"),
    ("mkfs.ext4", "e2fsprogs"),
    ("unshare", "util-linux"),
    ("dpkg-deb", "dpkg"),
];

/// Installs what the VM tier needs on the host, only what is missing.
pub fn ensure_packages() -> Result<()> {
    let mut missing: Vec<&str> = HOST_NEEDS
        .iter()
        .filter(|(tool, _)| snapshot_testkit::find_tool(tool).is_none())
        .map(|&(_, pkg)| pkg)
        .collect();
    // The initramfs needs the *static* busybox; the dynamic `busybox` package has the same path.
    if !package_installed("busybox-static") {
        missing.push("busybox-static");
    }
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("vm-test: installing host packages: {}", missing.join(" "));
    apt_update()?;
    let mut cmd = Command::new("apt-get");
    cmd.args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run_quiet(&mut cmd).context("installing the VM tier's host packages")?;
    Ok(())
}

pub fn apt_update() -> Result<()> {
    run_quiet(Command::new("apt-get").args(["update", "-qq"])).context("apt-get update")?;
    Ok(())
}

pub fn package_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installed version of a host package.
pub fn installed_version(pkg: &str) -> Result<String> {
    let out = output(Command::new("dpkg-query").args(["-W", "-f=${Version}", pkg]))?;
    Ok(out.trim().to_owned())
}

/// Candidate versions (`apt-cache policy`) of `pkgs`; `None` for a package apt does not know.
pub fn candidates(pkgs: &[&str]) -> Result<BTreeMap<String, Option<String>>> {
    candidates_with(&[], pkgs)
}

/// [`candidates`] with extra apt options (`-oDir::…` for a private apt state).
pub fn candidates_with(
    apt_options: &[String],
    pkgs: &[&str],
) -> Result<BTreeMap<String, Option<String>>> {
    let out = output(
        Command::new("apt-cache")
            .args(apt_options)
            .arg("policy")
            .args(pkgs),
    )?;
    Ok(parse_policy(&out, pkgs))
}

fn parse_policy(text: &str, pkgs: &[&str]) -> BTreeMap<String, Option<String>> {
    let mut map: BTreeMap<String, Option<String>> =
        pkgs.iter().map(|p| (p.to_string(), None)).collect();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            current = Some(line.trim_end_matches(':').to_owned());
        } else if let (Some(pkg), Some(v)) = (&current, line.trim().strip_prefix("Candidate:")) {
            let v = v.trim();
            if v != "(none)" {
                map.insert(pkg.clone(), Some(v.to_owned()));
            }
        }
    }
    map
}

/// The package that `linux-image-amd64` depends on (`linux-image-6.1.0-NN-amd64`).
pub fn kernel_abi_package() -> Result<String> {
    let out = output(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
    parse_abi_package(&out)
        .context("apt-cache depends linux-image-amd64 names no linux-image-* package")
}

fn parse_abi_package(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && !p.starts_with('<'))
        .map(str::to_owned)
}

/// Runs a command to completion, returning stdout; the error carries stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let shown = render(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command with its output captured; shown only when it fails.
pub fn run_quiet(cmd: &mut Command) -> Result<()> {
    let shown = render(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Runs a long command with stdout and stderr appended to `log`; on failure the error shows
/// the log's last lines.
pub fn run_logged(cmd: &mut Command, log: &Path) -> Result<()> {
    let shown = render(cmd);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    writeln!(file, "$ {shown}")?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .with_context(|| format!("running {shown}"))?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{shown} failed ({status}); last lines of {}:\n{}",
            log.display(),
            tail.join("\n")
        );
    }
    Ok(())
}

pub fn render(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_candidates() {
        let text = "lvm2:\n  Installed: (none)\n  Candidate: 2.03.16-2\n  Version table:\n     2.03.16-2 500\n\
                    nosuch:\n  Installed: (none)\n  Candidate: (none)\n";
        let m = parse_policy(text, &["lvm2", "nosuch", "absent"]);
        assert_eq!(m["lvm2"].as_deref(), Some("2.03.16-2"));
        assert_eq!(m["nosuch"], None);
        assert_eq!(m["absent"], None);
    }

    #[test]
    fn abi_package() {
        let text = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            parse_abi_package(text).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(parse_abi_package("x\n  Depends: libc6\n"), None);
    }
}
