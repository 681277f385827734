//! `stop-snapshot`: tears down the view that `start-snapshot` left, waits for it, and exits with
//! the teardown's status (see `snapshot --help`).

use clap::Parser;
use snapshot_cli::{exit, fail, held, logger, parse_or_exit};
use std::path::PathBuf;
use std::process::ExitCode;

/// Tear down the view that start-snapshot built under TARGET and report how it went.
#[derive(Debug, Parser)]
#[command(name = "stop-snapshot", version, after_help = exit::HELP)]
struct Cli {
    /// The TARGET given to start-snapshot.
    #[arg(short, long, value_name = "TARGET", default_value = "/mnt")]
    target: PathBuf,

    /// More detail on stderr.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Directory for locks and scratch mounts.
    #[arg(long, value_name = "DIR", default_value = snapshot_core::lock::RUNTIME_DIR, hide = true)]
    runtime_dir: PathBuf,
}

fn main() -> ExitCode {
    let cli: Cli = parse_or_exit();
    logger::init("stop-snapshot", cli.verbose);
    match held::stop(&cli.runtime_dir, &cli.target) {
        Ok(code) => ExitCode::from(code),
        Err(e) => fail("stop-snapshot", &e, exit::FAILURE),
    }
}
