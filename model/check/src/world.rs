//! The checked world's state: the row, the clients with their machines, operations in flight, the protected
//! resource's effects and the ghost state the properties read.

use crate::{ClientKind, MAX_FENCED_WRITES};
use arrayvec::ArrayVec;
use spanner_mutex_model::txn::TxnRequest;
use spanner_mutex_model::world::{Late, Spanner, Work};
use spanner_mutex_model::{ClientId, ClientMachine, Fence, LocalInstant, ServerTime};

/// An effect the protected resource accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Effect {
    /// Who wrote it.
    pub writer: ClientId,
    /// With which fence.
    pub fence: Fence,
    /// Which of its lease's fenced writes it is, from 1.
    pub write: u8,
}

/// The effects a state keeps: every write of one lease, and one more (a violation; later ones are dropped).
pub(crate) const MAX_EFFECTS: usize = MAX_FENCED_WRITES as usize + 1;

/// The operation a client has in flight (the machine has at most one): transactions take a step of their own to
/// commit, and so do need checks while a user cancel, or under the lease a failure, is still possible (it can
/// come between); reads take effect when sent.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// None.
    Idle,
    /// The user's need check runs.
    NeedCheck,
    /// A transaction that read the row and the decision time `read_at`. Its plan is not stored: if the row is
    /// unchanged at commit, planning again on it gives the same plan (and if it changed, the commit aborts),
    /// which keeps states small.
    TxnRead {
        /// The transaction.
        request: TxnRequest,
        /// No write has committed since it read the row. (Only this matters, not how many writes did: a
        /// version number would split states that differ in nothing else.)
        row_unchanged: bool,
        /// The time its decisions were made on.
        read_at: ServerTime,
        /// Whether that time has been made to err (once per transaction).
        clock_erred: bool,
        /// When the client sent it, on its own clock: where its unavailability clock starts if no answer comes.
        sent_at: LocalInstant,
    },
}

/// A commit whose client was told the outcome is unknown, still on its way to Spanner.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Queued {
    /// The commit, as it read.
    pub late: Late,
    /// Whether it is a run-once section's effect (a lock holder's write is judged by its fence only).
    pub run_once: bool,
    /// No write has committed since it read the row.
    pub row_unchanged: bool,
}

/// The user's critical section: write the effect through a fenced transaction, then return.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    /// Not running.
    Idle,
    /// Running, its fenced write [`Work::write`] not yet answered (the writes before it were).
    Started(Work),
    /// Its last fenced write committed.
    Wrote,
    /// The fenced write was refused: the lease was no longer ours.
    Rejected,
    /// The fenced write got no answer, and its run's unavailability budget allows no other attempt.
    Unanswered,
}

/// Facts about a client's history that properties need and its machine does not keep. Each is kept only as
/// long as a property can still need it (a fact kept longer splits states that differ in nothing else).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientGhost {
    /// Times the world saw this client start a retry wait.
    pub waits: u32,
    /// It was told "unknown" for an acquisition that landed, and has not won or finished since.
    pub unknown_landed: bool,
    /// It was told "unknown" for an acquisition that did not land, and has not won or finished since.
    pub unknown_lost: bool,
    /// Its section failed, and no client has executed since.
    pub section_failed: bool,
    /// Its user cancelled, in this phase.
    pub cancelled_in: Option<spanner_mutex_model::Phase>,
    /// Campaigns made (leader clients).
    pub campaigns: u8,
    /// This campaign (or lock acquisition) was granted.
    pub granted: bool,
    /// A term of this leader ended, lost or resigned, and it has not led again since.
    pub term_ended: bool,
    /// When the first of its calls that got no answer was sent, on its clock, with no answer since: where its
    /// unavailability budget runs from, as the world saw it (kept only in worlds with a budget).
    pub unanswered_since: Option<LocalInstant>,
}

/// One client process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientSlot {
    /// What its user does.
    pub kind: ClientKind,
    /// The production machine.
    pub machine: ClientMachine,
    /// Restarts so far.
    pub incarnation: u8,
    /// How far its monotonic clock lags the server's.
    pub lag_ms: u64,
    /// Its operation in flight.
    pub op: Op,
    /// Its critical section.
    pub section: Section,
    /// History for properties.
    pub ghost: ClientGhost,
}

