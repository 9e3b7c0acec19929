//! The exact commands the client machine emits for each handler.

use spanner_mutex_model::txn::{AcquisitionKind, Mode, ReleaseStatus};
use spanner_mutex_model::{
    ClientId, ClientMachine, Command, Config, ConfigParams, Event, Failure, Fence, LeaseRow, LocalInstant, Outcome,
    SectionResult, ServerTime, Status, TxnReply, TxnRequest,
};

const ME: ClientId = ClientId::from_u128(1);
const OTHER: ClientId = ClientId::from_u128(2);

/// ttl 10, margin 2 (local lease 8; covers 1 ms of server clock error each way), renew every 3, wait 1, max wait 5, 2 retries, no jitter.
fn cfg() -> Config {
    ConfigParams {
        ttl_ms: 10,
        staleness_ms: 1_000,
        wait_ms: 1,
        max_wait_ms: 5,
        max_retries: 2,
        renew_interval_ms: 3,
        safety_margin_ms: 2,
        clock_drift_ppm: 0,
        server_uncertainty_ms: 1,
        jitter_ms: 0,
        ..ConfigParams::default()
    }
    .validate()
    .expect("valid")
}

fn t(ms: u64) -> LocalInstant {
    LocalInstant::from_ms(ms)
}

fn server(ms: i64) -> ServerTime {
    ServerTime::from_unix_micros(ms * 1_000)
}

fn acquire(mode: Mode) -> Command {
    Command::RunTxn(TxnRequest::Acquire { client: ME, holder_name: "me".into(), mode })
}

fn acquired(fence: u64) -> Event {
    Event::TxnCommitted(TxnReply::Acquired {
        fence: Fence::new(fence),
        expires_at: server(100),
        kind: AcquisitionKind::Fresh,
    })
}

fn release(fence: u64, status: ReleaseStatus) -> Command {
    Command::RunTxn(TxnRequest::Release { client: ME, fence: Fence::new(fence), status })
}

fn row(holder: ClientId, fence: u64, status: Status, expires_ms: i64) -> LeaseRow {
    LeaseRow {
        status,
        holder,
        holder_name: String::new(),
        fence: Fence::new(fence),
        updated_at: server(0),
        expires_at: server(expires_ms),
        attempt: 1,
        last_error: None,
        fenced_writes: 0,
    }
}

struct Harness {
    cfg: Config,
    machine: ClientMachine,
}

impl Harness {
    fn run_once() -> Self {
        let cfg = cfg();
        let machine = ClientMachine::run_once(ME, "me", &cfg);
        Self { cfg, machine }
    }

    fn lock(max_retries: u32) -> Self {
        Self { cfg: cfg(), machine: ClientMachine::lock(ME, "me", max_retries) }
    }

    fn on(&mut self, now: u64, event: Event) -> Option<Command> {
        self.machine.handle(&self.cfg, t(now), event).expect("expected event")
    }

    fn timeout(&mut self, now: u64) -> Option<Command> {
        self.machine.handle_timeout(&self.cfg, t(now))
    }

    fn poll(&self) -> Option<LocalInstant> {
        self.machine.poll_timeout()
    }

    /// Start, need true, acquire sent at 0 and committed with fence 1, need true again: section running.
    fn holding() -> Self {
        let mut h = Self::run_once();
        assert_eq!(h.machine.start(t(0)), Some(Command::CheckNeed));
        assert_eq!(h.on(0, Event::NeedAnswered { needed: true }), Some(acquire(Mode::RunOnce)));
        assert_eq!(h.on(1, acquired(1)), Some(Command::CheckNeed));
        assert_eq!(
            h.on(1, Event::NeedAnswered { needed: true }),
            Some(Command::RunSection { fence: Fence::new(1), deadline: t(8) })
        );
        h
    }
}

#[test]
fn uncontended_run_once_checks_need_twice_acquires_runs_and_releases_done() {
    let mut h = Harness::holding();
    assert_eq!(h.poll(), Some(t(3)), "first renewal is due renew_interval after the acquire was sent");
    assert_eq!(h.on(2, Event::SectionFinished(SectionResult::Completed)), Some(release(1, ReleaseStatus::Done)));
    assert_eq!(h.poll(), None);
    assert_eq!(
        h.on(2, Event::TxnCommitted(TxnReply::Released)),
        Some(Command::Finish(Outcome::Executed { fence: Fence::new(1) }))
    );
    assert_eq!(h.machine.outcome(), Some(&Outcome::Executed { fence: Fence::new(1) }));
}

