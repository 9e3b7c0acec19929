//! The headline: a run-once section's effect is applied at most once per need.

use crate::world::{Effect, MutexState, World};

/// The model checker's name for it.
pub const NAME: &str = spanner_mutex_check::DOUBLE_EXECUTION;

/// Judges an effect about to be accepted by the checker's rule ([`spanner_mutex_check::applied_again`]): the
/// effects of one need generation are the writes 1, 2, ... of one lease, each once.
pub fn on_accepted(mutex: &MutexState, effect: &Effect) -> Option<String> {
    let earlier: Vec<_> = mutex
        .effects
        .iter()
        .filter(|e| e.generation == effect.generation)
        .map(|e| (e.writer, e.fence, e.write))
        .collect();
    let first = *earlier.first()?;
    spanner_mutex_check::applied_again(&earlier, (effect.writer, effect.fence, effect.write)).then(|| {
        format!(
            "the effect of need {} was applied by write {} under fence {} and again by write {} under fence {}",
            effect.generation,
            first.2,
            first.1.get(),
            effect.write,
            effect.fence.get()
        )
    })
}

/// Reads the record [`on_accepted`] keeps.
pub fn check(world: &World) -> Option<String> {
    world.ghost.double_execution.clone()
}
