//! `spanner-mutex` CLI: demo, init, status, run-once, stress.

use anyhow::Context;
use clap::{Parser, Subcommand};
use spanner_mutex::emulator;
use spanner_mutex::schema::DdlApplied;
use spanner_mutex::{BoxError, CriticalSection, Fence, LeaseHandle, MutexConfig, Mutexes, OperatorAction};
use spanner_mutex_cli::outln;
use spanner_mutex_cli::{
    EFFECTS_TABLE, LeaseArgs, MemorySection, SpannerSection, StoreArg, count_effects, emulator_database_admin,
    emulator_host, emulator_store, prepare_emulator, print_outcomes, race, report_executions, report_stress_executions,
    run_command,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

#[derive(Parser)]
#[command(name = "spanner-mutex", version, about = "A distributed mutex / lease on Cloud Spanner")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
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
        /// Config file (TOML or JSON, ours or py-spanner-mutex's).
        #[arg(long)]
        config: std::path::PathBuf,
        /// One of the app's own DDL statements, run after the lease table (repeatable); one whose table or index
        /// exists is skipped.
        #[arg(long, value_name = "STATEMENT")]
        ddl: Vec<String>,
        /// A file of the app's DDL statements, separated by `;`, run after those of --ddl.
        #[arg(long, value_name = "FILE")]
        ddl_file: Option<std::path::PathBuf>,
    },
    /// Show a mutex row, every mutex of the table (--all), or follow one as it changes (--watch).
    Status {
        /// Config file.
        #[arg(long)]
        config: std::path::PathBuf,
        /// Mutex name (default: the config's).
        #[arg(conflicts_with = "all")]
        name: Option<String>,
        /// Every mutex in the lease table, one line each (the first 1000 by name).
        #[arg(long)]
        all: bool,
        /// Read the row every --interval-ms and print a line each time it changes, until Ctrl-C.
        #[arg(long, conflicts_with = "all")]
        watch: bool,
        /// How often --watch reads the row.
        #[arg(long, default_value_t = 500, requires = "watch", value_parser = clap::value_parser!(u64).range(50..=60_000))]
        interval_ms: u64,
    },
    /// An operator's forced release: end the lease under --fence now, whoever holds it. The holder's fenced
    /// writes and renewals are refused from then on (work it does outside fenced writes is not stopped), and the
    /// next waiter acquires the lease. Recorded on the row.
    ForceRelease {
        #[command(flatten)]
        operator: OperatorArgs,
    },
    /// An operator's reset of the DONE run-once row under --fence: the next run acquires it and asks its need check
    /// again. Recorded on the row.
    Reset {
        #[command(flatten)]
        operator: OperatorArgs,
    },
    /// One client runs a section that appends a line to a file (py-spanner-mutex's demo).
    RunOnce {
        /// Config file.
        #[arg(long)]
        config: std::path::PathBuf,
        /// The file to append to.
        #[arg(long, default_value = "run-once.log")]
        file: std::path::PathBuf,
    },
    /// N clients in this process race one run-once section; prints executions (must be 1), wall time, RPCs.
    Stress {
        /// Clients in total.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        clients: u32,
        /// Store.
        #[arg(long, value_enum, default_value = "emulator")]
        store: StoreArg,
        #[command(flatten)]
        lease: LeaseArgs,
    },
}

