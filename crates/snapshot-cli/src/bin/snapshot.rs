//! `snapshot`: consistent, read-only, point-in-time views of live filesystems for backups.

use clap::{Parser, Subcommand};
use snapshot_cli::args::SessionArgs;
use snapshot_cli::seed::{run_session, HoldUntil, Signals};
use snapshot_cli::{exit, fail, held, logger, parse_or_exit};
use snapshot_core::session::plan_request;
use std::process::ExitCode;

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
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,

    #[command(flatten)]
    session: SessionArgs,

    /// Internal: hold for start-snapshot until SIGUSR1.
    #[arg(long, hide = true)]
    holder: bool,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Show, without side effects, the mount, filesystem and provider of each DIR, why other
    /// providers declined, and whether the result will be consistent.
    Plan(SessionArgs),
}

fn main() -> ExitCode {
    let cli: Cli = parse_or_exit();
    match cli.command {
        Some(Cmd::Plan(args)) => plan(&args),
        None => session(&cli.session, cli.holder),
    }
}

fn session(args: &SessionArgs, holder: bool) -> ExitCode {
    logger::init("snapshot", args.verbose);
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            return fail(
                "snapshot",
                &e.context("installing signal handlers"),
                exit::FAILURE,
            )
        }
    };
    let providers = snapshot_providers::providers(&args.provider_config());
    let until = if holder {
        HoldUntil::Usr1
    } else {
        HoldUntil::StdinEof
    };
    let status = run_session(args, &providers, &signals, until, |s| {
        if holder {
            held::holder_ready(&args.runtime_dir, s.target(), &s.id)?;
        }
        Ok(())
    });
    if holder {
        held::holder_finished(&args.runtime_dir, &args.target, status);
    }
    ExitCode::from(status)
}

fn plan(args: &SessionArgs) -> ExitCode {
    logger::init("snapshot", args.verbose);
    let providers = snapshot_providers::providers(&args.provider_config());
    let plan = match plan_request(&args.request(), &providers) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("snapshot: error: {}", e.message);
            return ExitCode::from(snapshot_cli::seed::status_for_kind(e.kind));
        }
    };
    if args.json {
        let v = serde_json::json!({ "consistent": plan.consistent(), "mounts": plan.mounts, "units": plan.units });
        println!("{v}");
        return ExitCode::SUCCESS;
    }
    for pm in &plan.mounts {
        let unit = &plan.units[pm.unit];
        println!(
            "{}  {} on {}  -> {}{}",
            pm.mount.mount_point.display(),
            pm.mount.fstype,
            pm.mount.source,
            unit.provider,
            if unit.consistent {
                ""
            } else {
                "  (NOT consistent: live read-only bind)"
            }
        );
        for d in &pm.dirs {
            println!("    DIR {}", d.display());
        }
        for d in &pm.declined {
            println!("    {} declined: {}", d.provider, d.reason);
        }
    }
    println!(
        "{}",
        if plan.consistent() {
            "consistent: yes"
        } else {
            "consistent: NO (some filesystems are only bind-mounted)"
        }
    );
    ExitCode::SUCCESS
}
