//! The transaction logic: the pure decisions a Spanner read-write transaction makes, given the row as read in
//! that transaction (or none) and the server time read in that same transaction. Drivers run [`plan`] inside the
//! transaction and buffer [`TxnPlan::write`]; serializability does the rest.

use crate::{ClientId, Config, Fence, LeaseRow, RowWrite, ServerTime, Status};
use serde::{Deserialize, Serialize};

/// What a client wants from the mutex.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// Run a critical section once per need: a fresh DONE row means someone already did it.
    RunOnce,
    /// A plain lease lock: DONE and FAILED rows are simply free.
    Lock,
}

/// How a free row came to be acquired; for traces and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AcquisitionKind {
    /// No row, a stale DONE row, or (lock mode) a released one.
    Fresh,
    /// The previous holder reported FAILED.
    AfterFailure,
    /// The previous holder's lease expired without a release.
    Takeover,
    /// The row already names this client as an unexpired holder (its earlier commit landed unseen).
    Reentrant,
}

impl std::fmt::Display for AcquisitionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Fresh => "fresh",
            Self::AfterFailure => "after a failure",
            Self::Takeover => "takeover",
            Self::Reentrant => "its own earlier commit",
        })
    }
}

/// What an observer can conclude from a row read at a server time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Observation {
    /// An acquisition attempt would succeed now; `kind` says why.
    Acquirable {
        /// Why the row is free.
        kind: AcquisitionKind,
    },
    /// Someone holds an unexpired lease.
    Busy {
        /// The holder.
        holder: ClientId,
        /// The holder's fence.
        fence: Fence,
        /// When the lease expires unless renewed.
        expires_at: ServerTime,
        /// The server time of the observation, so waiters can sleep until expiry on their own clock.
        server_now: ServerTime,
    },
    /// (Run-once only.) Someone completed the section within the staleness window.
    DoneByOther {
        /// Who completed it.
        holder: ClientId,
        /// With which fence.
        fence: Fence,
    },
}

/// Judges a row as seen by `observer` at `now`. All expiry decisions in the protocol go through here.
pub fn observe(cfg: &Config, mode: Mode, observer: ClientId, row: Option<&LeaseRow>, now: ServerTime) -> Observation {
    let Some(row) = row else {
        return Observation::Acquirable { kind: AcquisitionKind::Fresh };
    };
    match row.status {
        Status::Started if now < row.expires_at => {
            if row.holder == observer {
                Observation::Acquirable { kind: AcquisitionKind::Reentrant }
            } else {
                Observation::Busy { holder: row.holder, fence: row.fence, expires_at: row.expires_at, server_now: now }
            }
        }
        Status::Started => Observation::Acquirable { kind: AcquisitionKind::Takeover },
        Status::Failed => Observation::Acquirable { kind: AcquisitionKind::AfterFailure },
        Status::Done if mode == Mode::RunOnce && now < row.updated_at.plus_ms(cfg.staleness_ms()) => {
            Observation::DoneByOther { holder: row.holder, fence: row.fence }
        }
        Status::Done => Observation::Acquirable { kind: AcquisitionKind::Fresh },
    }
}

/// How a holder leaves the row when it releases.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReleaseStatus {
    /// The section completed, or the lock is released.
    Done,
    /// The section failed or was cancelled; others may retry at once.
    Failed {
        /// What went wrong, stored in `last_error`.
        error: String,
    },
}

/// An operator's control over a mutex, outside every client's run (`spanner-mutex force-release`, `spanner-mutex reset`).
/// Each is one transaction that records on the row who did it and why (`last_error`) and when (`updated_at`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OperatorAction {
    /// Ends the current lease now, whoever holds it and whether or not it is still running: the row becomes
    /// FAILED, so from this commit on the holder's renewals and fenced writes are refused (it learns it lost the
    /// lease at the next of them) and the next acquisition succeeds.
    ForceRelease,
    /// Makes a DONE row FAILED, so the next run acquires it and asks its need check again (a DONE row is otherwise
    /// final for `staleness_ms`).
    Reset,
}

