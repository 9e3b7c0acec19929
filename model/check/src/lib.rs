//! The stateright model: N instances of the production [`ClientMachine`] against one lease row whose read-write
//! transactions are serializable (read, then commit; a commit after a conflicting commit aborts), one server
//! clock that stamps commits, a protected resource that accepts fenced writes, and budgeted faults.
//!
//! The world only executes the machine's commands and the transaction logic's plans; every protocol decision is
//! made by the same code the client runs.

mod action;
mod cli;
mod properties;
mod report;
mod search;
#[cfg(test)]
mod tests;

pub use action::{Action, ClockError, CommitFate, ParseActionError, decode_path, encode_path};
pub use cli::{FaultArg, KindArg, ModelArgs, ProtocolArg, read_path_argument};
pub use properties::{
    DONE_HAS_EFFECT, DONE_IS_FINAL, DOUBLE_EXECUTION, EVENTS_ACCEPTED, FENCES_INCREASE, NO_CLIENT_STUCK,
    NO_STALE_WRITE, OUTCOMES_TRUE, OutcomeFacts, RELEASE_LEAVES_NO_LEASE, RELIANCE_BACKED_BY_ROW, SAFETY, SEVERITY,
    SINGLE_RELIANCE, TERMS_INCREASE, done_has_effect, fence_follows, keeps_lease_after_release, outcome_is_true,
    overwrites_done, superseded, violated_safety,
};
pub use report::{CheckSummary, Counterexample, SearchOptions, Verdict, describe_path, run_check};

use arrayvec::ArrayVec;
use spanner_mutex_model::txn::{self, TxnReply, TxnRequest};
use spanner_mutex_model::{
    ClientId, ClientMachine, Command, Config, ConfigParams, Event, Fence, LeaseRow, LocalInstant, Protocol,
    SectionResult, ServerTime, Status,
};
use stateright::{Model, Property};

/// The most clients a check may compose.
pub const MAX_CLIENTS: u8 = 5;

/// The longest horizon a check may have, in milliseconds of server time (the default worlds need 6; every one
/// more multiplies the states).
pub const MAX_TIME_MS: u64 = 1_000;

/// What a client's user does with the mutex: each kind is the production machine in one of the library's modes,
/// driven by the steps its user can take (in the checker and in the simulator's scenarios, as `kind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientKind {
    /// `SpannerMutex::run`: need check, lease, need check again, one fenced write, release as DONE.
    #[default]
    RunOnce,
    /// `SpannerMutex::acquire`: waits for the lock without a retry limit (its user may give up: a cancel),
    /// makes one fenced write, then releases.
    Lock,
    /// `SpannerMutex::campaign`: a lock without a retry limit, held (renewed) until resigned or lost, then
    /// campaigned for once more.
    Leader,
}

impl ClientKind {
    /// The kind's word on the command line.
    pub const fn word(self) -> &'static str {
        match self {
            Self::RunOnce => "run-once",
            Self::Lock => "lock",
            Self::Leader => "leader",
        }
    }

    /// Whether the kind runs the machine in lock mode (lock and leader share a row; run-once clients cannot:
    /// a lock's release writes DONE, which a run-once client reads as "done by another").
    pub const fn is_lock_mode(self) -> bool {
        !matches!(self, Self::RunOnce)
    }
}

/// How many campaigns a leader client makes (the second follows the end of its first term).
pub const LEADER_CAMPAIGNS: u8 = 2;

/// Which faults the world may inject. Each injected fault spends one unit of [`CheckOptions::fault_budget`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Faults {
    /// A client process dies (its section with it) and restarts as a new client.
    pub crash: bool,
    /// A transaction aborts without a conflict.
    pub abort: bool,
    /// A commit's outcome is unknown to the client; it landed, or it did not.
    pub unknown: bool,
    /// A client's monotonic clock falls 1 ms further behind the server's (bounded by the safety margin).
    pub drift: bool,
    /// A critical section fails before writing its effect.
    pub section_failure: bool,
    /// The server time a transaction reads is 1 ms early or late. Not in [`Self::ALL`]: the checked lease
    /// grows by twice the error to pay for it, and needs a longer horizon to be taken over.
    pub clock_error: bool,
    /// A commit its client is told is unknown stays queued and reaches Spanner later (landing unless the row
    /// changed meanwhile). Not in [`Self::ALL`]: it adds a queued transaction to the state.
    pub late: bool,
}

impl Faults {
    /// Every fault kind of the default check (all but [`Self::clock_error`]).
    pub const ALL: Self = Self {
        crash: true,
        abort: true,
        unknown: true,
        drift: true,
        section_failure: true,
        clock_error: false,
        late: false,
    };
    /// No faults: only scheduling (which already includes arbitrarily long pauses) and time.
    pub const NONE: Self = Self {
        crash: false,
        abort: false,
        unknown: false,
        drift: false,
        section_failure: false,
        clock_error: false,
        late: false,
    };
}

/// What to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Number of clients, 1 to [`MAX_CLIENTS`].
    pub clients: u8,
    /// Enabled faults.
    pub faults: Faults,
    /// Faults injected per execution at most.
    pub fault_budget: u8,
    /// Server time runs from 0 to this many milliseconds; bounds the state space.
    pub max_time_ms: u64,
    /// Wall-clock offset of each client from the server, for the naive protocol (client `i` is offset by
    /// `(i - 1) * skew_ms`: behind, exact, ahead). The fenced protocol never reads a wall clock.
    pub skew_ms: u64,
    /// The protocol the machines and transactions follow.
    pub protocol: Protocol,
    /// The clients' configuration declares no server clock error even when [`Faults::clock_error`] injects one
    /// (the safety-margin rule relaxed).
    pub assume_exact_server_clock: bool,
    /// How long a DONE row stays fresh. The default (100 ms) is beyond the horizon; below it, a stale DONE row is
    /// acquired again within the check.
    pub staleness_ms: u64,
    /// The clients' kinds: slot `i` is `kinds[i % kinds.len()]`.
    pub kinds: Vec<ClientKind>,
    /// User cancels per execution at most (a budget of its own, beside the faults').
    pub cancels: u8,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            clients: 3,
            faults: Faults::ALL,
            fault_budget: 1,
            max_time_ms: 4,
            skew_ms: 1,
            protocol: Protocol::Fenced,
            assume_exact_server_clock: false,
            staleness_ms: 100,
            kinds: vec![ClientKind::RunOnce],
            cancels: 0,
        }
    }
}

impl CheckOptions {
    /// The command-line options that select this model, for printing a reproducing command.
    pub fn cli_args(&self) -> String {
        let mut faults = Vec::new();
        let f = self.faults;
        for (on, name) in [
            (f.crash, "crash"),
            (f.abort, "abort"),
            (f.unknown, "unknown"),
            (f.drift, "drift"),
            (f.section_failure, "section-failure"),
            (f.clock_error, "clock-error"),
            (f.late, "late"),
        ] {
            if on {
                faults.push(name);
            }
        }
        let faults = if faults.is_empty() { "none".to_owned() } else { faults.join(",") };
        let protocol = self.protocol.word();
        let relaxed = if self.assume_exact_server_clock { " --assume-exact-server-clock" } else { "" };
        let kinds: Vec<&str> = self.kinds.iter().map(|k| k.word()).collect();
        format!(
            "--clients {} --kinds {} --cancels {} --faults {faults} --fault-budget {} --max-time-ms {} --skew-ms {} \
             --staleness-ms {} --protocol {protocol}{relaxed}",
            self.clients,
            kinds.join(","),
            self.cancels,
            self.fault_budget,
            self.max_time_ms,
            self.skew_ms,
            self.staleness_ms
        )
    }

