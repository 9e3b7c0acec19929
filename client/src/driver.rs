//! The tokio driver: executes the machine's commands against a store and feeds the results back. It makes no
//! lease decision; every branch here is "do what the command says".
//!
//! One driver runs every client (run-once, lock, and whatever a cancel leads to) on a task of its own, so the
//! machine's timers and store calls never wait for user code. User callbacks (the need check, the section, the
//! lock holder) run on the caller's task; the driver asks for them with [`ToUser`] and hears their answers as
//! events. A caller that goes away (its future dropped, its guard dropped) or a mutex shut down is a
//! [`Event::Cancel`]; whatever that means in the current state is the machine's decision.

use crate::backend::Store;
use crate::clock::{Clock, JUMP_CHECK};
use crate::lease::{Lease, RunSilence};
use crate::metrics::Metrics;
use crate::store::{RowRead, StoreError, StoreErrorKind};
use spanner_mutex_model::{
    ClientMachine, Command, Config, Event, LocalInstant, MutexName, Outcome, TxnReply, TxnRequest, UnexpectedEvent,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// An operation in flight. Built from owned clones so it can outlive a cancelled caller.
pub(crate) type Op = Pin<Box<dyn Future<Output = Event> + Send + 'static>>;

/// The last store error of one client, kept for the error its caller sees.
#[derive(Clone, Debug, Default)]
pub(crate) struct LastError(Arc<std::sync::Mutex<Option<StoreError>>>);

impl LastError {
    fn remember(&self, error: &StoreError) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error.clone());
    }

    /// The last error, if any.
    pub(crate) fn get(&self) -> Option<StoreError> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// Everything an operation needs, cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Ctx {
    pub(crate) store: Store,
    pub(crate) cfg: Config,
    pub(crate) name: MutexName,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) last_error: LastError,
}

impl Ctx {
    /// A transaction as an operation.
    pub(crate) fn txn(&self, request: TxnRequest) -> Op {
        let ctx = self.clone();
        Box::pin(async move {
            let result = ctx.store.transact(&ctx.cfg, &ctx.name, &request).await;
            ctx.metrics.record_txn(&request, &result);
            if let Err(error) = &result {
                tracing::debug!(mutex = %ctx.name, ?request, %error, "transaction did not commit cleanly");
                ctx.last_error.remember(error);
            }
            txn_event(result)
        })
    }

    /// A single-use read as an operation.
    pub(crate) fn read(&self) -> Op {
        let ctx = self.clone();
        Box::pin(async move {
            ctx.metrics.record_read();
            let result = ctx.store.read(&ctx.name).await;
            if let Err(error) = &result {
                ctx.last_error.remember(error);
            }
            read_event(result)
        })
    }
}

/// What the machine is told about a transaction's result: the driver's one mapping from store errors to
/// protocol events (exported with `test-util`, so the conformance tests drive stores through exactly this code).
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]
pub fn txn_event(result: Result<TxnReply, StoreError>) -> Event {
    match result {
        Ok(reply) => Event::TxnCommitted(reply),
        Err(error) => match error.kind {
            StoreErrorKind::Aborted => Event::TxnAborted,
            StoreErrorKind::Unknown => Event::TxnOutcomeUnknown,
            StoreErrorKind::Unavailable | StoreErrorKind::Rejected => Event::TxnFailed(error.failure()),
        },
    }
}

/// What the machine is told about a single-use read's result; see [`txn_event`].
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]
pub fn read_event(result: Result<RowRead, StoreError>) -> Event {
    match result {
        Ok((row, server_now)) => Event::RowRead { row, server_now },
        Err(error) => Event::ReadFailed(error.failure()),
    }
}

/// What the driver asks of the user's side; each is answered with one event before the next is asked.
#[derive(Debug)]
pub(crate) enum ToUser {
    /// Run the need check; answer [`Event::NeedAnswered`] or [`Event::NeedCheckFailed`].
    CheckNeed,
    /// Run the section under this lease; answer [`Event::SectionFinished`].
    RunSection(Lease),
    /// The lock is granted; answer [`Event::ReleaseRequested`] (or go away: a cancel).
    Granted(Lease),
}

/// How a driver ended: the machine's outcome, or the event it refused (a driver bug, reported, never a hang).
pub(crate) type DriverResult = Result<Outcome, UnexpectedEvent>;

