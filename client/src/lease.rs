//! A held lease as its holder sees it, and what a fenced write did: the types the driver, the stores and the API
//! share (kept apart from the API so that neither the driver nor a store depends on it).

use crate::clock::Clock;
use crate::future::Compiled;
use google_cloud_spanner::mutation::Mutation;
use google_cloud_spanner::transaction::ReadWriteTransaction;
use spanner_mutex_model::{ClientId, Config, Event, Fence, LocalInstant, may_retry_fenced_write};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// A held lease as its holder sees it: what [`crate::LeaseHandle`] and [`crate::LockGuard`] both give (through `Deref`).
#[derive(Debug)]
pub struct Lease {
    client: ClientId,
    fence: Fence,
    deadline: watch::Receiver<tokio::time::Instant>,
    lost: CancellationToken,
    unanswered: RunSilence,
}

impl Lease {
    pub(crate) const fn new(
        client: ClientId,
        fence: Fence,
        deadline: watch::Receiver<tokio::time::Instant>,
        lost: CancellationToken,
        unanswered: RunSilence,
    ) -> Self {
        Self { client, fence, deadline, lost, unanswered }
    }

    /// Whether the lease can no longer be relied on: the lock-lost signal fired, or its deadline has come (the
    /// driver may not have acted on it yet, in this same instant).
    pub(crate) fn is_past(&self) -> bool {
        self.is_lock_lost() || tokio::time::Instant::now() >= self.deadline()
    }

    /// The run's unavailability clock, for this lease's fenced writes.
    pub(crate) fn unanswered(&self) -> RunSilence {
        self.unanswered.clone()
    }

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

    /// [`Self::lock_lost`] as an owned future, for a task spawned to do the lease's work.
    pub fn lock_lost_owned(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.lost.clone().cancelled_owned()
    }

    /// Whether the lock-lost signal has been given.
    pub fn is_lock_lost(&self) -> bool {
        self.lost.is_cancelled()
    }
}

/// The run's unavailability clock as its fenced writes share it with the machine, which keeps it: the driver
/// publishes since when the run's calls have gone unanswered, and each fenced write tells the machine whether
/// Spanner answered it (as [`Event::FencedWriteAnswered`] or [`Event::FencedWriteUnanswered`]).
#[derive(Clone, Debug)]
pub(crate) struct RunSilence {
    pub(crate) since: watch::Receiver<Option<LocalInstant>>,
    pub(crate) reports: mpsc::UnboundedSender<Event>,
    pub(crate) clock: Clock,
}

impl RunSilence {
    /// Tells the machine that Spanner answered a fenced write (a driver that has ended no longer listens).
    pub(crate) fn answered(&self) {
        let _ = self.reports.send(Event::FencedWriteAnswered);
    }

    /// Tells the machine that a fenced write's attempt sent at `sent_at` got no answer.
    pub(crate) fn unanswered(&self, sent_at: LocalInstant) {
        let _ = self.reports.send(Event::FencedWriteUnanswered { sent_at });
    }
}

/// When one fenced write first got no answer: on the run's clock when it has one, else on tokio's.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Silence {
    Run(LocalInstant),
    Alone(tokio::time::Instant),
}

/// What a fenced write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fenced<T> {
    /// The writes committed in this call; the work returned this.
    Committed(T),
    /// An earlier attempt of this call, whose answer was lost (a timeout, a lost connection), committed the
    /// writes: the row's record of this fence's writes says so, and they were not applied again. The work's
    /// return value from that attempt is gone.
    CommittedEarlier,
}

impl<T> Fenced<T> {
    /// The work's value, if it committed in this attempt.
    pub fn into_value(self) -> Option<T> {
        match self {
            Self::Committed(value) => Some(value),
            Self::CommittedEarlier => None,
        }
    }
}

/// A fenced write that did not commit the user's work (as far as could be told); `E` is the error type the
/// work returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FencedError<E = google_cloud_spanner::Error> {
    /// The lease is no longer held with this fence: nothing was written.
    #[error("fenced write refused: {fence} no longer holds the lease")]
    Rejected {
        /// The writer's fence.
        fence: Fence,
    },
    /// The lock-lost signal had fired (or the lease's deadline had come) when the write was called: nothing was
    /// sent to Spanner and nothing was written. Stop the lease's work.
    #[error("fenced write not attempted: the lease with {fence} can no longer be proven held (lock lost)")]
    LeaseLost {
        /// The writer's fence.
        fence: Fence,
    },
    /// Spanner failed the transaction (its own reads, the fence check or the commit), with an error retrying
    /// could not help. An error the work returns is [`FencedError::Work`].
    #[error("fenced transaction failed: {0}")]
    Spanner(#[from] google_cloud_spanner::Error),
    /// Spanner gave no certain answer (timeouts, aborts, lost connections) to this write or to its retries, and
    /// the run's unavailability budget (`lease.unavailable_ms` from its first unanswered call) is spent: the writes
    /// may or may not have committed. The lease's row records the writes that did, so a later fenced write of
    /// this lease is still numbered and checked correctly.
    #[error(
        "fenced transaction gave no certain answer and the {ms} ms unavailability budget is spent: it may or may \
         not have committed"
    )]
    OutcomeUnknown {
        /// The unavailability budget, `lease.unavailable_ms`.
        ms: u64,
    },
    /// The work returned this error: the transaction was rolled back, nothing it wrote committed.
    #[error("the fenced work failed: {0}")]
    Work(E),
}

