//! Client configuration: where the lease table is, which mutex, the protocol's timings, and the time bounds on
//! every call. Read from TOML or JSON (ours, or py-spanner-mutex's JSON); unknown keys are errors
//! naming the key; every value is validated with an error naming the field and the rule.

use serde::{Deserialize, Serialize};
use spanner_mutex_model::{Config, ConfigError, ConfigParams, MutexName, MutexNameError};
use std::time::Duration;

/// Bounds on each call to Spanner, so a down Spanner gives an error, never a hang. There are no retries beneath
/// these: retrying an unavailable Spanner is the protocol machine's (`lease.unavailable_ms`), so every public call
/// returns within `lease.unavailable_ms` plus one call's bound after the first failed call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Connecting (building the database client).
    pub connect_ms: u64,
    /// One RPC attempt, and one single-use read as a whole.
    pub rpc_ms: u64,
    /// One read-write transaction as a whole (its reads, writes, commit and Spanner's retries of aborts); past
    /// it the outcome is unknown. Must end before the local lease can: see [`MutexConfig::validate`].
    pub transaction_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { connect_ms: 10_000, rpc_ms: 1_000, transaction_ms: 2_000 }
    }
}

impl Timeouts {
    /// The bound for one RPC attempt and for one read.
    pub const fn rpc(&self) -> Duration {
        Duration::from_millis(self.rpc_ms)
    }
    /// The bound for one transaction.
    pub const fn transaction(&self) -> Duration {
        Duration::from_millis(self.transaction_ms)
    }
    /// The bound for connecting.
    pub const fn connect(&self) -> Duration {
        Duration::from_millis(self.connect_ms)
    }

    /// The default bounds, or, where they do not fit `lease`, shorter ones: a transaction (and so a renewal)
    /// answers within two thirds of the renewal window, and one RPC attempt within half a transaction.
    pub fn fitting(lease: &Config) -> Self {
        let default = Self::default();
        if default.validate(lease).is_ok() {
            return default;
        }
        let transaction_ms = (renewal_window_ms(lease) * 2 / 3).clamp(1, default.transaction_ms);
        let rpc_ms = (transaction_ms / 2).clamp(1, default.rpc_ms);
        Self { transaction_ms, rpc_ms, ..default }
    }

    /// Checks each bound and that one transaction cannot outlast the lease: a renewal sent when it is due must
    /// answer before the local deadline, or the holder loses a lease Spanner still grants it.
    pub fn validate(&self, lease: &Config) -> Result<(), ConfigFileError> {
        for (field, value) in
            [("connect_ms", self.connect_ms), ("rpc_ms", self.rpc_ms), ("transaction_ms", self.transaction_ms)]
        {
            if value == 0 || value > TIMEOUT_MS_LIMIT {
                return Err(ConfigFileError::Timeout { field, value, limit: TIMEOUT_MS_LIMIT });
            }
        }
        if self.rpc_ms > self.transaction_ms {
            return Err(ConfigFileError::TimeoutTooLong {
                may_equal: true,
                field: "rpc_ms",
                value: self.rpc_ms,
                bound_name: "timeouts.transaction_ms",
                bound: self.transaction_ms,
            });
        }
        let renewal_window_ms = renewal_window_ms(lease);
        if self.transaction_ms >= renewal_window_ms {
            return Err(ConfigFileError::TimeoutTooLong {
                may_equal: false,
                field: "transaction_ms",
                value: self.transaction_ms,
                bound_name: "lease.ttl_ms - lease.safety_margin_ms - lease.renew_interval_ms",
                bound: renewal_window_ms,
            });
        }
        Ok(())
    }
}

/// How long a renewal sent when it is due has before the local deadline.
const fn renewal_window_ms(lease: &Config) -> u64 {
    lease.local_lease_ms() - lease.renew_interval_ms()
}

/// The largest value of any timeout.
const TIMEOUT_MS_LIMIT: u64 = 600_000;

