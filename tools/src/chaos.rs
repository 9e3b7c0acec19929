//! A small Jepsen (`spanner-mutex-dev chaos --rounds N`, run by `tools/tests/chaos.rs`). In each round, real OS
//! processes of `chaos-worker` race for a run-once section of fenced steps against the emulator while a seeded
//! nemesis SIGKILLs workers (and starts replacements), SIGSTOPs one past its TTL, freezes the emulator (Spanner
//! stops answering) and restarts it (sessions lost, durable state kept). A checker over the recorded history
//! (the `ChaosSteps` rows with their fences and commit timestamps, and each worker's reported calls) asserts:
//! every step applied exactly once, fences never go back in commit order, every reported outcome true, every
//! call that failed returned within its bound, and every worker ends (no hang).
//!
//! `chaos-worker` runs the section until it is done, each step one fenced insert into `ChaosSteps` recording
//! the step, the writer and the fence, and prints one line per `run()` call with its duration and result.

use anyhow::Context;
use google_cloud_spanner::mutation::Mutation;
use google_cloud_spanner::statement::Statement;
use google_cloud_spanner::transaction::ReadWriteTransaction;
use spanner_mutex::emulator::Emulator;
use spanner_mutex::{BoxError, CriticalSection, LeaseHandle, RunOutcome, SpannerMutex, SpannerStore, Timeouts};
use spanner_mutex_model::{ConfigParams, MutexName};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

/// The history table the chaos test checks; see [`worker`].
const CHAOS_DDL: &str = "CREATE TABLE ChaosSteps (round STRING(64) NOT NULL, step INT64 NOT NULL, \
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

impl CriticalSection for Steps {
    async fn is_needed(&self) -> Result<bool, BoxError> {
        Ok((self.recorded().await?.len() as i64) < self.steps)
    }

    /// Writes each step not yet recorded through the lease. A write that fails does not stop it: like user code
    /// that does not watch for lock-lost, it goes on writing the remaining steps (each refused at once once the
    /// lock is lost, `after-lost MS` printed per write), and returns the first error at the end.
    async fn execute(&self, guard: &LeaseHandle) -> Result<(), BoxError> {
        let done = self.recorded().await?;
        let (writer, fence) = (guard.client().to_string(), i64::try_from(guard.fence().get())?);
        let mut first_error = None;
        for step in (0..self.steps).filter(|s| !done.contains(s)) {
            tokio::time::sleep(STEP_PAUSE).await;
            let (round, writer) = (self.round.clone(), writer.clone());
            let (lost, started) = (guard.is_lock_lost(), Instant::now());
            let written = guard
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
                .await;
            if lost {
                println!("after-lost {}", started.elapsed().as_millis());
            }
            match written {
                Ok(_) => println!("step {step} fence {fence}"),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), |error| Err(error.into()))
    }
}

/// Runs the round's section until it is done, printing `call MS @START RESULT` per `run()` (its duration, and
/// when it started in Unix milliseconds).
pub(crate) async fn worker(endpoint: String, database: String, round: String, steps: i64) -> anyhow::Result<()> {
    let store =
        SpannerStore::builder().database(database).emulator_host(endpoint).timeouts(chaos_timeouts()).connect().await?;
    let mutex =
        SpannerMutex::on_store(store.clone(), chaos_params().validate()?, MutexName::new(round.clone())?, "chaos");
    let section = Steps { store, round, steps };
    loop {
        let (started, start_unix_ms) = (Instant::now(), unix_ms());
        let result = mutex.run(&section).await;
        let verdict = match &result {
            Ok(RunOutcome::Executed { fence }) => format!("executed {}", fence.get()),
            Ok(RunOutcome::DoneByOther { .. }) => "done-by-other".into(),
            Ok(RunOutcome::NotNeeded) => "not-needed".into(),
            Err(error) => format!("error {error}"),
        };
        println!("call {} @{start_unix_ms} {verdict}", started.elapsed().as_millis());
        if result.is_ok() {
            return Ok(());
        }
    }
}

const PROJECT: &str = "chaos-project";
const INSTANCE: &str = "chaos-instance";
const DATABASE: &str = "chaos-db";
const LEASE_TABLE: &str = "SpannerMutex";
/// `ChaosSteps`' columns and types, as [`spanner_mutex::schema::COLUMNS`] lists the lease table's.
const CHAOS_COLUMNS: &[(&str, &str)] =
    &[("round", "STRING"), ("step", "INT64"), ("writer", "STRING"), ("fence", "INT64"), ("committed_at", "TIMESTAMP")];
