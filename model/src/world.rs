//! The protocol's world, written once: what Spanner does with the transactions, reads and fenced writes a client
//! machine commands, which fate each commit meets, Spanner's commit timestamps, and the rules the protected
//! resource judges every write by. Pure, like the machine: time is an argument.
//!
//! The checker, the simulator, replay and the conformance reference are adapters over this module: they decide
//! *when* a command reaches Spanner and *which* [`CommitFate`] it meets; [`Spanner`] decides *what* it does. A fault
//! or a primitive added here reaches every layer.

use crate::machine::may_retry_fenced_write;
use crate::txn::{OperatorAction, TxnReply, TxnRequest, plan};
use crate::{
    ClientId, ClientMachine, Command, Config, Event, Failure, Fence, LeaseRow, LocalInstant, Outcome, RowWrite,
    SectionResult, ServerTime, Status, UnexpectedEvent,
};
use std::fmt;

/// What a commit turns out to be, when the world gets to choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CommitFate {
    /// As the transaction logic decided (aborted anyway if a conflicting commit came first).
    AsDecided,
    /// Aborted without a conflict.
    Aborted,
    /// Committed, but the client is told the outcome is unknown.
    UnknownLanded,
    /// Not committed, and the client is told the outcome is unknown.
    UnknownLost,
    /// The client is told the outcome is unknown while the commit is still queued: it lands later
    /// ([`Spanner::land_late`]), unless the row changed meanwhile, or never.
    UnknownLate,
    /// Spanner did not answer: nothing is written, and the client is told the call failed.
    Unavailable,
}

impl CommitFate {
    /// The fate that applies: a transaction whose row changed since its read aborts, whatever was chosen (a call
    /// that never reached Spanner fails as it would have).
    pub const fn unless_conflict(self, conflict: bool) -> Self {
        match self {
            Self::Unavailable => self,
            _ if conflict => Self::Aborted,
            _ => self,
        }
    }

    /// Whether the transaction's writes land now.
    pub const fn lands(self) -> bool {
        matches!(self, Self::AsDecided | Self::UnknownLanded)
    }

    /// Whether the world chose it as a fault (anything but the outcome as decided).
    pub const fn is_fault(self) -> bool {
        !matches!(self, Self::AsDecided)
    }

    /// Whether Spanner answered the call: an abort is an answer (nothing written); an unknown outcome or an
    /// unavailable Spanner is not.
    pub const fn answered(self) -> bool {
        matches!(self, Self::AsDecided | Self::Aborted)
    }

    /// What the client is told, given the reply the transaction logic planned.
    pub fn event(self, reply: TxnReply) -> Event {
        match self {
            Self::AsDecided => Event::TxnCommitted(reply),
            Self::Aborted => Event::TxnAborted,
            Self::UnknownLanded | Self::UnknownLost | Self::UnknownLate => Event::TxnOutcomeUnknown,
            Self::Unavailable => Event::TxnFailed(Failure::Unavailable),
        }
    }

    /// The fate's word in an action's text (`commit:1:unknown-landed`).
    pub const fn word(self) -> &'static str {
        match self {
            Self::AsDecided => "ok",
            Self::Aborted => "aborted",
            Self::UnknownLanded => "unknown-landed",
            Self::UnknownLost => "unknown-lost",
            Self::UnknownLate => "unknown-late",
            Self::Unavailable => "unavailable",
        }
    }

    /// The fate [`CommitFate::word`] names.
    pub fn from_word(word: &str) -> Option<Self> {
        [Self::AsDecided, Self::Aborted, Self::UnknownLanded, Self::UnknownLost, Self::UnknownLate, Self::Unavailable]
            .into_iter()
            .find(|fate| fate.word() == word)
    }
}

/// What a section is told of its fenced write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FencedOutcome {
    /// The resource accepted the write.
    Accepted,
    /// An earlier attempt of this write landed (its answer was lost); nothing was applied again.
    AlreadyApplied,
    /// The fence check refused it: the lease is no longer the writer's.
    Rejected,
    /// Aborted, unknown or unanswered: the section retries the same write.
    Retry,
}

impl FencedOutcome {
    /// What a section reports when this answer ends its writing (its last write's, or one that stops it): completed
    /// when the write landed (or had landed), failed when it was refused, and, after `Retry` that may not be retried
    /// ([`hear_fenced_write`]), failed with Spanner unavailable.
    pub fn section_result(self) -> SectionResult {
        match self {
            Self::Accepted | Self::AlreadyApplied => SectionResult::Completed,
            Self::Rejected => SectionResult::Failed { error: "fenced write rejected".into() },
            Self::Retry => SectionResult::Failed { error: Failure::Unavailable.words().into() },
        }
    }
}

