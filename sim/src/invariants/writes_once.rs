//! Each fenced write of a lease reaches the resource once, after the writes numbered before it.

use crate::world::World;

/// The model checker's name for it.
pub const NAME: &str = spanner_mutex_check::WRITES_ONCE;

/// Reads the record the world keeps of the first fenced write that reached the resource twice or out of order
/// ([`spanner_mutex_model::world::Breach::FencedWriteRepeated`]).
pub fn check(world: &World) -> Option<String> {
    world.ghost.fenced_write_repeated.clone()
}
