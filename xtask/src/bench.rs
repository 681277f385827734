//! `cargo xtask bench` (root): how long a real `snapshot` session takes on btrfs loop-device
//! fixtures (1, 4, 16 filesystems), beside the raw kernel work for the same fixtures measured
//! in the same run — the snapshot ioctls and read-only mounts issued directly, no session around
//! them — so every figure is also a ratio to what the kernel needs anyway. A benchmark, never a
//! test: targets are reported, never asserted. The freeze provider ([`freeze`]) and, in the VM
//! guest, LVM ([`lvm`]) and ZFS ([`zfs`]) are measured the same way against their own raw
//! baselines; `--db` ([`db`]) measures the commit stall a real database client sees.
//!
//! Per configuration and run (after one unrecorded warm-up), interleaved so that drift hits
//! both sides alike: raw snapshots (sequential, then parallel threads) + mounts + removal;
//! `snapshot plan` a few times; a session with one clock writer hook; a session without
//! writers. Sessions run at `-vv`; every stderr line is stamped on arrival, which gives a
//! breakdown of where the time goes without any change to the binary.
//!
//! Everything it makes is named `snaptest-bench-*` and removed by RAII guards, also on error.

mod db;
mod freeze;
mod lvm;
mod zfs;

use crate::{cargo, install_deps, root, run};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use snapshot_core::sys::{self, ioctl};
use snapshot_core::MountTable;
use snapshot_testkit::db::Db;
use snapshot_testkit::{find_tool, FsKind, LoopFs, Scratch};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Measured runs per configuration (medians are reported; one warm-up run comes first).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Print the results as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Numbers of btrfs filesystems snapshotted in one session.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    fs_counts: Vec<usize>,
    /// Unrelated tmpfs mounts present for a repeat of the 1-filesystem case (0: skip it).
    #[arg(long, default_value_t = 500)]
    extra_mounts: usize,
    /// Where the sparse backing files go (e.g. /dev/shm to take the host disk's flushes out
    /// of the picture).
    #[arg(long, value_name = "DIR", default_value = "/var/tmp")]
    backing_dir: PathBuf,
    /// Providers to measure: btrfs, freeze (XFS and ext4 on loop devices backed by files on a
    /// btrfs, against raw FIFREEZE + FICLONE + FITHAW).
    #[arg(long, value_delimiter = ',', default_value = "btrfs,freeze",
          value_parser = clap::builder::PossibleValuesParser::new(["btrfs", "freeze"]))]
    providers: Vec<String>,
    /// Numbers of filesystems in one freeze session (1: one XFS and one ext4, measured apart;
    /// more: XFS and ext4 alternating).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    freeze_counts: Vec<usize>,
    /// Measure the LVM providers instead (classic and thin, 1 and 2 LVs, against raw
    /// `lvcreate --snapshot` in the same run): device-mapper, so inside `cargo xtask vm-test`.
    #[arg(long)]
    lvm: bool,
    /// Measure the ZFS provider instead (1 dataset and 2 of one pool, against raw `zfs
    /// snapshot` + `zfs hold` + mount in the same run): the ZFS module, so inside
    /// `cargo xtask vm-test`. With `--lvm`, both.
    #[arg(long)]
    zfs: bool,
    /// With --lvm and --zfs: also sessions over this many thin LVs (ext4 + XFS + small ext4
    /// ones) and datasets of one pool, for how ready, the frozen window and teardown grow (1
    /// and 2 are always measured).
    #[arg(long, value_delimiter = ',', value_name = "COUNTS")]
    scale: Vec<usize>,
    /// Measure instead what a database's clients see: a MariaDB server and a PostgreSQL
    /// cluster of the bench's own, each on a btrfs on a loop device (with --lvm: an ext4 on a
    /// classic LV, device-mapper: in the guest), under a steady commit workload; sessions with
    /// the shipped writer hook against the floor (MariaDB: FLUSH TABLES WITH READ LOCK + raw
    /// snapshot + UNLOCK TABLES; PostgreSQL: the raw snapshot alone).
    #[arg(long)]
    db: bool,
    /// With --db: where the shipped hooks `mariadb` and `postgresql` are (default: the
    /// workspace's writers.d; in the guest, the payload).
    #[arg(long, value_name = "DIR")]
    db_hooks: Option<PathBuf>,
    /// With --db: which servers.
    #[arg(long, value_delimiter = ',', default_value = "mariadb,postgresql",
          value_parser = clap::builder::PossibleValuesParser::new(["mariadb", "postgresql"]))]
    db_servers: Vec<String>,
    /// With --db: commits per second of the workload's one client.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=2000))]
    db_rate: u32,
    /// Use this `snapshot` binary instead of building one (e.g. inside the VM guest).
    #[arg(long, value_name = "FILE")]
    snapshot_bin: Option<PathBuf>,
}

/// Source name of the extra tmpfs mounts: how the guard recognises its own.
const EXTRA_SOURCE: &str = "snaptest-bench-extra";
/// `snapshot plan` is cheap and noisy: run it this many times per run.
const PLANS_PER_RUN: usize = 3;
/// A session that takes longer is hung: it gets SIGTERM (an orderly teardown).
const SESSION_LIMIT: Duration = Duration::from_secs(120);
/// Between ready and teardown (sessions and raw rounds alike), as a backup would read: so
/// that "stdin close → exit" is the teardown, not the tail of the start-up still running.
const HOLD: Duration = Duration::from_millis(20);
/// After making or removing the extra mounts, before measuring.
const SETTLE: Duration = Duration::from_millis(50);