#[test]
fn not_needed_before_acquiring_finishes_without_touching_the_row() {
    let mut h = Harness::run_once();
    assert_eq!(h.machine.start(t(0)), Some(Command::CheckNeed));
    assert_eq!(h.on(0, Event::NeedAnswered { needed: false }), Some(Command::Finish(Outcome::NotNeeded)));
}

#[test]
fn not_needed_under_the_lease_releases_done() {
    let mut h = Harness::run_once();
    h.machine.start(t(0));
    h.on(0, Event::NeedAnswered { needed: true });
    assert_eq!(h.on(1, acquired(4)), Some(Command::CheckNeed));
    assert_eq!(h.on(1, Event::NeedAnswered { needed: false }), Some(release(4, ReleaseStatus::Done)));
    assert_eq!(h.on(2, Event::TxnCommitted(TxnReply::Released)), Some(Command::Finish(Outcome::NotNeeded)));
}

#[test]
fn busy_lease_sleeps_until_server_expiry_then_observes_with_one_read() {
    let mut h = Harness::run_once();
    h.machine.start(t(0));
    h.on(0, Event::NeedAnswered { needed: true });
    let busy = TxnReply::Busy { holder: OTHER, fence: Fence::new(3), expires_at: server(54), server_now: server(50) };
    assert_eq!(h.on(10, Event::TxnCommitted(busy)), None);
    assert_eq!(h.poll(), Some(t(14)), "wakes when the holder's lease expires, on the local clock");
    assert_eq!(h.timeout(13), None, "not before");
    assert_eq!(h.timeout(14), Some(Command::ReadRow));
    let expired = row(OTHER, 3, Status::Started, 54);
    assert_eq!(h.on(15, Event::RowRead { row: Some(expired), server_now: server(55) }), Some(acquire(Mode::RunOnce)));
}

#[test]
fn busy_wait_is_bounded_by_max_wait() {
    let mut h = Harness::run_once();
    h.machine.start(t(0));
    h.on(0, Event::NeedAnswered { needed: true });
    let busy = TxnReply::Busy { holder: OTHER, fence: Fence::new(3), expires_at: server(1_000), server_now: server(0) };
    assert_eq!(h.on(10, Event::TxnCommitted(busy)), None);
    assert_eq!(h.poll(), Some(t(15)));
}

#[test]
fn done_by_other_finishes() {
    let mut h = Harness::run_once();
    h.machine.start(t(0));
    h.on(0, Event::NeedAnswered { needed: true });
    let done = TxnReply::DoneByOther { holder: OTHER, fence: Fence::new(2) };
    assert_eq!(
        h.on(1, Event::TxnCommitted(done)),
        Some(Command::Finish(Outcome::DoneByOther { holder: OTHER, fence: Fence::new(2) }))
    );
}

#[test]
fn aborts_back_off_exponentially_and_give_up_after_max_retries() {
    let mut h = Harness::run_once();
    h.machine.start(t(0));
    h.on(0, Event::NeedAnswered { needed: true });
    assert_eq!(h.on(0, Event::TxnAborted), None);
    assert_eq!(h.poll(), Some(t(1)), "first backoff: wait_ms");
    assert_eq!(h.timeout(1), Some(acquire(Mode::RunOnce)));
    assert_eq!(h.on(1, Event::TxnAborted), None);
    assert_eq!(h.poll(), Some(t(3)), "second backoff: wait_ms * 2");
    assert_eq!(h.timeout(3), Some(acquire(Mode::RunOnce)));
    assert_eq!(h.on(3, Event::TxnAborted), Some(Command::Finish(Outcome::GaveUp { attempts: 3 })));
}

