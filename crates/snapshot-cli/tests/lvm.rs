//! The LVM providers end to end (VM tier: needs device-mapper, so it runs in the guest of
//! `cargo xtask vm-test`; built only with `--features vm-tests`). Each test makes its own VG
//! (`snaptest-…`) on loop files in /var/tmp (the guest's scratch disk) or on the guest's raw
//! data disks, and checks that no snapshot LV is left behind.

#[path = "common/bodies.rs"]
mod bodies;
mod common;
#[path = "common/examples.rs"]
mod examples;

use bodies::{point_in_time, Expect};
use common::*;
use examples::ScriptsDir;
use rstest::rstest;
use snapshot_testkit::lvm::{require_lvm, Vg};
use snapshot_testkit::{MountedFs, TestMount};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// No snapshot LV (origin set, or session-named) is left in the VG.
fn assert_no_snapshot_lv(vg: &Vg) {
    let left = vg.snapshot_lvs();
    assert!(
        left.is_empty(),
        "snapshot LVs left in {}: {left:?}",
        vg.name()
    );
}

/// The frozen-window line of `-v` (timings of the parallel creation), for the log.
fn show_timings(test: &str, stderr: &str) {
    for l in stderr.lines().filter(|l| l.contains("frozen window")) {
        eprintln!("TIMING {test}: {l}");
    }
}

/// One LV, classic or thin, ext4 or XFS: changes made after ready are not under TARGET.
#[rstest]
#[case::classic_ext4(FsKind::Ext4, false)]
#[case::classic_xfs(FsKind::Xfs, false)]
#[case::thin_ext4(FsKind::Ext4, true)]
#[case::thin_xfs(FsKind::Xfs, true)]
fn lv_point_in_time(#[case] kind: FsKind, #[case] thin: bool) {
    let name = format!("{}-{}", if thin { "thin" } else { "classic" }, kind.name());
    if !require_lvm(&name) {
        return;
    }
    let scratch = Scratch::new(&name).unwrap();
    let vg = Vg::on_loop_files(&name, 1, 1024).unwrap();
    let mp = scratch.join("data");
    let (pool, fs) = if thin {
        let pool = vg.thin_pool("pool", 512).unwrap();
        let fs = pool.thin_lv("data", 1024, kind, &mp).unwrap();
        (Some(pool), fs)
    } else {
        (None, vg.classic_lv("data", 320, kind, &mp).unwrap())
    };
    let provider = if thin { "lvm-thin" } else { "lvm" };
    let seen = point_in_time(&[Expect { fs: &fs, provider }], &scratch, &[]);
    show_timings(&name, &seen.stderr);
    let m = &seen.manifest["mounts"][0];
    assert!(
        m["snapshot"].as_str().unwrap().starts_with("snapshot-"),
        "{m}"
    );
    assert_no_snapshot_lv(&vg);
    drop(fs);
    drop(pool);
}

/// `/` and `/home` style: two LVs of one VG (on the guest's raw disks), one mounted inside the
/// other, both DIRs. The two snapshots are created in parallel in the one VG.
#[test]
fn root_and_home_nested_in_one_vg() {
    if !require_lvm("root_and_home_nested_in_one_vg") {
        return;
    }
    let scratch = Scratch::new("roothome").unwrap();
    let vg = match data_disks() {
        Some(disks) => Vg::on_devices("roothome", &disks).unwrap(),
        None => Vg::on_loop_files("roothome", 2, 1024).unwrap(),
    };
    let root = scratch.join("root");
    let root_fs = vg.classic_lv("root", 256, FsKind::Ext4, &root).unwrap();
    let home_fs = vg
        .classic_lv("home", 320, FsKind::Xfs, &root.join("home"))
        .unwrap();
    let seen = point_in_time(
        &[
            Expect {
                fs: &root_fs,
                provider: "lvm",
            },
            Expect {
                fs: &home_fs,
                provider: "lvm",
            },
        ],
        &scratch,
        &[],
    );
    show_timings("root_and_home_nested_in_one_vg", &seen.stderr);
    assert_eq!(seen.manifest["mounts"].as_array().unwrap().len(), 2);
    assert_no_snapshot_lv(&vg);
    drop((home_fs, root_fs));
}

/// The guest's raw data disks (`SNAPSHOT_VM_DISKS`, set by the guest's init), if any.
fn data_disks() -> Option<Vec<PathBuf>> {
    let disks: Vec<PathBuf> = std::env::var("SNAPSHOT_VM_DISKS")
        .ok()?
        .split(',')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect();
    (disks.len() >= 2).then_some(disks)
}

