//! The stall a database's own clients see (`--db`): a real MariaDB server and a real
//! PostgreSQL cluster, each with its data on a btrfs of its own on a loop device (with `--lvm`:
//! an ext4 on a classic LV, in the guest), under a steady workload of one client committing
//! one-row INSERTs at a fixed rate (each commit fsynced). Per run, three windows, in an order
//! that rotates from run to run:
//!
//! - a **session**: the real binary with the shipped writer hook (`writers.d/mariadb`: FLUSH
//!   TABLES WITH READ LOCK until thaw; `writers.d/postgresql`: CHECKPOINT) over the data's
//!   filesystem, spawn → ready → [`HOLD`](super::HOLD) → stdin closed → exit;
//! - the same session **without hooks**: what the session itself costs the workload;
//! - the **floor**, the least that gives the same snapshot, for as long as the session took
//!   (its removal inside, as a session's teardown is inside the session's window):
//!   MariaDB — the bench's own client does FLUSH TABLES WITH READ LOCK, the raw snapshot (the
//!   btrfs ioctl, or `lvcreate --snapshot`), UNLOCK TABLES; PostgreSQL — the raw snapshot alone,
//!   no session.
//!
//! A commit's latency runs from when it was due (the fixed schedule), not from when it was
//! sent, so a client held up by a lock shows every commit it could not start (open loop, as a
//! steady application sees it). A commit counts for a window when it was due before the window
//! ended and done after it began. Reported: the longest commit per window (median over runs)
//! and the p99 of all commits in the windows, beside the floor's, and the p99 outside any window
//! as context.

use super::{drive_session, ms, session_command, SessionRun, Stat, Target};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use snapshot_core::sys::ioctl;
use snapshot_testkit::db::{self, Db, MariaServer, PgServer};
use snapshot_testkit::lvm::{lvm, LvFs, Vg};
use snapshot_testkit::{FsKind, LoopFs, Scratch};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Each server's own filesystem: a MariaDB data directory alone is ≈ 100 MB.
const FS_MB: u64 = 512;
/// A classic LVM snapshot's copy-on-write space: the workload's writes during one window.
const COW_MB: u64 = 64;
/// Between the windows of a run, so that one's after-effects (the checkpoint's writes, the
/// lock's backlog) are not counted in the next.
const GAP: Duration = Duration::from_millis(400);
/// Before the first run: the workload settles (first pages, first log flushes).
const WARM_UP: Duration = Duration::from_secs(2);

/// A database server of our own with its data on a filesystem of its own ([`Volume`]).
enum Server {
    Maria(MariaServer),
    Pg(PgServer),
}

/// Where a server's data lives, and how the floor snapshots it.
pub(super) enum Volume {
    /// A btrfs on a loop device: the raw snapshot is the ioctl.
    Btrfs(LoopFs),
    /// An ext4 on a classic LV of a VG on a loop file (device-mapper: in the guest): the raw
    /// snapshot is `lvcreate --snapshot`. The LV goes before its VG (held only to be dropped).
    Lvm { lv: LvFs, _vg: Vg },
}

impl Volume {
    /// A filesystem of [`FS_MB`] at `mount_point`: LVM when `lvm`, else btrfs.
    pub(super) fn new(
        backing_dir: &Path,
        name: &str,
        mount_point: &Path,
        lvm: bool,
    ) -> Result<Self> {
        if !lvm {
            let fs = LoopFs::new_in(backing_dir, name, FsKind::Btrfs, FS_MB, mount_point)?;
            return Ok(Self::Btrfs(fs));
        }
        let vg = Vg::on_loop_files(name, 1, FS_MB + 2 * COW_MB + 64)?;
        let lv = vg.classic_lv("data", FS_MB, FsKind::Ext4, mount_point)?;
        Ok(Self::Lvm { lv, _vg: vg })
    }

    fn mount_point(&self) -> &Path {
        match self {
            Self::Btrfs(fs) => &fs.mount_point,
            Self::Lvm { lv, .. } => &lv.mount_point,
        }
    }

