//! The exhaustive search `check` runs: depth-first over the model's canonical states, on any number of threads,
//! keeping of each visited class only its 64-bit fingerprint (as stateright does) and, with the reduction by time
//! shifts, the earliest server time it was visited at.
//!
//! Without time shifts it visits states in the order stateright's depth-first checker does, so one thread gives
//! the same counts and depth (short of a fingerprint collision in either, or a state that violates every property
//! at once, which stateright leaves unexpanded), but keeps less per state: stateright carries every pending
//! state's whole path, clones each successor to take its symmetry representative and fingerprints both. Here a
//! pending state carries its depth only, and a successor that is already its representative is hashed as it is,
//! and once. A violation's path is not kept: `check` asks stateright's breadth-first search for the shortest
//! counterexample (`report::run_check`).

use super::{LeaseModel, WorldState, canonical_fingerprint};
use stateright::{Expectation, Model, Property};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// States a thread takes from its own stack between looks at the others (stateright's block size).
const BLOCK_STATES: usize = 1_500;
/// Shards of the visited set: enough that two threads rarely wait on one.
const VISITED_SHARDS: usize = 64;

/// How the search runs.
pub(super) struct Limits {
    /// Worker threads, at least 1.
    pub threads: usize,
    /// States at this depth are neither judged nor expanded (the initial states are at depth 1).
    pub max_depth: Option<usize>,
    /// Reduce by client symmetry (when the model is symmetric).
    pub symmetry: bool,
    /// Reduce by time shifts ([`LeaseModel::time_free_fingerprint`]; when the model is symmetric, as for
    /// client symmetry).
    pub time_shifts: bool,
    /// The search stops once this property is violated.
    pub stop_at: &'static str,
    /// Between progress lines on stderr.
    pub progress_interval: Duration,
}

/// What a search found.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Found {
    /// States generated, counting revisits (and the initial states).
    pub states: usize,
    /// Distinct states: with time shifts, distinct classes (states that differ only by when they happen are
    /// one class), which is every class reachable, whatever the order of the search.
    pub unique_states: usize,
    /// States expanded again because their class was first visited later in server time.
    pub revisits: usize,
    /// The deepest state taken from a stack (the initial states are at depth 1).
    pub max_depth: usize,
    /// The `always` properties some state violated, in the model's order.
    pub violated: Vec<&'static str>,
}

/// What a state's visit found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Visit {
    /// Its class (under the search's reductions) was visited before, at the same server time or earlier.
    Seen,
    /// Its class is new: a unique state, to expand.
    New,
    /// Its class was visited only later in server time, so this earlier member has more of the horizon left:
    /// expanded again.
    Earlier,
}

/// A state to expand, and how deep it is.
struct Job {
    state: WorldState,
    depth: usize,
}

/// Hashes a fingerprint to itself: it is already a hash.
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, _: &[u8]) {
        unreachable!("the visited set holds u64 fingerprints only");
    }

    fn write_u64(&mut self, fingerprint: u64) {
        self.0 = fingerprint;
    }
}

/// Visited fingerprints, each with the earliest server time it was visited at.
type Visited = HashMap<u64, u64, BuildHasherDefault<FingerprintHasher>>;

/// A shard of the visited set, alone on its cache lines: threads locking neighbouring shards would otherwise
/// contend for one line.
#[derive(Default)]
#[repr(align(128))]
struct Shard(Mutex<Visited>);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A worker that panicked halts the search and the scope re-raises its panic (`Finishing`); until then the
    // data behind every lock is still consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Work waiting for a thread, and who waits for it.
#[derive(Default)]
struct Pool {
    batches: Vec<Vec<Job>>,
    idle_threads: usize,
    done: bool,
}

struct Shared<'a> {
    model: &'a LeaseModel,
    limits: &'a Limits,
    /// Reduce by symmetry: asked for, and the model's clients are symmetric.
    symmetry: bool,
    time_shifts: bool,
    revisits: AtomicUsize,
    visited: Vec<Shard>,
    pool: Mutex<Pool>,
    work_ready: Condvar,
    /// Some thread waits for work (read without the pool's lock).
    hungry: AtomicBool,
    /// The search was halted; read without the pool's lock between blocks (the pool's `done` says the same to
    /// threads waiting for work).
    stop: AtomicBool,
    /// Counts so far, added up after each block.
    states: AtomicUsize,
    unique_states: AtomicUsize,
    max_depth: AtomicUsize,
    violated: Mutex<Vec<&'static str>>,
    /// Threads returned (or unwound), for the progress loop to wait on.
    finished_threads: Mutex<usize>,
    all_finished: Condvar,
}

