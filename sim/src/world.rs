//! The simulated world's state and its primitive steps: Spanner's lease rows with serializable read-write
//! transactions and commit timestamps, the protected resource that accepts fenced writes, and the client processes
//! with their clocks, each running the production [`ClientMachine`]. Who calls which step, and when, is up to a
//! driver: [`crate::run`] schedules them from a scenario and a seed, [`crate::replay`] follows a checker path.

use crate::invariants::{self, Violation};
use crate::scenario::ClientKind;
use crate::trace::{Log, Picture, TraceLine};
use spanner_mutex_model::txn::{self, TxnReply, TxnRequest};
use spanner_mutex_model::world::{
    CommitClock, CommitFate, FencedOutcome, FencedWrite, Late, LateLanding, RowChange, Spanner,
};
use spanner_mutex_model::{
    ClientId, ClientMachine, Command, Config, Event, Failure, Fence, LocalInstant, OperatorAction, Outcome, Phase,
    ServerTime, Status,
};
use std::collections::BTreeMap;

/// Spanner's clock at simulated time zero: 2026-01-01T00:00:00Z, so traces show plausible timestamps.
const EPOCH_UNIX_MICROS: i64 = 1_767_225_600_000_000;

/// Parts per million.
const PPM: i64 = 1_000_000;

/// An effect the protected resource accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Effect {
    /// Who wrote it.
    pub writer: ClientId,
    /// Under which fence.
    pub fence: Fence,
    /// Which of its lease's fenced writes, from 1.
    pub write: u32,
    /// For which need generation.
    pub generation: u32,
}

/// One mutex: its lease row in Spanner and the resource its section protects.
#[derive(Clone, Debug, Default)]
pub struct MutexState {
    /// The lease row, with the highest fence it granted.
    pub spanner: Spanner,
    /// Bumped by every committed write; a transaction that read an older version aborts.
    pub version: u64,
    /// The current need generation: the section is needed while no effect of this generation exists.
    pub generation: u32,
    /// Every effect the resource accepted.
    pub effects: Vec<Effect>,
    /// The holder and fence of the last acquisition that landed after its client was told "unknown": a lease its
    /// holder may not know of, left to expire.
    pub late_grant: Option<(ClientId, Fence)>,
}

impl MutexState {
    /// Whether the section still needs to run: no effect of the current generation yet.
    pub fn needed(&self) -> bool {
        !self.effects.iter().any(|e| e.generation == self.generation)
    }
}

/// One client process and the run it is doing.
#[derive(Clone, Debug)]
pub struct Client {
    /// Its name in the scenario.
    pub name: String,
    /// The mutex it uses.
    pub mutex: usize,
    /// What it does with it (set before its first run).
    pub kind: ClientKind,
    /// The production machine of its current run.
    pub machine: ClientMachine,
    /// Runs started so far (restarts and repeats); events of earlier runs are dropped.
    pub run: u32,
    /// Whether the process is up.
    pub alive: bool,
    /// When the current process booted (its monotonic clock's origin).
    pub boot_us: u64,
    /// Monotonic clock rate error, parts per million.
    pub drift_ppm: i64,
    /// Monotonic clock lag: the checker's drift steps and time spent suspended.
    pub lag_us: u64,
    /// Since when the process is suspended with its monotonic clock stopped.
    pub frozen_since_us: Option<u64>,
    /// Wall clock offset from Spanner's, for the seed protocol's decisions.
    pub wall_offset_us: i64,
    /// Retry waits its current run started, as the world saw them.
    pub waits: u32,
    /// The last answer the world gave its current run's need check.
    pub last_need_answer: Option<bool>,
    /// The lease it relies on, since when, and until when at the latest (its deadline), for the picture.
    pub relied: Option<(Fence, u64, u64)>,
}

/// A transaction that has read the row and the decision time inside Spanner, not yet committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadTxn {
    /// The request.
    pub request: TxnRequest,
    /// The row version it read.
    pub version: u64,
    /// The time its decisions are made on (Spanner's; the client's wall clock in the seed protocol).
    pub read_at: ServerTime,
}