    /// The worlds `check` covers by default, each as deep as a CI budget allows: run-once clients with faults
    /// (this default); run-once clients whose users cancel, over a horizon with room for two successive
    /// takeovers (leases granted at 0, 3 and 6 ms); lock and leader clients sharing a mutex, whose users
    /// cancel, release and resign, with two faults per execution; the same clients over the longer horizon; and
    /// the same clients with two faults over the longer horizon, without the cancel (with it too, the world
    /// takes about as long as the other five together: docs/benchmarks.md has its time).
    pub fn default_worlds() -> Vec<Self> {
        let lock_and_leader =
            Self { clients: 2, cancels: 1, kinds: vec![ClientKind::Lock, ClientKind::Leader], ..Self::default() };
        vec![
            Self::default(),
            Self { clients: 2, cancels: 1, max_time_ms: 6, ..Self::default() },
            Self { fault_budget: 2, ..lock_and_leader.clone() },
            Self { max_time_ms: 6, ..lock_and_leader.clone() },
            Self { fault_budget: 2, max_time_ms: 6, cancels: 0, ..lock_and_leader },
        ]
    }

    /// Why these options describe no model, if they do not.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_CLIENTS).contains(&self.clients) {
            return Err(format!("--clients {} is not in 1..={MAX_CLIENTS}", self.clients));
        }
        if self.kinds.is_empty() {
            return Err("--kinds names no kind; use run-once, lock or leader".into());
        }
        if self.max_time_ms > MAX_TIME_MS {
            return Err(format!("--max-time-ms {} is beyond {MAX_TIME_MS}", self.max_time_ms));
        }
        let lock_mode = self.kinds.iter().filter(|k| k.is_lock_mode()).count();
        if lock_mode != 0 && lock_mode != self.kinds.len() {
            return Err("--kinds cannot mix run-once with lock or leader clients on one mutex (a released lock \
                        is DONE, which a run-once client reads as done by another); check them separately"
                .into());
        }
        Ok(())
    }

    /// Client `slot`'s kind.
    pub fn kind(&self, slot: usize) -> ClientKind {
        self.kinds[slot % self.kinds.len()]
    }

    /// Whether some client is of `kind`.
    pub fn has(&self, kind: ClientKind) -> bool {
        (0..usize::from(self.clients)).any(|slot| self.kind(slot) == kind)
    }

    /// Client `slot`'s wall clock offset from the server (see [`Self::skew_ms`]).
    pub fn wall_offset_us(&self, slot: usize) -> i64 {
        (slot as i64 - 1) * i64::try_from(self.skew_ms).unwrap_or(0) * 1_000
    }

    /// The server clock error the clients' configuration declares: 1 ms when it is injected, unless the rule
    /// is relaxed.
    pub const fn declared_uncertainty_ms(&self) -> u64 {
        if self.faults.clock_error && !self.assume_exact_server_clock { 1 } else { 0 }
    }

    /// The protocol configuration the checked clients use: a 3 ms lease (2 ms locally, so 1 ms of drift is
    /// absorbed), renewed every 1 ms, at most 2 retries. A declared server clock error of 1 ms adds 2 ms to the
    /// lease and to the margin, as the configuration rule demands.
    pub fn protocol_config(&self) -> Config {
        let uncertainty_ms = self.declared_uncertainty_ms();
        let ttl_ms = 3 + 2 * uncertainty_ms;
        ConfigParams {
            ttl_ms,
            staleness_ms: self.staleness_ms,
            wait_ms: 1,
            max_wait_ms: 3,
            // Waiters poll every millisecond before the expiry they read, so polls are explored too.
            poll_ms: 1,
            max_retries: 2,
            renew_interval_ms: 1,
            safety_margin_ms: 1 + 2 * uncertainty_ms,
            // Drift steps lag a client's clock 1 ms in all, over a lease.
            clock_drift_ppm: 1_000_000 / ttl_ms,
            server_uncertainty_ms: uncertainty_ms,
            jitter_ms: 0,
            // The checked world has no unavailable Spanner (only unknown outcomes, aborts and crashes).
            unavailable_ms: 0,
            protocol: self.protocol,
        }
        .validate()
        .expect("the checked configuration is valid (--staleness-ms must exceed the checked lease: 3 ms, 5 with clock-error)")
    }
}

/// The model checked by stateright.
#[derive(Clone, Debug)]
pub struct LeaseModel {
    /// What is checked.
    pub options: CheckOptions,
    /// The clients' protocol configuration.
    pub cfg: Config,
    /// Where the [`Witness`]es of `sometimes` companions go: `None`, into the states they lead to (so the
    /// Explorer and stateright show each companion with its path); `Some`, into this tally, from every step the
    /// search takes, leaving the states unmarked (see [`Self::tallying_witnesses`]).
    tally: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl LeaseModel {
    /// A model for `options`.
    pub fn new(options: CheckOptions) -> Self {
        if let Err(why) = options.validate() {
            panic!("{why}");
        }
        let cfg = options.protocol_config();
        Self { options, cfg, tally: None }
    }

    /// This model with its witnesses tallied instead of marked in states, and only its `always` properties
    /// given to stateright; [`Self::unreached`] judges the companions after the search. Marks in states split
    /// each marked state from its unmarked twin (a third of the states of the default check), and a companion
    /// that held was evaluated (and recorded) again in every later state. The verdict is the same: an
    /// exhaustive search takes every step out of every reachable state (out of one member of each class under
    /// symmetry and time shifts, whose marks are every member's), whatever its order or thread count.
    pub fn tallying_witnesses(mut self) -> Self {
        self.tally = Some(std::sync::Arc::default());
        self
    }

    /// Whether this model was made by [`Self::tallying_witnesses`].
    pub const fn tallies_witnesses(&self) -> bool {
        self.tally.is_some()
    }

    /// The `sometimes` companions no step of the search has witnessed so far, for a model made by
    /// [`Self::tallying_witnesses`] (else every companion).
    pub fn unreached(&self) -> Vec<&'static str> {
        let tallied = self.tally.as_ref().map_or(0, |tally| tally.load(std::sync::atomic::Ordering::Relaxed));
        let mut marked = self.init_states().swap_remove(0);
        marked.ghost.witnessed = Witnessed(tallied);
        properties::all(self)
            .into_iter()
            .filter(|p| p.expectation == stateright::Expectation::Sometimes && !(p.condition)(self, &marked))
            .map(|p| p.name)
            .collect()
    }
}

/// An effect the protected resource accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Effect {
    /// Who wrote it.
    pub writer: ClientId,
    /// With which fence.
    pub fence: Fence,
}

/// The operation a client has in flight (the machine has at most one): transactions take a step of their own to
/// commit, and so do need checks while a user cancel is still possible (it can come between); reads take
/// effect when sent.
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
    },
}

