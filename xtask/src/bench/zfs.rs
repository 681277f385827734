//! The ZFS provider in the bench (`--zfs`, the ZFS module: inside `cargo xtask vm-test`): one
//! pool on a sparse file in `/var/tmp` with two datasets, sessions through the real binary over
//! one dataset and over both (one atomic `zfs snapshot a@n b@n`), beside the raw ZFS work
//! measured in the same guest — `zfs snapshot` of the same datasets in one call (the frozen
//! window: all the provider does inside it), `zfs hold` and the read-only mounts (ready), then
//! unmount + `zfs release` + `zfs destroy` (teardown).

use super::{
    ms, run_session, writer_stamps, ProviderSession, SessionDirs, SessionRun, SessionSamples, Stat,
    HOLD,
};
use anyhow::{Context, Result};
use serde::Serialize;
use snapshot_core::sys;
use snapshot_testkit::zfs::{zfs_tool, Dataset, Mountpoint, Pool};
use snapshot_testkit::Scratch;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The pool's sparse backing file: the datasets hold a few files, ZFS wants 64 MB at least.
const POOL_MB: u64 = 512;

/// One pool (`snaptest-bench-<pid>-<n>`, on `/var/tmp/<pool>.img`) with two datasets mounted
/// by ZFS under the scratch directory.
pub(super) struct ZfsFixtures {
    datasets: Vec<Dataset>,
    raw_views: Vec<PathBuf>,
    session: SessionDirs,
    /// Dropped after the datasets (it would take them along, but each logs its own).
    pool: Option<Pool>,
}

impl ZfsFixtures {
    /// Two datasets, or as many as the largest of `scale`.
    pub(super) fn new(scratch: &Scratch, scale: &[usize]) -> Result<Self> {
        let count = scale.iter().copied().max().unwrap_or(0).max(2);
        // The guest's init leaves the module to its first user.
        if !Path::new("/dev/zfs").exists() {
            zfs_tool("modprobe", &["zfs"]).context(
                "loading the zfs module (no ZFS here? run it inside `cargo xtask vm-test`)",
            )?;
        }
        // Owned by `me` as soon as each piece exists, so that on an error Drop takes down
        // what was made, datasets first.
        let mut me = Self {
            datasets: Vec::new(),
            raw_views: Vec::new(),
            session: SessionDirs::new(&scratch.join("zfs"))?,
            // `snaptest-bench-<pid>-<n>`: the testkit turns a `-` in the name into `_`.
            pool: Some(Pool::on_file("bench", POOL_MB)?),
        };
        for i in 0..count {
            let at = scratch.join(format!("zfs/ds{i}"));
            let ds = me
                .pool
                .as_ref()
                .expect("set above")
                .dataset(&format!("ds{i}"), Mountpoint::At(&at))?;
            me.datasets.push(ds);
        }
        for (i, ds) in me.datasets.iter().enumerate() {
            for j in 0..8 {
                std::fs::write(
                    ds.mount_point.join(format!("file{j}")),
                    format!("{i}:{j}\n"),
                )
                .with_context(|| format!("writing to {}", ds.mount_point.display()))?;
            }
            let view = scratch.join(format!("zfs/raw/{i}"));
            std::fs::create_dir_all(&view)
                .with_context(|| format!("creating {}", view.display()))?;
            me.raw_views.push(view);
        }
        // Settle the writes above into a transaction group of their own, so the first
        // measured snapshot does not pay for them.
        let pool = me.pool.as_ref().expect("set above").name().to_owned();
        zfs_tool("zpool", &["sync", &pool]).with_context(|| format!("zpool sync {pool}"))?;
        Ok(me)
    }

    /// (label, datasets) of each configuration: 1, 2, then the larger `scale` counts.
    pub(super) fn configs(&self, scale: &[usize]) -> Vec<(String, usize)> {
        let mut v: Vec<(String, usize)> = vec![
            ("1 dataset".into(), 1),
            ("2 datasets of one pool (one atomic zfs snapshot)".into(), 2),
        ];
        let mut more: Vec<usize> = scale.iter().copied().filter(|&n| n > 2).collect();
        more.sort_unstable();
        more.dedup();
        v.extend(
            more.into_iter()
                .map(|n| (format!("{n} datasets of one pool"), n)),
        );
        v
    }
}

impl Drop for ZfsFixtures {
    fn drop(&mut self) {
        self.datasets.clear();
        drop(self.pool.take());
    }
}

#[derive(Debug, Default)]
pub(super) struct ZfsSamples {
    raw_snapshot: Vec<f64>,
    raw_hold: Vec<f64>,
    raw_mount: Vec<f64>,
    raw_ready: Vec<f64>,
    raw_teardown: Vec<f64>,
    session: SessionSamples,
    /// The provider's own `-vv` timings of its `zfs snapshot` and `zfs hold` (no writers).
    provider_snapshot: Vec<f64>,
    provider_hold: Vec<f64>,
}

