//! Checks on the command line's DIRs and TARGET, before anything is created.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidationError {
    #[error("no DIR given: name at least one directory to snapshot")]
    NoDirs,
    #[error("DIR {0:?}: not an absolute path")]
    NotAbsolute(PathBuf),
    #[error("DIR {0:?}: contains a '..' component")]
    DotDot(PathBuf),
    #[error("DIR {0:?}: {1}")]
    Inaccessible(PathBuf, String),
    #[error("DIR {0:?}: not a directory")]
    NotADirectory(PathBuf),
    #[error("target {0:?}: {1}")]
    TargetInaccessible(PathBuf, String),
    #[error("target {0:?}: not a directory")]
    TargetNotADirectory(PathBuf),
    #[error("target {0:?}: not empty (the view is built in an empty directory)")]
    TargetNotEmpty(PathBuf),
    #[error("target {target:?}: it is DIR {dir:?} itself (the view is built over TARGET)")]
    TargetIsDir { target: PathBuf, dir: PathBuf },
    #[error("DIR {dir:?}: inside target {target:?}")]
    DirInsideTarget { target: PathBuf, dir: PathBuf },
}

/// DIRs and TARGET after validation: canonical (symlinks resolved), DIRs deduplicated in the
/// order given. Each was opened along its canonical path without following a symlink, so
/// that later steps act on what was validated, not on whatever the path shows by then
/// (README "Security"): TARGET stays open (the view goes on that directory), each DIR's
/// identity is kept (what `run --in-place` covers must still be it).
#[derive(Debug)]
pub struct Validated {
    pub dirs: Vec<PathBuf>,
    /// Device and inode of each DIR as validated, in the same order.
    pub dir_identities: Vec<(u64, u64)>,
    pub target: PathBuf,
    /// `None` once released (a descriptor of a dead view on TARGET would keep it busy).
    pub target_dir: Option<OwnedFd>,
}

/// Opens a canonical directory path without following symlinks: a path swapped between
/// `canonicalize` and here fails instead of leading elsewhere.
fn open_canonical(path: &Path) -> Result<OwnedFd, String> {
    crate::sys::open_dir_nofollow(path).map_err(|e| {
        if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            format!(
                "changed while being validated ({} now)",
                crate::sys::lookup_failure(&e)
            )
        } else {
            io_reason(&e)
        }
    })
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".into(),
        _ => e.to_string(),
    }
}

/// Validates DIRs and TARGET. The emptiness of TARGET is checked separately
/// ([`check_target_empty`]), after the caller has told a busy target from a merely full one.
pub fn validate(dirs: &[PathBuf], target: &Path) -> Result<Validated, ValidationError> {
    let (out, dir_identities) = validate_dirs(dirs)?;
    validate_target(out, dir_identities, target)
}

/// The DIRs alone (`snapshot freeze`, which has no TARGET): canonical, deduplicated in the
/// order given, each opened once without following a symlink; with their identities.
#[allow(clippy::type_complexity)]
pub fn validate_dirs(dirs: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<(u64, u64)>), ValidationError> {
    if dirs.is_empty() {
        return Err(ValidationError::NoDirs);
    }
    let mut out: Vec<PathBuf> = Vec::new();
    let mut dir_identities = Vec::new();
    for dir in dirs {
        if !dir.is_absolute() {
            return Err(ValidationError::NotAbsolute(dir.clone()));
        }
        if dir.components().any(|c| c == Component::ParentDir) {
            return Err(ValidationError::DotDot(dir.clone()));
        }
        let meta = std::fs::metadata(dir)
            .map_err(|e| ValidationError::Inaccessible(dir.clone(), io_reason(&e)))?;
        if !meta.is_dir() {
            return Err(ValidationError::NotADirectory(dir.clone()));
        }
        let canon = dir
            .canonicalize()
            .map_err(|e| ValidationError::Inaccessible(dir.clone(), io_reason(&e)))?;
        if !out.contains(&canon) {
            let fd = open_canonical(&canon)
                .map_err(|reason| ValidationError::Inaccessible(dir.clone(), reason))?;
            let identity = crate::sys::file_identity(fd.as_fd())
                .map_err(|e| ValidationError::Inaccessible(dir.clone(), io_reason(&e)))?;
            out.push(canon);
            dir_identities.push(identity);
        }
    }
    Ok((out, dir_identities))
}

