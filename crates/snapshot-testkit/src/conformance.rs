//! The provider conformance suite (docs/DESIGN.md §3.1): one body every provider runs against a
//! real filesystem it takes, the way one integration suite runs against every storage backend.
//! It checks the provider contract through the trait alone, step by step:
//!
//! 1. `probe` accepts, without side effects (mount table, the filesystem's root, the runtime
//!    directory unchanged);
//! 2. `expected` → `prepare` → `create`, and `expected` agrees with what `create` made (provider,
//!    unit, name, `consistent`) and with the probe's `consistent`;
//! 3. `mount` gives a read-only tree that, for a `consistent` snapshot, shows the filesystem as
//!    it was at `create` (a change to the origin made after is not in it);
//! 4. `verify` says valid; `remove` succeeds, again (idempotent), and leaves nothing;
//! 5. a second snapshot is removed from its journaled record alone, by a fresh process;
//! 6. a third from the record `expected` journaled before `create` (a crash between the two).
//!
//! The fresh process is this test executable run again for the same test (libtest names the
//! test's thread after it), with the record in [`FRESH_REMOVE_ENV`]: a test starts with
//! [`serve_fresh_process`], which does that removal and nothing else.
//!
//! Findings are returned, not panicked on, so that the suite's negative control (a provider
//! broken on purpose, one way per check: `crates/snapshot-cli/tests/conformance.rs`) can
//! assert which check caught it.

use snapshot_core::provider::{Created, Filesystem, Probe, SessionContext, UnitRequest};
use snapshot_core::recovery::watchdog::FreezeGuard;
use snapshot_core::sys::{self, DetachedMount};
use snapshot_core::{Mount, MountTable, Provider, Validity};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The journaled record (JSON) a fresh process is to remove.
pub const FRESH_REMOVE_ENV: &str = "SNAPSHOT_CONFORMANCE_REMOVE";

/// The file the suite writes in the origin, before and after `create`.
const PROBE_FILE: &str = "snaptest-conformance";
/// The file the suite adds to the origin after `create`.
const ADDED_FILE: &str = "snaptest-conformance-added";

/// The contract's checks, each a way a provider can fail it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// `probe` accepts the fixture's filesystem.
    Probe,
    /// `probe` changed nothing.
    ProbeSideEffects,
    /// `prepare` and `create` succeed.
    Create,
    /// `expected`, `create` and the probe agree.
    Agreement,
    /// `mount` gives a tree.
    Mount,
    /// The tree is read-only.
    ReadOnly,
    /// A `consistent` tree shows the instant of `create`.
    PointInTime,
    /// `verify` says valid.
    Verify,
    /// `remove` succeeds.
    Remove,
    /// `remove` succeeds again.
    RemoveAgain,
    /// Nothing is left after `remove`.
    Leftovers,
    /// A fresh process removes from the created record alone.
    FreshRemove,
    /// A fresh process removes from the expected record alone.
    ExpectedRemove,
}

/// A check that failed, and how.
#[derive(Debug, Clone)]
pub struct Finding {
    pub check: Check,
    pub what: String,
}

/// What of a provider's own objects named after a session id still exists, in words.
pub type Leftovers<'a> = Box<dyn Fn(&str) -> Vec<String> + 'a>;

/// The filesystem a provider is tested on.
pub struct Fixture<'a> {
    /// Its mount point (the DIR).
    pub mount_point: PathBuf,
    /// The provider's own objects named after a session id that still exist (snapshots, LVs,
    /// datasets), in words; the suite adds mounts, runtime entries and loop devices itself.
    pub leftovers: Leftovers<'a>,
}

impl std::fmt::Debug for Fixture<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("mount_point", &self.mount_point)
            .finish_non_exhaustive()
    }
}

/// In the fresh process the suite started: removes the record of [`FRESH_REMOVE_ENV`] with
/// `provider` (panicking, so the process fails, when it cannot) and returns true; the test
/// must then return at once. Elsewhere returns false.
pub fn serve_fresh_process(provider: &dyn Provider) -> bool {
    let Ok(json) = std::env::var(FRESH_REMOVE_ENV) else {
        return false;
    };
    let created: Created = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("{FRESH_REMOVE_ENV}: not a record: {e}"));
    if let Err(e) = provider.remove(&created) {
        panic!("removing {} in a fresh process: {e}", created.name);
    }
    true
}

