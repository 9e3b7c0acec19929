//! At most one client relies on a mutex's lease at any moment, each judged on its own monotonic clock.

use crate::world::World;

/// The model checker's name for it.
pub const NAME: &str = spanner_mutex_check::SINGLE_RELIANCE;

/// Checks every mutex.
pub fn check(world: &World) -> Option<String> {
    let mut first_per_mutex: [Option<usize>; crate::scenario::MAX_MUTEXES] = [None; crate::scenario::MAX_MUTEXES];
    for (c, client) in world.clients.iter().enumerate() {
        let Some(fence) = client.machine.relies_on_lease_at(world.local_now(c)).filter(|_| client.alive) else {
            continue;
        };
        // A holder whose lease an operator ended relies on it only until it learns; fencing keeps it safe.
        if world.mutexes[client.mutex].spanner.may_rely_after_forced_release(
            client.machine.id(),
            fence,
            world.server_now(),
        ) {
            continue;
        }
        match first_per_mutex[client.mutex] {
            None => first_per_mutex[client.mutex] = Some(c),
            Some(other) => {
                return Some(format!(
                    "{} and {} both rely on the lease of mutex {}",
                    world.label(other),
                    world.label(c),
                    client.mutex
                ));
            }
        }
    }
    None
}
