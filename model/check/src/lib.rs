//! The stateright model: N instances of the production [`ClientMachine`] against one lease row whose read-write
//! transactions are serializable (read, then commit; a commit after a conflicting commit aborts), one server
//! clock that stamps commits, a protected resource that accepts fenced writes, and budgeted faults.
//!
//! The world only executes the machine's commands and the transaction logic's plans; every protocol decision is
//! made by the same code the client runs.

mod action;
mod cli;
mod crosscheck;
mod options;
mod properties;
mod reductions;
mod report;
mod search;
mod step;
#[cfg(test)]
mod tests;
mod world;

use spanner_mutex_model::world::CommitFate;

pub use action::{Action, ParseActionError, decode_path, encode_path};
pub use cli::{FaultArg, KindArg, ModelArgs, ProtocolArg, exit_with, read_path_argument};
pub use crosscheck::{ReductionCheck, cross_check_reduction, cross_check_reductions, reduction_worlds};
pub use options::{
    CheckOptions, ClientKind, Faults, LEADER_CAMPAIGNS, MAX_CLIENTS, MAX_FENCED_WRITES, MAX_TIME_MS,
    SERVER_CLOCK_ERROR_MS, UNAVAILABLE_MS,
};
pub use properties::{
    BOUNDED_FAILURE, DONE_HAS_EFFECT, DONE_IS_FINAL, DOUBLE_EXECUTION, EVENTS_ACCEPTED, FENCES_INCREASE,
    NO_CLIENT_STUCK, NO_STALE_WRITE, NO_WRITE_AFTER_FORCED_RELEASE, OUTCOMES_TRUE, OutcomeFacts,
    RELEASE_LEAVES_NO_LEASE, RELIANCE_BACKED_BY_ROW, SAFETY, SEVERITY, SINGLE_RELIANCE, TERMS_INCREASE, WRITES_ONCE,
    applied_again, done_has_effect, keeps_lease_after_release, outcome_is_true, violated_safety,
};
pub use report::{CheckSummary, Counterexample, SearchOptions, Verdict, describe_path, run_check};
pub use world::{ClientGhost, ClientSlot, Effect, Op, Queued, Section, Witness, Witnessed, WorldGhost, WorldState};

#[cfg(test)]
use reductions::*;
pub(crate) use reductions::{KeyMove, canonical_fingerprint};
pub(crate) use world::{client_id, slot_of};

use arrayvec::ArrayVec;
use spanner_mutex_model::{Config, OperatorAction};
use stateright::{Model, Property};

/// The model checked by stateright.
#[derive(Clone, Debug)]
pub struct LeaseModel {
    /// What is checked.
    pub options: CheckOptions,
    /// The clients' protocol configuration.
    pub cfg: Config,
    /// Where the [`Witness`]es of `sometimes` companions go: `None`, into the states they lead to (so the
    /// Explorer and stateright show each companion with its path); `Some`, into this tally, from every step the
    /// search takes, leaving the states unmarked (see [`Self::tallying_witnesses`]).
    tally: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl LeaseModel {
    /// A model for `options`.
    pub fn new(options: CheckOptions) -> Self {
        if let Err(why) = options.validate() {
            panic!("{why}");
        }
        let cfg = options.protocol_config();
        Self { options, cfg, tally: None }
    }

    /// This model with its witnesses tallied instead of marked in states, and only its `always` properties
    /// given to stateright; [`Self::unreached`] judges the companions after the search. Marks in states split
    /// each marked state from its unmarked twin (a third of the states of the default check), and a companion
    /// that held was evaluated (and recorded) again in every later state. The verdict is the same: an
    /// exhaustive search takes every step out of every reachable state (out of one member of each class under
    /// symmetry and time shifts, whose marks are every member's), whatever its order or thread count.
    pub fn tallying_witnesses(mut self) -> Self {
        self.tally = Some(std::sync::Arc::default());
        self
    }

    /// Whether this model was made by [`Self::tallying_witnesses`].
    pub const fn tallies_witnesses(&self) -> bool {
        self.tally.is_some()
    }

    /// The `sometimes` companions no step of the search has witnessed so far, for a model made by
    /// [`Self::tallying_witnesses`] (else every companion).
    pub fn unreached(&self) -> Vec<&'static str> {
        let tallied = self.tally.as_ref().map_or(0, |tally| tally.load(std::sync::atomic::Ordering::Relaxed));
        let mut marked = self.init_states().swap_remove(0);
        marked.ghost.witnessed = Witnessed(tallied);
        properties::all(self)
            .into_iter()
            .filter(|p| p.expectation == stateright::Expectation::Sometimes && !(p.condition)(self, &marked))
            .map(|p| p.name)
            .collect()
    }
}

impl Model for LeaseModel {
    type State = WorldState;
    type Action = Action;

    fn init_states(&self) -> Vec<WorldState> {
        let clients = (0..usize::from(self.options.clients)).map(|i| self.fresh_slot(i, 0, 0)).collect();
        let mut state = WorldState {
            now_ms: 0,
            spanner: spanner_mutex_model::world::Spanner::default(),
            clients,
            effects: ArrayVec::new(),
            faults_left: self.options.fault_budget,
            cancels_left: self.options.cancels,
            operators_left: self.options.operators,
            queued: None,
            ghost: WorldGhost::default(),
        };
        for slot in 0..state.clients.len() {
            self.start(&mut state, slot);
        }
        vec![state]
    }

