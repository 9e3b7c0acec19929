//! The client machine, sans-IO in the style of quinn-proto: the driver feeds it [`Event`]s with the local
//! monotonic time, executes the [`Command`] each handler returns, and calls [`ClientMachine::handle_timeout`]
//! when [`ClientMachine::poll_timeout`] is due. Every lease decision lives here or in [`crate::txn`]; drivers,
//! the simulator and the model checker only execute.

use crate::txn::{Mode, Observation, ReleaseStatus, TxnReply, TxnRequest, observe, released_by};
use crate::{ClientId, Config, Fence, LeaseRow, LocalInstant, ServerTime, Status};
use serde::{Deserialize, Serialize};

mod state;

pub use state::Phase;
use state::{Held, ReleaseReason, Renewal, Retry, State};

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

impl Failure {
    /// The failure in words.
    pub const fn words(self) -> &'static str {
        match self {
            Self::Unavailable => "Spanner unavailable",
            Self::Rejected => "Spanner refused",
            Self::NeedCheck => "the need check failed",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.words())
    }
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

impl Outcome {
    /// The outcome in words, naming a client by `who` (each tool labels its clients its own way).
    pub fn words(&self, who: impl Fn(ClientId) -> String) -> String {
        match self {
            Self::Executed { fence } => format!("executed with {fence}"),
            Self::NotNeeded => "not needed".to_owned(),
            Self::DoneByOther { holder, fence } => format!("done by {} with {fence}", who(*holder)),
            Self::Released { fence } => format!("released {fence}"),
            Self::GaveUp { attempts } => format!("gave up after {attempts} attempts"),
            Self::LeaseLost { fence } => format!("lost the lease of {fence}"),
            Self::Cancelled => "cancelled".to_owned(),
            Self::Failed(failure) => format!("failed: {failure}"),
        }
    }
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
    /// A fenced write of this run's lease got an answer from Spanner (committed, refused or failed for good): the
    /// unavailability clock stops. No state waits for it; every state takes it.
    FencedWriteAnswered,
    /// A fenced write of this run's lease, sent at `sent_at`, got no answer (a timeout, an unknown outcome,
    /// Spanner unavailable): the unavailability clock starts then, if it is not running. No state waits for it;
    /// every state takes it.
    FencedWriteUnanswered {
        /// When the write's unanswered attempt was sent, on the machine's clock.
        sent_at: LocalInstant,
    },
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

/// What a FAILED row says of a run that gave its lease up before its section finished: people read it
/// (`spanner-mutex status`), and the next run retries at once.
const fn abandoned_because(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Cancelled => "Cancelled",
        Outcome::Failed(Failure::NeedCheck) => "the need check failed under the lease",
        Outcome::Failed(failure) => failure.words(),
        // Not reasons to give a lease up; said plainly should one ever be.
        Outcome::Executed { .. }
        | Outcome::NotNeeded
        | Outcome::DoneByOther { .. }
        | Outcome::Released { .. }
        | Outcome::GaveUp { .. }
        | Outcome::LeaseLost { .. } => "abandoned",
    }
}

/// How long to wait after an acquisition aborted, `attempts` retries in: doubling from `wait_ms`, at most
/// `max_wait_ms`.
fn abort_backoff_ms(cfg: &Config, attempts: u32) -> u64 {
    cfg.wait_ms().saturating_mul(1 << attempts.min(16)).min(cfg.max_wait_ms())
}

/// Whether a call sent at `at` falls inside the unavailability budget of a client whose calls have gone
/// unanswered since `since`: the one rule for every retry of a run, its fenced writes' included.
pub fn within_unavailability_budget(cfg: &Config, since: Option<LocalInstant>, at: LocalInstant) -> bool {
    since.is_some_and(|since| at < since.plus_ms(cfg.unavailable_ms()))
}

/// Whether a fenced write whose attempt sent at `sent_at` got no answer may be sent again at `next_at`: only
/// inside the run's unavailability budget, counted from the first unanswered call of the run (`run_since`, the
/// machine's [`ClientMachine::unavailable_since`], which an answer to any call resets) or this attempt, whichever
/// came first. (`write_since`, when the write's first attempt went unanswered, is read only by a re-inserted bug
/// that gives each write a budget of its own.)
pub fn may_retry_fenced_write(
    cfg: &Config,
    run_since: Option<LocalInstant>,
    sent_at: LocalInstant,
    write_since: Option<LocalInstant>,
    next_at: LocalInstant,
) -> bool {
    let since = if cfg.protocol().fenced_retry_shares_clock() {
        run_since.map_or(sent_at, |run_since| run_since.min(sent_at))
    } else {
        write_since.map_or(sent_at, |write_since| write_since.min(sent_at))
    };
    within_unavailability_budget(cfg, Some(since), next_at)
}