/// A write that broke a rule the resource and the row must keep, found as it was made. Judged apart from the
/// transaction logic, so a bug there shows here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Breach {
    /// A write lowered or skipped the row's fence ([`fence_follows`]).
    FenceRegressed {
        /// Whether the write was an acquisition.
        acquire: bool,
        /// The fence it wrote.
        wrote: Fence,
        /// The row's fence before it, if there was a row.
        over: Option<Fence>,
        /// The highest fence granted before it.
        highest: Option<Fence>,
    },
    /// A DONE row was replaced other than by a fresh acquisition ([`overwrites_done`]).
    DoneOverwritten {
        /// The DONE row's fence.
        done_fence: Fence,
        /// The status written over it.
        by: Status,
        /// The fence written over it.
        with: Fence,
    },
    /// The resource accepted a write whose fence had been superseded ([`superseded`]).
    StaleWriteAccepted {
        /// The write's fence.
        fence: Fence,
        /// The newer fence granted before it.
        highest: Fence,
    },
    /// A fenced write of the row's current lease reached the resource other than once and in order: the lease's
    /// writes that had landed were not exactly the ones numbered below it.
    FencedWriteRepeated {
        /// The write's fence.
        fence: Fence,
        /// Its number under that fence.
        write: u32,
        /// The number of its lease's write that had landed last (0: none had).
        last_landed: u32,
    },
    /// The resource accepted a write of a lease an operator had force-released, after the release committed.
    WriteAfterForcedRelease {
        /// The released lease's fence.
        fence: Fence,
    },
}

impl fmt::Display for Breach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FenceRegressed { acquire, wrote, over, highest } => {
                let kind = if *acquire { "an acquisition" } else { "a non-acquiring write" };
                write!(f, "{kind} wrote fence {}", wrote.get())?;
                match over {
                    Some(over) => write!(f, " over fence {}", over.get())?,
                    None => f.write_str(" creating the row")?,
                }
                match highest {
                    Some(highest) => write!(f, " (highest granted {})", highest.get()),
                    None => f.write_str(" (none granted before)"),
                }
            }
            Self::DoneOverwritten { done_fence, by, with } => {
                write!(f, "DONE row with fence {} overwritten by {by} with fence {}", done_fence.get(), with.get())
            }
            Self::StaleWriteAccepted { fence, highest } => {
                write!(f, "a write with fence {} was accepted after fence {} was granted", fence.get(), highest.get())
            }
            Self::FencedWriteRepeated { fence, write, last_landed: 0 } => write!(
                f,
                "fenced write {write} with fence {} reached the resource before any earlier write of its lease",
                fence.get()
            ),
            Self::FencedWriteRepeated { fence, write, last_landed } => write!(
                f,
                "fenced write {write} with fence {} reached the resource after its lease's write {last_landed} had",
                fence.get()
            ),
            Self::WriteAfterForcedRelease { fence } => {
                write!(f, "a write with fence {} was accepted after an operator force-released that lease", fence.get())
            }
        }
    }
}

/// What a section makes of its fenced write's fate ([`hear_fenced_write`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteHeard {
    /// Whether it may send the write again, were it told nothing certain.
    pub may_retry: bool,
    /// What to keep for the write's next attempt: when its first attempt went unanswered, where the rule reads it
    /// (only a write on a budget of its own, a re-inserted bug); `None` otherwise.
    pub write_since: Option<LocalInstant>,
}

/// Tells a section's `machine`, at `now`, whether Spanner answered its fenced write sent at `sent_at` and met by
/// `fate`, as the driver does ([`Event::FencedWriteAnswered`], [`Event::FencedWriteUnanswered`]), and decides
/// whether the section may send it again: always after an answer, and after none only inside its run's
/// unavailability budget ([`may_retry_fenced_write`]; `write_since`: what the previous attempt kept).
pub fn hear_fenced_write(
    machine: &mut ClientMachine,
    cfg: &Config,
    now: LocalInstant,
    sent_at: LocalInstant,
    fate: CommitFate,
    write_since: Option<LocalInstant>,
) -> Result<WriteHeard, UnexpectedEvent> {
    if fate.answered() {
        machine.handle(cfg, now, Event::FencedWriteAnswered)?;
        return Ok(WriteHeard { may_retry: true, write_since });
    }
    machine.handle(cfg, now, Event::FencedWriteUnanswered { sent_at })?;
    let run_since = machine.unavailable_since();
    let may_retry = may_retry_fenced_write(cfg, run_since, sent_at, write_since, now.plus_ms(cfg.wait_ms()));
    let kept =
        (!cfg.protocol().fenced_retry_shares_clock()).then(|| write_since.map_or(sent_at, |since| since.min(sent_at)));
    Ok(WriteHeard { may_retry, write_since: kept })
}

