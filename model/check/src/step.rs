//! What each action does to the world: the machine's commands executed, transactions committed through
//! `txn::plan` with their fates, fenced writes judged.

use crate::{
    Action, ClientGhost, ClientKind, ClientSlot, Effect, LEADER_CAMPAIGNS, LeaseModel, Op, OutcomeFacts, Queued,
    SERVER_CLOCK_ERROR_MS, Section, Witness, WorldState, client_id, keeps_lease_after_release, outcome_is_true,
};
use spanner_mutex_model::txn::{OperatorAction, TxnReply, TxnRequest};
use spanner_mutex_model::world::{
    CommitFate, Executor, FencedOutcome, FencedWrite, Late, LateLanding, RowChange, Work, WorkStep, WriteHeard,
    hear_fenced_write, server_read,
};
use spanner_mutex_model::{
    ClientId, ClientMachine, Command, Event, Fence, LeaseRow, LocalInstant, Outcome, Phase, SectionResult, ServerTime,
    Status,
};

/// Whether Spanner answers a read a step commands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reads {
    Answered,
    /// Spanner answers nothing more in this step: the read fails, and the step is marked with the witness.
    Unanswered(Witness),
}

impl LeaseModel {
    pub(crate) fn server_time(ms: u64) -> ServerTime {
        ServerTime::from_unix_micros(i64::try_from(ms).unwrap_or(i64::MAX) * 1_000)
    }

    /// The time a client-side decision is made on: the server's clock in the fenced protocol, the client's
    /// skewed wall clock in the naive one.
    pub(crate) fn decision_time(&self, state: &WorldState, slot: usize) -> ServerTime {
        self.cfg.protocol().decision_time(Self::server_time(state.now_ms), self.options.wall_offset_us(slot))
    }

    /// The client's monotonic clock.
    pub fn local_now(state: &WorldState, slot: usize) -> LocalInstant {
        let lag_ms = state.clients[slot].lag_ms;
        debug_assert!(lag_ms <= state.now_ms, "a client's clock drifts only once server time is past its lag");
        LocalInstant::from_ms(state.now_ms.saturating_sub(lag_ms))
    }

    pub(crate) fn machine(&self, kind: ClientKind, id: ClientId) -> ClientMachine {
        match kind {
            ClientKind::RunOnce => ClientMachine::run_once(id, "", &self.cfg),
            // As `acquire` and `campaign` do: no retry limit.
            ClientKind::Lock | ClientKind::Leader => ClientMachine::lock(id, "", u32::MAX),
        }
    }

    pub(crate) fn fresh_slot(&self, slot: usize, incarnation: u8, lag_ms: u64) -> ClientSlot {
        let kind = self.options.kind(slot);
        let machine = self.machine(kind, client_id(slot, incarnation));
        let ghost = ClientGhost { campaigns: 1, ..ClientGhost::default() };
        ClientSlot { kind, machine, incarnation, lag_ms, op: Op::Idle, section: Section::Idle, ghost }
    }

    /// A leader whose term (or campaign) ended campaigns again. Each campaign is a new client id, as in
    /// production; the checker numbers it as the next incarnation of the slot.
    pub(crate) fn campaign_again(&self, state: &mut WorldState, slot: usize) {
        let client = &mut state.clients[slot];
        client.incarnation += 1;
        client.machine = self.machine(ClientKind::Leader, client_id(slot, client.incarnation));
        client.ghost.campaigns += 1;
        client.ghost.waits = 0;
        client.ghost.granted = false;
        client.ghost.unanswered_since = None;
        self.start(state, slot);
    }

    pub(crate) fn start(&self, state: &mut WorldState, slot: usize) {
        let now = Self::local_now(state, slot);
        let command = state.clients[slot].machine.start(now);
        self.execute(state, slot, command, true);
    }

    /// Feeds `event` to a client's machine and executes what it commands.
    pub(crate) fn deliver(&self, state: &mut WorldState, slot: usize, event: Event) {
        self.deliver_with(state, slot, event, Reads::Answered);
    }

