//! Protocol configuration. [`ConfigParams`] is what users write; [`Config`] is what the machine accepts, and it
//! can only be made by [`ConfigParams::validate`], so an invalid combination is unrepresentable past that point.

use crate::ServerTime;
use serde::{Deserialize, Serialize};

/// The longest lease, 24 hours: longer ones are almost certainly a unit mistake.
pub const TTL_MS_LIMIT: u64 = 24 * 60 * 60 * 1_000;
/// The longest staleness, 30 days.
pub const STALENESS_MS_LIMIT: u64 = 30 * 24 * 60 * 60 * 1_000;
/// The most retries one run may make.
pub const MAX_RETRIES_LIMIT: u32 = 100_000;
/// The largest clock drift a configuration may declare: 50%, a clock running at half speed. Working oscillators
/// stay within 100 ppm; the model checker's millisecond-scale leases need a coarse rate.
pub const CLOCK_DRIFT_PPM_LIMIT: u64 = 500_000;
/// One million: parts per million in one.
const PPM: u64 = 1_000_000;

/// Which protocol the machine and the transaction logic follow. Users run only [`Protocol::Fenced`]: the other
/// variants (the seed's protocol and re-inserted bugs) exist only with the `variants` feature, for the model
/// checker, the simulator and the conformance tests, and are set with `Config::with_protocol`, never in a
/// [`ConfigParams`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// spanner-mutex: expiry in server time, fenced writes, renewal, local deadline with lock-lost signal.
    #[default]
    Fenced,
    /// The seed (py-spanner-mutex): staleness judged on the client's wall clock, no fence check, no renewal,
    /// no deadline. Kept to show, in the model checker and the simulator, the double execution it allows.
    #[cfg(any(test, feature = "variants"))]
    Naive,
    /// Fenced, but with the fence check of fenced writes removed: a re-inserted bug that the checker, the
    /// simulator and the conformance tests must catch.
    #[cfg(any(test, feature = "variants"))]
    NoFenceCheck,
    /// Fenced, but a cancel while the need check runs under the lease only marks the cancel (defect 1 of the
    /// first driver, re-inserted): the lease is left to expire. The driver conformance test must catch it.
    #[cfg(any(test, feature = "variants"))]
    LeakOnCancelInNeedCheck,
    /// Fenced, but fenced writes keep no record of having landed (the first client's behaviour, re-inserted): a
    /// retry of a write whose answer was lost applies it again. The checker and the simulator must catch it.
    #[cfg(any(test, feature = "variants"))]
    NoFencedWriteRecord,
    /// Fenced, but the row records every fenced write that lands as write 1: a retried second write whose answer
    /// was lost applies again. A plausible bug that a section making one write never shows; the checker must
    /// catch it in a world whose sections write twice.
    #[cfg(any(test, feature = "variants"))]
    RecordsFirstWriteOnly,
    /// Fenced, but a renewal is accepted on any STARTED row, whoever holds it (a plausible bug the checker
    /// missed until renewals could execute late). The checker must catch it.
    #[cfg(any(test, feature = "variants"))]
    RenewsAnyStarted,
    /// Fenced, but a re-acquisition of a row that counts earlier attempts keeps the row's fence: a plausible bug
    /// that reads the attempt count, which the checker's search key forgets. The reduced search cannot see it;
    /// `check`'s cross-check of the reduction against every state must fail.
    #[cfg(any(test, feature = "variants"))]
    KeepsFenceOnReacquire,
    /// Fenced, but an unknown outcome does not start the unavailability clock (only a failed call does): a run
    /// whose calls go unanswered retries past its budget. The checker and the driver conformance must catch it.
    #[cfg(any(test, feature = "variants"))]
    UnknownStartsNoClock,
    /// Fenced, but a fenced write that gets no answer retries on a budget of its own, counted from its own first
    /// unanswered attempt, not on its run's clock (the first client's behaviour, re-inserted): a section whose
    /// renewal already went unanswered retries its write past the run's budget. The checker must catch it.
    #[cfg(any(test, feature = "variants"))]
    FencedRetryOwnBudget,
    /// Fenced, but an operator's forced release only records itself on the row and leaves the lease STARTED until
    /// its expiry: the released holder's fenced writes still land. The checker must catch it.
    #[cfg(any(test, feature = "variants"))]
    ForceReleaseRecordsOnly,
}