/// Whether a committed write keeps the fence history sound: an acquisition of an existing row writes the fence
/// after the highest granted so far (or, re-acquiring its own unexpired lease, the same one), one that creates
/// the row (none, or deleted) a fence above every one granted before; no other write changes the fence.
pub fn fence_follows(previous: Option<&LeaseRow>, max_fence: Option<Fence>, write: &RowWrite, acquire: bool) -> bool {
    if acquire {
        let reentrant = previous.is_some_and(|p| p.fence == write.fence && p.holder == write.holder);
        match previous {
            Some(_) => reentrant || write.fence == max_fence.map_or(Fence::FIRST, Fence::next),
            None => max_fence.is_none_or(|max| write.fence > max),
        }
    } else {
        previous.is_none_or(|p| p.fence == write.fence)
    }
}

/// Whether `fence` has been superseded: a newer one was granted. A protected resource must refuse its writes.
pub fn superseded(fence: Fence, max_granted: Option<Fence>) -> bool {
    max_granted.is_some_and(|max| fence < max)
}

/// Whether a write replaces a DONE row other than by a fresh acquisition (the next fence).
pub fn overwrites_done(previous: Option<&LeaseRow>, write: &RowWrite, acquire: bool) -> bool {
    // (An operator's reset is the other way a DONE row is replaced: `Spanner::commit` does not judge it.)
    previous.is_some_and(|p| p.status == Status::Done && !(acquire && write.fence == p.fence.next()))
}

/// Spanner's commit timestamps: strictly increasing, and never before the server's time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CommitClock {
    last: ServerTime,
}

impl CommitClock {
    /// A clock whose next timestamp is after `last`.
    pub const fn after(last: ServerTime) -> Self {
        Self { last }
    }

    /// The timestamp of a commit at server time `now`.
    pub fn stamp(&mut self, now: ServerTime) -> ServerTime {
        self.last = now.max(ServerTime::from_unix_micros(self.last.unix_micros() + 1));
        self.last
    }
}

/// What a committed write replaced, for whoever records history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowChange {
    /// The row before the write.
    pub previous: Option<LeaseRow>,
    /// Whether the write was an acquisition.
    pub acquire: bool,
    /// The fence rule it broke, if any.
    pub fence_regressed: Option<Breach>,
    /// The DONE rule it broke, if any.
    pub done_overwritten: Option<Breach>,
}

/// A transaction's commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// What the client is told.
    pub event: Event,
    /// The reply the transaction logic planned (the client hears it only if the fate is as decided).
    pub reply: TxnReply,
    /// The fate that applied ([`CommitFate::unless_conflict`]).
    pub applied: CommitFate,
    /// The row write that committed, if one did.
    pub change: Option<RowChange>,
}

/// A fenced write: one transaction that verifies the fence and, if it is current, applies the effect and records
/// in the row that the write landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FencedWrite {
    /// What the section is told.
    pub answer: FencedOutcome,
    /// Whether the effect reached the resource.
    pub landed: bool,
    /// Whether its fence had been superseded, judged apart from the transaction logic.
    pub superseded: bool,
    /// The stale write the resource accepted, if it did.
    pub stale_accepted: Option<Breach>,
    /// A write that reached the resource a second time or out of order, if it did.
    pub repeated: Option<Breach>,
    /// A write of a force-released lease that reached the resource after the release, if it did.
    pub after_forced_release: Option<Breach>,
    /// The row's record of the write, if one committed.
    pub change: Option<RowChange>,
}

/// A commit still on its way after its client was told the outcome is unknown ([`CommitFate::UnknownLate`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Late {
    /// A lease transaction, as it read.
    Txn {
        /// The transaction.
        request: TxnRequest,
        /// The time its decisions are made on.
        read_at: ServerTime,
    },
    /// A fenced write, as it read.
    FencedWrite {
        /// The run that sent it (which may have ended since: the write still lands).
        writer: ClientId,
        /// Its fence.
        fence: Fence,
        /// Its number under that fence.
        write: u32,
        /// The time its decisions are made on.
        read_at: ServerTime,
    },
}

/// What a late commit did when it reached Spanner with the row as it read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LateLanding {
    /// A transaction: the row write it committed, if any.
    Txn(Option<RowChange>),
    /// A fenced write.
    FencedWrite(FencedWrite),
}

/// How many force-released leases a row's judge remembers ([`Spanner::force_released`]): far more than can end
/// within one lease's TTL, after which a released holder relies on nothing.
pub const FORCE_RELEASES_KEPT: usize = 16;

/// One mutex in Spanner: its lease row, and the highest fence it ever granted (which the resource's rules are
/// judged against).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Spanner {
    /// The lease row.
    pub row: Option<LeaseRow>,
    /// The highest fence ever granted.
    pub max_fence: Option<Fence>,
    /// The number of the row's current lease's fenced write that reached the resource last (0: none yet), kept
    /// apart from the row's own record (which the protocol reads), so that a write applied twice or out of order
    /// shows ([`Breach::FencedWriteRepeated`]).
    pub last_write_landed: u32,
    /// Each lease an operator force-released, oldest first, at most [`FORCE_RELEASES_KEPT`]: a write of one that
    /// lands is [`Breach::WriteAfterForcedRelease`].
    pub force_released: Vec<ForceReleased>,
}

