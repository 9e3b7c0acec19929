//! The protected resource never accepts a write whose fence was superseded by a newer grant.

use crate::world::{MutexState, World};
use spanner_mutex_check::superseded;
use spanner_mutex_model::Fence;

/// The model checker's name for it.
pub const NAME: &str = spanner_mutex_check::NO_STALE_WRITE;

/// Judges a write about to be accepted, independently of the transaction logic, by the model checker's rule.
pub fn on_accepted(mutex: &MutexState, fence: Fence) -> Option<String> {
    superseded(fence, mutex.max_fence).then(|| {
        let max = mutex.max_fence.map_or(0, Fence::get);
        format!("a write with fence {} was accepted after fence {max} was granted", fence.get())
    })
}

/// Reads the record [`on_accepted`] keeps.
pub fn check(world: &World) -> Option<String> {
    world.ghost.stale_write_accepted.clone()
}
