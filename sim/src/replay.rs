//! Replays a model checker counterexample through the simulator's world, one checker action per step: the same
//! machines, the same transaction logic, this world's row, resource and invariants. The checker's semantics are
//! kept: a transaction reads when sent and commits in a step of its own, reads and need checks answer at once,
//! and a tick advances every clock by 1 ms.

use crate::invariants::Violation;
use crate::trace::TraceLine;
use crate::world::{Queued, ReadTxn, World};
use spanner_mutex_check::{
    Action, CheckOptions, ClientKind, LEADER_CAMPAIGNS, LeaseModel, SERVER_CLOCK_ERROR_MS, violated_safety,
};
use spanner_mutex_model::txn::TxnRequest;
use spanner_mutex_model::world::{CommitFate, Executor, FencedOutcome, Work, WorkStep, hear_fenced_write, server_read};
use spanner_mutex_model::{ClientId, Command, Event, Failure, Fence, LeaseRow, Outcome, Phase, SectionResult};
use stateright::{Model, Path};

/// Why a path cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The flags describe no model (e.g. run-once and lock clients on one mutex).
    #[error("{0}")]
    InvalidOptions(String),
    /// The action names a client the model does not have.
    #[error("step {step}: {action} names client {client}, but there are {clients} clients (check --clients)")]
    NoSuchClient {
        /// 1-based step.
        step: usize,
        /// The action.
        action: Action,
        /// Its client.
        client: u8,
        /// How many there are.
        clients: usize,
    },
    /// The action is not possible in the world's state at that step.
    #[error("step {step}: {action} is not possible here ({why}); was the path made with other options?")]
    NotPossible {
        /// 1-based step.
        step: usize,
        /// The action.
        action: Action,
        /// Why.
        why: &'static str,
    },
}

/// One replayed step.
#[derive(Clone, Debug)]
pub struct ReplayStep {
    /// The checker action.
    pub action: Action,
    /// What the world did, as trace lines.
    pub lines: Vec<TraceLine>,
    /// The row after the step.
    pub row: Option<LeaseRow>,
    /// Each client's machine phase after the step.
    pub phases: Vec<Phase>,
}

/// What a replay showed.
#[derive(Clone, Debug)]
pub struct ReplayReport {
    /// Every step.
    pub steps: Vec<ReplayStep>,
    /// Invariants the simulator saw broken, first of each.
    pub violations: Vec<Violation>,
    /// Safety properties the model checker sees violated at the end of the same path.
    pub model_violations: Vec<&'static str>,
}

impl ReplayReport {
    /// The steps as text: each action, then what happened.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (i, step) in self.steps.iter().enumerate() {
            out.push_str(&format!("step {:>2}: {}\n", i + 1, step.action));
            for line in &step.lines {
                out.push_str(&format!("         {}\n", line.text()));
            }
        }
        out
    }
}

/// The id the checker gives a slot's incarnation, so rows and traces match the checker's.
fn checker_id(slot: usize, incarnation: u32) -> ClientId {
    ClientId::from_u128(((slot as u128 + 1) << 8) | u128::from(incarnation))
}

/// Where a client's section (a lock or leader's work under its grant) is, between the checker's `write`, `return`
/// and `fail` actions.
#[derive(Clone, Copy, Debug)]
enum Section {
    Idle,
    /// Writing its fenced writes.
    Running(Work),
    Wrote(FencedOutcome),
    /// Its write got no answer, and its run's unavailability budget allows no other attempt.
    Unanswered,
}

struct Lockstep {
    model: LeaseModel,
    world: World,
    pending: Vec<Option<ReadTxn>>,
    sections: Vec<Section>,
    /// A commit its client was told was unknown, still on its way (the checker keeps at most one).
    queued: Option<(usize, Queued)>,
    /// Need checks asked and not yet answered (only while a user cancel, or under the lease a failure, is still
    /// possible, as in the checker).
    need_pending: Vec<bool>,
    /// Faults the path may still inject, counted as the checker counts them.
    faults_left: u8,
    /// Operator actions left.
    operators_left: u8,
    /// User cancels left, and which clients' users cancelled.
    cancels_left: u8,
    cancelled: Vec<bool>,
    /// A leader's campaigns in this process, counted as the checker does (it campaigns again after a term
    /// ends, up to [`LEADER_CAMPAIGNS`], unless its user cancelled).
    campaigns: Vec<u8>,
}

