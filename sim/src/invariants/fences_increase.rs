//! Every acquisition's fence is exactly one more than the highest granted before (or unchanged when a client
//! re-acquires its own unexpired lease), and no other write changes the fence.

use crate::world::{MutexState, World};
use spanner_mutex_model::{Fence, RowWrite};

/// The model checker's name for it.
pub const NAME: &str = spanner_mutex_model::check::FENCES_INCREASE;

/// Judges a write about to commit.
pub fn on_write(mutex: &MutexState, write: &RowWrite, acquire: bool) -> Option<String> {
    let previous = mutex.row.as_ref();
    if acquire {
        let reentrant = previous.is_some_and(|p| p.fence == write.fence && p.holder == write.holder);
        let expected = mutex.max_fence.map_or(Fence::FIRST, Fence::next);
        (!reentrant && write.fence != expected)
            .then(|| format!("an acquisition wrote fence {}, expected {}", write.fence.get(), expected.get()))
    } else {
        previous
            .filter(|p| p.fence != write.fence)
            .map(|p| format!("a non-acquiring write changed fence {} to {}", p.fence.get(), write.fence.get()))
    }
}

/// Reads the record [`on_write`] keeps, and checks that each row carries the highest fence granted.
pub fn check(world: &World) -> Option<String> {
    if let Some(problem) = &world.ghost.fence_regressed {
        return Some(problem.clone());
    }
    world.mutexes.iter().enumerate().find_map(|(m, mutex)| {
        let row_fence = mutex.row.as_ref().map(|r| r.fence);
        (row_fence != mutex.max_fence)
            .then(|| format!("row {m} carries fence {row_fence:?}, below the highest granted"))
    })
}
