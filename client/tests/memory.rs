//! Client behaviour on the in-memory store (the same driver and machine as on Spanner).

use spanner_mutex::faulty::{FaultEffect, FaultTarget, InjectedFault};
use spanner_mutex::google_cloud_spanner::mutation::Mutation;
use spanner_mutex::{
    BoxError, CriticalSection, FaultyStore, Fenced, FencedError, FencedTx, FencedWork, LeaseHandle, LeaseStore,
    MemoryStore, OperatorError, RunError, RunOutcome, SpannerMutex,
};
use spanner_mutex_model::txn::Mode;
use spanner_mutex_model::{ClientId, ConfigParams, Fence, MutexName, Status, TxnReply, TxnRequest};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

fn params() -> ConfigParams {
    ConfigParams {
        ttl_ms: 300,
        renew_interval_ms: 100,
        safety_margin_ms: 50,
        wait_ms: 10,
        max_wait_ms: 50,
        jitter_ms: 5,
        staleness_ms: 60_000,
        ..ConfigParams::default()
    }
}

fn name() -> MutexName {
    MutexName::new("test-mutex").expect("valid")
}

/// The fence the row carries now.
fn row_fence(store: &MemoryStore) -> Fence {
    store.row(&name()).expect("a row").fence
}

fn mutex(store: impl LeaseStore) -> SpannerMutex {
    SpannerMutex::on_store(store, params().validate().expect("valid"), name(), "test")
}

/// Writes the effect through `fenced`, after sleeping; records what it saw.
#[derive(Default)]
struct Section {
    sleep_ms: u64,
    executions: AtomicU64,
    rejected: AtomicU64,
    saw_lock_lost: AtomicBool,
}

/// The effect a section writes under `key`.
fn effect(key: &str) -> Mutation {
    Mutation::new_insert_or_update_builder("Effects").set("id").to(key).build()
}

impl CriticalSection for Section {
    async fn is_needed(&self) -> Result<bool, BoxError> {
        Ok(self.executions.load(Ordering::SeqCst) == 0)
    }
    async fn execute(&self, guard: &LeaseHandle) -> Result<(), BoxError> {
        tokio::time::sleep(Duration::from_millis(self.sleep_ms)).await;
        self.saw_lock_lost.store(guard.is_lock_lost(), Ordering::SeqCst);
        match guard.commit(vec![effect(&format!("effect-{}", guard.fence().get()))]).await {
            Ok(_) => {
                self.executions.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            Err(rejected) => {
                self.rejected.fetch_add(1, Ordering::SeqCst);
                Err(rejected.into())
            }
        }
    }
}

#[tokio::test]
async fn lock_acquire_and_release() {
    let store = MemoryStore::new();
    let mutex = mutex(store.clone());
    let guard = mutex.acquire().await.expect("acquired");
    let first = guard.fence();
    assert_eq!(store.row(&name()).map(|r| (r.status, r.fence)), Some((Status::Started, first)));
    // A created row's first fence is the server time of its creation in microseconds: not after now.
    let (_, server_now) = store.read(&name()).await.expect("reads");
    let age_us = server_now.unix_micros() - i64::try_from(first.get()).expect("fits");
    assert!((0..1_000_000).contains(&age_us), "fence {first} is {age_us} us before the server's now");
    assert!(mutex.try_acquire().await.expect("no error").is_none(), "held by the guard");
    assert_eq!(guard.release().await.expect("released"), first);
    assert_eq!(store.row(&name()).map(|r| r.status), Some(Status::Done));
    let again = mutex.try_acquire().await.expect("no error").expect("free again");
    assert_eq!(again.fence(), first.next());
}

#[tokio::test]
async fn twenty_concurrent_clients_execute_once() {
    let store = MemoryStore::new();
    let mutex = mutex(store.clone());
    let section = Arc::new(Section { sleep_ms: 20, ..Section::default() });
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (mutex, section) = (mutex.clone(), Arc::clone(&section));
            tokio::spawn(async move { mutex.run(section.as_ref()).await })
        })
        .collect();
    let mut executed = 0;
    for task in tasks {
        match task.await.expect("joined").expect("no error") {
            RunOutcome::Executed { .. } => executed += 1,
            RunOutcome::DoneByOther { .. } | RunOutcome::NotNeeded => {}
        }
    }
    assert_eq!(executed, 1);
    assert_eq!(section.executions.load(Ordering::SeqCst), 1);
    assert_eq!(store.mutations().len(), 1);
}

