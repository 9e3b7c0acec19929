//! The properties checked. Every `always` has `sometimes` companions showing that the paths it is about are
//! reachable, so a model that does nothing cannot pass.

use crate::{CheckOptions, ClientKind, LeaseModel, Witness, WorldState};
use spanner_mutex_model::{ClientId, Fence, LeaseRow, OperatorAction, Outcome, Phase, ServerTime, Status};
use stateright::Property;

/// At most one client relies on the lease at a time.
pub const SINGLE_RELIANCE: &str = "at most one client relies on the lease";
/// A client relies on the lease only while the row grants it to that client and fence.
pub const RELIANCE_BACKED_BY_ROW: &str = "a client relies on the lease only while the row grants it";
/// Every acquisition's fence is one more than the highest before it (or the same, re-entrant).
pub const FENCES_INCREASE: &str = "fences only increase";
/// The protected resource refuses writes whose fence was superseded.
pub const NO_STALE_WRITE: &str = "no write with a superseded fence is accepted";
/// The headline safety property: a run-once section's effect applied twice (written under two leases, or one of
/// its writes applied again).
pub const DOUBLE_EXECUTION: &str = "the effect is applied at most once";
/// Each fenced write of a lease reaches the resource once, after the writes numbered before it.
pub const WRITES_ONCE: &str = "each fenced write is applied once, in order";
/// A completed section stays completed until the row is stale.
pub const DONE_IS_FINAL: &str = "DONE is only replaced by a fresh acquisition";
/// Every outcome a client reports is true of the world.
pub const OUTCOMES_TRUE: &str = "reported outcomes are true";
/// The driver (world) never sends the machine an event it does not wait for.
pub const EVENTS_ACCEPTED: &str = "the machine accepts every event the world sends";
/// A DONE row was left by a holder that applied the effect or found it applied.
pub const DONE_HAS_EFFECT: &str = "a DONE row implies an effect";
/// Every client that has not finished has an operation, its section or a timer under way.
pub const NO_CLIENT_STUCK: &str = "no client waits with nothing under way";
/// A client that reports "released" or "cancelled" holds no lease any more: a waiter can acquire at once.
pub const RELEASE_LEAVES_NO_LEASE: &str = "a committed release or a cancel leaves no lease held";
/// Each lock or leadership grant is under a fence above every earlier grant's.
pub const TERMS_INCREASE: &str = "leadership terms' fences increase";
/// Once a client's calls have gone unanswered for its whole unavailability budget, it starts no new attempt (an
/// acquisition or a poll from a timer): what is left is the call in flight, its resolving read and a release.
pub const BOUNDED_FAILURE: &str = "no new attempt starts after the unavailability budget is spent";

/// An operator's forced release ends the lease at once: no write of it reaches the resource after the release
/// commits.
pub const NO_WRITE_AFTER_FORCED_RELEASE: &str = "no write of a force-released lease is accepted after the release";

/// Safety properties from most to least severe, for choosing which counterexample to shorten.
pub const SEVERITY: &[&str] = &[
    DOUBLE_EXECUTION,
    NO_STALE_WRITE,
    NO_WRITE_AFTER_FORCED_RELEASE,
    WRITES_ONCE,
    SINGLE_RELIANCE,
    RELIANCE_BACKED_BY_ROW,
    DONE_IS_FINAL,
    FENCES_INCREASE,
    TERMS_INCREASE,
    RELEASE_LEAVES_NO_LEASE,
    OUTCOMES_TRUE,
    DONE_HAS_EFFECT,
    NO_CLIENT_STUCK,
    BOUNDED_FAILURE,
    EVENTS_ACCEPTED,
];