/// A path a `sometimes` companion asks to see taken. The step that takes it marks the state it leads to, and
/// the mark is gone from the states after: a fact that stayed set would split every later state in two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Witness {
    /// A crashed holder's lease was taken over.
    TakeoverAfterCrash,
    /// A lease was taken over from a holder that was still running.
    TakeoverAfterPause,
    /// A paused holder's lease was taken over after a server clock read erred.
    TakeoverAfterClockError,
    /// A renewal committed.
    Renewed,
    /// A lock-lost signal was given.
    LockLost,
    /// The resource refused a write whose fence had been superseded.
    StaleWriteRejected,
    /// A client told "unknown" for an acquisition that landed was granted the lease.
    UnknownLandedWon,
    /// A client told "unknown" for an acquisition that did not land was granted the lease.
    UnknownLostWon,
    /// A retried fenced write found the record of the attempt that landed.
    FencedWriteResolved,
    /// A poll (before the expiry it had read) found the row released or DONE.
    PollNoticed,
    /// A run-once client reported "executed".
    Executed,
    /// A run-once client executed while another's failed section was behind it.
    ExecutedAfterFailure,
    /// A run-once client reported "done by another".
    DoneByOther,
    /// A run-once client reported "not needed".
    NotNeeded,
    /// A run-once client gave up after its retries.
    GaveUp,
    /// A waiting client was granted the lock after a release committed.
    HandedOver,
    /// A lock holder's fenced write was accepted.
    LockWriteAccepted,
    /// A leader whose term ended was granted leadership again.
    LeadsAgain,
    /// A DONE row (a run-once section's, gone stale, or a released lock's) was acquired again.
    DoneAcquired,
    /// A commit its client was told was unknown landed later.
    LateLanded,
    /// A run or campaign finished after its user cancelled; the phase of the cancel is marked beside it.
    FinishedAfterCancel,
    /// A run-once run ended `Failed(Unavailable)`.
    RunUnavailable,
    /// A lock acquisition ended `Failed(Unavailable)`.
    LockUnavailable,
    /// A leadership campaign ended `Failed(Unavailable)`.
    LeaderUnavailable,
    /// A renewal found the row no longer granting its lease and was refused.
    RenewalRefused,
    /// A transaction committed for a client whose calls had gone unanswered (its unavailability clock ran).
    AnsweredAfterUnavailable,
    /// The read that would resolve an unknown outcome went unanswered too.
    ResolvingReadUnanswered,
    /// A fenced write that got no answer was not sent again: its run's unavailability budget was spent.
    FencedWriteGaveUp,
    /// A lease's second (or later) fenced write reached the resource.
    LaterWriteLanded,
    /// A second (or later) fenced write whose answer was lost was found applied on retry.
    LaterWriteResolved,
    /// A run whose need check failed under the lease ended with the row FAILED by it (the lease given up).
    NeedFailedUnderLease,
    /// A waiter's poll got no answer.
    PollUnanswered,
    /// An operator force-released a lease before its expiry (its holder may still be running).
    ForceReleasedLive,
    /// A force-released holder's fenced write was refused.
    ForcedWriteRefused,
    /// A client acquired a lease an operator had force-released.
    AcquiredAfterForcedRelease,
    /// A run acquired a DONE row an operator had reset.
    AcquiredAfterReset,
}

/// The [`Witness`]es of the step that led to a state, and with [`Witness::FinishedAfterCancel`] the phase the
/// cancel came in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Witnessed(pub(crate) u64);

// Every witness's bit lies below the cancel phases' bits.
const _: () = assert!((Witness::AcquiredAfterReset as u32) < Witnessed::PHASE_SHIFT);
// And every cancel phase's bit fits.
const _: () = assert!(Witnessed::PHASE_SHIFT as usize + spanner_mutex_model::Phase::ALL.len() <= 64);

impl Witnessed {
    const PHASE_SHIFT: u32 = 44;

    /// Marks `witness`.
    pub const fn insert(&mut self, witness: Witness) {
        self.0 |= 1 << witness as u32;
    }

    /// Marks that a run finished after its user cancelled in `phase`.
    pub const fn insert_cancel(&mut self, phase: spanner_mutex_model::Phase) {
        self.insert(Witness::FinishedAfterCancel);
        self.0 |= 1 << (Self::PHASE_SHIFT + phase as u32);
    }

    /// Whether `witness` is marked.
    pub const fn contains(self, witness: Witness) -> bool {
        self.has_index(witness as u8)
    }