impl Protocol {
    /// The variant's name as command lines write it.
    pub const fn word(self) -> &'static str {
        match self {
            Self::Fenced => "fenced",
            #[cfg(any(test, feature = "variants"))]
            Self::Naive => "naive",
            #[cfg(any(test, feature = "variants"))]
            Self::NoFenceCheck => "no-fence-check",
            #[cfg(any(test, feature = "variants"))]
            Self::LeakOnCancelInNeedCheck => "leak-on-cancel-in-need-check",
            #[cfg(any(test, feature = "variants"))]
            Self::NoFencedWriteRecord => "no-fenced-write-record",
            #[cfg(any(test, feature = "variants"))]
            Self::RecordsFirstWriteOnly => "records-first-write-only",
            #[cfg(any(test, feature = "variants"))]
            Self::ForceReleaseRecordsOnly => "force-release-records-only",
            #[cfg(any(test, feature = "variants"))]
            Self::RenewsAnyStarted => "renews-any-started",
            #[cfg(any(test, feature = "variants"))]
            Self::KeepsFenceOnReacquire => "keeps-fence-on-reacquire",
            #[cfg(any(test, feature = "variants"))]
            Self::UnknownStartsNoClock => "unknown-starts-no-clock",
            #[cfg(any(test, feature = "variants"))]
            Self::FencedRetryOwnBudget => "fenced-retry-own-budget",
        }
    }

    /// Whether lease expiry is judged on Spanner's clock (the fix) or the client's wall clock (the seed).
    pub const fn uses_server_time(self) -> bool {
        match self {
            #[cfg(any(test, feature = "variants"))]
            Self::Naive => false,
            _ => true,
        }
    }

    /// The time a transaction's decisions are made on: Spanner's `now` read in the transaction, or, in the seed's
    /// protocol, the client's wall clock, which stands `wall_offset_us` from Spanner's.
    pub const fn decision_time(self, server_now: ServerTime, wall_offset_us: i64) -> ServerTime {
        if self.uses_server_time() {
            server_now
        } else {
            ServerTime::from_unix_micros(server_now.unix_micros().saturating_add(wall_offset_us))
        }
    }

    /// Whether fenced writes verify that the row still carries the writer's fence.
    pub const fn checks_fence(self) -> bool {
        match self {
            #[cfg(any(test, feature = "variants"))]
            Self::Naive | Self::NoFenceCheck => false,
            _ => true,
        }
    }

    /// Whether a fenced write records in the row that it landed, so its retry is recognised.
    pub const fn records_fenced_writes(self) -> bool {
        match self {
            // The seed had neither fences nor a record.
            #[cfg(any(test, feature = "variants"))]
            Self::Naive | Self::NoFencedWriteRecord => false,
            _ => true,
        }
    }

    /// Whether the row's record of a fenced write keeps its number (only the re-inserted bug records 1 for all).
    pub const fn records_write_numbers(self) -> bool {
        match self {
            #[cfg(any(test, feature = "variants"))]
            Self::RecordsFirstWriteOnly => false,
            _ => true,
        }
    }

    /// Whether an operator's forced release ends the lease (not in the re-inserted bug).
    pub const fn force_release_ends_lease(self) -> bool {
        match self {
            #[cfg(any(test, feature = "variants"))]
            Self::ForceReleaseRecordsOnly => false,
            _ => true,
        }
    }

    /// Whether a renewal is accepted on a STARTED row that another holds (only in the re-inserted bug).
    pub const fn renews_any_started(self) -> bool {
        match self {
            #[cfg(any(test, feature = "variants"))]
            Self::RenewsAnyStarted => true,
            _ => false,
        }
    }

    /// Whether a re-acquisition keeps the fence when the row counts earlier attempts (only in the re-inserted bug).
    pub const fn keeps_fence_on_reacquire(self) -> bool {
        match self {
            #[cfg(any(test, feature = "variants"))]
            Self::KeepsFenceOnReacquire => true,
            _ => false,
        }
    }

    /// Whether an unknown outcome starts the unavailability clock, as a failed call does (not in the re-inserted
    /// bug).
    pub const fn unknown_starts_clock(self) -> bool {
        match self {
            #[cfg(any(test, feature = "variants"))]
            Self::UnknownStartsNoClock => false,
            _ => true,
        }
    }

    /// Whether a fenced write's retries share its run's unavailability clock (not in the re-inserted bug, where
    /// each write keeps a budget of its own).
    pub const fn fenced_retry_shares_clock(self) -> bool {
        match self {
            #[cfg(any(test, feature = "variants"))]
            Self::FencedRetryOwnBudget => false,
            _ => true,
        }
    }

    /// Whether a holder renews its lease and honours its local deadline.
    pub const fn keeps_deadline(self) -> bool {
        self.uses_server_time()
    }
}

