//! Cloud Spanner store on Google's official `google-cloud-spanner` crate. One read-write transaction per
//! request, one single-use read per observation, no admin RPC on the hot path, and a time bound on everything.

use crate::config::{Timeouts, validate_table_id};
use crate::future::Compiled;
use crate::lease::{AnyValue, Fenced, FencedError, FencedTx, FencedWork, Silence, WriteId};
use crate::serial::{HolderFirst, Turn};
use crate::store::{FencedAnswer, LeaseStore, RowRead, StoreError, StoreErrorKind};
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::retry_policy::NeverRetry;
use google_cloud_spanner::client::{DatabaseClient, Spanner};
use google_cloud_spanner::mutation::Mutation;
use google_cloud_spanner::statement::Statement;
use google_cloud_spanner::transaction::{BasicTransactionRetryPolicy, ReadWriteTransaction};
use spanner_mutex_model::txn::{TxnPlan, TxnReply, TxnRequest, plan};
use spanner_mutex_model::{ClientId, Config, Fence, LeaseRow, MutexName, ServerTime, Status};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::RwLock;
use wkt::Timestamp;

/// The Spanner store. Clones share one database client.
#[derive(Clone, Debug)]
pub struct SpannerStore {
    spanner: Spanner,
    database: String,
    client: Arc<RwLock<DatabaseClient>>,
    table: Arc<str>,
    select_sql: Arc<str>,
    timeouts: Timeouts,
    /// Emulators before 1.5.38 run one read-write transaction per database at a time and fail concurrent ones
    /// from a shared client with the wrong error, so transactions from this process are serialized there.
    emulator_serial: Option<Arc<HolderFirst>>,
    endpoint: Option<String>,
}

/// Failure to connect.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The table name is not a valid identifier.
    #[error(transparent)]
    Identifier(#[from] crate::ConfigFileError),
    /// Building the Spanner client failed.
    #[error("cannot build the Spanner client: {0}")]
    Client(String),
    /// No credentials for Cloud Spanner could be found or used.
    #[error(
        "no usable Google Cloud credentials for Cloud Spanner: run `gcloud auth application-default login`, or set \
         GOOGLE_APPLICATION_CREDENTIALS to a service account key file; to use an emulator, set SPANNER_EMULATOR_HOST"
    )]
    Credentials,
    /// Nothing answered at Spanner's address, or the connection broke while connecting.
    #[error("cannot reach Spanner at {endpoint}: {reason}; {what_to_do}")]
    Unreachable {
        /// The address tried.
        endpoint: String,
        /// What the connection met, in words.
        reason: String,
        /// Where the address came from, and what to change.
        what_to_do: String,
    },
    /// The database does not exist.
    #[error(
        "database {database} does not exist: check the path (projects/P/instances/I/databases/D), or create it \
         (on the emulator: `spanner-mutex init --config FILE`)"
    )]
    DatabaseNotFound {
        /// The path asked for.
        database: String,
    },
    /// Spanner did not answer in time.
    #[error("Spanner at {endpoint} did not answer within {ms} ms: {message}")]
    Unavailable {
        /// Where.
        endpoint: String,
        /// The bound.
        ms: u64,
        /// The error.
        message: String,
    },
}

