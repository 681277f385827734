//! The engine of `snapshot`: mount table, planning, the [`Provider`] trait, writer hooks,
//! the target view and the session. Knows nothing of the command line.

pub mod exec;
pub mod freeze_only;
pub mod lock;
pub mod mountinfo;
pub mod path_json;
pub mod plan;
pub mod provider;
pub mod recovery;
pub mod session;
pub mod sys;
pub mod trust;
pub mod validate;
pub mod view;
pub mod writers;

pub use mountinfo::{Mount, MountTable};
pub use plan::{Plan, PlannedMount, PlannedUnit};
pub use provider::{Created, Filesystem, Probe, Provider, ProviderError, UnitRequest, Validity};