/// Counts its thread finished when dropped, even by a panic, which also halts the others: a worker that died
/// would otherwise leave them waiting for its work forever.
struct Finishing<'s, 'a>(&'s Shared<'a>);

impl Drop for Finishing<'_, '_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.halt();
        }
        *lock(&self.0.finished_threads) += 1;
        self.0.all_finished.notify_all();
    }
}

impl Shared<'_> {
    /// Marks `state` visited, and says whether it is to be expanded.
    fn visit(&self, state: &WorldState) -> Visit {
        use std::collections::hash_map::Entry;
        let (fingerprint, at_ms) = if self.time_shifts {
            (self.model.time_free_fingerprint(state, self.symmetry), state.now_ms)
        } else {
            (canonical_fingerprint(state, self.symmetry), 0)
        };
        // The low bits pick a bucket inside a shard and the top seven its tag, so the shard comes from between.
        let shard = (fingerprint >> 32) as usize % VISITED_SHARDS;
        let mut visited = lock(&self.visited[shard].0);
        match visited.entry(fingerprint) {
            Entry::Vacant(entry) => {
                entry.insert(at_ms);
                Visit::New
            }
            Entry::Occupied(mut entry) if *entry.get() > at_ms => {
                entry.insert(at_ms);
                Visit::Earlier
            }
            Entry::Occupied(_) => Visit::Seen,
        }
    }

    /// A batch of work, or `None` once every thread is out of work (or the search stopped).
    fn take(&self) -> Option<Vec<Job>> {
        let mut pool = lock(&self.pool);
        loop {
            if pool.done {
                return None;
            }
            if let Some(batch) = pool.batches.pop() {
                return Some(batch);
            }
            pool.idle_threads += 1;
            if pool.idle_threads == self.limits.threads {
                pool.done = true;
                self.work_ready.notify_all();
                return None;
            }
            self.hungry.store(true, Ordering::Relaxed);
            pool = self.work_ready.wait(pool).unwrap_or_else(PoisonError::into_inner);
            pool.idle_threads -= 1;
        }
    }

    /// Hands the bottom half of `stack` (the states nearest the root: the most work) to a waiting thread.
    fn share(&self, stack: &mut Vec<Job>) {
        let mut pool = lock(&self.pool);
        if pool.idle_threads > pool.batches.len() && stack.len() > 1 {
            pool.batches.push(stack.drain(..stack.len() / 2).collect());
            self.work_ready.notify_one();
        }
        if pool.idle_threads <= pool.batches.len() {
            self.hungry.store(false, Ordering::Relaxed);
        }
    }

    fn halt(&self) {
        self.stop.store(true, Ordering::Relaxed);
        lock(&self.pool).done = true;
        self.work_ready.notify_all();
    }

    fn worker(&self, always: &[Property<LeaseModel>]) {
        let mut actions = Vec::new();
        while let Some(mut stack) = self.take() {
            while !stack.is_empty() {
                self.expand_block(always, &mut stack, &mut actions);
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                if self.hungry.load(Ordering::Relaxed) {
                    self.share(&mut stack);
                }
            }
        }
    }

    /// Takes up to [`BLOCK_STATES`] states from the stack: judges each, and pushes its new successors.
    fn expand_block(
        &self,
        always: &[Property<LeaseModel>],
        stack: &mut Vec<Job>,
        actions: &mut Vec<<LeaseModel as Model>::Action>,
    ) {
        let (mut states, mut unique_states, mut revisits, mut max_depth) = (0, 0, 0, 0);
        for _ in 0..BLOCK_STATES {
            let Some(Job { state, depth }) = stack.pop() else { break };
            max_depth = max_depth.max(depth);
            if self.limits.max_depth.is_some_and(|limit| depth >= limit) {
                continue;
            }
            for property in always {
                if !(property.condition)(self.model, &state) {
                    let mut violated = lock(&self.violated);
                    if !violated.contains(&property.name) {
                        violated.push(property.name);
                        if property.name == self.limits.stop_at {
                            drop(violated);
                            self.halt();
                        }
                    }
                }
            }
            self.model.actions(&state, actions);
            for action in actions.drain(..) {
                let Some(next) = self.model.next_state(&state, action) else { continue };
                states += 1;
                match self.visit(&next) {
                    Visit::Seen => {}
                    Visit::New => {
                        unique_states += 1;
                        stack.push(Job { state: next, depth: depth + 1 });
                    }
                    Visit::Earlier => {
                        revisits += 1;
                        stack.push(Job { state: next, depth: depth + 1 });
                    }
                }
            }
        }
        self.states.fetch_add(states, Ordering::Relaxed);
        self.unique_states.fetch_add(unique_states, Ordering::Relaxed);
        self.revisits.fetch_add(revisits, Ordering::Relaxed);
        self.max_depth.fetch_max(max_depth, Ordering::Relaxed);
    }
}

