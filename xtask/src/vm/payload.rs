//! The per-run payload: the tool's binaries, the guest-only test executables and the guest
//! scripts of `vm-tests/`, packed into a small read-only ext4 disk (serial `payload`) that
//! the initramfs mounts at `/run/vmtest`. Nothing of it goes into the cached image.
//!
//! The integration tests find the binaries through `env!("CARGO_BIN_EXE_*")`: absolute host
//! paths baked in at compile time. The guest's init makes those paths symlinks into the
//! payload (the `links` file lists them), so the tests run unchanged.

use super::host;
use crate::{cargo, root};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BINARIES: &[&str] = &["snapshot", "start-snapshot", "stop-snapshot"];

#[derive(Debug)]
pub struct BuildOptions {
    pub release: bool,
    /// The test targets to build: snapshot-cli's guest-only targets (`required-features =
    /// ["vm-tests"]`: lvm, zfs, wholesystem) and `protocol` for the loop tier.
    pub tests: Vec<String>,
}

#[derive(Debug)]
pub struct Built {
    /// (name, path on the host)
    pub bins: Vec<(String, PathBuf)>,
    /// (test target name, executable)
    pub tests: Vec<(String, PathBuf)>,
    /// More files for the payload's top directory, under their own names (the systemd
    /// guest's `.deb`).
    pub files: Vec<PathBuf>,
}

impl Built {
    /// The binaries and only the test targets `names` (what one guest boot runs).
    pub fn only(&self, names: &[&str]) -> Built {
        Built {
            bins: self.bins.clone(),
            tests: self
                .tests
                .iter()
                .filter(|(n, _)| names.contains(&n.as_str()))
                .cloned()
                .collect(),
            files: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Message {
    reason: String,
    #[serde(default)]
    target: Option<Target>,
    #[serde(default)]
    executable: Option<PathBuf>,
    #[serde(default)]
    package_id: String,
}

#[derive(Debug, Deserialize)]
struct Target {
    name: String,
    kind: Vec<String>,
}

/// Builds the binaries and the guest test executables; returns their paths from cargo's JSON
/// messages.
pub fn build(opts: &BuildOptions) -> Result<Built> {
    let mut cmd = cargo();
    let wanted: Vec<&str> = opts.tests.iter().map(String::as_str).collect();
    // Without a test target (only the systemd guest, whose tests are a script), the binaries
    // alone: `cargo test --no-run` without `--test` would build every test target.
    let build = if wanted.is_empty() {
        ["build", "-p", "snapshot-cli"].as_slice()
    } else {
        ["test", "-p", "snapshot-cli", "--no-run"].as_slice()
    };
    cmd.current_dir(root()).args(build).args([
        "--features",
        "vm-tests",
        "--message-format=json-render-diagnostics",
    ]);
    for t in &wanted {
        cmd.args(["--test", t]);
    }
    if opts.release {
        cmd.arg("--release");
    }
    eprintln!("vm-test: {}", host::render(&cmd));
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the guest tests failed ({})", out.status);
    }
    parse_messages(&String::from_utf8_lossy(&out.stdout), &wanted)
}

fn parse_messages(stdout: &str, wanted_tests: &[&str]) -> Result<Built> {
    let mut bins = Vec::new();
    let mut tests = Vec::new();
    for line in stdout.lines().filter(|l| l.starts_with('{')) {
        let msg: Message = serde_json::from_str(line)
            .with_context(|| format!("cargo printed an unreadable message: {line}"))?;
        if msg.reason != "compiler-artifact" {
            continue;
        }
        let (Some(target), Some(exe)) = (msg.target, msg.executable) else {
            continue;
        };
        // The package id names the package (`path+file:///…/snapshot-cli#0.1.0`, or the older
        // `snapshot-cli 0.1.0 (path+file://…)`).
        if !msg.package_id.contains("snapshot-cli") {
            continue;
        }
        if target.kind.iter().any(|k| k == "bin") && BINARIES.contains(&target.name.as_str()) {
            bins.push((target.name, exe));
        } else if target.kind.iter().any(|k| k == "test")
            && wanted_tests.contains(&target.name.as_str())
        {
            tests.push((target.name, exe));
        }
    }
    for b in BINARIES {
        if !bins.iter().any(|(n, _)| n == b) {
            bail!("cargo reported no executable for the binary {b}");
        }
    }
    for t in wanted_tests {
        if !tests.iter().any(|(n, _)| n == t) {
            bail!("cargo reported no executable for the test target {t}");
        }
    }
    Ok(Built {
        bins,
        tests,
        files: Vec::new(),
    })
}

/// `vm-tests/`: what runs inside the guests.
pub fn vm_tests_dir() -> PathBuf {
    root().join("vm-tests")
}

/// The workspace's target directory, as cargo sees it (`CARGO_TARGET_DIR` included).
pub fn target_dir() -> Result<PathBuf> {
    #[derive(Deserialize)]
    struct Metadata {
        target_directory: PathBuf,
    }
    let out = host::output(cargo().current_dir(root()).args([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
    ]))?;
    let m: Metadata = serde_json::from_str(&out).context("reading cargo metadata")?;
    Ok(m.target_directory)
}

/// Packs the payload into `run_dir/payload.img`. `script` replaces the test runner.
pub fn pack(
    built: &Built,
    harness_args: &[String],
    script: Option<&Path>,
    run_dir: &Path,
) -> Result<PathBuf> {
    let dir = run_dir.join("payload");
    std::fs::create_dir_all(dir.join("bin"))?;
    std::fs::create_dir_all(dir.join("tests"))?;
    let scripts = vm_tests_dir();
    place(&scripts.join("init"), &dir.join("init"))?;
    // The systemd guest's pre-init (`init=/run/vmtest/systemd-init`).
    place(&scripts.join("systemd-init"), &dir.join("systemd-init"))?;
    for f in &built.files {
        let name = f
            .file_name()
            .with_context(|| format!("{} has no file name", f.display()))?;
        place(f, &dir.join(name))?;
    }
    let runner = script.map_or_else(|| scripts.join("run-tests.sh"), Path::to_owned);
    // Copied, not linked: the runner is run with bash, its mode does not matter.
    std::fs::copy(&runner, dir.join("run-tests.sh"))
        .with_context(|| format!("copying {}", runner.display()))?;
    // The leak check every guest script ends with.
    std::fs::copy(scripts.join("leak-check.sh"), dir.join("leak-check.sh"))
        .context("copying vm-tests/leak-check.sh")?;
    let mut links = String::new();
    for (name, path) in &built.bins {
        place(path, &dir.join("bin").join(name))?;
        links.push_str(&format!("bin/{name}\t{}\n", path.display()));
    }
    for (name, path) in &built.tests {
        place(path, &dir.join("tests").join(name))?;
    }
    // This xtask itself, so guest scripts can run `xtask certify` and `xtask bench --lvm`.
    let xtask = std::env::current_exe().context("locating the xtask executable")?;
    place(&xtask, &dir.join("bin/xtask"))?;
    std::fs::write(dir.join("links"), links)?;
    // One argument per line; the runner reads them into an array.
    let mut args = String::new();
    for a in harness_args {
        if a.contains('\n') {
            bail!("a test harness argument contains a newline: {a:?}");
        }
        args.push_str(a);
        args.push('\n');
    }
    std::fs::write(dir.join("harness-args"), args)?;

    let bytes = tree_size(&dir)?;
    let mib = (bytes + bytes / 4) / (1 << 20) + 32;
    let img = run_dir.join("payload.img");
    host::run_quiet(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "payload", "-O", "^has_journal", "-d"])
            .arg(&dir)
            .arg(&img)
            .arg(format!("{mib}M")),
    )
    .context("packing the payload disk")?;
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(img)
}

