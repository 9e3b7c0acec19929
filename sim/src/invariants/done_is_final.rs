//! A DONE row is replaced only by a fresh acquisition (once stale, or in lock mode): never renewed, re-released
//! or taken back by its old holder.

use crate::world::World;

/// The model checker's name for it.
pub const NAME: &str = spanner_mutex_check::DONE_IS_FINAL;

/// Reads the record the world keeps of the first write that broke the rule
/// ([`spanner_mutex_model::world::overwrites_done`]).
pub fn check(world: &World) -> Option<String> {
    world.ghost.done_overwritten.clone()
}
