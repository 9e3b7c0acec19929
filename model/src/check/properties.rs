//! The properties checked. Every `always` has `sometimes` companions showing that the paths it is about are
//! reachable, so a model that does nothing cannot pass.

use super::{LeaseModel, WorldState};
use crate::{Fence, LeaseRow, Outcome, RowWrite, Status};
use stateright::Property;

/// At most one client relies on the lease at a time.
pub const SINGLE_RELIANCE: &str = "at most one client relies on the lease";
/// A client relies on the lease only while the row grants it to that client and fence.
pub const RELIANCE_BACKED_BY_ROW: &str = "a client relies on the lease only while the row grants it";
/// Every acquisition's fence is one more than the highest before it (or the same, re-entrant).
pub const FENCES_INCREASE: &str = "fences only increase";
/// The protected resource refuses writes whose fence was superseded.
pub const NO_STALE_WRITE: &str = "no write with a superseded fence is accepted";
/// The headline safety property: a run-once section's effect applied twice.
pub const DOUBLE_EXECUTION: &str = "the effect is applied at most once";
/// A completed section stays completed until the row is stale.
pub const DONE_IS_FINAL: &str = "DONE is only replaced by a fresh acquisition";
/// Every outcome a client reports is true of the world.
pub const OUTCOMES_TRUE: &str = "reported outcomes are true";
/// The driver (world) never sends the machine an event it does not wait for.
pub const EVENTS_ACCEPTED: &str = "the machine accepts every event the world sends";

/// Safety properties from most to least severe, for choosing which counterexample to shorten.
pub const SEVERITY: &[&str] = &[
    DOUBLE_EXECUTION,
    NO_STALE_WRITE,
    SINGLE_RELIANCE,
    RELIANCE_BACKED_BY_ROW,
    DONE_IS_FINAL,
    FENCES_INCREASE,
    OUTCOMES_TRUE,
    EVENTS_ACCEPTED,
];

/// Names of the safety properties (`always`), in the order they are checked.
pub const SAFETY: &[&str] = &[
    SINGLE_RELIANCE,
    RELIANCE_BACKED_BY_ROW,
    FENCES_INCREASE,
    NO_STALE_WRITE,
    DOUBLE_EXECUTION,
    DONE_IS_FINAL,
    OUTCOMES_TRUE,
    EVENTS_ACCEPTED,
];

/// Whether a committed write keeps the fence history sound: an acquisition of an existing row writes the fence
/// after the highest granted so far (or, re-acquiring its own unexpired lease, the same one), one that creates
/// the row (none, or deleted) a fence above every one granted before; no other write changes the fence. Judged
/// here, apart from the transaction logic, by the checker and the simulator alike.
pub fn fence_follows(previous: Option<&LeaseRow>, max_fence: Option<Fence>, write: &RowWrite, acquire: bool) -> bool {
    if acquire {
        let reentrant = previous.is_some_and(|p| p.fence == write.fence && p.holder == write.holder);
        match previous {
            Some(_) => reentrant || write.fence == max_fence.map_or(Fence::FIRST, Fence::next),
            None => max_fence.is_none_or(|max| write.fence > max),
        }
    } else {
        previous.is_none_or(|p| p.fence == write.fence)
    }
}

/// Whether `fence` has been superseded: a newer one was granted. A protected resource must refuse its writes.
pub fn superseded(fence: Fence, max_granted: Option<Fence>) -> bool {
    max_granted.is_some_and(|max| fence < max)
}

/// Whether a write replaces a DONE row other than by a fresh acquisition (the next fence).
pub fn overwrites_done(previous: Option<&LeaseRow>, write: &RowWrite, acquire: bool) -> bool {
    previous.is_some_and(|p| p.status == Status::Done && !(acquire && write.fence == p.fence.next()))
}

/// The safety properties (`always`) that `state` violates.
pub fn violated_safety(model: &LeaseModel, state: &WorldState) -> Vec<&'static str> {
    all()
        .into_iter()
        .filter(|p| p.expectation == stateright::Expectation::Always && !(p.condition)(model, state))
        .map(|p| p.name)
        .collect()
}

fn reliant(model: &LeaseModel, state: &WorldState) -> impl Iterator<Item = (usize, Fence)> {
    state.clients.iter().enumerate().filter_map(move |(i, c)| {
        c.machine.relies_on_lease_at(&model.cfg, LeaseModel::local_now(state, i)).map(|fence| (i, fence))
    })
}

fn outcome_is_true(model: &LeaseModel, state: &WorldState, slot: usize) -> bool {
    let client = &state.clients[slot];
    match client.machine.outcome() {
        Some(Outcome::Executed { fence }) => {
            state.effects.iter().any(|e| e.writer == client.machine.id() && e.fence == *fence)
        }
        Some(Outcome::DoneByOther { .. } | Outcome::NotNeeded) => !state.effects.is_empty(),
        Some(Outcome::GaveUp { attempts }) => {
            *attempts > model.cfg.max_retries() && client.ghost.waits == model.cfg.max_retries()
        }
        Some(Outcome::LeaseLost { .. } | Outcome::Cancelled | Outcome::Failed(_) | Outcome::Released { .. }) | None => {
            true
        }
    }
}