pub fn run_bench(args: &BenchArgs) -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("the bench makes loop devices, btrfs snapshots and mounts: run it as root");
    }
    if args.db && args.zfs {
        bail!("--db measures on btrfs, or with --lvm on LVM; not with --zfs");
    }
    if args.fs_counts.contains(&0) || args.freeze_counts.contains(&0) {
        bail!("--fs-counts, --freeze-counts: every count must be at least 1");
    }
    let bin = match &args.snapshot_bin {
        Some(b) => b
            .canonicalize()
            .with_context(|| format!("--snapshot-bin {}", b.display()))?,
        None => {
            let db_missing = args.db
                && [Db::Mariadb, Db::Postgres]
                    .iter()
                    .any(|d| snapshot_testkit::db::missing(*d).is_some());
            if db_missing
                || ["mkfs.btrfs", "mkfs.xfs", "losetup"]
                    .iter()
                    .any(|t| find_tool(t).is_none())
            {
                install_deps()?;
            }
            run(cargo().args(["build", "--release", "--quiet", "-p", "snapshot-cli"]))?;
            release_binary()?
        }
    };
    let host = !args.lvm && !args.zfs && !args.db;
    let btrfs = host && args.providers.iter().any(|p| p == "btrfs");
    let freeze = host && args.providers.iter().any(|p| p == "freeze");

    let mut counts = args.fs_counts.clone();
    counts.sort_unstable();
    counts.dedup();
    let most = counts.last().copied().unwrap_or(1);

    let scratch = Scratch::new("bench")?;
    let started = Instant::now();
    let mut results = Vec::new();
    if btrfs {
        btrfs_configs(args, &scratch, &bin, &counts, most, &mut results)?;
    }
    let mut freeze_results = Vec::new();
    if freeze {
        let mut fc = args.freeze_counts.clone();
        fc.sort_unstable();
        fc.dedup();
        let n = fc.last().copied().unwrap_or(1);
        eprintln!("bench: freeze: {n} XFS/ext4 filesystems with backing files on a btrfs");
        let fx = freeze::FreezeFixtures::new(&scratch, &args.backing_dir, n)?;
        for (idx, label) in freeze::FreezeFixtures::configs(&fc) {
            eprintln!("bench: freeze, {label}, {} runs", args.runs);
            let mut s = freeze::FreezeSamples::default();
            for run in 0..=args.runs {
                freeze::iteration(&fx, &bin, &idx, (run > 0).then_some(&mut s))?;
            }
            freeze_results.push(freeze::FreezeConfig::new(label, idx.len(), &s));
        }
    }

    let mut lvm_results = Vec::new();
    if args.lvm && !args.db {
        eprintln!("bench: lvm: a VG on a loop file, two classic and two thin LVs");
        let fx = lvm::LvmFixtures::new(&scratch, &args.scale)?;
        for (label, thin, n) in fx.configs(&args.scale) {
            eprintln!("bench: lvm, {label}, {} runs", args.runs);
            let mut s = lvm::LvmSamples::default();
            for run in 0..=args.runs {
                lvm::iteration(&fx, &bin, thin, n, (run > 0).then_some(&mut s))?;
            }
            lvm_results.push(lvm::LvmConfig::new(label, thin, n, &s));
        }
    }

    let mut zfs_results = Vec::new();
    if args.zfs {
        eprintln!("bench: zfs: a pool on a sparse file, two datasets");
        let fx = zfs::ZfsFixtures::new(&scratch, &args.scale)?;
        for (label, n) in fx.configs(&args.scale) {
            eprintln!("bench: zfs, {label}, {} runs", args.runs);
            let mut s = zfs::ZfsSamples::default();
            for run in 0..=args.runs {
                zfs::iteration(&fx, &bin, n, (run > 0).then_some(&mut s))?;
            }
            zfs_results.push(zfs::ZfsConfig::new(label, n, &s));
        }
    }

    let mut db_results = Vec::new();
    let mut db_targets = Vec::new();
    if args.db {
        let hooks = args
            .db_hooks
            .clone()
            .unwrap_or_else(|| root().join("writers.d"));
        let chosen = |d: &Db| args.db_servers.iter().any(|s| s == db::hook_name(*d));
        for which in [Db::Mariadb, Db::Postgres].into_iter().filter(chosen) {
            eprintln!("bench: {which:?}, {} runs", args.runs);
            let fx = db::DbFixture::new(&scratch, &args.backing_dir, args.lvm, &hooks, which)?;
            let config = db::measure(&fx, &bin, args.runs, args.db_rate)?;
            db_targets.extend(config.targets());
            db_results.push(config);
        }
    }

    let mut report = Report::new(args.runs, results, freeze_results);
    report.lvm = lvm_results;
    report.zfs = zfs_results;
    report.db = db_results;
    report.targets.extend(db_targets);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    eprintln!("bench: done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The btrfs configurations: 1, 4, 16 filesystems, then the extra-mounts A/B.
fn btrfs_configs(
    args: &BenchArgs,
    scratch: &Scratch,
    bin: &Path,
    counts: &[usize],
    most: usize,
    results: &mut Vec<Config>,
) -> Result<()> {
    eprintln!(
        "bench: {most} btrfs filesystems on loop devices under {}",
        scratch.path().display()
    );
    let started = Instant::now();
    let fixtures = Fixtures::new(scratch, &args.backing_dir, most)?;
    eprintln!(
        "bench: fixtures ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    for &n in counts {
        eprintln!("bench: {n} filesystem(s), {} runs", args.runs);
        let mut s = Samples::default();
        // Run 0 warms caches (binary, dentries, btrfs trees) and is not recorded.
        for run in 0..=args.runs {
            iteration(&fixtures, bin, n, (run > 0).then_some(&mut s))?;
        }
        results.push(Config::new(n, 0, &s));
    }
    if args.extra_mounts > 0 {
        // A/B within each run, so that drift (btrfs churn, other load) hits both sides alike.
        eprintln!(
            "bench: 1 filesystem without / with {} extra mounts, {} runs",
            args.extra_mounts, args.runs
        );
        let (mut without, mut with) = (Samples::default(), Samples::default());
        let dir = scratch.join("extra");
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for run in 0..=args.runs {
            let keep = run > 0;
            iteration(&fixtures, bin, 1, keep.then_some(&mut without))?;
            let extra = ExtraMounts::new(&dir, args.extra_mounts)?;
            std::thread::sleep(SETTLE);
            iteration(&fixtures, bin, 1, keep.then_some(&mut with))?;
            drop(extra);
            std::thread::sleep(SETTLE);
        }
        results.push(Config::new(1, 0, &without).control());
        results.push(Config::new(1, args.extra_mounts, &with));
    }
    drop(fixtures);
    Ok(())
}

/// `snapshot` of the release build: `$CARGO_TARGET_DIR` (relative to the workspace, as cargo
/// takes it when run there), else `<workspace>/target`.
fn release_binary() -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| root().join(d))
        .unwrap_or_else(|| root().join("target"));
    let bin = target.join("release/snapshot");
    if !bin.is_file() {
        bail!("{} not found after the release build", bin.display());
    }
    Ok(bin)
}

/// The directories a session uses, and its clock writer hook.
struct SessionDirs {
    target: PathBuf,
    runtime: PathBuf,
    writers: PathBuf,
    writer_log: PathBuf,
}

