//! The invariant checkers. They look at a *copy* of the view, made the way a backup program
//! reads it ([`copy_tree`]: in name order, one file after the other), so they judge exactly what
//! a backup would have stored.
//!
//! # The log and a torn last record
//!
//! Every record is one 64-byte `write` followed by `fdatasync`, records never straddle a page.
//! A point-in-time view is taken at an instant; if that instant falls inside the last `write`,
//! POSIX promises nothing about how much of it the view holds. So a *trailing fragment* shorter
//! than a record is accepted — but only if its bytes are a prefix of the record being written
//! (recomputable: records are deterministic). Everything else is a violation: a gap or
//! reordering of sequence numbers, a corrupt complete record anywhere (the last one included),
//! a fragment that is not a prefix (zeros, stale data), a missing or incomplete earlier segment.
//! On top of that, the view must hold every record whose `fdatasync` returned before the
//! session started ([`check_point_in_time`]).

use crate::workloads::{
    layout, log_record, pair_a, pair_b, rename_content, rename_slot_name, segment_name, Roots,
    Workload, ACCOUNTS, INITIAL_BALANCE, RECORD_LEN, RENAME_SLOTS, SEGMENT_RECORDS,
};
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::Path;

/// What is checked. Each workload has its own; `PointInTime` spans them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Invariant {
    Of(Workload),
    /// The view holds every operation completed before the session started, none started after
    /// it was ready, and does not change while it is read.
    PointInTime,
}

impl Invariant {
    pub fn all() -> impl Iterator<Item = Invariant> {
        Workload::ALL
            .into_iter()
            .map(Invariant::Of)
            .chain([Invariant::PointInTime])
    }

    pub fn name(self) -> &'static str {
        match self {
            Invariant::Of(w) => w.name(),
            Invariant::PointInTime => "point-in-time",
        }
    }

    /// Guaranteed by a consistent provider. The unhooked cross-filesystem pair is not: without
    /// writer cooperation, snapshots of two filesystems are two instants (reported, not failed).
    pub fn required(self) -> bool {
        self != Invariant::Of(Workload::PairNoHook)
    }

    /// Counts for catching the negative control: a consistency property of the copy's content,
    /// not merely its age (a live view is trivially "too new"; a harness that only noticed that
    /// would miss a torn snapshot fixed in time).
    pub fn catches_negative_control(self) -> bool {
        self.required() && self != Invariant::PointInTime
    }
}

impl Serialize for Invariant {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub invariant: Invariant,
    pub detail: String,
}

/// The least and the most advanced operation a checker saw in the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub low: u64,
    pub high: u64,
}

/// Per workload: operations completed before the session started (`floor`) and started before
/// the view was ready (`ceiling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    pub floor: u64,
    pub ceiling: u64,
}

/// Checks every invariant on a copy (or on the quiescent live filesystems).
pub fn check_all(roots: &Roots, windows: &BTreeMap<Workload, Window>) -> Vec<Violation> {
    let mut out = Vec::new();
    for w in Workload::ALL {
        let (problems, seen) = check_workload(w, roots);
        out.extend(problems.into_iter().map(|detail| Violation {
            invariant: Invariant::Of(w),
            detail,
        }));
        if let (Some(seen), Some(window)) = (seen, windows.get(&w)) {
            if let Some(detail) = check_point_in_time(w, seen, *window) {
                out.push(Violation {
                    invariant: Invariant::PointInTime,
                    detail,
                });
            }
        }
    }
    out
}

fn check_workload(w: Workload, r: &Roots) -> (Vec<String>, Option<Seen>) {
    match w {
        Workload::PairHook => check_pair(
            &r.fs1.join(layout::PAIR_HOOK_A),
            &r.fs2.join(layout::PAIR_HOOK_B),
            PairMode::Paused,
        ),
        Workload::PairNoHook => check_pair(
            &r.fs1.join(layout::PAIR_NOHOOK_A),
            &r.fs2.join(layout::PAIR_NOHOOK_B),
            PairMode::Apart,
        ),
        Workload::PairLocal => {
            let d = r.fs2.join(layout::PAIR_LOCAL_DIR);
            check_pair(&d.join("pair-a"), &d.join("pair-b"), PairMode::Ordered)
        }
        Workload::Log => check_log(&r.fs1.join(layout::LOG_DIR)),
        Workload::Sqlite => check_sqlite(&r.fs1.join(layout::SQLITE_DIR)),
        Workload::Rename => check_rename(&r.fs2.join(layout::RENAME_DIR)),
    }
}

