//! The async driver under cancellation, shutdown and its own bugs, in virtual time (tokio's paused clock; the
//! in-memory store's server clock follows it). Every store call takes one round trip of `RTT`; the bounds below
//! are stated in round trips, counted from the moment of the cancel.

use spanner_mutex::faulty::{FaultEffect, FaultTarget, InjectedFault};
use spanner_mutex::google_cloud_spanner::mutation::Mutation;
use spanner_mutex::{
    BoxError, CriticalSection, FaultyStore, FencedAnswer, FencedError, FencedWork, LeaseHandle, LeaseStore,
    MemoryStore, RowRead, RunError, RunOutcome, SpannerMutex, StoreError, WriteId,
};
use spanner_mutex_model::txn::Mode;
use spanner_mutex_model::{ClientId, Config, ConfigParams, LeaseRow, MutexName, Status, TxnReply, TxnRequest};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const RTT: Duration = Duration::from_millis(20);

fn params() -> ConfigParams {
    ConfigParams {
        ttl_ms: 300,
        renew_interval_ms: 100,
        safety_margin_ms: 50,
        wait_ms: 10,
        max_wait_ms: 50,
        jitter_ms: 0,
        staleness_ms: 60_000,
        ..ConfigParams::default()
    }
}

fn name() -> MutexName {
    MutexName::new("driver-test").expect("valid")
}

fn mutex(store: impl LeaseStore) -> SpannerMutex {
    SpannerMutex::on_store(store, params().validate().expect("valid"), name(), "test")
}

/// A store whose every call takes one round trip: half on the way there, half on the way back.
#[derive(Clone, Debug)]
struct Latency<S>(S);

impl<S: LeaseStore> LeaseStore for Latency<S> {
    async fn transact(&self, cfg: &Config, name: &MutexName, request: &TxnRequest) -> Result<TxnReply, StoreError> {
        tokio::time::sleep(RTT / 2).await;
        let result = self.0.transact(cfg, name, request).await;
        tokio::time::sleep(RTT / 2).await;
        result
    }

    async fn read(&self, name: &MutexName) -> Result<RowRead, StoreError> {
        tokio::time::sleep(RTT / 2).await;
        let result = self.0.read(name).await;
        tokio::time::sleep(RTT / 2).await;
        result
    }

    async fn fenced(&self, cfg: &Config, name: &MutexName, id: WriteId, work: FencedWork) -> FencedAnswer {
        tokio::time::sleep(RTT / 2).await;
        let result = self.0.fenced(cfg, name, id, work).await;
        tokio::time::sleep(RTT / 2).await;
        result
    }
}

/// What a scripted callback does.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Answer at once (`true`: needed / completed).
    Answer(bool),
    /// Never return (the section records that it saw lock-lost first).
    Hang,
}

/// A section whose need checks answer from a script (then "needed") and whose body does `body`.
struct Scripted {
    needs: Mutex<VecDeque<Step>>,
    body: Step,
    need_calls: AtomicU32,
    saw_lock_lost: AtomicBool,
}

impl Scripted {
    fn new(needs: &[Step], body: Step) -> Arc<Self> {
        Arc::new(Self {
            needs: Mutex::new(needs.iter().copied().collect()),
            body,
            need_calls: AtomicU32::new(0),
            saw_lock_lost: AtomicBool::new(false),
        })
    }
}

impl CriticalSection for Scripted {
    async fn is_needed(&self) -> Result<bool, BoxError> {
        self.need_calls.fetch_add(1, Ordering::SeqCst);
        let step = self.needs.lock().expect("not poisoned").pop_front().unwrap_or(Step::Answer(true));
        match step {
            Step::Answer(needed) => Ok(needed),
            Step::Hang => std::future::pending().await,
        }
    }

