//! spanner-mutex: a distributed mutex, lease and leader election on Google Cloud Spanner.
//!
//! The protocol is the model-checked machine of `spanner-mutex-model`; this crate drives it against Cloud Spanner
//! ([`SpannerStore`]) or the embedded in-memory store ([`MemoryStore`]). Start from [`Mutexes`]: a config file,
//! code, or the in-memory store; then a [`SpannerMutex`] by name runs a section once across a fleet
//! ([`SpannerMutex::run`]), takes a lock ([`SpannerMutex::acquire`]) or campaigns for leadership
//! ([`SpannerMutex::campaign`]). Each hands out a [`LeaseHandle`] whose fenced writes commit only while the lease
//! is held.
//!
//! ```no_run
//! use spanner_mutex::google_cloud_spanner::mutation::Mutation;
//! use spanner_mutex::{ConfigParams, Mutexes};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mutexes = Mutexes::in_memory(ConfigParams::default(), "pod-1")?;
//! let leader = mutexes.mutex("scheduler")?.campaign().await?;
//! let term = Mutation::new_insert_builder("Terms").set("term").to(leader.term().to_string()).build();
//! leader.commit(vec![term]).await?; // commits only while this term leads
//! leader.lock_lost().await; // leadership lost: stop leader-only work
//! # Ok(()) }
//! ```

mod backend;
mod clock;
pub mod config;
mod driver;
#[cfg(feature = "emulator")]
pub mod emulator;
#[cfg(feature = "test-util")]
pub mod faulty;
mod future;
mod leader;
mod lease;
mod memory;
mod metrics;
mod mutex;
mod mutexes;
mod operator;
pub mod schema;
mod serial;
mod spanner;
mod store;

pub use crate::metrics::names as metric_names;
pub use crate::metrics::{Metrics, MetricsSnapshot};
pub use config::{ConfigFileError, MutexConfig, Timeouts};
#[cfg(feature = "test-util")]
pub use driver::{read_event, txn_event};
#[cfg(feature = "test-util")]
pub use faulty::FaultyStore;
/// The Spanner client this crate drives, re-exported so an app's fenced work (`Mutation`, `Statement`,
/// `ReadWriteTransaction`) uses the same version without pinning it.
pub use google_cloud_spanner;
pub use leader::{Holder, Leadership, MutexStatus, rfc3339};
#[cfg(feature = "test-util")]
pub use lease::{AnyValue, FencedWork, WriteId};
pub use lease::{Fenced, FencedError, FencedTx, Lease};
pub use memory::MemoryStore;
pub use mutex::{BoxError, CriticalSection, LeaseHandle, LockGuard, RunError, RunOutcome, SpannerMutex};
pub use mutexes::{Mutexes, MutexesBuilder, SetupError, SpannerStoreBuilder};
pub use operator::{OPERATOR_NAME_MAX_BYTES, OPERATOR_REASON_MAX_BYTES, OperatorApplied, OperatorError};
pub use schema::SchemaError;
pub use spanner::{ConnectError, SpannerStore};
pub use spanner_mutex_model::{
    ClientId, Config, ConfigParams, Fence, LeaseRow, MutexName, MutexNameError, OperatorAction, ServerTime, Status,
    UnexpectedEvent,
};
#[cfg(feature = "test-util")]
pub use store::{FencedAnswer, LeaseStore, RowRead};
pub use store::{StoreError, StoreErrorKind};

/// What an app's code names most, for `use spanner_mutex::prelude::*;`: the entry point, the section trait, the
/// lease handle and its results, plus the two Spanner types that fenced work builds.
pub mod prelude {
    pub use crate::google_cloud_spanner::{mutation::Mutation, statement::Statement};
    pub use crate::{
        BoxError, CriticalSection, Fenced, FencedError, FencedTx, Leadership, LeaseHandle, LockGuard, Mutexes,
        RunError, RunOutcome,
    };
}

/// The README's code, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