/// Everything a client needs, in our file format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MutexConfig {
    /// The mutex (the row key).
    pub name: String,
    /// This client's display name, written to the row.
    #[serde(default = "default_display_name")]
    pub display_name: String,
    /// Google Cloud project id.
    pub project_id: String,
    /// Spanner instance id.
    pub instance_id: String,
    /// Spanner database id.
    pub database_id: String,
    /// Lease table name.
    #[serde(default = "default_table")]
    pub table_id: String,
    /// Protocol timings.
    #[serde(default)]
    pub lease: ConfigParams,
    /// Time bounds on Spanner calls.
    #[serde(default)]
    pub timeouts: Timeouts,
}

/// The `host:port` of an emulator address, whichever form it was written in (`host:port`, `http://host:port`,
/// with or without a trailing slash): the one form every address of this crate and its CLI is reduced to.
pub fn emulator_host_port(address: &str) -> &str {
    let address = address.trim().trim_end_matches('/');
    address.rsplit_once("://").map_or(address, |(_, host_port)| host_port)
}

pub(crate) fn default_display_name() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "spanner-mutex".into())
}

fn default_table() -> String {
    "SpannerMutex".into()
}

/// The seed's (py-spanner-mutex) JSON config, accepted as is.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedConfig {
    mutex_uuid: String,
    instance_id: String,
    database_id: String,
    table_id: String,
    project_id: String,
    #[serde(default)]
    mutex_display_name: Option<String>,
    mutex_ttl_in_secs: u64,
    mutex_staleness_in_secs: u64,
    mutex_wait_time_in_secs: u64,
    mutex_max_retries: u32,
}

/// Why a config file or value is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// Not valid TOML/JSON, a missing key, or an unknown key (the message names it).
    #[error("{0}")]
    Parse(String),
    /// A protocol value breaks a rule.
    #[error("invalid lease config: {0}")]
    Lease(ConfigError),
    /// The mutex name is invalid.
    #[error("invalid mutex name: {0}")]
    Name(MutexNameError),
    /// A Spanner identifier is invalid.
    #[error("invalid {field}: {value:?} {rule}")]
    Identifier {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// A timeout is longer than what it must fit in.
    #[error(
        "timeouts.{field} = {value} must be {} {bound_name} = {bound}, so one Spanner call cannot outlast it",
        if *may_equal { "at most" } else { "less than" }
    )]
    TimeoutTooLong {
        /// Whether the timeout may equal its bound.
        may_equal: bool,
        /// Which timeout.
        field: &'static str,
        /// Its value.
        value: u64,
        /// What it must fit in.
        bound_name: &'static str,
        /// That bound's value.
        bound: u64,
    },
    /// A key sits at the top of the file that belongs in one of its sections.
    #[error("{key} belongs under [{section}]: move it there")]
    Misplaced {
        /// The key.
        key: String,
        /// Its section.
        section: &'static str,
    },
    /// The app's config file has no table by the name given.
    #[error("the config file has no [{0}] table with the mutex settings")]
    MissingTable(String),
    /// A timeout is zero or too large.
    #[error("timeouts.{field} = {value} must be between 1 and {limit}")]
    Timeout {
        /// Which timeout.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// A config file could not be read.
    #[error("cannot read the config file {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why, in words.
        reason: String,
    },
    /// What is wrong in a config file, naming the file.
    #[error("in {path}: {error}")]
    InFile {
        /// The file.
        path: String,
        /// What is wrong in it.
        error: Box<Self>,
    },
    /// A rule broken where a value the file does not set takes part: says which, where its value came from, and
    /// where to set it.
    #[error("{rule}; the file does not set {key}, so it is {}{origin}: set it under [{section}]",
        if rule.names_value_of(key) { String::new() } else { format!("{value}, ") })]
    Unset {
        /// The rule broken.
        rule: Box<Self>,
        /// The section the key belongs in.
        section: &'static str,
        /// The key the file does not set.
        key: String,
        /// The value it took.
        value: u64,
        /// Where that value came from.
        origin: UnsetOrigin,
    },
}

/// Where the value of a key a config file does not set came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnsetOrigin {
    /// The built-in default.
    #[error("the default")]
    Default,
    /// Derived from other settings, so that it fits the TTL (which ones, in words).
    #[error("derived from {0}")]
    Derived(&'static str),
}

/// The lease and timeout keys a config file sets, as `section.key`; the others are defaults, or follow its TTL.
struct GivenKeys(std::collections::BTreeSet<String>);

