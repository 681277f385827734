//! The concurrent writers. Each keeps an invariant that any point-in-time view of its files
//! must satisfy ([`crate::invariants`] checks them), and does what a careful application does
//! for crash consistency (one `write` per record, `fsync` before `rename`), so that a violation
//! in a snapshot is the snapshot's fault, never the writer's.
//!
//! Every writer counts its operations twice: `started` just before an operation touches a file,
//! `completed` once it returned. An operation completed before a session started must be in
//! the view (the *floor*); one started after the view was ready must not (the *ceiling*).
//!
//! The file names are chosen so that a copy in name order, first filesystem then second, reads
//! the A side of the cross-filesystem pairs first and their B side last: a live copy (the bind
//! negative control) then spends as long as possible between the two reads.

use anyhow::{bail, Context, Result};
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The writers, in the order a copy reads their files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Workload {
    /// A on the first filesystem, B on the second; pauses between pairs on a `freeze` hook.
    PairHook,
    /// Same as `PairHook`, without the hook: cross-filesystem atomicity of the snapshots alone.
    PairNoHook,
    /// Append-only log, one fsync'd record per write, rotated in segments.
    Log,
    /// SQLite in WAL mode: transfers between accounts.
    Sqlite,
    /// A and B on the same (second) filesystem, no hook: crash consistency of one snapshot.
    PairLocal,
    /// Files replaced by write temp → fsync → rename.
    Rename,
}

impl Workload {
    pub const ALL: [Workload; 6] = [
        Workload::PairHook,
        Workload::PairNoHook,
        Workload::Log,
        Workload::Sqlite,
        Workload::PairLocal,
        Workload::Rename,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::PairHook => "pair-hook",
            Workload::PairNoHook => "pair-nohook",
            Workload::Log => "log",
            Workload::Sqlite => "sqlite",
            Workload::PairLocal => "pair-local",
            Workload::Rename => "rename",
        }
    }
}

/// Where the workloads live: the roots of the two filesystems (live, or a copy of the view).
#[derive(Debug, Clone)]
pub struct Roots {
    pub fs1: PathBuf,
    pub fs2: PathBuf,
}

/// Paths relative to [`Roots`] (the numeric prefixes fix the copy order, see the module doc).
pub mod layout {
    /// fs1: A of the hooked cross-filesystem pair.
    pub const PAIR_HOOK_A: &str = "10-pair-hook/pair-a";
    /// fs1: A of the unhooked cross-filesystem pair.
    pub const PAIR_NOHOOK_A: &str = "20-pair-nohook/pair-a";
    /// fs1: log segments `log-NNNNNNNN`.
    pub const LOG_DIR: &str = "30-log";
    /// fs1: `bank.db` and its `-wal`.
    pub const SQLITE_DIR: &str = "40-sqlite";
    pub const SQLITE_DB: &str = "bank.db";
    /// fs2: `pair-a` and `pair-b` of the same-filesystem pair.
    pub const PAIR_LOCAL_DIR: &str = "10-pair-local";
    /// fs2: `file-NN`, replaced by rename.
    pub const RENAME_DIR: &str = "20-renamed";
    /// fs2: B of the unhooked cross-filesystem pair.
    pub const PAIR_NOHOOK_B: &str = "80-pair-nohook/pair-b";
    /// fs2: B of the hooked cross-filesystem pair.
    pub const PAIR_HOOK_B: &str = "90-pair-hook/pair-b";
}

/// Files in the control directory through which the writer hook pauses [`Workload::PairHook`]:
/// the hook writes the session id to `pause`; the writer, between two pairs, answers with the
/// same id in `paused` and waits until `pause` is gone (thaw) or names another session.
pub const PAUSE_REQUEST: &str = "pause";
pub const PAUSE_ACK: &str = "paused";

/// FNV-1a, 64 bits: the per-record checksum (detects corruption; no adversary here).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// splitmix64: deterministic pseudo-random content, so a checker can recompute what a record
/// or file of a given sequence number must hold.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

// ---- log ---------------------------------------------------------------------------------

/// Fixed-size records, so that a record never straddles a page (4096 is a multiple) and a torn
/// tail is recognisable by length.
pub const RECORD_LEN: usize = 64;
/// Records per segment (256 KiB): keeps the log, and each cycle's copy of it, small.
pub const SEGMENT_RECORDS: u64 = 4096;
const PAYLOAD_LEN: usize = 29;

