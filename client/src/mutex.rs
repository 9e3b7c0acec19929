//! The user-facing API: run a critical section once across a fleet, or hold a lease lock.

use crate::backend::Store;
use crate::clock::Clock;
use crate::driver::{self, Ctx, DriverResult, LastError, ToUser, UserSide};
use crate::lease::{Fenced, FencedError, FencedTx, FencedWork, Lease, WriteId};
use crate::metrics::{Metrics, MetricsSnapshot};
#[cfg(feature = "test-util")]
use crate::store::LeaseStore;
use crate::store::StoreError;
use google_cloud_spanner::mutation::Mutation;
use spanner_mutex_model::{
    ClientId, ClientMachine, Config, Event, Failure, Fence, MutexName, Outcome, SectionResult, UnexpectedEvent,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Errors from user code.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The user's run-once work.
pub trait CriticalSection: Send + Sync {
    /// Whether the work still needs doing. Check the *effect* (e.g. the migrations table), never the mutex row.
    /// Called before acquiring and again under the lease.
    fn is_needed(&self) -> impl Future<Output = Result<bool, BoxError>> + Send;

    /// Does the work while the lease is held. Keep effects in writes made through [`LeaseHandle::commit`] or
    /// [`LeaseHandle::fenced`] for exactly-once; select on [`Lease::lock_lost`] to stop early.
    fn execute(&self, lease: &LeaseHandle) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// A held lease, whatever holds it (a run-once section, a lock, a leadership): the [`Lease`]'s fence, deadline
/// and lock-lost signal (by `Deref`), and fenced writes that commit only while the lease is held.
#[derive(Debug)]
pub struct LeaseHandle {
    pub(crate) ctx: Ctx,
    lease: Lease,
    /// How many fenced writes this lease made; held while one runs, so writes are numbered and resolved one at a
    /// time (the row's record compares numbers).
    fenced_writes: tokio::sync::Mutex<u32>,
}

impl std::ops::Deref for LeaseHandle {
    type Target = Lease;
    fn deref(&self) -> &Lease {
        &self.lease
    }
}

impl LeaseHandle {
    pub(crate) fn new(ctx: Ctx, lease: Lease) -> Self {
        Self { ctx, lease, fenced_writes: tokio::sync::Mutex::new(0) }
    }

    /// Waits for this lease's previous fenced write to be resolved; the guard holds the count of writes made.
    pub(crate) async fn next_fenced_write(&self) -> tokio::sync::MutexGuard<'_, u32> {
        self.fenced_writes.lock().await
    }

    /// Runs `work` in one transaction that first verifies, in that same transaction, that this client still holds
    /// the lease with this fence; `work`'s writes commit only while the lease is ours, exactly once: an attempt
    /// whose answer is lost is retried, and the row's record of this lease's writes tells whether it had landed
    /// ([`Fenced::CommittedEarlier`]). `work` may run more than once (Spanner retries aborted transactions): each
    /// attempt runs a clone of it, so it may move what it captures into its future, and it should be free of
    /// side effects outside the transaction. `?` works on Spanner's calls inside it; an error it returns rolls
    /// the transaction back and comes back as [`FencedError::Work`]. For an error type of the app's own, use
    /// [`Self::fenced_with_error`]. One fenced write of a lease runs at a time; a second call waits for the first.
    ///
    /// The shapes it takes, each compiled as written:
    ///
    /// ```no_run
    /// use spanner_mutex::google_cloud_spanner::{mutation::Mutation, statement::Statement};
    /// use spanner_mutex::{BoxError, LeaseHandle};
    ///
    /// async fn shapes(lease: &LeaseHandle, id: String) -> Result<(), BoxError> {
    ///     // Mutations, with `?` on the Spanner call and a captured value moved in.
    ///     lease
    ///         .fenced(move |tx| async move {
    ///             tx.buffer([Mutation::new_insert_builder("Applied").set("id").to(id).build()])?;
    ///             Ok(())
    ///         })
    ///         .await?;
    ///     // DML through Spanner's own transaction (`None` on the in-memory store), returning a value.
    ///     let updated = lease
    ///         .fenced(|tx| async move {
    ///             let tx = tx.spanner().expect("on Spanner");
    ///             tx.execute_update(Statement::builder("UPDATE Jobs SET done = TRUE WHERE TRUE").build()).await
    ///         })
    ///         .await?;
    ///     println!("{updated:?}");
    ///     Ok(())
    /// }
    /// ```
    pub async fn fenced<T, F, Fut>(&self, work: F) -> Result<Fenced<T>, FencedError>
    where
        F: FnOnce(FencedTx) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<T, google_cloud_spanner::Error>> + Send + 'static,
        T: Send + 'static,
    {
        self.fenced_with_error(work).await
    }

    /// [`Self::fenced`] for work that returns an error type of the app's own, `E` (with
    /// `From<google_cloud_spanner::Error>`, so `?` still works on Spanner's calls); it comes back as
    /// [`FencedError::Work`], the transaction rolled back.
    ///
    /// ```no_run
    /// use spanner_mutex::google_cloud_spanner::mutation::Mutation;
    /// use spanner_mutex::{FencedError, LeaseHandle};
    ///
    /// #[derive(Debug)]
    /// enum AppError {
    ///     Spanner(spanner_mutex::google_cloud_spanner::Error),
    ///     QuotaExceeded,
    /// }
    /// impl From<spanner_mutex::google_cloud_spanner::Error> for AppError {
    ///     fn from(error: spanner_mutex::google_cloud_spanner::Error) -> Self {
    ///         Self::Spanner(error)
    ///     }
    /// }
    ///
    /// async fn charge(lease: &LeaseHandle, cents: i64) -> Result<(), FencedError<AppError>> {
    ///     lease
    ///         .fenced_with_error(move |tx| async move {
    ///             if cents > 10_000 {
    ///                 return Err(AppError::QuotaExceeded);
    ///             }
    ///             tx.buffer([Mutation::new_insert_builder("Charges").set("cents").to(cents).build()])?;
    ///             Ok(())
    ///         })
    ///         .await?;
    ///     Ok(())
    /// }
    /// ```
    pub async fn fenced_with_error<T, E, F, Fut>(&self, work: F) -> Result<Fenced<T>, FencedError<E>>
    where
        F: FnOnce(FencedTx) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: From<google_cloud_spanner::Error> + Send + 'static,
    {
        // Refused at once, with no Spanner call: the lease can no longer be relied on.
        if self.lease.is_past() {
            return Err(FencedError::LeaseLost { fence: self.fence() });
        }
        let work = FencedWork::new(work).on_run_clock(self.lease.unanswered());
        let mut writes = self.next_fenced_write().await;
        let sent_at = work.now();
        // Taken before the call: a write that may have landed keeps its number even if this future is dropped.
        *writes += 1;
        let write = *writes;
        let ctx = &self.ctx;
        let id = WriteId { client: self.client(), fence: self.fence(), write };
        let answer = ctx.store.fenced(&ctx.cfg, &ctx.name, id, work.clone()).await;
        // Every answer but an unknown outcome is one from Spanner (the Spanner store reports each attempt's as it
        // comes; this covers every store).
        work.report(!matches!(answer, Err(FencedError::OutcomeUnknown { .. })), sent_at);
        // The store hands back what the work gave it.
        match answer {
            Ok(Fenced::Committed(value)) => Ok(Fenced::Committed(value.take::<T>().ok_or_else(untyped)?)),
            Ok(Fenced::CommittedEarlier) => Ok(Fenced::CommittedEarlier),
            Err(FencedError::Work(error)) => Err(FencedError::Work(error.take::<E>().ok_or_else(untyped)?)),
            Err(FencedError::Rejected { fence }) => Err(FencedError::Rejected { fence }),
            Err(FencedError::LeaseLost { fence }) => Err(FencedError::LeaseLost { fence }),
            Err(FencedError::Spanner(error)) => Err(FencedError::Spanner(error)),
            Err(FencedError::OutcomeUnknown { ms }) => Err(FencedError::OutcomeUnknown { ms }),
        }
    }

    /// Commits `mutations` in one transaction only while this lease is held: [`Self::fenced`] for the common case
    /// of writes that need no reads.
    pub async fn commit(&self, mutations: Vec<Mutation>) -> Result<Fenced<()>, FencedError> {
        self.fenced(move |tx| async move { tx.buffer(mutations) }).await
    }
}

/// A store handed back a value of another type than its work's: a bug in this crate.
fn untyped() -> google_cloud_spanner::Error {
    google_cloud_spanner::Error::deser("a fenced write's value came back as another type")
}

/// What `run` achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// This client ran the section to completion under `fence`.
    Executed {
        /// The fence it held.
        fence: Fence,
    },
    /// The need check said there was nothing to do.
    NotNeeded,
    /// Another client completed the section within the staleness window.
    DoneByOther {
        /// Who.
        holder: ClientId,
        /// With which fence.
        fence: Fence,
        /// This client's own section ran under this fence and lost its lease before it finished (a pause past
        /// the TTL, say): its fenced writes were refused from then on, and the other client finished the work.
        lost_own_lease: Option<Fence>,
    },
}

