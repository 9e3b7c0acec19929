//! The local clock the machine decides on: tokio's monotonic clock plus the time this computer was suspended.
//! Linux's `CLOCK_MONOTONIC` (behind std's and tokio's `Instant`) stops while a VM or laptop sleeps, and a lease
//! deadline must not: a holder suspended past its TTL has to learn on waking that it lost the lease. So the clock
//! adds how far `CLOCK_BOOTTIME` has run ahead of `CLOCK_MONOTONIC` since the clock was made. Elsewhere there is
//! no such source and suspension is not counted (docs/protocol.md says what that leaves to fencing).

use spanner_mutex_model::LocalInstant;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How often a holder looks at the clock between its timers: a suspension moves the clock without any tokio
/// timer firing, so lock-lost after a suspension comes within this of waking.
pub(crate) const JUMP_CHECK: Duration = Duration::from_millis(250);

/// Time the computer spent suspended since a starting point.
pub(crate) trait Suspension: Debug + Send + Sync {
    /// Suspended time since this source was made.
    fn suspended(&self) -> Duration;
}

/// The local clock, as the machine sees it.
#[derive(Clone, Debug)]
pub(crate) struct Clock {
    origin: Instant,
    suspension: Arc<dyn Suspension>,
}

impl Clock {
    /// A clock counting suspension where the platform can tell.
    pub(crate) fn new() -> Self {
        Self::counting(Arc::new(BootTime::new()))
    }

    /// A clock counting the suspension `suspension` reports.
    pub(crate) fn counting(suspension: Arc<dyn Suspension>) -> Self {
        Self { origin: Instant::now(), suspension }
    }

    pub(crate) fn now(&self) -> LocalInstant {
        let elapsed = self.origin.elapsed() + self.suspension.suspended();
        LocalInstant::from_micros(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX))
    }

    /// The tokio instant at which the clock will read `at` (earlier by any suspension so far).
    pub(crate) fn instant(&self, at: LocalInstant) -> Instant {
        (self.origin + Duration::from_micros(at.micros()))
            .checked_sub(self.suspension.suspended())
            .unwrap_or(self.origin)
    }
}

/// `CLOCK_BOOTTIME` against `CLOCK_MONOTONIC`: their gap grows by exactly the time suspended.
#[derive(Debug)]
struct BootTime {
    gap_at_start: Duration,
}

#[cfg(target_os = "linux")]
impl BootTime {
    fn new() -> Self {
        Self { gap_at_start: Self::gap() }
    }

    fn gap() -> Duration {
        use rustix::time::{ClockId, clock_gettime};
        let read = |id| {
            let t = clock_gettime(id);
            Duration::new(u64::try_from(t.tv_sec).unwrap_or(0), u32::try_from(t.tv_nsec).unwrap_or(0))
        };
        read(ClockId::Boottime).saturating_sub(read(ClockId::Monotonic))
    }
}

#[cfg(target_os = "linux")]
impl Suspension for BootTime {
    fn suspended(&self) -> Duration {
        // Whole milliseconds: the two clocks are read one after the other, so the gap jitters by nanoseconds.
        let grown = Self::gap().saturating_sub(self.gap_at_start);
        Duration::from_millis(u64::try_from(grown.as_millis()).unwrap_or(u64::MAX))
    }
}

#[cfg(not(target_os = "linux"))]
impl BootTime {
    const fn new() -> Self {
        Self { gap_at_start: Duration::ZERO }
    }
}

#[cfg(not(target_os = "linux"))]
impl Suspension for BootTime {
    fn suspended(&self) -> Duration {
        self.gap_at_start
    }
}