    /// Whether a run finished after its user cancelled in `phase`.
    pub const fn contains_cancel(self, phase: spanner_mutex_model::Phase) -> bool {
        self.has_cancel_index(phase as u8)
    }

    pub(crate) const fn has_index(self, witness: u8) -> bool {
        self.0 & (1 << witness) != 0
    }

    pub(crate) const fn has_cancel_index(self, phase: u8) -> bool {
        self.0 & (1 << (Self::PHASE_SHIFT + phase as u32)) != 0
    }
}

/// Global history for properties.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct WorldGhost {
    /// What the step that led to this state showed (cleared by the next step).
    pub witnessed: Witnessed,
    /// A write lowered the row's fence or skipped one.
    pub fence_regressed: bool,
    /// The resource accepted a write whose fence had been superseded.
    pub stale_write_accepted: bool,
    /// A fenced write reached the resource a second time, or before an earlier write of its lease.
    pub fenced_write_repeated: bool,
    /// A DONE row was changed other than by a fresh acquisition.
    pub done_overwritten: bool,
    /// The machine rejected an event the world sent, or asked for two operations at once.
    pub driver_contract_broken: bool,
    /// A server clock read erred (kept for [`Witness::TakeoverAfterClockError`]).
    pub clock_erred: bool,
    /// A client reported an outcome that was not true when it reported it.
    pub false_outcome: bool,
    /// The highest fence a lock or leadership was granted under.
    pub max_term: Option<Fence>,
    /// A grant's fence was not above every earlier grant's.
    pub term_regressed: bool,
    /// A client reported "released" or "cancelled" while the row still granted it the lease.
    pub lease_kept_after_release: bool,
    /// A client started a new attempt from a timer after its unavailability budget was spent.
    pub retried_past_budget: bool,
    /// The resource accepted a write of a lease an operator had force-released, after the release.
    pub write_after_forced_release: bool,
}

/// The whole system.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WorldState {
    /// Server time in milliseconds.
    pub now_ms: u64,
    /// The lease row in Spanner, with the highest fence it granted.
    pub spanner: Spanner,
    /// The clients, at most [`MAX_CLIENTS`]. On the heap: a state is moved several times per step, and an
    /// inline array sized for five clients made each move copy 1.7 KB.
    pub clients: Vec<ClientSlot>,
    /// Effects the protected resource accepted: a run-once section's writes (the check stops at a write of a
    /// second lease, or one written twice: a violation).
    pub effects: ArrayVec<Effect, MAX_EFFECTS>,
    /// Faults left to inject.
    pub faults_left: u8,
    /// User cancels left.
    pub cancels_left: u8,
    /// Operator actions left.
    pub operators_left: u8,
    /// A commit still on its way after its client was told the outcome is unknown (at most one).
    pub queued: Option<Queued>,
    /// History.
    pub ghost: WorldGhost,
}

impl std::fmt::Debug for WorldState {
    /// `{:?}`: every field, as a derived `Debug` writes it. `{:#?}`, which the stateright Explorer's state pane
    /// shows: the state in words, a line per part (`crate::report::state_in_words`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if f.alternate() {
            return f.write_str(&crate::report::state_in_words(self));
        }
        // Destructured, so a new field cannot be left out.
        let Self { now_ms, spanner, clients, effects, faults_left, cancels_left, operators_left, queued, ghost } = self;
        f.debug_struct("WorldState")
            .field("now_ms", now_ms)
            .field("spanner", spanner)
            .field("clients", clients)
            .field("effects", effects)
            .field("faults_left", faults_left)
            .field("cancels_left", cancels_left)
            .field("operators_left", operators_left)
            .field("queued", queued)
            .field("ghost", ghost)
            .finish()
    }
}

impl WorldState {
    /// The effects' writers and fences, as the shared judgements (`outcome_is_true`, `done_has_effect`) take them.
    pub(crate) fn effect_leases(&self) -> ArrayVec<(ClientId, Fence), MAX_EFFECTS> {
        self.effects.iter().map(|e| (e.writer, e.fence)).collect()
    }
}

pub(crate) fn client_id(slot: usize, incarnation: u8) -> ClientId {
    ClientId::from_u128(((slot as u128 + 1) << 8) | u128::from(incarnation))
}

/// The slot and incarnation a checker client id encodes.
pub(crate) fn slot_of(id: ClientId) -> (usize, u8) {
    let raw = id.uuid().as_u128();
    (((raw >> 8) as usize).saturating_sub(1), (raw & 0xFF) as u8)
}
