//! `stop-snapshot`: tears down the view that `start-snapshot` left, waits for it, and exits with
//! the teardown's status (see `snapshot --help`).

use clap::Parser;
use snapshot_cli::{exit, fail, held, logger, parse_with_matches, say};
use std::path::PathBuf;
use std::process::ExitCode;

/// Tear down the view that start-snapshot built under TARGET and report how it went.
#[derive(Debug, Parser)]
#[command(name = "stop-snapshot", version, after_help = exit::HELP)]
struct Cli {
    /// The TARGET given to start-snapshot (default: the configuration's, else /mnt).
    #[arg(short, long, value_name = "TARGET", default_value = "/mnt")]
    target: PathBuf,

    /// Configuration file (for the default TARGET); default /etc/snapshot/snapshot.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// More detail on stderr.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Directory for locks and scratch mounts.
    #[arg(long, value_name = "DIR", default_value = snapshot_core::lock::RUNTIME_DIR, hide = true)]
    runtime_dir: PathBuf,
}

fn main() -> ExitCode {
    let (mut cli, matches): (Cli, _) = parse_with_matches();
    logger::init("stop-snapshot", cli.verbose);
    if matches.value_source("target") != Some(clap::parser::ValueSource::CommandLine) {
        match snapshot_cli::config::Config::load(cli.config.as_deref()) {
            Ok((cfg, _)) => {
                if let Some(t) = cfg.target {
                    cli.target = t;
                }
            }
            Err(e) => {
                say!("stop-snapshot: error: {e}");
                return ExitCode::from(exit::CONFIG);
            }
        }
    }
    match held::stop(&cli.runtime_dir, &cli.target) {
        Ok(code) => ExitCode::from(code),
        Err(e) => fail("stop-snapshot", &e, exit::FAILURE),
    }
}