/// A commit whose client was told the outcome is unknown, still on its way to Spanner.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Queued {
    /// A lease transaction.
    Txn {
        /// The transaction.
        request: TxnRequest,
        /// No write has committed since it read the row.
        row_unchanged: bool,
        /// The time its decisions are made on.
        read_at: ServerTime,
    },
    /// A section's fenced write (write 1 of its lease).
    FencedWrite {
        /// The run that sent it.
        writer: ClientId,
        /// Its fence.
        fence: Fence,
        /// Whether it is a run-once section's effect (a lock holder's write is judged by its fence only).
        run_once: bool,
        /// No write has committed since it read the row.
        row_unchanged: bool,
        /// The time its decisions are made on.
        read_at: ServerTime,
    },
}

/// The user's critical section: write the effect through a fenced transaction, then return.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    /// Not running.
    Idle,
    /// Running, effect not yet written.
    Started {
        /// Its fence.
        fence: Fence,
    },
    /// The fenced write committed.
    Wrote,
    /// The fenced write was refused: the lease was no longer ours.
    Rejected,
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
}

/// The [`Witness`]es of the step that led to a state, and with [`Witness::FinishedAfterCancel`] the phase the
/// cancel came in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Witnessed(u64);

impl Witnessed {
    const PHASE_SHIFT: u32 = 32;

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

    const fn has_index(self, witness: u8) -> bool {
        self.0 & (1 << witness) != 0
    }

    const fn has_cancel_index(self, phase: u8) -> bool {
        self.0 & (1 << (Self::PHASE_SHIFT + phase as u32)) != 0
    }
}

/// Global history for properties.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct WorldGhost {
    /// What the step that led to this state showed (cleared by the next step).
    pub witnessed: Witnessed,
    /// The highest fence ever granted.
    pub max_fence: Option<Fence>,
    /// A write lowered the row's fence or skipped one.
    pub fence_regressed: bool,
    /// The resource accepted a write whose fence had been superseded.
    pub stale_write_accepted: bool,
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
}

/// The whole system.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorldState {
    /// Server time in milliseconds.
    pub now_ms: u64,
    /// The lease row.
    pub row: Option<LeaseRow>,
    /// The clients, at most [`MAX_CLIENTS`]. On the heap: a state is moved several times per step, and an
    /// inline array sized for five clients made each move copy 1.7 KB.
    pub clients: Vec<ClientSlot>,
    /// Effects the protected resource accepted (the check stops at the second one: a violation).
    pub effects: ArrayVec<Effect, 2>,
    /// Faults left to inject.
    pub faults_left: u8,
    /// User cancels left.
    pub cancels_left: u8,
    /// A commit still on its way after its client was told the outcome is unknown (at most one).
    pub queued: Option<Queued>,
    /// History.
    pub ghost: WorldGhost,
}

fn client_id(slot: usize, incarnation: u8) -> ClientId {
    ClientId::from_u128(((slot as u128 + 1) << 8) | u128::from(incarnation))
}

/// The slot and incarnation a checker client id encodes.
fn slot_of(id: ClientId) -> (usize, u8) {
    let raw = id.uuid().as_u128();
    (((raw >> 8) as usize).saturating_sub(1), (raw & 0xFF) as u8)
}

/// A renaming of client ids alone, for the symmetry reduction.
struct RenameClients<F>(F);

impl<F: Fn(ClientId) -> ClientId> spanner_mutex_model::Rename for RenameClients<F> {
    fn client(&self, id: ClientId) -> ClientId {
        (self.0)(id)
    }
}

/// Local instants moved `by_ms` and fences renumbered, for the reduction by time shifts.
struct ShiftInTime<F> {
    by_ms: i64,
    renumber: F,
}

impl<F: Fn(Fence) -> Fence> spanner_mutex_model::Rename for ShiftInTime<F> {
    fn instant(&self, at: LocalInstant) -> LocalInstant {
        at.shifted_ms(self.by_ms)
    }

    fn fence(&self, fence: Fence) -> Fence {
        (self.renumber)(fence)
    }
}

impl ClientSlot {
    fn relabel(&mut self, rename: impl Fn(ClientId) -> ClientId) {
        let rename = RenameClients(rename);
        self.machine.rename(&rename);
        if let Op::TxnRead { request, .. } = &mut self.op {
            request.rename(&rename);
        }
    }
}

/// Symmetry reduction: clients are interchangeable in the fenced protocol (no per-client wall clock), so a state
/// is represented by a canonical member of its class: slots sorted by their id-free content, every id renamed to
/// match, and among the orders that sort (slots whose content ties) the one whose state hashes lowest. Every
/// member of a class has the same candidates, so the choice is the same whichever member is reached first, and
/// unique-state counts do not depend on the search's thread count.
///
/// A slot's id-free content is the hash of the slot with every client id in it blanked, beside which slot holds
/// the row, wrote each effect and sent the queued commit. Tied slots are then alike but for their ids, and when
/// no client names another (only a "done by another" outcome does), every order of them gives the same state:
/// the sorted order is taken without trying the others.
fn representative(state: &WorldState) -> WorldState {
    representative_of(state).into_owned()
}

/// The fingerprint of `state`'s class under client symmetry (`symmetric`), else of `state` itself.
fn canonical_fingerprint(state: &WorldState, symmetric: bool) -> u64 {
    if symmetric { checker_hash(&*representative_of(state)) } else { checker_hash(state) }
}

/// Where [`LeaseModel::key_for_search`] puts server time: beyond any horizon, so no instant moved there saturates.
const SHIFTED_NOW_MS: u64 = 1 << 20;
const _: () = assert!(MAX_TIME_MS < SHIFTED_NOW_MS, "a shifted state's times must not saturate");

/// The fence [`LeaseModel::key_for_search`] gives the row (every other fence keeps its distance to the row's).
const KEYED_ROW_FENCE: u64 = 1 << 20;

/// How [`LeaseModel::key_for_search`] moved a state: what moves it back.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyMove {
    now_ms: u64,
    by_ms: i64,
    row_fence: u64,
}

impl KeyMove {
    /// The server time of the state the key was made from.
    pub(crate) const fn now_ms(self) -> u64 {
        self.now_ms
    }
}