/// A configuration as written by a user, not yet validated. Durations are in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigParams {
    /// How long an acquisition or renewal holds the lease, measured on Spanner's clock.
    pub ttl_ms: u64,
    /// How long a DONE row counts as fresh: after that a new need may run the section again.
    pub staleness_ms: u64,
    /// Base wait between attempts after an abort or a failed section.
    pub wait_ms: u64,
    /// Upper bound of any single wait (backoff cap, and the longest wait counted as one retry while a holder
    /// keeps renewing).
    pub max_wait_ms: u64,
    /// How often a waiter reads a busy row to notice a release or DONE before the expiry it last read (plus
    /// jitter); these polls are not retries. At most `1000 / poll_ms` reads per second per waiter.
    pub poll_ms: u64,
    /// How many times one run waits and tries again before it gives up.
    pub max_retries: u32,
    /// How often a holder renews, counted from its previous acquisition or renewal.
    pub renew_interval_ms: u64,
    /// Subtracted from the TTL for the holder's local deadline. Must cover the holder's clock drift over a lease
    /// and twice Spanner's clock uncertainty: at least `ttl_ms * clock_drift_ppm / 1e6 + 2 * server_uncertainty_ms`.
    pub safety_margin_ms: u64,
    /// The most a client's monotonic clock may run slow against real time, in parts per million. Quartz clocks
    /// are specified within 100 ppm and NTP slews at most 500 ppm, so the default of 1,000 ppm (0.1%) leaves room.
    pub clock_drift_ppm: u64,
    /// How far a Spanner server's `CURRENT_TIMESTAMP()` may be from real time. TrueTime's uncertainty is a sawtooth
    /// between about 1 and 7 ms (Corbett et al., "Spanner", OSDI 2012, section 5.3); the default of 10 ms covers it.
    /// Two servers may err in opposite directions, so the margin pays for it twice.
    pub server_uncertainty_ms: u64,
    /// Upper bound of the random delay added to each wait, so waiters do not wake in lockstep.
    pub jitter_ms: u64,
    /// How long a client keeps retrying while Spanner is unavailable (failed or unknown outcomes, nothing
    /// answered in between), counted from the first such failure, before it reports it unavailable. 0: at once.
    pub unavailable_ms: u64,
}

impl Default for ConfigParams {
    fn default() -> Self {
        Self {
            ttl_ms: 10_000,
            staleness_ms: 3_600_000,
            wait_ms: 500,
            max_wait_ms: 10_000,
            poll_ms: 400,
            max_retries: 100,
            renew_interval_ms: 3_000,
            safety_margin_ms: 1_000,
            clock_drift_ppm: 1_000,
            server_uncertainty_ms: 10,
            jitter_ms: 250,
            unavailable_ms: 15_000,
        }
    }
}

