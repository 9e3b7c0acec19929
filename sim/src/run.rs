//! Runs a scenario: a discrete-event scheduler over virtual time that executes the machines' commands against
//! the world with latencies, commit fates and faults drawn from the scenario's one seed.

use crate::invariants::{self, Violation};
use crate::scenario::{ClientKind, Fault, Scenario, ScenarioError, TxnKind};
use crate::trace::{Picture, TraceLine};
use crate::world::{Queued, ReadTxn, Stats, Who, World};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spanner_mutex_model::txn::TxnRequest;
use spanner_mutex_model::world::{
    ClockError, CommitFate, Executor, FencedOutcome, Work, WorkStep, WriteHeard, hear_fenced_write,
};
use spanner_mutex_model::{ClientId, Command, Event, Failure, Fence, LocalInstant, Outcome, SectionResult};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

const US_PER_MS: u64 = 1_000;

/// What a run produced.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The scenario's name.
    pub name: String,
    /// Its seed.
    pub seed: u64,
    /// Simulated time the run covered, microseconds.
    pub end_us: u64,
    /// Counters.
    pub stats: Stats,
    /// Broken invariants, the first of each.
    pub violations: Vec<Violation>,
    /// The trace, when traced.
    pub trace: Vec<TraceLine>,
    /// The picture, when traced.
    pub picture: Option<Picture>,
}

impl RunReport {
    /// The timeline as text.
    pub fn timeline(&self) -> String {
        let mut out = String::new();
        for line in &self.trace {
            out.push_str(&line.text());
            out.push('\n');
        }
        out
    }

    /// The trace as JSON lines.
    pub fn json_lines(&self) -> String {
        let mut out = String::new();
        for line in &self.trace {
            out.push_str(&serde_json::to_string(line).expect("trace lines serialize"));
            out.push('\n');
        }
        out
    }

    /// A one-paragraph summary.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        let outcomes: Vec<String> = s.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let verdict = if self.violations.is_empty() {
            "PASS: every invariant held".to_owned()
        } else {
            let names: Vec<&str> = self.violations.iter().map(|v| v.invariant).collect();
            format!("FAIL: {}", names.join("; "))
        };
        format!(
            "{} (seed {}): {} simulated; {} acquisitions ({} takeovers), {} renewals, {} aborts, {} unknown outcomes, \
             {} effects, {} fenced writes rejected, {} lock-lost signals; outcomes: {}\n{verdict}",
            self.name,
            self.seed,
            crate::trace::seconds(self.end_us),
            s.acquisitions,
            s.takeovers,
            s.renewals,
            s.aborts,
            s.unknown_outcomes,
            s.effects,
            s.fenced_writes_rejected,
            s.lock_lost_signals,
            if outcomes.is_empty() { "none".to_owned() } else { outcomes.join(", ") }
        )
    }
}

/// Something scheduled to happen.
#[derive(Clone, Debug)]
enum Pending {
    /// A client starts a run (first, repeat, or after a restart).
    Start { c: usize },
    /// An answer reaches a client's machine.
    Deliver { c: usize, run: u32, event: Event },
    /// A client's machine timer.
    Timer { c: usize, run: u32, token: u64 },
    /// A transaction reaches Spanner.
    Arrive { c: usize, run: u32, request: TxnRequest },
    /// A transaction that has read commits.
    Commit { c: usize, run: u32, txn: ReadTxn },
    /// A single-use read reaches Spanner.
    ReadArrive { c: usize, run: u32 },
    /// A section sends its work's fenced write.
    SectionWrite { c: usize, run: u32, work: Work },
    /// A fenced write sent at `sent_at` (on its client's clock; `sent_us` on the world's) reaches Spanner.
    WriteArrive { c: usize, run: u32, writer: ClientId, work: Work, sent_us: u64, sent_at: LocalInstant },
    /// What became of a fenced write reaches its section: its fate, and Spanner's answer (`None`: unavailable).
    WriteAnswered {
        c: usize,
        run: u32,
        work: Work,
        sent_at: LocalInstant,
        fate: CommitFate,
        answer: Option<FencedOutcome>,
    },
    /// A section returns.
    SectionReturn { c: usize, run: u32, result: SectionResult },
    /// The scenario's fault number `i`.
    Fault { i: usize },
    /// The periodic new need.
    NeedAgain,
    /// A suspended client wakes: its clock runs again.
    Wake { c: usize },
    /// A commit its client was told was unknown reaches Spanner.
    Late { c: usize, queued: Queued },
    /// The client's user cancels its current run (in the process: a frozen one cancels when it thaws).
    UserCancel { c: usize },
}

