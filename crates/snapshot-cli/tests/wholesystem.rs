//! Whole-system backups (VM tier, built only with `--features vm-tests`): run by
//! `cargo xtask vm-test` in the guests that boot like servers (`--machine server-lvm`,
//! `server-btrfs`; vm-tests/README.md). Their root filesystem is the system itself — an ext4 LV
//! of the VG `sysvg` (`/home` another LV), or the `@` subvolume of a btrfs (`/home` is `@home`)
//! — and `/boot` is a plain ext4 partition; the guest's init exports `SNAPSHOT_VM_LAYOUT`
//! (`lvm` or `btrfs`). The tests snapshot `/` itself, with the default runtime and state
//! directories, as an administrator would.
//!
//! Everything a test makes is named `snaptest-…` and removed by a guard, also when it fails.

mod common;

use common::*;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// TARGET of the view tests: inside DIR `/`.
const TARGET: &str = "/mnt/snaptest-view";
/// The local restic repository: on a disk of its own, the guest's scratch disk mounted at
/// `/var/tmp`, so that the backup's writes do not eat the root snapshot's CoW space.
const REPO: &str = "/var/tmp/snaptest-repo";
/// What `--writable` names: the repository disk's mount point. Not [`REPO`] itself: a
/// `--writable` path must be a directory in the snapshot, and the repository lies on
/// another filesystem than `/` (the snapshot shows `/var/tmp` as the empty mount point).
const REPO_MOUNT: &str = "/var/tmp";
const RESTORE: &str = "/var/tmp/snaptest-restore";
const RESTIC_PASSWORD: &str = "snaptest-password";
/// The concurrent writers: one on `/`, one on `/home`.
const WRITER_DIRS: [&str; 2] = ["/var/lib/snaptest-writer", "/home/snaptest-writer"];
/// The LVM server's volume group (xtask/src/vm/server.rs).
const ROOT_VG: &str = "sysvg";

/// The provider that must take `/` and `/home` in this guest (`lvm` or `btrfs`), or `None`
/// (skipped) outside a server guest — which fails instead under `CI`.
fn server(test: &str) -> Option<&'static str> {
    let reason = if !rustix::process::geteuid().is_root() {
        "not running as root".to_owned()
    } else {
        match std::env::var("SNAPSHOT_VM_LAYOUT").as_deref() {
            Ok("lvm") => return Some("lvm"),
            Ok("btrfs") => return Some("btrfs"),
            Ok(other) => format!("unknown SNAPSHOT_VM_LAYOUT {other:?}"),
            Err(_) => "not in a server guest (SNAPSHOT_VM_LAYOUT unset); run \
                       `cargo xtask vm-test --test wholesystem`"
                .to_owned(),
        }
    };
    if std::env::var_os("CI").is_some() {
        panic!("{test}: cannot run the whole-system test: {reason}");
    }
    eprintln!("SKIPPED {test}: {reason}");
    None
}

/// Removes what a test made (files, directory trees), on drop, also when the test fails.
/// Logs and never panics; leaves a directory that still has something mounted under it.
struct Remove(Vec<PathBuf>);

impl Remove {
    fn new(paths: &[&str]) -> Self {
        Self(paths.iter().map(PathBuf::from).collect())
    }
}

impl Drop for Remove {
    fn drop(&mut self) {
        for p in &self.0 {
            let Ok(meta) = std::fs::symlink_metadata(p) else {
                continue;
            };
            let result = if meta.is_dir() {
                let mounted = mounts_under(p);
                if !mounted.is_empty() {
                    eprintln!("test: not removing {p:?}: still mounted under it: {mounted:?}");
                    continue;
                }
                std::fs::remove_dir_all(p)
            } else {
                std::fs::remove_file(p)
            };
            if let Err(e) = result {
                eprintln!("test: removing {p:?}: {e}");
            }
        }
    }
}

/// A `snapshot` session with the default runtime and state directories, driven like a
/// backup script: stdin and stdout are pipes. Dropped while running: TERM, then KILL.
struct Session {
    child: Child,
}

