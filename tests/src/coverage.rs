//! Transition coverage: which machine transitions a run took, named by the machine's state before, the event
//! (with the detail that changes the path: the reply kind, the need answer, what a read showed) and the state
//! after; and the list of transitions the run-once protocol has.

use spanner_mutex_model::txn::TxnReply;
use spanner_mutex_model::{Event, SectionResult};
use std::collections::BTreeSet;
use std::fmt;

/// One transition of a client machine.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Transition {
    /// State before.
    pub from: &'static str,
    /// The event.
    pub event: String,
    /// State after.
    pub to: &'static str,
}

impl Transition {
    /// A transition.
    pub const fn new(from: &'static str, event: String, to: &'static str) -> Self {
        Self { from, event, to }
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} --{}--> {}", self.from, self.event, self.to)
    }
}

/// The event's name with the detail that decides the path.
pub fn event_label(event: &Event) -> String {
    match event {
        Event::NeedAnswered { needed } => format!("NeedAnswered({needed})"),
        Event::NeedCheckFailed => "NeedCheckFailed".into(),
        Event::TxnCommitted(reply) => format!(
            "TxnCommitted({})",
            match reply {
                TxnReply::Acquired { .. } => "Acquired",
                TxnReply::Busy { .. } => "Busy",
                TxnReply::DoneByOther { .. } => "DoneByOther",
                TxnReply::Renewed { .. } => "Renewed",
                TxnReply::Released => "Released",
                TxnReply::FenceValid => "FenceValid",
                TxnReply::AlreadyApplied => "AlreadyApplied",
                TxnReply::NotHolder => "NotHolder",
                TxnReply::OperatorApplied { .. } => "OperatorApplied",
                TxnReply::OperatorNotApplicable { .. } => "OperatorNotApplicable",
            }
        ),
        Event::TxnAborted => "TxnAborted".into(),
        Event::TxnOutcomeUnknown => "TxnOutcomeUnknown".into(),
        Event::TxnFailed(failure) => format!("TxnFailed({failure:?})"),
        Event::RowRead { row, .. } => format!("RowRead({})", row.as_ref().map_or("none", |r| r.status.as_str())),
        Event::ReadFailed(failure) => format!("ReadFailed({failure:?})"),
        Event::SectionFinished(SectionResult::Completed) => "SectionFinished(Completed)".into(),
        Event::SectionFinished(SectionResult::Failed { .. }) => "SectionFinished(Failed)".into(),
        Event::ReleaseRequested => "ReleaseRequested".into(),
        Event::Cancel => "Cancel".into(),
        Event::FencedWriteAnswered => "FencedWriteAnswered".into(),
        Event::FencedWriteUnanswered { .. } => "FencedWriteUnanswered".into(),
    }
}

