//! The shipped database writer hooks (`writers.d/postgresql`, `writers.d/mariadb`) against real
//! database servers (loop tier: root, plus the PostgreSQL and MariaDB server packages).
//!
//! Every test starts its own server on a data directory on a loop-device btrfs filesystem, with
//! a private socket directory and no TCP listener, and stops it in `Drop`; nothing here talks to
//! a system cluster. Every file, mount and server carries the `snaptest-dbw-` prefix.

mod common;
use anyhow::{bail, Context, Result};
use common::*;
use snapshot_testkit::db::{dir_for, missing, output, Db, MariaServer, PgServer, PG_PORT};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Gate: root, loop devices, mkfs (require_privileges) and the database packages.

/// [`require_privileges`] plus the database's programs: with `CI` set a missing one fails the
/// test; otherwise the test is skipped, and says so.
fn require_db(test: &str, db: Db) -> bool {
    if !require_privileges(test) {
        return false;
    }
    match missing(db) {
        None => true,
        Some(reason) if std::env::var_os("CI").is_some() => {
            panic!("{test}: cannot run database test: {reason}")
        }
        Some(reason) => {
            eprintln!("SKIPPED {test}: {reason}");
            false
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

/// `cp -a FROM TO`: copies a data directory out of the view, owners and modes kept.
fn copy_tree(from: &Path, to: &Path) {
    output(Command::new("cp").arg("-a").arg(from).arg(to)).unwrap();
}

fn hook(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../writers.d")
        .join(name)
        .canonicalize()
        .expect("the shipped hook")
}

/// A writer directory holding only `hook` (as a symlink, the way one installs it).
fn writers_dir_with(scratch: &Scratch, hook_name: &str) -> PathBuf {
    let dir = scratch.join("writers.d");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink(hook(hook_name), dir.join(format!("10-{hook_name}"))).unwrap();
    dir
}

/// Waits until `f` returns Some, at most `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One call of a hook, as `snapshot` makes it (own process group, stdin /dev/null, the
/// session's environment), output to files (a helper left behind cannot hold a pipe open).
struct HookRun {
    code: Option<i32>,
    stderr: String,
    took: Duration,
}

/// Process groups of the hook calls of a test: killed on drop, so that a test failing while a
/// helper holds a lock leaves nothing running. Declare it after the server, so it drops first.
#[derive(Default)]
struct HookGroups {
    groups: std::sync::Mutex<Vec<rustix::process::Pid>>,
    /// Run each hook in a mount namespace whose /dev is a tmpfs with only null, zero, random
    /// and urandom: no /dev/fd, as on minimal systems (an initramfs, some containers), where
    /// bash's process substitution fails.
    without_dev_fd: bool,
}

/// The mount namespace of [`HookGroups::without_dev_fd`]: `unshare` and `sh` exec the hook, so
/// its pid (and process group) stay the one spawned.
const WITHOUT_DEV_FD: &str = "mount -t tmpfs -o mode=0755 snaptest-dbw-dev /dev \
    && mknod -m 666 /dev/null c 1 3 && mknod -m 666 /dev/zero c 1 5 \
    && mknod -m 666 /dev/random c 1 8 && mknod -m 666 /dev/urandom c 1 9 && exec \"$@\"";

impl HookGroups {
    fn without_dev_fd() -> Self {
        Self {
            groups: Default::default(),
            without_dev_fd: true,
        }
    }

    fn call(
        &self,
        scratch: &Scratch,
        hook: &Path,
        phase: &str,
        dirs: &[&Path],
        session: &str,
        env: &[(&str, &Path)],
    ) -> HookRun {
        use std::os::unix::process::CommandExt;
        let err = scratch.join(format!("snaptest-dbw-hook-{session}-{phase}.err"));
        let mut cmd = if self.without_dev_fd {
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                .args([WITHOUT_DEV_FD, "sh"])
                .arg(hook);
            c
        } else {
            Command::new(hook)
        };
        cmd.arg(phase)
            .args(dirs)
            .env("SNAPSHOT_PHASE", phase)
            .env("SNAPSHOT_SESSION", session)
            .env("SNAPSHOT_TARGET", scratch.join("T"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&err).unwrap())
            .stderr(std::fs::File::options().append(true).open(&err).unwrap())
            .process_group(0);
        let t = Instant::now();
        let mut child = cmd.spawn().expect("spawn hook");
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            self.groups.lock().unwrap().push(pid);
        }
        let status = wait_timeout(&mut child, Duration::from_secs(60));
        let took = t.elapsed();
        let stderr = std::fs::read_to_string(&err).unwrap_or_default();
        eprintln!(
            "hook {} {phase} -> {status} in {took:?}:\n{stderr}",
            hook.display()
        );
        HookRun {
            code: status.code(),
            stderr,
            took,
        }
    }
}

impl Drop for HookGroups {
    fn drop(&mut self) {
        let groups = self
            .groups
            .get_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        for pgid in groups {
            let members = group_members(pgid.as_raw_nonzero().get());
            if members.is_empty() {
                continue;
            }
            eprintln!("test: hook group {pgid:?} still has {members:?}");
            match rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL) {
                Ok(()) => eprintln!("test: killed what was left of hook group {pgid:?}"),
                Err(rustix::io::Errno::SRCH) => {}
                Err(e) => eprintln!("test: killing hook group {pgid:?}: {e}"),
            }
        }
    }
}

/// Files under `dir` whose names contain `part`.
fn files_with(dir: &Path, part: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(part))
                .collect()
        })
        .unwrap_or_default()
}

