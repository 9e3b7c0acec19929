//! Who holds a mutex, and leader election on it: a leader is a lock holder that keeps renewing until it resigns
//! or loses the lease, so it runs on the same machine, with a fenced term that writes of an old term cannot pass.

use crate::mutex::{LeaseHandle, LockGuard, RunError, SpannerMutex};
use crate::store::StoreError;
use spanner_mutex_model::{ClientId, Fence, LeaseRow, OperatorAction, ServerTime, Status};
use std::time::Duration;
use tokio::sync::watch;

/// A mutex's row as Spanner showed it, with the server time of the read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MutexStatus {
    /// Spanner's time when the row was read.
    pub server_time: ServerTime,
    /// The row; `None` if the mutex was never used (or its row was deleted).
    pub row: Option<LeaseRow>,
}

/// Who holds a lease, and until when on Spanner's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The holder's client id (one per run, lock or campaign).
    pub client: ClientId,
    /// The holder's display name.
    pub display_name: String,
    /// Its fence: for a leader, the term.
    pub fence: Fence,
    /// When the lease ends unless renewed, in server time.
    pub expires_at: ServerTime,
    /// How long that was after the read.
    pub remaining: Duration,
}

impl MutexStatus {
    /// The holder, if the row is STARTED and unexpired at the read.
    pub fn holder(&self) -> Option<Holder> {
        // The model's own rule for a row that grants its lease.
        let row = self.row.as_ref().filter(|r| r.grants(r.holder, r.fence, self.server_time))?;
        let remaining_us = row.expires_at.unix_micros().saturating_sub(self.server_time.unix_micros());
        Some(Holder {
            client: row.holder,
            display_name: row.holder_name.clone(),
            fence: row.fence,
            expires_at: row.expires_at,
            remaining: Duration::from_micros(u64::try_from(remaining_us).unwrap_or(0)),
        })
    }
}

/// A server time as RFC 3339 in UTC, to the millisecond.
pub fn rfc3339(t: ServerTime) -> String {
    chrono::DateTime::from_timestamp_micros(t.unix_micros()).map_or_else(
        || format!("{} us since the epoch", t.unix_micros()),
        |d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

impl std::fmt::Display for MutexStatus {
    /// One line in words, e.g. `held by pod-1 (client 6b7d…) with fence 17 until 2026-11-28T14:00:03.000Z (2.4 s left)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(h) = self.holder() {
            return write!(
                f,
                "held by {} (client {}) with fence {} until {} ({:.1} s left)",
                h.display_name,
                h.client,
                h.fence.get(),
                rfc3339(h.expires_at),
                h.remaining.as_secs_f64()
            );
        }
        let Some(row) = &self.row else { return write!(f, "free: never used") };
        let by = format!("{} (client {}) with fence {}", row.holder_name, row.holder, row.fence.get());
        if let (Some(_), Some(record)) = (OperatorAction::recorded_on(row), &row.last_error) {
            return write!(f, "free: {record} at {} (the lease was {by})", rfc3339(row.updated_at));
        }
        match row.status {
            Status::Done => write!(f, "free: DONE by {by} at {}", rfc3339(row.updated_at)),
            Status::Failed => write!(
                f,
                "free: FAILED by {by} at {} ({})",
                rfc3339(row.updated_at),
                row.last_error.as_deref().unwrap_or("no error recorded")
            ),
            Status::Started => write!(f, "free: the lease of {by} expired at {}", rfc3339(row.expires_at)),
        }
    }
}

/// This client's leadership: the lease (by `Deref`: [`LeaseHandle::fenced`] writes commit only in this term,
/// [`crate::Lease::lock_lost`] resolves when leadership is lost). Renewed in the background; dropping it resigns
/// at once (in the background; [`SpannerMutex::shutdown`] waits for it).
#[derive(Debug)]
#[must_use = "dropping the leadership resigns at once"]
pub struct Leadership {
    guard: LockGuard,
}

impl std::ops::Deref for Leadership {
    type Target = LeaseHandle;
    fn deref(&self) -> &LeaseHandle {
        &self.guard
    }
}

impl Leadership {
    /// The term: this leadership's fence, greater than every earlier leader's.
    pub fn term(&self) -> Fence {
        self.guard.fence()
    }

    /// Steps down and waits until the release committed, so the next candidate can lead at once: `Ok` with the
    /// term that ended. See [`LockGuard::release`] for the errors.
    pub async fn resign(self) -> Result<Fence, RunError> {
        self.guard.release().await
    }
}

impl SpannerMutex {
    /// Reads the mutex's row: who holds it and until when, in server time. One read, bounded by `timeouts.rpc_ms`.
    pub async fn status(&self) -> Result<MutexStatus, StoreError> {
        let (row, server_time) = self.store.read(self.name()).await?;
        Ok(MutexStatus { server_time, row })
    }

    /// Campaigns for leadership: waits, polling every `lease.poll_ms`, until this client leads. Drop the future
    /// (or shut the mutex down) to stop; a leadership won meanwhile is resigned at once.
    pub async fn campaign(&self) -> Result<Leadership, RunError> {
        Ok(Leadership { guard: self.acquire().await? })
    }

    /// The current leader, without campaigning.
    pub async fn leader(&self) -> Result<Option<Holder>, StoreError> {
        Ok(self.status().await?.holder())
    }

    /// Watches the leader without campaigning: the receiver sees each change of leader (or of term), read every
    /// `lease.poll_ms`. The watch stops when every receiver is dropped or the mutex shuts down; a failed read
    /// keeps the last value.
    pub fn observe(&self) -> watch::Receiver<Option<Holder>> {
        let (tx, rx) = watch::channel(None);
        let (mutex, poll) = (self.clone(), Duration::from_millis(self.config().poll_ms()));
        self.track(async move {
            loop {
                match mutex.leader().await {
                    Ok(leader) => {
                        let term = |h: &Option<Holder>| h.as_ref().map(|h| (h.client, h.fence));
                        tx.send_if_modified(|seen| {
                            let changed = term(seen) != term(&leader);
                            // Expiry and remaining time move with every renewal: keep them fresh, notify on changes.
                            *seen = leader;
                            changed
                        });
                    }
                    Err(error) => {
                        tracing::debug!(mutex = %mutex.name(), %error, "leader read failed; keeping the last")
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(poll) => {}
                    () = tx.closed() => return,
                }
            }
        });
        rx
    }
}