impl Session {
    fn start(args: &[&str]) -> Self {
        eprintln!("test: snapshot {}", args.join(" "));
        let child = Command::new(bin("snapshot"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn snapshot");
        Self { child }
    }

    /// The ready line (stdout to EOF), within `limit`.
    fn ready(&mut self, limit: Duration) -> String {
        let mut stdout = self.child.stdout.take().expect("ready read once");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            let _ = tx.send(s);
        });
        rx.recv_timeout(limit)
            .unwrap_or_else(|_| panic!("snapshot printed no ready line within {limit:?}"))
    }

    /// Closes stdin (the end of the backup) and waits.
    fn finish(mut self) -> ExitStatus {
        drop(self.child.stdin.take());
        wait_timeout(&mut self.child, Duration::from_secs(120))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        use rustix::process::{kill_process, Pid, Signal};
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let pid = Pid::from_raw(self.child.id() as i32).expect("a child's pid");
        eprintln!("test: session {pid:?} still running at drop; sending TERM");
        let _ = kill_process(pid, Signal::TERM);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The tool's snapshot objects present now: LVs that are snapshots or carry a session name
/// (LVM guest), subvolumes named `snapshot-…` (btrfs guest).
fn snapshot_objects(provider: &str) -> Vec<String> {
    if provider == "lvm" {
        let out = snapshot_testkit::run(
            "lvs",
            &[
                "--noheadings",
                "--separator",
                "|",
                "-o",
                "lv_name,origin",
                ROOT_VG,
            ],
        )
        .expect("lvs");
        out.lines()
            .map(str::trim)
            .filter(|l| {
                let (name, origin) = l.split_once('|').unwrap_or((l, ""));
                !origin.is_empty() || name.contains("snapshot-")
            })
            .map(str::to_owned)
            .collect()
    } else {
        let out = snapshot_testkit::run("btrfs", &["subvolume", "list", "-a", "/"])
            .expect("btrfs subvolume list");
        out.lines()
            .filter(|l| l.contains("snapshot-"))
            .map(str::to_owned)
            .collect()
    }
}

/// `snapshot status --json` lists no session.
fn assert_no_session() {
    let (code, out, _) = run_bin("snapshot", &["status", "--json"]);
    assert_eq!(code, 0, "snapshot status --json: {out}");
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json ({e}): {out:?}"));
    assert_eq!(
        v["sessions"].as_array().map(Vec::len),
        Some(0),
        "sessions left: {v}"
    );
}

/// The manifest's entry for the mount point `mp`.
fn entry<'a>(manifest: &'a serde_json::Value, mp: &str) -> &'a serde_json::Value {
    manifest["mounts"]
        .as_array()
        .unwrap_or_else(|| panic!("no mounts in the manifest: {manifest}"))
        .iter()
        .find(|m| m["mount_point"] == mp)
        .unwrap_or_else(|| panic!("{mp} not in the manifest: {manifest}"))
}