/// [`representative`], borrowing `state` when it is its own representative (most are).
fn representative_of(state: &WorldState) -> std::borrow::Cow<'_, WorldState> {
    use std::borrow::Cow;
    let names_another = std::cell::Cell::new(false);
    let anonymous = |i: usize| {
        let slot = &state.clients[i];
        // A slot of a kind no other slot has is placed by its kind alone; its content need not be hashed. Nor
        // need it be asked whether it names another client: only a run-once "done by another" outcome does, and
        // run-once clients never share a world with other kinds (`CheckOptions::validate`).
        if state.clients.iter().filter(|other| other.kind == slot.kind).count() == 1 {
            return ((slot.kind, 0, false, false, false, false), i);
        }
        let own = slot.machine.id();
        let mut blank = slot.clone();
        let names_another = &names_another;
        blank.relabel(|id| {
            if id != own {
                names_another.set(true);
            }
            ClientId::from_u128(0)
        });
        let refers = |id: Option<ClientId>| id.is_some_and(|id| slot_of(id).0 == i);
        let queued = match &state.queued {
            None => None,
            Some(Queued::Txn { request, .. }) => Some(request.client()),
            Some(Queued::FencedWrite { writer, .. }) => Some(*writer),
        };
        let key = (
            slot.kind,
            checker_hash(&blank),
            refers(state.row.as_ref().map(|r| r.holder)),
            refers(state.effects.first().map(|e| e.writer)),
            refers(state.effects.get(1).map(|e| e.writer)),
            refers(queued),
        );
        (key, i)
    };
    let mut order: ArrayVec<_, { MAX_CLIENTS as usize }> = (0..state.clients.len()).map(anonymous).collect();
    order.sort_unstable();
    let mut slots: ArrayVec<usize, { MAX_CLIENTS as usize }> = order.iter().map(|&(_, old)| old).collect();
    // Runs of equal keys: the slots whose order the sort leaves open.
    let mut ties: ArrayVec<(usize, usize), { MAX_CLIENTS as usize }> = ArrayVec::new();
    let mut start = 0;
    for i in 1..=order.len() {
        if i == order.len() || order[i].0 != order[start].0 {
            if i - start > 1 {
                ties.push((start, i));
            }
            start = i;
        }
    }
    if ties.is_empty() || !names_another.get() {
        return if slots.iter().enumerate().all(|(new, &old)| new == old) {
            Cow::Borrowed(state)
        } else {
            Cow::Owned(permuted(state, &slots))
        };
    }
    let mut best: Option<(u64, WorldState)> = None;
    each_tie_order(&mut slots, &ties, &mut |slots| {
        let candidate = permuted(state, slots);
        let hash = checker_hash(&candidate);
        let better = match &best {
            None => true,
            Some((best_hash, best_state)) => {
                // Equal hashes of different states: never seen, but the choice must still not depend on order.
                // (Tied slots that are wholly alike give equal candidates: nothing to choose.)
                hash < *best_hash
                    || (hash == *best_hash
                        && candidate != *best_state
                        && format!("{candidate:?}") < format!("{best_state:?}"))
            }
        };
        if better {
            best = Some((hash, candidate));
        }
    });
    Cow::Owned(best.expect("at least one order").1)
}

/// Calls `visit` with every order of `slots` that permutes only within the `ties` ranges (left as found).
fn each_tie_order(slots: &mut [usize], ties: &[(usize, usize)], visit: &mut impl FnMut(&[usize])) {
    let Some((&(from, to), rest)) = ties.split_first() else {
        visit(slots);
        return;
    };
    loop {
        each_tie_order(slots, rest, visit);
        if !next_permutation(&mut slots[from..to]) {
            return;
        }
    }
}

/// Steps `items` to its next lexicographic permutation; after the last, restores the first and returns false.
fn next_permutation(items: &mut [usize]) -> bool {
    let Some(pivot) = (1..items.len()).rev().find(|&i| items[i - 1] < items[i]).map(|i| i - 1) else {
        items.reverse();
        return false;
    };
    let successor = (pivot + 1..items.len()).rev().find(|&i| items[i] > items[pivot]).expect("a larger item");
    items.swap(pivot, successor);
    items[pivot + 1..].reverse();
    true
}

/// A hash fixed for the whole run (seeded, not random), as the canonical form needs; it is only ever compared
/// within one run, so which function it is does not change any count.
fn checker_hash(value: &impl std::hash::Hash) -> u64 {
    ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(value)
}

/// `state` with slot `slots[new]` moved to `new`, and every client id renamed to match.
fn permuted(state: &WorldState, slots: &[usize]) -> WorldState {
    let mut new_slot_of = [0usize; MAX_CLIENTS as usize];
    for (new, &old) in slots.iter().enumerate() {
        new_slot_of[old] = new;
    }
    let rename = |id: ClientId| {
        let (slot, incarnation) = slot_of(id);
        client_id(new_slot_of[slot], incarnation)
    };
    // Field by field, so the slots are cloned once (and a new field cannot be forgotten).
    let mut out = WorldState {
        now_ms: state.now_ms,
        row: state.row.clone(),
        clients: slots
            .iter()
            .map(|&old| {
                let mut slot = state.clients[old].clone();
                slot.relabel(rename);
                slot
            })
            .collect(),
        effects: state.effects.clone(),
        faults_left: state.faults_left,
        cancels_left: state.cancels_left,
        queued: state.queued.clone(),
        ghost: state.ghost,
    };
    if let Some(row) = &mut out.row {
        row.holder = rename(row.holder);
    }
    for effect in &mut out.effects {
        effect.writer = rename(effect.writer);
    }
    match &mut out.queued {
        None => {}
        Some(Queued::Txn { request, .. }) => request.rename(&RenameClients(rename)),
        Some(Queued::FencedWrite { writer, .. }) => *writer = rename(*writer),
    }
    out
}

impl LeaseModel {
    /// Whether states may be reduced by client symmetry: not in the naive protocol, whose clients' wall clocks
    /// differ by slot.
    pub fn symmetric(&self) -> bool {
        self.cfg.protocol().uses_server_time()
    }

    /// The fingerprint of `state`'s class, as the exhaustive search keys it ([`Self::class_fingerprint`]), for
    /// tests that count classes.
    #[cfg(test)]
    pub(crate) fn time_free_fingerprint(&self, state: &WorldState, symmetric: bool) -> u64 {
        self.class_fingerprint(&mut state.clone(), symmetric).0
    }

    /// Makes `state` its search key in place ([`Self::key_for_search`]) and fingerprints it: the fingerprint of
    /// its class under client symmetry (when `symmetric`, which needs [`Self::symmetric`]) and time shifts, blind
    /// to what no decision, property or witness reads. The [`KeyMove`] moves the key back.
    pub(crate) fn class_fingerprint(&self, state: &mut WorldState, symmetric: bool) -> (u64, KeyMove) {
        let moved = self.key_for_search(state);
        (canonical_fingerprint(state, symmetric), moved)
    }

    /// Makes `state` its search key, in place (the search keys every successor, and most are dropped after):
    /// moved in time so that server time reads [`SHIFTED_NOW_MS`] (every time in it moved by the same amount:
    /// the row's, the transactions', each machine's local instants; server time itself kept while it decides
    /// whether a clock may drift), every fence renumbered from the row's ([`KEYED_ROW_FENCE`]), and what no
    /// decision, property or witness reads forgotten: the row's acquisition count (only written, for people
    /// reading the row), its commit time when no DONE row can go stale within the horizon (lock-mode rows never
    /// do), and the retries of a client without a retry limit beyond the longest backoff. What it returns moves
    /// the key back ([`Self::restore_from_key`]). docs/checker.md argues the reduction.
    pub(crate) fn key_for_search(&self, state: &mut WorldState) -> KeyMove {
        // Fences are only compared, and all of them are the row's first one plus a count (the checked row is never
        // deleted), which only the first depends on the time it was created at: counted down from the row's.
        let moved = KeyMove {
            now_ms: state.now_ms,
            by_ms: (SHIFTED_NOW_MS - state.now_ms).cast_signed(),
            row_fence: state.row.as_ref().map_or(0, |row| row.fence.get()),
        };
        let to_key = |fence: Fence| Fence::new(fence.get().wrapping_sub(moved.row_fence).wrapping_add(KEYED_ROW_FENCE));
        self.move_in_time(state, moved.by_ms, to_key);
        // Before server time passes the drift share, whether a clock may drift depends on the time itself (a
        // clock never lags behind its start), so those states are keyed by it: none is a shift of another. After,
        // no state's future depends on when it happens.
        if !(self.options.faults.drift && state.now_ms < self.drift_share_ms()) {
            state.now_ms = SHIFTED_NOW_MS;
        }
        let staleness_unseen = self.staleness_unseen();
        if let Some(row) = &mut state.row {
            row.attempt = 0;
            if staleness_unseen {
                row.updated_at = ServerTime::from_unix_micros(0);
            }
        }
        for slot in &mut state.clients {
            slot.machine.forget_uncounted_attempts(&self.cfg);
        }
        moved
    }