impl OperatorAction {
    /// The action's words on the row and on the command line.
    pub const fn words(self) -> &'static str {
        match self {
            Self::ForceRelease => "force-released",
            Self::Reset => "reset",
        }
    }

    /// The action whose record `row` holds: a FAILED row an operator left (its `last_error` reads
    /// "force-released by …: …" or "reset by …: …").
    pub fn recorded_on(row: &LeaseRow) -> Option<Self> {
        Self::of_record(row.last_error.as_deref().filter(|_| row.status == Status::Failed)?)
    }

    /// The action whose record `text` is. A client's own error that would read as one is recorded with a prefix
    /// ([`recorded_error`]), so only an operator's transaction writes one.
    fn of_record(text: &str) -> Option<Self> {
        [Self::ForceRelease, Self::Reset]
            .into_iter()
            .find(|action| text.strip_prefix(action.words()).is_some_and(|rest| rest.starts_with(" by ")))
    }

    /// The status a row must have for the action to apply.
    pub const fn applies_to(self) -> Status {
        match self {
            Self::ForceRelease => Status::Started,
            Self::Reset => Status::Done,
        }
    }
}

/// A read-write transaction the protocol runs on the lease row.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TxnRequest {
    /// Acquire the lease if the row is free.
    Acquire {
        /// The acquiring client.
        client: ClientId,
        /// Its display name.
        holder_name: String,
        /// Run-once or lock semantics.
        mode: Mode,
    },
    /// Extend the holder's lease by a TTL from now.
    Renew {
        /// The holder.
        client: ClientId,
        /// Its fence.
        fence: Fence,
    },
    /// End the holder's lease with a final status.
    Release {
        /// The holder.
        client: ClientId,
        /// Its fence.
        fence: Fence,
        /// The status to leave.
        status: ReleaseStatus,
    },
    /// Verify, inside a user's transaction, that the lease is still held with this fence; the user's writes in
    /// the same transaction then commit only while the lease is ours, together with the row's record that write
    /// number `write` landed, so a retry of a write whose answer was lost finds it and does not apply it twice.
    VerifyFence {
        /// The holder.
        client: ClientId,
        /// Its fence.
        fence: Fence,
        /// The write's number under this fence, from 1; a retry keeps its number. A holder issues its fenced
        /// writes one at a time, so every write numbered below this one has been resolved.
        write: u32,
    },
    /// An operator's control ([`OperatorAction`]).
    Operator {
        /// What the operator does.
        action: OperatorAction,
        /// The fence of the lease the operator means (read from the row, `spanner-mutex status`): a row under
        /// another fence (a lease taken over or released since) is left alone.
        fence: Fence,
        /// Who the operator is, as recorded on the row.
        by: String,
        /// Why, as recorded on the row.
        reason: String,
    },
}

impl TxnRequest {
    /// The client the request is for; `None` for an operator's.
    pub const fn client(&self) -> Option<ClientId> {
        match self {
            Self::Acquire { client, .. }
            | Self::Renew { client, .. }
            | Self::Release { client, .. }
            | Self::VerifyFence { client, .. } => Some(*client),
            Self::Operator { .. } => None,
        }
    }

    /// Renames the client and the fence this request names (see [`crate::Rename`]).
    pub fn rename(&mut self, map: &impl crate::Rename) {
        match self {
            Self::Acquire { client, .. } => *client = map.client(*client),
            Self::Renew { client, fence }
            | Self::Release { client, fence, .. }
            | Self::VerifyFence { client, fence, .. } => {
                *client = map.client(*client);
                *fence = map.fence(*fence);
            }
            Self::Operator { fence, .. } => *fence = map.fence(*fence),
        }
    }
}

