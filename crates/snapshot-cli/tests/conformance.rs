//! The provider conformance suite (`snapshot_testkit::conformance`, docs/DESIGN.md §3.1) for
//! the four providers this machine's kernel can run — bind, script, btrfs, freeze — on loop
//! devices (loop tier: root); lvm, lvm-thin and zfs run it in the guest (tests/lvm.rs,
//! tests/zfs.rs). Then the suite's negative control: the btrfs provider broken on purpose, one
//! way per check, each of which the suite must catch (and the unbroken one pass).

mod common;

use common::*;
use rstest::rstest;
use snapshot_core::provider::{Created, Filesystem, Probe, SessionContext, UnitRequest};
use snapshot_core::sys::DetachedMount;
use snapshot_core::{Mount, Provider, ProviderError, Validity};
use snapshot_providers::{BindProvider, BtrfsProvider, FreezeProvider, ScriptProvider};
use snapshot_testkit::conformance::{self, Check, Fixture};
use std::path::Path;
use std::sync::Mutex;

/// btrfs subvolumes named after the session.
fn btrfs_snapshots(mount_point: &Path, session: &str) -> Vec<String> {
    snapshot_testkit::run("btrfs", &["subvolume", "list", "-a", s(mount_point)])
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(session))
        .map(|l| format!("subvolume {l}"))
        .collect()
}

fn btrfs_fixture(mount_point: &Path) -> Fixture<'_> {
    Fixture {
        mount_point: mount_point.to_owned(),
        leftovers: Box::new(move |session| btrfs_snapshots(mount_point, session)),
    }
}

#[test]
fn btrfs_conforms() {
    if conformance::serve_fresh_process(&BtrfsProvider) || !require_privileges("btrfs_conforms") {
        return;
    }
    let scratch = Scratch::new("conf-btrfs").unwrap();
    let m = scratch.join("m");
    let _fs = LoopFs::new("conf-btrfs", FsKind::Btrfs, 128, &m).unwrap();
    conformance::assert_conforms(&BtrfsProvider, &btrfs_fixture(&m));
}

#[test]
fn bind_conforms() {
    if conformance::serve_fresh_process(&BindProvider) || !require_privileges("bind_conforms") {
        return;
    }
    let scratch = Scratch::new("conf-bind").unwrap();
    let m = scratch.join("m");
    let _fs = LoopFs::new("conf-bind", FsKind::Ext4, 16, &m).unwrap();
    let fixture = Fixture {
        mount_point: m.clone(),
        leftovers: Box::new(|_| Vec::new()),
    };
    conformance::assert_conforms(&BindProvider, &fixture);
}

/// XFS and ext4 on loop devices whose backing files lie on a btrfs filesystem: the freeze
/// provider clones them (reflink) inside the frozen window.
#[rstest]
#[case::xfs(FsKind::Xfs)]
#[case::ext4(FsKind::Ext4)]
fn freeze_conforms(#[case] kind: FsKind) {
    let provider = FreezeProvider::new(None);
    if conformance::serve_fresh_process(&provider) || !require_privileges("freeze_conforms") {
        return;
    }
    let scratch = Scratch::new("conf-freeze").unwrap();
    let base = scratch.join("base");
    let _base = LoopFs::new("conf-fz-base", FsKind::Btrfs, 1024, &base).unwrap();
    let m = scratch.join("m");
    let _fs = LoopFs::new_in(&base, "conf-fz", kind, 0, &m).unwrap();
    let fixture = Fixture {
        mount_point: m.clone(),
        leftovers: Box::new(|session| {
            let clones = std::fs::read_dir(&base)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.contains(session))
                        .map(|n| format!("clone file {n}"))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            let loops = snapshot_testkit::loops_backed_by(&base.join(".snapshot-"))
                .into_iter()
                .map(|l| format!("loop device {l:?}"));
            clones.into_iter().chain(loops).collect()
        }),
    };
    conformance::assert_conforms(&provider, &fixture);
}