    fn actions(&self, state: &WorldState, actions: &mut Vec<Action>) {
        // A need check answers, or its user cancels during it, before anything else happens: a longer check is
        // the same as the pause before the step that started it (the machine's deadline counts from the send).
        if let Some(c) = state.clients.iter().position(|c| c.op == Op::NeedCheck) {
            let c = c as u8;
            actions.push(Action::NeedAnswer(c));
            if self.need_check_may_fail(state.clients[usize::from(c)].machine.phase(), state.faults_left) {
                actions.push(Action::NeedFail(c));
            }
            if state.cancels_left > 0 {
                actions.push(Action::Cancel(c));
            }
            return;
        }
        let faults = self.options.faults;
        let can_fault = state.faults_left > 0;
        if state.now_ms < self.options.max_time_ms {
            actions.push(Action::Tick);
        }
        if state.queued.is_some() {
            actions.push(Action::LateCommit);
        }
        for action in [OperatorAction::ForceRelease, OperatorAction::Reset] {
            if self.operator_may(action, state.spanner.row.as_ref(), state.operators_left) {
                actions.push(Action::Operator(action));
            }
        }
        for (i, client) in state.clients.iter().enumerate() {
            let c = i as u8;
            match &client.op {
                Op::Idle => {}
                Op::NeedCheck => {}
                Op::TxnRead { request, row_unchanged, clock_erred, read_at, .. } => {
                    actions.push(Action::TxnCommit(c, CommitFate::AsDecided));
                    // A renewal delayed before the server runs it re-reads the row at the current step: only worth
                    // a step once the row or the time moved. (Any other transaction sent later is the same as
                    // its client sending it later, which scheduling already explores.)
                    let renewal = matches!(request, spanner_mutex_model::TxnRequest::Renew { .. });
                    if faults.delay
                        && can_fault
                        && renewal
                        && (!row_unchanged || *read_at < self.decision_time(state, i))
                    {
                        actions.push(Action::TxnDelay(c));
                    }
                    // Erring after the read is the same as erring at it: nothing observed the time in between.
                    if faults.clock_error && can_fault && !clock_erred {
                        actions.push(Action::ClockError(c, spanner_mutex_model::world::ClockError::Early));
                        actions.push(Action::ClockError(c, spanner_mutex_model::world::ClockError::Late));
                    }
                    if *row_unchanged && can_fault {
                        if faults.abort {
                            actions.push(Action::TxnCommit(c, CommitFate::Aborted));
                        }
                        if faults.unknown {
                            actions.push(Action::TxnCommit(c, CommitFate::UnknownLanded));
                            actions.push(Action::TxnCommit(c, CommitFate::UnknownLost));
                        }
                        if faults.late && state.queued.is_none() {
                            actions.push(Action::TxnCommit(c, CommitFate::UnknownLate));
                        }
                        if faults.unavailable {
                            actions.push(Action::TxnCommit(c, CommitFate::Unavailable));
                        }
                        // An acquisition or release told "unknown" reads the row at once to resolve it: Spanner may
                        // not answer that either (a renewal reads nothing).
                        let resolves_by_reading = !matches!(request, spanner_mutex_model::TxnRequest::Renew { .. });
                        if faults.unavailable && faults.unknown && state.faults_left >= 2 && resolves_by_reading {
                            actions.push(Action::TxnUnanswered(c, CommitFate::UnknownLanded));
                            actions.push(Action::TxnUnanswered(c, CommitFate::UnknownLost));
                        }
                    }
                }
            }
            if client.machine.poll_timeout().is_some_and(|at| at <= Self::local_now(state, i)) {
                actions.push(Action::Timeout(c));
                // Only a timer that sends a read makes this a step of its own (`step` refuses it otherwise).
                if faults.unavailable && can_fault {
                    actions.push(Action::TimeoutUnanswered(c));
                }
            }
            match client.section {
                Section::Idle => {}
                Section::Started(_) => {
                    actions.push(Action::SectionWrite(c, CommitFate::AsDecided));
                    if faults.unknown && can_fault {
                        actions.push(Action::SectionWrite(c, CommitFate::UnknownLanded));
                        actions.push(Action::SectionWrite(c, CommitFate::UnknownLost));
                    }
                    if faults.late && can_fault && state.queued.is_none() {
                        actions.push(Action::SectionWrite(c, CommitFate::UnknownLate));
                    }
                    if faults.section_failure && can_fault && client.kind == ClientKind::RunOnce {
                        actions.push(Action::SectionFail(c));
                    }
                }
                Section::Wrote | Section::Rejected | Section::Unanswered => actions.push(Action::SectionReturn(c)),
            }
            let running = client.machine.outcome().is_none();
            if state.cancels_left > 0 && running && client.ghost.cancelled_in.is_none() {
                actions.push(Action::Cancel(c));
            }
            if faults.crash && can_fault && running {
                actions.push(Action::Crash(c));
            }
            // A clock never lags behind its start: a drift then would only stop it until server time caught up,
            // the same as the drift taken right after the tick that lets it.
            if faults.drift
                && can_fault
                && running
                && client.lag_ms < self.drift_share_ms()
                && client.lag_ms < state.now_ms
            {
                actions.push(Action::Drift(c));
            }
        }
    }

    fn next_state(&self, last: &WorldState, action: Action) -> Option<WorldState> {
        let mut state = last.clone();
        state.ghost.witnessed = Witnessed::default();
        self.step(&mut state, action)?;
        if let Some(tally) = &self.tally {
            let marks = std::mem::take(&mut state.ghost.witnessed).0;
            if marks != 0 {
                tally.fetch_or(marks, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut properties = properties::all(self);
        if self.tally.is_some() {
            properties.retain(|p| p.expectation == stateright::Expectation::Always);
        }
        properties
    }

    fn format_action(&self, action: &Action) -> String {
        action.to_string()
    }
}