/// Record `seq` (1-based): `SEQ(16 hex) PAYLOAD(29) SUM(16 hex)\n`, the checksum over
/// everything before the second space.
pub fn log_record(seq: u64) -> [u8; RECORD_LEN] {
    let mut r = [0u8; RECORD_LEN];
    r[..16].copy_from_slice(format!("{seq:016x}").as_bytes());
    r[16] = b' ';
    let mut x = mix(seq);
    for b in &mut r[17..17 + PAYLOAD_LEN] {
        *b = b'a' + (x % 26) as u8;
        x = x / 26 + u64::from(*b);
    }
    r[46] = b' ';
    let sum = fnv1a(&r[..46]);
    r[47..63].copy_from_slice(format!("{sum:016x}").as_bytes());
    r[63] = b'\n';
    r
}

/// Segment `n` holds records `n * SEGMENT_RECORDS + 1 ..= (n + 1) * SEGMENT_RECORDS`.
pub fn segment_name(n: u64) -> String {
    format!("log-{n:08}")
}

fn run_log(dir: &Path, stop: &AtomicBool, p: &Progress) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir_handle = File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    let mut file: Option<File> = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let next = seq + 1;
        let segment = (next - 1) / SEGMENT_RECORDS;
        if (next - 1).is_multiple_of(SEGMENT_RECORDS) {
            let path = dir.join(segment_name(segment));
            file = Some(
                File::options()
                    .append(true)
                    .create_new(true)
                    .open(&path)
                    .with_context(|| format!("creating {}", path.display()))?,
            );
            // The new name must be durable before records land in it.
            dir_handle
                .sync_all()
                .context("fsync of the log directory")?;
            if segment >= 2 {
                let old = dir.join(segment_name(segment - 2));
                fs::remove_file(&old).with_context(|| format!("removing {}", old.display()))?;
            }
        }
        let f = file.as_mut().expect("a segment is open");
        p.start(next);
        f.write_all(&log_record(next))
            .context("appending to the log")?;
        f.sync_data().context("fsync of the log")?;
        p.complete(next);
        seq = next;
    }
    Ok(())
}

// ---- pairs -------------------------------------------------------------------------------

/// A of generation `gen`: `gen=G value=V sum=S\n`, S the checksum of what precedes ` sum=`.
pub fn pair_a(gen: u64) -> String {
    let body = format!("gen={gen} value={:016x}", mix(gen));
    format!("{body} sum={:016x}\n", fnv1a(body.as_bytes()))
}

/// B of generation `gen`, derived from A: `gen=G a=H\n`, H the checksum of A's whole content.
pub fn pair_b(gen: u64) -> String {
    format!("gen={gen} a={:016x}\n", fnv1a(pair_a(gen).as_bytes()))
}

/// Atomic replacement, crash-safe: temp file, fsync, rename, fsync of the directory (so that
/// A's new name is durable before B is touched).
fn replace(path: &Path, content: &[u8], sync_dir: bool) -> Result<()> {
    let name = path.file_name().context("a file name")?.to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(content)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_data()
        .with_context(|| format!("fsync of {}", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    if sync_dir {
        let parent = path.parent().context("a parent")?;
        File::open(parent)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("fsync of {}", parent.display()))?;
    }
    Ok(())
}

fn run_pair(a: &Path, b: &Path, ctl: Option<&Path>, stop: &AtomicBool, p: &Progress) -> Result<()> {
    for f in [a, b] {
        let d = f.parent().context("a parent")?;
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut acked: Option<String> = None;
    let mut gen = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // The top of the loop is the consistent point: A and B hold the same generation.
        if let Some(ctl) = ctl {
            if honour_pause(ctl, stop, &mut acked)? {
                continue;
            }
        }
        gen += 1;
        p.start(gen);
        replace(a, pair_a(gen).as_bytes(), true)?;
        replace(b, pair_b(gen).as_bytes(), true)?;
        p.complete(gen);
    }
    Ok(())
}

/// When the hook asks (a session id in `pause` not answered yet), acknowledges and waits until
/// the request is withdrawn or replaced. True when it paused.
fn honour_pause(ctl: &Path, stop: &AtomicBool, acked: &mut Option<String>) -> Result<bool> {
    let request = ctl.join(PAUSE_REQUEST);
    let Some(id) = read_request(&request) else {
        return Ok(false);
    };
    if acked.as_deref() == Some(id.as_str()) {
        return Ok(false);
    }
    let tmp = ctl.join(format!(".{PAUSE_ACK}.tmp"));
    fs::write(&tmp, format!("{id}\n")).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, ctl.join(PAUSE_ACK)).context("acknowledging the pause")?;
    while !stop.load(Ordering::Relaxed) && read_request(&request).as_deref() == Some(id.as_str()) {
        std::thread::sleep(Duration::from_micros(200));
    }
    *acked = Some(id);
    Ok(true)
}

