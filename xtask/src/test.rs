//! `cargo xtask test`: what CI runs, every tier in order — lint (fmt, clippy, also over the
//! guest-only tests), unit + loop (`cargo test`; the privileged loop tests need root and fail,
//! not skip, when CI is set), the packages (`cargo xtask dist --check`: the .deb, the RPM and
//! the tarball install the same files, lintian finds no error), then the VM tier (`cargo xtask
//! vm-test`: LVM and ZFS in a QEMU guest, the server guests).

use crate::run as sh;
use crate::{cargo, install_deps};
use anyhow::{Context, Result};
use clap::Args;
use std::process::Command;

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Skip `cargo fmt --check` and clippy.
    #[arg(long)]
    no_lint: bool,

    /// Skip the VM tier (quicker local runs; CI runs it).
    #[arg(long)]
    no_vm: bool,
}

pub fn run(args: &TestArgs) -> Result<()> {
    install_deps()?;
    if !args.no_lint {
        sh(cargo().args(["fmt", "--all", "--", "--check"]))?;
        sh(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        // The guest-only test targets are built only with this feature.
        sh(cargo().args([
            "clippy",
            "-p",
            "snapshot-cli",
            "--all-targets",
            "--features",
            "vm-tests",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    sh(cargo().args(["test", "--workspace"]))?;
    let me = std::env::current_exe().context("finding the xtask binary")?;
    sh(Command::new(&me).args(["dist", "--check"]))?;
    if !args.no_vm {
        sh(Command::new(&me).arg("vm-test"))?;
    }
    Ok(())
}