/// A failure to connect to `endpoint` (`None`: Cloud Spanner) in words: unreachable when the connection itself
/// failed (an I/O error in its chain, or a failure of the `transport`), naming where the address came from; else
/// the client's own message.
fn connect_error(error: &(dyn std::error::Error + 'static), endpoint: Option<&str>, transport: bool) -> ConnectError {
    let mut cause = Some(error);
    let io_kind = std::iter::from_fn(|| {
        let current = cause?;
        cause = current.source();
        Some(current)
    })
    .find_map(|cause| cause.downcast_ref::<std::io::Error>().map(std::io::Error::kind));
    use std::io::ErrorKind;
    let reason = match io_kind {
        // An emulator's transport failed without an I/O error: the connection was closed by the other side. (On
        // Cloud Spanner a proxy or a wrong endpoint fails so too: its own message says more.)
        None if transport && endpoint.is_some() => "the connection was closed while connecting (did the server stop?)",
        None => return ConnectError::Client(error.to_string()),
        Some(kind) => match kind {
            ErrorKind::ConnectionRefused => "connection refused (nothing listens there)",
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
                "the connection was closed while connecting (did the server stop?)"
            }
            ErrorKind::TimedOut => "the connection timed out",
            ErrorKind::AddrNotAvailable | ErrorKind::NotFound => "the address does not resolve",
            _ => "the connection failed",
        },
    };
    let from_variable = std::env::var("SPANNER_EMULATOR_HOST")
        .ok()
        .is_some_and(|host| endpoint.is_some_and(|endpoint| crate::mutexes::grpc_endpoint(&host) == endpoint));
    let what_to_do = match endpoint {
        Some(_) if from_variable => {
            "SPANNER_EMULATOR_HOST points there: start the emulator, or point the variable at a running one \
             (unset, Cloud Spanner is used)"
        }
        Some(_) => "start the emulator there, or give the address of a running one",
        None => "check the network and that Cloud Spanner is reachable from here",
    };
    ConnectError::Unreachable {
        endpoint: endpoint.map_or("Cloud Spanner's address".to_owned(), |e| e.trim_start_matches("http://").to_owned()),
        reason: reason.to_owned(),
        what_to_do: what_to_do.to_owned(),
    }
}

fn micros(ts: &Timestamp) -> ServerTime {
    ServerTime::from_unix_micros(ts.seconds() * 1_000_000 + i64::from(ts.nanos()) / 1_000)
}

fn timestamp(t: ServerTime) -> Timestamp {
    let us = t.unix_micros();
    Timestamp::clamp(us.div_euclid(1_000_000), i32::try_from(us.rem_euclid(1_000_000) * 1_000).unwrap_or(0))
}

fn request_options(timeouts: &Timeouts) -> google_cloud_gax::options::RequestOptions {
    let mut options = google_cloud_gax::options::RequestOptions::default();
    options.set_attempt_timeout(timeouts.rpc());
    // Retrying an unavailable Spanner is the machine's decision, bounded by `lease.unavailable_ms`.
    options.set_retry_policy(NeverRetry);
    options
}

/// Classifies an error of an operation; `writing` marks a transaction, whose commit may have landed.
pub(crate) fn classify(error: &google_cloud_spanner::Error, writing: bool) -> StoreErrorKind {
    let uncertain = if writing { StoreErrorKind::Unknown } else { StoreErrorKind::Unavailable };
    if let Some(status) = error.status() {
        return match status.code {
            Code::Aborted => StoreErrorKind::Aborted,
            Code::NotFound
            | Code::InvalidArgument
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unimplemented
            | Code::AlreadyExists => StoreErrorKind::Rejected,
            Code::Unavailable | Code::ResourceExhausted => StoreErrorKind::Unavailable,
            _ => uncertain,
        };
    }
    if error.is_deserialization() || error.is_serialization() || error.is_binding() {
        // The row or a value does not have the expected shape (wrong column type): retrying cannot help.
        StoreErrorKind::Rejected
    } else if error.is_exhausted() {
        StoreErrorKind::Aborted
    } else if error.is_connect() || error.is_authentication() {
        StoreErrorKind::Unavailable
    } else {
        uncertain
    }
}

fn is_session_lost(error: &google_cloud_spanner::Error) -> bool {
    error.status().is_some_and(|s| s.code == Code::NotFound && s.message.contains(SESSION_LOST))
}

/// What Spanner (and the emulator after a restart) says of a session it no longer knows.
const SESSION_LOST: &str = "Session not found";