    /// Moves a search key back to the time and fences of the state it was made from (`moved`). What the key
    /// forgot stays forgotten: the state is the same but for what nothing reads.
    pub(crate) fn restore_from_key(&self, key: &mut WorldState, moved: KeyMove) {
        let from_key =
            |fence: Fence| Fence::new(fence.get().wrapping_sub(KEYED_ROW_FENCE).wrapping_add(moved.row_fence));
        self.move_in_time(key, -moved.by_ms, from_key);
        key.now_ms = moved.now_ms;
    }

    /// Whether no DONE row can go stale within the horizon (a decision time reaches a millisecond past it: a
    /// server clock read late), so nothing reads a row's commit time.
    fn staleness_unseen(&self) -> bool {
        !self.options.has(ClientKind::RunOnce) || self.options.staleness_ms > self.options.max_time_ms.saturating_add(1)
    }

    /// Moves every time in `state` but server time itself `by_ms` milliseconds (earlier when negative), and
    /// renumbers every fence by `renumber`. The row's commit time stays where it is when nothing reads it: a key
    /// forgets it.
    fn move_in_time(&self, state: &mut WorldState, by_ms: i64, renumber: impl Fn(Fence) -> Fence + Copy) {
        let by_server = |time: &mut ServerTime| *time = time.shifted_ms(by_ms);
        let shift = ShiftInTime { by_ms, renumber };
        let staleness_unseen = self.staleness_unseen();
        if let Some(row) = &mut state.row {
            row.fence = renumber(row.fence);
            // Forgotten in a key when unseen.
            if !staleness_unseen {
                by_server(&mut row.updated_at);
            }
            by_server(&mut row.expires_at);
        }
        for effect in &mut state.effects {
            effect.fence = renumber(effect.fence);
        }
        match &mut state.queued {
            Some(Queued::Txn { request, read_at, .. }) => {
                request.rename(&shift);
                by_server(read_at);
            }
            Some(Queued::FencedWrite { fence, read_at, .. }) => {
                *fence = renumber(*fence);
                by_server(read_at);
            }
            None => {}
        }
        for slot in &mut state.clients {
            slot.machine.rename(&shift);
            if let Op::TxnRead { request, read_at, .. } = &mut slot.op {
                request.rename(&shift);
                by_server(read_at);
            }
            if let Section::Started { fence } = &mut slot.section {
                *fence = renumber(*fence);
            }
        }
        state.ghost.max_fence = state.ghost.max_fence.map(renumber);
        state.ghost.max_term = state.ghost.max_term.map(renumber);
    }

    /// How far a client's clock may fall behind: the margin's share left after twice the declared server clock
    /// error.
    fn drift_share_ms(&self) -> u64 {
        self.cfg.safety_margin_ms() - 2 * self.cfg.server_uncertainty_ms()
    }

    /// The symmetry representative function, when [`Self::symmetric`].
    pub fn symmetry(&self) -> Option<fn(&WorldState) -> WorldState> {
        self.symmetric().then_some(representative as fn(&WorldState) -> WorldState)
    }
}

impl LeaseModel {
    fn server_time(ms: u64) -> ServerTime {
        ServerTime::from_unix_micros(i64::try_from(ms).unwrap_or(i64::MAX) * 1_000)
    }

    /// The time a client-side decision is made on: the server's clock in the fenced protocol, the client's
    /// skewed wall clock in the naive one.
    fn decision_time(&self, state: &WorldState, slot: usize) -> ServerTime {
        self.cfg.protocol().decision_time(Self::server_time(state.now_ms), self.options.wall_offset_us(slot))
    }

    /// The client's monotonic clock.
    pub fn local_now(state: &WorldState, slot: usize) -> LocalInstant {
        let lag_ms = state.clients[slot].lag_ms;
        debug_assert!(lag_ms <= state.now_ms, "a client's clock drifts only once server time is past its lag");
        LocalInstant::from_ms(state.now_ms.saturating_sub(lag_ms))
    }

    fn machine(&self, kind: ClientKind, id: ClientId) -> ClientMachine {
        match kind {
            ClientKind::RunOnce => ClientMachine::run_once(id, "", &self.cfg),
            // As `acquire` and `campaign` do: no retry limit.
            ClientKind::Lock | ClientKind::Leader => ClientMachine::lock(id, "", u32::MAX),
        }
    }

    fn fresh_slot(&self, slot: usize, incarnation: u8, lag_ms: u64) -> ClientSlot {
        let kind = self.options.kind(slot);
        let machine = self.machine(kind, client_id(slot, incarnation));
        let ghost = ClientGhost { campaigns: 1, ..ClientGhost::default() };
        ClientSlot { kind, machine, incarnation, lag_ms, op: Op::Idle, section: Section::Idle, ghost }
    }

    /// A leader whose term (or campaign) ended campaigns again. Each campaign is a new client id, as in
    /// production; the checker numbers it as the next incarnation of the slot.
    fn campaign_again(&self, state: &mut WorldState, slot: usize) {
        let client = &mut state.clients[slot];
        client.incarnation += 1;
        client.machine = self.machine(ClientKind::Leader, client_id(slot, client.incarnation));
        client.ghost.campaigns += 1;
        client.ghost.waits = 0;
        client.ghost.granted = false;
        self.start(state, slot);
    }

    fn start(&self, state: &mut WorldState, slot: usize) {
        let now = Self::local_now(state, slot);
        let command = state.clients[slot].machine.start(now);
        self.execute(state, slot, command, true);
    }

    /// Feeds `event` to a client's machine and executes what it commands.
    fn deliver(&self, state: &mut WorldState, slot: usize, event: Event) {
        let now = Self::local_now(state, slot);
        // A poll that finds the row still busy waits on without it being a retry.
        let counts_wait = !state.clients[slot].machine.is_polling();
        match state.clients[slot].machine.handle(&self.cfg, now, event) {
            Ok(command) => {
                if !counts_wait
                    && matches!(
                        command,
                        Some(Command::RunTxn(_) | Command::Finish(spanner_mutex_model::Outcome::DoneByOther { .. }))
                    )
                {
                    state.ghost.witnessed.insert(Witness::PollNoticed);
                }
                self.execute(state, slot, command, counts_wait);
            }
            Err(_) => state.ghost.driver_contract_broken = true,
        }
    }

