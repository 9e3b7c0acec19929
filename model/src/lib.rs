//! The spanner-mutex protocol as a pure, sans-IO state machine.
//!
//! - [`txn`]: what a Spanner read-write transaction decides from the row and the server time read inside it.
//! - [`machine`]: what a client decides from events (transaction results, reads, timers, its section), emitting
//!   commands for a driver to execute.
//! - [`world`]: what Spanner and the protected resource do with those commands, and the fates a commit can
//!   meet: the one world the checker, the simulator, replay and the conformance reference adapt.
//!
//! The exhaustive checker of N such clients, one row and faults is the `spanner-mutex-check` crate.
//!
//! No I/O, no clock reads, no unseeded randomness: time is always an argument.

mod config;
mod ids;
pub mod machine;
mod rename;
mod row;
mod time;
pub mod txn;
pub mod world;

pub use config::{
    CLOCK_DRIFT_PPM_LIMIT, Config, ConfigError, ConfigParams, MAX_RETRIES_LIMIT, Protocol, STALENESS_MS_LIMIT,
    TTL_MS_LIMIT,
};
pub use ids::{ClientId, Fence, MUTEX_NAME_MAX_BYTES, MutexName, MutexNameError};
pub use machine::{
    ClientMachine, Command, Event, Failure, HeldLease, Outcome, Phase, SectionResult, UnexpectedEvent,
    may_retry_fenced_write, within_unavailability_budget,
};
pub use rename::Rename;
pub use row::{LeaseRow, RowWrite, Status, UnknownStatus};
pub use time::{LocalInstant, ServerTime};
pub use txn::{Mode, OperatorAction, ReleaseStatus, TxnPlan, TxnReply, TxnRequest};