impl Lockstep {
    fn execute(&mut self, c: usize, command: Option<Command>) {
        spanner_mutex_model::world::execute(self, c, command);
    }

    fn start(&mut self, c: usize) {
        let incarnation = self.world.clients[c].run;
        // The checker's clocks never restart: a restarted process keeps the slot's clock (and its drift).
        let command = self.world.start_run(c, checker_id(c, incarnation), false);
        self.execute(c, command);
    }
}

/// Replays `actions` (decoded from a checker path) in a world configured as the checker's `options`.
pub fn replay(options: &CheckOptions, actions: &[Action]) -> Result<ReplayReport, ReplayError> {
    options.validate().map_err(ReplayError::InvalidOptions)?;
    let model = LeaseModel::new(options.clone());
    let mut world = World::new(model.cfg.clone(), 1, true);
    let clients = usize::from(options.clients);
    let fenced_writes = options.fenced_writes;
    for slot in 0..clients {
        let c = world.add_client(slot.to_string(), 0, 0, options.wall_offset_us(slot));
        world.clients[c].kind = options.kind(slot);
    }
    let mut lockstep = Lockstep {
        model,
        world,
        pending: vec![None; clients],
        sections: vec![Section::Idle; clients],
        queued: None,
        need_pending: vec![false; clients],
        faults_left: options.fault_budget,
        cancels_left: options.cancels,
        operators_left: options.operators,
        cancelled: vec![false; clients],
        campaigns: vec![1; clients],
    };
    for c in 0..clients {
        lockstep.start(c);
    }
    let mut steps = Vec::new();
    for (i, &action) in actions.iter().enumerate() {
        let step = i + 1;
        let before = lockstep.world.log.lines().len();
        let client = |c: u8| {
            let c = usize::from(c);
            if c < clients { Ok(c) } else { Err(ReplayError::NoSuchClient { step, action, client: c as u8, clients }) }
        };
        let not_possible = |why| ReplayError::NotPossible { step, action, why };
        let phase_of = |c: u8| lockstep.world.clients.get(usize::from(c)).map(|c| c.machine.phase());
        if !lockstep.model.injects(action, phase_of, lockstep.faults_left) {
            return Err(not_possible("this world does not inject that fault here"));
        }
        lockstep.faults_left =
            lockstep.faults_left.checked_sub(action.faults()).ok_or_else(|| not_possible("no fault is left"))?;
        match action {
            Action::Tick => lockstep.world.now_us += 1_000,
            Action::TxnCommit(c, fate) | Action::TxnUnanswered(c, fate) => {
                let c = client(c)?;
                let txn = lockstep.pending[c].take().ok_or_else(|| not_possible("no transaction in flight"))?;
                if fate == CommitFate::UnknownLate {
                    lockstep.queued = Some((c, txn.queued()));
                }
                let event = lockstep.world.commit(c, txn, fate);
                let mut command = lockstep.world.feed(c, event);
                // Spanner answers nothing more in this step: the read that would resolve the outcome fails.
                if matches!(action, Action::TxnUnanswered(..)) && command == Some(Command::ReadRow) {
                    command = lockstep.world.feed(c, Event::ReadFailed(Failure::Unavailable));
                }
                lockstep.execute(c, command);
            }
            Action::Timeout(c) | Action::TimeoutUnanswered(c) => {
                let c = client(c)?;
                let world = &lockstep.world;
                let due = world.clients[c].machine.poll_timeout();
                if due.is_none_or(|at| at > world.local_now(c)) {
                    return Err(not_possible("no timer is due"));
                }
                let mut command = lockstep.world.fire_timer(c);
                if matches!(action, Action::TimeoutUnanswered(_)) {
                    if command != Some(Command::ReadRow) {
                        return Err(not_possible("the timer sends no read"));
                    }
                    command = lockstep.world.feed(c, Event::ReadFailed(Failure::Unavailable));
                }
                lockstep.execute(c, command);
            }
            Action::SectionWrite(c, fate) => {
                let c = client(c)?;
                let Section::Running(work) = lockstep.sections[c] else {
                    return Err(not_possible("no section is running"));
                };
                let writer = lockstep.world.clients[c].machine.id();
                let fenced = (work.fence, work.write);
                if fate == CommitFate::UnknownLate {
                    lockstep.queued = Some((c, lockstep.world.queued_fenced_write(c, writer, fenced, 0)));
                }
                let written = lockstep.world.fenced_write(c, writer, fenced, 0, fate);
                // As the checker: a world without an unavailability budget retries an unanswered write for ever.
                let cfg = lockstep.world.cfg.clone();
                let heard = if cfg.unavailable_ms() > 0 {
                    let now = lockstep.world.local_now(c);
                    let machine = &mut lockstep.world.clients[c].machine;
                    let heard = hear_fenced_write(machine, &cfg, now, now, fate, work.unanswered_since)
                        .map_err(|_| not_possible("the machine refused to hear of its fenced write"))?;
                    Some(heard)
                } else {
                    None
                };
                lockstep.sections[c] = match work.after(written, u32::from(fenced_writes), heard) {
                    WorkStep::Again(work) | WorkStep::Next(work) => Section::Running(work),
                    WorkStep::Done(FencedOutcome::Retry) => Section::Unanswered,
                    WorkStep::Done(written) => Section::Wrote(written),
                };
            }
            Action::SectionReturn(c) => {
                let c = client(c)?;
                let result = match lockstep.sections[c] {
                    Section::Wrote(written) => written.section_result(),
                    Section::Unanswered => FencedOutcome::Retry.section_result(),
                    Section::Idle | Section::Running(_) => return Err(not_possible("no section has written")),
                };
                lockstep.sections[c] = Section::Idle;
                // A lock or leader's user releases (resigns) after its work, whatever the write achieved.
                let event = if lockstep.world.clients[c].kind.is_lock_mode() {
                    Event::ReleaseRequested
                } else {
                    Event::SectionFinished(result)
                };
                let command = lockstep.world.feed(c, event);
                lockstep.execute(c, command);
            }
            Action::NeedAnswer(c) => {
                let c = client(c)?;
                if !std::mem::take(&mut lockstep.need_pending[c]) {
                    return Err(not_possible("no need check is pending"));
                }
                let needed = lockstep.world.need(c);
                let command = lockstep.world.feed(c, Event::NeedAnswered { needed });
                lockstep.execute(c, command);
            }
            Action::NeedFail(c) => {
                let c = client(c)?;
                if !std::mem::take(&mut lockstep.need_pending[c]) {
                    return Err(not_possible("no need check is pending"));
                }
                let command = lockstep.world.feed(c, Event::NeedCheckFailed);
                lockstep.execute(c, command);
            }
            Action::Cancel(c) => {
                let c = client(c)?;
                if lockstep.cancels_left == 0 || lockstep.cancelled[c] {
                    return Err(not_possible("no cancel is left for this client"));
                }
                lockstep.cancels_left -= 1;
                lockstep.cancelled[c] = true;
                // The user's need check and section are dropped with the run.
                lockstep.need_pending[c] = false;
                lockstep.sections[c] = Section::Idle;
                let command = lockstep.world.feed(c, Event::Cancel);
                lockstep.execute(c, command);
            }
            Action::SectionFail(c) => {
                let c = client(c)?;
                if !matches!(lockstep.sections[c], Section::Running(_)) {
                    return Err(not_possible("no section is running"));
                }
                lockstep.sections[c] = Section::Idle;
                let command =
                    lockstep.world.feed(c, Event::SectionFinished(SectionResult::Failed { error: "boom".into() }));
                lockstep.execute(c, command);
            }
            Action::Crash(c) => {
                let c = client(c)?;
                lockstep.world.crash(c);
                lockstep.pending[c] = None;
                lockstep.sections[c] = Section::Idle;
                lockstep.need_pending[c] = false;
                lockstep.cancelled[c] = false;
                lockstep.campaigns[c] = 1;
                lockstep.start(c);
            }
            Action::Drift(c) => {
                let c = client(c)?;
                lockstep.world.clients[c].lag_us += 1_000;
            }
            Action::LateCommit => {
                let (c, queued) = lockstep.queued.take().ok_or_else(|| not_possible("no commit is queued"))?;
                lockstep.world.commit_late(c, queued);
            }
            Action::Operator(action) => {
                let row = lockstep.world.mutexes[0].spanner.row.as_ref();
                if !lockstep.model.operator_may(action, row, lockstep.operators_left) {
                    return Err(not_possible("no operator action is left, or the row is not as the action needs"));
                }
                lockstep.operators_left -= 1;
                lockstep.world.operator(0, action);
            }
            Action::TxnDelay(c) => {
                let c = client(c)?;
                let txn = lockstep.pending[c].take().ok_or_else(|| not_possible("no transaction in flight"))?;
                lockstep.pending[c] = Some(lockstep.world.read_txn(c, txn.request, 0));
            }
            Action::ClockError(c, error) => {
                let c = client(c)?;
                let txn = lockstep.pending[c].as_mut().ok_or_else(|| not_possible("no transaction in flight"))?;
                txn.read_at = server_read(txn.read_at, error.error_us(SERVER_CLOCK_ERROR_MS));
            }
        }
        for c in 0..clients {
            lockstep.world.update_reliance(c);
        }
        lockstep.world.check_invariants();
        let world = &lockstep.world;
        steps.push(ReplayStep {
            action,
            lines: world.log.lines()[before..].to_vec(),
            row: world.mutexes[0].spanner.row.clone(),
            phases: world.clients.iter().map(|c| c.machine.phase()).collect(),
        });
    }
    Ok(ReplayReport {
        steps,
        violations: lockstep.world.violations,
        model_violations: model_violations(&lockstep.model, actions),
    })
}

