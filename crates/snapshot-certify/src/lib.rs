//! snapshot-certify: does a provider really give consistent snapshots of a filesystem under
//! load, on this machine's kernel and tools? For each provider × filesystem the machine can set
//! up ([`detect`]; two filesystems each, on loop devices, LVs of one VG or datasets of one ZFS
//! pool: [`fixtures`]), concurrent writers keep checkable invariants ([`workloads`]) while
//! sessions of the `snapshot` binary under test are taken in a loop ([`session`]); every view
//! is copied like a backup reads it and checked ([`invariants`]); every session must end with
//! status 0 and leave nothing behind. The bind fallback is the negative control: it must be
//! caught, or the harness is too weak. Reports: Markdown, JSON with a versioned schema
//! ([`report`]), JUnit XML and TAP ([`qa`]).
//!
//! The binary `snapshot-certify` drives the installed `/usr/sbin/snapshot`; `cargo xtask
//! certify` calls [`run`] with the workspace's build.

pub mod client;
pub mod detect;
pub mod fixtures;
pub mod invariants;
pub mod qa;
pub mod report;
pub mod session;
pub mod workloads;

use anyhow::{bail, Context, Result};
use client::Client;
use fixtures::{Backing, Fixture, Kind, ProviderSpec};
use invariants::{check_all, copy_tree, Invariant, Violation, Window};
use report::{Binary, ComboReport, CycleRecord, Header, Report, Skipped, Tool};
use session::{Manifest, Session};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use workloads::{Roots, Workload, Workloads};

/// Sessions per provider × filesystem: about three minutes for `--provider all` (five runs)
/// on 2 cores — a cycle takes ≈ 0.25 s on btrfs, 0.4–0.6 s with freeze, 0.2 s with bind. The
/// bind negative control is caught in its first cycle (by the hooked cross-filesystem pair, in
/// 70–85 % of cycles); the SQLite check catches a live copy only once in 50–150 cycles.
pub const DEFAULT_CYCLES: u32 = 100;

/// The installed binary the tool drives by default.
pub const INSTALLED_SNAPSHOT: &str = "/usr/sbin/snapshot";

/// Exit statuses of `snapshot-certify` (also in its man page).
pub const EXIT_HELP: &str = "\
Exit status:
  0  every provider × filesystem run passed (the negative control: caught)
  1  certification failed: a verdict FAIL, a requested provider that cannot run here, nothing
     to run, or the run was interrupted (the reports are written, marked incomplete)
  2  the run could not start: bad arguments, not root, no snapshot binary, an unwritable
     report file";

/// `snapshot-certify`'s command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "snapshot-certify",
    version,
    about = "Certify snapshot's providers on this machine: concurrent writers with checkable \
             invariants while snapshot sessions are taken in a loop; the bind fallback is the \
             negative control. Root.",
    after_help = EXIT_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub args: CertifyArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct CertifyArgs {
    /// Provider to certify: btrfs, freeze, lvm, lvm-thin, zfs, script (the filesystems.d
    /// scripts given with --scripts-dir, over ext4/XFS on loop devices), script-lvm /
    /// script-zfs (those scripts over LVs / datasets; without --scripts-dir, the shipped
    /// examples 50-lvm / 60-zfs), bind (the negative control), or all. `all` runs what this
    /// machine can set up and says what it skipped and why; a provider named here that
    /// cannot run is a failure. Each session gets `--providers` with the provider under test.
    #[arg(long, value_name = "NAME", default_value = "all")]
    pub provider: String,
    /// Filesystem: ext4, xfs, btrfs, zfs or all (each provider runs on those it takes).
    #[arg(long, value_name = "FS", default_value = "all")]
    pub fs: String,
    /// Snapshot sessions per provider × filesystem [default: 100, or as many as --duration
    /// allows when that is given].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub cycles: Option<u32>,
    /// Time budget for the whole run (e.g. 90s, 10m, 1h), shared among the provider ×
    /// filesystem runs; each runs cycles until its share is spent (at least one cycle), or
    /// until --cycles when that is given too.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Print the report as JSON (schema: /usr/share/doc/snapshot-certify/report.schema.json)
    /// instead of a Markdown table.
    #[arg(long, conflicts_with = "tap")]
    pub json: bool,
    /// Print the report as TAP version 13 instead of a Markdown table.
    #[arg(long)]
    pub tap: bool,
    /// Also write the report (same format as stdout) to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Also write the results as JUnit XML to FILE: one test case per provider × filesystem ×
    /// invariant, plus sessions, cleanup, run (and negative-control for bind).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Provider scripts (filesystems.d) to certify as the `script` provider.
    #[arg(long, value_name = "DIR")]
    pub scripts_dir: Option<PathBuf>,
    /// The `snapshot` binary to drive [default: /usr/sbin/snapshot; under `cargo xtask
    /// certify`, the workspace's build].
    #[arg(long, value_name = "FILE")]
    pub snapshot_bin: Option<PathBuf>,

    /// Who reads each cycle's view: `copy` (the harness's reader), or a backup client whose
    /// *restore* is checked — `restic` and `borg` (backing up in place, the archive holding
    /// the real paths), `rsync` (a mirror), `tar` (an archive of TARGET).
    #[arg(long, value_enum, value_name = "NAME", default_value = "copy")]
    pub client: Client,
}

