//! Property tests of the journal (issue 12): `snapshot cleanup` reads, as root, whatever a
//! crash (or anyone who could write the state directory) left in a journal file, and the
//! liveness check reads `/proc/PID/stat`, whose command name the process chose.
//!
//! - Any bytes in a journal file, and any mutation of a valid one, read as a record or an
//!   error, never a panic; `Journal::list` over such files neither.
//! - A generated record (paths of any bytes, provider data of any JSON) written by
//!   `Journal::create` / `Journal::refine` reads back equal.
//! - `/proc/PID/stat` lines with any command name give their field 22; any text at all gives
//!   a number or `None`, never a panic.

use super::*;
use proptest::prelude::*;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use snapshot_testkit::prop::cases;

/// A path of any bytes but NUL (a target or DIR is named by the user; a writer by whoever
/// installed it).
fn path() -> impl Strategy<Value = PathBuf> {
    prop::collection::vec(
        prop_oneof![3 => 1u8..=255, 1 => prop::sample::select(&b"/.\\\"\x7f\x80\xff"[..])],
        1..24,
    )
    .prop_map(|b| PathBuf::from(OsString::from_vec(b)))
}

/// Provider data: any JSON (numbers that JSON carries exactly).
fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Binary fractions with few digits: exact in decimal both ways.
        (-1_000_000i32..1_000_000).prop_map(|n| Value::from(f64::from(n) / 8.0)),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn state() -> impl Strategy<Value = ObjectState> {
    prop_oneof![Just(ObjectState::Intent), Just(ObjectState::Done)]
}

fn record() -> impl Strategy<Value = Record> {
    let entry = (
        state(),
        (".{0,12}", ".{0,12}", ".{0,12}", any::<bool>(), json()),
    )
        .prop_map(
            |(state, (provider, unit, name, consistent, data))| SnapshotEntry {
                state,
                created: Created {
                    provider,
                    unit,
                    name,
                    consistent,
                    data,
                },
            },
        );
    let frozen = (
        prop::collection::vec(path(), 0..3),
        prop::collection::vec(path(), 0..3),
    )
        .prop_map(|(writers, dirs)| FrozenWriters { writers, dirs });
    (
        (
            any::<u32>(),
            "snapshot-[0-9a-f]{8}",
            any::<u32>(),
            any::<u64>(),
        ),
        (".{0,16}", any::<u64>(), path(), path()),
        (
            prop::option::of(state()),
            prop::collection::vec(entry, 0..3),
            prop::option::of(frozen),
        ),
    )
        .prop_map(
            |(
                (version, session, pid, pid_start),
                (boot_id, started, target, runtime_dir),
                (view, snapshots, frozen_writers),
            )| Record {
                version,
                session,
                pid,
                pid_start,
                boot_id,
                started,
                target,
                runtime_dir,
                view,
                snapshots,
                frozen_writers,
            },
        )
}

/// A private state directory with one journal file holding `bytes`.
fn state_with(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::Builder::new()
        .prefix("snaptest-")
        .tempdir()
        .unwrap();
    let sessions = sessions_dir(t.path());
    std::fs::create_dir(&sessions).unwrap();
    let file = sessions.join("snapshot-0badf00d.json");
    std::fs::write(&file, bytes).unwrap();
    (t, file)
}

/// Reads `bytes` as a journal, as cleanup does: opened alone and through the listing.
fn read_anything(bytes: &[u8]) -> Result<(), TestCaseError> {
    let (t, file) = state_with(bytes);
    match Journal::open(&file) {
        Ok(j) => prop_assert_eq!(j.path(), file.as_path()),
        Err(JournalError::Parse { .. }) => {}
        Err(e) => prop_assert!(false, "not a parse error: {}", e),
    }
    prop_assert_eq!(Journal::list(t.path()).len(), 1);
    Ok(())
}

/// A `/proc/PID/stat` line as the kernel writes it (`do_task_stat()`): `pid (comm) state`
/// and 49 more numbers, field 22 the start time.
fn stat_line(pid: u32, comm: &[u8], state: char, start: u64, other: &[u64]) -> Vec<u8> {
    let mut fields: Vec<String> = other.iter().map(u64::to_string).collect();
    // Fields 4.. are other[0..]; field 22 is index 22 - 4.
    fields[22 - 4] = start.to_string();
    let mut line = format!("{pid} (").into_bytes();
    line.extend_from_slice(comm);
    line.extend(format!(") {state} {}\n", fields.join(" ")).into_bytes());
    line
}

/// A command name as the kernel keeps it: up to 15 bytes, any but NUL (`prctl(PR_SET_NAME)`
/// takes anything; an exec name is cut at 15 bytes, inside a character or not).
fn comm() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![3 => 1u8..=255, 1 => prop::sample::select(&b"() \n\xc3\xa9"[..])],
        0..16,
    )
}