/// Runs the suite; panics listing every finding.
pub fn assert_conforms(provider: &dyn Provider, fixture: &Fixture<'_>) {
    let findings = run(provider, fixture);
    assert!(
        findings.is_empty(),
        "provider {} fails the conformance suite:\n{}",
        provider.name(),
        findings
            .iter()
            .map(|f| format!("  {:?}: {}", f.check, f.what))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Runs the suite and returns what failed (empty: the provider conforms). Must be called from
/// the test's own thread (its name is how the fresh process finds the test).
pub fn run(provider: &dyn Provider, fixture: &Fixture<'_>) -> Vec<Finding> {
    let scratch = match crate::Scratch::new("conformance") {
        Ok(s) => s,
        Err(e) => return vec![finding(Check::Create, format!("scratch directory: {e:#}"))],
    };
    let id = session_id();
    let mut suite = Suite {
        provider,
        fixture,
        // As in a session: `<runtime dir>/<session id>`, which providers check their staging
        // directories against.
        runtime: scratch.join("run").join(&id),
        id,
        view: scratch.join("view"),
        findings: Vec::new(),
    };
    suite.run_all();
    unmount_left_under(scratch.path());
    suite.findings
}

/// Whatever a (broken) provider left mounted in the suite's scratch directory, deepest first,
/// so that the scratch directory and the fixture can go: found (and reported) already.
fn unmount_left_under(scratch: &Path) {
    let mut left = crate::mounts_under(scratch);
    left.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in left {
        if let Err(e) = sys::unmount(&p, false, true) {
            eprintln!("conformance: unmounting {p:?} a provider left: {e}");
        }
    }
}

fn finding(check: Check, what: impl Into<String>) -> Finding {
    Finding {
        check,
        what: what.into(),
    }
}

/// `snapshot-<8 hex>`, like a session's id (cleanup and leak checks look for that shape).
fn session_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "snapshot-{:08x}",
        nanos ^ std::process::id().rotate_left(16)
    )
}

struct Suite<'a> {
    provider: &'a dyn Provider,
    fixture: &'a Fixture<'a>,
    id: String,
    /// The session's runtime directory (`/run/snapshot/<id>` in a real session).
    runtime: PathBuf,
    /// Where the suite attaches what `mount` gives.
    view: PathBuf,
    findings: Vec<Finding>,
}

/// What the probe might change, to compare before and after.
#[derive(Debug, PartialEq)]
struct Observed {
    mountinfo: String,
    origin_root: Vec<std::ffi::OsString>,
    runtime: Vec<std::ffi::OsString>,
}

