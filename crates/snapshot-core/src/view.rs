//! The view under TARGET: a private tmpfs holding the skeleton of parent directories, with
//! each snapshot mounted read-only at TARGET + its original mount point, parents before
//! children; the skeleton is made read-only once everything is in place.

use crate::sys;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("{what} {path:?}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot place a mount at {path:?}: {reason}")]
    CannotPlace { path: PathBuf, reason: String },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ViewError + 'a {
    move |source| ViewError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Skeleton,
    Snapshot,
}

/// Mounts made under TARGET, in the order made, each with the identity of the mount made
/// there ([`identity`]); torn down in reverse.
#[derive(Debug)]
pub struct View {
    target: PathBuf,
    mounts: Vec<(PathBuf, Kind, Option<u64>)>,
    skeleton_name: String,
}

/// The identity of the mount on top at `path`: statx's unique mount id (Linux 6.8; never
/// reused), else the reusable one; `None` when the path does not resolve.
fn identity(path: &Path) -> Option<u64> {
    match sys::path_mount(path) {
        Ok(pm) => Some(pm.unique_id),
        Err(e) if e.kind() == io::ErrorKind::Unsupported => sys::mount_id(path).ok(),
        Err(_) => None,
    }
}

impl View {
    /// Mounts the skeleton tmpfs at `target` (named `name` in the mount table).
    pub fn new(target: &Path, name: &str) -> Result<Self, ViewError> {
        sys::mount_skeleton_tmpfs(target, name)
            .map_err(io_err("mounting the view's tmpfs at", target))?;
        Ok(Self {
            target: target.to_owned(),
            mounts: vec![(target.to_owned(), Kind::Skeleton, identity(target))],
            skeleton_name: name.to_owned(),
        })
    }

    /// TARGET + `mount_point`.
    pub fn path_for(&self, mount_point: &Path) -> PathBuf {
        self.target
            .join(mount_point.strip_prefix("/").unwrap_or(mount_point))
    }

    /// Makes TARGET + `mount_point` an existing directory to mount on, and returns it.
    ///
    /// Inside a skeleton the directories are created. Where the place lies inside an already
    /// mounted snapshot, it must exist there — unless the deepest existing ancestor is an empty
    /// directory (the mount point of a filesystem that is not part of the view), which then
    /// gets a skeleton tmpfs of its own.
    pub fn prepare(&mut self, mount_point: &Path) -> Result<PathBuf, ViewError> {
        let at = self.path_for(mount_point);
        let mut existing = at.clone();
        while std::fs::symlink_metadata(&existing).is_err() {
            existing = existing
                .parent()
                .expect("the target exists, so an ancestor exists")
                .to_owned();
        }
        let meta = std::fs::symlink_metadata(&existing).map_err(io_err("inspecting", &existing))?;
        if !meta.is_dir() {
            return Err(ViewError::CannotPlace {
                path: at,
                reason: format!("{existing:?} is not a directory in the view"),
            });
        }
        if existing == at {
            return Ok(at);
        }
        if !self.in_skeleton(&existing)? {
            let empty = std::fs::read_dir(&existing)
                .map_err(io_err("reading", &existing))?
                .next()
                .is_none();
            if !empty {
                return Err(ViewError::CannotPlace {
                    path: at,
                    reason: format!(
                        "{existing:?} lies in a read-only snapshot and is not empty, so the \
                         directories leading to the mount cannot be made"
                    ),
                });
            }
            sys::mount_skeleton_tmpfs(&existing, &self.skeleton_name)
                .map_err(io_err("mounting a skeleton tmpfs at", &existing))?;
            let id = identity(&existing);
            self.mounts.push((existing.clone(), Kind::Skeleton, id));
        }
        std::fs::create_dir_all(&at).map_err(io_err("creating", &at))?;
        Ok(at)
    }

    /// Whether `path` lies on one of the view's skeleton tmpfs mounts.
    fn in_skeleton(&self, path: &Path) -> Result<bool, ViewError> {
        let id = sys::mount_id(path).map_err(io_err("finding the mount of", path))?;
        for (p, kind, _) in &self.mounts {
            if *kind == Kind::Skeleton && sys::mount_id(p).ok() == Some(id) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Records a snapshot mounted at `at` (returned by [`prepare`](Self::prepare)).
    pub fn mounted(&mut self, at: PathBuf) {
        let id = identity(&at);
        self.mounts.push((at, Kind::Snapshot, id));
    }

    /// Makes every skeleton read-only.
    pub fn seal(&self) -> Result<(), ViewError> {
        for (p, kind, _) in &self.mounts {
            if *kind == Kind::Skeleton {
                sys::remount_superblock_readonly(p).map_err(io_err("making read-only", p))?;
            }
        }
        Ok(())
    }

    /// Mount points of the view, in the order made.
    pub fn mount_points(&self) -> impl Iterator<Item = &Path> {
        self.mounts.iter().map(|(p, _, _)| p.as_path())
    }

    /// Unmounts everything, children before parents. A mount still busy after retries is
    /// detached lazily (it leaves the namespace at once) and reported.
    ///
    /// Unmounting by path takes whatever is on top there: a mount someone stacked over the
    /// view during the backup is not the session's to remove. Such a mount is left alone and
    /// reported, and so is every view mount holding it (unmounting those would need a lazy
    /// detach that takes it along), so that the session keeps its journal and `snapshot
    /// cleanup` finishes once it is gone.
    pub fn teardown(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut held: Vec<PathBuf> = Vec::new();
        let session_ids: Vec<u64> = self.mounts.iter().filter_map(|(_, _, id)| *id).collect();
        while let Some((p, _, id)) = self.mounts.pop() {
            if let Some(h) = held.iter().find(|h| h.starts_with(&p)) {
                problems.push(format!("{p:?}: left mounted: it holds {h:?}"));
                held.push(p);
                continue;
            }
            if let (Some(ours), Some(now)) = (id, identity(&p)) {
                if ours != now && session_ids.contains(&now) {
                    // The path shows another of the session's mounts (its parent): the one
                    // made here is gone already (seen when an overflowing LVM snapshot's
                    // filesystem went away during the hold). Nothing to unmount here.
                    log::warn!("{p:?}: the mount the session made there is gone already");
                    continue;
                }
                if ours != now {
                    problems.push(format!(
                        "{p:?}: covered by a mount this session did not make (mount {now}, \
                         the session's {ours}); left alone (unmount it, then run `snapshot \
                         cleanup`)"
                    ));
                    held.push(p);
                    continue;
                }
            }
            if let Err(e) = unmount_patiently(&p) {
                problems.push(e);
            }
        }
        problems
    }
}

/// Unmounts `path`, retrying while busy (a backup program may just be closing its files);
/// detaches lazily as a last resort. Err describes what happened when it was not clean.
pub fn unmount_patiently(path: &Path) -> Result<(), String> {
    let mut last = None;
    for attempt in 0..20 {
        match sys::unmount_path(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(50 * (attempt + 1).min(4)));
            }
            Err(e)
                if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
                    || e.raw_os_error() == Some(rustix::io::Errno::NOENT.raw_os_error()) =>
            {
                // Not a mount point (any more), or no such path any more (a concurrent cleanup
                // unmounted the tmpfs it lay in): nothing is mounted there, nothing to do.
                return Ok(());
            }
            Err(e) => return Err(format!("unmounting {path:?}: {e}")),
        }
    }
    let e = last.expect("loop ran");
    log::warn!("{path:?} is still busy ({e}); detaching it lazily");
    sys::detach_path(path).map_err(|d| format!("unmounting {path:?}: {e}; lazy detach: {d}"))?;
    Ok(())
}