pub(super) fn iteration(
    fx: &ZfsFixtures,
    bin: &Path,
    n: usize,
    keep: Option<&mut ZfsSamples>,
) -> Result<()> {
    let datasets: Vec<&Dataset> = fx.datasets[..n].iter().collect();
    let raw = raw_round(&datasets, &fx.raw_views[..n])?;
    let dirs: Vec<&Path> = datasets.iter().map(|d| d.mount_point.as_path()).collect();
    let w = run_session(bin, &fx.session, &dirs, true)?;
    let stamps = writer_stamps(&fx.session.writer_log)?;
    let no_w = run_session(bin, &fx.session, &dirs, false)?;
    let Some(s) = keep else {
        return Ok(());
    };
    s.raw_snapshot.push(raw.snapshot);
    s.raw_hold.push(raw.hold);
    s.raw_mount.push(raw.mount);
    s.raw_ready.push(raw.ready);
    s.raw_teardown.push(raw.teardown);
    s.session.push(&w, stamps, &no_w)?;
    s.provider_snapshot
        .push(logged_ms(&no_w, "zfs: zfs snapshot of pool ")?);
    s.provider_hold.push(logged_ms(&no_w, "zfs: held ")?);
    Ok(())
}

/// The figure at the end of the first `-vv` line containing `pat` (`… took 12.3 ms`,
/// `… in 12.3 ms`).
fn logged_ms(run: &SessionRun, pat: &str) -> Result<f64> {
    let line = run
        .lines
        .iter()
        .map(|(_, l)| l.as_str())
        .find(|l| l.contains(pat))
        .with_context(|| format!("no {pat:?} in the session's log:\n{}", run.log()))?;
    line.strip_suffix(" ms")
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|x| x.parse().ok())
        .with_context(|| format!("no time at the end of {line:?}"))
}

struct RawTimes {
    snapshot: f64,
    hold: f64,
    mount: f64,
    ready: f64,
    teardown: f64,
}

/// What a raw round made, undone on drop: unmounts, releases its hold, then destroys the
/// snapshots it made — by their full names `DATASET@<its own name>`, never a dataset.
struct RawRound<'a> {
    /// The snapshot name after `@`, also the hold's tag.
    tag: String,
    snaps: Vec<String>,
    held: bool,
    mounted: Vec<&'a Path>,
}

impl Drop for RawRound<'_> {
    fn drop(&mut self) {
        for at in self.mounted.drain(..).rev() {
            if let Err(e) = sys::unmount_path(at) {
                eprintln!("bench: unmounting {}: {e}", at.display());
            }
        }
        if self.held {
            let mut args = vec!["release", self.tag.as_str()];
            args.extend(self.snaps.iter().map(String::as_str));
            if let Err(e) = zfs_tool("zfs", &args) {
                eprintln!("bench: zfs release {}: {e:#}", self.tag);
            }
        }
        for s in self.snaps.drain(..) {
            if let Err(e) = zfs_tool("zfs", &["destroy", &s]) {
                eprintln!("bench: zfs destroy {s}: {e:#}");
            }
        }
    }
}

/// The ZFS work a session does for `datasets`, issued directly: one `zfs snapshot` of all
/// (as the provider's `create`), one `zfs hold` of all and a read-only mount of each (as its
/// `mount`), then unmount, `zfs release` of all and one `zfs destroy` per snapshot (as its
/// `remove`, without the listing of what exists and what is held that it does first).
fn raw_round(datasets: &[&Dataset], views: &[PathBuf]) -> Result<RawTimes> {
    let tag = format!("snaptest-bench-raw-{}", std::process::id());
    let names: Vec<String> = datasets
        .iter()
        .map(|d| format!("{}@{tag}", d.name))
        .collect();
    let mut round = RawRound {
        tag,
        snaps: Vec::new(),
        held: false,
        mounted: Vec::new(),
    };
    let t_ready = Instant::now();
    let mut args = vec!["snapshot"];
    args.extend(names.iter().map(String::as_str));
    zfs_tool("zfs", &args).context("raw zfs snapshot")?;
    let snapshot = ms(t_ready.elapsed());
    // All or nothing (one transaction group): after success every one exists.
    round.snaps = names;

    let t = Instant::now();
    let mut args = vec!["hold", round.tag.as_str()];
    args.extend(round.snaps.iter().map(String::as_str));
    zfs_tool("zfs", &args).context("raw zfs hold")?;
    round.held = true;
    let hold = ms(t.elapsed());

    let t = Instant::now();
    for (snap, view) in round.snaps.iter().zip(views) {
        // mount(2) as `mount -t zfs -o ro DS@NAME DIR` issues it, and as the provider does.
        sys::mount_readonly(Path::new(snap), view, "zfs", "")
            .with_context(|| format!("mounting {snap} at {}", view.display()))?;
        round.mounted.push(view);
    }
    let mount = ms(t.elapsed());
    let ready = ms(t_ready.elapsed());
    std::thread::sleep(HOLD);

    let t = Instant::now();
    while let Some(at) = round.mounted.pop() {
        sys::unmount_path(at).with_context(|| format!("raw unmount {}", at.display()))?;
    }
    let mut args = vec!["release", round.tag.as_str()];
    args.extend(round.snaps.iter().map(String::as_str));
    zfs_tool("zfs", &args).context("raw zfs release")?;
    round.held = false;
    while let Some(s) = round.snaps.pop() {
        zfs_tool("zfs", &["destroy", &s]).context("raw zfs destroy")?;
    }
    let teardown = ms(t.elapsed());
    Ok(RawTimes {
        snapshot,
        hold,
        mount,
        ready,
        teardown,
    })
}