#[test]
fn unknown_acquire_outcome_that_committed_is_resolved_by_reading_holder_and_fence() {
    let mut h = Harness::run_once();
    h.machine.start(t(0));
    h.on(0, Event::NeedAnswered { needed: true });
    assert_eq!(h.on(5, Event::TxnOutcomeUnknown), Some(Command::ReadRow));
    let ours = row(ME, 7, Status::Started, 20);
    assert_eq!(h.on(6, Event::RowRead { row: Some(ours), server_now: server(12) }), Some(Command::CheckNeed));
    assert_eq!(
        h.on(6, Event::NeedAnswered { needed: true }),
        Some(Command::RunSection { fence: Fence::new(7), deadline: t(11) }),
        "the deadline comes from the expiry the read showed: read sent at 5 + (20 - 12) - margin 2"
    );
    assert_eq!(h.poll(), Some(t(6)), "renewal due as long before the deadline as usual");
}

#[test]
fn resolution_trusts_the_expiry_it_reads_not_the_send_time_of_the_unknown_attempt() {
    // Found by the model checker: the row may show an earlier grant of ours about to expire.
    let mut h = Harness::run_once();
    h.machine.start(t(0));
    h.on(0, Event::NeedAnswered { needed: true });
    h.on(10, Event::TxnOutcomeUnknown);
    let old_grant = row(ME, 1, Status::Started, 14);
    assert_eq!(h.on(11, Event::RowRead { row: Some(old_grant), server_now: server(10) }), Some(Command::CheckNeed));
    assert_eq!(
        h.on(11, Event::NeedAnswered { needed: true }),
        Some(Command::RunSection { fence: Fence::new(1), deadline: t(12) }),
        "read sent at 10 + (14 - 10) - margin 2 = 12, not 10 + ttl - margin = 18"
    );
    assert_eq!(h.machine.relies_on_lease_at(t(12)), None);
}

#[test]
fn unknown_acquire_outcome_that_did_not_commit_counts_a_retry_and_tries_again() {
    let mut h = Harness::run_once();
    h.machine.start(t(0));
    h.on(0, Event::NeedAnswered { needed: true });
    assert_eq!(h.on(5, Event::TxnOutcomeUnknown), Some(Command::ReadRow));
    assert_eq!(h.on(6, Event::RowRead { row: None, server_now: server(12) }), None);
    assert_eq!(h.machine.attempts(), 1);
    assert_eq!(h.poll(), Some(t(6)));
    assert_eq!(h.timeout(6), Some(acquire(Mode::RunOnce)));
}

#[test]
fn unknown_acquire_outcome_where_someone_else_holds_waits_for_them() {
    let mut h = Harness::run_once();
    h.machine.start(t(0));
    h.on(0, Event::NeedAnswered { needed: true });
    h.on(5, Event::TxnOutcomeUnknown);
    let theirs = row(OTHER, 2, Status::Started, 15);
    assert_eq!(h.on(6, Event::RowRead { row: Some(theirs), server_now: server(12) }), None);
    assert_eq!(h.poll(), Some(t(9)));
    assert_eq!(h.timeout(9), Some(Command::ReadRow));
}

#[test]
fn renewal_is_sent_on_time_and_extends_the_deadline_from_its_send_time() {
    let mut h = Harness::holding();
    assert_eq!(h.timeout(2), None);
    assert_eq!(h.timeout(3), Some(Command::RunTxn(TxnRequest::Renew { client: ME, fence: Fence::new(1) })));
    assert_eq!(h.poll(), Some(t(8)), "while the renewal is in flight only the deadline is armed");
    assert_eq!(h.on(4, Event::TxnCommitted(TxnReply::Renewed { expires_at: server(200) })), None);
    assert_eq!(h.machine.lease().map(|l| l.deadline), Some(t(11)), "3 + ttl - margin");
    assert_eq!(h.poll(), Some(t(6)), "next renewal: 3 + renew_interval");
}