/// A lease an operator force-released.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ForceReleased {
    /// Its holder.
    pub holder: ClientId,
    /// Its fence.
    pub fence: Fence,
    /// When it would have expired, unrenewed, had the operator not ended it.
    pub expired_at: ServerTime,
}

impl Spanner {
    /// Whether an operator ended `holder`'s lease under `fence`.
    pub fn was_force_released(&self, holder: ClientId, fence: Fence) -> bool {
        self.force_released.iter().any(|r| r.holder == holder && r.fence == fence)
    }

    /// Whether `holder` may still rely on its lease under `fence` at `now` although the row no longer grants it: an
    /// operator ended the lease, and it is before the expiry the lease had then. The holder learns of the release
    /// only at its next renewal, and fencing alone keeps the resource safe meanwhile; past that expiry it must
    /// have stopped relying anyway (its deadline comes before the expiry), so the reliance properties judge it
    /// again.
    pub fn may_rely_after_forced_release(&self, holder: ClientId, fence: Fence, now: ServerTime) -> bool {
        self.force_released.iter().any(|r| r.holder == holder && r.fence == fence && now < r.expired_at)
    }

    /// A single-use read at server time `now`.
    pub fn read(&self, now: ServerTime) -> Event {
        Event::RowRead { row: self.row.clone(), server_now: now }
    }

    /// Commits `request`, whose decisions are made on `read_at`, with `fate`; `conflict` says a write committed
    /// since it read the row. A write that lands takes its commit timestamp from `stamp` (called only then).
    pub fn commit(
        &mut self,
        cfg: &Config,
        request: &TxnRequest,
        read_at: ServerTime,
        fate: CommitFate,
        conflict: bool,
        stamp: impl FnOnce() -> ServerTime,
    ) -> Commit {
        let planned = plan(cfg, request, self.row.as_ref(), read_at);
        let applied = fate.unless_conflict(conflict);
        let kind = match request {
            TxnRequest::Acquire { .. } => WriteKind::Acquire,
            TxnRequest::Operator { action, .. } => WriteKind::Operator(*action),
            TxnRequest::Renew { .. } | TxnRequest::Release { .. } | TxnRequest::VerifyFence { .. } => WriteKind::Other,
        };
        let change = match planned.write {
            Some(write) if applied.lands() => Some(self.write(write, kind, stamp())),
            _ => None,
        };
        Commit { event: applied.event(planned.reply.clone()), reply: planned.reply, applied, change }
    }

    /// A section's fenced write number `write` of its lease (from 1, one at a time, a retry keeping its number) by
    /// `writer` under `fence`, decided at `decided_at`, with `fate`; linearized now, so it never conflicts. Its
    /// record in the row takes its commit timestamp from `stamp` (called only if it lands).
    #[allow(clippy::too_many_arguments)]
    pub fn fenced_write(
        &mut self,
        cfg: &Config,
        writer: ClientId,
        fence: Fence,
        write: u32,
        decided_at: ServerTime,
        fate: CommitFate,
        stamp: impl FnOnce() -> ServerTime,
    ) -> FencedWrite {
        let verify = TxnRequest::VerifyFence { client: writer, fence, write };
        let planned = plan(cfg, &verify, self.row.as_ref(), decided_at);
        let superseded = superseded(fence, self.max_fence);
        let valid = planned.reply == TxnReply::FenceValid;
        let landed = valid && fate.lands();
        let stale_accepted = (landed && superseded)
            .then(|| Breach::StaleWriteAccepted { fence, highest: self.max_fence.unwrap_or(fence) });
        // Judged within the row's current lease; a write of another lease that lands is a stale write (above).
        let of_current_lease = landed && self.row.as_ref().is_some_and(|row| row.fence == fence);
        let repeated = (of_current_lease && write != self.last_write_landed.saturating_add(1))
            .then_some(Breach::FencedWriteRepeated { fence, write, last_landed: self.last_write_landed });
        if of_current_lease {
            self.last_write_landed = write;
        }
        let after_forced_release =
            (landed && self.was_force_released(writer, fence)).then_some(Breach::WriteAfterForcedRelease { fence });
        let change = match planned.write {
            Some(record) if landed => Some(self.write(record, WriteKind::Other, stamp())),
            _ => None,
        };
        let answer = match (fate, &planned.reply) {
            // Told nothing certain, the section retries the same write.
            (CommitFate::AsDecided, TxnReply::FenceValid) => FencedOutcome::Accepted,
            (CommitFate::AsDecided, TxnReply::AlreadyApplied) => FencedOutcome::AlreadyApplied,
            (CommitFate::AsDecided, _) => FencedOutcome::Rejected,
            (_, _) => FencedOutcome::Retry,
        };
        FencedWrite { answer, landed, superseded, stale_accepted, repeated, after_forced_release, change }
    }