impl SessionDirs {
    /// Under `base` (created here).
    fn new(base: &Path) -> Result<Self> {
        let target = base.join("view");
        let runtime = base.join("run");
        let writers = base.join("writers");
        for d in [&target, &runtime, &writers] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let writer_log = base.join("writer.log");
        // bash's $EPOCHREALTIME (µs) needs no `date` process: the hook's own start-up is all
        // it adds. The freeze stamp is the hook's last act and the thaw stamp its first, so
        // thaw − freeze is the pause an application hooked this way sees.
        let hook = writers.join("50-bench-clock");
        std::fs::write(
            &hook,
            format!(
                "#!/bin/bash\nprintf '%s %s\\n' \"$1\" \"${{EPOCHREALTIME/./}}\" >> '{}'\n",
                writer_log.display()
            ),
        )
        .with_context(|| format!("writing {}", hook.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(Self {
            target,
            runtime,
            writers,
            writer_log,
        })
    }
}

/// The filesystems, and the directories the sessions and raw rounds use.
struct Fixtures {
    fs: Vec<LoopFs>,
    /// Where raw rounds mount their snapshots (one directory per filesystem).
    raw_views: Vec<PathBuf>,
    /// Where the top-level mounts the btrfs provider makes inside `create` are replayed.
    stage_dirs: Vec<PathBuf>,
    session: SessionDirs,
}

impl Fixtures {
    fn new(scratch: &Scratch, backing_dir: &Path, n: usize) -> Result<Self> {
        let mut fs = Vec::with_capacity(n);
        let mut raw_views = Vec::with_capacity(n);
        let mut stage_dirs = Vec::with_capacity(n);
        for i in 0..n {
            let mp = scratch.join(format!("fs/{i:02}"));
            let f = LoopFs::new_in(
                backing_dir,
                &format!("bench-fs{i:02}"),
                FsKind::Btrfs,
                FsKind::Btrfs.min_size_mb(),
                &mp,
            )?;
            // A little content, so the snapshots are of something.
            for j in 0..8 {
                f.write(&format!("data/file{j}"), &format!("{i}:{j}\n"))?;
            }
            fs.push(f);
            let view = scratch.join(format!("raw/{i:02}"));
            std::fs::create_dir_all(&view)
                .with_context(|| format!("creating {}", view.display()))?;
            raw_views.push(view);
            let stage = scratch.join(format!("stage/{i:02}"));
            std::fs::create_dir_all(&stage)
                .with_context(|| format!("creating {}", stage.display()))?;
            stage_dirs.push(stage);
        }
        let session = SessionDirs::new(scratch.path())?;
        Ok(Self {
            fs,
            raw_views,
            stage_dirs,
            session,
        })
    }

    fn dirs(&self, n: usize) -> Vec<&Path> {
        self.fs[..n]
            .iter()
            .map(|f| f.mount_point.as_path())
            .collect()
    }
}

impl Drop for Fixtures {
    /// All at once: a loop device can take a second to let go after its unmount, and each
    /// fixture waits for its own.
    fn drop(&mut self) {
        std::thread::scope(|s| {
            for f in self.fs.drain(..) {
                s.spawn(move || drop(f));
            }
        });
    }
}

/// Everything measured for one configuration, in milliseconds.
#[derive(Debug, Default)]
struct Samples {
    raw_snap_seq: Vec<f64>,
    raw_snap_par: Vec<f64>,
    raw_mount: Vec<f64>,
    raw_teardown: Vec<f64>,
    raw_mountinfo: Vec<f64>,
    raw_staging: Vec<f64>,
    plan_wall: Vec<f64>,
    ready: Vec<f64>,
    ready_writer: Vec<f64>,
    frozen_hook: Vec<f64>,
    frozen_log: Vec<f64>,
    create_log: Vec<f64>,
    teardown: Vec<f64>,
    teardown_writer: Vec<f64>,
    /// Milestones of the writer-less sessions (ms since spawn, or since stdin close).
    planned: Vec<f64>,
    journaled: Vec<f64>,
    created: Vec<f64>,
    viewed: Vec<f64>,
    unit_create_max: Vec<f64>,
    td_noticed: Vec<f64>,
    td_done: Vec<f64>,
}

/// One run of everything for `n` filesystems; recorded into `keep` unless it is a warm-up.
fn iteration(fx: &Fixtures, bin: &Path, n: usize, keep: Option<&mut Samples>) -> Result<()> {
    let dirs = fx.dirs(n);
    let mut raw = Vec::new();
    for parallel in [false, true] {
        raw.push(raw_round(&dirs, &fx.raw_views[..n], parallel)?);
    }
    let staging = staging_round(&fx.fs[..n], &fx.stage_dirs[..n])?;
    let mut mountinfo = Vec::new();
    for _ in 0..PLANS_PER_RUN {
        // The kernel's share of every whole-table lookup the session makes (the text alone:
        // xtask's own parser is a debug build and would not stand for the binary's).
        let t = Instant::now();
        std::fs::read("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
        mountinfo.push(ms(t.elapsed()));
    }
    let mut plans = Vec::new();
    for _ in 0..PLANS_PER_RUN {
        plans.push(plan_wall(bin, &dirs)?);
    }
    let w = run_session(bin, &fx.session, &dirs, true)?;
    let (freeze, thaw) = writer_stamps(&fx.session.writer_log)?;
    let no_w = run_session(bin, &fx.session, &dirs, false)?;

    let Some(s) = keep else {
        return Ok(());
    };
    s.raw_snap_seq.push(raw[0].snapshot);
    s.raw_snap_par.push(raw[1].snapshot);
    for r in &raw {
        s.raw_mount.push(r.mount);
        s.raw_teardown.push(r.teardown);
    }
    s.raw_mountinfo.extend(mountinfo);
    s.raw_staging.push(staging);
    s.plan_wall.extend(plans);
    s.ready_writer.push(ms(w.ready));
    s.teardown_writer.push(ms(w.teardown));
    s.frozen_hook.push((thaw - freeze) as f64 / 1e3);
    s.frozen_log.push(w.frozen_log()?.0);
    s.ready.push(ms(no_w.ready));
    s.teardown.push(ms(no_w.teardown));
    s.create_log.push(no_w.frozen_log()?.1);
    s.planned.push(no_w.stamp("(btrfs on ")?);
    s.journaled.push(no_w.stamp("debug: session ")?);
    s.created.push(no_w.stamp("frozen window ")?);
    s.viewed.push(no_w.stamp("view ready under")?);
    s.unit_create_max.push(no_w.unit_create_max());
    s.td_noticed.push(no_w.teardown_stamp("tearing down")?);
    s.td_done.push(no_w.teardown_stamp("teardown complete")?);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------------------------
// The raw kernel baseline

struct RawTimes {
    snapshot: f64,
    mount: f64,
    teardown: f64,
}

/// What a raw round made, undone on drop if the round did not get to it (an error halfway).
struct RawRound<'a> {
    snaps: Vec<(&'a Path, String)>,
    mounted: Vec<&'a Path>,
}

impl Drop for RawRound<'_> {
    fn drop(&mut self) {
        for at in self.mounted.drain(..).rev() {
            if let Err(e) = sys::unmount_path(at) {
                eprintln!("bench: unmounting {}: {e}", at.display());
            }
        }
        for (dir, name) in self.snaps.drain(..) {
            // Idempotent: a name never created is ENOENT, which counts as done.
            if let Err(e) = ioctl::btrfs_subvol_delete(dir, &name) {
                eprintln!("bench: deleting {}/{name}: {e}", dir.display());
            }
        }
    }
}

/// The kernel work a session does for `dirs`, issued directly: one read-only snapshot per
/// filesystem (in `parallel` threads, like the session, or one after the other), a read-only
/// bind of each, then unmount and delete.
fn raw_round<'a>(dirs: &[&'a Path], views: &'a [PathBuf], parallel: bool) -> Result<RawTimes> {
    let mut round = RawRound {
        snaps: dirs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                (
                    *d,
                    format!(".snaptest-bench-raw-{}-{i}", std::process::id()),
                )
            })
            .collect(),
        mounted: Vec::new(),
    };
    let snap = |(dir, name): &(&Path, String)| {
        ioctl::btrfs_snapshot_readonly(dir, dir, name)
            .with_context(|| format!("raw snapshot {}/{name}", dir.display()))
    };
    let t = Instant::now();
    if parallel && round.snaps.len() > 1 {
        std::thread::scope(|s| {
            let handles: Vec<_> = round
                .snaps
                .iter()
                .map(|x| s.spawn(move || snap(x)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("snapshot thread panicked"))
                .collect::<Result<Vec<()>>>()
        })?;
    } else {
        round.snaps.iter().try_for_each(snap)?;
    }
    let snapshot = ms(t.elapsed());

    let t = Instant::now();
    for ((dir, name), view) in round.snaps.iter().zip(views) {
        sys::bind_readonly(&dir.join(name), view)
            .with_context(|| format!("raw read-only bind at {}", view.display()))?;
        round.mounted.push(view);
    }
    let mount = ms(t.elapsed());
    std::thread::sleep(HOLD);

    let t = Instant::now();
    for at in round.mounted.drain(..).rev() {
        sys::unmount_path(at).with_context(|| format!("raw unmount {}", at.display()))?;
    }
    for (dir, name) in round.snaps.drain(..) {
        ioctl::btrfs_subvol_delete(dir, &name)
            .with_context(|| format!("raw delete {}/{name}", dir.display()))?;
    }
    let teardown = ms(t.elapsed());
    Ok(RawTimes {
        snapshot,
        mount,
        teardown,
    })
}

