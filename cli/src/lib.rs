//! The command line's building blocks, shared by the `spanner-mutex` binary and the developers' tools
//! (`tools/`): the lease flags, the demo's sections, racing clients, and preparing an emulator.

use anyhow::{Context, bail};
use clap::ValueEnum;
use google_cloud_spanner::mutation::Mutation;
use google_cloud_spanner::statement::Statement;
use spanner_mutex::emulator::{self, Emulator};
use spanner_mutex::{
    BoxError, CriticalSection, FencedError, LeaseHandle, RunOutcome, SpannerMutex, SpannerStore, Timeouts,
};
use spanner_mutex_model::ConfigParams;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Writes a line to standard output. A closed pipe (`spanner-mutex demo | head -1`) comes back as an error that
/// ends the command quietly with success ([`run_command`]), where `println!` would panic.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err($crate::output_error)
    }};
}

/// Standard output's reader went away.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct OutputClosed;

/// A failed write to standard output, as [`outln!`] reports it: [`OutputClosed`] for a closed pipe.
pub fn output_error(error: std::io::Error) -> anyhow::Error {
    if error.kind() == std::io::ErrorKind::BrokenPipe { OutputClosed.into() } else { error.into() }
}

/// Which store a command races on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreArg {
    /// The embedded in-memory store.
    Memory,
    /// The Spanner emulator (SPANNER_EMULATOR_HOST, or started here).
    Emulator,
}

/// Lease timings of `demo` and `stress` (and of the developers' stress workers). The defaults are short, so a takeover
/// shows within seconds; every rule of the lease config applies, with errors naming the flag's field.
#[derive(clap::Args, Clone, Debug)]
pub struct LeaseArgs {
    /// How long a lease lasts without renewal.
    #[arg(long, default_value_t = 3_000)]
    ttl_ms: u64,
    /// How often a holder renews [default: a third of what the margin leaves of the TTL, at most 3000].
    #[arg(long)]
    renew_interval_ms: Option<u64>,
    /// How much earlier than the TTL a holder stops relying on its lease [default: a tenth of the TTL, at most
    /// 1000].
    #[arg(long)]
    safety_margin_ms: Option<u64>,
    /// How often a waiter reads a busy row.
    #[arg(long, default_value_t = ConfigParams::default().poll_ms)]
    poll_ms: u64,
}

impl LeaseArgs {
    /// The lease parameters these flags give, with short waits for a demo.
    /// The margin and renewal interval not given follow the TTL, as in a config file ([`ConfigParams::fitted_to_ttl`]).
    pub fn params(&self) -> ConfigParams {
        let defaults = ConfigParams::default();
        ConfigParams {
            ttl_ms: self.ttl_ms,
            renew_interval_ms: self.renew_interval_ms.unwrap_or(defaults.renew_interval_ms),
            safety_margin_ms: self.safety_margin_ms.unwrap_or(defaults.safety_margin_ms),
            poll_ms: self.poll_ms,
            wait_ms: 50,
            max_wait_ms: 1_000,
            jitter_ms: 25,
            ..defaults
        }
        .fitted_to_ttl(self.safety_margin_ms.is_some(), self.renew_interval_ms.is_some())
    }

    /// The validated lease config; an error names the flags, as the config's rules name its fields.
    pub fn config(&self) -> anyhow::Result<spanner_mutex::Config> {
        self.params().validate().map_err(|error| {
            let flag = |field: &str| format!("--{}", field.replace('_', "-"));
            let mut message = error.to_string();
            for field in ["ttl_ms", "renew_interval_ms", "safety_margin_ms", "poll_ms"] {
                message = message.replace(field, &flag(field));
            }
            anyhow::anyhow!("invalid lease flags: {message}")
        })
    }

    /// Bounds on Spanner calls that fit these timings ([`Timeouts::fitting`]); the flags' own errors first.
    pub fn timeouts(&self) -> anyhow::Result<Timeouts> {
        Ok(Timeouts::fitting(&self.config()?))
    }

    /// The same flags, for a worker process.
    pub fn to_args(&self) -> Vec<String> {
        let params = self.params();
        let flags = [
            ("--ttl-ms", params.ttl_ms),
            ("--renew-interval-ms", params.renew_interval_ms),
            ("--safety-margin-ms", params.safety_margin_ms),
            ("--poll-ms", params.poll_ms),
        ];
        flags.iter().flat_map(|(flag, value)| [(*flag).to_owned(), value.to_string()]).collect()
    }
}

