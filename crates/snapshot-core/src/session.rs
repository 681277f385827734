//! The session engine: validate → plan → writers freeze → create (in parallel) → writers thaw
//! → build the view → (the caller holds) → teardown → verify nothing is left.

use crate::lock::{LockError, TargetLock};
use crate::mountinfo::{MountInfoError, MountTable};
use crate::plan::{Plan, PlanError};
use crate::provider::{
    Created, Filesystem, Probe, Provider, ProviderError, SessionContext, UnitRequest, Validity,
};
use crate::recovery::journal::{
    FrozenWriters, Journal, JournalError, ObjectState, Record, SnapshotEntry,
};
use crate::recovery::watchdog::{FreezeGuard, Message, Watchdog};
use crate::validate::{check_target_empty, validate, ValidationError};
use crate::view::{View, ViewError};
use crate::writers::{WriterConfig, WriterEnv, WriterError, Writers};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What to snapshot and how.
#[derive(Debug, Clone)]
pub struct SessionRequest {
    pub dirs: Vec<PathBuf>,
    pub target: PathBuf,
    /// Refuse (before anything is frozen) when a filesystem would only get the bind fallback.
    pub require_snapshot: bool,
    /// `None`: run no writer hooks.
    pub writers: Option<WriterConfig>,
    /// Locks and per-session scratch space (`/run/snapshot`).
    pub runtime_dir: PathBuf,
    /// Journals (`/var/lib/snapshot`).
    pub state_dir: PathBuf,
    /// The executable to start as the freeze watchdog (with [`WATCHDOG_FLAG`]); `None`: none.
    pub watchdog_exe: Option<PathBuf>,
    /// Testing aid: die or stop at a named step (see [`Fault`]).
    pub fault: Option<Fault>,
    /// The longest a filesystem may stay frozen by a provider's FIFREEZE (the watchdog thaws
    /// it then).
    pub freeze_timeout: Duration,
    /// `--barrier`: told once every writer has frozen, before any snapshot is made.
    pub barrier: Option<std::sync::Arc<dyn Barrier>>,
}

/// The barrier of `--barrier` (docs/DESIGN.md §2.5): [`frozen`](Self::frozen) is called once
/// every writer has frozen and before any snapshot is made; the session makes its snapshots
/// when it returns `Ok` (the coordinator said `go`), and thaws and removes everything when it
/// returns `Err`. It must return within its own bound: the writers stay frozen meanwhile.
pub trait Barrier: Send + Sync + std::fmt::Debug {
    fn frozen(&self) -> Result<(), BarrierError>;
}

/// Why the barrier did not let the session go on.
#[derive(Debug, thiserror::Error)]
pub enum BarrierError {
    #[error("the coordinator said abort at the barrier")]
    Aborted,
    #[error("the coordinator went away (end of input) at the barrier")]
    Gone,
    #[error("no go at the barrier within {0:?} (--barrier-timeout)")]
    TimedOut(Duration),
    #[error("at the barrier the coordinator sent {0:?}, not go or abort")]
    Unexpected(String),
    #[error("talking to the coordinator at the barrier: {0}")]
    Io(std::io::Error),
    #[error("interrupted by signal {0} at the barrier")]
    Interrupted(i32),
}

/// The hidden flag that makes the tool's executable run [`crate::recovery::watchdog::run`].
pub const WATCHDOG_FLAG: &str = "--watchdog";

/// The steps where a [`Fault`] can strike.
pub const FAULT_STEPS: [&str; 5] = [
    "after-writers-freeze",
    "after-create",
    "during-mount",
    "after-ready",
    "mid-teardown",
];

/// Testing aid (crash-safety tests): SIGKILL (or SIGSTOP) the process itself at a step. The
/// command line honours it only with a hidden flag *and* an environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub step: String,
    /// SIGSTOP instead of SIGKILL.
    pub stop: bool,
}

impl Fault {
    /// `STEP`, `STEP:kill` or `STEP:stop`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (step, action) = s.split_once(':').unwrap_or((s, "kill"));
        if !FAULT_STEPS.contains(&step) {
            return Err(format!(
                "unknown fault step {step:?} (one of {})",
                FAULT_STEPS.join(", ")
            ));
        }
        let stop = match action {
            "kill" => false,
            "stop" => true,
            _ => return Err(format!("unknown fault action {action:?} (kill or stop)")),
        };
        Ok(Self {
            step: step.to_owned(),
            stop,
        })
    }

    /// Strikes when `fault` names `step`.
    pub fn strike(fault: Option<&Fault>, step: &str) {
        let Some(f) = fault.filter(|f| f.step == step) else {
            return;
        };
        let sig = if f.stop {
            rustix::process::Signal::STOP
        } else {
            rustix::process::Signal::KILL
        };
        log::warn!("fault injection: {sig:?} at {step}");
        let _ = rustix::process::kill_process(rustix::process::getpid(), sig);
    }
}

/// Failure classes; the command line maps each to a distinct exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// Bad DIR or TARGET.
    Usage,
    /// Not root.
    NotPermitted,
    /// Another session holds the target.
    Busy,
    /// A filesystem cannot be snapshotted and `--require-snapshot` was given.
    Unavailable,
    /// Creating a snapshot or building the view failed.
    SnapshotFailed,
    /// A writer failed `freeze` under `--strict-writers`.
    WriterFailed,
    /// Something was left behind.
    TeardownIncomplete,
    /// A signal arrived before the view was ready (its number).
    Interrupted(i32),
    /// The barrier did not say go (abort, end of input, timeout).
    Aborted,
    /// Anything else (reading the mount table, the runtime directory…).
    Internal,
}