/// An LV next to a filesystem no provider snapshots (ext4 on a loop device → bind): the LV is
/// a snapshot, the other a live read-only bind, and the manifest says so.
#[test]
fn lv_next_to_a_non_lv_filesystem() {
    if !require_lvm("lv_next_to_a_non_lv_filesystem") {
        return;
    }
    let scratch = Scratch::new("mixed").unwrap();
    let vg = Vg::on_loop_files("mixed", 1, 512).unwrap();
    let lv = vg
        .classic_lv("data", 128, FsKind::Ext4, &scratch.join("lv"))
        .unwrap();
    let plain = LoopFs::new("mixed-plain", FsKind::Ext4, 64, &scratch.join("plain")).unwrap();
    let seen = point_in_time(
        &[
            Expect {
                fs: &lv,
                provider: "lvm",
            },
            Expect {
                fs: &plain,
                provider: "bind",
            },
        ],
        &scratch,
        &[],
    );
    assert!(
        seen.stderr.contains("NOT consistent"),
        "the bind fallback warns: {}",
        seen.stderr
    );
    assert_no_snapshot_lv(&vg);
    drop((plain, lv));
}

/// A DIR whose mount shows a subdirectory of the LV's filesystem (a bind mount): the view
/// shows that subdirectory of the snapshot.
#[test]
fn bind_mount_of_an_lv_subdirectory() {
    if !require_lvm("bind_mount_of_an_lv_subdirectory") {
        return;
    }
    let scratch = Scratch::new("subdir").unwrap();
    let vg = Vg::on_loop_files("subdir", 1, 512).unwrap();
    let lv = vg
        .classic_lv("data", 128, FsKind::Ext4, &scratch.join("lv"))
        .unwrap();
    lv.write_file("sub/outside-marker", "x").unwrap();
    let bound = TestMount::new(
        &["--bind", s(&scratch.join("lv/sub"))],
        &scratch.join("bound"),
    )
    .unwrap();
    let view = Bound {
        mount_point: bound.target.clone(),
        fstype: "ext4",
    };
    point_in_time(
        &[Expect {
            fs: &view,
            provider: "lvm",
        }],
        &scratch,
        &[],
    );
    assert_no_snapshot_lv(&vg);
    drop(bound);
    drop(lv);
}

/// A bind mount seen as a test filesystem (writes go to the LV below it).
struct Bound {
    mount_point: PathBuf,
    fstype: &'static str,
}

impl MountedFs for Bound {
    fn mount_point(&self) -> &Path {
        &self.mount_point
    }
    fn fstype(&self) -> &str {
        self.fstype
    }
}

/// A classic snapshot far too small (one 4 MiB extent) overrun by writes to the origin during
/// the hold: the session ends with status 80 and says the snapshot overflowed; nothing left.
#[test]
fn overflowed_classic_snapshot_is_reported_invalid() {
    if !require_lvm("overflowed_classic_snapshot_is_reported_invalid") {
        return;
    }
    let scratch = Scratch::new("overflow").unwrap();
    let vg = Vg::on_loop_files("overflow", 1, 512).unwrap();
    let mp = scratch.join("data");
    let fs = vg.classic_lv("data", 128, FsKind::Ext4, &mp).unwrap();
    fs.write_file("f", "before").unwrap();
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let mut run = Running::start(
        &[
            "--no-writers",
            "-v",
            "--lvm-size",
            "4M",
            "-t",
            s(&target),
            s(&mp),
        ],
        &scratch.join("run"),
    );
    assert_eq!(run.ready_within(Duration::from_secs(180)), "done\n");
    // 32 MiB of changes through a 4 MiB copy-on-write store.
    let chunk = vec![0x5au8; 1 << 20];
    let mut data = Vec::with_capacity(32 << 20);
    for _ in 0..32 {
        data.extend_from_slice(&chunk);
    }
    std::fs::write(mp.join("big"), &data).unwrap();
    bodies::sync();
    let (status, stderr) = run.finish();
    assert_eq!(status.code(), Some(80), "{stderr}");
    assert!(stderr.contains("overflowed"), "{stderr}");
    assert!(stderr.contains("invalid"), "{stderr}");
    assert_clean(&target);
    assert_no_snapshot_lv(&vg);
    drop(fs);
}

