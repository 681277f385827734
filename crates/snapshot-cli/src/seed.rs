//! `snapshot [OPTIONS] DIR...`: the seed protocol — ready line on stdout, close stdout, hold
//! until stdin reaches EOF (or a signal), tear down.

use crate::args::SessionArgs;
use crate::exit;
use snapshot_core::session::{
    FailureKind, Interrupt, Manifest, Session, SessionError, TeardownReport,
};
use snapshot_core::sys::{InPlace, LiveBind};
use snapshot_core::Provider;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;

/// What ends the hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldUntil {
    /// stdin reaches EOF (the seed protocol); a signal ends it too, with status 128+N.
    StdinEof,
    /// SIGUSR1 (sent by `stop-snapshot`); stdin is ignored.
    Usr1,
    /// `snapshot run`: this command exits (a signal to us is passed on to it).
    Command(RunCommand),
}

/// `snapshot run`'s command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCommand {
    pub argv: Vec<std::ffi::OsString>,
    /// `--in-place`: run it in a private mount namespace where each DIR's snapshot covers
    /// the DIR itself (with `/` among the DIRs: whose root is the view).
    pub in_place: bool,
    /// `--in-place`: live directories bound writable at their own paths (canonical), over
    /// the snapshots: the program's cache, a local repository.
    pub writable: Vec<PathBuf>,
}

/// Live filesystems a command needs whatever it backs up, bound into its namespace when `/`
/// is a DIR of `run --in-place` (its root is the view then).
pub const LIVE_SYSTEM_PATHS: [&str; 5] = ["/proc", "/sys", "/dev", "/run", "/tmp"];

/// Writable paths bound by default, under a home directory owned by root and writable by
/// nobody else: restic's and borg's caches (`~/.cache`, made 0700 when missing: restic and
/// borg would make it themselves, and a read-only snapshot cannot grow it) and borg's
/// configuration and security directory (`~/.config/borg`, when it exists), each a
/// directory reached without a symlink (docs/DESIGN.md §2.4).
pub fn default_writable(home: &std::path::Path) -> Vec<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let owned_by_root = std::fs::symlink_metadata(home)
        .is_ok_and(|m| m.is_dir() && m.uid() == 0 && m.mode() & 0o022 == 0);
    if !home.is_absolute() || !owned_by_root {
        return Vec::new();
    }
    let _ = std::fs::DirBuilder::new()
        .mode(0o700)
        .create(home.join(".cache"));
    [".cache", ".config/borg"]
        .iter()
        .map(|rel| home.join(rel))
        .filter(|p| snapshot_core::sys::open_dir_nofollow(p).is_ok())
        .collect()
}

/// `--in-place`: (view of a DIR, the DIR) pairs to bind, parents before children. A DIR below
/// another DIR of the same view mount is left out: the parent's bind shows it already. A DIR
/// on another filesystem is bound on its own over the empty directory the parent's bind shows
/// there (binds are non-recursive, like the view).
pub fn in_place_binds(manifest: &Manifest) -> Vec<(PathBuf, PathBuf)> {
    let mut binds = Vec::new();
    for m in &manifest.mounts {
        for d in &m.dirs {
            let covered = m.dirs.iter().any(|p| p != d && d.starts_with(p));
            if !covered {
                let rel = d.strip_prefix("/").unwrap_or(d);
                binds.push((manifest.target.join(rel), d.clone()));
            }
        }
    }
    // Parents first: a child's bind must land on the parent's bind, not under it.
    binds.sort_by_key(|(_, d)| d.components().count());
    binds
}

/// What `snapshot run --in-place` puts in the command's namespace (nothing for the other
/// modes): the view as its root when `/` is a DIR, else the snapshots over the DIRs, parents
/// first; then the live paths it needs.
fn in_place(
    session: &Session,
    until: &HoldUntil,
    manifest: &Manifest,
) -> Result<InPlace, SessionError> {
    let HoldUntil::Command(RunCommand {
        in_place: true,
        writable,
        ..
    }) = until
    else {
        return Ok(InPlace::default());
    };
    let mut out = InPlace {
        new_root: session.in_place_root()?,
        ..InPlace::default()
    };
    if out.new_root.is_some() {
        log::info!("in place: / is the view under {:?}", manifest.target);
        let dirs: Vec<PathBuf> = manifest
            .mounts
            .iter()
            .flat_map(|m| m.dirs.clone())
            .collect();
        out.system = live_system_paths(session, &dirs)?;
    }
    for (view, dir) in in_place_binds(manifest) {
        // With `/` as the root, the view shows every DIR but those a live path would hide.
        let hidden = out.system.iter().any(|l| dir.starts_with(&l.path));
        if out.new_root.is_none() || hidden {
            log::info!("in place: {} shows {}", dir.display(), view.display());
            out.binds.push(session.in_place_bind(&dir)?);
        }
    }
    let mut writable = writable.clone();
    writable.sort_by_key(|p| p.components().count());
    for path in writable {
        let bind = session.live_bind(&path)?;
        if out.writable.iter().any(|l| l.path == bind.path) {
            continue;
        }
        log::info!("in place: {} is live and writable", bind.path.display());
        out.writable.push(bind);
    }
    Ok(out)
}

