//! The invariants checked after every step of a simulation, one per file. Their names are the model checker's
//! safety properties, so a counterexample replayed here reports the same violation.

pub mod at_most_once;
pub mod done_has_effect;
pub mod done_is_final;
pub mod events_accepted;
pub mod fences_increase;
pub mod no_stale_write;
pub mod no_write_after_forced_release;
pub mod outcomes_true;
pub mod progress;
pub mod release_leaves_no_lease;
pub mod reliance_backed_by_row;
pub mod single_reliance;
pub mod writes_once;

use crate::world::World;
use serde::Serialize;

/// An invariant that broke.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Its name (the model checker's property name).
    pub invariant: &'static str,
    /// When it was first seen broken, microseconds of simulated time.
    pub at_us: u64,
    /// What was wrong.
    pub detail: String,
}

/// A check: `Some(what is wrong)` if the invariant is broken in this world.
pub type Check = fn(&World) -> Option<String>;

/// Every invariant, most severe first.
pub const ALL: &[(&str, Check)] = &[
    (at_most_once::NAME, at_most_once::check),
    (no_stale_write::NAME, no_stale_write::check),
    (no_write_after_forced_release::NAME, no_write_after_forced_release::check),
    (writes_once::NAME, writes_once::check),
    (single_reliance::NAME, single_reliance::check),
    (reliance_backed_by_row::NAME, reliance_backed_by_row::check),
    (done_is_final::NAME, done_is_final::check),
    (fences_increase::NAME, fences_increase::check),
    (outcomes_true::NAME, outcomes_true::check),
    (release_leaves_no_lease::NAME, release_leaves_no_lease::check),
    (done_has_effect::NAME, done_has_effect::check),
    (events_accepted::NAME, events_accepted::check),
];