/// A VG without room for the classic snapshot: `snapshot plan` says why LVM declined, and
/// `--require-snapshot` refuses (69) before anything is created.
#[test]
fn vg_without_free_extents_declines() {
    if !require_lvm("vg_without_free_extents_declines") {
        return;
    }
    let scratch = Scratch::new("full").unwrap();
    let vg = Vg::on_loop_files("full", 1, 512).unwrap();
    let mp = scratch.join("data");
    let fs = vg.classic_lv("data", 256, FsKind::Ext4, &mp).unwrap();
    let filler = vg.raw_lv("filler", "100%FREE").unwrap();
    assert_eq!(vg.free_bytes().unwrap(), 0);
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();

    let out = std::process::Command::new(bin("snapshot"))
        .args(["plan", "-t", s(&target), s(&mp)])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("-> bind"), "{text}");
    assert!(
        text.contains("lvm declined") && text.contains("free"),
        "the plan says why LVM declined: {text}"
    );

    let mut run = Running::start(
        &[
            "--no-writers",
            "--require-snapshot",
            "-t",
            s(&target),
            s(&mp),
        ],
        &scratch.join("run"),
    );
    assert_eq!(run.ready(), "");
    let (status, stderr) = run.finish();
    assert_eq!(status.code(), Some(69), "{stderr}");
    assert_clean(&target);
    assert_no_snapshot_lv(&vg);
    drop(filler);
    drop(fs);
}

/// A session killed (SIGKILL) during the hold leaves its snapshot LV and view; `snapshot
/// cleanup` removes both from its journal — through another process than the one that
/// created them — and the origin survives.
#[test]
fn cleanup_after_sigkill_removes_the_snapshot_lv() {
    if !require_lvm("cleanup_after_sigkill_removes_the_snapshot_lv") {
        return;
    }
    let scratch = Scratch::new("killed").unwrap();
    let vg = Vg::on_loop_files("killed", 1, 512).unwrap();
    let mp = scratch.join("data");
    let fs = vg.classic_lv("data", 128, FsKind::Ext4, &mp).unwrap();
    fs.write_file("f", "kept").unwrap();
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let rt = scratch.join("run");
    let mut run = Running::start(&["--no-writers", "-t", s(&target), s(&mp)], &rt);
    assert_eq!(run.ready_within(Duration::from_secs(180)), "done\n");
    assert_eq!(vg.snapshot_lvs().len(), 1);
    run.signal(rustix::process::Signal::KILL);
    let _ = run.wait();

    let out = std::process::Command::new(bin("snapshot"))
        .args(["cleanup", "-v", "--state-dir", s(&rt.join("state"))])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cleanup: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_snapshot_lv(&vg);
    assert_clean(&target);
    assert_eq!(std::fs::read_to_string(mp.join("f")).unwrap(), "kept");
    drop(fs);
}

/// The snapshot names a `-v` log shows the example scripts making (their own last line:
/// "… snapshotted as NAME, mounted at …").
fn script_snapshots(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.split(" snapshotted as ").nth(1))
        .filter_map(|rest| rest.split(", mounted at ").next())
        .map(str::to_owned)
        .collect()
}

/// Nothing of a script's left under the session's runtime directory: no mount, no staging
/// root (`script-N`).
fn assert_no_script_staging(runtime: &Path) {
    assert_eq!(mounts_under(runtime), Vec::<PathBuf>::new(), "mounts left");
    let left: Vec<PathBuf> = std::fs::read_dir(runtime)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .flat_map(|e| std::fs::read_dir(e.path()).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("script-"))
        })
        .collect();
    assert!(left.is_empty(), "staging roots left: {left:?}");
}

/// The shipped example script `examples/filesystems.d/50-lvm`, written to the original
/// tool's convention (`lvcreate -s`, mounted at "$TARGET$SOURCE"), takes an LV — classic or
/// thin, ext4 or XFS, mounted at a path with a space — when `--providers` puts `script`
/// before `lvm`: the view is the snapshot (`consistent: true`, provider `script`), its
/// `remove` unmounts it and removes the snapshot LV, and nothing is left.
#[rstest]
#[case::classic_ext4(FsKind::Ext4, false)]
#[case::classic_xfs(FsKind::Xfs, false)]
#[case::thin_ext4(FsKind::Ext4, true)]
#[case::thin_xfs(FsKind::Xfs, true)]
fn example_script_takes_an_lv_when_listed_first(#[case] kind: FsKind, #[case] thin: bool) {
    let name = format!(
        "script-{}-{}",
        if thin { "thin" } else { "classic" },
        kind.name()
    );
    if !require_lvm(&name) {
        return;
    }
    let scripts = ScriptsDir::with(&[examples::LVM]);
    let scratch = Scratch::new(&name).unwrap();
    let vg = Vg::on_loop_files(&name, 1, 1024).unwrap();
    let mp = scratch.join("data dir");
    let (pool, fs) = if thin {
        let pool = vg.thin_pool("pool", 512).unwrap();
        let fs = pool.thin_lv("data", 1024, kind, &mp).unwrap();
        (Some(pool), fs)
    } else {
        (None, vg.classic_lv("data", 320, kind, &mp).unwrap())
    };
    let seen = point_in_time(
        &[Expect {
            fs: &fs,
            provider: "script",
        }],
        &scratch,
        &[
            "--providers",
            "script,lvm,lvm-thin",
            "--scripts-dir",
            s(scripts.path()),
        ],
    );
    show_timings(&name, &seen.stderr);
    let made = script_snapshots(&seen.stderr);
    assert_eq!(made.len(), 1, "{}", seen.stderr);
    assert!(
        made[0].starts_with(&format!("{}/fsd-snapshot-", vg.name())),
        "the script's LV {:?} carries the session's name",
        made[0]
    );
    assert_no_snapshot_lv(&vg);
    assert_no_script_staging(&scratch.join("run"));
    drop(fs);
    drop(pool);
}

