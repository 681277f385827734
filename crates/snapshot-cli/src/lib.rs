//! The command line of `snapshot`, `start-snapshot` and `stop-snapshot`: thin over
//! `snapshot-core`. Shared here so the three binaries stay a few lines each.

/// `eprintln!` that never panics. stderr may be a closed pipe (the caller died), and a panic
/// there would skip the teardown and leave the view mounted.
#[macro_export]
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

/// `println!` that never panics (`snapshot status | head -1` closes the pipe early).
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

pub mod args;
pub mod barrier;
pub mod cli;
pub mod config;
pub mod exit;
pub mod held;
pub mod logger;
pub mod run_target;
pub mod seed;

use clap::Parser;
use std::process::ExitCode;

/// Parses arguments, mapping clap's usage errors to exit status 64 (`--help` and `--version`
/// still exit 0); also returns the matches, to tell command-line values from defaults when
/// applying the configuration file.
pub fn parse_with_matches<T: Parser>() -> (T, clap::ArgMatches) {
    let exit_on = |e: clap::Error| -> ! {
        let code = if e.use_stderr() {
            exit::USAGE
        } else {
            exit::OK
        };
        let _ = e.print();
        std::process::exit(code.into());
    };
    let matches = T::command()
        .try_get_matches()
        .unwrap_or_else(|e| exit_on(e));
    let parsed = T::from_arg_matches(&matches).unwrap_or_else(|e| exit_on(e));
    (parsed, matches)
}

/// Applies the configuration file to `args`, or exits 78 (EX_CONFIG) naming the problem.
pub fn configure_or_exit(program: &str, args: &mut args::SessionArgs, matches: &clap::ArgMatches) {
    if let Err(e) = config::resolve(args, matches) {
        say!("{program}: error: {e}");
        std::process::exit(exit::CONFIG.into());
    }
}

/// Prints `error` (with its context chain) and returns `code`.
pub fn fail(program: &str, error: &anyhow::Error, code: u8) -> ExitCode {
    say!("{program}: error: {error:#}");
    ExitCode::from(code)
}
