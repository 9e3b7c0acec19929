//! `spanner-mutex` CLI: demo, init, status, run-once, stress.

mod bench;
mod chaos;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use google_cloud_spanner::statement::Statement;
use spanner_mutex::emulator::{self, Emulator};
use spanner_mutex::spanner::FencedError;
use spanner_mutex::{
    BoxError, CriticalSection, LeaseHandle, LeaseStore, MemoryStore, MutexConfig, Mutexes, RunOutcome, SpannerMutex,
    SpannerStore, Timeouts,
};
use spanner_mutex_model::{ConfigParams, MutexName};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(version, about = "A distributed mutex / lease on Cloud Spanner")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreArg {
    /// The embedded in-memory store.
    Memory,
    /// The Spanner emulator (SPANNER_EMULATOR_HOST, or started here).
    Emulator,
}

/// Where the internal helper commands find their mutex.
#[derive(clap::Args)]
struct Target {
    /// Emulator gRPC endpoint.
    #[arg(long)]
    endpoint: String,
    /// Database path.
    #[arg(long)]
    database: String,
    /// Mutex name.
    #[arg(long)]
    name: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Race several clients for one run-once section and show who ran it.
    Demo {
        /// Force a store (default: the emulator when available, else memory).
        #[arg(long, value_enum)]
        store: Option<StoreArg>,
        /// Racing clients.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
        clients: u32,
        #[command(flatten)]
        lease: LeaseArgs,
    },
    /// Create the instance, database and table on the emulator (only the table on real Spanner).
    Init {
        /// Config file (TOML or JSON, ours or the seed's).
        #[arg(long)]
        config: std::path::PathBuf,
    },
    /// Show a mutex row.
    Status {
        /// Config file.
        #[arg(long)]
        config: std::path::PathBuf,
        /// Mutex name (default: the config's).
        name: Option<String>,
    },
    /// One client runs a section that appends a line to a file (the seed's demo).
    RunOnce {
        /// Config file.
        #[arg(long)]
        config: std::path::PathBuf,
        /// The file to append to.
        #[arg(long, default_value = "run-once.log")]
        file: std::path::PathBuf,
    },
    /// N clients race one run-once section; prints executions (must be 1), wall time, RPCs, outcomes.
    Stress {
        /// Clients in total.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        clients: u32,
        /// Processes to spread them over (emulator only).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
        processes: u32,
        /// Store.
        #[arg(long, value_enum, default_value = "emulator")]
        store: StoreArg,
        #[command(flatten)]
        lease: LeaseArgs,
    },
    /// Measure the client's performance figures against the emulator (Markdown table).
    Bench {
        /// Iterations of the latency comparison.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(5..=10_000))]
        iterations: u32,
    },
    /// Internal: acquire a lock and hold it until killed (used by `bench`).
    #[command(hide = true)]
    Hold {
        #[command(flatten)]
        target: Target,
    },
    /// Internal: one process of the chaos test (`cli/tests/chaos.rs`).
    #[command(hide = true)]
    ChaosWorker {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        steps: i64,
    },
    /// Internal: the chaos test (`cli/tests/chaos.rs`): worker processes under a nemesis, against an
    /// emulator started here; one summary line; fails on any violation.
    #[command(hide = true)]
    Chaos {
        /// Rounds to run.
        #[arg(long, default_value_t = 30)]
        rounds: u64,
        /// Seeds the nemesis's choices.
        #[arg(long, default_value_t = 0x5eed)]
        seed: u64,
    },
    /// Internal: one process of the hand-over benchmark (used by `bench`).
    #[command(hide = true)]
    HandoverWorker {
        #[command(flatten)]
        target: Target,
        /// `lock`: take turns holding the lock; `done`: race run-once sections.
        #[arg(long)]
        mode: bench::HandoverMode,
        #[arg(long)]
        rounds: u32,
    },
    /// Internal: one process of `stress --processes`.
    #[command(hide = true)]
    StressWorker {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        clients: u32,
        #[arg(long, default_value = EFFECTS_TABLE)]
        effects_table: String,
        #[command(flatten)]
        lease: LeaseArgs,
    },
}