/// What a committed transaction tells the client.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TxnReply {
    /// The lease is ours until `expires_at` on the server's clock.
    Acquired {
        /// Our fence.
        fence: Fence,
        /// Server-side expiry of the grant.
        expires_at: ServerTime,
        /// Why the row was free.
        kind: AcquisitionKind,
    },
    /// Someone else holds the lease; nothing was written.
    Busy {
        /// The holder.
        holder: ClientId,
        /// Its fence.
        fence: Fence,
        /// Its expiry.
        expires_at: ServerTime,
        /// Server time read in the transaction.
        server_now: ServerTime,
    },
    /// The section was completed by someone within the staleness window; nothing was written.
    DoneByOther {
        /// Who completed it.
        holder: ClientId,
        /// With which fence.
        fence: Fence,
    },
    /// The lease is extended until `expires_at`.
    Renewed {
        /// New server-side expiry.
        expires_at: ServerTime,
    },
    /// The lease is released (or was already released by this holder).
    Released,
    /// The fence is current: the transaction's other writes may commit.
    FenceValid,
    /// This fenced write committed in an earlier attempt whose answer was lost; nothing is written again.
    AlreadyApplied,
    /// The row no longer names this client and fence as an unexpired holder; nothing was written.
    NotHolder,
    /// An operator's control took effect on the lease of `holder` under `fence`.
    OperatorApplied {
        /// The holder whose lease was ended (or whose DONE was reset).
        holder: ClientId,
        /// Its display name.
        holder_name: String,
        /// Its fence.
        fence: Fence,
    },
    /// An operator's control found nothing to act on: the row's status is not the one the action applies to
    /// ([`OperatorAction::applies_to`]), or its fence is not the one the operator named; nothing was written.
    OperatorNotApplicable {
        /// The row's status (`None`: no row).
        status: Option<Status>,
        /// The row's fence (`None`: no row).
        fence: Option<Fence>,
    },
}

/// The outcome of running a [`TxnRequest`] against a row: what to buffer, and what to reply once committed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxnPlan {
    /// The row to write, if any.
    pub write: Option<RowWrite>,
    /// The reply, valid only if the transaction commits.
    pub reply: TxnReply,
}

/// The error a client's FAILED release records: its own words, unless they would read as an operator's record.
fn recorded_error(error: &str) -> String {
    if OperatorAction::of_record(error).is_some() { format!("error: {error}") } else { error.to_owned() }
}

/// Whether `row` shows that `client` released its lease under `fence` itself: it names them and is no longer
/// STARTED, and no operator's forced release ended it (a reset applies to a DONE row, which only the holder's own
/// release leaves). A release whose answer was lost reads this to know it landed.
pub fn released_by(row: &LeaseRow, client: ClientId, fence: Fence) -> bool {
    row.holder == client
        && row.fence == fence
        && row.status != Status::Started
        && OperatorAction::recorded_on(row) != Some(OperatorAction::ForceRelease)
}

fn held_by(row: Option<&LeaseRow>, client: ClientId, fence: Fence, now: ServerTime) -> bool {
    row.is_some_and(|r| r.grants(client, fence, now))
}

fn no_write(reply: TxnReply) -> TxnPlan {
    TxnPlan { write: None, reply }
}