const WORKERS: usize = 3;
const STEPS: i64 = 6;
/// A section's own work before each step's write.
const STEP_PAUSE: Duration = Duration::from_millis(150);
/// The longest a fenced write called after lock-lost may take: it is refused without a Spanner call, so this only
/// pays for a loaded 2-core machine (time the worker was frozen is added).
const AFTER_LOST_MS: u64 = 50;
/// Longer than the chaos lease (1 s), so the stopped holder is taken over.
const STOP_FOR: Duration = Duration::from_millis(1_500);
/// A round that has not ended by then has hung.
const ROUND_LIMIT: Duration = Duration::from_secs(90);

fn unix_ms() -> u64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// One `call MS @START RESULT` line.
struct Call<'a> {
    took_ms: u64,
    start_unix_ms: u64,
    /// `executed F`, `done-by-other`, `not-needed` or `error ...`.
    verdict: Vec<&'a str>,
}

impl<'a> Call<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let mut fields = line.split_whitespace();
        (fields.next() == Some("call")).then_some(())?;
        let took_ms = fields.next()?.parse().ok()?;
        let start_unix_ms = fields.next()?.strip_prefix('@')?.parse().ok()?;
        Some(Self { took_ms, start_unix_ms, verdict: fields.collect() })
    }

    /// How long it took to fail from the moment Spanner stopped answering: from the last outage that began
    /// before it ended, or from its start if that was later.
    fn failing_ms(&self, outage_starts_unix_ms: &[u64]) -> u64 {
        let end = self.start_unix_ms + self.took_ms;
        let outage = outage_starts_unix_ms.iter().copied().filter(|&o| o <= end).max().unwrap_or(0);
        end - outage.max(self.start_unix_ms)
    }
}

/// The longest a `run()` may take to fail, from the moment Spanner stops answering (or from its start, if later;
/// time the worker was frozen is added): the next store call after the longest wait, the unavailability budget,
/// a last call and its resolving read, and the need check's read; the section's own work, which goes on after
/// lock-lost (every step's pause); plus a second for a loaded 2-core machine running three workers and the
/// emulator.
fn failure_bound() -> Duration {
    let (p, t) = (chaos_params(), chaos_timeouts());
    let section_ms = u64::try_from(STEP_PAUSE.as_millis()).unwrap_or(u64::MAX) * STEPS.unsigned_abs();
    Duration::from_millis(
        p.max_wait_ms
            + p.jitter_ms
            + p.unavailable_ms
            + 2 * (t.transaction_ms + t.rpc_ms)
            + t.rpc_ms
            + section_ms
            + 1_000,
    )
}

fn path() -> String {
    format!("projects/{PROJECT}/instances/{INSTANCE}/databases/{DATABASE}")
}

/// A seeded stream of choices (SplitMix64): the same rounds for the same seed.
struct Choices(u64);

impl Choices {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

/// One worker process and what it has reported.
struct Worker {
    child: Child,
    lines: tokio::task::JoinHandle<Vec<String>>,
    /// How long the nemesis kept it frozen (its calls may take that much longer).
    frozen: Duration,
}

impl Worker {
    fn spawn(endpoint: &str, round: &str) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["chaos-worker", "--endpoint", endpoint, "--database", &path(), "--name", round])
            .args(["--steps", &STEPS.to_string()])
            .env("RUST_LOG", "off")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let lines = tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            let mut all = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                all.push(line);
            }
            all
        });
        Ok(Self { child, lines, frozen: Duration::ZERO })
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    fn signal(&self, name: &str) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args([name, &pid.to_string()]).status();
        }
    }

    /// Waits for it to end; its report lines and frozen time.
    async fn end(mut self, round: &str) -> anyhow::Result<Report> {
        let status = tokio::time::timeout(ROUND_LIMIT, self.child.wait())
            .await
            .with_context(|| format!("{round}: a worker hung"))??;
        let lines = self.lines.await?;
        anyhow::ensure!(status.success(), "{round}: a worker failed ({status}): {lines:?}");
        Ok(Report { lines, frozen: self.frozen })
    }

    async fn kill(mut self) -> anyhow::Result<Report> {
        self.child.start_kill()?;
        let _ = self.child.wait().await;
        Ok(Report { lines: self.lines.await?, frozen: self.frozen })
    }
}