/// Names of the safety properties (`always`), in the order they are checked.
pub const SAFETY: &[&str] = &[
    SINGLE_RELIANCE,
    RELIANCE_BACKED_BY_ROW,
    FENCES_INCREASE,
    NO_STALE_WRITE,
    DOUBLE_EXECUTION,
    WRITES_ONCE,
    DONE_IS_FINAL,
    OUTCOMES_TRUE,
    DONE_HAS_EFFECT,
    NO_CLIENT_STUCK,
    EVENTS_ACCEPTED,
    TERMS_INCREASE,
    RELEASE_LEAVES_NO_LEASE,
    BOUNDED_FAILURE,
    NO_WRITE_AFTER_FORCED_RELEASE,
];

/// The safety properties (`always`) that `state` violates.
pub fn violated_safety(model: &LeaseModel, state: &WorldState) -> Vec<&'static str> {
    all(model)
        .into_iter()
        .filter(|p| p.expectation == stateright::Expectation::Always && !(p.condition)(model, state))
        .map(|p| p.name)
        .collect()
}

fn reliant(state: &WorldState) -> impl Iterator<Item = (usize, Fence)> {
    state
        .clients
        .iter()
        .enumerate()
        .filter_map(move |(i, c)| c.machine.relies_on_lease_at(LeaseModel::local_now(state, i)).map(|fence| (i, fence)))
        .filter(|&(i, fence)| {
            let now = LeaseModel::server_time(state.now_ms);
            !state.spanner.may_rely_after_forced_release(state.clients[i].machine.id(), fence, now)
        })
}

/// What an outcome is judged against, at the moment it is reported.
#[derive(Clone, Copy, Debug)]
pub struct OutcomeFacts<'a> {
    /// The reporting client.
    pub client: ClientId,
    /// Effects the resource accepted, as `(writer, fence)` (every need generation's: a DONE row stays final
    /// within the staleness window across a new need).
    pub effects: &'a [(ClientId, Fence)],
    /// The lease row now.
    pub row: Option<&'a LeaseRow>,
    /// The client's last need check answer in this run (`Some(true)`: needed).
    pub last_need_answer: Option<bool>,
    /// Retry waits the world saw this run start (polls and waits for an unavailable Spanner not counted).
    pub waits: u32,
    /// The configured `max_retries`.
    pub max_retries: u32,
}

/// Whether `outcome` is true of the world: "executed" means its effect was accepted under that fence; "done by
/// other" names a holder that applied the effect, or one that found it applied under an earlier fence; "not
/// needed" follows a need check that said so; "gave up" comes after exactly `max_retries` waits; "lease lost"
/// means the row no longer carries the client's fence. One definition, used by the checker and the simulator.
pub fn outcome_is_true(outcome: &Outcome, facts: &OutcomeFacts<'_>) -> bool {
    let effect_by = |writer: ClientId, fence: Fence| facts.effects.contains(&(writer, fence));
    match outcome {
        Outcome::Executed { fence } => effect_by(facts.client, *fence),
        Outcome::DoneByOther { holder, fence } => {
            effect_by(*holder, *fence) || facts.effects.iter().any(|(_, earlier)| earlier < fence)
        }
        Outcome::NotNeeded => facts.last_need_answer == Some(false),
        Outcome::GaveUp { attempts } => *attempts > facts.max_retries && facts.waits == facts.max_retries,
        // The row names another lease now, or an operator ended this one (the row keeps its holder and fence).
        Outcome::LeaseLost { fence } => !facts.row.is_some_and(|r| {
            r.holder == facts.client
                && r.fence == *fence
                && OperatorAction::recorded_on(r) != Some(OperatorAction::ForceRelease)
        }),
        Outcome::Released { .. } | Outcome::Cancelled | Outcome::Failed(_) => true,
    }
}