/// Why a session did not start (or a part of `run --in-place` could not be made). Each
/// variant keeps what failed, typed; [`kind`](Self::kind) is its class, which the command line
/// maps to an exit status. The messages say the cause; nothing is also chained as a source,
/// so a cause shows once however the error is printed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A DIR or TARGET that cannot be used.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A path `run --in-place` was to bind live (`--writable`) that cannot be.
    #[error("{path:?}: {reason}")]
    LivePath { path: PathBuf, reason: String },
    #[error("must run as root: snapshots and mounts need CAP_SYS_ADMIN")]
    NotRoot,
    /// Another live session holds the target (seen before taking the lock).
    #[error("target {0:?} is in use by another snapshot session")]
    TargetInUse(PathBuf),
    /// The target lock: held by another session ([`LockError::Busy`]), or not to be had.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Only the bind fallback takes these mount points, and `--require-snapshot` was given.
    #[error(
        "no provider can snapshot {} (--require-snapshot); `snapshot plan` tells why",
        quoted(.0)
    )]
    SnapshotRequired(Vec<PathBuf>),
    /// `Provider::prepare` failed.
    #[error("preparing {provider}: {error}")]
    Prepare {
        provider: String,
        error: ProviderError,
    },
    /// Units that were not created, each with its reason.
    #[error("{}", join(.0))]
    Create(Vec<UnitFailure>),
    /// Placing or checking a mount of the view.
    #[error(transparent)]
    View(#[from] ViewError),
    /// A provider could not mount its snapshot for the view.
    #[error("mounting {snapshot}: {error}")]
    Mount {
        snapshot: String,
        error: ProviderError,
    },
    /// The view, or the part of it `run --in-place` needs, cannot be had (what and why).
    #[error("{0}")]
    ViewUnavailable(String),
    /// A writer failed `freeze` under `--strict-writers` (or the trust rule).
    #[error(transparent)]
    WriterFreeze(WriterError),
    /// The writer directories could not be read.
    #[error(transparent)]
    Writers(WriterError),
    /// A signal (its number) arrived before the view was ready.
    #[error("interrupted by signal {0} before the view was ready")]
    Interrupted(i32),
    /// `--barrier`: no go.
    #[error(transparent)]
    Barrier(#[from] BarrierError),
    #[error(transparent)]
    MountTable(#[from] MountInfoError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("the liveness token of session {session}: {error}")]
    Liveness {
        session: String,
        error: std::io::Error,
    },
    #[error("creating {path:?}: {error}")]
    RuntimeDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("starting the freeze watchdog {exe:?}: {error}")]
    Watchdog { exe: PathBuf, error: std::io::Error },
    /// A failed start whose undoing left things behind.
    #[error("{error}; and undoing it left things behind: {}", .problems.join("; "))]
    Undone {
        error: Box<SessionError>,
        problems: Vec<String>,
    },
}

impl SessionError {
    /// The failure's class (the command line's exit status).
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Invalid(_) | Self::LivePath { .. } => FailureKind::Usage,
            Self::NotRoot => FailureKind::NotPermitted,
            Self::TargetInUse(_) | Self::Lock(LockError::Busy { .. }) => FailureKind::Busy,
            Self::SnapshotRequired(_) => FailureKind::Unavailable,
            Self::Prepare { .. }
            | Self::Create(_)
            | Self::View(_)
            | Self::Mount { .. }
            | Self::ViewUnavailable(_) => FailureKind::SnapshotFailed,
            Self::WriterFreeze(_) => FailureKind::WriterFailed,
            Self::Interrupted(sig) => FailureKind::Interrupted(*sig),
            Self::Barrier(BarrierError::Interrupted(sig)) => FailureKind::Interrupted(*sig),
            Self::Barrier(_) => FailureKind::Aborted,
            Self::Undone { .. } => FailureKind::TeardownIncomplete,
            Self::Lock(LockError::Io { .. })
            | Self::Writers(_)
            | Self::MountTable(_)
            | Self::Plan(_)
            | Self::Journal(_)
            | Self::Liveness { .. }
            | Self::RuntimeDir { .. }
            | Self::Watchdog { .. } => FailureKind::Internal,
        }
    }
}

/// Why one unit was not created (a part of [`SessionError::Create`]).
#[derive(Debug, thiserror::Error)]
pub enum UnitFailure {
    /// Its provider declined at creation (a `filesystems.d` script), and no other takes it.
    #[error("{mount_point:?}: {provider} declined ({reason}) and no provider is left")]
    NoneLeft {
        mount_point: PathBuf,
        provider: String,
        reason: String,
    },
    /// Its provider declined, and only the bind fallback is left under `--require-snapshot`.
    #[error(
        "{mount_point:?}: {provider} declined ({reason}); only {fallback} is left \
         (--require-snapshot)"
    )]
    OnlyFallback {
        mount_point: PathBuf,
        provider: String,
        reason: String,
        fallback: String,
    },
    #[error("{mount_point:?}: {provider} snapshot failed: {error}")]
    Failed {
        mount_point: PathBuf,
        provider: String,
        error: Box<ProviderError>,
    },
    #[error("snapshot creation panicked")]
    Panicked,
}

/// `"/a", "/b"`: mount points for a message.
fn quoted(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn join(failures: &[UnitFailure]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Set by the caller's signal handler (to the signal number) to stop a session that is starting.
/// An `AtomicUsize` so that a signal handler can set it directly (signal-hook's
/// `register_usize`): the session sees a signal at its next step, with no thread in between.
pub type Interrupt = std::sync::atomic::AtomicUsize;

/// What is mounted where, printed with `--json` when the view is ready.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub session: String,
    pub target: PathBuf,
    /// True when every mount is a point-in-time snapshot.
    pub consistent: bool,
    pub mounts: Vec<ManifestMount>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ManifestMount {
    /// Where the view shows it (TARGET + mount point).
    pub path: PathBuf,
    /// The original mount point.
    pub mount_point: PathBuf,
    /// The DIRs it holds.
    pub dirs: Vec<PathBuf>,
    pub fstype: String,
    pub source: String,
    pub provider: String,
    /// Name of the snapshot object (carries the session id).
    pub snapshot: String,
    /// False for the bind fallback: a live view, not a point in time.
    pub consistent: bool,
    /// When its unit's snapshot was made (for `--barrier` across machines: compare hosts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instant: Option<CreationInstant>,
}

/// Clock time (seconds since the Unix epoch) at which a unit's creation started and ended:
/// the snapshot's instant lies between the two.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CreationInstant {
    pub start: f64,
    pub end: f64,
}

impl CreationInstant {
    fn between(start: std::time::SystemTime, end: std::time::SystemTime) -> Option<Self> {
        let secs = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs_f64())
        };
        Some(Self {
            start: secs(start)?,
            end: secs(end)?,
        })
    }
}

/// Timings of the start, for logs and the bench.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Timings {
    /// Startup cleanup and planning (one mount-table read, probes).
    pub plan: Duration,
    /// First writer `freeze` sent → last writer `thaw` returned.
    pub frozen: Duration,
    /// Snapshot creation alone (inside the frozen window).
    pub create: Duration,
    /// Building the view.
    pub mount: Duration,
}