/// Hard link when possible (same filesystem), else copy; either keeps the mode.
fn place(from: &Path, to: &Path) -> Result<()> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to)
        .map(drop)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

fn tree_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let meta = e.metadata()?;
        total += if meta.is_dir() {
            tree_size(&e.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_binaries_and_test_targets() {
        let msgs = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/crates/snapshot-cli#0.1.0","target":{"name":"snapshot","kind":["bin"]},"executable":"/w/target/debug/snapshot"}
{"reason":"compiler-artifact","package_id":"path+file:///w/crates/snapshot-cli#0.1.0","target":{"name":"start-snapshot","kind":["bin"]},"executable":"/w/target/debug/start-snapshot"}
{"reason":"compiler-artifact","package_id":"path+file:///w/crates/snapshot-cli#0.1.0","target":{"name":"stop-snapshot","kind":["bin"]},"executable":"/w/target/debug/stop-snapshot"}
{"reason":"compiler-artifact","package_id":"path+file:///w/crates/snapshot-cli#0.1.0","target":{"name":"lvm","kind":["test"]},"executable":"/w/target/debug/deps/lvm-abc"}
{"reason":"compiler-artifact","package_id":"path+file:///w/crates/snapshot-cli#0.1.0","target":{"name":"snapshot_cli","kind":["lib"]},"executable":null}
{"reason":"compiler-artifact","package_id":"registry+https://x#serde@1.0.0","target":{"name":"serde","kind":["lib"]},"executable":null}
{"reason":"build-finished","success":true}"#;
        let b = parse_messages(msgs, &["lvm"]).unwrap();
        assert_eq!(b.bins.len(), 3);
        assert_eq!(
            b.tests,
            vec![(
                "lvm".to_owned(),
                PathBuf::from("/w/target/debug/deps/lvm-abc")
            )]
        );
        assert!(parse_messages(msgs, &["lvm", "protocol"]).is_err());
    }
}