pub fn check_point_in_time(w: Workload, seen: Seen, window: Window) -> Option<String> {
    if seen.low < window.floor {
        Some(format!(
            "{}: the view holds operation #{} but #{} had completed before the session started \
             (stale view)",
            w.name(),
            seen.low,
            window.floor
        ))
    } else if seen.high > window.ceiling {
        Some(format!(
            "{}: the view holds operation #{}, started after the view was ready (at #{}): \
             not a point in time",
            w.name(),
            seen.high,
            window.ceiling
        ))
    } else {
        None
    }
}

// ---- log ---------------------------------------------------------------------------------

/// Problems found, and the last sequence number held (a fragment counts as started).
pub fn check_log(dir: &Path) -> (Vec<String>, Option<Seen>) {
    let mut problems = Vec::new();
    let mut segments: Vec<u64> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("log-")?.parse().ok()
            })
            .collect(),
        Err(e) => return (vec![format!("{}: {e}", dir.display())], None),
    };
    segments.sort_unstable();
    if segments.is_empty() {
        return (vec![format!("no log segment in {}", dir.display())], None);
    }
    for pair in segments.windows(2) {
        if pair[1] != pair[0] + 1 {
            problems.push(format!(
                "segments {} and {} present, the ones between missing",
                segment_name(pair[0]),
                segment_name(pair[1])
            ));
        }
    }
    let mut last_seq = 0;
    let mut fragment = false;
    for (i, &n) in segments.iter().enumerate() {
        let name = segment_name(n);
        let data = match fs::read(dir.join(&name)) {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("{name}: {e}"));
                continue;
            }
        };
        let is_last = i + 1 == segments.len();
        let base = n * SEGMENT_RECORDS;
        let full = SEGMENT_RECORDS as usize * RECORD_LEN;
        if data.len() > full {
            problems.push(format!("{name}: {} bytes, more than a segment", data.len()));
        } else if !is_last && data.len() < full {
            problems.push(format!(
                "{name}: {} of {} records, yet a later segment exists (lost records)",
                data.len() / RECORD_LEN,
                SEGMENT_RECORDS
            ));
        }
        if is_last {
            last_seq = base;
        }
        let mut bad = 0;
        let mut first_bad = None;
        let mut chunks = data.chunks(RECORD_LEN).enumerate().peekable();
        while let Some((k, rec)) = chunks.next() {
            let expected_seq = base + k as u64 + 1;
            let expected = log_record(expected_seq);
            if rec.len() < RECORD_LEN {
                // A trailing fragment: only an in-flight write of the very last record.
                if !(is_last && chunks.peek().is_none() && expected.starts_with(rec)) {
                    bad += 1;
                    first_bad.get_or_insert(format!(
                        "{name}: torn record at #{expected_seq} ({} bytes, not a prefix of it)",
                        rec.len()
                    ));
                } else {
                    fragment = true;
                }
                continue;
            }
            if rec != expected {
                bad += 1;
                first_bad.get_or_insert_with(|| describe_bad_record(&name, expected_seq, rec));
            }
            if is_last {
                last_seq = expected_seq;
            }
        }
        if let Some(first) = first_bad {
            problems.push(if bad > 1 {
                format!("{first} (and {} more bad records)", bad - 1)
            } else {
                first
            });
        }
    }
    let high = last_seq + u64::from(fragment);
    (
        problems,
        Some(Seen {
            low: last_seq,
            high,
        }),
    )
}

fn describe_bad_record(segment: &str, expected: u64, rec: &[u8]) -> String {
    let seq = std::str::from_utf8(&rec[..16])
        .ok()
        .and_then(|s| u64::from_str_radix(s, 16).ok());
    let intact = seq.is_some_and(|s| log_record(s).as_slice() == rec);
    match seq {
        Some(s) if intact && s < expected => {
            format!("{segment}: record #{expected} expected, found #{s} again (reordered or duplicated)")
        }
        Some(s) if intact => {
            format!("{segment}: record #{expected} expected, found #{s} (gap or reordering)")
        }
        _ => format!("{segment}: record #{expected} corrupt (checksum mismatch)"),
    }
}

// ---- pairs -------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairMode {
    /// The writer was paused at its consistent point for the snapshot: A and B are equal.
    Paused,
    /// No cooperation: the view is some instant of "write A, then B", so A is B's generation
    /// or the next one.
    Ordered,
    /// Like `Ordered`, A and B on two filesystems snapshotted without writer cooperation:
    /// anything else means the snapshots are not one instant (informational).
    Apart,
}

