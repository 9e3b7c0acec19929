//! An in-memory store implementing the same interface as Spanner: one process-wide lock stands in for
//! serializability, and a monotonic server clock stamps commits. Used by the demo when no Spanner is around, and
//! by tests. Fenced user data lives beside the rows, so `fenced` has the same meaning as on Spanner.

use crate::lease::Fenced;
use crate::store::{LeaseStore, RowRead, StoreError};
use spanner_mutex_model::txn::{TxnReply, TxnRequest, plan};
use spanner_mutex_model::{ClientId, Config, Fence, LeaseRow, MutexName, RowWrite, ServerTime};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};
// tokio's clock, so tests on a paused runtime move the server clock with virtual time.
use tokio::time::Instant;

#[derive(Debug)]
struct Inner {
    rows: BTreeMap<MutexName, LeaseRow>,
    data: BTreeMap<String, String>,
    last_commit: ServerTime,
    /// Added to the server clock; lets tests move server time without sleeping.
    offset_micros: i64,
    /// The server clock stands still between [`MemoryStore::advance_server_clock_ms`] calls.
    manual_clock: bool,
}

/// The in-memory store. Clones share the same rows.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    epoch: Instant,
    epoch_unix_micros: i64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// A fenced write refused: the lease is no longer held with that fence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("fenced write refused: {fence} no longer holds the lease")]
pub struct FenceRejected {
    /// The writer's fence.
    pub fence: Fence,
}

impl MemoryStore {
    /// An empty store whose server clock starts at the host's wall clock and runs monotonically.
    pub fn new() -> Self {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
        let inner = Inner {
            rows: BTreeMap::new(),
            data: BTreeMap::new(),
            last_commit: ServerTime::from_unix_micros(0),
            offset_micros: 0,
            manual_clock: false,
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
            epoch: Instant::now(),
            epoch_unix_micros: i64::try_from(unix).unwrap_or(i64::MAX),
        }
    }

    /// An empty store whose server clock reads `start` and moves only by
    /// [`Self::advance_server_clock_ms`] (commits still get strictly increasing timestamps): for tests that
    /// compare it step by step with the model.
    #[cfg(feature = "test-util")]
    pub fn with_manual_clock(start: ServerTime) -> Self {
        let store = Self::new();
        {
            let mut inner = store.lock();
            inner.manual_clock = true;
            inner.offset_micros = start.unix_micros();
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every change is a single assignment).
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now(&self, inner: &Inner) -> ServerTime {
        if inner.manual_clock {
            return ServerTime::from_unix_micros(inner.offset_micros);
        }
        let elapsed = i64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(i64::MAX);
        ServerTime::from_unix_micros(self.epoch_unix_micros.saturating_add(elapsed).saturating_add(inner.offset_micros))
    }

    /// Moves the server clock forward by `ms` (tests: expire a lease without waiting).
    #[cfg(feature = "test-util")]
    pub fn advance_server_clock_ms(&self, ms: u64) {
        let mut inner = self.lock();
        inner.offset_micros = inner.offset_micros.saturating_add(i64::try_from(ms * 1_000).unwrap_or(i64::MAX));
    }

    /// The row of `name`, if any.
    pub fn row(&self, name: &MutexName) -> Option<LeaseRow> {
        self.lock().rows.get(name).cloned()
    }

    /// A copy of the fenced user data.
    pub fn data(&self) -> BTreeMap<String, String> {
        self.lock().data.clone()
    }

    /// Runs `work` on the user data atomically with verifying that `client` still holds `name` with `fence` and
    /// recording in the row that its fenced write number `write` landed, exactly as `fenced` does on Spanner: the
    /// writes land only while the lease is ours, and a retry of a landed write is not applied again.
    pub fn fenced<T>(
        &self,
        cfg: &Config,
        name: &MutexName,
        client: ClientId,
        fence: Fence,
        write: u32,
        work: impl FnOnce(&mut BTreeMap<String, String>) -> T,
    ) -> Result<Fenced<T>, FenceRejected> {
        self.fenced_attempt(cfg, name, client, fence, write, &mut Some(work))
    }

    /// One attempt of [`Self::fenced`]: takes `work` out of its option only when it runs.
    pub(crate) fn fenced_attempt<T, W: FnOnce(&mut BTreeMap<String, String>) -> T>(
        &self,
        cfg: &Config,
        name: &MutexName,
        client: ClientId,
        fence: Fence,
        write: u32,
        work: &mut Option<W>,
    ) -> Result<Fenced<T>, FenceRejected> {
        let mut inner = self.lock();
        let now = self.now(&inner);
        let verify = TxnRequest::VerifyFence { client, fence, write };
        let planned = plan(cfg, &verify, inner.rows.get(name), now);
        match planned.reply {
            // A write number is issued once, and only a landed attempt records it: an attempt that finds its
            // fence valid has not run the work before.
            TxnReply::FenceValid => {
                let value = work.take().map(|work| work(&mut inner.data));
                if let Some(record) = planned.write {
                    Self::commit(&mut inner, name, record, now);
                }
                Ok(value.map_or(Fenced::CommittedEarlier, Fenced::Committed))
            }
            TxnReply::AlreadyApplied => Ok(Fenced::CommittedEarlier),
            _ => Err(FenceRejected { fence }),
        }
    }

    fn commit(inner: &mut Inner, name: &MutexName, write: RowWrite, now: ServerTime) {
        // Commit timestamps are unique and increasing, as Spanner's are.
        let commit = now.max(ServerTime::from_unix_micros(inner.last_commit.unix_micros() + 1));
        inner.last_commit = commit;
        inner.rows.insert(name.clone(), write.committed_at(commit));
    }
}

impl LeaseStore for MemoryStore {
    async fn transact(&self, cfg: &Config, name: &MutexName, request: &TxnRequest) -> Result<TxnReply, StoreError> {
        let mut inner = self.lock();
        let now = self.now(&inner);
        let planned = plan(cfg, request, inner.rows.get(name), now);
        if let Some(write) = planned.write {
            Self::commit(&mut inner, name, write, now);
        }
        Ok(planned.reply)
    }

    async fn read(&self, name: &MutexName) -> Result<RowRead, StoreError> {
        let inner = self.lock();
        let now = self.now(&inner);
        Ok((inner.rows.get(name).cloned(), now))
    }
}