    /// Executes a command. Need checks and single-use reads take effect (linearize) when sent, and a
    /// transaction reads the row and server time when sent; its commit is a separate step. Reading at send time
    /// is the worst case for the holder's deadline (the earliest possible expiry); a client that is slow to send
    /// is modelled by the steps before the send (timers, deliveries, ticks) happening later.
    fn execute(&self, state: &mut WorldState, slot: usize, command: Option<Command>, counts_wait: bool) {
        let client = &mut state.clients[slot];
        if counts_wait
            && client.machine.phase() == spanner_mutex_model::Phase::AwaitingRetryTimer
            && client.machine.poll_timeout().is_some()
        {
            // Lock-mode clients have no retry limit to judge a "gave up" by; only the hand-over companion asks
            // whether they waited at all, and a count would split their states by it.
            client.ghost.waits = if client.kind.is_lock_mode() { 1 } else { client.ghost.waits + 1 };
        }
        if client.op != Op::Idle && matches!(command, Some(Command::CheckNeed | Command::ReadRow | Command::RunTxn(_)))
        {
            state.ghost.driver_contract_broken = true;
        }
        match command {
            None => {}
            Some(Command::Finish(outcome)) => {
                Self::judge_release(state, slot, &outcome);
                let effects: ArrayVec<_, 2> = state.effects.iter().map(|e| (e.writer, e.fence)).collect();
                let client = &state.clients[slot];
                // The checker's need check answers from the effects at once, and a run finishes right after it.
                let facts = OutcomeFacts {
                    client: client.machine.id(),
                    effects: &effects,
                    row: state.row.as_ref(),
                    last_need_answer: Some(state.effects.is_empty()),
                    waits: client.ghost.waits,
                    max_retries: self.cfg.max_retries(),
                };
                state.ghost.false_outcome |= !outcome_is_true(&outcome, &facts);
                Self::witness_finish(state, slot, &outcome);
                let client = &mut state.clients[slot];
                if client.kind == ClientKind::Leader
                    && client.ghost.cancelled_in.is_none()
                    && client.ghost.campaigns < LEADER_CAMPAIGNS
                {
                    client.ghost.term_ended |= client.ghost.granted;
                    self.campaign_again(state, slot);
                }
            }
            // With a cancel still possible, the check takes a step of its own, so the cancel can come during it;
            // else it answers when asked, from the effects applied by then (nothing can tell the two apart).
            Some(Command::CheckNeed) if state.cancels_left > 0 && client.ghost.cancelled_in.is_none() => {
                client.op = Op::NeedCheck;
            }
            Some(Command::CheckNeed) => {
                let needed = state.effects.is_empty();
                self.deliver(state, slot, Event::NeedAnswered { needed });
            }
            Some(Command::ReadRow) => {
                let event = Event::RowRead { row: state.row.clone(), server_now: Self::server_time(state.now_ms) };
                self.deliver(state, slot, event);
            }
            Some(Command::RunTxn(request)) => {
                let read_at = self.decision_time(state, slot);
                state.clients[slot].op = Op::TxnRead { request, row_unchanged: true, read_at, clock_erred: false };
            }
            Some(Command::RunSection { fence, .. }) => {
                client.section = Section::Started { fence };
                Self::witness_won(state, slot);
            }
            // The checked section ignores the signal on purpose: fencing, not good manners, must keep it safe.
            Some(Command::SignalLockLost { .. }) => state.ghost.witnessed.insert(Witness::LockLost),
            Some(Command::Granted { fence, .. }) => {
                if !client.kind.is_lock_mode() {
                    state.ghost.driver_contract_broken = true;
                }
                client.section = Section::Started { fence };
                client.ghost.granted = true;
                let waited = client.ghost.waits > 0;
                let ghost = &mut state.ghost;
                ghost.term_regressed |= ghost.max_term.is_some_and(|max| fence <= max);
                ghost.max_term = ghost.max_term.max(Some(fence));
                // The acquisition this grant follows was made in this same step (or its resolution read was).
                if waited && ghost.witnessed.contains(Witness::DoneAcquired) {
                    ghost.witnessed.insert(Witness::HandedOver);
                }
                Self::witness_won(state, slot);
            }
        }
    }

    /// Marks what a client winning the lease shows, and forgets the facts kept until it won.
    fn witness_won(state: &mut WorldState, slot: usize) {
        let ghost = &mut state.clients[slot].ghost;
        let witnessed = &mut state.ghost.witnessed;
        if std::mem::take(&mut ghost.unknown_landed) {
            witnessed.insert(Witness::UnknownLandedWon);
        }
        if std::mem::take(&mut ghost.unknown_lost) {
            witnessed.insert(Witness::UnknownLostWon);
        }
        if std::mem::take(&mut ghost.term_ended) {
            witnessed.insert(Witness::LeadsAgain);
        }
    }

    /// Marks what a finishing client's outcome shows, and forgets the facts kept until it finished.
    fn witness_finish(state: &mut WorldState, slot: usize, outcome: &spanner_mutex_model::Outcome) {
        use spanner_mutex_model::Outcome;
        let witnessed = &mut state.ghost.witnessed;
        match outcome {
            Outcome::Executed { .. } => {
                witnessed.insert(Witness::Executed);
                // One execution is all a run-once world has; no later one needs a failure behind it.
                let mut after_failure = false;
                for (i, client) in state.clients.iter_mut().enumerate() {
                    after_failure |= i != slot && client.ghost.section_failed;
                    client.ghost.section_failed = false;
                }
                if after_failure {
                    witnessed.insert(Witness::ExecutedAfterFailure);
                }
            }
            Outcome::DoneByOther { .. } => witnessed.insert(Witness::DoneByOther),
            Outcome::NotNeeded => witnessed.insert(Witness::NotNeeded),
            Outcome::GaveUp { .. } => witnessed.insert(Witness::GaveUp),
            Outcome::Released { .. } | Outcome::LeaseLost { .. } | Outcome::Cancelled | Outcome::Failed(_) => {}
        }
        let ghost = &mut state.clients[slot].ghost;
        if let Some(phase) = ghost.cancelled_in {
            witnessed.insert_cancel(phase);
        }
        ghost.unknown_landed = false;
        ghost.unknown_lost = false;
    }

    /// Judges a finishing client's "released" or "cancelled": the row must not grant it the lease any more (a
    /// waiter can acquire at once).
    fn judge_release(state: &mut WorldState, slot: usize, outcome: &spanner_mutex_model::Outcome) {
        let id = state.clients[slot].machine.id();
        let now = Self::server_time(state.now_ms);
        state.ghost.lease_kept_after_release |= keeps_lease_after_release(outcome, id, state.row.as_ref(), now);
    }