#[tokio::test]
async fn a_vanished_holder_is_taken_over_after_its_ttl() {
    let store = MemoryStore::new();
    let cfg = params().validate().expect("valid");
    // A holder that acquired and then died without releasing.
    let ghost =
        TxnRequest::Acquire { client: ClientId::from_u128(7), holder_name: "ghost".into(), mode: Mode::RunOnce };
    let reply = store.transact(&cfg, &name(), &ghost).await.expect("acquired");
    let TxnReply::Acquired { fence: ghosts, .. } = reply else { panic!("acquired: {reply:?}") };
    let mutex = mutex(store.clone());
    let section = Section::default();
    let outcome = mutex.run(&section).await.expect("runs");
    assert_eq!(outcome, RunOutcome::Executed { fence: ghosts.next() });
    assert_eq!(mutex.metrics().takeovers, 1);
}

#[tokio::test]
async fn a_paused_holder_loses_the_lease_its_fenced_write_is_refused_and_the_section_runs_once() {
    let store = MemoryStore::new();
    let faulty = FaultyStore::new(store.clone());
    // The holder's renewals cannot get through (a paused or partitioned process).
    for _ in 0..50 {
        faulty.inject(InjectedFault { on: FaultTarget::Renew, effect: FaultEffect::Unavailable });
    }
    let paused = mutex(faulty);
    let slow = Arc::new(Section { sleep_ms: 700, ..Section::default() });
    let paused_run = {
        let (paused, slow) = (paused.clone(), Arc::clone(&slow));
        tokio::spawn(async move { paused.run(slow.as_ref()).await })
    };
    // Another client takes over once the lease has expired on the server and does the work.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let paused_fence = store.row(&name()).expect("the paused holder's row").fence;
    let other = mutex(store.clone());
    let quick = Section::default();
    assert_eq!(other.run(&quick).await.expect("runs"), RunOutcome::Executed { fence: paused_fence.next() });
    let paused_outcome = paused_run.await.expect("joined").expect("no error");
    assert!(slow.saw_lock_lost.load(Ordering::SeqCst), "the paused holder was told it lost the lock");
    assert_eq!(slow.rejected.load(Ordering::SeqCst), 1, "its fenced write was refused");
    assert_eq!(slow.executions.load(Ordering::SeqCst), 0);
    assert!(
        matches!(paused_outcome, RunOutcome::DoneByOther { fence, lost_own_lease: Some(own), .. }
            if fence == paused_fence.next() && own == paused_fence),
        "{paused_outcome:?}"
    );
    assert_eq!(paused.metrics().lost, 1);
    assert_eq!(store.mutations().len(), 1, "the effect exists exactly once");
}

#[tokio::test]
async fn an_unknown_commit_that_landed_is_resolved_as_acquired() {
    let faulty = FaultyStore::new(MemoryStore::new());
    faulty.inject(InjectedFault { on: FaultTarget::Acquire, effect: FaultEffect::UnknownCommitted });
    let mutex = mutex(faulty.clone());
    let section = Section::default();
    assert_eq!(mutex.run(&section).await.expect("runs"), RunOutcome::Executed { fence: row_fence(faulty.inner()) });
    let m = mutex.metrics();
    assert_eq!((m.unknown_commits, m.acquisitions), (1, 0), "resolved by a read, not a second acquisition");
    assert!(m.reads >= 1);
}

#[tokio::test]
async fn an_unknown_commit_that_did_not_land_is_retried() {
    let faulty = FaultyStore::new(MemoryStore::new());
    faulty.inject(InjectedFault { on: FaultTarget::Acquire, effect: FaultEffect::UnknownNotCommitted });
    let mutex = mutex(faulty.clone());
    let section = Section::default();
    assert_eq!(mutex.run(&section).await.expect("runs"), RunOutcome::Executed { fence: row_fence(faulty.inner()) });
    assert_eq!(mutex.metrics().unknown_commits, 1);
    assert_eq!(mutex.metrics().acquisitions, 1);
}