/// Whether `outcome`, reported by `client` with the row as `row` at server time `now`, breaks "a committed release
/// or a cancel leaves no lease held": it says released or cancelled while the row still grants `client` the lease.
/// One definition, used by the checker and the simulator. (The simulator does not judge a grant written by an
/// acquisition that landed after its client was told "unknown" and before the client read the row again: its
/// reads take time, so such a landing can come between the read that resolved the outcome and the report. In the
/// checker a read and the report it leads to are one step, so a late landing comes before the read or after the
/// report.)
pub fn keeps_lease_after_release(outcome: &Outcome, client: ClientId, row: Option<&LeaseRow>, now: ServerTime) -> bool {
    matches!(outcome, Outcome::Released { .. } | Outcome::Cancelled)
        && row.is_some_and(|r| r.grants(client, r.fence, now))
}

/// Whether a run-once effect `next` (its writer, fence and write number) applies the section's effect again after
/// the `earlier` effects of the same need: one of them is another lease's, or the same lease's write numbered as
/// high (whether each write lands once and in order is judged apart, by "each fenced write is applied once, in
/// order"). The checker and the simulator judge by it.
pub fn applied_again(earlier: &[(ClientId, Fence, u32)], next: (ClientId, Fence, u32)) -> bool {
    let (writer, fence, write) = next;
    earlier.iter().any(|&(w, f, n)| (w, f) != (writer, fence) || n >= write)
}

/// Whether a DONE row is backed by an effect: its holder applied it, or found it applied under an earlier fence.
pub fn done_has_effect(row: Option<&LeaseRow>, effects: &[(ClientId, Fence)]) -> bool {
    row.is_none_or(|r| r.status != Status::Done || effects.iter().any(|(_, fence)| *fence <= r.fence))
}

/// Whether a client that has not finished has something under way: an operation in flight, its section, or a
/// timer. A client with none of them would wait forever.
fn not_stuck(state: &WorldState, slot: usize) -> bool {
    let client = &state.clients[slot];
    client.machine.outcome().is_some()
        || client.op != crate::Op::Idle
        || client.section != crate::Section::Idle
        || client.machine.poll_timeout().is_some()
}

/// Phases a user's cancel is shown reachable in, with the kinds of client that pass through them: every phase
/// in which a client can hold or win a lease (and, for run-once clients, the first need check). Reads answer at
/// once in the checked world, so the phases that await one are passed through, not rested in.
const CANCELLED_IN: &[(&str, ClientKindSet, Condition)] = &[
    ("a user cancels during the first need check", RUN_ONCE, cancelled_in::<{ Phase::AwaitingNeed as u8 }>),
    ("a user cancels while an acquisition is in flight", ANY, cancelled_in::<{ Phase::AwaitingAcquireCommit as u8 }>),
    ("a user cancels (gives up) while waiting for the lease", ANY, cancelled_in::<{ Phase::AwaitingRetryTimer as u8 }>),
    (
        "a user cancels during the need check under the lease",
        RUN_ONCE,
        cancelled_in::<{ Phase::AwaitingNeedWhileHolding as u8 }>,
    ),
    ("a user cancels while holding the lease", ANY, cancelled_in::<{ Phase::Holding as u8 }>),
    ("a user cancels while a release is in flight", ANY, cancelled_in::<{ Phase::AwaitingReleaseCommit as u8 }>),
];

type Condition = fn(&LeaseModel, &WorldState) -> bool;

/// The step into `state` finished a run whose user cancelled in phase `PHASE` (as `Phase as u8`).
fn cancelled_in<const PHASE: u8>(_: &LeaseModel, state: &WorldState) -> bool {
    state.ghost.witnessed.has_cancel_index(PHASE)
}

/// The step into `state` marked the witness `W` (as `Witness as u8`).
fn saw<const W: u8>(_: &LeaseModel, state: &WorldState) -> bool {
    state.ghost.witnessed.has_index(W)
}

/// Which kinds of client a companion needs.
type ClientKindSet = u8;
const RUN_ONCE: ClientKindSet = 1;
const LOCK_MODE: ClientKindSet = 2;
const ANY: ClientKindSet = RUN_ONCE | LOCK_MODE;