/// The run-once transitions the conformance runs must exercise: every one is taken by the reference in the
/// in-memory runs (and no other), and every one must be taken by the emulator runs.
pub const RUN_ONCE: &[(&str, &str, &str)] = &[
    ("AwaitingAcquireCommit", "TxnAborted", "AwaitingRetryTimer"),
    ("AwaitingAcquireCommit", "TxnAborted", "Finished"),
    ("AwaitingAcquireCommit", "TxnCommitted(Acquired)", "AwaitingNeedWhileHolding"),
    ("AwaitingAcquireCommit", "TxnCommitted(Busy)", "AwaitingRetryTimer"),
    ("AwaitingAcquireCommit", "TxnCommitted(Busy)", "Finished"),
    ("AwaitingAcquireCommit", "TxnCommitted(DoneByOther)", "Finished"),
    ("AwaitingAcquireCommit", "TxnFailed(Unavailable)", "AwaitingRetryTimer"),
    ("AwaitingAcquireCommit", "TxnFailed(Unavailable)", "Finished"),
    ("AwaitingAcquireCommit", "TxnOutcomeUnknown", "AwaitingAcquireResolution"),
    ("AwaitingAcquireResolution", "RowRead(DONE)", "AwaitingRetryTimer"),
    ("AwaitingAcquireResolution", "RowRead(DONE)", "Finished"),
    ("AwaitingAcquireResolution", "RowRead(FAILED)", "AwaitingRetryTimer"),
    ("AwaitingAcquireResolution", "RowRead(FAILED)", "Finished"),
    ("AwaitingAcquireResolution", "RowRead(STARTED)", "AwaitingNeedWhileHolding"),
    ("AwaitingAcquireResolution", "RowRead(STARTED)", "AwaitingRetryTimer"),
    ("AwaitingAcquireResolution", "RowRead(STARTED)", "Finished"),
    ("AwaitingAcquireResolution", "RowRead(none)", "AwaitingRetryTimer"),
    ("AwaitingAcquireResolution", "RowRead(none)", "Finished"),
    ("AwaitingNeed", "NeedAnswered(false)", "Finished"),
    ("AwaitingNeed", "NeedAnswered(true)", "AwaitingAcquireCommit"),
    ("AwaitingNeedWhileHolding", "NeedAnswered(false)", "AwaitingReleaseCommit"),
    ("AwaitingNeedWhileHolding", "NeedAnswered(true)", "AwaitingRetryTimer"),
    ("AwaitingNeedWhileHolding", "NeedAnswered(true)", "Finished"),
    ("AwaitingNeedWhileHolding", "NeedAnswered(true)", "Holding"),
    ("AwaitingObservation", "RowRead(DONE)", "AwaitingAcquireCommit"),
    ("AwaitingObservation", "RowRead(DONE)", "Finished"),
    ("AwaitingObservation", "RowRead(FAILED)", "AwaitingAcquireCommit"),
    ("AwaitingObservation", "RowRead(STARTED)", "AwaitingAcquireCommit"),
    ("AwaitingObservation", "RowRead(STARTED)", "AwaitingRetryTimer"),
    ("AwaitingObservation", "RowRead(STARTED)", "Finished"),
    ("AwaitingReleaseCommit", "TxnAborted", "AwaitingReleaseCommit"),
    ("AwaitingReleaseCommit", "TxnAborted", "AwaitingRetryTimer"),
    ("AwaitingReleaseCommit", "TxnAborted", "Finished"),
    ("AwaitingReleaseCommit", "TxnCommitted(NotHolder)", "AwaitingRetryTimer"),
    ("AwaitingReleaseCommit", "TxnCommitted(NotHolder)", "Finished"),
    ("AwaitingReleaseCommit", "TxnCommitted(Released)", "AwaitingRetryTimer"),
    ("AwaitingReleaseCommit", "TxnCommitted(Released)", "Finished"),
    ("AwaitingReleaseCommit", "TxnFailed(Unavailable)", "AwaitingRetryTimer"),
    ("AwaitingReleaseCommit", "TxnFailed(Unavailable)", "Finished"),
    ("AwaitingReleaseCommit", "TxnOutcomeUnknown", "AwaitingReleaseResolution"),
    ("AwaitingReleaseResolution", "RowRead(DONE)", "AwaitingRetryTimer"),
    ("AwaitingReleaseResolution", "RowRead(DONE)", "Finished"),
    ("AwaitingReleaseResolution", "RowRead(FAILED)", "AwaitingRetryTimer"),
    ("AwaitingReleaseResolution", "RowRead(FAILED)", "Finished"),
    ("AwaitingReleaseResolution", "RowRead(STARTED)", "AwaitingReleaseCommit"),
    ("AwaitingReleaseResolution", "RowRead(STARTED)", "AwaitingRetryTimer"),
    ("AwaitingReleaseResolution", "RowRead(STARTED)", "Finished"),
    ("AwaitingRetryTimer", "Timeout", "AwaitingAcquireCommit"),
    ("AwaitingRetryTimer", "Timeout", "AwaitingObservation"),
    ("AwaitingRetryTimer", "Timeout", "Finished"),
    ("Holding", "SectionFinished(Completed)", "AwaitingReleaseCommit"),
    ("Holding", "SectionFinished(Completed)", "Holding"),
    ("Holding", "SectionFinished(Failed)", "AwaitingReleaseCommit"),
    ("Holding", "SectionFinished(Failed)", "Holding"),
    ("Holding", "Timeout", "Holding"),
    ("Holding", "TxnAborted", "AwaitingReleaseCommit"),
    ("Holding", "TxnAborted", "Holding"),
    ("Holding", "TxnCommitted(NotHolder)", "AwaitingReleaseCommit"),
    ("Holding", "TxnCommitted(NotHolder)", "Holding"),
    ("Holding", "TxnCommitted(Renewed)", "AwaitingReleaseCommit"),
    ("Holding", "TxnCommitted(Renewed)", "Holding"),
    ("Holding", "TxnFailed(Unavailable)", "AwaitingReleaseCommit"),
    ("Holding", "TxnFailed(Unavailable)", "Holding"),
    ("Holding", "TxnOutcomeUnknown", "AwaitingReleaseCommit"),
    ("Holding", "TxnOutcomeUnknown", "Holding"),
    ("NotStarted", "Start", "AwaitingNeed"),
];

