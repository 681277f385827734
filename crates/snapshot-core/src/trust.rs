//! The trust rule for what `snapshot` runs or reads as root: writer hooks, provider scripts,
//! the freeze provider's device command, the configuration file.
//!
//! A path is trusted when the file it names — symlinks resolved — and every directory above
//! it up to `/` are owned by root and writable by nobody else (the rule cron, sudo and
//! systemd apply): whoever can write the file, or rename entries in a directory on the way,
//! could make root run or read what they like. Symlinks met on the way are followed here, one
//! component at a time, so the directories holding them are checked too: whoever can write
//! such a directory can repoint the link.
//!
//! Exceptions:
//! - A root-owned directory with the sticky bit (like `/tmp`) may be writable by others:
//!   they cannot rename or remove root's entries in it, and every entry on the path must be
//!   root's anyway.
//! - When `snapshot` runs as a user other than root (its unit tests, say), that user's own
//!   files count as root's: they cannot give it more than it already has.
//!
//! Group and other write bits are checked; an ACL granting write shows there too, since the
//! group bits of a file with an ACL are the ACL's mask.

use std::ffi::OsString;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// What a refusal says the rule is.
pub const RULE: &str = "files run or read as root must be owned by root and writable only by \
                        root, in directories that are too";

/// Symlinks followed before giving up, as the kernel does (ELOOP after 40).
const MAX_SYMLINKS: usize = 40;

const STICKY: u32 = 0o1000;

/// A refused path: `what` names its role ("writer", "provider script", "configuration"…).
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: not trusted: {reason}", path.display())]
pub struct TrustError {
    pub what: String,
    pub path: PathBuf,
    pub reason: Reason,
}

/// Which part of the rule failed, and where.
#[derive(Debug, thiserror::Error)]
pub enum Reason {
    #[error("{} is writable by {who} (mode {mode:04o}); {RULE}", path.display())]
    Writable {
        path: PathBuf,
        who: &'static str,
        mode: u32,
    },
    #[error("{} is owned by uid {uid}, not by root; {RULE}", path.display())]
    Owner { path: PathBuf, uid: u32 },
    #[error("{} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("more than {MAX_SYMLINKS} symlinks to follow")]
    TooManySymlinks,
    #[error("cannot inspect {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Checks `path` (a file or a directory) against the trust rule; returns the path with
/// every symlink resolved. `what` names its role in the error.
pub fn check(what: &str, path: &Path) -> Result<PathBuf, TrustError> {
    resolve(path).map_err(|reason| TrustError {
        what: what.to_owned(),
        path: path.to_owned(),
        reason,
    })
}

/// One step of the walk.
enum Step {
    Root,
    Parent,
    Name(OsString),
}

/// The steps of `path`, in reverse, so that the next one is popped off the end.
fn steps(path: &Path) -> Vec<Step> {
    let mut steps: Vec<Step> = path
        .components()
        .filter_map(|c| match c {
            Component::RootDir | Component::Prefix(_) => Some(Step::Root),
            Component::ParentDir => Some(Step::Parent),
            Component::CurDir => None,
            Component::Normal(name) => Some(Step::Name(name.to_owned())),
        })
        .collect();
    steps.reverse();
    steps
}

/// Walks `path` from `/` the way the kernel resolves it, checking every entry met: the
/// directories, each symlink (whose target is then walked in its place), and the file.
fn resolve(path: &Path) -> Result<PathBuf, Reason> {
    let absolute = if path.is_absolute() {
        path.to_owned()
    } else {
        // The working directory's own chain is then walked too.
        let cwd = std::env::current_dir().map_err(|source| Reason::Io {
            path: path.to_owned(),
            error: source,
        })?;
        cwd.join(path)
    };
    let root = PathBuf::from("/");
    check_entry(&root, &inspect(&root)?)?;
    let mut at = root.clone();
    let mut todo = steps(&absolute);
    let mut links = 0;
    while let Some(step) = todo.pop() {
        let name = match step {
            Step::Root => {
                at = root.clone();
                continue;
            }
            // `at` has no symlink in it, so its parent is the directory already walked.
            Step::Parent => {
                at.pop();
                continue;
            }
            Step::Name(name) => name,
        };
        let next = at.join(&name);
        let meta = inspect(&next)?;
        check_owner(&next, &meta)?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(Reason::TooManySymlinks);
            }
            let target = std::fs::read_link(&next).map_err(|source| Reason::Io {
                path: next.clone(),
                error: source,
            })?;
            // A relative target goes on from the directory holding the link: `at`.
            todo.extend(steps(&target));
            continue;
        }
        check_entry(&next, &meta)?;
        if !todo.is_empty() && !meta.is_dir() {
            return Err(Reason::NotADirectory { path: next });
        }
        at = next;
    }
    Ok(at)
}