impl GivenKeys {
    /// The keys `section_keys` lists for the `lease` and `timeouts` sections.
    fn of(section_keys: impl Fn(&str) -> Option<Vec<String>>) -> Self {
        let mut keys = std::collections::BTreeSet::new();
        for section in ["lease", "timeouts"] {
            keys.extend(section_keys(section).unwrap_or_default().into_iter().map(|key| format!("{section}.{key}")));
        }
        Self(keys)
    }

    fn has(&self, key: &str) -> bool {
        self.0.contains(key)
    }

    /// Whether the timeouts follow the TTL: only while the file sets neither the transaction's nor the RPC's.
    fn timeouts_follow_ttl(&self) -> bool {
        !self.has("timeouts.transaction_ms") && !self.has("timeouts.rpc_ms")
    }

    /// `rule`, saying which value it names the file does not set (the first, if several).
    fn explain(&self, rule: ConfigFileError, config: &MutexConfig) -> ConfigFileError {
        let unset = rule.keys().into_iter().find_map(|(section, key)| {
            let qualified = format!("{section}.{key}");
            let value = config.value_of(section, &key)?;
            (!self.has(&qualified)).then(|| {
                let origin = match qualified.as_str() {
                    "lease.safety_margin_ms" => {
                        UnsetOrigin::Derived("ttl_ms, clock_drift_ppm and server_uncertainty_ms")
                    }
                    "lease.renew_interval_ms" => UnsetOrigin::Derived("ttl_ms and safety_margin_ms"),
                    "timeouts.transaction_ms" | "timeouts.rpc_ms" if self.timeouts_follow_ttl() => {
                        UnsetOrigin::Derived("the lease's renewal window")
                    }
                    _ => UnsetOrigin::Default,
                };
                (section, key, value, origin)
            })
        });
        match unset {
            Some((section, key, value, origin)) => {
                ConfigFileError::Unset { rule: Box::new(rule), section, key, value, origin }
            }
            None => rule,
        }
    }
}

impl ConfigFileError {
    /// Whether the rule's own sentence gives `key`'s value (it names it as its field: `key = value`).
    fn names_value_of(&self, key: &str) -> bool {
        self.keys().first().is_some_and(|(_, field)| field == key)
    }

    /// The lease and timeout keys a broken rule names, as (section, key), the offending field first: the words of
    /// its field and bound that are keys (a bound may be an expression over several).
    fn keys(&self) -> Vec<(&'static str, String)> {
        let (section, field, bound_name) = match self {
            Self::Lease(
                ConfigError::NotGreater { field, bound_name, .. }
                | ConfigError::NotAtLeast { field, bound_name, .. }
                | ConfigError::NotLess { field, bound_name, .. },
            ) => ("lease", *field, *bound_name),
            Self::Lease(ConfigError::Zero { field } | ConfigError::OverLimit { field, .. }) => ("lease", *field, ""),
            Self::TimeoutTooLong { field, bound_name, .. } => ("timeouts", *field, *bound_name),
            Self::Timeout { field, .. } => ("timeouts", *field, ""),
            _ => return Vec::new(),
        };
        let mut keys = vec![(section, field.to_owned())];
        for word in bound_name.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')) {
            match word.split_once('.') {
                Some(("lease", key)) => keys.push(("lease", key.to_owned())),
                Some(("timeouts", key)) => keys.push(("timeouts", key.to_owned())),
                Some(_) => {}
                None => keys.push((section, word.to_owned())),
            }
        }
        keys
    }
}

// By hand, not `#[from]`: the inner sentence is part of the message, so it is not also a source (a chain printed
// whole would say it twice).
impl From<ConfigError> for ConfigFileError {
    fn from(error: ConfigError) -> Self {
        Self::Lease(error)
    }
}

impl From<MutexNameError> for ConfigFileError {
    fn from(error: MutexNameError) -> Self {
        Self::Name(error)
    }
}