impl std::fmt::Display for RunOutcome {
    /// In words: `executed with fence 17`, `not needed`, `done by another client (6b7d…) with fence 16`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Executed { fence } => write!(f, "executed with fence {}", fence.get()),
            Self::NotNeeded => write!(f, "not needed"),
            Self::DoneByOther { holder, fence, lost_own_lease } => {
                write!(f, "done by another client ({holder}) with fence {}", fence.get())?;
                match lost_own_lease {
                    Some(own) => write!(f, ", after this client's section lost its lease with fence {}", own.get()),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Why `run` or a lock operation did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The client waited and retried more than `max_retries` times.
    #[error(
        "gave up after {attempts} attempts{}{}",
        cause_text(last.as_ref()),
        section_error.as_ref().map(|e| format!("; the section's last error: {e}")).unwrap_or_default()
    )]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last store error met on the way, if any (the lease may simply have stayed busy).
        last: Option<StoreError>,
        /// For a run: the error this client's own section last returned, if it ran and failed.
        section_error: Option<BoxError>,
    },
    /// The section finished (or the lock was released) after another client had taken the lease over; its
    /// fenced writes were refused from that moment on.
    #[error("lease with {fence} was lost before the section finished")]
    LeaseLost {
        /// The lost fence.
        fence: Fence,
    },
    /// Spanner did not answer within `lease.unavailable_ms` (plus one call's bound).
    #[error("Spanner unavailable{}", cause_text(.0.as_ref()))]
    Unavailable(Option<StoreError>),
    /// Spanner refused the operation (missing table, wrong schema, permission): retrying cannot help.
    #[error("Spanner refused the operation{}", cause_text(.0.as_ref()))]
    Rejected(Option<StoreError>),
    /// A release could not be confirmed: Spanner gave no answer, so the lease expires at its TTL.
    #[error("the release of {fence} was not confirmed, so the lease expires at its TTL{}", cause_text(cause.as_ref()))]
    ReleaseUnconfirmed {
        /// The fence being released.
        fence: Fence,
        /// What Spanner last said, if anything.
        cause: Option<StoreError>,
    },
    /// The user's need check failed. A check under the lease gives the lease up first, with the row FAILED, so the
    /// next run retries at once; if Spanner did not answer that release, the lease ends at its TTL instead.
    #[error("need check failed: {0}")]
    // Not a `#[source]`: the message says it already, and a chain printed whole (`{:#}`) would say it twice.
    NeedCheck(BoxError),
    /// The run was cancelled and holds no lease: any it held or was winning was released. (A cancel whose release
    /// could not be confirmed returns [`RunError::Unavailable`] instead: the lease then ends at its TTL.)
    #[error("cancelled")]
    Cancelled,
    /// A driver bug: the machine refused an event.
    #[error("protocol driver bug: {0}")]
    Driver(UnexpectedEvent),
}

