//! A client relies on a lease only while Spanner's row grants it: STARTED, naming that client and fence, and
//! not expired on Spanner's clock. This is what the safety margin and renewals must guarantee despite drift.

use crate::world::World;

/// The model checker's name for it.
pub const NAME: &str = spanner_mutex_check::RELIANCE_BACKED_BY_ROW;

/// Checks every client that relies on a lease.
pub fn check(world: &World) -> Option<String> {
    let now = world.server_now();
    for (c, client) in world.clients.iter().enumerate() {
        if !client.alive {
            continue;
        }
        let Some(fence) = client.machine.relies_on_lease_at(world.local_now(c)) else { continue };
        let spanner = &world.mutexes[client.mutex].spanner;
        // An operator ended this lease: its holder relies on it until it learns, and fencing keeps the resource safe.
        if spanner.may_rely_after_forced_release(client.machine.id(), fence, now) {
            continue;
        }
        let row = spanner.row.as_ref();
        if !row.is_some_and(|r| r.grants(client.machine.id(), fence, now)) {
            let row = row.map_or_else(
                || "no row".to_owned(),
                |r| {
                    format!(
                        "{} fence {} expiring {} ms from now",
                        r.status,
                        r.fence.get(),
                        now.ms_until_floor(r.expires_at)
                    )
                },
            );
            return Some(format!("{} relies on fence {} but the row says {row}", world.label(c), fence.get()));
        }
    }
    None
}
