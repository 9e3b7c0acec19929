//! The two clocks of the protocol. They are distinct types so that a client clock can never be compared with
//! Spanner's: lease expiry is decided only in [`ServerTime`], a holder's own deadline only in [`LocalInstant`].

use serde::{Deserialize, Serialize};
use std::fmt;

/// Microseconds per millisecond; config durations are in milliseconds, instants in microseconds.
const MICROS_PER_MS: u64 = 1_000;

/// A Spanner timestamp (commit timestamp or `CURRENT_TIMESTAMP()` read inside a transaction), in microseconds
/// since the Unix epoch. Spanner commit timestamps have microsecond precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServerTime {
    unix_micros: i64,
}

impl ServerTime {
    /// The server time `unix_micros` microseconds after the Unix epoch.
    pub const fn from_unix_micros(unix_micros: i64) -> Self {
        Self { unix_micros }
    }

    /// Microseconds since the Unix epoch.
    pub const fn unix_micros(self) -> i64 {
        self.unix_micros
    }

    /// This time plus `ms` milliseconds, saturating at the end of representable time.
    pub fn plus_ms(self, ms: u64) -> Self {
        let micros = i64::try_from(ms.saturating_mul(MICROS_PER_MS)).unwrap_or(i64::MAX);
        Self { unix_micros: self.unix_micros.saturating_add(micros) }
    }

    /// This time moved `by_ms` milliseconds (earlier when negative), saturating.
    pub const fn shifted_ms(self, by_ms: i64) -> Self {
        Self { unix_micros: self.unix_micros.saturating_add(by_ms.saturating_mul(MICROS_PER_MS as i64)) }
    }

    /// Milliseconds from `self` until `later`, rounded up so a waiter never wakes before `later`;
    /// zero when `later` is not after `self`.
    pub fn ms_until_ceil(self, later: Self) -> u64 {
        self.micros_until(later).div_ceil(MICROS_PER_MS)
    }

    /// Milliseconds from `self` until `later`, rounded down so a holder never counts on time it lacks;
    /// zero when `later` is not after `self`.
    pub fn ms_until_floor(self, later: Self) -> u64 {
        self.micros_until(later) / MICROS_PER_MS
    }

    fn micros_until(self, later: Self) -> u64 {
        u64::try_from(later.unix_micros.saturating_sub(self.unix_micros)).unwrap_or(0)
    }
}

impl fmt::Display for ServerTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server@{}ms", self.unix_micros.div_euclid(1_000))
    }
}

/// A reading of the client's local monotonic clock, in microseconds since an origin the driver chooses.
/// Only differences between two readings of the same client mean anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LocalInstant {
    micros: u64,
}

impl LocalInstant {
    /// The instant `micros` microseconds after the driver's origin.
    pub const fn from_micros(micros: u64) -> Self {
        Self { micros }
    }

    /// The instant `ms` milliseconds after the driver's origin.
    pub const fn from_ms(ms: u64) -> Self {
        Self { micros: ms.saturating_mul(MICROS_PER_MS) }
    }

    /// Microseconds since the driver's origin.
    pub const fn micros(self) -> u64 {
        self.micros
    }

    /// This instant plus `ms` milliseconds, saturating.
    pub const fn plus_ms(self, ms: u64) -> Self {
        Self { micros: self.micros.saturating_add(ms.saturating_mul(MICROS_PER_MS)) }
    }

    /// This instant moved `by_ms` milliseconds (earlier when negative), saturating.
    pub const fn shifted_ms(self, by_ms: i64) -> Self {
        Self { micros: self.micros.saturating_add_signed(by_ms.saturating_mul(MICROS_PER_MS as i64)) }
    }
}

impl fmt::Display for LocalInstant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "local@{}ms", self.micros / MICROS_PER_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ms_until_rounds_as_asked_and_never_goes_negative() {
        let t = ServerTime::from_unix_micros(1_000);
        assert_eq!(t.ms_until_ceil(ServerTime::from_unix_micros(1_001)), 1);
        assert_eq!(t.ms_until_floor(ServerTime::from_unix_micros(1_001)), 0);
        assert_eq!(t.ms_until_ceil(ServerTime::from_unix_micros(3_000)), 2);
        assert_eq!(t.ms_until_floor(ServerTime::from_unix_micros(3_999)), 2);
        assert_eq!(t.ms_until_ceil(ServerTime::from_unix_micros(999)), 0);
        assert_eq!(t.ms_until_floor(ServerTime::from_unix_micros(999)), 0);
        assert_eq!(t.ms_until_ceil(t), 0);
    }

    #[test]
    fn plus_ms_saturates() {
        assert_eq!(ServerTime::from_unix_micros(i64::MAX - 1).plus_ms(5).unix_micros(), i64::MAX);
        assert_eq!(LocalInstant::from_micros(u64::MAX - 1).plus_ms(5).micros(), u64::MAX);
        assert_eq!(LocalInstant::from_ms(2).plus_ms(3), LocalInstant::from_ms(5));
    }
}
