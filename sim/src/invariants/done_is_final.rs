//! A DONE row is replaced only by a fresh acquisition (once stale, or in lock mode): never renewed, re-released
//! or taken back by its old holder.

use crate::world::{MutexState, World};
use spanner_mutex_check::overwrites_done;
use spanner_mutex_model::RowWrite;

/// The model checker's name for it.
pub const NAME: &str = spanner_mutex_check::DONE_IS_FINAL;

/// Judges a write about to commit, by the model checker's rule.
pub fn on_write(mutex: &MutexState, write: &RowWrite, acquire: bool) -> Option<String> {
    let previous = mutex.row.as_ref()?;
    overwrites_done(Some(previous), write, acquire).then(|| {
        format!(
            "DONE row with fence {} overwritten by {} with fence {}",
            previous.fence.get(),
            write.status,
            write.fence.get()
        )
    })
}

/// Reads the record [`on_write`] keeps.
pub fn check(world: &World) -> Option<String> {
    world.ghost.done_overwritten.clone()
}