    fn provider(&self) -> &'static str {
        match self {
            Self::Btrfs(_) => "btrfs",
            Self::Lvm { .. } => "LVM (classic, ext4)",
        }
    }

    fn raw_snapshot(&self) -> Result<RawSnapshot> {
        match self {
            Self::Btrfs(fs) => RawSnapshot::btrfs(&fs.mount_point),
            Self::Lvm { lv, .. } => RawSnapshot::lvm(lv),
        }
    }
}

/// One database's fixture: the filesystem, the server, and what a session needs.
pub(super) struct DbFixture {
    db: Db,
    /// Declared before `fs`: the server stops before its filesystem goes.
    server: Server,
    fs: Volume,
    writers: PathBuf,
    conf: PathBuf,
    target: PathBuf,
    runtime: PathBuf,
}

impl DbFixture {
    /// A filesystem ([`Volume`]), the server's data on it, the commit table, a writer
    /// directory holding only the shipped hook (from `hooks`), and the hook's configuration.
    pub(super) fn new(
        scratch: &Scratch,
        backing_dir: &Path,
        lvm: bool,
        hooks: &Path,
        db: Db,
    ) -> Result<Self> {
        if let Some(missing) = db::missing(db) {
            bail!("{db:?}: {missing}");
        }
        let name = hook_name(db);
        let base = scratch.join(format!("db-{name}"));
        let fs = Volume::new(
            backing_dir,
            &format!("bench-db-{name}"),
            &base.join("data"),
            lvm,
        )?;
        let data = fs.mount_point().join(name);
        let sock = base.join("sock");
        let server_name = format!("snaptest-bench-{name}");
        let server = match db {
            Db::Mariadb => {
                let s = MariaServer::init(&server_name, &data, &sock)?;
                s.sql("CREATE DATABASE bench; CREATE TABLE bench.commits (id BIGINT AUTO_INCREMENT PRIMARY KEY, v BIGINT NOT NULL) ENGINE=InnoDB")?;
                Server::Maria(s)
            }
            Db::Postgres => {
                let s = PgServer::init(&server_name, &data, &sock)?;
                s.sql("CREATE TABLE commits (id bigserial PRIMARY KEY, v bigint NOT NULL)")?;
                Server::Pg(s)
            }
        };
        let writers = base.join("writers");
        let target = base.join("view");
        let runtime = base.join("run");
        for d in [&writers, &target, &runtime] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let hook = hooks.join(name);
        if !hook.is_file() {
            bail!("no {name} hook in {}", hooks.display());
        }
        std::os::unix::fs::symlink(&hook, writers.join(format!("10-{name}")))
            .with_context(|| format!("linking {} into {}", hook.display(), writers.display()))?;
        let conf = base.join(format!("{name}.conf"));
        match &server {
            Server::Maria(s) => s.hook_conf(&conf, &base.join("hook-run"), 60)?,
            Server::Pg(s) => s.hook_conf(&conf)?,
        };
        Ok(Self {
            db,
            server,
            fs,
            writers,
            conf,
            target,
            runtime,
        })
    }

    /// A client fed statements on stdin, answering on stdout as each completes.
    fn client(&self) -> Result<Client> {
        let cmd = match &self.server {
            Server::Maria(s) => {
                let mut c = s.client_cmd();
                c.arg("--unbuffered");
                c
            }
            Server::Pg(s) => s.psql_cmd(),
        };
        Client::spawn(cmd)
    }