/// The caller's end of a running driver. Dropping it cancels the run.
#[derive(Debug)]
pub(crate) struct UserSide {
    /// Requests for user callbacks; closed when the driver has ended.
    pub(crate) requests: mpsc::Receiver<ToUser>,
    /// Answers to them; dropping this is a cancel.
    pub(crate) answers: mpsc::Sender<Event>,
    /// The driver's end.
    pub(crate) finished: oneshot::Receiver<DriverResult>,
}

/// Starts a driver for `machine` on its own task, tracked by `tasks` so a shutdown can wait for it; `shutdown`
/// cancels it.
pub(crate) fn spawn(
    ctx: Ctx,
    machine: ClientMachine,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
    clock: Clock,
) -> UserSide {
    // One request (or answer) is outstanding at a time; the second slot keeps a send from ever waiting.
    let (to_user, requests) = mpsc::channel(2);
    let (answers, from_user) = mpsc::channel(2);
    let (done, finished) = oneshot::channel();
    let (unavailable_since, since) = watch::channel(None);
    let (reports, fenced_reports) = mpsc::unbounded_channel();
    let run_silence = RunSilence { since, reports, clock: clock.clone() };
    let span = tracing::info_span!("client", mutex = %ctx.name, client = %machine.id(), mode = ?machine.mode());
    let driver = Driver {
        ctx,
        clock,
        machine,
        to_user,
        from_user: Some(from_user),
        shutdown,
        lease: None,
        waiting_since: Some(Instant::now()),
        unavailable_since,
        fenced_reports,
        run_silence,
    };
    tasks.spawn(tracing::Instrument::instrument(
        async move {
            let result = driver.run().await;
            if let Err(error) = &result {
                tracing::error!(%error, "protocol driver bug; the run ends with an error");
            }
            let _ = done.send(result);
        },
        span,
    ));
    UserSide { requests, answers, finished }
}

/// The signals of the lease handed to user code: its deadline and the lock-lost token.
struct LeaseSignals {
    deadline: watch::Sender<Instant>,
    lost: CancellationToken,
    /// For the hold-time histogram.
    granted_at: Instant,
    metrics: Arc<Metrics>,
}

impl Drop for LeaseSignals {
    /// When the driver stops tracking a lease (released, lost, or the driver ended), user code must not go on
    /// relying on it.
    fn drop(&mut self) {
        self.metrics.record_hold(self.granted_at.elapsed());
        // The deadline too: after a suspension the last one sent may still lie ahead on tokio's clock.
        self.deadline.send_replace(Instant::now());
        self.lost.cancel();
    }
}

struct Driver {
    ctx: Ctx,
    clock: Clock,
    machine: ClientMachine,
    to_user: mpsc::Sender<ToUser>,
    /// `None` once the user is gone or the run was cancelled: later answers cannot matter.
    from_user: Option<mpsc::Receiver<Event>>,
    shutdown: CancellationToken,
    lease: Option<LeaseSignals>,
    /// When the driver started, until its first lease: for the acquire-wait histogram.
    waiting_since: Option<Instant>,
    /// The machine's unavailability clock, published for the lease's fenced writes.
    unavailable_since: watch::Sender<Option<LocalInstant>>,
    /// Whether Spanner answered the fenced writes, as they report it.
    fenced_reports: mpsc::UnboundedReceiver<Event>,
    /// What each lease's fenced writes share the clock through.
    run_silence: RunSilence,
}

