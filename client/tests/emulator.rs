//! Client behaviour against the real Spanner code path on the Cloud Spanner emulator. Each test starts its own
//! emulator on free ports and stops it. A missing emulator fails the tests: they never skip.

use google_cloud_spanner::mutation::Mutation;
use google_cloud_spanner::statement::Statement;
use spanner_mutex::FencedError;
use spanner_mutex::emulator::Emulator;
use spanner_mutex::faulty::{FaultEffect, FaultTarget, InjectedFault};
use spanner_mutex::schema::{SchemaError, validate_schema};
use spanner_mutex::{
    BoxError, CriticalSection, FaultyStore, Fenced, LeaseHandle, LeaseStore, Mutexes, RunError, RunOutcome, SetupError,
    SpannerMutex, SpannerStore, Timeouts,
};
use spanner_mutex_model::txn::Mode;
use spanner_mutex_model::{ClientId, ConfigParams, Fence, MutexName, Status, TxnReply, TxnRequest};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const DATABASE: &str = "projects/test-project/instances/test-instance/databases/test-db";

fn params() -> ConfigParams {
    ConfigParams {
        ttl_ms: 1_000,
        renew_interval_ms: 300,
        safety_margin_ms: 200,
        wait_ms: 20,
        max_wait_ms: 100,
        jitter_ms: 10,
        staleness_ms: 600_000,
        unavailable_ms: 2_000,
        ..ConfigParams::default()
    }
}

fn name(n: &str) -> MutexName {
    MutexName::new(n).expect("valid")
}

fn fast_timeouts() -> Timeouts {
    Timeouts { connect_ms: 5_000, rpc_ms: 1_000, transaction_ms: 3_000 }
}

/// An emulator with the lease table and an `Effects` table the sections write through `fenced`.
async fn setup() -> (Emulator, SpannerStore) {
    let emulator = Emulator::start().await.expect("the Spanner emulator must be installed (see README)");
    let store = create_tables(&emulator).await;
    (emulator, store)
}

/// [`setup`], with a store that is not the one `create_tables` opens. The emulator numbers sessions, so after a
/// restart and `create_tables` the first store's old session name exists again and its loss would go unseen.
async fn setup_with_own_store() -> (Emulator, SpannerStore) {
    let (emulator, _first) = setup().await;
    let store = SpannerStore::connect_unchecked(DATABASE, "SpannerMutex", Some(emulator.endpoint()), fast_timeouts())
        .await
        .expect("connects");
    (emulator, store)
}

/// Creates the instance, the database, the lease table and `Effects` (again, after a restart).
async fn create_tables(emulator: &Emulator) -> SpannerStore {
    let store = emulator
        .create_database("test-project", "test-instance", "test-db", "SpannerMutex", fast_timeouts())
        .await
        .expect("database created");
    let effects = "CREATE TABLE Effects (id STRING(64) NOT NULL, writer STRING(36) NOT NULL, fence INT64 NOT NULL) \
                   PRIMARY KEY (id)";
    emulator.apply_ddl(DATABASE, vec![effects.into()]).await.expect("effects table");
    store
}

/// What a run that executed under the row's current fence reports.
async fn executed_under_row(store: &SpannerStore, mutex: &str) -> RunOutcome {
    let (row, _) = store.read(&name(mutex)).await.expect("reads");
    RunOutcome::Executed { fence: row.expect("a row").fence }
}

async fn effect_rows(store: &SpannerStore, id: &str) -> i64 {
    let client = store.database_client().await;
    let statement = Statement::builder("SELECT COUNT(*) AS n FROM Effects WHERE id = @id").add_param("id", id).build();
    let mut rows = client.single_use().build().execute_query(statement).await.expect("query");
    rows.next().await.transpose().expect("row").expect("one row").get("n").expect("n")
}

/// Inserts one `Effects` row through a fenced transaction; need = that row does not exist yet.
#[derive(Default)]
struct Effect {
    id: String,
    sleep_ms: u64,
    /// Fenced writes refused: by Spanner, or at once after lock-lost.
    rejected: AtomicU64,
    saw_lock_lost: AtomicBool,
}

impl Effect {
    fn new(id: &str) -> Self {
        Self { id: id.into(), ..Self::default() }
    }
}