/// The safety properties the checker itself sees violated at the end of the path (empty if the path is not
/// possible in the checked model).
fn model_violations(model: &LeaseModel, actions: &[Action]) -> Vec<&'static str> {
    let Some(init) = model.init_states().into_iter().next() else { return Vec::new() };
    let Some(path) = Path::from_actions(model, init, actions) else { return Vec::new() };
    violated_safety(model, path.last_state())
}

/// Replay's world as the kernel's [`Executor`]: reads and need checks answer at once (a need check takes a step of
/// its own only where the checker's does), a transaction reads when sent and commits in a step of its own.
impl Executor for Lockstep {
    fn grants_locks(&self, c: usize) -> bool {
        self.world.clients[c].kind.is_lock_mode()
    }

    fn check_need(&mut self, c: usize) -> Option<Command> {
        let phase = self.world.clients[c].machine.phase();
        if self.model.need_check_takes_a_step(self.cancels_left > 0 && !self.cancelled[c], phase, self.faults_left) {
            self.need_pending[c] = true;
            return None;
        }
        let needed = self.world.need(c);
        self.world.feed(c, Event::NeedAnswered { needed })
    }

    fn run_txn(&mut self, c: usize, request: TxnRequest) -> Option<Command> {
        self.pending[c] = Some(self.world.read_txn(c, request, 0));
        None
    }

    fn read_row(&mut self, c: usize) -> Option<Command> {
        let server_now = self.world.server_now();
        let event = self.world.read_row(c, server_now);
        self.world.feed(c, event)
    }

    fn start_work(&mut self, c: usize, work: Work, _granted: bool) -> Option<Command> {
        self.sections[c] = Section::Running(work);
        None
    }

    fn lock_lost(&mut self, _c: usize, _fence: Fence) -> Option<Command> {
        None
    }

    fn finish(&mut self, c: usize, _outcome: Outcome) -> Option<Command> {
        if self.world.clients[c].kind == ClientKind::Leader
            && !self.cancelled[c]
            && self.campaigns[c] < LEADER_CAMPAIGNS
        {
            self.campaigns[c] += 1;
            self.start(c);
        }
        None
    }

    fn contract_broken(&mut self, _c: usize, what: &'static str) {
        self.world.ghost.unexpected_event.get_or_insert_with(|| what.into());
    }
}