/// Top-level mounts made by [`staging_round`], unmounted on drop if still ours (by mount id).
struct StagingMounts(Vec<(PathBuf, u64)>);

impl Drop for StagingMounts {
    fn drop(&mut self) {
        for (at, id) in self.0.drain(..) {
            match sys::mount_id(&at) {
                Ok(found) if found == id => {
                    if let Err(e) = sys::unmount_path(&at) {
                        eprintln!("bench: unmounting {}: {e}", at.display());
                    }
                }
                _ => eprintln!(
                    "bench: {} is not our mount any more; left alone",
                    at.display()
                ),
            }
        }
    }
}

/// Not part of the baseline, for the breakdown: what the btrfs provider adds inside the frozen
/// window besides the ioctl — a private top-level (`subvolid=5`) mount of each filesystem,
/// made in parallel threads as the session's `create` makes them. Returns ms for all.
fn staging_round(fs: &[LoopFs], dirs: &[PathBuf]) -> Result<f64> {
    use rustix::mount::{mount, MountFlags};
    let made = std::sync::Mutex::new(StagingMounts(Vec::new()));
    let stage = |(f, at): (&LoopFs, &PathBuf)| -> Result<()> {
        mount(
            &f.device,
            at,
            "btrfs",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            c"subvolid=5",
        )
        .with_context(|| format!("mounting the top level of {}", f.device.display()))?;
        let id = sys::mount_id(at);
        let mut made = made.lock().expect("not poisoned");
        match id {
            Ok(id) => made.0.push((at.clone(), id)),
            Err(e) => {
                // Just mounted by this thread, not yet recorded: undo it here.
                let _ = sys::unmount_path(at);
                return Err(e).with_context(|| format!("mount id of {}", at.display()));
            }
        }
        drop(made);
        sys::make_private(at).with_context(|| format!("making {} private", at.display()))
    };
    let t = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = fs
            .iter()
            .zip(dirs)
            .map(|x| s.spawn(move || stage(x)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("staging thread panicked"))
            .collect::<Result<Vec<()>>>()
    })?;
    let elapsed = ms(t.elapsed());
    drop(made);
    Ok(elapsed)
}

// ---------------------------------------------------------------------------------------------
// Sessions