impl Pending {
    /// The client process that must be running (not paused) to handle this; Spanner-side steps need none.
    const fn client_side(&self) -> Option<usize> {
        match self {
            Self::Start { c }
            | Self::Deliver { c, .. }
            | Self::Timer { c, .. }
            | Self::SectionWrite { c, .. }
            | Self::WriteAnswered { c, .. }
            | Self::SectionReturn { c, .. }
            | Self::UserCancel { c } => Some(*c),
            Self::Arrive { .. }
            | Self::Commit { .. }
            | Self::ReadArrive { .. }
            | Self::WriteArrive { .. }
            | Self::Fault { .. }
            | Self::NeedAgain
            | Self::Wake { .. }
            | Self::Late { .. } => None,
        }
    }
}

/// The event queue: a heap of small keys (time, then insertion order) over a slab of payloads, so the heap
/// moves 24-byte entries rather than whole events.
#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Reverse<(u64, u64, u32)>>,
    slab: Vec<Option<Pending>>,
    free: Vec<u32>,
    seq: u64,
}

impl Queue {
    fn push(&mut self, at_us: u64, what: Pending) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot as usize] = Some(what);
                slot
            }
            None => {
                self.slab.push(Some(what));
                u32::try_from(self.slab.len() - 1).expect("fewer than 4 billion pending events")
            }
        };
        self.seq += 1;
        self.heap.push(Reverse((at_us, self.seq, slot)));
    }

    fn pop(&mut self) -> Option<(u64, Pending)> {
        let Reverse((at_us, _, slot)) = self.heap.pop()?;
        self.free.push(slot);
        Some((at_us, self.slab[slot as usize].take().expect("a queued slot holds its event")))
    }
}

/// A client's scenario settings and scheduler bookkeeping.
#[derive(Clone, Debug)]
struct Runtime {
    need_check_us: u64,
    section_min_us: u64,
    section_max_us: u64,
    section_fail_rate: f64,
    section_fail_next: bool,
    need_check_fail_next: bool,
    /// Fenced writes a section makes, one after another.
    fenced_writes: u32,
    repeat_after_us: Option<u64>,
    paused_until_us: u64,
    timer_token: u64,
    timer_at_us: Option<u64>,
    /// Since when its current run is held to the progress bound: its start (run-once), or its grant (lock and
    /// leader clients wait without a retry limit, and the lease is not fair, so only the hold is bounded).
    progress_from_us: Option<u64>,
    /// The run whose user code is over (cancelled, released or resigned): its need check and section are
    /// dropped, and it asks nothing more of the machine.
    user_done_run: Option<u32>,
}

/// Injected commit fates waiting for a client's transactions.
#[derive(Clone, Debug)]
struct CommitFault {
    c: usize,
    txn: TxnKind,
    fate: CommitFate,
    remaining: u32,
    /// For [`CommitFate::UnknownLate`]: how long after the answer the commit reaches Spanner.
    late_us: u64,
}

impl CommitFault {
    fn hits(&self, c: usize, request: &TxnRequest) -> bool {
        self.c == c
            && self.remaining > 0
            && matches!(
                (self.txn, request),
                (TxnKind::Any, TxnRequest::Acquire { .. } | TxnRequest::Renew { .. } | TxnRequest::Release { .. })
                    | (TxnKind::Acquire, TxnRequest::Acquire { .. })
                    | (TxnKind::Renew, TxnRequest::Renew { .. })
                    | (TxnKind::Release, TxnRequest::Release { .. })
                    | (TxnKind::FencedWrite, TxnRequest::VerifyFence { .. })
            )
    }
}

struct Runner<'a> {
    scenario: &'a Scenario,
    world: World,
    rng: ChaCha8Rng,
    queue: Queue,
    runtime: Vec<Runtime>,
    commit_faults: Vec<CommitFault>,
    /// Injected server clock errors waiting for a client's reads: (client, error, reads left).
    clock_faults: Vec<(usize, i64, u32)>,
    /// The injected delay of the late commit [`Runner::fate`] just chose (0: drawn).
    next_late_us: u64,
    outage_until_us: u64,
    /// When the last injected fault is over; runs are held to [`Runner::progress_bound_us`] from then.
    quiet_since_us: u64,
    progress_bound_us: u64,
}