/// Counters of what happened in a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Acquisitions that committed.
    pub acquisitions: u64,
    /// Of those, takeovers of an expired lease.
    pub takeovers: u64,
    /// Renewals that committed.
    pub renewals: u64,
    /// Commits that aborted (conflict or injected).
    pub aborts: u64,
    /// Commits whose outcome the client was not told.
    pub unknown_outcomes: u64,
    /// Effects the resource accepted.
    pub effects: u64,
    /// Fenced writes the resource refused.
    pub fenced_writes_rejected: u64,
    /// Lock-lost signals.
    pub lock_lost_signals: u64,
    /// Fenced writes of lock holders and leaders that landed (not run-once effects).
    pub term_writes: u64,
    /// Runs by outcome.
    pub outcomes: BTreeMap<String, u64>,
}

/// Facts about the run's history that invariants need and the state does not keep.
#[derive(Clone, Debug, Default)]
pub struct Ghost {
    /// The resource accepted a second effect for one need.
    pub double_execution: Option<String>,
    /// A write lowered a row's fence or skipped one.
    pub fence_regressed: Option<String>,
    /// The resource accepted a write whose fence had been superseded.
    pub stale_write_accepted: Option<String>,
    /// A fenced write reached the resource a second time, or before an earlier write of its lease.
    pub fenced_write_repeated: Option<String>,
    /// The resource accepted a write of a lease an operator had force-released, after the release.
    pub write_after_forced_release: Option<String>,
    /// A DONE row was changed other than by a fresh acquisition.
    pub done_overwritten: Option<String>,
    /// A client reported an outcome that is not true.
    pub false_outcome: Option<String>,
    /// A machine rejected an event.
    pub unexpected_event: Option<String>,
    /// A run reported "released" or "cancelled" while the row still granted it the lease.
    pub lease_kept_after_release: Option<String>,
}

/// The world.
#[derive(Clone, Debug)]
pub struct World {
    /// The protocol configuration every client uses.
    pub cfg: Config,
    /// Simulated time since the start, in microseconds (Spanner's clock runs at this rate).
    pub now_us: u64,
    commits: CommitClock,
    /// The mutexes.
    pub mutexes: Vec<MutexState>,
    /// The clients.
    pub clients: Vec<Client>,
    /// Counters.
    pub stats: Stats,
    /// History for invariants.
    pub ghost: Ghost,
    /// Invariant violations, the first of each kind.
    pub violations: Vec<Violation>,
    /// The trace and the picture's records, when enabled.
    pub log: Log,
    /// Every run's label by id, kept while tracing so rows written by ended runs still name them.
    labels: BTreeMap<ClientId, String>,
}

/// Who a trace line is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// A client's current run.
    Client(usize),
    /// A mutex's lease row.
    Row(usize),
    /// The world: faults, needs, violations.
    World,
}

/// A commit still on its way after its client was told the outcome is unknown.
#[derive(Clone, Debug)]
pub struct Queued {
    /// The commit, as it read.
    pub late: Late,
    /// The row version it read.
    pub version: u64,
}

impl ReadTxn {
    /// The transaction, queued to land late.
    pub fn queued(&self) -> Queued {
        Queued { late: Late::Txn { request: self.request.clone(), read_at: self.read_at }, version: self.version }
    }
}

impl World {
    /// An empty world: `mutexes` rows that do not exist yet, no clients, time zero.
    pub fn new(cfg: Config, mutexes: usize, tracing: bool) -> Self {
        Self {
            cfg,
            now_us: 0,
            commits: CommitClock::after(ServerTime::from_unix_micros(EPOCH_UNIX_MICROS)),
            mutexes: vec![MutexState::default(); mutexes],
            clients: Vec::new(),
            stats: Stats::default(),
            ghost: Ghost::default(),
            violations: Vec::new(),
            log: Log::new(tracing),
            labels: BTreeMap::new(),
        }
    }

    /// Adds a client process that is not running yet; its first run starts with [`Self::start_run`].
    pub fn add_client(&mut self, name: String, mutex: usize, drift_ppm: i64, wall_offset_us: i64) -> usize {
        let placeholder = ClientMachine::run_once(ClientId::from_u128(0), "", &self.cfg);
        self.clients.push(Client {
            name,
            mutex,
            kind: ClientKind::RunOnce,
            machine: placeholder,
            run: 0,
            alive: false,
            boot_us: 0,
            drift_ppm,
            lag_us: 0,
            frozen_since_us: None,
            wall_offset_us,
            waits: 0,
            last_need_answer: None,
            relied: None,
        });
        self.clients.len() - 1
    }