/// Which fenced write: its lease's holder and fence, and its number under that fence (from 1, in order, one at a
/// time; a retry keeps it). The row records the numbers that landed.
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub, reason = "exported for test stores only"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteId {
    /// The holder.
    pub client: ClientId,
    /// Its fence.
    pub fence: Fence,
    /// The write's number under the fence.
    pub write: u32,
}

impl WriteId {
    /// The transaction logic's request that verifies this write's fence and records it.
    pub(crate) const fn verify(self) -> spanner_mutex_model::TxnRequest {
        spanner_mutex_model::TxnRequest::VerifyFence { client: self.client, fence: self.fence, write: self.write }
    }
}

/// The transaction a fenced write's work runs in: its writes commit only while the lease is held, together with
/// the fence check. On Spanner it is one read-write transaction ([`FencedTx::spanner`] for reads and DML); on the
/// in-memory store, buffered mutations are kept in its log of committed writes
/// ([`crate::MemoryStore::mutations`]).
#[derive(Debug)]
pub struct FencedTx(TxKind);

#[derive(Debug)]
enum TxKind {
    // Boxed: Spanner's transaction handle is large.
    Spanner(Box<ReadWriteTransaction>),
    Memory(Arc<Mutex<Vec<Mutation>>>),
}

impl FencedTx {
    pub(crate) fn spanner_tx(tx: ReadWriteTransaction) -> Self {
        Self(TxKind::Spanner(Box::new(tx)))
    }

    pub(crate) const fn memory(buffer: Arc<Mutex<Vec<Mutation>>>) -> Self {
        Self(TxKind::Memory(buffer))
    }

    /// Buffers `mutations`, to commit with the transaction (and only if the lease is still held).
    pub fn buffer<I: IntoIterator<Item = Mutation>>(&self, mutations: I) -> google_cloud_spanner::Result<()> {
        match &self.0 {
            TxKind::Spanner(tx) => tx.buffer(mutations),
            TxKind::Memory(buffer) => {
                buffer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(mutations);
                Ok(())
            }
        }
    }

    /// Spanner's read-write transaction, for reads and DML in the fenced write; `None` on the in-memory store,
    /// which takes buffered mutations only.
    pub const fn spanner(&self) -> Option<&ReadWriteTransaction> {
        match &self.0 {
            TxKind::Spanner(tx) => Some(tx),
            TxKind::Memory(_) => None,
        }
    }
}

/// A value of the work's own type, carried through a store that does not know it.
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub, reason = "exported for test stores only"))]
pub struct AnyValue(Box<dyn std::any::Any + Send>);

impl AnyValue {
    /// Wraps `value`.
    pub(crate) fn new<T: Send + 'static>(value: T) -> Self {
        Self(Box::new(value))
    }

    /// The value, if it is a `T`.
    pub(crate) fn take<T: 'static>(self) -> Option<T> {
        self.0.downcast::<T>().ok().map(|value| *value)
    }
}

impl std::fmt::Debug for AnyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a fenced work's value")
    }
}

/// A fenced write's work as a store runs it: called once per attempt, its value and its error carried untyped.
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub, reason = "exported for test stores only"))]
#[derive(Clone)]
pub struct FencedWork {
    work: Arc<dyn Fn(FencedTx) -> Compiled<'static, Result<AnyValue, AnyValue>> + Send + Sync>,
    /// The run's unavailability clock; without one (a test calling a store directly) the write keeps its own.
    run: Option<RunSilence>,
}

