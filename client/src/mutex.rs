//! The user-facing API: run a critical section once across a fleet, or hold a lease lock.

use crate::driver::{Clock, Ctx, Op, feed, finish_cancelled};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::store::{LeaseStore, StoreError};
use spanner_mutex_model::{
    ClientId, ClientMachine, Command, Config, Event, Failure, Fence, LocalInstant, MutexName, Outcome, SectionResult,
    UnexpectedEvent,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// Errors from user code.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The user's run-once work.
pub trait CriticalSection<S>: Send + Sync {
    /// Whether the work still needs doing. Check the *effect* (e.g. the migrations table), never the mutex row.
    /// Called before acquiring and again under the lease.
    fn is_needed(&self) -> impl Future<Output = Result<bool, BoxError>> + Send;

    /// Does the work while the lease is held. Keep effects in Spanner writes made through
    /// [`SectionGuard::fenced`] for exactly-once; select on [`SectionGuard::lock_lost`] to stop early.
    fn execute(&self, guard: &SectionGuard<S>) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// A held lease as its holder sees it: what [`SectionGuard`] and [`LockGuard`] both give (through `Deref`).
#[derive(Debug)]
pub struct Lease {
    client: ClientId,
    fence: Fence,
    deadline: watch::Receiver<tokio::time::Instant>,
    lost: CancellationToken,
}

impl Lease {
    /// The fence token of this acquisition: strictly greater than every earlier holder's.
    pub const fn fence(&self) -> Fence {
        self.fence
    }

    /// This holder's client id (the row's `holder`).
    pub const fn client(&self) -> ClientId {
        self.client
    }

    /// Until when the lease is proven held on the local monotonic clock; renewals push it later.
    pub fn deadline(&self) -> tokio::time::Instant {
        *self.deadline.borrow()
    }

    /// Resolves when the lease can no longer be proven held. Select on it to stop work early.
    pub fn lock_lost(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.lost.cancelled()
    }

    /// Whether the lock-lost signal has been given.
    pub fn is_lock_lost(&self) -> bool {
        self.lost.is_cancelled()
    }
}

/// What a critical section gets while it runs: the [`Lease`] (by `Deref`) and fenced writes.
#[derive(Debug)]
pub struct SectionGuard<S> {
    pub(crate) ctx: Ctx<S>,
    lease: Lease,
}

impl<S> std::ops::Deref for SectionGuard<S> {
    type Target = Lease;
    fn deref(&self) -> &Lease {
        &self.lease
    }
}

impl SectionGuard<crate::MemoryStore> {
    /// Runs `work` on the in-memory store's user data only while the lease is still held with this fence,
    /// atomically with that check.
    pub fn fenced<T>(
        &self,
        work: impl FnOnce(&mut std::collections::BTreeMap<String, String>) -> T,
    ) -> Result<T, crate::memory::FenceRejected> {
        self.ctx.store.fenced(&self.ctx.cfg, &self.ctx.name, self.lease.client, self.lease.fence, work)
    }
}

impl SectionGuard<crate::FaultyStore<crate::MemoryStore>> {
    /// [`SectionGuard::<MemoryStore>::fenced`] through the fault-injecting wrapper (fenced writes are not faulted).
    pub fn fenced<T>(
        &self,
        work: impl FnOnce(&mut std::collections::BTreeMap<String, String>) -> T,
    ) -> Result<T, crate::memory::FenceRejected> {
        self.ctx.store.inner().fenced(&self.ctx.cfg, &self.ctx.name, self.lease.client, self.lease.fence, work)
    }
}

impl<S> SectionGuard<S> {
    pub(crate) const fn ctx(&self) -> &Ctx<S> {
        &self.ctx
    }
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
    },
}

/// Why `run` or a lock operation did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The client waited and retried more than `max_retries` times.
    #[error("gave up after {attempts} attempts")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
    },
    /// The section finished (or the lock was released) after another client had taken the lease over; its
    /// fenced writes were refused from that moment on.
    #[error("lease with {fence} was lost before the section finished")]
    LeaseLost {
        /// The lost fence.
        fence: Fence,
    },
    /// Spanner did not answer within the configured bound.
    #[error("Spanner unavailable: {0}")]
    Unavailable(String),
    /// Spanner refused the operation (missing table, wrong schema, permission).
    #[error("Spanner refused the operation: {0}")]
    Rejected(String),
    /// The user's need check failed.
    #[error("need check failed: {0}")]
    NeedCheck(#[source] BoxError),
    /// The run was cancelled; any lease it held was released.
    #[error("cancelled")]
    Cancelled,
    /// A driver bug: the machine refused an event.
    #[error("protocol driver bug: {0}")]
    Driver(#[from] UnexpectedEvent),
}

/// A mutex on one row of a lease table.
#[derive(Clone, Debug)]
pub struct SpannerMutex<S> {
    store: S,
    cfg: Config,
    name: MutexName,
    display_name: String,
    metrics: Arc<Metrics>,
}

impl<S: LeaseStore> SpannerMutex<S> {
    /// A mutex named `name` on `store` with protocol configuration `cfg`; `display_name` is written to the row
    /// for people reading it.
    pub fn new(store: S, cfg: Config, name: MutexName, display_name: impl Into<String>) -> Self {
        Self { store, cfg, name, display_name: display_name.into(), metrics: Arc::default() }
    }

    /// The mutex name.
    pub const fn name(&self) -> &MutexName {
        &self.name
    }

    /// The store.
    pub const fn store(&self) -> &S {
        &self.store
    }

    /// The protocol configuration.
    pub const fn config(&self) -> &Config {
        &self.cfg
    }

    /// The counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    fn ctx(&self) -> Ctx<S> {
        Ctx {
            store: self.store.clone(),
            cfg: self.cfg.clone(),
            name: self.name.clone(),
            metrics: Arc::clone(&self.metrics),
            last_error: Arc::default(),
        }
    }

    fn new_client() -> ClientId {
        ClientId::from_uuid(uuid::Uuid::new_v4())
    }

    /// Runs `section` once across every client of this mutex: checks need, acquires, checks need again under
    /// the lease, runs it with renewals, and records DONE (FAILED and retry on error). Dropping the returned
    /// future releases a held lease in the background.
    pub async fn run<C: CriticalSection<S>>(&self, section: &C) -> Result<RunOutcome, RunError> {
        let ctx = self.ctx();
        let clock = Clock::new();
        let machine = ClientMachine::run_once(Self::new_client(), self.display_name.clone(), &self.cfg);
        let span = tracing::info_span!("run", mutex = %self.name, client = %machine.id());
        let _entered = span.enter();
        let mut driver = RunDriver { ctx: ctx.clone(), clock, machine: Some(machine), op: None };
        let result = driver.run(section).await;
        match result? {
            Outcome::Executed { fence } => Ok(RunOutcome::Executed { fence }),
            Outcome::NotNeeded => Ok(RunOutcome::NotNeeded),
            Outcome::DoneByOther { holder, fence } => Ok(RunOutcome::DoneByOther { holder, fence }),
            other => Err(outcome_error(other, &ctx)),
        }
    }

    /// Waits for the lock, retrying without limit; the returned guard renews in the background.
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
        let clock = Clock::new();
        let machine = ClientMachine::lock(Self::new_client(), self.display_name.clone(), max_retries);
        let (granted_tx, granted_rx) = oneshot::channel();
        let (control_tx, control_rx) = mpsc::channel(1);
        let (finished_tx, finished_rx) = oneshot::channel();
        let lost = CancellationToken::new();
        tokio::spawn(lock_task(ctx.clone(), clock, machine, granted_tx, control_rx, finished_tx, lost.clone()));
        // Dropping `control_tx` (this future cancelled, or the guard dropped) cancels the lock task, which
        // then releases whatever it holds or wins.
        match granted_rx.await {
            Ok(Grant { fence, client, deadline }) => {
                let lease = Lease { client, fence, deadline, lost };
                Ok(LockGuard { lease, control: control_tx, finished: Some(finished_rx) })
            }
            Err(_) => {
                let outcome = finished_rx.await.unwrap_or(Outcome::Cancelled);
                Err(outcome_error(outcome, &ctx))
            }
        }
    }
}