/// The table the demo section writes its effect to.
pub const EFFECTS_TABLE: &str = "DemoEffects";

/// The effect a demo section writes: a row of `table` keyed `id`, naming the writer and its fence.
fn effect(table: &str, id: &str, guard: &LeaseHandle) -> Mutation {
    Mutation::new_insert_builder(table)
        .set("id")
        .to(id)
        .set("writer")
        .to(guard.client().to_string())
        .set("fence")
        .to(i64::try_from(guard.fence().get()).unwrap_or(i64::MAX))
        .build()
}

/// A fenced write's refusal as the section's error.
fn fenced_error(error: FencedError) -> BoxError {
    match error {
        FencedError::Rejected { fence } => format!("fenced write rejected for {fence}").into(),
        error => error.into(),
    }
}

/// The demo section on the memory store: the effect is a fenced write kept by the store.
pub struct MemorySection {
    /// How many times the section ran, across all clients.
    pub executions: Arc<AtomicU64>,
}

impl CriticalSection for MemorySection {
    async fn is_needed(&self) -> Result<bool, BoxError> {
        Ok(self.executions.load(Ordering::SeqCst) == 0)
    }

    async fn execute(&self, guard: &LeaseHandle) -> Result<(), BoxError> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        guard.commit(vec![effect(EFFECTS_TABLE, "migration", guard)]).await.map_err(fenced_error)?;
        self.executions.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// The demo section on Spanner: the effect is a row in `DemoEffects`, written by a fenced transaction; the need
/// check reads that table (the effect), never the mutex row.
pub struct SpannerSection {
    /// The effect's key: one row per section.
    pub effect_id: String,
    /// The table the effect goes to.
    pub table: String,
}

impl CriticalSection for SpannerSection {
    async fn is_needed(&self) -> Result<bool, BoxError> {
        Ok(true)
    }

