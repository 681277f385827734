//! The freeze provider in the bench: XFS and ext4 on loop devices whose backing files sit on a
//! btrfs fixture (reflinks), real sessions beside the raw kernel work measured in the same run —
//! `FIFREEZE`, `FICLONE` of each backing file into a scratch clone, `FITHAW` (the frozen window
//! the provider cannot go below), then the clone attached read-only and mounted (ready), then
//! unmount + delete (teardown).

use super::{
    ms, row, run_session, writer_stamps, ProviderSession, SessionDirs, SessionRun, SessionSamples,
    Stat, HOLD,
};
use anyhow::{Context, Result};
use serde::Serialize;
use snapshot_core::sys;
use snapshot_testkit::{FsKind, LoopFs, Scratch};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The filesystems of the freeze configurations: XFS and ext4 alternating (index 0 is XFS,
/// 1 is ext4), backing files in one btrfs.
pub(super) struct FreezeFixtures {
    fs: Vec<LoopFs>,
    raw_views: Vec<PathBuf>,
    session: SessionDirs,
    /// Held for its `Drop`, after the filesystems whose backing files it holds.
    host: Option<LoopFs>,
}

impl FreezeFixtures {
    pub(super) fn new(scratch: &Scratch, backing_dir: &Path, n: usize) -> Result<Self> {
        let n = n.max(2);
        let kinds: Vec<FsKind> = (0..n).map(|i| [FsKind::Xfs, FsKind::Ext4][i % 2]).collect();
        // Sparse: what the mkfs writes and the little content below is all it holds.
        let host_mb: u64 = kinds.iter().map(|k| k.min_size_mb() + 64).sum::<u64>() + 256;
        let host = LoopFs::new_in(
            backing_dir,
            "bench-fz-host",
            FsKind::Btrfs,
            host_mb,
            &scratch.join("fz/host"),
        )?;
        let mut me = Self {
            fs: Vec::with_capacity(n),
            raw_views: Vec::with_capacity(n),
            session: SessionDirs::new(&scratch.join("fz"))?,
            host: None,
        };
        // Owned by `me` from here, so that on an error below its Drop removes the filesystems
        // on it first.
        let host_dir = host.mount_point.clone();
        me.host = Some(host);
        for (i, kind) in kinds.into_iter().enumerate() {
            let f = LoopFs::new_in(
                &host_dir,
                &format!("bench-fz{i:02}-{}", kind.name()),
                kind,
                0,
                &scratch.join(format!("fz/fs/{i:02}")),
            )?;
            for j in 0..8 {
                f.write(&format!("data/file{j}"), &format!("{i}:{j}\n"))?;
            }
            me.fs.push(f);
            let view = scratch.join(format!("fz/raw/{i:02}"));
            std::fs::create_dir_all(&view)
                .with_context(|| format!("creating {}", view.display()))?;
            me.raw_views.push(view);
        }
        Ok(me)
    }

    /// The filesystem indexes of the configuration of `n`, and its label: one filesystem is
    /// measured on XFS and on ext4; more alternate.
    pub(super) fn configs(counts: &[usize]) -> Vec<(Vec<usize>, String)> {
        let mut out = Vec::new();
        for &n in counts {
            if n == 1 {
                out.push((vec![0], "1 XFS".to_owned()));
                out.push((vec![1], "1 ext4".to_owned()));
            } else {
                let xfs = n.div_ceil(2);
                out.push((
                    (0..n).collect(),
                    format!("{n} filesystems ({xfs} XFS + {} ext4)", n - xfs),
                ));
            }
        }
        out
    }
}

impl Drop for FreezeFixtures {
    fn drop(&mut self) {
        std::thread::scope(|s| {
            for f in self.fs.drain(..) {
                s.spawn(move || drop(f));
            }
        });
        drop(self.host.take());
    }
}

#[derive(Debug, Default)]
pub(super) struct FreezeSamples {
    raw_window: Vec<f64>,
    raw_freeze: Vec<f64>,
    raw_clone: Vec<f64>,
    raw_thaw: Vec<f64>,
    raw_prepare: Vec<f64>,
    raw_mount: Vec<f64>,
    raw_ready: Vec<f64>,
    raw_teardown: Vec<f64>,
    session: SessionSamples,
    provider_window: Vec<f64>,
}

/// One run of the configuration `idx`; recorded into `keep` unless it is a warm-up.
pub(super) fn iteration(
    fx: &FreezeFixtures,
    bin: &Path,
    idx: &[usize],
    keep: Option<&mut FreezeSamples>,
) -> Result<()> {
    let fs: Vec<&LoopFs> = idx.iter().map(|&i| &fx.fs[i]).collect();
    let views: Vec<&Path> = idx.iter().map(|&i| fx.raw_views[i].as_path()).collect();
    let raw = raw_round(&fs, &views)?;
    let dirs: Vec<&Path> = fs.iter().map(|f| f.mount_point.as_path()).collect();
    let w = run_session(bin, &fx.session, &dirs, true)?;
    let stamps = writer_stamps(&fx.session.writer_log)?;
    let no_w = run_session(bin, &fx.session, &dirs, false)?;

    let Some(s) = keep else {
        return Ok(());
    };
    s.raw_window.push(raw.window);
    s.raw_freeze.push(raw.freeze);
    s.raw_clone.push(raw.clone);
    s.raw_thaw.push(raw.thaw);
    s.raw_prepare.push(raw.prepare);
    s.raw_mount.push(raw.mount);
    s.raw_ready.push(raw.ready);
    s.raw_teardown.push(raw.teardown);
    s.session.push(&w, stamps, &no_w)?;
    s.provider_window.push(provider_window(&no_w)?);
    Ok(())
}

/// The provider's own FIFREEZE → last FITHAW (`-vv`: `freeze: N filesystem(s) frozen X ms`).
fn provider_window(run: &SessionRun) -> Result<f64> {
    run.lines
        .iter()
        .find_map(|(_, l)| {
            let rest = &l[l.find("filesystem(s) frozen ")? + "filesystem(s) frozen ".len()..];
            rest.split(" ms").next()?.trim().parse().ok()
        })
        .with_context(|| format!("no `freeze: … frozen X ms` line in:\n{}", run.log()))
}

struct RawTimes {
    prepare: f64,
    window: f64,
    freeze: f64,
    clone: f64,
    thaw: f64,
    mount: f64,
    ready: f64,
    teardown: f64,
}

/// What a raw round made, undone on drop if the round did not get to it: thaws what it froze
/// (first of all), unmounts, deletes the clone files.
#[derive(Default)]
struct RawRound<'a> {
    frozen: Vec<&'a Path>,
    mounted: Vec<&'a Path>,
    clones: Vec<PathBuf>,
}