    /// Appends a trace line, built only while tracing.
    pub fn note(&mut self, who: Who, kind: &'static str, detail: impl FnOnce(&Self) -> String) {
        if !self.log.enabled() {
            return;
        }
        let who = match who {
            Who::Client(c) => self.label(c),
            Who::Row(m) => format!("row{m}"),
            Who::World => "world".to_owned(),
        };
        let line = TraceLine { at_us: self.now_us, who, kind, detail: detail(self) };
        self.log.push(line);
    }

    /// Spanner's clock now.
    pub fn server_now(&self) -> ServerTime {
        ServerTime::from_unix_micros(EPOCH_UNIX_MICROS.saturating_add(i64::try_from(self.now_us).unwrap_or(i64::MAX)))
    }

    /// The instants strictly after `from_us` and before `to_us` at which a STARTED row expires, in order.
    pub fn expiries_between(&self, from_us: u64, to_us: u64) -> Vec<u64> {
        let mut instants: Vec<u64> = self
            .mutexes
            .iter()
            .filter_map(|m| m.spanner.row.as_ref())
            .filter(|r| r.status == Status::Started)
            .filter_map(|r| u64::try_from(r.expires_at.unix_micros() - EPOCH_UNIX_MICROS).ok())
            .filter(|&t| from_us < t && t < to_us)
            .collect();
        instants.sort_unstable();
        instants
    }

    /// The client's monotonic clock now: microseconds since its process booted, at its drifted rate, minus lag.
    pub fn local_now(&self, c: usize) -> LocalInstant {
        self.local_at(c, self.now_us)
    }

    /// The earliest simulated time at which the client's monotonic clock reads at least `at`.
    pub fn when_local(&self, c: usize, at: LocalInstant) -> u64 {
        let client = &self.clients[c];
        let local = at.micros().saturating_add(client.lag_us);
        let rate = (PPM + client.drift_ppm).unsigned_abs();
        let elapsed = local.saturating_mul(PPM.unsigned_abs()).div_ceil(rate);
        let mut t = client.boot_us.saturating_add(elapsed).max(self.now_us);
        // Integer rounding may leave the clock a microsecond short.
        while t < u64::MAX && self.local_at(c, t) < at {
            t += 1;
        }
        t
    }

    fn local_at(&self, c: usize, t: u64) -> LocalInstant {
        let client = &self.clients[c];
        let t = client.frozen_since_us.map_or(t, |since| t.min(since));
        LocalInstant::from_micros(self.running_clock_at(c, t).saturating_sub(client.lag_us))
    }

    /// The client's monotonic clock at `t` if it had never stopped, before lag.
    fn running_clock_at(&self, c: usize, t: u64) -> u64 {
        let client = &self.clients[c];
        let elapsed = t.saturating_sub(client.boot_us);
        // Runs last at most a week (6e11 us) and |drift| < 1e6 ppm, so the product fits in a u64.
        if client.drift_ppm == 0 {
            elapsed
        } else {
            elapsed.saturating_mul((PPM + client.drift_ppm).unsigned_abs()) / PPM.unsigned_abs()
        }
    }

    /// Stops the client's monotonic clock (suspension).
    pub fn freeze_clock(&mut self, c: usize) {
        self.clients[c].frozen_since_us.get_or_insert(self.now_us);
    }

    /// Restarts the client's monotonic clock where it stopped.
    pub fn thaw_clock(&mut self, c: usize) {
        if let Some(since) = self.clients[c].frozen_since_us.take() {
            let missed = self.running_clock_at(c, self.now_us) - self.running_clock_at(c, since);
            self.clients[c].lag_us += missed;
        }
    }

    /// What a server reads as the time now, when its clock errs by `error_us` (negative: early).
    pub fn server_read(&self, error_us: i64) -> ServerTime {
        spanner_mutex_model::world::server_read(self.server_now(), error_us)
    }

    /// The time a transaction's decisions are made on: Spanner's (read on a server whose clock errs by
    /// `error_us`) in the fenced protocol, the client's wall clock in the seed's.
    pub fn decision_time(&self, c: usize, error_us: i64) -> ServerTime {
        self.cfg.protocol().decision_time(self.server_read(error_us), self.clients[c].wall_offset_us)
    }

    /// The client's name with its run number, for traces: `a#2`.
    pub fn label(&self, c: usize) -> String {
        format!("{}#{}", self.clients[c].name, self.clients[c].run)
    }

