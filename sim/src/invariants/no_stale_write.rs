//! The protected resource never accepts a write whose fence was superseded by a newer grant.

use crate::world::World;

/// The model checker's name for it.
pub const NAME: &str = spanner_mutex_check::NO_STALE_WRITE;

/// Reads the record the world keeps of the first stale write the resource accepted
/// ([`spanner_mutex_model::world::superseded`]).
pub fn check(world: &World) -> Option<String> {
    world.ghost.stale_write_accepted.clone()
}