    async fn execute(&self, guard: &LeaseHandle) -> Result<(), BoxError> {
        match self.body {
            Step::Answer(true) => Ok(()),
            Step::Answer(false) => Err("section failed".into()),
            Step::Hang => {
                guard.lock_lost().await;
                self.saw_lock_lost.store(true, Ordering::SeqCst);
                std::future::pending().await
            }
        }
    }
}

/// Runs `section` on a task of its own, so the test can drop (abort) it at any point.
fn spawn_run(m: &SpannerMutex, section: &Arc<Scripted>) -> tokio::task::JoinHandle<Result<RunOutcome, RunError>> {
    let (m, section) = (m.clone(), Arc::clone(section));
    tokio::spawn(async move { m.run(section.as_ref()).await })
}

fn status(store: &MemoryStore) -> Option<Status> {
    store.row(&name()).map(|r| r.status)
}

/// Polls the row every millisecond of virtual time until `done` holds; returns the time that took.
async fn until(store: &MemoryStore, done: impl Fn(Option<&LeaseRow>) -> bool) -> Duration {
    let start = Instant::now();
    while !done(store.row(&name()).as_ref()) {
        assert!(start.elapsed() < Duration::from_secs(60), "condition never held; row {:?}", store.row(&name()));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    start.elapsed()
}

fn started(row: Option<&LeaseRow>) -> bool {
    row.is_some_and(|r| r.status == Status::Started)
}

/// Starts a run of `section` on `store` (with round-trip latency), lets `before_cancel` pass after the lease row
/// shows STARTED (or after `before_cancel` from the start when `wait_for_lease` is false), drops the run, and
/// returns how long after the drop the row stopped naming a live holder.
async fn cancel_and_time_release(
    store: MemoryStore,
    section: Arc<Scripted>,
    wait_for_lease: bool,
    before_cancel: Duration,
) -> Duration {
    cancel_and_time_release_on(Latency(store.clone()), store, section, wait_for_lease, before_cancel).await
}

async fn cancel_and_time_release_on<S: LeaseStore>(
    lease_store: S,
    store: MemoryStore,
    section: Arc<Scripted>,
    wait_for_lease: bool,
    before_cancel: Duration,
) -> Duration {
    let m = mutex(lease_store);
    let run = spawn_run(&m, &section);
    if wait_for_lease {
        until(&store, started).await;
    }
    tokio::time::sleep(before_cancel).await;
    run.abort();
    assert!(run.await.expect_err("aborted").is_cancelled());
    let released = until(&store, |row| !started(row)).await;
    m.shutdown().await;
    released
}

#[tokio::test(start_paused = true)]
async fn cancel_during_the_need_check_under_the_lease_releases_within_one_round_trip() {
    // Defect 1: the second need check (under the lease) never returns and the caller drops the run. The lease
    // used to stay STARTED until its TTL.
    let store = MemoryStore::new();
    let section = Scripted::new(&[Step::Answer(true), Step::Hang], Step::Answer(true));
    let took = cancel_and_time_release(store.clone(), Arc::clone(&section), true, RTT).await;
    assert_eq!(section.need_calls.load(Ordering::SeqCst), 2, "cancelled inside the second need check");
    assert!(took <= RTT, "released {took:?} after the cancel");
    assert_eq!(status(&store), Some(Status::Failed));
}

#[tokio::test(start_paused = true)]
async fn cancel_before_the_lease_writes_nothing() {
    let store = MemoryStore::new();
    let section = Scripted::new(&[Step::Hang], Step::Answer(true));
    let m = mutex(Latency(store.clone()));
    let run = spawn_run(&m, &section);
    tokio::time::sleep(RTT).await;
    run.abort();
    let start = Instant::now();
    m.shutdown().await;
    assert_eq!(start.elapsed(), Duration::ZERO, "nothing to release, nothing to wait for");
    assert_eq!(status(&store), None);
    assert_eq!(m.metrics().transactions, 0);
}

#[tokio::test(start_paused = true)]
async fn cancel_while_the_acquisition_commits_releases_the_won_lease_after_it() {
    let store = MemoryStore::new();
    let section = Scripted::new(&[], Step::Answer(true));
    // The acquisition is sent at once and is in flight for one round trip; cancel in its middle.
    let took = cancel_and_time_release(store.clone(), section, false, RTT / 4).await;
    assert!(took <= 2 * RTT, "released {took:?} after the cancel (the acquisition in flight, then the release)");
    assert_eq!(status(&store), Some(Status::Failed));
}

#[tokio::test(start_paused = true)]
async fn cancel_while_an_unknown_acquisition_is_resolved_releases_it() {
    let store = MemoryStore::new();
    let faulty = FaultyStore::new(Latency(store.clone()));
    faulty.inject(InjectedFault { on: FaultTarget::Acquire, effect: FaultEffect::UnknownCommitted });
    let section = Scripted::new(&[], Step::Answer(true));
    // The unknown acquisition returns after one round trip; the resolving read is then in flight.
    let took = cancel_and_time_release_on(faulty, store.clone(), section, true, RTT / 4).await;
    assert!(took <= 2 * RTT, "released {took:?} after the cancel (the read in flight, then the release)");
    assert_eq!(status(&store), Some(Status::Failed));
}

#[tokio::test(start_paused = true)]
async fn cancel_in_the_section_releases_within_one_round_trip() {
    let store = MemoryStore::new();
    let section = Scripted::new(&[], Step::Hang);
    let took = cancel_and_time_release(store.clone(), section, true, 2 * RTT).await;
    assert!(took <= RTT, "released {took:?} after the cancel");
    assert_eq!(status(&store), Some(Status::Failed));
}

#[tokio::test(start_paused = true)]
async fn cancel_during_a_renewal_releases_after_it() {
    let store = MemoryStore::new();
    let section = Scripted::new(&[], Step::Hang);
    let m = mutex(Latency(store.clone()));
    let run = spawn_run(&m, &section);
    until(&store, started).await;
    // The renewal is due renew_interval after the acquisition was sent; cancel while it is in flight.
    let renewals = m.metrics().renewals;
    tokio::time::sleep(Duration::from_millis(params().renew_interval_ms) - RTT / 2).await;
    run.abort();
    let took = until(&store, |row| !started(row)).await;
    m.shutdown().await;
    assert_eq!(m.metrics().renewals, renewals + 1, "the renewal in flight completed");
    assert!(took <= 2 * RTT, "released {took:?} after the cancel (the renewal in flight, then the release)");
    assert_eq!(status(&store), Some(Status::Failed));
}

#[tokio::test(start_paused = true)]
async fn cancel_during_the_release_still_records_done() {
    let store = MemoryStore::new();
    let section = Scripted::new(&[], Step::Answer(true));
    let m = mutex(Latency(store.clone()));
    let run = spawn_run(&m, &section);
    // Acquire (1 RTT), section at once, release sent: cancel while it is in flight.
    tokio::time::sleep(RTT + RTT / 4).await;
    run.abort();
    let took = until(&store, |row| !started(row)).await;
    m.shutdown().await;
    assert!(took <= RTT, "{took:?}");
    assert_eq!(status(&store), Some(Status::Done), "the section completed, so the row says DONE");
}

#[tokio::test(start_paused = true)]
async fn cancel_while_waiting_for_a_holder_ends_at_once_and_writes_nothing() {
    let store = MemoryStore::new();
    let holder = mutex(Latency(store.clone()));
    let held = holder.acquire().await.expect("acquired");
    let waiter = mutex(Latency(store.clone()));
    let wait = tokio::time::timeout(Duration::from_millis(200), waiter.acquire()).await;
    assert!(wait.is_err(), "still waiting, then cancelled");
    let start = Instant::now();
    waiter.shutdown().await;
    assert!(start.elapsed() <= RTT, "at most the read in flight: {:?}", start.elapsed());
    assert_eq!(store.row(&name()).map(|r| (r.status, r.fence)), Some((Status::Started, held.fence())));
    let fence = held.fence();
    assert_eq!(held.release().await.expect("released"), fence);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_lock_guard_releases_within_one_round_trip() {
    let store = MemoryStore::new();
    let m = mutex(Latency(store.clone()));
    let guard = m.acquire().await.expect("acquired");
    drop(guard);
    let took = until(&store, |row| !started(row)).await;
    assert!(took <= RTT, "{took:?}");
    m.shutdown().await;
    assert_eq!(status(&store), Some(Status::Done));
}

#[tokio::test(start_paused = true)]
async fn shutdown_signals_lock_lost_to_a_holder_and_releases() {
    let store = MemoryStore::new();
    let m = mutex(Latency(store.clone()));
    let guard = m.acquire().await.expect("acquired");
    let start = Instant::now();
    m.shutdown().await;
    assert!(start.elapsed() <= RTT, "{:?}", start.elapsed());
    assert!(guard.is_lock_lost(), "the holder is told before the lease is given up");
    assert_eq!(status(&store), Some(Status::Done));
    assert!(matches!(guard.release().await, Err(RunError::Cancelled)));
    assert!(matches!(m.acquire().await, Err(RunError::Cancelled)), "a shut-down mutex starts nothing");
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_section_tells_it_and_the_run_returns_cancelled() {
    let store = MemoryStore::new();
    let section = Scripted::new(&[], Step::Hang);
    let m = mutex(Latency(store.clone()));
    let run = spawn_run(&m, &section);
    until(&store, started).await;
    tokio::time::sleep(RTT).await; // the acquisition's reply is back: the section runs
    m.shutdown().await;
    assert!(matches!(run.await.expect("joined"), Err(RunError::Cancelled)));
    assert!(section.saw_lock_lost.load(Ordering::SeqCst));
    assert_eq!(status(&store), Some(Status::Failed));
}

#[tokio::test(start_paused = true)]
async fn an_unconfirmed_release_is_an_error_not_a_success() {
    let store = MemoryStore::new();
    let faulty = FaultyStore::new(store.clone());
    let m = mutex(faulty.clone());
    let guard = m.acquire().await.expect("acquired");
    faulty.inject(InjectedFault { on: FaultTarget::Release, effect: FaultEffect::Unavailable });
    let error = guard.release().await.expect_err("not confirmed");
    assert!(matches!(&error, RunError::ReleaseUnconfirmed { .. }), "{error}");
    assert!(error.to_string().contains("not confirmed"), "{error}");
    assert_eq!(status(&store), Some(Status::Started), "the row still names the holder until it expires");
}

/// A store that answers every transaction with a reply of the wrong kind: a broken store or driver.
#[derive(Clone, Debug)]
struct WrongReplies;

impl LeaseStore for WrongReplies {
    async fn transact(&self, _: &Config, _: &MutexName, _: &TxnRequest) -> Result<TxnReply, StoreError> {
        Ok(TxnReply::Released)
    }
    async fn read(&self, _: &MutexName) -> Result<RowRead, StoreError> {
        Ok((None, spanner_mutex_model::ServerTime::from_unix_micros(0)))
    }
    async fn fenced(&self, _: &Config, _: &MutexName, id: WriteId, _: FencedWork) -> FencedAnswer {
        Err(FencedError::Rejected { fence: id.fence })
    }
}

#[tokio::test(start_paused = true)]
async fn a_driver_bug_is_an_error_never_a_hang() {
    // The old lock task turned a refused event into "no command" and `acquire()` waited forever.
    let m = mutex(WrongReplies);
    let acquired = tokio::time::timeout(Duration::from_secs(3_600), m.acquire()).await.expect("returns");
    assert!(matches!(acquired, Err(RunError::Driver(_))), "{acquired:?}");
    let section = Scripted::new(&[], Step::Answer(true));
    let ran = tokio::time::timeout(Duration::from_secs(3_600), m.run(section.as_ref())).await.expect("returns");
    assert!(matches!(ran, Err(RunError::Driver(_))), "{ran:?}");
}

#[tokio::test(start_paused = true)]
async fn the_machine_not_the_driver_decides_a_cancel_after_a_ghost_holder() {
    // A waiter behind a vanished holder is cancelled while waiting: it must not take the row over later.
    let store = MemoryStore::new();
    let cfg = params().validate().expect("valid");
    let ghost = TxnRequest::Acquire { client: ClientId::from_u128(7), holder_name: "ghost".into(), mode: Mode::Lock };
    store.transact(&cfg, &name(), &ghost).await.expect("ghost acquired");
    let waiter = mutex(Latency(store.clone()));
    assert!(tokio::time::timeout(Duration::from_millis(100), waiter.acquire()).await.is_err());
    waiter.shutdown().await;
    tokio::time::sleep(Duration::from_millis(2 * params().ttl_ms)).await;
    assert_eq!(store.row(&name()).map(|r| r.holder), Some(ClientId::from_u128(7)));
}

/// Blocks its thread (as the CLI's file-writing section did) for three TTLs, then completes.
struct BlockingSection {
    block: Duration,
    saw_lock_lost: AtomicBool,
}

impl CriticalSection for BlockingSection {
    async fn is_needed(&self) -> Result<bool, BoxError> {
        Ok(true)
    }
    async fn execute(&self, guard: &LeaseHandle) -> Result<(), BoxError> {
        std::thread::sleep(self.block);
        self.saw_lock_lost.store(guard.is_lock_lost(), Ordering::SeqCst);
        guard.commit(vec![Mutation::new_insert_builder("Effects").set("id").to("effect").build()]).await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_section_does_not_starve_its_lease() {
    // Defect 5: renewals ran on the section's task, so a section blocking its thread lost the lease. Real time
    // here (a blocked thread cannot be simulated), but nothing is asserted about durations.
    let store = MemoryStore::new();
    // Slack for a loaded machine: renewals every 100 ms, each proving the lease for 550 ms.
    let roomy = ConfigParams { ttl_ms: 600, renew_interval_ms: 100, ..params() };
    let m = SpannerMutex::on_store(store.clone(), roomy.clone().validate().expect("valid"), name(), "test");
    let section =
        BlockingSection { block: Duration::from_millis(3 * roomy.ttl_ms), saw_lock_lost: AtomicBool::new(false) };
    let outcome = m.run(&section).await.expect("runs");
    assert_eq!(outcome, RunOutcome::Executed { fence: store.row(&name()).expect("row").fence });
    assert!(!section.saw_lock_lost.load(Ordering::SeqCst), "renewals went on while the section blocked");
    assert!(m.metrics().renewals >= 3, "{:?}", m.metrics());
    assert_eq!(m.metrics().lost, 0);
}

/// Spanner that can stop answering: while down, a transaction runs into its bound and is an unknown outcome,
/// and a read runs into its bound and fails, as the Spanner store's hard bounds make them.
#[derive(Clone, Debug)]
struct Blackhole<S> {
    inner: S,
    down: Arc<AtomicBool>,
    /// Fenced writes that reached the store.
    fenced_calls: Arc<AtomicU32>,
}

impl<S> Blackhole<S> {
    fn new(inner: S, down: &Arc<AtomicBool>) -> Self {
        Self { inner, down: Arc::clone(down), fenced_calls: Arc::default() }
    }
}

const TRANSACTION_BOUND: Duration = Duration::from_millis(40);
const READ_BOUND: Duration = Duration::from_millis(25);
const UNAVAILABLE_MS: u64 = 500;

impl<S: LeaseStore> LeaseStore for Blackhole<S> {
    async fn transact(&self, cfg: &Config, name: &MutexName, request: &TxnRequest) -> Result<TxnReply, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            tokio::time::sleep(TRANSACTION_BOUND).await;
            return Err(StoreError::new(spanner_mutex::StoreErrorKind::Unknown, "no answer"));
        }
        self.inner.transact(cfg, name, request).await
    }

    async fn read(&self, name: &MutexName) -> Result<RowRead, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            tokio::time::sleep(READ_BOUND).await;
            return Err(StoreError::new(spanner_mutex::StoreErrorKind::Unavailable, "no answer"));
        }
        self.inner.read(name).await
    }

    async fn fenced(&self, cfg: &Config, name: &MutexName, id: WriteId, work: FencedWork) -> FencedAnswer {
        self.fenced_calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            tokio::time::sleep(TRANSACTION_BOUND).await;
            return Err(FencedError::OutcomeUnknown { ms: UNAVAILABLE_MS });
        }
        self.inner.fenced(cfg, name, id, work).await
    }
}