    /// The label of the client run with this id (while tracing; otherwise the id).
    pub fn label_of(&self, id: ClientId) -> String {
        self.labels.get(&id).cloned().unwrap_or_else(|| id.to_string())
    }

    /// Starts a new run of the client (first run, repeat, or restart after a crash) with a fresh id, and returns
    /// its first command. `new_clock`: a new process, whose monotonic clock starts from zero now.
    pub fn start_run(&mut self, c: usize, id: ClientId, new_clock: bool) -> Option<Command> {
        let client = &mut self.clients[c];
        if new_clock {
            client.boot_us = self.now_us;
        }
        client.alive = true;
        client.run += 1;
        client.machine = match client.kind {
            ClientKind::RunOnce => ClientMachine::run_once(id, client.name.clone(), &self.cfg),
            // As `acquire` and `campaign`: no retry limit; a user who gives up cancels.
            ClientKind::Lock | ClientKind::Leader => ClientMachine::lock(id, client.name.clone(), u32::MAX),
        };
        client.waits = 0;
        client.last_need_answer = None;
        let now = self.local_now(c);
        let command = self.clients[c].machine.start(now);
        if self.log.enabled() {
            self.labels.insert(id, self.label(c));
        }
        self.note(Who::Client(c), "start", |_| format!("run starts (id {id})"));
        command
    }

    /// The process dies: its machine (and section) are gone; transactions it sent may still commit.
    pub fn crash(&mut self, c: usize) {
        self.close_reliance(c);
        self.note(Who::Client(c), "crash", |_| "process crashed".into());
        let now = self.now_us;
        self.log.draw(|r| r.mark(now, c, "crash"));
        let client = &mut self.clients[c];
        client.alive = false;
    }

    /// Client `c`'s single-use read of its row at server time `server_now`.
    pub fn read_row(&mut self, c: usize, server_now: ServerTime) -> Event {
        self.row_read_by(c);
        self.mutexes[self.clients[c].mutex].spanner.read(server_now)
    }

    /// Client `c` reads its row (a single-use read, or a transaction's): a grant there that landed late is one it
    /// now hears of.
    fn row_read_by(&mut self, c: usize) {
        let mutex = &mut self.mutexes[self.clients[c].mutex];
        if mutex.late_grant.is_some_and(|(holder, _)| holder == self.clients[c].machine.id()) {
            mutex.late_grant = None;
        }
    }

    /// A transaction reaches Spanner: it reads the row's version and the decision time.
    /// Its server's clock errs by `error_us`.
    pub fn read_txn(&mut self, c: usize, request: TxnRequest, error_us: i64) -> ReadTxn {
        self.row_read_by(c);
        let read_at = self.decision_time(c, error_us);
        ReadTxn { request, version: self.mutexes[self.clients[c].mutex].version, read_at }
    }

    /// The transaction commits (or not) with `fate`; returns the event its client is told. A transaction whose
    /// row changed since its read aborts whatever the fate.
    pub fn commit(&mut self, c: usize, txn: ReadTxn, fate: CommitFate) -> Event {
        let m = self.clients[c].mutex;
        let conflict = txn.version != self.mutexes[m].version;
        let now = self.server_now();
        let commits = &mut self.commits;
        let commit =
            self.mutexes[m].spanner.commit(&self.cfg, &txn.request, txn.read_at, fate, conflict, || commits.stamp(now));
        if commit.applied.lands() {
            match commit.reply {
                TxnReply::Acquired { kind, .. } => {
                    self.stats.acquisitions += 1;
                    if kind == txn::AcquisitionKind::Takeover {
                        self.stats.takeovers += 1;
                    }
                }
                TxnReply::Renewed { .. } => self.stats.renewals += 1,
                _ => {}
            }
        }
        self.record_change(m, commit.change);
        let event = commit.event;
        match event {
            Event::TxnAborted => self.stats.aborts += 1,
            Event::TxnOutcomeUnknown => self.stats.unknown_outcomes += 1,
            _ => {}
        }
        self.note(Who::Client(c), "commit", |_| {
            let what = request_words(&txn.request);
            match (&event, conflict, fate) {
                (_, _, CommitFate::Unavailable) => format!("{what} gets no answer: Spanner is unavailable"),
                (_, true, _) => format!("{what} aborts: the row changed since its read"),
                (Event::TxnCommitted(reply), _, _) => format!("{what} commits: {}", reply_words(reply)),
                (_, _, CommitFate::Aborted) => format!("{what} aborts (injected)"),
                (_, _, CommitFate::UnknownLanded) => format!("{what} commits, client told UNKNOWN"),
                (_, _, CommitFate::UnknownLate) => format!("{what} still queued, client told UNKNOWN"),
                (_, _, _) => format!("{what} does not commit, client told UNKNOWN"),
            }
        });
        event
    }

