//! The LVM providers in the bench (`--lvm`, device-mapper: inside `cargo xtask vm-test`): one
//! VG on a loop file, classic and thin LVs (ext4, then XFS), sessions through the real binary
//! beside the raw LVM work measured in the same guest — `lvcreate --snapshot` per LV in
//! parallel threads (the frozen window: device-mapper suspends and freezes the origin inside
//! it), `lvchange -ay -K` for thin snapshots, the read-only mount (ready), then unmount +
//! `lvremove` (teardown).

use super::{
    ms, run_session, writer_stamps, ProviderSession, SessionDirs, SessionSamples, Stat, HOLD,
};
use anyhow::{Context, Result};
use serde::Serialize;
use snapshot_core::sys;
use snapshot_testkit::lvm::{lvm, LvFs, ThinPool, Vg};
use snapshot_testkit::{FsKind, Scratch};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Origin LV size (XFS's minimum is 300 MB).
const LV_MB: u64 = 320;
/// Size of the extra thin LVs of `--scale` (ext4).
const SCALE_LV_MB: u64 = 16;

/// Two classic LVs and two thin LVs of one VG (first ext4, second XFS).
pub(super) struct LvmFixtures {
    classic: Vec<LvFs>,
    thin: Vec<LvFs>,
    raw_views: Vec<PathBuf>,
    session: SessionDirs,
    /// Dropped after the LVs: the pool, then the VG.
    pool: Option<ThinPool>,
    vg: Option<Vg>,
}

impl LvmFixtures {
    /// Two classic and two thin LVs, and as many more small thin ones as the largest of
    /// `scale` needs.
    pub(super) fn new(scratch: &Scratch, scale: &[usize]) -> Result<Self> {
        let extra = scale.iter().copied().max().unwrap_or(0).saturating_sub(2);
        // Each piece is owned by `me` as soon as it exists, so that on an error its Drop
        // takes down what was made, LVs first.
        let mut me = Self {
            classic: Vec::new(),
            thin: Vec::new(),
            raw_views: Vec::new(),
            session: SessionDirs::new(&scratch.join("lvm"))?,
            pool: None,
            vg: Some(Vg::on_loop_files(
                "bench-lvm",
                1,
                6 * LV_MB + 512 + extra as u64 * SCALE_LV_MB,
            )?),
        };
        let kinds = [FsKind::Ext4, FsKind::Xfs];
        for (i, kind) in kinds.into_iter().enumerate() {
            let lv = me.vg.as_ref().expect("set above").classic_lv(
                &format!("classic{i}"),
                LV_MB,
                kind,
                &scratch.join(format!("lvm/classic{i}")),
            )?;
            me.classic.push(lv);
        }
        let pool = me
            .vg
            .as_ref()
            .expect("set above")
            .thin_pool("pool", 2 * LV_MB + 128 + extra as u64 * SCALE_LV_MB)?;
        me.pool = Some(pool);
        for (i, kind) in kinds.into_iter().enumerate() {
            let lv = me.pool.as_ref().expect("set above").thin_lv(
                &format!("thin{i}"),
                LV_MB,
                kind,
                &scratch.join(format!("lvm/thin{i}")),
            )?;
            me.thin.push(lv);
        }
        for i in 0..extra {
            let lv = me.pool.as_ref().expect("set above").thin_lv(
                &format!("thin{}", i + 2),
                SCALE_LV_MB,
                FsKind::Ext4,
                &scratch.join(format!("lvm/thin{}", i + 2)),
            )?;
            me.thin.push(lv);
        }
        for (i, f) in me.classic.iter().chain(&me.thin).enumerate() {
            for j in 0..8 {
                std::fs::write(f.mount_point.join(format!("file{j}")), format!("{i}:{j}\n"))
                    .with_context(|| format!("writing to {}", f.mount_point.display()))?;
            }
            let view = scratch.join(format!("lvm/raw/{i}"));
            std::fs::create_dir_all(&view)
                .with_context(|| format!("creating {}", view.display()))?;
            me.raw_views.push(view);
        }
        Ok(me)
    }

    /// (label, thin, LVs) of each configuration: 1 and 2 of each kind, then the larger
    /// `scale` counts of thin LVs.
    pub(super) fn configs(&self, scale: &[usize]) -> Vec<(String, bool, usize)> {
        let mut v: Vec<(String, bool, usize)> = vec![
            ("classic, 1 LV (ext4)".into(), false, 1),
            ("classic, 2 LVs (ext4 + XFS)".into(), false, 2),
            ("thin, 1 LV (ext4)".into(), true, 1),
            ("thin, 2 LVs (ext4 + XFS)".into(), true, 2),
        ];
        let mut more: Vec<usize> = scale.iter().copied().filter(|&n| n > 2).collect();
        more.sort_unstable();
        more.dedup();
        v.extend(more.into_iter().map(|n| {
            (
                format!(
                    "thin, {n} LVs (ext4 + XFS + {} of {SCALE_LV_MB} MB ext4)",
                    n - 2
                ),
                true,
                n,
            )
        }));
        v
    }
}

impl Drop for LvmFixtures {
    fn drop(&mut self) {
        self.thin.clear();
        self.classic.clear();
        drop(self.pool.take());
        drop(self.vg.take());
    }
}

#[derive(Debug, Default)]
pub(super) struct LvmSamples {
    raw_create: Vec<f64>,
    raw_activate: Vec<f64>,
    raw_mount: Vec<f64>,
    raw_ready: Vec<f64>,
    raw_teardown: Vec<f64>,
    session: SessionSamples,
}

pub(super) fn iteration(
    fx: &LvmFixtures,
    bin: &Path,
    thin: bool,
    n: usize,
    keep: Option<&mut LvmSamples>,
) -> Result<()> {
    let lvs: Vec<&LvFs> = if thin { &fx.thin } else { &fx.classic }[..n]
        .iter()
        .collect();
    let raw = raw_round(&lvs, &fx.raw_views[..n], thin)?;
    let dirs: Vec<&Path> = lvs.iter().map(|f| f.mount_point.as_path()).collect();
    let w = run_session(bin, &fx.session, &dirs, true)?;
    let stamps = writer_stamps(&fx.session.writer_log)?;
    let no_w = run_session(bin, &fx.session, &dirs, false)?;
    let Some(s) = keep else {
        return Ok(());
    };
    s.raw_create.push(raw.create);
    s.raw_activate.push(raw.activate);
    s.raw_mount.push(raw.mount);
    s.raw_ready.push(raw.ready);
    s.raw_teardown.push(raw.teardown);
    s.session.push(&w, stamps, &no_w)
}

struct RawTimes {
    create: f64,
    activate: f64,
    mount: f64,
    ready: f64,
    teardown: f64,
}

/// What a raw round made, undone on drop: unmounts, then removes the snapshot LVs (by the
/// names this round gave them, never an origin).
#[derive(Default)]
struct RawRound<'a> {
    mounted: Vec<&'a Path>,
    snaps: Vec<String>,
}

