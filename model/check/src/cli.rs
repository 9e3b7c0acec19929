//! The command-line arguments that select a model, shared by `spanner-mutex-check` and the simulator's `replay`,
//! so a counterexample's printed flags work with both.

use crate::{CheckOptions, ClientKind, Faults, MAX_CLIENTS};
use clap::ValueEnum;
use spanner_mutex_model::Protocol;

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
    /// Fenced writes recorded as write 1 whatever their number (a re-inserted bug: a retried second write
    /// applies again).
    #[cfg(feature = "bug-injection")]
    RecordsFirstWriteOnly,
    /// A cancel during the need check under the lease is forgotten (a re-inserted bug: the lease leaks).
    #[cfg(feature = "bug-injection")]
    LeakOnCancelInNeedCheck,
    /// A renewal accepted on any STARTED row, whoever holds it (a re-inserted bug).
    #[cfg(feature = "bug-injection")]
    RenewsAnyStarted,
    /// A re-acquisition that keeps the fence when the row counts earlier attempts (a re-inserted bug that reads
    /// what the search key forgets; the reduction's cross-check catches it).
    #[cfg(feature = "bug-injection")]
    KeepsFenceOnReacquire,
    /// An unknown outcome that does not start the unavailability clock (a re-inserted bug: retries past the
    /// budget).
    #[cfg(feature = "bug-injection")]
    UnknownStartsNoClock,
    /// A fenced write that retries on a budget of its own, not its run's (a re-inserted bug: retries past the
    /// run's budget).
    #[cfg(feature = "bug-injection")]
    FencedRetryOwnBudget,
    /// An operator's forced release that only records itself and leaves the lease STARTED (a re-inserted bug: the
    /// released holder's fenced writes still land).
    #[cfg(feature = "bug-injection")]
    ForceReleaseRecordsOnly,
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
            #[cfg(feature = "bug-injection")]
            Self::RecordsFirstWriteOnly => Protocol::RecordsFirstWriteOnly,
            #[cfg(feature = "bug-injection")]
            Self::LeakOnCancelInNeedCheck => Protocol::LeakOnCancelInNeedCheck,
            #[cfg(feature = "bug-injection")]
            Self::RenewsAnyStarted => Protocol::RenewsAnyStarted,
            #[cfg(feature = "bug-injection")]
            Self::KeepsFenceOnReacquire => Protocol::KeepsFenceOnReacquire,
            #[cfg(feature = "bug-injection")]
            Self::UnknownStartsNoClock => Protocol::UnknownStartsNoClock,
            #[cfg(feature = "bug-injection")]
            Self::FencedRetryOwnBudget => Protocol::FencedRetryOwnBudget,
            #[cfg(feature = "bug-injection")]
            Self::ForceReleaseRecordsOnly => Protocol::ForceReleaseRecordsOnly,
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
    /// The user's need check under the lease fails.
    NeedCheckFailure,
    /// A server clock that reads 1 ms early or late in one transaction (not in `all`: the checked lease grows
    /// to 5 ms to pay for it, so use `--max-time-ms 5` or more).
    ClockError,
    /// A commit told unknown that stays queued and lands later (not in `all`).
    Late,
    /// A transaction answered "unavailable", retried within a 2 ms unavailability budget.
    Unavailable,
    /// A transaction that starts executing later than it was sent (it reads the row then).
    Delay,
}

/// One entry of `--kinds`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// `run`: a run-once section.
    RunOnce,
    /// `acquire`: a lock, written under and released.
    Lock,
    /// `campaign`: leadership, held until resigned or lost, then campaigned for again.
    Leader,
}

impl KindArg {
    /// The kind this argument names.
    pub const fn kind(self) -> ClientKind {
        match self {
            Self::RunOnce => ClientKind::RunOnce,
            Self::Lock => ClientKind::Lock,
            Self::Leader => ClientKind::Leader,
        }
    }
}

