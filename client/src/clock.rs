//! The local clock the machine decides on: tokio's monotonic clock plus the time this computer was suspended.
//! Linux's `CLOCK_MONOTONIC` (behind std's and tokio's `Instant`) stops while a VM or laptop sleeps, and a lease
//! deadline must not: a holder suspended past its TTL has to learn on waking that it lost the lease. So the clock
//! adds how far `CLOCK_BOOTTIME` has run ahead of `CLOCK_MONOTONIC` since the clock was made, and the driver's
//! timers wake it on a `CLOCK_BOOTTIME` timer too, which the kernel fires on resume if it came due meanwhile.
//! Elsewhere there is no such source and suspension is not counted (docs/protocol.md says what that leaves to
//! fencing).

use spanner_mutex_model::LocalInstant;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How often a holder looks at the clock between its timers where no [`Alarm`] can be had: a suspension moves
/// the clock without any tokio timer firing, so lock-lost after a suspension comes within this of waking.
pub(crate) const JUMP_CHECK: Duration = Duration::from_millis(250);

/// Time the computer spent suspended since a starting point.
pub(crate) trait Suspension: Debug + Send + Sync {
    /// Suspended time since this source was made.
    fn suspended(&self) -> Duration;

    /// A wake-up that counts suspension, for one driver; `None` where the platform has none.
    fn alarm(&self) -> Option<Box<dyn Alarm>> {
        None
    }
}

/// A timer that counts time suspended: due during a suspension, it fires as the computer wakes.
pub(crate) trait Alarm: Send + Sync {
    /// Resolves once `after` from now has passed, suspension included. Each call replaces the previous one.
    fn wait(&mut self, after: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
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

    /// A wake-up for one driver that fires on time across a suspension, where the platform has one.
    pub(crate) fn alarm(&self) -> Option<Box<dyn Alarm>> {
        self.suspension.alarm()
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

    fn alarm(&self) -> Option<Box<dyn Alarm>> {
        match boot_alarms() {
            Ok(alarms) => Some(Box::new(BootAlarm { alarms, armed: None })),
            Err(error) => {
                tracing::warn!(%error, "no CLOCK_BOOTTIME timer; suspension is noticed within {JUMP_CHECK:?} of waking");
                None
            }
        }
    }
}

/// Reads `CLOCK_BOOTTIME` in nanoseconds.
#[cfg(target_os = "linux")]
fn boot_time_ns() -> u128 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    u128::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u128::try_from(t.tv_nsec).unwrap_or(0)
}

/// One `CLOCK_BOOTTIME` timerfd for the process, armed at the earliest pending alarm, and a thread blocked reading
/// it that wakes the alarms due. A thread rather than tokio's reactor: it works on any runtime, I/O driver or not,
/// and needs no unsafe registration of the descriptor.
#[cfg(target_os = "linux")]
#[derive(Debug)]
struct BootAlarms {
    timer: rustix::fd::OwnedFd,
    /// Pending alarms by (boot time due in ns, id).
    pending: std::sync::Mutex<std::collections::BTreeMap<(u128, u64), tokio::sync::oneshot::Sender<()>>>,
    next_id: std::sync::atomic::AtomicU64,
}

#[cfg(target_os = "linux")]
fn boot_alarms() -> std::io::Result<&'static BootAlarms> {
    static ALARMS: std::sync::OnceLock<Result<BootAlarms, std::io::ErrorKind>> = std::sync::OnceLock::new();
    let alarms = ALARMS.get_or_init(|| {
        use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
        let timer = timerfd_create(TimerfdClockId::Boottime, TimerfdFlags::CLOEXEC).map_err(|e| e.kind())?;
        Ok(BootAlarms { timer, pending: std::sync::Mutex::default(), next_id: std::sync::atomic::AtomicU64::new(0) })
    });
    let alarms = alarms.as_ref().map_err(|&kind| std::io::Error::from(kind))?;
    static THREAD: std::sync::OnceLock<Result<(), std::io::ErrorKind>> = std::sync::OnceLock::new();
    (*THREAD.get_or_init(|| {
        std::thread::Builder::new()
            .name("spanner-mutex-boot-alarm".into())
            .spawn(|| alarms.serve())
            .map(drop)
            .map_err(|e| e.kind())
    }))
    .map_err(std::io::Error::from)?;
    Ok(alarms)
}

#[cfg(target_os = "linux")]
impl BootAlarms {
    /// The thread: sleeps until the timer fires (at once on resume if it came due during a suspension), then
    /// wakes every alarm due.
    fn serve(&self) {
        loop {
            let mut expirations = [0u8; 8];
            if let Err(error) = rustix::io::read(&self.timer, &mut expirations)
                && error != rustix::io::Errno::INTR
            {
                tracing::error!(%error, "CLOCK_BOOTTIME timer failed; alarms now rely on tokio's timers");
                return;
            }
            let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let now_ns = boot_time_ns();
            while let Some(entry) = pending.first_entry() {
                if entry.key().0 > now_ns {
                    break;
                }
                // The waiter may have gone: nothing to wake then.
                let _ = entry.remove().send(());
            }
            self.arm_earliest(&pending);
        }
    }

    fn add(&self, due_ns: u128) -> ((u128, u64), tokio::sync::oneshot::Receiver<()>) {
        let key = (due_ns, self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let (fire, fired) = tokio::sync::oneshot::channel();
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        pending.insert(key, fire);
        self.arm_earliest(&pending);
        (key, fired)
    }

    fn remove(&self, key: (u128, u64)) {
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        pending.remove(&key);
    }

    /// Under the lock, so the timer always shows the earliest pending alarm.
    fn arm_earliest(&self, pending: &std::collections::BTreeMap<(u128, u64), tokio::sync::oneshot::Sender<()>>) {
        use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
        let zero = Timespec { tv_sec: 0, tv_nsec: 0 };
        // Absolute boot time (a time passed fires at once); an all-zero value disarms.
        let value = pending.first_key_value().map_or(zero, |(&(due_ns, _), _)| Timespec {
            tv_sec: i64::try_from(due_ns / 1_000_000_000).unwrap_or(i64::MAX),
            tv_nsec: i64::try_from(due_ns % 1_000_000_000).unwrap_or(0),
        });
        let spec = Itimerspec { it_interval: zero, it_value: value };
        if let Err(error) = timerfd_settime(&self.timer, TimerfdTimerFlags::ABSTIME, &spec) {
            tracing::error!(%error, "arming the CLOCK_BOOTTIME timer failed; alarms rely on tokio's timers");
        }
    }
}

/// One driver's alarm: at most one pending wait, withdrawn when replaced or dropped.
#[cfg(target_os = "linux")]
struct BootAlarm {
    alarms: &'static BootAlarms,
    armed: Option<(u128, u64)>,
}

#[cfg(target_os = "linux")]
impl Alarm for BootAlarm {
    fn wait(&mut self, after: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        if let Some(key) = self.armed.take() {
            self.alarms.remove(key);
        }
        let (key, fired) = self.alarms.add(boot_time_ns().saturating_add(after.as_nanos()));
        self.armed = Some(key);
        Box::pin(async move {
            if fired.await.is_err() {
                // The alarm thread ended (logged): leave waking to the tokio timer beside this one.
                std::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(target_os = "linux")]
impl Drop for BootAlarm {
    fn drop(&mut self) {
        if let Some(key) = self.armed.take() {
            self.alarms.remove(key);
        }
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