/// Live (not zombie) processes of process group `pgid`, as "PID COMM".
fn group_members(pgid: i32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(") ")?;
            let f: Vec<&str> = rest.split(' ').collect();
            (f.first() != Some(&"Z") && f.get(2)?.parse::<i32>().ok()? == pgid)
                .then(|| head.replacen(" (", " ", 1))
        })
        .collect()
}

fn proc_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// The workload: money moves between accounts, each move one transaction with a ledger row.
// Invariants: the total never changes, and each balance equals its start plus its ledger.

const ACCOUNTS: u64 = 20;
const START_BALANCE: u64 = 1000;

fn pg_schema() -> String {
    format!(
        "CREATE TABLE acct (id int PRIMARY KEY, bal bigint NOT NULL);
         INSERT INTO acct SELECT g, {START_BALANCE} FROM generate_series(1, {ACCOUNTS}) g;
         CREATE TABLE ledger (id bigserial PRIMARY KEY, src int NOT NULL, dst int NOT NULL,
                              amount int NOT NULL);"
    )
}

fn mariadb_schema() -> String {
    let rows: Vec<String> = (1..=ACCOUNTS)
        .map(|i| format!("({i}, {START_BALANCE})"))
        .collect();
    format!(
        "CREATE DATABASE bank;
         CREATE TABLE bank.acct (id INT PRIMARY KEY, bal BIGINT NOT NULL) ENGINE=InnoDB;
         INSERT INTO bank.acct VALUES {};
         CREATE TABLE bank.ledger (id BIGINT AUTO_INCREMENT PRIMARY KEY, src INT NOT NULL,
                                   dst INT NOT NULL, amount INT NOT NULL) ENGINE=InnoDB;
         CREATE TABLE bank.events (id BIGINT AUTO_INCREMENT PRIMARY KEY, note INT NOT NULL)
                                   ENGINE=MyISAM;",
        rows.join(", ")
    )
}

/// The checks of the invariants, as `(query, expected)`.
fn invariant_queries(ledger: &str, acct: &str) -> Vec<(String, String)> {
    vec![
        (
            format!("SELECT sum(bal) FROM {acct}"),
            (ACCOUNTS * START_BALANCE).to_string(),
        ),
        (
            format!(
                "SELECT count(*) FROM {acct} a WHERE a.bal <> {START_BALANCE}
                   - coalesce((SELECT sum(amount) FROM {ledger} WHERE src = a.id), 0)
                   + coalesce((SELECT sum(amount) FROM {ledger} WHERE dst = a.id), 0)"
            ),
            "0".to_owned(),
        ),
    ]
}

/// A client fed transfers on its stdin by a thread until stopped.
struct Workload {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<u64>>>,
}

