//! The entry point: where the lease table is, how leases behave and who this process is, checked once; mutexes
//! by name from there. Cloud Spanner (or its emulator, through `SPANNER_EMULATOR_HOST`) or the embedded
//! in-memory store, through the same API.

use crate::backend::Store;
use crate::config::{ConfigFileError, MutexConfig, Timeouts, client_lease};
use crate::memory::MemoryStore;
use crate::mutex::{Shared, SpannerMutex};
use crate::schema::{SchemaError, validate_schema};
use crate::spanner::{ConnectError, SpannerStore};
#[cfg(feature = "test-util")]
use crate::store::LeaseStore;
use spanner_mutex_model::{Config, ConfigParams, MutexName, MutexNameError};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Why [`Mutexes`] could not be set up. Each says what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A setting is invalid (the message names it and the rule).
    #[error(transparent)]
    Config(#[from] ConfigFileError),
    /// No database was given.
    #[error(
        "no database: give one with the builder's .database(\"projects/P/instances/I/databases/D\") or a config file"
    )]
    NoDatabase,
    /// Spanner could not be reached within `timeouts.connect_ms`.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The database or the lease table is missing or has the wrong shape (the message says what to run).
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

/// Hands out mutexes by name on one lease table, all with the same lease settings and display name.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let mutexes = spanner_mutex::Mutexes::from_file("mutex.toml").await?; // honours SPANNER_EMULATOR_HOST
/// let lock = mutexes.mutex("nightly-report")?.acquire().await?;
/// # Ok(()) }
/// ```
///
/// Every `mutex(name)` call for the same name shares that mutex's tasks, counters and shutdown, and
/// [`Mutexes::shutdown`] ends them all.
#[derive(Clone, Debug)]
pub struct Mutexes {
    store: Store,
    cfg: Config,
    display_name: String,
    /// The mutex a config file named (its `name`).
    configured: Option<MutexName>,
    mutexes: Arc<Mutex<BTreeMap<MutexName, Shared>>>,
    shutdown: CancellationToken,
}

impl Mutexes {
    /// Settings from code; see [`MutexesBuilder`].
    pub fn builder() -> MutexesBuilder {
        MutexesBuilder::default()
    }

    /// Reads a config file (TOML or JSON, ours or py-spanner-mutex's), connects and checks the lease table.
    pub async fn from_file(path: impl AsRef<Path>) -> Result<Self, SetupError> {
        Self::builder().config(MutexConfig::read(path.as_ref())?).connect().await
    }

    /// [`Self::from_file`] for settings kept in the table `key` (`[spanner_mutex]`, say) of an app's own TOML
    /// config file.
    pub async fn from_file_table(path: impl AsRef<Path>, key: &str) -> Result<Self, SetupError> {
        let config = MutexConfig::read_table(path.as_ref(), key)?;
        Self::builder().config(config).connect().await
    }
}

impl Mutexes {
    /// The embedded in-memory store, for one process: demos and tests (it keeps every mutation fenced writes
    /// commit, [`MemoryStore::mutations`]).
    pub fn in_memory(lease: ConfigParams, display_name: impl Into<String>) -> Result<Self, SetupError> {
        let cfg = client_lease(lease)?;
        Ok(Self::on(MemoryStore::new().into(), cfg, display_name.into()))
    }

    /// Mutexes on a Spanner store connected already (an app that set up its database itself, say), with the
    /// lease settings `lease`: the store's timeouts are checked against them, and the lease table's shape, as
    /// [`MutexesBuilder::connect`] does.
    pub async fn on_spanner(
        store: SpannerStore,
        lease: ConfigParams,
        display_name: impl Into<String>,
    ) -> Result<Self, SetupError> {
        let cfg = client_lease(lease)?;
        store.timeouts().validate(&cfg)?;
        validate_schema(&store).await?;
        Ok(Self::on(store.into(), cfg, display_name.into()))
    }

    /// Mutexes on any store (a test's fault-injecting or slow one), with a validated protocol configuration.
    #[cfg(feature = "test-util")]
    pub fn on_store(store: impl LeaseStore, cfg: Config, display_name: impl Into<String>) -> Self {
        Self::on(Store::custom(store), cfg, display_name.into())
    }

    fn on(store: Store, cfg: Config, display_name: String) -> Self {
        Self { store, cfg, display_name, configured: None, mutexes: Arc::default(), shutdown: CancellationToken::new() }
    }