async fn demo(store: Option<StoreArg>, clients: u32, lease: &LeaseArgs) -> anyhow::Result<()> {
    lease.config()?;
    let name = "demo-migration";
    let use_emulator = match store {
        Some(StoreArg::Memory) => false,
        Some(StoreArg::Emulator) => true,
        None => std::env::var_os("SPANNER_EMULATOR_HOST").is_some() || emulator::is_installed(),
    };
    // Why the in-memory store: asked for, or nothing else is around.
    let memory_because = if store == Some(StoreArg::Memory) {
        "asked for with --store memory"
    } else {
        "embedded default; no Spanner emulator found, see README to install one"
    };
    let started = Instant::now();
    if use_emulator {
        let (emulator, store, endpoint) = emulator_store("demo-db", lease.timeouts()?).await?;
        outln!(
            "store: Spanner emulator at {endpoint}{}",
            if emulator.is_some() { " (started for this demo)" } else { "" }
        )?;
        let mutex = Mutexes::on_spanner(store.clone(), lease.params(), "demo").await?.mutex(name)?;
        let effect_id = format!("demo-{}", uuid::Uuid::new_v4());
        outln!("{clients} clients race for run-once section {effect_id:?}")?;
        let outcomes = race(
            &mutex,
            Arc::new(SpannerSection { effect_id: effect_id.clone(), table: EFFECTS_TABLE.into() }),
            clients,
        )
        .await;
        print_outcomes(&outcomes)?;
        let executions = count_effects(&store, &effect_id).await?;
        report_executions(executions, started, &mutex.metrics())?;
    } else {
        outln!("store: in-memory ({memory_because})")?;
        let mutex = Mutexes::in_memory(lease.params(), "demo")?.mutex(name)?;
        let executions = Arc::new(AtomicU64::new(0));
        outln!("{clients} clients race for one run-once section")?;
        let outcomes = race(&mutex, Arc::new(MemorySection { executions: Arc::clone(&executions) }), clients).await;
        print_outcomes(&outcomes)?;
        report_executions(executions.load(Ordering::SeqCst).try_into()?, started, &mutex.metrics())?;
    }
    Ok(())
}

/// `init`: the lease table (on the emulator, the instance, the database and the demo's table too), then the app's
/// own DDL; says what it created and what existed.
async fn init(
    config: &std::path::Path,
    mut statements: Vec<String>,
    ddl_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let config = load(config)?;
    if let Some(file) = ddl_file {
        let text = std::fs::read_to_string(file)
            .map_err(|error| anyhow::anyhow!("cannot read the DDL file {}: {}", file.display(), error.kind()))?;
        statements.extend(text.split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned));
    }
    let (path, table) = (config.database_path(), &config.table_id);
    let admin = match emulator_host() {
        Some(host) => {
            // Whether the lease table is there already, as a user's program would find it.
            let existed = spanner_mutex::SpannerStore::builder()
                .database(&path)
                .table(table)
                .timeouts(config.timeouts.clone())
                .emulator_host(&host)
                .connect()
                .await
                .is_ok();
            let (p, i, d) = (&config.project_id, &config.instance_id, &config.database_id);
            prepare_emulator(&host, p, i, d, table, config.timeouts.clone()).await?;
            if existed {
                outln!("{path} already has table {table} on the emulator at {host}")?;
            } else {
                outln!("created {path} with tables {table} and {EFFECTS_TABLE} on the emulator at {host}")?;
            }
            emulator_database_admin(&host).await?
        }
        None => {
            let ddl = spanner_mutex::schema::create_table_ddl(table, None)?;
            outln!("creating table {table} in {path} with:\n{ddl}")?;
            let admin = reach_cloud_spanner(&path, &config.timeouts).await?;
            match spanner_mutex::schema::create_schema(&admin, &path, table, None).await? {
                DdlApplied::Applied => outln!("created table {table}")?,
                DdlApplied::Existed => outln!("table {table} exists already")?,
            }
            admin
        }
    };
    let applied = spanner_mutex::schema::apply_ddl(&admin, &path, statements.clone()).await?;
    for (statement, applied) in statements.iter().zip(applied) {
        let head = statement.lines().next().unwrap_or_default();
        match applied {
            DdlApplied::Applied => outln!("applied: {head}")?,
            DdlApplied::Existed => outln!("exists already: {head}")?,
        }
    }
    Ok(())
}

/// Prints every mutex of the lease table, one line each, by name (the first 1000).
async fn status_all(mutexes: &Mutexes) -> anyhow::Result<()> {
    let store = mutexes.spanner().context("status --all needs Spanner")?;
    // The table name is a validated identifier (it cannot be a query parameter).
    let query = google_cloud_spanner::statement::Statement::builder(format!(
        "SELECT name FROM {} ORDER BY name LIMIT 1000",
        store.table()
    ))
    .build();
    let mut rows = store.database_client().await.single_use().build().execute_query(query).await?;
    let mut names = Vec::new();
    while let Some(row) = rows.next().await.transpose()? {
        names.push(row.get::<String>("name")?);
    }
    if names.is_empty() {
        outln!("no mutex in table {} yet", store.table())?;
    }
    for name in names {
        let status = mutexes.mutex(&name)?.status().await?;
        outln!("{name}: {status}")?;
    }
    Ok(())
}