/// What one worker reported: `step S fence F` and `call MS RESULT` lines.
#[derive(Debug)]
struct Report {
    lines: Vec<String>,
    frozen: Duration,
}

impl Report {
    fn frozen_ms(&self) -> u64 {
        u64::try_from(self.frozen.as_millis()).unwrap_or(u64::MAX)
    }
}

/// One recorded step and the fence it was written under, in commit order.
#[derive(Debug)]
struct Applied {
    step: i64,
    fence: i64,
}

/// The emulator's database with the lease and history tables; a store on it.
async fn setup(emulator: &Emulator) -> anyhow::Result<SpannerStore> {
    let store = emulator.create_database(PROJECT, INSTANCE, DATABASE, LEASE_TABLE, Timeouts::default()).await?;
    emulator.apply_ddl(&path(), vec![CHAOS_DDL.to_owned()]).await?;
    Ok(store)
}

/// Every row of the lease and history tables, as the mutations that insert it again.
async fn snapshot(store: &SpannerStore) -> anyhow::Result<Vec<Mutation>> {
    let client = store.database_client().await;
    let mut mutations = Vec::new();
    for (table, columns) in [(LEASE_TABLE, spanner_mutex::schema::COLUMNS), ("ChaosSteps", CHAOS_COLUMNS)] {
        let select: Vec<String> = columns
            .iter()
            .map(|&(column, ty)| match ty {
                "TIMESTAMP" => format!("FORMAT_TIMESTAMP('%Y-%m-%dT%H:%M:%E6SZ', {column}, 'UTC') AS {column}"),
                _ => column.to_owned(),
            })
            .collect();
        let sql = format!("SELECT {} FROM {table}", select.join(", "));
        let mut rows = client.single_use().build().execute_query(Statement::builder(sql).build()).await?;
        while let Some(row) = rows.next().await.transpose()? {
            let mut insert = Mutation::new_insert_builder(table);
            for &(column, ty) in columns {
                insert = if ty == "INT64" {
                    insert.set(column).to(row.get::<Option<i64>>(column)?)
                } else {
                    // Strings, and timestamps as RFC 3339 text (Spanner parses them for a TIMESTAMP column).
                    insert.set(column).to(row.get::<Option<String>>(column)?)
                };
            }
            mutations.push(insert.build());
        }
    }
    Ok(mutations)
}

async fn restore(store: &SpannerStore, mutations: Vec<Mutation>) -> anyhow::Result<()> {
    if mutations.is_empty() {
        return Ok(());
    }
    let client = store.database_client().await;
    client
        .read_write_transaction()
        .build()
        .run(move |tx: ReadWriteTransaction| {
            let mutations = mutations.clone();
            async move { tx.buffer(mutations) }
        })
        .await?;
    Ok(())
}

async fn history(store: &SpannerStore, round: &str) -> anyhow::Result<Vec<Applied>> {
    let client = store.database_client().await;
    let statement =
        Statement::builder("SELECT step, fence FROM ChaosSteps WHERE round = @round ORDER BY committed_at, fence")
            .add_param("round", round)
            .build();
    let mut rows = client.single_use().build().execute_query(statement).await?;
    let mut applied = Vec::new();
    while let Some(row) = rows.next().await.transpose()? {
        applied.push(Applied { step: row.get("step")?, fence: row.get("fence")? });
    }
    Ok(applied)
}