impl Workload {
    /// `mariadb`: also one MyISAM row after each commit (not transactional: only the lock keeps
    /// it in step with the ledger in a snapshot).
    fn start(mut client: Command, mariadb: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let mut child = client
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn the workload's client");
        let thread = std::thread::spawn(move || -> Result<u64> {
            let mut stdin = child.stdin.take().unwrap();
            let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut next = |n: u64| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed % n
            };
            let mut n = 0u64;
            let (begin, prefix) = if mariadb {
                ("START TRANSACTION", "bank.")
            } else {
                ("BEGIN", "")
            };
            let mut result = Ok(());
            while !flag.load(Ordering::Relaxed) {
                let (src, dst, amount) = (next(ACCOUNTS) + 1, next(ACCOUNTS) + 1, next(50) + 1);
                let mut txn = format!(
                    "{begin};
                     UPDATE {prefix}acct SET bal = bal - {amount} WHERE id = {src};
                     UPDATE {prefix}acct SET bal = bal + {amount} WHERE id = {dst};
                     INSERT INTO {prefix}ledger (src, dst, amount) VALUES ({src}, {dst}, {amount});
                     COMMIT;\n"
                );
                if mariadb {
                    txn.push_str(&format!("INSERT INTO bank.events (note) VALUES ({n});\n"));
                }
                if let Err(e) = stdin.write_all(txn.as_bytes()) {
                    result = Err(e).context("feeding the workload's client");
                    break;
                }
                n += 1;
            }
            drop(stdin);
            let status = child.wait()?;
            result?;
            if !status.success() {
                bail!("the workload's client failed: {status}");
            }
            Ok(n)
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops feeding, lets the client finish; the number of transactions sent.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("workload thread")
            .expect("workload")
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => eprintln!("test: workload: {e:#}"),
                Err(_) => eprintln!("test: workload thread panicked"),
            }
        }
    }
}

