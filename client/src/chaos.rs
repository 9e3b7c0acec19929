//! `chaos-worker`: one process of the chaos test (`client/tests/chaos.rs`). It runs a run-once section of
//! `steps` fenced steps until the section is done, each step one fenced insert into `ChaosSteps` recording the
//! step, the writer and the fence, and prints one line per `run()` call with its duration and result.

use google_cloud_spanner::mutation::Mutation;
use google_cloud_spanner::statement::Statement;
use spanner_mutex::{BoxError, CriticalSection, RunOutcome, SectionGuard, SpannerMutex, SpannerStore, Timeouts};
use spanner_mutex_model::{ConfigParams, MutexName};
use std::time::{Duration, Instant};

/// The history table the chaos test checks; see [`worker`].
pub(crate) const CHAOS_DDL: &str = "CREATE TABLE ChaosSteps (round STRING(64) NOT NULL, step INT64 NOT NULL, \
     writer STRING(36) NOT NULL, fence INT64 NOT NULL, committed_at TIMESTAMP NOT NULL OPTIONS \
     (allow_commit_timestamp = true)) PRIMARY KEY (round, step, writer, fence)";

/// Chaos timings: a 1 s lease, so kills and pauses cost little time.
pub(crate) fn chaos_params() -> ConfigParams {
    ConfigParams {
        ttl_ms: 1_000,
        renew_interval_ms: 250,
        safety_margin_ms: 200,
        wait_ms: 20,
        max_wait_ms: 500,
        poll_ms: 50,
        jitter_ms: 20,
        max_retries: 10_000,
        unavailable_ms: 3_000,
        staleness_ms: 3_600_000,
        ..ConfigParams::default()
    }
}

/// Bounds for chaos: one transaction must fit the renewal window (550 ms).
pub(crate) fn chaos_timeouts() -> Timeouts {
    Timeouts { connect_ms: 5_000, rpc_ms: 400, transaction_ms: 500 }
}

/// A multi-step section: each step not yet recorded is written under the fence, after a pause in which a
/// kill or a stop may land.
struct Steps {
    store: SpannerStore,
    round: String,
    steps: i64,
}

impl Steps {
    async fn recorded(&self) -> Result<Vec<i64>, BoxError> {
        let client = self.store.database_client().await;
        let statement = Statement::builder("SELECT step FROM ChaosSteps WHERE round = @round")
            .add_param("round", self.round.as_str())
            .build();
        let mut rows = client.single_use().build().execute_query(statement).await?;
        let mut steps = Vec::new();
        while let Some(row) = rows.next().await.transpose()? {
            steps.push(row.get::<i64>("step")?);
        }
        Ok(steps)
    }
}

impl CriticalSection<SpannerStore> for Steps {
    async fn is_needed(&self) -> Result<bool, BoxError> {
        Ok((self.recorded().await?.len() as i64) < self.steps)
    }

    async fn execute(&self, guard: &SectionGuard<SpannerStore>) -> Result<(), BoxError> {
        let done = self.recorded().await?;
        let (writer, fence) = (guard.client().to_string(), i64::try_from(guard.fence().get())?);
        for step in (0..self.steps).filter(|s| !done.contains(s)) {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let (round, writer) = (self.round.clone(), writer.clone());
            guard
                .fenced(move |tx| {
                    let row = Mutation::new_insert_builder("ChaosSteps")
                        .set("round")
                        .to(round.as_str())
                        .set("step")
                        .to(step)
                        .set("writer")
                        .to(writer.as_str())
                        .set("fence")
                        .to(fence)
                        .set("committed_at")
                        .to("spanner.commit_timestamp()")
                        .build();
                    async move { tx.buffer([row]) }
                })
                .await?;
            println!("step {step} fence {fence}");
        }
        Ok(())
    }
}

/// Runs the round's section until it is done, printing `call MS RESULT` per `run()`.
pub(crate) async fn worker(endpoint: String, database: String, round: String, steps: i64) -> anyhow::Result<()> {
    let store = SpannerStore::connect(database, "SpannerMutex", Some(endpoint), chaos_timeouts()).await?;
    let mutex = SpannerMutex::new(store.clone(), chaos_params().validate()?, MutexName::new(round.clone())?, "chaos");
    let section = Steps { store, round, steps };
    loop {
        let started = Instant::now();
        let result = mutex.run(&section).await;
        let verdict = match &result {
            Ok(RunOutcome::Executed { fence }) => format!("executed {}", fence.get()),
            Ok(RunOutcome::DoneByOther { .. }) => "done-by-other".into(),
            Ok(RunOutcome::NotNeeded) => "not-needed".into(),
            Err(error) => format!("error {error}"),
        };
        println!("call {} {verdict}", started.elapsed().as_millis());
        if result.is_ok() {
            return Ok(());
        }
    }
}