fn read_request(path: &Path) -> Option<String> {
    let s = fs::read_to_string(path).ok()?;
    let id = s.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

// ---- rename ------------------------------------------------------------------------------

/// Files the rename writer cycles through (`file-00` …).
pub const RENAME_SLOTS: u64 = 16;
const RENAME_MAX_BODY: u64 = 64 * 1024;

pub fn rename_slot_name(slot: u64) -> String {
    format!("file-{slot:02}")
}

/// Generation `gen` (1-based) goes to slot `(gen - 1) % RENAME_SLOTS`: a header line
/// `slot=S gen=G len=L sum=C\n`, then L pseudo-random bytes (1 B to 64 KiB, so that a file
/// spans pages and extents and a torn copy is possible), C their checksum.
pub fn rename_content(gen: u64) -> Vec<u8> {
    let slot = (gen - 1) % RENAME_SLOTS;
    let len = 1 + mix(gen) % RENAME_MAX_BODY;
    let mut body = Vec::with_capacity(len as usize);
    let mut x = gen;
    while (body.len() as u64) < len {
        x = mix(x);
        body.extend_from_slice(&x.to_le_bytes());
    }
    body.truncate(len as usize);
    let mut out = format!(
        "slot={slot} gen={gen} len={len} sum={:016x}\n",
        fnv1a(&body)
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

fn run_rename(dir: &Path, stop: &AtomicBool, p: &Progress) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut gen = 0u64;
    while !stop.load(Ordering::Relaxed) {
        gen += 1;
        let slot = (gen - 1) % RENAME_SLOTS;
        p.start(gen);
        replace(
            &dir.join(rename_slot_name(slot)),
            &rename_content(gen),
            false,
        )?;
        p.complete(gen);
    }
    Ok(())
}

// ---- sqlite ------------------------------------------------------------------------------

// `accounts(id, balance, opening)` and `ledger(id, src, dst, amount, memo)`, `ledger.id` the
// transfer number. In every committed state: the balances add up to ACCOUNTS ×
// INITIAL_BALANCE, the ledger ids are contiguous up to the last transfer, and each balance is
// its opening balance plus what the ledger says it received minus what it sent.

pub const ACCOUNTS: i64 = 64;
pub const INITIAL_BALANCE: i64 = 1000;
/// The ledger keeps the last `LEDGER_KEEP` transfers, pruned every `LEDGER_PRUNE_EVERY`
/// (small in unit tests, so that they see pruning quickly).
const LEDGER_KEEP: u64 = if cfg!(test) { 40 } else { 4000 };
const LEDGER_PRUNE_EVERY: u64 = if cfg!(test) { 10 } else { 1000 };

fn run_sqlite(dir: &Path, stop: &AtomicBool, p: &Progress) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(layout::SQLITE_DB);
    let mut conn =
        Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
    // Exclusive locking, set before WAL mode: the wal-index lives in heap memory instead of an
    // mmap'd `-shm` file. A write fault on that mapping when the filesystem is full is a
    // SIGBUS that kills the whole harness; the WAL and the database, which a snapshot must get
    // right, are the same either way (`-shm` is rebuilt from the WAL on open).
    let locking: String = conn
        .query_row("PRAGMA locking_mode=EXCLUSIVE", [], |r| r.get(0))
        .context("setting exclusive locking")?;
    if !locking.eq_ignore_ascii_case("exclusive") {
        bail!("SQLite refused exclusive locking (got {locking})");
    }
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .context("setting WAL mode")?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!("SQLite refused WAL mode (got {mode})");
    }
    // FULL: every commit is fsync'd, so a commit that returned must be in a later snapshot.
    conn.pragma_update(None, "synchronous", "FULL")?;
    let tx = conn.transaction()?;
    tx.execute_batch(
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL,
                                opening INTEGER NOT NULL);
         CREATE TABLE ledger (id INTEGER PRIMARY KEY, src INTEGER NOT NULL,
                              dst INTEGER NOT NULL, amount INTEGER NOT NULL, memo TEXT NOT NULL);
         CREATE INDEX ledger_src ON ledger (src);
         CREATE INDEX ledger_dst ON ledger (dst);",
    )
    .context("creating the schema")?;
    for id in 1..=ACCOUNTS {
        tx.execute(
            "INSERT INTO accounts (id, balance, opening) VALUES (?1, ?2, ?2)",
            (id, INITIAL_BALANCE),
        )?;
    }
    tx.commit().context("creating the accounts")?;
    transfers(&mut conn, stop, p)
}

