//! `spanner-mutex-sim`: run scenarios, sweep random seeds, replay model checker counterexamples, benchmark.

// The command line measures real time to report speed; the simulation itself never reads a clock.
#![allow(clippy::disallowed_methods)]

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use spanner_mutex_check::{ModelArgs, ProtocolArg, decode_path, read_path_argument};
use spanner_mutex_model::txn::TxnRequest;
use spanner_mutex_model::world::{CommitFate, Executor, Spanner, Work};
use spanner_mutex_model::{
    ClientId, ClientMachine, Command, Config, Event, Fence, LocalInstant, Outcome, SectionResult, ServerTime,
};
use spanner_mutex_sim::{GenerateOptions, RunReport, Scenario, SweepOptions, replay, run, sweep};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(version, about = "Deterministic failure simulator for spanner-mutex")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args, Clone)]
struct GenerateArgs {
    /// Clients per generated scenario (default: random, 2 to 5).
    #[arg(long)]
    clients: Option<usize>,
    /// Protocol the clients follow.
    #[arg(long, value_enum, default_value = "fenced")]
    protocol: ProtocolArg,
    /// Simulated time per run.
    #[arg(long, default_value_t = GenerateOptions::default().duration_ms)]
    duration_ms: u64,
    /// Every mode: run-once, lock and leader clients (two mutexes) and user cancels.
    #[arg(long)]
    every_mode: bool,
}

impl GenerateArgs {
    fn options(&self) -> GenerateOptions {
        GenerateOptions {
            clients: self.clients,
            protocol: self.protocol.protocol(),
            duration_ms: self.duration_ms,
            every_mode: self.every_mode,
        }
    }

    /// The flags that reproduce these options.
    fn flags(&self) -> String {
        let mut flags = String::new();
        if let Some(k) = self.clients {
            flags.push_str(&format!(" --clients {k}"));
        }
        let protocol =
            clap::ValueEnum::to_possible_value(&self.protocol).map(|v| v.get_name().to_owned()).unwrap_or_default();
        flags.push_str(&format!(" --protocol {protocol}"));
        if self.duration_ms != GenerateOptions::default().duration_ms {
            flags.push_str(&format!(" --duration-ms {}", self.duration_ms));
        }
        if self.every_mode {
            flags.push_str(" --every-mode");
        }
        flags
    }

