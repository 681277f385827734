//! Each package's one list of files: `[package.metadata.deb] assets` in its crate's manifest
//! (`crates/snapshot-cli/Cargo.toml` for snapshot, `crates/snapshot-certify/Cargo.toml` for
//! snapshot-certify; cargo-deb's own format, `[source, dest, mode]`), read here for the RPM and
//! the tarball so that all three install the same files.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// One file of the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    /// Where it comes from (absolute).
    pub source: PathBuf,
    /// Where it is installed (absolute: `/usr/sbin/snapshot`).
    pub dest: PathBuf,
    pub mode: u32,
}

impl Asset {
    /// Configuration the administrator may change: kept on upgrade.
    pub fn is_conffile(&self) -> bool {
        self.dest.starts_with("/etc")
    }
}

/// The crate whose manifest holds the list (sources are relative to it).
fn manifest_dir(krate: &str) -> PathBuf {
    crate::root().join("crates").join(krate)
}

/// The list of crate `krate`, globs expanded (a glob must match something: a missing file is
/// an error).
pub fn list(krate: &str) -> Result<Vec<Asset>> {
    let path = manifest_dir(krate).join("Cargo.toml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path:?}"))?;
    let manifest: toml::Value =
        toml::from_str(&text).with_context(|| format!("parsing {path:?}"))?;
    let entries = manifest
        .get("package")
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("deb"))
        .and_then(|d| d.get("assets"))
        .and_then(|a| a.as_array())
        .with_context(|| format!("{path:?}: no [package.metadata.deb] assets"))?;
    let mut out = Vec::new();
    for entry in entries {
        let fields: Vec<&str> = entry
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let [source, dest, mode] = fields[..] else {
            bail!("{path:?}: asset {entry} is not [source, dest, mode]");
        };
        let mode = u32::from_str_radix(mode, 8)
            .with_context(|| format!("{path:?}: asset {source}: mode {mode:?}"))?;
        for file in expand(&manifest_dir(krate).join(source))? {
            let file = file
                .canonicalize()
                .with_context(|| format!("asset {file:?}"))?;
            out.push(Asset {
                dest: destination(&file, dest),
                source: file,
                mode,
            });
        }
    }
    Ok(out)
}

/// `dest` for `file`: under `dest` with the file's name when `dest` ends in `/`.
fn destination(file: &Path, dest: &str) -> PathBuf {
    let base = Path::new("/").join(dest);
    if dest.ends_with('/') {
        base.join(file.file_name().unwrap_or_default())
    } else {
        base
    }
}

/// The files a source names: itself, or, for a `*` in its file name, the matching files of
/// its directory (sorted).
fn expand(source: &Path) -> Result<Vec<PathBuf>> {
    let name = source
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("asset {source:?}: no file name"))?;
    let Some((prefix, suffix)) = name.split_once('*') else {
        if !source.is_file() {
            bail!("asset {source:?}: no such file (run `cargo xtask dist` to build target/dist)");
        }
        return Ok(vec![source.to_owned()]);
    };
    let dir = source.parent().unwrap_or(Path::new("."));
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("asset {source:?}: reading {dir:?}"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.len() >= prefix.len() + suffix.len()
                        && n.starts_with(prefix)
                        && n.ends_with(suffix)
                })
        })
        .collect();
    found.sort();
    if found.is_empty() {
        bail!("asset {source:?}: matches no file");
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        let f = Path::new("/x/target/dist/bin/snapshot");
        assert_eq!(destination(f, "usr/sbin/"), Path::new("/usr/sbin/snapshot"));
        assert_eq!(
            destination(f, "usr/share/bash-completion/completions/snapshot"),
            Path::new("/usr/share/bash-completion/completions/snapshot")
        );
    }

    #[test]
    fn globs_match_by_prefix_and_suffix() {
        let t = tempfile::tempdir().unwrap();
        for n in ["a.1", "b.1", "c.2", "_z"] {
            std::fs::write(t.path().join(n), "").unwrap();
        }
        let names = |pat: &str| -> Vec<String> {
            expand(&t.path().join(pat))
                .unwrap()
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names("*.1"), ["a.1", "b.1"]);
        assert_eq!(names("_*"), ["_z"]);
        assert!(expand(&t.path().join("*.3")).is_err());
        assert!(expand(&t.path().join("missing")).is_err());
    }
}
