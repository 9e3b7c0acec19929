//! The model's reference semantics as a backend: one mutex of the world kernel ([`spanner_mutex_model::world`])
//! and one server clock in memory, every transaction decided and applied by the kernel with the fate the case
//! chose. No client crate code runs here.

use crate::harness::{Backend, Fate, Observed, RowView};
use spanner_mutex_model::world::{CommitClock, FencedOutcome, Spanner};
use spanner_mutex_model::{ClientId, Config, Event, Fence, LeaseRow, ServerTime};

/// Where every backend's server clock starts: 2026-01-01T00:00:00Z.
pub const START: ServerTime = ServerTime::from_unix_micros(1_767_225_600_000_000);

/// The reference backend.
#[derive(Clone, Debug)]
pub struct Reference {
    now: ServerTime,
    commits: CommitClock,
    spanner: Spanner,
    effects: Vec<(ClientId, Fence)>,
    /// A write was accepted under a fence that had been superseded.
    pub stale_write_accepted: bool,
    /// A write of a lease an operator had force-released was accepted after the release.
    pub write_after_forced_release: bool,
}

impl Reference {
    /// Whether `holder` may still rely on its lease under `fence` now, after an operator ended it
    /// ([`Spanner::may_rely_after_forced_release`]).
    pub fn may_rely_after_forced_release(&self, holder: ClientId, fence: Fence) -> bool {
        self.spanner.may_rely_after_forced_release(holder, fence, self.now)
    }
}

impl Default for Reference {
    fn default() -> Self {
        Self {
            now: START,
            commits: CommitClock::after(ServerTime::from_unix_micros(0)),
            spanner: Spanner::default(),
            effects: Vec::new(),
            stale_write_accepted: false,
            write_after_forced_release: false,
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
        self.spanner.row.as_ref()
    }

    /// Server time now.
    pub const fn now(&self) -> ServerTime {
        self.now
    }

    /// The row and the resource now.
    pub fn observed(&self) -> Observed {
        Observed { row: self.spanner.row.as_ref().map(|r| row_view(r, self.now)), effects: self.effects.clone() }
    }
}

impl Backend for Reference {
    async fn transact(&mut self, cfg: &Config, request: &spanner_mutex_model::TxnRequest, fate: Fate) -> Event {
        let (now, commits) = (self.now, &mut self.commits);
        // Transactions reach the reference one at a time: none conflicts.
        self.spanner.commit(cfg, request, now, fate, false, || commits.stamp(now)).event
    }

    async fn read(&mut self) -> Event {
        self.spanner.read(self.now)
    }

    async fn fenced_write(&mut self, cfg: &Config, client: ClientId, fence: Fence) -> bool {
        let (now, commits) = (self.now, &mut self.commits);
        // A conformance section makes one fenced write: number 1 of its lease.
        let write = self.spanner.fenced_write(cfg, client, fence, 1, now, Fate::AsDecided, || commits.stamp(now));
        if write.landed {
            self.stale_write_accepted |= write.stale_accepted.is_some();
            self.write_after_forced_release |= write.after_forced_release.is_some();
            self.effects.push((client, fence));
            self.effects.sort();
        }
        matches!(write.answer, FencedOutcome::Accepted | FencedOutcome::AlreadyApplied)
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