impl Drop for RawRound<'_> {
    fn drop(&mut self) {
        for at in self.mounted.drain(..).rev() {
            if let Err(e) = sys::unmount_path(at) {
                eprintln!("bench: unmounting {}: {e}", at.display());
            }
        }
        for s in self.snaps.drain(..) {
            if let Err(e) = lvm("lvremove", &["-f", "-y", &s]) {
                eprintln!("bench: lvremove {s}: {e:#}");
            }
        }
    }
}

fn raw_round(lvs: &[&LvFs], views: &[PathBuf], thin: bool) -> Result<RawTimes> {
    let mut round = RawRound::default();
    let names: Vec<String> = (0..lvs.len())
        .map(|i| format!("snaptest-raw-{}-{i}", std::process::id()))
        .collect();
    let t_ready = Instant::now();
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = lvs
            .iter()
            .zip(&names)
            .map(|(lv, name)| {
                s.spawn(move || {
                    let origin = format!("{}/{}", lv.vg, lv.lv);
                    let size = format!("{}M", LV_MB.div_ceil(10));
                    let mut args = vec!["-y", "--snapshot", "--name", name.as_str()];
                    if !thin {
                        args.extend(["--size", size.as_str(), "--permission", "rw"]);
                    }
                    args.push(&origin);
                    lvm("lvcreate", &args)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("lvcreate thread panicked"))
            .collect::<Vec<_>>()
    });
    let create = ms(t_ready.elapsed());
    // Recorded before any error is returned, so that Drop removes what was made.
    for (lv, (name, r)) in lvs.iter().zip(names.iter().zip(&results)) {
        if r.is_ok() {
            round.snaps.push(format!("{}/{name}", lv.vg));
        }
    }
    for r in results {
        r?;
    }
    let t = Instant::now();
    if thin {
        for s in &round.snaps {
            lvm(
                "lvchange",
                &["--activate", "y", "--ignoreactivationskip", s],
            )?;
        }
    }
    let activate = ms(t.elapsed());
    let t = Instant::now();
    for ((lv, s), view) in lvs.iter().zip(round.snaps.clone()).zip(views) {
        let data = match lv.kind {
            FsKind::Xfs => "nouuid",
            _ => "",
        };
        let dev = PathBuf::from(format!("/dev/{s}"));
        sys::mount_readonly(&dev, view, lv.kind.name(), data)
            .with_context(|| format!("mounting {} at {}", dev.display(), view.display()))?;
        round.mounted.push(view);
    }
    let mount = ms(t.elapsed());
    let ready = ms(t_ready.elapsed());
    std::thread::sleep(HOLD);

    let t = Instant::now();
    while let Some(at) = round.mounted.pop() {
        sys::unmount_path(at).with_context(|| format!("raw unmount {}", at.display()))?;
    }
    while let Some(s) = round.snaps.pop() {
        lvm("lvremove", &["-f", "-y", &s])?;
    }
    let teardown = ms(t.elapsed());
    Ok(RawTimes {
        create,
        activate,
        mount,
        ready,
        teardown,
    })
}

#[derive(Debug, Serialize)]
pub(super) struct LvmConfig {
    label: String,
    thin: bool,
    lvs: usize,
    #[serde(flatten)]
    session: ProviderSession,
    /// `lvcreate --snapshot`, one per LV in parallel threads.
    raw_lvcreate_ms: Stat,
    /// `lvchange -ay -K` (thin only).
    raw_activate_ms: Stat,
    raw_mount_ms: Stat,
    /// lvcreate + activate + mount, one clock.
    raw_ready_ms: Stat,
    /// unmount + lvremove.
    raw_teardown_ms: Stat,
    ratio_ready: f64,
    ratio_frozen_window_hook: f64,
    ratio_frozen_window_log: f64,
    ratio_snapshot_creation: f64,
    ratio_teardown: f64,
}

impl LvmConfig {
    pub(super) fn new(label: String, thin: bool, lvs: usize, s: &LvmSamples) -> Self {
        let st = |v: &[f64]| Stat::of(v);
        let (rr, rc, rt) = (
            st(&s.raw_ready).median,
            st(&s.raw_create).median,
            st(&s.raw_teardown).median,
        );
        let session = ProviderSession::of(&s.session);
        Self {
            label,
            thin,
            lvs,
            raw_lvcreate_ms: st(&s.raw_create),
            raw_activate_ms: st(&s.raw_activate),
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
        let ready_label = if self.thin {
            "lvcreate+lvchange +mount"
        } else {
            "lvcreate+mount"
        };
        let (ready, create, teardown) = (
            (&self.raw_ready_ms, ready_label),
            (&self.raw_lvcreate_ms, "lvcreate -s"),
            (&self.raw_teardown_ms, "umount+lvremove"),
        );
        super::provider_table(
            o,
            &format!("lvm, {}", self.label),
            "raw LVM baseline ms",
            1,
            &self.session.rows(ready, create, teardown),
        );
        let st = |s: &Stat| format!("{:.1} ({:.1}–{:.1})", s.median, s.min, s.max);
        let _ = writeln!(
            o,
            "  raw detail: lvcreate {}, lvchange -ay -K {}, mount {}",
            st(&self.raw_lvcreate_ms),
            st(&self.raw_activate_ms),
            st(&self.raw_mount_ms)
        );
    }
}