/// Decides `request` against `row` at `now`. `now` is the server time read in the same transaction (the seed's
/// protocol, [`crate::Protocol::Naive`], passed the client's wall clock here instead).
pub fn plan(cfg: &Config, request: &TxnRequest, row: Option<&LeaseRow>, now: ServerTime) -> TxnPlan {
    match request {
        TxnRequest::Acquire { client, holder_name, mode } => match observe(cfg, *mode, *client, row, now) {
            Observation::Acquirable { kind } => {
                let (fence, attempt) = match (row, kind) {
                    (None, _) => (Fence::first_at(now), 1),
                    (Some(r), AcquisitionKind::Reentrant) => (r.fence, r.attempt),
                    (Some(r), AcquisitionKind::Fresh) => (r.fence.next(), 1),
                    (Some(r), _) if cfg.protocol().keeps_fence_on_reacquire() && r.attempt >= 1 => {
                        (r.fence, r.attempt.saturating_add(1))
                    }
                    (Some(r), _) => (r.fence.next(), r.attempt.saturating_add(1)),
                };

                let expires_at = now.plus_ms(cfg.ttl_ms());
                let write = RowWrite {
                    status: Status::Started,
                    holder: *client,
                    holder_name: holder_name.clone(),
                    fence,
                    expires_at,
                    attempt,
                    last_error: None,
                    // Every acquisition starts a new lease whose fenced writes are numbered from 1, re-entry
                    // included (a retry after a release that was never confirmed): the old lease's writes are
                    // resolved or abandoned, and an abandoned one read the row before this write, so it aborts.
                    fenced_writes: 0,
                };
                TxnPlan { write: Some(write), reply: TxnReply::Acquired { fence, expires_at, kind } }
            }
            Observation::Busy { holder, fence, expires_at, server_now } => {
                no_write(TxnReply::Busy { holder, fence, expires_at, server_now })
            }
            Observation::DoneByOther { holder, fence } => no_write(TxnReply::DoneByOther { holder, fence }),
        },
        TxnRequest::Renew { client, fence } => match row {
            Some(r)
                if held_by(row, *client, *fence, now)
                    || (cfg.protocol().renews_any_started() && r.status == Status::Started) =>
            {
                let expires_at = now.plus_ms(cfg.ttl_ms());
                TxnPlan {
                    write: Some(RowWrite { expires_at, ..r.to_write() }),
                    reply: TxnReply::Renewed { expires_at },
                }
            }
            _ => no_write(TxnReply::NotHolder),
        },
        TxnRequest::Release { client, fence, status } => match row {
            // An expired but untaken lease may still be released: nobody else ran in the meantime.
            Some(r) if r.holder == *client && r.fence == *fence && r.status == Status::Started => {
                let (status, last_error) = match status {
                    ReleaseStatus::Done => (Status::Done, None),
                    ReleaseStatus::Failed { error } => (Status::Failed, Some(recorded_error(error))),
                };
                let write = RowWrite { status, last_error, expires_at: now.min(r.expires_at), ..r.to_write() };
                TxnPlan { write: Some(write), reply: TxnReply::Released }
            }
            // Retrying a release whose first commit landed unseen (not one an operator's forced release ended: its
            // holder lost the lease, and must hear so).
            Some(r) if released_by(r, *client, *fence) => no_write(TxnReply::Released),
            _ => no_write(TxnReply::NotHolder),
        },
        TxnRequest::VerifyFence { client, fence, write } => {
            let ours = row.filter(|r| r.holder == *client && r.fence == *fence);
            // Judged before expiry: that the write landed is a fact of the past, true after the lease ended.
            if cfg.protocol().records_fenced_writes() && ours.is_some_and(|r| r.fenced_writes >= *write) {
                no_write(TxnReply::AlreadyApplied)
            } else if !cfg.protocol().checks_fence() || held_by(row, *client, *fence, now) {
                let record = ours.filter(|_| cfg.protocol().records_fenced_writes()).map(|r| RowWrite {
                    fenced_writes: if cfg.protocol().records_write_numbers() { *write } else { 1 },
                    ..r.to_write()
                });
                TxnPlan { write: record, reply: TxnReply::FenceValid }
            } else {
                no_write(TxnReply::NotHolder)
            }
        }
        TxnRequest::Operator { action, fence, by, reason } => match row {
            Some(r) if r.status == action.applies_to() && r.fence == *fence => {
                let last_error = Some(format!("{} by {by}: {reason}", action.words()));
                let write = match action {
                    // FAILED and expired at once; the holder and fence stay, so the row's record of the lease's
                    // fenced writes still answers a retry of one that landed before.
                    OperatorAction::ForceRelease if cfg.protocol().force_release_ends_lease() => RowWrite {
                        status: Status::Failed,
                        last_error,
                        expires_at: now.min(r.expires_at),
                        ..r.to_write()
                    },
                    OperatorAction::ForceRelease => RowWrite { last_error, ..r.to_write() },
                    OperatorAction::Reset => RowWrite { status: Status::Failed, last_error, ..r.to_write() },
                };
                let reply =
                    TxnReply::OperatorApplied { holder: r.holder, holder_name: r.holder_name.clone(), fence: r.fence };
                TxnPlan { write: Some(write), reply }
            }
            _ => {
                no_write(TxnReply::OperatorNotApplicable { status: row.map(|r| r.status), fence: row.map(|r| r.fence) })
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConfigParams, Protocol};

    const A: ClientId = ClientId::from_u128(0xA);
    const B: ClientId = ClientId::from_u128(0xB);

    fn cfg() -> Config {
        ConfigParams {
            ttl_ms: 10,
            staleness_ms: 1_000,
            wait_ms: 1,
            max_wait_ms: 5,
            poll_ms: 5,
            max_retries: 3,
            renew_interval_ms: 3,
            safety_margin_ms: 2,
            clock_drift_ppm: 0,
            server_uncertainty_ms: 1,
            jitter_ms: 0,
            unavailable_ms: 0,
        }
        .validate()
        .expect("valid")
    }

    fn at(ms: i64) -> ServerTime {
        ServerTime::from_unix_micros(ms * 1_000)
    }

    fn acquire(client: ClientId) -> TxnRequest {
        TxnRequest::Acquire { client, holder_name: String::new(), mode: Mode::RunOnce }
    }

    fn commit(plan: &TxnPlan, at_ms: i64) -> LeaseRow {
        plan.write.clone().expect("a write").committed_at(at(at_ms))
    }

    /// The fence of a row created at 100 ms: the server time in microseconds.
    const CREATED_AT_100_MS: Fence = Fence::new(100_000);

    #[test]
    fn first_acquire_creates_a_fence_of_the_server_time_expiring_a_ttl_after_it() {
        let p = plan(&cfg(), &acquire(A), None, at(100));
        assert_eq!(
            p.reply,
            TxnReply::Acquired { fence: CREATED_AT_100_MS, expires_at: at(110), kind: AcquisitionKind::Fresh }
        );
        let row = commit(&p, 101);
        assert_eq!(
            (row.status, row.holder, row.fence, row.expires_at, row.attempt),
            (Status::Started, A, CREATED_AT_100_MS, at(110), 1)
        );
    }

    #[test]
    fn a_row_created_again_after_deletion_starts_above_every_earlier_fence() {
        // Acquisitions add 1 each, at most one per microsecond of server time: the fences of a deleted row stay
        // below the server time of its last write, so a row created later starts above them.
        let mut row = commit(&plan(&cfg(), &acquire(A), None, at(100)), 100);
        for (i, ms) in (111..).step_by(11).take(50).enumerate() {
            let client = if i % 2 == 0 { B } else { A };
            row = commit(&plan(&cfg(), &acquire(client), Some(&row), at(ms)), ms);
        }
        assert_eq!(row.fence, Fence::new(100_050));
        let deleted_then_created = plan(&cfg(), &acquire(A), None, at(row.updated_at.unix_micros() / 1_000 + 1));
        let TxnReply::Acquired { fence, .. } = deleted_then_created.reply else { panic!("acquired") };
        assert!(fence > row.fence, "{fence} after {}", row.fence);
    }

    #[test]
    fn unexpired_lease_is_busy_until_its_expiry_then_taken_over_with_the_next_fence() {
        let row = commit(&plan(&cfg(), &acquire(A), None, at(100)), 100);
        let busy = plan(&cfg(), &acquire(B), Some(&row), at(109));
        assert_eq!(
            busy,
            no_write(TxnReply::Busy { holder: A, fence: CREATED_AT_100_MS, expires_at: at(110), server_now: at(109) })
        );
        let take = plan(&cfg(), &acquire(B), Some(&row), at(110));
        assert_eq!(
            take.reply,
            TxnReply::Acquired {
                fence: CREATED_AT_100_MS.next(),
                expires_at: at(120),
                kind: AcquisitionKind::Takeover
            }
        );
        assert_eq!(commit(&take, 110).attempt, 2);
    }

    #[test]
    fn own_unexpired_row_is_reacquired_with_the_same_fence() {
        let row = commit(&plan(&cfg(), &acquire(A), None, at(100)), 100);
        let again = plan(&cfg(), &acquire(A), Some(&row), at(105));
        assert_eq!(
            again.reply,
            TxnReply::Acquired { fence: CREATED_AT_100_MS, expires_at: at(115), kind: AcquisitionKind::Reentrant }
        );
    }

    #[test]
    fn done_is_final_until_stale_in_run_once_mode_and_free_in_lock_mode() {
        let held = commit(&plan(&cfg(), &acquire(A), None, at(0)), 0);
        let release = TxnRequest::Release { client: A, fence: Fence::FIRST, status: ReleaseStatus::Done };
        let done = commit(&plan(&cfg(), &release, Some(&held), at(5)), 5);
        assert_eq!((done.status, done.expires_at), (Status::Done, at(5)));
        assert_eq!(
            plan(&cfg(), &acquire(B), Some(&done), at(1_004)).reply,
            TxnReply::DoneByOther { holder: A, fence: Fence::FIRST }
        );
        let fresh = plan(&cfg(), &acquire(B), Some(&done), at(1_005));
        assert_eq!(
            fresh.reply,
            TxnReply::Acquired { fence: Fence::new(2), expires_at: at(1_015), kind: AcquisitionKind::Fresh }
        );
        let lock = TxnRequest::Acquire { client: B, holder_name: String::new(), mode: Mode::Lock };
        assert!(matches!(
            plan(&cfg(), &lock, Some(&done), at(6)).reply,
            TxnReply::Acquired { kind: AcquisitionKind::Fresh, .. }
        ));
    }

    #[test]
    fn failed_rows_are_free_at_once() {
        let held = commit(&plan(&cfg(), &acquire(A), None, at(0)), 0);
        let release = TxnRequest::Release {
            client: A,
            fence: Fence::FIRST,
            status: ReleaseStatus::Failed { error: "boom".into() },
        };
        let failed = commit(&plan(&cfg(), &release, Some(&held), at(2)), 2);
        assert_eq!(failed.last_error.as_deref(), Some("boom"));
        let again = plan(&cfg(), &acquire(B), Some(&failed), at(3));
        assert_eq!(
            again.reply,
            TxnReply::Acquired { fence: Fence::new(2), expires_at: at(13), kind: AcquisitionKind::AfterFailure }
        );
    }

    #[test]
    fn renew_requires_holder_fence_and_an_unexpired_lease() {
        let held = commit(&plan(&cfg(), &acquire(A), None, at(0)), 0);
        let renew = |client, fence| TxnRequest::Renew { client, fence };
        let ok = plan(&cfg(), &renew(A, Fence::FIRST), Some(&held), at(9));
        assert_eq!(ok.reply, TxnReply::Renewed { expires_at: at(19) });
        assert_eq!(commit(&ok, 9).fence, Fence::FIRST);
        for (client, fence, now) in [(B, Fence::FIRST, 5), (A, Fence::new(2), 5), (A, Fence::FIRST, 10)] {
            assert_eq!(plan(&cfg(), &renew(client, fence), Some(&held), at(now)), no_write(TxnReply::NotHolder));
        }
        assert_eq!(plan(&cfg(), &renew(A, Fence::FIRST), None, at(1)), no_write(TxnReply::NotHolder));
    }

    #[test]
    fn release_by_a_superseded_holder_writes_nothing() {
        let first = commit(&plan(&cfg(), &acquire(A), None, at(0)), 0);
        let second = commit(&plan(&cfg(), &acquire(B), Some(&first), at(10)), 10);
        let stale = TxnRequest::Release { client: A, fence: Fence::FIRST, status: ReleaseStatus::Done };
        assert_eq!(plan(&cfg(), &stale, Some(&second), at(11)), no_write(TxnReply::NotHolder));
    }

    #[test]
    fn release_is_idempotent_for_its_holder() {
        let held = commit(&plan(&cfg(), &acquire(A), None, at(0)), 0);
        let release = TxnRequest::Release { client: A, fence: Fence::FIRST, status: ReleaseStatus::Done };
        let done = commit(&plan(&cfg(), &release, Some(&held), at(1)), 1);
        assert_eq!(plan(&cfg(), &release, Some(&done), at(2)), no_write(TxnReply::Released));
    }

    #[test]
    fn verify_fence_accepts_only_the_current_unexpired_holder() {
        let first = commit(&plan(&cfg(), &acquire(A), None, at(0)), 0);
        let verify = |client, fence| TxnRequest::VerifyFence { client, fence, write: 1 };
        assert_eq!(plan(&cfg(), &verify(A, Fence::FIRST), Some(&first), at(9)).reply, TxnReply::FenceValid);
        assert_eq!(plan(&cfg(), &verify(A, Fence::FIRST), Some(&first), at(10)).reply, TxnReply::NotHolder);
        let second = commit(&plan(&cfg(), &acquire(B), Some(&first), at(10)), 10);
        assert_eq!(plan(&cfg(), &verify(A, Fence::FIRST), Some(&second), at(11)).reply, TxnReply::NotHolder);
        assert_eq!(plan(&cfg(), &verify(B, Fence::new(2)), Some(&second), at(11)).reply, TxnReply::FenceValid);
    }

    #[test]
    fn without_the_fence_check_a_superseded_holder_passes_verification() {
        let broken = cfg().with_protocol(Protocol::NoFenceCheck);
        let first = commit(&plan(&broken, &acquire(A), None, at(0)), 0);
        let second = commit(&plan(&broken, &acquire(B), Some(&first), at(10)), 10);
        let verify = TxnRequest::VerifyFence { client: A, fence: Fence::FIRST, write: 1 };
        assert_eq!(plan(&broken, &verify, Some(&second), at(11)).reply, TxnReply::FenceValid);
    }

    #[test]
    fn a_fenced_write_records_that_it_landed_so_its_retry_is_not_applied_again() {
        let held = commit(&plan(&cfg(), &acquire(A), None, at(0)), 0);
        let write = |write| TxnRequest::VerifyFence { client: A, fence: Fence::FIRST, write };
        let first = plan(&cfg(), &write(1), Some(&held), at(1));
        assert_eq!(first.reply, TxnReply::FenceValid);
        let landed = commit(&first, 1);
        assert_eq!(landed.fenced_writes, 1);
        // The answer was lost: the retry finds the record, even once the lease has expired.
        assert_eq!(plan(&cfg(), &write(1), Some(&landed), at(2)), no_write(TxnReply::AlreadyApplied));
        assert_eq!(plan(&cfg(), &write(1), Some(&landed), at(50)).reply, TxnReply::AlreadyApplied);
        // The next write is new; a renewal keeps the record; a new holder starts its own.
        assert_eq!(plan(&cfg(), &write(2), Some(&landed), at(2)).reply, TxnReply::FenceValid);
        let renew = TxnRequest::Renew { client: A, fence: Fence::FIRST };
        assert_eq!(commit(&plan(&cfg(), &renew, Some(&landed), at(3)), 3).fenced_writes, 1);
        // Re-entering (a retry whose release was never confirmed) starts a new lease: its writes count from 1.
        let reentered = commit(&plan(&cfg(), &acquire(A), Some(&landed), at(4)), 4);
        assert_eq!((reentered.fence, reentered.fenced_writes), (landed.fence, 0));
        let taken = commit(&plan(&cfg(), &acquire(B), Some(&landed), at(20)), 20);
        assert_eq!(taken.fenced_writes, 0);
        assert_eq!(plan(&cfg(), &write(1), Some(&taken), at(21)).reply, TxnReply::NotHolder);
    }

    fn operator(action: OperatorAction) -> TxnRequest {
        TxnRequest::Operator { action, fence: CREATED_AT_100_MS, by: "alice".into(), reason: "stuck".into() }
    }

    #[test]
    fn a_forced_release_ends_a_live_lease_at_once_and_refuses_the_holder_s_next_write_and_renewal() {
        let held = commit(&plan(&cfg(), &acquire(A), None, at(100)), 100);
        let verify = |write| TxnRequest::VerifyFence { client: A, fence: CREATED_AT_100_MS, write };
        let held = commit(&plan(&cfg(), &verify(1), Some(&held), at(101)), 101);
        let released = plan(&cfg(), &operator(OperatorAction::ForceRelease), Some(&held), at(103));
        assert_eq!(
            released.reply,
            TxnReply::OperatorApplied { holder: A, holder_name: String::new(), fence: CREATED_AT_100_MS }
        );
        let row = commit(&released, 103);
        assert_eq!(
            (row.status, row.holder, row.fence, row.expires_at, row.last_error.as_deref()),
            (Status::Failed, A, CREATED_AT_100_MS, at(103), Some("force-released by alice: stuck"))
        );
        assert_eq!(OperatorAction::recorded_on(&row), Some(OperatorAction::ForceRelease));
        assert_eq!(plan(&cfg(), &verify(2), Some(&row), at(104)), no_write(TxnReply::NotHolder));
        // A retry of a write that landed before the release still finds it, so it is not applied again.
        assert_eq!(plan(&cfg(), &verify(1), Some(&row), at(104)), no_write(TxnReply::AlreadyApplied));
        let renew = TxnRequest::Renew { client: A, fence: CREATED_AT_100_MS };
        assert_eq!(plan(&cfg(), &renew, Some(&row), at(104)), no_write(TxnReply::NotHolder));
        let next = plan(&cfg(), &acquire(B), Some(&row), at(104));
        assert!(matches!(next.reply, TxnReply::Acquired { kind: AcquisitionKind::AfterFailure, .. }), "{next:?}");
        // Nothing is left to release.
        let again = plan(&cfg(), &operator(OperatorAction::ForceRelease), Some(&row), at(104));
        let failed = TxnReply::OperatorNotApplicable { status: Some(Status::Failed), fence: Some(CREATED_AT_100_MS) };
        assert_eq!(again, no_write(failed));
        // The holder's own release, unaware, is told it lost the lease: it was not its release that ended it.
        let release = TxnRequest::Release { client: A, fence: CREATED_AT_100_MS, status: ReleaseStatus::Done };
        assert_eq!(plan(&cfg(), &release, Some(&row), at(104)), no_write(TxnReply::NotHolder));
        assert!(!released_by(&row, A, CREATED_AT_100_MS));
        assert_eq!(
            plan(&cfg(), &operator(OperatorAction::ForceRelease), None, at(104)),
            no_write(TxnReply::OperatorNotApplicable { status: None, fence: None })
        );
    }

    #[test]
    fn an_operator_s_control_names_the_fence_it_means_and_a_client_error_never_reads_as_its_record() {
        let held = commit(&plan(&cfg(), &acquire(A), None, at(100)), 100);
        let taken_over = commit(&plan(&cfg(), &acquire(B), Some(&held), at(110)), 110);
        // Read under fence 100_000, released after a takeover: the new holder's lease is left alone.
        let late = plan(&cfg(), &operator(OperatorAction::ForceRelease), Some(&taken_over), at(111));
        let other = TxnReply::OperatorNotApplicable { status: Some(Status::Started), fence: Some(taken_over.fence) };
        assert_eq!(late, no_write(other));
        let forged = ReleaseStatus::Failed { error: "force-released by nobody: a section's own words".into() };
        let release = TxnRequest::Release { client: B, fence: taken_over.fence, status: forged };
        let row = commit(&plan(&cfg(), &release, Some(&taken_over), at(112)), 112);
        assert_eq!(row.last_error.as_deref(), Some("error: force-released by nobody: a section's own words"));
        assert_eq!(OperatorAction::recorded_on(&row), None);
        assert!(released_by(&row, B, taken_over.fence));
    }

    #[test]
    fn a_reset_makes_only_a_done_row_failed_so_the_next_run_acquires_it() {
        let held = commit(&plan(&cfg(), &acquire(A), None, at(100)), 100);
        let reset = operator(OperatorAction::Reset);
        assert_eq!(
            plan(&cfg(), &reset, Some(&held), at(101)),
            no_write(TxnReply::OperatorNotApplicable { status: Some(Status::Started), fence: Some(CREATED_AT_100_MS) })
        );
        let release = TxnRequest::Release { client: A, fence: CREATED_AT_100_MS, status: ReleaseStatus::Done };
        let done = commit(&plan(&cfg(), &release, Some(&held), at(101)), 101);
        assert!(matches!(plan(&cfg(), &acquire(B), Some(&done), at(102)).reply, TxnReply::DoneByOther { .. }));
        let row = commit(&plan(&cfg(), &reset, Some(&done), at(102)), 102);
        assert_eq!((row.status, row.last_error.as_deref()), (Status::Failed, Some("reset by alice: stuck")));
        assert_eq!(OperatorAction::recorded_on(&row), Some(OperatorAction::Reset));
        let next = plan(&cfg(), &acquire(B), Some(&row), at(103));
        assert!(matches!(next.reply, TxnReply::Acquired { kind: AcquisitionKind::AfterFailure, .. }), "{next:?}");
        // The holder's release had landed before the reset: a retry of it is still answered released.
        assert!(released_by(&row, A, CREATED_AT_100_MS));
        assert_eq!(plan(&cfg(), &release, Some(&row), at(103)), no_write(TxnReply::Released));
    }

    #[test]
    fn a_forced_release_that_records_only_leaves_the_lease_to_its_holder_in_the_re_inserted_bug() {
        let cfg = cfg().with_protocol(Protocol::ForceReleaseRecordsOnly);
        let held = commit(&plan(&cfg, &acquire(A), None, at(100)), 100);
        let row = commit(&plan(&cfg, &operator(OperatorAction::ForceRelease), Some(&held), at(103)), 103);
        assert_eq!(row.status, Status::Started);
        let verify = TxnRequest::VerifyFence { client: A, fence: CREATED_AT_100_MS, write: 1 };
        assert_eq!(plan(&cfg, &verify, Some(&row), at(104)).reply, TxnReply::FenceValid);
    }
}