/// The flags that select a checked model, as printed with every counterexample.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// The clients' kinds, assigned to slots in turn (`lock,leader`: lock, leader, lock, ...). Run-once clients
    /// cannot share a mutex with lock-mode ones. Default: run-once; `check` without it checks every mode's
    /// default world (see `CheckOptions::default_worlds`).
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<KindArg>,
    /// User cancels per execution at most (dropping a run, a campaign or a wait for the lock) [default: 0, or
    /// each default world's].
    #[arg(long)]
    pub cancels: Option<u8>,
    /// Operator actions per execution at most: a forced release of the lease and, with run-once clients, a reset
    /// of a DONE row [default: 0, or each default world's].
    #[arg(long)]
    pub operators: Option<u8>,
    /// Fenced writes each section makes under its lease, one after another (1 or 2) [default: 1, or each
    /// default world's].
    #[arg(long)]
    pub fenced_writes: Option<u8>,
    /// Number of clients [default: 3, or each default world's].
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=i64::from(MAX_CLIENTS)))]
    pub clients: Option<u8>,
    /// Faults to inject (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "all")]
    pub faults: Vec<FaultArg>,
    /// Faults injected per execution at most [default: 1, or each default world's].
    #[arg(long)]
    pub fault_budget: Option<u8>,
    /// Server time bound in milliseconds (the checked lease is 3 ms) [default: 4, or each default world's].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=30))]
    pub max_time_ms: Option<u64>,
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
    /// The worlds these arguments select: the one [`Self::options`] names, or without `--kinds` every mode's
    /// default world, with the flags given applied to each.
    pub fn worlds(&self) -> Vec<CheckOptions> {
        if !self.kinds.is_empty() {
            return vec![self.options()];
        }
        let given = self.options();
        CheckOptions::default_worlds()
            .into_iter()
            .map(|world| CheckOptions {
                clients: self.clients.unwrap_or(world.clients),
                cancels: self.cancels.unwrap_or(world.cancels),
                operators: self.operators.unwrap_or(world.operators),
                fault_budget: self.fault_budget.unwrap_or(world.fault_budget),
                max_time_ms: self.max_time_ms.unwrap_or(world.max_time_ms),
                fenced_writes: self.fenced_writes.unwrap_or(world.fenced_writes),
                kinds: world.kinds,
                ..given.clone()
            })
            .collect()
    }

    /// The check options these arguments select (one world).
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
                FaultArg::NeedCheckFailure => faults.need_check_failure = true,
                FaultArg::ClockError => faults.clock_error = true,
                FaultArg::Late => faults.late = true,
                FaultArg::Unavailable => faults.unavailable = true,
                FaultArg::Delay => faults.delay = true,
            }
        }
        let defaults = CheckOptions::default();
        CheckOptions {
            clients: self.clients.unwrap_or(defaults.clients),
            faults,
            fault_budget: self.fault_budget.unwrap_or(defaults.fault_budget),
            max_time_ms: self.max_time_ms.unwrap_or(defaults.max_time_ms),
            skew_ms: self.skew_ms,
            protocol: self.protocol.protocol(),
            assume_exact_server_clock: self.assume_exact_server_clock,
            staleness_ms: self.staleness_ms,
            kinds: if self.kinds.is_empty() { defaults.kinds } else { self.kinds.iter().map(|k| k.kind()).collect() },
            cancels: self.cancels.unwrap_or(defaults.cancels),
            operators: self.operators.unwrap_or(defaults.operators),
            fenced_writes: self.fenced_writes.unwrap_or(defaults.fenced_writes),
        }
    }
}

/// Reads an encoded path argument: the path itself, `@FILE`, or the name of a file that holds it.
pub fn read_path_argument(argument: &str) -> std::io::Result<String> {
    let file = argument.strip_prefix('@').or_else(|| std::path::Path::new(argument).is_file().then_some(argument));
    match file {
        Some(file) => std::fs::read_to_string(file),
        None => Ok(argument.to_owned()),
    }
}

/// Ends a command-line tool for a person: the exit code `command` chose, or its failure's causes on one line
/// (`error: ...`, with no backtrace whatever `RUST_BACKTRACE` says) and exit code 1. Shared by
/// `spanner-mutex-check` and the simulator.
pub fn exit_with(command: anyhow::Result<std::process::ExitCode>) -> std::process::ExitCode {
    command.unwrap_or_else(|error| {
        eprintln!("error: {error:#}");
        std::process::ExitCode::FAILURE
    })
}