fn outcome_error<S: LeaseStore>(outcome: Outcome, ctx: &Ctx<S>) -> RunError {
    let message = || ctx.last_error().map_or_else(|| "no detail".to_owned(), |e: StoreError| e.message);
    match outcome {
        Outcome::GaveUp { attempts } => RunError::GaveUp { attempts },
        Outcome::LeaseLost { fence } => RunError::LeaseLost { fence },
        Outcome::Cancelled => RunError::Cancelled,
        Outcome::Failed(Failure::Unavailable) => RunError::Unavailable(message()),
        Outcome::Failed(Failure::Rejected) => RunError::Rejected(message()),
        Outcome::Failed(Failure::NeedCheck) => RunError::NeedCheck("need check failed".into()),
        // Successes are mapped by the callers; reaching here is a driver bug.
        Outcome::Executed { .. } | Outcome::Released { .. } | Outcome::NotNeeded | Outcome::DoneByOther { .. } => {
            RunError::Driver(UnexpectedEvent { state: "Finished", event: "a success where a failure was expected" })
        }
    }
}

/// Drives one run-once machine; if dropped mid-run, finishes the machine in the background (release on cancel).
struct RunDriver<S: LeaseStore> {
    ctx: Ctx<S>,
    clock: Clock,
    machine: Option<ClientMachine>,
    op: Option<Op>,
}

