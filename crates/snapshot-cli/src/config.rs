//! `/etc/snapshot/snapshot.toml` (or `--config FILE`): defaults for the session options. A
//! value given on the command line wins over the file.

use crate::args::{parse_duration, SessionArgs};
use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::Deserialize;
use snapshot_core::trust::{self, TrustError};
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/etc/snapshot/snapshot.toml";

/// Every key is optional; unknown keys are an error (a typo must not pass silently).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub target: Option<PathBuf>,
    pub require_snapshot: Option<bool>,
    pub writers_dirs: Option<Vec<PathBuf>>,
    pub no_writers: Option<bool>,
    pub strict_writers: Option<bool>,
    pub freeze_timeout: Option<String>,
    pub scripts_dir: Option<PathBuf>,
    pub lvm_size: Option<String>,
    pub freeze_command: Option<PathBuf>,
    pub providers: Option<Vec<String>>,
    /// `snapshot run --in-place --writable` (used when the command line names none).
    pub writable: Option<Vec<PathBuf>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration {path:?}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    /// Refused by the trust rule: whoever can write it decides what runs as root
    /// (`writers_dirs`, `scripts_dir`, `freeze_command`).
    #[error(transparent)]
    Untrusted(#[from] TrustError),
}

impl Config {
    /// Reads `explicit` (which must exist), else the default file if it exists, else nothing.
    pub fn load(explicit: Option<&Path>) -> Result<(Self, Option<PathBuf>), ConfigError> {
        let path = match explicit {
            Some(p) => p.to_owned(),
            None if Path::new(DEFAULT_PATH).exists() => PathBuf::from(DEFAULT_PATH),
            None => return Ok((Self::default(), None)),
        };
        let invalid = |reason: String| ConfigError::Invalid {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| invalid(e.to_string()))?;
        // After reading, so that a missing or unreadable file is said as such.
        trust::check("configuration", &path)?;
        let cfg: Self = toml::from_str(&text).map_err(|e| invalid(e.message().to_owned()))?;
        Ok((cfg, Some(path)))
    }

    /// Fills in `args` from the file wherever the command line left the default. `matches`
    /// are those that hold the session options (the subcommand's for `run` and `plan`).
    pub fn apply(
        &self,
        args: &mut SessionArgs,
        matches: &ArgMatches,
        path: &Path,
    ) -> Result<(), ConfigError> {
        let from_cli = |id: &str| {
            matches
                .try_get_raw(id)
                .ok()
                .flatten()
                .is_some_and(|_| matches.value_source(id) == Some(ValueSource::CommandLine))
        };
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            reason: format!("{key}: {reason}"),
        };
        if let (Some(v), false) = (&self.target, from_cli("target")) {
            args.target = v.clone();
            args.target_from_config = true;
        }
        if let (Some(v), false) = (self.require_snapshot, from_cli("require_snapshot")) {
            args.require_snapshot = v;
        }
        // The writer options go together: a command line that names any of them decides.
        let writers_on_cli = from_cli("writers_dirs") || from_cli("no_writers");
        if !writers_on_cli {
            if let Some(v) = &self.writers_dirs {
                args.writers_dirs = v.clone();
            }
            if let Some(v) = self.no_writers {
                args.no_writers = v;
            }
        }
        if let (Some(v), false) = (self.strict_writers, from_cli("strict_writers")) {
            args.strict_writers = v;
        }
        if let (Some(v), false) = (&self.freeze_timeout, from_cli("freeze_timeout")) {
            args.freeze_timeout = parse_duration(v).map_err(|e| invalid("freeze_timeout", e))?;
        }
        if let (Some(v), false) = (&self.scripts_dir, from_cli("scripts_dir")) {
            args.scripts_dir = Some(v.clone());
        }
        if let (Some(v), false) = (&self.lvm_size, from_cli("lvm_size")) {
            args.lvm_size = v
                .parse()
                .map_err(|e: snapshot_providers::lvm::LvmSizeError| {
                    invalid("lvm_size", e.to_string())
                })?;
        }
        if let (Some(v), false) = (&self.freeze_command, from_cli("freeze_command")) {
            args.freeze_command = Some(v.clone());
        }
        if let (Some(v), false) = (&self.providers, from_cli("providers")) {
            args.providers = Some(
                snapshot_providers::ProviderOrder::new(v)
                    .map_err(|e| invalid("providers", e.to_string()))?,
            );
        }
        if let Some(v) = &self.writable {
            args.config_writable = v.clone();
        }
        Ok(())
    }
}

