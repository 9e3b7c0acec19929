//! The client machine, sans-IO in the style of quinn-proto: the driver feeds it [`Event`]s with the local
//! monotonic time, executes the [`Command`] each handler returns, and calls [`ClientMachine::handle_timeout`]
//! when [`ClientMachine::poll_timeout`] is due. Every lease decision lives here or in [`crate::txn`]; drivers,
//! the simulator and the model checker only execute.

use crate::txn::{Mode, Observation, ReleaseStatus, TxnReply, TxnRequest, observe};
use crate::{ClientId, Config, Fence, LeaseRow, LocalInstant, ServerTime, Status};
use serde::{Deserialize, Serialize};

/// How many times a release is re-sent after aborts or an unresolved unknown outcome before the machine stops
/// trying (the lease then simply expires).
pub const MAX_RELEASE_RESENDS: u8 = 3;

/// Why an operation failed for good (as opposed to aborted or unknown, which the machine retries or resolves).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Failure {
    /// Spanner did not answer within the driver's bound.
    Unavailable,
    /// Spanner refused the operation (missing table, permission, bad schema); retrying cannot help.
    Rejected,
    /// The user's need check failed.
    NeedCheck,
}

/// How a run ended. The driver turns some of these into errors.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// This client ran the section to completion under lease `fence`.
    Executed {
        /// The fence it held.
        fence: Fence,
    },
    /// The need check said there is nothing to do.
    NotNeeded,
    /// Someone else completed the section within the staleness window.
    DoneByOther {
        /// Who.
        holder: ClientId,
        /// With which fence.
        fence: Fence,
    },
    /// (Lock mode.) The lock was held and released.
    Released {
        /// The fence it held.
        fence: Fence,
    },
    /// The client waited and retried `attempts` times, more than `max_retries`.
    GaveUp {
        /// Attempts made.
        attempts: u32,
    },
    /// The section finished (or the lock was released) after another client had taken the lease over.
    LeaseLost {
        /// The fence that was lost.
        fence: Fence,
    },
    /// The run was cancelled and holds no lease: any it held or won was released (a release that could not be
    /// confirmed finishes `Failed` instead).
    Cancelled,
    /// An operation failed for good.
    Failed(Failure),
}

/// What the critical section reported.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SectionResult {
    /// It completed.
    Completed,
    /// It failed; the error is stored in the row.
    Failed {
        /// What went wrong.
        error: String,
    },
}

/// An input to the machine.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Event {
    /// The user's need check answered.
    NeedAnswered {
        /// Whether the section still needs to run.
        needed: bool,
    },
    /// The user's need check failed.
    NeedCheckFailed,
    /// The transaction committed with this reply.
    TxnCommitted(TxnReply),
    /// The transaction aborted; nothing was written.
    TxnAborted,
    /// The commit may or may not have happened (deadline, cancellation, connection lost).
    TxnOutcomeUnknown,
    /// The transaction failed for good; nothing was written.
    TxnFailed(Failure),
    /// A single-use read of the row returned.
    RowRead {
        /// The row, if it exists.
        row: Option<LeaseRow>,
        /// Spanner's time at the read.
        server_now: ServerTime,
    },
    /// The read failed for good.
    ReadFailed(Failure),
    /// The critical section returned.
    SectionFinished(SectionResult),
    /// (Lock mode.) The user released the lock; before the grant this is a cancel.
    ReleaseRequested,
    /// The user cancelled the run; a held lease is released first.
    Cancel,
}

/// An output of the machine: one I/O request or notification for the driver.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Command {
    /// Call the user's need check; answer with [`Event::NeedAnswered`] or [`Event::NeedCheckFailed`].
    CheckNeed,
    /// Run this read-write transaction through [`crate::txn::plan`]; answer with a `Txn*` event.
    RunTxn(TxnRequest),
    /// Read the row with a single-use read and Spanner's current time; answer with [`Event::RowRead`].
    ReadRow,
    /// Start the critical section; answer with [`Event::SectionFinished`].
    RunSection {
        /// The fence for the section's fenced writes.
        fence: Fence,
        /// The local deadline by which the lease is proven; renewals extend it.
        deadline: LocalInstant,
    },
    /// (Lock mode.) Hand the lock to the user; answer later with [`Event::ReleaseRequested`] or [`Event::Cancel`].
    Granted {
        /// The fence of the grant.
        fence: Fence,
        /// The local deadline by which the lease is proven.
        deadline: LocalInstant,
    },
    /// Tell the section (or lock holder) the lease can no longer be proven held.
    SignalLockLost {
        /// The lost fence.
        fence: Fence,
    },
    /// The run is over.
    Finish(Outcome),
}

/// An event arrived that the current state does not wait for: a driver bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("event {event} is not expected in state {state}")]
pub struct UnexpectedEvent {
    /// The machine's phase.
    pub state: Phase,
    /// The event.
    pub event: &'static str,
}

/// How long to wait after an acquisition aborted, `attempts` retries in: doubling from `wait_ms`, at most
/// `max_wait_ms`.
fn abort_backoff_ms(cfg: &Config, attempts: u32) -> u64 {
    cfg.wait_ms().saturating_mul(1 << attempts.min(16)).min(cfg.max_wait_ms())
}

/// The state of a renewal while the lease is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Renewal {
    Due { at: LocalInstant },
    InFlight { sent_at: LocalInstant },
    Stopped,
}

/// A lease the machine holds, as far as its local clock can prove it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Held {
    fence: Fence,
    deadline: LocalInstant,
    renewal: Renewal,
}