/// How a run ended; its reports are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed,
    Interrupted,
}

/// `90`, `90s`, `500ms`, `10m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let units: [(&str, f64); 4] = [("ms", 1e-3), ("s", 1.0), ("m", 60.0), ("h", 3600.0)];
    let (num, scale) = units
        .iter()
        .find_map(|(u, k)| s.strip_suffix(u).map(|n| (n, *k)))
        .unwrap_or((s, 1.0));
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 90s, 10m, 1h)"))?;
    Duration::try_from_secs_f64(v * scale)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?}: the duration must be positive and finite"))
}

/// Certifies what `args` select with the `snapshot` binary at `snapshot`, prints the report
/// and writes the files asked for.
pub fn run(args: &CertifyArgs, snapshot: &Path) -> Result<Outcome> {
    let kinds = fixtures::parse_fs(&args.fs)?;
    let scripts = args
        .scripts_dir
        .as_deref()
        .map(|d| {
            d.canonicalize()
                .with_context(|| format!("--scripts-dir {}", d.display()))
        })
        .transpose()?;
    let matrix = fixtures::matrix(&args.provider, &kinds, scripts.as_deref())?;
    if !rustix::process::geteuid().is_root() {
        bail!("certification makes loop devices and snapshots: run it as root");
    }
    if !snapshot.is_file() {
        bail!(
            "{} not found (install the snapshot package, or give --snapshot-bin)",
            snapshot.display()
        );
    }
    let (runnable, skipped) = sort_out(matrix, args.provider != "all", scripts.as_deref());
    let cycles = match (args.cycles, args.duration) {
        (Some(n), _) => Some(n),
        (None, Some(_)) => None,
        (None, None) => Some(DEFAULT_CYCLES),
    };
    // SIGINT/SIGTERM/SIGHUP end the run at the next cycle boundary, so that every fixture is
    // removed by its Drop (a session hit by the terminal's SIGINT tears itself down).
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        signal_hook::flag::register(sig, interrupted.clone())
            .context("installing a signal handler")?;
    }
    let runs = certify_all(
        args,
        snapshot,
        &runnable,
        cycles,
        scripts.as_deref(),
        &interrupted,
    );
    let report = Report::new(header(args, snapshot, cycles), runs, skipped);
    write_reports(args, &report)?;
    if interrupted.load(Ordering::Relaxed) {
        eprintln!("certify: interrupted: the report is incomplete");
        return Ok(Outcome::Interrupted);
    }
    if report.results.is_empty() {
        eprintln!("certify: nothing could run on this machine (see what was skipped, and why)");
    }
    Ok(if report.ok {
        Outcome::Passed
    } else {
        Outcome::Failed
    })
}

/// The matrix split into what this machine can run and what it cannot (said on stderr; a
/// failure when the provider was `requested` by name).
fn sort_out(
    matrix: Vec<(ProviderSpec, Kind)>,
    requested: bool,
    scripts: Option<&Path>,
) -> (Vec<(ProviderSpec, Kind)>, Vec<Skipped>) {
    let mut runnable = Vec::new();
    let mut skipped = Vec::new();
    for (spec, kind) in matrix {
        match detect::unavailable(&spec, kind, scripts) {
            None => runnable.push((spec, kind)),
            Some(reason) => {
                eprintln!(
                    "certify: {}/{}: {}: {reason}",
                    spec.name,
                    kind.name(),
                    if requested {
                        "FAIL, cannot run here"
                    } else {
                        "skipped"
                    }
                );
                skipped.push(Skipped {
                    provider: spec.name.into(),
                    fs: kind.name().into(),
                    reason,
                    requested,
                });
            }
        }
    }
    (runnable, skipped)
}

