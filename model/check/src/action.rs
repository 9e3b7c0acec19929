//! The world's actions, with a compact text form (`commit:1:unknown-landed`) so a counterexample can be printed,
//! pasted and replayed by `explore`, the simulator or a test.

use spanner_mutex_model::OperatorAction;
use spanner_mutex_model::world::{ClockError, CommitFate};
use std::fmt;
use std::str::FromStr;

/// One step of the world. Client numbers are slots, from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Server time advances 1 ms; every client's clock with it.
    Tick,
    /// The client's transaction commits, with a fate.
    TxnCommit(u8, CommitFate),
    /// The client's transaction meets an unknown fate, and Spanner answers nothing more: the read that resolves
    /// it fails too (two faults).
    TxnUnanswered(u8, CommitFate),
    /// The client's due timer fires.
    Timeout(u8),
    /// The client's due timer fires and the poll read it sends gets no answer (an unavailable Spanner).
    TimeoutUnanswered(u8),
    /// The client's section tries its fenced write, with a fate (abort and unknown outcomes are retried).
    SectionWrite(u8, CommitFate),
    /// The client's section returns what its write achieved; a lock or leader client's user releases (resigns).
    SectionReturn(u8),
    /// The client's pending need check answers, from the effects applied by then.
    NeedAnswer(u8),
    /// The client's pending need check under the lease fails: the user's check returned an error.
    NeedFail(u8),
    /// The client's user cancels the run (drops the future: a need check or section under way is dropped too).
    /// Giving up on a wait (a timeout around `acquire`) is the same step.
    Cancel(u8),
    /// The client's section fails before writing.
    SectionFail(u8),
    /// The client crashes and restarts as a new client.
    Crash(u8),
    /// The client's clock falls 1 ms further behind.
    Drift(u8),
    /// The server time the client's transaction read errs by 1 ms.
    ClockError(u8, ClockError),
    /// The queued commit its client was told was unknown reaches Spanner now: it lands unless the row changed.
    LateCommit,
    /// The client's transaction, sent earlier, starts executing only now (a delay before the server runs it): it
    /// reads the row and the server's time now.
    TxnDelay(u8),
    /// An operator force-releases the lease, or resets a DONE row, in one transaction of its own.
    Operator(OperatorAction),
}

impl Action {
    /// How much of the fault budget the action spends: the checker's world and a replay of a path count alike.
    pub const fn faults(self) -> u8 {
        match self {
            Self::TxnCommit(_, fate) | Self::SectionWrite(_, fate) => fate.is_fault() as u8,
            // The read that would resolve the unknown outcome goes unanswered too: a second fault.
            Self::TxnUnanswered(_, fate) => 1 + fate.is_fault() as u8,
            Self::TimeoutUnanswered(_)
            | Self::NeedFail(_)
            | Self::SectionFail(_)
            | Self::Crash(_)
            | Self::Drift(_)
            | Self::ClockError(..)
            | Self::TxnDelay(_) => 1,
            Self::Tick
            | Self::Timeout(_)
            | Self::SectionReturn(_)
            | Self::NeedAnswer(_)
            | Self::Cancel(_)
            | Self::LateCommit
            | Self::Operator(_) => 0,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Tick => f.write_str("tick"),
            Self::TxnCommit(c, fate) => write!(f, "commit:{c}:{}", fate.word()),
            Self::TxnUnanswered(c, fate) => write!(f, "unanswered:{c}:{}", fate.word()),
            // The plain write keeps its short form, so older counterexamples still parse.
            Self::SectionWrite(c, CommitFate::AsDecided) => write!(f, "write:{c}"),
            Self::SectionWrite(c, fate) => write!(f, "write:{c}:{}", fate.word()),
            Self::Timeout(c) => write!(f, "timeout:{c}"),
            Self::TimeoutUnanswered(c) => write!(f, "timeout:{c}:unanswered"),
            Self::SectionReturn(c) => write!(f, "return:{c}"),
            Self::NeedAnswer(c) => write!(f, "need:{c}"),
            Self::NeedFail(c) => write!(f, "need:{c}:failed"),
            Self::Cancel(c) => write!(f, "cancel:{c}"),
            Self::SectionFail(c) => write!(f, "fail:{c}"),
            Self::Crash(c) => write!(f, "crash:{c}"),
            Self::Drift(c) => write!(f, "drift:{c}"),
            Self::ClockError(c, ClockError::Early) => write!(f, "clock:{c}:early"),
            Self::ClockError(c, ClockError::Late) => write!(f, "clock:{c}:late"),
            Self::LateCommit => f.write_str("late-commit"),
            Self::TxnDelay(c) => write!(f, "delay:{c}"),
            Self::Operator(OperatorAction::ForceRelease) => f.write_str("operator:force-release"),
            Self::Operator(OperatorAction::Reset) => f.write_str("operator:reset"),
        }
    }
}