/// What the release transaction established.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Released {
    Confirmed,
    NotHolder,
    Unconfirmed,
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
        Event::FencedWriteAnswered => "FencedWriteAnswered",
        Event::FencedWriteUnanswered { .. } => "FencedWriteUnanswered",
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
    /// When a call of this run first got no answer (an unknown outcome, a timeout, Spanner unavailable) with
    /// nothing answered since: every call of the run, fenced writes included, retries only within
    /// `unavailable_ms` of it.
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
        matches!(self.state, State::AwaitingPoll { .. })
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
        match self.state.holding() {
            Some((held, lost)) => Some(HeldLease { fence: held.fence, deadline: held.deadline, lost }),
            None => None,
        }
    }

    /// The fence this client may rely on at local time `now`: it is in a holding state, has not signalled lock
    /// loss, and (in the fenced protocol) its local deadline has not passed. The model checker's exclusivity
    /// property is stated in terms of this.
    pub fn relies_on_lease_at(&self, now: LocalInstant) -> Option<Fence> {
        let held = match (&self.state, self.state.holding()) {
            (State::AwaitingNeedWhileHolding { held }, _) | (_, Some((held, false))) => held,
            _ => return None,
        };
        held.proven_at(now).then_some(held.fence)
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
    pub fn poll_timeout(&self) -> Option<LocalInstant> {
        match &self.state {
            State::AwaitingRetryTimer { wake_at, .. } => Some(*wake_at),
            State::Holding { held } | State::AwaitingRenewalToRelease { held, .. } => held.next_timer(),
            State::NotStarted
            | State::AwaitingNeed
            | State::AwaitingAcquireCommit { .. }
            | State::AwaitingAcquireResolution { .. }
            | State::CancelledAwaitingAcquireCommit { .. }
            | State::CancelledAwaitingAcquireResolution { .. }
            | State::AwaitingPoll { .. }
            | State::AwaitingObservation
            | State::AwaitingNeedWhileHolding { .. }
            | State::HoldingLost { .. }
            | State::AwaitingRenewalToReleaseLost { .. }
            | State::AwaitingReleaseCommit { .. }
            | State::AwaitingReleaseResolution { .. }
            | State::Finished(_) => None,
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
            Mode::Lock => self.send_acquire(now),
        }
    }

    /// Fires whatever timer is due at `now`: a retry wake-up, the local deadline (lock lost), or a renewal.
    pub fn handle_timeout(&mut self, cfg: &Config, now: LocalInstant) -> Option<Command> {
        let state = std::mem::replace(&mut self.state, State::NotStarted);
        match state {
            // Woken late (a paused process) with Spanner still silent: the budget decides, not the wake-up.
            State::AwaitingRetryTimer { wake_at, .. }
                if now >= wake_at
                    && self.unavailable_since.is_some()
                    && !within_unavailability_budget(cfg, self.unavailable_since, now) =>
            {
                self.finish(Outcome::Failed(Failure::Unavailable))
            }
            State::AwaitingRetryTimer { wake_at, then } if now >= wake_at => match then {
                Retry::Observe { counted_at } if now < counted_at => {
                    self.state = State::AwaitingPoll { counted_at };
                    Some(Command::ReadRow)
                }
                Retry::Observe { .. } => {
                    self.state = State::AwaitingObservation;
                    Some(Command::ReadRow)
                }
                Retry::Acquire => self.send_acquire(now),
            },
            State::Holding { mut held } if !held.proven_at(now) => {
                if let Renewal::Due { .. } = held.renewal {
                    held.renewal = Renewal::Stopped;
                }
                self.state = State::HoldingLost { held };
                Some(Command::SignalLockLost { fence: held.fence })
            }
            State::Holding { mut held } => match held.renewal {
                Renewal::Due { at } if now >= at => {
                    held.renewal = Renewal::InFlight { sent_at: now };
                    self.state = State::Holding { held };
                    Some(Command::RunTxn(TxnRequest::Renew { client: self.id, fence: held.fence }))
                }
                Renewal::Due { .. } | Renewal::InFlight { .. } | Renewal::Stopped => {
                    self.state = State::Holding { held };
                    None
                }
                #[cfg(any(test, feature = "variants"))]
                Renewal::Trusted => {
                    self.state = State::Holding { held };
                    None
                }
            },
            State::AwaitingRenewalToRelease { held, reason } if !held.proven_at(now) => {
                self.state = State::AwaitingRenewalToReleaseLost { held, reason };
                Some(Command::SignalLockLost { fence: held.fence })
            }
            state => {
                self.state = state;
                None
            }
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
            Event::ReleaseRequested if self.state.holding().is_none() => Event::Cancel,
            event => event,
        };
        let unexpected = UnexpectedEvent { state: self.state.phase(), event: event_name(&event) };
        match &event {
            Event::TxnCommitted(_) | Event::TxnAborted | Event::RowRead { .. } | Event::FencedWriteAnswered => {
                self.unavailable_since = None;
            }
            // With no budget there is nothing to time (and the model checker's states stay as few).
            Event::TxnOutcomeUnknown | Event::FencedWriteUnanswered { .. } if cfg.unavailable_ms() == 0 => {}
            Event::TxnOutcomeUnknown | Event::FencedWriteUnanswered { .. }
                if !cfg.protocol().unknown_starts_clock() => {}
            // The clock runs from the unanswered call's send where it is known, else from now.
            Event::TxnFailed(Failure::Unavailable)
            | Event::ReadFailed(Failure::Unavailable)
            | Event::TxnOutcomeUnknown => {
                let sent_at = self.state.call_sent_at().unwrap_or(now).min(now);
                self.unavailable_since = Some(self.unavailable_since.map_or(sent_at, |since| since.min(sent_at)));
            }
            Event::FencedWriteUnanswered { sent_at } => {
                let sent_at = (*sent_at).min(now);
                self.unavailable_since = Some(self.unavailable_since.map_or(sent_at, |since| since.min(sent_at)));
            }
            _ => {}
        }
        if matches!(event, Event::FencedWriteAnswered | Event::FencedWriteUnanswered { .. }) {
            return Ok(None);
        }
        let state = std::mem::replace(&mut self.state, State::NotStarted);
        let step = match state {
            State::Finished(outcome) => {
                self.state = State::Finished(outcome);
                Ok(None)
            }
            State::NotStarted => self.on_cancel_before_lease(State::NotStarted, event),
            State::AwaitingNeed => self.on_need(now, event),
            State::AwaitingAcquireCommit { sent_at } => self.on_acquire_answer(cfg, now, sent_at, event),
            State::CancelledAwaitingAcquireCommit { sent_at } => self.on_cancelled_acquire_answer(now, sent_at, event),
            State::AwaitingAcquireResolution { read_sent_at } => {
                self.on_acquire_resolution(cfg, now, read_sent_at, event)
            }
            State::CancelledAwaitingAcquireResolution { read_sent_at } => {
                self.on_cancelled_acquire_resolution(cfg, now, read_sent_at, event)
            }
            State::AwaitingRetryTimer { wake_at, then: Retry::Acquire } => match event {
                // An earlier acquisition whose outcome was never learned (or a grant whose deadline ran out under
                // the need check) may have left a lease of ours on the row: read it and release what it shows.
                Event::Cancel => {
                    self.state = State::CancelledAwaitingAcquireResolution { read_sent_at: now };
                    Ok(Some(Command::ReadRow))
                }
                _ => self.unexpected(State::AwaitingRetryTimer { wake_at, then: Retry::Acquire }),
            },
            state @ State::AwaitingRetryTimer { then: Retry::Observe { .. }, .. } => {
                self.on_cancel_before_lease(state, event)
            }
            State::AwaitingPoll { counted_at } => self.on_observation(cfg, now, Some(counted_at), event),
            State::AwaitingObservation => self.on_observation(cfg, now, None, event),
            State::AwaitingNeedWhileHolding { held } => self.on_need_under_lease(cfg, now, held, event),
            State::Holding { held } => self.on_holding(cfg, now, held, false, event),
            State::HoldingLost { held } => self.on_holding(cfg, now, held, true, event),
            State::AwaitingRenewalToRelease { held, reason } => {
                self.on_renewal_to_release(now, held, reason, false, event)
            }
            State::AwaitingRenewalToReleaseLost { held, reason } => {
                self.on_renewal_to_release(now, held, reason, true, event)
            }
            State::AwaitingReleaseCommit { sent_at, fence, reason, resends_left } => {
                self.on_release_answer(cfg, now, sent_at, fence, reason, resends_left, event)
            }
            State::AwaitingReleaseResolution { fence, reason, resends_left } => {
                self.on_release_resolution(cfg, now, fence, reason, resends_left, event)
            }
        };
        step.map_err(|Unexpected| unexpected)
    }

    /// Puts `state` back and reports the event as unexpected in it.
    fn unexpected(&mut self, state: State) -> Step {
        self.state = state;
        Err(Unexpected)
    }

    /// Before any lease (not started, checking the need, waiting on a busy lease, reading it): only a cancel is
    /// expected, and it ends the run at once.
    fn on_cancel_before_lease(&mut self, state: State, event: Event) -> Step {
        match event {
            Event::Cancel => Ok(self.finish(Outcome::Cancelled)),
            _ => self.unexpected(state),
        }
    }

    fn on_need(&mut self, now: LocalInstant, event: Event) -> Step {
        match event {
            Event::NeedAnswered { needed: false } => Ok(self.finish(Outcome::NotNeeded)),
            Event::NeedAnswered { needed: true } => Ok(self.send_acquire(now)),
            Event::NeedCheckFailed => Ok(self.finish(Outcome::Failed(Failure::NeedCheck))),
            event => self.on_cancel_before_lease(State::AwaitingNeed, event),
        }
    }

    fn on_acquire_answer(&mut self, cfg: &Config, now: LocalInstant, sent_at: LocalInstant, event: Event) -> Step {
        match event {
            // This transaction wrote expires_at = (server time after sent_at) + ttl.
            Event::TxnCommitted(TxnReply::Acquired { fence, .. }) => {
                Ok(self.on_acquired(fence, Held::granted_at(cfg, fence, sent_at)))
            }
            Event::TxnCommitted(TxnReply::Busy { holder, fence, expires_at, server_now }) => {
                Ok(self.act_on(cfg, now, Observation::Busy { holder, fence, expires_at, server_now }, false))
            }
            Event::TxnCommitted(TxnReply::DoneByOther { holder, fence }) => {
                Ok(self.finish(Outcome::DoneByOther { holder, fence }))
            }
            Event::TxnAborted => Ok(self.retry_after(cfg, now, abort_backoff_ms(cfg, self.attempts))),
            Event::TxnOutcomeUnknown => {
                self.state = State::AwaitingAcquireResolution { read_sent_at: now };
                Ok(Some(Command::ReadRow))
            }
            Event::TxnFailed(failure) | Event::ReadFailed(failure) => Ok(self.on_failure(cfg, now, failure)),
            // What it wins is released once its answer shows it.
            Event::Cancel => {
                self.state = State::CancelledAwaitingAcquireCommit { sent_at };
                Ok(None)
            }
            _ => self.unexpected(State::AwaitingAcquireCommit { sent_at }),
        }
    }

    fn on_cancelled_acquire_answer(&mut self, now: LocalInstant, sent_at: LocalInstant, event: Event) -> Step {
        match event {
            Event::TxnCommitted(TxnReply::Acquired { fence, .. }) => Ok(self.release_cancelled(now, fence)),
            Event::TxnCommitted(TxnReply::Busy { holder, fence, expires_at, server_now }) => {
                Ok(self.finish_cancelled_on(Observation::Busy { holder, fence, expires_at, server_now }))
            }
            Event::TxnCommitted(TxnReply::DoneByOther { holder, fence }) => {
                Ok(self.finish(Outcome::DoneByOther { holder, fence }))
            }
            // This attempt wrote nothing (or may have), but an earlier one of ours (a grant that ran out under the
            // need check, an unknown outcome) may still hold the row. Read it and release what it shows.
            Event::TxnAborted | Event::TxnOutcomeUnknown => {
                self.state = State::CancelledAwaitingAcquireResolution { read_sent_at: now };
                Ok(Some(Command::ReadRow))
            }
            // Cancelled: what an earlier attempt left on the row cannot be learned now; such a lease ends by its TTL.
            Event::TxnFailed(failure) | Event::ReadFailed(failure) => Ok(self.finish(Outcome::Failed(failure))),
            Event::Cancel => {
                self.state = State::CancelledAwaitingAcquireCommit { sent_at };
                Ok(None)
            }
            _ => self.unexpected(State::CancelledAwaitingAcquireCommit { sent_at }),
        }
    }

    /// Only a row naming this client, started and unexpired, proves it holds the lease; nothing is assumed. The
    /// row may have been written by an earlier acquisition of ours, so the deadline comes from the expiry it shows,
    /// not from when the unknown transaction was sent.
    fn ours_in_read(
        &self,
        cfg: &Config,
        read_sent_at: LocalInstant,
        row: Option<&LeaseRow>,
        server_now: ServerTime,
    ) -> Option<Held> {
        let r = row?;
        (r.status == Status::Started && r.holder == self.id && server_now < r.expires_at)
            .then(|| Held::observed(cfg, r.fence, read_sent_at, server_now.ms_until_floor(r.expires_at)))
    }

    fn on_acquire_resolution(
        &mut self,
        cfg: &Config,
        now: LocalInstant,
        read_sent_at: LocalInstant,
        event: Event,
    ) -> Step {
        match event {
            Event::RowRead { row, server_now } => {
                match self.ours_in_read(cfg, read_sent_at, row.as_ref(), server_now) {
                    Some(held) => Ok(self.on_acquired(held.fence, held)),
                    None => {
                        let observation = observe(cfg, self.mode, self.id, row.as_ref(), server_now);
                        Ok(self.act_on(cfg, now, observation, true))
                    }
                }
            }
            Event::TxnFailed(failure) | Event::ReadFailed(failure) => Ok(self.on_failure(cfg, now, failure)),
            Event::Cancel => {
                self.state = State::CancelledAwaitingAcquireResolution { read_sent_at };
                Ok(None)
            }
            _ => self.unexpected(State::AwaitingAcquireResolution { read_sent_at }),
        }
    }

    fn on_cancelled_acquire_resolution(
        &mut self,
        cfg: &Config,
        now: LocalInstant,
        read_sent_at: LocalInstant,
        event: Event,
    ) -> Step {
        match event {
            Event::RowRead { row, server_now } => {
                match self.ours_in_read(cfg, read_sent_at, row.as_ref(), server_now) {
                    Some(held) => Ok(self.release_cancelled(now, held.fence)),
                    None => Ok(self.finish_cancelled_on(observe(cfg, self.mode, self.id, row.as_ref(), server_now))),
                }
            }
            // What an earlier attempt of this run left on the row cannot be learned now, and "cancelled" promises
            // no lease is held: report the failure; such a lease ends by its TTL.
            Event::TxnFailed(failure) | Event::ReadFailed(failure) => Ok(self.finish(Outcome::Failed(failure))),
            Event::Cancel => {
                self.state = State::CancelledAwaitingAcquireResolution { read_sent_at };
                Ok(None)
            }
            _ => self.unexpected(State::CancelledAwaitingAcquireResolution { read_sent_at }),
        }
    }

    /// A read of the row: `poll_until` is the counted wake-up when this read is a poll before it.
    fn on_observation(
        &mut self,
        cfg: &Config,
        now: LocalInstant,
        poll_until: Option<LocalInstant>,
        event: Event,
    ) -> Step {
        match event {
            Event::RowRead { row, server_now } => {
                match (observe(cfg, self.mode, self.id, row.as_ref(), server_now), poll_until) {
                    // A poll that finds the lease still busy: poll on, towards the same counted wake-up.
                    (Observation::Busy { expires_at, server_now, .. }, Some(counted_at)) => {
                        let remaining_ms = server_now.ms_until_ceil(expires_at).min(cfg.max_wait_ms());
                        Ok(self.wait_on_busy(cfg, now, remaining_ms, Some(counted_at)))
                    }
                    (observation, _) => Ok(self.act_on(cfg, now, observation, false)),
                }
            }
            Event::TxnFailed(failure) | Event::ReadFailed(failure) => {
                if failure == Failure::Unavailable && self.may_retry_unavailable(cfg, now) {
                    Ok(self.wait_on_busy(cfg, now, cfg.wait_ms(), None))
                } else {
                    Ok(self.finish(Outcome::Failed(failure)))
                }
            }
            event => {
                let state = match poll_until {
                    Some(counted_at) => State::AwaitingPoll { counted_at },
                    None => State::AwaitingObservation,
                };
                self.on_cancel_before_lease(state, event)
            }
        }
    }

    /// An acquisition (or the read resolving it) failed for good. Unavailability is retried within its budget:
    /// not as an attempt, since nobody was seen holding the lease; an acquisition is re-entrant, so retrying it
    /// also resolves an unknown one.
    fn on_failure(&mut self, cfg: &Config, now: LocalInstant, failure: Failure) -> Option<Command> {
        if failure == Failure::Unavailable && self.may_retry_unavailable(cfg, now) {
            self.wait_then_acquire(cfg, now, cfg.wait_ms())
        } else {
            self.finish(Outcome::Failed(failure))
        }
    }

    fn on_need_under_lease(&mut self, cfg: &Config, now: LocalInstant, held: Held, event: Event) -> Step {
        match event {
            Event::NeedAnswered { needed: false } => {
                Ok(self.send_release(now, held.fence, ReleaseReason::NotNeeded, MAX_RELEASE_RESENDS))
            }
            // The grant ran out during the need check: acquire again (re-entrant if still ours).
            Event::NeedAnswered { needed: true } if !held.proven_at(now) => Ok(self.retry_after(cfg, now, 0)),
            Event::NeedAnswered { needed: true } => {
                self.state = State::Holding { held };
                Ok(Some(Command::RunSection { fence: held.fence, deadline: held.deadline }))
            }
            Event::NeedCheckFailed => Ok(self.send_release(
                now,
                held.fence,
                ReleaseReason::Abandon(Outcome::Failed(Failure::NeedCheck)),
                MAX_RELEASE_RESENDS,
            )),
            #[cfg(any(test, feature = "variants"))]
            Event::Cancel if cfg.protocol() == crate::Protocol::LeakOnCancelInNeedCheck => {
                self.state = State::AwaitingNeedWhileHolding { held };
                Ok(None)
            }
            // Under the lease, the need check's answer cannot change what a cancel means: release now and leave
            // the check unanswered (the driver drops it).
            Event::Cancel => Ok(self.release_cancelled(now, held.fence)),
            _ => self.unexpected(State::AwaitingNeedWhileHolding { held }),
        }
    }

    /// The section runs or the lock is held (`lost`: after the lock-lost signal): a renewal answers, or the user
    /// is done.
    fn on_holding(&mut self, cfg: &Config, now: LocalInstant, mut held: Held, lost: bool, event: Event) -> Step {
        let holding = |held| if lost { State::HoldingLost { held } } else { State::Holding { held } };
        let reason = match (self.mode, event) {
            (Mode::RunOnce, Event::SectionFinished(SectionResult::Completed)) => ReleaseReason::Completed,
            (Mode::RunOnce, Event::SectionFinished(SectionResult::Failed { error })) => {
                ReleaseReason::SectionFailed { error }
            }
            (Mode::Lock, Event::ReleaseRequested) => ReleaseReason::Unlocked,
            (_, Event::Cancel) => ReleaseReason::Abandon(Outcome::Cancelled),
            (_, event) => {
                let Renewal::InFlight { sent_at } = held.renewal else { return self.unexpected(holding(held)) };
                let Some(answer) = RenewalAnswer::of(&event) else { return self.unexpected(holding(held)) };
                held.renewal = Renewal::Stopped;
                if lost {
                    self.state = State::HoldingLost { held };
                    return Ok(None);
                }
                return Ok(self.on_renewal_answer(cfg, now, held, sent_at, answer));
            }
        };
        // One transaction at a time: a renewal in flight answers before the release is sent.
        if let Renewal::InFlight { .. } = held.renewal {
            self.state = if lost {
                State::AwaitingRenewalToReleaseLost { held, reason }
            } else {
                State::AwaitingRenewalToRelease { held, reason }
            };
            Ok(None)
        } else {
            Ok(self.send_release(now, held.fence, reason, MAX_RELEASE_RESENDS))
        }
    }

    /// A renewal sent at `sent_at` answered while the lease is proven.
    fn on_renewal_answer(
        &mut self,
        cfg: &Config,
        now: LocalInstant,
        mut held: Held,
        sent_at: LocalInstant,
        answer: RenewalAnswer,
    ) -> Option<Command> {
        match answer {
            RenewalAnswer::Renewed => {
                held.deadline = held.deadline.max(sent_at.plus_ms(cfg.local_lease_ms()));
                held.renewal = Renewal::Due { at: sent_at.plus_ms(cfg.renew_interval_ms()) };
            }
            RenewalAnswer::NotHolder => {
                self.state = State::HoldingLost { held };
                return Some(Command::SignalLockLost { fence: held.fence });
            }
            // Try again after a short wait (not at once: a store failing fast would be hammered); the deadline
            // bounds the attempts.
            RenewalAnswer::Retry => {
                held.renewal = Renewal::Due { at: now.plus_ms(cfg.wait_ms().min(cfg.renew_interval_ms())) };
            }
            RenewalAnswer::Failed => {}
        }
        self.state = State::Holding { held };
        None
    }

    /// The section is already over: whatever the renewal answers, no one is left to signal; release now.
    fn on_renewal_to_release(
        &mut self,
        now: LocalInstant,
        held: Held,
        reason: ReleaseReason,
        lost: bool,
        event: Event,
    ) -> Step {
        match (event, reason) {
            (Event::Cancel, reason) => {
                let reason = reason.cancelled();
                self.state = if lost {
                    State::AwaitingRenewalToReleaseLost { held, reason }
                } else {
                    State::AwaitingRenewalToRelease { held, reason }
                };
                Ok(None)
            }
            (event, reason) if RenewalAnswer::of(&event).is_some() => {
                Ok(self.send_release(now, held.fence, reason, MAX_RELEASE_RESENDS))
            }
            (_, reason) if lost => self.unexpected(State::AwaitingRenewalToReleaseLost { held, reason }),
            (_, reason) => self.unexpected(State::AwaitingRenewalToRelease { held, reason }),
        }
    }

    #[allow(clippy::too_many_arguments, reason = "the state's four fields, the event, and the time it came at")]
    fn on_release_answer(
        &mut self,
        cfg: &Config,
        now: LocalInstant,
        sent_at: LocalInstant,
        fence: Fence,
        reason: ReleaseReason,
        resends_left: u8,
        event: Event,
    ) -> Step {
        match event {
            Event::TxnCommitted(TxnReply::Released) => {
                Ok(self.after_release(cfg, now, fence, reason, Released::Confirmed))
            }
            Event::TxnCommitted(TxnReply::NotHolder) => {
                Ok(self.after_release(cfg, now, fence, reason, Released::NotHolder))
            }
            Event::TxnAborted if resends_left > 0 => Ok(self.send_release(now, fence, reason, resends_left - 1)),
            Event::TxnOutcomeUnknown => {
                self.state = State::AwaitingReleaseResolution { fence, reason, resends_left };
                Ok(Some(Command::ReadRow))
            }
            Event::TxnAborted | Event::TxnFailed(_) => {
                Ok(self.after_release(cfg, now, fence, reason, Released::Unconfirmed))
            }
            Event::Cancel => {
                self.state = State::AwaitingReleaseCommit { sent_at, fence, reason: reason.cancelled(), resends_left };
                Ok(None)
            }
            _ => self.unexpected(State::AwaitingReleaseCommit { sent_at, fence, reason, resends_left }),
        }
    }

    fn on_release_resolution(
        &mut self,
        cfg: &Config,
        now: LocalInstant,
        fence: Fence,
        reason: ReleaseReason,
        resends_left: u8,
        event: Event,
    ) -> Step {
        let released = match event {
            Event::RowRead { row: Some(r), .. } if r.holder == self.id && r.fence == fence => {
                if released_by(&r, self.id, fence) {
                    Released::Confirmed
                } else if r.status != Status::Started {
                    // An operator's forced release ended the lease: this client lost it.
                    Released::NotHolder
                } else if resends_left > 0 {
                    return Ok(self.send_release(now, fence, reason, resends_left - 1));
                } else {
                    Released::Unconfirmed
                }
            }
            Event::RowRead { .. } => Released::NotHolder,
            Event::ReadFailed(_) => Released::Unconfirmed,
            Event::Cancel => {
                self.state = State::AwaitingReleaseResolution { fence, reason: reason.cancelled(), resends_left };
                return Ok(None);
            }
            _ => return self.unexpected(State::AwaitingReleaseResolution { fence, reason, resends_left }),
        };
        Ok(self.after_release(cfg, now, fence, reason, released))
    }

    fn finish(&mut self, outcome: Outcome) -> Option<Command> {
        self.state = State::Finished(outcome.clone());
        Some(Command::Finish(outcome))
    }

    fn send_acquire(&mut self, now: LocalInstant) -> Option<Command> {
        self.state = State::AwaitingAcquireCommit { sent_at: now };
        Some(Command::RunTxn(TxnRequest::Acquire { client: self.id, holder_name: self.name.clone(), mode: self.mode }))
    }

    /// Counts one retry and gives up past the limit; otherwise goes on with `then`.
    fn count_retry(&mut self, then: impl FnOnce(&mut Self) -> Option<Command>) -> Option<Command> {
        self.attempts = self.attempts.saturating_add(1);
        if self.attempts > self.max_retries {
            return self.finish(Outcome::GaveUp { attempts: self.attempts });
        }
        then(self)
    }

    /// Counts one retry, gives up past the limit, else sleeps `wait_ms` plus jitter and acquires.
    fn retry_after(&mut self, cfg: &Config, now: LocalInstant, wait_ms: u64) -> Option<Command> {
        self.count_retry(|machine| machine.wait_then_acquire(cfg, now, wait_ms))
    }

    /// Whether a retry sent after the usual wait would still fall inside the unavailability budget.
    fn may_retry_unavailable(&self, cfg: &Config, now: LocalInstant) -> bool {
        within_unavailability_budget(cfg, self.unavailable_since, now.plus_ms(cfg.wait_ms()))
    }

    /// When a call of this run first got no answer, with nothing answered since (see
    /// [`within_unavailability_budget`]).
    pub const fn unavailable_since(&self) -> Option<LocalInstant> {
        self.unavailable_since
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
    /// unknown commit that did not land, which counts as a retry even when the row is free.
    fn act_on(
        &mut self,
        cfg: &Config,
        now: LocalInstant,
        observation: Observation,
        after_unknown: bool,
    ) -> Option<Command> {
        match observation {
            Observation::Acquirable { .. } if after_unknown => self.retry_after(cfg, now, 0),
            Observation::Acquirable { .. } => self.send_acquire(now),
            // One retry per wait until the server-side expiry (bounded by max_wait_ms); polls come between.
            Observation::Busy { expires_at, server_now, .. } => {
                let wait_ms = server_now.ms_until_ceil(expires_at).min(cfg.max_wait_ms());
                self.count_retry(|machine| machine.wait_on_busy(cfg, now, wait_ms, None))
            }
            Observation::DoneByOther { holder, fence } => self.finish(Outcome::DoneByOther { holder, fence }),
        }
    }

    /// A cancelled acquisition learned it holds nothing of this run's: the run ends cancelled, the attempt counted
    /// as a retry like any other; unless someone else completed the section meanwhile.
    fn finish_cancelled_on(&mut self, observation: Observation) -> Option<Command> {
        match observation {
            Observation::DoneByOther { holder, fence } => self.finish(Outcome::DoneByOther { holder, fence }),
            Observation::Acquirable { .. } | Observation::Busy { .. } => {
                self.attempts = self.attempts.saturating_add(1);
                self.finish(Outcome::Cancelled)
            }
        }
    }

    fn on_acquired(&mut self, fence: Fence, held: Held) -> Option<Command> {
        match self.mode {
            Mode::RunOnce => {
                // Checked again under the lease: a previous holder may have completed the effect and crashed
                // before recording DONE.
                self.state = State::AwaitingNeedWhileHolding { held };
                Some(Command::CheckNeed)
            }
            Mode::Lock => {
                self.state = State::Holding { held };
                Some(Command::Granted { fence, deadline: held.deadline })
            }
        }
    }

    fn release_cancelled(&mut self, now: LocalInstant, fence: Fence) -> Option<Command> {
        self.send_release(now, fence, ReleaseReason::Abandon(Outcome::Cancelled), MAX_RELEASE_RESENDS)
    }

    fn send_release(
        &mut self,
        now: LocalInstant,
        fence: Fence,
        reason: ReleaseReason,
        resends_left: u8,
    ) -> Option<Command> {
        let status = match (&reason, self.mode) {
            (ReleaseReason::SectionFailed { error } | ReleaseReason::SectionFailedThenCancelled { error }, _) => {
                ReleaseStatus::Failed { error: error.clone() }
            }
            (ReleaseReason::Abandon(outcome), Mode::RunOnce) => {
                ReleaseStatus::Failed { error: abandoned_because(outcome).to_owned() }
            }
            _ => ReleaseStatus::Done,
        };
        self.state = State::AwaitingReleaseCommit { sent_at: now, fence, reason, resends_left };
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
            ReleaseReason::Abandon(Outcome::Cancelled) | ReleaseReason::SectionFailedThenCancelled { .. }
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
            // Spanner has not answered for the whole budget: another attempt would outlast the promised bound.
            ReleaseReason::SectionFailed { .. }
                if released == Released::Unconfirmed
                    && self.unavailable_since.is_some()
                    && !self.may_retry_unavailable(cfg, now) =>
            {
                self.finish(Outcome::Failed(Failure::Unavailable))
            }
            ReleaseReason::SectionFailed { .. } => self.retry_after(cfg, now, cfg.wait_ms()),
            ReleaseReason::SectionFailedThenCancelled { .. } => {
                self.attempts = self.attempts.saturating_add(1);
                self.finish(Outcome::Cancelled)
            }
            ReleaseReason::Abandon(outcome) => self.finish(outcome),
        }
    }
}

/// A handler's answer: the command, or the event was not expected in the state (which is left unchanged).
type Step = Result<Option<Command>, Unexpected>;

/// The event was not expected; [`ClientMachine::handle`] adds which state and event.
struct Unexpected;

/// What a renewal's answer says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RenewalAnswer {
    Renewed,
    /// The row names another holder or fence.
    NotHolder,
    /// Aborted, unknown or unavailable: worth another try while the deadline allows.
    Retry,
    /// Refused for good.
    Failed,
}

impl RenewalAnswer {
    /// The answer an event gives to a renewal in flight, if it is one.
    const fn of(event: &Event) -> Option<Self> {
        match event {
            Event::TxnCommitted(TxnReply::Renewed { .. }) => Some(Self::Renewed),
            Event::TxnCommitted(TxnReply::NotHolder) => Some(Self::NotHolder),
            Event::TxnAborted | Event::TxnOutcomeUnknown | Event::TxnFailed(Failure::Unavailable) => Some(Self::Retry),
            Event::TxnFailed(_) => Some(Self::Failed),
            _ => None,
        }
    }
}