/// Runs `scenario`; `tracing` records the trace and picture (sweeps leave it off for speed).
pub fn run(scenario: &Scenario, tracing: bool) -> Result<RunReport, ScenarioError> {
    let cfg = scenario.validate()?;
    let mut world = World::new(cfg, scenario.mutexes, tracing);
    let mut runtime = Vec::new();
    for spec in &scenario.clients {
        let names: Vec<String> = if spec.count == 1 {
            vec![spec.name.clone()]
        } else {
            (1..=spec.count).map(|i| format!("{}{i}", spec.name)).collect()
        };
        for name in names {
            let c = world.add_client(name, spec.mutex, spec.drift_ppm, spec.wall_skew_ms.saturating_mul(1_000));
            world.clients[c].kind = spec.kind;
            runtime.push(Runtime {
                section_min_us: spec.section_min_ms * US_PER_MS,
                section_max_us: spec.section_max_ms * US_PER_MS,
                section_fail_rate: spec.section_fail_rate,
                section_fail_next: false,
                need_check_fail_next: false,
                fenced_writes: spec.fenced_writes,
                need_check_us: spec.need_check_ms * US_PER_MS,
                repeat_after_us: spec.repeat_after_ms.map(|ms| ms * US_PER_MS),
                paused_until_us: 0,
                timer_token: 0,
                timer_at_us: None,
                progress_from_us: None,
                user_done_run: None,
            });
        }
    }
    let mut runner = Runner {
        scenario,
        world,
        rng: ChaCha8Rng::seed_from_u64(scenario.seed),
        queue: Queue::default(),
        runtime,
        commit_faults: Vec::new(),
        clock_faults: Vec::new(),
        next_late_us: 0,
        outage_until_us: 0,
        quiet_since_us: invariants::progress::quiet_since_us(scenario),
        progress_bound_us: invariants::progress::bound_us(scenario),
    };
    let mut c = 0;
    for spec in &scenario.clients {
        for _ in 0..spec.count {
            runner.push(spec.start_ms * US_PER_MS, Pending::Start { c });
            c += 1;
        }
    }
    for (i, fault) in scenario.faults.iter().enumerate() {
        runner.push(fault.at_ms() * US_PER_MS, Pending::Fault { i });
    }
    if let Some(every_ms) = scenario.need_every_ms {
        runner.push(every_ms * US_PER_MS, Pending::NeedAgain);
    }
    let end_us = scenario.duration_ms * US_PER_MS;
    runner.run_until(end_us);
    for c in 0..runner.world.clients.len() {
        let client = &runner.world.clients[c];
        if client.alive && client.machine.outcome().is_none() {
            runner.check_progress(c, end_us, false);
        }
    }
    let mut world = runner.world;
    let picture = world.finish_picture(end_us);
    Ok(RunReport {
        name: scenario.name.clone(),
        seed: scenario.seed,
        end_us,
        stats: world.stats,
        violations: world.violations,
        trace: world.log.lines().to_vec(),
        picture,
    })
}