    /// A late commit reaches Spanner with the row as it read it (one whose row changed aborts, and the adapter,
    /// which tracks reads, does not call this). Nobody hears of it: its client was told the outcome is unknown.
    pub fn land_late(&mut self, cfg: &Config, late: &Late, stamp: impl FnOnce() -> ServerTime) -> LateLanding {
        match late {
            Late::Txn { request, read_at } => {
                LateLanding::Txn(self.commit(cfg, request, *read_at, CommitFate::AsDecided, false, stamp).change)
            }
            Late::FencedWrite { writer, fence, write, read_at } => LateLanding::FencedWrite(self.fenced_write(
                cfg,
                *writer,
                *fence,
                *write,
                *read_at,
                CommitFate::AsDecided,
                stamp,
            )),
        }
    }

    /// A row deletion policy (`OLDER_THAN(updated_at, older_than_ms)`) looks at the row at server time `now`:
    /// deletes it if its last write is at least that old. Returns whether it did.
    pub fn delete_if_older_than(&mut self, older_than_ms: u64, now: ServerTime) -> bool {
        let old_enough = self.row.as_ref().is_some_and(|r| r.updated_at.plus_ms(older_than_ms) <= now);
        if old_enough {
            self.row = None;
        }
        old_enough
    }

    /// Commits a row write of `kind` at `stamp`, judging it by the rules first.
    fn write(&mut self, write: RowWrite, kind: WriteKind, stamp: ServerTime) -> RowChange {
        let previous = self.row.take();
        let acquire = kind == WriteKind::Acquire;
        let fence_regressed =
            (!fence_follows(previous.as_ref(), self.max_fence, &write, acquire)).then(|| Breach::FenceRegressed {
                acquire,
                wrote: write.fence,
                over: previous.as_ref().map(|p| p.fence),
                highest: self.max_fence,
            });
        let done_overwritten = previous
            .as_ref()
            .filter(|p| kind != WriteKind::Operator(OperatorAction::Reset) && overwrites_done(Some(p), &write, acquire))
            .map(|p| Breach::DoneOverwritten { done_fence: p.fence, by: write.status, with: write.fence });
        self.max_fence = self.max_fence.max(Some(write.fence));
        match kind {
            // A new lease, whose fenced writes are numbered from 1 (re-entry included: see `txn::plan`).
            WriteKind::Acquire => self.last_write_landed = 0,
            WriteKind::Operator(OperatorAction::ForceRelease) => {
                if self.force_released.len() == FORCE_RELEASES_KEPT {
                    self.force_released.remove(0);
                }
                let expired_at = previous.as_ref().map_or(stamp, |p| p.expires_at);
                self.force_released.push(ForceReleased { holder: write.holder, fence: write.fence, expired_at });
            }
            WriteKind::Operator(OperatorAction::Reset) | WriteKind::Other => {}
        }
        self.row = Some(write.committed_at(stamp));
        RowChange { previous, acquire, fence_regressed, done_overwritten }
    }
}

/// What kind of transaction a row write comes from, for the rules it is judged by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteKind {
    Acquire,
    Operator(OperatorAction),
    Other,
}

/// Which way a server's clock errs in one reading of the time, at the edge of the uncertainty a world allows:
/// the worst case on either side of the protocol's margin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClockError {
    /// The server reads before real time: a lease it grants expires early.
    Early,
    /// The server reads after real time: it judges expiries early.
    Late,
}

impl ClockError {
    /// The error in microseconds (negative: early) of a clock `uncertainty_ms` off.
    pub fn error_us(self, uncertainty_ms: u64) -> i64 {
        let by_us = i64::try_from(uncertainty_ms.saturating_mul(1_000)).unwrap_or(i64::MAX);
        match self {
            Self::Early => -by_us,
            Self::Late => by_us,
        }
    }
}

/// What a server whose clock errs by `error_us` (negative: early) reads as the time at real time `now`.
pub fn server_read(now: ServerTime, error_us: i64) -> ServerTime {
    ServerTime::from_unix_micros(now.unix_micros().saturating_add(error_us))
}

/// A section's or a lock holder's work under one lease, as a world carries it out: its fenced writes, numbered
/// from 1, each sent again until it is answered, then the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Work {
    /// The lease's fence.
    pub fence: Fence,
    /// The write under way, from 1 (the ones before it were answered applied).
    pub write: u32,
    /// When the write's first attempt without an answer was sent, where the rule reads it ([`WriteHeard`]).
    pub unanswered_since: Option<LocalInstant>,
}

