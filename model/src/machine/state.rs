//! The machine's states and the data they carry. Each state names what it waits for; cancelling, a lost lease
//! and a section that ended during a renewal are states of their own, not flags on another state.

use crate::{Config, Fence, LocalInstant};
use serde::{Deserialize, Serialize};

use super::Outcome;

/// The state of a renewal while the lease is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Renewal {
    Due {
        at: LocalInstant,
    },
    InFlight {
        sent_at: LocalInstant,
    },
    Stopped,
    /// (The naive protocol only.) The grant is trusted without a deadline: never renewed, never lost.
    #[cfg(any(test, feature = "variants"))]
    Trusted,
}

/// A lease the machine holds, as far as its local clock can prove it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Held {
    pub(super) fence: Fence,
    pub(super) deadline: LocalInstant,
    pub(super) renewal: Renewal,
}

impl Held {
    /// A grant by a transaction sent at `sent_at`: the server's expiry is at least a TTL after `sent_at`.
    pub(super) fn granted_at(cfg: &Config, fence: Fence, sent_at: LocalInstant) -> Self {
        let renewal = Renewal::Due { at: sent_at.plus_ms(cfg.renew_interval_ms()) };
        Self { fence, deadline: sent_at.plus_ms(cfg.local_lease_ms()), renewal }.in_variant(cfg)
    }

    /// A grant seen by a read sent at `read_sent_at` showing `remaining_ms` until expiry (rounded down): the
    /// expiry is at least that long after the send. Renewal is due as long before the deadline as usual.
    pub(super) fn observed(cfg: &Config, fence: Fence, read_sent_at: LocalInstant, remaining_ms: u64) -> Self {
        let local_ms = remaining_ms.saturating_sub(cfg.safety_margin_ms());
        let renew_after_ms = local_ms.saturating_sub(cfg.local_lease_ms() - cfg.renew_interval_ms());
        let renewal = Renewal::Due { at: read_sent_at.plus_ms(renew_after_ms) };
        Self { fence, deadline: read_sent_at.plus_ms(local_ms), renewal }.in_variant(cfg)
    }

    /// The naive protocol keeps no deadline: its grants are trusted as long as the section runs.
    #[cfg(any(test, feature = "variants"))]
    fn in_variant(self, cfg: &Config) -> Self {
        if cfg.protocol().keeps_deadline() { self } else { Self { renewal: Renewal::Trusted, ..self } }
    }

    /// Users run the fenced protocol only: every grant has its deadline.
    #[cfg(not(any(test, feature = "variants")))]
    const fn in_variant(self, _cfg: &Config) -> Self {
        self
    }

    /// Whether the lease is still proven at `now`.
    pub(super) fn proven_at(&self, now: LocalInstant) -> bool {
        #[cfg(any(test, feature = "variants"))]
        if self.renewal == Renewal::Trusted {
            return true;
        }
        now < self.deadline
    }

    /// When a timer of this lease is due: the renewal or the deadline, whichever is first.
    pub(super) fn next_timer(&self) -> Option<LocalInstant> {
        match self.renewal {
            Renewal::Due { at } => Some(at.min(self.deadline)),
            Renewal::InFlight { .. } | Renewal::Stopped => Some(self.deadline),
            #[cfg(any(test, feature = "variants"))]
            Renewal::Trusted => None,
        }
    }
}

/// Why a holder releases, which fixes the status it writes and where the run goes next.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum ReleaseReason {
    Completed,
    NotNeeded,
    Unlocked,
    /// The section failed; the run retries after the release.
    SectionFailed {
        error: String,
    },
    /// The section failed and the user cancelled before its release was confirmed: no retry.
    SectionFailedThenCancelled {
        error: String,
    },
    Abandon(Outcome),
}

impl ReleaseReason {
    /// The reason once the user cancels: a failed section is not retried; every other reason already ends the
    /// run, and its outcome stays true (a completed section was executed).
    pub(super) fn cancelled(self) -> Self {
        match self {
            Self::SectionFailed { error } => Self::SectionFailedThenCancelled { error },
            reason @ (Self::Completed
            | Self::NotNeeded
            | Self::Unlocked
            | Self::SectionFailedThenCancelled { .. }
            | Self::Abandon(_)) => reason,
        }
    }
}