/// Each runnable provider × filesystem in turn, each with its share of what is left of the
/// `--duration` budget; stops at the next boundary once interrupted.
fn certify_all(
    args: &CertifyArgs,
    snapshot: &Path,
    runnable: &[(ProviderSpec, Kind)],
    cycles: Option<u32>,
    scripts: Option<&Path>,
    interrupted: &AtomicBool,
) -> Vec<ComboReport> {
    let started = Instant::now();
    let mut runs = Vec::new();
    let n = runnable.len();
    for (i, (spec, kind)) in runnable.iter().enumerate() {
        if interrupted.load(Ordering::Relaxed) {
            break;
        }
        let budget = args
            .duration
            .map(|d| d.saturating_sub(started.elapsed()) / (n - i) as u32);
        let limits = Limits {
            cycles,
            budget,
            client: args.client,
        };
        runs.push(certify(snapshot, spec, *kind, limits, scripts, interrupted));
    }
    runs
}

/// What the report says of the run: the tool, the `snapshot` driven, the machine, the limits.
fn header(args: &CertifyArgs, snapshot: &Path, cycles: Option<u32>) -> Header {
    Header {
        tool: Tool {
            name: "snapshot-certify".into(),
            version: Some(env!("CARGO_PKG_VERSION").into()),
        },
        snapshot: Binary {
            path: snapshot.display().to_string(),
            version: version_of(snapshot),
        },
        kernel: rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned(),
        os: os_name(),
        cycles,
        duration_budget_s: args.duration.map(|d| d.as_secs_f64()),
        client: args.client,
    }
}

/// The report on stdout (Markdown, `--json` or `--tap`), copied to `--report`, and the JUnit
/// XML to `--junit`.
fn write_reports(args: &CertifyArgs, report: &Report) -> Result<()> {
    let text = if args.json {
        report.json()
    } else if args.tap {
        qa::tap(report)
    } else {
        report.markdown()
    };
    print!("{text}");
    if let Some(file) = &args.report {
        std::fs::write(file, &text).with_context(|| format!("writing {}", file.display()))?;
    }
    if let Some(file) = &args.junit {
        std::fs::write(file, qa::junit(report))
            .with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(())
}

/// When a provider × filesystem run stops: after `cycles`, or once `budget` (from its start)
/// is spent, whichever comes first; at least one cycle.
#[derive(Debug, Clone, Copy)]
struct Limits {
    cycles: Option<u32>,
    budget: Option<Duration>,
    /// `--client`: who reads each cycle's view.
    client: Client,
}

/// The first line of `BINARY --version`.
fn version_of(binary: &Path) -> Option<String> {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?.trim();
    (out.status.success() && !line.is_empty()).then(|| line.to_owned())
}

/// `PRETTY_NAME` of `/etc/os-release`.
fn os_name() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
}

/// One provider × filesystem; a harness error ends its run and is reported, not propagated,
/// so the other runs still happen.
fn certify(
    snapshot: &Path,
    spec: &ProviderSpec,
    kind: Kind,
    limits: Limits,
    scripts: Option<&Path>,
    interrupted: &AtomicBool,
) -> ComboReport {
    let t = Instant::now();
    let mut rep = ComboReport {
        provider: spec.name.into(),
        fs: kind.name().into(),
        filesystems: 2,
        cycles_requested: limits.cycles,
        budget_s: limits.budget.map(|b| b.as_secs_f64()),
        duration_s: 0.0,
        ops_per_s: BTreeMap::new(),
        error: None,
        cycles: Vec::new(),
    };
    let scripts = scripts.filter(|_| spec.needs_scripts);
    if let Err(e) = certify_into(&mut rep, snapshot, spec, kind, limits, scripts, interrupted) {
        eprintln!("certify: {}/{}: {e:#}", spec.name, kind.name());
        rep.error = Some(format!("{e:#}"));
    }
    rep.duration_s = t.elapsed().as_secs_f64();
    eprintln!(
        "certify: {}/{}: done in {:.1} s",
        spec.name,
        kind.name(),
        rep.duration_s
    );
    rep
}