/// The database admin client of Cloud Spanner, once it has answered for `database` within `timeouts.connect_ms`
/// (credentials found and accepted, the database there).
async fn reach_cloud_spanner(
    database: &str,
    timeouts: &spanner_mutex::Timeouts,
) -> anyhow::Result<google_cloud_spanner_admin_database_v1::client::DatabaseAdmin> {
    let reach = async {
        // Building the client fails only on credentials it cannot create (an unreadable key file, say).
        let spanner = google_cloud_spanner::client::Spanner::builder()
            .build()
            .await
            .map_err(|_| spanner_mutex::ConnectError::Credentials)?;
        let admin = spanner.database_admin_builder().build().await?;
        admin.get_database().set_name(database).send().await?;
        anyhow::Ok(admin)
    };
    let no_credentials = || spanner_mutex::ConnectError::Credentials;
    match tokio::time::timeout(timeouts.connect(), reach).await {
        Ok(Ok(admin)) => Ok(admin),
        Ok(Err(error)) if error.is::<spanner_mutex::ConnectError>() => Err(error),
        Ok(Err(error)) => {
            let gax = error.downcast_ref::<google_cloud_gax::error::Error>();
            if gax.is_some_and(google_cloud_gax::error::Error::is_authentication) {
                return Err(no_credentials().into());
            }
            if gax
                .and_then(google_cloud_gax::error::Error::status)
                .is_some_and(|s| s.code == google_cloud_gax::error::rpc::Code::NotFound)
            {
                anyhow::bail!(
                    "database {database} does not exist: create it first (gcloud spanner databases create), then run init again"
                );
            }
            Err(error.context("Cloud Spanner refused the request"))
        }
        Err(_) => anyhow::bail!(
            "Cloud Spanner did not answer within timeouts.connect_ms = {} ms: check the network and the credentials (`gcloud auth application-default login`), or set SPANNER_EMULATOR_HOST to use an emulator; the DDL above creates the table by hand",
            timeouts.connect_ms
        ),
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<MutexConfig> {
    Ok(MutexConfig::read(path)?)
}

/// Appends one line to a file, once across all clients; need = the line is not there yet.
struct AppendLine {
    file: std::path::PathBuf,
    line: String,
}

impl CriticalSection for AppendLine {
    async fn is_needed(&self) -> Result<bool, BoxError> {
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        Ok(!text.lines().any(|l| l == self.line))
    }

    async fn execute(&self, guard: &LeaseHandle) -> Result<(), BoxError> {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.file)?;
        writeln!(file, "{}", self.line)?;
        tracing::info!(fence = %guard.fence(), "appended");
        Ok(())
    }
}

async fn stress(clients: u32, store: StoreArg, lease: &LeaseArgs) -> anyhow::Result<()> {
    lease.config()?;
    let name = format!("stress-{}", uuid::Uuid::new_v4().simple());
    let started = Instant::now();
    if store == StoreArg::Memory {
        let mutex = Mutexes::in_memory(lease.params(), "stress")?.mutex(&name)?;
        let executions = Arc::new(AtomicU64::new(0));
        let outcomes = race(&mutex, Arc::new(MemorySection { executions: Arc::clone(&executions) }), clients).await;
        let failed = outcomes.iter().filter(|(_, o)| o.is_err()).count();
        let m = mutex.metrics();
        outln!(
            "executions={} clients={clients} wall_ms={:.1} transactions={} reads={} errors={failed}",
            executions.load(Ordering::SeqCst),
            started.elapsed().as_secs_f64() * 1e3,
            m.transactions,
            m.reads
        )?;
        return Ok(());
    }
    let (emulator, spanner, _) = emulator_store("stress-db", lease.timeouts()?).await?;
    let wall = Instant::now();
    let mutex = Mutexes::on_spanner(spanner.clone(), lease.params(), "stress").await?.mutex(&name)?;
    let outcomes =
        race(&mutex, Arc::new(SpannerSection { effect_id: name.clone(), table: EFFECTS_TABLE.into() }), clients).await;
    let failed = outcomes.iter().filter(|(_, o)| o.is_err()).count();
    let m = mutex.metrics();
    outln!(
        "clients={clients} processes=1 wall_ms={:.1} transactions={} reads={} errors={failed}",
        wall.elapsed().as_secs_f64() * 1e3,
        m.transactions,
        m.reads
    )?;
    report_stress_executions(&spanner, &name, started, emulator).await
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    run_command(command(Cli::parse().command)).await
}

async fn command(command: Cmd) -> anyhow::Result<()> {
    match command {
        Cmd::Demo { store, clients, lease } => demo(store, clients, &lease).await,
        Cmd::Init { config, ddl, ddl_file } => init(&config, ddl, ddl_file.as_deref()).await,
        Cmd::Status { config, name, all, watch, interval_ms } => {
            let config = load(&config)?;
            let name = name.unwrap_or_else(|| config.name.clone());
            let mutexes = Mutexes::builder().config(config).connect().await?;
            if all {
                return status_all(&mutexes).await;
            }
            let mutex = mutexes.mutex(&name)?;
            let status = mutex.status().await?;
            outln!("{name}: {status}")?;
            outln!("server time: {}", spanner_mutex::rfc3339(status.server_time))?;
            if watch {
                let mut shown = status.to_string();
                let interval = std::time::Duration::from_millis(interval_ms);
                loop {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => return Ok(()),
                        () = tokio::time::sleep(interval) => {}
                    }
                    let status = mutex.status().await?;
                    let now = status.to_string();
                    if now != shown {
                        outln!("{} {name}: {now}", spanner_mutex::rfc3339(status.server_time))?;
                        shown = now;
                    }
                }
            }
            Ok(())
        }
        Cmd::RunOnce { config, file } => {
            let config = load(&config)?;
            let line = format!("ran {}", config.name);
            let mutex = Mutexes::builder()
                .config(config)
                .connect()
                .await?
                .configured()
                .context("the config file names no mutex")?;
            outln!("{}", mutex.run(&AppendLine { file, line }).await?)?;
            Ok(())
        }
        Cmd::Stress { clients, store, lease } => stress(clients, store, &lease).await,
        Cmd::ForceRelease { operator } => operate(OperatorAction::ForceRelease, operator).await,
        Cmd::Reset { operator } => operate(OperatorAction::Reset, operator).await,
    }
}