    /// As [`Self::deliver`]; with [`Reads::Unanswered`] a read the machine commands at once fails.
    fn deliver_with(&self, state: &mut WorldState, slot: usize, event: Event, reads: Reads) {
        let now = Self::local_now(state, slot);
        // A poll that finds the row still busy waits on without it being a retry; so does a wait for an
        // unavailable Spanner before the lease (nobody was seen holding it). A failed section's release that
        // Spanner did not answer is followed by a counted retry, as any failed section's.
        use spanner_mutex_model::Failure;
        let releasing = matches!(
            state.clients[slot].machine.phase(),
            Phase::AwaitingReleaseCommit | Phase::AwaitingReleaseResolution
        );
        let unavailable = !releasing
            && matches!(event, Event::TxnFailed(Failure::Unavailable) | Event::ReadFailed(Failure::Unavailable));
        let counts_wait = !state.clients[slot].machine.is_polling() && !unavailable;
        match state.clients[slot].machine.handle(&self.cfg, now, event) {
            Ok(command) => {
                if !counts_wait
                    && matches!(command, Some(Command::RunTxn(_) | Command::Finish(Outcome::DoneByOther { .. })))
                {
                    state.ghost.witnessed.insert(Witness::PollNoticed);
                }
                self.execute_with(state, slot, command, counts_wait, reads);
            }
            Err(_) => state.ghost.driver_contract_broken = true,
        }
    }

    /// Executes a command. Need checks and single-use reads take effect (linearize) when sent, and a
    /// transaction reads the row and server time when sent; its commit is a separate step. Reading at send time
    /// is the worst case for the holder's deadline (the earliest possible expiry); a client that is slow to send
    /// is modelled by the steps before the send (timers, deliveries, ticks) happening later.
    pub(crate) fn execute(&self, state: &mut WorldState, slot: usize, command: Option<Command>, counts_wait: bool) {
        self.execute_with(state, slot, command, counts_wait, Reads::Answered);
    }

    /// As [`Self::execute`]; with [`Reads::Unanswered`] a read fails.
    fn execute_with(
        &self,
        state: &mut WorldState,
        slot: usize,
        command: Option<Command>,
        counts_wait: bool,
        reads: Reads,
    ) {
        let client = &mut state.clients[slot];
        if counts_wait && client.machine.phase() == Phase::AwaitingRetryTimer && client.machine.poll_timeout().is_some()
        {
            // Lock-mode clients have no retry limit to judge a "gave up" by; only the hand-over companion asks
            // whether they waited at all, and a count would split their states by it.
            client.ghost.waits = if client.kind.is_lock_mode() { 1 } else { client.ghost.waits + 1 };
        }
        if client.op != Op::Idle && matches!(command, Some(Command::CheckNeed | Command::ReadRow | Command::RunTxn(_)))
        {
            state.ghost.driver_contract_broken = true;
        }
        spanner_mutex_model::world::execute(&mut StepExecutor { model: self, state, reads }, slot, command);
    }

    /// Marks what a client winning the lease shows, and forgets the facts kept until it won.
    pub(crate) fn witness_won(state: &mut WorldState, slot: usize) {
        let ghost = &mut state.clients[slot].ghost;
        let witnessed = &mut state.ghost.witnessed;
        if std::mem::take(&mut ghost.unknown_landed) {
            witnessed.insert(Witness::UnknownLandedWon);
        }
        if std::mem::take(&mut ghost.unknown_lost) {
            witnessed.insert(Witness::UnknownLostWon);
        }
        if std::mem::take(&mut ghost.term_ended) {
            witnessed.insert(Witness::LeadsAgain);
        }
    }