impl Suite<'_> {
    fn fail(&mut self, check: Check, what: impl Into<String>) {
        self.findings.push(finding(check, what));
    }

    fn run_all(&mut self) {
        if let Err(e) = self.make_dirs() {
            return self.fail(Check::Create, e);
        }
        let Some((mount, unit, consistent)) = self.probe() else {
            return;
        };
        self.in_process_cycle(&mount, &unit, consistent);
        self.fresh_process_cycle(&unit, 1, false);
        self.fresh_process_cycle(&unit, 2, true);
    }

    fn make_dirs(&self) -> Result<(), String> {
        for dir in [&self.runtime, &self.view] {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {dir:?}: {e}"))?;
        }
        for dir in [
            self.runtime.parent().unwrap_or(&self.runtime),
            &self.runtime,
        ] {
            crate::set_mode(dir, 0o700);
        }
        write_origin(&self.fixture.mount_point, PROBE_FILE, "before\n")
            .map_err(|e| format!("writing to the origin: {e}"))
    }

    fn ctx(&self, index: usize) -> SessionContext {
        SessionContext {
            id: self.id.clone(),
            index,
            runtime_dir: self.runtime.clone(),
            guard: FreezeGuard::new(None, Duration::from_secs(30)),
        }
    }

    fn observe(&self) -> Observed {
        let list = |dir: &Path| {
            let mut v: Vec<_> = std::fs::read_dir(dir)
                .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
                .unwrap_or_default();
            v.sort();
            v
        };
        Observed {
            mountinfo: std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
            origin_root: list(&self.fixture.mount_point),
            runtime: list(&self.runtime),
        }
    }

    /// Step 1: the fixture's mount, the probe's unit request and its `consistent`.
    fn probe(&mut self) -> Option<(Mount, UnitRequest, bool)> {
        let table = match MountTable::read() {
            Ok(t) => t,
            Err(e) => {
                self.fail(Check::Probe, format!("reading the mount table: {e}"));
                return None;
            }
        };
        let Some(mount) = table.mounted_at(&self.fixture.mount_point).cloned() else {
            self.fail(
                Check::Probe,
                format!("nothing mounted at {:?}", self.fixture.mount_point),
            );
            return None;
        };
        let before = self.observe();
        let probe = self.provider.probe(&Filesystem {
            mount: mount.clone(),
        });
        if self.observe() != before {
            self.fail(
                Check::ProbeSideEffects,
                "the mount table, the filesystem's root or the runtime directory changed",
            );
        }
        match probe {
            Probe::Accept {
                unit,
                data,
                consistent,
            } => {
                let request = UnitRequest {
                    unit,
                    data,
                    mounts: vec![mount.clone()],
                };
                Some((mount, request, consistent))
            }
            Probe::Decline(reason) => {
                self.fail(Check::Probe, format!("declined: {reason}"));
                None
            }
        }
    }

    /// `expected`, `prepare`, `create` for unit number `index`: (expected, created). On failure
    /// the expected record is removed, as cleanup would.
    fn make(&mut self, unit: &UnitRequest, index: usize) -> Option<(Created, Created)> {
        let ctx = self.ctx(index);
        let expected = self.provider.expected(unit, &ctx);
        let made = self
            .provider
            .prepare(unit, &ctx)
            .and_then(|()| self.provider.create(unit, &ctx));
        match made {
            Ok(created) => Some((expected, created)),
            Err(e) => {
                self.fail(Check::Create, format!("unit {index}: {e}"));
                let _ = self.provider.remove(&expected);
                None
            }
        }
    }

    /// Steps 2–4.
    fn in_process_cycle(&mut self, mount: &Mount, unit: &UnitRequest, consistent: bool) {
        let Some((expected, created)) = self.make(unit, 0) else {
            return;
        };
        self.check_agreement(&expected, &created, consistent);
        if let Err(e) = change_origin(&self.fixture.mount_point) {
            self.fail(
                Check::Create,
                format!("changing the origin after create: {e}"),
            );
        }
        self.check_mount(&created, mount);
        if let Validity::Invalid(reason) = self.provider.verify(&created) {
            self.fail(Check::Verify, reason);
        }
        if let Err(e) = self.provider.remove(&created) {
            self.fail(Check::Remove, e.to_string());
        }
        if let Err(e) = self.provider.remove(&created) {
            self.fail(Check::RemoveAgain, e.to_string());
        }
        self.check_nothing_left(Check::Leftovers);
    }

    fn check_agreement(&mut self, expected: &Created, created: &Created, consistent: bool) {
        let mut differ = Vec::new();
        if expected.provider != created.provider || created.provider != self.provider.name() {
            differ.push(format!(
                "provider {:?} / {:?} (the provider is {:?})",
                expected.provider,
                created.provider,
                self.provider.name()
            ));
        }
        if expected.unit != created.unit {
            differ.push(format!("unit {:?} / {:?}", expected.unit, created.unit));
        }
        if expected.name != created.name || !created.name.starts_with(&self.id) {
            differ.push(format!(
                "name {:?} / {:?} (must carry the session id {})",
                expected.name, created.name, self.id
            ));
        }
        if expected.consistent != created.consistent || created.consistent != consistent {
            differ.push(format!(
                "consistent: probe {consistent}, expected {}, created {}",
                expected.consistent, created.consistent
            ));
        }
        if !differ.is_empty() {
            self.fail(
                Check::Agreement,
                format!("expected vs created: {}", differ.join("; ")),
            );
        }
    }

    /// Step 3: what `mount` gives, attached at the suite's view directory.
    fn check_mount(&mut self, created: &Created, mount: &Mount) {
        let tree = match self.provider.mount(created, mount) {
            Ok(t) => t,
            Err(e) => return self.fail(Check::Mount, e.to_string()),
        };
        if let Err(e) = self.attach_and_look(tree, created.consistent) {
            self.fail(Check::Mount, e);
        }
    }

    fn attach_and_look(&mut self, tree: DetachedMount, consistent: bool) -> Result<(), String> {
        let at = sys::open_dir_nofollow(&self.view).map_err(|e| format!("{:?}: {e}", self.view))?;
        let root = tree
            .attach(at.as_fd())
            .map_err(|e| format!("attaching at {:?}: {e}", self.view))?;
        drop((root, at));
        let probe = self.view.join("snaptest-conformance-write");
        match std::fs::write(&probe, "x") {
            Ok(()) => {
                let _ = std::fs::remove_file(&probe);
                self.fail(
                    Check::ReadOnly,
                    "a file could be written in the mounted tree",
                );
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::ROFS.raw_os_error()) => {}
            Err(e) => self.fail(
                Check::ReadOnly,
                format!("writing failed, but not EROFS: {e}"),
            ),
        }
        let seen = std::fs::read_to_string(self.view.join(PROBE_FILE)).unwrap_or_default();
        let added = self.view.join(ADDED_FILE).exists();
        if consistent && (seen != "before\n" || added) {
            self.fail(
                Check::PointInTime,
                format!(
                    "says consistent, but shows the origin after create ({PROBE_FILE}: {seen:?}, \
                     {ADDED_FILE} there: {added})"
                ),
            );
        }
        sys::unmount(&self.view, false, false)
            .map_err(|e| format!("unmounting {:?}: {e}", self.view))
    }

    /// Steps 5 and 6: a unit made here, removed by a fresh process from the created record
    /// (or, `from_expected`, from the record `expected` gave before `create`).
    fn fresh_process_cycle(&mut self, unit: &UnitRequest, index: usize, from_expected: bool) {
        let check = if from_expected {
            Check::ExpectedRemove
        } else {
            Check::FreshRemove
        };
        let Some((expected, created)) = self.make(unit, index) else {
            return;
        };
        let record = if from_expected { &expected } else { &created };
        if let Err(e) = remove_in_fresh_process(record) {
            self.fail(check, e);
            // Leave nothing behind for the fixture's teardown, whatever the provider did.
            let _ = self.provider.remove(&created);
            return;
        }
        self.check_nothing_left(check);
    }

    fn check_nothing_left(&mut self, check: Check) {
        let mut left = (self.fixture.leftovers)(&self.id);
        left.extend(
            crate::mounts_under(&self.runtime)
                .into_iter()
                .map(|p| format!("mount {p:?}")),
        );
        if let Ok(rd) = std::fs::read_dir(&self.runtime) {
            left.extend(rd.filter_map(|e| e.ok()).map(|e| format!("{:?}", e.path())));
        }
        let mentions: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&self.id))
            .map(|l| format!("mountinfo: {l}"))
            .collect();
        left.extend(mentions);
        if !left.is_empty() {
            self.fail(check, format!("left after remove: {}", left.join("; ")));
        }
    }
}