fn parse_gen(content: &str) -> Option<u64> {
    content
        .strip_prefix("gen=")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

/// Problems found, and (generation of B, generation of A).
pub fn check_pair(a: &Path, b: &Path, mode: PairMode) -> (Vec<String>, Option<Seen>) {
    let read = |p: &Path| fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let (a_text, b_text) = match (read(a), read(b)) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => return ([a.err(), b.err()].into_iter().flatten().collect(), None),
    };
    let mut problems = Vec::new();
    let gen_a = parse_gen(&a_text).filter(|&g| pair_a(g) == a_text);
    let gen_b = parse_gen(&b_text).filter(|&g| pair_b(g) == b_text);
    if gen_a.is_none() {
        problems.push(format!("A corrupt: {:?}", clip(&a_text)));
    }
    if gen_b.is_none() {
        problems.push(format!(
            "B corrupt or not derived from A of its generation: {:?}",
            clip(&b_text)
        ));
    }
    let (Some(ga), Some(gb)) = (gen_a, gen_b) else {
        return (problems, None);
    };
    if mode == PairMode::Apart && (gb > ga || ga > gb + 1) {
        problems.push(format!(
            "the two filesystems were snapshotted at different instants: A (first \
             filesystem) at generation {ga}, B (second) at {gb}"
        ));
    } else if gb > ga {
        problems.push(format!(
            "B (generation {gb}) is newer than A (generation {ga}): B is written after A"
        ));
    } else if mode == PairMode::Paused && ga != gb {
        problems.push(format!(
            "A at generation {ga}, B at {gb}: the writer was paused with both equal"
        ));
    } else if ga > gb + 1 {
        problems.push(format!(
            "A at generation {ga}, B at {gb}: B lost {} updates",
            ga - gb - 1
        ));
    }
    (problems, Some(Seen { low: gb, high: ga }))
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

// ---- rename ------------------------------------------------------------------------------

/// Problems found, and the newest generation held.
pub fn check_rename(dir: &Path) -> (Vec<String>, Option<Seen>) {
    let mut problems = Vec::new();
    let mut newest = None;
    for slot in 0..RENAME_SLOTS {
        let name = rename_slot_name(slot);
        let data = match fs::read(dir.join(&name)) {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!(
                    "{name}: {e} (a file replaced by rename never disappears)"
                ));
                continue;
            }
        };
        let gen = data
            .split(|&b| b == b'\n')
            .next()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| {
                h.split(' ')
                    .nth(1)?
                    .strip_prefix("gen=")?
                    .parse::<u64>()
                    .ok()
            });
        match gen {
            Some(g) if g >= 1 && (g - 1) % RENAME_SLOTS == slot && rename_content(g) == data => {
                newest = newest.max(Some(g));
            }
            Some(g) if g >= 1 && (g - 1) % RENAME_SLOTS == slot => problems.push(format!(
                "{name}: torn: generation {g} with {} bytes, content does not match its checksum",
                data.len()
            )),
            _ => problems.push(format!(
                "{name}: torn or foreign: header {:?}",
                clip(&String::from_utf8_lossy(&data[..data.len().min(80)]))
            )),
        }
    }
    (problems, newest.map(|g| Seen { low: g, high: g }))
}

// ---- sqlite ------------------------------------------------------------------------------

/// Opens the copied database (with its WAL, without the copied `-shm`: SQLite rebuilds the
/// index from the WAL, as after a crash) and checks integrity, the constant total and that
/// every balance matches the ledger. Problems found, and the last transfer held.
pub fn check_sqlite(dir: &Path) -> (Vec<String>, Option<Seen>) {
    match sqlite_facts(dir) {
        Ok((problems, last)) => (problems, last.map(|n| Seen { low: n, high: n })),
        Err(e) => (vec![format!("{e:#}")], None),
    }
}