#[test]
fn lock_lost_is_signalled_when_the_deadline_passes_without_a_renewal() {
    let mut h = Harness::holding();
    assert_eq!(h.timeout(3), Some(Command::RunTxn(TxnRequest::Renew { client: ME, fence: Fence::new(1) })));
    assert_eq!(h.on(4, Event::TxnOutcomeUnknown), None, "retried, not assumed");
    assert_eq!(h.poll(), Some(t(5)), "after min(wait_ms, renew_interval_ms), not at once");
    assert_eq!(h.timeout(5), Some(Command::RunTxn(TxnRequest::Renew { client: ME, fence: Fence::new(1) })));
    assert_eq!(h.on(5, Event::TxnFailed(Failure::Unavailable)), None);
    assert_eq!(h.timeout(8), Some(Command::SignalLockLost { fence: Fence::new(1) }));
    assert_eq!(h.machine.relies_on_lease_at(t(8)), None);
    assert_eq!(h.poll(), None, "lock lost is final: no more renewals");
    assert_eq!(h.on(9, Event::SectionFinished(SectionResult::Completed)), Some(release(1, ReleaseStatus::Done)));
    assert_eq!(
        h.on(9, Event::TxnCommitted(TxnReply::NotHolder)),
        Some(Command::Finish(Outcome::LeaseLost { fence: Fence::new(1) }))
    );
}

#[test]
fn renewal_refused_signals_lock_lost_at_once() {
    let mut h = Harness::holding();
    h.timeout(3);
    assert_eq!(
        h.on(4, Event::TxnCommitted(TxnReply::NotHolder)),
        Some(Command::SignalLockLost { fence: Fence::new(1) })
    );
    assert_eq!(h.poll(), None);
}

#[test]
fn a_paused_holder_signals_lock_lost_before_renewing() {
    let mut h = Harness::holding();
    assert_eq!(h.timeout(50), Some(Command::SignalLockLost { fence: Fence::new(1) }));
    assert_eq!(h.timeout(51), None);
}

#[test]
fn reliance_on_the_lease_ends_at_the_local_deadline() {
    let h = Harness::holding();
    assert_eq!(h.machine.relies_on_lease_at(t(7)), Some(Fence::new(1)));
    assert_eq!(h.machine.relies_on_lease_at(t(8)), None);
}

#[test]
fn section_finishing_during_a_renewal_releases_after_the_renewal_answers() {
    let mut h = Harness::holding();
    h.timeout(3);
    assert_eq!(h.on(4, Event::SectionFinished(SectionResult::Completed)), None);
    assert_eq!(
        h.on(5, Event::TxnCommitted(TxnReply::Renewed { expires_at: server(20) })),
        Some(release(1, ReleaseStatus::Done))
    );
}

#[test]
fn failed_section_releases_failed_then_retries_after_wait() {
    let mut h = Harness::holding();
    let failed = SectionResult::Failed { error: "disk full".into() };
    assert_eq!(
        h.on(2, Event::SectionFinished(failed)),
        Some(release(1, ReleaseStatus::Failed { error: "disk full".into() }))
    );
    assert_eq!(h.on(3, Event::TxnCommitted(TxnReply::Released)), None);
    assert_eq!(h.poll(), Some(t(4)));
    assert_eq!(h.timeout(4), Some(acquire(Mode::RunOnce)));
}

#[test]
fn a_cancel_whose_release_is_not_confirmed_is_not_reported_cancelled() {
    // Found by the simulator's every-mode sweep: a failed section's release was in flight through an outage when
    // the user cancelled; the release failed, and the run reported Cancelled with its lease still on the row.
    let mut h = Harness::holding();
    let failed = SectionResult::Failed { error: "Spanner unavailable".into() };
    assert_eq!(
        h.on(2, Event::SectionFinished(failed)),
        Some(release(1, ReleaseStatus::Failed { error: "Spanner unavailable".into() }))
    );
    assert_eq!(h.on(3, Event::Cancel), None);
    assert_eq!(
        h.on(4, Event::TxnFailed(Failure::Unavailable)),
        Some(Command::Finish(Outcome::Failed(Failure::Unavailable)))
    );
    // The same for a cancel while holding.
    let mut h = Harness::holding();
    h.on(2, Event::Cancel);
    assert_eq!(
        h.on(3, Event::TxnFailed(Failure::Unavailable)),
        Some(Command::Finish(Outcome::Failed(Failure::Unavailable)))
    );
}

#[test]
fn a_cancelled_acquisition_that_fails_for_good_is_not_reported_cancelled() {
    // An earlier attempt of the run may hold the row, and nothing can be read to find out.
    let mut h = Harness::run_once();
    h.machine.start(t(0));
    h.on(0, Event::NeedAnswered { needed: true });
    assert_eq!(h.on(1, Event::Cancel), None);
    assert_eq!(h.on(2, Event::TxnFailed(Failure::Rejected)), Some(Command::Finish(Outcome::Failed(Failure::Rejected))));
}

