//! The headline: a run-once section's effect is applied at most once per need.

use crate::world::{Effect, MutexState, World};

/// The model checker's name for it.
pub const NAME: &str = spanner_mutex_check::DOUBLE_EXECUTION;

/// Judges an effect about to be accepted: for one need generation, the effects must be the writes of one lease,
/// each once (numbered 1, 2, ...); an effect under another lease, or a write of the lease applied before, is a
/// double execution.
pub fn on_accepted(mutex: &MutexState, effect: &Effect) -> Option<String> {
    let first = mutex.effects.iter().find(|e| {
        e.generation == effect.generation
            && ((e.writer, e.fence) != (effect.writer, effect.fence) || e.write >= effect.write)
    })?;
    Some(format!(
        "the effect of need {} was applied by write {} under fence {} and again by write {} under fence {}",
        effect.generation,
        first.write,
        first.fence.get(),
        effect.write,
        effect.fence.get()
    ))
}

/// Reads the record [`on_accepted`] keeps.
pub fn check(world: &World) -> Option<String> {
    world.ghost.double_execution.clone()
}