/// Lease timings of `demo` and `stress` (and the workers `stress` starts). The defaults are short, so a takeover
/// shows within seconds; every rule of the lease config applies, with errors naming the flag's field.
#[derive(clap::Args, Clone, Debug)]
struct LeaseArgs {
    /// How long a lease lasts without renewal.
    #[arg(long, default_value_t = 3_000)]
    ttl_ms: u64,
    /// How often a holder renews.
    #[arg(long, default_value_t = 1_000)]
    renew_interval_ms: u64,
    /// How much earlier than the TTL a holder stops relying on its lease.
    #[arg(long, default_value_t = 500)]
    safety_margin_ms: u64,
    /// How often a waiter reads a busy row.
    #[arg(long, default_value_t = ConfigParams::default().poll_ms)]
    poll_ms: u64,
}

impl LeaseArgs {
    fn params(&self) -> ConfigParams {
        ConfigParams {
            ttl_ms: self.ttl_ms,
            renew_interval_ms: self.renew_interval_ms,
            safety_margin_ms: self.safety_margin_ms,
            poll_ms: self.poll_ms,
            wait_ms: 50,
            max_wait_ms: 1_000,
            jitter_ms: 25,
            ..ConfigParams::default()
        }
    }

    /// The validated lease config; an error names the flags, as the config's rules name its fields.
    fn config(&self) -> anyhow::Result<spanner_mutex::Config> {
        self.params().validate().map_err(|error| {
            let flag = |field: &str| format!("--{}", field.replace('_', "-"));
            let mut message = error.to_string();
            for field in ["ttl_ms", "renew_interval_ms", "safety_margin_ms", "poll_ms"] {
                message = message.replace(field, &flag(field));
            }
            anyhow::anyhow!("invalid lease flags: {message}")
        })
    }

    /// The same flags, for a worker process.
    fn to_args(&self) -> Vec<String> {
        let flags = [
            ("--ttl-ms", self.ttl_ms),
            ("--renew-interval-ms", self.renew_interval_ms),
            ("--safety-margin-ms", self.safety_margin_ms),
            ("--poll-ms", self.poll_ms),
        ];
        flags.iter().flat_map(|(flag, value)| [(*flag).to_owned(), value.to_string()]).collect()
    }
}

pub(crate) const EFFECTS_TABLE: &str = "DemoEffects";

/// The demo section on the memory store: the effect is a fenced entry in the store's user data.
struct MemorySection {
    executions: Arc<AtomicU64>,
}

impl CriticalSection<MemoryStore> for MemorySection {
    async fn is_needed(&self) -> Result<bool, BoxError> {
        Ok(self.executions.load(Ordering::SeqCst) == 0)
    }

    async fn execute(&self, guard: &LeaseHandle<MemoryStore>) -> Result<(), BoxError> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let executions = Arc::clone(&self.executions);
        let fence = guard.fence();
        guard.fenced(move |data| {
            data.insert("migration".into(), format!("applied with {fence}"));
            executions.fetch_add(1, Ordering::SeqCst);
        })?;
        Ok(())
    }
}

/// The demo section on Spanner: the effect is a row in `DemoEffects`, written by a fenced transaction; the need
/// check reads that table (the effect), never the mutex row.
pub(crate) struct SpannerSection {
    pub(crate) effect_id: String,
    pub(crate) table: String,
}

impl CriticalSection<SpannerStore> for SpannerSection {
    async fn is_needed(&self) -> Result<bool, BoxError> {
        Ok(true)
    }

    async fn execute(&self, guard: &LeaseHandle<SpannerStore>) -> Result<(), BoxError> {
        let insert = google_cloud_spanner::mutation::Mutation::new_insert_builder(&self.table)
            .set("id")
            .to(&self.effect_id)
            .set("writer")
            .to(guard.client().to_string())
            .set("fence")
            .to(i64::try_from(guard.fence().get()).unwrap_or(i64::MAX))
            .build();
        let result = guard.commit(vec![insert]).await;
        match result {
            Ok(_) => Ok(()),
            Err(FencedError::Rejected { fence }) => Err(format!("fenced write rejected for {fence}").into()),
            Err(e) => Err(e.into()),
        }
    }
}

