//! A held lease as its holder sees it, and what a fenced write did: the types the driver, the stores and the API
//! share (kept apart from the API so that neither the driver nor a store depends on it).

use spanner_mutex_model::{ClientId, Fence};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A held lease as its holder sees it: what [`crate::LeaseHandle`] and [`crate::LockGuard`] both give (through `Deref`).
#[derive(Debug)]
pub struct Lease {
    client: ClientId,
    fence: Fence,
    deadline: watch::Receiver<tokio::time::Instant>,
    lost: CancellationToken,
}

impl Lease {
    pub(crate) const fn new(
        client: ClientId,
        fence: Fence,
        deadline: watch::Receiver<tokio::time::Instant>,
        lost: CancellationToken,
    ) -> Self {
        Self { client, fence, deadline, lost }
    }

    /// The fence token of this acquisition: strictly greater than every earlier holder's.
    pub const fn fence(&self) -> Fence {
        self.fence
    }

    /// This holder's client id (the row's `holder`).
    pub const fn client(&self) -> ClientId {
        self.client
    }

    /// Until when the lease is proven held on the local monotonic clock; renewals push it later.
    pub fn deadline(&self) -> tokio::time::Instant {
        *self.deadline.borrow()
    }

    /// Resolves when the lease can no longer be proven held. Select on it to stop work early.
    pub fn lock_lost(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.lost.cancelled()
    }

    /// [`Self::lock_lost`] as an owned future, for a task spawned to do the lease's work.
    pub fn lock_lost_owned(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.lost.clone().cancelled_owned()
    }

    /// Whether the lock-lost signal has been given.
    pub fn is_lock_lost(&self) -> bool {
        self.lost.is_cancelled()
    }
}

/// What a fenced write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fenced<T> {
    /// The writes committed in this call; the work returned this.
    Committed(T),
    /// An earlier attempt of this call, whose answer was lost (a timeout, a lost connection), committed the
    /// writes: the row's record of this fence's writes says so, and they were not applied again. The work's
    /// return value from that attempt is gone.
    CommittedEarlier,
}

impl<T> Fenced<T> {
    /// The work's value, if it committed in this attempt.
    pub fn into_value(self) -> Option<T> {
        match self {
            Self::Committed(value) => Some(value),
            Self::CommittedEarlier => None,
        }
    }
}
