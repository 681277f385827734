//! The view under TARGET: a private tmpfs holding the skeleton of parent directories, with
//! each snapshot mounted read-only at TARGET + its original mount point, parents before
//! children; the skeleton is made read-only once everything is in place.
//!
//! Everything here works through descriptors (README "Security"): the tmpfs is attached to the
//! TARGET directory the session validated, checked to be what the path TARGET shows before and
//! after; every place in the view is looked up beneath the view's root without following a
//! symlink, and directories are made there with `mkdirat`; a snapshot arrives as a detached
//! mount tree and is attached onto the directory looked up. Teardown unmounts through
//! `/proc/self/fd` paths that start at the view's root, so renaming TARGET's parents during
//! the hold cannot redirect it.

use crate::sys::{self, DetachedMount, MountIds};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("{what} {path:?}: {error}")]
    Io {
        what: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    #[error("cannot place a mount at {path:?}: {reason}")]
    CannotPlace { path: PathBuf, reason: String },
    #[error("target {path:?} changed during the session ({how}); nothing was mounted there")]
    TargetChanged { path: PathBuf, how: String },
    #[error("DIR {dir:?} changed during the session: {how} in the snapshot, refused")]
    DirChanged { dir: PathBuf, how: String },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ViewError + 'a {
    move |source| ViewError::Io {
        what,
        path: path.to_owned(),
        error: source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Skeleton,
    Snapshot,
}

/// One mount the session made below the view's root.
#[derive(Debug)]
struct ViewMount {
    /// Relative to TARGET.
    rel: PathBuf,
    kind: Kind,
    /// Identity of the mount made there (unique mount id where the kernel has one).
    id: u64,
    /// Its id in the mount table (for finding mounts stacked on it).
    table_id: u64,
}

/// The view: its tmpfs at TARGET and the mounts made in it, torn down in reverse.
#[derive(Debug)]
pub struct View {
    target: PathBuf,
    /// The TARGET directory validated at the start (the one the tmpfs covers).
    target_dir: OwnedFd,
    /// The view tmpfs's root. `None` once unmounted.
    root: Option<OwnedFd>,
    /// When `/` is a DIR: its snapshot, mounted over the tmpfs's root (the view of `/` *is*
    /// TARGET). Lookups in the view start here then, else at `root`.
    top: Option<OwnedFd>,
    root_ids: MountIds,
    mounts: Vec<ViewMount>,
    skeleton_name: String,
}

/// Whether `a` and `b` are one object (device and inode) on one mount.
fn same_place(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(sys::file_identity(a)? == sys::file_identity(b)?
        && sys::mount_ids_of(a)? == sys::mount_ids_of(b)?)
}

impl View {
    /// Mounts the skeleton tmpfs (named `name` in the mount table) on `target_dir`, the
    /// directory validated as `target`. Refused, with nothing left mounted, when the path
    /// `target` no longer leads to that directory before or after.
    pub fn new(target: &Path, target_dir: OwnedFd, name: &str) -> Result<Self, ViewError> {
        let changed = |how: String| ViewError::TargetChanged {
            path: target.to_owned(),
            how,
        };
        let now = sys::open_dir_nofollow(target).map_err(|e| changed(now_failing(&e)))?;
        if !same_place(now.as_fd(), target_dir.as_fd()).map_err(io_err("inspecting", target))? {
            return Err(changed("it is another directory now".into()));
        }
        drop(now);
        let tmpfs = DetachedMount::new_tmpfs(name)
            .map_err(io_err("making the view's tmpfs for", target))?;
        let root = tmpfs
            .attach(target_dir.as_fd())
            .map_err(io_err("mounting the view's tmpfs at", target))?;
        let root_ids = sys::mount_ids_of(root.as_fd()).map_err(io_err("inspecting", target))?;
        // Swapped between the check and the mount: the tmpfs is on the validated directory,
        // but the path shows something else. Undo it.
        let shown = sys::open_dir_nofollow(target).and_then(|fd| sys::mount_ids_of(fd.as_fd()));
        if shown.as_ref().ok() != Some(&root_ids) {
            let _ = sys::detach_fd_mount(root.as_fd());
            let how = match shown {
                Err(e) => now_failing(&e),
                Ok(_) => "it is another directory now".into(),
            };
            return Err(changed(how));
        }
        Ok(Self {
            target: target.to_owned(),
            target_dir,
            root: Some(root),
            top: None,
            root_ids,
            mounts: Vec::new(),
            skeleton_name: name.to_owned(),
        })
    }

    /// TARGET + `mount_point`.
    pub fn path_for(&self, mount_point: &Path) -> PathBuf {
        match mount_point.strip_prefix("/").unwrap_or(mount_point) {
            rel if rel.as_os_str().is_empty() => self.target.clone(),
            rel => self.target.join(rel),
        }
    }

    /// Where lookups in the view start: `/`'s snapshot when there is one, else the tmpfs.
    fn root(&self) -> Result<BorrowedFd<'_>, ViewError> {
        self.top
            .as_ref()
            .or(self.root.as_ref())
            .map(|r| r.as_fd())
            .ok_or_else(|| ViewError::Io {
                what: "using the view at",
                path: self.target.clone(),
                error: io::Error::new(io::ErrorKind::NotFound, "the view is unmounted"),
            })
    }

    /// Attaches `tree` (a snapshot's detached mount) at TARGET + `mount_point`. `/` (which
    /// comes first, parents being attached before children) goes over the tmpfs's root.
    pub fn attach(&mut self, mount_point: &Path, tree: DetachedMount) -> Result<(), ViewError> {
        let rel = relative(mount_point);
        let is_root = rel.as_os_str().is_empty();
        if is_root && !self.mounts.is_empty() {
            return Err(self.cannot_place(mount_point, "/ must be attached first".into()));
        }
        let at = self.prepare(mount_point)?;
        let path = self.path_for(mount_point);
        let root = tree
            .attach(at.as_fd())
            .map_err(io_err("mounting a snapshot at", &path))?;
        let ids = sys::mount_ids_of(root.as_fd()).map_err(io_err("inspecting", &path))?;
        self.mounts.push(ViewMount {
            rel,
            kind: Kind::Snapshot,
            id: ids.unique,
            table_id: ids.reusable,
        });
        if is_root {
            self.top = Some(root);
        }
        Ok(())
    }

    /// Opens TARGET + `mount_point` as an existing directory to mount on, making it if needed.
    ///
    /// Inside a skeleton the directories are created. Where the place lies inside an already
    /// mounted snapshot, it must exist there — unless the deepest existing ancestor is an empty
    /// directory (the mount point of a filesystem that is not part of the view), which then
    /// gets a skeleton tmpfs of its own. No symlink is followed on the way.
    fn prepare(&mut self, mount_point: &Path) -> Result<OwnedFd, ViewError> {
        let rel = relative(mount_point);
        let mut cur = sys::open_dir_beneath(self.root()?, Path::new(""), true)
            .map_err(io_err("opening", &self.target))?;
        let mut cur_rel = PathBuf::new();
        for part in rel.components() {
            let Component::Normal(name) = part else {
                return Err(self.cannot_place(mount_point, "not a plain path".into()));
            };
            let next = cur_rel.join(name);
            cur = match sys::open_dir_beneath(self.root()?, &next, true) {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.make_dir(cur.as_fd(), &cur_rel, name, mount_point)?
                }
                Err(e) => {
                    let how = format!("{:?}: {}", self.path_for(&next), sys::lookup_failure(&e));
                    return Err(self.cannot_place(mount_point, how));
                }
            };
            cur_rel = next;
        }
        Ok(cur)
    }

    fn cannot_place(&self, mount_point: &Path, reason: String) -> ViewError {
        ViewError::CannotPlace {
            path: self.path_for(mount_point),
            reason,
        }
    }

    /// Makes the directory `name` in `parent` (at `parent_rel`): directly in a skeleton; in a
    /// snapshot only by covering an empty directory with a skeleton tmpfs of its own.
    fn make_dir(
        &mut self,
        parent: BorrowedFd<'_>,
        parent_rel: &Path,
        name: &std::ffi::OsStr,
        mount_point: &Path,
    ) -> Result<OwnedFd, ViewError> {
        let parent_path = self.path_for(parent_rel);
        let ids = sys::mount_ids_of(parent).map_err(io_err("inspecting", &parent_path))?;
        let in_skeleton = ids == self.root_ids
            || self
                .mounts
                .iter()
                .any(|m| m.kind == Kind::Skeleton && m.id == ids.unique);
        if in_skeleton {
            return sys::make_dir_in(parent, name)
                .map_err(io_err("creating a directory in", &parent_path));
        }
        if !sys::dir_is_empty(parent).map_err(io_err("reading", &parent_path))? {
            return Err(self.cannot_place(
                mount_point,
                format!(
                    "{parent_path:?} lies in a read-only snapshot and is not empty, so the \
                     directories leading to the mount cannot be made"
                ),
            ));
        }
        let tmpfs = DetachedMount::new_tmpfs(&self.skeleton_name)
            .map_err(io_err("making a skeleton tmpfs for", &parent_path))?;
        let skeleton = tmpfs
            .attach(parent)
            .map_err(io_err("mounting a skeleton tmpfs at", &parent_path))?;
        let ids =
            sys::mount_ids_of(skeleton.as_fd()).map_err(io_err("inspecting", &parent_path))?;
        self.mounts.push(ViewMount {
            rel: parent_rel.to_owned(),
            kind: Kind::Skeleton,
            id: ids.unique,
            table_id: ids.reusable,
        });
        sys::make_dir_in(skeleton.as_fd(), name)
            .map_err(io_err("creating a directory in", &parent_path))
    }

    /// Makes every skeleton read-only.
    pub fn seal(&self) -> Result<(), ViewError> {
        if let Some(tmpfs) = &self.root {
            sys::seal_superblock(tmpfs.as_fd())
                .map_err(io_err("making read-only", &self.target))?;
        }
        let root = self.root()?;
        for m in self.mounts.iter().filter(|m| m.kind == Kind::Skeleton) {
            let path = self.path_for(&m.rel);
            let fd = sys::open_dir_beneath(root, &m.rel, true).map_err(io_err("opening", &path))?;
            sys::seal_superblock(fd.as_fd()).map_err(io_err("making read-only", &path))?;
        }
        Ok(())
    }

    /// Opens `dir` (an absolute DIR) in the view, refusing a DIR that is not a directory
    /// reached without symlinks there: a user who owns a DIR could have replaced it (or a
    /// directory above it) with a symlink before the snapshot instant, and following it would
    /// show anything on the host, live.
    pub fn open_dir(&self, dir: &Path) -> Result<OwnedFd, ViewError> {
        sys::open_dir_beneath(self.root()?, &relative(dir), true).map_err(|e| {
            ViewError::DirChanged {
                dir: dir.to_owned(),
                how: sys::lookup_failure(&e),
            }
        })
    }

    /// Unmounts everything, children before parents. A mount still busy after retries is
    /// detached lazily (it leaves the namespace at once) and reported.
    ///
    /// Unmounting takes whatever is on top at a place: a mount someone stacked over the view
    /// during the backup is not the session's to remove. Such a mount is left alone and
    /// reported, and so is every view mount holding it (unmounting those would need a lazy
    /// detach that takes it along), so that the session keeps its journal and `snapshot
    /// cleanup` finishes once it is gone.
    pub fn teardown(&mut self) -> Vec<String> {
        let Some(root) = self.root.take() else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        let mut held: Vec<PathBuf> = Vec::new();
        let session_ids: Vec<u64> = self
            .mounts
            .iter()
            .map(|m| m.id)
            .chain([self.root_ids.unique])
            .collect();
        while let Some(m) = self.mounts.pop() {
            let shown = self.path_for(&m.rel);
            if m.rel.as_os_str().is_empty() && held.is_empty() {
                // `/`'s snapshot over the tmpfs's root: our descriptor of it would keep it busy.
                self.top = None;
                let ids = MountIds {
                    unique: m.id,
                    reusable: m.table_id,
                };
                let at = sys::fd_path(root.as_fd(), Path::new(""));
                if let Err(e) = self.unmount_top(&at, ids) {
                    problems.push(e);
                    held.push(m.rel);
                }
                continue;
            }
            let lookup = self.top.as_ref().unwrap_or(&root);
            if let Some(h) = held.iter().find(|h| h.starts_with(&m.rel)) {
                problems.push(format!(
                    "{shown:?}: left mounted: it holds {:?}",
                    self.path_for(h)
                ));
                held.push(m.rel);
                continue;
            }
            let at = sys::fd_path(lookup.as_fd(), &m.rel);
            let now = sys::open_dir_beneath(lookup.as_fd(), &m.rel, true)
                .and_then(|fd| sys::mount_ids_of(fd.as_fd()))
                .map(|ids| ids.unique);
            match now {
                Ok(now) if now != m.id && session_ids.contains(&now) => {
                    // The place shows another of the session's mounts (its parent): the one
                    // made here is gone already (seen when an overflowing LVM snapshot's
                    // filesystem went away during the hold). Nothing to unmount here.
                    log::warn!("{shown:?}: the mount the session made there is gone already");
                    continue;
                }
                Ok(now) if now != m.id => {
                    problems.push(covered(&shown, now, m.id));
                    held.push(m.rel);
                    continue;
                }
                _ => {}
            }
            if let Err(e) = unmount_retrying(&at, &shown) {
                problems.push(e);
            }
        }
        if !held.is_empty() {
            problems.push(format!(
                "{:?}: left mounted: it holds {:?}",
                self.target, held
            ));
            return problems;
        }
        // Our own descriptor of the tmpfs would keep it busy.
        drop(root);
        let at = sys::fd_path(self.target_dir.as_fd(), Path::new(""));
        if let Err(e) = self.unmount_top(&at, self.root_ids) {
            problems.push(e);
        }
        problems
    }

    /// Unmounts the topmost mount on TARGET (reached through `at`, a `/proc/self/fd` path
    /// that leads to it: the view's tmpfs, or `/`'s snapshot over it) once it is known to be
    /// `ours`.
    fn unmount_top(&self, at: impl AsRef<Path>, ours: MountIds) -> Result<(), String> {
        let shown =
            sys::open_dir_nofollow(&self.target).and_then(|fd| sys::mount_ids_of(fd.as_fd()));
        if shown.as_ref().ok() != Some(&ours) {
            // Covered by a mount of someone else's, or TARGET's path was changed: only the
            // mount table tells which.
            let table = crate::MountTable::read().map_err(|e| e.to_string())?;
            if let Some(m) = table.mounts.iter().find(|m| m.parent_id == ours.reusable) {
                let now = shown.map(|s| s.unique).unwrap_or(m.id);
                return Err(covered(&self.target, now, ours.unique));
            }
            log::warn!(
                "target {:?}: its path no longer leads to the view; unmounting the view where it is",
                self.target
            );
        }
        unmount_retrying(at.as_ref(), &self.target)
    }
}

fn covered(shown: &Path, now: u64, ours: u64) -> String {
    format!(
        "{shown:?}: covered by a mount this session did not make (mount {now}, the session's \
         {ours}); left alone (unmount it, then run `snapshot cleanup`)"
    )
}

/// `mount_point` without its leading `/`.
fn relative(path: &Path) -> PathBuf {
    path.strip_prefix("/").unwrap_or(path).to_owned()
}

/// [`sys::lookup_failure`] of a path that led to the right place before.
fn now_failing(e: &io::Error) -> String {
    format!("{} now", sys::lookup_failure(e))
}

/// [`sys::unmount_patiently_as`] of a `/proc/self/fd` path, named `shown` in messages.
fn unmount_retrying(path: &Path, shown: &Path) -> Result<(), String> {
    sys::unmount_patiently_as(path, shown, true).map_err(|e| e.to_string())
}