    /// Marks what a finishing client's outcome shows, and forgets the facts kept until it finished.
    pub(crate) fn witness_finish(state: &mut WorldState, slot: usize, outcome: &Outcome) {
        use spanner_mutex_model::Outcome;
        let witnessed = &mut state.ghost.witnessed;
        match outcome {
            Outcome::Executed { .. } => {
                witnessed.insert(Witness::Executed);
                // One execution is all a run-once world has; no later one needs a failure behind it.
                let mut after_failure = false;
                for (i, client) in state.clients.iter_mut().enumerate() {
                    after_failure |= i != slot && client.ghost.section_failed;
                    client.ghost.section_failed = false;
                }
                if after_failure {
                    witnessed.insert(Witness::ExecutedAfterFailure);
                }
            }
            Outcome::DoneByOther { .. } => witnessed.insert(Witness::DoneByOther),
            Outcome::NotNeeded => witnessed.insert(Witness::NotNeeded),
            Outcome::GaveUp { .. } => witnessed.insert(Witness::GaveUp),
            Outcome::Failed(spanner_mutex_model::Failure::Unavailable) => {
                witnessed.insert(match state.clients[slot].kind {
                    ClientKind::RunOnce => Witness::RunUnavailable,
                    ClientKind::Lock => Witness::LockUnavailable,
                    ClientKind::Leader => Witness::LeaderUnavailable,
                })
            }
            Outcome::Failed(spanner_mutex_model::Failure::NeedCheck) => {
                let id = state.clients[slot].machine.id();
                if state.spanner.row.as_ref().is_some_and(|r| r.holder == id && r.status == Status::Failed) {
                    witnessed.insert(Witness::NeedFailedUnderLease);
                }
            }
            Outcome::Released { .. } | Outcome::LeaseLost { .. } | Outcome::Cancelled | Outcome::Failed(_) => {}
        }
        let ghost = &mut state.clients[slot].ghost;
        if let Some(phase) = ghost.cancelled_in {
            witnessed.insert_cancel(phase);
        }
        ghost.unknown_landed = false;
        ghost.unknown_lost = false;
    }

    /// Judges a finishing client's "released" or "cancelled": the row must not grant it the lease any more (a
    /// waiter can acquire at once).
    pub(crate) fn judge_release(state: &mut WorldState, slot: usize, outcome: &Outcome) {
        let id = state.clients[slot].machine.id();
        let now = Self::server_time(state.now_ms);
        state.ghost.lease_kept_after_release |= keeps_lease_after_release(outcome, id, state.spanner.row.as_ref(), now);
    }

    /// Records what a committed row write changed, for the properties, and makes every transaction that read the
    /// row before it abort.
    pub(crate) fn record_change(state: &mut WorldState, change: Option<RowChange>) {
        let Some(RowChange { previous, acquire, fence_regressed, done_overwritten }) = change else { return };
        let ghost = &mut state.ghost;
        ghost.fence_regressed |= fence_regressed.is_some();
        ghost.done_overwritten |= done_overwritten.is_some();
        if acquire && previous.as_ref().is_some_and(|p| p.status == Status::Done) {
            ghost.witnessed.insert(Witness::DoneAcquired);
        }
        match previous.as_ref().filter(|_| acquire).and_then(OperatorAction::recorded_on) {
            Some(OperatorAction::ForceRelease) => ghost.witnessed.insert(Witness::AcquiredAfterForcedRelease),
            Some(OperatorAction::Reset) => ghost.witnessed.insert(Witness::AcquiredAfterReset),
            None => {}
        }
        let written = state.spanner.row.as_ref();
        let reentrant = previous.as_ref().zip(written).is_some_and(|(p, w)| p.fence == w.fence && p.holder == w.holder);
        if acquire && let Some(prev) = previous.as_ref().filter(|p| p.status == Status::Started && !reentrant) {
            match state.clients.iter().find(|c| c.machine.id() == prev.holder) {
                None => ghost.witnessed.insert(Witness::TakeoverAfterCrash),
                Some(c) if c.machine.outcome().is_none() => {
                    ghost.witnessed.insert(Witness::TakeoverAfterPause);
                    if ghost.clock_erred {
                        ghost.witnessed.insert(Witness::TakeoverAfterClockError);
                    }
                }
                Some(_) => {}
            }
        }
        for client in &mut state.clients {
            if let Op::TxnRead { row_unchanged, .. } = &mut client.op {
                *row_unchanged = false;
            }
        }
        if let Some(queued) = &mut state.queued {
            queued.row_unchanged = false;
        }
    }

