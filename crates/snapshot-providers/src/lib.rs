//! Snapshot providers, one module each, knowing nothing of each other. The session tries them
//! in [`providers`] order; the bind fallback is last and takes everything.

pub mod bind;
pub mod btrfs;
pub mod script;

pub use bind::BindProvider;
pub use btrfs::BtrfsProvider;
pub use script::ScriptProvider;

use snapshot_core::Provider;

/// Provider settings from the command line and the configuration file.
#[derive(Debug, Clone, Default)]
pub struct ProviderConfig {
    /// Directory of the seed's `filesystems.d` scripts (`None`: the default one).
    pub scripts_dir: Option<std::path::PathBuf>,
}

/// The providers in the order they are tried (DESIGN.md §3.1).
pub fn providers(config: &ProviderConfig) -> Vec<Box<dyn Provider>> {
    let scripts = config
        .scripts_dir
        .clone()
        .unwrap_or_else(|| script::DEFAULT_DIR.into());
    vec![
        Box::new(BtrfsProvider),
        Box::new(ScriptProvider::new(scripts)),
        Box::new(BindProvider),
    ]
}
