//! `snapshot-certify`: the certification harness ([`snapshot_certify::run`]) against the
//! installed `snapshot` (or `--snapshot-bin`). Exit statuses: [`snapshot_certify::EXIT_HELP`].

use clap::Parser;
use snapshot_certify::{Cli, Outcome, INSTALLED_SNAPSHOT};
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let snapshot = cli
        .args
        .snapshot_bin
        .clone()
        .unwrap_or_else(|| PathBuf::from(INSTALLED_SNAPSHOT));
    match snapshot_certify::run(&cli.args, &snapshot) {
        Ok(Outcome::Passed) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => {
            eprintln!("snapshot-certify: certification failed (see the verdicts above)");
            ExitCode::from(1)
        }
        Ok(Outcome::Interrupted) => ExitCode::from(1),
        Err(e) => {
            eprintln!("snapshot-certify: {e:#}");
            ExitCode::from(2)
        }
    }
}