fn decode_row(row: &google_cloud_spanner::result::Row) -> google_cloud_spanner::Result<(Option<LeaseRow>, ServerTime)> {
    let bad = |what: String| google_cloud_spanner::Error::deser(what);
    let now: Timestamp = row.get("now")?;
    let status: Option<String> = row.get("status")?;
    let Some(status) = status else { return Ok((None, micros(&now))) };
    let status: Status = status.parse().map_err(|e: spanner_mutex_model::UnknownStatus| bad(e.to_string()))?;
    let holder: String = row.get("holder")?;
    let holder = uuid::Uuid::parse_str(&holder).map_err(|e| bad(format!("holder {holder:?}: {e}")))?;
    let fence: i64 = row.get("fence")?;
    let attempt: i64 = row.get("attempt")?;
    let fenced_writes: i64 = row.get("fenced_writes")?;
    let updated_at: Timestamp = row.get("updated_at")?;
    let expires_at: Timestamp = row.get("expires_at")?;
    let lease = LeaseRow {
        status,
        holder: ClientId::from_uuid(holder),
        holder_name: row.get::<Option<String>>("holder_name")?.unwrap_or_default(),
        fence: Fence::new(u64::try_from(fence).map_err(|_| bad(format!("negative fence {fence}")))?),
        updated_at: micros(&updated_at),
        expires_at: micros(&expires_at),
        attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
        last_error: row.get("last_error")?,
        fenced_writes: u32::try_from(fenced_writes).map_err(|_| bad(format!("fenced_writes {fenced_writes}")))?,
    };
    Ok((Some(lease), micros(&now)))
}

impl SpannerStore {
    /// Connects to `database` (`projects/P/instances/I/databases/D`) and uses `table`, without checking the
    /// table: for tests of a missing or outdated one. Users connect through [`SpannerStore::builder`].
    #[cfg(feature = "test-util")]
    pub fn connect_unchecked(
        database: impl Into<String>,
        table: &str,
        endpoint: Option<String>,
        timeouts: Timeouts,
    ) -> impl Future<Output = Result<Self, ConnectError>> + Send {
        Self::connect(database, table, endpoint, timeouts)
    }

    /// Connects to `database` (`projects/P/instances/I/databases/D`) and uses `table`. `endpoint` overrides the
    /// service address (`http://127.0.0.1:PORT` for an emulator; `SPANNER_EMULATOR_HOST` is honoured too).
    /// Fails within `timeouts.connect_ms` if Spanner does not answer.
    pub(crate) fn connect(
        database: impl Into<String>,
        table: &str,
        endpoint: Option<String>,
        timeouts: Timeouts,
    ) -> impl Future<Output = Result<Self, ConnectError>> + Send {
        Self::connect_compiled(database.into(), table.to_owned(), endpoint, timeouts)
    }