    /// Applies a committed write, recording what the properties watch for.
    fn commit_write(state: &mut WorldState, write: spanner_mutex_model::RowWrite, acquire: bool) {
        let previous = state.row.take();
        let ghost = &mut state.ghost;
        ghost.fence_regressed |= !fence_follows(previous.as_ref(), ghost.max_fence, &write, acquire);
        ghost.done_overwritten |= overwrites_done(previous.as_ref(), &write, acquire);
        if acquire && previous.as_ref().is_some_and(|p| p.status == Status::Done) {
            ghost.witnessed.insert(Witness::DoneAcquired);
        }
        let reentrant = previous.as_ref().is_some_and(|p| p.fence == write.fence && p.holder == write.holder);
        if acquire && let Some(prev) = previous.as_ref().filter(|p| p.status == Status::Started && !reentrant) {
            match state.clients.iter().find(|c| c.machine.id() == prev.holder) {
                None => ghost.witnessed.insert(Witness::TakeoverAfterCrash),
                Some(c) if c.machine.outcome().is_none() => {
                    ghost.witnessed.insert(Witness::TakeoverAfterPause);
                    if ghost.clock_erred {
                        ghost.witnessed.insert(Witness::TakeoverAfterClockError);
                    }
                }
                Some(_) => {}
            }
        }
        ghost.max_fence = ghost.max_fence.max(Some(write.fence));
        state.row = Some(write.committed_at(Self::server_time(state.now_ms)));
        // Every transaction that read the row before this write will abort.
        for client in &mut state.clients {
            if let Op::TxnRead { row_unchanged, .. } = &mut client.op {
                *row_unchanged = false;
            }
        }
        if let Some(Queued::Txn { row_unchanged, .. } | Queued::FencedWrite { row_unchanged, .. }) = &mut state.queued {
            *row_unchanged = false;
        }
    }
}

impl LeaseModel {
    /// A queued commit reaches Spanner: it lands if the row is as it read it (else it aborts, as any
    /// transaction whose read changed). Nobody hears of it: its client was told the outcome is unknown.
    fn land_late(&self, state: &mut WorldState, queued: Queued) {
        match queued {
            Queued::Txn { request, row_unchanged: true, read_at } => {
                let plan = txn::plan(&self.cfg, &request, state.row.as_ref(), read_at);
                if let Some(write) = plan.write {
                    Self::commit_write(state, write, matches!(request, TxnRequest::Acquire { .. }));
                    state.ghost.witnessed.insert(Witness::LateLanded);
                }
            }
            Queued::FencedWrite { writer, fence, run_once, row_unchanged: true, read_at } => {
                let verify = TxnRequest::VerifyFence { client: writer, fence, write: 1 };
                let plan = txn::plan(&self.cfg, &verify, state.row.as_ref(), read_at);
                if plan.reply == TxnReply::FenceValid {
                    // As when it lands at once: only a run-once section's write is the effect.
                    if run_once {
                        let _ = state.effects.try_push(Effect { writer, fence });
                    } else {
                        state.ghost.witnessed.insert(Witness::LockWriteAccepted);
                    }
                    state.ghost.stale_write_accepted |= superseded(fence, state.ghost.max_fence);
                    if let Some(record) = plan.write {
                        Self::commit_write(state, record, false);
                    }
                    state.ghost.witnessed.insert(Witness::LateLanded);
                }
            }
            Queued::Txn { .. } | Queued::FencedWrite { .. } => {}
        }
    }
}

impl Model for LeaseModel {
    type State = WorldState;
    type Action = Action;

    fn init_states(&self) -> Vec<WorldState> {
        let clients = (0..usize::from(self.options.clients)).map(|i| self.fresh_slot(i, 0, 0)).collect();
        let mut state = WorldState {
            now_ms: 0,
            row: None,
            clients,
            effects: ArrayVec::new(),
            faults_left: self.options.fault_budget,
            cancels_left: self.options.cancels,
            queued: None,
            ghost: WorldGhost::default(),
        };
        for slot in 0..state.clients.len() {
            self.start(&mut state, slot);
        }
        vec![state]
    }

    fn actions(&self, state: &WorldState, actions: &mut Vec<Action>) {
        // A need check answers, or its user cancels during it, before anything else happens: a longer check is
        // the same as the pause before the step that started it (the machine's deadline counts from the send).
        if let Some(c) = state.clients.iter().position(|c| c.op == Op::NeedCheck) {
            let c = c as u8;
            actions.push(Action::NeedAnswer(c));
            if state.cancels_left > 0 {
                actions.push(Action::Cancel(c));
            }
            return;
        }
        let faults = self.options.faults;
        let can_fault = state.faults_left > 0;
        if state.now_ms < self.options.max_time_ms {
            actions.push(Action::Tick);
        }
        if state.queued.is_some() {
            actions.push(Action::LateCommit);
        }
        for (i, client) in state.clients.iter().enumerate() {
            let c = i as u8;
            match &client.op {
                Op::Idle => {}
                Op::NeedCheck => {}
                Op::TxnRead { row_unchanged, clock_erred, .. } => {
                    actions.push(Action::TxnCommit(c, CommitFate::AsDecided));
                    // Erring after the read is the same as erring at it: nothing observed the time in between.
                    if faults.clock_error && can_fault && !clock_erred {
                        actions.push(Action::ClockError(c, ClockError::Early));
                        actions.push(Action::ClockError(c, ClockError::Late));
                    }
                    if *row_unchanged && can_fault {
                        if faults.abort {
                            actions.push(Action::TxnCommit(c, CommitFate::Aborted));
                        }
                        if faults.unknown {
                            actions.push(Action::TxnCommit(c, CommitFate::UnknownLanded));
                            actions.push(Action::TxnCommit(c, CommitFate::UnknownLost));
                        }
                        if faults.late && state.queued.is_none() {
                            actions.push(Action::TxnCommit(c, CommitFate::UnknownLate));
                        }
                    }
                }
            }
            if client.machine.poll_timeout().is_some_and(|at| at <= Self::local_now(state, i)) {
                actions.push(Action::Timeout(c));
            }
            match client.section {
                Section::Idle => {}
                Section::Started { .. } => {
                    actions.push(Action::SectionWrite(c, CommitFate::AsDecided));
                    if faults.unknown && can_fault {
                        actions.push(Action::SectionWrite(c, CommitFate::UnknownLanded));
                        actions.push(Action::SectionWrite(c, CommitFate::UnknownLost));
                    }
                    if faults.late && can_fault && state.queued.is_none() {
                        actions.push(Action::SectionWrite(c, CommitFate::UnknownLate));
                    }
                    if faults.section_failure && can_fault && client.kind == ClientKind::RunOnce {
                        actions.push(Action::SectionFail(c));
                    }
                }
                Section::Wrote | Section::Rejected => actions.push(Action::SectionReturn(c)),
            }
            let running = client.machine.outcome().is_none();
            if state.cancels_left > 0 && running && client.ghost.cancelled_in.is_none() {
                actions.push(Action::Cancel(c));
            }
            if faults.crash && can_fault && running {
                actions.push(Action::Crash(c));
            }
            // A clock never lags behind its start: a drift then would only stop it until server time caught up,
            // the same as the drift taken right after the tick that lets it.
            if faults.drift
                && can_fault
                && running
                && client.lag_ms < self.drift_share_ms()
                && client.lag_ms < state.now_ms
            {
                actions.push(Action::Drift(c));
            }
        }
    }