    async fn execute(&self, guard: &LeaseHandle) -> Result<(), BoxError> {
        guard.commit(vec![effect(&self.table, &self.effect_id, guard)]).await.map_err(fenced_error)?;
        Ok(())
    }
}

/// How many effects the demo section with `id` left in its table.
pub async fn count_effects(store: &SpannerStore, id: &str) -> anyhow::Result<i64> {
    let client = store.database_client().await;
    let statement = Statement::builder(format!("SELECT COUNT(*) AS n FROM {EFFECTS_TABLE} WHERE id = @id"))
        .add_param("id", id)
        .build();
    let mut rows = client.single_use().build().execute_query(statement).await?;
    let row = rows.next().await.transpose()?.context("no count row")?;
    Ok(row.get("n")?)
}

/// Whether `store`'s database has the lease table and the demo's effects table.
async fn has_demo_tables(store: &SpannerStore) -> bool {
    let client = store.database_client().await;
    let sql =
        format!("SELECT 1 FROM (SELECT 1) LEFT JOIN {} ON FALSE LEFT JOIN {EFFECTS_TABLE} ON FALSE", store.table());
    let probe = async {
        client.single_use().build().execute_query(Statement::builder(sql).build()).await?.next().await.transpose()
    };
    matches!(probe.await, Ok(Some(_)))
}

/// The emulator `SPANNER_EMULATOR_HOST` names, prepared for the demo, or one started here (returned, so it stops
/// when dropped); with the store and the gRPC endpoint.
pub async fn emulator_store(
    database: &str,
    timeouts: Timeouts,
) -> anyhow::Result<(Option<Emulator>, SpannerStore, String)> {
    if let Some(host) = emulator_host() {
        let endpoint = format!("http://{host}");
        // An emulator prepared by an earlier run needs no admin calls: those load the REST and admin clients,
        // megabytes of a short run's memory.
        let path = format!("projects/demo-project/instances/demo-instance/databases/{database}");
        let connect = SpannerStore::builder().database(path).emulator_host(&endpoint).timeouts(timeouts.clone());
        if let Ok(store) = connect.connect().await
            && has_demo_tables(&store).await
        {
            return Ok((None, store, endpoint));
        }
        let store =
            prepare_emulator(&host, "demo-project", "demo-instance", database, "SpannerMutex", timeouts).await?;
        return Ok((None, store, endpoint));
    }
    let emulator = Emulator::start().await?;
    let store = emulator.create_database("demo-project", "demo-instance", database, "SpannerMutex", timeouts).await?;
    add_effects_table(&emulator.rest_endpoint(), &emulator.endpoint(), store.database()).await?;
    let endpoint = emulator.endpoint();
    Ok((Some(emulator), store, endpoint))
}

/// `SPANNER_EMULATOR_HOST` as `host:port`, whichever form it was written in.
pub fn emulator_host() -> Option<String> {
    Some(spanner_mutex::config::emulator_host_port(&std::env::var("SPANNER_EMULATOR_HOST").ok()?).to_owned())
}

/// The REST gateway of the emulator at `host` (gRPC), which creating databases needs: `SPANNER_EMULATOR_REST`
/// (`host:port` or `http://host:port`), else the gateway's default layout, REST on the gRPC port + 10 (9010 and
/// 9020), checked to answer HTTP.
async fn emulator_rest(host: &str) -> anyhow::Result<String> {
    if let Ok(rest) = std::env::var("SPANNER_EMULATOR_REST") {
        return Ok(format!("http://{}", spanner_mutex::config::emulator_host_port(&rest)));
    }
    let (name, port) = host.rsplit_once(':').with_context(|| format!("SPANNER_EMULATOR_HOST={host} has no port"))?;
    let port: u16 = port.parse().with_context(|| format!("SPANNER_EMULATOR_HOST={host}: bad port"))?;
    let guess = format!("{name}:{}", port.saturating_add(10));
    if answers_http(&guess).await {
        return Ok(format!("http://{guess}"));
    }
    if !listens(host).await {
        bail!(
            "nothing listens at {host}, where SPANNER_EMULATOR_HOST points: start the emulator (`gcloud emulators \
             spanner start`, or its gateway_main), or point the variable at a running one"
        );
    }
    bail!(
        "creating databases needs the emulator's REST gateway, and nothing answers HTTP at {guess} (the gRPC port + \
         10, where gateway_main puts it by default); set SPANNER_EMULATOR_REST=host:port to its --http_port"
    )
}

/// Whether anything accepts a TCP connection at `addr` within 2 s.
async fn listens(addr: &str) -> bool {
    let connect = tokio::net::TcpStream::connect(addr);
    matches!(tokio::time::timeout(Duration::from_secs(2), connect).await, Ok(Ok(_)))
}

/// Whether `addr` answers an HTTP/1.1 request (the REST gateway does; the gRPC port speaks only HTTP/2).
async fn answers_http(addr: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream.write_all(b"GET / HTTP/1.1\r\nHost: emulator\r\nConnection: close\r\n\r\n").await.ok()?;
        let mut head = [0u8; 8];
        stream.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1."))
    };
    tokio::time::timeout(Duration::from_secs(2), probe).await.ok().flatten().unwrap_or(false)
}

/// Creates on a running emulator whatever is missing of the instance, the database, the lease table and the
/// demo's effects table, and connects.
pub async fn prepare_emulator(
    host: &str,
    project: &str,
    instance: &str,
    database: &str,
    table: &str,
    timeouts: Timeouts,
) -> anyhow::Result<SpannerStore> {
    let (grpc, rest) = (format!("http://{host}"), emulator_rest(host).await?);
    let store =
        emulator::create_database_at(&grpc, &rest, project, instance, database, table, timeouts).await.with_context(
            || format!("preparing {project}/{instance}/{database} on the emulator at {host} (REST {rest})"),
        )?;
    add_effects_table(&rest, &grpc, store.database()).await?;
    Ok(store)
}

/// The database admin client of the emulator at `host` (gRPC): through its REST gateway ([`emulator_rest`]).
pub async fn emulator_database_admin(
    host: &str,
) -> anyhow::Result<google_cloud_spanner_admin_database_v1::client::DatabaseAdmin> {
    let rest = emulator_rest(host).await?;
    let (_, databases) = emulator::admin_clients(&format!("http://{host}"), &rest).await?;
    Ok(databases)
}