#[tokio::test]
async fn renewal_keeps_a_long_section_s_lease() {
    let store = MemoryStore::new();
    let mutex = mutex(store.clone());
    let section = Section { sleep_ms: 1_000, ..Section::default() };
    assert_eq!(mutex.run(&section).await.expect("runs"), RunOutcome::Executed { fence: row_fence(&store) });
    assert!(!section.saw_lock_lost.load(Ordering::SeqCst));
    assert!(mutex.metrics().renewals >= 3, "{:?}", mutex.metrics());
    assert_eq!(mutex.metrics().lost, 0);
}

#[tokio::test]
async fn dropping_a_lock_guard_releases_at_once() {
    let store = MemoryStore::new();
    let mutex = mutex(store.clone());
    let guard = mutex.acquire().await.expect("acquired");
    let first = guard.fence();
    drop(guard);
    // The release runs in the background; the next holder must get the row freed, not expired.
    let next = mutex.acquire_timeout(Duration::from_secs(5)).await.expect("no error").expect("acquired");
    assert_eq!(next.fence(), first.next());
    assert_eq!(mutex.metrics().takeovers, 0, "handed over by release, not by expiry");
}

#[tokio::test]
async fn cancelling_a_run_mid_section_releases_failed_for_the_next_client() {
    let store = MemoryStore::new();
    let mutex = mutex(store.clone());
    let section = Section { sleep_ms: 10_000, ..Section::default() };
    let cancelled = tokio::time::timeout(Duration::from_millis(100), mutex.run(&section)).await;
    assert!(cancelled.is_err(), "timed out, i.e. cancelled");
    let first = row_fence(&store);
    let next = Section::default();
    assert_eq!(mutex.run(&next).await.expect("runs"), RunOutcome::Executed { fence: first.next() });
    assert_eq!(mutex.metrics().takeovers, 0, "the cancelled run released (FAILED) instead of expiring");
}

#[tokio::test]
async fn spanner_unavailable_is_a_typed_error() {
    let faulty = FaultyStore::new(MemoryStore::new());
    faulty.inject(InjectedFault { on: FaultTarget::Acquire, effect: FaultEffect::Unavailable });
    let no_budget = ConfigParams { unavailable_ms: 0, ..params() }.validate().expect("valid");
    let error =
        SpannerMutex::on_store(faulty, no_budget, name(), "test").run(&Section::default()).await.expect_err("down");
    assert!(matches!(&error, RunError::Unavailable(Some(e)) if e.message.contains("injected")), "{error}");
}

#[tokio::test]
async fn a_short_unavailability_is_retried_by_the_machine() {
    let faulty = FaultyStore::new(MemoryStore::new());
    faulty.inject(InjectedFault { on: FaultTarget::Acquire, effect: FaultEffect::Unavailable });
    let outcome = mutex(faulty.clone()).run(&Section::default()).await.expect("retried within unavailable_ms");
    assert_eq!(outcome, RunOutcome::Executed { fence: row_fence(faulty.inner()) });
}

struct FailingNeed;

