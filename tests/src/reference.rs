//! The model's reference semantics as a backend: one row and one server clock in memory, every transaction
//! decided by `txn::plan` and applied atomically, fates applied as the definition of what they mean. No client
//! crate code runs here.

use crate::harness::{Backend, Fate, Observed, RowView};
use spanner_mutex_check::{CommitFate, superseded};
use spanner_mutex_model::txn::{TxnReply, TxnRequest, plan};
use spanner_mutex_model::{ClientId, Config, Event, Failure, Fence, LeaseRow, ServerTime};

/// Where every backend's server clock starts: 2026-01-01T00:00:00Z.
pub const START: ServerTime = ServerTime::from_unix_micros(1_767_225_600_000_000);

/// The reference backend.
#[derive(Clone, Debug)]
pub struct Reference {
    now: ServerTime,
    last_commit: ServerTime,
    row: Option<LeaseRow>,
    effects: Vec<(ClientId, Fence)>,
    /// The highest fence granted, to judge writes independently of the transaction logic.
    max_fence: Option<Fence>,
    /// A write was accepted under a fence that had been superseded.
    pub stale_write_accepted: bool,
}

impl Default for Reference {
    fn default() -> Self {
        Self {
            now: START,
            last_commit: ServerTime::from_unix_micros(0),
            row: None,
            effects: Vec::new(),
            max_fence: None,
            stale_write_accepted: false,
        }
    }
}

/// The row as compared, at server time `now`.
pub fn row_view(row: &LeaseRow, now: ServerTime) -> RowView {
    RowView {
        status: row.status,
        holder: row.holder,
        fence: row.fence,
        attempt: row.attempt,
        last_error: row.last_error.clone(),
        fenced_writes: row.fenced_writes,
        remaining_us: row.expires_at.unix_micros() - now.unix_micros(),
        age_us: now.unix_micros() - row.updated_at.unix_micros(),
    }
}

impl Reference {
    /// The lease row.
    pub const fn row(&self) -> Option<&LeaseRow> {
        self.row.as_ref()
    }

    /// Server time now.
    pub const fn now(&self) -> ServerTime {
        self.now
    }

    /// The row and the resource now.
    pub fn observed(&self) -> Observed {
        Observed { row: self.row.as_ref().map(|r| row_view(r, self.now)), effects: self.effects.clone() }
    }

    fn commit(&mut self, write: spanner_mutex_model::RowWrite) {
        // Commit timestamps are strictly increasing, as Spanner's (and the memory store's) are.
        let at = self.now.max(ServerTime::from_unix_micros(self.last_commit.unix_micros() + 1));
        self.last_commit = at;
        self.max_fence = self.max_fence.max(Some(write.fence));
        self.row = Some(write.committed_at(at));
    }
}

impl Backend for Reference {
    async fn transact(&mut self, cfg: &Config, request: &TxnRequest, fate: Fate) -> Event {
        let planned = plan(cfg, request, self.row.as_ref(), self.now);
        // The checker's fates, shared with the simulator; unavailable is a failure before anything is written.
        let fate = match fate {
            Fate::Commit => CommitFate::AsDecided,
            Fate::Abort => CommitFate::Aborted,
            Fate::UnknownLanded => CommitFate::UnknownLanded,
            Fate::UnknownLost => CommitFate::UnknownLost,
            Fate::Unavailable => return Event::TxnFailed(Failure::Unavailable),
        };
        if fate.lands()
            && let Some(write) = planned.write
        {
            self.commit(write);
        }
        fate.event(planned.reply)
    }

    async fn read(&mut self) -> Event {
        Event::RowRead { row: self.row.clone(), server_now: self.now }
    }

    async fn fenced_write(&mut self, cfg: &Config, client: ClientId, fence: Fence) -> bool {
        // A conformance section makes one fenced write: number 1 of its lease.
        let verify = TxnRequest::VerifyFence { client, fence, write: 1 };
        let planned = plan(cfg, &verify, self.row.as_ref(), self.now);
        match planned.reply {
            TxnReply::FenceValid => {
                self.stale_write_accepted |= superseded(fence, self.max_fence);
                self.effects.push((client, fence));
                self.effects.sort();
                if let Some(record) = planned.write {
                    self.commit(record);
                }
                true
            }
            TxnReply::AlreadyApplied => true,
            _ => false,
        }
    }

    async fn needed(&mut self) -> bool {
        self.effects.is_empty()
    }

    async fn advance(&mut self, ms: u64) {
        self.now = self.now.plus_ms(ms);
    }

    async fn observe(&mut self) -> Observed {
        self.observed()
    }
}