fn sqlite_facts(dir: &Path) -> Result<(Vec<String>, Option<u64>)> {
    let db = dir.join(layout::SQLITE_DB);
    if !db.exists() {
        anyhow::bail!("{} missing", db.display());
    }
    let shm = dir.join(format!("{}-shm", layout::SQLITE_DB));
    match fs::remove_file(&shm) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {}", shm.display()))
        }
        _ => {}
    }
    let conn = rusqlite::Connection::open(&db)
        .with_context(|| format!("opening the copied {}", db.display()))?;
    let mut problems = Vec::new();
    let integrity: Vec<String> = conn
        .prepare("PRAGMA integrity_check")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()
        .context("PRAGMA integrity_check")?;
    if integrity != ["ok"] {
        let more = integrity.len().saturating_sub(3);
        problems.push(format!(
            "integrity_check: {}{}",
            integrity[..integrity.len().min(3)].join("; "),
            if more > 0 {
                format!(" (and {more} more)")
            } else {
                String::new()
            }
        ));
    }
    let (n, total): (i64, i64) = conn
        .query_row(
            "SELECT count(*), coalesce(sum(balance), 0) FROM accounts",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .context("summing the accounts")?;
    if (n, total) != (ACCOUNTS, ACCOUNTS * INITIAL_BALANCE) {
        problems.push(format!(
            "{n} accounts holding {total} in total; expected {ACCOUNTS} holding {}",
            ACCOUNTS * INITIAL_BALANCE
        ));
    }
    let (rows, first, last): (i64, i64, i64) = conn
        .query_row(
            "SELECT count(*), coalesce(min(id), 1), coalesce(max(id), 0) FROM ledger",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .context("reading the ledger")?;
    if rows != last - first + 1 {
        problems.push(format!(
            "ledger has {rows} rows for transfers #{first} to #{last} (some lost)"
        ));
    }
    let opening: i64 = conn
        .query_row("SELECT coalesce(sum(opening), 0) FROM accounts", [], |r| {
            r.get(0)
        })
        .context("summing the opening balances")?;
    if opening != ACCOUNTS * INITIAL_BALANCE {
        problems.push(format!(
            "opening balances add up to {opening}, expected {}",
            ACCOUNTS * INITIAL_BALANCE
        ));
    }
    let off: i64 = conn
        .query_row(
            "SELECT count(*) FROM accounts a WHERE a.balance != a.opening
               + coalesce((SELECT sum(amount) FROM ledger WHERE dst = a.id), 0)
               - coalesce((SELECT sum(amount) FROM ledger WHERE src = a.id), 0)",
            [],
            |r| r.get(0),
        )
        .context("comparing balances with the ledger")?;
    if off != 0 {
        problems.push(format!(
            "{off} accounts disagree with the ledger (a transfer half applied)"
        ));
    }
    Ok((problems, u64::try_from(last).ok()))
}

// ---- the copy ----------------------------------------------------------------------------

/// Copies `src` to `dst` like a backup program: directories in name order, regular files read
/// to their end. Returns the entries that vanished between listing and reading (a live view;
/// impossible in a snapshot).
pub fn copy_tree(src: &Path, dst: &Path) -> Result<Vec<String>> {
    let mut vanished = Vec::new();
    copy_dir(src, dst, &mut vanished)?;
    Ok(vanished)
}

fn copy_dir(src: &Path, dst: &Path, vanished: &mut Vec<String>) -> Result<()> {
    fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
    let mut entries: Vec<_> = fs::read_dir(src)
        .with_context(|| format!("listing {}", src.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("listing {}", src.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        if name == "lost+found" {
            continue;
        }
        let (from, to) = (src.join(&name), dst.join(&name));
        let kind = match fs::symlink_metadata(&from) {
            Ok(m) => m.file_type(),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                vanished.push(from.display().to_string());
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("stat {}", from.display())),
        };
        if kind.is_dir() {
            copy_dir(&from, &to, vanished)?;
        } else if kind.is_file() {
            match fs::read(&from) {
                Ok(data) => {
                    fs::write(&to, data).with_context(|| format!("writing {}", to.display()))?
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    vanished.push(from.display().to_string())
                }
                Err(e) => return Err(e).with_context(|| format!("reading {}", from.display())),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::{Workloads, PAUSE_ACK, PAUSE_REQUEST};
    use snapshot_fixtures::Scratch;
    use std::io::Write;
    use std::path::PathBuf;
    use std::time::Duration;

    fn scratch(name: &str) -> Scratch {
        Scratch::new(&format!("certify-unit-{name}")).unwrap()
    }

    /// A log directory holding records `1..=n` in their segments (older ones kept).
    fn write_log(dir: &Path, n: u64) {
        fs::create_dir_all(dir).unwrap();
        for seq in 1..=n {
            let seg = (seq - 1) / SEGMENT_RECORDS;
            append_to_segment(dir, seg, &log_record(seq));
        }
    }

    /// Appends `bytes` to segment `seg` of the log in `dir`, creating it.
    fn append_to_segment(dir: &Path, seg: u64, bytes: &[u8]) {
        fs::File::options()
            .create(true)
            .append(true)
            .open(seg_path(dir, seg))
            .unwrap()
            .write_all(bytes)
            .unwrap();
    }

    fn seg_path(dir: &Path, n: u64) -> PathBuf {
        dir.join(segment_name(n))
    }

    #[test]
    fn log_accepts_a_clean_prefix_across_segments() {
        let s = scratch("log-ok");
        let d = s.join("log");
        write_log(&d, SEGMENT_RECORDS + 10);
        let (p, seen) = check_log(&d);
        assert!(p.is_empty(), "{p:?}");
        let n = SEGMENT_RECORDS + 10;
        assert_eq!(seen, Some(Seen { low: n, high: n }));
        // Rotation removed the oldest segment: still a clean prefix.
        fs::remove_file(seg_path(&d, 0)).unwrap();
        assert!(check_log(&d).0.is_empty());
    }

    #[test]
    fn log_accepts_an_in_flight_fragment_of_the_last_record() {
        let s = scratch("log-frag");
        let d = s.join("log");
        write_log(&d, 5);
        append_to_segment(&d, 0, &log_record(6)[..20]);
        let (p, seen) = check_log(&d);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(seen, Some(Seen { low: 5, high: 6 }));
    }

    #[test]
    fn log_flags_a_garbage_tail() {
        let s = scratch("log-garbage");
        let d = s.join("log");
        write_log(&d, 5);
        append_to_segment(&d, 0, &[0u8; 20]);
        let (p, _) = check_log(&d);
        assert!(p.iter().any(|m| m.contains("torn record at #6")), "{p:?}");
    }

    #[test]
    fn log_flags_a_gap() {
        let s = scratch("log-gap");
        let d = s.join("log");
        write_log(&d, 10);
        let path = seg_path(&d, 0);
        let mut data = fs::read(&path).unwrap();
        data.drain(3 * RECORD_LEN..4 * RECORD_LEN); // record #4 lost
        fs::write(&path, data).unwrap();
        let (p, _) = check_log(&d);
        assert!(
            p.iter().any(|m| m.contains("#4 expected, found #5 (gap")),
            "{p:?}"
        );
    }

    #[test]
    fn log_flags_reordering() {
        let s = scratch("log-reorder");
        let d = s.join("log");
        write_log(&d, 10);
        let path = seg_path(&d, 0);
        let mut data = fs::read(&path).unwrap();
        let r3: Vec<u8> = data[2 * RECORD_LEN..3 * RECORD_LEN].to_vec();
        let r4: Vec<u8> = data[3 * RECORD_LEN..4 * RECORD_LEN].to_vec();
        data[2 * RECORD_LEN..3 * RECORD_LEN].copy_from_slice(&r4);
        data[3 * RECORD_LEN..4 * RECORD_LEN].copy_from_slice(&r3);
        fs::write(&path, data).unwrap();
        let (p, _) = check_log(&d);
        assert!(
            p.iter().any(|m| m.contains("(and 1 more bad records)")),
            "{p:?}"
        );
        assert!(p[0].contains("#3 expected, found #4"), "{p:?}");
    }

    #[test]
    fn log_flags_a_corrupt_record_in_the_middle_and_at_the_end() {
        let s = scratch("log-corrupt");
        let d = s.join("log");
        write_log(&d, 10);
        let path = seg_path(&d, 0);
        let mut data = fs::read(&path).unwrap();
        data[4 * RECORD_LEN + 30] ^= 0x01; // payload of #5
        fs::write(&path, &data).unwrap();
        let (p, _) = check_log(&d);
        assert!(
            p.iter().any(|m| m.contains("#5 corrupt (checksum")),
            "{p:?}"
        );
        // A complete last record is held to the same rule.
        write_log(&s.join("log2"), 10);
        let path = seg_path(&s.join("log2"), 0);
        let mut data = fs::read(&path).unwrap();
        let end = data.len();
        data[end - 10] = b'0';
        data[end - 11] = b'0';
        fs::write(&path, &data).unwrap();
        let (p, _) = check_log(&s.join("log2"));
        assert!(p.iter().any(|m| m.contains("#10 corrupt")), "{p:?}");
    }

    #[test]
    fn log_flags_a_short_earlier_segment_and_a_missing_one() {
        let s = scratch("log-seg");
        let d = s.join("log");
        write_log(&d, 2 * SEGMENT_RECORDS + 3);
        let path = seg_path(&d, 0);
        let data = fs::read(&path).unwrap();
        fs::write(&path, &data[..data.len() - RECORD_LEN]).unwrap();
        let (p, _) = check_log(&d);
        assert!(
            p.iter().any(|m| m.contains("yet a later segment exists")),
            "{p:?}"
        );
        fs::remove_file(seg_path(&d, 1)).unwrap();
        let (p, _) = check_log(&d);
        assert!(p.iter().any(|m| m.contains("missing")), "{p:?}");
    }

    fn write_pair(d: &Path, a: &str, b: &str) -> (PathBuf, PathBuf) {
        fs::create_dir_all(d).unwrap();
        let (pa, pb) = (d.join("a"), d.join("b"));
        fs::write(&pa, a).unwrap();
        fs::write(&pb, b).unwrap();
        (pa, pb)
    }

    #[test]
    fn pair_accepts_equal_and_a_one_ahead_when_ordered() {
        let s = scratch("pair-ok");
        let (a, b) = write_pair(&s.join("p"), &pair_a(7), &pair_b(7));
        for mode in [PairMode::Paused, PairMode::Ordered] {
            let (p, seen) = check_pair(&a, &b, mode);
            assert!(p.is_empty(), "{p:?}");
            assert_eq!(seen, Some(Seen { low: 7, high: 7 }));
        }
        let (a, b) = write_pair(&s.join("q"), &pair_a(8), &pair_b(7));
        assert!(check_pair(&a, &b, PairMode::Ordered).0.is_empty());
        let (p, _) = check_pair(&a, &b, PairMode::Paused);
        assert!(p[0].contains("paused with both equal"), "{p:?}");
    }

    #[test]
    fn pair_apart_reports_two_instants() {
        let s = scratch("pair-apart");
        let (a, b) = write_pair(&s.join("p"), &pair_a(8), &pair_b(7));
        assert!(check_pair(&a, &b, PairMode::Apart).0.is_empty());
        for (ga, gb) in [(9, 7), (7, 8)] {
            let (a, b) = write_pair(&s.join(format!("{ga}-{gb}")), &pair_a(ga), &pair_b(gb));
            let (p, _) = check_pair(&a, &b, PairMode::Apart);
            assert!(p[0].contains("different instants"), "{p:?}");
        }
    }

    #[test]
    fn pair_flags_b_newer_than_a() {
        let s = scratch("pair-newer");
        let (a, b) = write_pair(&s.join("p"), &pair_a(7), &pair_b(8));
        for mode in [PairMode::Paused, PairMode::Ordered] {
            let (p, _) = check_pair(&a, &b, mode);
            assert!(p[0].contains("B (generation 8) is newer than A"), "{p:?}");
        }
    }

    #[test]
    fn pair_flags_a_lost_update_and_corruption() {
        let s = scratch("pair-bad");
        let (a, b) = write_pair(&s.join("p"), &pair_a(9), &pair_b(7));
        let (p, _) = check_pair(&a, &b, PairMode::Ordered);
        assert!(p[0].contains("B lost 1 updates"), "{p:?}");
        // B claims generation 7 but is not derived from A of generation 7.
        let forged = "gen=7 a=0000000000000000\n";
        let (a, b) = write_pair(&s.join("q"), &pair_a(7), forged);
        let (p, _) = check_pair(&a, &b, PairMode::Ordered);
        assert!(p[0].contains("not derived from A"), "{p:?}");
        let (a, b) = write_pair(&s.join("r"), "", &pair_b(7));
        let (p, _) = check_pair(&a, &b, PairMode::Ordered);
        assert!(p[0].contains("A corrupt"), "{p:?}");
        fs::remove_file(&a).unwrap();
        assert!(!check_pair(&a, &b, PairMode::Ordered).0.is_empty());
    }

    fn write_renamed(d: &Path, first_gen: u64) {
        fs::create_dir_all(d).unwrap();
        for g in first_gen..first_gen + RENAME_SLOTS {
            let slot = (g - 1) % RENAME_SLOTS;
            fs::write(d.join(rename_slot_name(slot)), rename_content(g)).unwrap();
        }
        fs::write(d.join(".file-03.tmp"), b"half").unwrap(); // in flight: ignored
    }

    #[test]
    fn rename_accepts_whole_files() {
        let s = scratch("rename-ok");
        let d = s.join("r");
        write_renamed(&d, 5);
        let (p, seen) = check_rename(&d);
        assert!(p.is_empty(), "{p:?}");
        let newest = 5 + RENAME_SLOTS - 1;
        assert_eq!(
            seen,
            Some(Seen {
                low: newest,
                high: newest
            })
        );
    }

    #[test]
    fn rename_flags_torn_and_missing_files() {
        let s = scratch("rename-torn");
        let d = s.join("r");
        write_renamed(&d, 1);
        let path = d.join(rename_slot_name(2));
        let data = fs::read(&path).unwrap();
        fs::write(&path, &data[..data.len() / 2]).unwrap();
        let (p, _) = check_rename(&d);
        assert!(p.len() == 1 && p[0].contains("file-02: torn"), "{p:?}");
        let path = d.join(rename_slot_name(5));
        let mut data = fs::read(&path).unwrap();
        let n = data.len();
        data[n - 1] ^= 0xff;
        fs::write(&path, &data).unwrap();
        fs::remove_file(d.join(rename_slot_name(9))).unwrap();
        let (p, _) = check_rename(&d);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p.iter().any(|m| m.contains("file-05: torn")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("file-09: ")), "{p:?}");
        // A file of another slot renamed into place is flagged too.
        fs::write(d.join(rename_slot_name(9)), rename_content(1)).unwrap();
        let (p, _) = check_rename(&d);
        assert!(
            p.iter().any(|m| m.contains("file-09: torn or foreign")),
            "{p:?}"
        );
    }

    /// A database as the SQLite workload makes it, after `n` transfers.
    fn bank(dir: &Path, n: u64) {
        let s = Roots {
            fs1: dir.to_owned(),
            fs2: dir.join("unused"),
        };
        let ctl = dir.join("ctl");
        fs::create_dir_all(&ctl).unwrap();
        let mut w = Workloads::start(&s, &ctl).unwrap();
        w.wait_warm(Duration::from_secs(60)).unwrap();
        while w.completed()[&Workload::Sqlite] < n {
            std::thread::sleep(Duration::from_millis(5));
        }
        w.stop().unwrap();
    }

    /// Changes the database behind the workload's back (and closes it again, so that the
    /// checker's connection is the only one).
    fn tamper(dir: &Path, sql: &str) {
        let conn = rusqlite::Connection::open(dir.join(layout::SQLITE_DB)).unwrap();
        conn.execute(sql, []).unwrap();
    }

    #[test]
    fn sqlite_accepts_the_workloads_database_and_flags_broken_ones() {
        let s = scratch("sqlite");
        bank(s.path(), 50);
        let d = s.join(layout::SQLITE_DIR);
        let (p, seen) = check_sqlite(&d);
        assert!(p.is_empty(), "{p:?}");
        assert!(seen.unwrap().low >= 50);

        // Money created out of nothing: the total changes.
        tamper(&d, "UPDATE accounts SET balance = balance + 5 WHERE id = 3");
        let (p, _) = check_sqlite(&d);
        assert!(p.iter().any(|m| m.contains("in total")), "{p:?}");
        // Balanced but not in the ledger: a transfer half applied.
        tamper(&d, "UPDATE accounts SET balance = balance - 5 WHERE id = 4");
        let (p, _) = check_sqlite(&d);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("disagree with the ledger"), "{p:?}");
    }

    #[test]
    fn sqlite_accepts_a_pruned_ledger_and_flags_a_lost_transfer() {
        let s = scratch("sqlite-pruned");
        bank(s.path(), 120);
        let d = s.join(layout::SQLITE_DIR);
        let (p, _) = check_sqlite(&d);
        assert!(p.is_empty(), "{p:?}");
        let first: i64 = rusqlite::Connection::open(d.join(layout::SQLITE_DB))
            .unwrap()
            .query_row("SELECT min(id) FROM ledger", [], |r| r.get(0))
            .unwrap();
        assert!(first > 1, "the ledger was pruned");
        tamper(&d, &format!("DELETE FROM ledger WHERE id = {}", first + 10));
        let (p, _) = check_sqlite(&d);
        assert!(p.iter().any(|m| m.contains("some lost")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("disagree")), "{p:?}");
    }

    #[test]
    fn sqlite_flags_a_corrupt_file() {
        let s = scratch("sqlite-corrupt");
        bank(s.path(), 50);
        let d = s.join(layout::SQLITE_DIR);
        // Longer memos (not part of any invariant): a file of many pages.
        tamper(
            &d,
            "UPDATE ledger SET memo = printf('%.3000c', 'x') || memo",
        );
        assert!(check_sqlite(&d).0.is_empty());
        let db = d.join(layout::SQLITE_DB);
        let mut data = fs::read(&db).unwrap();
        assert!(data.len() > 8 * 4096, "a few pages: {}", data.len());
        // Scribble over the middle of the file: b-tree pages of the ledger and its indexes.
        let mid = data.len() / 2;
        for b in &mut data[mid..mid + 6000] {
            *b = 0x5a;
        }
        fs::write(&db, data).unwrap();
        let (p, _) = check_sqlite(&s.join(layout::SQLITE_DIR));
        assert!(!p.is_empty(), "corruption not noticed");
        // A missing database is a violation, not a harness error.
        fs::remove_file(&db).unwrap();
        assert!(check_sqlite(&s.join(layout::SQLITE_DIR)).0[0].contains("missing"));
    }

    #[test]
    fn point_in_time_bounds() {
        let w = Window {
            floor: 10,
            ceiling: 20,
        };
        let ok = Seen { low: 10, high: 20 };
        assert_eq!(check_point_in_time(Workload::Log, ok, w), None);
        let stale = Seen { low: 9, high: 9 };
        assert!(check_point_in_time(Workload::Log, stale, w)
            .unwrap()
            .contains("stale"));
        let live = Seen { low: 15, high: 21 };
        assert!(check_point_in_time(Workload::Log, live, w)
            .unwrap()
            .contains("not a point in time"));
    }

    /// The writers and the checkers agree: stopped writers leave files that pass every check,
    /// and a copy made while they run (a live, bind-like copy) is caught.
    #[test]
    fn quiescent_workloads_pass_and_the_pause_protocol_holds_them() {
        let s = scratch("workloads");
        let roots = Roots {
            fs1: s.join("fs1"),
            fs2: s.join("fs2"),
        };
        let ctl = s.join("ctl");
        for d in [&roots.fs1, &roots.fs2, &ctl] {
            fs::create_dir_all(d).unwrap();
        }
        let mut w = Workloads::start(&roots, &ctl).unwrap();
        w.wait_warm(Duration::from_secs(60)).unwrap();

        // The pause protocol, as the writer hook drives it.
        fs::write(ctl.join(PAUSE_REQUEST), "snapshot-test\n").unwrap();
        let ack = ctl.join(PAUSE_ACK);
        let t = std::time::Instant::now();
        while fs::read_to_string(&ack).unwrap_or_default().trim() != "snapshot-test" {
            assert!(t.elapsed() < Duration::from_secs(10), "no pause ack");
            std::thread::sleep(Duration::from_millis(1));
        }
        let held = w.started()[&Workload::PairHook];
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            w.started()[&Workload::PairHook],
            held,
            "paused writer moved"
        );
        assert_eq!(w.completed()[&Workload::PairHook], held, "paused mid-pair");
        fs::remove_file(ctl.join(PAUSE_REQUEST)).unwrap();
        let t = std::time::Instant::now();
        while w.completed()[&Workload::PairHook] == held {
            assert!(t.elapsed() < Duration::from_secs(10), "not resumed");
            std::thread::sleep(Duration::from_millis(1));
        }

        let before = w.completed();
        w.stop().unwrap();
        let windows = before
            .iter()
            .map(|(k, &floor)| {
                (
                    *k,
                    Window {
                        floor,
                        ceiling: u64::MAX,
                    },
                )
            })
            .collect();
        let v = check_all(&roots, &windows);
        assert!(v.is_empty(), "{v:#?}");

        // The same through a copy.
        let copy = Roots {
            fs1: s.join("copy/fs1"),
            fs2: s.join("copy/fs2"),
        };
        assert!(copy_tree(&roots.fs1, &copy.fs1).unwrap().is_empty());
        assert!(copy_tree(&roots.fs2, &copy.fs2).unwrap().is_empty());
        let v = check_all(&copy, &windows);
        assert!(v.is_empty(), "{v:#?}");

        // A view newer than its ceiling is flagged as not a point in time.
        let tight = windows
            .keys()
            .map(|k| {
                (
                    *k,
                    Window {
                        floor: 0,
                        ceiling: 0,
                    },
                )
            })
            .collect();
        let v = check_all(&copy, &tight);
        assert_eq!(
            v.iter()
                .filter(|v| v.invariant == Invariant::PointInTime)
                .count(),
            Workload::ALL.len(),
            "{v:#?}"
        );
    }
}