    #[inline(never)]
    fn connect_compiled(
        database: String,
        table: String,
        endpoint: Option<String>,
        timeouts: Timeouts,
    ) -> Compiled<'static, Result<Self, ConnectError>> {
        Box::pin(Self::connect_now(database, table, endpoint, timeouts))
    }

    async fn connect_now(
        database: String,
        table: String,
        endpoint: Option<String>,
        timeouts: Timeouts,
    ) -> Result<Self, ConnectError> {
        let table = table.as_str();
        validate_table_id(table)?;
        let mut builder = Spanner::builder();
        if let Some(endpoint) = &endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        let spanner = builder.build().await.map_err(|e| connect_error(&e, endpoint.as_deref(), false))?;
        let is_emulator = endpoint.as_deref().is_some_and(|e| e.starts_with("http://"))
            || std::env::var_os("SPANNER_EMULATOR_HOST").is_some();
        let client = Self::build_client(&spanner, &database, &timeouts, endpoint.as_deref()).await?;
        // Only validated identifiers reach SQL; values are always parameters.
        let select_sql = format!(
            "SELECT CURRENT_TIMESTAMP() AS now, t.status, t.holder, t.holder_name, t.fence, t.updated_at, \
             t.expires_at, t.attempt, t.last_error, t.fenced_writes FROM (SELECT 1) LEFT JOIN {table} AS t ON t.name = @name"
        );
        Ok(Self {
            spanner,
            database,
            client: Arc::new(RwLock::new(client)),
            table: table.into(),
            select_sql: select_sql.into(),
            timeouts,
            emulator_serial: is_emulator.then(|| Arc::new(HolderFirst::default())),
            endpoint,
        })
    }

    async fn build_client(
        spanner: &Spanner,
        database: &str,
        timeouts: &Timeouts,
        endpoint: Option<&str>,
    ) -> Result<DatabaseClient, ConnectError> {
        let build =
            spanner.database_client(database.to_owned()).with_request_options(request_options(timeouts)).build();
        match tokio::time::timeout(timeouts.connect(), build).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) if e.status().is_some_and(|s| s.code == Code::NotFound) => {
                Err(ConnectError::DatabaseNotFound { database: database.to_owned() })
            }
            Ok(Err(e)) if e.is_authentication() => Err(ConnectError::Credentials),
            Ok(Err(e)) => Err(connect_error(&e, endpoint, e.is_transport())),
            Err(_) => Err(ConnectError::Unavailable {
                endpoint: endpoint.unwrap_or("Cloud Spanner").to_owned(),
                ms: timeouts.connect_ms,
                message: "connect timed out".into(),
            }),
        }
    }

    /// The database path.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The lease table.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The bounds on its calls.
    pub const fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// The database client (cheap to clone), for the user's own reads and writes.
    pub async fn database_client(&self) -> DatabaseClient {
        self.client.read().await.clone()
    }

    /// Runs `work` with the database client, for the user's own reads and writes, and heals once: if it fails
    /// because Spanner forgot the session (as after an emulator restart), the client is rebuilt and `work` runs
    /// again with the new one. A [`DatabaseClient`] kept across such a restart stays broken; one taken here
    /// (or from [`Self::database_client`] after [`Self::heal`]) does not.
    ///
    /// ```no_run
    /// # async fn count(store: &spanner_mutex::SpannerStore) -> Result<(), spanner_mutex::google_cloud_spanner::Error> {
    /// use spanner_mutex::google_cloud_spanner::statement::Statement;
    /// let applied: i64 = store
    ///     .with_client(|client| async move {
    ///         let query = Statement::builder("SELECT COUNT(*) AS n FROM Applied").build();
    ///         let mut rows = client.single_use().build().execute_query(query).await?;
    ///         rows.next().await.transpose()?.map_or(Ok(0), |row| row.get("n"))
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn with_client<T, E, F, Fut>(&self, work: F) -> Result<T, E>
    where
        F: Fn(DatabaseClient) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::error::Error + Send + Sync + 'static,
    {
        match work(self.database_client().await).await {
            Err(error) if self.heal(&error).await => work(self.database_client().await).await,
            result => result,
        }
    }

    /// Heals the database client after `error`, an error of the user's own reads or writes through
    /// [`SpannerStore::database_client`] (anywhere in its source chain): if Spanner had forgotten the session, the
    /// client is rebuilt and `true` returned, so the caller may retry with a fresh [`Self::database_client`].
    pub async fn heal(&self, error: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
        let error: &(dyn std::error::Error + 'static) = error;
        let lost = std::iter::successors(Some(error), |e| e.source()).any(|e| e.to_string().contains(SESSION_LOST));
        if lost {
            self.rebuild().await;
        }
        lost
    }

    /// After the emulator (or a backend) forgot our session, a new database client is needed.
    #[inline(never)]
    fn rebuild(&self) -> Compiled<'_, ()> {
        Box::pin(self.rebuild_now())
    }

    async fn rebuild_now(&self) {
        if let Ok(client) =
            Self::build_client(&self.spanner, &self.database, &self.timeouts, self.endpoint.as_deref()).await
        {
            *self.client.write().await = client;
            tracing::info!(database = %self.database, "rebuilt the database client after a lost session");
        }
    }

    fn lease_mutation(&self, name: &MutexName, write: &spanner_mutex_model::RowWrite) -> Mutation {
        Mutation::new_insert_or_update_builder(self.table.as_ref())
            .set("name")
            .to(name.as_str())
            .set("status")
            .to(write.status.as_str())
            .set("holder")
            .to(write.holder.to_string())
            .set("holder_name")
            .to(write.holder_name.clone())
            .set("fence")
            .to(i64::try_from(write.fence.get()).unwrap_or(i64::MAX))
            .set("updated_at")
            .to("spanner.commit_timestamp()")
            .set("expires_at")
            .to(timestamp(write.expires_at))
            .set("attempt")
            .to(i64::from(write.attempt))
            .set("last_error")
            .to(write.last_error.clone())
            .set("fenced_writes")
            .to(i64::from(write.fenced_writes))
            .build()
    }

    /// A transaction runner bounded in time, Spanner's retries of aborts included (contention, not
    /// unavailability: an abort is an answer).
    fn runner(&self, client: &DatabaseClient) -> google_cloud_spanner::transaction::TransactionRunner {
        let retry = BasicTransactionRetryPolicy::new().with_total_timeout(self.timeouts.transaction());
        client
            .read_write_transaction()
            .with_transaction_timeout(self.timeouts.transaction())
            .with_retry_policy(retry)
            .build()
    }

    fn select(&self, name: &MutexName) -> Statement {
        Statement::builder(self.select_sql.as_ref()).add_param("name", name.as_str()).build()
    }

    /// Reads `name`'s row and Spanner's current time inside `tx`, and decides `request` on them.
    async fn plan_in(
        &self,
        tx: &ReadWriteTransaction,
        cfg: &Config,
        name: &MutexName,
        request: &TxnRequest,
    ) -> Result<TxnPlan, google_cloud_spanner::Error> {
        let mut rows = tx.execute_query(self.select(name)).await?;
        let row = rows.next().await.transpose()?.ok_or_else(|| google_cloud_spanner::Error::deser("no row"))?;
        let (lease, now) = decode_row(&row)?;
        Ok(plan(cfg, request, lease.as_ref(), now))
    }

    /// On an emulator, waits for this process's other read-write transactions to finish (see `emulator_serial`);
    /// transactions of a lease already held go first.
    async fn serialized(&self, request: &TxnRequest) -> Option<Turn<'_>> {
        let holder = !matches!(request, TxnRequest::Acquire { .. });
        match &self.emulator_serial {
            Some(gate) => Some(gate.enter(holder).await),
            None => None,
        }
    }

    /// Runs `plan` for `request` in one read-write transaction and writes the planned row.
    async fn transact_once(
        &self,
        cfg: &Config,
        name: &MutexName,
        request: &TxnRequest,
    ) -> Result<TxnReply, google_cloud_spanner::Error> {
        let runner = self.runner(&self.database_client().await);
        let (store, cfg, name, request) = (self.clone(), cfg.clone(), name.clone(), request.clone());
        let result = runner
            .run(move |tx: ReadWriteTransaction| {
                let (store, cfg, name, request) = (store.clone(), cfg.clone(), name.clone(), request.clone());
                async move {
                    let planned = store.plan_in(&tx, &cfg, &name, &request).await?;
                    if let Some(write) = &planned.write {
                        tx.buffer([store.lease_mutation(&name, write)])?;
                    }
                    Ok(planned.reply)
                }
            })
            .await?;
        Ok(result.into_inner())
    }
}

