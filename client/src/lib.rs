//! spanner-mutex: a distributed mutex / lease on Google Cloud Spanner.
//!
//! The protocol is the model-checked machine of `spanner-mutex-model`; this crate executes its commands
//! against a [`LeaseStore`]: Cloud Spanner ([`SpannerStore`]) or the embedded in-memory default
//! ([`MemoryStore`]).
//!
//! ```no_run
//! use spanner_mutex::{BoxError, CriticalSection, MemoryStore, LeaseHandle, SpannerMutex};
//! use spanner_mutex_model::{Config, MutexName};
//!
//! struct Migrate;
//! impl CriticalSection<MemoryStore> for Migrate {
//!     async fn is_needed(&self) -> Result<bool, BoxError> { Ok(true) }
//!     async fn execute(&self, guard: &LeaseHandle<MemoryStore>) -> Result<(), BoxError> {
//!         guard.fenced(|data| data.insert("schema".into(), "v2".into()))?;
//!         Ok(())
//!     }
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mutex = SpannerMutex::new(MemoryStore::new(), Config::default(), MutexName::new("migrate")?, "pod-1");
//! println!("{:?}", mutex.run(&Migrate).await?);
//! # Ok(()) }
//! ```

mod clock;
pub mod config;
mod driver;
#[cfg(feature = "test-util")]
pub mod emulator;
#[cfg(feature = "test-util")]
pub mod faulty;
mod leader;
pub mod memory;
mod metrics;
mod mutex;
mod mutexes;
pub mod schema;
mod serial;
pub mod spanner;
pub mod store;

pub use config::{ConfigFileError, MutexConfig, Timeouts};
pub use driver::{read_event, txn_event};
#[cfg(feature = "test-util")]
pub use faulty::FaultyStore;
pub use leader::{Holder, Leadership, MutexStatus, rfc3339};
pub use memory::MemoryStore;
pub use metrics::{Metrics, MetricsSnapshot};
pub use mutex::{BoxError, CriticalSection, Fenced, Lease, LeaseHandle, LockGuard, RunError, RunOutcome, SpannerMutex};
pub use mutexes::{Mutexes, MutexesBuilder, SetupError};
pub use spanner::{FencedError, SpannerStore};
pub use spanner_mutex_model::{ClientId, Config, ConfigParams, Fence, MutexName, ServerTime};
pub use store::{LeaseStore, StoreError, StoreErrorKind};