impl Runner<'_> {
    fn push(&mut self, at_us: u64, what: Pending) {
        self.queue.push(at_us, what);
    }

    fn client_index(&self, name: &str) -> usize {
        self.world.clients.iter().position(|c| c.name == name).expect("validated: faults name existing clients")
    }

    /// One-way latency of one message.
    fn latency_us(&mut self) -> u64 {
        let n = &self.scenario.network;
        if n.tail_rate > 0.0 && self.rng.random_bool(n.tail_rate) {
            return self.rng.random_range(n.latency_max_ms * US_PER_MS..=n.tail_ms.max(n.latency_max_ms) * US_PER_MS);
        }
        self.rng.random_range(n.latency_min_ms * US_PER_MS..=n.latency_max_ms * US_PER_MS)
    }

    fn rpc_timeout_us(&self) -> u64 {
        self.scenario.network.rpc_timeout_ms * US_PER_MS
    }

    fn outage(&self) -> bool {
        self.world.now_us < self.outage_until_us
    }

    fn run_until(&mut self, end_us: u64) {
        while let Some((at_us, what)) = self.queue.pop() {
            if at_us > end_us {
                break;
            }
            self.check_until(at_us);
            self.world.now_us = at_us;
            if let Some(c) = what.client_side()
                && self.runtime[c].paused_until_us > at_us
            {
                // A frozen process handles nothing until it thaws; its clock and Spanner move on.
                let thaw = self.runtime[c].paused_until_us;
                self.push(thaw, what);
                continue;
            }
            self.step(what);
            self.world.check_invariants();
        }
    }

    /// Between events only time moves, and the one time-dependent invariant that can start to fail then (a
    /// client relying on a lease its row no longer grants) starts at the instant a row expires: check there too,
    /// so a verdict never depends on whether an unrelated event happens to fall in the window.
    fn check_until(&mut self, next_event_us: u64) {
        for expiry_us in self.world.expiries_between(self.world.now_us, next_event_us) {
            self.world.now_us = expiry_us;
            self.world.check_invariants();
        }
    }

    /// Whether the user code of run `run` of client `c` is over (cancelled, released or resigned).
    fn dropped(&self, c: usize, run: u32) -> bool {
        self.runtime[c].user_done_run == Some(run)
    }

    fn current(&self, c: usize, run: u32) -> bool {
        let client = &self.world.clients[c];
        client.alive && client.run == run
    }

    fn step(&mut self, what: Pending) {
        let now = self.world.now_us;
        match what {
            Pending::Start { c } => {
                if self.world.clients[c].alive && self.world.clients[c].machine.outcome().is_none() {
                    return;
                }
                let id = ClientId::from_u128(self.rng.random());
                self.runtime[c].progress_from_us = (!self.world.clients[c].kind.is_lock_mode()).then_some(now);
                let command = self.world.start_run(c, id, !self.world.clients[c].alive);
                self.execute(c, command);
            }
            // A dropped need check's answer never reaches the machine.
            // A dropped need check answers nobody, whatever it found.
            Pending::Deliver { c, run, event: Event::NeedAnswered { .. } | Event::NeedCheckFailed }
                if self.dropped(c, run) => {}
            Pending::Deliver { c, run, event } => {
                if self.current(c, run) {
                    let command = self.world.feed(c, event);
                    self.execute(c, command);
                }
            }
            Pending::Timer { c, run, token } => {
                if self.current(c, run) && self.runtime[c].timer_token == token {
                    self.runtime[c].timer_at_us = None;
                    let command = self.world.fire_timer(c);
                    self.execute(c, command);
                }
            }
            Pending::Arrive { c, run, request } => {
                if self.outage() {
                    self.push(
                        now + self.rpc_timeout_us(),
                        Pending::Deliver { c, run, event: Event::TxnFailed(Failure::Unavailable) },
                    );
                } else {
                    let error_us = self.server_error_us(c);
                    let txn = self.world.read_txn(c, request, error_us);
                    let hold_us = self.rng.random_range(US_PER_MS..=self.scenario.network.commit_max_ms * US_PER_MS);
                    self.push(now + hold_us, Pending::Commit { c, run, txn });
                }
            }
            Pending::Commit { c, run, txn } => {
                let (fate, delay_us) = if self.outage() {
                    (CommitFate::UnknownLost, self.rpc_timeout_us())
                } else {
                    (self.fate(c, &txn.request), self.latency_us())
                };
                if fate == CommitFate::UnknownLate {
                    let late_us = self.late_us(c);
                    self.push(now + late_us, Pending::Late { c, queued: txn.queued() });
                }
                let event = self.world.commit(c, txn, fate);
                self.push(now + delay_us, Pending::Deliver { c, run, event });
            }
            Pending::Late { c, queued } => self.world.commit_late(c, queued),
            Pending::ReadArrive { c, run } => {
                if self.outage() {
                    self.push(
                        now + self.rpc_timeout_us(),
                        Pending::Deliver { c, run, event: Event::ReadFailed(Failure::Unavailable) },
                    );
                } else {
                    let error_us = self.server_error_us(c);
                    let server_now = self.world.server_read(error_us);
                    let event = self.world.read_row(c, server_now);
                    let at = now + self.latency_us();
                    self.push(at, Pending::Deliver { c, run, event });
                }
            }
            Pending::SectionWrite { c, run, work } => {
                if self.current(c, run) && !self.dropped(c, run) {
                    let writer = self.world.clients[c].machine.id();
                    let sent_at = self.world.local_now(c);
                    let at = now + self.latency_us();
                    self.push(at, Pending::WriteArrive { c, run, writer, work, sent_us: now, sent_at });
                }
            }
            Pending::WriteArrive { c, run, writer, work, sent_us, sent_at } => {
                // A write sent before its process died still lands: Spanner does not know the process is gone.
                let fenced = (work.fence, work.write);
                let (fate, answer) = if self.outage() {
                    (CommitFate::Unavailable, None)
                } else {
                    let error_us = self.server_error_us(c);
                    let verify = TxnRequest::VerifyFence { client: writer, fence: work.fence, write: work.write };
                    let fate = self.fate(c, &verify);
                    if fate == CommitFate::UnknownLate {
                        let queued = self.world.queued_fenced_write(c, writer, fenced, error_us);
                        let late_us = self.late_us(c);
                        self.push(now + late_us, Pending::Late { c, queued });
                    }
                    (fate, Some(self.world.fenced_write(c, writer, fenced, error_us, fate)))
                };
                // An answer comes back over the network; without one, the driver gives up an RPC timeout after the send.
                let heard_us =
                    if fate.answered() { now + self.latency_us() } else { (sent_us + self.rpc_timeout_us()).max(now) };
                self.push(heard_us, Pending::WriteAnswered { c, run, work, sent_at, fate, answer });
            }
            Pending::WriteAnswered { c, run, work, sent_at, fate, answer } => {
                if !self.current(c, run) || self.dropped(c, run) {
                    return;
                }
                // The section hears what the driver would tell it, and its machine hears whether Spanner answered.
                let local_now = self.world.local_now(c);
                let cfg = self.world.cfg.clone();
                let machine = &mut self.world.clients[c].machine;
                let heard = match hear_fenced_write(machine, &cfg, local_now, sent_at, fate, work.unanswered_since) {
                    Ok(heard) => heard,
                    Err(unexpected) => {
                        self.world.ghost.unexpected_event.get_or_insert_with(|| unexpected.to_string());
                        WriteHeard { may_retry: false, write_since: work.unanswered_since }
                    }
                };
                // Told nothing certain (or nothing at all), the section retries while it may.
                let answer = answer.unwrap_or(FencedOutcome::Retry);
                match work.after(answer, self.runtime[c].fenced_writes, Some(heard)) {
                    // Told nothing certain, the section sends the same write again after the usual wait.
                    WorkStep::Again(work) => {
                        self.push(now + cfg.wait_ms() * US_PER_MS, Pending::SectionWrite { c, run, work });
                    }
                    // Applied, the section works on and makes its next write.
                    WorkStep::Next(work) => {
                        let rt = &self.runtime[c];
                        let work_us = self.rng.random_range(rt.section_min_us..=rt.section_max_us);
                        self.push(now + work_us, Pending::SectionWrite { c, run, work });
                    }
                    WorkStep::Done(answer) => {
                        if answer == FencedOutcome::Retry {
                            self.world.note(Who::Client(c), "section", |_| {
                                "its fenced write got no answer and its run's unavailability budget is spent: the \
                                 section fails"
                                    .to_owned()
                            });
                        }
                        self.push(now, Pending::SectionReturn { c, run, result: answer.section_result() });
                    }
                }
            }
            Pending::SectionReturn { c, run, result } => {
                if self.current(c, run) && !self.dropped(c, run) {
                    // A lock or leader's hold ends with a release (a resignation), whatever its write did.
                    let event = if self.world.clients[c].kind.is_lock_mode() {
                        self.runtime[c].user_done_run = Some(run);
                        Event::ReleaseRequested
                    } else {
                        Event::SectionFinished(result)
                    };
                    let command = self.world.feed(c, event);
                    self.execute(c, command);
                }
            }
            Pending::UserCancel { c } => {
                let run = self.world.clients[c].run;
                if self.current(c, run) && self.world.clients[c].machine.outcome().is_none() {
                    self.runtime[c].user_done_run = Some(run);
                    self.world.note(Who::Client(c), "fault", |_| "its user CANCELS the run".into());
                    let command = self.world.feed(c, Event::Cancel);
                    self.execute(c, command);
                }
            }
            Pending::Fault { i } => self.fault(i),
            Pending::Wake { c } => {
                self.world.thaw_clock(c);
                self.world.note(Who::Client(c), "fault", |_| "wakes; its monotonic clock runs again".into());
            }
            Pending::NeedAgain => {
                self.world.new_need();
                if let Some(every_ms) = self.scenario.need_every_ms {
                    self.push(now + every_ms * US_PER_MS, Pending::NeedAgain);
                }
            }
        }
    }

    /// How long after its client is told "unknown" a queued commit reaches Spanner: as injected, or up to two
    /// RPC timeouts.
    fn late_us(&mut self, _c: usize) -> u64 {
        if self.next_late_us > 0 {
            self.next_late_us
        } else {
            self.rng.random_range(US_PER_MS..=2 * self.rpc_timeout_us())
        }
    }

    /// How far the server clock errs for this read of client `c`: an injected error if one waits, else drawn
    /// within the network's uncertainty, half of the draws at the extremes (where overlaps would be).
    fn server_error_us(&mut self, c: usize) -> i64 {
        if let Some(fault) = self.clock_faults.iter_mut().find(|f| f.0 == c && f.2 > 0) {
            fault.2 -= 1;
            return fault.1;
        }
        let uncertainty_ms = self.scenario.network.server_uncertainty_ms;
        let bound_us = ClockError::Late.error_us(uncertainty_ms);
        if bound_us == 0 {
            0
        } else if self.rng.random_bool(0.5) {
            let edge = if self.rng.random_bool(0.5) { ClockError::Late } else { ClockError::Early };
            edge.error_us(uncertainty_ms)
        } else {
            self.rng.random_range(-bound_us..=bound_us)
        }
    }

    /// The fate of a commit: an injected one if a fault waits for it, else drawn from the network's rates.
    fn fate(&mut self, c: usize, request: &TxnRequest) -> CommitFate {
        if let Some(fault) = self.commit_faults.iter_mut().find(|f| f.hits(c, request)) {
            fault.remaining -= 1;
            self.next_late_us = fault.late_us;
            return fault.fate;
        }
        self.next_late_us = 0;
        let n = &self.scenario.network;
        if n.abort_rate > 0.0 && self.rng.random_bool(n.abort_rate) {
            CommitFate::Aborted
        } else if n.unknown_rate > 0.0 && self.rng.random_bool(n.unknown_rate) {
            match self.rng.random_range(0..3) {
                0 => CommitFate::UnknownLanded,
                1 => CommitFate::UnknownLost,
                _ => CommitFate::UnknownLate,
            }
        } else {
            CommitFate::AsDecided
        }
    }

    fn fault(&mut self, i: usize) {
        let now = self.world.now_us;
        let fault = self.scenario.faults[i].clone();
        match &fault {
            Fault::Crash { client, restart_after_ms, .. } => {
                let c = self.client_index(client);
                if self.world.clients[c].alive {
                    self.world.crash(c);
                    self.runtime[c].timer_at_us = None;
                }
                if let Some(ms) = restart_after_ms {
                    self.push(now + ms * US_PER_MS, Pending::Start { c });
                }
            }
            Fault::Pause { client, duration_ms, .. } => {
                let c = self.client_index(client);
                let until = now + duration_ms * US_PER_MS;
                self.runtime[c].paused_until_us = self.runtime[c].paused_until_us.max(until);
                self.world.note(Who::Client(c), "fault", |_| format!("process PAUSED for {duration_ms} ms"));
                self.world.log.draw(|r| r.interval(Some(c), now, until, "paused"));
            }
            Fault::Suspend { client, duration_ms, clock_stops: false, .. } => {
                // The client's clock and alarm count the suspension: to the protocol it is a pause.
                let c = self.client_index(client);
                let until = now + duration_ms * US_PER_MS;
                self.runtime[c].paused_until_us = self.runtime[c].paused_until_us.max(until);
                self.world.note(Who::Client(c), "fault", |_| format!("computer SUSPENDED for {duration_ms} ms"));
                self.world.log.draw(|r| r.interval(Some(c), now, until, "suspended"));
            }
            Fault::Suspend { client, duration_ms, clock_stops: true, .. } => {
                let c = self.client_index(client);
                let until = now + duration_ms * US_PER_MS;
                self.runtime[c].paused_until_us = self.runtime[c].paused_until_us.max(until);
                self.world.freeze_clock(c);
                // Pushed before any event deferred to the thaw, so the clock runs again before they are handled.
                self.push(until, Pending::Wake { c });
                self.world.note(Who::Client(c), "fault", |_| {
                    format!("process SUSPENDED for {duration_ms} ms, clock stopped")
                });
                self.world.log.draw(|r| r.interval(Some(c), now, until, "suspended (clock stopped)"));
            }
            Fault::Outage { duration_ms, .. } => {
                let until = now + duration_ms * US_PER_MS;
                self.outage_until_us = self.outage_until_us.max(until);
                self.world.note(Who::World, "fault", |_| format!("Spanner UNAVAILABLE for {duration_ms} ms"));
                self.world.log.draw(|r| r.interval(None, now, until, "Spanner unavailable"));
            }
            Fault::Abort { client, txn, times, .. } => {
                let c = self.client_index(client);
                let fate = CommitFate::Aborted;
                self.commit_faults.push(CommitFault { c, txn: *txn, fate, remaining: *times, late_us: 0 });
                self.world.note(Who::Client(c), "fault", |_| format!("its next {times} {txn} commit(s) will abort"));
            }
            Fault::Unknown { client, txn, landed, times, .. } => {
                let c = self.client_index(client);
                let fate = if *landed { CommitFate::UnknownLanded } else { CommitFate::UnknownLost };
                self.commit_faults.push(CommitFault { c, txn: *txn, fate, remaining: *times, late_us: 0 });
                let how = if *landed { "commit but be reported UNKNOWN" } else { "not commit and be reported UNKNOWN" };
                self.world.note(Who::Client(c), "fault", |_| format!("its next {times} {txn} commit(s) will {how}"));
            }
            Fault::LateCommit { client, txn, after_ms, times, .. } => {
                let c = self.client_index(client);
                let (fate, late_us) = (CommitFate::UnknownLate, after_ms.max(&1) * US_PER_MS);
                self.commit_faults.push(CommitFault { c, txn: *txn, fate, remaining: *times, late_us });
                self.world.note(Who::Client(c), "fault", |_| {
                    format!("its next {times} {txn} commit(s) will be reported UNKNOWN and reach Spanner {after_ms} ms later")
                });
            }
            Fault::ClockStep { client, by_ms, .. } => {
                let c = self.client_index(client);
                let offset = &mut self.world.clients[c].wall_offset_us;
                *offset = offset.saturating_add(by_ms.saturating_mul(1_000));
                self.world.note(Who::Client(c), "fault", |_| format!("wall clock steps by {by_ms} ms"));
                self.world.log.draw(|r| r.mark(now, c, "clock step"));
            }
            Fault::ServerClockError { client, error_ms, times, .. } => {
                let c = self.client_index(client);
                self.clock_faults.push((c, error_ms.saturating_mul(1_000), *times));
                self.world.note(Who::Client(c), "fault", |_| {
                    format!("the server clock of its next {times} read(s) errs by {error_ms} ms")
                });
            }
            Fault::SectionFail { client, .. } => {
                let c = self.client_index(client);
                self.runtime[c].section_fail_next = true;
                self.world.note(Who::Client(c), "fault", |_| "its next section will fail".into());
            }
            Fault::NeedCheckFail { client, .. } => {
                let c = self.client_index(client);
                self.runtime[c].need_check_fail_next = true;
                self.world.note(Who::Client(c), "fault", |_| "its next need check will fail".into());
            }
            Fault::RowDeleted { mutex, older_than_ms, .. } => {
                self.world.delete_row_if_older_than(*mutex, *older_than_ms)
            }
            Fault::Operator { mutex, action, .. } => self.world.operator(*mutex, *action),
            Fault::NewNeed { .. } => self.world.new_need(),
            Fault::Cancel { client, .. } => {
                let c = self.client_index(client);
                self.push(now, Pending::UserCancel { c });
            }
        }
    }

    /// Executes a machine command by scheduling what it asks for, then re-arms the machine's timer.
    fn execute(&mut self, c: usize, command: Option<Command>) {
        spanner_mutex_model::world::execute(self, c, command);
        self.arm_timer(c);
    }

    /// Judges client `c`'s current run at `now` (`finished`: it just finished) against the progress bound,
    /// counted from its start or from when faults stopped, whichever is later.
    fn check_progress(&mut self, c: usize, now: u64, finished: bool) {
        let Some(from) = self.runtime[c].progress_from_us else { return };
        let from = from.max(self.quiet_since_us);
        let took_us = now.saturating_sub(from);
        if took_us > self.progress_bound_us {
            let label = self.world.label(c);
            let (took_ms, bound_ms) = (took_us / US_PER_MS, self.progress_bound_us / US_PER_MS);
            let what = if finished { "finished only after" } else { "has not finished after" };
            let detail = format!("{label} {what} {took_ms} ms since faults stopped (bound {bound_ms} ms)");
            self.world.report_violation(invariants::progress::NAME, detail);
        }
    }

    fn arm_timer(&mut self, c: usize) {
        let due = self.world.clients[c].machine.poll_timeout().map(|at| self.world.when_local(c, at));
        let rt = &mut self.runtime[c];
        if due == rt.timer_at_us {
            return;
        }
        rt.timer_token += 1;
        rt.timer_at_us = due;
        if let Some(at) = due {
            let (token, run) = (rt.timer_token, self.world.clients[c].run);
            self.push(at, Pending::Timer { c, run, token });
        }
    }
}

