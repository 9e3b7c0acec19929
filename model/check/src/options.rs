//! What a check explores: its clients, their kinds, the faults and the bounds.

use spanner_mutex_model::{Config, ConfigParams, Protocol};

/// The most clients a check may compose.
pub const MAX_CLIENTS: u8 = 5;

/// The longest horizon a check may have, in milliseconds of server time (the default worlds need 6; every one
/// more multiplies the states).
pub const MAX_TIME_MS: u64 = 1_000;

/// How far a server's clock errs, either way, when the `clock-error` fault makes it err.
pub const SERVER_CLOCK_ERROR_MS: u64 = 1;

/// What a client's user does with the mutex: each kind is the production machine in one of the library's modes,
/// driven by the steps its user can take (in the checker and in the simulator's scenarios, as `kind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientKind {
    /// `SpannerMutex::run`: need check, lease, need check again, its fenced writes, release as DONE.
    #[default]
    RunOnce,
    /// `SpannerMutex::acquire`: waits for the lock without a retry limit (its user may give up: a cancel),
    /// makes its fenced writes, then releases.
    Lock,
    /// `SpannerMutex::campaign`: a lock without a retry limit, held (renewed) until resigned or lost, then
    /// campaigned for once more.
    Leader,
}

impl ClientKind {
    /// The kind's word on the command line.
    pub const fn word(self) -> &'static str {
        match self {
            Self::RunOnce => "run-once",
            Self::Lock => "lock",
            Self::Leader => "leader",
        }
    }

    /// Whether the kind runs the machine in lock mode (lock and leader share a row; run-once clients cannot:
    /// a lock's release writes DONE, which a run-once client reads as "done by another").
    pub const fn is_lock_mode(self) -> bool {
        !matches!(self, Self::RunOnce)
    }
}

/// How many campaigns a leader client makes (the second follows the end of its first term).
pub const LEADER_CAMPAIGNS: u8 = 2;

/// Which faults the world may inject. Each injected fault spends one unit of [`CheckOptions::fault_budget`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Faults {
    /// A client process dies (its section with it) and restarts as a new client.
    pub crash: bool,
    /// A transaction aborts without a conflict.
    pub abort: bool,
    /// A commit's outcome is unknown to the client; it landed, or it did not.
    pub unknown: bool,
    /// A client's monotonic clock falls 1 ms further behind the server's (bounded by the safety margin).
    pub drift: bool,
    /// A critical section fails before writing its effect.
    pub section_failure: bool,
    /// The user's need check under the lease fails (it returns an error): the client gives the lease up.
    pub need_check_failure: bool,
    /// The server time a transaction reads is 1 ms early or late. Not in [`Self::ALL`]: the checked lease
    /// grows by twice the error to pay for it, and needs a longer horizon to be taken over.
    pub clock_error: bool,
    /// A commit its client is told is unknown stays queued and reaches Spanner later (landing unless the row
    /// changed meanwhile). Not in [`Self::ALL`]: it adds a queued transaction to the state.
    pub late: bool,
    /// Spanner answers a transaction with "unavailable" (nothing written), and the clients retry it within an
    /// unavailability budget of [`UNAVAILABLE_MS`]. Without it the budget is 0 and nothing is timed.
    pub unavailable: bool,
    /// A renewal starts executing later than it was sent: it reads the row and the server's time at a later
    /// step, so it can find the lease taken over and be refused.
    pub delay: bool,
}

/// The checked clients' unavailability budget when [`Faults::unavailable`] is on: two of their 1 ms waits.
pub const UNAVAILABLE_MS: u64 = 2;

impl Faults {
    /// Every fault kind of the default check (all but [`Self::clock_error`] and [`Self::late`]).
    pub const ALL: Self = Self {
        crash: true,
        abort: true,
        unknown: true,
        drift: true,
        section_failure: true,
        need_check_failure: true,
        clock_error: false,
        late: false,
        unavailable: true,
        delay: true,
    };
    /// No faults: only scheduling (which already includes arbitrarily long pauses) and time.
    pub const NONE: Self = Self {
        crash: false,
        abort: false,
        unknown: false,
        drift: false,
        section_failure: false,
        need_check_failure: false,
        clock_error: false,
        late: false,
        unavailable: false,
        delay: false,
    };
}