#[test]
fn unknown_release_outcome_is_resolved_by_reading_the_row() {
    let mut h = Harness::holding();
    h.on(2, Event::SectionFinished(SectionResult::Completed));
    assert_eq!(h.on(3, Event::TxnOutcomeUnknown), Some(Command::ReadRow));
    let still_started = row(ME, 1, Status::Started, 11);
    assert_eq!(
        h.on(3, Event::RowRead { row: Some(still_started), server_now: server(5) }),
        Some(release(1, ReleaseStatus::Done)),
        "not committed: send again"
    );
    assert_eq!(h.on(4, Event::TxnOutcomeUnknown), Some(Command::ReadRow));
    let done = row(ME, 1, Status::Done, 5);
    assert_eq!(
        h.on(4, Event::RowRead { row: Some(done), server_now: server(6) }),
        Some(Command::Finish(Outcome::Executed { fence: Fence::new(1) })),
        "committed: done"
    );
}

#[test]
fn unknown_release_where_someone_else_took_over_reports_the_lease_lost() {
    let mut h = Harness::holding();
    h.on(2, Event::SectionFinished(SectionResult::Completed));
    h.on(3, Event::TxnOutcomeUnknown);
    let theirs = row(OTHER, 2, Status::Started, 30);
    assert_eq!(
        h.on(3, Event::RowRead { row: Some(theirs), server_now: server(20) }),
        Some(Command::Finish(Outcome::LeaseLost { fence: Fence::new(1) }))
    );
}

#[test]
fn cancel_while_holding_releases_failed_and_finishes_cancelled() {
    let mut h = Harness::holding();
    assert_eq!(h.on(2, Event::Cancel), Some(release(1, ReleaseStatus::Failed { error: "Cancelled".into() })));
    assert_eq!(h.on(3, Event::TxnCommitted(TxnReply::Released)), Some(Command::Finish(Outcome::Cancelled)));
}

#[test]
fn cancel_during_the_need_check_under_the_lease_releases_at_once() {
    let mut h = Harness::run_once();
    h.machine.start(t(0));
    h.on(0, Event::NeedAnswered { needed: true });
    assert_eq!(h.on(1, acquired(4)), Some(Command::CheckNeed));
    // The need check's answer is not waited for: it cannot change what a cancel means under the lease.
    assert_eq!(h.on(2, Event::Cancel), Some(release(4, ReleaseStatus::Failed { error: "Cancelled".into() })));
    assert_eq!(h.on(3, Event::TxnCommitted(TxnReply::Released)), Some(Command::Finish(Outcome::Cancelled)));
}

#[test]
fn cancel_after_the_section_finished_keeps_its_result_and_still_releases() {
    let mut h = Harness::holding();
    assert!(matches!(h.timeout(3), Some(Command::RunTxn(TxnRequest::Renew { .. }))));
    assert_eq!(h.on(3, Event::SectionFinished(SectionResult::Completed)), None, "waits for the renewal");
    assert_eq!(h.on(3, Event::Cancel), None, "a cancel now changes nothing: the section completed");
    assert_eq!(
        h.on(4, Event::TxnCommitted(TxnReply::Renewed { expires_at: server(14) })),
        Some(release(1, ReleaseStatus::Done))
    );
    assert_eq!(
        h.on(5, Event::TxnCommitted(TxnReply::Released)),
        Some(Command::Finish(Outcome::Executed { fence: Fence::new(1) }))
    );
}

#[test]
fn an_unconfirmed_lock_release_is_not_reported_as_released() {
    let mut h = Harness::lock(0);
    h.machine.start(t(0));
    h.on(1, acquired(5));
    assert_eq!(h.on(2, Event::ReleaseRequested), Some(release(5, ReleaseStatus::Done)));
    assert_eq!(
        h.on(3, Event::TxnFailed(Failure::Unavailable)),
        Some(Command::Finish(Outcome::Failed(Failure::Unavailable)))
    );
}