proptest! {
    #![proptest_config(cases(256))]

    /// Any bytes as a journal: a record or a parse error, never a panic.
    #[test]
    fn arbitrary_journal_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        read_anything(&bytes)?;
    }

    /// A valid journal with bytes inserted, removed or replaced (a torn or tampered file):
    /// a record or a parse error, never a panic.
    #[test]
    fn mutated_journals_never_panic(
        rec in record(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..6),
    ) {
        let mut bytes = serde_json::to_vec_pretty(&rec).unwrap();
        for (at, b, op) in edits {
            let i = at.index(bytes.len() + 1);
            match op {
                0 => bytes.insert(i, b),
                1 if i < bytes.len() => { bytes.remove(i); }
                _ if i < bytes.len() => bytes[i] = b,
                _ => {}
            }
        }
        read_anything(&bytes)?;
    }

    /// `/proc/PID/stat` with any command name (spaces, parentheses, `) ` itself, bytes that
    /// are not UTF-8): field 22 comes back.
    #[test]
    fn stat_start_time_of_any_command_name(
        pid in any::<u32>(),
        comm in comm(),
        state in prop::sample::select(&['R', 'S', 'D', 'Z', 'T', 't', 'X', 'I'][..]),
        start in any::<u64>(),
        other in prop::collection::vec(any::<u64>(), 49),
    ) {
        let line = stat_line(pid, &comm, state, start, &other);
        prop_assert_eq!(stat_start_time(&line), Some(start));
    }

    /// Any bytes as `/proc/PID/stat`: a number or `None`, never a panic.
    #[test]
    fn stat_start_time_of_anything(bytes in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        ".{0,64}".prop_map(String::into_bytes),
        // Near misses: a line cut anywhere, often right after the `)`.
        (any::<u32>(), comm(), 0usize..200).prop_map(|(pid, comm, cut)| {
            let mut line = stat_line(pid, &comm, 'S', 7, &[1; 49]);
            line.truncate(cut);
            line
        }),
        "[0-9]{1,5} \\([^\n]{0,6}\\)[ )]{0,2}[0-9 ]{0,8}".prop_map(String::into_bytes),
    ]) {
        let _ = stat_start_time(&bytes);
    }
}

proptest! {
    // Each case makes a state directory and fsyncs a journal: fewer cases.
    #![proptest_config(cases(64))]

    /// A record written by the journal reads back equal, whatever bytes its paths hold and
    /// whatever JSON its providers recorded; and again after an update.
    #[test]
    fn records_round_trip_through_the_journal(rec in record(), update in record()) {
        let t = tempfile::Builder::new().prefix("snaptest-").tempdir().unwrap();
        let mut j = Journal::create(t.path(), rec.clone())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = Journal::open(j.path()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&back.record, &rec);
        let session = rec.session.clone();
        j.refine(|r| *r = Record { session, ..update })
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let listed = Journal::list(t.path());
        prop_assert_eq!(listed.len(), 1);
        let back = listed.into_iter().next().unwrap().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back.record, j.record);
    }
}

/// Found by `stat_start_time_of_anything`: a `)` followed by fewer than two bytes, or by a
/// character of several bytes, made the slicing panic.
#[test]
fn stat_start_time_regressions() {
    for text in [&b")"[..], b")\xc2\xa1", b"1 (x)", b"1 (x) "] {
        assert_eq!(stat_start_time(text), None, "{text:?}");
    }
}

/// Found by `stat_start_time_of_any_command_name`: a command name that is not UTF-8 (a long
/// name cut at 15 bytes inside a character) made `process_start` say `None` for a live
/// process.
#[test]
fn stat_start_time_of_a_non_utf8_command_name() {
    let line = stat_line(42, b"caf\xc3", 'S', 123_456, &[0; 49]);
    assert_eq!(stat_start_time(&line), Some(123_456));
}

/// Found by `records_round_trip_through_the_journal`: a path that is not UTF-8 (a TARGET,
/// DIR or writer named with any bytes) made writing the journal panic ("a record
/// serialises"). Such paths are written as arrays of bytes; UTF-8 ones stay strings.
#[test]
fn non_utf8_paths_in_a_journal() {
    let t = tempfile::tempdir().unwrap();
    let mut rec = Record::new(
        "snapshot-0badf00d",
        Path::new("/mnt/\u{e9}"),
        Path::new("/run/x"),
    );
    rec.target = PathBuf::from(OsString::from_vec(b"/mnt/\xff".to_vec()));
    rec.frozen_writers = Some(FrozenWriters {
        writers: vec![PathBuf::from(OsString::from_vec(b"/w/\xe9".to_vec()))],
        dirs: vec![PathBuf::from("/srv")],
    });
    let j = Journal::create(t.path(), rec.clone()).unwrap();
    let text = std::fs::read_to_string(j.path()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["target"], serde_json::json!([47, 109, 110, 116, 47, 255]));
    assert_eq!(v["runtime_dir"], "/run/x");
    assert_eq!(v["frozen_writers"]["dirs"], serde_json::json!(["/srv"]));
    assert_eq!(Journal::open(j.path()).unwrap().record, rec);
}