/// `snapshot --json -t /mnt/snaptest-view / /home /boot`: TARGET inside DIR `/`. `/` and
/// `/home` are snapshots (LVM or btrfs), `/boot` a live bind flagged not consistent; a file
/// written to `/etc` (and to `/home`) after ready is not in the view; the view shows TARGET as
/// the empty directory it was; teardown leaves no snapshot, no mount and no session.
#[test]
fn view_of_the_running_system() {
    let Some(provider) = server("view_of_the_running_system") else {
        return;
    };
    let _cleanup = Remove::new(&[
        TARGET,
        "/etc/snaptest-before",
        "/etc/snaptest-after-ready",
        "/home/snaptest-before",
        "/home/snaptest-after-ready",
        "/boot/snaptest-before",
    ]);
    let target = Path::new(TARGET);
    std::fs::create_dir(target).expect("creating TARGET");
    for d in ["/etc", "/home", "/boot"] {
        std::fs::write(Path::new(d).join("snaptest-before"), "before").unwrap();
    }
    rustix::fs::sync();
    assert_eq!(snapshot_objects(provider), Vec::<String>::new());

    let t = Instant::now();
    let mut session = Session::start(&["--json", "-v", "-t", TARGET, "/", "/home", "/boot"]);
    let ready = session.ready(Duration::from_secs(300));
    eprintln!("TIMING ready in {:.1} s", t.elapsed().as_secs_f64());
    let manifest: serde_json::Value = serde_json::from_str(&ready)
        .unwrap_or_else(|e| panic!("no JSON manifest ({e}): {ready:?}"));
    eprintln!("manifest: {manifest}");

    // Changes after ready.
    std::fs::write("/etc/snaptest-after-ready", "after").unwrap();
    std::fs::write("/home/snaptest-after-ready", "after").unwrap();
    rustix::fs::sync();

    let root_fstype = if provider == "lvm" { "ext4" } else { "btrfs" };
    for mp in ["/", "/home"] {
        let e = entry(&manifest, mp);
        assert_eq!(e["provider"], provider, "{mp}: {manifest}");
        assert_eq!(e["fstype"], root_fstype, "{mp}: {manifest}");
        assert_eq!(e["consistent"], true, "{mp}: {manifest}");
    }
    let boot = entry(&manifest, "/boot");
    assert_eq!(boot["provider"], "bind", "/boot: {manifest}");
    assert_eq!(boot["fstype"], "ext4", "/boot: {manifest}");
    assert_eq!(boot["consistent"], false, "/boot: {manifest}");
    assert_eq!(manifest["consistent"], false, "{manifest}");
    assert_eq!(entry(&manifest, "/")["path"], TARGET, "{manifest}");

    let view = |p: &str| in_view(target, Path::new(p));
    assert_eq!(
        std::fs::read_to_string(view("/etc/hostname")).unwrap(),
        std::fs::read_to_string("/etc/hostname").unwrap(),
        "the view's /etc/hostname"
    );
    for d in ["/etc", "/home", "/boot"] {
        assert_eq!(
            std::fs::read_to_string(view(d).join("snaptest-before"))
                .ok()
                .as_deref(),
            Some("before"),
            "{d}/snaptest-before in the view"
        );
    }
    assert!(
        !view("/etc/snaptest-after-ready").exists(),
        "a file written to /etc after ready is in the view"
    );
    assert!(
        !view("/home/snaptest-after-ready").exists(),
        "a file written to /home after ready is in the view"
    );
    // TARGET as it was at the snapshot instant: an empty directory, not the view again.
    let inner = view(TARGET);
    assert!(inner.is_dir(), "{inner:?} is not a directory in the view");
    let inside: Vec<_> = std::fs::read_dir(&inner)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(inside.is_empty(), "{inner:?} is not empty: {inside:?}");
    assert_read_only(target);
    assert_read_only(&view("/etc"));
    assert_read_only(&view("/home"));
    assert_read_only(&view("/boot"));

    let status = session.finish();
    assert_eq!(status.code(), Some(0), "the session's exit status");
    assert_clean(target);
    assert_eq!(
        snapshot_objects(provider),
        Vec::<String>::new(),
        "snapshots left"
    );
    assert_no_session();
}

/// `snapshot plan / /home /boot` works (TARGET /mnt is inside `/`) and explains itself: the
/// providers of `/` and `/home`, the bind of `/boot` and why the others declined it.
#[test]
fn plan_of_the_running_system() {
    let Some(provider) = server("plan_of_the_running_system") else {
        return;
    };
    let (code, out, err) = run_bin("snapshot", &["plan", "/", "/home", "/boot"]);
    eprintln!("{out}");
    assert_eq!(code, 0, "snapshot plan / /home /boot: {err}");
    for needle in [
        format!("-> {provider}"),
        "-> bind".to_owned(),
        "/boot".to_owned(),
        "/home".to_owned(),
        "declined".to_owned(),
    ] {
        assert!(out.contains(&needle), "the plan does not say {needle:?}");
    }
}