/// What teardown found.
#[derive(Debug, Default, Serialize)]
pub struct TeardownReport {
    /// Snapshots that did not stay valid for the whole hold, with the reason.
    pub invalid: Vec<String>,
    /// Things that could not be undone or were found left behind.
    pub problems: Vec<String>,
}

/// A live session: the view is mounted under the target until [`Session::teardown`].
#[derive(Debug)]
pub struct Session<'p> {
    providers: &'p [Box<dyn Provider>],
    pub id: String,
    request: SessionRequest,
    dirs: Vec<PathBuf>,
    /// Device and inode of each DIR as validated (for `run --in-place`).
    dir_identities: Vec<(u64, u64)>,
    target: PathBuf,
    /// The TARGET directory as validated; the view's tmpfs goes on it.
    target_dir: std::os::fd::OwnedFd,
    plan: Plan,
    /// Per unit of the plan: the provider that took it and what it made.
    created: Vec<Option<(usize, Created)>>,
    view: Option<View>,
    runtime: PathBuf,
    /// Per unit: what `expected` said would be made (journaled before creation), so a failed
    /// or half-done creation is still removed.
    intents: Vec<Option<(usize, Created)>>,
    /// Per unit: the clock time its creation started and ended (the manifest's instant).
    instants: Vec<Option<CreationInstant>>,
    journal: Option<Journal>,
    /// Held for the session's life: tells every cleanup, in any state directory, that this
    /// session's objects are not orphans.
    _token: crate::recovery::liveness::LivenessToken,
    /// Handed to providers inside the frozen window.
    guard: FreezeGuard,
    pub timings: Timings,
    _lock: TargetLock,
}

/// `snapshot-` + 8 random hex digits: the prefix of every object a session creates.
pub fn new_session_id() -> String {
    use std::io::Read;
    let mut b = [0u8; 4];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if ok.is_err() {
        // Unlikely; fall back to pid and time, still unique enough on one machine.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        b = (std::process::id() ^ t).to_le_bytes();
    }
    format!("snapshot-{:02x}{:02x}{:02x}{:02x}", b[0], b[1], b[2], b[3])
}

/// Validates the request and returns the plan, without side effects (`snapshot plan`).
pub fn plan_request(
    request: &SessionRequest,
    providers: &[Box<dyn Provider>],
) -> Result<Plan, SessionError> {
    let v = validate(&request.dirs, &request.target)?;
    // Only the DIRs' mounts, like a session's normal start.
    let table = MountTable::for_paths(&v.dirs)?;
    Ok(crate::plan::plan(
        &v.dirs,
        &table,
        crate::sys::mount_id,
        providers,
    )?)
}

impl<'p> Session<'p> {
    /// Runs every step up to a ready view — preflight, recover, plan, then the session's own
    /// steps ([`run_steps`](Self::run_steps)). On failure everything made so far is undone.
    pub fn start(
        request: SessionRequest,
        providers: &'p [Box<dyn Provider>],
        interrupt: &Interrupt,
    ) -> Result<Self, SessionError> {
        let mut v = validate(&request.dirs, &request.target)?;
        require_root()?;
        let target_was_full = check_target_at_first_look(&request, &mut v)?;
        let lock = lock_target(&request, &v)?;
        let t = Instant::now();
        let (table, lookup) = recover_or_look_up(&request, &v, providers, target_was_full)?;
        let target_dir = hold_target(&mut v)?;
        let plan = crate::plan::plan(&v.dirs, &table, crate::sys::mount_id, providers)?;
        let plan_time = t.elapsed();
        log_plan(&plan, plan_time, &lookup, table.mounts.len());
        refuse_or_warn_unsnapshotted(&plan, request.require_snapshot)?;

        let id = new_session_id();
        // Root's alone (`/run/snapshot/live`): nobody else can make the session look alive.
        let token = crate::recovery::liveness::LivenessToken::acquire(&id).map_err(|error| {
            SessionError::Liveness {
                session: id.clone(),
                error,
            }
        })?;
        log::debug!("session {id}");
        let units = plan.units.len();
        let mut session = Session {
            providers,
            runtime: request.runtime_dir.join(&id),
            id,
            dir_identities: v.dir_identities,
            dirs: v.dirs,
            target: v.target,
            target_dir,
            request,
            plan,
            created: vec![None; units],
            view: None,
            intents: vec![None; units],
            instants: vec![None; units],
            journal: None,
            _token: token,
            guard: FreezeGuard::default(),
            timings: Timings {
                plan: plan_time,
                ..Timings::default()
            },
            _lock: lock,
        };
        match session.run_steps(interrupt) {
            Ok(()) => Ok(session),
            Err(e) => Err(session.undo(e)),
        }
    }

    /// Tears down what a failed start made; `e` then also says what could not be undone.
    fn undo(self, e: SessionError) -> SessionError {
        let report = self.teardown();
        for p in &report.problems {
            log::error!("while undoing: {p}");
        }
        if report.problems.is_empty() {
            return e;
        }
        SessionError::Undone {
            error: Box::new(e),
            problems: report.problems,
        }
    }

    fn check_interrupt(interrupt: &Interrupt) -> Result<(), SessionError> {
        match interrupt.load(Ordering::SeqCst) as i32 {
            0 => Ok(()),
            sig => Err(SessionError::Interrupted(sig)),
        }
    }

    /// The session's steps once planned: journal intents, prepare, the frozen window
    /// (writers freeze → create → writers thaw), record what was made, build the view.
    fn run_steps(&mut self, interrupt: &Interrupt) -> Result<(), SessionError> {
        Self::check_interrupt(interrupt)?;
        let writers = self.discover_writers()?;
        let frozen = self.journal_intents(writers.as_ref())?;
        self.prepare_units()?;
        let watchdog = self.start_watchdog(frozen.as_ref())?;
        let created = self.frozen_window(writers.as_ref(), watchdog);
        self.record_created()?;
        created?;
        Self::check_interrupt(interrupt)?;
        let t = Instant::now();
        self.build_view()?;
        self.timings.mount = t.elapsed();
        Self::check_interrupt(interrupt)
    }