    /// Records what a committed row write changed: the rules it broke, and the row in the trace and the picture.
    /// Every transaction that read the row before it will abort.
    fn record_change(&mut self, m: usize, change: Option<RowChange>) {
        let Some(change) = change else { return };
        if let Some(problem) = change.fence_regressed {
            self.ghost.fence_regressed.get_or_insert(problem.to_string());
        }
        if let Some(problem) = change.done_overwritten {
            self.ghost.done_overwritten.get_or_insert(problem.to_string());
        }
        self.mutexes[m].version += 1;
        if self.log.enabled()
            && let Some(row) = self.mutexes[m].spanner.row.clone()
        {
            let now = self.now_us;
            let holder = self.label_of(row.holder);
            let (status, fence, expires) = (row.status, row.fence, row.expires_at);
            self.log.draw(|r| r.row_change(now, m, status, fence, &holder));
            let left_ms = row.updated_at.ms_until_floor(expires);
            self.note(Who::Row(m), "row", |_| match status {
                Status::Started => format!("STARTED by {holder}, fence {}, expires in {left_ms} ms", fence.get()),
                _ => format!("{status} by {holder}, fence {}", fence.get()),
            });
        }
    }

    /// A section's fenced write number `write` of its lease, as it reads the row now, queued to land late. The
    /// server's clock errs by `error_us`.
    pub fn queued_fenced_write(
        &self,
        c: usize,
        writer: ClientId,
        (fence, write): (Fence, u32),
        error_us: i64,
    ) -> Queued {
        let read_at = self.decision_time(c, error_us);
        Queued {
            late: Late::FencedWrite { writer, fence, write, read_at },
            version: self.mutexes[self.clients[c].mutex].version,
        }
    }

    /// A section's fenced write number `number` of its lease reaches Spanner: one transaction that verifies the
    /// fence and, if it is current, applies the effect and records in the row that this write of this fence
    /// landed. Linearized at this step. `writer` is the run that sent it, which may have ended since (the write
    /// still lands). The server's clock errs by `error_us`; `fate` says whether it commits and what the section is
    /// told.
    pub fn fenced_write(
        &mut self,
        c: usize,
        writer: ClientId,
        (fence, number): (Fence, u32),
        error_us: i64,
        fate: CommitFate,
    ) -> FencedOutcome {
        let m = self.clients[c].mutex;
        let at = self.decision_time(c, error_us);
        let now = self.server_now();
        let commits = &mut self.commits;
        let write =
            self.mutexes[m].spanner.fenced_write(&self.cfg, writer, fence, number, at, fate, || commits.stamp(now));
        match fate {
            CommitFate::Aborted => self.stats.aborts += 1,
            CommitFate::UnknownLanded | CommitFate::UnknownLost | CommitFate::UnknownLate => {
                self.stats.unknown_outcomes += 1;
            }
            CommitFate::AsDecided | CommitFate::Unavailable => {}
        }
        let answer = write.answer;
        if answer == FencedOutcome::Rejected {
            self.stats.fenced_writes_rejected += 1;
        }
        let landed = write.landed;
        self.record_fenced_write(c, m, writer, (fence, number), write);
        let now = self.now_us;
        self.log.draw(|r| r.effect(now, c, fence, landed));
        self.note(Who::Client(c), "effect", |_| {
            let write = format!("fenced write {number} with fence {}", fence.get());
            match (answer, landed) {
                (FencedOutcome::Accepted, _) => format!("{write} ACCEPTED"),
                (FencedOutcome::AlreadyApplied, _) => {
                    format!("{write} retried: found ALREADY APPLIED, not applied again")
                }
                (FencedOutcome::Rejected, _) => format!("{write} REJECTED"),
                (FencedOutcome::Retry, true) => format!("{write} APPLIED, client told {}", fate.word()),
                (FencedOutcome::Retry, false) => format!("{write} not applied, client told {}", fate.word()),
            }
        });
        answer
    }