#[test]
fn cancel_during_an_acquire_waits_for_its_outcome_and_releases_if_it_won() {
    let mut h = Harness::run_once();
    h.machine.start(t(0));
    h.on(0, Event::NeedAnswered { needed: true });
    assert_eq!(h.on(1, Event::Cancel), None);
    assert_eq!(h.on(2, acquired(3)), Some(release(3, ReleaseStatus::Failed { error: "Cancelled".into() })));
    assert_eq!(h.on(3, Event::TxnCommitted(TxnReply::Released)), Some(Command::Finish(Outcome::Cancelled)));
}

#[test]
fn cancel_while_waiting_to_acquire_again_reads_the_row_then_finishes() {
    let mut h = Harness::run_once();
    h.machine.start(t(0));
    h.on(0, Event::NeedAnswered { needed: true });
    h.on(0, Event::TxnAborted);
    assert_eq!(h.on(1, Event::Cancel), Some(Command::ReadRow), "a lease of ours could be on the row");
    let other = row(OTHER, 4, Status::Started, 20);
    assert_eq!(
        h.on(2, Event::RowRead { row: Some(other), server_now: server(2) }),
        Some(Command::Finish(Outcome::Cancelled))
    );
}

#[test]
fn cancel_after_an_unresolved_unknown_acquisition_releases_the_lease_it_finds() {
    // Found by the driver conformance test: the acquisition landed, its outcome was unknown, the resolving read
    // failed, and a cancel during the wait before acquiring again left the lease on the row until its TTL.
    let mut h = Harness::run_once();
    h.machine.start(t(0));
    h.on(0, Event::NeedAnswered { needed: true });
    assert_eq!(h.on(1, Event::TxnOutcomeUnknown), Some(Command::ReadRow));
    assert_eq!(h.on(2, Event::ReadFailed(Failure::Unavailable)), None, "waits to acquire again");
    assert_eq!(h.on(2, Event::Cancel), Some(Command::ReadRow));
    let ours = row(ME, 7, Status::Started, 20);
    assert_eq!(
        h.on(3, Event::RowRead { row: Some(ours), server_now: server(3) }),
        Some(release(7, ReleaseStatus::Failed { error: "Cancelled".into() }))
    );
    assert_eq!(h.on(4, Event::TxnCommitted(TxnReply::Released)), Some(Command::Finish(Outcome::Cancelled)));
}

#[test]
fn a_cancelled_acquisition_that_aborts_releases_an_earlier_grant_it_finds() {
    // Found by the model checker once cancels became user steps: the grant ran out during the need check, the
    // re-acquisition was cancelled and aborted, and the run reported Cancelled with the first grant on the row.
    let mut h = Harness::run_once();
    h.machine.start(t(0));
    h.on(0, Event::NeedAnswered { needed: true });
    assert_eq!(h.on(0, acquired(1)), Some(Command::CheckNeed));
    assert_eq!(h.on(9, Event::NeedAnswered { needed: true }), None, "the grant ran out: acquire again");
    assert_eq!(h.timeout(9), Some(acquire(Mode::RunOnce)));
    assert_eq!(h.on(9, Event::Cancel), None);
    assert_eq!(h.on(9, Event::TxnAborted), Some(Command::ReadRow), "the first grant could still be on the row");
    let ours = row(ME, 1, Status::Started, 10);
    assert_eq!(
        h.on(9, Event::RowRead { row: Some(ours), server_now: server(9) }),
        Some(release(1, ReleaseStatus::Failed { error: "Cancelled".into() }))
    );
    assert_eq!(h.on(9, Event::TxnCommitted(TxnReply::Released)), Some(Command::Finish(Outcome::Cancelled)));
}

#[test]
fn cancel_while_waiting_on_another_lease_finishes_at_once() {
    let mut h = Harness::run_once();
    h.machine.start(t(0));
    h.on(0, Event::NeedAnswered { needed: true });
    let busy = TxnReply::Busy { holder: OTHER, fence: Fence::new(4), expires_at: server(20), server_now: server(1) };
    assert_eq!(h.on(1, Event::TxnCommitted(busy)), None);
    assert_eq!(h.on(2, Event::Cancel), Some(Command::Finish(Outcome::Cancelled)));
}