fn kinds_of(model: &LeaseModel) -> ClientKindSet {
    let run_once = if model.options.has(ClientKind::RunOnce) { RUN_ONCE } else { 0 };
    let lock_mode = if (0..usize::from(model.options.clients)).any(|i| model.options.kind(i).is_lock_mode()) {
        LOCK_MODE
    } else {
        0
    };
    run_once | lock_mode
}

/// The `sometimes` companions of user cancels, for a model that has them.
fn for_cancels(model: &LeaseModel) -> Vec<Property<LeaseModel>> {
    if model.options.cancels == 0 {
        return Vec::new();
    }
    let kinds = kinds_of(model);
    CANCELLED_IN
        .iter()
        .filter(|(_, needs, _)| needs & kinds != 0)
        .map(|&(name, _, condition)| Property::sometimes(name, condition))
        .collect()
}

/// The `sometimes` companions of lock and leader clients, for a model that has them.
fn for_lock_mode(model: &LeaseModel) -> Vec<Property<LeaseModel>> {
    let mut properties = Vec::new();
    if kinds_of(model) & LOCK_MODE == 0 {
        return properties;
    }
    properties.push(Property::sometimes("a released lock is handed to a waiter", saw::<{ Witness::HandedOver as u8 }>));
    properties.push(Property::sometimes(
        "a lock holder's fenced write is accepted",
        saw::<{ Witness::LockWriteAccepted as u8 }>,
    ));
    if model.options.has(ClientKind::Leader) {
        properties
            .push(Property::sometimes("a leader's term ends and it leads again", saw::<{ Witness::LeadsAgain as u8 }>));
    }
    properties
}

/// Which worlds have a companion, by their options.
type Applies = fn(&CheckOptions) -> bool;

/// The `sometimes` companions of later fenced writes, optional fault kinds and reachable staleness, each with the
/// worlds that have it.
const OPTIONAL: &[(&str, Applies, Condition)] = &[
    (
        "a lease's second fenced write reaches the resource",
        |o| o.fenced_writes >= 2,
        saw::<{ Witness::LaterWriteLanded as u8 }>,
    ),
    (
        "a second fenced write whose answer was lost is found applied on retry",
        |o| o.fenced_writes >= 2 && o.faults.unknown,
        saw::<{ Witness::LaterWriteResolved as u8 }>,
    ),
    ("a stale DONE row is acquired again", |o| o.staleness_ms < o.max_time_ms, saw::<{ Witness::DoneAcquired as u8 }>),
    ("a commit its client was told was unknown lands later", |o| o.faults.late, saw::<{ Witness::LateLanded as u8 }>),
    (
        "a run ends unavailable once its budget is spent",
        |o| o.faults.unavailable && o.has(ClientKind::RunOnce),
        saw::<{ Witness::RunUnavailable as u8 }>,
    ),
    (
        "a lock acquisition ends unavailable once its budget is spent",
        |o| o.faults.unavailable && o.has(ClientKind::Lock),
        saw::<{ Witness::LockUnavailable as u8 }>,
    ),
    (
        "a leadership ends unavailable once its budget is spent",
        |o| o.faults.unavailable && o.has(ClientKind::Leader),
        saw::<{ Witness::LeaderUnavailable as u8 }>,
    ),
    (
        "a client retries an unavailable Spanner and is answered",
        |o| o.faults.unavailable,
        saw::<{ Witness::AnsweredAfterUnavailable as u8 }>,
    ),
    ("a waiter's poll goes unanswered", |o| o.faults.unavailable, saw::<{ Witness::PollUnanswered as u8 }>),
    (
        "an operator force-releases a lease before its expiry",
        |o| o.operators > 0,
        saw::<{ Witness::ForceReleasedLive as u8 }>,
    ),
    (
        "a force-released holder's fenced write is refused",
        |o| o.operators > 0,
        saw::<{ Witness::ForcedWriteRefused as u8 }>,
    ),
    (
        "another client acquires a lease an operator force-released",
        |o| o.operators > 0,
        saw::<{ Witness::AcquiredAfterForcedRelease as u8 }>,
    ),
    (
        "a run acquires a DONE row an operator reset",
        |o| o.operators > 0 && o.has(ClientKind::RunOnce),
        saw::<{ Witness::AcquiredAfterReset as u8 }>,
    ),
    // Two faults: an unknown outcome, then its resolving read unanswered (`unanswered:N:…`).
    (
        "the read resolving an unknown outcome goes unanswered too",
        |o| o.faults.unavailable && o.faults.unknown && o.fault_budget >= 2,
        saw::<{ Witness::ResolvingReadUnanswered as u8 }>,
    ),
    // Two unanswered calls of a run whose section writes: a lock or a leader's (run-once worlds have one fault).
    (
        "a fenced write without an answer is not sent again once its run's budget is spent",
        |o| {
            o.faults.unavailable
                && o.faults.unknown
                && o.fault_budget >= 2
                && (o.has(ClientKind::Lock) || o.has(ClientKind::Leader))
        },
        saw::<{ Witness::FencedWriteGaveUp as u8 }>,
    ),
    (
        "a need check fails under the lease and the run ends with the row FAILED",
        |o| o.faults.need_check_failure && o.has(ClientKind::RunOnce),
        saw::<{ Witness::NeedFailedUnderLease as u8 }>,
    ),
    (
        "a renewal executed late finds the lease taken over and is refused",
        |o| o.faults.delay,
        saw::<{ Witness::RenewalRefused as u8 }>,
    ),
    (
        "a paused holder's lease is taken over after a server clock erred",
        |o| o.faults.clock_error,
        saw::<{ Witness::TakeoverAfterClockError as u8 }>,
    ),
];