impl LeaseStore for SpannerStore {
    async fn heal(&self, error: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
        Self::heal(self, error).await
    }

    fn fenced(
        &self,
        cfg: &Config,
        name: &MutexName,
        id: WriteId,
        work: FencedWork,
    ) -> impl Future<Output = FencedAnswer> + Send {
        self.fenced_compiled(cfg.clone(), name.clone(), id, work)
    }

    #[inline(never)]
    fn transact(
        &self,
        cfg: &Config,
        name: &MutexName,
        request: &TxnRequest,
    ) -> impl Future<Output = Result<TxnReply, StoreError>> + Send {
        let (cfg, name, request) = (cfg.clone(), name.clone(), request.clone());
        let future: Compiled<'_, _> = Box::pin(async move { self.transact_now(&cfg, &name, &request).await });
        future
    }

    #[inline(never)]
    fn read(&self, name: &MutexName) -> impl Future<Output = Result<RowRead, StoreError>> + Send {
        let name = name.clone();
        let future: Compiled<'_, _> = Box::pin(async move { self.read_now(&name).await });
        future
    }
}

impl SpannerStore {
    async fn transact_now(&self, cfg: &Config, name: &MutexName, request: &TxnRequest) -> Result<TxnReply, StoreError> {
        let _serial = self.serialized(request).await;
        // Boxed once its turn has come: clients queued behind the emulator's one transaction at a time hold no
        // transaction state.
        let attempt = Box::pin(async {
            let mut result = self.transact_once(cfg, name, request).await;
            if let Err(error) = &result
                && is_session_lost(error)
            {
                self.rebuild().await;
                result = self.transact_once(cfg, name, request).await;
            }
            result.map_err(|e| StoreError::new(classify(&e, true), e.to_string()).with_code(e.status().map(|s| s.code)))
        });
        // The hard bound on the whole call: whatever happens beneath, the machine hears within it.
        tokio::time::timeout(self.timeouts.transaction(), attempt).await.unwrap_or_else(|_| {
            let ms = self.timeouts.transaction_ms;
            Err(StoreError::new(StoreErrorKind::Unknown, format!("no answer within timeouts.transaction_ms = {ms}")))
        })
    }

