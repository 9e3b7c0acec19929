//! The protected resource never accepts a write whose fence was superseded by a newer grant.

use crate::world::{MutexState, World};
use spanner_mutex_model::Fence;

/// The model checker's name for it.
pub const NAME: &str = spanner_mutex_model::check::NO_STALE_WRITE;

/// Judges a write about to be accepted, independently of the transaction logic: a fence is stale once a newer
/// one was granted.
pub fn on_accepted(mutex: &MutexState, fence: Fence) -> Option<String> {
    let max = mutex.max_fence?;
    (fence < max)
        .then(|| format!("a write with fence {} was accepted after fence {} was granted", fence.get(), max.get()))
}

/// Reads the record [`on_accepted`] keeps.
pub fn check(world: &World) -> Option<String> {
    world.ghost.stale_write_accepted.clone()
}
