//! The reduction's cross-check, run by `check` itself: in a small world of every mode, the reduced search must
//! reach exactly the classes of every state the unreduced world reaches. The reduction by time shifts keys a
//! state without what nothing is supposed to read (the row's attempt count, its commit time when no DONE row can
//! go stale, retries beyond the longest backoff); a protocol change that reads one of them makes the reduced
//! search miss states, and this count comes out short.

use crate::{CheckOptions, ClientKind, LeaseModel, SearchOptions, WorldState, reductions::checker_hash, search};
use stateright::Model;
use std::time::Instant;

/// A set of fingerprints, themselves hashes: hashed again only cheaply.
type Fingerprints = std::collections::HashSet<u64, foldhash::fast::RandomState>;

/// One world's cross-check.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReductionCheck {
    /// The world, as `check`'s flags select it.
    pub world: String,
    /// Classes the reduced search (symmetry and time shifts) visited.
    pub reduced_classes: usize,
    /// Classes among every state of the world, each visited as it is.
    pub classes: usize,
    /// States of the world, each visited as it is.
    pub states: usize,
    /// Both searches' time.
    pub seconds: f64,
}

impl ReductionCheck {
    /// Whether the reduced search reached every class.
    pub const fn holds(&self) -> bool {
        self.reduced_classes == self.classes
    }

    /// One line for people.
    pub fn line(&self) -> String {
        let verdict = if self.holds() {
            "PASS".to_owned()
        } else {
            format!(
                "FAILED: the reduced search missed {} classes; the protocol reads something the search key \
                 forgets (LeaseModel::key_for_search)",
                self.classes.abs_diff(self.reduced_classes)
            )
        };
        format!(
            "reduction cross-check: {} reduced classes, {} classes of {} states, {:.2} s, {verdict}",
            self.reduced_classes, self.classes, self.states, self.seconds
        )
    }
}

/// The small worlds `check` cross-checks the reduction in, one per mode `worlds` have: two clients of the mode,
/// with the first such world's faults, protocol and staleness, one fault per execution and no cancel, over a 3 ms
/// horizon: long enough for a takeover (leases last 3 ms) and for re-acquisitions after a failure, and short
/// enough that every state can be visited as it is (about 2 s for the three modes). None for a protocol the search
/// does not reduce (the seed's, whose clients' wall clocks differ).
pub fn reduction_worlds(worlds: &[CheckOptions]) -> Vec<CheckOptions> {
    [ClientKind::RunOnce, ClientKind::Lock, ClientKind::Leader]
        .into_iter()
        .filter_map(|kind| {
            let template = worlds.iter().find(|world| world.has(kind) && world.protocol.uses_server_time())?;
            Some(CheckOptions {
                clients: 2,
                kinds: vec![kind],
                fault_budget: template.fault_budget.min(1),
                cancels: 0,
                max_time_ms: template.max_time_ms.min(3),
                // As many fenced writes as any world makes: the key must keep what tells them apart.
                fenced_writes: worlds.iter().map(|world| world.fenced_writes).max().unwrap_or(1),
                // An operator where any world has one (the key keeps whose lease it released), in the lock world
                // only: what the key keeps of a release does not depend on the kind, and the other two worlds would
                // take up to ten times as long.
                operators: if kind == ClientKind::Lock {
                    worlds.iter().map(|world| world.operators).max().unwrap_or(0)
                } else {
                    0
                },
                ..template.clone()
            })
        })
        .collect()
}

/// Cross-checks the reduction in each of `worlds`, in parallel: each world's two searches run one thread each.
pub fn cross_check_reductions(worlds: &[CheckOptions]) -> Vec<ReductionCheck> {
    std::thread::scope(|scope| {
        let checks: Vec<_> = worlds.iter().map(|world| scope.spawn(|| cross_check_reduction(world))).collect();
        checks.into_iter().map(|check| check.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    })
}

/// Cross-checks the reduction in `options`'s world: the reduced search and the search of every state, side by
/// side.
pub fn cross_check_reduction(options: &CheckOptions) -> ReductionCheck {
    let started = Instant::now();
    let (reduced, (classes, states)) = std::thread::scope(|scope| {
        let every_state = scope.spawn(|| classes_of_every_state(options));
        // The whole reduced space, whatever it violates (the world's own check judges that), so the counts always
        // compare.
        let model = LeaseModel::new(options.clone()).tallying_witnesses();
        let limits = search::Limits {
            threads: 1,
            max_depth: None,
            symmetry: true,
            time_shifts: true,
            stop_at: search::NEVER_STOP,
            progress_interval: SearchOptions::default().progress_interval,
        };
        let reduced = search::exhaustive(&model, &limits);
        (reduced, every_state.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    });
    ReductionCheck {
        world: options.cli_args(),
        reduced_classes: reduced.unique_states,
        classes,
        states,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// The number of classes ([`LeaseModel::class_fingerprint`]) among every state reachable in `options`'s world,
/// each state visited as it is, and the number of those states.
pub(crate) fn classes_of_every_state(options: &CheckOptions) -> (usize, usize) {
    // Witnesses tallied, not marked in states, as `check` searches.
    let model = LeaseModel::new(options.clone()).tallying_witnesses();
    let mut classes = Fingerprints::default();
    let states = for_each_reachable_state(&model, |state| {
        classes.insert(model.class_fingerprint(&mut state.clone(), model.symmetric()).0);
    });
    (classes.len(), states)
}

/// Calls `visit` on every state reachable in `model`'s world, once each; returns how many there are.
pub(crate) fn for_each_reachable_state(model: &LeaseModel, mut visit: impl FnMut(&WorldState)) -> usize {
    let mut seen = Fingerprints::default();
    let mut stack = model.init_states();
    let mut actions = Vec::new();
    while let Some(state) = stack.pop() {
        if !seen.insert(checker_hash(&state)) {
            continue;
        }
        visit(&state);
        model.actions(&state, &mut actions);
        stack.extend(actions.drain(..).filter_map(|action| model.next_state(&state, action)));
    }
    seen.len()
}
