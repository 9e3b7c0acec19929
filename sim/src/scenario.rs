//! Scenarios: a small TOML format that fixes the clients, the protocol configuration, the network and the faults
//! with their timing (docs/simulation.md). A scenario plus its seed determines a run byte for byte.
//! [`Scenario::generate`] makes random ones for sweeps.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
pub use spanner_mutex_check::ClientKind;
use spanner_mutex_model::{Config, ConfigError, ConfigParams, OperatorAction, Protocol};

/// The most clients a scenario may have (after expanding `count`).
pub const MAX_CLIENTS: usize = 64;
/// The most lease rows (mutexes) a scenario may have.
pub const MAX_MUTEXES: usize = 16;
/// The longest simulated run: one week.
pub const MAX_DURATION_MS: u64 = 7 * 24 * 60 * 60 * 1_000;
/// The most faults a scenario may list.
pub const MAX_FAULTS: usize = 1_000;

/// A scenario file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What the scenario shows, in one line.
    pub name: String,
    /// The one seed every random choice of the run derives from.
    #[serde(default)]
    pub seed: u64,
    /// Simulated time the run lasts.
    pub duration_ms: u64,
    /// How many lease rows (mutexes) exist; clients pick one with `mutex`.
    #[serde(default = "one")]
    pub mutexes: usize,
    /// If set, every mutex's section is needed again this often (a new need generation).
    #[serde(default)]
    pub need_every_ms: Option<u64>,
    /// The protocol configuration all clients share.
    #[serde(default)]
    pub config: ConfigParams,
    /// The protocol all clients follow: `fenced`, the seed's `naive`, or (built with `bug-injection`) a
    /// re-inserted bug.
    #[serde(default, skip_serializing_if = "is_fenced")]
    pub protocol: Protocol,
    /// Latencies and random commit faults.
    #[serde(default)]
    pub network: Network,
    /// The client processes.
    #[serde(rename = "client")]
    pub clients: Vec<ClientSpec>,
    /// Faults at fixed times.
    #[serde(default, rename = "fault")]
    pub faults: Vec<Fault>,
}

const fn one() -> usize {
    1
}

const fn one_write() -> u32 {
    1
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference.
const fn is_one_write(writes: &u32) -> bool {
    *writes == 1
}

/// The most fenced writes a scenario's section may make.
const MAX_FENCED_WRITES: u32 = 100;

fn is_fenced(protocol: &Protocol) -> bool {
    *protocol == Protocol::Fenced
}

/// RPC latencies and the background rate of commit faults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Network {
    /// One-way latency between a client and Spanner, uniform in `[latency_min_ms, latency_max_ms]`.
    pub latency_min_ms: u64,
    /// See `latency_min_ms`.
    pub latency_max_ms: u64,
    /// Probability that one message is slow instead (a tail latency).
    pub tail_rate: f64,
    /// A slow message takes up to this long.
    pub tail_ms: u64,
    /// How long a read-write transaction holds its read before committing, uniform in `[1, commit_max_ms]`.
    pub commit_max_ms: u64,
    /// Probability that a commit aborts without a conflict.
    pub abort_rate: f64,
    /// Probability that a commit's outcome is unknown to the client (half of them land).
    pub unknown_rate: f64,
    /// How long a client waits for Spanner before calling it unavailable.
    pub rpc_timeout_ms: u64,
    /// How far each server time read (a transaction's `now`, a read's `server_now`) may be from real time:
    /// drawn per read within plus or minus this, half of the draws at the extremes.
    pub server_uncertainty_ms: u64,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            latency_min_ms: 2,
            latency_max_ms: 10,
            tail_rate: 0.0,
            tail_ms: 0,
            commit_max_ms: 5,
            abort_rate: 0.0,
            unknown_rate: 0.0,
            rpc_timeout_ms: 2_000,
            server_uncertainty_ms: 0,
        }
    }
}