    async fn read_now(&self, name: &MutexName) -> Result<RowRead, StoreError> {
        for attempt in 0..2 {
            let client = self.database_client().await;
            let query = async {
                let mut rows = client.single_use().build().execute_query(self.select(name)).await?;
                let row = rows.next().await.transpose()?.ok_or_else(|| google_cloud_spanner::Error::deser("no row"))?;
                decode_row(&row)
            };
            match tokio::time::timeout(self.timeouts.rpc(), query).await {
                Ok(Ok(read)) => return Ok(read),
                Ok(Err(e)) if attempt == 0 && is_session_lost(&e) => self.rebuild().await,
                Ok(Err(e)) => {
                    return Err(
                        StoreError::new(classify(&e, false), e.to_string()).with_code(e.status().map(|s| s.code))
                    );
                }
                Err(_) => {
                    let ms = self.timeouts.rpc_ms;
                    return Err(StoreError::new(
                        StoreErrorKind::Unavailable,
                        format!("no answer within timeouts.rpc_ms = {ms}"),
                    ));
                }
            }
        }
        Err(StoreError::new(StoreErrorKind::Unavailable, "session lost twice"))
    }
}

/// What one attempt of a fenced transaction did.
enum FencedAttempt<T> {
    Committed(T),
    AlreadyApplied,
    NotHolder,
}