/// The [`OPTIONAL`] companions `model`'s world has.
fn for_optional(model: &LeaseModel) -> Vec<Property<LeaseModel>> {
    OPTIONAL
        .iter()
        .filter(|(_, applies, _)| applies(&model.options))
        .map(|&(name, _, condition)| Property::sometimes(name, condition))
        .collect()
}

/// Every property of `model`, safety first, then the companions of what it has.
pub(super) fn all(model: &LeaseModel) -> Vec<Property<LeaseModel>> {
    let mut properties = always();
    properties.extend(sometimes());
    if kinds_of(model) & RUN_ONCE != 0 {
        properties.extend(for_run_once());
    }
    properties.extend(for_lock_mode(model));
    properties.extend(for_cancels(model));
    properties.extend(for_optional(model));
    properties
}

fn always() -> Vec<Property<LeaseModel>> {
    vec![
        Property::always(SINGLE_RELIANCE, |_: &LeaseModel, s: &WorldState| reliant(s).count() <= 1),
        Property::always(RELIANCE_BACKED_BY_ROW, |_: &LeaseModel, s: &WorldState| {
            let now = LeaseModel::server_time(s.now_ms);
            reliant(s).all(|(i, fence)| {
                s.spanner.row.as_ref().is_some_and(|r| r.grants(s.clients[i].machine.id(), fence, now))
            })
        }),
        Property::always(FENCES_INCREASE, |_: &LeaseModel, s: &WorldState| {
            !s.ghost.fence_regressed && s.spanner.row.as_ref().map(|r| r.fence) == s.spanner.max_fence
        }),
        Property::always(NO_STALE_WRITE, |_: &LeaseModel, s: &WorldState| !s.ghost.stale_write_accepted),
        // The effects are the writes of one lease, each once: its writes 1, 2, ... in order.
        Property::always(DOUBLE_EXECUTION, |_: &LeaseModel, s: &WorldState| {
            let effects: arrayvec::ArrayVec<_, { crate::world::MAX_EFFECTS }> =
                s.effects.iter().map(|e| (e.writer, e.fence, u32::from(e.write))).collect();
            (0..effects.len()).all(|i| !applied_again(&effects[..i], effects[i]))
        }),
        Property::always(WRITES_ONCE, |_: &LeaseModel, s: &WorldState| !s.ghost.fenced_write_repeated),
        Property::always(DONE_IS_FINAL, |_: &LeaseModel, s: &WorldState| !s.ghost.done_overwritten),
        Property::always(OUTCOMES_TRUE, |_: &LeaseModel, s: &WorldState| !s.ghost.false_outcome),
        // A released lock is DONE too, with no run-once effect behind it.
        Property::always(DONE_HAS_EFFECT, |m: &LeaseModel, s: &WorldState| {
            !m.options.has(ClientKind::RunOnce) || done_has_effect(s.spanner.row.as_ref(), &s.effect_leases())
        }),
        Property::always(NO_CLIENT_STUCK, |_: &LeaseModel, s: &WorldState| {
            (0..s.clients.len()).all(|i| not_stuck(s, i))
        }),
        Property::always(EVENTS_ACCEPTED, |_: &LeaseModel, s: &WorldState| !s.ghost.driver_contract_broken),
        Property::always(TERMS_INCREASE, |_: &LeaseModel, s: &WorldState| !s.ghost.term_regressed),
        Property::always(RELEASE_LEAVES_NO_LEASE, |_: &LeaseModel, s: &WorldState| !s.ghost.lease_kept_after_release),
        Property::always(BOUNDED_FAILURE, |_: &LeaseModel, s: &WorldState| !s.ghost.retried_past_budget),
        Property::always(NO_WRITE_AFTER_FORCED_RELEASE, |_: &LeaseModel, s: &WorldState| {
            !s.ghost.write_after_forced_release
        }),
    ]
}