impl Drop for RawRound<'_> {
    fn drop(&mut self) {
        for mp in self.frozen.drain(..).rev() {
            if let Err(e) = sys::thaw_filesystem(mp) {
                eprintln!("bench: thawing {}: {e}", mp.display());
            }
        }
        for at in self.mounted.drain(..).rev() {
            if let Err(e) = sys::unmount_path(at) {
                eprintln!("bench: unmounting {}: {e}", at.display());
            }
        }
        for c in self.clones.drain(..) {
            if let Err(e) = std::fs::remove_file(&c) {
                eprintln!("bench: removing {}: {e}", c.display());
            }
        }
    }
}

/// The provider's kernel work for `fs`, issued directly in its order: open each backing file
/// and create the empty clone next to it; freeze and clone each, thaw all (last frozen first);
/// attach each clone read-only and mount it; after [`HOLD`], unmount and delete.
fn raw_round<'a>(fs: &[&'a LoopFs], views: &[&'a Path]) -> Result<RawTimes> {
    let mut round = RawRound::default();
    let t_ready = Instant::now();
    let mut files: Vec<(File, File)> = Vec::with_capacity(fs.len());
    for (i, f) in fs.iter().enumerate() {
        let src =
            File::open(&f.backing).with_context(|| format!("opening {}", f.backing.display()))?;
        let clone = f.backing.with_file_name(format!(
            ".snaptest-bench-raw-{}-{i}.img",
            std::process::id()
        ));
        let dest = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&clone)
            .with_context(|| format!("creating {}", clone.display()))?;
        round.clones.push(clone);
        files.push((src, dest));
    }
    let prepare = ms(t_ready.elapsed());

    let (mut freeze, mut copy) = (0.0, 0.0);
    let start = Instant::now();
    for (f, (src, dest)) in fs.iter().zip(&files) {
        let t = Instant::now();
        sys::freeze_filesystem(&f.mount_point)
            .with_context(|| format!("FIFREEZE {}", f.mount_point.display()))?;
        freeze += ms(t.elapsed());
        round.frozen.push(&f.mount_point);
        let t = Instant::now();
        sys::clone_file(src, dest).with_context(|| format!("FICLONE {}", f.backing.display()))?;
        copy += ms(t.elapsed());
    }
    let t = Instant::now();
    while let Some(mp) = round.frozen.pop() {
        if let Err(e) = sys::thaw_filesystem(mp) {
            round.frozen.push(mp);
            return Err(e).with_context(|| format!("FITHAW {}", mp.display()));
        }
    }
    let thaw = ms(t.elapsed());
    let window = ms(start.elapsed());
    drop(files);

    let t = Instant::now();
    for ((f, clone), view) in fs.iter().zip(&round.clones).zip(views) {
        let data = match f.kind {
            FsKind::Xfs => "nouuid,norecovery",
            _ => "noload",
        };
        // Autoclear: the mount holds the device, which detaches itself at the unmount.
        let dev = sys::attach_read_only(clone, 0, 0)
            .with_context(|| format!("attaching {}", clone.display()))?;
        sys::mount_readonly(&dev.device, view, f.kind.name(), data)
            .with_context(|| format!("mounting {} at {}", dev.device.display(), view.display()))?;
        round.mounted.push(view);
    }
    let mount = ms(t.elapsed());
    let ready = ms(t_ready.elapsed());
    std::thread::sleep(HOLD);

    let t = Instant::now();
    while let Some(at) = round.mounted.pop() {
        sys::unmount_path(at).with_context(|| format!("raw unmount {}", at.display()))?;
    }
    for c in std::mem::take(&mut round.clones) {
        std::fs::remove_file(&c).with_context(|| format!("removing {}", c.display()))?;
    }
    let teardown = ms(t.elapsed());
    Ok(RawTimes {
        prepare,
        window,
        freeze,
        clone: copy,
        thaw,
        mount,
        ready,
        teardown,
    })
}

