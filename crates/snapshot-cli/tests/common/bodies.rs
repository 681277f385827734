//! Provider test bodies shared by the tiers (docs/DESIGN.md §4: one body, several fixtures): the
//! loop tier runs them on loop-device filesystems, the VM tier on LVs. A body takes mounted
//! filesystems (`MountedFs`) and the provider each is expected to get, and checks the
//! contract end to end through the real binary.
//!
//! Declare from a test file with `mod common;` and
//! `#[path = "common/bodies.rs"] mod bodies;`.
#![allow(dead_code)]

use crate::common::*;
use snapshot_testkit::MountedFs;
use std::path::PathBuf;
use std::process::ExitStatus;

/// A filesystem of a test and the provider the plan must give it.
pub struct Expect<'a> {
    pub fs: &'a dyn MountedFs,
    pub provider: &'a str,
}

/// What a body saw, for further checks by the caller.
#[derive(Debug)]
pub struct Seen {
    pub manifest: serde_json::Value,
    pub status: ExitStatus,
    pub stderr: String,
}

const BEFORE: &str = "snaptest-before";
const CHANGED: &str = "snaptest-changed";
const REMOVED: &str = "snaptest-removed";
const ADDED: &str = "snaptest-added";

/// The point-in-time check. For every filesystem (each one a DIR): files written before the
/// session; after the ready line, one is rewritten, one removed, one added in the original.
/// Under TARGET, a snapshot (`consistent: true`) still shows the old state, the bind fallback
/// the new one (it is a live view and says so). Every view directory is read-only, the
/// session exits 0 and leaves nothing under TARGET. `extra` goes before the DIRs (e.g.
/// `--lvm-size`).
pub fn point_in_time(fss: &[Expect<'_>], scratch: &Scratch, extra: &[&str]) -> Seen {
    for e in fss {
        let fs = e.fs;
        fs.write_file(BEFORE, "before").unwrap();
        fs.write_file(&format!("{CHANGED}/file"), "old").unwrap();
        fs.write_file(REMOVED, "present").unwrap();
    }
    sync();
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let mut args: Vec<&str> = vec!["--no-writers", "--json", "-v", "-t", s(&target)];
    args.extend_from_slice(extra);
    let dirs: Vec<PathBuf> = fss.iter().map(|e| e.fs.mount_point().to_owned()).collect();
    args.extend(dirs.iter().map(|d| s(d)));
    let mut run = Running::start(&args, &scratch.join("run"));
    let ready = run.ready_within(std::time::Duration::from_secs(180));
    let manifest: serde_json::Value = serde_json::from_str(&ready)
        .unwrap_or_else(|e| panic!("no JSON manifest ({e}): {ready:?}"));

    for e in fss {
        let mp = e.fs.mount_point();
        std::fs::write(mp.join(CHANGED).join("file"), "new").unwrap();
        std::fs::remove_file(mp.join(REMOVED)).unwrap();
        std::fs::write(mp.join(ADDED), "added").unwrap();
    }
    sync();

    for e in fss {
        let mp = e.fs.mount_point();
        let entry = manifest["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mount_point"] == s(mp))
            .unwrap_or_else(|| panic!("{mp:?} not in the manifest: {manifest}"));
        assert_eq!(
            entry["provider"],
            e.provider,
            "{mp:?} ({}) went to the wrong provider: {manifest}",
            e.fs.fstype()
        );
        assert_eq!(entry["fstype"], e.fs.fstype(), "{manifest}");
        let consistent = entry["consistent"].as_bool().unwrap();
        assert_eq!(consistent, e.provider != "bind", "{manifest}");
        let view = in_view(&target, mp);
        assert_eq!(
            std::fs::read_to_string(view.join(BEFORE)).unwrap(),
            "before"
        );
        let (changed, removed_present, added_present) = if consistent {
            ("old", true, false)
        } else {
            ("new", false, true)
        };
        assert_eq!(
            std::fs::read_to_string(view.join(CHANGED).join("file")).unwrap(),
            changed,
            "{mp:?} via {}: a change made after ready",
            e.provider
        );
        assert_eq!(view.join(REMOVED).exists(), removed_present, "{mp:?}");
        assert_eq!(view.join(ADDED).exists(), added_present, "{mp:?}");
        assert_read_only(&view);
        assert_read_only(&view.join(CHANGED));
    }
    assert_read_only(&target);
    let all_consistent = fss.iter().all(|e| e.provider != "bind");
    assert_eq!(manifest["consistent"], all_consistent, "{manifest}");

    let (status, stderr) = run.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_clean(&target);
    Seen {
        manifest,
        status,
        stderr,
    }
}

/// Flushes every filesystem: the changes must be on the device, where a snapshot's
/// copy-on-write sees them, not only in the page cache.
pub fn sync() {
    rustix::fs::sync();
}