/// A TOML error on one line: where in `text` it is (line and column), or the key path it names, then what is
/// wrong; the parser's own form quotes the line and points at it on lines of its own.
fn toml_error(what: &str, text: Option<&str>, error: &toml::de::Error) -> ConfigFileError {
    let message = match (text, error.span()) {
        (Some(text), Some(span)) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |newline| newline + 1) + 1;
            format!("line {line}, column {column}: {}", error.message().trim())
        }
        // Without the text, the message and the key path it names (`in `lease``), each on a line of its own.
        _ => error.to_string().lines().map(str::trim).filter(|line| !line.is_empty()).collect::<Vec<_>>().join(" "),
    };
    ConfigFileError::Parse(format!("{what}: {message}"))
}

/// A key of the lease or the timeouts written at the top of `table`, where it means nothing, as an error that
/// names its section.
fn misplaced_key(table: &toml::Table) -> Result<(), ConfigFileError> {
    let lease = toml::Table::try_from(ConfigParams::default()).unwrap_or_default();
    let timeouts = toml::Table::try_from(Timeouts::default()).unwrap_or_default();
    for key in table.keys() {
        let section = if lease.contains_key(key) {
            "lease"
        } else if timeouts.contains_key(key) {
            "timeouts"
        } else {
            continue;
        };
        return Err(ConfigFileError::Misplaced { key: key.clone(), section });
    }
    Ok(())
}

/// Validates lease settings for a client: every rule of the model's config.
pub(crate) fn client_lease(lease: ConfigParams) -> Result<Config, ConfigFileError> {
    Ok(lease.validate()?)
}

/// Checks a Spanner table name: a letter, then letters, digits or underscores, at most 128 characters. Table
/// names cannot be query parameters, so this is what keeps SQL injection out.
pub fn validate_table_id(value: &str) -> Result<(), ConfigFileError> {
    let ok = value.len() <= 128
        && value.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then_some(()).ok_or_else(|| ConfigFileError::Identifier {
        field: "table_id",
        value: value.to_owned(),
        rule: "must be a letter followed by up to 127 letters, digits or underscores",
    })
}

fn validate_resource_id(field: &'static str, value: &str, max: usize) -> Result<(), ConfigFileError> {
    let ok = (2..=max).contains(&value.len())
        && value.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && !value.ends_with(['-', '_']);
    ok.then_some(()).ok_or_else(|| ConfigFileError::Identifier {
        field,
        value: value.to_owned(),
        rule: "must be 2 or more lowercase letters, digits, - or _, starting with a letter, not ending with - or _",
    })
}

impl MutexConfig {
    /// Parses TOML or JSON (ours or py-spanner-mutex's), then validates.
    pub fn parse(text: &str) -> Result<Self, ConfigFileError> {
        let trimmed = text.trim_start();
        if trimmed.starts_with('{') {
            let value: serde_json::Value =
                serde_json::from_str(text).map_err(|e| ConfigFileError::Parse(format!("JSON: {e}")))?;
            // The seed's keys all start with `mutex_` (and `mutex_uuid` is required there: serde names it if missing).
            let seed_format = value.as_object().is_some_and(|keys| keys.keys().any(|key| key.starts_with("mutex_")));
            if seed_format {
                let seed: SeedConfig =
                    serde_json::from_value(value).map_err(|e| ConfigFileError::Parse(format!("seed JSON: {e}")))?;
                let config = Self::from_seed(seed);
                config.validate()?;
                return Ok(config);
            }
            let given = GivenKeys::of(|section| {
                value.get(section).and_then(serde_json::Value::as_object).map(|s| s.keys().cloned().collect())
            });
            let config: Self =
                serde_json::from_value(value).map_err(|e| ConfigFileError::Parse(format!("JSON: {e}")))?;
            config.fitted(&given).validated(&given)
        } else {
            let document: toml::Table = toml::from_str(text).map_err(|e| toml_error("TOML", Some(text), &e))?;
            Self::from_toml(document, "TOML")
        }
    }

    /// Reads and parses a config file (TOML or JSON, ours or py-spanner-mutex's); errors name the file.
    pub fn read(path: &std::path::Path) -> Result<Self, ConfigFileError> {
        Self::read_with(path, Self::parse)
    }

    /// Reads the mutex settings from the table `key` of an app's own TOML config file ([`Self::parse_table`]);
    /// errors name the file.
    pub fn read_table(path: &std::path::Path, key: &str) -> Result<Self, ConfigFileError> {
        Self::read_with(path, |text| Self::parse_table(text, key))
    }