/// [`LIVE_SYSTEM_PATHS`] that exist, except where a DIR other than `/` covers one (then its
/// snapshot shows, as asked).
fn live_system_paths(session: &Session, dirs: &[PathBuf]) -> Result<Vec<LiveBind>, SessionError> {
    let mut out = Vec::new();
    for path in LIVE_SYSTEM_PATHS.map(PathBuf::from) {
        if dirs
            .iter()
            .any(|d| d.parent().is_some() && path.starts_with(d))
        {
            log::info!("in place: {} is a DIR's snapshot, not live", path.display());
            continue;
        }
        if snapshot_core::sys::open_dir_nofollow(&path).is_err() {
            log::info!("in place: no {} to bind", path.display());
            continue;
        }
        out.push(session.live_bind(&path)?);
    }
    Ok(out)
}

/// How the hold ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct HoldEnd {
    /// The signal that ended it (or was passed on to the command).
    pub signal: Option<i32>,
    /// `snapshot run`: the command's status (128+N when a signal killed it).
    pub command: Option<u8>,
}

/// Signals that end a session: INT, TERM, HUP always; USR1 for a start-snapshot holder.
#[derive(Debug)]
pub struct Signals {
    pub interrupt: Arc<Interrupt>,
    events: mpsc::Receiver<Event>,
    tx: mpsc::Sender<Event>,
}

#[derive(Debug, Clone, Copy)]
enum Event {
    Signal(i32),
    Eof,
    Child(u8),
}

impl Signals {
    pub fn install() -> anyhow::Result<Self> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
        let interrupt = Arc::new(Interrupt::new(0));
        let (tx, events) = mpsc::channel();
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1])?;
        // Set in the handler itself, so a step that follows the signal sees it at once.
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            signal_hook::flag::register_usize(sig, interrupt.clone(), sig as usize)?;
        }
        let sender = tx.clone();
        std::thread::spawn(move || {
            for sig in signals.forever() {
                let _ = sender.send(Event::Signal(sig));
            }
        });
        Ok(Self {
            interrupt,
            events,
            tx,
        })
    }

    /// Blocks until the hold ends.
    /// `in_place`: for `snapshot run --in-place`, what goes in the command's namespace.
    pub fn hold(&self, until: &HoldUntil, env: &[(&str, String)], in_place: InPlace) -> HoldEnd {
        use signal_hook::consts::SIGUSR1;
        let mut child_pid = None;
        match until {
            HoldUntil::StdinEof => {
                let tx = self.tx.clone();
                std::thread::spawn(move || {
                    let mut stdin = std::io::stdin().lock();
                    let mut buf = [0u8; 4096];
                    // Whatever the caller writes is ignored; only EOF (or an error) counts.
                    while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
                    let _ = tx.send(Event::Eof);
                });
            }
            HoldUntil::Usr1 => {}
            HoldUntil::Command(RunCommand {
                argv,
                in_place: place,
                ..
            }) => {
                let mut cmd = std::process::Command::new(&argv[0]);
                cmd.args(&argv[1..]).envs(env.iter().map(|(k, v)| (k, v)));
                if *place {
                    if let Err(e) = snapshot_core::sys::in_private_namespace(&mut cmd, in_place) {
                        say!("snapshot: error: --in-place: {e}");
                        return HoldEnd {
                            signal: None,
                            command: Some(exit::FAILURE),
                        };
                    }
                }
                let spawned = cmd.spawn();
                let mut child = match spawned {
                    Ok(c) => c,
                    Err(e) => {
                        let how = match e.raw_os_error() {
                            _ if !*place => "",
                            Some(libc_estale)
                                if libc_estale == rustix::io::Errno::STALE.raw_os_error() =>
                            {
                                " in place: TARGET or a DIR changed before the command could start"
                            }
                            _ => " in place (a private mount namespace showing the snapshots)",
                        };
                        say!("snapshot: error: cannot run {:?}{how}: {e}", argv[0]);
                        return HoldEnd {
                            signal: None,
                            command: Some(127),
                        };
                    }
                };
                child_pid = rustix::process::Pid::from_raw(child.id() as i32);
                let tx = self.tx.clone();
                std::thread::spawn(move || {
                    use std::os::unix::process::ExitStatusExt;
                    let code = match child.wait() {
                        Ok(st) => st
                            .code()
                            .map(|c| c as u8)
                            .or_else(|| {
                                st.signal()
                                    .map(|s| exit::SIGNAL_BASE.saturating_add(s as u8))
                            })
                            .unwrap_or(exit::FAILURE),
                        Err(_) => exit::FAILURE,
                    };
                    let _ = tx.send(Event::Child(code));
                });
            }
        }
        let mut end = HoldEnd::default();
        loop {
            match self.events.recv() {
                Ok(Event::Eof) | Err(_) => return end,
                Ok(Event::Child(code)) => {
                    end.command = Some(code);
                    return end;
                }
                Ok(Event::Signal(sig)) if sig == SIGUSR1 => {
                    if *until == HoldUntil::Usr1 {
                        return end;
                    }
                }
                Ok(Event::Signal(sig)) => {
                    end.signal = Some(sig);
                    match child_pid {
                        // The command ends first; the view stays until it has.
                        Some(pid) => {
                            if let Some(s) = rustix::process::Signal::from_named_raw(sig) {
                                let _ = rustix::process::kill_process(pid, s);
                            }
                        }
                        None => return end,
                    }
                }
            }
        }
    }
}