    /// Records a fenced write of client `c` that reached Spanner: if it landed, a run-once section's effect, or a
    /// lock or leader's write of its term (judged by its fence only: those are not run once), and the row's
    /// record of it.
    fn record_fenced_write(
        &mut self,
        c: usize,
        m: usize,
        writer: ClientId,
        (fence, number): (Fence, u32),
        write: FencedWrite,
    ) {
        if write.landed {
            if let Some(problem) = write.stale_accepted {
                self.ghost.stale_write_accepted.get_or_insert(problem.to_string());
            }
            if let Some(problem) = write.repeated {
                self.ghost.fenced_write_repeated.get_or_insert(problem.to_string());
            }
            if let Some(problem) = write.after_forced_release {
                self.ghost.write_after_forced_release.get_or_insert(problem.to_string());
            }
            if self.clients[c].kind.is_lock_mode() {
                self.stats.term_writes += 1;
            } else {
                let mutex = &mut self.mutexes[m];
                let effect = Effect { writer, fence, write: number, generation: mutex.generation };
                if let Some(problem) = invariants::at_most_once::on_accepted(mutex, &effect) {
                    self.ghost.double_execution.get_or_insert(problem);
                }
                self.mutexes[m].effects.push(effect);
                self.stats.effects += 1;
            }
        }
        self.record_change(m, write.change);
    }

    /// A commit whose client was told the outcome is unknown reaches Spanner late: it lands if the row is as
    /// it read it, else it aborts. Nobody hears of it.
    pub fn commit_late(&mut self, c: usize, queued: Queued) {
        let m = self.clients[c].mutex;
        let landed = queued.version == self.mutexes[m].version;
        if landed {
            let now = self.server_now();
            let commits = &mut self.commits;
            match self.mutexes[m].spanner.land_late(&self.cfg, &queued.late, || commits.stamp(now)) {
                LateLanding::Txn(change) => {
                    if change.as_ref().is_some_and(|change| change.acquire) {
                        let row = self.mutexes[m].spanner.row.as_ref();
                        self.mutexes[m].late_grant = row.map(|row| (row.holder, row.fence));
                    }
                    self.record_change(m, change);
                }
                LateLanding::FencedWrite(write) => {
                    if let Late::FencedWrite { writer, fence, write: number, .. } = queued.late {
                        self.record_fenced_write(c, m, writer, (fence, number), write);
                    }
                }
            }
        }
        self.note(Who::Client(c), "commit", |_| {
            let what = match &queued.late {
                Late::Txn { request, .. } => request_words(request),
                Late::FencedWrite { fence, write, .. } => format!("fenced write {write} with fence {}", fence.get()),
            };
            if landed {
                format!("LATE {what} reaches Spanner and lands")
            } else {
                format!("LATE {what} aborts: the row changed")
            }
        });
    }

    /// A row deletion policy (`OLDER_THAN(updated_at, older_than_ms)`) looks at row `m`: deletes it if its last
    /// write is at least that old. Transactions that read it abort, as on any change.
    pub fn delete_row_if_older_than(&mut self, m: usize, older_than_ms: u64) {
        let now = self.server_now();
        if self.mutexes[m].spanner.delete_if_older_than(older_than_ms, now) {
            self.mutexes[m].version += 1;
            self.note(Who::Row(m), "row", |_| format!("DELETED by a row deletion policy ({older_than_ms} ms)"));
        }
    }

    /// An operator's `action` on mutex `m`'s row, in a transaction of its own at the server's time now.
    pub fn operator(&mut self, m: usize, action: OperatorAction) {
        let now = self.server_now();
        let Some(fence) = self.mutexes[m].spanner.row.as_ref().map(|row| row.fence) else {
            self.note(Who::Row(m), "operator", |_| "an operator finds no row: nothing to do".to_owned());
            return;
        };
        let request = TxnRequest::Operator { action, fence, by: "operator".into(), reason: "simulated".into() };
        let commits = &mut self.commits;
        let commit = self.mutexes[m]
            .spanner
            .commit(&self.cfg, &request, now, CommitFate::AsDecided, false, || commits.stamp(now));
        self.note(Who::Row(m), "operator", |_| format!("{}: {}", request_words(&request), reply_words(&commit.reply)));
        self.record_change(m, commit.change);
    }

    /// Starts a new need generation for every mutex.
    pub fn new_need(&mut self) {
        for mutex in &mut self.mutexes {
            mutex.generation += 1;
        }
        self.note(Who::World, "need", |_| "the section is needed again".into());
    }