impl Held {
    /// A grant by a transaction sent at `sent_at`: the server's expiry is at least a TTL after `sent_at`.
    fn granted_at(cfg: &Config, fence: Fence, sent_at: LocalInstant) -> Self {
        let renewal = Renewal::Due { at: sent_at.plus_ms(cfg.renew_interval_ms()) };
        Self { fence, deadline: sent_at.plus_ms(cfg.local_lease_ms()), renewal }
    }

    /// A grant seen by a read sent at `read_sent_at` showing `remaining_ms` until expiry (rounded down): the
    /// expiry is at least that long after the send. Renewal is due as long before the deadline as usual.
    fn observed(cfg: &Config, fence: Fence, read_sent_at: LocalInstant, remaining_ms: u64) -> Self {
        let local_ms = remaining_ms.saturating_sub(cfg.safety_margin_ms());
        let renew_after_ms = local_ms.saturating_sub(cfg.local_lease_ms() - cfg.renew_interval_ms());
        Self {
            fence,
            deadline: read_sent_at.plus_ms(local_ms),
            renewal: Renewal::Due { at: read_sent_at.plus_ms(renew_after_ms) },
        }
    }
}

/// Why a holder releases, which fixes the status it writes and where the run goes next.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ReleaseReason {
    Completed,
    NotNeeded,
    Unlocked,
    /// The section failed; the run retries after the release unless the user `cancelled` meanwhile.
    SectionFailed {
        error: String,
        cancelled: bool,
    },
    Abandon(Outcome),
}

impl ReleaseReason {
    /// The reason once the user cancels: a failed section is not retried; every other reason already ends the
    /// run, and its outcome stays true (a completed section was executed).
    fn cancelled(self) -> Self {
        match self {
            Self::SectionFailed { error, .. } => Self::SectionFailed { error, cancelled: true },
            reason => reason,
        }
    }
}

/// What the release transaction established.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Released {
    Confirmed,
    NotHolder,
    Unconfirmed,
}

/// What a retry timer leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Retry {
    /// Read the row. A wake before `counted_at` (the busy lease's expiry as last read, bounded by
    /// `max_wait_ms`) is a poll, which is not a retry; the wake at or after it is one.
    Observe {
        counted_at: LocalInstant,
    },
    Acquire,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum State {
    NotStarted,
    AwaitingNeed,
    /// `cancelled`: the user cancelled while the acquisition was in flight; what it won is released.
    AwaitingAcquireCommit {
        sent_at: LocalInstant,
        cancelled: bool,
    },
    AwaitingAcquireResolution {
        read_sent_at: LocalInstant,
        cancelled: bool,
    },
    AwaitingRetryTimer {
        wake_at: LocalInstant,
        then: Retry,
    },
    /// `free_until`: this read is a poll before the counted wake-up, which a still busy row does not count.
    AwaitingObservation {
        free_until: Option<LocalInstant>,
    },
    AwaitingNeedWhileHolding {
        held: Held,
    },
    Holding {
        held: Held,
        lost: bool,
        finishing: Option<ReleaseReason>,
    },
    AwaitingReleaseCommit {
        fence: Fence,
        reason: ReleaseReason,
        resends_left: u8,
    },
    AwaitingReleaseResolution {
        fence: Fence,
        reason: ReleaseReason,
        resends_left: u8,
    },
    Finished(Outcome),
}

/// Which state a machine is in, without its data: what traces, drivers and checkers ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Not started.
    NotStarted,
    /// The need check runs (before any lease).
    AwaitingNeed,
    /// An acquisition is in flight.
    AwaitingAcquireCommit,
    /// An acquisition's outcome was unknown; the row is being read.
    AwaitingAcquireResolution,
    /// Sleeping until a poll, a retry or a re-acquisition.
    AwaitingRetryTimer,
    /// The row is being read (a poll or a counted retry).
    AwaitingObservation,
    /// The need check runs again under the lease.
    AwaitingNeedWhileHolding,
    /// The section runs (run-once) or the user holds the lock.
    Holding,
    /// A release is in flight.
    AwaitingReleaseCommit,
    /// A release's outcome was unknown; the row is being read.
    AwaitingReleaseResolution,
    /// The run is over.
    Finished,
}

impl Phase {
    /// Every phase, in declaration order.
    pub const ALL: [Self; 11] = [
        Self::NotStarted,
        Self::AwaitingNeed,
        Self::AwaitingAcquireCommit,
        Self::AwaitingAcquireResolution,
        Self::AwaitingRetryTimer,
        Self::AwaitingObservation,
        Self::AwaitingNeedWhileHolding,
        Self::Holding,
        Self::AwaitingReleaseCommit,
        Self::AwaitingReleaseResolution,
        Self::Finished,
    ];