    /// The mutex called `name` (its row's key): letters, digits, `-`, `_`, `.`, `/`, `:`, at most 128 bytes.
    /// Handles of the same name share their tasks, counters and shutdown.
    pub fn mutex(&self, name: &str) -> Result<SpannerMutex, MutexNameError> {
        Ok(self.mutex_named(MutexName::new(name)?))
    }

    fn mutex_named(&self, name: MutexName) -> SpannerMutex {
        let shared = {
            let mut mutexes = self.mutexes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let child = || Shared::new(&name, self.shutdown.child_token());
            mutexes.entry(name.clone()).or_insert_with(child).clone()
        };
        SpannerMutex::with_shared(self.store.clone(), self.cfg.clone(), name, self.display_name.clone(), shared)
    }

    /// The mutex the config file names (its `name`), when these mutexes were made from one
    /// ([`Self::from_file`], [`MutexesBuilder::config`]); `None` otherwise.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let mutexes = spanner_mutex::Mutexes::from_file("mutex.toml").await?;
    /// let migrations = mutexes.configured().expect("a config file names its mutex");
    /// # Ok(()) }
    /// ```
    pub fn configured(&self) -> Option<SpannerMutex> {
        Some(self.mutex_named(self.configured.clone()?))
    }

    /// Shuts every mutex of this down ([`SpannerMutex::shutdown`]): cancels their runs, acquisitions, locks and
    /// campaigns, and waits until each has released what it held. Call it on SIGTERM.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        let all: Vec<Shared> = {
            let mutexes = self.mutexes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            mutexes.values().cloned().collect()
        };
        for shared in all {
            shared.tasks.close();
            shared.tasks.wait().await;
        }
    }

    /// The Spanner store, when the mutexes are on Spanner: for the app's own reads and writes
    /// ([`SpannerStore::database_client`]).
    pub fn spanner(&self) -> Option<&SpannerStore> {
        self.store.spanner()
    }

    /// The in-memory store, when the mutexes are on it.
    pub const fn memory(&self) -> Option<&MemoryStore> {
        self.store.memory()
    }

    /// The lease settings every mutex of this gets.
    pub const fn config(&self) -> &Config {
        &self.cfg
    }
}

/// Settings for [`Mutexes`] from code, a config file, or both (the file first, then the calls that follow).
#[derive(Clone, Debug, Default)]
pub struct MutexesBuilder {
    store: SpannerStoreBuilder,
    lease: Option<ConfigParams>,
    display_name: Option<String>,
    configured: Option<String>,
}

impl MutexesBuilder {
    /// Everything a config file gives: database, table, lease settings, timeouts, display name, and the mutex it
    /// names ([`Mutexes::configured`]).
    #[must_use]
    pub fn config(mut self, config: MutexConfig) -> Self {
        self.store.database = Some(config.database_path());
        self.configured = Some(config.name);
        self.store.table = Some(config.table_id);
        self.store.timeouts = Some(config.timeouts);
        self.lease = Some(config.lease);
        self.display_name = Some(config.display_name);
        self
    }

    /// The database, `projects/P/instances/I/databases/D`.
    #[must_use]
    pub fn database(mut self, path: impl Into<String>) -> Self {
        self.store = self.store.database(path);
        self
    }

    /// The lease table (default `SpannerMutex`).
    #[must_use]
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.store = self.store.table(table);
        self
    }

    /// Lease timings (default [`ConfigParams::default`]).
    #[must_use]
    pub fn lease(mut self, lease: ConfigParams) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Bounds on Spanner calls (default [`Timeouts::default`]).
    #[must_use]
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.store = self.store.timeouts(timeouts);
        self
    }

    /// This process's name in lease rows (default `$HOSTNAME`).
    #[must_use]
    pub fn display_name(mut self, name: impl Into<String>) -> Self {
        self.display_name = Some(name.into());
        self
    }

    /// An emulator's gRPC address, `host:port` as in `SPANNER_EMULATOR_HOST` (which is used when this is not
    /// called); `http://host:port` is accepted too.
    #[must_use]
    pub fn emulator_host(mut self, host: impl Into<String>) -> Self {
        self.store = self.store.emulator_host(host);
        self
    }

    /// Checks every setting, connects within `timeouts.connect_ms` and checks that the lease table exists with
    /// the expected columns.
    pub async fn connect(self) -> Result<Mutexes, SetupError> {
        let cfg = client_lease(self.lease.unwrap_or_default())?;
        self.store.timeouts.clone().unwrap_or_default().validate(&cfg)?;
        let configured = self.configured.map(MutexName::new).transpose().map_err(ConfigFileError::from)?;
        let store = self.store.connect().await?;
        let display_name = self.display_name.unwrap_or_else(crate::config::default_display_name);
        Ok(Mutexes { configured, ..Mutexes::on(store.into(), cfg, display_name) })
    }
}