    /// Answers the client's need check.
    pub fn need(&mut self, c: usize) -> bool {
        let needed = self.mutexes[self.clients[c].mutex].needed();
        self.clients[c].last_need_answer = Some(needed);
        needed
    }

    /// Feeds an event to the client's machine; returns its command. Checks the outcome when the run finishes.
    pub fn feed(&mut self, c: usize, event: Event) -> Option<Command> {
        let now = self.local_now(c);
        let was_waiting = self.waiting(c);
        // A wait for an unavailable Spanner while acquiring is not a retry: nobody was seen holding the lease.
        // (After a failed section, the wait to acquire again is one, whatever its release's fate.)
        let acquiring = matches!(
            self.clients[c].machine.phase(),
            Phase::AwaitingAcquireCommit | Phase::AwaitingAcquireResolution | Phase::AwaitingObservation
        );
        let unavailable =
            matches!(event, Event::TxnFailed(Failure::Unavailable) | Event::ReadFailed(Failure::Unavailable));
        // Nor is the wait after a poll that found the row still busy.
        let polling = self.clients[c].machine.is_polling();
        let retry = !(polling || (acquiring && unavailable));
        let result = self.clients[c].machine.handle(&self.cfg, now, event);
        match result {
            Ok(command) => self.after_machine_step(c, was_waiting, retry, command),
            Err(unexpected) => {
                let label = self.label(c);
                self.ghost.unexpected_event.get_or_insert_with(|| format!("{label}: {unexpected}"));
                None
            }
        }
    }

    /// Fires the client's machine timer.
    pub fn fire_timer(&mut self, c: usize) -> Option<Command> {
        let now = self.local_now(c);
        let was_waiting = self.waiting(c);
        let command = self.clients[c].machine.handle_timeout(&self.cfg, now);
        self.after_machine_step(c, was_waiting, true, command)
    }

    fn waiting(&self, c: usize) -> bool {
        self.clients[c].machine.phase() == Phase::AwaitingRetryTimer
    }

    /// Bookkeeping after the machine moved: retry waits (`retry`: a wait now counts as one), reliance spans,
    /// finished runs.
    pub fn after_machine_step(
        &mut self,
        c: usize,
        was_waiting: bool,
        retry: bool,
        command: Option<Command>,
    ) -> Option<Command> {
        if !was_waiting && self.waiting(c) {
            self.clients[c].waits += u32::from(retry);
            if self.log.enabled() {
                let wake = self.clients[c].machine.poll_timeout().map_or(0, LocalInstant::micros);
                let in_ms = wake.saturating_sub(self.local_now(c).micros()) / 1_000;
                self.note(Who::Client(c), "wait", |_| format!("waits {in_ms} ms before retrying"));
            }
        }
        match &command {
            Some(Command::SignalLockLost { fence }) => {
                self.stats.lock_lost_signals += 1;
                let fence = *fence;
                self.note(Who::Client(c), "lost", |_| format!("LOCK LOST signalled for fence {}", fence.get()));
                let now = self.now_us;
                self.log.draw(|r| r.mark(now, c, "lock lost"));
            }
            Some(Command::Finish(outcome)) => {
                let outcome = outcome.clone();
                if let Some(problem) = invariants::outcomes_true::judge(self, c, &outcome) {
                    self.ghost.false_outcome.get_or_insert(problem);
                }
                if let Some(problem) = invariants::release_leaves_no_lease::judge(self, c, &outcome) {
                    self.ghost.lease_kept_after_release.get_or_insert(problem);
                }
                *self.stats.outcomes.entry(outcome_name(&outcome).to_owned()).or_default() += 1;
                self.note(Who::Client(c), "finish", |w| format!("run ends: {}", outcome.words(|id| w.label_of(id))));
            }
            _ => {}
        }
        self.update_reliance(c);
        command
    }

    /// Opens or closes the client's reliance span for the picture.
    pub fn update_reliance(&mut self, c: usize) {
        if !self.log.enabled() {
            return;
        }
        let now = self.local_now(c);
        let relies = if self.clients[c].alive { self.clients[c].machine.relies_on_lease_at(now) } else { None };
        // A paused client takes no steps: its span must end at its deadline, not at its next step.
        let until_us = self.clients[c].machine.lease().map_or(u64::MAX, |l| self.when_local(c, l.deadline));
        match (self.clients[c].relied, relies) {
            (None, Some(fence)) => self.clients[c].relied = Some((fence, self.now_us, until_us)),
            (Some((held, from_us, _)), Some(fence)) if held == fence => {
                self.clients[c].relied = Some((fence, from_us, until_us));
            }
            (Some(_), _) => self.close_reliance(c),
            (None, None) => {}
        }
    }