/// Loads the configuration `args.config` names (or the default file) and applies it.
pub fn resolve(args: &mut SessionArgs, matches: &ArgMatches) -> Result<(), ConfigError> {
    let (cfg, path) = Config::load(args.config.as_deref())?;
    match path {
        Some(p) => cfg.apply(args, matches, &p),
        None => Ok(()),
    }
}

#[cfg(test)]
#[path = "config_proptests.rs"]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        session: SessionArgs,
    }

    fn with(cfg: &str, argv: &[&str]) -> Result<SessionArgs, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.toml");
        std::fs::write(&path, cfg).unwrap();
        let matches = Cli::command()
            .get_matches_from(std::iter::once("snapshot").chain(argv.iter().copied()));
        let mut cli = Cli::from_arg_matches(&matches).unwrap();
        let (cfg, p) = Config::load(Some(&path))?;
        cfg.apply(&mut cli.session, &matches, &p.unwrap())?;
        Ok(cli.session)
    }

    #[test]
    fn file_fills_defaults_and_the_command_line_wins() {
        let cfg = "target = \"/srv/view\"\nfreeze_timeout = \"5s\"\nrequire_snapshot = true\nwriters_dirs = [\"/a\", \"/b\"]\n";
        let a = with(cfg, &["/d"]).unwrap();
        assert_eq!(a.target, PathBuf::from("/srv/view"));
        assert_eq!(a.freeze_timeout, std::time::Duration::from_secs(5));
        assert!(a.require_snapshot);
        assert_eq!(a.writers_dirs, [PathBuf::from("/a"), PathBuf::from("/b")]);
        let b = with(
            cfg,
            &[
                "-t",
                "/other",
                "--freeze-timeout",
                "1s",
                "--writers-dir",
                "/c",
                "/d",
            ],
        )
        .unwrap();
        assert_eq!(b.target, PathBuf::from("/other"));
        assert_eq!(b.freeze_timeout, std::time::Duration::from_secs(1));
        assert_eq!(b.writers_dirs, [PathBuf::from("/c")]);
        let c = with(cfg, &["--no-writers", "/d"]).unwrap();
        assert!(
            c.no_writers && c.writers_dirs.is_empty(),
            "--no-writers overrides the file's dirs"
        );
    }

    #[test]
    fn providers_from_the_file_unless_on_the_command_line() {
        let cfg = "providers = [\"script\", \"btrfs\"]\n";
        let a = with(cfg, &["/d"]).unwrap();
        assert_eq!(
            a.provider_config().order.names(),
            ["script", "btrfs", "bind"]
        );
        let b = with(cfg, &["--providers", "lvm,zfs", "/d"]).unwrap();
        assert_eq!(b.provider_config().order.names(), ["lvm", "zfs", "bind"]);
        let c = with("", &["/d"]).unwrap();
        assert_eq!(
            c.provider_config().order,
            snapshot_providers::ProviderOrder::default()
        );
    }

    #[test]
    fn bad_files_name_the_file_and_the_key() {
        let e = with("targt = \"/x\"\n", &["/d"]).unwrap_err().to_string();
        assert!(e.contains("snapshot.toml") && e.contains("targt"), "{e}");
        let e = with("freeze_timeout = \"soon\"\n", &["/d"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("freeze_timeout"), "{e}");
        let e = with("lvm_size = \"lots\"\n", &["/d"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("lvm_size"), "{e}");
        let e = with("providers = [\"script\", \"btrfz\"]\n", &["/d"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("providers: unknown provider \"btrfz\""), "{e}");
        let e = with("providers = [\"bind\", \"zfs\"]\n", &["/d"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("providers: bind is the fallback"), "{e}");
        let e = Config::load(Some(Path::new("/nonexistent/snapshot.toml")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/snapshot.toml"), "{e}");
    }

    #[test]
    fn a_file_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.toml");
        std::fs::write(&path, "target = \"/srv/view\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = Config::load(Some(&path)).unwrap_err();
        assert!(matches!(e, ConfigError::Untrusted(_)), "{e:?}");
        assert!(
            e.to_string().starts_with(&format!(
                "configuration {}: not trusted: {} is writable by group and others (mode 0666)",
                path.display(),
                path.display()
            )),
            "{e}"
        );
        // Positive control: writable by its owner only.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (cfg, _) = Config::load(Some(&path)).unwrap();
        assert_eq!(cfg.target, Some(PathBuf::from("/srv/view")));
    }
}
