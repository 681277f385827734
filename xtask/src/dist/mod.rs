//! `cargo xtask dist`: the packages snapshot and snapshot-certify, each from its one asset list
//! ([`assets`]): the release binaries (stripped; their debug symbols in separate files), man
//! pages and completions ([`docs`]), then per package a `.deb` (cargo-deb), an RPM
//! (cargo-generate-rpm) and a tarball with an install script ([`package`]). `--check` verifies
//! them ([`check`]): per package, the three install the same files, lintian finds no error in
//! the `.deb`, the tarball's script installs and removes exactly the list.

mod assets;
mod check;
mod docs;
mod package;

pub use docs::write_all;

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct DistArgs {
    /// Output directory (default: target/dist).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,

    /// Only the man pages and completions (no build, no packages).
    #[arg(long)]
    docs_only: bool,

    /// After building, verify the packages (lintian, rpm and binutils come with
    /// `cargo xtask deps`).
    #[arg(long)]
    check: bool,
}

pub fn run(args: &DistArgs) -> Result<()> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| crate::root().join("target/dist"));
    let written = write_all(&out)?;
    eprintln!(
        "dist: {} man pages and completions in {}",
        written.len(),
        out.display()
    );
    if args.docs_only {
        return Ok(());
    }
    package::binaries(&out)?;
    let built = package::all(&out)?;
    for b in &built {
        for p in [&b.deb, &b.rpm, &b.tarball] {
            eprintln!("dist: {}", p.display());
        }
    }
    if args.check {
        crate::install_deps()?;
        for b in &built {
            check::all(b)?;
        }
    }
    Ok(())
}