    fn read_with(
        path: &std::path::Path,
        parse: impl FnOnce(&str) -> Result<Self, ConfigFileError>,
    ) -> Result<Self, ConfigFileError> {
        let in_file = |error| ConfigFileError::InFile { path: path.display().to_string(), error: Box::new(error) };
        let text = std::fs::read_to_string(path).map_err(|error| {
            let reason = match error.kind() {
                std::io::ErrorKind::NotFound => "there is no such file".to_owned(),
                std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
                std::io::ErrorKind::InvalidData => "it is not UTF-8 text".to_owned(),
                std::io::ErrorKind::IsADirectory => "it is a directory".to_owned(),
                kind => kind.to_string(),
            };
            ConfigFileError::Read { path: path.display().to_string(), reason }
        })?;
        parse(&text).map_err(in_file)
    }

    /// The validated config a TOML table holds, its defaults fitted to its TTL ([`Self::fitted`]); `what` names
    /// the table in parse errors.
    fn from_toml(table: toml::Table, what: &str) -> Result<Self, ConfigFileError> {
        misplaced_key(&table)?;
        let given = GivenKeys::of(|section| {
            table.get(section).and_then(toml::Value::as_table).map(|s| s.keys().cloned().collect())
        });
        let config: Self = table.try_into().map_err(|e| toml_error(what, None, &e))?;
        config.fitted(&given).validated(&given)
    }

    /// This config with the lease's margin and renewal interval, and the timeouts, that its file did not set
    /// derived from its TTL, so that they fit any valid TTL ([`ConfigParams::fitted_to_ttl`],
    /// [`Timeouts::fitting`]).
    fn fitted(mut self, given: &GivenKeys) -> Self {
        self.lease =
            self.lease.fitted_to_ttl(given.has("lease.safety_margin_ms"), given.has("lease.renew_interval_ms"));
        if given.timeouts_follow_ttl()
            && let Ok(lease) = self.lease.clone().validate()
        {
            self.timeouts = Timeouts { connect_ms: self.timeouts.connect_ms, ..Timeouts::fitting(&lease) };
        }
        self
    }

    /// This config once valid; a rule broken by a value its file did not set says so ([`ConfigFileError::Unset`]).
    fn validated(self, given: &GivenKeys) -> Result<Self, ConfigFileError> {
        match self.validate() {
            Ok(()) => Ok(self),
            Err(rule) => Err(given.explain(rule, &self)),
        }
    }

    fn from_seed(seed: SeedConfig) -> Self {
        let secs = |s: u64| s.saturating_mul(1_000);
        let defaults = ConfigParams::default();
        let ttl_ms = secs(seed.mutex_ttl_in_secs);
        let lease = ConfigParams {
            ttl_ms,
            staleness_ms: secs(seed.mutex_staleness_in_secs),
            wait_ms: secs(seed.mutex_wait_time_in_secs),
            max_wait_ms: secs(seed.mutex_wait_time_in_secs).max(defaults.max_wait_ms),
            max_retries: seed.mutex_max_retries,
            ..defaults
        }
        // The seed had no renewal or margin (nor timeouts): derived from its TTL, as for a file naming only it.
        .fitted_to_ttl(false, false);
        let timeouts = lease.clone().validate().map(|lease| Timeouts::fitting(&lease)).unwrap_or_default();
        Self {
            name: seed.mutex_uuid,
            display_name: seed.mutex_display_name.unwrap_or_else(default_display_name),
            project_id: seed.project_id,
            instance_id: seed.instance_id,
            database_id: seed.database_id,
            table_id: seed.table_id,
            lease,
            timeouts,
        }
    }

    /// Checks every value; the error names the field and the rule.
    pub fn validate(&self) -> Result<(), ConfigFileError> {
        MutexName::new(self.name.clone())?;
        validate_resource_id("project_id", &self.project_id, 30)?;
        validate_resource_id("instance_id", &self.instance_id, 64)?;
        validate_resource_id("database_id", &self.database_id, 30)?;
        validate_table_id(&self.table_id)?;
        let lease = client_lease(self.lease.clone())?;
        self.timeouts.validate(&lease)?;
        Ok(())
    }