/// Everything wrong with one round's history and reports.
fn violations(applied: &[Applied], reports: &[Report], outage_starts_unix_ms: &[u64]) -> Vec<String> {
    let mut found = Vec::new();
    let mut per_step: BTreeMap<i64, usize> = BTreeMap::new();
    for a in applied {
        *per_step.entry(a.step).or_default() += 1;
    }
    for step in 0..STEPS {
        match per_step.get(&step) {
            Some(1) => {}
            count => found.push(format!("step {step} applied {} times", count.copied().unwrap_or(0))),
        }
    }
    for pair in applied.windows(2) {
        if pair[1].fence < pair[0].fence {
            found.push(format!("fence {} landed after fence {}: {:?}", pair[1].fence, pair[0].fence, pair));
        }
    }
    let complete = per_step.len() as i64 == STEPS;
    for report in reports {
        for took_ms in report.lines.iter().filter_map(|l| l.strip_prefix("after-lost ")?.parse::<u64>().ok()) {
            if took_ms > AFTER_LOST_MS + report.frozen_ms() {
                found.push(format!(
                    "a fenced write called after lock-lost took {took_ms} ms: it must be refused at once, without a \
                     Spanner call (bound {AFTER_LOST_MS} ms + {:?} frozen)",
                    report.frozen
                ));
            }
        }
        for line in report.lines.iter().filter(|l| l.starts_with("call ")) {
            let Some(call) = Call::parse(line) else {
                found.push(format!("unreadable report: {line}"));
                continue;
            };
            let true_ = match call.verdict.as_slice() {
                ["executed", fence] => {
                    let fence: i64 = fence.parse().unwrap_or(-1);
                    complete && applied.iter().any(|a| a.fence == fence)
                }
                ["done-by-other" | "not-needed"] => complete,
                // Errors come while the nemesis works; what is judged is how long they took to fail.
                _ => {
                    let failing = Duration::from_millis(call.failing_ms(outage_starts_unix_ms));
                    if failing > failure_bound() + report.frozen {
                        found.push(format!(
                            "call failed {failing:?} after Spanner stopped answering (or it started), over its \
                             bound of {:?} (+{:?} frozen): {line}",
                            failure_bound(),
                            report.frozen
                        ));
                    }
                    true
                }
            };
            if !true_ {
                found.push(format!("untrue report: {line}"));
            }
        }
    }
    found
}

/// What the nemesis did.
#[derive(Debug, Default)]
struct Nemesis {
    kills: u64,
    pauses: u64,
    outages: u64,
    restarts: u64,
}