    /// Records a fenced write that reached the resource: only a run-once section's writes are the effect (a lock
    /// holder's are judged by their fence and number only). Effects past [`crate::world::MAX_EFFECTS`] follow a
    /// violation and are dropped.
    fn record_fenced_write(
        state: &mut WorldState,
        writer: ClientId,
        (fence, number): (Fence, u8),
        run_once: bool,
        write: FencedWrite,
    ) {
        if write.landed {
            if run_once {
                let _ = state.effects.try_push(Effect { writer, fence, write: number });
            } else {
                state.ghost.witnessed.insert(Witness::LockWriteAccepted);
            }
            if number >= 2 {
                state.ghost.witnessed.insert(Witness::LaterWriteLanded);
            }
            state.ghost.stale_write_accepted |= write.stale_accepted.is_some();
            state.ghost.fenced_write_repeated |= write.repeated.is_some();
            state.ghost.write_after_forced_release |= write.after_forced_release.is_some();
        }
        Self::record_change(state, write.change);
    }
}

impl LeaseModel {
    /// A queued commit reaches Spanner: it lands if the row is as it read it (else it aborts, as any
    /// transaction whose read changed). Nobody hears of it: its client was told the outcome is unknown.
    pub(crate) fn land_late(&self, state: &mut WorldState, queued: Queued) {
        if !queued.row_unchanged {
            return;
        }
        let now = Self::server_time(state.now_ms);
        match state.spanner.land_late(&self.cfg, &queued.late, || now) {
            LateLanding::Txn(change) => {
                if change.is_some() {
                    state.ghost.witnessed.insert(Witness::LateLanded);
                }
                Self::record_change(state, change);
            }
            LateLanding::FencedWrite(write) => {
                let Late::FencedWrite { writer, fence, write: number, .. } = queued.late else { return };
                if write.landed {
                    state.ghost.witnessed.insert(Witness::LateLanded);
                }
                let number =
                    u8::try_from(number).expect("a checked section's write number is at most MAX_FENCED_WRITES");
                Self::record_fenced_write(state, writer, (fence, number), queued.run_once, write);
            }
        }
    }
}

impl LeaseModel {
    /// Commits the client's transaction with `fate`: what the client is told, or `None` if it has none in flight.
    fn commit_txn(&self, state: &mut WorldState, slot: usize, fate: CommitFate) -> Option<Event> {
        let Op::TxnRead { request, row_unchanged, read_at, sent_at, .. } =
            std::mem::replace(&mut state.clients[slot].op, Op::Idle)
        else {
            return None;
        };
        let now = Self::server_time(state.now_ms);
        let commit = state.spanner.commit(&self.cfg, &request, read_at, fate, !row_unchanged, || now);
        if commit.applied.lands() && matches!(commit.reply, TxnReply::Renewed { .. }) {
            state.ghost.witnessed.insert(Witness::Renewed);
        }
        if matches!(request, TxnRequest::Renew { .. })
            && matches!(commit.event, Event::TxnCommitted(TxnReply::NotHolder))
        {
            state.ghost.witnessed.insert(Witness::RenewalRefused);
        }
        Self::record_change(state, commit.change);
        let acquire = matches!(request, TxnRequest::Acquire { .. });
        if commit.applied == CommitFate::UnknownLate {
            state.queued = Some(Queued { late: Late::Txn { request, read_at }, run_once: false, row_unchanged: true });
        }
        let ghost = &mut state.clients[slot].ghost;
        match fate {
            CommitFate::UnknownLanded if acquire => ghost.unknown_landed = true,
            CommitFate::UnknownLost if acquire => ghost.unknown_lost = true,
            _ => {}
        }
        if matches!(commit.event, Event::TxnCommitted(_)) && state.clients[slot].machine.unavailable_since().is_some() {
            state.ghost.witnessed.insert(Witness::AnsweredAfterUnavailable);
        }
        let unanswered = matches!(commit.event, Event::TxnOutcomeUnknown | Event::TxnFailed(_));
        self.note_answer(state, slot, unanswered.then_some(sent_at));
        Some(commit.event)
    }