#[test]
fn failures_are_typed_outcomes() {
    let mut h = Harness::run_once();
    h.machine.start(t(0));
    assert_eq!(h.on(0, Event::NeedCheckFailed), Some(Command::Finish(Outcome::Failed(Failure::NeedCheck))));
}

#[test]
fn an_unavailable_spanner_is_retried_for_unavailable_ms_without_counting_attempts_then_reported() {
    let mut h = Harness::run_once();
    h.machine.start(t(0));
    h.on(0, Event::NeedAnswered { needed: true });
    let budget_ms = h.cfg.unavailable_ms();
    assert_eq!(h.on(1, Event::TxnFailed(Failure::Unavailable)), None, "waits");
    assert_eq!(h.poll(), Some(t(2)), "one wait_ms");
    assert_eq!(h.timeout(2), Some(acquire(Mode::RunOnce)));
    assert_eq!(h.machine.attempts(), 0, "not a retry: nobody was seen holding the lease");
    // Still failing when the next wait would end past the budget (counted from the first failure, at 1 ms).
    assert_eq!(
        h.on(budget_ms, Event::TxnFailed(Failure::Unavailable)),
        Some(Command::Finish(Outcome::Failed(Failure::Unavailable)))
    );
    // An answer in between starts the budget afresh.
    let mut h = Harness::run_once();
    h.machine.start(t(0));
    h.on(0, Event::NeedAnswered { needed: true });
    h.on(1, Event::TxnFailed(Failure::Unavailable));
    h.timeout(2);
    h.on(3, Event::TxnAborted);
    h.timeout(budget_ms);
    assert_eq!(h.on(budget_ms, Event::TxnFailed(Failure::Unavailable)), None, "a fresh budget");
}

#[test]
fn a_need_check_failing_under_the_lease_releases_failed_saying_so_in_words() {
    let mut h = Harness::run_once();
    h.machine.start(t(0));
    h.on(0, Event::NeedAnswered { needed: true });
    h.on(1, acquired(3));
    let error = "the need check failed under the lease".to_owned();
    assert_eq!(h.on(1, Event::NeedCheckFailed), Some(release(3, ReleaseStatus::Failed { error })));
}

#[test]
fn an_unanswered_release_starts_the_unavailability_clock_from_its_send() {
    // A release that takes long to fail must not buy the run extra time: the clock starts at its send, not when
    // the failure arrives.
    let mut h = Harness::run_once();
    h.machine.start(t(0));
    h.on(0, Event::NeedAnswered { needed: true });
    h.on(1, acquired(3));
    h.on(1, Event::NeedAnswered { needed: true });
    let sent = h.on(2, Event::SectionFinished(SectionResult::Failed { error: "boom".into() }));
    assert!(matches!(sent, Some(Command::RunTxn(TxnRequest::Release { .. }))), "{sent:?}");
    h.on(7, Event::TxnFailed(Failure::Unavailable));
    assert_eq!(h.machine.unavailable_since(), Some(t(2)), "from the release's send, not from its failure");
}

#[test]
fn lock_mode_grants_renews_and_releases_done() {
    let mut h = Harness::lock(0);
    assert_eq!(h.machine.start(t(0)), Some(acquire(Mode::Lock)));
    assert_eq!(h.on(1, acquired(5)), Some(Command::Granted { fence: Fence::new(5), deadline: t(8) }));
    assert_eq!(h.timeout(3), Some(Command::RunTxn(TxnRequest::Renew { client: ME, fence: Fence::new(5) })));
    assert_eq!(h.on(3, Event::TxnCommitted(TxnReply::Renewed { expires_at: server(13) })), None);
    assert_eq!(h.on(4, Event::ReleaseRequested), Some(release(5, ReleaseStatus::Done)));
    assert_eq!(
        h.on(4, Event::TxnCommitted(TxnReply::Released)),
        Some(Command::Finish(Outcome::Released { fence: Fence::new(5) }))
    );
}

#[test]
fn a_release_before_the_grant_is_a_cancel_that_still_releases_a_won_lease() {
    let mut h = Harness::lock(5);
    h.machine.start(t(0));
    assert_eq!(h.on(1, Event::ReleaseRequested), None, "the acquisition in flight must be resolved first");
    assert_eq!(h.on(2, acquired(3)), Some(release(3, ReleaseStatus::Done)));
    assert_eq!(h.on(3, Event::TxnCommitted(TxnReply::Released)), Some(Command::Finish(Outcome::Cancelled)));
}

