//! Logs go to stderr only (stdout is the protocol), and never panic when stderr is gone.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;

struct StderrLogger {
    program: &'static str,
}

impl Log for StderrLogger {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => "error: ",
            Level::Warn => "warning: ",
            Level::Info => "",
            Level::Debug | Level::Trace => "debug: ",
        };
        let _ = writeln!(
            std::io::stderr().lock(),
            "{}: {level}{}",
            self.program,
            record.args()
        );
    }

    fn flush(&self) {}
}

/// 0: warnings and errors; 1 (`-v`): steps; 2 (`-vv`): debug.
pub fn init(program: &'static str, verbosity: u8) {
    let logger: &'static StderrLogger = Box::leak(Box::new(StderrLogger { program }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(match verbosity {
            0 => LevelFilter::Warn,
            1 => LevelFilter::Info,
            _ => LevelFilter::Debug,
        });
    }
}