/// A provider script of the original convention: it copies SOURCE beside TARGET and
/// bind-mounts the copy read-only at "$TARGET$SOURCE"; `remove` undoes both.
const COPYING_SCRIPT: &str = r#"#!/bin/sh
copy="$3.copy"
case "$1" in
  snapshot)
    mkdir "$copy" && cp -a "$2/." "$copy/" || exit 4
    mount --bind "$copy" "$3$2" || exit 5
    mount -o remount,bind,ro "$3$2" || { umount "$3$2"; exit 6; } ;;
  remove)
    if mountpoint -q "$3$2"; then umount "$3$2" || exit 7; fi
    rm -rf "$copy" ;;
  *) exit 2 ;;
esac
"#;

#[test]
fn script_conforms() {
    // The fresh process removes through the journaled script path, whatever directory its
    // provider was made with.
    if conformance::serve_fresh_process(&ScriptProvider::new("/nonexistent"))
        || !require_privileges("script_conforms")
    {
        return;
    }
    let scratch = Scratch::new("conf-script").unwrap();
    snapshot_testkit::set_mode(scratch.path(), 0o755);
    let scripts = scratch.join("filesystems.d");
    std::fs::create_dir(&scripts).unwrap();
    snapshot_testkit::set_mode(&scripts, 0o755);
    let script = scripts.join("50-copy");
    std::fs::write(&script, COPYING_SCRIPT).unwrap();
    snapshot_testkit::set_mode(&script, 0o755);
    let m = scratch.join("m");
    let _fs = LoopFs::new("conf-script", FsKind::Ext4, 16, &m).unwrap();
    let fixture = Fixture {
        mount_point: m.clone(),
        leftovers: Box::new(|_| Vec::new()),
    };
    conformance::assert_conforms(&ScriptProvider::new(&scripts), &fixture);
}

/// How [`Broken`] breaks the btrfs provider: one way per check of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// None: the positive control.
    Sound,
    /// `probe` writes a file in the filesystem it looks at.
    ProbeWrites,
    /// `expected` names another object than `create` makes.
    ExpectedElsewhere,
    /// `mount` gives the live filesystem while saying consistent.
    LiveMount,
    /// `mount` gives a writable tree.
    WritableMount,
    /// `verify` says invalid.
    NeverValid,
    /// A second `remove` fails.
    NotIdempotent,
    /// `remove` says done and removes nothing.
    Forgetful,
    /// `remove` works only in the process that created (it needs what it remembers).
    NeedsMemory,
}

/// The btrfs provider with one fault.
#[derive(Debug)]
struct Broken {
    fault: Fault,
    removed: Mutex<Vec<String>>,
    made_here: Mutex<Vec<String>>,
}

impl Broken {
    fn new(fault: Fault) -> Self {
        Self {
            fault,
            removed: Mutex::new(Vec::new()),
            made_here: Mutex::new(Vec::new()),
        }
    }
}

impl Provider for Broken {
    fn name(&self) -> &str {
        BtrfsProvider.name()
    }

    fn probe(&self, fs: &Filesystem) -> Probe {
        if self.fault == Fault::ProbeWrites {
            let _ = std::fs::write(fs.mount.mount_point.join("snaptest-probe-was-here"), "x");
        }
        BtrfsProvider.probe(fs)
    }

    fn expected(&self, unit: &UnitRequest, ctx: &SessionContext) -> Created {
        let mut e = BtrfsProvider.expected(unit, ctx);
        if self.fault == Fault::ExpectedElsewhere {
            e.name.push_str("-elsewhere");
            if let Some(obj) = e.data.as_object_mut() {
                for v in obj.values_mut() {
                    if let Some(s) = v.as_str() {
                        *v = format!("{s}-elsewhere").into();
                    }
                }
            }
        }
        e
    }