/// Adds the demo's effects table to `database` unless it is there.
pub async fn add_effects_table(rest: &str, grpc: &str, database: &str) -> anyhow::Result<()> {
    use google_cloud_lro::Poller;
    let ddl = format!(
        "CREATE TABLE {EFFECTS_TABLE} (id STRING(64) NOT NULL, writer STRING(36) NOT NULL, fence INT64 NOT NULL) PRIMARY KEY (id)"
    );
    let (_, databases) = emulator::admin_clients(grpc, rest).await?;
    let added =
        databases.update_database_ddl().set_database(database).set_statements([ddl]).poller().until_done().await;
    match added {
        Err(e) if !emulator::already_exists(&e.to_string()) => Err(e).context(format!("adding {EFFECTS_TABLE}")),
        _ => Ok(()),
    }
}

/// Prints each client's outcome, one line each, naming clients by their number in this race (a run's client id
/// is a UUID: the client that ran the section is found by its fence).
pub fn print_outcomes(outcomes: &[(u32, Result<RunOutcome, spanner_mutex::RunError>)]) -> anyhow::Result<()> {
    let executed_by = |fence: spanner_mutex::Fence| {
        outcomes.iter().find_map(|(client, outcome)| match outcome {
            Ok(RunOutcome::Executed { fence: own }) if *own == fence => Some(*client),
            _ => None,
        })
    };
    for (client, outcome) in outcomes {
        match outcome {
            Ok(outcome @ RunOutcome::Executed { .. }) => {
                outln!("  client {client:>3}: {}", outcome.to_string().to_uppercase())?
            }
            Ok(other @ RunOutcome::DoneByOther { fence, lost_own_lease: None, .. }) => match executed_by(*fence) {
                Some(by) => outln!("  client {client:>3}: done by client {by} with fence {}", fence.get())?,
                None => outln!("  client {client:>3}: {other}")?,
            },
            Ok(other) => outln!("  client {client:>3}: {other}")?,
            Err(e) => outln!("  client {client:>3}: error: {e}")?,
        }
    }
    Ok(())
}

/// Runs `section` once in each of `clients` tasks sharing `mutex`; their outcomes, by client number.
pub async fn race<C: CriticalSection + 'static>(
    mutex: &SpannerMutex,
    section: Arc<C>,
    clients: u32,
) -> Vec<(u32, Result<RunOutcome, spanner_mutex::RunError>)> {
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let (mutex, section) = (mutex.clone(), Arc::clone(&section));
            tokio::spawn(async move { (i, mutex.run(section.as_ref()).await) })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        if let Ok(outcome) = task.await {
            outcomes.push(outcome);
        }
    }
    outcomes
}

/// Prints the executions, wall time and metrics of a demo race; an error unless the section ran exactly once.
pub fn report_executions(
    executions: i64,
    started: Instant,
    metrics: &spanner_mutex::MetricsSnapshot,
) -> anyhow::Result<()> {
    outln!(
        "section executions: {executions} (must be 1); wall {:.0} ms\nmetrics: {metrics}",
        started.elapsed().as_secs_f64() * 1e3
    )?;
    if executions != 1 {
        bail!("the section ran {executions} times");
    }
    Ok(())
}

/// Counts the effects a stress race on `name` left, prints them with the time since `started` (which included
/// starting the emulator when one was started here), and fails unless the section ran exactly once.
pub async fn report_stress_executions(
    spanner: &SpannerStore,
    name: &str,
    started: Instant,
    emulator: Option<Emulator>,
) -> anyhow::Result<()> {
    let executions = count_effects(spanner, name).await?;
    let including = if emulator.is_some() { " including emulator start" } else { "" };
    outln!("executions={executions} (must be 1); total {:.1} s{including}", started.elapsed().as_secs_f64())?;
    drop(emulator);
    if executions != 1 {
        bail!("the section ran {executions} times");
    }
    Ok(())
}

/// Runs a command for a person: logs go to stderr (`RUST_LOG`, `warn` by default), and a failure prints its cause
/// chain on one line, with no Rust backtrace whatever `RUST_BACKTRACE` says, and exits 1.
pub async fn run_command(command: impl Future<Output = anyhow::Result<()>>) -> std::process::ExitCode {
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        // Colour codes only for a person's terminal, not in a file or a CI log.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match command.await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // Whoever read the output stopped reading (`| head`): nothing is wrong.
        Err(error) if closed_pipe(&error) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether `error` is standard output closed by its reader.
fn closed_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.is::<OutputClosed>())
}