impl RunError {
    /// The store error behind this one, if any: its kind, gRPC code and whether a retry can help.
    pub const fn store_error(&self) -> Option<&StoreError> {
        match self {
            Self::GaveUp { last: cause, .. }
            | Self::Unavailable(cause)
            | Self::Rejected(cause)
            | Self::ReleaseUnconfirmed { cause, .. } => cause.as_ref(),
            _ => None,
        }
    }
}

fn cause_text(cause: Option<&StoreError>) -> String {
    cause.map(|e| format!(": {e}")).unwrap_or_default()
}

/// A mutex on one row of a lease table.
///
/// Every run, acquisition and held lock is driven by a task of its own; clones share those tasks, so
/// [`SpannerMutex::shutdown`] on any clone cancels them all and waits until each has released what it held.
#[derive(Clone, Debug)]
pub struct SpannerMutex {
    pub(crate) store: Store,
    cfg: Config,
    name: MutexName,
    display_name: String,
    metrics: Arc<Metrics>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

/// What every handle of one mutex shares: its counters, its tasks and its shutdown.
#[derive(Clone, Debug)]
pub(crate) struct Shared {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tasks: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

impl Shared {
    /// Fresh state for the mutex `name`, shut down with `shutdown` (or a parent of it).
    pub(crate) fn new(name: &MutexName, shutdown: CancellationToken) -> Self {
        Self { metrics: Arc::new(Metrics::for_mutex(name)), tasks: TaskTracker::new(), shutdown }
    }
}

impl SpannerMutex {
    /// A mutex named `name` on any store (a test's fault-injecting or slow one), with protocol configuration
    /// `cfg`; `display_name` is written to the row. Apps get theirs from [`crate::Mutexes::mutex`].
    #[cfg(feature = "test-util")]
    pub fn on_store(store: impl LeaseStore, cfg: Config, name: MutexName, display_name: impl Into<String>) -> Self {
        let shared = Shared::new(&name, CancellationToken::new());
        Self::with_shared(Store::custom(store), cfg, name, display_name.into(), shared)
    }