    /// Tells client `slot`'s machine whether Spanner answered its section's fenced write, sent now and met by
    /// `fate` ([`hear_fenced_write`]), keeps what the next attempt needs in the section, and returns whether the
    /// section may send the write again; a retry the machine allows past the world's record of the run's
    /// unanswered calls breaks the budget.
    fn fenced_write_heard(&self, state: &mut WorldState, slot: usize, fate: CommitFate, work: Work) -> WriteHeard {
        let now = Self::local_now(state, slot);
        let client = &mut state.clients[slot];
        let Ok(heard) = hear_fenced_write(&mut client.machine, &self.cfg, now, now, fate, work.unanswered_since) else {
            state.ghost.driver_contract_broken = true;
            return WriteHeard { may_retry: false, write_since: work.unanswered_since };
        };
        if fate.answered() {
            self.note_answer(state, slot, None);
            return heard;
        }
        self.note_answer(state, slot, Some(now));
        let next_at = now.plus_ms(self.cfg.wait_ms());
        let world_since = state.clients[slot].ghost.unanswered_since;
        if heard.may_retry && !spanner_mutex_model::within_unavailability_budget(&self.cfg, world_since, next_at) {
            state.ghost.retried_past_budget = true;
        }
        heard
    }

    /// Records for the budget's property whether Spanner answered the client's call (`None`), or not: then the
    /// call's send time. Nothing is kept in worlds without a budget (no state is split by it).
    fn note_answer(&self, state: &mut WorldState, slot: usize, unanswered_sent_at: Option<LocalInstant>) {
        if self.cfg.unavailable_ms() == 0 {
            return;
        }
        let since = &mut state.clients[slot].ghost.unanswered_since;
        *since = unanswered_sent_at.map(|sent_at| since.map_or(sent_at, |since| since.min(sent_at)));
    }

    /// Whether a need check asked in `phase` takes a step of its own, so that a cancel (if `cancel_possible`) or
    /// a failure can come during it; else it answers when asked. Only a check under the lease may fail: one
    /// before it ends the run at once, which the client's tests cover, and a step for it would put a step per
    /// client before every path. Replay follows the same rule.
    pub fn need_check_takes_a_step(&self, cancel_possible: bool, phase: Phase, faults_left: u8) -> bool {
        cancel_possible || self.need_check_may_fail(phase, faults_left)
    }

    /// Whether the world may fail a need check asked in `phase` with `faults_left` of the budget.
    pub fn need_check_may_fail(&self, phase: Phase, faults_left: u8) -> bool {
        self.options.faults.need_check_failure && faults_left > 0 && phase == Phase::AwaitingNeedWhileHolding
    }

    /// Whether this world injects the fault `action` names (if any), with `faults_left` of the budget and
    /// `phase_of` each client's phase: a path (replayed, or pasted into `explore`) may name one it does not.
    pub fn injects(&self, action: Action, phase_of: impl Fn(u8) -> Option<Phase>, faults_left: u8) -> bool {
        match action {
            Action::NeedFail(c) => phase_of(c).is_some_and(|phase| self.need_check_may_fail(phase, faults_left)),
            Action::TimeoutUnanswered(_) => self.options.faults.unavailable,
            _ => true,
        }
    }

    /// Whether an operator may take `action` on `row` with `operators_left` actions left: on a row of the status
    /// it applies to, a reset only where run-once clients read DONE as done. The checker's actions, its step and
    /// replay ask this one rule.
    pub fn operator_may(&self, action: OperatorAction, row: Option<&LeaseRow>, operators_left: u8) -> bool {
        operators_left > 0
            && row.is_some_and(|row| row.status == action.applies_to())
            && (action != OperatorAction::Reset || self.options.has(ClientKind::RunOnce))
    }