/// One client process (or `count` identical ones).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    /// Its name in traces; with `count > 1` the copies are named `name1`, `name2`, ...
    pub name: String,
    /// What it does: `run-once` (the default), `lock` or `leader`. A lock or leader client holds for the section's
    /// duration, makes its fenced writes of its term, then releases; a leader resigns when told it is lost.
    /// Run-once and lock-mode clients cannot share a mutex.
    #[serde(default)]
    pub kind: ClientKind,
    /// How many identical processes.
    #[serde(default = "one")]
    pub count: usize,
    /// Which mutex (lease row) it uses, from 0.
    #[serde(default)]
    pub mutex: usize,
    /// When its first run starts.
    #[serde(default)]
    pub start_ms: u64,
    /// Its critical section takes a duration uniform in `[section_min_ms, section_max_ms]`, then writes its
    /// effect through a fenced transaction.
    pub section_min_ms: u64,
    /// See `section_min_ms`.
    pub section_max_ms: u64,
    /// Probability that a section fails before writing.
    #[serde(default)]
    pub section_fail_rate: f64,
    /// Fenced writes its section makes under its lease, each after a stretch of work as long as the section's
    /// (`section_min_ms` to `section_max_ms`) and sent again while Spanner tells nothing certain (1 to 100).
    #[serde(default = "one_write", skip_serializing_if = "is_one_write")]
    pub fenced_writes: u32,
    /// How long its need check takes (0: it answers at once); a cancel can come meanwhile.
    #[serde(default)]
    pub need_check_ms: u64,
    /// Its wall clock's offset from Spanner's (only the seed protocol reads it).
    #[serde(default)]
    pub wall_skew_ms: i64,
    /// Its monotonic clock's rate error in parts per million (negative: slow).
    #[serde(default)]
    pub drift_ppm: i64,
    /// If set, a new run starts this long after each run ends (a fleet member that keeps working).
    #[serde(default)]
    pub repeat_after_ms: Option<u64>,
}

/// Which transactions a commit fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TxnKind {
    /// Acquisitions.
    Acquire,
    /// Renewals.
    Renew,
    /// Releases.
    Release,
    /// A section's fenced write (it retries the same write when told nothing certain).
    FencedWrite,
    /// Acquisitions, renewals and releases.
    Any,
}

impl std::fmt::Display for TxnKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Acquire => "acquisition",
            Self::Renew => "renewal",
            Self::Release => "release",
            Self::FencedWrite => "fenced write",
            Self::Any => "lease",
        })
    }
}