fn certify_into(
    rep: &mut ComboReport,
    snapshot: &Path,
    spec: &ProviderSpec,
    kind: Kind,
    limits: Limits,
    scripts: Option<&Path>,
    interrupted: &AtomicBool,
) -> Result<()> {
    let started = Instant::now();
    let client = limits.client;
    let tag = format!("{}/{}", spec.name, kind.name());
    let on = match spec.backing {
        Backing::Plain | Backing::Reflink => "on loop devices",
        Backing::LvmClassic => "on two classic LVs of one VG",
        Backing::LvmThin => "on two thin LVs of one pool",
        Backing::ZfsPool => "as two datasets of one pool",
    };
    eprintln!("certify: {tag}: two {} filesystems {on}", kind.name());
    let fx = Fixture::build(spec, kind, scripts)?;
    // Declared after `fx`, so dropped first: files closed before the unmount.
    let mut wl = Workloads::start(&fx.roots(), &fx.ctl)?;
    wl.wait_warm(Duration::from_secs(60))?;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let of = limits.cycles.map_or("…".into(), |n| n.to_string());
    for cycle in 1.. {
        let done = limits.cycles.is_some_and(|n| cycle > n)
            || limits
                .budget
                .is_some_and(|b| cycle > 1 && started.elapsed() >= b);
        if done {
            break;
        }
        if interrupted.load(Ordering::Relaxed) {
            bail!("interrupted after {} cycles", cycle - 1);
        }
        wl.check_alive()?;
        let rec = cycle_once(cycle, snapshot, spec, &fx, &wl, client)?;
        eprintln!("certify: {tag}: cycle {cycle}/{of}: {}", describe(&rec));
        let stop = rec.failure.is_some() || !rec.leaks.is_empty();
        rep.cycles.push(rec);
        if stop {
            // A broken session may leave state that spoils every later one.
            bail!("stopping after cycle {cycle}: the session failed or leaked");
        }
        // A random pause, so that sessions land at varied points of the writers' cycles.
        std::thread::sleep(Duration::from_millis(
            workloads::mix(seed ^ u64::from(cycle)) % 50,
        ));
    }
    let done = wl.stop()?;
    rep.ops_per_s = done
        .ops_per_s
        .iter()
        .map(|(w, v)| (w.name().to_owned(), *v))
        .collect();

    // The stopped writers' files must pass every check; if not, the checkers are wrong.
    let copy = copy_roots(&fx);
    reset_dir(&fx.copy)?;
    copy_tree(fx.fs1.mount_point(), &copy.fs1)?;
    copy_tree(fx.fs2.mount_point(), &copy.fs2)?;
    let windows = windows(&done.completed, &done.started);
    let v = check_all(&copy, &windows);
    reset_dir(&fx.copy)?;
    if !v.is_empty() {
        bail!("self-check: the stopped workloads fail their own invariants (harness bug): {v:?}");
    }
    Ok(())
}

/// One session: floor → spawn → manifest → ceiling → copy → check → close → leaks.
fn cycle_once(
    cycle: u32,
    snapshot: &Path,
    spec: &ProviderSpec,
    fx: &Fixture,
    wl: &Workloads,
    client: Client,
) -> Result<CycleRecord> {
    let mut rec = CycleRecord {
        cycle,
        ..Default::default()
    };
    let floor = wl.completed();
    let mut s = Session::start(snapshot, fx)?;
    let ready = s.ready();
    let ready_after = s.spawned.elapsed();
    let ceiling = wl.started();

    let manifest = match ready {
        Ok(Some(text)) => {
            rec.ready_ms = Some(ready_after.as_secs_f64() * 1e3);
            match serde_json::from_str::<Manifest>(&text) {
                Ok(m) => Some(m),
                Err(e) => {
                    rec.failure = Some(format!("manifest unreadable ({e}): {text:?}"));
                    None
                }
            }
        }
        Ok(None) => {
            rec.failure = Some("no manifest (the session failed before ready)".into());
            None
        }
        Err(e) => {
            rec.failure = Some(format!("{e:#}"));
            None
        }
    };
    if let Some(m) = &manifest {
        rec.session = Some(m.session.clone());
        rec.consistent = Some(m.consistent);
        match view_paths(m, spec, fx) {
            Ok((v1, v2)) => {
                let how = ViewReader { client, cycle };
                rec.violations = check_view(fx, &v1, &v2, &floor, &ceiling, how)?
            }
            Err(e) => rec.failure = Some(format!("{e:#}")),
        }
    }

    let ended = s.finish()?;
    rec.exit = ended.code;
    rec.teardown_ms = Some(ended.teardown.as_secs_f64() * 1e3);
    rec.frozen_ms = session::frozen_window_ms(&ended.stderr);
    if ended.code != Some(0) && rec.failure.is_none() {
        rec.failure = Some(format!("exit status {:?}", ended.code));
    }
    if rec.failure.is_some() {
        eprintln!("certify: the session's log:\n{}", ended.stderr.trim_end());
    }
    rec.leaks = session::leaks(fx, rec.session.as_deref());
    Ok(rec)
}