/// Wall time of `snapshot plan DIR...` (spawn → exit): the planning proxy, as the session
/// logs no planning time of its own.
fn plan_wall(bin: &Path, dirs: &[&Path]) -> Result<f64> {
    let t = Instant::now();
    let out = Command::new(bin)
        .arg("plan")
        .args(dirs)
        .stdin(Stdio::null())
        .output()
        .context("running snapshot plan")?;
    let elapsed = ms(t.elapsed());
    if !out.status.success() {
        bail!(
            "snapshot plan failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(elapsed)
}

struct SessionRun {
    ready: Duration,
    teardown: Duration,
    /// stderr lines with their arrival time since spawn.
    lines: Vec<(Duration, String)>,
    /// When stdin was closed, since spawn.
    closed: Duration,
}

impl SessionRun {
    /// ms since spawn at which the first line containing `pat` arrived.
    fn stamp(&self, pat: &str) -> Result<f64> {
        self.lines
            .iter()
            .find(|(_, l)| l.contains(pat))
            .map(|(t, _)| ms(*t))
            .with_context(|| format!("no {pat:?} in the session's log:\n{}", self.log()))
    }

    /// ms since stdin was closed at which the first line containing `pat` arrived.
    fn teardown_stamp(&self, pat: &str) -> Result<f64> {
        Ok(self.stamp(pat)? - ms(self.closed))
    }

    /// (frozen window, snapshot creation) from the `-v` line.
    fn frozen_log(&self) -> Result<(f64, f64)> {
        let line = self
            .lines
            .iter()
            .map(|(_, l)| l.as_str())
            .find(|l| l.contains("frozen window "))
            .with_context(|| format!("no frozen-window line in:\n{}", self.log()))?;
        let num = |after: &str| -> Option<f64> {
            let rest = &line[line.find(after)? + after.len()..];
            rest.split(" ms").next()?.trim().parse().ok()
        };
        num("frozen window ")
            .zip(num("snapshot creation "))
            .with_context(|| format!("unreadable frozen-window line {line:?}"))
    }

    /// The slowest unit's own creation time (`-vv`: `btrfs: created NAME in X ms`).
    fn unit_create_max(&self) -> f64 {
        self.lines
            .iter()
            .filter_map(|(_, l)| {
                let rest = &l[l.find("btrfs: created ")?..];
                let x = rest.rsplit(" in ").next()?.strip_suffix(" ms")?;
                x.trim().parse::<f64>().ok()
            })
            .fold(0.0, f64::max)
    }

    fn log(&self) -> String {
        self.lines
            .iter()
            .map(|(t, l)| format!("  {:8.2} ms  {l}\n", ms(*t)))
            .collect()
    }
}

/// Sends SIGTERM (an orderly teardown) to a session still running after [`SESSION_LIMIT`].
struct Deadline {
    tx: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Deadline {
    fn new(child: &Child) -> Self {
        let pid = rustix::process::Pid::from_raw(child.id() as i32);
        let (tx, rx) = mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            if let (Err(mpsc::RecvTimeoutError::Timeout), Some(pid)) =
                (rx.recv_timeout(SESSION_LIMIT), pid)
            {
                eprintln!("bench: session {pid:?} still running after {SESSION_LIMIT:?}: SIGTERM");
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        });
        Self {
            tx: Some(tx),
            handle: Some(handle),
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// One session over pipes, as a backup script drives it: spawn → stdout EOF (ready) → close
/// stdin → exit (teardown).
fn run_session(bin: &Path, fx: &SessionDirs, dirs: &[&Path], writer: bool) -> Result<SessionRun> {
    if writer {
        std::fs::write(&fx.writer_log, "")
            .with_context(|| format!("truncating {}", fx.writer_log.display()))?;
    }
    let writers = writer.then_some(fx.writers.as_path());
    drive_session(session_command(
        bin,
        "-vv",
        writers,
        &fx.runtime,
        &fx.target,
        dirs,
    ))
}

/// The command line of a bench session over `dirs`: with the writer directory `writers`, or
/// none; its runtime and state under `runtime`.
fn session_command(
    bin: &Path,
    verbosity: &str,
    writers: Option<&Path>,
    runtime: &Path,
    target: &Path,
    dirs: &[&Path],
) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg(verbosity);
    match writers {
        Some(w) => cmd.arg("--writers-dir").arg(w),
        None => cmd.arg("--no-writers"),
    };
    cmd.arg("--runtime-dir")
        .arg(runtime)
        .arg("--state-dir")
        .arg(runtime.join("state"))
        .arg("-t")
        .arg(target)
        .args(dirs);
    cmd
}

/// Runs a session command over pipes (spawn → stdout EOF (ready) → [`HOLD`] → close stdin →
/// exit), its stderr lines stamped on arrival; an error if it did not say `done` and succeed.
fn drive_session(mut cmd: Command) -> Result<SessionRun> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd.spawn().context("starting snapshot")?;
    let deadline = Deadline::new(&child);
    let stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .map(|l| (t0.elapsed(), l))
            .collect::<Vec<_>>()
    });
    let mut out = String::new();
    let read = child.stdout.take().expect("piped").read_to_string(&mut out);
    let ready = t0.elapsed();
    std::thread::sleep(HOLD);

    let t_close = Instant::now();
    drop(child.stdin.take());
    let status = child.wait().context("waiting for snapshot")?;
    let teardown = t_close.elapsed();
    let closed = t_close - t0;
    drop(deadline);
    let lines = reader.join().unwrap_or_default();
    let run = SessionRun {
        ready,
        teardown,
        lines,
        closed,
    };
    read.context("reading snapshot's stdout")?;
    if out != "done\n" || !status.success() {
        bail!(
            "the session failed: stdout {out:?}, {status}; its log:\n{}",
            run.log()
        );
    }
    Ok(run)
}

/// The clock hook's (freeze, thaw) stamps, in µs.
fn writer_stamps(log: &Path) -> Result<(u64, u64)> {
    let text =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    let stamp = |phase: &str| -> Result<u64> {
        let found: Vec<u64> = text
            .lines()
            .filter_map(|l| l.strip_prefix(phase)?.trim().parse().ok())
            .collect();
        match found[..] {
            [t] => Ok(t),
            _ => bail!(
                "writer log {}: expected one {phase:?} stamp in {text:?}",
                log.display()
            ),
        }
    };
    let (f, t) = (stamp("freeze ")?, stamp("thaw ")?);
    if t < f {
        bail!("writer log {}: thaw before freeze: {text:?}", log.display());
    }
    Ok((f, t))
}

// ---------------------------------------------------------------------------------------------
// Unrelated mounts

/// `n` small tmpfs mounts (source [`EXTRA_SOURCE`]) under `dir`, each unmounted on drop only
/// if mountinfo still shows it, by its mount id, as ours.
struct ExtraMounts {
    mounts: Vec<(PathBuf, u64)>,
}

impl ExtraMounts {
    fn new(dir: &Path, n: usize) -> Result<Self> {
        use rustix::mount::{mount, MountFlags};
        let mut made = Self { mounts: Vec::new() };
        for i in 0..n {
            let at = dir.join(format!("{i:04}"));
            match std::fs::create_dir(&at) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(e).with_context(|| format!("creating {}", at.display()))
                }
                _ => {}
            }
            mount(
                EXTRA_SOURCE,
                &at,
                "tmpfs",
                MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
                c"size=16k,mode=0755",
            )
            .with_context(|| format!("mounting tmpfs at {}", at.display()))?;
            match sys::mount_id(&at) {
                Ok(id) => made.mounts.push((at, id)),
                Err(e) => {
                    // Just mounted by us, not yet recorded: undo it here.
                    let _ = sys::unmount_path(&at);
                    return Err(e).with_context(|| format!("mount id of {}", at.display()));
                }
            }
        }
        Ok(made)
    }
}

