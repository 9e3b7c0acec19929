//! The headline: a run-once section's effect is applied at most once per need.

use crate::world::{Effect, MutexState, World};

/// The model checker's name for it.
pub const NAME: &str = spanner_mutex_check::DOUBLE_EXECUTION;

/// Judges an effect about to be accepted by the checker's rule ([`spanner_mutex_check::applied_again`]): for one
/// need generation, another lease's effect, or the same lease's write numbered as high, is a double execution (a
/// lease's writes may span a new need, so its effects in a generation need not start at write 1).
pub fn on_accepted(mutex: &MutexState, effect: &Effect) -> Option<String> {
    let earlier: Vec<_> = mutex
        .effects
        .iter()
        .filter(|e| e.generation == effect.generation)
        .map(|e| (e.writer, e.fence, e.write))
        .collect();
    let last = *earlier.last()?;
    spanner_mutex_check::applied_again(&earlier, (effect.writer, effect.fence, effect.write)).then(|| {
        format!(
            "the effect of need {} was applied again by write {} under fence {}, after write {} under fence {}",
            effect.generation,
            effect.write,
            effect.fence.get(),
            last.2,
            last.1.get()
        )
    })
}

/// Reads the record [`on_accepted`] keeps.
pub fn check(world: &World) -> Option<String> {
    world.ghost.double_execution.clone()
}