/// Searches every state of `model` reachable within `limits`, judging its `always` properties. Its `sometimes`
/// companions are judged from the tally of a model made by [`LeaseModel::tallying_witnesses`].
pub(super) fn exhaustive(model: &LeaseModel, limits: &Limits) -> Found {
    assert!(limits.threads >= 1, "a search needs a thread");
    assert!(model.tallies_witnesses(), "companions are judged from the tally, not from states");
    let always: Vec<Property<LeaseModel>> =
        model.properties().into_iter().filter(|p| p.expectation == Expectation::Always).collect();
    let shared = Shared {
        model,
        limits,
        symmetry: limits.symmetry && model.symmetric(),
        time_shifts: limits.time_shifts && model.symmetric(),
        revisits: AtomicUsize::new(0),
        visited: (0..VISITED_SHARDS).map(|_| Shard::default()).collect(),
        pool: Mutex::default(),
        work_ready: Condvar::new(),
        hungry: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        states: AtomicUsize::new(0),
        unique_states: AtomicUsize::new(0),
        max_depth: AtomicUsize::new(0),
        violated: Mutex::default(),
        finished_threads: Mutex::new(0),
        all_finished: Condvar::new(),
    };
    let init: Vec<Job> = model.init_states().into_iter().map(|state| Job { state, depth: 1 }).collect();
    shared.states.store(init.len(), Ordering::Relaxed);
    for job in &init {
        if shared.visit(&job.state) == Visit::New {
            shared.unique_states.fetch_add(1, Ordering::Relaxed);
        }
    }
    lock(&shared.pool).batches.push(init);
    // Timing the checker itself, not the protocol.
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..limits.threads {
            scope.spawn(|| {
                let _finishing = Finishing(&shared);
                shared.worker(&always);
            });
        }
        let mut finished = lock(&shared.finished_threads);
        let mut printed = Duration::ZERO;
        while *finished < limits.threads {
            let next_line = printed.saturating_add(limits.progress_interval).saturating_sub(started.elapsed());
            finished = shared.all_finished.wait_timeout(finished, next_line).unwrap_or_else(PoisonError::into_inner).0;
            let elapsed = started.elapsed();
            if *finished < limits.threads && elapsed >= printed.saturating_add(limits.progress_interval) {
                printed = elapsed;
                let line = super::report::progress_line(
                    shared.states.load(Ordering::Relaxed),
                    shared.unique_states.load(Ordering::Relaxed),
                    shared.max_depth.load(Ordering::Relaxed),
                    elapsed,
                );
                eprintln!("{line}");
            }
        }
    });
    let violated = lock(&shared.violated).clone();
    // In the model's order, whichever thread found which first.
    let violated = always.iter().map(|p| p.name).filter(|name| violated.contains(name)).collect();
    Found {
        states: shared.states.load(Ordering::Relaxed),
        unique_states: shared.unique_states.load(Ordering::Relaxed),
        revisits: shared.revisits.load(Ordering::Relaxed),
        max_depth: shared.max_depth.load(Ordering::Relaxed),
        violated,
    }
}
