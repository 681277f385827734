//! Snapshot providers, one module each, knowing nothing of each other. The session tries them
//! in [`providers`] order; the bind fallback is last and takes everything.

pub mod bind;
pub mod btrfs;
pub mod freeze;
pub mod lvm;
pub mod script;
pub mod zfs;

pub use bind::BindProvider;
pub use btrfs::BtrfsProvider;
pub use freeze::FreezeProvider;
pub use lvm::LvmProvider;
pub use script::ScriptProvider;
pub use zfs::ZfsProvider;

use snapshot_core::provider::{
    Created, Filesystem, Probe, ProviderError, SessionContext, UnitRequest, Validity,
};
use snapshot_core::sys::DetachedMount;
use snapshot_core::{Mount, Provider};
use std::time::Duration;

/// Provider settings from the command line and the configuration file.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Directory of the seed's `filesystems.d` scripts (`None`: the default one).
    pub scripts_dir: Option<std::path::PathBuf>,
    /// Copy-on-write space of classic LVM snapshots (`--lvm-size`).
    pub lvm_size: lvm::LvmSize,
    /// Device-snapshot command of the freeze provider for devices it cannot clone itself
    /// (`--freeze-command`; interface in [`freeze`]).
    pub freeze_command: Option<std::path::PathBuf>,
    /// Which providers may take a filesystem, in the order they are tried (`--providers`).
    pub order: ProviderOrder,
    /// How long one provider script may run before its process group is killed
    /// (`--freeze-timeout`).
    pub script_timeout: Duration,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            scripts_dir: None,
            lvm_size: lvm::LvmSize::default(),
            freeze_command: None,
            order: ProviderOrder::default(),
            script_timeout: script::DEFAULT_TIMEOUT,
        }
    }
}

/// Every provider's name, in the default order (docs/DESIGN.md §3.1); `bind` is the fallback.
pub const PROVIDER_NAMES: [&str; 7] = ["zfs", "btrfs", "lvm-thin", "lvm", "freeze", "script", BIND];

const BIND: &str = "bind";

/// The providers allowed to take a filesystem, in the order they are tried: the `providers`
/// setting. Always ends with the bind fallback, whether listed (it must then be last) or not;
/// whether bind may be used is `--require-snapshot`'s to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderOrder(Vec<&'static str>);

/// A `providers` list that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderOrderError {
    #[error("unknown provider {0:?} (known: {known})", known = PROVIDER_NAMES.join(", "))]
    Unknown(String),
    #[error("provider {0:?} is listed twice")]
    Duplicate(String),
    #[error(
        "bind is the fallback and always tried last: list it last or leave it out \
         (--require-snapshot forbids it)"
    )]
    BindNotLast,
    #[error("no provider listed (for the bind fallback alone, list bind)")]
    Empty,
}

impl Default for ProviderOrder {
    fn default() -> Self {
        Self(PROVIDER_NAMES.to_vec())
    }
}

impl ProviderOrder {
    /// The order `names` give; `bind` is appended when not listed.
    pub fn new<S: AsRef<str>>(
        names: impl IntoIterator<Item = S>,
    ) -> Result<Self, ProviderOrderError> {
        let mut order: Vec<&'static str> = Vec::new();
        let mut bind_seen = false;
        for name in names {
            let name = name.as_ref();
            let known = PROVIDER_NAMES
                .iter()
                .find(|n| **n == name)
                .ok_or_else(|| ProviderOrderError::Unknown(name.to_owned()))?;
            if order.contains(known) {
                return Err(ProviderOrderError::Duplicate(name.to_owned()));
            }
            if bind_seen {
                return Err(ProviderOrderError::BindNotLast);
            }
            bind_seen = *known == BIND;
            order.push(known);
        }
        if order.is_empty() {
            return Err(ProviderOrderError::Empty);
        }
        if !bind_seen {
            order.push(BIND);
        }
        Ok(Self(order))
    }

    /// The names in order, `bind` last.
    pub fn names(&self) -> &[&'static str] {
        &self.0
    }
}

/// `zfs,btrfs,…`: comma-separated names (blanks around them ignored).
impl std::str::FromStr for ProviderOrder {
    type Err = ProviderOrderError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s.split(',').map(str::trim))
    }
}

impl std::fmt::Display for ProviderOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// The providers in the order they are tried (docs/DESIGN.md §3.1): those `config.order`
/// allows in its order, then the others, each of which declines every filesystem (kept so
/// that a session's recovery can still remove what an earlier session made with them), then
/// bind.
pub fn providers(config: &ProviderConfig) -> Vec<Box<dyn Provider>> {
    let scripts = config
        .scripts_dir
        .clone()
        .unwrap_or_else(|| script::DEFAULT_DIR.into());
    let mut all: Vec<Box<dyn Provider>> = vec![
        Box::new(ZfsProvider::default()),
        Box::new(BtrfsProvider),
        Box::new(LvmProvider::thin()),
        Box::new(LvmProvider::classic(config.lvm_size)),
        Box::new(FreezeProvider::new(config.freeze_command.clone())),
        Box::new(ScriptProvider::new(scripts).with_timeout(config.script_timeout)),
        Box::new(BindProvider),
    ];
    debug_assert_eq!(
        all.iter().map(|p| p.name()).collect::<Vec<_>>(),
        PROVIDER_NAMES
    );
    let mut ordered: Vec<Box<dyn Provider>> = Vec::with_capacity(all.len());
    for name in config.order.names() {
        if let Some(i) = all.iter().position(|p| p.name() == *name) {
            ordered.push(all.remove(i));
        }
    }
    // What is left was not listed: after the listed ones, before bind (which is listed).
    let bind = ordered.pop();
    for p in all {
        let listed = config.order.to_string();
        ordered.push(Box::new(Unlisted { inner: p, listed }));
    }
    ordered.extend(bind);
    ordered
}