    fn prepare(&self, unit: &UnitRequest, ctx: &SessionContext) -> Result<(), ProviderError> {
        BtrfsProvider.prepare(unit, ctx)
    }

    fn create(&self, unit: &UnitRequest, ctx: &SessionContext) -> Result<Created, ProviderError> {
        let c = BtrfsProvider.create(unit, ctx)?;
        self.made_here.lock().unwrap().push(c.name.clone());
        Ok(c)
    }

    fn mount(&self, created: &Created, mount: &Mount) -> Result<DetachedMount, ProviderError> {
        let live = || {
            snapshot_core::sys::open_dir_nofollow(&mount.mount_point)
                .map_err(|e| ProviderError::io("opening the origin", e))
        };
        match self.fault {
            Fault::LiveMount => {
                let fd = live()?;
                DetachedMount::clone_readonly(std::os::fd::AsFd::as_fd(&fd))
                    .map_err(|e| ProviderError::io("cloning", e))
            }
            Fault::WritableMount => {
                let fd = live()?;
                DetachedMount::clone_live(std::os::fd::AsFd::as_fd(&fd))
                    .map_err(|e| ProviderError::io("cloning", e))
            }
            _ => BtrfsProvider.mount(created, mount),
        }
    }

    fn verify(&self, created: &Created) -> Validity {
        match self.fault {
            Fault::NeverValid => Validity::Invalid("broken on purpose".into()),
            _ => BtrfsProvider.verify(created),
        }
    }

    fn remove(&self, created: &Created) -> Result<(), ProviderError> {
        match self.fault {
            Fault::Forgetful => return Ok(()),
            Fault::NeedsMemory if !self.made_here.lock().unwrap().contains(&created.name) => {
                return Err(ProviderError::Other("not made by this process".into()))
            }
            Fault::NotIdempotent if self.removed.lock().unwrap().contains(&created.name) => {
                return Err(ProviderError::Other("removed already".into()))
            }
            _ => {}
        }
        BtrfsProvider.remove(created)?;
        self.removed.lock().unwrap().push(created.name.clone());
        Ok(())
    }
}

/// Each fault is caught by the check made for it (and the sound provider passes): a check
/// that cannot fail would show here.
#[rstest]
#[case::sound(Fault::Sound, None)]
#[case::probe_writes(Fault::ProbeWrites, Some(Check::ProbeSideEffects))]
#[case::expected_elsewhere(Fault::ExpectedElsewhere, Some(Check::Agreement))]
#[case::live_mount(Fault::LiveMount, Some(Check::PointInTime))]
#[case::writable_mount(Fault::WritableMount, Some(Check::ReadOnly))]
#[case::never_valid(Fault::NeverValid, Some(Check::Verify))]
#[case::not_idempotent(Fault::NotIdempotent, Some(Check::RemoveAgain))]
#[case::forgetful(Fault::Forgetful, Some(Check::Leftovers))]
#[case::needs_memory(Fault::NeedsMemory, Some(Check::FreshRemove))]
fn negative_control(#[case] fault: Fault, #[case] caught_by: Option<Check>) {
    let provider = Broken::new(fault);
    if conformance::serve_fresh_process(&provider) || !require_privileges("negative_control") {
        return;
    }
    let scratch = Scratch::new("conf-neg").unwrap();
    let m = scratch.join("m");
    let fs = LoopFs::new("conf-neg", FsKind::Btrfs, 128, &m).unwrap();
    let findings = conformance::run(&provider, &btrfs_fixture(&m));
    let checks: Vec<Check> = findings.iter().map(|f| f.check).collect();
    match caught_by {
        None => assert!(findings.is_empty(), "the sound provider: {findings:?}"),
        Some(check) => assert!(
            checks.contains(&check),
            "{fault:?} must be caught by {check:?}; found {findings:?}"
        ),
    }
    // Whatever the broken provider left: its snapshots go with the filesystem.
    drop(fs);
}
