//! `snapshot cleanup`, also run by a new session that finds something to clean (see
//! [`dead_sessions`]): replays the journals of dead sessions backwards (thaw writers, unmount,
//! remove snapshots, delete the journal). It only ever touches objects named in a journal and
//! carrying that session's id, plus view mounts whose tmpfs carries a session id no live
//! session owns — never anything else.
//!
//! The sweep of such orphan views (a view whose session left no journal: lost, or killed
//! before writing it) needs the whole mount table, so it runs with `snapshot cleanup` and with
//! a session start that cleans up anyway — one that found a dead session's journal, or its
//! target not empty — but not with every session start: a normal start reads no mount table
//! beyond the mounts of its DIRs.

use super::journal::{Journal, Record};
use super::liveness::LivenessToken;
use crate::mountinfo::MountTable;
use crate::provider::Provider;
use crate::sys::unmount_patiently;
use crate::writers::{WriterEnv, Writers};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct SessionCleanup {
    pub session: String,
    pub target: PathBuf,
    pub pid: u32,
    pub live: bool,
    /// What was done (or, with `dry_run`, would be done).
    pub actions: Vec<String>,
    /// What could not be done; the journal is kept for another try.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CleanupReport {
    pub sessions: Vec<SessionCleanup>,
    /// Journals that could not be read.
    pub unreadable: Vec<String>,
}

impl CleanupReport {
    pub fn problems(&self) -> usize {
        self.sessions
            .iter()
            .map(|s| s.problems.len())
            .sum::<usize>()
            + self.unreadable.len()
    }
}