/// What a world's work does after a fenced write's answer ([`Work::after`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkStep {
    /// Told nothing certain, it sends the same write again.
    Again(Work),
    /// Applied (or found applied), it goes on to its next write.
    Next(Work),
    /// It is done writing; the answer says how ([`FencedOutcome::section_result`]).
    Done(FencedOutcome),
}

impl Work {
    /// Work that starts under `fence`, at its first write.
    pub const fn first(fence: Fence) -> Self {
        Self { fence, write: 1, unanswered_since: None }
    }

    /// What follows `answer` to this write, for work that makes `writes` fenced writes in all, when the write
    /// `heard` as [`hear_fenced_write`] decides (`None`: the world retries an unanswered write for ever).
    pub fn after(self, answer: FencedOutcome, writes: u32, heard: Option<WriteHeard>) -> WorkStep {
        let unanswered_since = heard.map_or(self.unanswered_since, |heard| heard.write_since);
        match answer {
            FencedOutcome::Retry if heard.is_none_or(|heard| heard.may_retry) => {
                WorkStep::Again(Self { unanswered_since, ..self })
            }
            FencedOutcome::Accepted | FencedOutcome::AlreadyApplied if self.write < writes => {
                WorkStep::Next(Self { write: self.write + 1, unanswered_since: None, ..self })
            }
            answer => WorkStep::Done(answer),
        }
    }
}