/// What a retry timer leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Retry {
    /// Read the row. A wake before `counted_at` (the busy lease's expiry as last read, bounded by
    /// `max_wait_ms`) is a poll, which is not a retry; the wake at or after it is one.
    Observe {
        counted_at: LocalInstant,
    },
    Acquire,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum State {
    NotStarted,
    AwaitingNeed,
    AwaitingAcquireCommit {
        sent_at: LocalInstant,
    },
    AwaitingAcquireResolution {
        read_sent_at: LocalInstant,
    },
    /// The user cancelled while an acquisition was in flight: what it won is released, nothing more is tried.
    CancelledAwaitingAcquireCommit {
        sent_at: LocalInstant,
    },
    /// The user cancelled: the row is read to release a lease an earlier attempt of this run may have left.
    CancelledAwaitingAcquireResolution {
        read_sent_at: LocalInstant,
    },
    AwaitingRetryTimer {
        wake_at: LocalInstant,
        then: Retry,
    },
    /// A poll before the wake-up counted as a retry (`counted_at`): a still busy row does not count.
    AwaitingPoll {
        counted_at: LocalInstant,
    },
    /// A counted read of the row.
    AwaitingObservation,
    AwaitingNeedWhileHolding {
        held: Held,
    },
    /// The section runs (run-once) or the user holds the lock, and the lease is proven.
    Holding {
        held: Held,
    },
    /// The lock-lost signal was given; the section (or lock holder) has not returned yet.
    HoldingLost {
        held: Held,
    },
    /// The section returned (or the lock was released) while a renewal was in flight: its answer comes first,
    /// then the release.
    AwaitingRenewalToRelease {
        held: Held,
        reason: ReleaseReason,
    },
    /// As [`Self::AwaitingRenewalToRelease`], after the lock-lost signal was given.
    AwaitingRenewalToReleaseLost {
        held: Held,
        reason: ReleaseReason,
    },
    AwaitingReleaseCommit {
        /// When the release was sent: an unanswered release starts the unavailability clock from here.
        sent_at: LocalInstant,
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
    /// An acquisition is in flight (cancelled or not).
    AwaitingAcquireCommit,
    /// An acquisition's outcome was unknown, or it was cancelled; the row is being read.
    AwaitingAcquireResolution,
    /// Sleeping until a poll, a retry or a re-acquisition.
    AwaitingRetryTimer,
    /// The row is being read (a poll or a counted retry).
    AwaitingObservation,
    /// The need check runs again under the lease.
    AwaitingNeedWhileHolding,
    /// The section runs (run-once) or the user holds the lock; or it returned and a renewal's answer is
    /// awaited before the release.
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
    pub(super) const fn phase(&self) -> Phase {
        match self {
            Self::NotStarted => Phase::NotStarted,
            Self::AwaitingNeed => Phase::AwaitingNeed,
            Self::AwaitingAcquireCommit { .. } | Self::CancelledAwaitingAcquireCommit { .. } => {
                Phase::AwaitingAcquireCommit
            }
            Self::AwaitingAcquireResolution { .. } | Self::CancelledAwaitingAcquireResolution { .. } => {
                Phase::AwaitingAcquireResolution
            }
            Self::AwaitingRetryTimer { .. } => Phase::AwaitingRetryTimer,
            Self::AwaitingPoll { .. } | Self::AwaitingObservation => Phase::AwaitingObservation,
            Self::AwaitingNeedWhileHolding { .. } => Phase::AwaitingNeedWhileHolding,
            Self::Holding { .. }
            | Self::HoldingLost { .. }
            | Self::AwaitingRenewalToRelease { .. }
            | Self::AwaitingRenewalToReleaseLost { .. } => Phase::Holding,
            Self::AwaitingReleaseCommit { .. } => Phase::AwaitingReleaseCommit,
            Self::AwaitingReleaseResolution { .. } => Phase::AwaitingReleaseResolution,
            Self::Finished(_) => Phase::Finished,
        }
    }

    /// The held lease and whether the lock-lost signal was given, in the states where the section runs, the
    /// user holds the lock, or either just returned.
    /// When the call this state waits on was sent, where the state records it: an unanswered call starts the
    /// unavailability clock from its send, not from when its silence was noticed.
    pub(super) const fn call_sent_at(&self) -> Option<LocalInstant> {
        match self {
            Self::AwaitingAcquireCommit { sent_at } | Self::CancelledAwaitingAcquireCommit { sent_at } => {
                Some(*sent_at)
            }
            Self::AwaitingAcquireResolution { read_sent_at }
            | Self::CancelledAwaitingAcquireResolution { read_sent_at } => Some(*read_sent_at),
            Self::AwaitingReleaseCommit { sent_at, .. } => Some(*sent_at),
            Self::Holding { held }
            | Self::HoldingLost { held }
            | Self::AwaitingRenewalToRelease { held, .. }
            | Self::AwaitingRenewalToReleaseLost { held, .. } => match held.renewal {
                Renewal::InFlight { sent_at } => Some(sent_at),
                _ => None,
            },
            Self::NotStarted
            | Self::AwaitingNeed
            | Self::AwaitingRetryTimer { .. }
            | Self::AwaitingPoll { .. }
            | Self::AwaitingObservation
            | Self::AwaitingNeedWhileHolding { .. }
            | Self::AwaitingReleaseResolution { .. }
            | Self::Finished(_) => None,
        }
    }

    pub(super) const fn holding(&self) -> Option<(&Held, bool)> {
        match self {
            Self::Holding { held } | Self::AwaitingRenewalToRelease { held, .. } => Some((held, false)),
            Self::HoldingLost { held } | Self::AwaitingRenewalToReleaseLost { held, .. } => Some((held, true)),
            Self::NotStarted
            | Self::AwaitingNeed
            | Self::AwaitingAcquireCommit { .. }
            | Self::AwaitingAcquireResolution { .. }
            | Self::CancelledAwaitingAcquireCommit { .. }
            | Self::CancelledAwaitingAcquireResolution { .. }
            | Self::AwaitingRetryTimer { .. }
            | Self::AwaitingPoll { .. }
            | Self::AwaitingObservation
            | Self::AwaitingNeedWhileHolding { .. }
            | Self::AwaitingReleaseCommit { .. }
            | Self::AwaitingReleaseResolution { .. }
            | Self::Finished(_) => None,
        }
    }
}

impl Outcome {
    pub(super) fn rename(&mut self, map: &impl crate::Rename) {
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
            Self::Completed
            | Self::NotNeeded
            | Self::Unlocked
            | Self::SectionFailed { .. }
            | Self::SectionFailedThenCancelled { .. } => {}
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
            #[cfg(any(test, feature = "variants"))]
            Renewal::Trusted => {}
        }
    }
}