/// What to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Number of clients, 1 to [`MAX_CLIENTS`].
    pub clients: u8,
    /// Enabled faults.
    pub faults: Faults,
    /// Faults injected per execution at most.
    pub fault_budget: u8,
    /// Server time runs from 0 to this many milliseconds; bounds the state space.
    pub max_time_ms: u64,
    /// Wall-clock offset of each client from the server, for the naive protocol (client `i` is offset by
    /// `(i - 1) * skew_ms`: behind, exact, ahead). The fenced protocol never reads a wall clock.
    pub skew_ms: u64,
    /// The protocol the machines and transactions follow.
    pub protocol: Protocol,
    /// The clients' configuration declares no server clock error even when [`Faults::clock_error`] injects one
    /// (the safety-margin rule relaxed).
    pub assume_exact_server_clock: bool,
    /// How long a DONE row stays fresh. The default (100 ms) is beyond the horizon; below it, a stale DONE row is
    /// acquired again within the check.
    pub staleness_ms: u64,
    /// The clients' kinds: slot `i` is `kinds[i % kinds.len()]`.
    pub kinds: Vec<ClientKind>,
    /// User cancels per execution at most (a budget of its own, beside the faults').
    pub cancels: u8,
    /// Operator actions per execution at most (a budget of its own): a forced release of a STARTED row and, with
    /// run-once clients, a reset of a DONE one.
    pub operators: u8,
    /// Fenced writes a section makes under its lease, one after another (each retried until answered), 1 to
    /// [`MAX_FENCED_WRITES`].
    pub fenced_writes: u8,
}

/// The most fenced writes a checked section may make.
pub const MAX_FENCED_WRITES: u8 = 2;

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            clients: 3,
            faults: Faults::ALL,
            fault_budget: 1,
            max_time_ms: 4,
            skew_ms: 1,
            protocol: Protocol::Fenced,
            assume_exact_server_clock: false,
            staleness_ms: 100,
            kinds: vec![ClientKind::RunOnce],
            cancels: 0,
            operators: 0,
            fenced_writes: 1,
        }
    }
}

impl CheckOptions {
    /// The command-line options that select this model, for printing a reproducing command.
    pub fn cli_args(&self) -> String {
        let mut faults = Vec::new();
        let f = self.faults;
        for (on, name) in [
            (f.crash, "crash"),
            (f.abort, "abort"),
            (f.unknown, "unknown"),
            (f.drift, "drift"),
            (f.section_failure, "section-failure"),
            (f.need_check_failure, "need-check-failure"),
            (f.clock_error, "clock-error"),
            (f.late, "late"),
            (f.unavailable, "unavailable"),
            (f.delay, "delay"),
        ] {
            if on {
                faults.push(name);
            }
        }
        let faults = if faults.is_empty() { "none".to_owned() } else { faults.join(",") };
        let protocol = self.protocol.word();
        let relaxed = if self.assume_exact_server_clock { " --assume-exact-server-clock" } else { "" };
        let kinds: Vec<&str> = self.kinds.iter().map(|k| k.word()).collect();
        format!(
            "--clients {} --kinds {} --cancels {} --operators {} --fenced-writes {} --faults {faults} \
             --fault-budget {} --max-time-ms {} --skew-ms {} --staleness-ms {} --protocol {protocol}{relaxed}",
            self.clients,
            kinds.join(","),
            self.cancels,
            self.operators,
            self.fenced_writes,
            self.fault_budget,
            self.max_time_ms,
            self.skew_ms,
            self.staleness_ms
        )
    }

    /// The worlds `check` covers by default, each as deep as a CI budget allows: run-once clients with faults
    /// (this default); run-once clients whose users cancel, over a horizon with room for two successive
    /// takeovers (leases granted at 0, 3 and 6 ms); lock and leader clients sharing a mutex, whose users
    /// cancel, release and resign, with two faults per execution; the same clients over the longer horizon; and
    /// the same clients with two faults over the longer horizon, without the cancel (with it too, the world
    /// takes about as long as the other five together). Sections make two fenced writes in the two worlds with a
    /// cancel over the longer horizon (a cancel can come between them), one in the others (two in all five take
    /// about 1.5 times as long: docs/benchmarks.md). Two more have an operator, over the shortest horizons that
    /// reach every companion: lock and leader clients whose lease may be force-released between or during a
    /// holder's two writes (3 ms), and run-once clients whose lease may be force-released or whose DONE row may be
    /// reset (4 ms). CI checks both over a longer horizon too.
    pub fn default_worlds() -> Vec<Self> {
        let lock_and_leader =
            Self { clients: 2, cancels: 1, kinds: vec![ClientKind::Lock, ClientKind::Leader], ..Self::default() };
        vec![
            Self::default(),
            Self { clients: 2, cancels: 1, max_time_ms: 6, fenced_writes: 2, ..Self::default() },
            Self { fault_budget: 2, ..lock_and_leader.clone() },
            Self { max_time_ms: 6, fenced_writes: 2, ..lock_and_leader.clone() },
            Self { fault_budget: 2, max_time_ms: 6, cancels: 0, ..lock_and_leader.clone() },
            Self { operators: 1, cancels: 0, fenced_writes: 2, max_time_ms: 3, ..lock_and_leader },
            Self { clients: 2, operators: 1, ..Self::default() },
        ]
    }