/// The lock-client transitions (grants, releases, cancels; a leader's are the same machine's) the conformance
/// runs must exercise, as [`RUN_ONCE`] is for run-once clients.
pub const LOCK_MODE: &[(&str, &str, &str)] = &[
    ("AwaitingAcquireCommit", "Cancel", "AwaitingAcquireCommit"),
    ("AwaitingAcquireCommit", "TxnAborted", "AwaitingAcquireResolution"),
    ("AwaitingAcquireCommit", "TxnAborted", "AwaitingRetryTimer"),
    ("AwaitingAcquireCommit", "TxnAborted", "Finished"),
    ("AwaitingAcquireCommit", "TxnCommitted(Acquired)", "AwaitingReleaseCommit"),
    ("AwaitingAcquireCommit", "TxnCommitted(Acquired)", "Holding"),
    ("AwaitingAcquireCommit", "TxnCommitted(Busy)", "AwaitingRetryTimer"),
    ("AwaitingAcquireCommit", "TxnCommitted(Busy)", "Finished"),
    ("AwaitingAcquireCommit", "TxnFailed(Unavailable)", "AwaitingRetryTimer"),
    ("AwaitingAcquireCommit", "TxnFailed(Unavailable)", "Finished"),
    ("AwaitingAcquireCommit", "TxnOutcomeUnknown", "AwaitingAcquireResolution"),
    ("AwaitingAcquireResolution", "Cancel", "AwaitingAcquireResolution"),
    ("AwaitingAcquireResolution", "RowRead(DONE)", "AwaitingRetryTimer"),
    ("AwaitingAcquireResolution", "RowRead(DONE)", "Finished"),
    ("AwaitingAcquireResolution", "RowRead(FAILED)", "AwaitingRetryTimer"),
    ("AwaitingAcquireResolution", "RowRead(FAILED)", "Finished"),
    ("AwaitingAcquireResolution", "RowRead(STARTED)", "AwaitingReleaseCommit"),
    ("AwaitingAcquireResolution", "RowRead(STARTED)", "AwaitingRetryTimer"),
    ("AwaitingAcquireResolution", "RowRead(STARTED)", "Finished"),
    ("AwaitingAcquireResolution", "RowRead(STARTED)", "Holding"),
    ("AwaitingAcquireResolution", "RowRead(none)", "AwaitingRetryTimer"),
    ("AwaitingAcquireResolution", "RowRead(none)", "Finished"),
    ("AwaitingObservation", "Cancel", "Finished"),
    ("AwaitingObservation", "RowRead(DONE)", "AwaitingAcquireCommit"),
    ("AwaitingObservation", "RowRead(FAILED)", "AwaitingAcquireCommit"),
    ("AwaitingObservation", "RowRead(STARTED)", "AwaitingAcquireCommit"),
    ("AwaitingObservation", "RowRead(STARTED)", "AwaitingRetryTimer"),
    ("AwaitingReleaseCommit", "Cancel", "AwaitingReleaseCommit"),
    ("AwaitingReleaseCommit", "TxnAborted", "AwaitingReleaseCommit"),
    ("AwaitingReleaseCommit", "TxnAborted", "Finished"),
    ("AwaitingReleaseCommit", "TxnCommitted(NotHolder)", "Finished"),
    ("AwaitingReleaseCommit", "TxnCommitted(Released)", "Finished"),
    ("AwaitingReleaseCommit", "TxnFailed(Unavailable)", "Finished"),
    ("AwaitingReleaseCommit", "TxnOutcomeUnknown", "AwaitingReleaseResolution"),
    ("AwaitingReleaseResolution", "Cancel", "AwaitingReleaseResolution"),
    ("AwaitingReleaseResolution", "RowRead(DONE)", "Finished"),
    ("AwaitingReleaseResolution", "RowRead(FAILED)", "Finished"),
    ("AwaitingReleaseResolution", "RowRead(STARTED)", "AwaitingReleaseCommit"),
    ("AwaitingReleaseResolution", "RowRead(STARTED)", "Finished"),
    ("AwaitingRetryTimer", "Cancel", "AwaitingAcquireResolution"),
    ("AwaitingRetryTimer", "Cancel", "Finished"),
    ("AwaitingRetryTimer", "Timeout", "AwaitingAcquireCommit"),
    ("AwaitingRetryTimer", "Timeout", "AwaitingObservation"),
    ("AwaitingRetryTimer", "Timeout", "Finished"),
    ("Finished", "RowRead(DONE)", "Finished"),
    ("Finished", "RowRead(FAILED)", "Finished"),
    ("Finished", "RowRead(STARTED)", "Finished"),
    ("Holding", "Cancel", "AwaitingReleaseCommit"),
    ("Holding", "Cancel", "Holding"),
    ("Holding", "ReleaseRequested", "AwaitingReleaseCommit"),
    ("Holding", "ReleaseRequested", "Holding"),
    ("Holding", "Timeout", "Holding"),
    ("Holding", "TxnAborted", "AwaitingReleaseCommit"),
    ("Holding", "TxnAborted", "Holding"),
    ("Holding", "TxnCommitted(NotHolder)", "AwaitingReleaseCommit"),
    ("Holding", "TxnCommitted(NotHolder)", "Holding"),
    ("Holding", "TxnCommitted(Renewed)", "AwaitingReleaseCommit"),
    ("Holding", "TxnCommitted(Renewed)", "Holding"),
    ("Holding", "TxnFailed(Unavailable)", "AwaitingReleaseCommit"),
    ("Holding", "TxnFailed(Unavailable)", "Holding"),
    ("Holding", "TxnOutcomeUnknown", "AwaitingReleaseCommit"),
    ("Holding", "TxnOutcomeUnknown", "Holding"),
    ("NotStarted", "Start", "AwaitingAcquireCommit"),
];

