//! The command lines of `snapshot`, `start-snapshot` and `stop-snapshot` (clap derive), here
//! rather than in the binaries so that `cargo xtask dist` renders the man pages and shell
//! completions from the very definitions the binaries parse with.

use crate::args::SessionArgs;
use crate::exit;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

const ABOUT: &str = "Consistent, read-only, point-in-time views of live filesystems for backups";

const LONG_ABOUT: &str = "\
Consistent, read-only, point-in-time views of live filesystems for backups.

Asks applications to flush and pause (writer hooks), snapshots every filesystem holding a DIR,
lets the applications go on, and mounts the snapshots read-only under TARGET at their original
paths: TARGET/DIR shows DIR as it was at the snapshot instant. Then it writes one line to stdout
(`done`, or a JSON manifest with --json) and closes stdout: that is the signal that the view is
ready. It holds the view until its stdin reaches EOF (or SIGINT/SIGTERM/SIGHUP), then removes
every mount and snapshot it made and exits. EOF on stdout without the ready line means failure;
the exit status says why.

Filesystems that no provider can snapshot are bind-mounted read-only with a warning (not
consistent), unless --require-snapshot.

Example:  snapshot -t /mnt/view /srv /home | { read -r ready && restic backup /mnt/view; }";

#[derive(Debug, Parser)]
#[command(
    name = "snapshot",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = exit::HELP,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Cmd>,

    #[command(flatten)]
    pub session: SessionArgs,

    /// Internal: hold for start-snapshot until SIGUSR1.
    #[arg(long, hide = true)]
    pub holder: bool,

    /// Internal: be the freeze watchdog of a session (reads its messages on stdin).
    #[arg(long, hide = true)]
    pub watchdog: bool,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Show which provider takes each DIR, and why, without side effects.
    ///
    /// For each DIR: its mount, filesystem and the provider that will snapshot it, why the
    /// providers tried before it declined, and whether the result will be consistent.
    Plan(SessionArgs),
    /// Build the view, run CMD, tear down; exit with CMD's status.
    ///
    /// The exit status is CMD's, or the snapshot's error status when the snapshot failed or
    /// went wrong. CMD gets SNAPSHOT_TARGET, SNAPSHOT_SESSION and SNAPSHOT_MANIFEST (JSON) in
    /// its environment; a SIGINT, SIGTERM or SIGHUP to snapshot is passed on to CMD, and the
    /// view stays until CMD has exited. With --in-place, CMD sees each DIR's snapshot at the
    /// DIR's own path.
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Remove what dead sessions left behind.
    ///
    /// Follows the journals of dead sessions (and view mounts named with a session id):
    /// unmount, remove snapshots, delete journals. Never touches a live session's objects,
    /// nor anything the tool did not create.
    Cleanup(CleanupArgs),
    /// Show the sessions recorded in the journals: live or dead, target, snapshots.
    Status(CleanupArgs),
    /// Freeze-only: pause the writers and FIFREEZE the filesystems holding the DIRs.
    ///
    /// For an external snapshot engine (a cloud volume snapshot, a CSI VolumeSnapshot, a
    /// hypervisor): returns once everything is frozen, printing each filesystem frozen (and
    /// those that cannot be, with the reason); `snapshot thaw` ends it. The watchdog thaws
    /// everything after --freeze-timeout whatever happens. Exit 0 when something is frozen,
    /// 69 when no filesystem holding the DIRs can be.
    #[command(after_help = FREEZE_EXAMPLES)]
    Freeze(FreezeArgs),
    /// End what `snapshot freeze` froze: thaw the filesystems, send the writers `thaw`.
    ///
    /// Exit 0 when thawed; 80 when the watchdog had thawed at --freeze-timeout before (a
    /// snapshot taken after that instant is not consistent); 69 when nothing is frozen.
    Thaw(ThawArgs),
    /// Release a `start-snapshot --barrier` session waiting at its barrier.
    ///
    /// The holder of TARGET, frozen at its barrier, makes its snapshots, thaws, builds the
    /// view; `snapshot go` prints its ready line (`done`, or the --json manifest with each
    /// snapshot's instant) and exits 0, or the holder's log and exit status when it failed.
    /// Run it on every host at once: that is the one instant. `stop-snapshot` instead aborts.
    Go(HeldArgs),
}

#[derive(Debug, clap::Args)]
pub struct FreezeArgs {
    /// Directories whose filesystems to freeze.
    #[arg(value_name = "DIR", required = true)]
    pub dirs: Vec<PathBuf>,

    /// The longest everything stays frozen: the watchdog thaws it then (seconds, or with a
    /// unit: 500ms, 30s, 2m). Also the time each writer hook gets.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::args::parse_duration)]
    pub freeze_timeout: std::time::Duration,

    /// Writer hook directory; repeatable; replaces the defaults.
    #[arg(long = "writers-dir", value_name = "DIR")]
    pub writers_dirs: Vec<PathBuf>,

    /// Run no writer hooks.
    #[arg(long, conflicts_with = "writers_dirs")]
    pub no_writers: bool,

    /// A writer hook that fails `freeze` is an error: nothing stays frozen (exit 79).
    #[arg(long)]
    pub strict_writers: bool,