    /// Takes `action` in `state`; `None` if it cannot be taken.
    pub(crate) fn step(&self, state: &mut WorldState, action: Action) -> Option<()> {
        if !self.injects(action, |c| state.clients.get(usize::from(c)).map(|c| c.machine.phase()), state.faults_left) {
            return None;
        }
        state.faults_left = state.faults_left.checked_sub(action.faults())?;
        match action {
            Action::Tick => state.now_ms += 1,
            Action::TxnCommit(c, fate) => {
                let slot = usize::from(c);
                let event = self.commit_txn(state, slot, fate)?;
                self.deliver(state, slot, event);
            }
            Action::TxnUnanswered(c, fate) => {
                let slot = usize::from(c);
                let event = self.commit_txn(state, slot, fate)?;
                self.deliver_with(state, slot, event, Reads::Unanswered(Witness::ResolvingReadUnanswered));
            }
            Action::Timeout(c) | Action::TimeoutUnanswered(c) => {
                let slot = usize::from(c);
                let now = Self::local_now(state, slot);
                // Judged from the world's record of unanswered calls, not from the machine's own.
                let since = state.clients[slot].ghost.unanswered_since;
                let command = state.clients[slot].machine.handle_timeout(&self.cfg, now);
                let attempt = matches!(command, Some(Command::RunTxn(TxnRequest::Acquire { .. }) | Command::ReadRow));
                if attempt && since.is_some_and(|since| now >= since.plus_ms(self.cfg.unavailable_ms())) {
                    state.ghost.retried_past_budget = true;
                }
                let reads = if matches!(action, Action::TimeoutUnanswered(_)) {
                    // Only a read can go unanswered here; any other command would repeat the plain timeout.
                    if command != Some(Command::ReadRow) {
                        return None;
                    }
                    Reads::Unanswered(Witness::PollUnanswered)
                } else {
                    Reads::Answered
                };
                self.execute_with(state, slot, command, true, reads);
            }
            Action::SectionWrite(c, fate) => {
                let slot = usize::from(c);
                let Section::Started(work) = state.clients[slot].section else {
                    return None;
                };
                let (fence, number) = (work.fence, u8::try_from(work.write).expect("at most MAX_FENCED_WRITES"));
                let writer = state.clients[slot].machine.id();
                let at = self.decision_time(state, slot);
                let run_once = state.clients[slot].kind == ClientKind::RunOnce;
                if fate == CommitFate::UnknownLate {
                    let late = Late::FencedWrite { writer, fence, write: work.write, read_at: at };
                    state.queued = Some(Queued { late, run_once, row_unchanged: true });
                }
                let now = Self::server_time(state.now_ms);
                let write = state.spanner.fenced_write(&self.cfg, writer, fence, work.write, at, fate, || now);
                let (answer, superseded) = (write.answer, write.superseded);
                let force_released = state.spanner.was_force_released(writer, fence);
                Self::record_fenced_write(state, writer, (fence, number), run_once, write);
                // Worlds without an unavailability budget (no `unavailable` fault) retry an unanswered write for ever.
                let heard = (self.cfg.unavailable_ms() > 0).then(|| self.fenced_write_heard(state, slot, fate, work));
                let witnessed = &mut state.ghost.witnessed;
                if answer == FencedOutcome::AlreadyApplied {
                    witnessed.insert(Witness::FencedWriteResolved);
                    if number >= 2 {
                        witnessed.insert(Witness::LaterWriteResolved);
                    }
                }
                state.clients[slot].section = match work.after(answer, self.options.fenced_writes.into(), heard) {
                    WorkStep::Again(work) | WorkStep::Next(work) => Section::Started(work),
                    WorkStep::Done(FencedOutcome::Accepted | FencedOutcome::AlreadyApplied) => Section::Wrote,
                    WorkStep::Done(FencedOutcome::Rejected) => {
                        if superseded {
                            witnessed.insert(Witness::StaleWriteRejected);
                        }
                        if force_released {
                            witnessed.insert(Witness::ForcedWriteRefused);
                        }
                        Section::Rejected
                    }
                    WorkStep::Done(FencedOutcome::Retry) => {
                        witnessed.insert(Witness::FencedWriteGaveUp);
                        Section::Unanswered
                    }
                };
            }
            Action::SectionReturn(c) => {
                let slot = usize::from(c);
                let result = match state.clients[slot].section {
                    Section::Wrote => FencedOutcome::Accepted.section_result(),
                    Section::Rejected => FencedOutcome::Rejected.section_result(),
                    Section::Unanswered => FencedOutcome::Retry.section_result(),
                    Section::Idle | Section::Started(_) => return None,
                };
                state.clients[slot].section = Section::Idle;
                let event = if state.clients[slot].kind.is_lock_mode() {
                    Event::ReleaseRequested
                } else {
                    Event::SectionFinished(result)
                };
                self.deliver(state, slot, event);
            }
            Action::NeedAnswer(c) => {
                let slot = usize::from(c);
                if state.clients[slot].op != Op::NeedCheck {
                    return None;
                }
                state.clients[slot].op = Op::Idle;
                let needed = state.effects.is_empty();
                self.deliver(state, slot, Event::NeedAnswered { needed });
            }
            Action::NeedFail(c) => {
                let slot = usize::from(c);
                if state.clients[slot].op != Op::NeedCheck {
                    return None;
                }
                state.clients[slot].op = Op::Idle;
                self.deliver(state, slot, Event::NeedCheckFailed);
            }
            Action::Cancel(c) => {
                let slot = usize::from(c);
                state.cancels_left -= 1;
                let client = &mut state.clients[slot];
                client.ghost.cancelled_in = Some(client.machine.phase());
                // Dropping the run drops the user's need check and section with it; a transaction in flight
                // still answers the machine.
                if client.op == Op::NeedCheck {
                    client.op = Op::Idle;
                }
                client.section = Section::Idle;
                self.deliver(state, slot, Event::Cancel);
            }
            Action::SectionFail(c) => {
                let slot = usize::from(c);
                state.clients[slot].section = Section::Idle;
                state.clients[slot].ghost.section_failed = true;
                self.deliver(state, slot, Event::SectionFinished(SectionResult::Failed { error: "boom".into() }));
            }
            Action::Crash(c) => {
                let slot = usize::from(c);
                let old = &state.clients[slot];
                state.clients[slot] = self.fresh_slot(slot, old.incarnation + 1, old.lag_ms);
                self.start(state, slot);
            }
            Action::Drift(c) => {
                state.clients[usize::from(c)].lag_ms += 1;
            }
            Action::LateCommit => {
                let queued = state.queued.take()?;
                self.land_late(state, queued);
            }
            Action::Operator(action) => {
                if !self.operator_may(action, state.spanner.row.as_ref(), state.operators_left) {
                    return None;
                }
                let row = state.spanner.row.as_ref()?;
                state.operators_left -= 1;
                let now = Self::server_time(state.now_ms);
                if action == OperatorAction::ForceRelease && now < row.expires_at {
                    state.ghost.witnessed.insert(Witness::ForceReleasedLive);
                }
                let fence = row.fence;
                let request = TxnRequest::Operator { action, fence, by: "operator".into(), reason: "checked".into() };
                let commit = state.spanner.commit(&self.cfg, &request, now, CommitFate::AsDecided, false, || now);
                Self::record_change(state, commit.change);
            }
            Action::TxnDelay(c) => {
                let slot = usize::from(c);
                let now = self.decision_time(state, slot);
                let Op::TxnRead { read_at, row_unchanged, clock_erred, .. } = &mut state.clients[slot].op else {
                    return None;
                };
                *read_at = now;
                *row_unchanged = true;
                *clock_erred = false;
            }
            Action::ClockError(c, error) => {
                let Op::TxnRead { read_at, clock_erred, .. } = &mut state.clients[usize::from(c)].op else {
                    return None;
                };
                *read_at = server_read(*read_at, error.error_us(SERVER_CLOCK_ERROR_MS));
                *clock_erred = true;
                state.ghost.clock_erred = true;
            }
        }
        Some(())
    }
}

