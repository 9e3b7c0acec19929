//! `spanner-mutex-model`: exhaustively checks the protocol, or serves the stateright Explorer.

use clap::{Parser, Subcommand, ValueEnum};
use spanner_mutex_model::Protocol;
use spanner_mutex_model::check::{
    CheckOptions, Faults, LeaseModel, MAX_CLIENTS, SearchOptions, Verdict, decode_path, describe_path, run_check,
};
use stateright::{Model, Path};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(version, about = "Model-check the spanner-mutex protocol")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProtocolArg {
    /// spanner-mutex: server time, fences, renewal, local deadline.
    Fenced,
    /// The seed: client clocks, no fence, no renewal.
    Naive,
    /// Fenced with the fence check removed (a re-inserted bug).
    #[cfg(feature = "bug-injection")]
    NoFenceCheck,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FaultArg {
    All,
    None,
    Crash,
    Abort,
    Unknown,
    Drift,
    SectionFailure,
}

#[derive(clap::Args)]
struct ModelArgs {
    /// Number of clients.
    #[arg(long, default_value_t = CheckOptions::default().clients, value_parser = clap::value_parser!(u8).range(1..=i64::from(MAX_CLIENTS)))]
    clients: u8,
    /// Faults to inject (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "all")]
    faults: Vec<FaultArg>,
    /// Faults injected per execution at most.
    #[arg(long, default_value_t = CheckOptions::default().fault_budget)]
    fault_budget: u8,
    /// Server time bound in milliseconds (the checked lease is 3 ms).
    #[arg(long, default_value_t = CheckOptions::default().max_time_ms, value_parser = clap::value_parser!(u64).range(1..=30))]
    max_time_ms: u64,
    /// Client wall-clock skew step for the naive protocol.
    #[arg(long, default_value_t = CheckOptions::default().skew_ms)]
    skew_ms: u64,
    /// Protocol variant.
    #[arg(long, value_enum, default_value = "fenced")]
    protocol: ProtocolArg,
}

impl ModelArgs {
    fn options(&self) -> CheckOptions {
        let mut faults = Faults::NONE;
        for f in &self.faults {
            match f {
                FaultArg::All => faults = Faults::ALL,
                FaultArg::None => {}
                FaultArg::Crash => faults.crash = true,
                FaultArg::Abort => faults.abort = true,
                FaultArg::Unknown => faults.unknown = true,
                FaultArg::Drift => faults.drift = true,
                FaultArg::SectionFailure => faults.section_failure = true,
            }
        }
        let protocol = match self.protocol {
            ProtocolArg::Fenced => Protocol::Fenced,
            ProtocolArg::Naive => Protocol::Naive,
            #[cfg(feature = "bug-injection")]
            ProtocolArg::NoFenceCheck => Protocol::NoFenceCheck,
        };
        CheckOptions {
            clients: self.clients,
            faults,
            fault_budget: self.fault_budget,
            max_time_ms: self.max_time_ms,
            skew_ms: self.skew_ms,
            protocol,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Check every reachable state; exit 0 only if every property holds and every `sometimes` is reached.
    Check {
        #[command(flatten)]
        model: ModelArgs,
        /// Worker threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Stop paths at this depth (default: exhaustive within the time bound).
        #[arg(long)]
        depth: Option<usize>,
        /// Breadth-first exhaustive pass instead of depth-first (more memory, slower, no symmetry reduction).
        #[arg(long)]
        bfs: bool,
        /// Do not reduce by client symmetry.
        #[arg(long)]
        no_symmetry: bool,
        /// Print the summary as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Serve the stateright Explorer on localhost.
    Explore {
        #[command(flatten)]
        model: ModelArgs,
        /// Address to serve on.
        #[arg(long, default_value = "127.0.0.1:3000")]
        addr: String,
    },
    /// Replay an encoded path (as printed by `check`) step by step.
    Replay {
        #[command(flatten)]
        model: ModelArgs,
        /// The encoded path, or @FILE to read it from a file.
        path: String,
    },
}

fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Cmd::Check { model, threads, depth, bfs, no_symmetry, json } => {
            let search = SearchOptions {
                threads,
                max_depth: depth,
                depth_first: !bfs,
                progress_interval: Duration::from_secs(5),
                symmetry: !no_symmetry,
            };
            let options = model.options();
            let summary = run_check(options.clone(), search);
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                for c in &summary.counterexamples {
                    println!("VIOLATED: {}", c.property);
                    for step in &c.steps {
                        println!("{step}");
                    }
                    println!(
                        "replay: cargo run --release -p spanner-mutex-model -- replay {} '{}'",
                        options.cli_args(),
                        c.encoded
                    );
                    println!();
                }
                for name in &summary.unreached {
                    println!("UNREACHED sometimes: {name}");
                }
                println!("{}", summary.line());
            }
            Ok(if summary.verdict == Verdict::Pass { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Cmd::Explore { model, addr } => {
            eprintln!("serving the stateright Explorer on http://{addr}/ (Ctrl-C to stop)");
            LeaseModel::new(model.options()).checker().serve(addr.as_str());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Replay { model, path } => {
            let text = match path.strip_prefix('@') {
                // The CLI is a tool around the protocol, not part of it.
                #[allow(clippy::disallowed_methods)]
                Some(file) => std::fs::read_to_string(file)?,
                None => path,
            };
            let actions = decode_path(&text)?;
            let lease_model = LeaseModel::new(model.options());
            let init = lease_model.init_states().remove(0);
            let Some(path) = Path::from_actions(&lease_model, init, &actions) else {
                anyhow::bail!("the path is not possible in this model (check --clients, --faults, --protocol)");
            };
            for step in describe_path(&lease_model, &path) {
                println!("{step}");
            }
            println!(
                "explore: run `explore {}` and open http://127.0.0.1:3000/#/steps/{}",
                model.options().cli_args(),
                path.encode(&lease_model)
            );
            let last = path.last_state();
            let violated: Vec<_> = lease_model
                .properties()
                .into_iter()
                .filter(|p| p.expectation == stateright::Expectation::Always && !(p.condition)(&lease_model, last))
                .map(|p| p.name)
                .collect();
            if violated.is_empty() {
                println!("no property is violated at the end of this path");
                Ok(ExitCode::SUCCESS)
            } else {
                for name in violated {
                    println!("VIOLATED: {name}");
                }
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
