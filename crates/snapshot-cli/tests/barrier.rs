//! One instant across machines (`--barrier`; loop tier: root). Three "hosts" — three sessions,
//! each over a btrfs filesystem of its own — and one writer whose every record spans all
//! three (a line appended to each filesystem's log, under an exclusive lock), paused by a
//! writer hook on `freeze` (a shared lock held until `thaw`). A coordinator drives the
//! sessions through pipes as a cluster tool would: with the barrier (every session `frozen`,
//! then `go` to all), the three views hold the same records in every cycle; without it (the
//! three sessions one after another, as three independent hosts would run them) they do not —
//! the negative control. Also: abort, end of input and timeout at the barrier undo everything
//! (82), and start-snapshot's detached form (`start-snapshot --barrier`, `snapshot go`).

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use cluster::{Cluster, Host, Writer, HOSTS};
use common::*;
use std::sync::atomic::Ordering;
use std::time::Duration;

const CYCLES: usize = 5;

/// One cycle with the barrier: the last record of each view.
fn cycle_with_barrier(c: &Cluster) -> Vec<u64> {
    let mut hosts: Vec<Host> = (0..HOSTS).map(|i| c.session(i, true, &[])).collect();
    for h in &mut hosts {
        assert_eq!(h.line(), "frozen\n");
    }
    for h in &mut hosts {
        h.say("go");
    }
    for h in &mut hosts {
        let ready: serde_json::Value = serde_json::from_str(&h.line()).unwrap();
        let instant = &ready["mounts"][0]["instant"];
        assert!(instant["start"].as_f64().unwrap() <= instant["end"].as_f64().unwrap());
    }
    let seen = (0..HOSTS).map(|i| c.last_in_view(i)).collect();
    for h in hosts {
        let (code, err) = h.finish();
        assert_eq!(code, Some(0), "{err}");
    }
    seen
}

/// One cycle without it: three independent sessions, one after another.
fn cycle_without_barrier(c: &Cluster) -> Vec<u64> {
    let mut seen = Vec::new();
    let mut hosts = Vec::new();
    for i in 0..HOSTS {
        let mut h = c.session(i, false, &[]);
        assert!(h.line().starts_with('{'));
        seen.push(c.last_in_view(i));
        hosts.push(h);
        std::thread::sleep(Duration::from_millis(20));
    }
    for h in hosts {
        let (code, err) = h.finish();
        assert_eq!(code, Some(0), "{err}");
    }
    seen
}

#[test]
fn the_barrier_gives_one_instant_across_hosts() {
    if !require_privileges("the_barrier_gives_one_instant_across_hosts") {
        return;
    }
    let c = Cluster::new("barrier");
    let writer = Writer::start(&c);
    writer.wait_for(50);
    for cycle in 0..CYCLES {
        let seen = cycle_with_barrier(&c);
        assert!(seen[0] > 0, "cycle {cycle}: {seen:?}");
        assert!(
            seen.iter().all(|&n| n == seen[0]),
            "cycle {cycle}: the views hold different records with the barrier: {seen:?}"
        );
    }
    // Negative control: the same check breaks without the barrier.
    let broken = (0..CYCLES)
        .filter(|_| {
            let seen = cycle_without_barrier(&c);
            !seen.iter().all(|&n| n == seen[0])
        })
        .count();
    assert!(
        broken > 0,
        "without the barrier the check never broke: it cannot tell"
    );
    drop(writer);
    for i in 0..HOSTS {
        assert_clean(&c.target(i));
    }
}

