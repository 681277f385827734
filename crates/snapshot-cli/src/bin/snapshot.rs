//! `snapshot`: consistent, read-only, point-in-time views of live filesystems for backups.

use snapshot_cli::args::SessionArgs;
use snapshot_cli::barrier::{HeldBarrier, StdioBarrier};
use snapshot_cli::cli::{CleanupArgs, Cli, Cmd, FreezeArgs, HeldArgs, RunArgs, ThawArgs};
use snapshot_cli::seed::{default_writable, run_session, HoldUntil, RunCommand, Signals};
use snapshot_cli::{
    configure_or_exit, exit, fail, held, logger, out, parse_with_matches, run_target, say,
};
use snapshot_core::freeze_only::{self, FreezeEnd, FreezeError, FreezeRequest};
use snapshot_core::session::plan_request;
use snapshot_core::session::Barrier;
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    let (cli, matches): (Cli, _) = parse_with_matches();
    if cli.watchdog {
        return watchdog();
    }
    let sub = |name: &str| matches.subcommand_matches(name).unwrap_or(&matches).clone();
    match cli.command {
        Some(Cmd::Plan(mut args)) => {
            configure_or_exit("snapshot", &mut args, &sub("plan"));
            plan(&args)
        }
        Some(Cmd::Cleanup(args)) => cleanup(&args),
        Some(Cmd::Go(args)) => go(&args, &sub("go")),
        Some(Cmd::Freeze(args)) => freeze(&args),
        Some(Cmd::Thaw(args)) => thaw(&args),
        Some(Cmd::Status(args)) => status(&args),
        Some(Cmd::Run(mut args)) => {
            configure_or_exit("snapshot", &mut args.session, &sub("run"));
            let _private_target =
                match run_target::private_unless_given(&mut args.session, &sub("run")) {
                    Ok(t) => t,
                    Err(e) => {
                        say!("snapshot: error: {e}");
                        return ExitCode::from(exit::FAILURE);
                    }
                };
            let writable = if !args.in_place {
                Vec::new()
            } else {
                match writable_paths(&args) {
                    Ok(w) => w,
                    Err(e) => {
                        say!("snapshot: error: {e}");
                        return ExitCode::from(exit::USAGE);
                    }
                }
            };
            session(
                &args.session,
                Mode::Run(RunCommand {
                    argv: args.command.clone(),
                    in_place: args.in_place,
                    writable,
                }),
            )
        }
        None => {
            let mut args = cli.session;
            configure_or_exit("snapshot", &mut args, &matches);
            session(&args, if cli.holder { Mode::Holder } else { Mode::Seed })
        }
    }
}

