//! Where lease rows live. The driver asks a store for two things only: run the model's transaction logic in one
//! serializable read-write transaction, and read a row with the server's time. Stores make no lease decision.

use crate::lease::{AnyValue, Fenced, FencedError, FencedWork, WriteId};
use spanner_mutex_model::{Config, Failure, LeaseRow, MutexName, ServerTime, TxnReply, TxnRequest};
use std::future::Future;

/// How a store operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The transaction aborted (contention) after the store's own bounded retries; nothing was written.
    Aborted,
    /// The commit may or may not have happened (deadline, cancellation, connection lost during commit).
    Unknown,
    /// The store did not answer within its bound; nothing is known to have been written before the commit.
    Unavailable,
    /// The store refused: missing table, wrong schema, permission. Retrying cannot help.
    Rejected,
}

/// A failed store operation: its kind, Spanner's gRPC status code when Spanner answered, and the underlying
/// error's text for people.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}{message}", code.map(|c| format!("{c}: ")).unwrap_or_default())]
pub struct StoreError {
    /// What kind of failure, which decides what the machine is told.
    pub kind: StoreErrorKind,
    /// The gRPC status code Spanner answered with; `None` when it did not answer (a timeout, a lost connection)
    /// or the store is not Spanner.
    pub code: Option<google_cloud_gax::error::rpc::Code>,
    /// The underlying error.
    pub message: String,
}

impl StoreError {
    /// An error of `kind` with `message`, without a status code.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        Self { kind, code: None, message: message.into() }
    }

    /// The same error, with the status code Spanner answered with.
    #[must_use]
    pub const fn with_code(mut self, code: Option<google_cloud_gax::error::rpc::Code>) -> Self {
        self.code = code;
        self
    }

    /// Whether trying again may succeed: everything but a refusal (missing table, wrong schema, permission).
    pub const fn is_retryable(&self) -> bool {
        !matches!(self.kind, StoreErrorKind::Rejected)
    }

    /// The machine's failure for an error that is final.
    pub const fn failure(&self) -> Failure {
        match self.kind {
            StoreErrorKind::Rejected => Failure::Rejected,
            StoreErrorKind::Aborted | StoreErrorKind::Unknown | StoreErrorKind::Unavailable => Failure::Unavailable,
        }
    }
}

/// A row and the server time it was read at.
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub, reason = "exported for test stores only"))]
pub type RowRead = (Option<LeaseRow>, ServerTime);

/// What a store's fenced write answers, its work's value and error carried untyped.
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub, reason = "exported for test stores only"))]
pub type FencedAnswer = Result<Fenced<AnyValue>, FencedError<AnyValue>>;

/// A backend for lease rows. The library's own are Spanner and the in-memory store; tests wrap them
/// (`test-util`).
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub, reason = "exported for test stores only"))]
pub trait LeaseStore: Clone + Send + Sync + 'static {
    /// Runs [`spanner_mutex_model::txn::plan`] for `request` on `name`'s row inside one read-write transaction,
    /// with the row and the server time read in that transaction, writes the planned row, and commits.
    fn transact(
        &self,
        cfg: &Config,
        name: &MutexName,
        request: &TxnRequest,
    ) -> impl Future<Output = Result<TxnReply, StoreError>> + Send;

    /// Reads `name`'s row and the server's current time with one strongly consistent single-use read.
    fn read(&self, name: &MutexName) -> impl Future<Output = Result<RowRead, StoreError>> + Send;

    /// Runs `work` in one transaction that first verifies that `client` still holds `name` with `fence`;
    /// `work`'s writes commit only while the lease is theirs, together with the row's record that this lease's
    /// fenced write number `write` landed. A retry whose earlier attempt landed finds the record and answers
    /// [`Fenced::CommittedEarlier`] without running `work` again. A lease's writes are numbered from 1 and issued
    /// one at a time.
    fn fenced(
        &self,
        cfg: &Config,
        name: &MutexName,
        id: WriteId,
        work: FencedWork,
    ) -> impl Future<Output = FencedAnswer> + Send;

    /// Repairs what `error`, from the user's own calls through this store's client, shows to be broken (a lost
    /// session) and says whether trying again may now succeed. The need check is retried once when it does.
    fn heal(&self, error: &(dyn std::error::Error + Send + Sync + 'static)) -> impl Future<Output = bool> + Send {
        let _ = error;
        std::future::ready(false)
    }
}