    /// One session over the data's filesystem, `hooked` with the shipped hook (else none); an
    /// error if the hook did not do its work (a hook that found nothing to do would make the
    /// figures meaningless).
    fn session(&self, bin: &Path, hooked: bool) -> Result<SessionRun> {
        let writers = hooked.then_some(self.writers.as_path());
        let mut cmd = session_command(
            bin,
            "-v",
            writers,
            &self.runtime,
            &self.target,
            &[self.fs.mount_point()],
        );
        cmd.env(conf_variable(self.db), &self.conf);
        let run = drive_session(cmd)?;
        if !hooked {
            return Ok(run);
        }
        let did = match self.db {
            Db::Mariadb => "mariadb: FLUSH TABLES WITH READ LOCK on",
            Db::Postgres => "postgresql: CHECKPOINT on",
        };
        if !run.lines.iter().any(|(_, l)| l.contains(did)) {
            bail!(
                "the {} hook did not do its work (no {did:?}):\n{}",
                hook_name(self.db),
                run.log()
            );
        }
        Ok(run)
    }

    /// The floor's work (see the module doc), the raw snapshot removed again before returning.
    fn floor(&self, admin: &mut Option<Client>) -> Result<()> {
        let snap = match admin {
            Some(a) => {
                a.query("FLUSH TABLES WITH READ LOCK")?;
                let snap = self.fs.raw_snapshot();
                a.query("UNLOCK TABLES")?;
                snap?
            }
            None => self.fs.raw_snapshot()?,
        };
        drop(snap);
        Ok(())
    }
}

/// The shipped hook's name, also the server's name on the command line (`--db-servers`).
pub(super) fn hook_name(db: Db) -> &'static str {
    match db {
        Db::Mariadb => "mariadb",
        Db::Postgres => "postgresql",
    }
}

fn conf_variable(db: Db) -> &'static str {
    match db {
        Db::Mariadb => "SNAPSHOT_MARIADB_CONF",
        Db::Postgres => "SNAPSHOT_POSTGRESQL_CONF",
    }
}

/// The floor's snapshot, removed on drop: a read-only btrfs snapshot of a mount's top
/// subvolume, or a classic LVM snapshot (`VG/NAME`).
enum RawSnapshot {
    Btrfs { dir: PathBuf, name: String },
    Lvm(String),
}

impl RawSnapshot {
    fn name() -> String {
        format!("snaptest-bench-db-{}", std::process::id())
    }

    fn btrfs(dir: &Path) -> Result<Self> {
        let name = format!(".{}", Self::name());
        ioctl::btrfs_snapshot_readonly(dir, dir, &name)
            .with_context(|| format!("raw snapshot {}/{name}", dir.display()))?;
        Ok(Self::Btrfs {
            dir: dir.to_owned(),
            name,
        })
    }

    fn lvm(lv: &LvFs) -> Result<Self> {
        let name = Self::name();
        let origin = format!("{}/{}", lv.vg, lv.lv);
        let size = format!("{COW_MB}M");
        let created = lvm(
            "lvcreate",
            &[
                "-y",
                "--snapshot",
                "--name",
                &name,
                "--size",
                &size,
                &origin,
            ],
        );
        // Named before the error is returned: a half-made snapshot is removed too.
        let snap = Self::Lvm(format!("{}/{name}", lv.vg));
        created.map(|_| snap)
    }
}

impl Drop for RawSnapshot {
    fn drop(&mut self) {
        match self {
            Self::Btrfs { dir, name } => {
                if let Err(e) = ioctl::btrfs_subvol_delete(dir, name) {
                    eprintln!("bench: deleting {}/{name}: {e}", dir.display());
                }
            }
            Self::Lvm(lv) => {
                if let Err(e) = lvm("lvremove", &["-f", "-y", lv]) {
                    eprintln!("bench: lvremove {lv}: {e:#}");
                }
            }
        }
    }
}

/// A SQL client over pipes: each statement is followed by a marker query, whose answer says
/// the statement is done (both clients flush their output after each query).
struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    seq: u64,
}