/// Why a [`ConfigParams`] is invalid: names the field and the rule it breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A field that must be positive is zero.
    #[error("{field} must be greater than 0")]
    Zero {
        /// The offending field.
        field: &'static str,
    },
    /// A field exceeds its hard limit.
    #[error("{field} = {value} exceeds the limit of {limit}")]
    OverLimit {
        /// The offending field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// A field must be greater than a bound derived from other fields.
    #[error("{field} = {value} must be greater than {bound_name} = {bound}")]
    NotGreater {
        /// The offending field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The expression it must exceed.
        bound_name: &'static str,
        /// That expression's value.
        bound: u64,
    },
    /// A field must be at least a bound derived from other fields.
    #[error("{field} = {value} must be at least {bound_name} = {bound}")]
    NotAtLeast {
        /// The offending field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The expression it must reach.
        bound_name: &'static str,
        /// That expression's value.
        bound: u64,
    },
    /// A field must be less than a bound derived from other fields.
    #[error("{field} = {value} must be less than {bound_name} = {bound}")]
    NotLess {
        /// The offending field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The expression it must stay below.
        bound_name: &'static str,
        /// That expression's value.
        bound: u64,
    },
}

fn positive(field: &'static str, value: u64) -> Result<(), ConfigError> {
    if value == 0 { Err(ConfigError::Zero { field }) } else { Ok(()) }
}

fn at_most(field: &'static str, value: u64, limit: u64) -> Result<(), ConfigError> {
    if value > limit { Err(ConfigError::OverLimit { field, value, limit }) } else { Ok(()) }
}

fn greater(field: &'static str, value: u64, bound_name: &'static str, bound: u64) -> Result<(), ConfigError> {
    if value > bound { Ok(()) } else { Err(ConfigError::NotGreater { field, value, bound_name, bound }) }
}

fn at_least(field: &'static str, value: u64, bound_name: &'static str, bound: u64) -> Result<(), ConfigError> {
    if value >= bound { Ok(()) } else { Err(ConfigError::NotAtLeast { field, value, bound_name, bound }) }
}

fn less(field: &'static str, value: u64, bound_name: &'static str, bound: u64) -> Result<(), ConfigError> {
    if value < bound { Ok(()) } else { Err(ConfigError::NotLess { field, value, bound_name, bound }) }
}

impl ConfigParams {
    /// The least safety margin these parameters allow: the drift over one lease (rounded up) plus twice the
    /// server clock uncertainty.
    pub const fn required_margin_ms(&self) -> u64 {
        let drift_ms = self.ttl_ms.saturating_mul(self.clock_drift_ppm).div_ceil(PPM);
        drift_ms.saturating_add(self.server_uncertainty_ms.saturating_mul(2))
    }

    /// These parameters with the safety margin (unless `margin_given`) and the renewal interval (unless
    /// `renew_given`) derived from `ttl_ms`, so that a configuration naming only its TTL is valid: the margin is a
    /// tenth of the TTL (at most the default 1 s, at least what the clocks' errors require), and renewals come
    /// three times per window the margin leaves (at most every 3 s, the default). The default TTL (10 s) gets the
    /// defaults.
    #[must_use]
    pub fn fitted_to_ttl(mut self, margin_given: bool, renew_given: bool) -> Self {
        let defaults = Self::default();
        if !margin_given {
            self.safety_margin_ms = (self.ttl_ms / 10).min(defaults.safety_margin_ms).max(self.required_margin_ms());
        }
        if !renew_given {
            let window_ms = self.ttl_ms.saturating_sub(self.safety_margin_ms);
            self.renew_interval_ms = (window_ms / 3).clamp(1, defaults.renew_interval_ms);
        }
        self
    }

