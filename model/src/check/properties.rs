//! The properties checked. Every `always` has `sometimes` companions showing that the paths it is about are
//! reachable, so a model that does nothing cannot pass.

use super::{LeaseModel, WorldState};
use crate::{Outcome, Status};
use stateright::Property;

/// The headline safety property: a run-once section's effect applied twice.
pub const DOUBLE_EXECUTION: &str = "the effect is applied at most once";

/// Safety properties from most to least severe, for choosing which counterexample to shorten.
pub const SEVERITY: &[&str] = &[
    DOUBLE_EXECUTION,
    "no write with a superseded fence is accepted",
    "at most one client relies on the lease",
    "a client relies on the lease only while the row grants it",
    "DONE is only replaced by a fresh acquisition",
    "fences only increase",
    "reported outcomes are true",
    "the machine accepts every event the world sends",
];

/// Names of the safety properties (`always`).
pub const SAFETY: &[&str] = &[
    "at most one client relies on the lease",
    "a client relies on the lease only while the row grants it",
    "fences only increase",
    "no write with a superseded fence is accepted",
    DOUBLE_EXECUTION,
    "DONE is only replaced by a fresh acquisition",
    "reported outcomes are true",
    "the machine accepts every event the world sends",
];

fn reliant(model: &LeaseModel, state: &WorldState) -> impl Iterator<Item = (usize, crate::Fence)> {
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

fn outcome_reached(state: &WorldState, wanted: fn(&Outcome) -> bool) -> bool {
    state.clients.iter().any(|c| c.machine.outcome().is_some_and(wanted))
}

/// Every property, safety first.
pub(super) fn all() -> Vec<Property<LeaseModel>> {
    vec![
        Property::always(SAFETY[0], |m: &LeaseModel, s: &WorldState| reliant(m, s).count() <= 1),
        Property::always(SAFETY[1], |m: &LeaseModel, s: &WorldState| {
            let now = LeaseModel::server_time(s.now_ms);
            reliant(m, s).all(|(i, fence)| {
                s.row.as_ref().is_some_and(|r| {
                    r.status == Status::Started
                        && r.holder == s.clients[i].machine.id()
                        && r.fence == fence
                        && now < r.expires_at
                })
            })
        }),
        Property::always(SAFETY[2], |_: &LeaseModel, s: &WorldState| {
            !s.ghost.fence_regressed && s.row.as_ref().map(|r| r.fence) == s.ghost.max_fence
        }),
        Property::always(SAFETY[3], |_: &LeaseModel, s: &WorldState| !s.ghost.stale_write_accepted),
        Property::always(SAFETY[4], |_: &LeaseModel, s: &WorldState| s.effects.len() <= 1),
        Property::always(SAFETY[5], |_: &LeaseModel, s: &WorldState| !s.ghost.done_overwritten),
        Property::always(SAFETY[6], |m: &LeaseModel, s: &WorldState| {
            (0..s.clients.len()).all(|i| outcome_is_true(m, s, i))
        }),
        Property::always(SAFETY[7], |_: &LeaseModel, s: &WorldState| !s.ghost.driver_contract_broken),
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
        Property::sometimes("a client gives up after max retries", |_: &LeaseModel, s: &WorldState| {
            outcome_reached(s, |o| matches!(o, Outcome::GaveUp { .. }))
        }),
    ]
}
