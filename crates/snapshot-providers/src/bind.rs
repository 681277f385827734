//! The fallback: a read-only, non-recursive bind of the mount. Not a snapshot — the backup
//! reads live files — and the manifest says so (`consistent: false`).

use snapshot_core::provider::{
    Created, Filesystem, Probe, Provider, ProviderError, SessionContext, UnitRequest,
};
use snapshot_core::sys::DetachedMount;
use snapshot_core::{sys, Mount};

#[derive(Debug, Default)]
pub struct BindProvider;

impl Provider for BindProvider {
    fn name(&self) -> &str {
        "bind"
    }

    fn probe(&self, fs: &Filesystem) -> Probe {
        // Every mount is its own unit: there is nothing to share between two binds.
        // No plan (`null`).
        Probe::accept(fs.mount.id.to_string(), &(), false)
    }

    fn expected(&self, unit: &UnitRequest, ctx: &SessionContext) -> Created {
        // A live view, journaled as such (the trait's default says a snapshot). Nothing else
        // to record (the plan is `null`): the session unmounts the view, and a bind leaves
        // nothing else.
        Created::planned(self.name(), unit, ctx, false)
    }

    fn create(&self, unit: &UnitRequest, ctx: &SessionContext) -> Result<Created, ProviderError> {
        Ok(self.expected(unit, ctx))
    }

    fn mount(&self, _created: &Created, mount: &Mount) -> Result<DetachedMount, ProviderError> {
        sys::clone_live_mount(&mount.mount_point, mount.id).map_err(|e| {
            ProviderError::io(
                format!("cloning the live mount {:?} read-only", mount.mount_point),
                e,
            )
        })
    }

    fn remove(&self, _created: &Created) -> Result<(), ProviderError> {
        // Nothing was created beyond the view mounts, which the session unmounts.
        Ok(())
    }
}