    /// Checks every rule and returns the validated [`Config`], or the first rule broken.
    pub fn validate(self) -> Result<Config, ConfigError> {
        positive("ttl_ms", self.ttl_ms)?;
        at_most("ttl_ms", self.ttl_ms, TTL_MS_LIMIT)?;
        less("safety_margin_ms", self.safety_margin_ms, "ttl_ms", self.ttl_ms)?;
        at_most("clock_drift_ppm", self.clock_drift_ppm, CLOCK_DRIFT_PPM_LIMIT)?;
        at_most("server_uncertainty_ms", self.server_uncertainty_ms, TTL_MS_LIMIT)?;
        // A holder relies on its lease until `ttl - margin` on its own clock after sending the acquisition. The
        // row expires `ttl` after the time its server read, which may be `uncertainty` early, and a rival's server
        // may read `uncertainty` late: the margin must cover both errors and the holder's drift over a lease.
        at_least(
            "safety_margin_ms",
            self.safety_margin_ms,
            "ttl_ms * clock_drift_ppm / 1e6 + 2 * server_uncertainty_ms",
            self.required_margin_ms(),
        )?;
        positive("renew_interval_ms", self.renew_interval_ms)?;
        // A renewal must be sent while the previous grant still proves the lease locally.
        less(
            "renew_interval_ms",
            self.renew_interval_ms,
            "ttl_ms - safety_margin_ms",
            self.ttl_ms - self.safety_margin_ms,
        )?;
        positive("wait_ms", self.wait_ms)?;
        at_least("max_wait_ms", self.max_wait_ms, "wait_ms", self.wait_ms)?;
        at_most("max_wait_ms", self.max_wait_ms, TTL_MS_LIMIT)?;
        at_most("jitter_ms", self.jitter_ms, self.max_wait_ms)?;
        positive("poll_ms", self.poll_ms)?;
        at_most("poll_ms", self.poll_ms, TTL_MS_LIMIT)?;
        at_most("max_retries", u64::from(self.max_retries), u64::from(MAX_RETRIES_LIMIT))?;
        at_most("staleness_ms", self.staleness_ms, STALENESS_MS_LIMIT)?;
        at_most("unavailable_ms", self.unavailable_ms, TTL_MS_LIMIT)?;
        // The seed's rules: a DONE row must outlive any lease and any client's whole retry loop.
        greater("staleness_ms", self.staleness_ms, "ttl_ms", self.ttl_ms)?;
        let retry_span_ms = u64::from(self.max_retries).saturating_mul(self.wait_ms);
        greater("staleness_ms", self.staleness_ms, "max_retries * wait_ms", retry_span_ms)?;
        Ok(Config { params: self, protocol: Protocol::Fenced })
    }
}

/// A validated configuration; see [`ConfigParams`] for the meaning of each value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    params: ConfigParams,
    protocol: Protocol,
}

impl Default for Config {
    fn default() -> Self {
        ConfigParams::default().validate().expect("the default configuration is valid")
    }
}

impl Config {
    /// Lease length on Spanner's clock.
    pub const fn ttl_ms(&self) -> u64 {
        self.params.ttl_ms
    }
    /// How long a DONE row stays fresh.
    pub const fn staleness_ms(&self) -> u64 {
        self.params.staleness_ms
    }
    /// Base wait between attempts.
    pub const fn wait_ms(&self) -> u64 {
        self.params.wait_ms
    }
    /// Cap of any single wait.
    pub const fn max_wait_ms(&self) -> u64 {
        self.params.max_wait_ms
    }
    /// Retries before giving up.
    pub const fn max_retries(&self) -> u32 {
        self.params.max_retries
    }
    /// Renewal period.
    pub const fn renew_interval_ms(&self) -> u64 {
        self.params.renew_interval_ms
    }
    /// Margin subtracted from the TTL for the local deadline.
    pub const fn safety_margin_ms(&self) -> u64 {
        self.params.safety_margin_ms
    }
    /// The most a client's clock may run slow, in parts per million.
    pub const fn clock_drift_ppm(&self) -> u64 {
        self.params.clock_drift_ppm
    }
    /// How far a Spanner server's clock may be from real time.
    pub const fn server_uncertainty_ms(&self) -> u64 {
        self.params.server_uncertainty_ms
    }
    /// Upper bound of the random delay added to each wait.
    pub const fn jitter_ms(&self) -> u64 {
        self.params.jitter_ms
    }
    /// How often a waiter polls a busy row.
    pub const fn poll_ms(&self) -> u64 {
        self.params.poll_ms
    }

    /// How long to retry an unavailable Spanner before reporting it.
    pub const fn unavailable_ms(&self) -> u64 {
        self.params.unavailable_ms
    }

