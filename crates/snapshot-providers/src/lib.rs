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
pub use script::ScriptProvider;
pub use zfs::ZfsProvider;

use snapshot_core::Provider;

/// Provider settings from the command line and the configuration file.
#[derive(Debug, Clone, Default)]
pub struct ProviderConfig {
    /// Directory of the seed's `filesystems.d` scripts (`None`: the default one).
    pub scripts_dir: Option<std::path::PathBuf>,
    /// Copy-on-write space of classic LVM snapshots (`--lvm-size`).
    pub lvm_size: lvm::LvmSize,
    /// Device-snapshot command of the freeze provider for devices it cannot clone itself
    /// (`--freeze-command`; interface in [`freeze`]).
    pub freeze_command: Option<std::path::PathBuf>,
}

/// The providers in the order they are tried (docs/DESIGN.md §3.1).
pub fn providers(config: &ProviderConfig) -> Vec<Box<dyn Provider>> {
    let scripts = config
        .scripts_dir
        .clone()
        .unwrap_or_else(|| script::DEFAULT_DIR.into());
    vec![
        Box::new(ZfsProvider::default()),
        Box::new(BtrfsProvider),
        Box::new(lvm::LvmThinProvider),
        Box::new(lvm::LvmProvider::new(config.lvm_size)),
        Box::new(FreezeProvider::new(config.freeze_command.clone())),
        Box::new(ScriptProvider::new(scripts)),
        Box::new(BindProvider),
    ]
}