    /// A handle on the state `shared` of the mutex `name`.
    pub(crate) fn with_shared(
        store: Store,
        cfg: Config,
        name: MutexName,
        display_name: String,
        shared: Shared,
    ) -> Self {
        let Shared { metrics, tasks, shutdown } = shared;
        Self { store, cfg, name, display_name, metrics, tasks, shutdown }
    }

    /// The mutex name.
    pub const fn name(&self) -> &MutexName {
        &self.name
    }

    /// The Spanner store, when the mutex is on Spanner: for the app's own reads and writes
    /// ([`crate::SpannerStore::database_client`]).
    pub fn spanner(&self) -> Option<&crate::SpannerStore> {
        self.store.spanner()
    }

    /// The in-memory store, when the mutex is on it.
    pub const fn memory(&self) -> Option<&crate::MemoryStore> {
        self.store.memory()
    }

    /// The protocol configuration.
    pub const fn config(&self) -> &Config {
        &self.cfg
    }

    /// The counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Cancels every run, acquisition and lock of this mutex (and its clones) and waits until each has ended,
    /// having released whatever lease it held or was winning. Runs and locks still in progress return
    /// [`RunError::Cancelled`], or [`RunError::Unavailable`] if Spanner did not confirm the release (a lock holder
    /// sees [`Lease::lock_lost`]); later calls return `Cancelled` at once. Also the
    /// way to wait for the background release of a dropped run future or [`LockGuard`].
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            store: self.store.clone(),
            cfg: self.cfg.clone(),
            name: self.name.clone(),
            metrics: Arc::clone(&self.metrics),
            last_error: LastError::default(),
        }
    }