    /// The writer hooks to freeze, or none (`--no-writers`).
    fn discover_writers(&self) -> Result<Option<Writers>, SessionError> {
        let Some(config) = &self.request.writers else {
            return Ok(None);
        };
        let env = WriterEnv {
            session: self.id.clone(),
            target: self.target.clone(),
        };
        Writers::discover(config.clone(), env)
            .map(Some)
            .map_err(SessionError::Writers)
    }

    /// What providers see of the session for unit `index`.
    fn context(&self, index: usize, guard: FreezeGuard) -> SessionContext {
        SessionContext {
            id: self.id.clone(),
            index,
            runtime_dir: self.runtime.clone(),
            guard,
        }
    }

    /// Journals every snapshot before it is made, and the writers before they are frozen, in
    /// one durable record written before anything exists (the scratch directory, the
    /// snapshots to be, the writers to be frozen, the view): a crash from here on leaves a
    /// record that cleanup can undo. Everything later only refines it. Returns the writers
    /// to be frozen.
    fn journal_intents(
        &mut self,
        writers: Option<&Writers>,
    ) -> Result<Option<FrozenWriters>, SessionError> {
        for i in 0..self.plan.units.len() {
            let pi = self.plan.units[i].provider_index;
            let expected = self.providers[pi].expected(
                &self.unit_request(i),
                &self.context(i, FreezeGuard::default()),
            );
            self.intents[i] = Some((pi, expected));
        }
        let frozen = writers
            .filter(|w| !w.writers.is_empty())
            .map(|w| FrozenWriters {
                writers: w.writers.iter().map(|w| w.path.clone()).collect(),
                dirs: self.dirs.clone(),
            });
        let mut record = Record::new(&self.id, &self.target, &self.runtime);
        record.snapshots = self.snapshot_entries();
        record.frozen_writers = frozen.clone();
        record.view = Some(ObjectState::Intent);
        self.journal = Some(Journal::create(&self.request.state_dir, record)?);
        create_private_dir(&self.runtime).map_err(|error| SessionError::RuntimeDir {
            path: self.runtime.clone(),
            error,
        })?;
        Ok(frozen)
    }

    /// Per unit, what was made (done) or else what may have been (intent).
    fn snapshot_entries(&self) -> Vec<SnapshotEntry> {
        self.created
            .iter()
            .zip(&self.intents)
            .filter_map(|(c, i)| match (c, i) {
                (Some((_, c)), _) => Some(SnapshotEntry {
                    state: ObjectState::Done,
                    created: c.clone(),
                }),
                (None, Some((_, i))) => Some(SnapshotEntry {
                    state: ObjectState::Intent,
                    created: i.clone(),
                }),
                (None, None) => None,
            })
            .collect()
    }

    /// Whatever can be done before the frozen window is done now (`Provider::prepare`).
    fn prepare_units(&self) -> Result<(), SessionError> {
        for (i, intent) in self.intents.iter().enumerate() {
            let Some((pi, _)) = intent else { continue };
            let provider = &self.providers[*pi];
            provider
                .prepare(
                    &self.unit_request(i),
                    &self.context(i, FreezeGuard::default()),
                )
                .map_err(|error| SessionError::Prepare {
                    provider: provider.name().to_owned(),
                    error,
                })?;
        }
        Ok(())
    }

    /// Starts the watchdog that thaws the writers (and filesystems a provider froze) if this
    /// process dies before it does — when anything will be frozen — and hands it to the
    /// providers through the freeze guard.
    fn start_watchdog(
        &mut self,
        frozen: Option<&FrozenWriters>,
    ) -> Result<Option<SharedWatchdog>, SessionError> {
        let freeze_timeout = self.request.freeze_timeout;
        let needs_watchdog = frozen.is_some()
            || self
                .plan
                .units
                .iter()
                .any(|u| self.providers[u.provider_index].freezes());
        let watchdog = match (needs_watchdog, &self.request.watchdog_exe) {
            (true, Some(exe)) => {
                let mut w = Watchdog::spawn(exe, &[WATCHDOG_FLAG]).map_err(|error| {
                    SessionError::Watchdog {
                        exe: exe.clone(),
                        error,
                    }
                })?;
                if let Some(fw) = frozen {
                    w.send(&self.writers_freezing(fw));
                }
                Some(std::sync::Arc::new(std::sync::Mutex::new(w)))
            }
            _ => None,
        };
        self.guard = FreezeGuard::new(watchdog.clone(), freeze_timeout);
        Ok(watchdog)
    }

    /// What the watchdog needs to thaw the writers on its own.
    fn writers_freezing(&self, fw: &FrozenWriters) -> Message {
        let timeout = self
            .request
            .writers
            .as_ref()
            .map_or(self.request.freeze_timeout, |c| c.timeout);
        Message::WritersFreezing {
            writers: fw.writers.clone(),
            dirs: fw.dirs.clone(),
            session: self.id.clone(),
            target: self.target.clone(),
            timeout_ms: timeout.as_millis() as u64,
            journal: self.journal.as_ref().map(|j| j.path().to_owned()),
        }
    }

    /// The frozen window: writers freeze → snapshots → writers thaw, nothing else. Every
    /// writer sent `freeze` is sent `thaw` whatever creation did (no `?` and no panic path in
    /// between); the watchdog is told and let go after.
    fn frozen_window(
        &mut self,
        writers: Option<&Writers>,
        watchdog: Option<SharedWatchdog>,
    ) -> Result<(), SessionError> {
        let t0 = Instant::now();
        let outcome = writers.map(|w| w.freeze(&self.dirs)).unwrap_or_default();
        Fault::strike(self.request.fault.as_ref(), "after-writers-freeze");
        let created = match outcome.error {
            Some(e) => Err(SessionError::WriterFreeze(e)),
            None => match self.wait_at_barrier() {
                Err(e) => Err(e),
                Ok(()) => {
                    let t = Instant::now();
                    let r = self.create_all();
                    self.timings.create = t.elapsed();
                    r
                }
            },
        };
        // Writers log their own failures; thaw failures never stop the session.
        let _thaw_failures = writers
            .map(|w| w.thaw(&outcome.sent, &self.dirs))
            .unwrap_or_default();
        self.timings.frozen = t0.elapsed();
        self.guard = FreezeGuard::default();
        if let Some(w) = watchdog {
            if let Ok(mut w) = w.lock() {
                w.send(&Message::WritersThawed);
                w.finish();
            }
        }
        log::info!(
            "frozen window {:.1} ms (snapshot creation {:.1} ms)",
            self.timings.frozen.as_secs_f64() * 1e3,
            self.timings.create.as_secs_f64() * 1e3
        );
        created
    }

