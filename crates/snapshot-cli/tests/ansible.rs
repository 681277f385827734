//! The shipped Ansible playbook (examples/ansible/snapshot-barrier.yml) as the coordinator of
//! `--barrier` (loop tier: root; Debian's ansible-core): three inventory hosts on this
//! machine (local connection), each with its own btrfs filesystem, and a writer whose records
//! span all three (tests/common/cluster.rs). Every run, each host's backup (a copy of its
//! view's log) holds the same records: one instant. A host made to fail its freeze aborts the
//! others, and nothing is left anywhere.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use cluster::{last_record, Cluster, Writer, HOSTS};
use common::*;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const RUNS: usize = 3;

fn playbook() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/ansible/snapshot-barrier.yml")
}

/// An inventory of three local hosts: host `i` backs up `host{i}` into `backup{i}`;
/// `broken` gets a DIR that does not exist.
fn inventory(c: &Cluster, broken: Option<usize>) -> PathBuf {
    let mut ini = String::from("[all]\n");
    for i in 0..HOSTS {
        let rt = c.scratch.join(format!("run{i}"));
        let dir = match broken {
            Some(b) if b == i => c.scratch.join("no-such-dir"),
            _ => c.fss[i].mount_point.clone(),
        };
        let view_log = in_view(&c.target(i), &c.fss[i].mount_point).join("log");
        let backup = c.scratch.join(format!("backup{i}"));
        let _ = writeln!(
            ini,
            "host{i} ansible_connection=local ansible_python_interpreter=/usr/bin/python3 \
             snapshot_target={t} snapshot_dirs='[\"{d}\"]' \
             snapshot_options='--writers-dir {h} --runtime-dir {rt} --state-dir {rt}/state' \
             snapshot_control_options='--runtime-dir {rt}' \
             backup_command='cp {log} {b}'",
            t = s(&c.target(i)),
            d = s(&dir),
            h = s(&c.hooks),
            rt = s(&rt),
            log = s(&view_log),
            b = s(&backup),
        );
    }
    let path = c.scratch.join("inventory.ini");
    std::fs::write(&path, ini).unwrap();
    path
}

fn run_playbook(c: &Cluster, inventory: &Path) -> (bool, String) {
    let bin_dir = bin("snapshot").parent().unwrap().to_owned();
    let out = Command::new("ansible-playbook")
        .arg("-i")
        .arg(inventory)
        .arg("--forks")
        .arg(HOSTS.to_string())
        .arg(playbook())
        .env(
            "PATH",
            format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin_dir.display()),
        )
        .env("ANSIBLE_LOCAL_TEMP", c.scratch.join("ansible-local"))
        .env("ANSIBLE_REMOTE_TEMP", c.scratch.join("ansible-remote"))
        .env("ANSIBLE_HOME", c.scratch.join("ansible-home"))
        .env("ANSIBLE_NOCOLOR", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn assert_nothing_left(c: &Cluster) {
    assert_eq!(
        mounts_under(c.scratch.path())
            .into_iter()
            .filter(|p| !c.fss.iter().any(|f| &f.mount_point == p))
            .collect::<Vec<_>>(),
        Vec::<PathBuf>::new(),
        "mounts left"
    );
    for i in 0..HOSTS {
        assert_clean(&c.target(i));
        let subvolumes =
            snapshot_testkit::run("btrfs", &["subvolume", "list", s(&c.fss[i].mount_point)])
                .unwrap();
        assert!(!subvolumes.contains("snapshot-"), "host{i}: {subvolumes}");
    }
}

#[test]
fn the_playbook_snapshots_every_host_at_one_instant() {
    if !require_privileges("the_playbook_snapshots_every_host_at_one_instant") {
        return;
    }
    let c = Cluster::new("ansible");
    let writer = Writer::start(&c);
    writer.wait_for(50);
    let good = inventory(&c, None);
    for run in 0..RUNS {
        let (ok, text) = run_playbook(&c, &good);
        assert!(ok, "run {run}: {text}");
        let seen: Vec<u64> = (0..HOSTS)
            .map(|i| last_record(&c.scratch.join(format!("backup{i}"))))
            .collect();
        assert!(seen[0] > 0, "run {run}: {seen:?}");
        assert!(
            seen.iter().all(|&n| n == seen[0]),
            "run {run}: the hosts' backups hold different records: {seen:?}\n{text}"
        );
        assert_nothing_left(&c);
    }
    // A host whose freeze fails: the play fails, every host's session is aborted.
    let before = writer.written.load(std::sync::atomic::Ordering::SeqCst);
    let (ok, text) = run_playbook(&c, &inventory(&c, Some(2)));
    assert!(!ok, "a failed freeze must fail the play: {text}");
    assert!(text.contains("host2"), "{text}");
    assert_nothing_left(&c);
    writer.wait_for(before + 20);
    drop(writer);
}
