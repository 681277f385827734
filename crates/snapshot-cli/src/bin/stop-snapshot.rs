//! `stop-snapshot`: tears down the view that `start-snapshot` left, waits for it, and exits with
//! the teardown's status (see `snapshot --help`).

use snapshot_cli::cli::StopCli as Cli;
use snapshot_cli::{exit, fail, held, logger, parse_with_matches, say};
use std::process::ExitCode;

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
