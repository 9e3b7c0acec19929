//! One read-write transaction at a time, holders first: the emulator runs one read-write transaction per
//! database at a time, so a process serializes its own. A renewal, release or fenced write of a lease already
//! held enters before any waiting acquisition, so a holder never loses its lease queued behind acquirers.

use std::sync::{Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;

#[derive(Debug, Default)]
struct State {
    busy: bool,
    holders_waiting: usize,
}

/// The gate; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct HolderFirst {
    state: Mutex<State>,
    changed: Notify,
}

/// The right to run one transaction; the next one may enter when it is dropped.
#[derive(Debug)]
pub(crate) struct Turn<'a>(&'a HolderFirst);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.lock().busy = false;
        self.0.changed.notify_waiters();
    }
}

/// Counts a waiting holder until it enters or stops waiting (its future dropped).
struct HolderWaiting<'a>(&'a HolderFirst);

impl Drop for HolderWaiting<'_> {
    fn drop(&mut self) {
        self.0.lock().holders_waiting -= 1;
        self.0.changed.notify_waiters();
    }
}

impl HolderFirst {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change is a single assignment: a panic elsewhere leaves the state consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a turn; `holder`: for a lease already held (renew, release, fenced write), which goes first.
    pub(crate) async fn enter(&self, holder: bool) -> Turn<'_> {
        let _waiting = holder.then(|| {
            self.lock().holders_waiting += 1;
            HolderWaiting(self)
        });
        loop {
            // Registered before the check, so a release between the check and the wait is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.lock();
                // A waiting holder counts itself, so it is never kept out by `holders_waiting`.
                if !state.busy && (holder || state.holders_waiting == 0) {
                    state.busy = true;
                    return Turn(self);
                }
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::time::Instant;

    const HOLD: Duration = Duration::from_millis(10);

    #[tokio::test(start_paused = true)]
    async fn a_renewal_waits_for_at_most_one_transaction_not_for_eighty_queued_acquisitions() {
        let gate = Arc::new(HolderFirst::default());
        let acquisitions: Vec<_> = (0..80)
            .map(|_| {
                let gate = Arc::clone(&gate);
                tokio::spawn(async move {
                    let _turn = gate.enter(false).await;
                    tokio::time::sleep(HOLD).await;
                })
            })
            .collect();
        tokio::time::sleep(HOLD / 2).await; // all 80 queued, the first one inside
        let start = Instant::now();
        drop(gate.enter(true).await);
        assert!(start.elapsed() <= HOLD, "the renewal waited {:?}", start.elapsed());
        for task in acquisitions {
            task.await.expect("joined");
        }
        assert!(start.elapsed() >= 79 * HOLD, "the acquisitions still ran one at a time");
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_that_stops_waiting_does_not_block_acquisitions() {
        let gate = HolderFirst::default();
        let inside = gate.enter(false).await;
        let gave_up = tokio::time::timeout(HOLD, gate.enter(true)).await;
        assert!(gave_up.is_err());
        drop(inside);
        let entered = tokio::time::timeout(HOLD, gate.enter(false)).await;
        assert!(entered.is_ok(), "no holder is waiting any more");
    }
}
