//! An operator's controls over a mutex, outside every client's run: a forced release of a stuck lease and a reset
//! of a DONE run-once row. Each is one transaction of the protocol ([`spanner_mutex_model::OperatorAction`]) that
//! records on the row who did it and why (`last_error`) and when (`updated_at`).

use crate::{ClientId, Fence, SpannerMutex, Status, StoreError, StoreErrorKind};
use spanner_mutex_model::{OperatorAction, TxnReply, TxnRequest};

/// The longest operator name recorded on a row, in bytes.
pub const OPERATOR_NAME_MAX_BYTES: usize = 64;
/// The longest reason recorded on a row, in bytes.
pub const OPERATOR_REASON_MAX_BYTES: usize = 512;

/// The lease an operator's control acted on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorApplied {
    /// The holder whose lease was ended, or whose DONE was reset.
    pub holder: ClientId,
    /// Its display name.
    pub holder_name: String,
    /// Its fence.
    pub fence: Fence,
}

/// Why an operator's control was not applied.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The operator's name or reason is empty or too long for the row's record.
    #[error("{what} must be 1 to {max_bytes} bytes, not {bytes}: say briefly who you are and why")]
    InvalidRecord {
        /// `"the operator name"` or `"the reason"`.
        what: &'static str,
        /// Its length.
        bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// The row is not in the state the control acts on, or not under the fence named; nothing was written.
    #[error("nothing to do: {}", not_applicable_words(*.action, *.expected, *.status, *.fence))]
    NotApplicable {
        /// The control.
        action: OperatorAction,
        /// The fence the operator named.
        expected: Fence,
        /// The row's status (`None`: the mutex has no row).
        status: Option<Status>,
        /// The row's fence (`None`: the mutex has no row).
        fence: Option<Fence>,
    },
    /// Spanner failed or did not answer. After an unknown outcome the control may have been applied: read the
    /// row (`spanner-mutex status`) before trying again.
    #[error("{}{source}", if .source.kind == StoreErrorKind::Unknown {
        "the outcome is unknown (read the row with `spanner-mutex status` before trying again): "
    } else { "" })]
    Store {
        /// The store's error.
        #[from]
        source: StoreError,
    },
}

fn not_applicable_words(
    action: OperatorAction,
    expected: Fence,
    status: Option<Status>,
    fence: Option<Fence>,
) -> String {
    let wanted = match action {
        OperatorAction::ForceRelease => "only a STARTED row (a lease) can be force-released",
        OperatorAction::Reset => "only a DONE row can be reset",
    };
    match (status, fence) {
        (Some(status), Some(fence)) if status == action.applies_to() => format!(
            "the row is {status} under fence {}, not {}: it changed since it was read; read it again \
             (`spanner-mutex status`) and name the fence it shows",
            fence.get(),
            expected.get()
        ),
        (Some(status), _) => format!("the row is {status}; {wanted}"),
        (None, _) => format!("the mutex has no row; {wanted}"),
    }
}

impl SpannerMutex {
    /// Ends the lease under `fence` now (the fence [`SpannerMutex::status`] shows), whoever holds it and whether
    /// or not it is still running (`spanner-mutex force-release`); a lease under another fence (taken over or
    /// released since the row was read) is left alone. The row becomes FAILED, with `by` and `reason` recorded,
    /// so from the moment this commits the holder's fenced writes and renewals are refused: its next renewal
    /// signals lock lost, and its release reports the lease lost. The next waiter acquires the lease at its next
    /// poll. Only fenced writes are kept safe: work the holder does outside them may overlap with the next
    /// holder's until its next renewal. A run-once section runs again only if its need check says it is needed.
    /// One transaction, bounded by the store's timeouts.
    pub async fn force_release(&self, fence: Fence, by: &str, reason: &str) -> Result<OperatorApplied, OperatorError> {
        self.operate(OperatorAction::ForceRelease, fence, by, reason).await
    }

    /// Makes the DONE row under `fence` FAILED (`spanner-mutex reset`), with `by` and `reason` recorded, so the
    /// next run acquires the lease and asks its need check again instead of reporting "done by another" for
    /// `staleness_ms`.
    pub async fn reset(&self, fence: Fence, by: &str, reason: &str) -> Result<OperatorApplied, OperatorError> {
        self.operate(OperatorAction::Reset, fence, by, reason).await
    }

    async fn operate(
        &self,
        action: OperatorAction,
        expected: Fence,
        by: &str,
        reason: &str,
    ) -> Result<OperatorApplied, OperatorError> {
        for (what, text, max_bytes) in
            [("the operator name", by, OPERATOR_NAME_MAX_BYTES), ("the reason", reason, OPERATOR_REASON_MAX_BYTES)]
        {
            if text.trim().is_empty() || text.len() > max_bytes {
                return Err(OperatorError::InvalidRecord { what, bytes: text.len(), max_bytes });
            }
        }
        let request = TxnRequest::Operator { action, fence: expected, by: by.to_owned(), reason: reason.to_owned() };
        match self.store.transact(self.config(), self.name(), &request).await? {
            TxnReply::OperatorApplied { holder, holder_name, fence } => {
                // Info, not warn: the operator asked for it, and the CLI already says so on stdout.
                tracing::info!(action = action.words(), %by, %reason, fence = fence.get(), "operator's control applied");
                Ok(OperatorApplied { holder, holder_name, fence })
            }
            TxnReply::OperatorNotApplicable { status, fence } => {
                Err(OperatorError::NotApplicable { action, expected, status, fence })
            }
            other => unreachable!("an operator's transaction is answered {other:?}"),
        }
    }
}
