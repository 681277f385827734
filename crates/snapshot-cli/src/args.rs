//! Options shared by the session commands.

use clap::Args;
use snapshot_core::session::{Fault, SessionRequest};
use snapshot_core::writers::{WriterConfig, DEFAULT_DIRS};
use snapshot_providers::{ProviderConfig, ProviderOrder};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct SessionArgs {
    /// Directories to back up: absolute paths to existing directories.
    #[arg(value_name = "DIR")]
    pub dirs: Vec<PathBuf>,

    /// Empty directory under which the view is built (TARGET/DIR shows DIR as snapshotted).
    /// `snapshot run` without it uses a private directory of its own.
    #[arg(short, long, value_name = "TARGET", default_value = "/mnt")]
    pub target: PathBuf,

    /// More detail on stderr (-v: steps and timings, -vv: debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Print a JSON manifest of what is mounted where instead of `done`.
    #[arg(long)]
    pub json: bool,

    /// Fail (before freezing anything) when a filesystem can only be bind-mounted.
    #[arg(long)]
    pub require_snapshot: bool,

    /// Writer hook directory; repeatable; replaces the defaults (/etc/snapshot/writers.d,
    /// /usr/lib/snapshot/writers.d, /etc/qemu/fsfreeze-hook.d). The first directory holding a
    /// name wins; a symlink to /dev/null there disables that name.
    #[arg(long = "writers-dir", value_name = "DIR")]
    pub writers_dirs: Vec<PathBuf>,

    /// Run no writer hooks.
    #[arg(long, conflicts_with = "writers_dirs")]
    pub no_writers: bool,

    /// A writer hook that fails `freeze` is an error (default: a warning).
    #[arg(long)]
    pub strict_writers: bool,

    /// Time each writer hook gets for freeze or thaw, and each provider script for one call,
    /// before its process group is killed (seconds, or with a unit: 500ms, 30s, 2m).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub freeze_timeout: Duration,

    /// Directory of filesystems.d provider scripts (`SCRIPT snapshot|remove SOURCE TARGET`,
    /// the snapshot mounted at "$TARGET$SOURCE").
    #[arg(long, value_name = "DIR")]
    pub scripts_dir: Option<PathBuf>,

    /// Copy-on-write space of a classic LVM snapshot: SIZE (512M, 2G; a plain number is MiB)
    /// or NN%ORIGIN, rounded up to whole extents.
    #[arg(long, value_name = "SIZE|NN%ORIGIN", default_value = "10%ORIGIN")]
    pub lvm_size: snapshot_providers::lvm::LvmSize,

    /// Device-snapshot command for freezable filesystems (XFS, ext4) on devices the freeze
    /// provider cannot clone itself: `CMD create DEVICE NAME` (inside the frozen window;
    /// prints the copy's block device) and `CMD remove DEVICE NAME COPY_DEVICE`.
    #[arg(long, value_name = "PATH")]
    pub freeze_command: Option<PathBuf>,

    /// Providers that may snapshot a filesystem, in the order they are tried, comma-separated
    /// (default: zfs,btrfs,lvm-thin,lvm,freeze,script,bind). Those left out are not used; the
    /// bind fallback always comes last (listed last or not at all) and is governed by
    /// --require-snapshot.
    #[arg(long, value_name = "LIST")]
    pub providers: Option<ProviderOrder>,

    /// Say `frozen` once every writer has frozen, and make the snapshots only on `go`: a line
    /// on stdin (`abort` or end of input: thaw, remove, exit 82); with start-snapshot, which
    /// then returns at the barrier, `snapshot go -t TARGET` (stop-snapshot aborts). For one
    /// instant across machines.
    #[arg(long)]
    pub barrier: bool,

    /// The longest the writers stay frozen at the barrier waiting for go (then: abort, 82).
    /// Must be shorter than --freeze-timeout.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub barrier_timeout: Duration,

    /// Configuration file with defaults for these options (a command-line value wins);
    /// default /etc/snapshot/snapshot.toml when it exists.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory for locks and scratch mounts.
    #[arg(long, value_name = "DIR", default_value = snapshot_core::lock::RUNTIME_DIR, hide = true)]
    pub runtime_dir: PathBuf,

    /// Directory for session journals (persistent: snapshots survive a reboot).
    #[arg(long, value_name = "DIR", default_value = snapshot_core::recovery::journal::STATE_DIR, hide = true)]
    pub state_dir: PathBuf,

    /// Whether the configuration file named the target (`snapshot run` uses a private one
    /// unless something did).
    #[arg(skip)]
    pub target_from_config: bool,

    /// The configuration file's `writable` list (for `run --in-place`, whose `--writable`
    /// is not a session option).
    #[arg(skip)]
    pub config_writable: Vec<PathBuf>,

    /// Testing aid: honour SNAPSHOT_FAULT=STEP[:kill|:stop] (crash-safety tests). Without this
    /// flag the variable is ignored, so it cannot strike by accident.
    #[arg(long, hide = true)]
    pub fault_injection: bool,
}

impl SessionArgs {
    pub fn request(&self) -> SessionRequest {
        let dirs = if self.writers_dirs.is_empty() {
            DEFAULT_DIRS.iter().map(PathBuf::from).collect()
        } else {
            self.writers_dirs.clone()
        };
        SessionRequest {
            dirs: self.dirs.clone(),
            target: self.target.clone(),
            require_snapshot: self.require_snapshot,
            writers: (!self.no_writers).then_some(WriterConfig {
                dirs,
                timeout: self.freeze_timeout,
                strict: self.strict_writers,
            }),
            runtime_dir: self.runtime_dir.clone(),
            state_dir: self.state_dir.clone(),
            watchdog_exe: std::env::current_exe()
                .ok()
                .map(|p| p.with_file_name("snapshot")),
            fault: self.fault(),
            freeze_timeout: self.freeze_timeout,
            barrier: None,
        }
    }

    /// The fault to inject: only with `--fault-injection` *and* `SNAPSHOT_FAULT` set.
    fn fault(&self) -> Option<Fault> {
        if !self.fault_injection {
            return None;
        }
        let spec = std::env::var("SNAPSHOT_FAULT").ok()?;
        match Fault::parse(&spec) {
            Ok(f) => Some(f),
            Err(e) => {
                log::error!("SNAPSHOT_FAULT: {e}; no fault injected");
                None
            }
        }
    }

    pub fn provider_config(&self) -> ProviderConfig {
        ProviderConfig {
            scripts_dir: self.scripts_dir.clone(),
            lvm_size: self.lvm_size,
            freeze_command: self.freeze_command.clone(),
            order: self.providers.clone().unwrap_or_default(),
            script_timeout: self.freeze_timeout,
        }
    }
}

/// `30`, `1.5`, `500ms`, `30s`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 30, 30s, 500ms, 2m)"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("{s:?}: the duration must be positive"));
    }
    match Duration::try_from_secs_f64(v * scale) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!("{s:?}: the duration must be positive")),
        Err(_) => Err(format!("{s:?}: the duration is too long")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