/// `abort`, end of input, and no word within --barrier-timeout: exit 82, the writer paused
/// by the hook goes on (thawed), nothing is left.
#[test]
fn no_go_at_the_barrier_undoes_everything() {
    if !require_privileges("no_go_at_the_barrier_undoes_everything") {
        return;
    }
    let c = Cluster::new("barrier-nogo");
    let writer = Writer::start(&c);
    writer.wait_for(10);
    for how in ["abort", "eof", "timeout"] {
        let extra: &[&str] = if how == "timeout" {
            &["--barrier-timeout", "500ms"]
        } else {
            &[]
        };
        let mut h = c.session(0, true, extra);
        assert_eq!(h.line(), "frozen\n", "{how}");
        let paused_at = writer.written.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            writer.written.load(Ordering::SeqCst),
            paused_at,
            "{how}: the writer goes on while frozen at the barrier"
        );
        match how {
            "abort" => h.say("abort"),
            "timeout" => std::thread::sleep(Duration::from_millis(700)),
            _ => {}
        }
        let (code, err) = h.finish();
        assert_eq!(code, Some(82), "{how}: {err}");
        assert!(err.contains("barrier"), "{how}: {err}");
        writer.wait_for(paused_at + 10);
        assert_clean(&c.target(0));
        let subvolumes =
            snapshot_testkit::run("btrfs", &["subvolume", "list", s(&c.fss[0].mount_point)])
                .unwrap();
        assert!(!subvolumes.contains("snapshot-"), "{how}: {subvolumes}");
    }
    // Refused: a timeout the freeze timeout would cut short, and run --barrier.
    let (code, _, err) = run_bin(
        "snapshot",
        &[
            "--barrier",
            "--barrier-timeout",
            "40s",
            "-t",
            s(&c.target(1)),
            s(&c.fss[1].mount_point),
        ],
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--barrier-timeout"), "{err}");
}

/// The detached form: `start-snapshot --barrier` returns at the barrier (printing `frozen`),
/// `snapshot go` releases it and prints the ready line, `stop-snapshot` tears down; a second
/// holder is aborted by `stop-snapshot` at its barrier (82); `snapshot go` with nothing
/// waiting says so (69).
#[test]
fn start_snapshot_at_the_barrier_and_snapshot_go() {
    if !require_privileges("start_snapshot_at_the_barrier_and_snapshot_go") {
        return;
    }
    let c = Cluster::new("barrier-held");
    let writer = Writer::start(&c);
    writer.wait_for(10);
    let rt = c.scratch.join("run-held");
    let target = c.target(0);
    let common = [
        "--runtime-dir",
        s(&rt),
        "--state-dir",
        &format!("{}/state", s(&rt)),
        "--writers-dir",
        s(&c.hooks),
        "-t",
        s(&target),
    ];
    let mut start = vec!["--barrier", "--json"];
    start.extend(common);
    start.push(s(&c.fss[0].mount_point));
    let (code, out, err) = run_bin("start-snapshot", &start);
    assert_eq!((code, out.as_str()), (0, "frozen\n"), "{err}");
    let paused_at = writer.written.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(writer.written.load(Ordering::SeqCst), paused_at, "frozen");
    let go = ["go", "--runtime-dir", s(&rt), "-t", s(&target)];
    let (code, out, err) = run_bin("snapshot", &go);
    assert_eq!(code, 0, "{err}");
    let ready: serde_json::Value = serde_json::from_str(&out).expect(&out);
    assert_eq!(ready["mounts"][0]["provider"], "btrfs");
    assert_eq!(
        c.last_in_view(0),
        paused_at,
        "the view holds the barrier's instant"
    );
    writer.wait_for(paused_at + 10);
    let stop = ["--runtime-dir", s(&rt), "-t", s(&target)];
    let (code, _, err) = run_bin("stop-snapshot", &stop);
    assert_eq!(code, 0, "{err}");
    assert_clean(&target);

    let (code, out, err) = run_bin("start-snapshot", &start);
    assert_eq!((code, out.as_str()), (0, "frozen\n"), "{err}");
    let (code, _, err) = run_bin("stop-snapshot", &stop);
    assert_eq!(code, 82, "stop at the barrier aborts: {err}");
    assert_clean(&target);
    let (code, _, err) = run_bin("snapshot", &go);
    assert_eq!(code, 69, "{err}");
    drop(writer);
}
