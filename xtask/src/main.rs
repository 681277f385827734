//! `cargo xtask`: the project's own commands — `test` (every tier, as CI runs it), `demo`
//! (the main job on loop-device fixtures it makes and removes), `bench`, `certify`,
//! `vm-test`, `dist` (the .deb, the RPM, the tarball).

mod bench;
mod certify;
mod demo;
mod dist;
mod test;
mod vm;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "snapshot's development commands")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install missing system packages, then run every test tier (lint, unit, loop).
    Test(test::TestArgs),
    /// Show the main job: snapshot three loop-device filesystems (nested and siblings) into a
    /// read-only view, change the originals, compare, tear down. Root.
    Demo,
    /// Install the Debian packages the tests and the demo need (only the missing ones).
    Deps,
    /// Time to ready, frozen window and teardown of real sessions on 1/4/16 btrfs and 1/2/4
    /// XFS/ext4 (freeze) loop-device filesystems, or LVM in the guest (`--lvm`), as ratios to
    /// the raw kernel work measured in the same run. Root.
    Bench(bench::BenchArgs),
    /// Certify providers: concurrent writers with checkable invariants while snapshot sessions
    /// are taken in a loop; the bind fallback is the negative control. Root.
    Certify(certify::CertifyArgs),
    /// The VM tier: boot a cached Debian guest under QEMU/TCG and run the guest-only tests
    /// (LVM classic and thin, ext4 and XFS; ZFS, its module built by DKMS and cached) in it.
    /// Root.
    VmTest(vm::VmTestArgs),
    /// The packages: release binaries (stripped, debug symbols apart), man pages, shell
    /// completions, a .deb, an RPM and a tarball with an install script, all from one asset
    /// list, into target/dist; `--check` verifies them.
    Dist(dist::DistArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Test(args) => test::run(&args),
        Cmd::Demo => demo::run_demo(),
        Cmd::Deps => install_deps(),
        Cmd::Bench(args) => bench::run_bench(&args),
        Cmd::VmTest(args) => vm::run(&args),
        Cmd::Certify(args) => certify::run(&args),
        Cmd::Dist(args) => dist::run(&args),
    }
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_owned()
}

pub fn install_deps() -> Result<()> {
    run(Command::new("bash").arg(root().join("ci/install-deps.sh")))
}

/// Runs a command in the workspace root, failing with its rendering when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    eprintln!("xtask: {shown}");
    let status = cmd
        .current_dir(root())
        .status()
        .with_context(|| format!("running {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}
