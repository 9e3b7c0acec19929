//! Identifiers: which mutex, which client acquisition, which fence.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// Identifies one client run (one `run()` or one lock acquisition). The driver makes a fresh random one per run,
/// so a restarted process can never be mistaken for its previous incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientId(Uuid);

impl ClientId {
    /// Wraps a UUID.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// A deterministic id for tests, simulations and the model checker.
    pub const fn from_u128(value: u128) -> Self {
        Self(Uuid::from_u128(value))
    }

    /// The wrapped UUID.
    pub const fn uuid(self) -> Uuid {
        self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The fence token of one acquisition: strictly increasing, one per acquisition of the mutex, also across the
/// deletion of its row (see [`Fence::first_at`]). A protected resource accepts a write only while the lease row
/// still carries the writer's fence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fence(u64);

impl Fence {
    /// The smallest fence: that of a row created at server time 0 (in tests and the model checker).
    pub const FIRST: Self = Self(1);

    /// The fence of the acquisition that creates a row at server time `now`: the time in microseconds (at least
    /// 1); later acquisitions add 1. A row is created anew only after a deletion policy removed the old one, days
    /// after its last write, while its fences stayed below the server time of its last acquisition (one per
    /// acquisition, and acquisitions are at least a microsecond of server time apart): so the new fences are
    /// above every old one, and fences never repeat for a name.
    pub fn first_at(now: crate::ServerTime) -> Self {
        Self(u64::try_from(now.unix_micros()).unwrap_or(0).max(1))
    }

    /// Wraps a raw fence value as stored in the row.
    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    /// The raw value, as stored in the row.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The fence of the acquisition after this one.
    pub const fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fence {}", self.0)
    }
}

/// The longest mutex name, in bytes.
pub const MUTEX_NAME_MAX_BYTES: usize = 128;

/// The key of a mutex's row: 1 to 128 bytes of ASCII letters, digits, `-`, `_`, `.`, `:` and `/`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct MutexName(String);

/// Why a string is not a valid [`MutexName`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MutexNameError {
    /// The name is empty.
    #[error("mutex name must not be empty")]
    Empty,
    /// The name is longer than [`MUTEX_NAME_MAX_BYTES`].
    #[error("mutex name is {len} bytes long; the limit is {MUTEX_NAME_MAX_BYTES}")]
    TooLong {
        /// The offending length.
        len: usize,
    },
    /// The name contains a character outside the allowed set.
    #[error("mutex name contains {found:?} at byte {index}; allowed are ASCII letters, digits and - _ . : /")]
    BadCharacter {
        /// The offending character.
        found: char,
        /// Its byte offset.
        index: usize,
    },
}

impl MutexName {
    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, MutexNameError> {
        let name = name.into();
        if name.is_empty() {
            return Err(MutexNameError::Empty);
        }
        if name.len() > MUTEX_NAME_MAX_BYTES {
            return Err(MutexNameError::TooLong { len: name.len() });
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/');
        if let Some((index, found)) = name.char_indices().find(|&(_, c)| !allowed(c)) {
            return Err(MutexNameError::BadCharacter { found, index });
        }
        Ok(Self(name))
    }

    /// The name as stored in the row's key column.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MutexName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MutexName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::new(raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutex_names_are_validated() {
        assert!(MutexName::new("migrations/v2:eu-west.1_a").is_ok());
        assert_eq!(MutexName::new(""), Err(MutexNameError::Empty));
        assert_eq!(MutexName::new("x".repeat(129)), Err(MutexNameError::TooLong { len: 129 }));
        assert_eq!(MutexName::new("a'; DROP TABLE t; --"), Err(MutexNameError::BadCharacter { found: '\'', index: 1 }));
    }

    #[test]
    fn fences_increase() {
        assert!(Fence::FIRST.next() > Fence::FIRST);
        assert_eq!(Fence::new(u64::MAX).next(), Fence::new(u64::MAX));
    }
}