/// From the moment Spanner stops answering: the call in flight runs into its bound and its unknown outcome is
/// resolved by a read that does too; retries go on for `unavailable_ms`; the last one takes both bounds again.
const UNAVAILABLE_BOUND: Duration =
    Duration::from_millis(UNAVAILABLE_MS + 2 * (TRANSACTION_BOUND.as_millis() + READ_BOUND.as_millis()) as u64);

#[tokio::test(start_paused = true)]
async fn every_call_returns_unavailable_within_its_bound_when_spanner_stops_answering() {
    // Defect 2: retries beneath the machine made one run take 53-107 s against bounds of 5-15 s.
    let cfg = ConfigParams { unavailable_ms: UNAVAILABLE_MS, ..params() }.validate().expect("valid");
    for point_ms in (0..150).step_by(7) {
        let store = MemoryStore::new();
        let down = Arc::new(AtomicBool::new(false));
        let blackhole = Blackhole::new(Latency(store.clone()), &down);
        // A holder whose lease is busy, so the waiter below polls and retries while Spanner goes away.
        let holder = SpannerMutex::on_store(blackhole.clone(), cfg.clone(), name(), "holder");
        let held = holder.acquire().await.expect("acquired");
        let waiter = SpannerMutex::on_store(blackhole.clone(), cfg.clone(), name(), "waiter");
        let run_once = SpannerMutex::on_store(blackhole, cfg.clone(), name(), "run");
        let section = Scripted::new(&[], Step::Answer(true));
        let acquire = tokio::spawn(async move { waiter.acquire().await.map(|_| ()) });
        let run = tokio::spawn(async move { run_once.run(section.as_ref()).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(point_ms)).await;
        down.store(true, Ordering::SeqCst);
        let stopped = Instant::now();
        for (what, call) in [("acquire", acquire), ("run", run)] {
            let result = call.await.expect("joined");
            let took = stopped.elapsed();
            assert!(matches!(result, Err(RunError::Unavailable(_))), "{what} at {point_ms} ms: {result:?}");
            assert!(took <= UNAVAILABLE_BOUND, "{what} down at {point_ms} ms returned after {took:?}");
        }
        // The holder is told it lost the lease by its local deadline, and its release is bounded too.
        let release_started = Instant::now();
        let released = held.release().await;
        assert!(matches!(released, Err(RunError::ReleaseUnconfirmed { .. })), "{released:?}");
        assert!(release_started.elapsed() <= TRANSACTION_BOUND + READ_BOUND, "{:?}", release_started.elapsed());
        holder.shutdown().await;
    }
}

/// A section during which Spanner stops answering: it works on for `work`, then commits through its lease and
/// returns what the commit said.
struct WorksOnThenCommits {
    down: Arc<AtomicBool>,
    down_at: Mutex<Option<Instant>>,
    work: Duration,
    commit: Mutex<Option<String>>,
}

impl CriticalSection for WorksOnThenCommits {
    async fn is_needed(&self) -> Result<bool, BoxError> {
        Ok(true)
    }

    async fn execute(&self, lease: &LeaseHandle) -> Result<(), BoxError> {
        self.down.store(true, Ordering::SeqCst);
        *self.down_at.lock().expect("not poisoned") = Some(Instant::now());
        tokio::time::sleep(self.work).await;
        let effect = Mutation::new_insert_builder("Effects").set("id").to("e").build();
        let result = lease.commit(vec![effect]).await;
        *self.commit.lock().expect("not poisoned") = Some(match &result {
            Ok(_) => "committed".into(),
            Err(FencedError::LeaseLost { .. }) => "lease lost".into(),
            Err(FencedError::OutcomeUnknown { .. }) => "unknown".into(),
            Err(error) => format!("{error}"),
        });
        result.map(|_| ()).map_err(Into::into)
    }
}

#[tokio::test(start_paused = true)]
async fn a_section_that_works_on_after_lock_lost_delays_only_its_own_return_when_spanner_stops_answering() {
    // Found on the emulator: an unknown renewal did not start the unavailability budget, so a run whose section
    // worked on past lock-lost took twice its bound (41 s against 20 s).
    let cfg = ConfigParams { unavailable_ms: UNAVAILABLE_MS, ..params() }.validate().expect("valid");
    let local_lease = Duration::from_millis(params().ttl_ms - params().safety_margin_ms);
    for work_ms in [50, 150, 400, 700, 1_000] {
        let work = Duration::from_millis(work_ms);
        let down = Arc::new(AtomicBool::new(false));
        let blackhole = Blackhole::new(Latency(MemoryStore::new()), &down);
        let fenced_calls = Arc::clone(&blackhole.fenced_calls);
        let m = SpannerMutex::on_store(blackhole, cfg.clone(), name(), "worker");
        let section =
            WorksOnThenCommits { down: Arc::clone(&down), down_at: Mutex::new(None), work, commit: Mutex::new(None) };
        let result = m.run(&section).await;
        let took = section.down_at.lock().expect("not poisoned").expect("the section ran").elapsed();
        assert!(matches!(result, Err(RunError::Unavailable(_))), "working {work_ms} ms: {result:?}");
        // Only the section's own time may add to the bound: past lock-lost its commit answers at once.
        let bound = UNAVAILABLE_BOUND.max(work + TRANSACTION_BOUND + READ_BOUND);
        assert!(took <= bound, "working {work_ms} ms: returned after {took:?}, bound {bound:?}");
        let commit = section.commit.lock().expect("not poisoned").clone();
        let fenced_calls = fenced_calls.load(Ordering::SeqCst);
        if work >= local_lease {
            assert_eq!(commit.as_deref(), Some("lease lost"), "working {work_ms} ms");
            assert_eq!(fenced_calls, 0, "a write after lock-lost reached Spanner");
        } else {
            assert_eq!(commit.as_deref(), Some("unknown"), "working {work_ms} ms");
        }
        // Spanner answers again: the same mutex runs the section, once the lease left behind has expired.
        down.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(params().ttl_ms)).await;
        let again = m.run(Scripted::new(&[], Step::Answer(true)).as_ref()).await;
        assert!(matches!(again, Ok(RunOutcome::Executed { .. })), "{again:?}");
        m.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_release_while_a_renewal_is_in_flight_is_bounded_when_spanner_stops_answering() {
    // Found trying it on the emulator: release() waits for the renewal in flight, then its own call and read.
    let cfg = ConfigParams { unavailable_ms: UNAVAILABLE_MS, ..params() }.validate().expect("valid");
    let down = Arc::new(AtomicBool::new(false));
    let blackhole = Blackhole::new(MemoryStore::new(), &down);
    let holder = SpannerMutex::on_store(blackhole, cfg, name(), "holder");
    let held = holder.acquire().await.expect("acquired");
    tokio::time::sleep(Duration::from_millis(params().renew_interval_ms) - Duration::from_millis(1)).await;
    down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2)).await; // the renewal is sent into the silence
    assert_eq!(holder.metrics().renewals, 0);
    let start = Instant::now();
    let released = held.release().await;
    assert!(matches!(released, Err(RunError::ReleaseUnconfirmed { .. })), "{released:?}");
    let took = start.elapsed();
    assert!(took > TRANSACTION_BOUND, "it did wait for the renewal in flight: {took:?}");
    assert!(took <= 2 * TRANSACTION_BOUND + READ_BOUND, "{took:?}");
    holder.shutdown().await;
}

