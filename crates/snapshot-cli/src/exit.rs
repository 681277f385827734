//! Exit statuses (README "Exit statuses"); sysexits.h where a code fits.

use snapshot_core::session::FailureKind;

pub const OK: u8 = 0;
/// Unexpected internal failure.
pub const FAILURE: u8 = 1;
/// EX_USAGE: bad command line, DIR or TARGET.
pub const USAGE: u8 = 64;
/// EX_UNAVAILABLE: no provider can snapshot a filesystem (`--require-snapshot`), or nothing to stop.
pub const UNAVAILABLE: u8 = 69;
/// EX_CANTCREAT: a snapshot or the view could not be created.
pub const SNAPSHOT_FAILED: u8 = 73;
/// EX_TEMPFAIL: another session holds the target.
pub const BUSY: u8 = 75;
/// EX_NOPERM: not root.
pub const NO_PERMISSION: u8 = 77;
/// EX_CONFIG: the configuration file is unreadable, untrusted or wrong.
pub const CONFIG: u8 = 78;
/// A writer hook failed `freeze` (or the trust rule) under `--strict-writers`.
pub const WRITER_FAILED: u8 = 79;
/// A snapshot became invalid during the backup: what was read may be broken.
pub const INVALID: u8 = 80;
/// Teardown incomplete: something was left behind (see the log; `snapshot cleanup`).
pub const TEARDOWN_INCOMPLETE: u8 = 81;
/// `--barrier`: no go (abort, end of input, or --barrier-timeout); everything was removed.
pub const ABORTED: u8 = 82;
/// Ended by signal N after an orderly teardown: 128 + N.
pub const SIGNAL_BASE: u8 = 128;

pub fn for_failure(kind: FailureKind) -> u8 {
    match kind {
        FailureKind::Usage => USAGE,
        FailureKind::NotPermitted => NO_PERMISSION,
        FailureKind::Busy => BUSY,
        FailureKind::Unavailable => UNAVAILABLE,
        FailureKind::SnapshotFailed => SNAPSHOT_FAILED,
        FailureKind::WriterFailed => WRITER_FAILED,
        FailureKind::TeardownIncomplete => TEARDOWN_INCOMPLETE,
        FailureKind::Interrupted(sig) => SIGNAL_BASE.saturating_add(sig as u8),
        FailureKind::Aborted => ABORTED,
        FailureKind::Internal => FAILURE,
    }
}

/// The table shown by `--help`.
pub const HELP: &str = "\
Exit status:
  0    success: the view was ready and everything was removed
  64   bad command line, DIR or TARGET (nothing was created)
  69   a filesystem can only be bind-mounted and --require-snapshot was given
  73   a snapshot or the view could not be created (everything made was removed)
  75   another session holds TARGET
  77   not root
  78   the configuration file is unreadable, fails the trust rule, or has a bad key or value
  79   a writer hook failed freeze, or was refused by the trust rule, under --strict-writers
  80   a snapshot became invalid during the backup: what was read may be broken
  81   teardown incomplete: something was left behind (see the log)
  82   --barrier: no go (abort, end of input, or --barrier-timeout); everything was removed
  128+N  ended by signal N (SIGINT, SIGTERM, SIGHUP) after an orderly teardown";