/// `run --in-place`'s writable paths: `--writable` (else the configuration's), canonical,
/// plus the defaults; each an existing directory outside TARGET.
fn writable_paths(args: &RunArgs) -> Result<Vec<std::path::PathBuf>, String> {
    let given = if args.writable.is_empty() {
        &args.session.config_writable
    } else {
        &args.writable
    };
    let target = std::fs::canonicalize(&args.session.target).unwrap_or_default();
    let mut out = Vec::new();
    for p in given {
        let bad = |why: &str| format!("--writable {}: {why}", p.display());
        if !p.is_absolute() {
            return Err(bad("not an absolute path"));
        }
        let canon = std::fs::canonicalize(p).map_err(|e| bad(&e.to_string()))?;
        if !canon.is_dir() {
            return Err(bad("not a directory"));
        }
        if canon.starts_with(&target) || target.starts_with(&canon) {
            return Err(bad("overlaps the target"));
        }
        out.push(canon);
    }
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    for p in home.map(|h| default_writable(&h)).unwrap_or_default() {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

#[derive(Debug)]
enum Mode {
    /// The seed protocol.
    Seed,
    /// start-snapshot's detached holder.
    Holder,
    /// `snapshot run ... -- CMD`.
    Run(RunCommand),
}

fn session(args: &SessionArgs, mode: Mode) -> ExitCode {
    let holder = matches!(mode, Mode::Holder);
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
    let barrier = match barrier_for(args, &mode, &signals) {
        Ok(b) => b,
        Err(e) => {
            say!("snapshot: error: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let after_barrier = barrier.is_some();
    let until = match mode {
        Mode::Seed => HoldUntil::StdinEof,
        Mode::Holder => HoldUntil::Usr1,
        Mode::Run(cmd) => HoldUntil::Command(cmd),
    };
    let status = run_session(args, &providers, &signals, until, barrier, |s| {
        if holder {
            // After a barrier start-snapshot has returned: `snapshot go` prints the line.
            let line = after_barrier.then(|| ready_line(&s.manifest(), args.json));
            held::holder_ready(&args.runtime_dir, s.target(), &s.id, line)?;
        }
        Ok(())
    });
    if holder {
        held::holder_finished(&args.runtime_dir, &args.target, status);
    }
    ExitCode::from(status)
}

/// `--barrier`'s coordinator: stdin and stdout for the protocol, `snapshot go` for
/// start-snapshot's holder; refused for `run` (its stdout is the command's) and with a
/// timeout the freeze timeout would cut short.
fn barrier_for(
    args: &SessionArgs,
    mode: &Mode,
    signals: &Signals,
) -> Result<Option<Arc<dyn Barrier>>, String> {
    if !args.barrier {
        return Ok(None);
    }
    if args.barrier_timeout >= args.freeze_timeout {
        return Err(format!(
            "--barrier-timeout ({:?}) must be shorter than --freeze-timeout ({:?})",
            args.barrier_timeout, args.freeze_timeout
        ));
    }
    let (timeout, interrupt) = (args.barrier_timeout, signals.interrupt.clone());
    Ok(Some(match mode {
        Mode::Seed => Arc::new(StdioBarrier { timeout, interrupt }),
        Mode::Holder => {
            let (runtime, target) = (args.runtime_dir.clone(), args.target.clone());
            let on_frozen = Box::new(move || held::holder_frozen(&runtime, &target));
            Arc::new(
                HeldBarrier::install(timeout, interrupt, on_frozen)
                    .map_err(|e| format!("installing the barrier's signal handlers: {e}"))?,
            )
        }
        Mode::Run(_) => {
            return Err(
                "--barrier is for the protocol and start-snapshot (snapshot run's stdout is the command's)"
                    .into(),
            )
        }
    }))
}

/// The ready line as the protocol writes it: `done`, or the JSON manifest.
fn ready_line(manifest: &snapshot_core::session::Manifest, json: bool) -> String {
    if json {
        format!("{}\n", serde_json::to_string(manifest).unwrap_or_default())
    } else {
        "done\n".into()
    }
}

fn go(args: &HeldArgs, matches: &clap::ArgMatches) -> ExitCode {
    logger::init("snapshot", args.verbose);
    let target = match args.resolve_target(matches) {
        Ok(t) => t,
        Err(e) => {
            say!("snapshot go: error: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    match held::go(&args.runtime_dir, &target) {
        Ok(code) => ExitCode::from(code),
        Err(e) => fail("snapshot go", &e, exit::FAILURE),
    }
}

/// `snapshot freeze`: everything frozen and handed to the watchdog, then exit.
fn freeze(args: &FreezeArgs) -> ExitCode {
    logger::init("snapshot", args.verbose);
    let dirs = if args.writers_dirs.is_empty() {
        snapshot_core::writers::DEFAULT_DIRS
            .iter()
            .map(std::path::PathBuf::from)
            .collect()
    } else {
        args.writers_dirs.clone()
    };
    let request = FreezeRequest {
        dirs: args.dirs.clone(),
        writers: (!args.no_writers).then_some(snapshot_core::writers::WriterConfig {
            dirs,
            timeout: args.freeze_timeout,
            strict: args.strict_writers,
        }),
        timeout: args.freeze_timeout,
        runtime_dir: args.runtime_dir.clone(),
        watchdog_exe: std::env::current_exe()
            .map(|p| p.with_file_name("snapshot"))
            .unwrap_or_else(|_| "/usr/sbin/snapshot".into()),
    };
    let state = match freeze_only::freeze(&request) {
        Ok(s) => s,
        Err(e) => {
            say!("snapshot freeze: error: {e}");
            return ExitCode::from(match e {
                FreezeError::Invalid(_) => exit::USAGE,
                FreezeError::NotRoot => exit::NO_PERMISSION,
                FreezeError::NothingFrozen(_) => exit::UNAVAILABLE,
                FreezeError::Writers(_) => exit::WRITER_FAILED,
                _ => exit::FAILURE,
            });
        }
    };
    if args.json {
        out!("{}", serde_json::to_string(&state).unwrap_or_default());
    } else {
        for m in &state.frozen {
            out!("frozen {}", m.display());
        }
        for (m, why) in &state.not_frozen {
            out!("not frozen {m}: {why}");
        }
    }
    ExitCode::SUCCESS
}

/// `snapshot thaw`: what `snapshot freeze` froze, thawed.
fn thaw(args: &ThawArgs) -> ExitCode {
    logger::init("snapshot", args.verbose);
    let reports = match freeze_only::thaw(&args.runtime_dir, args.session.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            say!("snapshot thaw: error: {e}");
            return ExitCode::from(match e {
                FreezeError::NotRoot => exit::NO_PERMISSION,
                FreezeError::NothingToThaw(_) => exit::UNAVAILABLE,
                _ => exit::FAILURE,
            });
        }
    };
    if args.json {
        out!("{}", serde_json::to_string(&reports).unwrap_or_default());
    }
    let mut late = false;
    for r in &reports {
        if r.ended == FreezeEnd::Deadline {
            late = true;
            say!(
                "snapshot thaw: error: freeze {} had been thawed by its watchdog at --freeze-timeout already: a snapshot taken after that is not consistent",
                r.session
            );
        } else if !args.json {
            for m in &r.thawed {
                out!("thawed {}", m.display());
            }
        }
    }
    ExitCode::from(if late { exit::INVALID } else { exit::OK })
}

fn cleanup(args: &CleanupArgs) -> ExitCode {
    logger::init("snapshot", args.verbose);
    if !args.dry_run && !snapshot_core::sys::is_root() {
        say!("snapshot: error: cleanup must run as root (use --dry-run to look)");
        return ExitCode::from(exit::NO_PERMISSION);
    }
    // Journals others could have written, or liveness tokens they could have faked: refuse.
    if let Err(e) = snapshot_core::recovery::journal::check_cleanup_dirs(&args.state_dir) {
        say!("snapshot: error: {e}");
        return ExitCode::from(exit::FAILURE);
    }
    let providers = snapshot_providers::providers(&snapshot_providers::ProviderConfig {
        scripts_dir: args.scripts_dir.clone(),
        ..Default::default()
    });
    let report =
        snapshot_core::recovery::cleanup::cleanup(&args.state_dir, &providers, args.dry_run, None);
    if args.json {
        out!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        let dead: Vec<_> = report.sessions.iter().filter(|s| !s.live).collect();
        if dead.is_empty() && report.unreadable.is_empty() {
            out!("nothing to clean up");
        }
        for s in dead {
            out!(
                "session {} (pid {}, target {}){}",
                s.session,
                s.pid,
                s.target.display(),
                if args.dry_run { ": would" } else { ":" }
            );
            for a in &s.actions {
                out!("  {a}");
            }
            for p in &s.problems {
                out!("  FAILED: {p}");
            }
        }
        for u in &report.unreadable {
            out!("unreadable journal: {u}");
        }
    }
    if report.problems() > 0 {
        ExitCode::from(exit::TEARDOWN_INCOMPLETE)
    } else {
        ExitCode::SUCCESS
    }
}

fn status(args: &CleanupArgs) -> ExitCode {
    logger::init("snapshot", args.verbose);
    if let Err(e) = snapshot_core::recovery::journal::check_state_dir(&args.state_dir, false) {
        say!("snapshot: error: {e}");
        return ExitCode::from(exit::FAILURE);
    }
    let journals = snapshot_core::recovery::journal::Journal::list(&args.state_dir);
    let mut sessions = Vec::new();
    for j in &journals {
        match j {
            Ok(j) => sessions.push(serde_json::json!({
                "session": j.record.session,
                "live": j.record.is_live(),
                "pid": j.record.pid,
                "target": j.record.target,
                "started": j.record.started,
                "view": j.record.view,
                "snapshots": j.record.snapshots,
                "journal": j.path(),
            })),
            Err(e) => say!("snapshot: warning: {e}"),
        }
    }
    let frozen: Vec<_> = freeze_only::list(&args.runtime_dir)
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    if args.json {
        out!(
            "{}",
            serde_json::json!({ "sessions": sessions, "frozen": frozen })
        );
        return ExitCode::SUCCESS;
    }
    for f in &frozen {
        let left = f.deadline
            - std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
        let how = match f.ended {
            Some(FreezeEnd::Deadline) => "thawed at the deadline (run snapshot thaw)".to_owned(),
            Some(FreezeEnd::Thawed) => "thawed".to_owned(),
            None => format!(
                "FROZEN (freeze-only; thawed in {:.0} s, or by snapshot thaw)",
                left.max(0.0)
            ),
        };
        out!("{}  {how}  watchdog pid {}", f.session, f.watchdog_pid);
        for m in &f.frozen {
            out!("    {}", m.display());
        }
    }
    if sessions.is_empty() && frozen.is_empty() {
        out!("no sessions");
    }
    for s in &sessions {
        out!(
            "{}  {}  pid {}  target {}",
            s["session"].as_str().unwrap_or_default(),
            if s["live"] == true {
                "live"
            } else {
                "DEAD (run snapshot cleanup)"
            },
            s["pid"],
            s["target"].as_str().unwrap_or_default()
        );
        for snap in s["snapshots"].as_array().into_iter().flatten() {
            out!(
                "    {} {} ({})",
                snap["created"]["provider"].as_str().unwrap_or_default(),
                snap["created"]["name"].as_str().unwrap_or_default(),
                snap["state"].as_str().unwrap_or_default()
            );
        }
    }
    ExitCode::SUCCESS
}

/// The watchdog outlives a dying session on purpose: it ignores the signals that end one.
fn watchdog() -> ExitCode {
    logger::init("snapshot watchdog", 0);
    let ignored = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        let _ = signal_hook::flag::register(sig, ignored.clone());
    }
    let code = snapshot_core::recovery::watchdog::run(std::io::stdin());
    ExitCode::from(code as u8)
}

fn plan(args: &SessionArgs) -> ExitCode {
    logger::init("snapshot", args.verbose);
    let config = args.provider_config();
    let providers = snapshot_providers::providers(&config);
    let plan = match plan_request(&args.request(), &providers) {
        Ok(p) => p,
        Err(e) => {
            say!("snapshot: error: {e}");
            return ExitCode::from(snapshot_cli::seed::status_for_kind(e.kind()));
        }
    };
    if args.json {
        let v = serde_json::json!({ "consistent": plan.consistent(), "providers": config.order.names(), "mounts": plan.mounts, "units": plan.units });
        out!("{v}");
        return ExitCode::SUCCESS;
    }
    for pm in &plan.mounts {
        let unit = &plan.units[pm.unit];
        out!(
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
            out!("    DIR {}", d.display());
        }
        for d in &pm.declined {
            out!("    {} declined: {}", d.provider, d.reason);
        }
    }
    out!(
        "{}",
        if plan.consistent() {
            "consistent: yes"
        } else {
            "consistent: NO (some filesystems are only bind-mounted)"
        }
    );
    out!("providers: {}", config.order.names().join(", "));
    ExitCode::SUCCESS
}