/// The poll period the hand-over tests promise.
const POLL: Duration = Duration::from_millis(250);

/// Long leases, so only polls can notice a release early: a `POLL` period, no jitter.
fn polling() -> Config {
    ConfigParams {
        ttl_ms: 10_000,
        renew_interval_ms: 3_000,
        safety_margin_ms: 1_000,
        max_wait_ms: 10_000,
        poll_ms: POLL.as_millis() as u64,
        ..params()
    }
    .validate()
    .expect("valid")
}

#[tokio::test(start_paused = true)]
async fn a_waiter_gets_a_released_lock_within_one_poll_and_costs_at_most_one_read_per_poll() {
    // Defect 4: waiters slept until the expiry they last read (here up to 10 s) before noticing a release.
    let store = MemoryStore::new();
    let holder = SpannerMutex::on_store(Latency(store.clone()), polling(), name(), "holder");
    let held = holder.acquire().await.expect("acquired");
    let waiter = SpannerMutex::on_store(Latency(store.clone()), polling(), name(), "waiter");
    let waiting = {
        let waiter = waiter.clone();
        tokio::spawn(async move { waiter.acquire().await })
    };
    // A long wait first (the holder renews): reads stay within one per poll.
    let hold = Duration::from_secs(60);
    tokio::time::sleep(hold).await;
    let reads = waiter.metrics().reads;
    let polls = (hold.as_millis() / POLL.as_millis()) as u64;
    assert!(reads <= polls, "{reads} reads in {hold:?} at one poll per {POLL:?}");
    assert!(reads >= polls / 2, "it does poll: {reads} reads");
    let first = held.release().await.expect("released");
    let released = Instant::now();
    let guard = waiting.await.expect("joined").expect("acquired");
    let took = released.elapsed();
    // The next poll (at most poll_ms away), its read and the acquisition.
    assert!(took <= POLL + 2 * RTT, "handed over after {took:?}");
    assert_eq!(guard.fence(), first.next());
    assert_eq!(waiter.metrics().takeovers, 0, "handed over by the release, not by expiry");
}