impl CriticalSection for FailingNeed {
    async fn is_needed(&self) -> Result<bool, BoxError> {
        Err("migrations table unreachable".into())
    }
    async fn execute(&self, _: &LeaseHandle) -> Result<(), BoxError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_failing_need_check_is_a_typed_error_with_its_cause() {
    let error = mutex(MemoryStore::new()).run(&FailingNeed).await.expect_err("fails");
    assert!(matches!(&error, RunError::NeedCheck(cause) if cause.to_string() == "migrations table unreachable"));
}

/// Finds the section needed before the lease, then fails its check under it.
#[derive(Default)]
struct NeedFailsUnderLease {
    checks: AtomicU64,
}

impl CriticalSection for NeedFailsUnderLease {
    async fn is_needed(&self) -> Result<bool, BoxError> {
        match self.checks.fetch_add(1, Ordering::SeqCst) {
            0 => Ok(true),
            _ => Err("migrations table unreachable".into()),
        }
    }
    async fn execute(&self, _: &LeaseHandle) -> Result<(), BoxError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_need_check_failing_under_the_lease_leaves_the_row_failed_and_the_next_run_executes_at_once() {
    let store = MemoryStore::new();
    let error = mutex(store.clone()).run(&NeedFailsUnderLease::default()).await.expect_err("fails");
    assert!(matches!(&error, RunError::NeedCheck(cause) if cause.to_string() == "migrations table unreachable"));
    let row = store.row(&name()).expect("a row");
    assert_eq!(
        (row.status, row.last_error.as_deref()),
        (Status::Failed, Some("the need check failed under the lease"))
    );
    // Another process does not wait for the lease to expire (300 ms): the FAILED row is free.
    let started = tokio::time::Instant::now();
    let outcome = mutex(store.clone()).run(&Section::default()).await.expect("executes");
    assert_eq!(outcome, RunOutcome::Executed { fence: row_fence(&store) });
    assert!(started.elapsed() < Duration::from_millis(params().wait_ms), "{:?}", started.elapsed());
}

#[tokio::test]
async fn try_acquire_gives_up_at_once_and_acquire_timeout_returns_none() {
    let mutex = mutex(MemoryStore::new());
    let _held = mutex.acquire().await.expect("acquired");
    assert!(mutex.try_acquire().await.expect("no error").is_none());
    assert!(mutex.acquire_timeout(Duration::from_millis(100)).await.expect("no error").is_none());
}

/// Makes two fenced writes. With `lose_second`, the second's answer is lost after it landed, and its retry's
/// answer too (injected just before it).
struct TwoWrites {
    results: std::sync::Mutex<Vec<String>>,
    lose_second: Option<FaultyStore<MemoryStore>>,
}

/// The faults that lose a fenced write's answer after it landed, then its first retry's.
fn lose_a_write(store: &FaultyStore<MemoryStore>) {
    for effect in [FaultEffect::UnknownCommitted, FaultEffect::UnknownNotCommitted] {
        store.inject(InjectedFault { on: FaultTarget::FencedWrite, effect });
    }
}

impl CriticalSection for TwoWrites {
    async fn is_needed(&self) -> Result<bool, BoxError> {
        Ok(true)
    }
    async fn execute(&self, guard: &LeaseHandle) -> Result<(), BoxError> {
        for key in ["first", "second"] {
            if let (Some(store), "second") = (&self.lose_second, key) {
                lose_a_write(store);
            }
            let written = guard.commit(vec![effect(key)]).await?;
            self.results.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(format!("{written:?}"));
        }
        Ok(())
    }
}

/// Runs [`TwoWrites`] with the answer of its first write lost, or of its second (`second`); requires the run
/// executed, each write applied once and the row DONE with both recorded; returns what each write was told.
async fn two_writes_losing_an_answer(second: bool) -> Vec<String> {
    let store = FaultyStore::new(MemoryStore::new());
    if !second {
        lose_a_write(&store);
    }
    let section = TwoWrites { results: std::sync::Mutex::default(), lose_second: second.then(|| store.clone()) };
    let outcome = mutex(store.clone()).run(&section).await.expect("runs");
    assert_eq!(outcome, RunOutcome::Executed { fence: row_fence(store.inner()) });
    let committed = store.inner().mutations();
    let count = |key: &str| committed.iter().filter(|m| **m == effect(key)).count();
    assert_eq!((count("first"), count("second"), committed.len()), (1, 1, 2));
    assert_eq!(store.inner().row(&name()).map(|r| (r.status, r.fenced_writes)), Some((Status::Done, 2)));
    section.results.into_inner().expect("not poisoned")
}

#[tokio::test]
async fn a_fenced_write_whose_answer_was_lost_is_retried_and_applied_once() {
    // The first write's first attempt landed unseen and its second was lost; its third found the row's record.
    // The second write met no fault and ran once.
    assert_eq!(two_writes_losing_an_answer(false).await, ["CommittedEarlier", "Committed(())"]);
}

#[tokio::test]
async fn a_second_fenced_write_whose_answer_was_lost_is_retried_and_applied_once() {
    // The second write's first attempt landed unseen and its second was lost; its third found the row's record
    // of write 2 (not write 1's, which the first write left).
    assert_eq!(two_writes_losing_an_answer(true).await, ["Committed(())", "CommittedEarlier"]);
}

/// A section whose work always fails.
struct Failing;

impl CriticalSection for Failing {
    async fn is_needed(&self) -> Result<bool, BoxError> {
        Ok(true)
    }
    async fn execute(&self, _: &LeaseHandle) -> Result<(), BoxError> {
        Err("the migration's SQL is invalid".into())
    }
}

#[tokio::test]
async fn a_run_that_gives_up_on_a_failing_section_returns_the_sections_own_error() {
    let cfg = ConfigParams { max_retries: 2, ..params() }.validate().expect("valid");
    let m = SpannerMutex::on_store(MemoryStore::new(), cfg, name(), "test");
    let error = m.run(&Failing).await.expect_err("gives up");
    let RunError::GaveUp { section_error: Some(cause), .. } = &error else { panic!("{error:?}") };
    assert_eq!(cause.to_string(), "the migration's SQL is invalid");
    assert!(error.to_string().contains("the section's last error: the migration's SQL is invalid"), "{error}");
}

#[tokio::test]
async fn a_fenced_write_in_memory_commits_only_if_the_row_is_as_its_fence_check_read_it() {
    // As a Spanner read-write transaction: the fence is checked on the row as read, and the commit stands only if
    // nobody wrote the row meanwhile (else the transaction runs again, on the row as it is then).
    let store =
        MemoryStore::with_manual_clock(spanner_mutex_model::ServerTime::from_unix_micros(1_767_225_600_000_000));
    let cfg = params().validate().expect("valid");
    let (holder, rival) = (ClientId::from_u128(1), ClientId::from_u128(2));
    let acquire = |client| TxnRequest::Acquire { client, holder_name: "t".into(), mode: Mode::Lock };
    store.transact(&cfg, &name(), &acquire(holder)).await.expect("acquired");
    let id = |fence, write| spanner_mutex::WriteId { client: holder, fence, write };
    // Runs `meanwhile` on the store during the work's first attempt only; counts attempts.
    let work = |key: &'static str, meanwhile: Option<TxnRequest>, advance_ms: u64| {
        let (store, attempts) = (store.clone(), Arc::new(AtomicU64::new(0)));
        let counted = Arc::clone(&attempts);
        let work = FencedWork::new(move |tx: FencedTx| {
            let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
            let (store, meanwhile) = (store.clone(), meanwhile.clone());
            let buffered = tx.buffer([effect(key)]);
            async move {
                if first {
                    store.advance_server_clock_ms(advance_ms);
                    if let Some(request) = meanwhile {
                        let _ = store.transact(&params().validate().expect("valid"), &name(), &request).await;
                    }
                }
                buffered
            }
        });
        (work, attempts)
    };
    // The holder's own renewal writes the row while the work runs: the work runs again, and commits once.
    let fence = row_fence(&store);
    let (renewed, attempts) = work("renewed", Some(TxnRequest::Renew { client: holder, fence }), 0);
    let written = LeaseStore::fenced(&store, &cfg, &name(), id(fence, 1), renewed).await.expect("committed");
    assert!(matches!(written, Fenced::Committed(_)));
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    // The lease runs out while the work runs, but nobody writes the row: the write commits.
    let (expiring, _) = work("while-expiring", None, 10 * params().ttl_ms);
    let written = LeaseStore::fenced(&store, &cfg, &name(), id(fence, 2), expiring).await.expect("committed");
    assert!(matches!(written, Fenced::Committed(_)));
    // Another client takes the expired lease over while the work runs: the retry finds the fence superseded, and
    // nothing the work buffered commits.
    store.transact(&cfg, &name(), &acquire(holder)).await.expect("acquired again");
    let fence = row_fence(&store);
    let (overtaken, attempts) = work("overtaken", Some(acquire(rival)), 10 * params().ttl_ms);
    let refused = LeaseStore::fenced(&store, &cfg, &name(), id(fence, 1), overtaken).await;
    assert!(matches!(refused, Err(FencedError::Rejected { .. })), "{refused:?}");
    assert_eq!(attempts.load(Ordering::SeqCst), 1, "the retry checks the fence before running the work again");
    assert_eq!(store.mutations(), [effect("renewed"), effect("while-expiring")]);
}

#[tokio::test(start_paused = true)]
async fn a_forced_release_refuses_the_live_holder_s_next_write_signals_lock_lost_and_hands_the_lock_over() {
    let (store, cfg) = (MemoryStore::new(), params());
    let guard = mutex(store.clone()).acquire().await.expect("acquired");
    let fence = guard.fence();
    // A waiter polls meanwhile; the holder renews, so without the operator it would wait for ever.
    let waiter = {
        let waiter = mutex(store.clone());
        tokio::spawn(async move { (waiter.acquire().await, tokio::time::Instant::now()) })
    };
    tokio::time::sleep(Duration::from_millis(cfg.renew_interval_ms * 3)).await;
    assert_eq!(store.row(&name()).expect("a row").status, Status::Started, "renewed past its first TTL");
    let applied = mutex(store.clone()).force_release(fence, "alice", "stuck after a deploy").await.expect("applied");
    let released_at = tokio::time::Instant::now();
    assert_eq!((applied.fence, applied.holder_name.as_str()), (fence, "test"));
    let row = store.row(&name()).expect("a row");
    assert_eq!(
        (row.status, row.last_error.as_deref()),
        (Status::Failed, Some("force-released by alice: stuck after a deploy"))
    );
    // The holder's next fenced write is refused, and its next renewal tells it the lock is lost.
    let refused = guard.commit(vec![effect("after-the-release")]).await;
    assert!(matches!(refused, Err(FencedError::Rejected { fence: f }) if f == fence), "{refused:?}");
    tokio::time::timeout(Duration::from_millis(cfg.renew_interval_ms + cfg.jitter_ms), guard.lock_lost())
        .await
        .expect("lock lost signalled at the next renewal");
    // The waiter has the lock within one poll of the release.
    let (acquired, at) =
        tokio::time::timeout(Duration::from_secs(60), waiter).await.expect("acquired").expect("joined");
    assert_eq!(acquired.expect("no error").fence(), fence.next());
    let waited = at - released_at;
    assert!(waited <= Duration::from_millis(cfg.poll_ms + cfg.jitter_ms), "{waited:?}");
    assert!(store.mutations().is_empty(), "nothing the released holder wrote landed");
    assert!(matches!(guard.release().await, Err(RunError::LeaseLost { .. })));
}

#[tokio::test(start_paused = true)]
async fn a_reset_done_row_runs_the_section_again_and_each_control_refuses_a_row_it_does_not_apply_to() {
    let store = MemoryStore::new();
    let operator = mutex(store.clone());
    let refused = operator.force_release(Fence::new(1), "alice", "nothing there").await.expect_err("no row");
    assert!(matches!(refused, OperatorError::NotApplicable { status: None, .. }), "{refused}");
    assert_eq!(
        refused.to_string(),
        "nothing to do: the mutex has no row; only a STARTED row (a lease) can be force-released"
    );
    let first = mutex(store.clone()).run(&Section::default()).await.expect("runs");
    let fence = row_fence(&store);
    assert_eq!(first, RunOutcome::Executed { fence });
    let refused = operator.force_release(fence, "alice", "done already").await.expect_err("a DONE row");
    assert!(matches!(refused, OperatorError::NotApplicable { status: Some(Status::Done), .. }), "{refused}");
    // DONE is final for staleness_ms: another run reports it done...
    assert!(matches!(mutex(store.clone()).run(&Section::default()).await, Ok(RunOutcome::DoneByOther { .. })));
    // A fence other than the row's (read before the row changed) leaves it alone.
    let stale = operator.reset(fence.next(), "bob", "stale fence").await.expect_err("another fence");
    let words = format!("nothing to do: the row is DONE under fence {}, not {}", fence.get(), fence.next().get());
    assert!(stale.to_string().starts_with(&words), "{stale}");
    let applied = operator.reset(fence, "bob", "the migration must run again").await.expect("reset");
    assert_eq!(applied.fence, fence);
    assert!(matches!(operator.reset(fence, "bob", "twice").await, Err(OperatorError::NotApplicable { .. })));
    // ...and after the reset the next run acquires it, asks its need check, and executes.
    let again = mutex(store.clone()).run(&Section::default()).await.expect("runs");
    assert_eq!(again, RunOutcome::Executed { fence: fence.next() });
    let invalid = operator.reset(fence, "", "who?").await.expect_err("no name");
    assert!(matches!(invalid, OperatorError::InvalidRecord { what: "the operator name", .. }), "{invalid}");
}

#[tokio::test(start_paused = true)]
async fn a_holder_releasing_right_after_a_forced_release_is_told_it_lost_the_lease() {
    let store = MemoryStore::new();
    let guard = mutex(store.clone()).acquire().await.expect("acquired");
    mutex(store.clone()).force_release(guard.fence(), "alice", "stuck").await.expect("applied");
    // Before its next renewal could tell it: its release is refused, not confirmed.
    assert!(!guard.is_lock_lost());
    let released = guard.release().await;
    assert!(matches!(released, Err(RunError::LeaseLost { .. })), "{released:?}");
}