/// One concurrent writer: in its directory, `a-files/NNNNNNNN` holds `N\n` (written and
/// fsync'd), then `N\n` is appended to `z-log` (fdatasync'd); one operation every 100 ms.
/// Any point-in-time copy shows files 1..=F and log lines 1..=L with F ∈ {L, L+1} (the
/// newest file or log line may be torn: a prefix). A live copy read in name order (files
/// first, the log last) sees log lines whose files it did not read: caught.
struct Writer {
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    completed: Arc<AtomicU64>,
    /// Start time of operation N at index N-1, pushed before the operation touches a file.
    starts: Arc<Mutex<Vec<SystemTime>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(dir: &str) -> Self {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(dir.join("a-files")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let completed = Arc::new(AtomicU64::new(0));
        let starts = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (dir, stop, completed, starts) =
                (dir.clone(), stop.clone(), completed.clone(), starts.clone());
            std::thread::spawn(move || {
                let mut log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("z-log"))
                    .expect("opening the writer's log");
                let mut seq = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    seq += 1;
                    starts.lock().unwrap().push(SystemTime::now());
                    let line = format!("{seq}\n");
                    let mut f =
                        std::fs::File::create(dir.join("a-files").join(format!("{seq:08}")))
                            .expect("writer: create");
                    f.write_all(line.as_bytes()).expect("writer: write");
                    f.sync_all().expect("writer: fsync");
                    log.write_all(line.as_bytes()).expect("writer: log");
                    log.sync_data().expect("writer: fdatasync");
                    completed.store(seq, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Self {
            dir,
            stop,
            completed,
            starts,
            thread: Some(thread),
        }
    }

    fn completed(&self) -> u64 {
        self.completed.load(Ordering::SeqCst)
    }

    /// Stops it; returns the start times of all its operations.
    fn stop(&mut self) -> Vec<SystemTime> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("the writer thread panicked");
        }
        self.starts.lock().unwrap().clone()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Checks a writer's files as restored from a backup of a view taken at one instant:
/// consistent (files 1..=F, log 1..=L, F ∈ {L, L+1}, contents right, only the newest file or
/// log line torn), no older than `floor` (operations completed before the session started),
/// no newer than `ceiling` (no operation started after the backup program started, which was
/// after the view was ready). Returns L.
fn check_writer_copy(
    copy: &Path,
    starts: &[SystemTime],
    floor: u64,
    ceiling: SystemTime,
) -> Result<u64, String> {
    let mut files: Vec<u64> = std::fs::read_dir(copy.join("a-files"))
        .map_err(|e| format!("{copy:?}/a-files: {e}"))?
        .map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.parse::<u64>()
                .map_err(|_| format!("unexpected file {name:?}"))
        })
        .collect::<Result<_, _>>()?;
    files.sort_unstable();
    let newest_file = files.len() as u64;
    if files.iter().enumerate().any(|(i, n)| *n != i as u64 + 1) {
        return Err(format!(
            "the files are not 1..={newest_file}: {:?}…",
            &files[..files.len().min(20)]
        ));
    }
    let log = std::fs::read_to_string(copy.join("z-log")).map_err(|e| format!("z-log: {e}"))?;
    let (complete, fragment) = match log.rfind('\n') {
        Some(i) => (&log[..=i], &log[i + 1..]),
        None => ("", log.as_str()),
    };
    let mut logged = 0u64;
    for l in complete.lines() {
        logged += 1;
        if l != logged.to_string() {
            return Err(format!("log line {logged} is {l:?}"));
        }
    }
    if !fragment.is_empty() && !format!("{}\n", logged + 1).starts_with(fragment) {
        return Err(format!("the log ends in {fragment:?}, not a torn record"));
    }
    if newest_file != logged && newest_file != logged + 1 {
        return Err(format!(
            "{newest_file} files but {logged} log lines: not one instant (a live copy?)"
        ));
    }
    if !fragment.is_empty() && newest_file != logged + 1 {
        return Err(format!(
            "a torn log record {fragment:?} but no file {}",
            logged + 1
        ));
    }
    for n in 1..=newest_file {
        let want = format!("{n}\n");
        let got = std::fs::read_to_string(copy.join("a-files").join(format!("{n:08}")))
            .map_err(|e| format!("file {n}: {e}"))?;
        // Only a file not yet logged may be torn (it is fsync'd before its log line).
        let torn_ok = n == logged + 1 && fragment.is_empty();
        if got != want && !(torn_ok && want.starts_with(&got)) {
            return Err(format!("file {n} holds {got:?}"));
        }
    }
    if logged < floor {
        return Err(format!(
            "{logged} log lines, but {floor} were written before the session started"
        ));
    }
    if let Some(late) = starts
        .iter()
        .take(newest_file as usize)
        .position(|s| *s > ceiling)
    {
        return Err(format!(
            "operation {} started after the backup program started, yet it is in the backup",
            late + 1
        ));
    }
    Ok(logged)
}

/// Unix time of an RFC 3339 timestamp (`2026-12-06T03:04:05.123456789+01:00`, or `Z`).
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = s.get(19..)?;
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.chars().take_while(char::is_ascii_digit).count();
        let padded = format!("{:0<9}", &frac[..digits.min(9)]);
        nanos = padded.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" => 0,
        _ => {
            let sign = match rest.get(..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset;
    Some(UNIX_EPOCH + Duration::new(u64::try_from(secs).ok()?, nanos))
}

/// Runs restic directly (not through a session): `--no-cache`, so that nothing of restic's
/// lands on the live root between the backups.
fn restic(args: &[&str]) -> String {
    let out = Command::new("restic")
        .args(["-r", REPO, "--no-cache"])
        .args(args)
        .env("RESTIC_PASSWORD", RESTIC_PASSWORD)
        .stdin(Stdio::null())
        .output()
        .expect("running restic");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "restic {} failed ({}): {stderr}",
        args.join(" "),
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What one `restic backup --json -vv` run reported.
struct Backup {
    summary: serde_json::Value,
    /// The files it read (restic's `verbose_status` items `new` or `modified` that are not
    /// directories): every other file it took from the parent snapshot unread.
    read: Vec<String>,
}

impl Backup {
    fn id(&self) -> &str {
        self.summary["snapshot_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no snapshot_id in {}", self.summary))
    }

    fn count(&self, field: &str) -> u64 {
        self.summary[field]
            .as_u64()
            .unwrap_or_else(|| panic!("no {field} in {}", self.summary))
    }
}

/// `snapshot run --in-place --writable /var/tmp / /home -- restic -r /var/tmp/snaptest-repo
/// backup --one-file-system --json -vv / /home`.
fn backup_in_place(which: &str) -> Backup {
    let args = [
        "run",
        "-v",
        "--in-place",
        "--writable",
        REPO_MOUNT,
        "/",
        "/home",
        "--",
        "restic",
        "-r",
        REPO,
        "backup",
        "--one-file-system",
        "--json",
        "-vv",
        "/",
        "/home",
    ];
    eprintln!("test: snapshot {}", args.join(" "));
    let t = Instant::now();
    let mut child = Command::new(bin("snapshot"))
        .args(args)
        .env("RESTIC_PASSWORD", RESTIC_PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn snapshot run");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let status = wait_timeout(&mut child, Duration::from_secs(1800));
    let out = reader.join().unwrap();
    eprintln!(
        "TIMING {which}: snapshot run + restic backup in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(
        status.code(),
        Some(0),
        "{which}: snapshot run … restic backup failed; its stdout's end: {}",
        &out[out.len().saturating_sub(2000)..]
    );
    let mut summary = None;
    let mut read = Vec::new();
    for v in out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        if v["message_type"] == "summary" {
            summary = Some(v);
        } else if v["message_type"] == "verbose_status"
            && (v["action"] == "new" || v["action"] == "modified")
        {
            let item = v["item"].as_str().unwrap_or_default().trim_end_matches('/');
            // The live path: nothing changes it during these runs.
            let is_dir = std::fs::symlink_metadata(item).is_ok_and(|m| m.is_dir());
            if !item.is_empty() && !is_dir {
                read.push(item.to_owned());
            }
        }
    }
    let summary = summary.unwrap_or_else(|| {
        panic!(
            "{which}: no restic summary in {}",
            &out[out.len().saturating_sub(2000)..]
        )
    });
    eprintln!("{which}: restic summary {summary}");
    Backup { summary, read }
}

/// The paths `restic diff A B` lists as added, removed, or modified or of another type
/// (directories without their trailing `/`): content, not metadata. (`--metadata` would list
/// every path: each session's snapshot has a device number of its own, which restic records.)
fn restic_changes(a: &str, b: &str) -> (Vec<String>, String) {
    let text = restic(&["diff", a, b]);
    let paths = text
        .lines()
        .filter_map(|l| {
            let (modifier, path) = l.split_once(char::is_whitespace)?;
            let path = path.trim();
            (["+", "-", "M", "T"].contains(&modifier) && path.starts_with('/'))
                .then(|| path.trim_end_matches('/').to_owned())
        })
        .collect();
    (paths, text)
}

/// The restic snapshot's start time (its `time`).
fn restic_snapshot_time(id: &str) -> SystemTime {
    let out = restic(&["snapshots", "--json", id]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("restic snapshots --json");
    let time = v[0]["time"].as_str().expect("a snapshot time").to_owned();
    parse_rfc3339(&time).unwrap_or_else(|| panic!("unreadable restic time {time:?}"))
}

/// `snapshot run --in-place / /home -- restic backup --one-file-system / /home` of the running
/// system, the repository's disk bound in with `--writable`, under a writer on `/` and one on
/// `/home`: the restored writer files show one instant between the session's start and the
/// backup's (the invariants above). Then, with the writers stopped, two more identical runs:
/// the third reads no unchanged file again.
#[test]
fn restic_backup_of_the_running_system() {
    let Some(provider) = server("restic_backup_of_the_running_system") else {
        return;
    };
    assert!(
        snapshot_testkit::find_tool("restic").is_some(),
        "restic is not installed in the guest"
    );
    let _cleanup = Remove::new(&[REPO, RESTORE, WRITER_DIRS[0], WRITER_DIRS[1]]);
    restic(&["init"]);

    let mut writers: Vec<Writer> = WRITER_DIRS.iter().map(|d| Writer::start(d)).collect();
    std::thread::sleep(Duration::from_secs(2));
    // Completed (log line fdatasync'd) before the session starts: must be in the backup.
    let floors: Vec<u64> = writers.iter().map(Writer::completed).collect();
    let first = backup_in_place("backup 1 (writers running)");
    let ceiling = restic_snapshot_time(first.id());
    let starts: Vec<Vec<SystemTime>> = writers.iter_mut().map(Writer::stop).collect();

    let t = Instant::now();
    let mut args = vec!["restore", first.id()];
    args.extend(["--target", RESTORE]);
    for d in WRITER_DIRS {
        args.extend(["--include", d]);
    }
    restic(&args);
    eprintln!(
        "TIMING restic restore of the writers' files in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let mut problems = String::new();
    for (i, w) in writers.iter().enumerate() {
        let copy = in_view(Path::new(RESTORE), &w.dir);
        let after = starts[i].iter().filter(|s| **s > ceiling).count();
        match check_writer_copy(&copy, &starts[i], floors[i], ceiling) {
            Ok(logged) => eprintln!(
                "writer {:?} ({provider}): {logged} operations in the backup, {} before the \
                 session, {after} started during the backup, {} in all",
                w.dir,
                floors[i],
                starts[i].len()
            ),
            Err(e) => writeln!(problems, "writer {:?}: {e}", w.dir).unwrap(),
        }
        // Otherwise the test proved nothing about writes during the backup.
        assert!(
            after > 0,
            "writer {:?}: no operation started while restic ran",
            w.dir
        );
    }
    assert!(
        problems.is_empty(),
        "the restored backup is not the snapshot instant:\n{problems}"
    );

    // From here on the writers are stopped, restic runs with --no-cache outside the
    // sessions, the restore went to another filesystem: between backups 2 and 3 only what
    // the sessions themselves leave on `/` may change. Backup 3 must read only files that
    // changed (`restic diff` of the two snapshots: added or modified content) and take every
    // other file from its parent unread — on `/home`, a tree nothing touched, none at all
    // (`files_new` and `files_changed` 0 there). A file whose metadata alone changed would
    // count as unchanged here: nothing touches one between the two backups.
    let second = backup_in_place("backup 2 (writers stopped)");
    let third = backup_in_place("backup 3 (nothing changed since backup 2 but the sessions)");
    let (changed, diff) = restic_changes(second.id(), third.id());
    eprintln!(
        "restic figures ({provider}): backup 1: files new {} changed {} unmodified {}; \
         backup 2: files new {} changed {} unmodified {}; backup 3: files new {} changed {} \
         unmodified {}",
        first.count("files_new"),
        first.count("files_changed"),
        first.count("files_unmodified"),
        second.count("files_new"),
        second.count("files_changed"),
        second.count("files_unmodified"),
        third.count("files_new"),
        third.count("files_changed"),
        third.count("files_unmodified"),
    );
    eprintln!(
        "backup 3 read {} file(s): {:?}\nrestic diff of backups 2 and 3:\n{diff}",
        third.read.len(),
        third.read
    );
    let reread: Vec<&String> = third.read.iter().filter(|f| !changed.contains(f)).collect();
    assert!(
        reread.is_empty(),
        "backup 3 read files that did not change since backup 2: {reread:?}"
    );
    let home: Vec<&String> = third
        .read
        .iter()
        .filter(|f| f.starts_with("/home/"))
        .collect();
    assert!(
        home.is_empty(),
        "backup 3 read files of the unchanged /home: {home:?}"
    );
    assert_eq!(
        third.count("files_new") + third.count("files_changed"),
        third.read.len() as u64,
        "restic's summary and its list of files read disagree"
    );
    assert!(
        third.count("files_unmodified") > 1000,
        "backup 3 saw too few files to be the whole system: {}",
        third.summary
    );
}

#[test]
fn rfc3339_times() {
    assert_eq!(
        parse_rfc3339("1970-01-01T00:00:01Z"),
        Some(UNIX_EPOCH + Duration::from_secs(1))
    );
    assert_eq!(
        parse_rfc3339("2026-12-06T03:04:05.5+01:00"),
        Some(UNIX_EPOCH + Duration::new(1_796_526_245 - 3600, 500_000_000))
    );
    assert_eq!(
        parse_rfc3339("2000-03-01T00:00:00.000000001-00:30"),
        Some(UNIX_EPOCH + Duration::new(951_868_800 + 1800, 1))
    );
    assert_eq!(parse_rfc3339("yesterday"), None);
}

#[test]
fn writer_invariants() {
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path();
    std::fs::create_dir(copy.join("a-files")).unwrap();
    let t0 = UNIX_EPOCH + Duration::from_secs(1000);
    let starts: Vec<SystemTime> = (0..10).map(|i| t0 + Duration::from_secs(i)).collect();
    let put = |n: u64, content: &str| {
        std::fs::write(copy.join("a-files").join(format!("{n:08}")), content).unwrap()
    };
    for n in 1..=3 {
        put(n, &format!("{n}\n"));
    }
    std::fs::write(copy.join("z-log"), "1\n2\n3\n").unwrap();
    let ceiling = t0 + Duration::from_secs(5);
    assert_eq!(check_writer_copy(copy, &starts, 2, ceiling), Ok(3));
    // Below the floor.
    assert!(check_writer_copy(copy, &starts, 4, ceiling).is_err());
    // A torn newest file, not yet logged: fine.
    put(4, "");
    assert_eq!(check_writer_copy(copy, &starts, 2, ceiling), Ok(3));
    // An operation started after the ceiling is in the copy.
    assert!(check_writer_copy(copy, &starts, 2, t0 + Duration::from_millis(2500)).is_err());
    // A log that lists files the copy lacks (a live copy reading the log last).
    std::fs::write(copy.join("z-log"), "1\n2\n3\n4\n5\n6\n").unwrap();
    assert!(check_writer_copy(copy, &starts, 2, ceiling).is_err());
    // A torn log record with its file complete.
    put(4, "4\n");
    std::fs::write(copy.join("z-log"), "1\n2\n3\n").unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(copy.join("z-log"))
        .unwrap();
    f.write_all(b"4").unwrap();
    assert_eq!(check_writer_copy(copy, &starts, 2, ceiling), Ok(3));
    // A gap.
    std::fs::remove_file(copy.join("a-files/00000002")).unwrap();
    assert!(check_writer_copy(copy, &starts, 2, ceiling).is_err());
}