    /// Print a JSON record of the freeze (session, frozen, not_frozen, deadline).
    #[arg(long)]
    pub json: bool,

    /// More detail on stderr.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Directory for locks and scratch state.
    #[arg(long, value_name = "DIR", default_value = snapshot_core::lock::RUNTIME_DIR, hide = true)]
    pub runtime_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ThawArgs {
    /// Only this freeze (its session id, as `snapshot freeze --json` or `status` show).
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,

    /// Print a JSON record of what was thawed.
    #[arg(long)]
    pub json: bool,

    /// More detail on stderr.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Directory for locks and scratch state.
    #[arg(long, value_name = "DIR", default_value = snapshot_core::lock::RUNTIME_DIR, hide = true)]
    pub runtime_dir: PathBuf,
}

const FREEZE_EXAMPLES: &str = "\
Examples:
  snapshot freeze --freeze-timeout 2m /var/lib/postgresql && take-cloud-snapshot; snapshot thaw
  Velero pre/post hooks: [\"/usr/sbin/snapshot\", \"freeze\", \"--freeze-timeout\", \"2m\", \"/data\"]
                         [\"/usr/sbin/snapshot\", \"thaw\"]";

/// How stop-snapshot and snapshot go name the start-snapshot session they act on.
#[derive(Debug, clap::Args)]
pub struct HeldArgs {
    /// The TARGET given to start-snapshot (default: the configuration's, else /mnt).
    #[arg(short, long, value_name = "TARGET", default_value = "/mnt")]
    pub target: PathBuf,

    /// Configuration file (for the default TARGET); default /etc/snapshot/snapshot.toml.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// More detail on stderr.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Directory for locks and scratch mounts.
    #[arg(long, value_name = "DIR", default_value = snapshot_core::lock::RUNTIME_DIR, hide = true)]
    pub runtime_dir: PathBuf,
}

impl HeldArgs {
    /// TARGET from the command line, else the configuration's, else /mnt. `matches` are the
    /// ones these arguments were parsed from.
    pub fn resolve_target(
        &self,
        matches: &clap::ArgMatches,
    ) -> Result<PathBuf, crate::config::ConfigError> {
        if matches.value_source("target") == Some(clap::parser::ValueSource::CommandLine) {
            return Ok(self.target.clone());
        }
        let (cfg, _) = crate::config::Config::load(self.config.as_deref())?;
        Ok(cfg.target.unwrap_or_else(|| self.target.clone()))
    }
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub session: SessionArgs,

    /// Run CMD in a private mount namespace where each DIR shows its snapshot at its own
    /// path (read-only), so that the backup records the real paths; the binds vanish with
    /// the namespace. Binds are non-recursive, like the view: a filesystem below a DIR that
    /// is not itself a DIR shows as an empty directory. With `/` among the DIRs, CMD's root
    /// is the view, with the live /proc, /sys, /dev, /run and /tmp bound into it.
    #[arg(long)]
    pub in_place: bool,

    /// With --in-place: bind this live directory writable at its own path, over the
    /// snapshots (the backup program's cache, a local repository); repeatable. Default (also
    /// when given): ~/.cache and ~/.config/borg where they exist, for a root-owned home. The
    /// backup shows these live, not as snapshotted: exclude them.
    #[arg(long, value_name = "PATH", requires = "in_place")]
    pub writable: Vec<PathBuf>,

    /// The command to run while the view is mounted (after `--`).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

const RUN_EXAMPLES: &str = "\
Examples:
  snapshot run -t /mnt/view /srv -- restic backup /mnt/view/srv
  snapshot run --in-place /srv /home -- restic backup /srv /home
  snapshot run --in-place --writable /srv/restic-repo / /home -- \\
      restic -r /srv/restic-repo backup --one-file-system --exclude-caches \\
      --exclude /srv/restic-repo / /home";

#[derive(Debug, clap::Args)]
pub struct CleanupArgs {
    /// Directory for locks and scratch state (`status` lists freeze-only sessions there).
    #[arg(long, value_name = "DIR", default_value = snapshot_core::lock::RUNTIME_DIR, hide = true)]
    pub runtime_dir: std::path::PathBuf,

    /// Show what would be done, do nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,

    /// More detail on stderr.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Directory of filesystems.d provider scripts (for removing their snapshots).
    #[arg(long, value_name = "DIR")]
    pub scripts_dir: Option<std::path::PathBuf>,

    #[arg(long, value_name = "DIR", default_value = snapshot_core::recovery::journal::STATE_DIR, hide = true)]
    pub state_dir: std::path::PathBuf,
}

/// Build the snapshot view under TARGET and return once it is ready (exit 0, the ready line on
/// stdout) or failed (non-zero, the reason on stderr). The view stays until `stop-snapshot`.
#[derive(Debug, Parser)]
#[command(name = "start-snapshot", version, after_help = exit::HELP)]
pub struct StartCli {
    #[command(flatten)]
    pub session: SessionArgs,
}

/// Tear down the view that start-snapshot built under TARGET and report how it went.
#[derive(Debug, Parser)]
#[command(name = "stop-snapshot", version, after_help = exit::HELP)]
pub struct StopCli {
    #[command(flatten)]
    pub held: HeldArgs,
}