/// A provider the `providers` setting leaves out: declines every filesystem, but removes
/// what it made in an earlier session like the provider itself.
#[derive(Debug)]
struct Unlisted {
    inner: Box<dyn Provider>,
    listed: String,
}

impl Provider for Unlisted {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn probe(&self, _fs: &Filesystem) -> Probe {
        Probe::Decline(format!("not in the providers setting ({})", self.listed))
    }

    fn create(&self, unit: &UnitRequest, _ctx: &SessionContext) -> Result<Created, ProviderError> {
        Err(ProviderError::Declined(format!(
            "unit {}: not in the providers setting ({})",
            unit.unit, self.listed
        )))
    }

    fn mount(&self, created: &Created, mount: &Mount) -> Result<DetachedMount, ProviderError> {
        self.inner.mount(created, mount)
    }

    fn verify(&self, created: &Created) -> Validity {
        self.inner.verify(created)
    }

    fn remove(&self, created: &Created) -> Result<(), ProviderError> {
        self.inner.remove(created)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &[Box<dyn Provider>]) -> Vec<&str> {
        p.iter().map(|p| p.name()).collect()
    }

    fn fs() -> Filesystem {
        Filesystem {
            mount: Mount {
                id: 7,
                parent_id: 1,
                major: 0,
                minor: 99,
                root: "/".into(),
                mount_point: "/srv".into(),
                options: "rw".into(),
                optional: Vec::new(),
                fstype: "tmpfs".into(),
                source: "snaptest".into(),
                super_options: "rw".into(),
            },
        }
    }

    #[test]
    fn default_order() {
        let order = ProviderOrder::default();
        assert_eq!(
            order.names(),
            ["zfs", "btrfs", "lvm-thin", "lvm", "freeze", "script", "bind"]
        );
        assert_eq!(
            order.to_string(),
            "zfs,btrfs,lvm-thin,lvm,freeze,script,bind"
        );
        assert_eq!(names(&providers(&ProviderConfig::default())), order.names());
    }

    #[test]
    fn parsing() {
        let o: ProviderOrder = "script, btrfs".parse().unwrap();
        assert_eq!(o.names(), ["script", "btrfs", "bind"]);
        let o: ProviderOrder = "lvm,bind".parse().unwrap();
        assert_eq!(o.names(), ["lvm", "bind"]);
        let o: ProviderOrder = "bind".parse().unwrap();
        assert_eq!(o.names(), ["bind"]);
        assert_eq!(
            "script,brtfs".parse::<ProviderOrder>(),
            Err(ProviderOrderError::Unknown("brtfs".into()))
        );
        let e = "brtfs".parse::<ProviderOrder>().unwrap_err().to_string();
        assert!(
            e.starts_with("unknown provider \"brtfs\" (known: zfs, btrfs,"),
            "{e}"
        );
        assert_eq!(
            "lvm,zfs,lvm".parse::<ProviderOrder>(),
            Err(ProviderOrderError::Duplicate("lvm".into()))
        );
        assert_eq!(
            "bind,zfs".parse::<ProviderOrder>(),
            Err(ProviderOrderError::BindNotLast)
        );
        assert_eq!(
            "bind,bind".parse::<ProviderOrder>(),
            Err(ProviderOrderError::Duplicate("bind".into()))
        );
        assert_eq!(
            "".parse::<ProviderOrder>(),
            Err(ProviderOrderError::Unknown(String::new()))
        );
        assert_eq!(
            ProviderOrder::new(Vec::<String>::new()),
            Err(ProviderOrderError::Empty)
        );
    }

    #[test]
    fn listed_providers_first_then_the_others_declining_then_bind() {
        let config = ProviderConfig {
            order: "script,btrfs".parse().unwrap(),
            ..Default::default()
        };
        let all = providers(&config);
        assert_eq!(
            names(&all),
            ["script", "btrfs", "zfs", "lvm-thin", "lvm", "freeze", "bind"]
        );
        for p in &all[2..6] {
            match p.probe(&fs()) {
                Probe::Decline(r) => assert_eq!(
                    r,
                    "not in the providers setting (script,btrfs,bind)",
                    "{}",
                    p.name()
                ),
                other => panic!("{}: {other:?}", p.name()),
            }
        }
        // bind still takes everything.
        assert!(matches!(all[6].probe(&fs()), Probe::Accept { .. }));
    }
}