/// Runs `rounds` rounds with the nemesis seeded by `seed`; prints one summary line and fails on any violation.
pub(crate) async fn chaos(rounds: u64, seed: u64) -> anyhow::Result<()> {
    let mut emulator = Emulator::start().await.context("the Spanner emulator must be installed (see README)")?;
    let mut store = setup(&emulator).await?;
    let endpoint = emulator.endpoint();
    let mut choices = Choices(seed);
    let mut nemesis = Nemesis::default();
    let mut all_violations = Vec::new();
    let (mut failed_calls, mut slowest_failure_ms) = (0u64, 0u64);
    let (mut writes_after_lost, mut slowest_after_lost_ms) = (0u64, 0u64);
    let started = Instant::now();
    for r in 0..rounds {
        let round = format!("chaos-{r}");
        let mut workers = (0..WORKERS).map(|_| Worker::spawn(&endpoint, &round)).collect::<Result<Vec<_>, _>>()?;
        let (mut reports, mut outage_starts) = (Vec::new(), Vec::new());
        // Two nemesis actions at seeded moments while the workers race and step.
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(150 + choices.below(500))).await;
            let alive: Vec<usize> = (0..workers.len()).filter(|&i| workers[i].alive()).collect();
            if alive.is_empty() {
                break;
            }
            let victim = alive[usize::try_from(choices.below(alive.len() as u64))?];
            match choices.below(4) {
                0 => {
                    reports.push(workers.swap_remove(victim).kill().await?);
                    workers.push(Worker::spawn(&endpoint, &round)?);
                    nemesis.kills += 1;
                }
                1 => {
                    workers[victim].signal("-STOP");
                    tokio::time::sleep(STOP_FOR).await;
                    workers[victim].signal("-CONT");
                    workers[victim].frozen += STOP_FOR;
                    nemesis.pauses += 1;
                }
                2 => {
                    // Spanner stops answering for 1-4 s: every call in flight runs into its bound.
                    outage_starts.push(unix_ms());
                    emulator.pause();
                    tokio::time::sleep(Duration::from_millis(1_000 + choices.below(3_000))).await;
                    emulator.resume();
                    nemesis.outages += 1;
                }
                _ => {
                    // A restart that keeps what was committed and loses every session: workers frozen, the
                    // calls in flight given time to land, the tables copied, the emulator restarted on the
                    // same ports and the copy written back.
                    let frozen_at = Instant::now();
                    for worker in &workers {
                        worker.signal("-STOP");
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let rows = snapshot(&store).await?;
                    emulator.restart().await?;
                    store = setup(&emulator).await?;
                    restore(&store, rows).await?;
                    for worker in &mut workers {
                        worker.signal("-CONT");
                        worker.frozen += frozen_at.elapsed();
                    }
                    nemesis.restarts += 1;
                }
            }
        }
        for worker in workers {
            reports.push(worker.end(&round).await?);
        }
        for report in &reports {
            for took_ms in report.lines.iter().filter_map(|l| l.strip_prefix("after-lost ")?.parse::<u64>().ok()) {
                writes_after_lost += 1;
                slowest_after_lost_ms = slowest_after_lost_ms.max(took_ms);
            }
            for call in
                report.lines.iter().filter_map(|l| Call::parse(l)).filter(|c| c.verdict.first() == Some(&"error"))
            {
                failed_calls += 1;
                let failing_ms = call.failing_ms(&outage_starts).saturating_sub(report.frozen_ms());
                slowest_failure_ms = slowest_failure_ms.max(failing_ms);
            }
        }
        let applied = history(&store, &round).await?;
        let found = violations(&applied, &reports, &outage_starts);
        if !found.is_empty() {
            all_violations.push(format!("{round}: {found:?}\nhistory: {applied:?}\nreports: {reports:?}"));
        }
    }
    let Nemesis { kills, pauses, outages, restarts } = nemesis;
    println!(
        "rounds={rounds} kills={kills} pauses={pauses} outages={outages} restarts={restarts} violations={} \
         failed_calls={failed_calls} slowest_failure_ms={slowest_failure_ms} (bound {} ms, frozen time excluded) \
         writes_after_lost={writes_after_lost} slowest_after_lost_ms={slowest_after_lost_ms} (bound \
         {AFTER_LOST_MS} ms) seed={seed} took={}s",
        all_violations.len(),
        failure_bound().as_millis(),
        started.elapsed().as_secs()
    );
    anyhow::ensure!(all_violations.is_empty(), "{}", all_violations.join("\n\n"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(pairs: &[(i64, i64)]) -> Vec<Applied> {
        pairs.iter().map(|&(step, fence)| Applied { step, fence }).collect()
    }

    fn report(lines: &[&str]) -> Vec<Report> {
        vec![Report { lines: lines.iter().map(|&l| l.to_owned()).collect(), frozen: Duration::from_secs(1) }]
    }

    #[test]
    fn the_checker_finds_a_step_applied_twice_a_stale_fence_an_untrue_report_and_a_slow_failure() {
        let clean = applied(&[(0, 1), (1, 1), (2, 2), (3, 2), (4, 2), (5, 3)]);
        let calls = report(&[
            "call 900 @0 executed 3",
            "call 950 @0 done-by-other",
            "after-lost 0",
            "call 4000 @0 error unavailable",
        ]);
        assert_eq!(violations(&clean, &calls, &[]), Vec::<String>::new());
        // A write after lock-lost that made a Spanner round trip (the report's worker was frozen for 1 s).
        let found = violations(&clean, &report(&["after-lost 1500"]), &[]);
        assert!(found.iter().any(|v| v.contains("after lock-lost took 1500 ms")), "{found:?}");
        let twice = applied(&[(0, 1), (1, 1), (1, 2), (2, 2), (3, 2), (4, 2), (5, 2)]);
        assert_eq!(violations(&twice, &[], &[]).len(), 1, "step 1 twice");
        let stale = applied(&[(0, 2), (1, 1), (2, 2), (3, 2), (4, 2), (5, 2)]);
        assert_eq!(violations(&stale, &[], &[]).len(), 1, "fence 1 after fence 2");
        let missing = applied(&[(0, 1)]);
        let found = violations(&missing, &report(&["call 10 @0 executed 1"]), &[]);
        assert!(found.iter().any(|v| v.starts_with("untrue report")), "{found:?}");
        let slow_ms = (failure_bound() + Duration::from_secs(1)).as_millis() + 1;
        let slow = format!("call {slow_ms} @1000 error Spanner unavailable");
        let found = violations(&clean, &report(&[&slow]), &[]);
        assert!(found.iter().any(|v| v.contains("over its bound")), "{found:?}");
        // The same call is in time if Spanner stopped answering well after it started.
        assert_eq!(violations(&clean, &report(&[&slow]), &[3_000]), Vec::<String>::new());
    }
}