    fn close_reliance(&mut self, c: usize) {
        if let Some((fence, from_us, until_us)) = self.clients[c].relied.take() {
            let to_us = self.now_us.min(until_us);
            self.log.draw(|r| r.lease(c, fence, from_us, to_us));
        }
    }

    /// Records a broken invariant that is judged outside [`invariants::ALL`] (first of its kind only).
    pub fn report_violation(&mut self, invariant: &'static str, detail: String) {
        if !self.violations.iter().any(|v| v.invariant == invariant) {
            self.note(Who::World, "VIOLATION", |_| format!("{invariant}: {detail}"));
            self.violations.push(Violation { invariant, at_us: self.now_us, detail });
        }
    }

    /// Checks every invariant; records the first violation of each.
    pub fn check_invariants(&mut self) {
        for (name, check) in invariants::ALL {
            if self.violations.iter().any(|v| v.invariant == *name) {
                continue;
            }
            if let Some(detail) = check(self) {
                self.note(Who::World, "VIOLATION", |_| format!("{name}: {detail}"));
                self.violations.push(Violation { invariant: name, at_us: self.now_us, detail });
            }
        }
    }

    /// Closes open spans at the end of a run, for the picture.
    pub fn finish_picture(&mut self, end_us: u64) -> Option<Picture> {
        self.now_us = self.now_us.max(end_us);
        for c in 0..self.clients.len() {
            self.close_reliance(c);
        }
        let names = self.clients.iter().map(|c| c.name.clone()).collect();
        self.log.picture(names, self.mutexes.len(), self.now_us)
    }
}

/// The outcome's kind, for counters.
pub fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Executed { .. } => "executed",
        Outcome::NotNeeded => "not-needed",
        Outcome::DoneByOther { .. } => "done-by-other",
        Outcome::Released { .. } => "released",
        Outcome::GaveUp { .. } => "gave-up",
        Outcome::LeaseLost { .. } => "lease-lost",
        Outcome::Cancelled => "cancelled",
        Outcome::Failed(_) => "failed",
    }
}

/// A request in a few words, for traces.
pub fn request_words(request: &TxnRequest) -> String {
    match request {
        TxnRequest::Acquire { .. } => "acquire".into(),
        TxnRequest::Renew { fence, .. } => format!("renew fence {}", fence.get()),
        TxnRequest::Release { fence, status, .. } => match status {
            txn::ReleaseStatus::Done => format!("release fence {} as DONE", fence.get()),
            txn::ReleaseStatus::Failed { .. } => format!("release fence {} as FAILED", fence.get()),
        },
        TxnRequest::VerifyFence { fence, .. } => format!("verify fence {}", fence.get()),
        TxnRequest::Operator { action: OperatorAction::ForceRelease, .. } => "an operator's forced release".into(),
        TxnRequest::Operator { action: OperatorAction::Reset, .. } => "an operator's reset".into(),
    }
}

fn reply_words(reply: &TxnReply) -> String {
    match reply {
        TxnReply::Acquired { fence, kind, .. } => format!("ACQUIRED fence {} ({kind})", fence.get()),
        TxnReply::Busy { fence, expires_at, server_now, .. } => {
            format!("busy (fence {} expires in {} ms)", fence.get(), server_now.ms_until_ceil(*expires_at))
        }
        TxnReply::DoneByOther { fence, .. } => format!("already DONE under fence {}", fence.get()),
        TxnReply::Renewed { .. } => "renewed".into(),
        TxnReply::Released => "released".into(),
        TxnReply::FenceValid => "fence valid".into(),
        TxnReply::AlreadyApplied => "already applied".into(),
        TxnReply::NotHolder => "NOT HOLDER".into(),
        TxnReply::OperatorApplied { fence, .. } => format!("APPLIED to fence {}", fence.get()),
        TxnReply::OperatorNotApplicable { status: Some(status), .. } => format!("nothing to do: the row is {status}"),
        TxnReply::OperatorNotApplicable { status: None, .. } => "nothing to do: the mutex has no row".into(),
    }
}