/// A fault at a fixed time. Clients are named as in the scenario (`a`, or `w3` for a copy).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Fault {
    /// The process dies (its section with it); a new process starts after `restart_after_ms`, if given.
    Crash {
        /// When.
        at_ms: u64,
        /// Which client.
        client: String,
        /// Restart delay; none: it stays down.
        #[serde(default)]
        restart_after_ms: Option<u64>,
    },
    /// The process is frozen (GC, CPU throttling): it handles nothing, while its clock and Spanner move on.
    Pause {
        /// When.
        at_ms: u64,
        /// Which client.
        client: String,
        /// For how long.
        duration_ms: u64,
    },
    /// The computer sleeps (a suspended VM or laptop). Linux's `CLOCK_MONOTONIC`, which `std` and tokio use,
    /// does not count it; the client's clock and alarm count it through `CLOCK_BOOTTIME` (docs/protocol.md), so on
    /// waking it acts on everything that came due meanwhile, as after a pause.
    Suspend {
        /// When.
        at_ms: u64,
        /// Which client.
        client: String,
        /// For how long.
        duration_ms: u64,
        /// A platform without `CLOCK_BOOTTIME`: the client's clock stops too, and on waking it believes almost no
        /// time has passed.
        #[serde(default)]
        clock_stops: bool,
    },
    /// Spanner answers nothing: requests time out as unavailable, commits due meanwhile are lost unseen.
    Outage {
        /// When.
        at_ms: u64,
        /// For how long.
        duration_ms: u64,
    },
    /// The client's next `times` commits of `txn` abort.
    Abort {
        /// From when.
        at_ms: u64,
        /// Which client.
        client: String,
        /// Which transactions.
        txn: TxnKind,
        /// How many.
        #[serde(default = "one_u32")]
        times: u32,
    },
    /// The client's next `times` commits of `txn` end with an unknown outcome; `landed` says whether they committed.
    Unknown {
        /// From when.
        at_ms: u64,
        /// Which client.
        client: String,
        /// Which transactions.
        txn: TxnKind,
        /// Whether the commit happened.
        landed: bool,
        /// How many.
        #[serde(default = "one_u32")]
        times: u32,
    },
    /// The client's next `times` commits of `txn` are reported unknown while they are still queued: each reaches
    /// Spanner `after_ms` later and lands unless the row changed meanwhile.
    LateCommit {
        /// From when.
        at_ms: u64,
        /// Which client.
        client: String,
        /// Which transactions.
        txn: TxnKind,
        /// How long after the answer the commit reaches Spanner.
        after_ms: u64,
        /// How many.
        #[serde(default = "one_u32")]
        times: u32,
    },
    /// The client's wall clock jumps by `by_ms` (NTP step); its monotonic clock does not.
    ClockStep {
        /// When.
        at_ms: u64,
        /// Which client.
        client: String,
        /// By how much (negative: backwards).
        by_ms: i64,
    },
    /// The server time read by the client's next `times` transactions, reads and fenced writes is `error_ms` off
    /// real time (negative: early), whatever the network's uncertainty draws.
    ServerClockError {
        /// From when.
        at_ms: u64,
        /// Which client.
        client: String,
        /// How far off.
        error_ms: i64,
        /// How many reads.
        #[serde(default = "one_u32")]
        times: u32,
    },
    /// The client's next section fails before writing.
    SectionFail {
        /// From when.
        at_ms: u64,
        /// Which client.
        client: String,
    },
    /// The client's next need check fails (the user's check returns an error): a run-once client that holds the
    /// lease gives it up with the row FAILED.
    NeedCheckFail {
        /// From when.
        at_ms: u64,
        /// Which client.
        client: String,
    },
    /// A row deletion policy runs: mutex `mutex`'s row is deleted if its last write is at least `older_than_ms`
    /// old (Spanner's policies count days, longer than any lease, so only an expired or ended lease goes).
    RowDeleted {
        /// When.
        at_ms: u64,
        /// Which mutex.
        #[serde(default)]
        mutex: usize,
        /// The policy's age.
        older_than_ms: u64,
    },
    /// An operator acts on mutex `mutex`'s row (`spanner-mutex release` or `reset`): `force-release` ends a
    /// STARTED lease at once, whoever holds it; `reset` makes a DONE row FAILED, so the next run executes if
    /// needed. On any other row it does nothing.
    Operator {
        /// When.
        at_ms: u64,
        /// Which mutex.
        #[serde(default)]
        mutex: usize,
        /// What the operator does.
        action: OperatorAction,
    },
    /// Every mutex's section is needed again (a new need generation).
    NewNeed {
        /// When.
        at_ms: u64,
    },
    /// The client's user cancels its current run (drops the future of `run`, `acquire` or `campaign`): a need
    /// check or section under way is dropped, a lease held or won is released.
    Cancel {
        /// When.
        at_ms: u64,
        /// Which client.
        client: String,
    },
}

const fn one_u32() -> u32 {
    1
}

impl Fault {
    /// When the fault happens.
    pub const fn at_ms(&self) -> u64 {
        match self {
            Self::Crash { at_ms, .. }
            | Self::Pause { at_ms, .. }
            | Self::Suspend { at_ms, .. }
            | Self::Outage { at_ms, .. }
            | Self::Abort { at_ms, .. }
            | Self::Unknown { at_ms, .. }
            | Self::LateCommit { at_ms, .. }
            | Self::ClockStep { at_ms, .. }
            | Self::ServerClockError { at_ms, .. }
            | Self::SectionFail { at_ms, .. }
            | Self::NeedCheckFail { at_ms, .. }
            | Self::RowDeleted { at_ms, .. }
            | Self::Operator { at_ms, .. }
            | Self::Cancel { at_ms, .. }
            | Self::NewNeed { at_ms } => *at_ms,
        }
    }