impl CriticalSection for Effect {
    async fn is_needed(&self) -> Result<bool, BoxError> {
        Ok(true)
    }
    async fn execute(&self, guard: &LeaseHandle) -> Result<(), BoxError> {
        tokio::time::sleep(Duration::from_millis(self.sleep_ms)).await;
        self.saw_lock_lost.store(guard.is_lock_lost(), Ordering::SeqCst);
        match insert_effect(guard, &self.id).await {
            Ok(_) => Ok(()),
            Err(e @ (FencedError::Rejected { .. } | FencedError::LeaseLost { .. })) => {
                self.rejected.fetch_add(1, Ordering::SeqCst);
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Inserts the `Effects` row `id` through a fenced transaction: an insert, so applying it twice fails.
async fn insert_effect(guard: &LeaseHandle, id: &str) -> Result<Fenced<()>, FencedError> {
    let (id, writer, fence) = (id.to_owned(), guard.client().to_string(), guard.fence().get());
    guard
        .fenced(move |tx| {
            let (id, writer) = (id.clone(), writer.clone());
            async move {
                let row = Mutation::new_insert_builder("Effects")
                    .set("id")
                    .to(id)
                    .set("writer")
                    .to(writer)
                    .set("fence")
                    .to(i64::try_from(fence).unwrap_or(i64::MAX))
                    .build();
                tx.buffer([row])
            }
        })
        .await
}

fn mutex(store: impl LeaseStore, n: &str) -> SpannerMutex {
    SpannerMutex::on_store(store, params().validate().expect("valid"), name(n), "test")
}

#[tokio::test]
async fn lock_acquire_release_and_twenty_clients_in_one_process_execute_once() {
    let (_emulator, store) = setup().await;
    let lock = mutex(store.clone(), "lock");
    let guard = lock.acquire().await.expect("acquired");
    let first = guard.fence();
    let (row, server_now) = store.read(&name("lock")).await.expect("read");
    assert_eq!(row.map(|r| r.fence), Some(first));
    // A created row's first fence is Spanner's time of its creation, in microseconds: just before now.
    let age_us = server_now.unix_micros() - i64::try_from(first.get()).expect("fits");
    assert!((0..10_000_000).contains(&age_us), "fence {first} is {age_us} us before Spanner's now");
    assert!(lock.try_acquire().await.expect("no error").is_none());
    assert_eq!(guard.release().await.expect("released"), first);
    assert_eq!(store.read(&name("lock")).await.expect("read").0.map(|r| r.status), Some(Status::Done));

    let race = mutex(store.clone(), "race");
    let section = Arc::new(Effect::new("race"));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (race, section) = (race.clone(), Arc::clone(&section));
            tokio::spawn(async move { race.run(section.as_ref()).await })
        })
        .collect();
    let mut executed = 0;
    for task in tasks {
        if let RunOutcome::Executed { .. } = task.await.expect("joined").expect("no error") {
            executed += 1;
        }
    }
    assert_eq!(executed, 1);
    assert_eq!(effect_rows(&store, "race").await, 1);
}

#[tokio::test]
async fn a_vanished_holder_is_taken_over_after_its_ttl() {
    let (_emulator, store) = setup().await;
    let cfg = params().validate().expect("valid");
    let ghost =
        TxnRequest::Acquire { client: ClientId::from_u128(7), holder_name: "ghost".into(), mode: Mode::RunOnce };
    let reply = store.transact(&cfg, &name("ghost"), &ghost).await.expect("ghost acquired");
    let TxnReply::Acquired { fence: ghosts, .. } = reply else { panic!("acquired: {reply:?}") };
    let m = mutex(store.clone(), "ghost");
    assert_eq!(m.run(&Effect::new("ghost")).await.expect("runs"), RunOutcome::Executed { fence: ghosts.next() });
    assert_eq!(m.metrics().takeovers, 1);
}

#[tokio::test]
async fn a_paused_holder_loses_the_lease_and_its_fenced_write_is_refused() {
    let (_emulator, store) = setup().await;
    let faulty = FaultyStore::new(store.clone());
    for _ in 0..200 {
        faulty.inject(InjectedFault { on: FaultTarget::Renew, effect: FaultEffect::Unavailable });
    }
    let paused = mutex(faulty, "paused");
    let slow = Arc::new(Effect { sleep_ms: 2_000, ..Effect::new("paused") });
    let paused_run = {
        let (paused, slow) = (paused.clone(), Arc::clone(&slow));
        tokio::spawn(async move { paused.run(slow.as_ref()).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (row, _) = store.read(&name("paused")).await.expect("reads");
    let paused_fence = row.expect("the paused holder's row").fence;
    let other = mutex(store.clone(), "paused");
    let took_over = RunOutcome::Executed { fence: paused_fence.next() };
    assert_eq!(other.run(&Effect::new("paused")).await.expect("runs"), took_over);
    let outcome = paused_run.await.expect("joined").expect("no error");
    assert!(slow.saw_lock_lost.load(Ordering::SeqCst));
    assert_eq!(slow.rejected.load(Ordering::SeqCst), 1);
    assert!(matches!(outcome, RunOutcome::DoneByOther { .. }), "{outcome:?}");
    assert_eq!(effect_rows(&store, "paused").await, 1);
}

#[tokio::test]
async fn unknown_commit_outcomes_are_resolved_through_the_real_store() {
    let (_emulator, store) = setup().await;
    let faulty = FaultyStore::new(store.clone());
    faulty.inject(InjectedFault { on: FaultTarget::Acquire, effect: FaultEffect::UnknownCommitted });
    let landed = mutex(faulty.clone(), "unknown-landed");
    let outcome = landed.run(&Effect::new("u1")).await.expect("runs");
    assert_eq!(outcome, executed_under_row(&store, "unknown-landed").await);
    assert_eq!((landed.metrics().unknown_commits, landed.metrics().acquisitions), (1, 0));
    faulty.inject(InjectedFault { on: FaultTarget::Acquire, effect: FaultEffect::UnknownNotCommitted });
    let lost = mutex(faulty, "unknown-lost");
    let outcome = lost.run(&Effect::new("u2")).await.expect("runs");
    assert_eq!(outcome, executed_under_row(&store, "unknown-lost").await);
    assert_eq!((lost.metrics().unknown_commits, lost.metrics().acquisitions), (1, 1));
}

#[tokio::test]
async fn a_fenced_write_whose_answer_was_lost_is_found_in_the_row_and_not_applied_again() {
    let (_emulator, store) = setup().await;
    let faulty = FaultyStore::new(store.clone());
    // The first attempt commits on the emulator and its answer is dropped; the retry must find the record (without
    // it the retried insert of the same effect row fails with ALREADY_EXISTS, or a blind write applies it twice).
    faulty.inject(InjectedFault { on: FaultTarget::FencedWrite, effect: FaultEffect::UnknownCommitted });
    let run = mutex(faulty, "fenced-unknown").run(&Effect::new("f1")).await.expect("runs");
    assert_eq!(run, executed_under_row(&store, "fenced-unknown").await);
    assert_eq!(effect_rows(&store, "f1").await, 1);
    let (row, _) = store.read(&name("fenced-unknown")).await.expect("reads");
    assert_eq!(row.map(|r| (r.status, r.fenced_writes)), Some((Status::Done, 1)));
}

/// Inserts `first`, then `second` with the answer of its commit dropped.
struct SecondAnswerLost {
    faulty: FaultyStore<SpannerStore>,
}

impl CriticalSection for SecondAnswerLost {
    async fn is_needed(&self) -> Result<bool, BoxError> {
        Ok(true)
    }
    async fn execute(&self, guard: &LeaseHandle) -> Result<(), BoxError> {
        insert_effect(guard, "second-lost-1").await?;
        self.faulty.inject(InjectedFault { on: FaultTarget::FencedWrite, effect: FaultEffect::UnknownCommitted });
        insert_effect(guard, "second-lost-2").await?;
        Ok(())
    }
}

#[tokio::test]
async fn a_second_fenced_write_whose_answer_was_lost_is_found_in_the_row_and_not_applied_again() {
    let (_emulator, store) = setup().await;
    let faulty = FaultyStore::new(store.clone());
    // The retry of write 2 must find the row's record of write 2, not take write 1's for it (or insert again).
    let run = mutex(faulty.clone(), "second-unknown").run(&SecondAnswerLost { faulty }).await.expect("runs");
    assert_eq!(run, executed_under_row(&store, "second-unknown").await);
    assert_eq!((effect_rows(&store, "second-lost-1").await, effect_rows(&store, "second-lost-2").await), (1, 1));
    let (row, _) = store.read(&name("second-unknown")).await.expect("reads");
    assert_eq!(row.map(|r| (r.status, r.fenced_writes)), Some((Status::Done, 2)));
}

#[tokio::test]
async fn a_missing_table_is_a_clear_error() {
    let (emulator, _store) = setup().await;
    let missing = SpannerStore::connect_unchecked(DATABASE, "NoSuchTable", Some(emulator.endpoint()), fast_timeouts())
        .await
        .expect("connects");
    let schema = validate_schema(&missing).await.expect_err("missing");
    assert!(matches!(schema, SchemaError::MissingTable { ref table, .. } if table == "NoSuchTable"), "{schema}");
    // Mutexes on a store the app connected itself check the table as `connect` does.
    let refused = Mutexes::on_spanner(missing.clone(), ConfigParams::default(), "m").await.expect_err("no table");
    assert!(matches!(&refused, SetupError::Schema(SchemaError::MissingTable { .. })), "{refused}");
    let error = mutex(missing.clone(), "m").run(&Effect::new("m")).await.expect_err("fails");
    assert!(matches!(&error, RunError::Rejected(Some(e)) if e.message.contains("NoSuchTable")), "{error}");
    let cause = error.store_error().expect("a cause");
    assert!(!cause.is_retryable() && cause.code.is_some(), "{cause:?}");
    // create_schema makes it usable.
    let (_, admin) =
        spanner_mutex::emulator::admin_clients(&emulator.endpoint(), &emulator.rest_endpoint()).await.expect("admin");
    spanner_mutex::schema::create_schema(&admin, DATABASE, "NoSuchTable", Some(7)).await.expect("created");
    validate_schema(&missing).await.expect("valid now");
    // And the store's bounds against the lease: 3 s transactions outlast a 1.5 s renewal window.
    let short =
        ConfigParams { ttl_ms: 3_000, renew_interval_ms: 1_000, safety_margin_ms: 500, ..ConfigParams::default() };
    let refused = Mutexes::on_spanner(missing.clone(), short, "m").await.expect_err("does not fit");
    assert!(refused.to_string().contains("timeouts.transaction_ms = 3000"), "{refused}");
    Mutexes::on_spanner(missing.clone(), ConfigParams::default(), "m").await.expect("fits");
    let outcome = mutex(missing.clone(), "m").run(&Effect::new("m")).await.expect("runs");
    assert_eq!(outcome, executed_under_row(&missing, "m").await);
}

#[tokio::test]
async fn a_table_from_before_the_fenced_write_record_names_the_statement_that_upgrades_it() {
    let (emulator, _store) = setup().await;
    let old = "CREATE TABLE OldLeases (name STRING(128) NOT NULL, status STRING(16) NOT NULL, \
               holder STRING(36) NOT NULL, holder_name STRING(256), fence INT64 NOT NULL, \
               updated_at TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp = true), \
               expires_at TIMESTAMP NOT NULL, attempt INT64 NOT NULL, last_error STRING(MAX)) PRIMARY KEY (name)";
    emulator.apply_ddl(DATABASE, vec![old.into()]).await.expect("old table");
    let store = SpannerStore::connect_unchecked(DATABASE, "OldLeases", Some(emulator.endpoint()), fast_timeouts())
        .await
        .expect("connects");
    // A row written by the old version, so the upgrade must give existing rows a value.
    let m = mutex(store.clone(), "old");
    let error = validate_schema(&store).await.expect_err("column missing");
    let SchemaError::MissingColumn { ddl, .. } = &error else { panic!("{error}") };
    assert_eq!(error.to_string(), format!("column OldLeases.fenced_writes is missing; add it with: {ddl}"));
    assert!(m.run(&Effect::new("old")).await.is_err(), "the old table cannot hold the record");
    let insert = "INSERT INTO OldLeases (name, status, holder, fence, updated_at, expires_at, attempt) \
                  VALUES ('old', 'FAILED', '00000000-0000-0000-0000-000000000001', 1, PENDING_COMMIT_TIMESTAMP(), \
                  TIMESTAMP '2000-01-01T00:00:00Z', 1)";
    let client = store.database_client().await;
    let dml = Statement::builder(insert).build();
    client
        .read_write_transaction()
        .build()
        .run(move |tx: google_cloud_spanner::transaction::ReadWriteTransaction| {
            let dml = dml.clone();
            async move { tx.execute_update(dml).await }
        })
        .await
        .expect("old row");
    emulator.apply_ddl(DATABASE, vec![ddl.clone()]).await.expect("the named statement applies");
    validate_schema(&store).await.expect("valid now");
    assert_eq!(m.run(&Effect::new("old")).await.expect("runs"), RunOutcome::Executed { fence: Fence::new(2) });
}

#[tokio::test]
async fn emulator_down_gives_a_bounded_error_then_the_store_recovers() {
    let (mut emulator, store) = setup_with_own_store().await;
    let m = mutex(store.clone(), "down");
    m.acquire().await.expect("acquired").release().await.expect("released");
    emulator.stop();
    // Bounded: the configured bounds are a few seconds; a hang would hit this much larger guard.
    let down = tokio::time::timeout(Duration::from_secs(60), m.run(&Effect::new("down"))).await;
    let error = down.expect("returns instead of hanging").expect_err("Spanner is down");
    assert!(matches!(error, RunError::Unavailable(_)), "{error}");
    emulator.restart().await.expect("restarted");
    create_tables(&emulator).await;
    // The same store (and its database client) works again: a lost session is rebuilt.
    let outcome = m.run(&Effect::new("down")).await.expect("recovered");
    assert_eq!(outcome, executed_under_row(&store, "down").await);
}

/// A section that says when it starts, sleeps past its lease, then commits through it and returns what that said.
struct SleepsThenCommits {
    started: tokio::sync::Notify,
    sleep: Duration,
    commit: std::sync::Mutex<Option<String>>,
}

impl CriticalSection for SleepsThenCommits {
    async fn is_needed(&self) -> Result<bool, BoxError> {
        Ok(true)
    }
    async fn execute(&self, lease: &LeaseHandle) -> Result<(), BoxError> {
        self.started.notify_one();
        tokio::time::sleep(self.sleep).await;
        let effect = Mutation::new_insert_builder("Effects").set("id").to("late").set("writer").to("w");
        let result = lease.commit(vec![effect.set("fence").to(0i64).build()]).await;
        *self.commit.lock().expect("not poisoned") = Some(match &result {
            Err(FencedError::LeaseLost { .. }) => "lease lost".into(),
            other => format!("{other:?}"),
        });
        result.map(|_| ()).map_err(Into::into)
    }
}

#[tokio::test]
async fn a_section_working_past_an_outage_ends_its_run_within_the_bound_and_the_next_run_succeeds() {
    // The settings of the user's report: TTL 3 s, unavailable_ms 15000, rpc_ms 1000, transaction_ms 1500.
    let (mut emulator, _first) = setup().await;
    let timeouts = Timeouts { connect_ms: 5_000, rpc_ms: 1_000, transaction_ms: 1_500 };
    let store = SpannerStore::connect_unchecked(DATABASE, "SpannerMutex", Some(emulator.endpoint()), timeouts.clone())
        .await
        .expect("connects");
    let lease = ConfigParams {
        ttl_ms: 3_000,
        safety_margin_ms: 500,
        renew_interval_ms: 800,
        unavailable_ms: 15_000,
        ..ConfigParams::default()
    };
    let cfg = lease.validate().expect("valid");
    let m = Arc::new(SpannerMutex::on_store(store, cfg.clone(), name("outage"), "test"));
    let section = Arc::new(SleepsThenCommits {
        started: tokio::sync::Notify::new(),
        sleep: Duration::from_secs(6),
        commit: std::sync::Mutex::new(None),
    });
    let run = tokio::spawn({
        let (m, section) = (Arc::clone(&m), Arc::clone(&section));
        async move { m.run(section.as_ref()).await }
    });
    section.started.notified().await;
    emulator.stop();
    let killed = std::time::Instant::now();
    // A hang would hit this much larger guard.
    let result = tokio::time::timeout(Duration::from_secs(120), run).await.expect("returns").expect("joined");
    let took = killed.elapsed();
    let bound_ms = cfg.unavailable_ms() + 2 * (timeouts.transaction_ms + timeouts.rpc_ms);
    // Printed, not asserted (wall time): the bound is asserted in virtual time by the driver tests.
    eprintln!("run() returned {} ms after the kill; the bound is {bound_ms} ms", took.as_millis());
    assert!(matches!(result, Err(RunError::Unavailable(_))), "{result:?}");
    let commit = section.commit.lock().expect("not poisoned").clone();
    assert_eq!(commit.as_deref(), Some("lease lost"), "the commit after lock-lost is refused at once");
    // Spanner is back: the same mutex, in the same process, runs its section.
    emulator.restart().await.expect("restarted");
    create_tables(&emulator).await;
    let again = m.run(&Effect::new("after-outage")).await.expect("runs after the restart");
    assert!(matches!(again, RunOutcome::Executed { .. }), "{again:?}");
}

/// A migration whose need check reads the effect through the library's database client, as users do.
struct Migration {
    store: SpannerStore,
    effect: Effect,
}

impl CriticalSection for Migration {
    async fn is_needed(&self) -> Result<bool, BoxError> {
        let client = self.store.database_client().await;
        let statement = Statement::builder("SELECT COUNT(*) AS n FROM Effects WHERE id = @id")
            .add_param("id", self.effect.id.as_str())
            .build();
        let mut rows = client.single_use().build().execute_query(statement).await?;
        let n: i64 = rows.next().await.transpose()?.ok_or("no count row")?.get("n")?;
        Ok(n == 0)
    }
    async fn execute(&self, guard: &LeaseHandle) -> Result<(), BoxError> {
        self.effect.execute(guard).await
    }
}

#[tokio::test]
async fn a_need_check_through_the_library_client_recovers_after_an_emulator_restart() {
    // Defect 3: after a restart every run failed at once with NeedCheck("Session not found"): the user's need
    // check reads through the library's client, which only the library's own lease calls rebuilt.
    let (mut emulator, store) = setup_with_own_store().await;
    let m = mutex(store.clone(), "heal");
    let first = Migration { store: store.clone(), effect: Effect::new("before") };
    assert_eq!(m.run(&first).await.expect("runs"), executed_under_row(&store, "heal").await);
    emulator.stop();
    emulator.restart().await.expect("restarted");
    create_tables(&emulator).await;
    let after = Migration { store: store.clone(), effect: Effect::new("after") };
    let outcome = m.run(&after).await.expect("the very next run succeeds");
    assert_eq!(outcome, executed_under_row(&store, "heal").await);
    assert_eq!(effect_rows(&store, "after").await, 1);
}

#[tokio::test]
async fn the_users_own_query_through_with_client_heals_after_an_emulator_restart() {
    let (mut emulator, store) = setup_with_own_store().await;
    let count = || {
        store.with_client(|client| async move {
            let query = Statement::builder("SELECT COUNT(*) AS n FROM Effects").build();
            let mut rows = client.single_use().build().execute_query(query).await?;
            rows.next().await.transpose()?.map_or(Ok(0_i64), |row| row.get("n"))
        })
    };
    assert_eq!(count().await.expect("answers"), 0);
    let kept = store.database_client().await;
    emulator.stop();
    emulator.restart().await.expect("restarted");
    create_tables(&emulator).await;
    // A client kept across the restart has lost its session; the first call through with_client heals.
    let stale = kept.single_use().build().execute_query(Statement::builder("SELECT 1").build()).await;
    assert!(stale.is_err(), "the kept client should have lost its session");
    assert_eq!(count().await.expect("heals and answers in one call"), 0);
}

/// A need check that answers "needed" once, then, under the lease, tells the test it is running and never ends.
struct HangsUnderTheLease {
    calls: AtomicU64,
    under_the_lease: tokio::sync::Notify,
}

impl CriticalSection for HangsUnderTheLease {
    async fn is_needed(&self) -> Result<bool, BoxError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            return Ok(true);
        }
        self.under_the_lease.notify_one();
        std::future::pending().await
    }

    async fn execute(&self, _guard: &LeaseHandle) -> Result<(), BoxError> {
        unreachable!("the run is dropped during its second need check")
    }
}

#[tokio::test]
async fn dropping_a_run_during_the_need_check_under_the_lease_releases_it_on_spanner() {
    // Defect 1, as first found on the emulator: the row stayed STARTED until its TTL (9 s of a 10 s lease).
    let (_emulator, store) = setup().await;
    let m = mutex(store.clone(), "dropped");
    let section =
        Arc::new(HangsUnderTheLease { calls: AtomicU64::new(0), under_the_lease: tokio::sync::Notify::new() });
    let run = {
        let (m, section) = (m.clone(), Arc::clone(&section));
        tokio::spawn(async move { m.run(section.as_ref()).await })
    };
    section.under_the_lease.notified().await;
    run.abort();
    // The background release is awaitable; once it is done the row must be free for the next client at once.
    m.shutdown().await;
    let row = store.read(&name("dropped")).await.expect("read").0.expect("the acquisition wrote the row");
    // Released as FAILED "Cancelled" (before the fix it stayed STARTED), so anyone may take it at once.
    assert_eq!((row.status, row.last_error.as_deref()), (Status::Failed, Some("Cancelled")), "{row:?}");
    let other = mutex(store.clone(), "dropped");
    let guard = other.try_acquire().await.expect("no error").expect("free at once");
    guard.release().await.expect("released");
}

/// Freezes the emulator (SIGSTOP) as its effect's fenced write starts, for longer than one attempt may take.
struct FrozenWrite {
    emulator: Arc<Emulator>,
    freeze: Duration,
    effect: Effect,
    /// What the first execution returned.
    written: std::sync::Mutex<Option<String>>,
    /// Whether the first execution's write returned before the emulator thawed.
    returned_while_frozen: AtomicBool,
}

impl CriticalSection for FrozenWrite {
    async fn is_needed(&self) -> Result<bool, BoxError> {
        Ok(true)
    }
    async fn execute(&self, guard: &LeaseHandle) -> Result<(), BoxError> {
        if self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_some() {
            return Err("only the first execution is judged".into());
        }
        self.emulator.pause();
        let (emulator, freeze) = (Arc::clone(&self.emulator), self.freeze);
        let thaw = tokio::spawn(async move {
            tokio::time::sleep(freeze).await;
            emulator.resume();
        });
        let result = self.effect.execute(guard).await;
        self.returned_while_frozen.store(!thaw.is_finished(), Ordering::SeqCst);
        thaw.await?;
        *self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(format!("{result:?}"));
        result
    }
}

/// An emulator, a mutex whose lease outlasts `freeze`, and a section that freezes the emulator that long as its
/// fenced write starts; the write is retried for `unavailable_ms`.
async fn frozen_write(id: &str, unavailable_ms: u64, freeze: Duration) -> (SpannerStore, SpannerMutex, FrozenWrite) {
    let (emulator, store) = setup().await;
    let cfg = ConfigParams {
        ttl_ms: 30_000,
        renew_interval_ms: 10_000,
        safety_margin_ms: 3_000,
        wait_ms: 200,
        max_wait_ms: 1_000,
        max_retries: 0,
        jitter_ms: 10,
        staleness_ms: 600_000,
        unavailable_ms,
        ..ConfigParams::default()
    };
    let m = SpannerMutex::on_store(store.clone(), cfg.validate().expect("valid"), name(id), "test");
    let section = FrozenWrite {
        emulator: Arc::new(emulator),
        freeze,
        effect: Effect::new(id),
        written: std::sync::Mutex::default(),
        returned_while_frozen: AtomicBool::new(false),
    };
    (store, m, section)
}

#[tokio::test]
async fn a_fenced_write_without_an_answer_is_retried_until_spanner_answers_and_lands_once() {
    // Retries of the write for up to 10 s. Frozen past one attempt's bound (transaction_ms = 3 s): the first
    // attempt has no answer, and only the retry loop of `fenced` gets the write through.
    let (store, m, section) = frozen_write("frozen", 10_000, Duration::from_millis(4_500)).await;
    let outcome = m.run(&section).await.expect("runs");
    assert_eq!(outcome, executed_under_row(&store, "frozen").await);
    let written = section.written.lock().expect("not poisoned").clone().expect("wrote");
    assert_eq!(written, "Ok(())", "the first execution's write got through");
    assert_eq!(effect_rows(&store, "frozen").await, 1);
}

#[tokio::test]
async fn a_fenced_write_spanner_never_answers_ends_as_outcome_unknown_within_its_bound() {
    // Retries of the write for 2 s after the first attempt's 3 s bound: about 6 s in all, against a 10 s freeze.
    let (store, m, section) = frozen_write("unanswered", 2_000, Duration::from_secs(10)).await;
    drop(m.run(&section).await);
    let written = section.written.lock().expect("not poisoned").clone().expect("wrote");
    // Neither "refused" nor a Spanner error: nobody can tell whether it landed, and it says so, without waiting
    // for Spanner to come back.
    assert!(written.contains("OutcomeUnknown"), "{written}");
    assert!(section.returned_while_frozen.load(Ordering::SeqCst), "returned only after the emulator thawed");
    // Requests the frozen emulator received may still have landed after the answer: once at most.
    assert!(effect_rows(&store, "unanswered").await <= 1);
}

#[tokio::test]
async fn mutexes_connect_through_an_emulator_host_and_name_a_missing_table_or_database() {
    let (emulator, _store) = setup().await;
    let host = emulator.endpoint().trim_start_matches("http://").to_owned();
    let builder = || {
        Mutexes::builder()
            .emulator_host(host.clone())
            .lease(params())
            .timeouts(Timeouts { connect_ms: 5_000, rpc_ms: 300, transaction_ms: 400 })
            .display_name("test")
    };
    let mutexes = builder().database(DATABASE).connect().await.expect("connects");
    let guard = mutexes.mutex("built").expect("valid").try_acquire().await.expect("no error").expect("free");
    guard.release().await.expect("released");
    let error = builder().database(DATABASE).table("NoSuchTable").connect().await.expect_err("no table").to_string();
    assert!(error.contains("NoSuchTable") && error.contains("spanner-mutex init"), "{error}");
    let missing = "projects/test-project/instances/test-instance/databases/nope";
    let error = builder().database(missing).connect().await.expect_err("no database").to_string();
    assert!(error.contains("databases/nope does not exist"), "{error}");
}

/// An app's own error type, as a fenced write's work may return it.
#[derive(Debug)]
enum AppError {
    Invalid,
    Spanner(google_cloud_spanner::Error),
}

impl From<google_cloud_spanner::Error> for AppError {
    fn from(error: google_cloud_spanner::Error) -> Self {
        Self::Spanner(error)
    }
}

#[tokio::test]
async fn a_lock_holder_writes_fenced_and_its_own_error_rolls_the_write_back() {
    let (_emulator, store) = setup().await;
    let lock = mutex(store.clone(), "app-error").acquire().await.expect("acquired");
    let insert = |id: &str| {
        Mutation::new_insert_builder("Effects")
            .set("id")
            .to(id)
            .set("writer")
            .to(lock.client().to_string())
            .set("fence")
            .to(i64::try_from(lock.fence().get()).unwrap_or(i64::MAX))
            .build()
    };
    let rolled_back = insert("app-error");
    let result = lock
        .fenced_with_error(move |tx| {
            let row = rolled_back.clone();
            async move {
                tx.buffer([row])?;
                Err::<(), _>(AppError::Invalid)
            }
        })
        .await;
    match result {
        Err(FencedError::Work(AppError::Invalid)) => {}
        Err(FencedError::Work(AppError::Spanner(e))) => panic!("the app's error became a Spanner one: {e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(effect_rows(&store, "app-error").await, 0, "the work's error rolled its writes back");
    // The next write of the same lock is numbered after the failed one and lands.
    let committed = lock.commit(vec![insert("app-error")]).await.expect("committed");
    assert_eq!(committed, Fenced::Committed(()));
    assert_eq!(effect_rows(&store, "app-error").await, 1);
    lock.release().await.expect("released");
}

#[tokio::test]
async fn a_forced_release_of_a_live_holder_refuses_its_write_signals_lock_lost_and_hands_the_lock_to_a_waiter() {
    let (_emulator, store) = setup().await;
    let guard = mutex(store.clone(), "forced").acquire().await.expect("acquired");
    let fence = guard.fence();
    // A waiter polls meanwhile; the holder renews, so without the operator it would wait for ever.
    let waiter = {
        let waiter = mutex(store.clone(), "forced");
        tokio::spawn(async move { waiter.acquire().await })
    };
    tokio::time::sleep(Duration::from_millis(params().renew_interval_ms * 2)).await;
    let applied = mutex(store.clone(), "forced").force_release(fence, "alice", "stuck").await.expect("applied");
    assert_eq!(applied.fence, fence);
    let (row, _) = store.read(&name("forced")).await.expect("reads");
    let row = row.expect("a row");
    assert_eq!((row.status, row.last_error.as_deref()), (Status::Failed, Some("force-released by alice: stuck")));
    // The holder's next fenced write is refused, and its next renewal tells it the lock is lost.
    let refused = insert_effect(&guard, "forced").await;
    assert!(matches!(refused, Err(FencedError::Rejected { fence: f }) if f == fence), "{refused:?}");
    tokio::time::timeout(Duration::from_secs(10), guard.lock_lost()).await.expect("lock lost signalled");
    let acquired = tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("acquired").expect("joined");
    assert_eq!(acquired.expect("no error").fence(), fence.next());
    assert_eq!(effect_rows(&store, "forced").await, 0, "nothing the released holder wrote landed");
    assert!(matches!(guard.release().await, Err(RunError::LeaseLost { .. })));
}