impl SpannerStore {
    /// [`LeaseStore::fenced`] on Spanner: one read-write transaction that verifies the fence, runs `work` and
    /// writes the row's record. An attempt without a certain answer is retried under the same number while the
    /// run's unavailability budget lasts (see [`FencedWork::may_retry_unanswered`]).
    #[inline(never)]
    fn fenced_compiled(
        &self,
        cfg: Config,
        name: MutexName,
        id: WriteId,
        work: FencedWork,
    ) -> Compiled<'_, FencedAnswer> {
        Box::pin(async move { self.fenced_now(&cfg, &name, id, work).await })
    }

    async fn fenced_now(&self, cfg: &Config, name: &MutexName, id: WriteId, work: FencedWork) -> FencedAnswer {
        let WriteId { fence, write, .. } = id;
        let verify = id.verify();
        let _serial = self.serialized(&verify).await;
        let mut first_unanswered: Option<Silence> = None;
        // After an attempt without a certain answer, a refusal or an error no longer says nothing was written:
        // that attempt may have landed (and one that read the row before an expiry may still land).
        let unknown = |first: Option<Silence>, other: FencedError<AnyValue>| {
            if first.is_some() { FencedError::OutcomeUnknown { ms: cfg.unavailable_ms() } } else { other }
        };
        for tries in 1u32.. {
            let work_failed = Arc::new(std::sync::Mutex::new(None));
            let sent_at = work.now();
            let attempt: Compiled<'_, _> =
                Box::pin(self.fenced_once(cfg, name, &verify, work.clone(), Arc::clone(&work_failed)));
            let error = match tokio::time::timeout(self.timeouts.transaction(), attempt).await {
                Ok(Ok(FencedAttempt::Committed(value))) => {
                    work.report(true, None);
                    return Ok(Fenced::Committed(
                        value.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner),
                    ));
                }
                Ok(Ok(FencedAttempt::AlreadyApplied)) => {
                    work.report(true, None);
                    return Ok(Fenced::CommittedEarlier);
                }
                Ok(Ok(FencedAttempt::NotHolder)) => {
                    work.report(true, None);
                    return Err(unknown(first_unanswered, FencedError::Rejected { fence }));
                }
                Ok(Err(error)) => Some(error),
                Err(_) => None,
            };
            // The work's own error is the answer: this attempt read the record, so nothing earlier had landed.
            if let Some(failed) = work_failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
                work.report(true, None);
                return Err(FencedError::Work(failed));
            }
            // So is an error that retrying cannot help.
            if let Some(error) = error {
                let lost = is_session_lost(&error);
                if lost {
                    self.rebuild().await;
                }
                let uncertain = matches!(
                    classify(&error, true),
                    StoreErrorKind::Unknown | StoreErrorKind::Aborted | StoreErrorKind::Unavailable
                );
                if !(lost || uncertain) {
                    work.report(true, None);
                    return Err(unknown(first_unanswered, error.into()));
                }
                tracing::debug!(%name, fence = fence.get(), write, %error, "fenced write without a certain answer");
            }
            if !work.may_retry_unanswered(cfg, &mut first_unanswered, sent_at, tries) {
                break;
            }
            // Not in a tight loop: an unavailable Spanner may answer at once.
            tokio::time::sleep(Duration::from_millis(cfg.wait_ms())).await;
        }
        Err(FencedError::OutcomeUnknown { ms: cfg.unavailable_ms() })
    }

    async fn fenced_once(
        &self,
        cfg: &Config,
        name: &MutexName,
        verify: &TxnRequest,
        work: FencedWork,
        work_failed: Arc<std::sync::Mutex<Option<AnyValue>>>,
    ) -> Result<FencedAttempt<std::sync::Mutex<AnyValue>>, google_cloud_spanner::Error> {
        let runner = self.runner(&self.database_client().await);
        let (store, cfg, name, verify) = (self.clone(), cfg.clone(), name.clone(), verify.clone());
        let run = runner.run(move |tx: ReadWriteTransaction| {
            let (store, cfg, name, verify, work, work_failed) =
                (store.clone(), cfg.clone(), name.clone(), verify.clone(), work.clone(), Arc::clone(&work_failed));
            async move {
                // Spanner's runner calls this again after an abort: only this call's work counts.
                *work_failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                let planned = store.plan_in(&tx, &cfg, &name, &verify).await?;
                match planned.reply {
                    TxnReply::FenceValid => {}
                    TxnReply::AlreadyApplied => return Ok(FencedAttempt::AlreadyApplied),
                    _ => return Ok(FencedAttempt::NotHolder),
                }
                if let Some(record) = &planned.write {
                    tx.buffer([store.lease_mutation(&name, record)])?;
                }
                match work.run(FencedTx::spanner_tx(tx)).await {
                    // In a mutex: Spanner's runner wants a value it can share between threads.
                    Ok(value) => Ok(FencedAttempt::Committed(std::sync::Mutex::new(value))),
                    Err(error) => {
                        // Kept for the caller; an error of Spanner's own kind rolls the transaction back.
                        *work_failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
                        Err(google_cloud_spanner::Error::deser("the fenced work returned an error"))
                    }
                }
            }
        });
        Ok(run.await?.into_inner())
    }
}