fn transfers(conn: &mut Connection, stop: &AtomicBool, p: &Progress) -> Result<()> {
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) {
        k += 1;
        let r = mix(k);
        let src = 1 + (r % ACCOUNTS as u64) as i64;
        let dst = 1 + ((src as u64 + (r >> 8) % (ACCOUNTS as u64 - 1)) % ACCOUNTS as u64) as i64;
        let amount = 1 + ((r >> 20) % 100) as i64;
        // Memos of varying length make the ledger and its indexes split pages.
        let memo: String = (0..20 + (r >> 32) % 200)
            .map(|i| char::from(b'a' + (mix(r ^ i) % 26) as u8))
            .collect();
        p.start(k);
        let tx = conn.transaction()?;
        tx.prepare_cached("UPDATE accounts SET balance = balance - ?1 WHERE id = ?2")?
            .execute((amount, src))?;
        tx.prepare_cached("UPDATE accounts SET balance = balance + ?1 WHERE id = ?2")?
            .execute((amount, dst))?;
        tx.prepare_cached(
            "INSERT INTO ledger (id, src, dst, amount, memo) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute((k as i64, src, dst, amount, memo))?;
        if k.is_multiple_of(LEDGER_PRUNE_EVERY) && k > LEDGER_KEEP {
            // Fold old transfers into the opening balances and delete them, in the same
            // transaction: bounded size, and pages freed and reused all the time.
            let cut = (k - LEDGER_KEEP) as i64;
            tx.execute(
                "UPDATE accounts SET opening = opening
                   + coalesce((SELECT sum(amount) FROM ledger
                               WHERE dst = accounts.id AND id <= ?1), 0)
                   - coalesce((SELECT sum(amount) FROM ledger
                               WHERE src = accounts.id AND id <= ?1), 0)",
                [cut],
            )?;
            tx.execute("DELETE FROM ledger WHERE id <= ?1", [cut])?;
        }
        tx.commit().context("committing a transfer")?;
        p.complete(k);
    }
    Ok(())
}

// ---- running them ------------------------------------------------------------------------

#[derive(Debug, Default)]
pub struct Progress {
    started: AtomicU64,
    completed: AtomicU64,
}

impl Progress {
    fn start(&self, n: u64) {
        self.started.store(n, Ordering::SeqCst);
    }
    fn complete(&self, n: u64) {
        self.completed.store(n, Ordering::SeqCst);
    }
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::SeqCst)
    }
}

/// What the writers did, once stopped.
#[derive(Debug)]
pub struct Finished {
    pub ops_per_s: BTreeMap<Workload, f64>,
    pub completed: BTreeMap<Workload, u64>,
    pub started: BTreeMap<Workload, u64>,
}

/// All writers, each on its own thread, until [`Workloads::stop`] (or drop).
#[derive(Debug)]
pub struct Workloads {
    stop: Arc<AtomicBool>,
    progress: BTreeMap<Workload, Arc<Progress>>,
    threads: Vec<(Workload, JoinHandle<Result<()>>)>,
    since: Instant,
}