impl State {
    pub(super) fn rename(&mut self, map: &impl crate::Rename) {
        match self {
            Self::AwaitingAcquireCommit { sent_at: at }
            | Self::CancelledAwaitingAcquireCommit { sent_at: at }
            | Self::AwaitingAcquireResolution { read_sent_at: at }
            | Self::CancelledAwaitingAcquireResolution { read_sent_at: at }
            | Self::AwaitingPoll { counted_at: at } => *at = map.instant(*at),
            Self::AwaitingRetryTimer { wake_at, then } => {
                *wake_at = map.instant(*wake_at);
                match then {
                    Retry::Observe { counted_at } => *counted_at = map.instant(*counted_at),
                    Retry::Acquire => {}
                }
            }
            Self::AwaitingNeedWhileHolding { held } | Self::Holding { held } | Self::HoldingLost { held } => {
                held.rename(map);
            }
            Self::AwaitingRenewalToRelease { held, reason } | Self::AwaitingRenewalToReleaseLost { held, reason } => {
                held.rename(map);
                reason.rename(map);
            }
            Self::AwaitingReleaseCommit { sent_at, fence, reason, .. } => {
                *sent_at = map.instant(*sent_at);
                *fence = map.fence(*fence);
                reason.rename(map);
            }
            Self::AwaitingReleaseResolution { fence, reason, .. } => {
                *fence = map.fence(*fence);
                reason.rename(map);
            }
            Self::Finished(outcome) => outcome.rename(map),
            Self::NotStarted | Self::AwaitingNeed | Self::AwaitingObservation => {}
        }
    }
}