    /// The protocol variant: [`Protocol::Fenced`] unless a checker, simulator or test chose another.
    pub const fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The same configuration under another protocol variant: the seed's protocol or a re-inserted bug.
    #[cfg(any(test, feature = "variants"))]
    #[must_use]
    pub const fn with_protocol(self, protocol: Protocol) -> Self {
        Self { protocol, ..self }
    }
    /// How long after sending an acquisition or renewal its holder may still rely on it:
    /// the server's expiry is at least `ttl_ms` after the send (read on a server clock that may err), the margin
    /// absorbs drift and that error (see [`ConfigParams::required_margin_ms`]).
    pub const fn local_lease_ms(&self) -> u64 {
        self.params.ttl_ms - self.params.safety_margin_ms
    }
    /// The parameters this configuration was validated from.
    pub const fn params(&self) -> &ConfigParams {
        &self.params
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(edit: impl FnOnce(&mut ConfigParams)) -> Result<Config, ConfigError> {
        let mut p = ConfigParams::default();
        edit(&mut p);
        p.validate()
    }

    #[test]
    fn default_is_valid() {
        assert!(ConfigParams::default().validate().is_ok());
    }

    type Edit = Box<dyn FnOnce(&mut ConfigParams)>;

    #[test]
    fn each_rule_names_its_field() {
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|p| p.ttl_ms = 0), "ttl_ms must be greater than 0"),
            (Box::new(|p| p.ttl_ms = TTL_MS_LIMIT + 1), "ttl_ms = 86400001 exceeds the limit of 86400000"),
            (Box::new(|p| p.safety_margin_ms = 10_000), "safety_margin_ms = 10000 must be less than ttl_ms = 10000"),
            (
                Box::new(|p| p.safety_margin_ms = 29),
                "safety_margin_ms = 29 must be at least ttl_ms * clock_drift_ppm / 1e6 + 2 * server_uncertainty_ms = 30",
            ),
            (
                Box::new(|p| {
                    p.safety_margin_ms = 0;
                    p.clock_drift_ppm = 0;
                    p.server_uncertainty_ms = 4;
                }),
                "safety_margin_ms = 0 must be at least ttl_ms * clock_drift_ppm / 1e6 + 2 * server_uncertainty_ms = 8",
            ),
            (Box::new(|p| p.clock_drift_ppm = 600_000), "clock_drift_ppm = 600000 exceeds the limit of 500000"),
            (Box::new(|p| p.renew_interval_ms = 0), "renew_interval_ms must be greater than 0"),
            (
                Box::new(|p| p.renew_interval_ms = 9_000),
                "renew_interval_ms = 9000 must be less than ttl_ms - safety_margin_ms = 9000",
            ),
            (Box::new(|p| p.wait_ms = 0), "wait_ms must be greater than 0"),
            (Box::new(|p| p.max_wait_ms = 100), "max_wait_ms = 100 must be at least wait_ms = 500"),
            (Box::new(|p| p.jitter_ms = 20_000), "jitter_ms = 20000 exceeds the limit of 10000"),
            (Box::new(|p| p.max_retries = 200_000), "max_retries = 200000 exceeds the limit of 100000"),
            (Box::new(|p| p.staleness_ms = 10_000), "staleness_ms = 10000 must be greater than ttl_ms = 10000"),
            (
                Box::new(|p| {
                    p.max_retries = 10_000;
                    p.staleness_ms = 5_000_000;
                }),
                "staleness_ms = 5000000 must be greater than max_retries * wait_ms = 5000000",
            ),
        ];
        for (edit, message) in cases {
            let err = with(edit).expect_err(message);
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = serde_json::from_str::<ConfigParams>(r#"{"ttl_ms": 5000, "tll_ms": 4}"#).expect_err("typo");
        assert!(err.to_string().contains("unknown field `tll_ms`"), "{err}");
    }

    #[test]
    fn local_lease_is_ttl_minus_margin() {
        assert_eq!(Config::default().local_lease_ms(), 9_000);
    }
}