/// A token that is not an [`Action`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not an action: {token:?} (expected e.g. tick, timeout:0, commit:1:unknown-landed)")]
pub struct ParseActionError {
    /// The offending token.
    pub token: String,
}

impl FromStr for Action {
    type Err = ParseActionError;

    fn from_str(token: &str) -> Result<Self, Self::Err> {
        let err = || ParseActionError { token: token.to_owned() };
        let mut parts = token.split(':');
        let verb = parts.next().ok_or_else(err)?;
        if verb == "operator" {
            let action = match (parts.next(), parts.next()) {
                (Some("force-release"), None) => OperatorAction::ForceRelease,
                (Some("reset"), None) => OperatorAction::Reset,
                _ => return Err(err()),
            };
            return Ok(Self::Operator(action));
        }
        if verb == "tick" || verb == "late-commit" {
            let action = if verb == "tick" { Self::Tick } else { Self::LateCommit };
            return if parts.next().is_none() { Ok(action) } else { Err(err()) };
        }
        let client: u8 = parts.next().and_then(|c| c.parse().ok()).ok_or_else(err)?;
        let action = match verb {
            "commit" => Self::TxnCommit(client, parts.next().and_then(CommitFate::from_word).ok_or_else(err)?),
            "unanswered" => Self::TxnUnanswered(client, parts.next().and_then(CommitFate::from_word).ok_or_else(err)?),
            "write" => match parts.next() {
                None => return Ok(Self::SectionWrite(client, CommitFate::AsDecided)),
                Some(word) => Self::SectionWrite(client, CommitFate::from_word(word).ok_or_else(err)?),
            },
            "timeout" => match parts.next() {
                None => return Ok(Self::Timeout(client)),
                Some("unanswered") => Self::TimeoutUnanswered(client),
                Some(_) => return Err(err()),
            },
            "return" => Self::SectionReturn(client),
            "need" => match parts.next() {
                None => return Ok(Self::NeedAnswer(client)),
                Some("failed") => Self::NeedFail(client),
                Some(_) => return Err(err()),
            },
            "cancel" => Self::Cancel(client),
            "fail" => Self::SectionFail(client),
            "crash" => Self::Crash(client),
            "drift" => Self::Drift(client),
            "delay" => Self::TxnDelay(client),
            "clock" => match parts.next() {
                Some("early") => Self::ClockError(client, ClockError::Early),
                Some("late") => Self::ClockError(client, ClockError::Late),
                _ => return Err(err()),
            },
            _ => return Err(err()),
        };
        if parts.next().is_some() { Err(err()) } else { Ok(action) }
    }
}

/// The encoded form of a path: its actions separated by spaces.
pub fn encode_path(actions: &[Action]) -> String {
    actions.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")
}

/// Parses [`encode_path`]'s output (any whitespace or commas between actions).
pub fn decode_path(encoded: &str) -> Result<Vec<Action>, ParseActionError> {
    encoded.split(|c: char| c.is_whitespace() || c == ',').filter(|t| !t.is_empty()).map(str::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_round_trips_through_its_text() {
        let fates = [
            CommitFate::AsDecided,
            CommitFate::Aborted,
            CommitFate::UnknownLanded,
            CommitFate::UnknownLost,
            CommitFate::UnknownLate,
            CommitFate::Unavailable,
        ];
        let mut all = vec![
            Action::Tick,
            Action::LateCommit,
            Action::Operator(OperatorAction::ForceRelease),
            Action::Operator(OperatorAction::Reset),
        ];
        for c in [0, 3] {
            all.extend([
                Action::Timeout(c),
                Action::TimeoutUnanswered(c),
                Action::SectionReturn(c),
                Action::NeedAnswer(c),
                Action::NeedFail(c),
                Action::Cancel(c),
                Action::SectionFail(c),
                Action::Crash(c),
                Action::Drift(c),
                Action::TxnDelay(c),
                Action::ClockError(c, ClockError::Early),
                Action::ClockError(c, ClockError::Late),
            ]);
            all.extend(fates.map(|f| Action::TxnCommit(c, f)));
            all.extend(fates.map(|f| Action::TxnUnanswered(c, f)));
            all.extend(fates.map(|f| Action::SectionWrite(c, f)));
        }
        assert_eq!(decode_path(&encode_path(&all)), Ok(all));
    }

    #[test]
    fn bad_tokens_are_named() {
        assert_eq!(decode_path("tick commit:0:maybe").expect_err("invalid").token, "commit:0:maybe");
        assert_eq!(decode_path("crash").expect_err("invalid").token, "crash");
        assert_eq!(decode_path("tick:1").expect_err("invalid").token, "tick:1");
    }
}
