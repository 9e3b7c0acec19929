//! Counters a production user wants on a dashboard: kept per mutex for [`crate::SpannerMutex::metrics`], and
//! emitted through the [`metrics`] facade, labelled `mutex`, for whatever exporter the app installs (Prometheus,
//! OpenTelemetry, StatsD). A facade rather than an OpenTelemetry dependency: the library stays exporter-neutral
//! and costs nothing when the app installs no recorder, as with `tracing`.

use crate::store::{StoreError, StoreErrorKind};
use spanner_mutex_model::txn::AcquisitionKind;
use spanner_mutex_model::{TxnReply, TxnRequest};
use std::sync::atomic::{AtomicU64, Ordering};

/// Names of what is emitted through the [`metrics`] facade, each with the label `mutex`.
pub mod names {
    /// Counter: read-write transactions run.
    pub const TRANSACTIONS: &str = "spanner_mutex_transactions_total";
    /// Counter: single-use reads run.
    pub const READS: &str = "spanner_mutex_reads_total";
    /// Counter: leases acquired.
    pub const ACQUISITIONS: &str = "spanner_mutex_acquisitions_total";
    /// Counter: leases taken over from an expired holder.
    pub const TAKEOVERS: &str = "spanner_mutex_takeovers_total";
    /// Counter: renewals committed.
    pub const RENEWALS: &str = "spanner_mutex_renewals_total";
    /// Counter: leases lost (lock-lost signals given).
    pub const LEASES_LOST: &str = "spanner_mutex_leases_lost_total";
    /// Counter: transactions aborted.
    pub const ABORTS: &str = "spanner_mutex_aborts_total";
    /// Counter: commits with an unknown outcome.
    pub const UNKNOWN_COMMITS: &str = "spanner_mutex_unknown_commits_total";
    /// Histogram, seconds: from a run, lock or campaign starting until it holds the lease (the hand-over latency a
    /// waiter sees).
    pub const ACQUIRE_WAIT_SECONDS: &str = "spanner_mutex_acquire_wait_seconds";
    /// Histogram, seconds: how long a lease was held, from its grant until it was released or lost.
    pub const HOLD_SECONDS: &str = "spanner_mutex_hold_seconds";
}

/// Counters of one [`crate::SpannerMutex`] (shared by its clones).
#[derive(Debug, Default)]
pub struct Metrics {
    /// The `mutex` label of what is emitted.
    mutex: metrics::SharedString,
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
    /// Counters of the mutex called `mutex`.
    pub(crate) fn for_mutex(mutex: &spanner_mutex_model::MutexName) -> Self {
        Self { mutex: mutex.to_string().into(), ..Self::default() }
    }

    /// Counts one event in `counter` and emits it as `name`.
    fn count(&self, counter: &AtomicU64, name: &'static str) {
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(name, "mutex" => self.mutex.clone()).increment(1);
    }

    pub(crate) fn record_txn(&self, _request: &TxnRequest, result: &Result<TxnReply, StoreError>) {
        self.count(&self.transactions, names::TRANSACTIONS);
        match result {
            Ok(TxnReply::Acquired { kind, .. }) => {
                self.count(&self.acquisitions, names::ACQUISITIONS);
                if *kind == AcquisitionKind::Takeover {
                    self.count(&self.takeovers, names::TAKEOVERS);
                }
            }
            Ok(TxnReply::Renewed { .. }) => self.count(&self.renewals, names::RENEWALS),
            Err(e) if e.kind == StoreErrorKind::Aborted => self.count(&self.aborts, names::ABORTS),
            Err(e) if e.kind == StoreErrorKind::Unknown => self.count(&self.unknown_commits, names::UNKNOWN_COMMITS),
            _ => {}
        }
    }

    pub(crate) fn record_read(&self) {
        self.count(&self.reads, names::READS);
    }

    pub(crate) fn record_lost(&self) {
        self.count(&self.lost, names::LEASES_LOST);
    }

    /// A run, lock or campaign came to hold its lease after waiting `waited`.
    pub(crate) fn record_acquire_wait(&self, waited: std::time::Duration) {
        metrics::histogram!(names::ACQUIRE_WAIT_SECONDS, "mutex" => self.mutex.clone()).record(waited.as_secs_f64());
    }

    /// A lease was held for `held`.
    pub(crate) fn record_hold(&self, held: std::time::Duration) {
        metrics::histogram!(names::HOLD_SECONDS, "mutex" => self.mutex.clone()).record(held.as_secs_f64());
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

impl std::fmt::Display for MetricsSnapshot {
    /// One line in words: `6 transactions, 4 reads, 1 acquisitions (0 takeovers), 0 renewals, 0 leases lost, ...`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} transactions, {} reads, {} acquisitions ({} takeovers), {} renewals, {} leases lost, {} aborts, \
             {} unknown commits",
            self.transactions,
            self.reads,
            self.acquisitions,
            self.takeovers,
            self.renewals,
            self.lost,
            self.aborts,
            self.unknown_commits
        )
    }
}