impl FencedWork {
    /// Wraps typed work.
    #[cfg_attr(not(feature = "test-util"), allow(unreachable_pub, reason = "exported for test stores only"))]
    pub fn new<T, E, F, Fut>(work: F) -> Self
    where
        F: FnOnce(FencedTx) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        // Each attempt runs a clone of the work, which may move what it captured into its future.
        let work = Arc::new(move |tx| {
            let attempt = (work.clone())(tx);
            Box::pin(async move { attempt.await.map(AnyValue::new).map_err(AnyValue::new) })
                as Compiled<'static, Result<AnyValue, AnyValue>>
        });
        Self { work, run: None }
    }

    /// The work, retried on its run's unavailability clock.
    pub(crate) fn on_run_clock(self, run: RunSilence) -> Self {
        Self { run: Some(run), ..self }
    }

    /// One attempt of the work in `tx`.
    pub(crate) fn run(&self, tx: FencedTx) -> Compiled<'static, Result<AnyValue, AnyValue>> {
        (self.work)(tx)
    }

    /// When an attempt starting now is sent, on the run's clock (`None` without one).
    pub(crate) fn now(&self) -> Option<LocalInstant> {
        self.run.as_ref().map(|run| run.clock.now())
    }

    /// The attempt sent at `sent_at` (from [`Self::now`]) got no answer: the machine hears of it, and this says
    /// whether another attempt, after the usual wait, still falls inside the run's unavailability budget (the
    /// machine's rule, from the first call of the run without an answer). `first` is when this write's first
    /// unanswered attempt was sent. Without a run's clock, the write retries at least once and then for
    /// `unavailable_ms`.
    pub(crate) fn may_retry_unanswered(
        &self,
        cfg: &Config,
        first: &mut Option<Silence>,
        sent_at: Option<LocalInstant>,
        tries: u32,
    ) -> bool {
        match (&self.run, sent_at) {
            (Some(run), Some(sent_at)) => {
                run.unanswered(sent_at);
                let Silence::Run(own) = *first.get_or_insert(Silence::Run(sent_at)) else { return false };
                let run_since = *run.since.borrow();
                may_retry_fenced_write(cfg, run_since, sent_at, Some(own), run.clock.now().plus_ms(cfg.wait_ms()))
            }
            _ => {
                let Silence::Alone(since) = *first.get_or_insert_with(|| Silence::Alone(tokio::time::Instant::now()))
                else {
                    return false;
                };
                tries == 1 || since.elapsed() < Duration::from_millis(cfg.unavailable_ms())
            }
        }
    }

    /// Tells the machine whether Spanner answered the write whose first attempt was sent at `sent_at`.
    pub(crate) fn report(&self, answered: bool, sent_at: Option<LocalInstant>) {
        match (&self.run, sent_at) {
            (Some(run), _) if answered => run.answered(),
            (Some(run), Some(sent_at)) => run.unanswered(sent_at),
            _ => {}
        }
    }
}

impl std::fmt::Debug for FencedWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a fenced write's work")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spanner_mutex_model::ConfigParams;

    fn cfg() -> Config {
        ConfigParams { unavailable_ms: 1_000, wait_ms: 100, ..ConfigParams::default() }.validate().expect("valid")
    }

    /// A fenced write on a run's clock that reads `since`; what the machine is told, and the sender through which
    /// the driver publishes the machine's clock.
    fn work_on(
        clock: &Clock,
        since: Option<LocalInstant>,
    ) -> (FencedWork, mpsc::UnboundedReceiver<Event>, watch::Sender<Option<LocalInstant>>) {
        let (publish, since) = watch::channel(since);
        let (reports, heard) = mpsc::unbounded_channel();
        let run = RunSilence { since, reports, clock: clock.clone() };
        (FencedWork::new(|_tx: FencedTx| async { Ok::<(), ()>(()) }).on_run_clock(run), heard, publish)
    }

    #[tokio::test(start_paused = true)]
    async fn a_fenced_write_retries_only_within_the_budget_its_run_started() {
        let clock = Clock::new();
        tokio::time::advance(Duration::from_millis(5_000)).await;
        let now = clock.now();
        // The run's calls have gone unanswered for 950 ms: no time is left for another attempt after the wait.
        let (spent, _, _) = work_on(&clock, Some(LocalInstant::from_micros(now.micros() - 950_000)));
        assert!(!spent.may_retry_unanswered(&cfg(), &mut None, Some(now), 1), "the run's budget is spent");
        // A run that has heard answers: the write's own silence starts the clock, and the machine is told when.
        let (work, mut heard, publish) = work_on(&clock, None);
        let mut first = None;
        assert!(work.may_retry_unanswered(&cfg(), &mut first, Some(now), 1));
        assert_eq!(heard.try_recv().ok(), Some(Event::FencedWriteUnanswered { sent_at: now }));
        // The driver hands the event to the machine and publishes the clock it started.
        publish.send(Some(now)).expect("the write reads it");
        tokio::time::advance(Duration::from_millis(950)).await;
        let later = clock.now();
        assert!(!work.may_retry_unanswered(&cfg(), &mut first, Some(later), 2), "the run's budget is spent");
        assert_eq!(heard.try_recv().ok(), Some(Event::FencedWriteUnanswered { sent_at: later }));
        work.report(true, None);
        assert_eq!(heard.try_recv().ok(), Some(Event::FencedWriteAnswered));
    }
}
