//! `cargo xtask certify`: does a provider really give consistent snapshots of a filesystem
//! under load? For each provider × filesystem this machine can set up (two loop-device
//! filesystems each), concurrent writers keep checkable invariants ([`workloads`]) while
//! snapshot sessions are taken in a loop; every view is copied like a backup reads it and
//! checked ([`invariants`]); every session must end with status 0 and leave nothing behind.
//! The bind fallback is the negative control: it must be caught, or the harness is too weak.

mod fixtures;
mod invariants;
mod report;
mod session;
mod workloads;

use anyhow::{bail, Context, Result};
use fixtures::{Backing, Fixture, Kind, ProviderSpec};
use invariants::{check_all, copy_tree, Invariant, Violation, Window};
use report::{ComboReport, CycleRecord, Report};
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

#[derive(Debug, clap::Args)]
pub struct CertifyArgs {
    /// Provider to certify: btrfs, freeze, bind (the negative control), script (the
    /// filesystems.d scripts given with --scripts-dir, over ext4/XFS on loop devices), or all;
    /// lvm and lvm-thin need device-mapper, zfs needs ZFS, and script-lvm / script-zfs (the
    /// scripts over LVs / datasets; without --scripts-dir, the shipped examples
    /// examples/filesystems.d/50-lvm / 60-zfs) need either (inside `cargo xtask vm-test`):
    /// never part of all. Each session gets `--providers` with the provider under test alone.
    #[arg(long, value_name = "NAME", default_value = "all")]
    provider: String,
    /// Filesystem: ext4, xfs, btrfs, zfs or all (each provider runs on those it takes).
    #[arg(long, value_name = "FS", default_value = "all")]
    fs: String,
    /// Snapshot sessions per provider × filesystem.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CYCLES,
          value_parser = clap::value_parser!(u32).range(1..))]
    cycles: u32,
    /// Print the report as JSON instead of a Markdown table.
    #[arg(long)]
    json: bool,
    /// Also write the report (same format as stdout) to FILE.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Provider scripts (filesystems.d) to certify as the `script` provider.
    #[arg(long, value_name = "DIR")]
    scripts_dir: Option<PathBuf>,
    /// Use this `snapshot` binary; nothing is installed or built (e.g. inside the VM guest,
    /// which has neither apt sources nor cargo).
    #[arg(long, value_name = "FILE")]
    snapshot_bin: Option<PathBuf>,
}

pub fn run(args: &CertifyArgs) -> Result<()> {
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
        bail!("certify makes loop devices and snapshots: run it as root");
    }
    let snapshot = match &args.snapshot_bin {
        Some(b) => b.clone(),
        None => {
            crate::install_deps()?;
            crate::run(crate::cargo().args(["build", "--quiet", "-p", "snapshot-cli"]))?;
            fixtures::snapshot_binary()
        }
    };
    if !snapshot.is_file() {
        bail!("{} not found after the build", snapshot.display());
    }

    // SIGINT/SIGTERM/SIGHUP end the run at the next cycle boundary, so that every fixture is
    // removed by its Drop (a session hit by the terminal's SIGINT tears itself down).
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        signal_hook::flag::register(sig, interrupted.clone())
            .context("installing a signal handler")?;
    }
    let mut runs = Vec::new();
    for (spec, kind) in &matrix {
        if interrupted.load(Ordering::Relaxed) {
            break;
        }
        runs.push(certify(
            &snapshot,
            spec,
            *kind,
            args.cycles,
            scripts.as_deref(),
            &interrupted,
        ));
    }
    let kernel = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let report = Report::new(kernel, args.cycles, runs);
    let text = if args.json {
        report.json()
    } else {
        report.markdown()
    };
    print!("{text}");
    if let Some(file) = &args.report {
        std::fs::write(file, &text).with_context(|| format!("writing {}", file.display()))?;
    }
    if interrupted.load(Ordering::Relaxed) {
        bail!("interrupted: the report is incomplete");
    }
    if !report.ok {
        bail!("certification failed (see the verdicts above)");
    }
    Ok(())
}

/// One provider × filesystem; a harness error ends its run and is reported, not propagated,
/// so the other runs still happen.
fn certify(
    snapshot: &Path,
    spec: &ProviderSpec,
    kind: Kind,
    cycles: u32,
    scripts: Option<&Path>,
    interrupted: &AtomicBool,
) -> ComboReport {
    let t = Instant::now();
    let mut rep = ComboReport {
        provider: spec.name.into(),
        fs: kind.name().into(),
        filesystems: 2,
        cycles_requested: cycles,
        duration_s: 0.0,
        ops_per_s: BTreeMap::new(),
        error: None,
        cycles: Vec::new(),
    };
    let scripts = scripts.filter(|_| spec.needs_scripts);
    if let Err(e) = certify_into(&mut rep, snapshot, spec, kind, cycles, scripts, interrupted) {
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
    cycles: u32,
    scripts: Option<&Path>,
    interrupted: &AtomicBool,
) -> Result<()> {
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
    for cycle in 1..=cycles {
        if interrupted.load(Ordering::Relaxed) {
            bail!("interrupted after {} cycles", cycle - 1);
        }
        wl.check_alive()?;
        let rec = cycle_once(cycle, snapshot, spec, &fx, &wl)?;
        eprintln!("certify: {tag}: cycle {cycle}/{cycles}: {}", describe(&rec));
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
            Ok((v1, v2)) => rec.violations = check_view(fx, &v1, &v2, &floor, &ceiling)?,
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

/// Copies the view (first filesystem, then the second, like a backup) and checks the copy.
fn check_view(
    fx: &Fixture,
    v1: &Path,
    v2: &Path,
    floor: &BTreeMap<Workload, u64>,
    ceiling: &BTreeMap<Workload, u64>,
) -> Result<Vec<Violation>> {
    let copy = copy_roots(fx);
    reset_dir(&fx.copy)?;
    let mut vanished = copy_tree(v1, &copy.fs1)?;
    vanished.extend(copy_tree(v2, &copy.fs2)?);
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