    /// The phase's name, as traces print it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::NotStarted => "NotStarted",
            Self::AwaitingNeed => "AwaitingNeed",
            Self::AwaitingAcquireCommit => "AwaitingAcquireCommit",
            Self::AwaitingAcquireResolution => "AwaitingAcquireResolution",
            Self::AwaitingRetryTimer => "AwaitingRetryTimer",
            Self::AwaitingObservation => "AwaitingObservation",
            Self::AwaitingNeedWhileHolding => "AwaitingNeedWhileHolding",
            Self::Holding => "Holding",
            Self::AwaitingReleaseCommit => "AwaitingReleaseCommit",
            Self::AwaitingReleaseResolution => "AwaitingReleaseResolution",
            Self::Finished => "Finished",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl State {
    const fn phase(&self) -> Phase {
        match self {
            Self::NotStarted => Phase::NotStarted,
            Self::AwaitingNeed => Phase::AwaitingNeed,
            Self::AwaitingAcquireCommit { .. } => Phase::AwaitingAcquireCommit,
            Self::AwaitingAcquireResolution { .. } => Phase::AwaitingAcquireResolution,
            Self::AwaitingRetryTimer { .. } => Phase::AwaitingRetryTimer,
            Self::AwaitingObservation { .. } => Phase::AwaitingObservation,
            Self::AwaitingNeedWhileHolding { .. } => Phase::AwaitingNeedWhileHolding,
            Self::Holding { .. } => Phase::Holding,
            Self::AwaitingReleaseCommit { .. } => Phase::AwaitingReleaseCommit,
            Self::AwaitingReleaseResolution { .. } => Phase::AwaitingReleaseResolution,
            Self::Finished(_) => Phase::Finished,
        }
    }
}

impl Outcome {
    fn rename(&mut self, map: &impl crate::Rename) {
        match self {
            Self::Executed { fence } | Self::Released { fence } | Self::LeaseLost { fence } => {
                *fence = map.fence(*fence);
            }
            Self::DoneByOther { holder, fence } => {
                *holder = map.client(*holder);
                *fence = map.fence(*fence);
            }
            Self::NotNeeded | Self::GaveUp { .. } | Self::Cancelled | Self::Failed(_) => {}
        }
    }
}

impl ReleaseReason {
    fn rename(&mut self, map: &impl crate::Rename) {
        match self {
            Self::Abandon(outcome) => outcome.rename(map),
            Self::Completed | Self::NotNeeded | Self::Unlocked | Self::SectionFailed { .. } => {}
        }
    }
}

impl Held {
    fn rename(&mut self, map: &impl crate::Rename) {
        self.fence = map.fence(self.fence);
        self.deadline = map.instant(self.deadline);
        match &mut self.renewal {
            Renewal::Due { at } => *at = map.instant(*at),
            Renewal::InFlight { sent_at } => *sent_at = map.instant(*sent_at),
            Renewal::Stopped => {}
        }
    }
}

impl State {
    fn rename(&mut self, map: &impl crate::Rename) {
        match self {
            Self::AwaitingAcquireCommit { sent_at: at, .. }
            | Self::AwaitingAcquireResolution { read_sent_at: at, .. }
            | Self::AwaitingObservation { free_until: Some(at) } => *at = map.instant(*at),
            Self::AwaitingRetryTimer { wake_at, then } => {
                *wake_at = map.instant(*wake_at);
                match then {
                    Retry::Observe { counted_at } => *counted_at = map.instant(*counted_at),
                    Retry::Acquire => {}
                }
            }
            Self::AwaitingNeedWhileHolding { held } => held.rename(map),
            Self::Holding { held, finishing, .. } => {
                held.rename(map);
                if let Some(reason) = finishing {
                    reason.rename(map);
                }
            }
            Self::AwaitingReleaseCommit { fence, reason, .. }
            | Self::AwaitingReleaseResolution { fence, reason, .. } => {
                *fence = map.fence(*fence);
                reason.rename(map);
            }
            Self::Finished(outcome) => outcome.rename(map),
            Self::NotStarted | Self::AwaitingNeed | Self::AwaitingObservation { free_until: None } => {}
        }
    }
}

const fn event_name(event: &Event) -> &'static str {
    match event {
        Event::NeedAnswered { .. } => "NeedAnswered",
        Event::NeedCheckFailed => "NeedCheckFailed",
        Event::TxnCommitted(_) => "TxnCommitted",
        Event::TxnAborted => "TxnAborted",
        Event::TxnOutcomeUnknown => "TxnOutcomeUnknown",
        Event::TxnFailed(_) => "TxnFailed",
        Event::RowRead { .. } => "RowRead",
        Event::ReadFailed(_) => "ReadFailed",
        Event::SectionFinished(_) => "SectionFinished",
        Event::ReleaseRequested => "ReleaseRequested",
        Event::Cancel => "Cancel",
    }
}

/// Deterministic jitter (SplitMix64), seeded from the client id: no unseeded randomness in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Jitter(u64);

impl Jitter {
    fn next_ms(&mut self, bound_ms: u64) -> u64 {
        if bound_ms == 0 {
            return 0;
        }
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % (bound_ms + 1)
    }
}

/// The lease currently held, as the driver may show it to the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldLease {
    /// The fence.
    pub fence: Fence,
    /// The local deadline by which the lease is proven held.
    pub deadline: LocalInstant,
    /// Whether the lock-lost signal has been given.
    pub lost: bool,
}

/// One client's run of the protocol: a run-once section or one lock acquisition.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientMachine {
    id: ClientId,
    name: String,
    mode: Mode,
    max_retries: u32,
    attempts: u32,
    /// When Spanner was first reported unavailable with nothing answered since; bounds retrying it.
    unavailable_since: Option<LocalInstant>,
    jitter: Jitter,
    state: State,
}

impl ClientMachine {
    /// A run-once client; it waits and retries at most `cfg.max_retries()` times.
    pub fn run_once(id: ClientId, name: impl Into<String>, cfg: &Config) -> Self {
        Self::new(id, name.into(), Mode::RunOnce, cfg.max_retries())
    }

    /// A lock client; it waits and retries at most `max_retries` times (0: try once).
    pub fn lock(id: ClientId, name: impl Into<String>, max_retries: u32) -> Self {
        Self::new(id, name.into(), Mode::Lock, max_retries)
    }