    /// The client the fault names, if any.
    pub fn client(&self) -> Option<&str> {
        match self {
            Self::Crash { client, .. }
            | Self::Pause { client, .. }
            | Self::Suspend { client, .. }
            | Self::Abort { client, .. }
            | Self::Unknown { client, .. }
            | Self::LateCommit { client, .. }
            | Self::ClockStep { client, .. }
            | Self::ServerClockError { client, .. }
            | Self::Cancel { client, .. }
            | Self::SectionFail { client, .. }
            | Self::NeedCheckFail { client, .. } => Some(client),
            Self::Outage { .. } | Self::RowDeleted { .. } | Self::Operator { .. } | Self::NewNeed { .. } => None,
        }
    }
}

/// Why a scenario cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Not valid TOML, or a key or value the format does not have.
    #[error("scenario is not valid: {0}")]
    Parse(toml::de::Error),
    /// The protocol configuration breaks a rule.
    #[error("scenario [config]: {0}")]
    Config(ConfigError),
    /// A value is out of range or inconsistent.
    #[error("scenario: {0}")]
    Invalid(String),
}

// By hand, not `#[from]`: the inner error is part of the message, so it is not also a source (a chain printed
// whole would say it twice).
impl From<toml::de::Error> for ScenarioError {
    fn from(error: toml::de::Error) -> Self {
        Self::Parse(error)
    }
}

impl From<ConfigError> for ScenarioError {
    fn from(error: ConfigError) -> Self {
        Self::Config(error)
    }
}

fn invalid(message: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid(message.into())
}

fn rate(name: &str, value: f64) -> Result<(), ScenarioError> {
    if (0.0..=1.0).contains(&value) { Ok(()) } else { Err(invalid(format!("{name} = {value} must be in [0, 1]"))) }
}

impl Scenario {
    /// Parses and validates a scenario file's text.
    pub fn from_toml(text: &str) -> Result<Self, ScenarioError> {
        let scenario: Self = toml::from_str(text)?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// The scenario as TOML, as [`Self::from_toml`] reads it.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a scenario always serializes")
    }

    /// Checks every limit and cross-reference; returns the protocol configuration.
    pub fn validate(&self) -> Result<Config, ScenarioError> {
        let cfg = self.config.clone().validate()?.with_protocol(self.protocol);
        if self.duration_ms == 0 || self.duration_ms > MAX_DURATION_MS {
            return Err(invalid(format!("duration_ms = {} must be in 1..={MAX_DURATION_MS}", self.duration_ms)));
        }
        if self.mutexes == 0 || self.mutexes > MAX_MUTEXES {
            return Err(invalid(format!("mutexes = {} must be in 1..={MAX_MUTEXES}", self.mutexes)));
        }
        if self.need_every_ms == Some(0) {
            return Err(invalid("need_every_ms must be greater than 0"));
        }
        let n = &self.network;
        if n.latency_min_ms > n.latency_max_ms {
            return Err(invalid("network.latency_min_ms must not exceed network.latency_max_ms"));
        }
        if n.commit_max_ms == 0 || n.rpc_timeout_ms == 0 {
            return Err(invalid("network.commit_max_ms and network.rpc_timeout_ms must be greater than 0"));
        }
        rate("network.tail_rate", n.tail_rate)?;
        rate("network.abort_rate", n.abort_rate)?;
        rate("network.unknown_rate", n.unknown_rate)?;
        if self.faults.len() > MAX_FAULTS {
            return Err(invalid(format!("{} faults exceed the limit of {MAX_FAULTS}", self.faults.len())));
        }
        let names = self.client_names();
        if names.is_empty() || names.len() > MAX_CLIENTS {
            return Err(invalid(format!("{} clients; a scenario has 1..={MAX_CLIENTS}", names.len())));
        }
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(invalid(format!("client name {name:?} is used twice")));
            }
        }
        for c in &self.clients {
            if c.count == 0 {
                return Err(invalid(format!("client {:?}: count must be at least 1", c.name)));
            }
            if c.mutex >= self.mutexes {
                return Err(invalid(format!("client {:?}: mutex {} but mutexes = {}", c.name, c.mutex, self.mutexes)));
            }
            if c.section_min_ms > c.section_max_ms {
                return Err(invalid(format!("client {:?}: section_min_ms exceeds section_max_ms", c.name)));
            }
            if !(1..=MAX_FENCED_WRITES).contains(&c.fenced_writes) {
                return Err(invalid(format!("client {:?}: fenced_writes must be in 1..={MAX_FENCED_WRITES}", c.name)));
            }
            if c.drift_ppm.abs() >= 1_000_000 {
                return Err(invalid(format!("client {:?}: drift_ppm must be within +-999999", c.name)));
            }
            rate(&format!("client {:?} section_fail_rate", c.name), c.section_fail_rate)?;
            let mixed =
                self.clients.iter().any(|o| o.mutex == c.mutex && o.kind.is_lock_mode() != c.kind.is_lock_mode());
            if mixed {
                return Err(invalid(format!(
                    "client {:?}: run-once and lock or leader clients cannot share mutex {} (a released lock is DONE, \
                     which a run-once client reads as done by another); give them different mutexes",
                    c.name, c.mutex
                )));
            }
        }
        for fault in &self.faults {
            if let Some(client) = fault.client()
                && !names.iter().any(|n| n == client)
            {
                return Err(invalid(format!("fault at {} ms names unknown client {client:?}", fault.at_ms())));
            }
            if let Fault::RowDeleted { at_ms, mutex, .. } | Fault::Operator { at_ms, mutex, .. } = fault
                && *mutex >= self.mutexes
            {
                return Err(invalid(format!("fault at {at_ms} ms: mutex {mutex} but mutexes = {}", self.mutexes)));
            }
        }
        Ok(cfg)
    }

    /// Every client process's name, copies expanded, in order.
    pub fn client_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for c in &self.clients {
            if c.count == 1 {
                names.push(c.name.clone());
            } else {
                names.extend((1..=c.count).map(|i| format!("{}{i}", c.name)));
            }
        }
        names
    }
}