/// Companions of paths every kind of client takes.
fn sometimes() -> Vec<Property<LeaseModel>> {
    vec![
        Property::sometimes("a crashed holder's lease is taken over", saw::<{ Witness::TakeoverAfterCrash as u8 }>),
        Property::sometimes("a paused holder's lease is taken over", saw::<{ Witness::TakeoverAfterPause as u8 }>),
        Property::sometimes("a lease is renewed", saw::<{ Witness::Renewed as u8 }>),
        Property::sometimes("lock lost is signalled", saw::<{ Witness::LockLost as u8 }>),
        Property::sometimes(
            "a write with a superseded fence is rejected",
            saw::<{ Witness::StaleWriteRejected as u8 }>,
        ),
        Property::sometimes(
            "an unknown commit that landed is resolved as acquired",
            saw::<{ Witness::UnknownLandedWon as u8 }>,
        ),
        Property::sometimes(
            "an unknown commit that did not land is retried to success",
            saw::<{ Witness::UnknownLostWon as u8 }>,
        ),
        Property::sometimes(
            "a fenced write whose answer was lost is found applied on retry",
            saw::<{ Witness::FencedWriteResolved as u8 }>,
        ),
        Property::sometimes(
            "a waiter's poll notices a release or DONE before the expiry it read",
            saw::<{ Witness::PollNoticed as u8 }>,
        ),
    ]
}

/// Companions of the run-once paths.
fn for_run_once() -> Vec<Property<LeaseModel>> {
    vec![
        Property::sometimes("a client executes the section", saw::<{ Witness::Executed as u8 }>),
        Property::sometimes(
            "another client executes after a section failed",
            saw::<{ Witness::ExecutedAfterFailure as u8 }>,
        ),
        Property::sometimes("a client sees the section done by another", saw::<{ Witness::DoneByOther as u8 }>),
        Property::sometimes("a client finds the section no longer needed", saw::<{ Witness::NotNeeded as u8 }>),
        Property::sometimes("a client gives up after max retries", saw::<{ Witness::GaveUp as u8 }>),
    ]
}