#[test]
fn try_lock_gives_up_at_once_when_busy() {
    let mut h = Harness::lock(0);
    h.machine.start(t(0));
    let busy = TxnReply::Busy { holder: OTHER, fence: Fence::new(1), expires_at: server(9), server_now: server(1) };
    assert_eq!(h.on(1, Event::TxnCommitted(busy)), Some(Command::Finish(Outcome::GaveUp { attempts: 1 })));
}

#[test]
fn unexpected_events_are_errors_not_silent() {
    let mut h = Harness::run_once();
    h.machine.start(t(0));
    let err = h.machine.handle(&h.cfg, t(0), Event::TxnAborted).expect_err("not waiting for a transaction");
    assert_eq!(err.to_string(), "event TxnAborted is not expected in state AwaitingNeed");
    assert_eq!(h.machine.phase(), spanner_mutex_model::Phase::AwaitingNeed, "the state is kept");
}

#[test]
fn jitter_is_deterministic_per_client_and_bounded() {
    let cfg = ConfigParams { jitter_ms: 7, ..ConfigParams::default() }.validate().expect("valid");
    let wake = |id| {
        let mut m = ClientMachine::run_once(id, "x", &cfg);
        m.start(t(0));
        m.handle(&cfg, t(0), Event::NeedAnswered { needed: true }).expect("ok");
        m.handle(&cfg, t(0), Event::TxnAborted).expect("ok");
        m.poll_timeout().expect("sleeping")
    };
    assert_eq!(wake(ME), wake(ME));
    let wakes: std::collections::BTreeSet<_> = (0..50).map(|id| wake(ClientId::from_u128(id))).collect();
    assert!(wakes.len() > 1, "different clients draw different jitter");
    for &at in &wakes {
        assert!(at >= t(500) && at <= t(507), "{at}");
    }
}

#[test]
fn a_waiter_polls_every_poll_ms_before_the_expiry_it_read_and_polls_are_not_retries() {
    let cfg = ConfigParams { poll_ms: 2, ..cfg().params().clone() }.validate().expect("valid");
    let mut h = Harness { machine: ClientMachine::lock(ME, "me", 5), cfg };
    h.machine.start(t(0));
    let busy = TxnReply::Busy { holder: OTHER, fence: Fence::new(1), expires_at: server(10), server_now: server(1) };
    assert_eq!(h.on(1, Event::TxnCommitted(busy)), None);
    assert_eq!(h.machine.attempts(), 1);
    assert_eq!(h.poll(), Some(t(3)), "a poll 2 ms on, before the counted wake-up at 1 + min(9, max_wait 5) = 6");
    assert_eq!(h.timeout(3), Some(Command::ReadRow));
    let held = row(OTHER, 1, Status::Started, 10);
    assert_eq!(h.on(3, Event::RowRead { row: Some(held.clone()), server_now: server(3) }), None);
    assert_eq!(h.machine.attempts(), 1, "a poll that finds the row busy is not a retry");
    assert_eq!(h.poll(), Some(t(5)));
    assert_eq!(h.timeout(5), Some(Command::ReadRow));
    assert_eq!(h.on(5, Event::RowRead { row: Some(held.clone()), server_now: server(5) }), None);
    assert_eq!(h.poll(), Some(t(6)), "the counted wake-up is not moved by polls");
    assert_eq!(h.timeout(6), Some(Command::ReadRow));
    assert_eq!(h.on(6, Event::RowRead { row: Some(held), server_now: server(6) }), None);
    assert_eq!(h.machine.attempts(), 2, "the wake-up at the expiry read is a retry, as before polls");
    // The holder releases: the next poll sees it long before the expiry and acquires.
    assert_eq!(h.poll(), Some(t(8)));
    assert_eq!(h.timeout(8), Some(Command::ReadRow));
    let released = row(OTHER, 1, Status::Done, 8);
    assert_eq!(h.on(8, Event::RowRead { row: Some(released), server_now: server(8) }), Some(acquire(Mode::Lock)));
}