fn inspect(path: &Path) -> Result<Metadata, Reason> {
    std::fs::symlink_metadata(path).map_err(|source| Reason::Io {
        path: path.to_owned(),
        error: source,
    })
}

/// A file or directory: the right owner, and nobody else can write it.
fn check_entry(path: &Path, meta: &Metadata) -> Result<(), Reason> {
    check_owner(path, meta)?;
    check_mode(path, meta)
}

/// Root's, or (not running as root) our own. Symlinks too: in a sticky directory the owner
/// of a link can replace it.
fn check_owner(path: &Path, meta: &Metadata) -> Result<(), Reason> {
    let uid = meta.uid();
    if trusted_owner(uid) {
        return Ok(());
    }
    Err(Reason::Owner {
        path: path.to_owned(),
        uid,
    })
}

/// Root — or the user running this, who is root wherever it matters (the unit tests run
/// unprivileged over their own files): they cannot give it more than it already has.
pub fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == rustix::process::geteuid().as_raw()
}

/// Not writable by group or others, except a sticky directory: there others may add entries
/// but not rename or remove ours.
fn check_mode(path: &Path, meta: &Metadata) -> Result<(), Reason> {
    let mode = meta.mode() & 0o7777;
    if meta.is_dir() && mode & STICKY != 0 {
        return Ok(());
    }
    let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (false, false) => return Ok(()),
        (true, false) => "group",
        (false, true) => "others",
        (true, true) => "group and others",
    };
    Err(Reason::Writable {
        path: path.to_owned(),
        who,
        mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapshot_testkit::set_mode;
    use std::os::unix::fs::{chown, lchown, symlink};

    const NOBODY: u32 = 65534;

    /// A temporary directory (0700, ours) under `/tmp`.
    fn base() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::Builder::new()
            .prefix("snaptest-trust-")
            .tempdir()
            .unwrap();
        let p = t.path().canonicalize().unwrap();
        (t, p)
    }

    fn dir(path: &Path, mode: u32) -> PathBuf {
        std::fs::create_dir(path).unwrap();
        set_mode(path, mode);
        path.to_owned()
    }

    fn file(path: &Path, mode: u32) -> PathBuf {
        std::fs::write(path, "#!/bin/sh\nexit 0\n").unwrap();
        set_mode(path, mode);
        path.to_owned()
    }

    fn refusal(path: &Path) -> Reason {
        match check("writer", path) {
            Err(e) => e.reason,
            Ok(p) => panic!("{path:?} (resolved {p:?}) was trusted"),
        }
    }

    fn assert_writable(path: &Path, at: &Path, want_who: &str, want_mode: u32) {
        match refusal(path) {
            Reason::Writable { path, who, mode } => {
                assert_eq!((path.as_path(), who, mode), (at, want_who, want_mode))
            }
            other => panic!("{other}"),
        }
    }

    fn assert_owner(path: &Path, at: &Path) {
        match refusal(path) {
            Reason::Owner { path, uid } => assert_eq!((path.as_path(), uid), (at, NOBODY)),
            other => panic!("{other}"),
        }
    }

    /// The owner tests chown to nobody, which needs root; in CI they must run.
    fn privileged(test: &str) -> bool {
        snapshot_testkit::require_privileges(test)
    }

    #[test]
    fn positive_control_file_and_directory() {
        let (_t, b) = base();
        let d = dir(&b.join("writers.d"), 0o755);
        let f = file(&d.join("hook"), 0o755);
        assert_eq!(check("writer", &f).unwrap(), f);
        assert_eq!(check("writer directory", &d).unwrap(), d);
        // Read-only for everyone, and group-owned by anyone: still root's alone to change.
        set_mode(&f, 0o555);
        check("writer", &f).unwrap();
    }

    #[test]
    fn file_writable_by_group_or_others() {
        let (_t, b) = base();
        let f = file(&b.join("hook"), 0o775);
        assert_writable(&f, &f, "group", 0o775);
        set_mode(&f, 0o757);
        assert_writable(&f, &f, "others", 0o757);
        set_mode(&f, 0o777);
        assert_writable(&f, &f, "group and others", 0o777);
        // The sticky exception is for directories only.
        set_mode(&f, 0o1777);
        assert_writable(&f, &f, "group and others", 0o1777);
        set_mode(&f, 0o755);
        check("writer", &f).unwrap();
    }

    #[test]
    fn directory_writable_by_group_or_others() {
        let (_t, b) = base();
        let d = dir(&b.join("writers.d"), 0o775);
        let f = file(&d.join("hook"), 0o755);
        assert_writable(&f, &d, "group", 0o775);
        assert_writable(&d, &d, "group", 0o775);
        // Higher up counts too.
        set_mode(&d, 0o755);
        let inner = dir(&d.join("inner"), 0o755);
        let g = file(&inner.join("hook"), 0o755);
        set_mode(&d, 0o757);
        assert_writable(&g, &d, "others", 0o757);
        set_mode(&d, 0o755);
        check("writer", &g).unwrap();
    }

    #[test]
    fn sticky_directory_may_be_writable_by_others() {
        let (_t, b) = base();
        let d = dir(&b.join("shared"), 0o1777);
        let f = file(&d.join("hook"), 0o755);
        check("writer", &f).unwrap();
        check("writer directory", &d).unwrap();
        // Without the sticky bit anyone could rename the hook away and put theirs there.
        set_mode(&d, 0o777);
        assert_writable(&f, &d, "group and others", 0o777);
    }

    #[test]
    fn file_owned_by_another_user() {
        if !privileged("trust file_owned_by_another_user") {
            return;
        }
        let (_t, b) = base();
        let f = file(&b.join("hook"), 0o755);
        chown(&f, Some(NOBODY), None).unwrap();
        assert_owner(&f, &f);
        chown(&f, Some(0), None).unwrap();
        check("writer", &f).unwrap();
    }

    #[test]
    fn directory_owned_by_another_user() {
        if !privileged("trust directory_owned_by_another_user") {
            return;
        }
        let (_t, b) = base();
        let d = dir(&b.join("writers.d"), 0o755);
        let f = file(&d.join("hook"), 0o755);
        chown(&d, Some(NOBODY), None).unwrap();
        assert_owner(&f, &d);
        assert_owner(&d, &d);
        chown(&d, Some(0), None).unwrap();
        check("writer", &f).unwrap();
    }

    #[test]
    fn sticky_directory_entries_must_be_roots() {
        if !privileged("trust sticky_directory_entries_must_be_roots") {
            return;
        }
        let (_t, b) = base();
        let d = dir(&b.join("shared"), 0o1777);
        let f = file(&d.join("hook"), 0o755);
        chown(&f, Some(NOBODY), None).unwrap();
        assert_owner(&f, &f);
        // A link another user owns in a sticky directory: they can replace it.
        let target = file(&b.join("real-hook"), 0o755);
        let link = d.join("link");
        symlink(&target, &link).unwrap();
        lchown(&link, Some(NOBODY), None).unwrap();
        assert_owner(&link, &link);
        lchown(&link, Some(0), None).unwrap();
        assert_eq!(check("writer", &link).unwrap(), target);
        // A sticky directory itself owned by another user is theirs to change.
        chown(&d, Some(NOBODY), None).unwrap();
        assert_owner(&link, &d);
    }

    #[test]
    fn symlink_to_an_untrusted_file() {
        let (_t, b) = base();
        let trusted = dir(&b.join("writers.d"), 0o755);
        let open = dir(&b.join("open"), 0o777);
        let target = file(&open.join("hook"), 0o755);
        let link = trusted.join("10-hook");
        symlink(&target, &link).unwrap();
        assert_writable(&link, &open, "group and others", 0o777);
        set_mode(&open, 0o755);
        set_mode(&target, 0o666);
        assert_writable(&link, &target, "group and others", 0o666);
        set_mode(&target, 0o755);
        assert_eq!(check("writer", &link).unwrap(), target);
        // A relative link resolves from its own directory, through `..`.
        let rel = trusted.join("20-rel");
        symlink("../open/hook", &rel).unwrap();
        assert_eq!(check("writer", &rel).unwrap(), target);
        set_mode(&open, 0o775);
        assert_writable(&rel, &open, "group", 0o775);
    }

    #[test]
    fn symlink_in_an_untrusted_directory() {
        let (_t, b) = base();
        let target = file(&b.join("hook"), 0o755);
        let open = dir(&b.join("open"), 0o775);
        let link = open.join("10-hook");
        symlink(&target, &link).unwrap();
        // Its target is fine, but whoever writes `open` can repoint the link.
        assert_writable(&link, &open, "group", 0o775);
        // A trusted directory reached through a link in an untrusted one: the same.
        let alias = open.join("alias");
        symlink(&b, &alias).unwrap();
        assert_writable(&alias.join("hook"), &open, "group", 0o775);
        set_mode(&open, 0o755);
        assert_eq!(check("writer", &link).unwrap(), target);
        assert_eq!(check("writer", &alias.join("hook")).unwrap(), target);
    }

    #[test]
    fn symlink_loops_and_missing_files_are_refused() {
        let (_t, b) = base();
        symlink(b.join("b"), b.join("a")).unwrap();
        symlink(b.join("a"), b.join("b")).unwrap();
        assert!(matches!(refusal(&b.join("a")), Reason::TooManySymlinks));
        match refusal(&b.join("missing")) {
            Reason::Io {
                path,
                error: source,
            } => {
                assert_eq!(path, b.join("missing"));
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("{other}"),
        }
        let f = file(&b.join("file"), 0o755);
        assert!(matches!(
            refusal(&f.join("below")),
            Reason::NotADirectory { path } if path == f
        ));
    }

    #[test]
    fn message_names_the_file_and_the_rule() {
        let (_t, b) = base();
        let d = dir(&b.join("writers.d"), 0o775);
        let f = file(&d.join("x"), 0o755);
        let e = check("writer", &f).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "writer {}: not trusted: {} is writable by group (mode 0775); files run or read \
                 as root must be owned by root and writable only by root, in directories that \
                 are too",
                f.display(),
                d.display()
            )
        );
    }

    #[test]
    fn relative_paths_are_walked_from_the_root() {
        // Whatever the working directory of the test is, `.` is a directory on a path from /.
        let resolved = check("directory", Path::new("."));
        let cwd = std::env::current_dir().unwrap().canonicalize().unwrap();
        match resolved {
            Ok(p) => assert_eq!(p, cwd),
            // The checkout may sit in a directory others can write: then it says so.
            Err(e) => assert!(
                matches!(e.reason, Reason::Writable { .. } | Reason::Owner { .. }),
                "{e}"
            ),
        }
    }
}
