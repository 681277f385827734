//! The ZFS provider end to end (VM tier: the host kernel has no ZFS, so it runs in the guest
//! of `cargo xtask vm-test`; built only with `--features vm-tests`). Each test makes its own
//! pool (`snaptest-…`) on a file in /var/tmp (the guest's scratch disk) and checks that no
//! snapshot, hold or snapshot mount of the tool is left behind.

#[path = "common/bodies.rs"]
mod bodies;
mod common;
#[path = "common/examples.rs"]
mod examples;

use bodies::{point_in_time, Expect};
use common::*;
use examples::ScriptsDir;
use rstest::rstest;
use snapshot_testkit::zfs::{require_zfs, Dataset, Mountpoint, Pool};
use snapshot_testkit::{MountedFs, TestMount};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Nothing of the tool left in the pool: no snapshot named `…@snapshot-…`, no hold with the
/// session prefix, no snapshot mounted.
fn assert_nothing_left(pool: &Pool) {
    let snaps: Vec<String> = pool
        .snapshots()
        .into_iter()
        .filter(|s| s.contains("@snapshot-"))
        .collect();
    assert!(
        snaps.is_empty(),
        "snapshots left in {}: {snaps:?}",
        pool.name()
    );
    let holds: Vec<_> = pool
        .holds()
        .into_iter()
        .filter(|(_, tag)| tag.starts_with("snapshot-"))
        .collect();
    assert!(holds.is_empty(), "holds left in {}: {holds:?}", pool.name());
    let mounts = pool.snapshot_mounts();
    assert!(mounts.is_empty(), "snapshot mounts left: {mounts:?}");
}

/// The `zfs snapshot` calls of a `-v` log (the provider logs each one).
fn snapshot_calls(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("in one atomic call:"))
        .collect()
}

/// Asserts that `datasets` were snapshotted by one `zfs snapshot` call, all of them in it.
fn assert_one_call_for(stderr: &str, datasets: &[&Dataset]) {
    let calls: Vec<&str> = snapshot_calls(stderr)
        .into_iter()
        .filter(|c| {
            datasets
                .iter()
                .any(|d| c.contains(&format!(" {}@", d.name)))
        })
        .collect();
    assert_eq!(calls.len(), 1, "one zfs snapshot call expected: {stderr}");
    for d in datasets {
        assert!(
            calls[0].contains(&format!(" {}@snapshot-", d.name)),
            "{} not in the atomic call {:?}",
            d.name,
            calls[0]
        );
    }
    eprintln!("ATOMIC CALL: {}", calls[0]);
}

fn show_timings(test: &str, stderr: &str) {
    for l in stderr.lines().filter(|l| l.contains("frozen window")) {
        eprintln!("TIMING {test}: {l}");
    }
}

/// One dataset: changes made after ready are not under TARGET; a snapshot and hold of
/// someone else's in the same dataset are left alone.
#[test]
fn one_dataset() {
    if !require_zfs("one_dataset") {
        return;
    }
    let scratch = Scratch::new("zfs-one").unwrap();
    let pool = Pool::on_file("one", 256).unwrap();
    let ds = pool
        .dataset("data", Mountpoint::At(&scratch.join("data")))
        .unwrap();
    let keep = pool.user_snapshot(&ds, "keep", Some("keep-tag")).unwrap();
    let seen = point_in_time(
        &[Expect {
            fs: &ds,
            provider: "zfs",
        }],
        &scratch,
        &[],
    );
    show_timings("one_dataset", &seen.stderr);
    assert_one_call_for(&seen.stderr, &[&ds]);
    let m = &seen.manifest["mounts"][0];
    assert!(
        m["snapshot"].as_str().unwrap().starts_with("snapshot-"),
        "{m}"
    );
    assert_nothing_left(&pool);
    assert_eq!(
        pool.snapshots(),
        vec![keep.name.clone()],
        "the user's snapshot stays"
    );
    assert_eq!(pool.holds(), [(keep.name.clone(), "keep-tag".to_owned())]);
    drop(keep);
    drop(ds);
}

