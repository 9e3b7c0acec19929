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
    /// Key-value user data of the test rigs' own fenced writes.
    #[cfg_attr(not(feature = "test-util"), expect(dead_code, reason = "written by the test rigs only"))]
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

impl MemoryStore {
    /// An empty store whose server clock starts at the host's wall clock and runs monotonically.
    pub fn new() -> Self {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
        let inner = Inner {
            rows: BTreeMap::new(),
            mutations: Vec::new(),
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

    /// The mutations fenced writes committed, in commit order.
    pub fn mutations(&self) -> Vec<Mutation> {
        self.lock().mutations.clone()
    }

    /// A copy of the key-value data [`Self::fenced_data`] wrote.
    #[cfg(feature = "test-util")]
    pub fn data(&self) -> BTreeMap<String, String> {
        self.lock().data.clone()
    }

    /// A fenced write of a test rig that keeps key-value data instead of mutations: `work` runs on the data
    /// atomically with verifying the write's fence and recording in the row that it landed, as
    /// [`LeaseStore::fenced`] does.
    #[cfg(feature = "test-util")]
    pub fn fenced_data<T>(
        &self,
        cfg: &Config,
        name: &MutexName,
        id: WriteId,
        work: impl FnOnce(&mut BTreeMap<String, String>) -> T,
    ) -> Result<Fenced<T>, FencedError<std::convert::Infallible>> {
        let mut value = None;
        match self.check_fence(cfg, name, id, Some(|inner: &mut Inner| value = Some(work(&mut inner.data)))) {
            FenceCheck::Valid => Ok(value.map_or(Fenced::CommittedEarlier, Fenced::Committed)),
            FenceCheck::AlreadyApplied => Ok(Fenced::CommittedEarlier),
            FenceCheck::NotHolder => Err(FencedError::Rejected { fence: id.fence }),
        }
    }

    /// Verifies the fence of write `id` and, if it is current and there is something to `apply`, applies it and
    /// the row's record of the write, atomically.
    fn check_fence(
        &self,
        cfg: &Config,
        name: &MutexName,
        id: WriteId,
        apply: Option<impl FnOnce(&mut Inner)>,
    ) -> FenceCheck {
        let mut inner = self.lock();
        let now = self.now(&inner);
        let planned = plan(cfg, &id.verify(), inner.rows.get(name), now);
        match planned.reply {
            TxnReply::FenceValid => {
                if let Some(apply) = apply {
                    apply(&mut inner);
                    if let Some(record) = planned.write {
                        Self::commit(&mut inner, name, record, now);
                    }
                }
                FenceCheck::Valid
            }
            TxnReply::AlreadyApplied => FenceCheck::AlreadyApplied,
            _ => FenceCheck::NotHolder,
        }
    }

    fn commit(inner: &mut Inner, name: &MutexName, write: RowWrite, now: ServerTime) {
        // Commit timestamps are unique and increasing, as Spanner's are.
        let commit = now.max(ServerTime::from_unix_micros(inner.last_commit.unix_micros() + 1));
        inner.last_commit = commit;
        inner.rows.insert(name.clone(), write.committed_at(commit));
    }
}

/// What a fence check found.
enum FenceCheck {
    Valid,
    AlreadyApplied,
    NotHolder,
}

impl LeaseStore for MemoryStore {
    async fn fenced(&self, cfg: &Config, name: &MutexName, id: WriteId, work: FencedWork) -> FencedAnswer {
        let fence = id.fence;
        // A write found landed is not run again, and a refused one not at all.
        match self.check_fence(cfg, name, id, None::<fn(&mut Inner)>) {
            FenceCheck::Valid => {}
            FenceCheck::AlreadyApplied => return Ok(Fenced::CommittedEarlier),
            FenceCheck::NotHolder => return Err(FencedError::Rejected { fence }),
        }
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let value = work.run(FencedTx::memory(Arc::clone(&buffer))).await.map_err(FencedError::Work)?;
        let mutations = std::mem::take(&mut *buffer.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        // Checked again as it commits: the lease may have been lost while the work ran (Spanner's commit would
        // abort then, and its retry find the fence stale).
        match self.check_fence(cfg, name, id, Some(|inner: &mut Inner| inner.mutations.extend(mutations))) {
            FenceCheck::Valid => Ok(Fenced::Committed(value)),
            FenceCheck::AlreadyApplied => Ok(Fenced::CommittedEarlier),
            FenceCheck::NotHolder => Err(FencedError::Rejected { fence }),
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
