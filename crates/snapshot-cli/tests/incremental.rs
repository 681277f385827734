//! Incremental backups stay incremental through snapshots (loop tier: root): two backups of an
//! unchanged tree, each through its own session (`snapshot run --in-place`, a new snapshot each
//! time), and the second reads no file again — restic's summary says 0 new and 0 changed, and
//! borg's files cache hits for every file (no `A` or `M` in `--list`) but the newest: borg never
//! caches the files with the newest ctime of a backup (a guard against files changing within
//! the timestamp's granularity), so the test writes one last file, `zz-newest`, which borg
//! reads every time by its own rule. Both clients decide
//! "unchanged" from path, size, mtime, inode (restic) and ctime (borg): a provider whose
//! snapshots changed inode numbers or ctimes would make every backup a full one. Providers this
//! machine has: btrfs, and freeze (XFS on a loop device whose backing file lies on btrfs); LVM
//! and ZFS keep inodes and times too (block copies, dataset snapshots). Negative control: a file
//! changed between the backups is read again, and only that one.

mod common;

use common::*;
use rstest::rstest;
use std::path::Path;
use std::process::Command;

/// Files in the tree backed up (and [`NEWEST`]).
const FILES: usize = 20;
/// Written last: the file with the newest ctime, which borg reads again every time.
const NEWEST: &str = "zz-newest";

/// Runs `snapshot run --in-place DIR -- CMD...` with the clients' environment; its stdout.
fn backup_in_place(rt: &Path, dir: &Path, home: &Path, cmd: &[&str]) -> String {
    let out = Command::new(bin("snapshot"))
        .args(["run", "--in-place", "--no-writers", "--require-snapshot"])
        .args(["--runtime-dir", s(rt), "--state-dir", s(&rt.join("state"))])
        .arg(dir)
        .arg("--")
        .args(cmd)
        .env("HOME", home)
        .env("RESTIC_PASSWORD", "snaptest-password")
        .env("BORG_PASSPHRASE", "snaptest-password")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{cmd:?}: {stdout}\n{stderr}");
    stdout
}

/// restic's `--json` summary line: (files_new, files_changed, files_unmodified).
fn restic_summary(stdout: &str) -> (u64, u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.contains("\"message_type\":\"summary\""))
        .unwrap_or_else(|| panic!("no summary in {stdout}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {line}"));
    (n("files_new"), n("files_changed"), n("files_unmodified"))
}

/// borg `--list` lines of files it read (added or modified), not those its cache knew.
fn borg_read(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|l| l.starts_with("A ") || l.starts_with("M "))
        .map(str::to_owned)
        .collect()
}

#[rstest]
#[case::btrfs("btrfs")]
#[case::freeze("freeze")]
fn second_backup_reads_nothing_again(#[case] provider: &str) {
    if !require_privileges(&format!("second_backup_reads_nothing_again {provider}")) {
        return;
    }
    let scratch = Scratch::new(&format!("incr-{provider}")).unwrap();
    let base = scratch.join("base");
    let _base = LoopFs::new("incr-base", FsKind::Btrfs, 512, &base).unwrap();
    let data = scratch.join("data");
    let fs = match provider {
        "btrfs" => LoopFs::new("incr-data", FsKind::Btrfs, 128, &data).unwrap(),
        _ => LoopFs::new_in(&base, "incr-data", FsKind::Xfs, 0, &data).unwrap(),
    };
    for i in 0..FILES {
        fs.write(&format!("f{i:02}"), &format!("file {i}\n"))
            .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    fs.write(NEWEST, "the newest ctime\n").unwrap();
    // borg trusts its files cache only for files older than the backup's start by a margin.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (rt, home) = (scratch.join("run"), scratch.join("home"));
    std::fs::create_dir(&home).unwrap();
    let restic_repo = base.join("restic");
    let borg_repo = base.join("borg");
    let repo = |p: &Path| p.to_str().unwrap().to_owned();
    let out = Command::new("restic")
        .args(["init", "-r", &repo(&restic_repo)])
        .env("RESTIC_PASSWORD", "snaptest-password")
        .env("HOME", &home)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = Command::new("borg")
        .args(["init", "--encryption=repokey", &repo(&borg_repo)])
        .env("BORG_PASSPHRASE", "snaptest-password")
        .env("HOME", &home)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let d = s(&data);
    let rr = repo(&restic_repo);
    let restic = ["restic", "-r", &rr, "backup", "--json", d];
    let borg_target = |n: u32| format!("{}::b{n}", repo(&borg_repo));
    let borg = |n: u32| {
        backup_in_place(
            &rt,
            &data,
            &home,
            &[
                "sh",
                "-c",
                &format!("borg create --list {} {d} 2>&1", borg_target(n)),
            ],
        )
    };

    let first = restic_summary(&backup_in_place(&rt, &data, &home, &restic));
    let all = FILES as u64 + 1;
    assert_eq!(first.0, all, "the first backup reads every file: {first:?}");
    assert_eq!(borg_read(&borg(1)).len(), FILES + 1, "borg's first backup");

    let second = restic_summary(&backup_in_place(&rt, &data, &home, &restic));
    assert_eq!(
        second,
        (0, 0, all),
        "restic read files again through a new {provider} snapshot"
    );
    let read = borg_read(&borg(2));
    assert_eq!(
        read,
        [format!("A {d}/{NEWEST}")],
        "borg read files again through a new {provider} snapshot"
    );

    // Negative control: one file changed, and only it is read (by borg also its newest-ctime
    // file, as always).
    fs.write("f07", "file 7, changed\n").unwrap();
    let third = restic_summary(&backup_in_place(&rt, &data, &home, &restic));
    assert_eq!((third.0, third.1), (0, 1), "restic: {third:?}");
    let read = borg_read(&borg(3));
    assert_eq!(
        read,
        [format!("M {d}/f07"), format!("A {d}/{NEWEST}")],
        "borg"
    );
    drop(fs);
}