/// [`RUN_ONCE`] as transitions.
pub fn run_once() -> BTreeSet<Transition> {
    transitions(RUN_ONCE)
}

/// [`LOCK_MODE`] as transitions.
pub fn lock_mode() -> BTreeSet<Transition> {
    transitions(LOCK_MODE)
}

fn transitions(list: &[(&'static str, &str, &'static str)]) -> BTreeSet<Transition> {
    list.iter().map(|&(from, event, to)| Transition::new(from, event.to_owned(), to)).collect()
}

/// A generated case: the initial reference state and the operations.
pub type Case = (crate::harness::Side<crate::reference::Reference>, Vec<crate::harness::Op>);

/// Generates `candidates` cases of profile `P` from `seed` and keeps a small set that together take every
/// transition any of them takes (greedy set cover), so a slow backend can be driven through every transition
/// in a few sequences. Returns the cases and the transitions they cover.
pub fn covering_cases<P: crate::generate::Profile>(
    seed: u64,
    candidates: usize,
    max_steps: usize,
) -> (Vec<Case>, BTreeSet<Transition>) {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    use proptest_state_machine::ReferenceStateMachine;
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let strategy = crate::generate::Conformance::<P>::sequential_strategy(1..max_steps);
    let mut pool: Vec<(Case, BTreeSet<Transition>)> = Vec::new();
    for _ in 0..candidates {
        let (init, ops, _) = strategy.new_tree(&mut runner).expect("generates").current();
        let mut side = init.clone();
        for op in &ops {
            crate::now_or_never(side.apply(op)).expect("generated operations apply");
        }
        pool.push(((init, ops), side.transitions));
    }
    let mut covered = BTreeSet::new();
    let mut chosen = Vec::new();
    loop {
        let best = pool
            .iter()
            .enumerate()
            .map(|(i, (_, t))| (t.difference(&covered).count(), std::cmp::Reverse(i)))
            .max()
            .filter(|&(gain, _)| gain > 0);
        let Some((_, std::cmp::Reverse(i))) = best else { break };
        let (case, transitions) = pool.swap_remove(i);
        covered.extend(transitions);
        chosen.push(case);
    }
    (chosen, covered)
}