#[tokio::test(start_paused = true)]
async fn a_run_once_waiter_sees_done_within_one_poll() {
    let store = MemoryStore::new();
    let runner = SpannerMutex::on_store(Latency(store.clone()), polling(), name(), "runner");
    let section = Scripted::new(&[], Step::Hang);
    let run = spawn_run(&runner, &section);
    until(&store, started).await;
    let waiter = SpannerMutex::on_store(Latency(store.clone()), polling(), name(), "waiter");
    let waiting = spawn_run(&waiter, &Scripted::new(&[], Step::Answer(true)));
    tokio::time::sleep(Duration::from_secs(5)).await;
    // The section "finishes": its run records DONE on the way out (a cancel would record FAILED, so the test
    // writes DONE as the holder would, through the store).
    let row = store.row(&name()).expect("row");
    let cfg = polling();
    let release = TxnRequest::Release {
        client: row.holder,
        fence: row.fence,
        status: spanner_mutex_model::txn::ReleaseStatus::Done,
    };
    store.transact(&cfg, &name(), &release).await.expect("released");
    let done = Instant::now();
    let outcome = waiting.await.expect("joined").expect("no error");
    let took = done.elapsed();
    assert!(matches!(outcome, RunOutcome::DoneByOther { .. }), "{outcome:?}");
    assert!(took <= POLL + RTT, "noticed DONE after {took:?}");
    run.abort();
    runner.shutdown().await;
}