    fn next_state(&self, last: &WorldState, action: Action) -> Option<WorldState> {
        let mut state = last.clone();
        state.ghost.witnessed = Witnessed::default();
        self.step(&mut state, action)?;
        if let Some(tally) = &self.tally {
            let marks = std::mem::take(&mut state.ghost.witnessed).0;
            if marks != 0 {
                tally.fetch_or(marks, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut properties = properties::all(self);
        if self.tally.is_some() {
            properties.retain(|p| p.expectation == stateright::Expectation::Always);
        }
        properties
    }

    fn format_action(&self, action: &Action) -> String {
        action.to_string()
    }
}

impl LeaseModel {
    /// Takes `action` in `state`; `None` if it cannot be taken.
    fn step(&self, state: &mut WorldState, action: Action) -> Option<()> {
        match action {
            Action::Tick => state.now_ms += 1,
            Action::TxnCommit(c, fate) => {
                let slot = usize::from(c);
                let Op::TxnRead { request, row_unchanged, read_at, .. } =
                    std::mem::replace(&mut state.clients[slot].op, Op::Idle)
                else {
                    return None;
                };
                let conflict = !row_unchanged;
                let plan = txn::plan(&self.cfg, &request, state.row.as_ref(), read_at);
                let acquire = matches!(request, TxnRequest::Acquire { .. });
                if fate != CommitFate::AsDecided {
                    state.faults_left -= 1;
                }
                let applied = fate.unless_conflict(conflict);
                if applied == CommitFate::UnknownLate {
                    state.queued = Some(Queued::Txn { request: request.clone(), row_unchanged, read_at });
                }
                if applied.lands() {
                    if let Some(write) = plan.write {
                        Self::commit_write(state, write, acquire);
                    }
                    if matches!(plan.reply, TxnReply::Renewed { .. }) {
                        state.ghost.witnessed.insert(Witness::Renewed);
                    }
                }
                let ghost = &mut state.clients[slot].ghost;
                match fate {
                    CommitFate::UnknownLanded if acquire => ghost.unknown_landed = true,
                    CommitFate::UnknownLost if acquire => ghost.unknown_lost = true,
                    _ => {}
                }
                self.deliver(state, slot, applied.event(plan.reply));
            }
            Action::Timeout(c) => {
                let slot = usize::from(c);
                let now = Self::local_now(state, slot);
                let command = state.clients[slot].machine.handle_timeout(now);
                self.execute(state, slot, command, true);
            }
            Action::SectionWrite(c, fate) => {
                let slot = usize::from(c);
                let Section::Started { fence } = state.clients[slot].section else { return None };
                let client = state.clients[slot].machine.id();
                // The checked section makes one fenced write; a retry keeps its number.
                let verify = TxnRequest::VerifyFence { client, fence, write: 1 };
                let at = self.decision_time(state, slot);
                let plan = txn::plan(&self.cfg, &verify, state.row.as_ref(), at);
                if fate != CommitFate::AsDecided {
                    state.faults_left -= 1;
                }
                // Judged independently of the transaction logic: a fence is stale once a newer one was granted.
                let stale = superseded(fence, state.ghost.max_fence);
                let accepted = plan.reply == TxnReply::FenceValid;
                let run_once = state.clients[slot].kind == ClientKind::RunOnce;
                if fate == CommitFate::UnknownLate {
                    state.queued =
                        Some(Queued::FencedWrite { writer: client, fence, run_once, row_unchanged: true, read_at: at });
                }
                if accepted && fate.lands() && !run_once {
                    state.ghost.witnessed.insert(Witness::LockWriteAccepted);
                }
                if accepted && fate.lands() {
                    // A third effect is unreachable: the check stops at the second (a violation). A lock
                    // holder's write is not the run-once effect; only its fence is judged.
                    if run_once {
                        let _ = state.effects.try_push(Effect { writer: client, fence });
                    }
                    state.ghost.stale_write_accepted |= stale;
                    if let Some(record) = plan.write {
                        Self::commit_write(state, record, false);
                    }
                }
                let section = &mut state.clients[slot];
                match (fate, plan.reply) {
                    // Told nothing certain, the section retries the same write.
                    (
                        CommitFate::Aborted
                        | CommitFate::UnknownLanded
                        | CommitFate::UnknownLost
                        | CommitFate::UnknownLate,
                        _,
                    ) => {}
                    (CommitFate::AsDecided, TxnReply::FenceValid) => section.section = Section::Wrote,
                    (CommitFate::AsDecided, TxnReply::AlreadyApplied) => {
                        section.section = Section::Wrote;
                        state.ghost.witnessed.insert(Witness::FencedWriteResolved);
                    }
                    (CommitFate::AsDecided, _) => {
                        section.section = Section::Rejected;
                        if stale {
                            state.ghost.witnessed.insert(Witness::StaleWriteRejected);
                        }
                    }
                }
            }
            Action::SectionReturn(c) => {
                let slot = usize::from(c);
                let result = match state.clients[slot].section {
                    Section::Wrote => SectionResult::Completed,
                    Section::Rejected => SectionResult::Failed { error: "fenced write rejected".into() },
                    Section::Idle | Section::Started { .. } => return None,
                };
                state.clients[slot].section = Section::Idle;
                let event = if state.clients[slot].kind.is_lock_mode() {
                    Event::ReleaseRequested
                } else {
                    Event::SectionFinished(result)
                };
                self.deliver(state, slot, event);
            }
            Action::NeedAnswer(c) => {
                let slot = usize::from(c);
                if state.clients[slot].op != Op::NeedCheck {
                    return None;
                }
                state.clients[slot].op = Op::Idle;
                let needed = state.effects.is_empty();
                self.deliver(state, slot, Event::NeedAnswered { needed });
            }
            Action::Cancel(c) => {
                let slot = usize::from(c);
                state.cancels_left -= 1;
                let client = &mut state.clients[slot];
                client.ghost.cancelled_in = Some(client.machine.phase());
                // Dropping the run drops the user's need check and section with it; a transaction in flight
                // still answers the machine.
                if client.op == Op::NeedCheck {
                    client.op = Op::Idle;
                }
                client.section = Section::Idle;
                self.deliver(state, slot, Event::Cancel);
            }
            Action::SectionFail(c) => {
                let slot = usize::from(c);
                state.faults_left -= 1;
                state.clients[slot].section = Section::Idle;
                state.clients[slot].ghost.section_failed = true;
                self.deliver(state, slot, Event::SectionFinished(SectionResult::Failed { error: "boom".into() }));
            }
            Action::Crash(c) => {
                let slot = usize::from(c);
                state.faults_left -= 1;
                let old = &state.clients[slot];
                state.clients[slot] = self.fresh_slot(slot, old.incarnation + 1, old.lag_ms);
                self.start(state, slot);
            }
            Action::Drift(c) => {
                state.faults_left -= 1;
                state.clients[usize::from(c)].lag_ms += 1;
            }
            Action::LateCommit => {
                let queued = state.queued.take()?;
                self.land_late(state, queued);
            }
            Action::ClockError(c, error) => {
                let Op::TxnRead { read_at, clock_erred, .. } = &mut state.clients[usize::from(c)].op else {
                    return None;
                };
                let error_us = match error {
                    ClockError::Early => -1_000,
                    ClockError::Late => 1_000,
                };
                *read_at = ServerTime::from_unix_micros(read_at.unix_micros() + error_us);
                *clock_erred = true;
                state.faults_left -= 1;
                state.ghost.clock_erred = true;
            }
        }
        Some(())
    }
}