/// The `sometimes` companions of optional fault kinds, for a model that injects them.
pub(super) fn for_optional_faults(model: &LeaseModel) -> Vec<Property<LeaseModel>> {
    let mut properties = Vec::new();
    if model.options.faults.clock_error {
        properties.push(Property::sometimes(
            "a paused holder's lease is taken over after a server clock erred",
            |_: &LeaseModel, s: &WorldState| s.ghost.clock_erred && s.ghost.takeover_after_pause,
        ));
    }
    properties
}

fn outcome_reached(state: &WorldState, wanted: fn(&Outcome) -> bool) -> bool {
    state.clients.iter().any(|c| c.machine.outcome().is_some_and(wanted))
}

/// Every property, safety first.
pub(super) fn all() -> Vec<Property<LeaseModel>> {
    vec![
        Property::always(SINGLE_RELIANCE, |m: &LeaseModel, s: &WorldState| reliant(m, s).count() <= 1),
        Property::always(RELIANCE_BACKED_BY_ROW, |m: &LeaseModel, s: &WorldState| {
            let now = LeaseModel::server_time(s.now_ms);
            reliant(m, s)
                .all(|(i, fence)| s.row.as_ref().is_some_and(|r| r.grants(s.clients[i].machine.id(), fence, now)))
        }),
        Property::always(FENCES_INCREASE, |_: &LeaseModel, s: &WorldState| {
            !s.ghost.fence_regressed && s.row.as_ref().map(|r| r.fence) == s.ghost.max_fence
        }),
        Property::always(NO_STALE_WRITE, |_: &LeaseModel, s: &WorldState| !s.ghost.stale_write_accepted),
        Property::always(DOUBLE_EXECUTION, |_: &LeaseModel, s: &WorldState| s.effects.len() <= 1),
        Property::always(DONE_IS_FINAL, |_: &LeaseModel, s: &WorldState| !s.ghost.done_overwritten),
        Property::always(OUTCOMES_TRUE, |m: &LeaseModel, s: &WorldState| {
            (0..s.clients.len()).all(|i| outcome_is_true(m, s, i))
        }),
        Property::always(EVENTS_ACCEPTED, |_: &LeaseModel, s: &WorldState| !s.ghost.driver_contract_broken),
        Property::sometimes("a client executes the section", |_: &LeaseModel, s: &WorldState| {
            outcome_reached(s, |o| matches!(o, Outcome::Executed { .. }))
        }),
        Property::sometimes("a crashed holder's lease is taken over", |_: &LeaseModel, s: &WorldState| {
            s.ghost.takeover_after_crash
        }),
        Property::sometimes("a paused holder's lease is taken over", |_: &LeaseModel, s: &WorldState| {
            s.ghost.takeover_after_pause
        }),
        Property::sometimes("a lease is renewed", |_: &LeaseModel, s: &WorldState| s.ghost.renewed),
        Property::sometimes("lock lost is signalled", |_: &LeaseModel, s: &WorldState| s.ghost.lock_lost),
        Property::sometimes("a write with a superseded fence is rejected", |_: &LeaseModel, s: &WorldState| {
            s.ghost.stale_write_rejected
        }),
        Property::sometimes(
            "an unknown commit that landed is resolved as acquired",
            |_: &LeaseModel, s: &WorldState| {
                s.clients
                    .iter()
                    .any(|c| c.ghost.unknown_landed && matches!(c.machine.outcome(), Some(Outcome::Executed { .. })))
            },
        ),
        Property::sometimes(
            "an unknown commit that did not land is retried to success",
            |_: &LeaseModel, s: &WorldState| {
                s.clients
                    .iter()
                    .any(|c| c.ghost.unknown_lost && matches!(c.machine.outcome(), Some(Outcome::Executed { .. })))
            },
        ),
        Property::sometimes(
            "a fenced write whose answer was lost is found applied on retry",
            |_: &LeaseModel, s: &WorldState| s.clients.iter().any(|c| c.ghost.fenced_write_resolved),
        ),
        Property::sometimes("another client executes after a section failed", |_: &LeaseModel, s: &WorldState| {
            s.clients.iter().any(|failed| {
                failed.ghost.section_failed
                    && s.clients.iter().any(|c| {
                        c.machine.id() != failed.machine.id()
                            && matches!(c.machine.outcome(), Some(Outcome::Executed { .. }))
                    })
            })
        }),
        Property::sometimes("a client sees the section done by another", |_: &LeaseModel, s: &WorldState| {
            outcome_reached(s, |o| matches!(o, Outcome::DoneByOther { .. }))
        }),
        Property::sometimes("a client finds the section no longer needed", |_: &LeaseModel, s: &WorldState| {
            outcome_reached(s, |o| matches!(o, Outcome::NotNeeded))
        }),
        Property::sometimes(
            "a waiter's poll notices a release or DONE before the expiry it read",
            |_: &LeaseModel, s: &WorldState| s.clients.iter().any(|c| c.ghost.poll_noticed),
        ),
        Property::sometimes("a client gives up after max retries", |_: &LeaseModel, s: &WorldState| {
            outcome_reached(s, |o| matches!(o, Outcome::GaveUp { .. }))
        }),
    ]
}
