//! Every acquisition's fence is exactly one more than the highest granted before (or unchanged when a client
//! re-acquires its own unexpired lease), one that creates the row (also after a deletion) is above every fence
//! granted before, and no other write changes the fence.

use crate::world::{MutexState, World};
use spanner_mutex_check::fence_follows;
use spanner_mutex_model::{Fence, RowWrite};

/// The model checker's name for it.
pub const NAME: &str = spanner_mutex_check::FENCES_INCREASE;

/// Judges a write about to commit, by the model checker's rule.
pub fn on_write(mutex: &MutexState, write: &RowWrite, acquire: bool) -> Option<String> {
    if fence_follows(mutex.row.as_ref(), mutex.max_fence, write, acquire) {
        return None;
    }
    let before = mutex.row.as_ref().map(|r| r.fence.get());
    let kind = if acquire { "an acquisition" } else { "a non-acquiring write" };
    Some(format!(
        "{kind} wrote fence {} over fence {before:?} (highest granted {:?})",
        write.fence.get(),
        mutex.max_fence.map(Fence::get)
    ))
}

/// Reads the record [`on_write`] keeps, and checks that each row carries the highest fence granted.
pub fn check(world: &World) -> Option<String> {
    if let Some(problem) = &world.ghost.fence_regressed {
        return Some(problem.clone());
    }
    world.mutexes.iter().enumerate().find_map(|(m, mutex)| {
        // A deleted row carries nothing; the next one must start above the highest (checked on its write).
        let row_fence = mutex.row.as_ref().map(|r| r.fence)?;
        (Some(row_fence) != mutex.max_fence)
            .then(|| format!("row {m} carries fence {row_fence}, below the highest granted"))
    })
}