impl SpannerStore {
    /// Settings for a store of one's own, to share between [`Mutexes`] of different lease settings
    /// ([`Mutexes::on_spanner`]); most apps use [`Mutexes::builder`], which makes one.
    pub fn builder() -> SpannerStoreBuilder {
        SpannerStoreBuilder::default()
    }
}

/// Where a [`SpannerStore`] connects: the database, the lease table, the bounds on its calls and, for an emulator,
/// its address.
#[derive(Clone, Debug, Default)]
pub struct SpannerStoreBuilder {
    database: Option<String>,
    table: Option<String>,
    timeouts: Option<Timeouts>,
    emulator_host: Option<String>,
}

impl SpannerStoreBuilder {
    /// The database, `projects/P/instances/I/databases/D`.
    #[must_use]
    pub fn database(mut self, path: impl Into<String>) -> Self {
        self.database = Some(path.into());
        self
    }

    /// The lease table (default `SpannerMutex`).
    #[must_use]
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = Some(table.into());
        self
    }

    /// Bounds on Spanner calls (default [`Timeouts::default`]).
    #[must_use]
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = Some(timeouts);
        self
    }

    /// An emulator's gRPC address, `host:port` as in `SPANNER_EMULATOR_HOST` (which is used when this is not
    /// called); `http://host:port` is accepted too.
    #[must_use]
    pub fn emulator_host(mut self, host: impl Into<String>) -> Self {
        self.emulator_host = Some(host.into());
        self
    }

    /// Connects within `timeouts.connect_ms` and checks that the lease table exists with the expected columns.
    pub async fn connect(self) -> Result<SpannerStore, SetupError> {
        let database = self.database.ok_or(SetupError::NoDatabase)?;
        let table = self.table.unwrap_or_else(|| "SpannerMutex".into());
        let emulator = self.emulator_host.or_else(|| std::env::var("SPANNER_EMULATOR_HOST").ok());
        let endpoint = emulator.as_deref().map(grpc_endpoint);
        let store = SpannerStore::connect(database, &table, endpoint, self.timeouts.unwrap_or_default()).await?;
        validate_schema(&store).await?;
        Ok(store)
    }
}

/// `host:port` or `http://host:port` as the endpoint the client wants.
pub(crate) fn grpc_endpoint(host: &str) -> String {
    format!("http://{}", crate::config::emulator_host_port(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emulator_address_has_one_form_whatever_was_written() {
        for written in ["127.0.0.1:9010", "http://127.0.0.1:9010", " 127.0.0.1:9010/ ", "http://127.0.0.1:9010/"] {
            assert_eq!(grpc_endpoint(written), "http://127.0.0.1:9010");
        }
    }

    #[tokio::test]
    async fn a_builder_without_a_database_says_how_to_give_one() {
        let error = Mutexes::builder().connect().await.expect_err("no database").to_string();
        assert!(error.contains(".database(\"projects/"), "{error}");
        let error = SpannerStore::builder().connect().await.expect_err("no database").to_string();
        assert!(error.contains(".database(\"projects/"), "{error}");
    }

    #[test]
    fn settings_can_live_in_a_table_of_the_apps_own_file() {
        let text = r#"
[app]
port = 8080
[spanner_mutex]
name = "migrations"
project_id = "demo-project"
instance_id = "demo-instance"
database_id = "demo-db"
"#;
        let config = MutexConfig::parse_table(text, "spanner_mutex").expect("valid");
        assert_eq!(config.database_path(), "projects/demo-project/instances/demo-instance/databases/demo-db");
        let typo = text.replace("database_id", "databse_id");
        let error = MutexConfig::parse_table(&typo, "spanner_mutex").expect_err("typo").to_string();
        assert!(error.contains("databse_id"), "{error}");
        let error = MutexConfig::parse_table(text, "mutex").expect_err("no table").to_string();
        assert!(error.contains("[mutex]"), "{error}");
    }
}