async fn count_effects(store: &SpannerStore, id: &str) -> anyhow::Result<i64> {
    let client = store.database_client().await;
    let statement = Statement::builder(format!("SELECT COUNT(*) AS n FROM {EFFECTS_TABLE} WHERE id = @id"))
        .add_param("id", id)
        .build();
    let mut rows = client.single_use().build().execute_query(statement).await?;
    let row = rows.next().await.transpose()?.context("no count row")?;
    Ok(row.get("n")?)
}

async fn emulator_store(database: &str) -> anyhow::Result<(Option<Emulator>, SpannerStore, String)> {
    let timeouts = Timeouts::default();
    if let Some(host) = emulator_host() {
        let store =
            prepare_emulator(&host, "demo-project", "demo-instance", database, "SpannerMutex", timeouts).await?;
        return Ok((None, store, format!("http://{host}")));
    }
    let emulator = Emulator::start().await?;
    let store = emulator.create_database("demo-project", "demo-instance", database, "SpannerMutex", timeouts).await?;
    add_effects_table(&emulator.rest_endpoint(), &emulator.endpoint(), store.database()).await?;
    let endpoint = emulator.endpoint();
    Ok((Some(emulator), store, endpoint))
}

/// `SPANNER_EMULATOR_HOST` as `host:port`, whichever form it was written in.
fn emulator_host() -> Option<String> {
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
    bail!(
        "creating databases needs the emulator's REST gateway, and nothing answers HTTP at {guess} (the gRPC port + \
         10, where gateway_main puts it by default); set SPANNER_EMULATOR_REST=host:port to its --http_port"
    )
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
async fn prepare_emulator(
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

/// Adds the demo's effects table to `database` unless it is there.
pub(crate) async fn add_effects_table(rest: &str, grpc: &str, database: &str) -> anyhow::Result<()> {
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

fn print_outcomes(outcomes: &[(u32, Result<RunOutcome, spanner_mutex::RunError>)]) {
    for (client, outcome) in outcomes {
        match outcome {
            Ok(outcome @ RunOutcome::Executed { .. }) => {
                println!("  client {client:>3}: {}", outcome.to_string().to_uppercase())
            }
            Ok(other) => println!("  client {client:>3}: {other}"),
            Err(e) => println!("  client {client:>3}: error: {e}"),
        }
    }
}

pub(crate) async fn race<S: LeaseStore, C: CriticalSection<S> + 'static>(
    mutex: &SpannerMutex<S>,
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

fn report_executions(
    executions: i64,
    started: Instant,
    metrics: &spanner_mutex::MetricsSnapshot,
) -> anyhow::Result<()> {
    println!(
        "section executions: {executions} (must be 1); wall {:.0} ms\nmetrics: {metrics}",
        started.elapsed().as_secs_f64() * 1e3
    );
    if executions != 1 {
        bail!("the section ran {executions} times");
    }
    Ok(())
}

async fn demo(store: Option<StoreArg>, clients: u32, lease: &LeaseArgs) -> anyhow::Result<()> {
    let cfg = lease.config()?;
    let name = MutexName::new("demo-migration")?;
    let use_emulator = match store {
        Some(StoreArg::Memory) => false,
        Some(StoreArg::Emulator) => true,
        None => std::env::var_os("SPANNER_EMULATOR_HOST").is_some() || emulator::is_installed(),
    };
    let started = Instant::now();
    if use_emulator {
        let (emulator, store, endpoint) = emulator_store("demo-db").await?;
        println!(
            "store: Spanner emulator at {endpoint}{}",
            if emulator.is_some() { " (started for this demo)" } else { "" }
        );
        let mutex = SpannerMutex::new(store.clone(), cfg, name, "demo");
        let effect_id = format!("demo-{}", uuid::Uuid::new_v4());
        println!("{clients} clients race for run-once section {effect_id:?}");
        let outcomes = race(
            &mutex,
            Arc::new(SpannerSection { effect_id: effect_id.clone(), table: EFFECTS_TABLE.into() }),
            clients,
        )
        .await;
        print_outcomes(&outcomes);
        let executions = count_effects(&store, &effect_id).await?;
        report_executions(executions, started, &mutex.metrics())?;
    } else {
        println!("store: in-memory (embedded default; no Spanner emulator found, see README to install one)");
        let mutex = SpannerMutex::new(MemoryStore::new(), cfg, name, "demo");
        let executions = Arc::new(AtomicU64::new(0));
        println!("{clients} clients race for one run-once section");
        let outcomes = race(&mutex, Arc::new(MemorySection { executions: Arc::clone(&executions) }), clients).await;
        print_outcomes(&outcomes);
        report_executions(executions.load(Ordering::SeqCst).try_into()?, started, &mutex.metrics())?;
    }
    Ok(())
}

fn load(path: &std::path::Path) -> anyhow::Result<MutexConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    MutexConfig::parse(&text).with_context(|| format!("in {}", path.display()))
}

/// Appends one line to a file, once across all clients; need = the line is not there yet.
struct AppendLine {
    file: std::path::PathBuf,
    line: String,
}

impl CriticalSection<SpannerStore> for AppendLine {
    async fn is_needed(&self) -> Result<bool, BoxError> {
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        Ok(!text.lines().any(|l| l == self.line))
    }

    async fn execute(&self, guard: &LeaseHandle<SpannerStore>) -> Result<(), BoxError> {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.file)?;
        writeln!(file, "{}", self.line)?;
        tracing::info!(fence = %guard.fence(), "appended");
        Ok(())
    }
}

async fn stress_worker(
    endpoint: String,
    database: String,
    name: String,
    clients: u32,
    table: String,
    lease: &LeaseArgs,
) -> anyhow::Result<()> {
    let store = SpannerStore::connect(database, "SpannerMutex", Some(endpoint), Timeouts::default()).await?;
    let mutex = SpannerMutex::new(store, lease.config()?, MutexName::new(name.clone())?, "stress");
    let outcomes = race(&mutex, Arc::new(SpannerSection { effect_id: name, table }), clients).await;
    for (_, outcome) in outcomes {
        println!(
            "{}",
            match outcome {
                Ok(RunOutcome::Executed { .. }) => "executed".to_owned(),
                Ok(RunOutcome::DoneByOther { .. }) => "done-by-other".to_owned(),
                Ok(RunOutcome::NotNeeded) => "not-needed".to_owned(),
                Err(e) => format!("error: {e}"),
            }
        );
    }
    println!("rpc transactions={} reads={}", mutex.metrics().transactions, mutex.metrics().reads);
    Ok(())
}

async fn stress(clients: u32, processes: u32, store: StoreArg, lease: &LeaseArgs) -> anyhow::Result<()> {
    let cfg = lease.config()?;
    let name = format!("stress-{}", uuid::Uuid::new_v4().simple());
    let started = Instant::now();
    if store == StoreArg::Memory {
        let mutex = SpannerMutex::new(MemoryStore::new(), cfg, MutexName::new(name)?, "stress");
        let executions = Arc::new(AtomicU64::new(0));
        let outcomes = race(&mutex, Arc::new(MemorySection { executions: Arc::clone(&executions) }), clients).await;
        let failed = outcomes.iter().filter(|(_, o)| o.is_err()).count();
        let m = mutex.metrics();
        println!(
            "executions={} clients={clients} wall_ms={:.1} transactions={} reads={} errors={failed}",
            executions.load(Ordering::SeqCst),
            started.elapsed().as_secs_f64() * 1e3,
            m.transactions,
            m.reads
        );
        return Ok(());
    }
    let (emulator, spanner, endpoint) = emulator_store("stress-db").await?;
    let wall = Instant::now();
    let executions = if processes <= 1 {
        let mutex = SpannerMutex::new(spanner.clone(), cfg, MutexName::new(name.clone())?, "stress");
        let outcomes =
            race(&mutex, Arc::new(SpannerSection { effect_id: name.clone(), table: EFFECTS_TABLE.into() }), clients)
                .await;
        let failed = outcomes.iter().filter(|(_, o)| o.is_err()).count();
        let m = mutex.metrics();
        println!(
            "clients={clients} processes=1 wall_ms={:.1} transactions={} reads={} errors={failed}",
            wall.elapsed().as_secs_f64() * 1e3,
            m.transactions,
            m.reads
        );
        count_effects(&spanner, &name).await?
    } else {
        let exe = std::env::current_exe()?;
        let per = clients.div_ceil(processes);
        let children: Vec<_> = (0..processes)
            .map(|_| {
                tokio::process::Command::new(&exe)
                    .args([
                        "stress-worker",
                        "--endpoint",
                        &endpoint,
                        "--database",
                        spanner.database(),
                        "--name",
                        &name,
                        "--clients",
                        &per.to_string(),
                    ])
                    .args(lease.to_args())
                    .output()
            })
            .collect();
        let mut lines = Vec::new();
        for child in children {
            let output = child.await?;
            lines.extend(String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned));
        }
        let errors = lines.iter().filter(|l| l.starts_with("error")).count();
        println!(
            "clients={} processes={processes} wall_ms={:.1} errors={errors}",
            per * processes,
            wall.elapsed().as_secs_f64() * 1e3
        );
        count_effects(&spanner, &name).await?
    };
    let including = if emulator.is_some() { " including emulator start" } else { "" };
    println!("executions={executions} (must be 1); total {:.1} s{including}", started.elapsed().as_secs_f64());
    drop(emulator);
    if executions != 1 {
        bail!("the section ran {executions} times");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    // The cause chain in one line, for people: no Rust backtrace, whatever RUST_BACKTRACE says.
    match command(Cli::parse().command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn command(command: Cmd) -> anyhow::Result<()> {
    match command {
        Cmd::Demo { store, clients, lease } => demo(store, clients, &lease).await,
        Cmd::Init { config } => {
            let config = load(&config)?;
            let ddl = spanner_mutex::schema::create_table_ddl(&config.table_id, None)?;
            match emulator_host() {
                Some(host) => {
                    let (p, i, d) = (&config.project_id, &config.instance_id, &config.database_id);
                    prepare_emulator(&host, p, i, d, &config.table_id, config.timeouts.clone()).await?;
                    println!(
                        "created {} with tables {} and {EFFECTS_TABLE} on the emulator at {host}",
                        config.database_path(),
                        config.table_id
                    );
                }
                None => {
                    let spanner = google_cloud_spanner::client::Spanner::builder().build().await?;
                    let admin = spanner.database_admin_builder().build().await?;
                    spanner_mutex::schema::create_schema(&admin, &config.database_path(), &config.table_id, None)
                        .await?;
                    println!("created table {} in {}:\n{ddl}", config.table_id, config.database_path());
                }
            }
            Ok(())
        }
        Cmd::Status { config, name } => {
            let config = load(&config)?;
            let name = name.unwrap_or_else(|| config.name.clone());
            let mutexes = Mutexes::builder().config(config).connect().await?;
            let status = mutexes.mutex(&name)?.status().await?;
            println!("{name}: {status}");
            println!("server time: {}", spanner_mutex::rfc3339(status.server_time));
            Ok(())
        }
        Cmd::RunOnce { config, file } => {
            let config = load(&config)?;
            let line = format!("ran {}", config.name);
            let mutex = Mutexes::builder().config(config.clone()).connect().await?.mutex(&config.name)?;
            println!("{}", mutex.run(&AppendLine { file, line }).await?);
            Ok(())
        }
        Cmd::Stress { clients, processes, store, lease } => stress(clients, processes, store, &lease).await,
        Cmd::Bench { iterations } => bench::bench(iterations as usize).await,
        Cmd::Hold { target } => bench::hold(target.endpoint, target.database, target.name).await,
        Cmd::ChaosWorker { target, steps } => chaos::worker(target.endpoint, target.database, target.name, steps).await,
        Cmd::Chaos { rounds, seed } => chaos::chaos(rounds, seed).await,
        Cmd::HandoverWorker { target, mode, rounds } => {
            bench::handover_worker(target.endpoint, target.database, target.name, mode, rounds).await
        }
        Cmd::StressWorker { target, clients, effects_table, lease } => {
            stress_worker(target.endpoint, target.database, target.name, clients, effects_table, &lease).await
        }
    }
}
