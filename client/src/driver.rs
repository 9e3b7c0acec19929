//! The tokio driver: executes the machine's commands against a store and feeds the results back. It makes no
//! lease decision; every branch here is "do what the command says".

use crate::metrics::Metrics;
use crate::store::{LeaseStore, RowRead, StoreError, StoreErrorKind};
use spanner_mutex_model::{
    ClientMachine, Command, Config, Event, LocalInstant, MutexName, TxnReply, TxnRequest, UnexpectedEvent,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// An operation in flight. Built from owned clones so it can outlive a cancelled caller.
pub(crate) type Op = Pin<Box<dyn Future<Output = Event> + Send + 'static>>;

/// The local monotonic clock, as the machine sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    origin: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self { origin: Instant::now() }
    }

    pub(crate) fn now(self) -> LocalInstant {
        LocalInstant::from_micros(u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    pub(crate) fn instant(self, at: LocalInstant) -> Instant {
        self.origin + Duration::from_micros(at.micros())
    }
}

/// Everything an operation needs, cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Ctx<S> {
    pub(crate) store: S,
    pub(crate) cfg: Config,
    pub(crate) name: MutexName,
    pub(crate) metrics: Arc<Metrics>,
    /// The last store error, kept for the error the caller sees.
    pub(crate) last_error: Arc<std::sync::Mutex<Option<StoreError>>>,
}

impl<S: LeaseStore> Ctx<S> {
    fn remember(&self, error: &StoreError) {
        *self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error.clone());
    }

    pub(crate) fn last_error(&self) -> Option<StoreError> {
        self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// A transaction as an operation.
    pub(crate) fn txn(&self, request: TxnRequest) -> Op {
        let ctx = self.clone();
        Box::pin(async move {
            let result = ctx.store.transact(&ctx.cfg, &ctx.name, &request).await;
            ctx.metrics.record_txn(&request, &result);
            if let Err(error) = &result {
                tracing::debug!(mutex = %ctx.name, ?request, %error, "transaction did not commit cleanly");
                ctx.remember(error);
            }
            txn_event(result)
        })
    }

    /// A single-use read as an operation.
    pub(crate) fn read(&self) -> Op {
        let ctx = self.clone();
        Box::pin(async move {
            ctx.metrics.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let result = ctx.store.read(&ctx.name).await;
            if let Err(error) = &result {
                ctx.remember(error);
            }
            read_event(result)
        })
    }
}

/// What the machine is told about a transaction's result: the driver's one mapping from store errors to
/// protocol events (public so the conformance tests drive stores through exactly this code).
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
pub fn read_event(result: Result<RowRead, StoreError>) -> Event {
    match result {
        Ok((row, server_now)) => Event::RowRead { row, server_now },
        Err(error) => Event::ReadFailed(error.failure()),
    }
}

/// Feeds an event to the machine, tracing the transition.
pub(crate) fn feed(
    machine: &mut ClientMachine,
    cfg: &Config,
    clock: Clock,
    event: Event,
) -> Result<Option<Command>, UnexpectedEvent> {
    let from = machine.state_name();
    let traced = format!("{event:?}");
    let command = machine.handle(cfg, clock.now(), event)?;
    tracing::trace!(client = %machine.id(), from, to = machine.state_name(), event = %traced, ?command, "transition");
    Ok(command)
}

/// Drives a machine that was cancelled to its end in the background: releases any lease it holds or is about
/// to win, so a graceful shutdown hands over at once instead of after the TTL. Bounded by twice the TTL.
pub(crate) fn finish_cancelled<S: LeaseStore>(ctx: Ctx<S>, mut machine: ClientMachine, clock: Clock, op: Option<Op>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    let bound = Duration::from_millis(ctx.cfg.ttl_ms().saturating_mul(2));
    runtime.spawn(async move {
        let work = async {
            let mut command = feed(&mut machine, &ctx.cfg, clock, Event::Cancel).ok().flatten();
            let mut op = op;
            loop {
                match command.take() {
                    Some(Command::RunTxn(request)) => op = Some(ctx.txn(request)),
                    Some(Command::ReadRow) => op = Some(ctx.read()),
                    // A cancelled machine releases whatever the answer; "not needed" is the cheaper path.
                    Some(Command::CheckNeed) => op = Some(Box::pin(async { Event::NeedAnswered { needed: false } })),
                    Some(Command::Finish(outcome)) => {
                        tracing::info!(mutex = %ctx.name, client = %machine.id(), ?outcome, "cancelled run finished");
                        return;
                    }
                    Some(Command::RunSection { .. } | Command::Granted { .. } | Command::SignalLockLost { .. })
                    | None => {}
                }
                let timeout = machine.poll_timeout(&ctx.cfg).map(|at| clock.instant(at));
                tokio::select! {
                    event = async { match op.as_mut() { Some(f) => f.await, None => std::future::pending().await } } => {
                        op = None;
                        command = feed(&mut machine, &ctx.cfg, clock, event).ok().flatten();
                    }
                    () = async { match timeout { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                        command = machine.handle_timeout(&ctx.cfg, clock.now());
                    }
                }
                if op.is_none() && command.is_none() && timeout.is_none() && machine.outcome().is_none() {
                    return;
                }
            }
        };
        if tokio::time::timeout(bound, work).await.is_err() {
            tracing::warn!(mutex = %ctx.name, "release after cancellation did not finish in time; the lease will expire");
        }
    });
}