impl Client {
    fn spawn(mut cmd: Command) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {cmd:?}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("{cmd:?}: no pipes");
        };
        Ok(Self {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            seq: 0,
        })
    }

    /// Runs `sql` and waits until the client says it is done.
    fn query(&mut self, sql: &str) -> Result<()> {
        self.seq += 1;
        let n = self.seq;
        writeln!(self.stdin, "{sql};\nSELECT {n};").context("writing to the SQL client")?;
        let mut line = String::new();
        loop {
            line.clear();
            if self
                .stdout
                .read_line(&mut line)
                .context("reading the SQL client")?
                == 0
            {
                bail!("the SQL client ended during {sql:?}");
            }
            if line.trim() == n.to_string() {
                return Ok(());
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Killed, not sent end of input: a client stuck behind a lock would never read it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One commit: when it was due and when it was done, since the workload's start.
#[derive(Debug, Clone, Copy)]
struct Commit {
    due: Duration,
    done: Duration,
}

impl Commit {
    /// ms from due to done.
    fn latency(&self) -> f64 {
        ms(self.done.saturating_sub(self.due))
    }
}

/// The steady workload: one client committing one-row INSERTs every `interval`.
struct Workload {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Vec<Commit>>>>,
}

impl Workload {
    fn start(mut client: Client, epoch: Instant, interval: Duration, db: Db) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let table = match db {
            Db::Mariadb => "bench.commits",
            Db::Postgres => "commits",
        };
        let thread = std::thread::spawn(move || -> Result<Vec<Commit>> {
            let mut commits = Vec::new();
            let mut k: u32 = 0;
            while !flag.load(Ordering::Relaxed) {
                let due = interval * k;
                if let Some(wait) = due.checked_sub(epoch.elapsed()) {
                    std::thread::sleep(wait);
                }
                client.query(&format!("INSERT INTO {table} (v) VALUES ({k})"))?;
                commits.push(Commit {
                    due,
                    done: epoch.elapsed(),
                });
                k += 1;
            }
            Ok(commits)
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Result<Vec<Commit>> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => bail!("the workload thread panicked"),
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(Ok(Err(e))) = self.thread.take().map(JoinHandle::join) {
            eprintln!("bench: workload: {e:#}");
        }
    }
}

/// A measured window, since the workload's start.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Duration,
    end: Duration,
}

impl Window {
    fn around(epoch: Instant, work: impl FnOnce() -> Result<()>) -> Result<Self> {
        let start = epoch.elapsed();
        work()?;
        Ok(Self {
            start,
            end: epoch.elapsed(),
        })
    }

    fn len(&self) -> Duration {
        self.end - self.start
    }

    fn holds(&self, c: &Commit) -> bool {
        c.due < self.end && c.done > self.start
    }
}

/// What happens in a window.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// A session with the shipped hook.
    Hooked,
    /// A session without writer hooks: what the session itself costs the workload.
    Bare,
    /// The floor's work (see the module doc), then idle for as long as the last session.
    Floor,
}

/// The windows of the recorded runs, and the hooked sessions' `-v` frozen windows and
/// snapshot creation times.
#[derive(Default)]
struct Windows {
    hooked: Vec<Window>,
    bare: Vec<Window>,
    floor: Vec<Window>,
    frozen: Vec<f64>,
    creation: Vec<f64>,
}

/// One window of `kind`; for a hooked session also its `-v` (frozen window, snapshot
/// creation).
fn window(
    fx: &DbFixture,
    bin: &Path,
    admin: &mut Option<Client>,
    epoch: Instant,
    kind: Kind,
    span: Duration,
) -> Result<(Window, Option<(f64, f64)>)> {
    let mut frozen = None;
    let w = Window::around(epoch, || {
        if kind == Kind::Floor {
            let t = Instant::now();
            fx.floor(admin)?;
            if let Some(rest) = span.checked_sub(t.elapsed()) {
                std::thread::sleep(rest);
            }
        } else {
            let hooked = kind == Kind::Hooked;
            let run = fx.session(bin, hooked)?;
            if hooked {
                frozen = Some(run.frozen_log()?);
            }
        }
        Ok(())
    })?;
    Ok((w, frozen))
}

/// One database measured: `runs` rounds of a hooked session, a bare one and the floor under
/// the workload, each round in another order (one round more first, unrecorded).
pub(super) fn measure(fx: &DbFixture, bin: &Path, runs: u32, rate: u32) -> Result<DbConfig> {
    let interval = Duration::from_secs(1) / rate;
    let mut admin = match fx.db {
        Db::Mariadb => Some(fx.client()?),
        Db::Postgres => None,
    };
    let epoch = Instant::now();
    let work = Workload::start(fx.client()?, epoch, interval, fx.db);
    std::thread::sleep(WARM_UP);
    let mut ws = Windows::default();
    // The floor lasts as long as the last hooked session, so both hold as many commits.
    let mut last = Duration::from_millis(200);
    let mut order = [Kind::Hooked, Kind::Floor, Kind::Bare];
    for run in 0..=runs {
        for kind in order {
            let (w, frozen) = window(fx, bin, &mut admin, epoch, kind, last)?;
            std::thread::sleep(GAP);
            if kind == Kind::Hooked {
                last = w.len();
            }
            if run == 0 {
                continue;
            }
            match kind {
                Kind::Hooked => ws.hooked.push(w),
                Kind::Bare => ws.bare.push(w),
                Kind::Floor => ws.floor.push(w),
            }
            if let Some((window, creation)) = frozen {
                ws.frozen.push(window);
                ws.creation.push(creation);
            }
        }
        order.rotate_left(1);
    }
    let commits = work.finish()?;
    Ok(DbConfig::new(fx.db, fx.fs.provider(), rate, &commits, &ws))
}

/// What the workload saw in the windows of one kind, in ms.
#[derive(Debug, Serialize)]
struct WindowStats {
    window_ms: Stat,
    /// The longest commit of each window.
    longest_commit_ms: Stat,
    /// Of all commits in these windows.
    p99_ms: f64,
    commits: usize,
}

impl WindowStats {
    fn of(commits: &[Commit], ws: &[Window]) -> Self {
        let longest: Vec<f64> = ws
            .iter()
            .map(|w| {
                commits
                    .iter()
                    .filter(|c| w.holds(c))
                    .map(Commit::latency)
                    .fold(0.0, f64::max)
            })
            .collect();
        let within: Vec<f64> = commits
            .iter()
            .filter(|c| ws.iter().any(|w| w.holds(c)))
            .map(Commit::latency)
            .collect();
        let spans: Vec<f64> = ws.iter().map(|w| ms(w.len())).collect();
        Self {
            window_ms: Stat::of(&spans),
            longest_commit_ms: Stat::of(&longest),
            p99_ms: percentile(&within, 0.99),
            commits: within.len(),
        }
    }
}

/// The results of one database.
#[derive(Debug, Serialize)]
pub(super) struct DbConfig {
    #[serde(skip)]
    db: Db,
    server: &'static str,
    provider: &'static str,
    /// The floor's work.
    floor: &'static str,
    commits_per_second: u32,
    commits: usize,
    /// Sessions with the shipped writer hook.
    session: WindowStats,
    /// Sessions without writer hooks.
    session_no_hook: WindowStats,
    floor_work: WindowStats,
    /// The hooked sessions' `-v` frozen window (first writer freeze → last thaw), ms.
    session_frozen_window_ms: Stat,
    /// The hooked sessions' `-v` snapshot creation (inside the frozen window), ms.
    session_snapshot_creation_ms: Stat,
    /// Commits in no window (after the first recorded one began): the workload's own latency.
    quiet_p99_ms: f64,
    quiet_longest_commit_ms: f64,
}

impl DbConfig {
    fn new(db: Db, provider: &'static str, rate: u32, commits: &[Commit], ws: &Windows) -> Self {
        let all = || ws.hooked.iter().chain(&ws.bare).chain(&ws.floor);
        let first = all().map(|w| w.start).min().unwrap_or_default();
        let quiet: Vec<f64> = commits
            .iter()
            .filter(|c| c.due >= first && !all().any(|w| w.holds(c)))
            .map(Commit::latency)
            .collect();
        Self {
            db,
            server: match db {
                Db::Mariadb => "MariaDB",
                Db::Postgres => "PostgreSQL",
            },
            provider,
            floor: match db {
                Db::Mariadb => "FLUSH TABLES WITH READ LOCK + raw snapshot + UNLOCK TABLES",
                Db::Postgres => "raw snapshot, no session",
            },
            commits_per_second: rate,
            commits: commits.len(),
            session: WindowStats::of(commits, &ws.hooked),
            session_no_hook: WindowStats::of(commits, &ws.bare),
            floor_work: WindowStats::of(commits, &ws.floor),
            session_frozen_window_ms: Stat::of(&ws.frozen),
            session_snapshot_creation_ms: Stat::of(&ws.creation),
            quiet_p99_ms: percentile(&quiet, 0.99),
            quiet_longest_commit_ms: quiet.iter().copied().fold(0.0, f64::max),
        }
    }

    /// MariaDB: the longest commit against the floor's (≤ 1.3×); PostgreSQL: p99 against the
    /// floor's (≤ 1.5×).
    pub(super) fn targets(&self) -> Vec<Target> {
        let (s, f) = (&self.session, &self.floor_work);
        let (what, value, limit) = if let Db::Mariadb = self.db {
            (
                "longest commit stall, session / FTWRL + raw snapshot",
                s.longest_commit_ms.median / f.longest_commit_ms.median,
                1.3,
            )
        } else {
            (
                "p99 commit latency, session / raw snapshot only",
                s.p99_ms / f.p99_ms,
                1.5,
            )
        };
        vec![Target {
            what: format!("{} on {}: {what}", self.server, self.provider),
            value,
            limit: Some(limit),
            met: Some(value <= limit),
        }]
    }

    pub(super) fn table(&self, o: &mut String) {
        use std::fmt::Write;
        let st = |s: &Stat| format!("{:.1} ({:.1}–{:.1})", s.median, s.min, s.max);
        let _ = writeln!(
            o,
            "\n{} on {}: one client committing {} one-row INSERTs/s; latency from when each was \
             due\n  floor: {}",
            self.server, self.provider, self.commits_per_second, self.floor
        );
        let _ = writeln!(
            o,
            "  {:<26} {:>20} {:>20}  {:>20} {:>7}",
            "measure", "session ms", "session, no hook", "floor ms", "ratio"
        );
        let (s, b, f) = (&self.session, &self.session_no_hook, &self.floor_work);
        let mut row = |what: &str, s: String, b: String, f: String, ratio: f64| {
            let _ = writeln!(o, "  {what:<26} {s:>20} {b:>20}  {f:>20} {ratio:>6.2}x");
        };
        // The session's, the bare session's and the floor's figure; the ratio session / floor.
        let mut stat_row = |what: &str, pick: fn(&WindowStats) -> &Stat| {
            let [s, b, f] = [s, b, f].map(pick);
            row(what, st(s), st(b), st(f), s.median / f.median);
        };
        stat_row("window", |w| &w.window_ms);
        stat_row("longest commit per window", |w| &w.longest_commit_ms);
        row(
            "p99 commit in the windows",
            format!("{:.1}", s.p99_ms),
            format!("{:.1}", b.p99_ms),
            format!("{:.1}", f.p99_ms),
            s.p99_ms / f.p99_ms,
        );
        let _ = writeln!(
            o,
            "  hooked session (-v): frozen window {}, snapshot creation {}; commits in the \
             windows: {}, {}, {}; outside them: p99 {:.1}, longest {:.1} ({} commits in all)",
            st(&self.session_frozen_window_ms),
            st(&self.session_snapshot_creation_ms),
            s.commits,
            b.commits,
            f.commits,
            self.quiet_p99_ms,
            self.quiet_longest_commit_ms,
            self.commits
        );
    }
}

/// The `q` quantile (nearest rank) of `xs`; NaN when empty.
fn percentile(xs: &[f64], q: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}
