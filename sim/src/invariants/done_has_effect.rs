//! A DONE row was left by a holder that applied the effect, or that found it applied under an earlier fence.

use crate::world::World;
use spanner_mutex_check::done_has_effect;

/// The model checker's name for it.
pub const NAME: &str = spanner_mutex_check::DONE_HAS_EFFECT;

/// Judges every row by the model checker's rule.
pub fn check(world: &World) -> Option<String> {
    world.mutexes.iter().enumerate().find_map(|(m, mutex)| {
        // A released lock is DONE too, with no run-once effect behind it.
        if world.clients.iter().any(|c| c.mutex == m && c.kind.is_lock_mode()) {
            return None;
        }
        let effects: Vec<_> = mutex.effects.iter().map(|e| (e.writer, e.fence)).collect();
        (!done_has_effect(mutex.spanner.row.as_ref(), &effects))
            .then(|| format!("row {m} is DONE but no effect backs it"))
    })
}
