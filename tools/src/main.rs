//! `spanner-mutex-dev`: the developers' tools, kept out of the `spanner-mutex` binary users install: the chaos
//! test, the benchmarks, multi-process stress, and the worker processes each of them starts.

mod bench;
mod chaos;

use clap::{Parser, Subcommand};
use spanner_mutex::{RunOutcome, SpannerMutex, SpannerStore};
use spanner_mutex_cli::{
    EFFECTS_TABLE, LeaseArgs, SpannerSection, emulator_store, race, report_stress_executions, run_command,
};
use spanner_mutex_model::MutexName;
use std::sync::Arc;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "spanner-mutex-dev",
    version,
    about = "spanner-mutex developers' tools: chaos, benchmarks, multi-process stress"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// Where a worker finds its mutex.
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
    /// N clients spread over P processes race one run-once section on the emulator; prints executions (must be
    /// 1) and wall time.
    Stress {
        /// Clients in total.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        clients: u32,
        /// Processes to spread them over.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
        processes: u32,
        #[command(flatten)]
        lease: LeaseArgs,
    },
    /// Measure the client's performance figures against the emulator (Markdown table).
    Bench {
        /// Iterations of the latency comparison.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(5..=10_000))]
        iterations: u32,
    },
    /// Worker: acquire a lock and hold it until killed (used by `bench`).
    Hold {
        #[command(flatten)]
        target: Target,
    },
    /// Worker: one process of `chaos`.
    ChaosWorker {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        steps: i64,
    },
    /// A small Jepsen (`tools/tests/chaos.rs` runs it): worker processes under a nemesis, against an
    /// emulator started here; one summary line; fails on any violation.
    Chaos {
        /// Rounds to run.
        #[arg(long, default_value_t = 30)]
        rounds: u64,
        /// Seeds the nemesis's choices.
        #[arg(long, default_value_t = 0x5eed)]
        seed: u64,
    },
    /// Worker: one process of the hand-over benchmark (used by `bench`).
    HandoverWorker {
        #[command(flatten)]
        target: Target,
        /// `lock`: take turns holding the lock; `done`: race run-once sections.
        #[arg(long)]
        mode: bench::HandoverMode,
        #[arg(long)]
        rounds: u32,
    },
    /// Worker: one process of `stress`.
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

async fn stress_worker(
    endpoint: String,
    database: String,
    name: String,
    clients: u32,
    table: String,
    lease: &LeaseArgs,
) -> anyhow::Result<()> {
    let store = SpannerStore::builder().database(database).emulator_host(endpoint).connect().await?;
    let mutex = SpannerMutex::on_store(store, lease.config()?, MutexName::new(name.clone())?, "stress");
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

/// `clients` racing one section from `processes` worker processes against the emulator.
async fn stress(clients: u32, processes: u32, lease: &LeaseArgs) -> anyhow::Result<()> {
    lease.config()?;
    let name = format!("stress-{}", uuid::Uuid::new_v4().simple());
    let started = Instant::now();
    let (emulator, spanner, endpoint) = emulator_store("stress-db", lease.timeouts()?).await?;
    let wall = Instant::now();
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
    report_stress_executions(&spanner, &name, started, emulator).await
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    run_command(command(Cli::parse().command)).await
}

async fn command(command: Cmd) -> anyhow::Result<()> {
    match command {
        Cmd::Stress { clients, processes, lease } => stress(clients, processes, &lease).await,
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