impl Drop for ExtraMounts {
    fn drop(&mut self) {
        let table = match MountTable::read() {
            Ok(t) => t,
            Err(e) => {
                eprintln!("bench: reading the mount table: {e}; leaving the extra mounts");
                return;
            }
        };
        let mut left = 0;
        for (at, id) in self.mounts.drain(..).rev() {
            let ours = table.by_id(id).is_some_and(|m| {
                m.mount_point == at && m.source == EXTRA_SOURCE && m.fstype == "tmpfs"
            }) && table.mounted_at(&at).is_some_and(|m| m.id == id);
            if !ours {
                eprintln!(
                    "bench: {} is not our tmpfs (id {id}) any more; left alone",
                    at.display()
                );
                left += 1;
                continue;
            }
            if let Err(e) = sys::unmount_path(&at) {
                eprintln!("bench: unmounting {}: {e}", at.display());
                left += 1;
            }
        }
        if left > 0 {
            eprintln!("bench: {left} extra mounts left behind");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Results

/// Median, min and max of a series, in ms.
#[derive(Debug, Clone, Copy, Serialize)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

impl Stat {
    fn of(xs: &[f64]) -> Self {
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        let median = match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        };
        Self {
            median,
            min: v.first().copied().unwrap_or(f64::NAN),
            max: v.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// The session side of a provider configuration (freeze, LVM, ZFS), per run: one session
/// with the clock writer hook and one without.
#[derive(Debug, Default)]
struct SessionSamples {
    ready: Vec<f64>,
    ready_writer: Vec<f64>,
    frozen_hook: Vec<f64>,
    frozen_log: Vec<f64>,
    create_log: Vec<f64>,
    teardown: Vec<f64>,
    teardown_writer: Vec<f64>,
}

impl SessionSamples {
    /// Records one run: `w` with the clock hook, whose `freeze`/`thaw` stamps (µs) are
    /// `stamps`, and `no_w` without writers.
    fn push(&mut self, w: &SessionRun, stamps: (u64, u64), no_w: &SessionRun) -> Result<()> {
        let (freeze, thaw) = stamps;
        self.ready_writer.push(ms(w.ready));
        self.teardown_writer.push(ms(w.teardown));
        self.frozen_hook.push((thaw - freeze) as f64 / 1e3);
        self.frozen_log.push(w.frozen_log()?.0);
        self.ready.push(ms(no_w.ready));
        self.teardown.push(ms(no_w.teardown));
        self.create_log.push(no_w.frozen_log()?.1);
        Ok(())
    }
}

/// [`SessionSamples`] as medians (min–max).
#[derive(Debug, Serialize)]
struct ProviderSession {
    /// spawn → `done` + EOF, no writers.
    ready_ms: Stat,
    ready_with_writer_ms: Stat,
    /// Clock hook: `thaw` stamp − `freeze` stamp.
    frozen_window_hook_ms: Stat,
    /// The session's `-v` "frozen window" (first writer freeze → last thaw).
    frozen_window_log_ms: Stat,
    /// The session's `-v` "snapshot creation", no writers.
    snapshot_creation_ms: Stat,
    /// stdin close → exit.
    teardown_ms: Stat,
    teardown_with_writer_ms: Stat,
}

impl ProviderSession {
    fn of(s: &SessionSamples) -> Self {
        Self {
            ready_ms: Stat::of(&s.ready),
            ready_with_writer_ms: Stat::of(&s.ready_writer),
            frozen_window_hook_ms: Stat::of(&s.frozen_hook),
            frozen_window_log_ms: Stat::of(&s.frozen_log),
            snapshot_creation_ms: Stat::of(&s.create_log),
            teardown_ms: Stat::of(&s.teardown),
            teardown_with_writer_ms: Stat::of(&s.teardown_writer),
        }
    }

    /// The table rows, each beside its baseline: `(baseline, what it is)` for ready, the
    /// frozen window (and snapshot creation) and teardown.
    fn rows<'a>(
        &'a self,
        ready: (&'a Stat, &'a str),
        window: (&'a Stat, &'a str),
        teardown: (&'a Stat, &'a str),
    ) -> Vec<Row<'a>> {
        vec![
            row("ready, no writers", &self.ready_ms, ready),
            row("ready, 1 writer hook", &self.ready_with_writer_ms, ready),
            row(
                "frozen window, hook clock",
                &self.frozen_window_hook_ms,
                window,
            ),
            row(
                "frozen window, session -v",
                &self.frozen_window_log_ms,
                window,
            ),
            row(
                "snapshot creation, -v, no writers",
                &self.snapshot_creation_ms,
                window,
            ),
            row("teardown, no writers", &self.teardown_ms, teardown),
            row(
                "teardown, 1 writer hook",
                &self.teardown_with_writer_ms,
                teardown,
            ),
        ]
    }
}

/// One row of a provider configuration's table: a session measure beside the raw baseline it
/// is a ratio to, and what that baseline is.
type Row<'a> = (&'a str, &'a Stat, &'a Stat, &'a str);

/// A [`Row`] of a session measure and its (baseline, what it is).
fn row<'a>(what: &'a str, sess: &'a Stat, (raw, label): (&'a Stat, &'a str)) -> Row<'a> {
    (what, sess, raw, label)
}

/// The table of one provider configuration (freeze, LVM, ZFS): a heading, then each session
/// measure with its median (min–max), the raw baseline, the ratio and the difference.
fn provider_table(o: &mut String, heading: &str, baseline: &str, decimals: usize, rows: &[Row]) {
    use std::fmt::Write;
    let st = |s: &Stat| {
        format!(
            "{:.d$} ({:.d$}–{:.d$})",
            s.median,
            s.min,
            s.max,
            d = decimals
        )
    };
    let _ = writeln!(o, "\n{heading}");
    let _ = writeln!(
        o,
        "  {:<36} {:>24}  {:<44} {:>7} {:>9}",
        "measure", "session ms", baseline, "ratio", "extra"
    );
    for (what, sess, raw, label) in rows {
        let _ = writeln!(
            o,
            "  {what:<36} {:>24}  {:<44} {:>7} {:>9}",
            st(sess),
            format!("{} {label}", st(raw)),
            format!("{:.2}x", sess.median / raw.median),
            format!("{:+.d$}", sess.median - raw.median, d = decimals),
        );
    }
}

#[derive(Debug, Serialize)]
struct SessionStats {
    /// spawn → `done` + EOF on stdout, no writers.
    ready_ms: Stat,
    /// The same with the clock writer hook.
    ready_with_writer_ms: Stat,
    /// Clock hook: `thaw` stamp − `freeze` stamp.
    frozen_window_hook_ms: Stat,
    /// The session's own `-v` "frozen window" (first freeze sent → last thaw returned).
    frozen_window_log_ms: Stat,
    /// The session's `-v` "snapshot creation", no writers.
    snapshot_creation_ms: Stat,
    /// stdin close → exit, no writers.
    teardown_ms: Stat,
    teardown_with_writer_ms: Stat,
    /// `snapshot plan DIR...`, spawn → exit (planning proxy).
    plan_wall_ms: Stat,
}

#[derive(Debug, Serialize)]
struct RawStats {
    snapshot_sequential_ms: Stat,
    snapshot_parallel_ms: Stat,
    mount_ms: Stat,
    /// unmount + delete.
    teardown_ms: Stat,
    /// parallel snapshots (sequential for one filesystem) + mounts: medians added.
    ready_ms: f64,
    /// Reading /proc/self/mountinfo once (the kernel generating the whole table).
    mountinfo_read_ms: Stat,
    /// Not in the baseline: the provider's top-level mounts, in parallel (see the breakdown).
    staging_mounts_ms: Stat,
}

/// Milestones of the writer-less sessions: arrival of a `-vv` log line, ms since spawn
/// (teardown ones: since stdin close). Medians.
#[derive(Debug, Serialize)]
struct Breakdown {
    planned: f64,
    journal_created: f64,
    snapshots_created: f64,
    view_built: f64,
    ready: f64,
    slowest_unit_create: f64,
    teardown_started: f64,
    teardown_complete: f64,
    exited: f64,
}

#[derive(Debug, Serialize)]
struct Ratios {
    /// ready / raw (snapshots + mounts).
    ready: f64,
    ready_with_writer: f64,
    /// frozen window (hook clock) / raw snapshot ioctls (parallel).
    frozen_window_hook: f64,
    frozen_window_log: f64,
    snapshot_creation: f64,
    /// teardown / raw unmount + delete.
    teardown: f64,
}

#[derive(Debug, Serialize)]
struct Config {
    filesystems: usize,
    extra_mounts: usize,
    /// The runs without extra mounts interleaved with the extra-mount runs (their A/B control).
    control: bool,
    session: SessionStats,
    raw: RawStats,
    ratios: Ratios,
    breakdown: Breakdown,
}

impl Config {
    fn new(filesystems: usize, extra_mounts: usize, s: &Samples) -> Self {
        let par = if filesystems > 1 {
            Stat::of(&s.raw_snap_par)
        } else {
            // One filesystem: no threads in the session either; both series are one ioctl.
            Stat::of(&[&s.raw_snap_seq[..], &s.raw_snap_par[..]].concat())
        };
        let raw = RawStats {
            snapshot_sequential_ms: Stat::of(&s.raw_snap_seq),
            snapshot_parallel_ms: par,
            mount_ms: Stat::of(&s.raw_mount),
            teardown_ms: Stat::of(&s.raw_teardown),
            ready_ms: par.median + Stat::of(&s.raw_mount).median,
            mountinfo_read_ms: Stat::of(&s.raw_mountinfo),
            staging_mounts_ms: Stat::of(&s.raw_staging),
        };
        let session = SessionStats {
            ready_ms: Stat::of(&s.ready),
            ready_with_writer_ms: Stat::of(&s.ready_writer),
            frozen_window_hook_ms: Stat::of(&s.frozen_hook),
            frozen_window_log_ms: Stat::of(&s.frozen_log),
            snapshot_creation_ms: Stat::of(&s.create_log),
            teardown_ms: Stat::of(&s.teardown),
            teardown_with_writer_ms: Stat::of(&s.teardown_writer),
            plan_wall_ms: Stat::of(&s.plan_wall),
        };
        let snap = raw.snapshot_parallel_ms.median;
        let ratios = Ratios {
            ready: session.ready_ms.median / raw.ready_ms,
            ready_with_writer: session.ready_with_writer_ms.median / raw.ready_ms,
            frozen_window_hook: session.frozen_window_hook_ms.median / snap,
            frozen_window_log: session.frozen_window_log_ms.median / snap,
            snapshot_creation: session.snapshot_creation_ms.median / snap,
            teardown: session.teardown_ms.median / raw.teardown_ms.median,
        };
        let med = |v: &[f64]| Stat::of(v).median;
        let breakdown = Breakdown {
            planned: med(&s.planned),
            journal_created: med(&s.journaled),
            snapshots_created: med(&s.created),
            view_built: med(&s.viewed),
            ready: med(&s.ready),
            slowest_unit_create: med(&s.unit_create_max),
            teardown_started: med(&s.td_noticed),
            teardown_complete: med(&s.td_done),
            exited: med(&s.teardown),
        };
        Self {
            filesystems,
            extra_mounts,
            control: false,
            session,
            raw,
            ratios,
            breakdown,
        }
    }

    fn control(self) -> Self {
        Self {
            control: true,
            ..self
        }
    }

    fn label(&self) -> String {
        let fs = match self.filesystems {
            1 => "1 filesystem".to_owned(),
            n => format!("{n} filesystems"),
        };
        if self.extra_mounts > 0 {
            format!("{fs}, {} unrelated mounts present", self.extra_mounts)
        } else if self.control {
            format!("{fs}, control runs interleaved with the extra-mount runs")
        } else {
            fs
        }
    }
}

#[derive(Debug, Serialize)]
struct Target {
    what: String,
    value: f64,
    /// None: context for the targets around it, not a target.
    limit: Option<f64>,
    met: Option<bool>,
}

#[derive(Debug, Serialize)]
struct Machine {
    cores: usize,
    kernel: String,
}

#[derive(Debug, Serialize)]
struct Report {
    runs: u32,
    machine: Machine,
    configs: Vec<Config>,
    /// The freeze provider (XFS, ext4), against raw FIFREEZE + FICLONE + FITHAW.
    freeze: Vec<freeze::FreezeConfig>,
    /// The LVM providers (`--lvm`), against raw `lvcreate --snapshot`.
    lvm: Vec<lvm::LvmConfig>,
    /// The ZFS provider (`--zfs`), against raw `zfs snapshot` + hold + mount.
    zfs: Vec<zfs::ZfsConfig>,
    /// Database commit stalls (`--db`), against the floor.
    db: Vec<db::DbConfig>,
    targets: Vec<Target>,
}

impl Report {
    fn new(runs: u32, configs: Vec<Config>, freeze: Vec<freeze::FreezeConfig>) -> Self {
        let machine = Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: rustix::system::uname()
                .release()
                .to_string_lossy()
                .into_owned(),
        };
        let plain = |n: usize| {
            configs
                .iter()
                .find(|c| c.filesystems == n && c.extra_mounts == 0 && !c.control)
        };
        let mut targets = Vec::new();
        let mut target = |what: String, value: f64, limit: Option<f64>| {
            targets.push(Target {
                what,
                value,
                limit,
                met: limit.map(|l| value <= l),
            })
        };
        if let Some(one) = plain(1) {
            target(
                "ready, 1 filesystem / raw snapshot + bind".into(),
                one.ratios.ready,
                Some(1.5),
            );
            let most = configs
                .iter()
                .filter(|c| c.extra_mounts == 0 && !c.control)
                .max_by_key(|c| c.filesystems)
                .filter(|c| c.filesystems > 1);
            if let Some(most) = most {
                let n = most.filesystems;
                let (m, o) = (&most.session, &one.session);
                target(
                    format!("frozen window (hook clock), {n} filesystems / 1"),
                    m.frozen_window_hook_ms.median / o.frozen_window_hook_ms.median,
                    Some(2.0),
                );
                target(
                    format!("frozen window (session -v), {n} filesystems / 1"),
                    m.frozen_window_log_ms.median / o.frozen_window_log_ms.median,
                    Some(2.0),
                );
                // What the kernel alone does with the same fixtures: the floor under the above.
                target(
                    format!("context: raw snapshot ioctls in parallel, {n} filesystems / 1"),
                    most.raw.snapshot_parallel_ms.median / one.raw.snapshot_parallel_ms.median,
                    None,
                );
            }
        }
        let control = configs.iter().find(|c| c.control);
        let extra = configs.iter().find(|c| c.extra_mounts > 0);
        if let (Some(a), Some(b)) = (control, extra) {
            let n = b.extra_mounts;
            // "Not materially": within 20 % (process start-up noise is of that order).
            for (what, with, without) in [
                (
                    "`snapshot plan` wall time (planning proxy)",
                    b.session.plan_wall_ms.median,
                    a.session.plan_wall_ms.median,
                ),
                (
                    "spawn → plan logged (session -v)",
                    b.breakdown.planned,
                    a.breakdown.planned,
                ),
                (
                    "ready",
                    b.session.ready_ms.median,
                    a.session.ready_ms.median,
                ),
            ] {
                target(
                    format!("{what}, {n} extra mounts / none"),
                    with / without,
                    Some(1.2),
                );
            }
            target(
                format!("context: one /proc/self/mountinfo read, {n} extra mounts / none"),
                b.raw.mountinfo_read_ms.median / a.raw.mountinfo_read_ms.median,
                None,
            );
        }
        Self {
            runs,
            machine,
            configs,
            freeze,
            lvm: Vec::new(),
            zfs: Vec::new(),
            db: Vec::new(),
            targets,
        }
    }

    fn table(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let st = |s: &Stat| format!("{:.2} ({:.2}–{:.2})", s.median, s.min, s.max);
        let _ = writeln!(
            o,
            "snapshot bench: {}, {} cores, Linux {}; {} runs per configuration\n\
             ms as median (min–max); ratio and extra = session against the raw baseline \
             (kernel or tool) measured in the same run",
            if !self.db.is_empty() {
                "database servers on filesystems of their own on loop files"
            } else if self.lvm.is_empty() && self.zfs.is_empty() {
                "loop devices"
            } else {
                "LVM/ZFS fixtures on loop files"
            },
            self.machine.cores,
            self.machine.kernel,
            self.runs
        );
        for c in &self.configs {
            let (s, r) = (&c.session, &c.raw);
            let _ = writeln!(o, "\n{}", c.label());
            let _ = writeln!(
                o,
                "  {:<36} {:>22}  {:<32} {:>7} {:>8}",
                "measure", "session ms", "raw kernel baseline ms", "ratio", "extra"
            );
            let mut row = |what: &str, sess: &Stat, raw: Option<(&str, f64)>| {
                let (raw_text, ratio, extra) = match raw {
                    Some((text, base)) => (
                        text.to_owned(),
                        format!("{:.2}x", sess.median / base),
                        format!("{:+.2}", sess.median - base),
                    ),
                    None => Default::default(),
                };
                let _ = writeln!(
                    o,
                    "  {what:<36} {:>22}  {raw_text:<32} {ratio:>7} {extra:>8}",
                    st(sess)
                );
            };
            let ready = format!("{:.2} snapshots + binds", r.ready_ms);
            let snap = format!("{} ioctls", st(&r.snapshot_parallel_ms));
            let teardown = format!("{} unmount+delete", st(&r.teardown_ms));
            let snap_base = r.snapshot_parallel_ms.median;
            row("ready, no writers", &s.ready_ms, Some((&ready, r.ready_ms)));
            row(
                "ready, 1 writer hook",
                &s.ready_with_writer_ms,
                Some((&ready, r.ready_ms)),
            );
            row(
                "frozen window, hook clock",
                &s.frozen_window_hook_ms,
                Some((&snap, snap_base)),
            );
            row(
                "frozen window, session -v",
                &s.frozen_window_log_ms,
                Some((&snap, snap_base)),
            );
            row(
                "snapshot creation, -v, no writers",
                &s.snapshot_creation_ms,
                Some((&snap, snap_base)),
            );
            row(
                "teardown, no writers",
                &s.teardown_ms,
                Some((&teardown, r.teardown_ms.median)),
            );
            row(
                "teardown, 1 writer hook",
                &s.teardown_with_writer_ms,
                Some((&teardown, r.teardown_ms.median)),
            );
            row(
                "`snapshot plan` wall (planning proxy)",
                &s.plan_wall_ms,
                None,
            );
            let _ = writeln!(
                o,
                "  raw detail: snapshot ioctls sequential {}, parallel {}; read-only binds {}; \
                 /proc/self/mountinfo read {}; top-level (staging) mounts in parallel {}",
                st(&r.snapshot_sequential_ms),
                st(&r.snapshot_parallel_ms),
                st(&r.mount_ms),
                st(&r.mountinfo_read_ms),
                st(&r.staging_mounts_ms)
            );
            let b = &c.breakdown;
            let _ = writeln!(
                o,
                "  session timeline, ms since spawn (no writers): planned {:.2}, journal created \
                 {:.2}, snapshots made {:.2} (slowest unit {:.2}), view built {:.2}, ready {:.2}",
                b.planned,
                b.journal_created,
                b.snapshots_created,
                b.slowest_unit_create,
                b.view_built,
                b.ready
            );
            let _ = writeln!(
                o,
                "  teardown timeline, ms since stdin close: started {:.2}, complete {:.2}, \
                 exited {:.2}",
                b.teardown_started, b.teardown_complete, b.exited
            );
        }
        for f in &self.freeze {
            f.table(&mut o);
        }
        for l in &self.lvm {
            l.table(&mut o);
        }
        for z in &self.zfs {
            z.table(&mut o);
        }
        for d in &self.db {
            d.table(&mut o);
        }
        if !self.targets.is_empty() {
            let _ = writeln!(o, "\ntargets (reported, never asserted)");
            for t in &self.targets {
                let verdict = match (t.limit, t.met) {
                    (Some(l), Some(met)) => {
                        format!(
                            "(target <= {l:.1}x)  {}",
                            if met { "met" } else { "MISSED" }
                        )
                    }
                    _ => String::new(),
                };
                // Context lines sit indented under the targets they explain.
                let what = match t.limit {
                    Some(_) => t.what.clone(),
                    None => format!("  {}", t.what),
                };
                let _ = writeln!(o, "  {what:<68} {:>6.2}x  {verdict}", t.value);
            }
        }
        o
    }
}