    /// Reads the mutex settings from the table `key` of an app's own TOML config file (`[spanner_mutex]`, say),
    /// so they can live beside the app's settings; unknown keys inside that table are still errors.
    pub fn parse_table(text: &str, key: &str) -> Result<Self, ConfigFileError> {
        let mut document: toml::Table = toml::from_str(text).map_err(|e| toml_error("TOML", Some(text), &e))?;
        let table = document.remove(key).ok_or_else(|| ConfigFileError::MissingTable(key.to_owned()))?;
        let toml::Value::Table(table) = table else {
            return Err(ConfigFileError::MissingTable(key.to_owned()));
        };
        Self::from_toml(table, &format!("TOML [{key}]"))
    }

    /// The validated protocol config.
    pub fn protocol(&self) -> Result<Config, ConfigFileError> {
        client_lease(self.lease.clone())
    }

    /// The validated mutex name.
    pub fn mutex_name(&self) -> Result<MutexName, ConfigFileError> {
        Ok(MutexName::new(self.name.clone())?)
    }

    /// The value of `key` in `section` (`lease` or `timeouts`), if it is a number there.
    fn value_of(&self, section: &str, key: &str) -> Option<u64> {
        let table = match section {
            "lease" => toml::Table::try_from(&self.lease).ok()?,
            "timeouts" => toml::Table::try_from(&self.timeouts).ok()?,
            _ => return None,
        };
        table.get(key)?.as_integer().and_then(|value| u64::try_from(value).ok())
    }

    /// `projects/P/instances/I/databases/D`.
    pub fn database_path(&self) -> String {
        format!("projects/{}/instances/{}/databases/{}", self.project_id, self.instance_id, self.database_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fitting_timeouts_fit_every_lease_and_keep_the_defaults_where_they_do() {
        let lease = |ttl_ms, renew_interval_ms, safety_margin_ms| {
            ConfigParams { ttl_ms, renew_interval_ms, safety_margin_ms, ..ConfigParams::default() }
                .validate()
                .expect("valid lease")
        };
        for cfg in
            [lease(3_000, 1_000, 500), lease(1_000, 300, 100), lease(4_500, 1_000, 1_000), lease(10_000, 3_000, 1_000)]
        {
            let timeouts = Timeouts::fitting(&cfg);
            timeouts.validate(&cfg).expect("fits its lease");
            assert!(Timeouts::default().validate(&cfg).is_ok() == (timeouts == Timeouts::default()), "{cfg:?}");
        }
    }

    const OURS: &str = r#"
name = "migrations"
project_id = "demo-project"
instance_id = "demo-instance"
database_id = "demo-db"
[lease]
ttl_ms = 5000
renew_interval_ms = 1500
"#;

    #[test]
    fn our_toml_parses_with_defaults() {
        let c = MutexConfig::parse(OURS).expect("valid");
        assert_eq!((c.table_id.as_str(), c.lease.ttl_ms, c.lease.wait_ms), ("SpannerMutex", 5000, 500));
        assert_eq!(c.database_path(), "projects/demo-project/instances/demo-instance/databases/demo-db");
    }

    #[test]
    fn the_seed_json_is_accepted() {
        let seed = r#"{"mutex_uuid": "2f1c7e0e-1d6c-4d1e-9f7e-2b8a5e6c9d10", "instance_id": "inst", "database_id": "db",
            "table_id": "mutex_table", "project_id": "proj", "mutex_display_name": "migrations",
            "mutex_ttl_in_secs": 30, "mutex_staleness_in_secs": 600, "mutex_wait_time_in_secs": 5, "mutex_max_retries": 10}"#;
        let c = MutexConfig::parse(seed).expect("valid");
        assert_eq!(
            (c.lease.ttl_ms, c.lease.staleness_ms, c.lease.wait_ms, c.lease.max_retries),
            (30_000, 600_000, 5_000, 10)
        );
        assert_eq!(c.name, "2f1c7e0e-1d6c-4d1e-9f7e-2b8a5e6c9d10");
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let typo = OURS.replace("ttl_ms", "tll_ms");
        let err = MutexConfig::parse(&typo).expect_err("typo").to_string();
        assert!(err.contains("unknown field `tll_ms`"), "{err}");
        let seed_typo = r#"{"mutex_uuid": "a", "instance_id": "inst", "database_id": "db", "table_id": "t", "project_id": "p",
            "mutex_ttl_in_secs": 30, "mutex_staleness_in_secs": 600, "mutex_wait_time_in_secs": 5, "mutex_max_retries": 10,
            "mutex_max_retry": 3}"#;
        let err = MutexConfig::parse(seed_typo).expect_err("typo").to_string();
        assert!(err.contains("unknown field `mutex_max_retry`"), "{err}");
    }