    fn cargo_features(&self) -> &'static str {
        // Only the two real protocols exist without the feature; every other variant is a re-inserted bug.
        if matches!(
            self.protocol.protocol(),
            spanner_mutex_model::Protocol::Fenced | spanner_mutex_model::Protocol::Naive
        ) {
            ""
        } else {
            " --features bug-injection"
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a scenario file: print its timeline, write a JSON-lines trace and an SVG picture; exit 1 if an
    /// invariant broke.
    Run {
        /// The scenario (TOML; see docs/simulation.md).
        file: PathBuf,
        /// Directory for the trace and the picture.
        #[arg(long, default_value = "target/sim")]
        out: PathBuf,
        /// Print only the summary, not the timeline.
        #[arg(long)]
        quiet: bool,
    },
    /// Run the scenario a sweep generates from one seed, as `run` does (this is what a sweep prints to reproduce).
    Seed {
        /// The seed.
        seed: u64,
        #[command(flatten)]
        generate: GenerateArgs,
        /// Directory for the trace, the picture and the generated scenario file.
        #[arg(long, default_value = "target/sim")]
        out: PathBuf,
        /// Print only the summary, not the timeline.
        #[arg(long)]
        quiet: bool,
    },
    /// Run generated scenarios for many seeds; exit 1 if any broke an invariant.
    Sweep {
        /// How many seeds.
        #[arg(long, default_value_t = 1_000)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 0)]
        first_seed: u64,
        #[command(flatten)]
        generate: GenerateArgs,
        /// Worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Stop after this many failing seeds (0: run them all).
        #[arg(long, default_value_t = 0)]
        stop_after: u64,
    },
    /// Replay a counterexample printed by `spanner-mutex-check check` (same flags, then its encoded path or a file holding it).
    Replay {
        #[command(flatten)]
        model: ModelArgs,
        /// The encoded path, or a file holding it (FILE or @FILE).
        path: String,
    },
    /// Measure simulation speed against a bare machine loop, and a 10,000-seed sweep.
    Bench {
        /// Seeds for the one-core measurement.
        #[arg(long, default_value_t = 2_000)]
        seeds: u64,
        /// Seeds for the all-core sweep measurement.
        #[arg(long, default_value_t = 10_000)]
        sweep_seeds: u64,
    },
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn write_outputs(report: &RunReport, out: &Path, stem: &str, quiet: bool) -> anyhow::Result<()> {
    if !quiet {
        print!("{}", report.timeline());
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let trace = out.join(format!("{stem}.trace.jsonl"));
    std::fs::write(&trace, report.json_lines()).with_context(|| format!("writing {}", trace.display()))?;
    println!("trace: {}", trace.display());
    if let Some(picture) = &report.picture {
        let svg = out.join(format!("{stem}.svg"));
        std::fs::write(&svg, picture.svg()).with_context(|| format!("writing {}", svg.display()))?;
        println!("picture: {}", svg.display());
    }
    for v in &report.violations {
        println!("VIOLATED at {}: {}: {}", spanner_mutex_sim::trace::seconds(v.at_us), v.invariant, v.detail);
    }
    println!("{}", report.summary());
    Ok(())
}

fn exit_for(failed: bool) -> ExitCode {
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

fn main() -> ExitCode {
    spanner_mutex_check::exit_with(command(Cli::parse().command))
}

fn command(command: Cmd) -> anyhow::Result<ExitCode> {
    match command {
        Cmd::Run { file, out, quiet } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let scenario = Scenario::from_toml(&text).with_context(|| format!("in {}", file.display()))?;
            let report = run(&scenario, true)?;
            let stem = file.file_stem().map_or_else(|| "scenario".into(), |s| s.to_string_lossy().into_owned());
            write_outputs(&report, &out, &stem, quiet)?;
            Ok(exit_for(!report.violations.is_empty()))
        }
        Cmd::Seed { seed, generate, out, quiet } => {
            let scenario = Scenario::generate(seed, &generate.options());
            let report = run(&scenario, true)?;
            let stem = format!("seed-{seed}");
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let file = out.join(format!("{stem}.toml"));
            std::fs::write(&file, scenario.to_toml()).with_context(|| format!("writing {}", file.display()))?;
            println!("scenario: {} (rerun with `run {}`)", file.display(), file.display());
            write_outputs(&report, &out, &stem, quiet)?;
            Ok(exit_for(!report.violations.is_empty()))
        }
        Cmd::Sweep { seeds, first_seed, generate, threads, stop_after } => {
            let options = SweepOptions {
                first_seed,
                seeds,
                generate: generate.options(),
                threads: threads.unwrap_or_else(cores),
                stop_after,
            };
            let started = Instant::now();
            let last_report = AtomicU64::new(0);
            let progress = |done: u64| {
                let elapsed = started.elapsed().as_secs();
                if elapsed > last_report.load(Ordering::Relaxed)
                    && last_report.swap(elapsed, Ordering::Relaxed) < elapsed
                {
                    eprintln!("progress: {done}/{seeds} seeds, {elapsed} s");
                }
            };
            let summary = sweep(&options, &progress);
            let seconds = started.elapsed().as_secs_f64();
            for failing in &summary.failing {
                for v in &failing.violations {
                    println!(
                        "seed {}: VIOLATED at {}: {}: {}",
                        failing.seed,
                        spanner_mutex_sim::trace::seconds(v.at_us),
                        v.invariant,
                        v.detail
                    );
                }
                println!(
                    "  reproduce: cargo run --release -p spanner-mutex-sim{} -- seed {}{}",
                    generate.cargo_features(),
                    failing.seed,
                    generate.flags()
                );
            }
            println!(
                "sweep: {} runs, {} simulated acquisitions, {:.1} h simulated, {} failing seeds, {:.1} s, {:.0} runs/s, {:.0} acquisitions/s",
                summary.runs,
                summary.acquisitions,
                summary.simulated_us as f64 / 3.6e9,
                summary.failing.len(),
                seconds,
                summary.runs as f64 / seconds,
                summary.acquisitions as f64 / seconds
            );
            Ok(exit_for(!summary.failing.is_empty()))
        }
        Cmd::Replay { model, path } => {
            let actions = decode_path(&read_path_argument(&path)?)?;
            let report = replay(&model.options(), &actions)?;
            print!("{}", report.text());
            for v in &report.violations {
                println!("VIOLATED (simulator): {}: {}", v.invariant, v.detail);
            }
            for name in &report.model_violations {
                println!("VIOLATED (model checker, same path): {name}");
            }
            if report.violations.is_empty() {
                println!("no invariant is violated along this path");
            }
            Ok(exit_for(!report.violations.is_empty()))
        }
        Cmd::Bench { seeds, sweep_seeds } => {
            bench(seeds, sweep_seeds);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The baseline: one machine acquiring, running and releasing against the world kernel's row in a tight loop, with no world
/// around it (no queue, latency, faults or invariants). The simulator's rate over this one is its overhead.
fn bare_machine_acquisitions_per_second(budget: Duration) -> f64 {
    let started = Instant::now();
    let cfg = Config::default();
    let machine = ClientMachine::run_once(ClientId::from_u128(0), "bench", &cfg);
    let mut bare = BareWorld { cfg, spanner: Spanner::default(), machine, now_us: 0, acquisitions: 0 };
    let mut n = 0u128;
    while started.elapsed() < budget {
        for _ in 0..1_000 {
            n += 1;
            bare.machine = ClientMachine::run_once(ClientId::from_u128(n), "bench", &bare.cfg);
            let command = bare.machine.start(bare.local_now());
            spanner_mutex_model::world::execute(&mut bare, 0, command);
            // Lock-mode-free reuse: a fresh DONE row would make the next run DoneByOther; start afresh.
            bare.spanner = Spanner::default();
        }
    }
    bare.acquisitions as f64 / started.elapsed().as_secs_f64()
}

/// The baseline's world: one machine and the kernel's row, each command answered at once, 1 ms after the last.
struct BareWorld {
    cfg: Config,
    spanner: Spanner,
    machine: ClientMachine,
    now_us: i64,
    acquisitions: u64,
}

impl BareWorld {
    fn local_now(&self) -> LocalInstant {
        LocalInstant::from_micros(u64::try_from(self.now_us).unwrap_or(0))
    }

    fn answer(&mut self, event: impl FnOnce(&mut Self, ServerTime) -> Event) -> Option<Command> {
        self.now_us += 1_000;
        let event = event(self, ServerTime::from_unix_micros(self.now_us));
        self.machine.handle(&self.cfg, self.local_now(), event).expect("the bare loop follows the protocol")
    }
}

impl Executor for BareWorld {
    fn grants_locks(&self, _c: usize) -> bool {
        false
    }

    fn check_need(&mut self, _c: usize) -> Option<Command> {
        self.answer(|_, _| Event::NeedAnswered { needed: true })
    }

    fn run_txn(&mut self, _c: usize, request: TxnRequest) -> Option<Command> {
        self.answer(|bare, server| {
            if matches!(request, TxnRequest::Acquire { .. }) {
                bare.acquisitions += 1;
            }
            bare.spanner.commit(&bare.cfg, &request, server, CommitFate::AsDecided, false, || server).event
        })
    }

    fn read_row(&mut self, _c: usize) -> Option<Command> {
        self.answer(|bare, server| bare.spanner.read(server))
    }

    fn start_work(&mut self, _c: usize, _work: Work, _granted: bool) -> Option<Command> {
        self.answer(|_, _| Event::SectionFinished(SectionResult::Completed))
    }

    fn lock_lost(&mut self, _c: usize, _fence: Fence) -> Option<Command> {
        None
    }

    fn finish(&mut self, _c: usize, _outcome: Outcome) -> Option<Command> {
        None
    }

    fn contract_broken(&mut self, _c: usize, what: &'static str) {
        panic!("the bare loop broke the driver contract: {what}");
    }
}

fn bench(seeds: u64, sweep_seeds: u64) {
    println!("spanner-mutex-sim bench ({} cores)", cores());
    let bare = bare_machine_acquisitions_per_second(Duration::from_secs(2));
    let one_core =
        SweepOptions { first_seed: 0, seeds, generate: GenerateOptions::default(), threads: 1, stop_after: 0 };
    let started = Instant::now();
    let summary = sweep(&one_core, &|_| {});
    let seconds = started.elapsed().as_secs_f64();
    let simulated = summary.acquisitions as f64 / seconds;
    println!("baseline  bare machine loop, 1 core:           {bare:>12.0} acquisitions/s");
    println!(
        "simulator {seeds} generated runs, 1 core:       {simulated:>12.0} acquisitions/s  ({:.2}x baseline; target >= 100000: {})",
        simulated / bare,
        if simulated >= 100_000.0 { "met" } else { "NOT met" }
    );
    println!(
        "          {} runs/s, {:.0}x faster than real time",
        (summary.runs as f64 / seconds).round(),
        summary.simulated_us as f64 / 1e6 / seconds
    );
    let all = SweepOptions {
        first_seed: 0,
        seeds: sweep_seeds,
        generate: GenerateOptions::default(),
        threads: cores(),
        stop_after: 0,
    };
    let started = Instant::now();
    let summary = sweep(&all, &|_| {});
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "sweep     {sweep_seeds} seeds, {} threads:          {seconds:>12.1} s  ({} failing; target < 60 s: {})",
        cores(),
        summary.failing.len(),
        if seconds < 60.0 { "met" } else { "NOT met" }
    );
}