impl Driver {
    async fn run(mut self) -> DriverResult {
        let mut op: Option<Op> = None;
        let mut command = self.machine.start(self.clock.now());
        let mut alarm = self.clock.alarm();
        loop {
            match command.take() {
                None => {}
                Some(Command::RunTxn(request)) => op = Some(self.ctx.txn(request)),
                Some(Command::ReadRow) => op = Some(self.ctx.read()),
                Some(Command::CheckNeed) => {
                    command = self.ask(ToUser::CheckNeed)?;
                    continue;
                }
                Some(Command::RunSection { fence, deadline }) => {
                    let lease = self.new_lease(fence, deadline);
                    command = self.ask(ToUser::RunSection(lease))?;
                    continue;
                }
                Some(Command::Granted { fence, deadline }) => {
                    let lease = self.new_lease(fence, deadline);
                    command = self.ask(ToUser::Granted(lease))?;
                    continue;
                }
                Some(Command::SignalLockLost { fence }) => {
                    tracing::warn!(fence = fence.get(), "lock lost: the lease can no longer be proven held");
                    self.ctx.metrics.record_lost();
                    self.lease = None;
                }
                Some(Command::Finish(outcome)) => {
                    tracing::info!(?outcome, "finished");
                    return Ok(outcome);
                }
            }
            self.follow_lease();
            let due = self.machine.poll_timeout();
            let timeout = due.map(|at| self.clock.instant(at));
            // A suspension moves the clock without any tokio timer firing. The alarm counts it; without one, a
            // holder looks at the clock at least every JUMP_CHECK, since its deadline counts it.
            let timeout = match (timeout, self.machine.lease(), &alarm) {
                (Some(at), Some(_), None) => Some(at.min(Instant::now() + JUMP_CHECK)),
                (timeout, ..) => timeout,
            };
            let alarm_after =
                due.map(|at| Duration::from_micros(at.micros().saturating_sub(self.clock.now().micros())));
            if op.is_none() && timeout.is_none() && self.from_user.is_none() {
                // Nothing can wake the machine again: a driver bug, reported instead of hanging.
                return Err(UnexpectedEvent { state: self.machine.phase(), event: "nothing left to wait for" });
            }
            let listening = self.from_user.is_some();
            let from_user = self.from_user.as_mut();
            // Biased, in this order, so a run replays exactly in virtual time: a store answer is a fact the
            // machine should know before a timer due at the same instant fires.
            tokio::select! {
                biased;
                event = async { match op.as_mut() { Some(f) => f.await, None => std::future::pending().await } } => {
                    op = None;
                    command = self.feed(event)?;
                }
                Some(report) = self.fenced_reports.recv() => command = self.feed(report)?,
                answer = async { match from_user { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                    command = match answer {
                        Some(event) => self.feed(event)?,
                        None => self.cancel()?,
                    };
                }
                () = self.shutdown.cancelled(), if listening => command = self.cancel()?,
                () = async { match timeout { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                    command = self.machine.handle_timeout(&self.ctx.cfg, self.clock.now());
                }
                () = async { match (alarm.as_mut(), alarm_after) { (Some(a), Some(after)) => a.wait(after).await, _ => std::future::pending().await } } => {
                    // Early (the tokio timer is the precise one) this is a no-op: the machine acts only on what is due.
                    command = self.machine.handle_timeout(&self.ctx.cfg, self.clock.now());
                }
            }
        }
    }

    /// Feeds an event to the machine, tracing the transition.
    fn feed(&mut self, event: Event) -> Result<Option<Command>, UnexpectedEvent> {
        let from = self.machine.phase().name();
        // Formatted only when traced: this runs on every event of every client.
        let traced = tracing::enabled!(tracing::Level::TRACE).then(|| format!("{event:?}"));
        let command = self.machine.handle(&self.ctx.cfg, self.clock.now(), event)?;
        self.unavailable_since.send_if_modified(|since| {
            let changed = *since != self.machine.unavailable_since();
            *since = self.machine.unavailable_since();
            changed
        });
        if let Some(event) = traced {
            tracing::trace!(from, to = self.machine.phase().name(), event, ?command, "transition");
        }
        Ok(command)
    }

    /// The user is gone or the mutex shut down: the machine decides what that means; answers are no longer read.
    fn cancel(&mut self) -> Result<Option<Command>, UnexpectedEvent> {
        self.from_user = None;
        self.feed(Event::Cancel)
    }

    /// Hands a request to the user's side; a user who is no longer there is a cancel.
    fn ask(&mut self, request: ToUser) -> Result<Option<Command>, UnexpectedEvent> {
        if self.from_user.is_some() && self.to_user.try_send(request).is_ok() { Ok(None) } else { self.cancel() }
    }

    fn new_lease(&mut self, fence: spanner_mutex_model::Fence, deadline: LocalInstant) -> Lease {
        let (deadline_tx, deadline_rx) = watch::channel(self.clock.instant(deadline));
        let lost = CancellationToken::new();
        let (granted_at, metrics) = (Instant::now(), Arc::clone(&self.ctx.metrics));
        if let Some(started) = self.waiting_since.take() {
            metrics.record_acquire_wait(granted_at - started);
        }
        self.lease = Some(LeaseSignals { deadline: deadline_tx, lost: lost.clone(), granted_at, metrics });
        Lease::new(self.machine.id(), fence, deadline_rx, lost, self.run_silence.clone())
    }

    /// Keeps the user's view of the lease in step with the machine: renewals move the deadline; once the machine
    /// no longer holds the lease (lost, released, cancelled) the lock-lost signal fires.
    fn follow_lease(&mut self) {
        match (self.machine.lease(), &self.lease) {
            (Some(held), Some(signals)) if !held.lost => {
                signals.deadline.send_replace(self.clock.instant(held.deadline));
            }
            _ => self.lease = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use crate::clock::{Alarm, Suspension};
    use spanner_mutex_model::ConfigParams;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;
    use tokio::sync::Notify;

    /// A computer that is suspended when the test says so, with or without a timer that counts it.
    #[derive(Debug, Default)]
    struct Sleeps {
        suspended_ms: AtomicU64,
        has_alarm: bool,
        resumed: Arc<Notify>,
    }

    impl Sleeps {
        /// The computer slept `ms`; like the kernel's CLOCK_BOOTTIME timers, alarms look at the clock on waking.
        fn suspend(&self, ms: u64) {
            self.suspended_ms.fetch_add(ms, Ordering::SeqCst);
            self.resumed.notify_waiters();
        }
    }

    impl Suspension for Sleeps {
        fn suspended(&self) -> Duration {
            Duration::from_millis(self.suspended_ms.load(Ordering::SeqCst))
        }

        fn alarm(&self) -> Option<Box<dyn Alarm>> {
            self.has_alarm.then(|| Box::new(WakesOnResume(Arc::clone(&self.resumed))) as Box<dyn Alarm>)
        }
    }

    /// Fires after its time on tokio's clock, or on waking (the driver then finds out what is due).
    struct WakesOnResume(Arc<Notify>);

    impl Alarm for WakesOnResume {
        fn wait(&mut self, after: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
            Box::pin(async move {
                tokio::select! {
                    () = tokio::time::sleep(after) => {}
                    () = self.0.notified() => {}
                }
            })
        }
    }

    /// Holds a lock, is suspended for two TTLs (tokio's monotonic clock does not move meanwhile), and returns how
    /// long after waking, on tokio's clock, the lock-lost signal came.
    async fn lock_lost_after_a_suspension(has_alarm: bool) -> Duration {
        // The next renewal is 3 s away; only the deadline, counted with the suspension, can signal the loss.
        let cfg = ConfigParams::default().validate().expect("valid");
        let name = MutexName::new("suspended").expect("valid");
        let ctx = Ctx {
            store: MemoryStore::new().into(),
            cfg: cfg.clone(),
            name: name.clone(),
            metrics: Arc::default(),
            last_error: LastError::default(),
        };
        let machine = ClientMachine::lock(spanner_mutex_model::ClientId::from_u128(1), "holder", 0);
        let sleeps = Arc::new(Sleeps { has_alarm, ..Sleeps::default() });
        let clock = Clock::counting(Arc::clone(&sleeps) as Arc<dyn Suspension>);
        let tasks = TaskTracker::new();
        let mut user = spawn(ctx, machine, &tasks, CancellationToken::new(), clock);
        let Some(ToUser::Granted(lease)) = user.requests.recv().await else { panic!("granted") };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!lease.is_lock_lost());
        sleeps.suspend(2 * cfg.ttl_ms());
        let woke = Instant::now();
        tokio::time::timeout(JUMP_CHECK + Duration::from_millis(1), lease.lock_lost())
            .await
            .expect("lock-lost within one jump check of waking");
        let after = woke.elapsed();
        assert!(lease.deadline() <= Instant::now(), "a lost lease's deadline is not ahead");
        drop(user.answers);
        tasks.close();
        tasks.wait().await;
        after
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_suspended_past_its_deadline_is_told_the_lock_is_lost_at_once_on_waking() {
        assert_eq!(lock_lost_after_a_suspension(true).await, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_timer_that_counts_suspension_a_holder_is_told_within_one_jump_check() {
        let after = lock_lost_after_a_suspension(false).await;
        assert!(Duration::ZERO < after && after <= JUMP_CHECK, "{after:?}");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_boot_time_alarm_fires_after_its_time_and_rearming_replaces_it() {
        // Real time: a suspension cannot be injected here, so this shows the timerfd plumbing, not the kernel.
        let mut alarm = Clock::new().alarm().expect("Linux has CLOCK_BOOTTIME timers");
        let started = std::time::Instant::now();
        alarm.wait(Duration::from_millis(20)).await;
        assert!(started.elapsed() >= Duration::from_millis(20));
        // A far wait dropped unfired, then a near one: only the second counts.
        drop(tokio::time::timeout(Duration::from_millis(5), alarm.wait(Duration::from_secs(3_600))).await);
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(10), alarm.wait(Duration::from_millis(10))).await.expect("fires");
        assert!(started.elapsed() >= Duration::from_millis(10));
    }
}