    fn new(id: ClientId, name: String, mode: Mode, max_retries: u32) -> Self {
        let seed = id.uuid().as_u64_pair();
        Self {
            id,
            name,
            mode,
            max_retries,
            attempts: 0,
            unavailable_since: None,
            jitter: Jitter(seed.0 ^ seed.1),
            state: State::NotStarted,
        }
    }

    /// This client's id.
    pub const fn id(&self) -> ClientId {
        self.id
    }

    /// Run-once or lock.
    pub const fn mode(&self) -> Mode {
        self.mode
    }

    /// The current state, without its data.
    pub const fn phase(&self) -> Phase {
        self.state.phase()
    }

    /// Whether the machine is reading the row for a poll: a still busy row then leads to another wait that is
    /// not a retry (worlds that count retries independently ask this).
    pub const fn is_polling(&self) -> bool {
        matches!(self.state, State::AwaitingObservation { free_until: Some(_) })
    }

    /// Retries made so far.
    pub const fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The outcome, once finished.
    pub const fn outcome(&self) -> Option<&Outcome> {
        match &self.state {
            State::Finished(outcome) => Some(outcome),
            _ => None,
        }
    }

    /// The lease this client holds while its section runs or its lock is granted.
    pub const fn lease(&self) -> Option<HeldLease> {
        match &self.state {
            State::Holding { held, lost, .. } => {
                Some(HeldLease { fence: held.fence, deadline: held.deadline, lost: *lost })
            }
            _ => None,
        }
    }

    /// The fence this client may rely on at local time `now`: it is in a holding state, has not signalled lock
    /// loss, and (in the fenced protocol) its local deadline has not passed. The model checker's exclusivity
    /// property is stated in terms of this.
    pub fn relies_on_lease_at(&self, cfg: &Config, now: LocalInstant) -> Option<Fence> {
        let (held, lost) = match &self.state {
            State::AwaitingNeedWhileHolding { held } => (held, false),
            State::Holding { held, lost, .. } => (held, *lost),
            _ => return None,
        };
        let in_time = !cfg.protocol().keeps_deadline() || now < held.deadline;
        (!lost && in_time).then_some(held.fence)
    }

    /// Renames every client id, local instant and fence this machine holds (see [`crate::Rename`]). A renamed
    /// machine's jitter stream is reseeded from its new id, as if it had been built with it.
    pub fn rename(&mut self, map: &impl crate::Rename) {
        let renamed = map.client(self.id);
        if renamed != self.id {
            self.id = renamed;
            let seed = self.id.uuid().as_u64_pair();
            self.jitter = Jitter(seed.0 ^ seed.1);
        }
        if let Some(since) = &mut self.unavailable_since {
            *since = map.instant(*since);
        }
        self.state.rename(map);
    }

    /// Forgets retries no decision can tell apart, so that searches over the machine's states see them as one:
    /// with no retry limit (`max_retries` is `u32::MAX`), the count only sets the backoff after an abort, which
    /// reaches `max_wait_ms` after a few retries and stays there.
    pub fn forget_uncounted_attempts(&mut self, cfg: &Config) {
        if self.max_retries != u32::MAX {
            return;
        }
        let longest_ms = abort_backoff_ms(cfg, u32::MAX);
        let capped_at = (0..).find(|&attempts| abort_backoff_ms(cfg, attempts) == longest_ms).unwrap_or(u32::MAX);
        self.attempts = self.attempts.min(capped_at);
    }

    /// When the driver must call [`Self::handle_timeout`], if ever.
    pub fn poll_timeout(&self, cfg: &Config) -> Option<LocalInstant> {
        match &self.state {
            State::AwaitingRetryTimer { wake_at, .. } => Some(*wake_at),
            State::Holding { held, lost: false, .. } if cfg.protocol().keeps_deadline() => match held.renewal {
                Renewal::Due { at } => Some(at.min(held.deadline)),
                Renewal::InFlight { .. } | Renewal::Stopped => Some(held.deadline),
            },
            _ => None,
        }
    }

    /// Starts the run: a need check (run-once) or an acquisition (lock).
    pub fn start(&mut self, now: LocalInstant) -> Option<Command> {
        if self.state != State::NotStarted {
            return None;
        }
        match self.mode {
            Mode::RunOnce => {
                self.state = State::AwaitingNeed;
                Some(Command::CheckNeed)
            }
            Mode::Lock => self.send_acquire(now, false),
        }
    }