/// Starts `snapshot -v --json --writers-dir WRITERS -t T DIR` with `env`, waits for the view,
/// checks it is a btrfs snapshot, copies `data` out of it into `copy`, ends the session and
/// checks that it left nothing; returns the session's stderr.
fn snapshot_and_copy(
    scratch: &Scratch,
    writers: &Path,
    dir: &Path,
    data: &Path,
    copy: &Path,
    env: &[(&str, &str)],
) -> String {
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let rt = scratch.join("run");
    let t = Instant::now();
    let mut run = Running::start_env(
        &[
            "--writers-dir",
            s(writers),
            "-v",
            "--json",
            "--strict-writers",
            "-t",
            s(&target),
            s(dir),
        ],
        &rt,
        env,
    );
    let manifest: serde_json::Value = serde_json::from_str(&run.ready()).expect("manifest");
    eprintln!("test: view ready after {:?}", t.elapsed());
    let mounts = manifest["mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 1, "{manifest}");
    assert_eq!(mounts[0]["provider"], "btrfs", "{manifest}");
    assert_eq!(manifest["consistent"], true, "{manifest}");
    copy_tree(&in_view(&target, data), copy);
    let (status, stderr) = run.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_clean(&target);
    assert_no_journal(&rt);
    stderr
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// `snapshot` with the postgresql hook over a busy cluster's filesystem: the hook checkpoints,
/// and the data directory copied out of the view starts as a server whose data is consistent
/// and holds at least what was committed before the session began.
#[test]
fn postgresql_view_of_a_busy_cluster_starts_and_is_consistent() {
    if !require_db(
        "postgresql_view_of_a_busy_cluster_starts_and_is_consistent",
        Db::Postgres,
    ) {
        return;
    }
    let scratch = Scratch::new("dbw-pg-view").unwrap();
    let m = scratch.join("m");
    let _fs = LoopFs::new("dbw-pg-view", FsKind::Btrfs, 300, &m).unwrap();
    let data = m.join("pgdata");
    let srv = PgServer::init("snaptest-dbw-pg-view", &data, &scratch.join("sock")).unwrap();
    srv.sql(&pg_schema()).unwrap();
    let work = Workload::start(srv.psql_cmd(), false);
    wait_for("50 transfers committed", Duration::from_secs(30), || {
        (srv.sql_u64("SELECT count(*) FROM ledger").unwrap() >= 50).then_some(())
    });
    let before = srv.sql_u64("SELECT count(*) FROM ledger").unwrap();

    let writers = writers_dir_with(&scratch, "postgresql");
    let conf = srv
        .hook_conf(&scratch.join("snaptest-dbw-pg.conf"))
        .unwrap();
    let copy = scratch.join("copy");
    let stderr = snapshot_and_copy(
        &scratch,
        &writers,
        &m,
        &data,
        &copy,
        &[("SNAPSHOT_POSTGRESQL_CONF", s(&conf))],
    );
    assert!(
        stderr.contains("writer 10-postgresql: postgresql: CHECKPOINT on"),
        "the hook found its cluster: {stderr}"
    );

    // A backup restores the files without the lock file of the server that was running
    // (pg_basebackup leaves it out too); the original is still running here.
    std::fs::remove_file(copy.join("postmaster.pid")).unwrap();
    let restored =
        PgServer::start("snaptest-dbw-pg-copy", &copy, &scratch.join("sock-copy")).unwrap();
    for (q, want) in invariant_queries("ledger", "acct") {
        assert_eq!(restored.sql(&q).unwrap(), want, "{q}");
    }
    let in_copy = restored.sql_u64("SELECT count(*) FROM ledger").unwrap();
    assert!(
        in_copy >= before,
        "the view lost commits: {in_copy} < {before}"
    );
    // The workload went on past the snapshot: the view is of a live cluster.
    wait_for("writes after the snapshot", Duration::from_secs(30), || {
        (srv.sql_u64("SELECT count(*) FROM ledger").unwrap() > in_copy).then_some(())
    });
    let sent = work.stop();
    let live = srv.sql_u64("SELECT count(*) FROM ledger").unwrap();
    eprintln!("test: {before} committed before the session, {in_copy} in the view, {live} at the end ({sent} sent)");
    assert_eq!(live, sent);
    for (q, want) in invariant_queries("ledger", "acct") {
        assert_eq!(srv.sql(&q).unwrap(), want, "live: {q}");
    }
}

/// The postgresql hook alone: CHECKPOINT (a new checkpoint in pg_control) when the data
/// directory, a directory inside it, or a tablespace is among the DIRs; exit 0 and no checkpoint
/// for other DIRs and when no server answers; thaw is a no-op.
#[test]
fn postgresql_hook_checkpoints_only_its_own_data() {
    if !require_db(
        "postgresql_hook_checkpoints_only_its_own_data",
        Db::Postgres,
    ) {
        return;
    }
    let scratch = Scratch::new("dbw-pg-hook").unwrap();
    let m = scratch.join("m");
    let _fs = LoopFs::new("dbw-pg-hook", FsKind::Btrfs, 200, &m).unwrap();
    let data = m.join("pgdata");
    let srv = PgServer::init("snaptest-dbw-pg-hook", &data, &scratch.join("sock")).unwrap();
    let ts = scratch.join("tablespace");
    dir_for(&ts, "postgres").unwrap();
    srv.sql(&format!(
        "CREATE TABLESPACE snaptest_dbw LOCATION '{}'",
        s(&ts)
    ))
    .unwrap();
    let elsewhere = scratch.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let conf = srv
        .hook_conf(&scratch.join("snaptest-dbw-pg.conf"))
        .unwrap();
    let env = [("SNAPSHOT_POSTGRESQL_CONF", conf.as_path())];
    let hooks = HookGroups::default();
    let pg = hook("postgresql");
    let checkpoint = || {
        srv.sql("SELECT checkpoint_lsn FROM pg_control_checkpoint()")
            .unwrap()
    };
    let session = "snaptest-dbw-pg-hook";

    let lsn = checkpoint();
    let r = hooks.call(
        &scratch,
        &pg,
        "freeze",
        &[&elsewhere, &scratch.join("m2")],
        session,
        &env,
    );
    assert_eq!(
        r.code,
        Some(0),
        "not my data: nothing to do, quietly: {}",
        r.stderr
    );
    assert!(r.stderr.contains("is not in"), "{}", r.stderr);
    assert_eq!(checkpoint(), lsn, "no checkpoint for other directories");

    let mut lsn = lsn;
    for dirs in [
        vec![m.as_path()],
        vec![&elsewhere, &data.join("base")],
        vec![&ts],
    ] {
        let r = hooks.call(&scratch, &pg, "freeze", &dirs, session, &env);
        assert_eq!(r.code, Some(0), "{dirs:?}: {}", r.stderr);
        assert!(r.stderr.contains("CHECKPOINT on"), "{}", r.stderr);
        let now = checkpoint();
        assert_ne!(now, lsn, "{dirs:?}: a new checkpoint");
        lsn = now;
        let r = hooks.call(&scratch, &pg, "thaw", &dirs, session, &env);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
    }

    // No server behind the configured socket: "not my data", said clearly.
    let nobody = scratch.join("no-server");
    dir_for(&nobody, "postgres").unwrap();
    let bad = scratch.join("snaptest-dbw-pg-none.conf");
    std::fs::write(&bad, format!("PGHOST={}\nPGPORT={PG_PORT}\n", s(&nobody))).unwrap();
    let r = hooks.call(
        &scratch,
        &pg,
        "freeze",
        &[&m],
        session,
        &[("SNAPSHOT_POSTGRESQL_CONF", bad.as_path())],
    );
    assert_eq!(r.code, Some(0), "nothing to do: {}", r.stderr);
    assert!(
        r.stderr.contains("no PostgreSQL server reachable"),
        "{}",
        r.stderr
    );
    // A config file that is named but missing is an error, not "not my data".
    let r = hooks.call(
        &scratch,
        &pg,
        "freeze",
        &[&m],
        session,
        &[(
            "SNAPSHOT_POSTGRESQL_CONF",
            scratch.join("missing.conf").as_path(),
        )],
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert_eq!(checkpoint(), lsn);
}

// ---------------------------------------------------------------------------------------------
// MariaDB

/// `snapshot` with the mariadb hook over a busy server's filesystem: the view is taken under
/// FLUSH TABLES WITH READ LOCK, the lock is gone after the session, and the data directory
/// copied out of the view starts as a server whose InnoDB data is consistent, holds at least
/// what was committed before, and whose MyISAM table is clean and in step with the ledger.
#[test]
fn mariadb_view_of_a_busy_server_starts_and_is_consistent() {
    if !require_db(
        "mariadb_view_of_a_busy_server_starts_and_is_consistent",
        Db::Mariadb,
    ) {
        return;
    }
    let scratch = Scratch::new("dbw-maria-view").unwrap();
    let m = scratch.join("m");
    let _fs = LoopFs::new("dbw-maria-view", FsKind::Btrfs, 300, &m).unwrap();
    let data = m.join("mysql");
    let srv = MariaServer::init("snaptest-dbw-maria-view", &data, &scratch.join("sock")).unwrap();
    srv.sql(&mariadb_schema()).unwrap();
    let work = Workload::start(srv.client_cmd(), true);
    wait_for("50 transfers committed", Duration::from_secs(30), || {
        (srv.sql_u64("SELECT count(*) FROM bank.ledger").unwrap() >= 50).then_some(())
    });
    let before = srv.sql_u64("SELECT count(*) FROM bank.ledger").unwrap();

    let writers = writers_dir_with(&scratch, "mariadb");
    let hook_run = scratch.join("hook-run");
    let conf = srv
        .hook_conf(&scratch.join("snaptest-dbw-maria.conf"), &hook_run, 120)
        .unwrap();
    let copy = scratch.join("copy");
    let stderr = snapshot_and_copy(
        &scratch,
        &writers,
        &m,
        &data,
        &copy,
        &[("SNAPSHOT_MARIADB_CONF", s(&conf))],
    );
    assert!(
        stderr.contains("writer 10-mariadb: mariadb: FLUSH TABLES WITH READ LOCK on"),
        "the hook locked its server: {stderr}"
    );
    assert!(
        stderr.contains("writer 10-mariadb: mariadb: lock released"),
        "{stderr}"
    );
    assert_eq!(files_with(&hook_run, "mariadb-"), Vec::<String>::new());

    let restored =
        MariaServer::start("snaptest-dbw-maria-copy", &copy, &scratch.join("sock-copy")).unwrap();
    for (q, want) in invariant_queries("bank.ledger", "bank.acct") {
        assert_eq!(restored.sql(&q).unwrap(), want, "{q}");
    }
    let in_copy = restored
        .sql_u64("SELECT count(*) FROM bank.ledger")
        .unwrap();
    assert!(
        in_copy >= before,
        "the view lost commits: {in_copy} < {before}"
    );
    // MyISAM was flushed and closed under the lock: clean, and one row per committed transfer
    // (the client may have been stopped between a COMMIT and its MyISAM row).
    assert_eq!(
        restored.sql("CHECK TABLE bank.events").unwrap(),
        "bank.events\tcheck\tstatus\tOK"
    );
    let events = restored
        .sql_u64("SELECT count(*) FROM bank.events")
        .unwrap();
    assert!(
        in_copy == events || in_copy == events + 1,
        "ledger {in_copy}, events {events}"
    );
    wait_for("writes after the snapshot", Duration::from_secs(30), || {
        (srv.sql_u64("SELECT count(*) FROM bank.ledger").unwrap() > in_copy).then_some(())
    });
    let sent = work.stop();
    let live = srv.sql_u64("SELECT count(*) FROM bank.ledger").unwrap();
    eprintln!("test: {before} committed before the session, {in_copy} in the view, {live} at the end ({sent} sent)");
    assert_eq!(live, sent);
}

/// Spawns `INSERT INTO bank.x` in its own client; returns it once the server shows it waiting
/// for the global read lock.
fn blocked_insert(srv: &MariaServer, value: u32) -> Child {
    let child = srv
        .client_cmd()
        .arg("-e")
        .arg(format!("INSERT INTO bank.x VALUES ({value})"))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        "the insert waiting for the lock",
        Duration::from_secs(10),
        || {
            let n = srv
                .sql(&format!(
                    "SELECT count(*) FROM information_schema.processlist
                  WHERE info = 'INSERT INTO bank.x VALUES ({value})' AND state LIKE 'Waiting for%'"
                ))
                .unwrap();
            (n == "1").then_some(())
        },
    );
    child
}

/// A write succeeds at once (it would wait out lock_wait_timeout behind a read lock).
fn assert_writable(srv: &MariaServer, value: u32) {
    let t = Instant::now();
    srv.sql(&format!(
        "SET SESSION lock_wait_timeout = 3; INSERT INTO bank.x VALUES ({value})"
    ))
    .expect("a write with no lock held");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

/// The mariadb hook alone: freeze over other DIRs or with no server is "not my data" and takes
/// no lock; a lock that cannot be had within MARIADB_LOCK_WAIT fails freeze (2) and leaves
/// nothing; freeze over the data returns with the lock held, a write then waits until thaw and
/// completes right after it; thaw is idempotent; a freeze whose thaw never comes is released
/// by the watchdog, which the late thaw reports.
#[test]
fn mariadb_hook_lock_thaw_and_watchdog() {
    if !require_db("mariadb_hook_lock_thaw_and_watchdog", Db::Mariadb) {
        return;
    }
    let scratch = Scratch::new("dbw-maria-hook").unwrap();
    let m = scratch.join("m");
    let _fs = LoopFs::new("dbw-maria-hook", FsKind::Btrfs, 200, &m).unwrap();
    let data = m.join("mysql");
    let srv = MariaServer::init("snaptest-dbw-maria-hook", &data, &scratch.join("sock")).unwrap();
    srv.sql("CREATE DATABASE bank; CREATE TABLE bank.x (a INT) ENGINE=InnoDB")
        .unwrap();
    let run_dir = scratch.join("hook-run");
    let conf = srv
        .hook_conf(&scratch.join("snaptest-dbw-maria.conf"), &run_dir, 120)
        .unwrap();
    let env = [("SNAPSHOT_MARIADB_CONF", conf.as_path())];
    let hooks = HookGroups::default();
    let maria = hook("mariadb");
    let elsewhere = scratch.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();

    // Not my data: exit 0 (nothing to do), no helper, no lock.
    let session = "snaptest-dbw-s1";
    let r = hooks.call(&scratch, &maria, "freeze", &[&elsewhere], session, &env);
    assert_eq!(r.code, Some(0), "nothing to do: {}", r.stderr);
    assert!(r.stderr.contains("is not in"), "{}", r.stderr);
    assert_eq!(files_with(&run_dir, session), Vec::<String>::new());
    assert_writable(&srv, 1);
    let r = hooks.call(&scratch, &maria, "thaw", &[&elsewhere], session, &env);
    assert_eq!(r.code, Some(0), "{}", r.stderr);

    // No server behind the configured socket.
    let bad = scratch.join("snaptest-dbw-maria-none.conf");
    std::fs::write(
        &bad,
        format!(
            "MARIADB_SOCKET={}\nMARIADB_RUN_DIR={}\n",
            s(&scratch.join("none.sock")),
            s(&run_dir)
        ),
    )
    .unwrap();
    let r = hooks.call(
        &scratch,
        &maria,
        "freeze",
        &[&m],
        session,
        &[("SNAPSHOT_MARIADB_CONF", bad.as_path())],
    );
    assert_eq!(r.code, Some(0), "nothing to do: {}", r.stderr);
    assert!(
        r.stderr.contains("no MariaDB/MySQL server reachable"),
        "{}",
        r.stderr
    );
    assert_eq!(files_with(&run_dir, session), Vec::<String>::new());

    // The lock cannot be had in time (a session holds a table write lock): freeze gives up
    // after MARIADB_LOCK_WAIT, exit 2, and leaves no helper and no lock behind.
    let session = "snaptest-dbw-s1b";
    let mut locker = srv
        .client_cmd()
        .arg("-e")
        .arg("LOCK TABLES bank.x WRITE; SELECT SLEEP(3); UNLOCK TABLES")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the table lock", Duration::from_secs(10), || {
        let n = srv
            .sql("SELECT count(*) FROM information_schema.processlist WHERE info LIKE 'SELECT SLEEP(3)%'")
            .unwrap();
        (n == "1").then_some(())
    });
    let short = scratch.join("snaptest-dbw-maria-short.conf");
    std::fs::write(
        &short,
        format!(
            "MARIADB_SOCKET={}\nMARIADB_RUN_DIR={}\nMARIADB_LOCK_WAIT=1\n",
            s(&srv.socket()),
            s(&run_dir)
        ),
    )
    .unwrap();
    let short_env = [("SNAPSHOT_MARIADB_CONF", short.as_path())];
    let r = hooks.call(&scratch, &maria, "freeze", &[&m], session, &short_env);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("Lock wait timeout"), "{}", r.stderr);
    assert_eq!(files_with(&run_dir, session), Vec::<String>::new());
    assert!(wait_timeout(&mut locker, Duration::from_secs(20)).success());
    assert_writable(&srv, 10);
    let r = hooks.call(&scratch, &maria, "thaw", &[&m], session, &short_env);
    assert_eq!(r.code, Some(0), "{}", r.stderr);

    // Freeze over the data (a DIR inside the data directory counts too): the lock is held when
    // freeze returns; a write waits; thaw releases it and the write completes right after.
    let session = "snaptest-dbw-s2";
    let r = hooks.call(
        &scratch,
        &maria,
        "freeze",
        &[&data.join("bank")],
        session,
        &env,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.took < Duration::from_secs(10), "freeze took {:?}", r.took);
    let pidfile = run_dir.join(format!("mariadb-{session}.pid"));
    let helper: u32 = std::fs::read_to_string(&pidfile)
        .expect("helper pid file")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(proc_alive(helper), "helper {helper} holds the lock");
    let mut insert = blocked_insert(&srv, 2);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        insert.try_wait().unwrap().is_none(),
        "the insert waits while frozen"
    );
    let r = hooks.call(
        &scratch,
        &maria,
        "thaw",
        &[&data.join("bank")],
        session,
        &env,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.took < Duration::from_secs(5), "thaw took {:?}", r.took);
    let t = Instant::now();
    let status = wait_timeout(&mut insert, Duration::from_secs(10));
    assert!(
        status.success(),
        "the insert completes after thaw: {status}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "{:?} after thaw",
        t.elapsed()
    );
    assert!(!proc_alive(helper), "helper {helper} is gone after thaw");
    assert_eq!(files_with(&run_dir, session), Vec::<String>::new());
    assert_writable(&srv, 3);
    // Thaw again: nothing to release, still fine.
    let r = hooks.call(&scratch, &maria, "thaw", &[&m], session, &env);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stderr.contains("nothing to release"), "{}", r.stderr);

    // A thaw that never comes: the watchdog releases the lock by itself.
    let session = "snaptest-dbw-s3";
    let dog_conf = srv
        .hook_conf(&scratch.join("snaptest-dbw-maria-dog.conf"), &run_dir, 3)
        .unwrap();
    let dog_env = [("SNAPSHOT_MARIADB_CONF", dog_conf.as_path())];
    let r = hooks.call(&scratch, &maria, "freeze", &[&m], session, &dog_env);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let frozen = Instant::now();
    let mut insert = blocked_insert(&srv, 4);
    let status = wait_timeout(&mut insert, Duration::from_secs(20));
    let waited = frozen.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(10),
        "released by the 3 s watchdog after {waited:?}"
    );
    assert_writable(&srv, 5);
    wait_for("the helper to go", Duration::from_secs(5), || {
        files_with(&run_dir, &format!("{session}.pid"))
            .is_empty()
            .then_some(())
    });
    let r = hooks.call(&scratch, &maria, "thaw", &[&m], session, &dog_env);
    assert_eq!(
        r.code,
        Some(3),
        "a late thaw reports the watchdog: {}",
        r.stderr
    );
    assert!(
        r.stderr.contains("released by the watchdog"),
        "{}",
        r.stderr
    );
    let r = hooks.call(&scratch, &maria, "thaw", &[&m], session, &dog_env);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(files_with(&run_dir, "mariadb-"), Vec::<String>::new());
    assert_eq!(srv.sql_u64("SELECT count(*) FROM bank.x").unwrap(), 6);
}

