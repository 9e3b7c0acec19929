//! `spanner-mutex-check`: exhaustively checks the protocol, or serves the stateright Explorer.

use clap::{Parser, Subcommand};
use spanner_mutex_check::{
    CheckOptions, CheckSummary, LeaseModel, ModelArgs, SearchOptions, Verdict, cross_check_reductions, decode_path,
    describe_path, read_path_argument, reduction_worlds, run_check, violated_safety,
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

#[derive(Subcommand)]
enum Cmd {
    /// Check every reachable state; exit 0 only if every property holds and every `sometimes` is reached.
    Check {
        #[command(flatten)]
        model: ModelArgs,
        /// Worker threads.
        #[arg(long, default_value_t = 2, value_parser = at_least_one)]
        threads: usize,
        /// Stop paths at this depth (default: exhaustive within the time bound).
        #[arg(long, value_parser = at_least_one)]
        depth: Option<usize>,
        /// Breadth-first exhaustive pass instead of depth-first (more memory, slower, no symmetry reduction).
        #[arg(long)]
        bfs: bool,
        /// Do not reduce by client symmetry.
        #[arg(long)]
        no_symmetry: bool,
        /// Do not reduce by time shifts (key every state as it is, as stateright does).
        #[arg(long)]
        no_time_shifts: bool,
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
        /// The encoded path, or a file holding it (FILE or @FILE).
        path: String,
    },
}

fn main() -> ExitCode {
    spanner_mutex_check::exit_with(command(Cli::parse().command))
}

fn command(command: Cmd) -> anyhow::Result<ExitCode> {
    match command {
        Cmd::Check { model, threads, depth, bfs, no_symmetry, no_time_shifts, json } => {
            let search = SearchOptions {
                threads,
                max_depth: depth,
                depth_first: !bfs,
                progress_interval: Duration::from_secs(5),
                symmetry: !no_symmetry,
                time_shifts: !no_time_shifts,
            };
            let mut passed = true;
            let worlds = model.worlds();
            for options in &worlds {
                if let Err(why) = options.validate() {
                    anyhow::bail!("{why}");
                }
                if !json {
                    println!("world: {}", options.cli_args());
                }
                let summary = run_check(options.clone(), search);
                passed &= summary.verdict == Verdict::Pass;
                print_summary(&summary, options, json)?;
            }
            // The reduction by time shifts is sound only while the protocol reads nothing its key forgets: each
            // run shows it, in a small world of every mode, against the search of every state.
            if search.time_shifts && search.symmetry && depth.is_none() {
                for cross_check in cross_check_reductions(&reduction_worlds(&worlds)) {
                    if !json {
                        println!("world: {}", cross_check.world);
                    }
                    passed &= cross_check.holds();
                    if json {
                        println!("{}", serde_json::to_string_pretty(&cross_check)?);
                    } else {
                        println!("{}", cross_check.line());
                    }
                }
            }
            Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Cmd::Explore { model, addr } => {
            let options = model.options();
            if let Err(why) = options.validate() {
                anyhow::bail!("{why}");
            }
            eprintln!("serving the stateright Explorer on http://{addr}/ (Ctrl-C to stop)");
            LeaseModel::new(options).checker().serve(addr.as_str());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Replay { model, path } => {
            if let Err(why) = model.options().validate() {
                anyhow::bail!("{why}");
            }
            let actions = decode_path(&read_path_argument(&path)?)?;
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
            let violated = violated_safety(&lease_model, path.last_state());
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

/// Prints one world's summary: counterexamples with their replay commands, unreached companions, the line.
fn print_summary(summary: &CheckSummary, options: &CheckOptions, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(summary)?);
        return Ok(());
    }
    for c in &summary.counterexamples {
        println!("VIOLATED: {}", c.property);
        for step in &c.steps {
            println!("{step}");
        }
        println!("replay: cargo run --release -p spanner-mutex-check -- replay {} '{}'", options.cli_args(), c.encoded);
        println!("simulate: cargo run --release -p spanner-mutex-sim -- replay {} '{}'", options.cli_args(), c.encoded);
        println!();
    }
    for name in &summary.unreached {
        println!("UNREACHED sometimes: {name}");
    }
    println!("{}", summary.line());
    Ok(())
}

/// A count of at least 1 (a search needs a thread; a path has its initial state).
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(count) => Ok(count),
        Err(error) => Err(error.to_string()),
    }
}