    /// `--barrier`: every writer is frozen; the coordinator says whether to go on.
    fn wait_at_barrier(&self) -> Result<(), SessionError> {
        let Some(barrier) = &self.request.barrier else {
            return Ok(());
        };
        let t = Instant::now();
        let r = barrier.frozen();
        log::info!(
            "barrier: {} after {:.1} ms",
            if r.is_ok() { "go" } else { "no go" },
            t.elapsed().as_secs_f64() * 1e3
        );
        Ok(r?)
    }

    /// Outside the frozen window: records what was made, and that no writer is frozen.
    fn record_created(&mut self) -> Result<(), SessionError> {
        let done = self.snapshot_entries();
        self.journal_update(|r| {
            r.snapshots = done;
            r.frozen_writers = None;
        })
    }

    /// Creates every unit, in parallel when there are several.
    fn create_all(&mut self) -> Result<(), SessionError> {
        let me: &Self = self;
        let timed = move |i: usize| {
            let start = std::time::SystemTime::now();
            let r = me.create_unit(i);
            (
                r,
                CreationInstant::between(start, std::time::SystemTime::now()),
            )
        };
        let results: Vec<_> = if me.plan.units.len() == 1 {
            vec![timed(0)]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..me.plan.units.len())
                    .map(|i| s.spawn(move || timed(i)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or((Err(UnitFailure::Panicked), None)))
                    .collect()
            })
        };
        let mut failures = Vec::new();
        for (i, (r, instant)) in results.into_iter().enumerate() {
            self.instants[i] = instant;
            match r {
                Ok(c) => self.created[i] = Some(c),
                Err(e) => failures.push(e),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(SessionError::Create(failures))
        }
    }

    fn unit_request(&self, index: usize) -> UnitRequest {
        let unit = &self.plan.units[index];
        UnitRequest {
            unit: unit.unit.clone(),
            data: unit.data.clone(),
            mounts: unit
                .mounts
                .iter()
                .map(|&m| self.plan.mounts[m].mount.clone())
                .collect(),
        }
    }

    /// Refines the journal (atomically, without fsync: the durable record written before the
    /// frozen window is enough for cleanup on its own, see [`Journal::refine`]).
    fn journal_update(
        &mut self,
        f: impl FnOnce(&mut crate::recovery::journal::Record),
    ) -> Result<(), SessionError> {
        match self.journal.as_mut() {
            Some(j) => Ok(j.refine(f)?),
            None => Ok(()),
        }
    }

    fn create_unit(&self, index: usize) -> Result<(usize, Created), UnitFailure> {
        let unit = &self.plan.units[index];
        let mounts: Vec<_> = unit
            .mounts
            .iter()
            .map(|&m| self.plan.mounts[m].mount.clone())
            .collect();
        let ctx = self.context(index, self.guard.clone());
        let mut pi = unit.provider_index;
        let mut request = UnitRequest {
            unit: unit.unit.clone(),
            data: unit.data.clone(),
            mounts,
        };
        loop {
            let provider = &self.providers[pi];
            let t = Instant::now();
            match provider.create(&request, &ctx) {
                Ok(c) => {
                    Fault::strike(self.request.fault.as_ref(), "after-create");
                    log::debug!(
                        "{}: created {} in {:.1} ms",
                        provider.name(),
                        c.name,
                        t.elapsed().as_secs_f64() * 1e3
                    );
                    return Ok((pi, c));
                }
                Err(ProviderError::Declined(reason)) => {
                    // A filesystems.d script did not handle it: next provider that accepts.
                    let fs = Filesystem {
                        mount: request.mounts[0].clone(),
                    };
                    let next = self
                        .providers
                        .iter()
                        .enumerate()
                        .skip(pi + 1)
                        .find_map(|(i, p)| match p.probe(&fs) {
                            Probe::Accept {
                                unit,
                                data,
                                consistent,
                            } => Some((i, unit, data, consistent)),
                            Probe::Decline(_) => None,
                        });
                    let Some((i, key, data, consistent)) = next else {
                        return Err(UnitFailure::NoneLeft {
                            mount_point: fs.mount.mount_point,
                            provider: provider.name().to_owned(),
                            reason,
                        });
                    };
                    if !consistent && self.request.require_snapshot {
                        return Err(UnitFailure::OnlyFallback {
                            mount_point: fs.mount.mount_point,
                            provider: provider.name().to_owned(),
                            reason,
                            fallback: self.providers[i].name().to_owned(),
                        });
                    }
                    log::warn!(
                        "{:?}: {} declined ({reason}); using {}",
                        fs.mount.mount_point,
                        provider.name(),
                        self.providers[i].name()
                    );
                    pi = i;
                    request.unit = key;
                    request.data = data;
                }
                Err(error) => {
                    return Err(UnitFailure::Failed {
                        mount_point: request.mounts[0].mount_point.clone(),
                        provider: provider.name().to_owned(),
                        error: Box::new(error),
                    })
                }
            }
        }
    }

    /// Mounts the view's tmpfs on the validated TARGET, attaches each snapshot in it, seals
    /// it, and checks that every DIR is a directory reached without symlinks in the view.
    fn build_view(&mut self) -> Result<(), SessionError> {
        let failed = SessionError::ViewUnavailable;
        let target_dir = self
            .target_dir
            .try_clone()
            .map_err(|e| failed(format!("target {:?}: {e}", self.target)))?;
        let view = self
            .view
            .insert(View::new(&self.target, target_dir, &self.id)?);
        for pm in &self.plan.mounts {
            let Some((pi, created)) = self.created[pm.unit].as_ref() else {
                return Err(failed(format!(
                    "{:?}: no snapshot was made",
                    pm.mount.mount_point
                )));
            };
            let tree = self.providers[*pi]
                .mount(created, &pm.mount)
                .map_err(|error| SessionError::Mount {
                    snapshot: created.name.clone(),
                    error,
                })?;
            view.attach(&pm.mount.mount_point, tree)?;
            Fault::strike(self.request.fault.as_ref(), "during-mount");
        }
        view.seal()?;
        for dir in &self.dirs {
            view.open_dir(dir)?;
        }
        self.journal_update(|r| r.view = Some(ObjectState::Done))
    }

    /// For `snapshot run --in-place`: the snapshot of `dir` (a DIR of the session) as a
    /// detached read-only mount to put over `dir` in the command's namespace.
    pub fn in_place_bind(&self, dir: &Path) -> Result<crate::sys::InPlaceBind, SessionError> {
        let failed = SessionError::ViewUnavailable;
        let index = self
            .dirs
            .iter()
            .position(|d| d == dir)
            .ok_or_else(|| failed(format!("{dir:?} is not a DIR of this session")))?;
        let view = self
            .view
            .as_ref()
            .ok_or_else(|| failed("the view is not built".into()))?;
        let at = view.open_dir(dir)?;
        let tree = crate::sys::DetachedMount::clone_readonly(std::os::fd::AsFd::as_fd(&at))
            .map_err(|e| failed(format!("cloning the snapshot of {dir:?}: {e}")))?;
        Ok(crate::sys::InPlaceBind {
            tree,
            dir: dir.to_owned(),
            identity: self.dir_identities[index],
        })
    }

    /// For `snapshot run --in-place` with `/` among the DIRs: the view on TARGET, which
    /// becomes the command's root (`None` when `/` is not a DIR).
    pub fn in_place_root(&self) -> Result<Option<crate::sys::NewRoot>, SessionError> {
        if !self.dirs.iter().any(|d| d.parent().is_none()) {
            return Ok(None);
        }
        let failed = SessionError::ViewUnavailable;
        let view = self
            .view
            .as_ref()
            .ok_or_else(|| failed("the view is not built".into()))?;
        let root = view.open_dir(Path::new("/"))?;
        let identity = crate::sys::file_identity(std::os::fd::AsFd::as_fd(&root)).map_err(|e| {
            failed(format!(
                "inspecting the view of / at {:?}: {e}",
                self.target
            ))
        })?;
        Ok(Some(crate::sys::NewRoot {
            target: self.target.clone(),
            identity,
        }))
    }

    /// For `snapshot run --in-place`: the live directory `path` (absolute, canonical) as a
    /// writable tree to bind at its own path in the command's namespace. Where a DIR covers
    /// `path`, the place must exist in its snapshot (a directory reached without a symlink):
    /// a read-only snapshot cannot grow a directory to mount on.
    pub fn live_bind(&self, path: &Path) -> Result<crate::sys::LiveBind, SessionError> {
        let unusable = |reason: String| SessionError::LivePath {
            path: path.to_owned(),
            reason,
        };
        let mut path = path.to_owned();
        if self.dirs.iter().any(|d| path.starts_with(d)) {
            let view = self
                .view
                .as_ref()
                .ok_or_else(|| unusable("the view is not built".into()))?;
            if view.open_dir(&path).is_err() {
                // Not in the view: on a filesystem of its own that is no DIR's (a repository
                // on /backup below DIR `/`), whose mount point the view shows empty. Then the
                // whole live filesystem is bound, at its mount point.
                path = self.unsnapshotted_mount_of(&path).ok_or_else(|| {
                    unusable(
                        "not a directory in the snapshot (it must exist, as a directory \
                         reached without a symlink, when the snapshot is taken)"
                            .into(),
                    )
                })?;
                log::info!("in place: {path:?}, the filesystem holding it, is bound live");
            }
        }
        let live = crate::sys::open_dir_nofollow(&path)
            .map_err(|e| unusable(crate::sys::lookup_failure(&e).to_string()))?;
        let tree = crate::sys::DetachedMount::clone_live(std::os::fd::AsFd::as_fd(&live))
            .map_err(|e| unusable(format!("cloning it for the command: {e}")))?;
        Ok(crate::sys::LiveBind { tree, path })
    }

    /// The mount point of the live filesystem holding `path` when no DIR's snapshot shows it
    /// and the view has its mount point (an empty directory in a snapshot there).
    fn unsnapshotted_mount_of(&self, path: &Path) -> Option<PathBuf> {
        let id = crate::sys::mount_id(path).ok()?;
        let table = MountTable::read().ok()?;
        let mount = table.by_id(id)?;
        if self.plan.mounts.iter().any(|pm| pm.mount.id == id) {
            return None;
        }
        let view = self.view.as_ref()?;
        view.open_dir(&mount.mount_point).ok()?;
        Some(mount.mount_point.clone())
    }

    /// Testing aid: strikes the request's fault at `step` (for steps the caller owns).
    pub fn fault_point(&self, step: &str) {
        Fault::strike(self.request.fault.as_ref(), step);
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    pub fn manifest(&self) -> Manifest {
        let view = self.view.as_ref();
        let mounts: Vec<ManifestMount> = self
            .plan
            .mounts
            .iter()
            .filter_map(|pm| {
                let (pi, c) = self.created[pm.unit].as_ref()?;
                Some(ManifestMount {
                    path: view
                        .map(|v| v.path_for(&pm.mount.mount_point))
                        .unwrap_or_default(),
                    mount_point: pm.mount.mount_point.clone(),
                    dirs: pm.dirs.clone(),
                    fstype: pm.mount.fstype.clone(),
                    source: pm.mount.source.clone(),
                    provider: self.providers[*pi].name().to_owned(),
                    snapshot: c.name.clone(),
                    consistent: c.consistent,
                    instant: self.instants[pm.unit],
                })
            })
            .collect();
        Manifest {
            session: self.id.clone(),
            target: self.target.clone(),
            consistent: mounts.iter().all(|m| m.consistent),
            mounts,
        }
    }

    /// Unmounts the view, checks and removes every snapshot, and verifies nothing is left.
    pub fn teardown(mut self) -> TeardownReport {
        let mut report = TeardownReport::default();
        self.teardown_view(&mut report);
        Fault::strike(self.request.fault.as_ref(), "mid-teardown");
        self.remove_units(&mut report);
        match std::fs::remove_dir(&self.runtime) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => report
                .problems
                .push(format!("removing {:?}: {e}", self.runtime)),
        }
        if !self.target_still_there() {
            // Renamed or swapped during the session (README "Security"): the path shows
            // something else now, which is not ours to inspect. The view was mounted on the
            // validated directory only, and its teardown said what it could not remove.
            log::warn!(
                "target {:?}: the path no longer leads to the directory validated at the start",
                self.target
            );
            return self.finish_teardown(report);
        }
        self.check_target_left(&mut report);
        self.finish_teardown(report)
    }

    /// Unmounts the view; journals it gone when nothing was left.
    fn teardown_view(&mut self, report: &mut TeardownReport) {
        if let Some(view) = self.view.as_mut() {
            let problems = view.teardown();
            if problems.is_empty() {
                let _ = self.journal_update(|r| r.view = None);
            }
            report.problems.extend(problems);
        }
    }

    /// Removes every unit, the last created first; each removal journaled as it succeeds.
    fn remove_units(&mut self, report: &mut TeardownReport) {
        let units: Vec<_> = self
            .created
            .iter_mut()
            .zip(self.intents.iter_mut())
            .map(|(c, i)| (c.take(), i.take()))
            .rev()
            .collect();
        for (created, intent) in units {
            // A unit never created is still removed from its intent: creation may have
            // got halfway. Removal is idempotent.
            match (created, intent) {
                (Some((pi, c)), _) => self.remove_unit(pi, &c, true, report),
                (None, Some((pi, c))) => self.remove_unit(pi, &c, false, report),
                (None, None) => {}
            }
        }
    }

    /// Removes one unit; a `made` one is verified first (a snapshot that became invalid during
    /// the backup is reported).
    fn remove_unit(&mut self, pi: usize, c: &Created, made: bool, report: &mut TeardownReport) {
        let provider = &self.providers[pi];
        if made {
            if let Validity::Invalid(reason) = provider.verify(c) {
                log::error!(
                    "{}: the snapshot became invalid during the backup: {reason}",
                    c.name
                );
                report.invalid.push(format!("{}: {reason}", c.name));
            }
        }
        match provider.remove(c) {
            Ok(()) => {
                if made {
                    log::debug!("{}: removed {}", provider.name(), c.name);
                }
                let name = c.name.clone();
                let _ = self.journal_update(|r| r.snapshots.retain(|s| s.created.name != name));
            }
            Err(e) => {
                let what = if made { "" } else { "the unfinished " };
                report.problems.push(format!(
                    "removing {what}{} ({}): {e}",
                    c.name,
                    provider.name()
                ));
            }
        }
    }

    /// Reports what is still mounted at or below TARGET, or left in it. Nothing is when TARGET
    /// is no mount point and is empty (a mount below it would need a directory in it): two
    /// statx calls and a readdir, where the whole mount table grows with the machine's
    /// mounts. The table is read only to name what was left behind.
    fn check_target_left(&self, report: &mut TeardownReport) {
        let clean = matches!(crate::sys::is_mount_point(&self.target), Ok(false))
            && check_target_empty(&self.target).is_ok();
        if clean {
            return;
        }
        match MountTable::read() {
            Ok(table) => {
                for m in table.at_or_below(&self.target) {
                    report
                        .problems
                        .push(format!("still mounted: {:?}", m.mount_point));
                }
            }
            Err(e) => report.problems.push(e.to_string()),
        }
        if report.problems.is_empty() {
            if let Err(e) = check_target_empty(&self.target) {
                report.problems.push(e.to_string());
            }
        }
    }

    /// Whether the path TARGET still leads, without symlinks, to the directory validated at
    /// the start, or to a mount on it (which the checks after it report).
    fn target_still_there(&self) -> bool {
        use std::os::fd::AsFd;
        let Ok(now) = crate::sys::open_dir_nofollow(&self.target) else {
            return false;
        };
        let same = crate::sys::file_identity(now.as_fd()).ok()
            == crate::sys::file_identity(self.target_dir.as_fd()).ok();
        same || matches!(crate::sys::is_mount_point(&self.target), Ok(true))
    }

    /// Removes the journal when nothing is left (otherwise it stays for cleanup) and logs
    /// what is.
    fn finish_teardown(mut self, mut report: TeardownReport) -> TeardownReport {
        // Nothing left: the record has served its purpose. Otherwise it stays for cleanup.
        if report.problems.is_empty() {
            if let Some(j) = self.journal.take() {
                if let Err(e) = j.remove() {
                    report.problems.push(e.to_string());
                }
            }
        }
        for p in &report.problems {
            log::error!("teardown: {p}");
        }
        report
    }
}