    #[test]
    fn a_client_has_no_protocol_to_choose() {
        // The seed's protocol and the re-inserted bugs exist for the checker and the simulator only.
        let naive = OURS.replace("[lease]", "[lease]\nprotocol = \"naive\"");
        let err = MutexConfig::parse(&naive).expect_err("no such key").to_string();
        assert!(err.contains("unknown field `protocol`"), "{err}");
    }

    #[test]
    fn a_file_naming_only_its_ttl_gets_settings_that_fit_it() {
        for ttl_ms in [100, 1_000, 3_000, 10_000, 60_000] {
            let text = OURS.replace("ttl_ms = 5000\nrenew_interval_ms = 1500", &format!("ttl_ms = {ttl_ms}"));
            let config = MutexConfig::parse(&text).unwrap_or_else(|e| panic!("ttl_ms = {ttl_ms}: {e}"));
            assert_eq!(config.lease.ttl_ms, ttl_ms);
            assert!(config.lease.renew_interval_ms * 3 <= ttl_ms - config.lease.safety_margin_ms, "{config:?}");
        }
        // The documented example: a 3 s TTL.
        let text = OURS.replace("ttl_ms = 5000\nrenew_interval_ms = 1500", "ttl_ms = 3000");
        let config = MutexConfig::parse(&text).expect("valid");
        let lease = (config.lease.safety_margin_ms, config.lease.renew_interval_ms);
        assert_eq!((lease, config.timeouts.transaction_ms, config.timeouts.rpc_ms), ((300, 900), 1_200, 600));
        // The default TTL gets the defaults.
        let text = OURS.replace("ttl_ms = 5000\nrenew_interval_ms = 1500", "ttl_ms = 10000");
        let config = MutexConfig::parse(&text).expect("valid");
        assert_eq!((config.lease, config.timeouts), (ConfigParams::default(), Timeouts::default()));
        // What the file sets is kept.
        let text = OURS.replace("renew_interval_ms = 1500", "renew_interval_ms = 1000\nsafety_margin_ms = 700");
        let config = MutexConfig::parse(&text).expect("valid");
        assert_eq!((config.lease.renew_interval_ms, config.lease.safety_margin_ms), (1_000, 700));
    }