/// Both hooks where /dev/fd does not exist (an initramfs, some containers; found in the VM
/// guest, whose init makes none): bash's process substitution fails there, so the hooks use
/// none. Control: in the same namespace a script with process substitution fails. MariaDB:
/// freeze holds the lock (a write waits) and thaw releases it; PostgreSQL: freeze checkpoints.
#[test]
fn hooks_work_without_dev_fd() {
    if !require_db("hooks_work_without_dev_fd", Db::Mariadb)
        || !require_db("hooks_work_without_dev_fd", Db::Postgres)
    {
        return;
    }
    let scratch = Scratch::new("dbw-nofd").unwrap();
    let hooks = HookGroups::without_dev_fd();
    let probe = scratch.join("probe");
    script(
        &probe,
        "[ ! -e /dev/fd ] || exit 3\nexec bash -c 'cat <(echo x)'",
    );
    let r = hooks.call(&scratch, &probe, "freeze", &[], "snaptest-dbw-probe", &[]);
    assert!(
        r.code != Some(0) && r.code != Some(3) && r.stderr.contains("/dev/fd"),
        "control: no /dev/fd, and process substitution fails ({:?}): {}",
        r.code,
        r.stderr
    );

    let m = scratch.join("m");
    let _fs = LoopFs::new("dbw-nofd", FsKind::Btrfs, 300, &m).unwrap();
    let data = m.join("mysql");
    let srv = MariaServer::init("snaptest-dbw-nofd-maria", &data, &scratch.join("sock")).unwrap();
    srv.sql("CREATE DATABASE bank; CREATE TABLE bank.x (a INT) ENGINE=InnoDB")
        .unwrap();
    let run_dir = scratch.join("hook-run");
    let conf = srv
        .hook_conf(&scratch.join("snaptest-dbw-nofd.conf"), &run_dir, 120)
        .unwrap();
    let env = [("SNAPSHOT_MARIADB_CONF", conf.as_path())];
    let maria = hook("mariadb");
    let session = "snaptest-dbw-nofd";
    let r = hooks.call(&scratch, &maria, "freeze", &[&m], session, &env);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr.contains("FLUSH TABLES WITH READ LOCK on"),
        "{}",
        r.stderr
    );
    let mut insert = blocked_insert(&srv, 1);
    let r = hooks.call(&scratch, &maria, "thaw", &[&m], session, &env);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stderr.contains("lock released"), "{}", r.stderr);
    assert!(wait_timeout(&mut insert, Duration::from_secs(10)).success());
    assert_eq!(files_with(&run_dir, session), Vec::<String>::new());

    let pgdata = m.join("pgdata");
    let pg = PgServer::init("snaptest-dbw-nofd-pg", &pgdata, &scratch.join("pgsock")).unwrap();
    let conf = pg
        .hook_conf(&scratch.join("snaptest-dbw-nofd-pg.conf"))
        .unwrap();
    let env = [("SNAPSHOT_POSTGRESQL_CONF", conf.as_path())];
    let r = hooks.call(
        &scratch,
        &hook("postgresql"),
        "freeze",
        &[&m],
        session,
        &env,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stderr.contains("CHECKPOINT on"), "{}", r.stderr);
}
