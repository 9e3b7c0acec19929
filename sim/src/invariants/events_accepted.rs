//! The world, acting as the driver, only sends a machine events its state waits for: a machine that rejects one
//! means the driver contract (one operation at a time, answers matching requests) is broken.

use crate::world::World;

/// The model checker's name for it.
pub const NAME: &str = spanner_mutex_check::EVENTS_ACCEPTED;

/// Reads the record the world keeps when a machine rejects an event.
pub fn check(world: &World) -> Option<String> {
    world.ghost.unexpected_event.clone()
}
