//! A run that reports "released" or "cancelled" holds no lease at that moment: the row does not grant it, so a
//! waiter can acquire at once. (An acquisition told "unknown" that lands after the read that resolved it can still
//! leave a lease its client does not know of, for one TTL: a grant written by a late landing is not judged.)

use crate::world::World;
use spanner_mutex_check::keeps_lease_after_release;
use spanner_mutex_model::Outcome;

/// The model checker's name for it.
pub const NAME: &str = spanner_mutex_check::RELEASE_LEAVES_NO_LEASE;

/// Judges client `c`'s outcome as it finishes, by the model checker's definition.
pub fn judge(world: &World, c: usize, outcome: &Outcome) -> Option<String> {
    let client = &world.clients[c];
    let mutex = &world.mutexes[client.mutex];
    let row = mutex.spanner.row.as_ref();
    let landed_late = row.is_some_and(|row| mutex.late_grant == Some((row.holder, row.fence)));
    (!landed_late && keeps_lease_after_release(outcome, client.machine.id(), row, world.server_now())).then(|| {
        format!(
            "{} reported \"{}\" while the row still grants it the lease",
            world.label(c),
            outcome.words(|id| world.label_of(id))
        )
    })
}

/// Reads the record [`judge`] keeps.
pub fn check(world: &World) -> Option<String> {
    world.ghost.lease_kept_after_release.clone()
}
