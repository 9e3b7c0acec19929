//! An in-memory store implementing the same interface as Spanner: one process-wide lock stands in for
//! serializability, and a monotonic server clock stamps commits. Used by the demo when no Spanner is around, and
//! by tests. A fenced write's mutations are kept beside the rows, in commit order, so `fenced` has the same
//! meaning as on Spanner.

use crate::lease::{Fenced, FencedError, FencedTx, FencedWork, WriteId};
use crate::store::{FencedAnswer, LeaseStore, RowRead, StoreError};
use google_cloud_spanner::mutation::Mutation;
use spanner_mutex_model::txn::{TxnReply, TxnRequest, plan};
use spanner_mutex_model::{Config, LeaseRow, MutexName, RowWrite, ServerTime};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};
// tokio's clock, so tests on a paused runtime move the server clock with virtual time.
use tokio::time::Instant;

#[derive(Debug)]
struct Inner {
    rows: BTreeMap<MutexName, LeaseRow>,
    /// The mutations fenced writes committed, in commit order.
    mutations: Vec<Mutation>,
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

impl MemoryStore {
    /// An empty store whose server clock starts at the host's wall clock and runs monotonically.
    pub fn new() -> Self {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
        let inner = Inner {
            rows: BTreeMap::new(),
            mutations: Vec::new(),
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

    /// The mutations fenced writes committed, in commit order (kept for demos and tests to look at: the list
    /// grows with every fenced write).
    pub fn mutations(&self) -> Vec<Mutation> {
        self.lock().mutations.clone()
    }

    fn commit(inner: &mut Inner, name: &MutexName, write: RowWrite, now: ServerTime) {
        // Commit timestamps are unique and increasing, as Spanner's are.
        let commit = now.max(ServerTime::from_unix_micros(inner.last_commit.unix_micros() + 1));
        inner.last_commit = commit;
        inner.rows.insert(name.clone(), write.committed_at(commit));
    }
}

impl LeaseStore for MemoryStore {
    /// As a Spanner read-write transaction: the fence is verified on the row as read, the work runs, and the
    /// writes commit with the row's record of the write only if the row is still as read; if it changed, the
    /// whole transaction runs again (so the work may run more than once, as on Spanner).
    async fn fenced(&self, cfg: &Config, name: &MutexName, id: WriteId, work: FencedWork) -> FencedAnswer {
        loop {
            let (read, planned) = {
                let inner = self.lock();
                let read = inner.rows.get(name).cloned();
                let planned = plan(cfg, &id.verify(), read.as_ref(), self.now(&inner));
                (read, planned)
            };
            match planned.reply {
                TxnReply::FenceValid => {}
                TxnReply::AlreadyApplied => return Ok(Fenced::CommittedEarlier),
                _ => return Err(FencedError::Rejected { fence: id.fence }),
            }
            let buffer = Arc::new(Mutex::new(Vec::new()));
            let value = work.run(FencedTx::memory(Arc::clone(&buffer))).await.map_err(FencedError::Work)?;
            let mut inner = self.lock();
            if inner.rows.get(name) != read.as_ref() {
                continue;
            }
            let now = self.now(&inner);
            inner.mutations.append(&mut buffer.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
            if let Some(record) = planned.write {
                Self::commit(&mut inner, name, record, now);
            }
            return Ok(Fenced::Committed(value));
        }
    }

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