    /// Why these options describe no model, if they do not.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_CLIENTS).contains(&self.clients) {
            return Err(format!("--clients {} is not in 1..={MAX_CLIENTS}", self.clients));
        }
        if self.kinds.is_empty() {
            return Err("--kinds names no kind; use run-once, lock or leader".into());
        }
        if !(1..=MAX_FENCED_WRITES).contains(&self.fenced_writes) {
            return Err(format!("--fenced-writes {} is not in 1..={MAX_FENCED_WRITES}", self.fenced_writes));
        }
        if self.max_time_ms > MAX_TIME_MS {
            return Err(format!("--max-time-ms {} is beyond {MAX_TIME_MS}", self.max_time_ms));
        }
        let lock_mode = self.kinds.iter().filter(|k| k.is_lock_mode()).count();
        if lock_mode != 0 && lock_mode != self.kinds.len() {
            return Err("--kinds cannot mix run-once with lock or leader clients on one mutex (a released lock \
                        is DONE, which a run-once client reads as done by another); check them separately"
                .into());
        }
        Ok(())
    }

    /// Client `slot`'s kind.
    pub fn kind(&self, slot: usize) -> ClientKind {
        self.kinds[slot % self.kinds.len()]
    }

    /// Whether some client is of `kind`.
    pub fn has(&self, kind: ClientKind) -> bool {
        (0..usize::from(self.clients)).any(|slot| self.kind(slot) == kind)
    }

    /// Client `slot`'s wall clock offset from the server (see [`Self::skew_ms`]).
    pub fn wall_offset_us(&self, slot: usize) -> i64 {
        (slot as i64 - 1) * i64::try_from(self.skew_ms).unwrap_or(0) * 1_000
    }

    /// The server clock error the clients' configuration declares: all of [`SERVER_CLOCK_ERROR_MS`] when it is
    /// injected, unless the rule is relaxed.
    pub const fn declared_uncertainty_ms(&self) -> u64 {
        if self.faults.clock_error && !self.assume_exact_server_clock { SERVER_CLOCK_ERROR_MS } else { 0 }
    }

    /// The protocol configuration the checked clients use: a 3 ms lease (2 ms locally, so 1 ms of drift is
    /// absorbed), renewed every 1 ms, at most 2 retries. A declared server clock error of 1 ms adds 2 ms to the
    /// lease and to the margin, as the configuration rule demands.
    pub fn protocol_config(&self) -> Config {
        let uncertainty_ms = self.declared_uncertainty_ms();
        let ttl_ms = 3 + 2 * uncertainty_ms;
        ConfigParams {
            ttl_ms,
            staleness_ms: self.staleness_ms,
            wait_ms: 1,
            max_wait_ms: 3,
            // Waiters poll every millisecond before the expiry they read, so polls are explored too.
            poll_ms: 1,
            max_retries: 2,
            renew_interval_ms: 1,
            safety_margin_ms: 1 + 2 * uncertainty_ms,
            // Drift steps lag a client's clock 1 ms in all, over a lease.
            clock_drift_ppm: 1_000_000 / ttl_ms,
            server_uncertainty_ms: uncertainty_ms,
            jitter_ms: 0,
            // Without the unavailable fault, no budget: nothing is timed (unknown outcomes retry by their reads).
            unavailable_ms: if self.faults.unavailable { UNAVAILABLE_MS } else { 0 },
        }
        .validate()
        .expect("the checked configuration is valid (--staleness-ms must exceed the checked lease: 3 ms, 5 with clock-error)")
        .with_protocol(self.protocol)
    }
}