/// The checker's world as the kernel's [`Executor`]: a step's commands carried out on its state. Every method
/// answers through [`LeaseModel::deliver`] itself, so none returns a next command.
struct StepExecutor<'a> {
    model: &'a LeaseModel,
    state: &'a mut WorldState,
    /// Whether Spanner answers the read this step commands first.
    reads: Reads,
}

impl Executor for StepExecutor<'_> {
    fn grants_locks(&self, slot: usize) -> bool {
        self.state.clients[slot].kind.is_lock_mode()
    }

    fn check_need(&mut self, slot: usize) -> Option<Command> {
        let (model, state) = (self.model, &mut *self.state);
        let client = &mut state.clients[slot];
        // With a cancel or a failure still possible, the check takes a step of its own, so either can come during
        // it; else it answers when asked, from the effects applied by then (nothing can tell the two apart).
        if model.need_check_takes_a_step(
            state.cancels_left > 0 && client.ghost.cancelled_in.is_none(),
            client.machine.phase(),
            state.faults_left,
        ) {
            client.op = Op::NeedCheck;
        } else {
            let needed = state.effects.is_empty();
            model.deliver(state, slot, Event::NeedAnswered { needed });
        }
        None
    }

    fn run_txn(&mut self, slot: usize, request: TxnRequest) -> Option<Command> {
        let read_at = self.model.decision_time(self.state, slot);
        let sent_at = LeaseModel::local_now(self.state, slot);
        self.state.clients[slot].op =
            Op::TxnRead { request, row_unchanged: true, read_at, clock_erred: false, sent_at };
        None
    }

    fn read_row(&mut self, slot: usize) -> Option<Command> {
        let (model, state) = (self.model, &mut *self.state);
        match self.reads {
            Reads::Answered => {
                model.note_answer(state, slot, None);
                let event = state.spanner.read(LeaseModel::server_time(state.now_ms));
                model.deliver(state, slot, event);
            }
            Reads::Unanswered(witness) => {
                state.ghost.witnessed.insert(witness);
                model.note_answer(state, slot, Some(LeaseModel::local_now(state, slot)));
                model.deliver(state, slot, Event::ReadFailed(spanner_mutex_model::Failure::Unavailable));
            }
        }
        None
    }

    fn start_work(&mut self, slot: usize, work: Work, granted: bool) -> Option<Command> {
        let state = &mut *self.state;
        let client = &mut state.clients[slot];
        client.section = Section::Started(work);
        if granted {
            client.ghost.granted = true;
            let waited = client.ghost.waits > 0;
            let ghost = &mut state.ghost;
            ghost.term_regressed |= ghost.max_term.is_some_and(|max| work.fence <= max);
            ghost.max_term = ghost.max_term.max(Some(work.fence));
            // The acquisition this grant follows was made in this same step (or its resolution read was).
            if waited && ghost.witnessed.contains(Witness::DoneAcquired) {
                ghost.witnessed.insert(Witness::HandedOver);
            }
        }
        LeaseModel::witness_won(state, slot);
        None
    }

    // The checked section ignores the signal on purpose: fencing, not good manners, must keep it safe.
    fn lock_lost(&mut self, _slot: usize, _fence: Fence) -> Option<Command> {
        self.state.ghost.witnessed.insert(Witness::LockLost);
        None
    }

    fn finish(&mut self, slot: usize, outcome: Outcome) -> Option<Command> {
        let (model, state) = (self.model, &mut *self.state);
        LeaseModel::judge_release(state, slot, &outcome);
        let effects = state.effect_leases();
        let client = &state.clients[slot];
        // The checker's need check answers from the effects at once, and a run finishes right after it.
        let facts = OutcomeFacts {
            client: client.machine.id(),
            effects: &effects,
            row: state.spanner.row.as_ref(),
            last_need_answer: Some(state.effects.is_empty()),
            waits: client.ghost.waits,
            max_retries: model.cfg.max_retries(),
        };
        state.ghost.false_outcome |= !outcome_is_true(&outcome, &facts);
        LeaseModel::witness_finish(state, slot, &outcome);
        let client = &mut state.clients[slot];
        if client.kind == ClientKind::Leader
            && client.ghost.cancelled_in.is_none()
            && client.ghost.campaigns < LEADER_CAMPAIGNS
        {
            client.ghost.term_ended |= client.ghost.granted;
            model.campaign_again(state, slot);
        }
        None
    }

    fn contract_broken(&mut self, _slot: usize, _what: &'static str) {
        self.state.ghost.driver_contract_broken = true;
    }
}