/// The simulator's world as the kernel's [`Executor`]: each request is scheduled with its latency, a need check
/// and a section with their durations.
impl Executor for Runner<'_> {
    fn grants_locks(&self, c: usize) -> bool {
        self.world.clients[c].kind.is_lock_mode()
    }

    fn check_need(&mut self, c: usize) -> Option<Command> {
        // Answered from the effects when asked, delivered when the check is over.
        let event = if std::mem::take(&mut self.runtime[c].need_check_fail_next) {
            Event::NeedCheckFailed
        } else {
            Event::NeedAnswered { needed: self.world.need(c) }
        };
        let (at, run) = (self.world.now_us + self.runtime[c].need_check_us, self.world.clients[c].run);
        self.push(at, Pending::Deliver { c, run, event });
        None
    }

    fn run_txn(&mut self, c: usize, request: TxnRequest) -> Option<Command> {
        let (at, run) = (self.world.now_us + self.latency_us(), self.world.clients[c].run);
        self.push(at, Pending::Arrive { c, run, request });
        None
    }

    fn read_row(&mut self, c: usize) -> Option<Command> {
        let (at, run) = (self.world.now_us + self.latency_us(), self.world.clients[c].run);
        self.push(at, Pending::ReadArrive { c, run });
        None
    }

    fn start_work(&mut self, c: usize, work: Work, granted: bool) -> Option<Command> {
        let (now, run) = (self.world.now_us, self.world.clients[c].run);
        // A lock holder works for the section's duration, makes its fenced writes, then releases.
        if granted {
            self.runtime[c].progress_from_us = Some(now);
            let rt = &self.runtime[c];
            let work_us = self.rng.random_range(rt.section_min_us..=rt.section_max_us);
            self.push(now + work_us, Pending::SectionWrite { c, run, work });
            return None;
        }
        let rt = &self.runtime[c];
        let (min, max) = (rt.section_min_us, rt.section_max_us);
        let fails = std::mem::take(&mut self.runtime[c].section_fail_next)
            || (self.runtime[c].section_fail_rate > 0.0 && self.rng.random_bool(self.runtime[c].section_fail_rate));
        let work_us = self.rng.random_range(min..=max);
        if fails {
            let result = SectionResult::Failed { error: "section failed".into() };
            self.push(now + work_us, Pending::SectionReturn { c, run, result });
        } else {
            self.push(now + work_us, Pending::SectionWrite { c, run, work });
        }
        None
    }

    // A leader resigns at once when told its term is lost; a run-once section and a lock holder carry on
    // (fencing, not good manners, keeps them safe).
    fn lock_lost(&mut self, c: usize, _fence: Fence) -> Option<Command> {
        let run = self.world.clients[c].run;
        if self.world.clients[c].kind != ClientKind::Leader || self.dropped(c, run) {
            return None;
        }
        self.runtime[c].user_done_run = Some(run);
        self.world.feed(c, Event::ReleaseRequested)
    }

    fn finish(&mut self, c: usize, _outcome: Outcome) -> Option<Command> {
        let now = self.world.now_us;
        self.check_progress(c, now, true);
        if let Some(after_us) = self.runtime[c].repeat_after_us {
            self.push(now + after_us, Pending::Start { c });
        }
        None
    }

    fn contract_broken(&mut self, _c: usize, what: &'static str) {
        self.world.ghost.unexpected_event.get_or_insert_with(|| what.into());
    }
}
