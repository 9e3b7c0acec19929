//! The command-line arguments that select a model, shared by `spanner-mutex-model` and the simulator's `replay`,
//! so a counterexample's printed flags work with both.

use super::{CheckOptions, Faults, MAX_CLIENTS};
use crate::Protocol;
use clap::ValueEnum;

/// `--protocol`: which protocol the clients follow.
#[derive(Clone, Copy, ValueEnum)]
pub enum ProtocolArg {
    /// spanner-mutex: server time, fences, renewal, local deadline.
    Fenced,
    /// The seed: client clocks, no fence, no renewal.
    Naive,
    /// Fenced with the fence check removed (a re-inserted bug).
    #[cfg(feature = "bug-injection")]
    NoFenceCheck,
    /// Fenced writes without the record of having landed (a re-inserted bug).
    #[cfg(feature = "bug-injection")]
    NoFencedWriteRecord,
}

impl ProtocolArg {
    /// The protocol this argument names.
    pub const fn protocol(self) -> Protocol {
        match self {
            Self::Fenced => Protocol::Fenced,
            Self::Naive => Protocol::Naive,
            #[cfg(feature = "bug-injection")]
            Self::NoFenceCheck => Protocol::NoFenceCheck,
            #[cfg(feature = "bug-injection")]
            Self::NoFencedWriteRecord => Protocol::NoFencedWriteRecord,
        }
    }
}

/// One entry of `--faults`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FaultArg {
    /// Every fault kind.
    All,
    /// No faults.
    None,
    /// Client crash and restart.
    Crash,
    /// Transaction aborts.
    Abort,
    /// Commit outcome unknown (landed or lost).
    Unknown,
    /// Client clock drift.
    Drift,
    /// Critical section failure.
    SectionFailure,
    /// A server clock that reads 1 ms early or late in one transaction (not in `all`: the checked lease grows
    /// to 5 ms to pay for it, so use `--max-time-ms 5` or more).
    ClockError,
    /// A commit told unknown that stays queued and lands later (not in `all`).
    Late,
}

/// The flags that select a checked model, as printed with every counterexample.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// Number of clients.
    #[arg(long, default_value_t = CheckOptions::default().clients, value_parser = clap::value_parser!(u8).range(1..=i64::from(MAX_CLIENTS)))]
    pub clients: u8,
    /// Faults to inject (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "all")]
    pub faults: Vec<FaultArg>,
    /// Faults injected per execution at most.
    #[arg(long, default_value_t = CheckOptions::default().fault_budget)]
    pub fault_budget: u8,
    /// Server time bound in milliseconds (the checked lease is 3 ms).
    #[arg(long, default_value_t = CheckOptions::default().max_time_ms, value_parser = clap::value_parser!(u64).range(1..=30))]
    pub max_time_ms: u64,
    /// How long a DONE row stays fresh, in ms (below the horizon, a stale DONE is acquired again; at least 4).
    #[arg(long, default_value_t = CheckOptions::default().staleness_ms, value_parser = clap::value_parser!(u64).range(4..))]
    pub staleness_ms: u64,
    /// Client wall-clock skew step for the naive protocol.
    #[arg(long, default_value_t = CheckOptions::default().skew_ms)]
    pub skew_ms: u64,
    /// Protocol variant.
    #[arg(long, value_enum, default_value = "fenced")]
    pub protocol: ProtocolArg,
    /// The clients' configuration declares a perfect server clock (`server_uncertainty_ms = 0`) even when
    /// `clock-error` is injected: the safety-margin rule relaxed, to show what it prevents.
    #[arg(long)]
    pub assume_exact_server_clock: bool,
}

impl ModelArgs {
    /// The check options these arguments select.
    pub fn options(&self) -> CheckOptions {
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
                FaultArg::ClockError => faults.clock_error = true,
                FaultArg::Late => faults.late = true,
            }
        }
        CheckOptions {
            clients: self.clients,
            faults,
            fault_budget: self.fault_budget,
            max_time_ms: self.max_time_ms,
            skew_ms: self.skew_ms,
            protocol: self.protocol.protocol(),
            assume_exact_server_clock: self.assume_exact_server_clock,
            staleness_ms: self.staleness_ms,
        }
    }
}

/// Reads an encoded path argument: the path itself, `@FILE`, or the name of a file that holds it.
pub fn read_path_argument(argument: &str) -> std::io::Result<String> {
    let file = argument.strip_prefix('@').or_else(|| std::path::Path::new(argument).is_file().then_some(argument));
    match file {
        // Reading a path file is the command line's job, not the protocol's.
        #[allow(clippy::disallowed_methods)]
        Some(file) => std::fs::read_to_string(file),
        None => Ok(argument.to_owned()),
    }
}