/// Two sibling datasets of one pool: one `zfs snapshot a@n b@n` (shown by `-v`), one unit.
#[test]
fn two_datasets_of_one_pool_in_one_atomic_call() {
    if !require_zfs("two_datasets_of_one_pool_in_one_atomic_call") {
        return;
    }
    let scratch = Scratch::new("zfs-two").unwrap();
    let pool = Pool::on_file("two", 256).unwrap();
    let a = pool
        .dataset("a", Mountpoint::At(&scratch.join("a")))
        .unwrap();
    let b = pool
        .dataset("b", Mountpoint::At(&scratch.join("b")))
        .unwrap();
    let seen = point_in_time(
        &[
            Expect {
                fs: &a,
                provider: "zfs",
            },
            Expect {
                fs: &b,
                provider: "zfs",
            },
        ],
        &scratch,
        &[],
    );
    show_timings("two_datasets", &seen.stderr);
    assert_one_call_for(&seen.stderr, &[&a, &b]);
    assert_eq!(snapshot_calls(&seen.stderr).len(), 1, "{}", seen.stderr);
    let mounts = seen.manifest["mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 2);
    assert_eq!(
        mounts[0]["snapshot"], mounts[1]["snapshot"],
        "one snapshot unit: {mounts:?}"
    );
    assert_nothing_left(&pool);
    drop((b, a));
}

/// `/` and `/home` style: a child dataset mounted inside its parent (inherited mountpoint),
/// both DIRs: the view shows both, each from its own snapshot, taken in one call.
#[test]
fn child_dataset_inside_its_parent() {
    if !require_zfs("child_dataset_inside_its_parent") {
        return;
    }
    let scratch = Scratch::new("zfs-nested").unwrap();
    let pool = Pool::on_file("nested", 256).unwrap();
    let parent = pool
        .dataset("root", Mountpoint::At(&scratch.join("root")))
        .unwrap();
    let child = pool.dataset("root/home", Mountpoint::Inherit).unwrap();
    assert_eq!(child.mount_point, scratch.join("root/home"));
    let seen = point_in_time(
        &[
            Expect {
                fs: &parent,
                provider: "zfs",
            },
            Expect {
                fs: &child,
                provider: "zfs",
            },
        ],
        &scratch,
        &[],
    );
    assert_one_call_for(&seen.stderr, &[&parent, &child]);
    assert_nothing_left(&pool);
    drop((child, parent));
}

/// `mountpoint=legacy` (mounted with `mount -t zfs`, as fstab does) and `canmount=noauto`
/// (mounted by hand with `zfs mount`): both are snapshots of their datasets, in one call.
#[test]
fn legacy_and_noauto_mountpoints() {
    if !require_zfs("legacy_and_noauto_mountpoints") {
        return;
    }
    let scratch = Scratch::new("zfs-legacy").unwrap();
    let pool = Pool::on_file("legacy", 256).unwrap();
    let legacy = pool
        .dataset("legacy", Mountpoint::Legacy(&scratch.join("legacy")))
        .unwrap();
    let noauto = pool
        .dataset("noauto", Mountpoint::NoAuto(&scratch.join("noauto")))
        .unwrap();
    let seen = point_in_time(
        &[
            Expect {
                fs: &legacy,
                provider: "zfs",
            },
            Expect {
                fs: &noauto,
                provider: "zfs",
            },
        ],
        &scratch,
        &[],
    );
    assert_one_call_for(&seen.stderr, &[&legacy, &noauto]);
    assert_nothing_left(&pool);
    drop((noauto, legacy));
}

/// Datasets of two pools: two units, one `zfs snapshot` call per pool.
#[test]
fn two_pools_one_call_each() {
    if !require_zfs("two_pools_one_call_each") {
        return;
    }
    let scratch = Scratch::new("zfs-pools").unwrap();
    let p1 = Pool::on_file("p1", 128).unwrap();
    let p2 = Pool::on_file("p2", 128).unwrap();
    let a = p1.dataset("a", Mountpoint::At(&scratch.join("a"))).unwrap();
    let b = p2.dataset("b", Mountpoint::At(&scratch.join("b"))).unwrap();
    let seen = point_in_time(
        &[
            Expect {
                fs: &a,
                provider: "zfs",
            },
            Expect {
                fs: &b,
                provider: "zfs",
            },
        ],
        &scratch,
        &[],
    );
    assert_eq!(snapshot_calls(&seen.stderr).len(), 2, "{}", seen.stderr);
    assert_one_call_for(&seen.stderr, &[&a]);
    assert_one_call_for(&seen.stderr, &[&b]);
    assert_nothing_left(&p1);
    assert_nothing_left(&p2);
    drop((b, a));
}

/// A dataset next to a filesystem no provider snapshots (ext4 on a loop device → bind): the
/// dataset is a snapshot, the other a live read-only bind, and the manifest says so.
#[test]
fn zfs_beside_ext4_bind() {
    if !require_zfs("zfs_beside_ext4_bind") {
        return;
    }
    let scratch = Scratch::new("zfs-mixed").unwrap();
    let pool = Pool::on_file("mixed", 256).unwrap();
    let ds = pool
        .dataset("data", Mountpoint::At(&scratch.join("zfs")))
        .unwrap();
    let plain = LoopFs::new("zfs-mixed-plain", FsKind::Ext4, 64, &scratch.join("plain")).unwrap();
    let seen = point_in_time(
        &[
            Expect {
                fs: &ds,
                provider: "zfs",
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
    assert_nothing_left(&pool);
    drop((plain, ds));
}

/// A dataset and a bind mount of a subdirectory of it, both DIRs: one snapshot of the
/// dataset, shown whole at the one and (through a staging mount) as the subdirectory at the
/// other.
#[test]
fn dataset_and_a_bind_mount_of_its_subdirectory() {
    if !require_zfs("dataset_and_a_bind_mount_of_its_subdirectory") {
        return;
    }
    let scratch = Scratch::new("zfs-subdir").unwrap();
    let pool = Pool::on_file("subdir", 256).unwrap();
    let ds = pool
        .dataset("data", Mountpoint::At(&scratch.join("data")))
        .unwrap();
    ds.write_file("sub/outside-marker", "x").unwrap();
    let bound = TestMount::new(
        &["--bind", s(&scratch.join("data/sub"))],
        &scratch.join("bound"),
    )
    .unwrap();
    let view = Bound {
        mount_point: bound.target.clone(),
    };
    let seen = point_in_time(
        &[
            Expect {
                fs: &ds,
                provider: "zfs",
            },
            Expect {
                fs: &view,
                provider: "zfs",
            },
        ],
        &scratch,
        &[],
    );
    assert_one_call_for(&seen.stderr, &[&ds]);
    let mounts = seen.manifest["mounts"].as_array().unwrap();
    assert_eq!(mounts[0]["snapshot"], mounts[1]["snapshot"], "{mounts:?}");
    assert_nothing_left(&pool);
    drop(bound);
    drop(ds);
}

/// A bind mount seen as a test filesystem (writes go to the dataset below it).
struct Bound {
    mount_point: PathBuf,
}

impl MountedFs for Bound {
    fn mount_point(&self) -> &Path {
        &self.mount_point
    }
    fn fstype(&self) -> &str {
        "zfs"
    }
}

/// A DIR inside a snapshot automounted under `.zfs/snapshot/`: the plan says why ZFS declined
/// it (a snapshot cannot be snapshotted) and gives it to the bind fallback.
#[test]
fn a_snapshot_automount_is_declined() {
    if !require_zfs("a_snapshot_automount_is_declined") {
        return;
    }
    let scratch = Scratch::new("zfs-auto").unwrap();
    let pool = Pool::on_file("auto", 128).unwrap();
    let mp = scratch.join("data");
    let ds = pool.dataset("data", Mountpoint::At(&mp)).unwrap();
    ds.write_file("f", "x").unwrap();
    let daily = pool.user_snapshot(&ds, "daily", None).unwrap();
    let auto = mp.join(".zfs/snapshot/daily");
    // Reading it triggers the automount.
    assert_eq!(std::fs::read_to_string(auto.join("f")).unwrap(), "x");
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let out = std::process::Command::new(bin("snapshot"))
        .args(["plan", "-t", s(&target), s(&auto)])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // The automount expires by itself; unmount it now so the pool can go.
    let _ = std::process::Command::new("umount").arg(&auto).status();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("-> bind"), "{text}");
    assert!(
        text.contains("zfs declined") && text.contains("is a ZFS snapshot"),
        "the plan says why ZFS declined: {text}"
    );
    drop(daily);
    drop(ds);
}

/// A session killed (SIGKILL, by fault injection once ready) leaves its snapshot, hold and
/// view; `snapshot cleanup` removes all three from its journal — through another process than
/// the one that created them — and the dataset survives.
#[test]
fn cleanup_after_sigkill_removes_snapshots_and_holds() {
    if !require_zfs("cleanup_after_sigkill_removes_snapshots_and_holds") {
        return;
    }
    let scratch = Scratch::new("zfs-killed").unwrap();
    let pool = Pool::on_file("killed", 256).unwrap();
    let a = pool
        .dataset("a", Mountpoint::At(&scratch.join("a")))
        .unwrap();
    let b = pool.dataset("a/b", Mountpoint::Inherit).unwrap();
    a.write_file("f", "kept").unwrap();
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let rt = scratch.join("run");
    let mut run = Running::start_env(
        &[
            "--no-writers",
            "--fault-injection",
            "-t",
            s(&target),
            s(&a.mount_point),
            s(&b.mount_point),
        ],
        &rt,
        &[("SNAPSHOT_FAULT", "after-ready")],
    );
    assert_eq!(run.ready_within(Duration::from_secs(180)), "done\n");
    let (status, stderr) = run.wait();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "killed at after-ready: {stderr}"
    );
    // What the dead session left: two snapshots, each with the session's hold, both mounted.
    let ours: Vec<String> = pool
        .snapshots()
        .into_iter()
        .filter(|s| s.contains("@snapshot-"))
        .collect();
    assert_eq!(ours.len(), 2, "{ours:?}");
    let holds = pool.holds();
    assert_eq!(holds.len(), 2, "{holds:?}");
    // Each snapshot is mounted in the session's private staging directory and cloned into
    // the view: two mounts each.
    assert_eq!(pool.snapshot_mounts().len(), 4);

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
    assert_nothing_left(&pool);
    assert_clean(&target);
    assert_eq!(
        std::fs::read_to_string(a.mount_point.join("f")).unwrap(),
        "kept"
    );
    drop((b, a));
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

/// The shipped example script `examples/filesystems.d/60-zfs`, written to the original
/// tool's convention (`zfs snapshot`, `mount -t zfs` at "$TARGET$SOURCE"), takes a dataset —
/// mounted by ZFS at a path with a space, or a legacy mount — when `--providers` puts
/// `script` before `zfs`: the view is the snapshot (`consistent: true`, provider `script`),
/// its `remove` unmounts and destroys the snapshot, and nothing is left.
#[rstest]
#[case::zfs_mountpoint(false)]
#[case::legacy(true)]
fn example_script_takes_a_dataset_when_listed_first(#[case] legacy: bool) {
    let name = if legacy {
        "script-legacy"
    } else {
        "script-mountpoint"
    };
    if !require_zfs(name) {
        return;
    }
    let scripts = ScriptsDir::with(&[examples::ZFS]);
    let scratch = Scratch::new(name).unwrap();
    let pool = Pool::on_file(name, 256).unwrap();
    let mp = scratch.join("data dir");
    let how = if legacy {
        Mountpoint::Legacy(&mp)
    } else {
        Mountpoint::At(&mp)
    };
    let ds = pool.dataset("data", how).unwrap();
    let seen = point_in_time(
        &[Expect {
            fs: &ds,
            provider: "script",
        }],
        &scratch,
        &[
            "--providers",
            "script,zfs",
            "--scripts-dir",
            s(scripts.path()),
        ],
    );
    show_timings(name, &seen.stderr);
    let made = script_snapshots(&seen.stderr);
    assert_eq!(made.len(), 1, "{}", seen.stderr);
    assert!(
        made[0].starts_with(&format!("{}@snapshot-", ds.name)),
        "the script's snapshot {:?} carries the session's name",
        made[0]
    );
    assert_nothing_left(&pool);
    assert!(pool.snapshots().is_empty(), "{:?}", pool.snapshots());
    let runtime = scratch.join("run");
    assert_eq!(mounts_under(&runtime), Vec::<PathBuf>::new(), "mounts left");
    drop(ds);
}

/// The control: with the default provider order (`zfs` before `script`) the built-in
/// provider takes the dataset although the example script is in the scripts directory, and
/// the script declines — without a word — a filesystem that is not ZFS, which falls back to
/// bind.
#[test]
fn builtin_zfs_comes_before_the_example_script_by_default() {
    if !require_zfs("builtin_zfs_comes_before_the_example_script_by_default") {
        return;
    }
    let scripts = ScriptsDir::with(&[examples::ZFS]);
    let scratch = Scratch::new("zfs-script-default").unwrap();
    let pool = Pool::on_file("script-default", 256).unwrap();
    let ds = pool
        .dataset("data", Mountpoint::At(&scratch.join("zfs")))
        .unwrap();
    let plain = LoopFs::new(
        "zfs-script-default-plain",
        FsKind::Ext4,
        64,
        &scratch.join("plain"),
    )
    .unwrap();
    let seen = point_in_time(
        &[
            Expect {
                fs: &ds,
                provider: "zfs",
            },
            Expect {
                fs: &plain,
                provider: "bind",
            },
        ],
        &scratch,
        &["--scripts-dir", s(scripts.path())],
    );
    assert_one_call_for(&seen.stderr, &[&ds]);
    assert!(script_snapshots(&seen.stderr).is_empty(), "{}", seen.stderr);
    assert!(
        !seen.stderr.contains("provider script 60-zfs:"),
        "the script declines quietly: {}",
        seen.stderr
    );
    assert_nothing_left(&pool);
    drop((plain, ds));
}

/// The provider conformance suite (`snapshot_testkit::conformance`, docs/DESIGN.md §3.1) for
/// ZFS on one dataset: the same checks the host's providers pass (tests/conformance.rs).
#[test]
fn zfs_provider_conforms() {
    use snapshot_providers::ZfsProvider;
    use snapshot_testkit::conformance::{self, Fixture};
    let provider = ZfsProvider::default();
    if conformance::serve_fresh_process(&provider) || !require_zfs("zfs_provider_conforms") {
        return;
    }
    let scratch = Scratch::new("zfs-conf").unwrap();
    let pool = Pool::on_file("conf", 256).unwrap();
    let mp = scratch.join("data");
    let _ds = pool.dataset("data", Mountpoint::At(&mp)).unwrap();
    let pool_name = pool.name().to_owned();
    let fixture = Fixture {
        mount_point: mp.clone(),
        leftovers: Box::new(move |session| {
            snapshot_testkit::run(
                "zfs",
                &[
                    "list", "-H", "-t", "snapshot", "-o", "name", "-r", &pool_name,
                ],
            )
            .unwrap_or_default()
            .lines()
            .filter(|s| s.contains(session))
            .map(|s| format!("snapshot {s}"))
            .collect()
        }),
    };
    conformance::assert_conforms(&provider, &fixture);
}

/// Incremental backups stay incremental through ZFS snapshots (as tests/incremental.rs shows
/// for btrfs and freeze on the host): two restic backups of an unchanged dataset, each through
/// its own `snapshot run --in-place` (a new ZFS snapshot each time); the second reads no file
/// again (restic: 0 new, 0 changed). Negative control: a changed file is read again.
#[test]
fn second_restic_backup_through_zfs_reads_nothing_again() {
    if !require_zfs("second_restic_backup_through_zfs_reads_nothing_again") {
        return;
    }
    let scratch = Scratch::new("zfs-incr").unwrap();
    let pool = Pool::on_file("incr", 256).unwrap();
    let mp = scratch.join("data");
    let _ds = pool.dataset("data", Mountpoint::At(&mp)).unwrap();
    for i in 0..20 {
        std::fs::write(mp.join(format!("f{i:02}")), format!("file {i}\n")).unwrap();
    }
    let (rt, home, repo) = (
        scratch.join("run"),
        scratch.join("home"),
        scratch.join("repo"),
    );
    std::fs::create_dir(&home).unwrap();
    let restic = |args: &[&str]| {
        Command::new("restic")
            .args(args)
            .env("RESTIC_PASSWORD", "snaptest-password")
            .env("HOME", &home)
            .output()
            .unwrap()
    };
    assert!(restic(&["init", "-r", s(&repo)]).status.success());
    let backup = || -> (u64, u64) {
        let out = Command::new(bin("snapshot"))
            .args(["run", "--in-place", "--no-writers", "--require-snapshot"])
            .args(["--runtime-dir", s(&rt), "--state-dir", s(&rt.join("state"))])
            .arg(&mp)
            .args(["--", "restic", "-r", s(&repo), "backup", "--json", s(&mp)])
            .env("RESTIC_PASSWORD", "snaptest-password")
            .env("HOME", &home)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find(|l| l.contains("\"message_type\":\"summary\""))
            .unwrap_or_else(|| panic!("no summary: {stdout}"));
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        (
            v["files_new"].as_u64().unwrap(),
            v["files_changed"].as_u64().unwrap(),
        )
    };
    assert_eq!(backup().0, 20, "the first backup reads every file");
    assert_eq!(
        backup(),
        (0, 0),
        "the second read files again through a new ZFS snapshot"
    );
    std::fs::write(mp.join("f07"), "file 7, changed\n").unwrap();
    assert_eq!(
        backup(),
        (0, 1),
        "negative control: the changed file is read again"
    );
}
