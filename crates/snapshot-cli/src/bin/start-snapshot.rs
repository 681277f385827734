//! `start-snapshot`: like `snapshot`, but returns once the view is ready, leaving a detached
//! holder that `stop-snapshot` ends.

use clap::Parser;
use snapshot_cli::args::SessionArgs;
use snapshot_cli::{configure_or_exit, exit, fail, held, logger, parse_with_matches};
use std::process::ExitCode;

/// Build the snapshot view under TARGET and return once it is ready (exit 0, the ready line on
/// stdout) or failed (non-zero, the reason on stderr). The view stays until `stop-snapshot`.
#[derive(Debug, Parser)]
#[command(name = "start-snapshot", version, after_help = exit::HELP)]
struct Cli {
    #[command(flatten)]
    session: SessionArgs,
}

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
