//! `start-snapshot`: like `snapshot`, but returns once the view is ready, leaving a detached
//! holder that `stop-snapshot` ends.

use snapshot_cli::cli::StartCli as Cli;
use snapshot_cli::{configure_or_exit, exit, fail, held, logger, parse_with_matches};
use std::process::ExitCode;

fn main() -> ExitCode {
    let (mut cli, matches): (Cli, _) = parse_with_matches();
    configure_or_exit("start-snapshot", &mut cli.session, &matches);
    logger::init("start-snapshot", cli.session.verbose);
    let forwarded: Vec<_> = std::env::args_os().skip(1).collect();
    match held::start(&cli.session, forwarded) {
        Ok(code) => ExitCode::from(code),
        Err(e) => fail("start-snapshot", &e, exit::FAILURE),
    }
}