/// The watchdog, shared with the providers' freeze guards.
type SharedWatchdog = std::sync::Arc<std::sync::Mutex<Watchdog>>;

fn require_root() -> Result<(), SessionError> {
    if crate::sys::is_root() {
        return Ok(());
    }
    Err(SessionError::NotRoot)
}

/// Preflight: a target with something in it is busy (another live session holds it), a dead
/// session's view (removed by the recovery), or the caller's mistake. Returns whether it was
/// not empty, which sends the start down the recovery's slow path.
fn check_target_at_first_look(
    request: &SessionRequest,
    v: &mut crate::validate::Validated,
) -> Result<bool, SessionError> {
    let Err(e) = check_target_empty(&v.target) else {
        return Ok(false);
    };
    // It may show a dead view, which the recovery unmounts: not while we hold it.
    v.target_dir = None;
    if TargetLock::is_held(&request.runtime_dir, &v.target) {
        return Err(SessionError::TargetInUse(request.target.clone()));
    }
    // A view left by a dead session (its tmpfs carries a session id) is removed by the
    // recovery; anything else in the target is the caller's mistake — unless it is gone by
    // now: another process's cleanup may have been half-way through removing such a view (its
    // mounts unmounted, not yet its tmpfs) at the first look.
    let dead_view = MountTable::read().ok().is_some_and(|t| {
        t.mounted_at(&v.target)
            .is_some_and(|m| crate::recovery::cleanup::is_session_id(&m.source))
    });
    if !dead_view && check_target_empty(&v.target).is_err() {
        return Err(e.into());
    }
    Ok(true)
}

