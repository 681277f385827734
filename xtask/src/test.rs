//! `cargo xtask test`: what CI runs. Tiers in order: lint (fmt, clippy), unit + loop (cargo
//! test; the privileged loop tests need root and fail, not skip, when CI is set).

use crate::run as sh;
use crate::{cargo, install_deps};
use anyhow::Result;
use clap::Args;

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Skip `cargo fmt --check` and clippy.
    #[arg(long)]
    no_lint: bool,
}

pub fn run_tiers_impl(args: &TestArgs) -> Result<()> {
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
    }
    sh(cargo().args(["test", "--workspace"]))?;
    Ok(())
}

pub fn run(args: &TestArgs) -> Result<()> {
    run_tiers_impl(args)
}