impl<S: LeaseStore> Drop for RunDriver<S> {
    fn drop(&mut self) {
        if let Some(machine) = self.machine.take()
            && machine.outcome().is_none()
        {
            finish_cancelled(self.ctx.clone(), machine, self.clock, self.op.take());
        }
    }
}

impl<S: LeaseStore> RunDriver<S> {
    async fn run<C: CriticalSection<S>>(&mut self, section: &C) -> Result<Outcome, RunError> {
        let (ctx, clock) = (self.ctx.clone(), self.clock);
        let cfg = &ctx.cfg;
        let mut command = self.machine.as_mut().and_then(|m| m.start(clock.now()));
        let mut need_error: Option<BoxError> = None;
        let mut section_run: Option<std::pin::Pin<Box<dyn Future<Output = SectionResult> + Send + '_>>> = None;
        let mut signals: Option<(watch::Sender<tokio::time::Instant>, CancellationToken)> = None;
        loop {
            let machine = self.machine.as_mut().expect("present until dropped");
            match command.take() {
                None => {}
                Some(Command::CheckNeed) => {
                    let answer = section.is_needed().await;
                    let event = match answer {
                        Ok(needed) => Event::NeedAnswered { needed },
                        Err(error) => {
                            need_error = Some(error);
                            Event::NeedCheckFailed
                        }
                    };
                    command = feed(machine, cfg, clock, event)?;
                    continue;
                }
                Some(Command::RunTxn(request)) => self.op = Some(ctx.txn(request)),
                Some(Command::ReadRow) => self.op = Some(ctx.read()),
                Some(Command::RunSection { fence, deadline }) => {
                    let (deadline_tx, deadline_rx) = watch::channel(clock.instant(deadline));
                    let lost = CancellationToken::new();
                    let lease = Lease { client: machine.id(), fence, deadline: deadline_rx, lost: lost.clone() };
                    let guard = SectionGuard { ctx: ctx.clone(), lease };
                    signals = Some((deadline_tx, lost));
                    section_run = Some(Box::pin(async move {
                        match section.execute(&guard).await {
                            Ok(()) => SectionResult::Completed,
                            Err(error) => SectionResult::Failed { error: error.to_string() },
                        }
                    }));
                }
                Some(Command::SignalLockLost { fence }) => {
                    tracing::warn!(%fence, "lock lost: the lease can no longer be proven held");
                    ctx.metrics.lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if let Some((_, lost)) = &signals {
                        lost.cancel();
                    }
                }
                Some(Command::Granted { .. }) => {
                    return Err(RunError::Driver(UnexpectedEvent { state: machine.state_name(), event: "Granted" }));
                }
                Some(Command::Finish(outcome)) => {
                    tracing::info!(?outcome, "run finished");
                    if let (Outcome::Failed(Failure::NeedCheck), Some(error)) = (&outcome, need_error.take()) {
                        return Err(RunError::NeedCheck(error));
                    }
                    return Ok(outcome);
                }
            }
            if let (Some((deadline_tx, _)), Some(lease)) = (&signals, machine.lease()) {
                let _ = deadline_tx.send(clock.instant(lease.deadline));
            }
            let timeout = machine.poll_timeout(cfg).map(|at: LocalInstant| clock.instant(at));
            let op = &mut self.op;
            tokio::select! {
                event = async { match op.as_mut() { Some(f) => f.await, None => std::future::pending().await } } => {
                    self.op = None;
                    let machine = self.machine.as_mut().expect("present until dropped");
                    command = feed(machine, cfg, clock, event)?;
                }
                result = async { match section_run.as_mut() { Some(f) => f.await, None => std::future::pending().await } } => {
                    section_run = None;
                    signals = None;
                    let machine = self.machine.as_mut().expect("present until dropped");
                    command = feed(machine, cfg, clock, Event::SectionFinished(result))?;
                }
                () = async { match timeout { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                    let machine = self.machine.as_mut().expect("present until dropped");
                    command = machine.handle_timeout(cfg, clock.now());
                }
            }
        }
    }
}

struct Grant {
    fence: Fence,
    client: ClientId,
    deadline: watch::Receiver<tokio::time::Instant>,
}

enum Control {
    Release,
}

/// A held lease lock: the [`Lease`] (by `Deref`). Renews in the background; released by
/// [`LockGuard::release`], or on drop (in the background, at once rather than after the TTL).
#[derive(Debug)]
pub struct LockGuard {
    lease: Lease,
    control: mpsc::Sender<Control>,
    finished: Option<oneshot::Receiver<Outcome>>,
}

impl std::ops::Deref for LockGuard {
    type Target = Lease;
    fn deref(&self) -> &Lease {
        &self.lease
    }
}

impl LockGuard {
    /// Releases the lock and waits for the release to commit. `Err(LeaseLost)` if someone took it over first.
    pub async fn release(mut self) -> Result<Fence, RunError> {
        let _ = self.control.send(Control::Release).await;
        let finished = self.finished.take().expect("taken only here");
        match finished.await.unwrap_or(Outcome::Cancelled) {
            Outcome::Released { fence } => Ok(fence),
            Outcome::LeaseLost { fence } => Err(RunError::LeaseLost { fence }),
            _ => Err(RunError::Cancelled),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn lock_task<S: LeaseStore>(
    ctx: Ctx<S>,
    clock: Clock,
    mut machine: ClientMachine,
    granted: oneshot::Sender<Grant>,
    mut control: mpsc::Receiver<Control>,
    finished: oneshot::Sender<Outcome>,
    lost: CancellationToken,
) {
    let cfg = ctx.cfg.clone();
    let mut granted = Some(granted);
    let mut deadline_tx: Option<watch::Sender<tokio::time::Instant>> = None;
    let mut op: Option<Op> = None;
    let mut command = machine.start(clock.now());
    let mut control_open = true;
    loop {
        match command.take() {
            None => {}
            Some(Command::RunTxn(request)) => op = Some(ctx.txn(request)),
            Some(Command::ReadRow) => op = Some(ctx.read()),
            Some(Command::Granted { fence, deadline }) => {
                let (tx, rx) = watch::channel(clock.instant(deadline));
                deadline_tx = Some(tx);
                let grant = Grant { fence, client: machine.id(), deadline: rx };
                if granted.take().is_some_and(|g| g.send(grant).is_err()) {
                    // The acquirer went away between asking and the grant: release at once.
                    command = feed(&mut machine, &cfg, clock, Event::Cancel).ok().flatten();
                    continue;
                }
            }
            Some(Command::SignalLockLost { fence }) => {
                tracing::warn!(mutex = %ctx.name, %fence, "lock lost");
                ctx.metrics.lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                lost.cancel();
            }
            Some(Command::Finish(outcome)) => {
                let _ = finished.send(outcome);
                return;
            }
            Some(Command::CheckNeed | Command::RunSection { .. }) => {
                tracing::error!("lock machine asked for a run-once command");
                let _ = finished.send(Outcome::Cancelled);
                return;
            }
        }
        if let (Some(tx), Some(lease)) = (&deadline_tx, machine.lease()) {
            let _ = tx.send(clock.instant(lease.deadline));
        }
        let timeout = machine.poll_timeout(&cfg).map(|at| clock.instant(at));
        tokio::select! {
            event = async { match op.as_mut() { Some(f) => f.await, None => std::future::pending().await } } => {
                op = None;
                command = feed(&mut machine, &cfg, clock, event).ok().flatten();
            }
            message = control.recv(), if control_open => {
                control_open = message.is_some();
                let event = if message.is_some() { Event::ReleaseRequested } else { Event::Cancel };
                command = feed(&mut machine, &cfg, clock, event).ok().flatten();
            }
            () = async { match timeout { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                command = machine.handle_timeout(&cfg, clock.now());
            }
        }
    }
}
