//! Test rigs (feature `test-util`): a store wrapper that makes chosen operations fail in chosen ways, for tests,
//! the conformance suite and the chaos test. Not for production builds.

use crate::lease::{FencedWork, WriteId};
use crate::store::{FencedAnswer, LeaseStore, RowRead, StoreError, StoreErrorKind};
use spanner_mutex_model::txn::{TxnReply, TxnRequest};
use spanner_mutex_model::{Config, MutexName};
use std::sync::{Arc, Mutex};

/// Store faults for tests and the simulator: wraps any store and makes chosen operations fail in chosen ways,
/// while every other operation runs the real store's code path.
#[derive(Clone, Debug)]
pub struct FaultyStore<S> {
    inner: S,
    plan: Arc<Mutex<Vec<InjectedFault>>>,
}

/// One injected fault, consumed by the next transaction whose request matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectedFault {
    /// Which requests it applies to.
    pub on: FaultTarget,
    /// What happens.
    pub effect: FaultEffect,
}

/// Which transactions a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultTarget {
    /// Acquisitions.
    Acquire,
    /// Renewals.
    Renew,
    /// Releases.
    Release,
    /// Fenced writes (through the guard's `fenced`, which retries aborts and unknown outcomes).
    FencedWrite,
}

/// What an injected fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultEffect {
    /// The transaction commits, but the client is told the outcome is unknown.
    UnknownCommitted,
    /// The transaction does not run, and the client is told the outcome is unknown.
    UnknownNotCommitted,
    /// The transaction does not run and reports an abort.
    Aborted,
    /// The transaction does not run and reports the store unavailable.
    Unavailable,
}

impl<S: LeaseStore> FaultyStore<S> {
    /// Wraps `inner` with no faults planned.
    pub fn new(inner: S) -> Self {
        Self { inner, plan: Arc::new(Mutex::new(Vec::new())) }
    }

    /// Plans `fault` for the next matching transaction (faults apply in the order planned).
    pub fn inject(&self, fault: InjectedFault) {
        self.plan.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(fault);
    }

    /// The wrapped store.
    pub const fn inner(&self) -> &S {
        &self.inner
    }

    /// The next fault planned for a fenced write, if any.
    pub(crate) fn take_fenced_write_fault(&self) -> Option<FaultEffect> {
        self.take_for(FaultTarget::FencedWrite)
    }

    fn take(&self, request: &TxnRequest) -> Option<FaultEffect> {
        let target = match request {
            TxnRequest::Acquire { .. } => FaultTarget::Acquire,
            TxnRequest::Renew { .. } => FaultTarget::Renew,
            TxnRequest::Release { .. } => FaultTarget::Release,
            TxnRequest::VerifyFence { .. } => FaultTarget::FencedWrite,
            // An operator's transaction is not a client's: no fault is planned for it.
            TxnRequest::Operator { .. } => return None,
        };
        self.take_for(target)
    }

    fn take_for(&self, target: FaultTarget) -> Option<FaultEffect> {
        let mut plan = self.plan.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let index = plan.iter().position(|f| f.on == target)?;
        Some(plan.remove(index).effect)
    }
}

impl<S: LeaseStore> LeaseStore for FaultyStore<S> {
    async fn heal(&self, error: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
        self.inner.heal(error).await
    }

    async fn transact(&self, cfg: &Config, name: &MutexName, request: &TxnRequest) -> Result<TxnReply, StoreError> {
        let injected = || StoreError::new(StoreErrorKind::Unknown, "injected: outcome unknown");
        match self.take(request) {
            None => self.inner.transact(cfg, name, request).await,
            Some(FaultEffect::UnknownCommitted) => {
                self.inner.transact(cfg, name, request).await?;
                Err(injected())
            }
            Some(FaultEffect::UnknownNotCommitted) => Err(injected()),
            Some(FaultEffect::Aborted) => Err(StoreError::new(StoreErrorKind::Aborted, "injected: aborted")),
            Some(FaultEffect::Unavailable) => {
                Err(StoreError::new(StoreErrorKind::Unavailable, "injected: unavailable"))
            }
        }
    }

    async fn read(&self, name: &MutexName) -> Result<RowRead, StoreError> {
        self.inner.read(name).await
    }

    /// A planned fault of [`FaultTarget::FencedWrite`] loses a real attempt's answer: `UnknownCommitted` runs the
    /// write and discards what it said, so the retry under the same number must find the row's record; other
    /// effects skip it.
    async fn fenced(&self, cfg: &Config, name: &MutexName, id: WriteId, work: FencedWork) -> FencedAnswer {
        while let Some(effect) = self.take_fenced_write_fault() {
            if effect == FaultEffect::UnknownCommitted {
                // Its answer is lost whatever it was; a refusal would be found again by the retry.
                let _lost = self.inner.fenced(cfg, name, id, work.clone()).await;
            }
        }
        self.inner.fenced(cfg, name, id, work).await
    }
}
