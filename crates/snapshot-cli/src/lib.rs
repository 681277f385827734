//! The command line of `snapshot`, `start-snapshot` and `stop-snapshot`: thin over
//! `snapshot-core`. Shared here so the three binaries stay a few lines each.

pub mod args;
pub mod exit;
pub mod held;
pub mod logger;
pub mod seed;

use clap::Parser;
use std::process::ExitCode;

/// Parses arguments, mapping clap's usage errors to exit status 64 (`--help` and `--version`
/// still exit 0).
pub fn parse_or_exit<T: Parser>() -> T {
    match T::try_parse() {
        Ok(v) => v,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            std::process::exit(code.into());
        }
    }
}

/// Prints `error` (with its context chain) and returns `code`.
pub fn fail(program: &str, error: &anyhow::Error, code: u8) -> ExitCode {
    eprintln!("{program}: error: {error:#}");
    ExitCode::from(code)
}