/// Runs this test again in a new process, which removes `record` ([`serve_fresh_process`]).
fn remove_in_fresh_process(record: &Created) -> Result<(), String> {
    let test = std::thread::current()
        .name()
        .map(str::to_owned)
        .ok_or("the suite must run on the test's own thread (it is named after the test)")?;
    let exe = std::env::current_exe().map_err(|e| format!("this test executable: {e}"))?;
    let json = serde_json::to_string(record).map_err(|e| e.to_string())?;
    let out = std::process::Command::new(exe)
        .args([&test, "--exact", "--test-threads=1", "--nocapture"])
        .env(FRESH_REMOVE_ENV, json)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("running the test {test:?} again: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.contains("1 passed") {
        return Err(format!(
            "the fresh process ({}) failed to remove {}: {}{}",
            out.status,
            record.name,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn write_origin(mount_point: &Path, name: &str, content: &str) -> std::io::Result<()> {
    let path = mount_point.join(name);
    std::fs::write(&path, content)?;
    std::fs::File::open(&path)?.sync_all()
}

/// After `create`: the file rewritten, another added — neither may show in a snapshot.
fn change_origin(mount_point: &Path) -> std::io::Result<()> {
    write_origin(mount_point, PROBE_FILE, "after\n")?;
    write_origin(mount_point, ADDED_FILE, "added\n")
}

/// Removes what the suite wrote in the origin (a fixture reused by other tests).
pub fn tidy_origin(mount_point: &Path) {
    for name in [PROBE_FILE, ADDED_FILE] {
        let _ = std::fs::remove_file(mount_point.join(name));
    }
}
