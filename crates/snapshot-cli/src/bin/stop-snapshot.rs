//! `stop-snapshot`: tears down the view that `start-snapshot` left, waits for it, and exits with
//! the teardown's status (see `snapshot --help`).

use snapshot_cli::cli::StopCli as Cli;
use snapshot_cli::{exit, fail, held, logger, parse_with_matches, say};
use std::process::ExitCode;

fn main() -> ExitCode {
    let (cli, matches): (Cli, _) = parse_with_matches();
    let args = &cli.held;
    logger::init("stop-snapshot", args.verbose);
    let target = match args.resolve_target(&matches) {
        Ok(t) => t,
        Err(e) => {
            say!("stop-snapshot: error: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    match held::stop(&args.runtime_dir, &target) {
        Ok(code) => ExitCode::from(code),
        Err(e) => fail("stop-snapshot", &e, exit::FAILURE),
    }
}