/// The control: with the default provider order (`lvm` before `script`) the built-in
/// provider takes the LV although the example script is in the scripts directory, and the
/// script declines — without a word — a filesystem that is not an LV, which falls back to
/// bind.
#[test]
fn builtin_lvm_comes_before_the_example_script_by_default() {
    if !require_lvm("builtin_lvm_comes_before_the_example_script_by_default") {
        return;
    }
    let scripts = ScriptsDir::with(&[examples::LVM]);
    let scratch = Scratch::new("script-default").unwrap();
    let vg = Vg::on_loop_files("script-default", 1, 512).unwrap();
    let lv = vg
        .classic_lv("data", 128, FsKind::Ext4, &scratch.join("lv"))
        .unwrap();
    let plain = LoopFs::new(
        "script-default-plain",
        FsKind::Ext4,
        64,
        &scratch.join("plain"),
    )
    .unwrap();
    let seen = point_in_time(
        &[
            Expect {
                fs: &lv,
                provider: "lvm",
            },
            Expect {
                fs: &plain,
                provider: "bind",
            },
        ],
        &scratch,
        &["--scripts-dir", s(scripts.path())],
    );
    assert!(script_snapshots(&seen.stderr).is_empty(), "{}", seen.stderr);
    assert!(
        !seen.stderr.contains("provider script 50-lvm:"),
        "the script declines quietly: {}",
        seen.stderr
    );
    assert_no_snapshot_lv(&vg);
    assert_no_script_staging(&scratch.join("run"));
    drop((plain, lv));
}

/// The provider conformance suite (`snapshot_testkit::conformance`, docs/DESIGN.md §3.1) for
/// classic and thin LVM on an ext4 LV: the same checks bind, script, btrfs and freeze pass on
/// the host (tests/conformance.rs, with the suite's negative control).
#[rstest]
#[case::classic(false)]
#[case::thin(true)]
fn lvm_providers_conform(#[case] thin: bool) {
    use snapshot_providers::lvm::{LvmProvider, LvmSize};
    use snapshot_testkit::conformance::{self, Fixture};
    let provider = if thin {
        LvmProvider::thin()
    } else {
        LvmProvider::classic(LvmSize::default())
    };
    if conformance::serve_fresh_process(&provider) || !require_lvm("lvm_providers_conform") {
        return;
    }
    let name = if thin { "conf-thin" } else { "conf-classic" };
    let scratch = Scratch::new(name).unwrap();
    let vg = Vg::on_loop_files(name, 1, 1024).unwrap();
    let mp = scratch.join("data");
    let (pool, fs) = if thin {
        let pool = vg.thin_pool("pool", 512).unwrap();
        let fs = pool.thin_lv("data", 512, FsKind::Ext4, &mp).unwrap();
        (Some(pool), fs)
    } else {
        (None, vg.classic_lv("data", 256, FsKind::Ext4, &mp).unwrap())
    };
    let vg_name = vg.name().to_owned();
    let fixture = Fixture {
        mount_point: mp.clone(),
        leftovers: Box::new(move |session| {
            snapshot_testkit::run("lvs", &["--noheadings", "-o", "lv_name", &vg_name])
                .unwrap_or_default()
                .split_whitespace()
                .filter(|lv| lv.contains(session))
                .map(|lv| format!("LV {vg_name}/{lv}"))
                .collect()
        }),
    };
    conformance::assert_conforms(&provider, &fixture);
    conformance::tidy_origin(&mp);
    drop(fs);
    drop(pool);
}