    /// Runs `work` on a task of this mutex until it ends or the mutex shuts down.
    pub(crate) fn track(&self, work: impl Future<Output = ()> + Send + 'static) {
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = work => {}
                () = shutdown.cancelled() => {}
            }
        });
    }

    fn new_client() -> ClientId {
        ClientId::from_uuid(uuid::Uuid::new_v4())
    }

    fn start(&self, ctx: Ctx, machine: ClientMachine) -> Result<UserSide, RunError> {
        if self.shutdown.is_cancelled() {
            return Err(RunError::Cancelled);
        }
        Ok(driver::spawn(ctx, machine, &self.tasks, self.shutdown.clone(), Clock::new()))
    }

    /// Runs `section` once across every client of this mutex: checks need, acquires, checks need again under
    /// the lease, runs it while the lease is renewed, and records DONE (FAILED and retry on error).
    ///
    /// The lease is driven on a task of its own, so a section that blocks does not stop renewals or the
    /// lock-lost signal (on a multi-threaded runtime). Dropping the returned future at any point releases a held
    /// or just-won lease at once, in the background; [`SpannerMutex::shutdown`] waits for that.
    pub async fn run<C: CriticalSection>(&self, section: &C) -> Result<RunOutcome, RunError> {
        let ctx = self.ctx();
        let machine = ClientMachine::run_once(Self::new_client(), self.display_name.clone(), &self.cfg);
        let UserSide { mut requests, answers, finished } = self.start(ctx.clone(), machine)?;
        let mut need_error = None;
        let mut lost_own_lease = None;
        let mut section_error = None;
        while let Some(request) = requests.recv().await {
            let answer = match request {
                ToUser::CheckNeed => match self.check_need(&mut requests, section).await {
                    Some(Ok(needed)) => Some(Event::NeedAnswered { needed }),
                    Some(Err(error)) => {
                        need_error = Some(error);
                        Some(Event::NeedCheckFailed)
                    }
                    None => None,
                },
                ToUser::RunSection(lease) => {
                    let guard = LeaseHandle::new(ctx.clone(), lease);
                    // Boxed, here and below: a future that holds the section's (or a heal's) state inline would make every
                    // waiting client's task as large as a running one.
                    let finished = until_driver_ends(&mut requests, Box::pin(section.execute(&guard))).await;
                    if guard.is_lock_lost() {
                        lost_own_lease = Some(guard.fence());
                    }
                    match finished {
                        Some(Ok(())) => Some(Event::SectionFinished(SectionResult::Completed)),
                        Some(Err(error)) => {
                            // The section runs again after FAILED; give it a healed client if it needs one.
                            Box::pin(self.store.heal(&*error)).await;
                            let failed = SectionResult::Failed { error: error.to_string() };
                            section_error = Some(error);
                            Some(Event::SectionFinished(failed))
                        }
                        None => None,
                    }
                }
                ToUser::Granted(_) => None,
            };
            // The driver ended (or asked out of turn): stop answering; its result says why.
            let Some(event) = answer else { break };
            if answers.send(event).await.is_err() {
                break;
            }
        }
        drop(answers);
        match driver_outcome(finished.await)? {
            Outcome::Executed { fence } => Ok(RunOutcome::Executed { fence }),
            Outcome::NotNeeded => Ok(RunOutcome::NotNeeded),
            Outcome::DoneByOther { holder, fence } => Ok(RunOutcome::DoneByOther { holder, fence, lost_own_lease }),
            Outcome::Failed(Failure::NeedCheck) if need_error.is_some() => {
                Err(RunError::NeedCheck(need_error.take().expect("checked")))
            }
            other => match outcome_error(other, &ctx.last_error) {
                RunError::GaveUp { attempts, last, .. } => Err(RunError::GaveUp { attempts, last, section_error }),
                error => Err(error),
            },
        }
    }

    /// The user's need check; after a failure the store can heal (a lost session), asked once more.
    async fn check_need<C: CriticalSection>(
        &self,
        requests: &mut mpsc::Receiver<ToUser>,
        section: &C,
    ) -> Option<Result<bool, BoxError>> {
        let answer = until_driver_ends(requests, Box::pin(section.is_needed())).await;
        if let Some(Err(error)) = &answer
            && Box::pin(self.store.heal(&**error)).await
        {
            tracing::info!(mutex = %self.name, %error, "need check failed on a lost session; asking again");
            return until_driver_ends(requests, Box::pin(section.is_needed())).await;
        }
        answer
    }

    /// Waits for the lock, retrying without limit; the returned guard renews in the background. Dropping the
    /// returned future releases a lock won meanwhile.
    pub async fn acquire(&self) -> Result<LockGuard, RunError> {
        self.lock_with(u32::MAX).await
    }

    /// Tries once; `Ok(None)` if someone else holds the lock.
    pub async fn try_acquire(&self) -> Result<Option<LockGuard>, RunError> {
        match self.lock_with(0).await {
            Ok(guard) => Ok(Some(guard)),
            Err(RunError::GaveUp { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits for the lock at most `timeout`; `Ok(None)` on timeout (a grant racing the timeout is released).
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<Option<LockGuard>, RunError> {
        match tokio::time::timeout(timeout, self.acquire()).await {
            Ok(result) => result.map(Some),
            Err(_) => Ok(None),
        }
    }

    async fn lock_with(&self, max_retries: u32) -> Result<LockGuard, RunError> {
        let ctx = self.ctx();
        let machine = ClientMachine::lock(Self::new_client(), self.display_name.clone(), max_retries);
        let UserSide { mut requests, answers, finished } = self.start(ctx.clone(), machine)?;
        if let Some(ToUser::Granted(lease)) = requests.recv().await {
            let last_error = ctx.last_error.clone();
            let handle = Box::new(LeaseHandle::new(ctx, lease));
            return Ok(LockGuard { handle, answers, finished, last_error });
        }
        drop(answers);
        Err(outcome_error(driver_outcome(finished.await)?, &ctx.last_error))
    }
}

/// Awaits the user's `work` unless the driver ends first (its request channel closes, or it asks out of turn),
/// in which case the work is dropped: nothing it could answer would be heard.
async fn until_driver_ends<T>(requests: &mut mpsc::Receiver<ToUser>, work: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        biased;
        output = work => Some(output),
        _ = requests.recv() => None,
    }
}

/// The machine's outcome from a driver's end, or the error that ended it.
fn driver_outcome(finished: Result<DriverResult, oneshot::error::RecvError>) -> Result<Outcome, RunError> {
    match finished {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(unexpected)) => Err(RunError::Driver(unexpected)),
        // The task was dropped without an answer: the runtime is shutting down.
        Err(_) => {
            tracing::warn!("the driver task ended without an outcome");
            Err(RunError::Cancelled)
        }
    }
}

fn outcome_error(outcome: Outcome, last_error: &LastError) -> RunError {
    match outcome {
        Outcome::GaveUp { attempts } => RunError::GaveUp { attempts, last: last_error.get(), section_error: None },
        Outcome::LeaseLost { fence } => RunError::LeaseLost { fence },
        Outcome::Cancelled => RunError::Cancelled,
        Outcome::Failed(Failure::Unavailable) => RunError::Unavailable(last_error.get()),
        Outcome::Failed(Failure::Rejected) => RunError::Rejected(last_error.get()),
        Outcome::Failed(Failure::NeedCheck) => RunError::NeedCheck("need check failed".into()),
        // Successes are mapped by the callers; reaching here is a driver bug.
        Outcome::Executed { .. } | Outcome::Released { .. } | Outcome::NotNeeded | Outcome::DoneByOther { .. } => {
            RunError::Driver(UnexpectedEvent {
                state: spanner_mutex_model::Phase::Finished,
                event: "a success where a failure was expected",
            })
        }
    }
}

/// A held lease lock: its [`LeaseHandle`] (by `Deref`: the fence, the lock-lost signal, fenced writes). Renews in
/// the background; released by
/// [`LockGuard::release`], or on drop (in the background, at once rather than after the TTL;
/// [`SpannerMutex::shutdown`] waits for it).
#[derive(Debug)]
#[must_use = "dropping the guard releases the lock at once"]
pub struct LockGuard {
    // Boxed: a guard is moved around (returned, stored in enums) far more often than it is created.
    handle: Box<LeaseHandle>,
    answers: mpsc::Sender<Event>,
    finished: oneshot::Receiver<DriverResult>,
    last_error: LastError,
}
impl std::ops::Deref for LockGuard {
    type Target = LeaseHandle;
    fn deref(&self) -> &LeaseHandle {
        &self.handle
    }
}

impl LockGuard {
    /// Releases the lock and waits until the release committed: `Ok` with the fence held. `Err(LeaseLost)` if
    /// someone took it over first; `Err(ReleaseUnconfirmed)` if the release could not be confirmed (the row then
    /// expires at its TTL); `Err(Cancelled)` if the mutex was shut down first (which released it).
    pub async fn release(self) -> Result<Fence, RunError> {
        let Self { handle, answers, finished, last_error } = self;
        let fence = handle.fence();
        let _ = answers.send(Event::ReleaseRequested).await;
        let result = finished.await;
        drop(answers);
        match driver_outcome(result)? {
            Outcome::Released { fence } => Ok(fence),
            Outcome::Failed(Failure::Unavailable) => {
                Err(RunError::ReleaseUnconfirmed { fence, cause: last_error.get() })
            }
            outcome => Err(outcome_error(outcome, &last_error)),
        }
    }
}