    #[test]
    fn the_seed_json_with_a_short_ttl_fits_and_names_a_missing_uuid() {
        let seed = r#"{"instance_id": "inst", "database_id": "db", "table_id": "mutex_table", "project_id": "proj",
            "mutex_display_name": "migrations", "mutex_ttl_in_secs": 3, "mutex_staleness_in_secs": 100,
            "mutex_wait_time_in_secs": 1, "mutex_max_retries": 3"#;
        let config = MutexConfig::parse(&format!(r#"{seed}, "mutex_uuid": "m-1"}}"#)).expect("a 3 s TTL fits");
        assert_eq!(config.lease.ttl_ms, 3_000);
        let error = MutexConfig::parse(&format!("{seed}}}")).expect_err("no uuid").to_string();
        assert!(error.contains("missing field `mutex_uuid`"), "{error}");
    }

    #[test]
    fn a_lease_key_at_the_top_of_the_file_is_sent_to_its_section() {
        let text = OURS.replace("[lease]", "unavailable_ms = 3000\n[lease]");
        let error = MutexConfig::parse(&text).expect_err("misplaced").to_string();
        assert_eq!(error, "unavailable_ms belongs under [lease]: move it there");
        let text = OURS.replace("[lease]", "transaction_ms = 3000\n[lease]");
        let error = MutexConfig::parse(&text).expect_err("misplaced").to_string();
        assert_eq!(error, "transaction_ms belongs under [timeouts]: move it there");
    }

    #[test]
    fn a_config_error_says_its_sentence_once_when_its_chain_is_printed() {
        let text = OURS.replace("ttl_ms = 5000", "ttl_ms = 1500");
        let error = MutexConfig::parse(&text).expect_err("invalid");
        // As `anyhow`'s `{:#}` prints it: each error of the chain, joined.
        let mut chain = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            chain = format!("{chain}: {cause}");
            source = cause.source();
        }
        assert_eq!(chain.matches("must be less than").count(), 1, "{chain}");
    }

    #[test]
    fn a_rule_broken_with_a_value_the_file_does_not_set_says_so_and_where_to_set_it() {
        let error = |lease_and_timeouts: &str| {
            let text = OURS.replace("[lease]\nttl_ms = 5000\nrenew_interval_ms = 1500\n", lease_and_timeouts);
            MutexConfig::parse(&text).expect_err(lease_and_timeouts).to_string()
        };
        assert_eq!(
            error("[timeouts]\nrpc_ms = 3000\n"),
            "timeouts.rpc_ms = 3000 must be at most timeouts.transaction_ms = 2000, so one Spanner call cannot \
             outlast it; the file does not set transaction_ms, so it is 2000, the default: set it under [timeouts]"
        );
        assert_eq!(
            error("[lease]\nttl_ms = 3000\nrenew_interval_ms = 3000\n"),
            "invalid lease config: renew_interval_ms = 3000 must be less than ttl_ms - safety_margin_ms = 2700; the \
             file does not set safety_margin_ms, so it is 300, derived from ttl_ms, clock_drift_ppm and \
             server_uncertainty_ms: set it under [lease]"
        );
        assert_eq!(
            error("[lease]\nserver_uncertainty_ms = 5000\n"),
            "invalid lease config: safety_margin_ms = 10010 must be less than ttl_ms = 10000; the file does not set \
             safety_margin_ms, so it is derived from ttl_ms, clock_drift_ppm and server_uncertainty_ms: set it under \
             [lease]"
        );
        // Every value the rule names set in the file: the rule alone.
        assert_eq!(
            error("[lease]\nttl_ms = 3000\nsafety_margin_ms = 3000\nrenew_interval_ms = 1000\n"),
            "invalid lease config: safety_margin_ms = 3000 must be less than ttl_ms = 3000"
        );
        // A timeout the file sets makes the other one a plain default, not one fitted to the TTL.
        assert_eq!(
            error("[lease]\nttl_ms = 3000\n[timeouts]\nrpc_ms = 500\n"),
            "timeouts.transaction_ms = 2000 must be less than lease.ttl_ms - lease.safety_margin_ms - \
             lease.renew_interval_ms = 1800, so one Spanner call cannot outlast it; the file does not set \
             transaction_ms, so it is the default: set it under [timeouts]"
        );
    }

    #[test]
    fn each_bad_value_is_named() {
        let cases = [
            (OURS.replace("demo-db", "Demo DB"), "invalid database_id: \"Demo DB\""),
            (OURS.replace("\"migrations\"", "\"a b\""), "invalid mutex name: mutex name contains ' '"),
            (
                OURS.replace("ttl_ms = 5000", "ttl_ms = 1500"),
                // The margin is not set: a tenth of the TTL.
                "renew_interval_ms = 1500 must be less than ttl_ms - safety_margin_ms = 1350",
            ),
            (format!("{OURS}\n[timeouts]\nrpc_ms = 0\n"), "timeouts.rpc_ms = 0 must be between 1 and 600000"),
            (
                format!("{OURS}\n[timeouts]\ntransaction_ms = 3000\n"),
                "timeouts.transaction_ms = 3000 must be less than \
                 lease.ttl_ms - lease.safety_margin_ms - lease.renew_interval_ms = 3000",
            ),
            (
                OURS.replace("database_id = \"demo-db\"", "database_id = \"demo-db\"\ntable_id = \"t; DROP TABLE x\""),
                "invalid table_id",
            ),
        ];
        for (text, expected) in cases {
            let err = MutexConfig::parse(&text).expect_err(expected).to_string();
            assert!(err.contains(expected), "{err} should contain {expected}");
        }
    }
}
