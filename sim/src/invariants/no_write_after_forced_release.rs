//! An operator's forced release ends the lease at once: no write of it reaches the resource after the release.

use crate::world::World;

/// The model checker's name for it.
pub const NAME: &str = spanner_mutex_check::NO_WRITE_AFTER_FORCED_RELEASE;

/// Reads the record the world keeps of the first write of a force-released lease the resource accepted
/// ([`spanner_mutex_model::world::Breach::WriteAfterForcedRelease`]).
pub fn check(world: &World) -> Option<String> {
    world.ghost.write_after_forced_release.clone()
}
