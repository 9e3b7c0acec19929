//! A deterministic failure simulator for the spanner-mutex protocol. It drives N instances of the production
//! [`spanner_mutex_model::ClientMachine`] against a simulated Spanner (lease rows, serializable read-write
//! transactions, commit timestamps, latency, aborts, unknown commit outcomes, outages), simulated processes
//! (crashes, pauses, skewed and drifting clocks, sections that take time and fail) and a protected resource that
//! accepts fenced writes, and checks the protocol's invariants after every step.
//!
//! All randomness derives from one `u64` seed and time is virtual, so a run is reproducible byte for byte and
//! hours of simulated time take milliseconds. See docs/simulation.md.

pub mod invariants;
pub mod replay;
pub mod run;
pub mod scenario;
pub mod sweep;
pub mod trace;
pub mod world;

pub use replay::{ReplayError, ReplayReport, replay};
pub use run::{RunReport, run};
pub use scenario::{GenerateOptions, Scenario, ScenarioError};
pub use sweep::{SweepOptions, SweepSummary, sweep};
