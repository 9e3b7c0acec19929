//! Progress: once faults stop, every run finishes (any outcome, giving up included) within a bound derived from
//! the configuration and the network: `max_retries + 1` waits of at most `max_wait_ms + jitter_ms` plus the
//! round trips of a poll, an acquisition and its resolution, then the longest section (and need checks), a TTL
//! and the release. Lock and leader clients wait without a retry limit on a lease that is not fair, so only
//! their hold is bounded: from the grant to the end of the run.
//! Background aborts and unknown outcomes are inside it (each counts as a retry, or is resolved by a read);
//! injected faults (pauses, crashes, outages, suspensions, late commits) are not, so runs are judged from the
//! moment the last injected fault is over.

use crate::scenario::{Fault, Scenario};

/// The simulator's name for it (the checker has no liveness).
pub const NAME: &str = "every run finishes within its bound once faults stop";

const US_PER_MS: u64 = 1_000;

/// When the last injected fault is over, microseconds of simulated time.
pub fn quiet_since_us(scenario: &Scenario) -> u64 {
    let ttl_ms = scenario.config.ttl_ms;
    let rpc_ms = scenario.network.rpc_timeout_ms;
    scenario
        .faults
        .iter()
        .map(|fault| {
            let end_ms = match fault {
                Fault::Pause { at_ms, duration_ms, .. }
                | Fault::Suspend { at_ms, duration_ms, .. }
                | Fault::Outage { at_ms, duration_ms } => at_ms + duration_ms,
                Fault::Crash { at_ms, restart_after_ms, .. } => at_ms + restart_after_ms.unwrap_or(0),
                // A late commit may land a lease for a client that has gone: it holds the row for a TTL.
                Fault::LateCommit { at_ms, after_ms, .. } => at_ms + after_ms + ttl_ms,
                // Injected commit faults hit the client's next transactions, whenever they come: one TTL and
                // two RPC timeouts after the fault covers the retries they cause.
                Fault::Abort { at_ms, .. } | Fault::Unknown { at_ms, .. } | Fault::ServerClockError { at_ms, .. } => {
                    at_ms + ttl_ms + 2 * rpc_ms
                }
                other => other.at_ms(),
            };
            // Anything a fault left behind (an orphaned lease, a backoff) is over within one more TTL.
            (end_ms + ttl_ms) * US_PER_MS
        })
        .max()
        .unwrap_or(0)
}

/// How long a run may take once faults stop, microseconds.
pub fn bound_us(scenario: &Scenario) -> u64 {
    let (cfg, n) = (&scenario.config, &scenario.network);
    // One request and its answer, at the slowest, plus a commit's hold.
    let round_trip_ms = 2 * n.latency_max_ms.max(n.tail_ms) + n.commit_max_ms;
    // A late commit queued by the network's background rate reaches Spanner within two RPC timeouts and can
    // hold the row for a TTL.
    let late_ms = if n.unknown_rate > 0.0 { 2 * n.rpc_timeout_ms + cfg.ttl_ms } else { 0 };
    let wait_ms = cfg.max_wait_ms + cfg.jitter_ms + 3 * round_trip_ms;
    // A section works before each of its fenced writes.
    let longest_section_ms =
        scenario.clients.iter().map(|c| c.section_max_ms * u64::from(c.fenced_writes)).max().unwrap_or(0);
    // A run-once run checks its need twice.
    let need_checks_ms = 2 * scenario.clients.iter().map(|c| c.need_check_ms).max().unwrap_or(0);
    // A section's writes after its first: each a round trip, and one retry after an abort or an unknown answer
    // (an RPC timeout, then the wait).
    let later_writes = scenario.clients.iter().map(|c| c.fenced_writes).max().unwrap_or(1).saturating_sub(1);
    let later_writes_ms = u64::from(later_writes) * (2 * round_trip_ms + n.rpc_timeout_ms + cfg.wait_ms);
    let ms = (u64::from(cfg.max_retries) + 1) * wait_ms
        + later_writes_ms
        + longest_section_ms
        + need_checks_ms
        + cfg.ttl_ms
        + late_ms
        + 4 * round_trip_ms;
    ms * US_PER_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_and_the_quiet_time_follow_the_configuration_and_the_faults() {
        let mut s = Scenario::from_toml(
            "name = \"x\"\nseed = 1\nduration_ms = 60000\n[[client]]\nname = \"a\"\nsection_min_ms = 10\nsection_max_ms = 900\n",
        )
        .expect("valid");
        // Defaults: 100 retries of (10 s + 250 ms + 3 x 25 ms), the 900 ms section, a 10 s TTL, 4 round trips.
        assert_eq!(bound_us(&s), (101 * 10_325 + 900 + 10_000 + 4 * 25) * 1_000);
        assert_eq!(quiet_since_us(&s), 0);
        s.faults.push(Fault::Pause { at_ms: 1_000, client: "a".into(), duration_ms: 5_000 });
        assert_eq!(quiet_since_us(&s), (6_000 + 10_000) * 1_000, "the pause's end plus a TTL");
    }
}