/// One session per target.
fn lock_target(
    request: &SessionRequest,
    v: &crate::validate::Validated,
) -> Result<TargetLock, SessionError> {
    Ok(TargetLock::acquire(&request.runtime_dir, &v.target)?)
}

/// Recovery, then the mounts to plan over. What dead sessions left behind goes first
/// (docs/DESIGN.md §3.3) — when there is any. The journals are listed first, which needs no
/// mount table. The slow path — a dead session's journal, or a target that was not empty (a
/// dead view, maybe without a journal) — reads the whole mount table, runs the cleanup with
/// its orphan-view sweep and plans over that table (read again if the cleanup changed it).
/// The normal start does no cleanup and looks up only the DIRs' mounts (statmount), so its
/// planning does not grow with the machine's mount table; views that lost their journal are
/// then left to `snapshot cleanup` and to the next slow-path start. Returns the table and how
/// it was read (for the log).
fn recover_or_look_up(
    request: &SessionRequest,
    v: &crate::validate::Validated,
    providers: &[Box<dyn Provider>],
    target_was_full: bool,
) -> Result<(MountTable, String), SessionError> {
    if !target_was_full && !crate::recovery::cleanup::dead_sessions(&request.state_dir) {
        let (table, lookup) = MountTable::for_paths_via(&v.dirs)?;
        return Ok((table, lookup.to_string()));
    }
    // Read before the cleanup lists the journals (see `cleanup_with`).
    let mut table = MountTable::read()?;
    let report = crate::recovery::cleanup::cleanup_with(
        Ok(table.clone()),
        &request.state_dir,
        providers,
        false,
        None,
    );
    if report.sessions.iter().any(|s| !s.live) {
        table = MountTable::read()?;
    }
    for sc in report.sessions.iter().filter(|s| !s.live) {
        log::warn!(
            "cleaned up after dead session {}: {}",
            sc.session,
            sc.actions.join("; ")
        );
        for p in &sc.problems {
            log::warn!("cleaning up after {}: {p}", sc.session);
        }
    }
    Ok((table, "mountinfo, startup cleanup".to_owned()))
}