/// Writes the ready line (or manifest) and closes stdout: EOF on it means "ready" to the
/// caller only after that line.
pub fn announce_ready(manifest: &Manifest, json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, manifest)?;
        writeln!(out)?;
    } else {
        writeln!(out, "done")?;
    }
    out.flush()?;
    drop(out);
    // Point fd 1 at /dev/null: the caller sees EOF, and a stray write cannot reach it.
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    rustix::stdio::dup2_stdout(&null)?;
    Ok(())
}

/// The exit status for a finished teardown.
pub fn teardown_status(report: &TeardownReport, signal: Option<i32>) -> u8 {
    if !report.problems.is_empty() {
        say!(
            "snapshot: error: teardown incomplete; run `snapshot cleanup`, or remove by hand: {}",
            report.problems.join("; ")
        );
        return exit::TEARDOWN_INCOMPLETE;
    }
    if !report.invalid.is_empty() {
        say!(
            "snapshot: error: a snapshot became invalid during the backup; the backup read from a broken snapshot: {}",
            report.invalid.join("; ")
        );
        return exit::INVALID;
    }
    match signal {
        Some(sig) => exit::SIGNAL_BASE.saturating_add(sig as u8),
        None => exit::OK,
    }
}

/// Starts a session, announces it, holds, tears down; returns the exit status. `on_ready`
/// runs after the view is ready and before the ready line (the holder records its state).
pub fn run_session(
    args: &SessionArgs,
    providers: &[Box<dyn Provider>],
    signals: &Signals,
    until: HoldUntil,
    barrier: Option<std::sync::Arc<dyn snapshot_core::session::Barrier>>,
    on_ready: impl FnOnce(&Session) -> anyhow::Result<()>,
) -> u8 {
    let run_mode = matches!(until, HoldUntil::Command(_));
    let request = snapshot_core::session::SessionRequest {
        barrier,
        ..args.request()
    };
    let session = match Session::start(request, providers, &signals.interrupt) {
        Ok(s) => s,
        Err(e) => {
            say!("snapshot: error: {e}");
            return exit::for_failure(e.kind());
        }
    };
    let manifest = session.manifest();
    log::info!(
        "view ready under {:?} (session {})",
        manifest.target,
        manifest.session
    );
    // `snapshot run` leaves stdout to the command: no ready line there.
    let ready = on_ready(&session).and_then(|()| {
        if !run_mode {
            announce_ready(&manifest, args.json)?;
        }
        Ok(())
    });
    let env = [
        (
            "SNAPSHOT_TARGET",
            manifest.target.to_string_lossy().into_owned(),
        ),
        ("SNAPSHOT_SESSION", manifest.session.clone()),
        (
            "SNAPSHOT_MANIFEST",
            serde_json::to_string(&manifest).unwrap_or_default(),
        ),
    ];
    let announced = ready.is_ok();
    let end = match ready {
        Err(e) => {
            say!(
                "snapshot: error: announcing readiness (the caller is gone?): {e:#}; tearing down"
            );
            HoldEnd::default()
        }
        Ok(()) => {
            session.fault_point("after-ready");
            match signals.interrupt.load(Ordering::SeqCst) as i32 {
                0 => match in_place(&session, &until, &manifest) {
                    Ok(in_place) => signals.hold(&until, &env, in_place),
                    Err(e) => {
                        say!("snapshot: error: --in-place: {e}");
                        HoldEnd {
                            signal: None,
                            command: Some(exit::for_failure(e.kind())),
                        }
                    }
                },
                sig => HoldEnd {
                    signal: Some(sig),
                    command: None,
                },
            }
        }
    };
    let signal = end.signal;
    if let Some(sig) = signal {
        log::warn!("signal {sig}: tearing down");
    } else {
        log::info!("tearing down");
    }
    let report = session.teardown();
    let status = match (teardown_status(&report, signal), end.command) {
        // The command's status, unless the snapshot itself went wrong.
        (s, Some(code)) if s == exit::OK || s >= exit::SIGNAL_BASE => code,
        // Nobody learnt that the view was ready: not a success, though nothing is left.
        (exit::OK, None) if !announced => exit::FAILURE,
        (s, _) => s,
    };
    if status == exit::OK {
        log::info!(
            "teardown complete: nothing left under {:?}",
            manifest.target
        );
    }
    status
}

/// Status for a failure kind, re-exported for the binaries.
pub fn status_for_kind(kind: FailureKind) -> u8 {
    exit::for_failure(kind)
}