    /// Fires whatever timer is due at `now`: a retry wake-up, the local deadline (lock lost), or a renewal.
    pub fn handle_timeout(&mut self, cfg: &Config, now: LocalInstant) -> Option<Command> {
        match &mut self.state {
            State::AwaitingRetryTimer { wake_at, then } if now >= *wake_at => match *then {
                Retry::Observe { counted_at } => {
                    self.state = State::AwaitingObservation { free_until: (now < counted_at).then_some(counted_at) };
                    Some(Command::ReadRow)
                }
                Retry::Acquire => self.send_acquire(now, false),
            },
            State::Holding { held, lost, .. } if !*lost && cfg.protocol().keeps_deadline() => {
                if now >= held.deadline {
                    *lost = true;
                    if let Renewal::Due { .. } = held.renewal {
                        held.renewal = Renewal::Stopped;
                    }
                    return Some(Command::SignalLockLost { fence: held.fence });
                }
                match held.renewal {
                    Renewal::Due { at } if now >= at => {
                        held.renewal = Renewal::InFlight { sent_at: now };
                        Some(Command::RunTxn(TxnRequest::Renew { client: self.id, fence: held.fence }))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Feeds one event at local time `now` and returns the command it leads to.
    pub fn handle(
        &mut self,
        cfg: &Config,
        now: LocalInstant,
        event: Event,
    ) -> Result<Option<Command>, UnexpectedEvent> {
        // A release asked for before the lock is granted (or after it ended) can only mean "stop": a cancel.
        let event = match event {
            Event::ReleaseRequested if !matches!(self.state, State::Holding { .. }) => Event::Cancel,
            event => event,
        };
        let unexpected = UnexpectedEvent { state: self.state.phase(), event: event_name(&event) };
        match &event {
            Event::TxnCommitted(_) | Event::TxnAborted | Event::RowRead { .. } => self.unavailable_since = None,
            Event::TxnFailed(Failure::Unavailable) | Event::ReadFailed(Failure::Unavailable) => {
                self.unavailable_since.get_or_insert(now);
            }
            _ => {}
        }
        let state = std::mem::replace(&mut self.state, State::NotStarted);
        let command = match (state, event) {
            (State::Finished(outcome), _) => {
                self.state = State::Finished(outcome);
                None
            }
            // Waiting to acquire again: an earlier acquisition whose outcome was never learned (or a grant whose
            // deadline ran out under the need check) may have left a lease of ours on the row. Read it, and
            // release what it shows (the resolution path acts on the cancel).
            (State::AwaitingRetryTimer { then: Retry::Acquire, .. }, Event::Cancel) => {
                self.state = State::AwaitingAcquireResolution { read_sent_at: now, cancelled: true };
                Some(Command::ReadRow)
            }
            (
                State::NotStarted
                | State::AwaitingNeed
                | State::AwaitingRetryTimer { then: Retry::Observe { .. }, .. }
                | State::AwaitingObservation { .. },
                Event::Cancel,
            ) => self.finish(Outcome::Cancelled),
            // Under the lease, the need check's answer cannot change what a cancel means: release now and
            // leave the check unanswered (the driver drops it).
            #[cfg(any(test, feature = "bug-injection"))]
            (state @ State::AwaitingNeedWhileHolding { .. }, Event::Cancel)
                if cfg.protocol() == crate::Protocol::LeakOnCancelInNeedCheck =>
            {
                self.state = state;
                None
            }
            (State::AwaitingNeedWhileHolding { held }, Event::Cancel) => {
                self.send_release(held.fence, ReleaseReason::Abandon(Outcome::Cancelled), MAX_RELEASE_RESENDS)
            }
            // An operation is in flight whose answer decides what there is to release (or the section already
            // finished and its release waits for a renewal): remember the cancel in the state and act on the answer.
            (State::AwaitingAcquireCommit { sent_at, .. }, Event::Cancel) => {
                self.state = State::AwaitingAcquireCommit { sent_at, cancelled: true };
                None
            }
            (State::AwaitingAcquireResolution { read_sent_at, .. }, Event::Cancel) => {
                self.state = State::AwaitingAcquireResolution { read_sent_at, cancelled: true };
                None
            }
            (State::Holding { held, lost, finishing: Some(reason) }, Event::Cancel) => {
                self.state = State::Holding { held, lost, finishing: Some(reason.cancelled()) };
                None
            }
            (State::AwaitingReleaseCommit { fence, reason, resends_left }, Event::Cancel) => {
                self.state = State::AwaitingReleaseCommit { fence, reason: reason.cancelled(), resends_left };
                None
            }
            (State::AwaitingReleaseResolution { fence, reason, resends_left }, Event::Cancel) => {
                self.state = State::AwaitingReleaseResolution { fence, reason: reason.cancelled(), resends_left };
                None
            }

            (State::AwaitingNeed, Event::NeedAnswered { needed: false }) => self.finish(Outcome::NotNeeded),
            (State::AwaitingNeed, Event::NeedAnswered { needed: true }) => self.send_acquire(now, false),
            (State::AwaitingNeed, Event::NeedCheckFailed) => self.finish(Outcome::Failed(Failure::NeedCheck)),

            (State::AwaitingAcquireCommit { sent_at, cancelled }, Event::TxnCommitted(reply)) => match reply {
                // This transaction wrote expires_at = (server time after sent_at) + ttl.
                TxnReply::Acquired { fence, .. } => {
                    self.on_acquired(cfg, fence, Held::granted_at(cfg, fence, sent_at), cancelled)
                }
                TxnReply::Busy { holder, fence, expires_at, server_now } => {
                    let busy = Observation::Busy { holder, fence, expires_at, server_now };
                    self.act_on(cfg, now, busy, false, cancelled)
                }
                TxnReply::DoneByOther { holder, fence } => self.finish(Outcome::DoneByOther { holder, fence }),
                TxnReply::Renewed { .. }
                | TxnReply::Released
                | TxnReply::FenceValid
                | TxnReply::AlreadyApplied
                | TxnReply::NotHolder => {
                    self.state = State::AwaitingAcquireCommit { sent_at, cancelled };
                    return Err(unexpected);
                }
            },
            // Cancelled: this attempt wrote nothing, but an earlier one of ours (a grant that ran out under the
            // need check, an unknown outcome) may still hold the row. Read it and release what it shows.
            (State::AwaitingAcquireCommit { cancelled: true, .. }, Event::TxnAborted) => {
                self.state = State::AwaitingAcquireResolution { read_sent_at: now, cancelled: true };
                Some(Command::ReadRow)
            }
            (State::AwaitingAcquireCommit { cancelled: false, .. }, Event::TxnAborted) => {
                self.retry_after(cfg, now, abort_backoff_ms(cfg, self.attempts), false)
            }
            (State::AwaitingAcquireCommit { cancelled, .. }, Event::TxnOutcomeUnknown) => {
                self.state = State::AwaitingAcquireResolution { read_sent_at: now, cancelled };
                Some(Command::ReadRow)
            }
            (
                state @ (State::AwaitingAcquireCommit { .. }
                | State::AwaitingAcquireResolution { .. }
                | State::AwaitingObservation { .. }),
                Event::TxnFailed(failure) | Event::ReadFailed(failure),
            ) => {
                let cancelled = match state {
                    State::AwaitingAcquireCommit { cancelled, .. }
                    | State::AwaitingAcquireResolution { cancelled, .. } => cancelled,
                    _ => false,
                };
                if cancelled {
                    // What an earlier attempt of this run left on the row cannot be learned now, and "cancelled"
                    // promises no lease is held: report the failure; such a lease ends by its TTL.
                    self.finish(Outcome::Failed(failure))
                } else if failure == Failure::Unavailable && self.may_retry_unavailable(cfg, now) {
                    // Not an attempt: nobody was seen holding the lease. An acquisition is re-entrant, so
                    // retrying it also resolves an unknown one.
                    if matches!(state, State::AwaitingObservation { .. }) {
                        self.wait_on_busy(cfg, now, cfg.wait_ms(), None)
                    } else {
                        self.wait_then_acquire(cfg, now, cfg.wait_ms())
                    }
                } else {
                    self.finish(Outcome::Failed(failure))
                }
            }
            (State::AwaitingAcquireResolution { read_sent_at, cancelled }, Event::RowRead { row, server_now }) => {
                match row {
                    // Only a row naming this client proves it holds the lease; nothing is assumed. The row may have
                    // been written by an earlier acquisition of ours, so the deadline comes from the expiry it shows,
                    // not from when the unknown transaction was sent.
                    Some(r) if r.status == Status::Started && r.holder == self.id && server_now < r.expires_at => {
                        let remaining_ms = server_now.ms_until_floor(r.expires_at);
                        self.on_acquired(
                            cfg,
                            r.fence,
                            Held::observed(cfg, r.fence, read_sent_at, remaining_ms),
                            cancelled,
                        )
                    }
                    row => {
                        let observation = observe(cfg, self.mode, self.id, row.as_ref(), server_now);
                        self.act_on(cfg, now, observation, true, cancelled)
                    }
                }
            }
            (State::AwaitingObservation { free_until }, Event::RowRead { row, server_now }) => {
                match (observe(cfg, self.mode, self.id, row.as_ref(), server_now), free_until) {
                    // A poll that finds the lease still busy: poll on, towards the same counted wake-up.
                    (Observation::Busy { expires_at, server_now, .. }, Some(counted_at)) => {
                        let remaining_ms = server_now.ms_until_ceil(expires_at).min(cfg.max_wait_ms());
                        self.wait_on_busy(cfg, now, remaining_ms, Some(counted_at))
                    }
                    (observation, _) => self.act_on(cfg, now, observation, false, false),
                }
            }

            (State::AwaitingNeedWhileHolding { held }, Event::NeedAnswered { needed }) => {
                if !needed {
                    self.send_release(held.fence, ReleaseReason::NotNeeded, MAX_RELEASE_RESENDS)
                } else if cfg.protocol().keeps_deadline() && now >= held.deadline {
                    // The grant ran out during the need check: acquire again (re-entrant if still ours).
                    self.retry_after(cfg, now, 0, false)
                } else {
                    self.state = State::Holding { held, lost: false, finishing: None };
                    Some(Command::RunSection { fence: held.fence, deadline: held.deadline })
                }
            }
            (State::AwaitingNeedWhileHolding { held }, Event::NeedCheckFailed) => self.send_release(
                held.fence,
                ReleaseReason::Abandon(Outcome::Failed(Failure::NeedCheck)),
                MAX_RELEASE_RESENDS,
            ),

            (
                State::Holding { mut held, mut lost, mut finishing },
                event @ (Event::TxnCommitted(_) | Event::TxnAborted | Event::TxnOutcomeUnknown | Event::TxnFailed(_)),
            ) => {
                let Renewal::InFlight { sent_at } = held.renewal else {
                    self.state = State::Holding { held, lost, finishing };
                    return Err(unexpected);
                };
                let mut signal = None;
                held.renewal = match event {
                    Event::TxnCommitted(TxnReply::Renewed { .. }) if !lost => {
                        held.deadline = held.deadline.max(sent_at.plus_ms(cfg.local_lease_ms()));
                        Renewal::Due { at: sent_at.plus_ms(cfg.renew_interval_ms()) }
                    }
                    Event::TxnCommitted(TxnReply::NotHolder) => {
                        if !lost {
                            lost = true;
                            signal = Some(Command::SignalLockLost { fence: held.fence });
                        }
                        Renewal::Stopped
                    }
                    // Aborted, unknown or unavailable: try again after a short wait (not at once: a store failing
                    // fast would be hammered); the deadline bounds the attempts.
                    Event::TxnAborted | Event::TxnOutcomeUnknown | Event::TxnFailed(Failure::Unavailable) if !lost => {
                        Renewal::Due { at: now.plus_ms(cfg.wait_ms().min(cfg.renew_interval_ms())) }
                    }
                    Event::TxnCommitted(TxnReply::Renewed { .. })
                    | Event::TxnAborted
                    | Event::TxnOutcomeUnknown
                    | Event::TxnFailed(_) => Renewal::Stopped,
                    Event::TxnCommitted(_) => {
                        held.renewal = Renewal::InFlight { sent_at };
                        self.state = State::Holding { held, lost, finishing };
                        return Err(unexpected);
                    }
                    _ => unreachable!("matched above"),
                };
                match finishing.take() {
                    // The section is already over: no one is left to signal; release now.
                    Some(reason) => self.send_release(held.fence, reason, MAX_RELEASE_RESENDS),
                    None => {
                        self.state = State::Holding { held, lost, finishing };
                        signal
                    }
                }
            }
            (
                State::Holding { held, lost, finishing: None },
                event @ (Event::SectionFinished(_) | Event::ReleaseRequested | Event::Cancel),
            ) => {
                let reason = match (self.mode, event) {
                    (Mode::RunOnce, Event::SectionFinished(SectionResult::Completed)) => ReleaseReason::Completed,
                    (Mode::RunOnce, Event::SectionFinished(SectionResult::Failed { error })) => {
                        ReleaseReason::SectionFailed { error, cancelled: false }
                    }
                    (Mode::Lock, Event::ReleaseRequested) => ReleaseReason::Unlocked,
                    (_, Event::Cancel) => ReleaseReason::Abandon(Outcome::Cancelled),
                    _ => {
                        self.state = State::Holding { held, lost, finishing: None };
                        return Err(unexpected);
                    }
                };
                if let Renewal::InFlight { .. } = held.renewal {
                    self.state = State::Holding { held, lost, finishing: Some(reason) };
                    None
                } else {
                    self.send_release(held.fence, reason, MAX_RELEASE_RESENDS)
                }
            }

            (
                State::AwaitingReleaseCommit { fence, reason, resends_left },
                event @ (Event::TxnCommitted(_) | Event::TxnAborted | Event::TxnOutcomeUnknown | Event::TxnFailed(_)),
            ) => match event {
                Event::TxnCommitted(TxnReply::Released) => {
                    self.after_release(cfg, now, fence, reason, Released::Confirmed)
                }
                Event::TxnCommitted(TxnReply::NotHolder) => {
                    self.after_release(cfg, now, fence, reason, Released::NotHolder)
                }
                Event::TxnAborted if resends_left > 0 => self.send_release(fence, reason, resends_left - 1),
                Event::TxnOutcomeUnknown => {
                    self.state = State::AwaitingReleaseResolution { fence, reason, resends_left };
                    Some(Command::ReadRow)
                }
                Event::TxnAborted | Event::TxnFailed(_) => {
                    self.after_release(cfg, now, fence, reason, Released::Unconfirmed)
                }
                _ => {
                    self.state = State::AwaitingReleaseCommit { fence, reason, resends_left };
                    return Err(unexpected);
                }
            },
            (State::AwaitingReleaseResolution { fence, reason, resends_left }, Event::RowRead { row, .. }) => match row
            {
                Some(r) if r.holder == self.id && r.fence == fence => {
                    if r.status != Status::Started {
                        self.after_release(cfg, now, fence, reason, Released::Confirmed)
                    } else if resends_left > 0 {
                        self.send_release(fence, reason, resends_left - 1)
                    } else {
                        self.after_release(cfg, now, fence, reason, Released::Unconfirmed)
                    }
                }
                _ => self.after_release(cfg, now, fence, reason, Released::NotHolder),
            },
            (State::AwaitingReleaseResolution { fence, reason, .. }, Event::ReadFailed(_)) => {
                self.after_release(cfg, now, fence, reason, Released::Unconfirmed)
            }

            (state, _) => {
                self.state = state;
                return Err(unexpected);
            }
        };
        Ok(command)
    }

    fn finish(&mut self, outcome: Outcome) -> Option<Command> {
        self.state = State::Finished(outcome.clone());
        Some(Command::Finish(outcome))
    }

    fn send_acquire(&mut self, now: LocalInstant, cancelled: bool) -> Option<Command> {
        if cancelled {
            return self.finish(Outcome::Cancelled);
        }
        self.state = State::AwaitingAcquireCommit { sent_at: now, cancelled: false };
        Some(Command::RunTxn(TxnRequest::Acquire { client: self.id, holder_name: self.name.clone(), mode: self.mode }))
    }

    /// Counts one retry, gives up past the limit, else sleeps `wait_ms` plus jitter.
    fn retry_after(&mut self, cfg: &Config, now: LocalInstant, wait_ms: u64, cancelled: bool) -> Option<Command> {
        self.attempts = self.attempts.saturating_add(1);
        if let Some(end) = self.end_of_retries(cancelled) {
            return end;
        }
        self.wait_then_acquire(cfg, now, wait_ms)
    }

    /// After counting a retry: finishes if cancelled or past `max_retries`.
    fn end_of_retries(&mut self, cancelled: bool) -> Option<Option<Command>> {
        if cancelled {
            return Some(self.finish(Outcome::Cancelled));
        }
        if self.attempts > self.max_retries {
            return Some(self.finish(Outcome::GaveUp { attempts: self.attempts }));
        }
        None
    }

    /// Whether a retry sent after the usual wait would still fall inside the unavailability budget.
    fn may_retry_unavailable(&self, cfg: &Config, now: LocalInstant) -> bool {
        self.unavailable_since.is_some_and(|since| now.plus_ms(cfg.wait_ms()) < since.plus_ms(cfg.unavailable_ms()))
    }

    /// Sleeps until `wait_ms` plus jitter from now (at the latest `counted_at`, the wake-up already counted as a
    /// retry), polling every `poll_ms` plus jitter before that; then reads the row.
    fn wait_on_busy(
        &mut self,
        cfg: &Config,
        now: LocalInstant,
        wait_ms: u64,
        counted_at: Option<LocalInstant>,
    ) -> Option<Command> {
        let jitter_ms = self.jitter.next_ms(cfg.jitter_ms());
        let due = now.plus_ms(wait_ms.saturating_add(jitter_ms));
        let counted_at = counted_at.map_or(due, |c| c.max(now));
        let wake_at = due.min(counted_at).min(now.plus_ms(cfg.poll_ms().saturating_add(jitter_ms)));
        self.state = State::AwaitingRetryTimer { wake_at, then: Retry::Observe { counted_at } };
        None
    }

    /// Sleeps `wait_ms` plus jitter, then acquires.
    fn wait_then_acquire(&mut self, cfg: &Config, now: LocalInstant, wait_ms: u64) -> Option<Command> {
        let wake_at = now.plus_ms(wait_ms.saturating_add(self.jitter.next_ms(cfg.jitter_ms())));
        self.state = State::AwaitingRetryTimer { wake_at, then: Retry::Acquire };
        None
    }

    /// Acts on what a read (or a transaction that wrote nothing) showed. `after_unknown`: the read resolved an
    /// unknown commit that did not land, which counts as a retry even when the row is free. `cancelled`: the
    /// user cancelled meanwhile, so nothing more is tried.
    fn act_on(
        &mut self,
        cfg: &Config,
        now: LocalInstant,
        observation: Observation,
        after_unknown: bool,
        cancelled: bool,
    ) -> Option<Command> {
        match observation {
            Observation::Acquirable { .. } if after_unknown => self.retry_after(cfg, now, 0, cancelled),
            Observation::Acquirable { .. } => self.send_acquire(now, cancelled),
            // One retry per wait until the server-side expiry (bounded by max_wait_ms); polls come between.
            Observation::Busy { expires_at, server_now, .. } => {
                self.attempts = self.attempts.saturating_add(1);
                if let Some(end) = self.end_of_retries(cancelled) {
                    return end;
                }
                self.wait_on_busy(cfg, now, server_now.ms_until_ceil(expires_at).min(cfg.max_wait_ms()), None)
            }
            Observation::DoneByOther { holder, fence } => self.finish(Outcome::DoneByOther { holder, fence }),
        }
    }

    fn on_acquired(&mut self, cfg: &Config, fence: Fence, held: Held, cancelled: bool) -> Option<Command> {
        if cancelled {
            return self.send_release(fence, ReleaseReason::Abandon(Outcome::Cancelled), MAX_RELEASE_RESENDS);
        }
        let held = if cfg.protocol().keeps_deadline() { held } else { Held { renewal: Renewal::Stopped, ..held } };
        match self.mode {
            Mode::RunOnce => {
                // Checked again under the lease: a previous holder may have completed the effect and crashed
                // before recording DONE.
                self.state = State::AwaitingNeedWhileHolding { held };
                Some(Command::CheckNeed)
            }
            Mode::Lock => {
                self.state = State::Holding { held, lost: false, finishing: None };
                Some(Command::Granted { fence, deadline: held.deadline })
            }
        }
    }

    fn send_release(&mut self, fence: Fence, reason: ReleaseReason, resends_left: u8) -> Option<Command> {
        let status = match (&reason, self.mode) {
            (ReleaseReason::SectionFailed { error, .. }, _) => ReleaseStatus::Failed { error: error.clone() },
            (ReleaseReason::Abandon(outcome), Mode::RunOnce) => ReleaseStatus::Failed { error: format!("{outcome:?}") },
            _ => ReleaseStatus::Done,
        };
        self.state = State::AwaitingReleaseCommit { fence, reason, resends_left };
        Some(Command::RunTxn(TxnRequest::Release { client: self.id, fence, status }))
    }

    fn after_release(
        &mut self,
        cfg: &Config,
        now: LocalInstant,
        fence: Fence,
        reason: ReleaseReason,
        released: Released,
    ) -> Option<Command> {
        let lost = released == Released::NotHolder;
        match reason {
            // Not confirmed: the row may still name us until it expires, so the user must not hear "cancelled".
            ReleaseReason::Abandon(Outcome::Cancelled) | ReleaseReason::SectionFailed { cancelled: true, .. }
                if released == Released::Unconfirmed =>
            {
                self.finish(Outcome::Failed(Failure::Unavailable))
            }
            ReleaseReason::Completed if lost => self.finish(Outcome::LeaseLost { fence }),
            ReleaseReason::Completed => self.finish(Outcome::Executed { fence }),
            ReleaseReason::Unlocked if lost => self.finish(Outcome::LeaseLost { fence }),
            // Not confirmed: the row may still name us until it expires, so the user must not hear "released".
            ReleaseReason::Unlocked if released == Released::Unconfirmed => {
                self.finish(Outcome::Failed(Failure::Unavailable))
            }
            ReleaseReason::Unlocked => self.finish(Outcome::Released { fence }),
            ReleaseReason::NotNeeded => self.finish(Outcome::NotNeeded),
            ReleaseReason::SectionFailed { cancelled, .. } => self.retry_after(cfg, now, cfg.wait_ms(), cancelled),
            ReleaseReason::Abandon(outcome) => self.finish(outcome),
        }
    }
}