#[derive(Debug, Serialize)]
pub(super) struct FreezeSession {
    #[serde(flatten)]
    session: ProviderSession,
    /// The provider's `-vv` first FIFREEZE → last FITHAW, no writers.
    provider_frozen_ms: Stat,
}

#[derive(Debug, Serialize)]
pub(super) struct FreezeRaw {
    /// First FIFREEZE → last FITHAW.
    frozen_window_ms: Stat,
    /// The parts of it, summed over the filesystems.
    fifreeze_ms: Stat,
    ficlone_ms: Stat,
    fithaw_ms: Stat,
    /// Opening the backing files and creating the empty clones (before the window).
    prepare_ms: Stat,
    /// Attaching the clones read-only and mounting them.
    mount_ms: Stat,
    /// prepare + window + mount, one clock.
    ready_ms: Stat,
    /// unmount + delete the clones.
    teardown_ms: Stat,
}

#[derive(Debug, Serialize)]
pub(super) struct FreezeRatios {
    ready: f64,
    ready_with_writer: f64,
    frozen_window_hook: f64,
    frozen_window_log: f64,
    snapshot_creation: f64,
    provider_frozen: f64,
    teardown: f64,
}

#[derive(Debug, Serialize)]
pub(super) struct FreezeConfig {
    label: String,
    filesystems: usize,
    session: FreezeSession,
    raw: FreezeRaw,
    ratios: FreezeRatios,
}

impl FreezeConfig {
    pub(super) fn new(label: String, filesystems: usize, s: &FreezeSamples) -> Self {
        let session = FreezeSession {
            session: ProviderSession::of(&s.session),
            provider_frozen_ms: Stat::of(&s.provider_window),
        };
        let raw = FreezeRaw {
            frozen_window_ms: Stat::of(&s.raw_window),
            fifreeze_ms: Stat::of(&s.raw_freeze),
            ficlone_ms: Stat::of(&s.raw_clone),
            fithaw_ms: Stat::of(&s.raw_thaw),
            prepare_ms: Stat::of(&s.raw_prepare),
            mount_ms: Stat::of(&s.raw_mount),
            ready_ms: Stat::of(&s.raw_ready),
            teardown_ms: Stat::of(&s.raw_teardown),
        };
        let (win, rdy) = (raw.frozen_window_ms.median, raw.ready_ms.median);
        let (ps, provider_frozen) = (&session.session, &session.provider_frozen_ms);
        let ratios = FreezeRatios {
            ready: ps.ready_ms.median / rdy,
            ready_with_writer: ps.ready_with_writer_ms.median / rdy,
            frozen_window_hook: ps.frozen_window_hook_ms.median / win,
            frozen_window_log: ps.frozen_window_log_ms.median / win,
            snapshot_creation: ps.snapshot_creation_ms.median / win,
            provider_frozen: provider_frozen.median / win,
            teardown: ps.teardown_ms.median / raw.teardown_ms.median,
        };
        Self {
            label,
            filesystems,
            session,
            raw,
            ratios,
        }
    }

    pub(super) fn table(&self, o: &mut String) {
        use std::fmt::Write;
        let (s, r) = (&self.session, &self.raw);
        let (ready, window, teardown) = (
            (&r.ready_ms, "clone+attach+mount"),
            (&r.frozen_window_ms, "FIFREEZE..FITHAW"),
            (&r.teardown_ms, "unmount+delete"),
        );
        super::provider_table(
            o,
            &format!("freeze, {}", self.label),
            "raw kernel baseline ms",
            2,
            &{
                let mut rows = s.session.rows(ready, window, teardown);
                // The provider's own window, after snapshot creation.
                rows.insert(
                    5,
                    row(
                        "FIFREEZE..FITHAW, provider -vv",
                        &s.provider_frozen_ms,
                        window,
                    ),
                );
                rows
            },
        );
        let st = |s: &Stat| format!("{:.2} ({:.2}–{:.2})", s.median, s.min, s.max);
        let _ = writeln!(
            o,
            "  raw detail: FIFREEZE {}, FICLONE {}, FITHAW {} (sums); open + create clones {}; \
             attach + mount {}",
            st(&r.fifreeze_ms),
            st(&r.ficlone_ms),
            st(&r.fithaw_ms),
            st(&r.prepare_ms),
            st(&r.mount_ms)
        );
    }
}