/// Who acts on which lease, and why: what `force-release` and `reset` record on the row.
#[derive(clap::Args)]
struct OperatorArgs {
    /// Config file.
    #[arg(long)]
    config: std::path::PathBuf,
    /// Mutex name (default: the config's).
    name: Option<String>,
    /// The fence of the lease (or DONE row) meant, as `status` shows it; a row under another fence is left alone.
    #[arg(long)]
    fence: u64,
    /// Why, recorded on the row (up to 512 bytes).
    #[arg(long)]
    reason: String,
    /// Who, recorded on the row (up to 64 bytes) [default: $USER, else "operator"].
    #[arg(long)]
    by: Option<String>,
}

/// Runs an operator's control and says what it did to whom.
async fn operate(action: OperatorAction, args: OperatorArgs) -> anyhow::Result<()> {
    let config = load(&args.config)?;
    let name = args.name.unwrap_or_else(|| config.name.clone());
    let by = args.by.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "operator".into());
    let mutex = Mutexes::builder().config(config).connect().await?.mutex(&name)?;
    let fence = Fence::new(args.fence);
    let applied = match action {
        OperatorAction::ForceRelease => mutex.force_release(fence, &by, &args.reason).await?,
        OperatorAction::Reset => mutex.reset(fence, &by, &args.reason).await?,
    };
    let whose = format!("{} (fence {})", applied.holder_name, applied.fence.get());
    match action {
        OperatorAction::ForceRelease => outln!("{name}: lease of {whose} force-released by {by}: {}", args.reason)?,
        OperatorAction::Reset => outln!("{name}: DONE of {whose} reset by {by}: {}", args.reason)?,
    }
    // The control is done: a failed read now must not make anyone run it again.
    match mutex.status().await {
        Ok(status) => outln!("{name}: {status}")?,
        Err(error) => eprintln!("warning: the row could not be read back ({error}); `status` shows it"),
    }
    Ok(())
}