impl Workloads {
    /// Starts every writer; `ctl` is the control directory of the pause protocol.
    pub fn start(roots: &Roots, ctl: &Path) -> Result<Self> {
        let mut me = Workloads {
            stop: Arc::new(AtomicBool::new(false)),
            progress: BTreeMap::new(),
            threads: Vec::new(),
            since: Instant::now(),
        };
        for w in Workload::ALL {
            let p = Arc::new(Progress::default());
            me.progress.insert(w, p.clone());
            let stop = me.stop.clone();
            let (r, ctl) = (roots.clone(), ctl.to_owned());
            let body = move || -> Result<()> {
                let (f1, f2) = (&r.fs1, &r.fs2);
                match w {
                    Workload::PairHook => run_pair(
                        &f1.join(layout::PAIR_HOOK_A),
                        &f2.join(layout::PAIR_HOOK_B),
                        Some(&ctl),
                        &stop,
                        &p,
                    ),
                    Workload::PairNoHook => run_pair(
                        &f1.join(layout::PAIR_NOHOOK_A),
                        &f2.join(layout::PAIR_NOHOOK_B),
                        None,
                        &stop,
                        &p,
                    ),
                    Workload::PairLocal => {
                        let d = f2.join(layout::PAIR_LOCAL_DIR);
                        run_pair(&d.join("pair-a"), &d.join("pair-b"), None, &stop, &p)
                    }
                    Workload::Log => run_log(&f1.join(layout::LOG_DIR), &stop, &p),
                    Workload::Sqlite => run_sqlite(&f1.join(layout::SQLITE_DIR), &stop, &p),
                    Workload::Rename => run_rename(&f2.join(layout::RENAME_DIR), &stop, &p),
                }
                .with_context(|| format!("workload {}", w.name()))
            };
            let handle = std::thread::Builder::new()
                .name(format!("certify-{}", w.name()))
                .spawn(body)
                .context("spawning a workload thread")?;
            me.threads.push((w, handle));
        }
        Ok(me)
    }

    /// Waits until every writer has completed enough operations for every invariant to be
    /// checkable (every rename slot exists, the log and the pairs have a first generation).
    pub fn wait_warm(&mut self, limit: Duration) -> Result<()> {
        let t = Instant::now();
        loop {
            self.check_alive()?;
            let cold: Vec<&str> = self
                .progress
                .iter()
                .filter(|(w, p)| {
                    let need = if **w == Workload::Rename {
                        RENAME_SLOTS
                    } else {
                        1
                    };
                    p.completed() < need
                })
                .map(|(w, _)| w.name())
                .collect();
            if cold.is_empty() {
                return Ok(());
            }
            if t.elapsed() > limit {
                bail!("workloads not started after {limit:?}: {}", cold.join(", "));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Operations completed so far, per writer (the floor of the next session).
    pub fn completed(&self) -> BTreeMap<Workload, u64> {
        self.progress
            .iter()
            .map(|(w, p)| (*w, p.completed()))
            .collect()
    }

    /// Operations started so far, per writer (the ceiling of a view just made ready).
    pub fn started(&self) -> BTreeMap<Workload, u64> {
        self.progress
            .iter()
            .map(|(w, p)| (*w, p.started()))
            .collect()
    }

    /// A writer that ended on its own hit an error (e.g. ENOSPC): the run cannot go on.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(i) = self.threads.iter().position(|(_, h)| h.is_finished()) {
            let (w, h) = self.threads.swap_remove(i);
            return match h.join() {
                Ok(Ok(())) => Err(anyhow::anyhow!("workload {} stopped early", w.name())),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(anyhow::anyhow!("workload {} panicked", w.name())),
            };
        }
        Ok(())
    }

    /// Stops every writer at its next consistent point.
    pub fn stop(mut self) -> Result<Finished> {
        let secs = self.since.elapsed().as_secs_f64().max(1e-3);
        self.halt()?;
        Ok(Finished {
            ops_per_s: self
                .progress
                .iter()
                .map(|(w, p)| (*w, p.completed() as f64 / secs))
                .collect(),
            completed: self.completed(),
            started: self.started(),
        })
    }

    fn halt(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let mut first_error = None;
        for (w, h) in self.threads.drain(..) {
            let r = match h.join() {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!("workload {} panicked", w.name())),
            };
            if let Err(e) = r {
                eprintln!("certify: {e:#}");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Workloads {
    fn drop(&mut self) {
        // Files must be closed before the fixtures unmount; errors were reported by `stop`.
        let _ = self.halt();
    }
}