/// What [`Scenario::generate`] may vary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerateOptions {
    /// Clients per scenario; random in 2..=5 if not given.
    pub clients: Option<usize>,
    /// The protocol every generated scenario uses.
    pub protocol: Protocol,
    /// Simulated time per run.
    pub duration_ms: u64,
    /// Every mode: each client is run-once (mutex 0), lock or leader (mutex 1) at random, and users cancel
    /// runs. Off: run-once clients only, as the sweeps before modes drew them (their seeds keep their runs).
    pub every_mode: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self { clients: None, protocol: Protocol::Fenced, duration_ms: 60_000, every_mode: false }
    }
}

/// The fleet a sweep draws clients' drift within: up to the whole drift the configuration declares, the most the
/// protocol tolerates (docs/protocol.md: a client slow by the margin left after twice the server clock error
/// reaches its deadline no later than any server may judge the row expired); larger drift is a scenario of its own.
const MAX_GENERATED_DRIFT_FRACTION_OF_MARGIN: u64 = 1;

impl Scenario {
    /// A random scenario: configuration, network, clients and faults all drawn from `seed`, which also becomes
    /// the run's seed. The same seed and options give the same scenario.
    pub fn generate(seed: u64, options: &GenerateOptions) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let ttl_ms = rng.random_range(1..=5u64) * 1_000;
        let safety_margin_ms = ttl_ms / rng.random_range(5..=10u64);
        // The margin pays for twice the server clock error first; drift gets the rest, as the rule allows.
        let server_uncertainty_ms = rng.random_range(0..=safety_margin_ms / 8);
        let clock_drift_ppm = (safety_margin_ms - 2 * server_uncertainty_ms) * 1_000_000 / ttl_ms;
        let renew_interval_ms = (ttl_ms - safety_margin_ms) / rng.random_range(2..=4u64);
        let wait_ms = rng.random_range(50..=300u64);
        let max_retries = rng.random_range(3..=10u32);
        let config = ConfigParams {
            ttl_ms,
            staleness_ms: ttl_ms.max(u64::from(max_retries) * wait_ms) + rng.random_range(1..=2_000u64),
            wait_ms,
            max_wait_ms: ttl_ms,
            max_retries,
            renew_interval_ms,
            safety_margin_ms,
            clock_drift_ppm,
            server_uncertainty_ms,
            jitter_ms: rng.random_range(0..=wait_ms),
            // 0: an outage fails a waiting client at once; otherwise it retries through short ones.
            unavailable_ms: rng.random_range(0..=3u64) * 2 * wait_ms,
            poll_ms: rng.random_range(100..=1_000u64),
        };
        let network = Network {
            latency_min_ms: rng.random_range(1..=5),
            latency_max_ms: rng.random_range(5..=50),
            tail_rate: f64::from(rng.random_range(0..=20u32)) / 1_000.0,
            tail_ms: rng.random_range(0..=ttl_ms / 2),
            commit_max_ms: rng.random_range(1..=10),
            abort_rate: f64::from(rng.random_range(0..=100u32)) / 1_000.0,
            unknown_rate: f64::from(rng.random_range(0..=50u32)) / 1_000.0,
            rpc_timeout_ms: rng.random_range(500..=3_000),
            server_uncertainty_ms,
        };
        let clients_n = options.clients.unwrap_or_else(|| rng.random_range(2..=5));
        let max_drift_ppm = i64::try_from(clock_drift_ppm / MAX_GENERATED_DRIFT_FRACTION_OF_MARGIN).unwrap_or(0);
        let clients: Vec<ClientSpec> = (0..clients_n)
            .map(|i| {
                let section_min_ms = rng.random_range(10..=ttl_ms / 2);
                ClientSpec {
                    name: format!("c{i}"),
                    kind: ClientKind::RunOnce,
                    count: 1,
                    mutex: 0,
                    start_ms: rng.random_range(0..=2_000),
                    section_min_ms,
                    section_max_ms: section_min_ms + rng.random_range(0..=ttl_ms),
                    section_fail_rate: f64::from(rng.random_range(0..=200u32)) / 1_000.0,
                    fenced_writes: 1,
                    need_check_ms: 0,
                    wall_skew_ms: rng.random_range(-300_000..=300_000),
                    drift_ppm: rng.random_range(-max_drift_ppm..=max_drift_ppm),
                    repeat_after_ms: Some(rng.random_range(100..=3_000)),
                }
            })
            .collect();
        let mut clients = clients;
        if options.every_mode {
            // Drawn only with the flag, so a run-once sweep's seeds are unchanged by it.
            for client in &mut clients {
                client.kind = [ClientKind::RunOnce, ClientKind::Lock, ClientKind::Leader][rng.random_range(0..3)];
                client.mutex = usize::from(client.kind.is_lock_mode());
                client.need_check_ms = rng.random_range(0..=ttl_ms / 2);
            }
        }
        let mutexes = if options.every_mode { 2 } else { 1 };
        let mut faults = Vec::new();
        for _ in 0..rng.random_range(0..=6) {
            let at_ms = rng.random_range(0..options.duration_ms);
            let client = format!("c{}", rng.random_range(0..clients_n));
            let fault = match rng.random_range(0..7) {
                0 => Fault::Crash { at_ms, client, restart_after_ms: Some(rng.random_range(0..=2 * ttl_ms)) },
                1 => {
                    let duration_ms = rng.random_range(1..=3 * ttl_ms);
                    // The production client's clock counts a suspension; a stopped clock has its own tests.
                    if rng.random_bool(0.5) {
                        Fault::Pause { at_ms, client, duration_ms }
                    } else {
                        Fault::Suspend { at_ms, client, duration_ms, clock_stops: false }
                    }
                }
                2 => Fault::Outage { at_ms, duration_ms: rng.random_range(1..=2 * ttl_ms) },
                3 => Fault::ClockStep { at_ms, client, by_ms: rng.random_range(-300_000..=300_000) },
                4 => Fault::Unknown { at_ms, client, txn: TxnKind::Any, landed: rng.random_bool(0.5), times: 1 },
                5 => Fault::RowDeleted { at_ms, mutex: 0, older_than_ms: ttl_ms + rng.random_range(1..=ttl_ms) },
                _ => Fault::SectionFail { at_ms, client },
            };
            faults.push(fault);
        }
        if options.every_mode {
            for _ in 0..rng.random_range(0..=4) {
                let at_ms = rng.random_range(0..options.duration_ms);
                let client = format!("c{}", rng.random_range(0..clients_n));
                faults.push(Fault::Cancel { at_ms, client });
            }
            let at_ms = rng.random_range(0..options.duration_ms);
            faults.push(Fault::RowDeleted { at_ms, mutex: 1, older_than_ms: ttl_ms + rng.random_range(1..=ttl_ms) });
        }
        // After the faults, so they change no other draw of a seed.
        for client in &mut clients {
            client.fenced_writes = rng.random_range(1..=3);
        }
        let need_every_ms = Some(config.staleness_ms + rng.random_range(0..=2_000));
        // Drawn last, so that it changes no other draw of a seed, and in a quarter of the seeds: the other three
        // quarters generate the scenario they did before it was drawn.
        if rng.random_bool(0.25) {
            let at_ms = rng.random_range(0..options.duration_ms);
            faults.push(Fault::NeedCheckFail { at_ms, client: format!("c{}", rng.random_range(0..clients_n)) });
        }
        // After that, the same way: an operator's forced release or reset in a quarter of the seeds.
        if rng.random_bool(0.25) {
            let at_ms = rng.random_range(0..options.duration_ms);
            let action = if rng.random_bool(0.5) { OperatorAction::ForceRelease } else { OperatorAction::Reset };
            faults.push(Fault::Operator { at_ms, mutex: rng.random_range(0..mutexes), action });
        }
        faults.sort_by_key(Fault::at_ms);
        Self {
            name: format!("generated from seed {seed}"),
            seed,
            duration_ms: options.duration_ms,
            mutexes,
            need_every_ms,
            config,
            protocol: options.protocol,
            network,
            clients,
            faults,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "minimal"
duration_ms = 1000
[[client]]
name = "a"
section_min_ms = 10
section_max_ms = 20
"#;

    #[test]
    fn a_minimal_scenario_takes_defaults() {
        let s = Scenario::from_toml(MINIMAL).expect("valid");
        assert_eq!((s.seed, s.mutexes, s.config.clone(), s.faults.len()), (0, 1, ConfigParams::default(), 0));
        assert_eq!(s.client_names(), ["a"]);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Scenario::from_toml(&format!("{MINIMAL}\n[config]\ntll_ms = 5\n")).expect_err("typo");
        assert!(err.to_string().contains("unknown field `tll_ms`"), "{err}");
        let err = Scenario::from_toml(&format!(
            "{MINIMAL}\n[[fault]]\nkind = \"pause\"\nat_ms = 1\nclient = \"a\"\nduration_ms = 5\nlanded = true\n"
        ))
        .expect_err("stray key");
        assert!(err.to_string().contains("unknown field `landed`"), "{err}");
    }

    #[test]
    fn bad_references_and_ranges_are_named() {
        let err = Scenario::from_toml(&format!("{MINIMAL}\n[[fault]]\nkind = \"crash\"\nat_ms = 1\nclient = \"b\"\n"))
            .expect_err("no client b");
        assert_eq!(err.to_string(), "scenario: fault at 1 ms names unknown client \"b\"");
        let err = Scenario::from_toml(&MINIMAL.replace("duration_ms = 1000", "duration_ms = 0")).expect_err("zero");
        assert_eq!(err.to_string(), "scenario: duration_ms = 0 must be in 1..=604800000");
        let err = Scenario::from_toml(&format!("{MINIMAL}\n[config]\nttl_ms = 0\n")).expect_err("config");
        assert_eq!(err.to_string(), "scenario [config]: ttl_ms must be greater than 0");
    }

    #[test]
    fn generated_scenarios_are_valid_deterministic_and_round_trip() {
        for seed in 0..200 {
            let s = Scenario::generate(seed, &GenerateOptions::default());
            s.validate().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            assert_eq!(s, Scenario::generate(seed, &GenerateOptions::default()));
            assert_eq!(Scenario::from_toml(&s.to_toml()).expect("round trip"), s);
        }
    }
}