/// The view of each fixture filesystem, checking that the expected provider took it.
fn view_paths(m: &Manifest, spec: &ProviderSpec, fx: &Fixture) -> Result<(PathBuf, PathBuf)> {
    let find = |mp: &Path| -> Result<PathBuf> {
        let mount = m
            .mounts
            .iter()
            .find(|x| x.mount_point == mp)
            .with_context(|| format!("{} is not in the manifest", mp.display()))?;
        if mount.provider != spec.provider {
            bail!(
                "{} was taken by the {} provider, not {}: this machine cannot certify {} here",
                mp.display(),
                mount.provider,
                spec.provider,
                spec.name
            );
        }
        if mount.consistent != m.consistent {
            bail!("mixed consistency in one session: {m:?}");
        }
        Ok(mount.path.clone())
    };
    Ok((find(fx.fs1.mount_point())?, find(fx.fs2.mount_point())?))
}

/// Who reads a cycle's view (`--client`), and which cycle it is.
#[derive(Debug, Clone, Copy)]
struct ViewReader {
    client: Client,
    cycle: u32,
}

/// Reads the view (first filesystem, then the second, like a backup) — the harness's copy,
/// or a backup client's backup and restore — and checks what was read.
fn check_view(
    fx: &Fixture,
    v1: &Path,
    v2: &Path,
    floor: &BTreeMap<Workload, u64>,
    ceiling: &BTreeMap<Workload, u64>,
    how: ViewReader,
) -> Result<Vec<Violation>> {
    reset_dir(&fx.copy)?;
    let (copy, vanished) = match how.client {
        Client::Copy => {
            let copy = copy_roots(fx);
            let mut vanished = copy_tree(v1, &copy.fs1)?;
            vanished.extend(copy_tree(v2, &copy.fs2)?);
            (copy, vanished)
        }
        client => client::Cycle {
            client,
            cycle: how.cycle,
            views: [(v1, fx.fs1.mount_point()), (v2, fx.fs2.mount_point())],
            target: &fx.target,
            work: &fx.copy,
            repo: &fx.copy.with_file_name(format!("repo-{}", client.name())),
        }
        .run()?,
    };
    let mut out: Vec<Violation> = vanished
        .into_iter()
        .map(|p| Violation {
            invariant: Invariant::PointInTime,
            detail: format!("{p} vanished while the view was being read"),
        })
        .collect();
    out.extend(check_all(&copy, &windows(floor, ceiling)));
    reset_dir(&fx.copy)?;
    Ok(out)
}

fn windows(
    floor: &BTreeMap<Workload, u64>,
    ceiling: &BTreeMap<Workload, u64>,
) -> BTreeMap<Workload, Window> {
    floor
        .iter()
        .map(|(w, &f)| {
            (
                *w,
                Window {
                    floor: f,
                    ceiling: ceiling.get(w).copied().unwrap_or(u64::MAX),
                },
            )
        })
        .collect()
}

fn copy_roots(fx: &Fixture) -> Roots {
    Roots {
        fs1: fx.copy.join("fs1"),
        fs2: fx.copy.join("fs2"),
    }
}

fn reset_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

fn describe(r: &CycleRecord) -> String {
    let mut names: Vec<&str> = r.violations.iter().map(|v| v.invariant.name()).collect();
    names.sort_unstable();
    names.dedup();
    let f = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.1} ms"));
    let mut s = format!(
        "ready {}, frozen {}, teardown {}, violations: {}",
        f(r.ready_ms),
        f(r.frozen_ms),
        f(r.teardown_ms),
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    );
    if !r.leaks.is_empty() {
        s += &format!("; LEAKS: {}", r.leaks.join("; "));
    }
    if let Some(f) = &r.failure {
        s += &format!("; FAILED: {f}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        for bad in ["0", "-1s", "soon", "", "infh", "1e400"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_command_line_parses() {
        use clap::{CommandFactory, Parser};
        Cli::command().debug_assert();
        let c = Cli::parse_from([
            "snapshot-certify",
            "--provider",
            "btrfs",
            "--duration",
            "2m",
        ]);
        assert_eq!(c.args.duration, Some(Duration::from_secs(120)));
        assert_eq!(c.args.cycles, None);
        assert!(Cli::try_parse_from(["snapshot-certify", "--json", "--tap"]).is_err());
        assert!(Cli::try_parse_from(["snapshot-certify", "--cycles", "0"]).is_err());
    }
}