#[derive(Debug, Serialize)]
pub(super) struct ZfsConfig {
    label: String,
    datasets: usize,
    #[serde(flatten)]
    session: ProviderSession,
    /// The provider's `-vv` "zfs snapshot of pool … took": its own clock around the call.
    provider_zfs_snapshot_ms: Stat,
    /// The provider's `-vv` "held … in": its `zfs hold`, after the window.
    provider_zfs_hold_ms: Stat,
    /// `zfs snapshot` of all the datasets in one call.
    raw_zfs_snapshot_ms: Stat,
    /// `zfs hold` of all the snapshots in one call.
    raw_zfs_hold_ms: Stat,
    raw_mount_ms: Stat,
    /// snapshot + hold + mount, one clock.
    raw_ready_ms: Stat,
    /// unmount + release + destroy.
    raw_teardown_ms: Stat,
    ratio_ready: f64,
    ratio_frozen_window_hook: f64,
    ratio_frozen_window_log: f64,
    ratio_snapshot_creation: f64,
    ratio_teardown: f64,
}

impl ZfsConfig {
    pub(super) fn new(label: String, datasets: usize, s: &ZfsSamples) -> Self {
        let st = |v: &[f64]| Stat::of(v);
        let (rr, rc, rt) = (
            st(&s.raw_ready).median,
            st(&s.raw_snapshot).median,
            st(&s.raw_teardown).median,
        );
        let session = ProviderSession::of(&s.session);
        Self {
            label,
            datasets,
            provider_zfs_snapshot_ms: st(&s.provider_snapshot),
            provider_zfs_hold_ms: st(&s.provider_hold),
            raw_zfs_snapshot_ms: st(&s.raw_snapshot),
            raw_zfs_hold_ms: st(&s.raw_hold),
            raw_mount_ms: st(&s.raw_mount),
            raw_ready_ms: st(&s.raw_ready),
            raw_teardown_ms: st(&s.raw_teardown),
            ratio_ready: session.ready_ms.median / rr,
            ratio_frozen_window_hook: session.frozen_window_hook_ms.median / rc,
            ratio_frozen_window_log: session.frozen_window_log_ms.median / rc,
            ratio_snapshot_creation: session.snapshot_creation_ms.median / rc,
            ratio_teardown: session.teardown_ms.median / rt,
            session,
        }
    }

    pub(super) fn table(&self, o: &mut String) {
        use std::fmt::Write;
        let (ready, create, teardown) = (
            (&self.raw_ready_ms, "snapshot+hold+mount"),
            (&self.raw_zfs_snapshot_ms, "zfs snapshot"),
            (&self.raw_teardown_ms, "umount+release+destroy"),
        );
        super::provider_table(
            o,
            &format!("zfs, {}", self.label),
            "raw ZFS baseline ms",
            1,
            &self.session.rows(ready, create, teardown),
        );
        let st = |s: &Stat| format!("{:.1} ({:.1}–{:.1})", s.median, s.min, s.max);
        let _ = writeln!(
            o,
            "  raw detail: zfs snapshot {}, zfs hold {}, mount {}",
            st(&self.raw_zfs_snapshot_ms),
            st(&self.raw_zfs_hold_ms),
            st(&self.raw_mount_ms)
        );
        let _ = writeln!(
            o,
            "  provider's own -vv clock (no writers): zfs snapshot {}, zfs hold {}",
            st(&self.provider_zfs_snapshot_ms),
            st(&self.provider_zfs_hold_ms)
        );
    }
}
