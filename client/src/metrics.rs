//! Counters a production user wants on a dashboard.

use crate::store::{StoreError, StoreErrorKind};
use spanner_mutex_model::txn::AcquisitionKind;
use spanner_mutex_model::{TxnReply, TxnRequest};
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one [`crate::SpannerMutex`] (shared by its clones).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Read-write transactions run.
    pub transactions: AtomicU64,
    /// Single-use reads run.
    pub reads: AtomicU64,
    /// Leases acquired.
    pub acquisitions: AtomicU64,
    /// Of which taken over from an expired holder.
    pub takeovers: AtomicU64,
    /// Renewals committed.
    pub renewals: AtomicU64,
    /// Leases lost (lock-lost signals given).
    pub lost: AtomicU64,
    /// Transactions aborted.
    pub aborts: AtomicU64,
    /// Commits with unknown outcome.
    pub unknown_commits: AtomicU64,
}

/// A plain copy of [`Metrics`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MetricsSnapshot {
    /// See [`Metrics::transactions`].
    pub transactions: u64,
    /// See [`Metrics::reads`].
    pub reads: u64,
    /// See [`Metrics::acquisitions`].
    pub acquisitions: u64,
    /// See [`Metrics::takeovers`].
    pub takeovers: u64,
    /// See [`Metrics::renewals`].
    pub renewals: u64,
    /// See [`Metrics::lost`].
    pub lost: u64,
    /// See [`Metrics::aborts`].
    pub aborts: u64,
    /// See [`Metrics::unknown_commits`].
    pub unknown_commits: u64,
}

impl Metrics {
    pub(crate) fn record_txn(&self, _request: &TxnRequest, result: &Result<TxnReply, StoreError>) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(TxnReply::Acquired { kind, .. }) => {
                self.acquisitions.fetch_add(1, Ordering::Relaxed);
                if *kind == AcquisitionKind::Takeover {
                    self.takeovers.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(TxnReply::Renewed { .. }) => {
                self.renewals.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.kind == StoreErrorKind::Aborted => {
                self.aborts.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.kind == StoreErrorKind::Unknown => {
                self.unknown_commits.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            transactions: get(&self.transactions),
            reads: get(&self.reads),
            acquisitions: get(&self.acquisitions),
            takeovers: get(&self.takeovers),
            renewals: get(&self.renewals),
            lost: get(&self.lost),
            aborts: get(&self.aborts),
            unknown_commits: get(&self.unknown_commits),
        }
    }
}