/// Checked again under the lock and after the recovery (a dead session's view is gone now,
/// and a live session may have filled the target since the first look); returns the validated
/// TARGET directory to build the view on — opened again when the first look let it go.
fn hold_target(v: &mut crate::validate::Validated) -> Result<std::os::fd::OwnedFd, SessionError> {
    check_target_empty(&v.target)?;
    match v.target_dir.take() {
        Some(fd) => Ok(fd),
        None => crate::sys::open_dir_nofollow(&v.target).map_err(|e| {
            ValidationError::TargetInaccessible(v.target.clone(), e.to_string()).into()
        }),
    }
}

/// Logs the planning time and, per mount, the provider that takes it and those that declined.
fn log_plan(plan: &Plan, took: Duration, lookup: &str, table_len: usize) {
    log::info!(
        "planned in {:.2} ms ({lookup}; mounts in the table: {table_len})",
        took.as_secs_f64() * 1e3,
    );
    for pm in &plan.mounts {
        let declined = if pm.declined.is_empty() {
            String::new()
        } else {
            let reasons: Vec<_> = pm
                .declined
                .iter()
                .map(|d| format!("{}: {}", d.provider, d.reason))
                .collect();
            format!(" (declined: {})", reasons.join("; "))
        };
        log::info!(
            "{:?} ({} on {}): {}{declined}",
            pm.mount.mount_point,
            pm.mount.fstype,
            pm.mount.source,
            plan.units[pm.unit].provider,
        );
    }
}

/// Filesystems only the bind fallback takes: refused under `--require-snapshot` (before
/// anything is frozen), otherwise a warning.
fn refuse_or_warn_unsnapshotted(plan: &Plan, require_snapshot: bool) -> Result<(), SessionError> {
    let unsnapshotted: Vec<PathBuf> = plan
        .mounts
        .iter()
        .filter(|pm| !plan.units[pm.unit].consistent)
        .map(|pm| pm.mount.mount_point.clone())
        .collect();
    if unsnapshotted.is_empty() {
        return Ok(());
    }
    if require_snapshot {
        return Err(SessionError::SnapshotRequired(unsnapshotted));
    }
    log::warn!(
        "no snapshot for {}: bind-mounted read-only instead; the backup of these is NOT consistent",
        quoted(&unsnapshotted)
    );
    Ok(())
}

/// `mkdir -m 0700 -p`, refusing a directory that is not root's alone (see
/// [`crate::lock::private_dir`]).
fn create_private_dir(path: &Path) -> std::io::Result<()> {
    crate::lock::private_dir(path)
        .map(drop)
        .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every cause in the error's text once: its message and its source chain never both.
    fn shown_once(e: &dyn std::error::Error) -> String {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }

    #[test]
    fn kinds_and_messages() {
        let io = || std::io::Error::from_raw_os_error(13);
        let lock = SessionError::from(LockError::Io {
            lock: "/run/snapshot/x.lock".into(),
            error: io(),
        });
        assert_eq!(lock.kind(), FailureKind::Internal);
        let busy = SessionError::from(LockError::Busy {
            target: "/t".into(),
            lock: "/run/snapshot/x.lock".into(),
        });
        assert_eq!(busy.kind(), FailureKind::Busy);
        assert_eq!(SessionError::NotRoot.kind(), FailureKind::NotPermitted);
        assert_eq!(
            SessionError::Interrupted(15).kind(),
            FailureKind::Interrupted(15)
        );
        let create = SessionError::Create(vec![
            UnitFailure::Failed {
                mount_point: "/srv".into(),
                provider: "lvm".into(),
                error: Box::new(ProviderError::io("creating /run/x", io())),
            },
            UnitFailure::Panicked,
        ]);
        assert_eq!(create.kind(), FailureKind::SnapshotFailed);
        let text = create.to_string();
        assert_eq!(
            text,
            format!(
                "\"/srv\": lvm snapshot failed: creating /run/x: {}; snapshot creation panicked",
                io()
            )
        );
        assert_eq!(shown_once(&create), text);
        let undone = SessionError::Undone {
            error: Box::new(create),
            problems: vec!["still mounted: \"/t\"".into()],
        };
        assert_eq!(undone.kind(), FailureKind::TeardownIncomplete);
        assert!(undone
            .to_string()
            .ends_with("; and undoing it left things behind: still mounted: \"/t\""));
        assert_eq!(
            SessionError::SnapshotRequired(vec!["/a".into(), "/b".into()]).to_string(),
            "no provider can snapshot \"/a\", \"/b\" (--require-snapshot); `snapshot plan` \
             tells why"
        );
        // The OS error once, however the error is printed.
        let journal = SessionError::from(JournalError::Io {
            path: "/var/lib/snapshot/j".into(),
            error: io(),
        });
        assert_eq!(shown_once(&journal), journal.to_string());
        assert_eq!(journal.to_string().matches(&io().to_string()).count(), 1);
    }
}
