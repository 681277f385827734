//! Property tests of start-snapshot's state files (issue 12): their names come from the
//! TARGET (any bytes a user chose), and `stop-snapshot` reads, as root, the pid it signals
//! from them.
//!
//! - The name made of a TARGET (`escape_path`) is one file name, never hidden, and gives the
//!   TARGET back: two targets never share state files.
//! - Every state file of any TARGET lies directly in `RUNTIME/held`.
//! - The holder's state, written for a TARGET of any bytes, reads back equal; any bytes in
//!   the state file read as a state or nothing, never a panic.

use super::*;
use proptest::prelude::*;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use snapshot_testkit::prop::cases;

/// A path of any bytes but NUL, often with the characters `escape_path` treats apart.
fn path_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            3 => 1u8..=255,
            2 => prop::sample::select(&b"/.-_\\xaZ09 \x80"[..]),
        ],
        0..24,
    )
}

/// An absolute path as `canonicalize` gives it: `/` and components of any bytes but `/`
/// and NUL, none empty, `.` or `..`.
fn abs_path() -> impl Strategy<Value = PathBuf> {
    let component = path_bytes()
        .prop_map(|b| b.into_iter().filter(|&c| c != b'/').collect::<Vec<u8>>())
        .prop_filter("a real name", |c| !c.is_empty() && c != b"." && c != b"..");
    prop::collection::vec(component, 0..4).prop_map(|parts| {
        let mut p = b"/".to_vec();
        p.extend(parts.join(&b'/'));
        PathBuf::from(OsString::from_vec(p))
    })
}

/// The inverse of `escape_path` for absolute paths: `-` is `/`, `\xHH` a byte, the rest
/// itself.
fn unescape(name: &str) -> Option<PathBuf> {
    if name == "-" {
        return Some(PathBuf::from("/"));
    }
    let b = name.as_bytes();
    let mut out = vec![b'/'];
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'-' => out.push(b'/'),
            b'\\' => {
                let hex = std::str::from_utf8(b.get(i + 2..i + 4)?).ok()?;
                if b.get(i + 1) != Some(&b'x') {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            c => out.push(c),
        }
        i += 1;
    }
    Some(PathBuf::from(OsString::from_vec(out)))
}

/// A private runtime directory, as `start-snapshot` makes it.
fn runtime() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("snaptest-")
        .tempdir()
        .unwrap()
}

proptest! {
    #![proptest_config(cases(256))]

    /// `escape_path` of an absolute path is one file name (no `/`, no NUL, not `.`-led, so
    /// never hidden, `.` or `..`) that gives the path back: distinct targets, distinct names.
    #[test]
    fn escape_path_is_a_file_name_that_gives_the_path_back(p in abs_path()) {
        let name = snapshot_core::lock::escape_path(&p);
        prop_assert!(!name.is_empty());
        prop_assert!(!name.contains(['/', '\0']), "{:?}", name);
        prop_assert!(!name.starts_with('.'), "{:?}", name);
        prop_assert_eq!(unescape(&name), Some(p));
    }

    /// Whatever the TARGET (relative, `..`, any bytes), its state files lie directly in
    /// `RUNTIME/held`, one name with four extensions.
    #[test]
    fn state_files_stay_in_the_held_directory(target in path_bytes()) {
        let target = PathBuf::from(OsString::from_vec(target));
        let runtime = Path::new("/run/snaptest-runtime");
        let paths = HeldPaths::new(runtime, &target);
        let held = runtime.join("held");
        let files = [&paths.state, &paths.log, &paths.status, &paths.offset];
        for (f, ext) in files.iter().zip([".json", ".log", ".status", ".offset"]) {
            prop_assert_eq!(f.parent(), Some(held.as_path()), "{:?}", f);
            prop_assert!(f.as_os_str().as_bytes().ends_with(ext.as_bytes()));
            prop_assert!(f.file_name().is_some());
        }
    }
}

proptest! {
    // Each case makes a private directory and fsyncs a file: fewer cases.
    #![proptest_config(cases(64))]

    /// The holder's state for a TARGET of any bytes reads back: this process's pid, the
    /// TARGET, the session.
    #[test]
    fn holder_state_round_trips(target in abs_path(), session in "snapshot-[0-9a-f]{8}") {
        let rt = runtime();
        holder_ready(rt.path(), &target, &session, None).map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
        let state = read_state(&HeldPaths::new(rt.path(), &target));
        let state = state.ok_or_else(|| TestCaseError::fail("no state read back"))?;
        prop_assert_eq!(state.pid, std::process::id());
        prop_assert_eq!(state.target, target);
        prop_assert_eq!(state.session, session);
    }

    /// Any bytes in the state file: a state or nothing, never a panic.
    #[test]
    fn any_state_file_never_panics(bytes in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        "\\{\"pid\": ?-?[0-9]{1,12}, ?\"target\": ?(\"[^\"]{0,8}\"|\\[[0-9, ]{0,12}\\]), ?\"session\": ?\"[^\"]{0,8}\"\\}"
            .prop_map(String::into_bytes),
    ]) {
        let rt = runtime();
        check_held_dir(rt.path(), true).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let paths = HeldPaths::new(rt.path(), Path::new("/srv/x"));
        snapshot_core::lock::write_private_atomic(&paths.state, &bytes, true).unwrap();
        let _ = read_state(&paths);
    }
}

/// Found by `holder_state_round_trips`: a TARGET that is not UTF-8 could not be written to
/// the state file (serde's `PathBuf` refuses it), so `start-snapshot` could not hold it.
#[test]
fn non_utf8_target_state() {
    let rt = runtime();
    let target = PathBuf::from(OsString::from_vec(b"/mnt/\xff".to_vec()));
    holder_ready(rt.path(), &target, "snapshot-0badf00d", None).unwrap();
    let paths = HeldPaths::new(rt.path(), &target);
    assert_eq!(read_state(&paths).unwrap().target, target);
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&paths.state).unwrap()).unwrap();
    assert_eq!(v["target"], serde_json::json!([47, 109, 110, 116, 47, 255]));
}