/// `snapshot-` followed by 8 lowercase hex digits: a session id.
pub fn is_session_id(s: &str) -> bool {
    s.strip_prefix("snapshot-").is_some_and(|h| {
        h.len() == 8
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Mounts at or below `path`, deepest (latest) first: the order to unmount them.
fn mounts_below(table: &MountTable, path: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = table
        .at_or_below(path)
        .map(|m| m.mount_point.clone())
        .collect();
    v.reverse();
    v
}

/// Cleans up every dead session found in `state_dir`; `skip` is the calling session's own id.
pub fn cleanup(
    state_dir: &Path,
    providers: &[Box<dyn Provider>],
    dry_run: bool,
    skip: Option<&str>,
) -> CleanupReport {
    cleanup_with(MountTable::read(), state_dir, providers, dry_run, skip)
}

/// Whether `state_dir` holds the journal of a dead session: one [`cleanup`] would replay.
/// Lists the journals only, no mount table: a session start takes its slow path (the whole
/// table, the cleanup with its orphan-view sweep) only when this says so or its target is not
/// empty.
pub fn dead_sessions(state_dir: &Path) -> bool {
    Journal::list(state_dir)
        .iter()
        .any(|j| j.as_ref().is_ok_and(|j| !is_alive(&j.record)))
}

/// A journal's session is running: its process (same boot, same start time) or its liveness
/// token, whichever state directory it journals in.
fn is_alive(record: &Record) -> bool {
    record.is_live() || LivenessToken::is_held(&record.session)
}

/// [`cleanup`] with a mount table the caller has just read (a session starting on the slow
/// path reads it once for the cleanup and, when nothing was cleaned, its planning). It must be
/// read *before* the journals are listed: a session writes its journal before mounting its
/// view, so any view in the table has a journal in the listing — a session starting right now
/// cannot be mistaken for an orphan.
pub fn cleanup_with(
    table_before: Result<MountTable, crate::mountinfo::MountInfoError>,
    state_dir: &Path,
    providers: &[Box<dyn Provider>],
    dry_run: bool,
    skip: Option<&str>,
) -> CleanupReport {
    let mut report = CleanupReport::default();
    // Journals in a directory others can write could be forged, and liveness tokens in one
    // faked: act on neither (`snapshot cleanup` refuses before it gets here).
    if let Err(e) = crate::recovery::journal::check_cleanup_dirs(state_dir) {
        report.unreadable.push(e.to_string());
        return report;
    }
    // Sessions with a journal: the orphan sweep below leaves their mounts to the replay.
    let mut known_ids = Vec::new();
    for j in Journal::list(state_dir) {
        if let Ok(j) = &j {
            known_ids.push(j.record.session.clone());
        }
        match j {
            Err(e) => report.unreadable.push(e.to_string()),
            Ok(j) if Some(j.record.session.as_str()) == skip => {}
            Ok(j) if is_alive(&j.record) => {
                report.sessions.push(SessionCleanup {
                    session: j.record.session.clone(),
                    target: j.record.target.clone(),
                    pid: j.record.pid,
                    live: true,
                    actions: Vec::new(),
                    problems: Vec::new(),
                });
            }
            Ok(j) => report.sessions.push(replay(j, providers, dry_run)),
        }
    }
    if let Some(id) = skip {
        known_ids.push(id.to_owned());
    }
    if let Ok(table) = table_before {
        report
            .sessions
            .extend(orphan_views(&table, &known_ids, dry_run));
    }
    // Token files whose holders died (killed sessions, watchdogs): nobody holds them, so they
    // mean nothing; removed so they do not pile up until the next boot.
    if !dry_run {
        match LivenessToken::sweep_stale() {
            Ok(names) if !names.is_empty() => {
                log::debug!("removed stale liveness tokens: {}", names.join(", "))
            }
            Ok(_) => {}
            Err(e) => log::warn!("removing stale liveness tokens: {e}"),
        }
    }
    report
}

/// Removes the (stale) liveness tokens of a session cleaned up, and of its watchdog.
fn remove_stale_tokens(session: &str, out: &mut SessionCleanup) {
    for name in [
        session.to_owned(),
        crate::recovery::liveness::watchdog_token(session),
    ] {
        match LivenessToken::remove_stale(&name) {
            Ok(true) => out
                .actions
                .push(format!("remove stale liveness token {name}")),
            Ok(false) => {}
            Err(e) => out
                .problems
                .push(format!("removing the liveness token {name}: {e}")),
        }
    }
}

/// Undoes one dead session's journal, backwards.
fn replay(mut journal: Journal, providers: &[Box<dyn Provider>], dry_run: bool) -> SessionCleanup {
    let r: Record = journal.record.clone();
    let mut out = SessionCleanup {
        session: r.session.clone(),
        target: r.target.clone(),
        pid: r.pid,
        live: false,
        actions: Vec::new(),
        problems: Vec::new(),
    };
    if !is_session_id(&r.session) {
        out.problems.push(format!(
            "journal {:?} has a malformed session id; left alone",
            journal.path()
        ));
        return out;
    }
    if !wait_for_watchdog(&r.session, dry_run, &mut out) {
        return out;
    }
    // The watchdog may have recorded its thaw.
    if let Ok(fresh) = Journal::open(journal.path()) {
        journal = fresh;
    }
    let r: Record = journal.record.clone();
    thaw_writers(&mut journal, &r, dry_run, &mut out);
    unmount_view_and_scratch(&r, dry_run, &mut out);
    if !dry_run && out.problems.is_empty() {
        let _ = journal.update(|r| r.view = None);
    }
    remove_snapshots(&mut journal, &r, providers, dry_run, &mut out);
    remove_runtime_and_journal(journal, &r, dry_run, &mut out);
    out
}

/// A watchdog still at work (thawing the writers of the dead session) goes first; its work
/// is bounded by the writers' timeouts. False: it is still at work after five minutes.
fn wait_for_watchdog(session: &str, dry_run: bool, out: &mut SessionCleanup) -> bool {
    let t = std::time::Instant::now();
    let watchdog = crate::recovery::liveness::watchdog_token(session);
    while LivenessToken::is_held(&watchdog) {
        if dry_run {
            out.actions
                .push("wait for the session's watchdog to finish".into());
            break;
        }
        if t.elapsed() > Duration::from_secs(300) {
            out.problems.push(format!(
                "the watchdog of {session} is still running; try again later"
            ));
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Step 1: writers frozen by a session that died in this boot (a reboot thawed everything).
fn thaw_writers(journal: &mut Journal, r: &Record, dry_run: bool, out: &mut SessionCleanup) {
    let Some(fw) = r.frozen_writers.as_ref().filter(|_| r.same_boot()) else {
        return;
    };
    out.actions
        .push(format!("send thaw to {} writer(s)", fw.writers.len()));
    if dry_run {
        return;
    }
    let env = WriterEnv {
        session: r.session.clone(),
        target: r.target.clone(),
    };
    let writers = Writers::recorded(&fw.writers, Duration::from_secs(30), env);
    for e in writers.thaw(&writers.writers, &fw.dirs) {
        out.problems.push(e.to_string());
    }
    let _ = journal.update(|r| r.frozen_writers = None);
}

/// Steps 2 and 3: the view (only when the tmpfs at the target is this session's), then the
/// scratch mounts in the session's own runtime directory.
fn unmount_view_and_scratch(r: &Record, dry_run: bool, out: &mut SessionCleanup) {
    let table = match MountTable::read() {
        Ok(t) => t,
        Err(e) => return out.problems.push(e.to_string()),
    };
    let mut below = Vec::new();
    if r.view.is_some() {
        // The view's tmpfs, or `/`'s snapshot stacked on it when `/` was a DIR.
        let view = table
            .mounts
            .iter()
            .find(|m| m.mount_point == r.target && m.source == r.session);
        match table.mounted_at(&r.target) {
            Some(m) if view.is_some_and(|v| m.id == v.id || m.parent_id == v.id) => {
                below.extend(mounts_below(&table, &r.target))
            }
            Some(m) => out.actions.push(format!(
                "leave {:?} alone: mounted by {:?}, not by this session",
                r.target, m.source
            )),
            None => {}
        }
    }
    if r.runtime_dir.file_name().and_then(|n| n.to_str()) == Some(r.session.as_str()) {
        below.extend(mounts_below(&table, &r.runtime_dir));
    }
    for p in below {
        out.actions.push(format!("unmount {p:?}"));
        if !dry_run {
            if let Err(e) = unmount_patiently(&p) {
                out.problems.push(e.to_string());
            }
        }
    }
}

/// Step 4: snapshots, last made first: only those named after the session, by their provider.
fn remove_snapshots(
    journal: &mut Journal,
    r: &Record,
    providers: &[Box<dyn Provider>],
    dry_run: bool,
    out: &mut SessionCleanup,
) {
    for entry in r.snapshots.iter().rev() {
        let c = &entry.created;
        if !c.name.starts_with(&r.session) {
            out.problems.push(format!(
                "{}: not named after session {}; left alone",
                c.name, r.session
            ));
            continue;
        }
        let Some(provider) = providers.iter().find(|p| p.name() == c.provider) else {
            out.problems.push(format!(
                "{}: provider {:?} is not available here",
                c.name, c.provider
            ));
            continue;
        };
        out.actions
            .push(format!("remove {} snapshot {}", c.provider, c.name));
        if dry_run {
            continue;
        }
        match provider.remove(c) {
            Ok(()) => {
                let name = c.name.clone();
                let _ = journal.update(|r| r.snapshots.retain(|s| s.created.name != name));
            }
            Err(e) => out.problems.push(format!("removing {}: {e}", c.name)),
        }
    }
}

/// Step 5: the runtime directory, the journal itself and the session's stale liveness
/// tokens, once nothing else is left.
fn remove_runtime_and_journal(
    journal: Journal,
    r: &Record,
    dry_run: bool,
    out: &mut SessionCleanup,
) {
    if !dry_run && out.problems.is_empty() {
        match std::fs::remove_dir(&r.runtime_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => out
                .problems
                .push(format!("removing {:?}: {e}", r.runtime_dir)),
        }
    }
    out.actions
        .push(format!("delete journal {:?}", journal.path()));
    if !dry_run && out.problems.is_empty() {
        if let Err(e) = journal.remove() {
            out.problems.push(e.to_string());
        }
        remove_stale_tokens(&r.session, out);
    }
}

/// View tmpfs mounts named after a session that has no journal (lost, or a crash before it was
/// written): unmount them and what is under them.
fn orphan_views(table: &MountTable, known_ids: &[String], dry_run: bool) -> Vec<SessionCleanup> {
    let mut out = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    for m in &table.mounts {
        if m.fstype != "tmpfs" || !is_session_id(&m.source) || known_ids.contains(&m.source) {
            continue;
        }
        // A live session keeps its views, whatever state directory it journals in.
        if LivenessToken::is_held(&m.source) {
            continue;
        }
        // Only the outermost one: the nested skeletons go with it.
        if seen.iter().any(|s| m.mount_point.starts_with(s)) {
            continue;
        }
        seen.push(m.mount_point.clone());
        let mut sc = SessionCleanup {
            session: m.source.clone(),
            target: m.mount_point.clone(),
            pid: 0,
            live: false,
            actions: Vec::new(),
            problems: Vec::new(),
        };
        for p in mounts_below(table, &m.mount_point) {
            sc.actions.push(format!(
                "unmount {p:?} (view of session {} without a journal)",
                m.source
            ));
            if !dry_run {
                if let Err(e) = unmount_patiently(&p) {
                    sc.problems.push(e.to_string());
                }
            }
        }
        if !dry_run && sc.problems.is_empty() {
            remove_stale_tokens(&m.source, &mut sc);
        }
        out.push(sc);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids() {
        assert!(is_session_id("snapshot-0a1b2c3d"));
        assert!(!is_session_id("snapshot-0a1b2c3"));
        assert!(!is_session_id("snapshot-0A1B2C3D"));
        assert!(!is_session_id("snapshot-0a1b2c3d-0"));
        assert!(!is_session_id("snapshots-0a1b2c3d"));
        assert!(!is_session_id("tmpfs"));
    }
}
