//! Every acquisition's fence is exactly one more than the highest granted before (or unchanged when a client
//! re-acquires its own unexpired lease), one that creates the row (also after a deletion) is above every fence
//! granted before, and no other write changes the fence.

use crate::world::World;

/// The model checker's name for it.
pub const NAME: &str = spanner_mutex_check::FENCES_INCREASE;

/// Reads the record the world keeps of the first write that broke the rule ([`spanner_mutex_model::world::fence_follows`]), and checks that each row carries the highest fence granted.
pub fn check(world: &World) -> Option<String> {
    if let Some(problem) = &world.ghost.fence_regressed {
        return Some(problem.clone());
    }
    world.mutexes.iter().enumerate().find_map(|(m, mutex)| {
        // A deleted row carries nothing; the next one must start above the highest (checked on its write).
        let row_fence = mutex.spanner.row.as_ref().map(|r| r.fence)?;
        (Some(row_fence) != mutex.spanner.max_fence)
            .then(|| format!("row {m} carries fence {row_fence}, below the highest granted"))
    })
}
