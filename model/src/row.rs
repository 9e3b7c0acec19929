//! The lease row: one per mutex, the only shared state of the protocol.

use crate::{ClientId, Fence, ServerTime};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What the row says about the mutex's critical section.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// A holder acquired the lease and runs the section (or holds the lock) until `expires_at`.
    Started,
    /// The section completed (or the lock was released).
    Done,
    /// The section failed or was cancelled; anyone may try again at once.
    Failed,
}

impl Status {
    /// The value stored in the row's `status` column.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Started => "STARTED",
            Self::Done => "DONE",
            Self::Failed => "FAILED",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `status` column value that is none of STARTED, DONE, FAILED.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}; expected STARTED, DONE or FAILED")]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "STARTED" => Ok(Self::Started),
            "DONE" => Ok(Self::Done),
            "FAILED" => Ok(Self::Failed),
            other => Err(UnknownStatus(other.to_owned())),
        }
    }
}

/// The lease row as read from Spanner.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseRow {
    /// Section status.
    pub status: Status,
    /// The client that last acquired the lease.
    pub holder: ClientId,
    /// That client's display name, for people reading the row.
    pub holder_name: String,
    /// The fence of the last acquisition.
    pub fence: Fence,
    /// Commit timestamp of the last write.
    pub updated_at: ServerTime,
    /// While `status` is STARTED, the lease is held until this server time (exclusive).
    pub expires_at: ServerTime,
    /// Acquisitions since the row was created or last became stale.
    pub attempt: u32,
    /// The error the last FAILED holder reported.
    pub last_error: Option<String>,
    /// How many fenced writes committed under `fence`: the idempotency record. A fenced write whose answer was
    /// lost is retried under the same number, and finds here that it already landed.
    pub fenced_writes: u32,
}

/// What a transaction writes: a [`LeaseRow`] whose `updated_at` Spanner fills in with the commit timestamp.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RowWrite {
    /// See [`LeaseRow::status`].
    pub status: Status,
    /// See [`LeaseRow::holder`].
    pub holder: ClientId,
    /// See [`LeaseRow::holder_name`].
    pub holder_name: String,
    /// See [`LeaseRow::fence`].
    pub fence: Fence,
    /// See [`LeaseRow::expires_at`].
    pub expires_at: ServerTime,
    /// See [`LeaseRow::attempt`].
    pub attempt: u32,
    /// See [`LeaseRow::last_error`].
    pub last_error: Option<String>,
    /// See [`LeaseRow::fenced_writes`].
    pub fenced_writes: u32,
}

impl RowWrite {
    /// The row as stored once the write commits at `commit_timestamp`.
    pub fn committed_at(self, commit_timestamp: ServerTime) -> LeaseRow {
        LeaseRow {
            status: self.status,
            holder: self.holder,
            holder_name: self.holder_name,
            fence: self.fence,
            updated_at: commit_timestamp,
            expires_at: self.expires_at,
            attempt: self.attempt,
            last_error: self.last_error,
            fenced_writes: self.fenced_writes,
        }
    }
}

impl LeaseRow {
    /// Whether this row grants the lease to `client` with `fence` at server time `now`: STARTED, naming them,
    /// and not expired. Renewals, fenced writes and every "relies only while granted" property judge by this.
    pub fn grants(&self, client: ClientId, fence: Fence, now: ServerTime) -> bool {
        self.status == Status::Started && self.holder == client && self.fence == fence && now < self.expires_at
    }

    /// The write that would store this row again (its `updated_at` comes from the next commit).
    pub fn to_write(&self) -> RowWrite {
        RowWrite {
            status: self.status,
            holder: self.holder,
            holder_name: self.holder_name.clone(),
            fence: self.fence,
            expires_at: self.expires_at,
            attempt: self.attempt,
            last_error: self.last_error.clone(),
            fenced_writes: self.fenced_writes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_through_its_column_value() {
        for s in [Status::Started, Status::Done, Status::Failed] {
            assert_eq!(s.as_str().parse::<Status>(), Ok(s));
        }
        assert_eq!("done".parse::<Status>(), Err(UnknownStatus("done".into())));
    }
}