/// How a world carries out a client machine's commands. [`execute`] is the one place a [`Command`] is taken
/// apart outside the production driver (which does real I/O); a layer (the checker, the simulator, replay, the
/// conformance reference) says only when and how its world answers each request. A method returns the machine's
/// next command when the world answers at once.
pub trait Executor {
    /// Whether the world runs client `client` as a lock or a leader (else run-once).
    fn grants_locks(&self, client: usize) -> bool;
    /// The client asks its user whether the section is needed.
    fn check_need(&mut self, client: usize) -> Option<Command>;
    /// The client sends a read-write transaction.
    fn run_txn(&mut self, client: usize, request: TxnRequest) -> Option<Command>;
    /// The client sends a single-use read of its row.
    fn read_row(&mut self, client: usize) -> Option<Command>;
    /// The client's work under its lease starts: a run-once section, or (`granted`) a lock holder's.
    fn start_work(&mut self, client: usize, work: Work, granted: bool) -> Option<Command>;
    /// The client tells its section or holder that the lease under `fence` can no longer be proven held.
    fn lock_lost(&mut self, client: usize, fence: Fence) -> Option<Command>;
    /// The client's run is over.
    fn finish(&mut self, client: usize, outcome: Outcome) -> Option<Command>;
    /// The client broke the driver contract, as `what` says.
    fn contract_broken(&mut self, client: usize, what: &'static str);
}

/// Carries out client `client`'s `command` in `executor`'s world, and each command the machine answers with at
/// once, until it waits.
pub fn execute(executor: &mut impl Executor, client: usize, mut command: Option<Command>) {
    while let Some(next) = command.take() {
        command = match next {
            Command::CheckNeed => executor.check_need(client),
            Command::RunTxn(request) => executor.run_txn(client, request),
            Command::ReadRow => executor.read_row(client),
            Command::RunSection { fence, .. } => executor.start_work(client, Work::first(fence), false),
            Command::Granted { fence, .. } if executor.grants_locks(client) => {
                executor.start_work(client, Work::first(fence), true)
            }
            Command::Granted { .. } => {
                executor.contract_broken(client, "a run-once machine granted a lock");
                None
            }
            Command::SignalLockLost { fence } => executor.lock_lost(client, fence),
            Command::Finish(outcome) => executor.finish(client, outcome),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Mode;

    const T0: ServerTime = ServerTime::from_unix_micros(1_767_225_600_000_000);

    fn acquire(client: ClientId) -> TxnRequest {
        TxnRequest::Acquire { client, holder_name: "test".into(), mode: Mode::Lock }
    }

    fn no_stamp() -> ServerTime {
        panic!("a commit that writes nothing takes no timestamp")
    }

    #[test]
    fn commit_timestamps_strictly_increase_and_never_precede_server_time() {
        let mut clock = CommitClock::after(T0);
        assert_eq!(clock.stamp(T0), ServerTime::from_unix_micros(T0.unix_micros() + 1));
        assert_eq!(clock.stamp(T0), ServerTime::from_unix_micros(T0.unix_micros() + 2));
        assert_eq!(clock.stamp(T0.plus_ms(5)), T0.plus_ms(5));
    }

    #[test]
    fn a_conflict_aborts_whatever_the_fate_and_unavailable_fails_without_writing() {
        let cfg = Config::default();
        let a = ClientId::from_u128(1);
        for fate in [CommitFate::AsDecided, CommitFate::UnknownLanded, CommitFate::UnknownLate] {
            let mut spanner = Spanner::default();
            let commit = spanner.commit(&cfg, &acquire(a), T0, fate, true, no_stamp);
            assert_eq!((commit.event, commit.applied, spanner.row), (Event::TxnAborted, CommitFate::Aborted, None));
        }
        let mut spanner = Spanner::default();
        let commit = spanner.commit(&cfg, &acquire(a), T0, CommitFate::Unavailable, true, no_stamp);
        assert_eq!(commit.event, Event::TxnFailed(Failure::Unavailable));
        assert_eq!(spanner, Spanner::default());
    }

    #[test]
    fn an_unknown_outcome_that_lands_writes_the_row_and_tells_the_client_nothing_certain() {
        let cfg = Config::default();
        let mut spanner = Spanner::default();
        let commit =
            spanner.commit(&cfg, &acquire(ClientId::from_u128(1)), T0, CommitFate::UnknownLanded, false, || T0);
        assert_eq!(commit.event, Event::TxnOutcomeUnknown);
        let row = spanner.row.as_ref().expect("the acquisition landed");
        assert_eq!((row.updated_at, Some(row.fence)), (T0, spanner.max_fence));
        let change = commit.change.expect("a change");
        assert_eq!((change.previous, change.acquire, change.fence_regressed), (None, true, None));
    }

    #[test]
    fn a_fenced_write_is_accepted_once_found_applied_on_retry_and_refused_once_superseded() {
        let cfg = Config::default();
        let (a, b) = (ClientId::from_u128(1), ClientId::from_u128(2));
        let mut spanner = Spanner::default();
        let _ = spanner.commit(&cfg, &acquire(a), T0, CommitFate::AsDecided, false, || T0);
        let fence = spanner.row.as_ref().expect("row").fence;
        let lost = spanner.fenced_write(&cfg, a, fence, 1, T0, CommitFate::UnknownLanded, || T0.plus_ms(1));
        assert_eq!((lost.answer, lost.landed, lost.superseded), (FencedOutcome::Retry, true, false));
        let retry = spanner.fenced_write(&cfg, a, fence, 1, T0, CommitFate::AsDecided, no_stamp);
        assert_eq!((retry.answer, retry.landed), (FencedOutcome::AlreadyApplied, false));
        // b takes the lease over once it has expired; a's next write is stale.
        let later = T0.plus_ms(cfg.ttl_ms() + 1);
        let _ = spanner.commit(&cfg, &acquire(b), later, CommitFate::AsDecided, false, || later);
        let stale = spanner.fenced_write(&cfg, a, fence, 1, later, CommitFate::AsDecided, no_stamp);
        assert_eq!((stale.answer, stale.superseded, stale.stale_accepted), (FencedOutcome::Rejected, true, None));
    }

    #[test]
    fn a_fenced_write_that_reaches_the_resource_twice_or_out_of_order_is_a_breach() {
        let a = ClientId::from_u128(1);
        let acquired = |cfg: &Config| {
            let mut spanner = Spanner::default();
            let _ = spanner.commit(cfg, &acquire(a), T0, CommitFate::AsDecided, false, || T0);
            let fence = spanner.row.as_ref().expect("row").fence;
            (spanner, fence)
        };
        // In order, each once: no breach, and a new lease counts from 1 again.
        let cfg = Config::default();
        let (mut spanner, fence) = acquired(&cfg);
        for write in [1, 2] {
            let landed = spanner.fenced_write(&cfg, a, fence, write, T0, CommitFate::AsDecided, || T0);
            assert_eq!((landed.landed, landed.repeated), (true, None));
        }
        let _ = spanner.commit(&cfg, &acquire(a), T0, CommitFate::AsDecided, false, || T0);
        assert_eq!(spanner.last_write_landed, 0);
        // Out of order.
        let (mut spanner, fence) = acquired(&cfg);
        let skipped = spanner.fenced_write(&cfg, a, fence, 2, T0, CommitFate::AsDecided, || T0);
        assert_eq!(skipped.repeated, Some(Breach::FencedWriteRepeated { fence, write: 2, last_landed: 0 }));
        // Without the row's record, a retried write whose answer was lost lands again.
        let cfg = Config::default().with_protocol(crate::Protocol::NoFencedWriteRecord);
        let (mut spanner, fence) = acquired(&cfg);
        let lost = spanner.fenced_write(&cfg, a, fence, 1, T0, CommitFate::UnknownLanded, || T0);
        assert_eq!(lost.repeated, None);
        let again = spanner.fenced_write(&cfg, a, fence, 1, T0, CommitFate::AsDecided, || T0);
        assert_eq!(again.repeated, Some(Breach::FencedWriteRepeated { fence, write: 1, last_landed: 1 }));
    }

    #[test]
    fn a_late_commit_lands_as_decided_on_the_row_it_read() {
        let cfg = Config::default();
        let mut spanner = Spanner::default();
        let late = Late::Txn { request: acquire(ClientId::from_u128(1)), read_at: T0 };
        let LateLanding::Txn(Some(change)) = spanner.land_late(&cfg, &late, || T0.plus_ms(3)) else {
            panic!("the late acquisition writes the row")
        };
        assert!(change.acquire);
        assert_eq!(spanner.row.as_ref().map(|r| r.updated_at), Some(T0.plus_ms(3)));
    }

    #[test]
    fn breaches_read_as_sentences() {
        let regressed =
            Breach::FenceRegressed { acquire: true, wrote: Fence::FIRST, over: Some(Fence::FIRST), highest: None };
        assert_eq!(regressed.to_string(), "an acquisition wrote fence 1 over fence 1 (none granted before)");
        let words = [CommitFate::AsDecided, CommitFate::Unavailable, CommitFate::UnknownLate].map(CommitFate::word);
        assert_eq!(
            words.map(CommitFate::from_word),
            [CommitFate::AsDecided, CommitFate::Unavailable, CommitFate::UnknownLate].map(Some)
        );
    }

    #[test]
    fn work_sends_an_unanswered_write_again_goes_on_when_applied_and_ends_after_its_last() {
        let first = Work::first(Fence::FIRST);
        let since = Some(LocalInstant::from_ms(3));
        let kept = WriteHeard { may_retry: true, write_since: since };
        let spent = WriteHeard { may_retry: false, write_since: since };
        assert_eq!(
            first.after(FencedOutcome::Retry, 2, Some(kept)),
            WorkStep::Again(Work { unanswered_since: since, ..first })
        );
        assert_eq!(first.after(FencedOutcome::Retry, 2, None), WorkStep::Again(first));
        assert_eq!(first.after(FencedOutcome::Retry, 2, Some(spent)), WorkStep::Done(FencedOutcome::Retry));
        let second = Work { write: 2, ..first };
        assert_eq!(first.after(FencedOutcome::AlreadyApplied, 2, Some(kept)), WorkStep::Next(second));
        assert_eq!(second.after(FencedOutcome::Accepted, 2, None), WorkStep::Done(FencedOutcome::Accepted));
        assert_eq!(first.after(FencedOutcome::Rejected, 2, None), WorkStep::Done(FencedOutcome::Rejected));
    }

    /// Records what `execute` asked, answering nothing.
    #[derive(Default)]
    struct Asked {
        locks: bool,
        calls: Vec<String>,
    }

    impl Executor for Asked {
        fn grants_locks(&self, _client: usize) -> bool {
            self.locks
        }
        fn check_need(&mut self, client: usize) -> Option<Command> {
            self.calls.push(format!("need {client}"));
            None
        }
        fn run_txn(&mut self, client: usize, _request: TxnRequest) -> Option<Command> {
            self.calls.push(format!("txn {client}"));
            None
        }
        fn read_row(&mut self, client: usize) -> Option<Command> {
            self.calls.push(format!("read {client}"));
            // Answered at once: the machine's next command is executed in the same call.
            (self.calls.len() == 1).then_some(Command::CheckNeed)
        }
        fn start_work(&mut self, client: usize, work: Work, granted: bool) -> Option<Command> {
            self.calls.push(format!("work {client} fence {} write {} granted {granted}", work.fence.get(), work.write));
            None
        }
        fn lock_lost(&mut self, client: usize, fence: Fence) -> Option<Command> {
            self.calls.push(format!("lost {client} fence {}", fence.get()));
            None
        }
        fn finish(&mut self, client: usize, outcome: Outcome) -> Option<Command> {
            self.calls.push(format!("finish {client} {outcome:?}"));
            None
        }
        fn contract_broken(&mut self, client: usize, what: &'static str) {
            self.calls.push(format!("broken {client}: {what}"));
        }
    }

    #[test]
    fn execute_hands_each_command_to_its_method_and_runs_the_answers_given_at_once() {
        let mut asked = Asked::default();
        let deadline = LocalInstant::from_ms(5);
        execute(&mut asked, 1, Some(Command::ReadRow));
        execute(&mut asked, 1, Some(Command::RunSection { fence: Fence::FIRST, deadline }));
        execute(&mut asked, 1, Some(Command::Granted { fence: Fence::FIRST, deadline }));
        asked.locks = true;
        execute(&mut asked, 0, Some(Command::Granted { fence: Fence::FIRST.next(), deadline }));
        execute(&mut asked, 0, Some(Command::SignalLockLost { fence: Fence::FIRST.next() }));
        execute(&mut asked, 0, Some(Command::Finish(Outcome::Cancelled)));
        execute(&mut asked, 0, None);
        assert_eq!(
            asked.calls,
            [
                "read 1",
                "need 1",
                "work 1 fence 1 write 1 granted false",
                "broken 1: a run-once machine granted a lock",
                "work 0 fence 2 write 1 granted true",
                "lost 0 fence 2",
                "finish 0 Cancelled",
            ]
        );
    }
}