fn validate_target(
    out: Vec<PathBuf>,
    dir_identities: Vec<(u64, u64)>,
    target: &Path,
) -> Result<Validated, ValidationError> {
    let meta = std::fs::metadata(target)
        .map_err(|e| ValidationError::TargetInaccessible(target.to_owned(), io_reason(&e)))?;
    if !meta.is_dir() {
        return Err(ValidationError::TargetNotADirectory(target.to_owned()));
    }
    let canon_target = target
        .canonicalize()
        .map_err(|e| ValidationError::TargetInaccessible(target.to_owned(), io_reason(&e)))?;
    // TARGET inside a DIR is fine (docs/DESIGN.md §2.4): every snapshot is taken before the
    // view is mounted on TARGET, and every mount in the view is non-recursive, so the view of
    // that DIR shows TARGET as the directory it was, empty. TARGET must not be a DIR or hold
    // one: the view would cover what it is to show.
    for dir in &out {
        if *dir == canon_target {
            return Err(ValidationError::TargetIsDir {
                target: target.to_owned(),
                dir: dir.clone(),
            });
        }
        if dir.starts_with(&canon_target) {
            return Err(ValidationError::DirInsideTarget {
                target: target.to_owned(),
                dir: dir.clone(),
            });
        }
    }
    let target_dir = open_canonical(&canon_target)
        .map_err(|reason| ValidationError::TargetInaccessible(target.to_owned(), reason))?;
    Ok(Validated {
        dirs: out,
        dir_identities,
        target: canon_target,
        target_dir: Some(target_dir),
    })
}

pub fn check_target_empty(target: &Path) -> Result<(), ValidationError> {
    let mut entries = std::fs::read_dir(target)
        .map_err(|e| ValidationError::TargetInaccessible(target.to_owned(), io_reason(&e)))?;
    if entries.next().is_some() {
        return Err(ValidationError::TargetNotEmpty(target.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_each_bad_input_naming_it() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        let target = t.path().join("t");
        let file = t.path().join("f");
        std::fs::create_dir(&d).unwrap();
        std::fs::create_dir(&target).unwrap();
        std::fs::write(&file, "x").unwrap();
        let v = |dirs: &[&Path], target: &Path| {
            validate(
                &dirs.iter().map(|p| p.to_path_buf()).collect::<Vec<_>>(),
                target,
            )
        };
        let v = |dirs: &[&Path], target: &Path| v(dirs, target).map(|v| v.dirs);
        assert_eq!(v(&[], &target), Err(ValidationError::NoDirs));
        assert_eq!(
            v(&[Path::new("rel")], &target),
            Err(ValidationError::NotAbsolute("rel".into()))
        );
        let dd = d.join("..").join("d");
        assert_eq!(v(&[&dd], &target), Err(ValidationError::DotDot(dd.clone())));
        let missing = t.path().join("missing");
        assert!(
            matches!(v(&[&missing], &target), Err(ValidationError::Inaccessible(p, _)) if p == missing)
        );
        assert_eq!(
            v(&[&file], &target),
            Err(ValidationError::NotADirectory(file.clone()))
        );
        assert!(matches!(
            v(&[&d], &missing),
            Err(ValidationError::TargetInaccessible(..))
        ));
        assert_eq!(
            v(&[&d], &file),
            Err(ValidationError::TargetNotADirectory(file.clone()))
        );
        let inner = d.join("t");
        std::fs::create_dir(&inner).unwrap();
        assert!(v(&[&d], &inner).is_ok(), "TARGET inside a DIR is allowed");
        assert!(v(&[Path::new("/")], &inner).is_ok(), "so is / as a DIR");
        assert!(matches!(
            v(&[&inner], &inner),
            Err(ValidationError::TargetIsDir { .. })
        ));
        assert!(matches!(
            v(&[&inner], &d),
            Err(ValidationError::DirInsideTarget { .. })
        ));
        let ok = v(&[&d, &d], &target).unwrap();
        assert_eq!(ok.len(), 1, "duplicates collapse");
        assert!(check_target_empty(&target).is_ok());
        assert_eq!(
            check_target_empty(&d),
            Err(ValidationError::TargetNotEmpty(d.clone()))
        );
    }
}
