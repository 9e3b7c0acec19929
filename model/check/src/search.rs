//! The exhaustive search `check` runs: depth-first over the model's canonical states, on any number of threads,
//! keeping of each visited class only its 64-bit fingerprint (as stateright does) and, with the reduction by time
//! shifts, the earliest server time it was visited at. With time shifts a thread takes its earliest states first
//! ([`Pending`]), depth-first within one server time.
//!
//! Without time shifts it visits states in the order stateright's depth-first checker does, so one thread gives
//! the same counts and depth (short of a fingerprint collision in either, or a state that violates every property
//! at once, which stateright leaves unexpanded), but keeps less per state: stateright carries every pending
//! state's whole path, clones each successor to take its symmetry representative and fingerprints both. Here a
//! pending state carries its depth only, and a successor that is already its representative is hashed as it is,
//! and once. A violation's path is not kept: `check` asks stateright's breadth-first search for the shortest
//! counterexample (`report::run_check`).

use crate::{KeyMove, LeaseModel, WorldState, canonical_fingerprint};
use stateright::{Expectation, Model, Property};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

/// States a thread takes from its own stack between looks at the others (stateright's block size).
const BLOCK_STATES: usize = 1_500;
/// States a thread holds back for later server times before it takes its latest first ([`Pending`]).
const MAX_HELD_STATES: usize = 1 << 17;

/// A [`Limits::stop_at`] that names no property: the search covers the whole space.
pub(super) const NEVER_STOP: &str = "";

/// How the search runs.
pub(super) struct Limits {
    /// Worker threads, at least 1.
    pub threads: usize,
    /// States at this depth are neither judged nor expanded (the initial states are at depth 1).
    pub max_depth: Option<usize>,
    /// Reduce by client symmetry (when the model is symmetric).
    pub symmetry: bool,
    /// Reduce by time shifts ([`LeaseModel::key_for_search`]; when the model is symmetric, as for
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

/// A successor's fingerprint, and how to move it back from its key.
struct Keyed {
    fingerprint: u64,
    /// With time shifts.
    moved: Option<KeyMove>,
}

impl Keyed {
    /// The server time the class is visited at: the state's own with time shifts, else one for all.
    fn at_ms(&self) -> u64 {
        self.moved.map_or(0, KeyMove::now_ms)
    }
}

/// A state to expand, and how deep it is.
struct Job {
    state: WorldState,
    depth: usize,
}

/// A thread's states to expand. With time shifts, one stack per server time, the earliest taken first: a class
/// is then mostly visited first at its earliest time, and few members are expanded again. Past
/// [`MAX_HELD_STATES`] the latest are taken first instead (depth-first, as without time shifts), which bounds
/// the memory held back. Without time shifts, one stack: stateright's order.
struct Pending {
    /// Indexed by server time with time shifts; one stack without.
    stacks: Vec<Vec<Job>>,
    time_ordered: bool,
    len: usize,
}

impl Pending {
    fn new(time_ordered: bool) -> Self {
        Self { stacks: Vec::new(), time_ordered, len: 0 }
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, job: Job) {
        let at = if self.time_ordered {
            usize::try_from(job.state.now_ms).expect("server time is bounded by the horizon (MAX_TIME_MS)")
        } else {
            0
        };
        if self.stacks.len() <= at {
            self.stacks.resize_with(at + 1, Vec::new);
        }
        self.stacks[at].push(job);
        self.len += 1;
    }

    fn pop(&mut self) -> Option<Job> {
        let job = if self.len > MAX_HELD_STATES {
            self.stacks.iter_mut().rev().find_map(Vec::pop)
        } else {
            self.stacks.iter_mut().find_map(Vec::pop)
        }?;
        self.len -= 1;
        Some(job)
    }

    /// The bottom half of each stack (the states nearest the root: the most work), for another thread; when each
    /// holds one state at most, the earliest.
    fn split_off_half(&mut self) -> Vec<Job> {
        let mut half = Vec::with_capacity(self.len / 2 + 1);
        for stack in &mut self.stacks {
            half.extend(stack.drain(..stack.len() / 2));
        }
        if half.is_empty()
            && self.len > 1
            && let Some(earliest) = self.stacks.iter_mut().find(|stack| !stack.is_empty())
        {
            half.append(earliest);
        }
        self.len -= half.len();
        half
    }
}

/// Visited fingerprints, each with the earliest server time it was visited at, shared by every thread through
/// atomic slots: open addressing with linear probing, a fingerprint beside its time, so a lookup reads one cache line,
/// and the lookups of one state's successors wait on memory together ([`Shared::expand_block`]). The table is
/// where the search waits most. Threads search with it read-locked, a block at a time, and it grows
/// write-locked between blocks ([`Shared::make_room`]).
struct Visited {
    /// A power of two long.
    slots: Box<[Slot]>,
    /// Slots taken, as of the last block each thread finished.
    len: AtomicUsize,
}

#[repr(align(16))]
struct Slot {
    /// [`EMPTY`] while free; set once.
    fingerprint: AtomicU64,
    /// The earliest server time the class was visited at; [`UNRECORDED`] until its first visitor records it.
    earliest_ms: AtomicU64,
}

/// The fingerprint of a free slot; a state fingerprinted so is taken for [`EMPTY_STANDIN`] (one of 2^64).
const EMPTY: u64 = 0;
const EMPTY_STANDIN: u64 = 1;
/// A slot's time between its fingerprint's first visitor taking it and recording its time.
const UNRECORDED: u64 = u64::MAX;
/// New states after which a thread ends its block, so that the visited set may grow ([`Shared::expand_block`]; the
/// block's last state may add as many again).
const MAX_BLOCK_INSERTS: usize = 1 << 14;
/// Slots a thread's block may take in the visited set: its inserts, and the successors of its last state.
const BLOCK_RESERVE: usize = 2 * MAX_BLOCK_INSERTS;
/// The visited set's first size.
const MIN_VISITED_SLOTS: usize = 1 << 20;

impl Visited {
    fn with_capacity(capacity: usize) -> Self {
        let slots = (0..capacity.next_power_of_two())
            .map(|_| Slot { fingerprint: AtomicU64::new(EMPTY), earliest_ms: AtomicU64::new(UNRECORDED) })
            .collect();
        Self { slots, len: AtomicUsize::new(0) }
    }

    const fn stand_in(fingerprint: u64) -> u64 {
        if fingerprint == EMPTY { EMPTY_STANDIN } else { fingerprint }
    }

    /// The slots `fingerprint` (a stand-in) is looked for in, in order: from the one its low bits pick, onwards,
    /// each once.
    fn probe(&self, fingerprint: u64) -> impl Iterator<Item = &Slot> {
        let first = fingerprint as usize & (self.slots.len() - 1);
        self.slots[first..].iter().chain(&self.slots[..first])
    }

    /// Reads the slot `fingerprint` is looked up in first, so that its cache line is on its way.
    fn touch(&self, fingerprint: u64) {
        if let Some(first) = self.probe(Self::stand_in(fingerprint)).next() {
            std::hint::black_box(first.fingerprint.load(Ordering::Relaxed));
        }
    }

    /// Records `fingerprint` as visited at `at_ms`.
    fn visit(&self, fingerprint: u64, at_ms: u64) -> Visit {
        let fingerprint = Self::stand_in(fingerprint);
        for slot in self.probe(fingerprint) {
            let mut found = slot.fingerprint.load(Ordering::Relaxed);
            if found == EMPTY {
                match slot.fingerprint.compare_exchange(EMPTY, fingerprint, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => {
                        // No other visitor writes the time before this one (they wait for it below).
                        slot.earliest_ms.store(at_ms, Ordering::Relaxed);
                        return Visit::New;
                    }
                    Err(taken) => found = taken,
                }
            }
            if found == fingerprint {
                // The first visitor records its time in its next step: waiting for it is brief, and keeps the
                // class from being expanded twice at one time.
                let mut earliest_ms = slot.earliest_ms.load(Ordering::Relaxed);
                while earliest_ms == UNRECORDED {
                    std::hint::spin_loop();
                    earliest_ms = slot.earliest_ms.load(Ordering::Relaxed);
                }
                if earliest_ms <= at_ms {
                    return Visit::Seen;
                }
                return if slot.earliest_ms.fetch_min(at_ms, Ordering::Relaxed) > at_ms {
                    Visit::Earlier
                } else {
                    Visit::Seen
                };
            }
        }
        unreachable!("the visited set is never full: it grows while a quarter is free (`Shared::make_room`)");
    }

    /// The same set in twice the slots.
    fn doubled(&mut self) -> Self {
        let bigger = Self::with_capacity(self.slots.len() * 2);
        for slot in &mut self.slots {
            let fingerprint = *slot.fingerprint.get_mut();
            if fingerprint == EMPTY {
                continue;
            }
            let free = bigger.probe(fingerprint).find(|free| free.fingerprint.load(Ordering::Relaxed) == EMPTY);
            let free = free.expect("twice the slots hold every fingerprint");
            free.fingerprint.store(fingerprint, Ordering::Relaxed);
            free.earliest_ms.store(*slot.earliest_ms.get_mut(), Ordering::Relaxed);
        }
        bigger.len.store(*self.len.get_mut(), Ordering::Relaxed);
        bigger
    }
}

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
    visited: RwLock<Visited>,
    /// A thread is growing the visited set ([`Self::make_room`]).
    growing: Mutex<bool>,
    grown: Condvar,
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

/// Ends a growth of the visited set when dropped, even by a panic, so that the threads waiting for it go on.
struct Growth<'s, 'a>(&'s Shared<'a>);

impl Drop for Growth<'_, '_> {
    fn drop(&mut self) {
        *lock(&self.0.growing) = false;
        self.0.grown.notify_all();
    }
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
    /// The fingerprint `state` is visited by, and the server time its class is visited at. With time shifts,
    /// `state` is made its key in place, and moved back ([`Self::unkey`]) only when it is to be expanded (most
    /// successors are not).
    fn key(&self, state: &mut WorldState) -> Keyed {
        if self.time_shifts {
            let (fingerprint, moved) = self.model.class_fingerprint(state, self.symmetry);
            Keyed { fingerprint, moved: Some(moved) }
        } else {
            Keyed { fingerprint: canonical_fingerprint(state, self.symmetry), moved: None }
        }
    }

    /// `state` back from its key: the same but for what the key forgot, which nothing reads.
    fn unkey(&self, state: &mut WorldState, keyed: &Keyed) {
        if let Some(moved) = keyed.moved {
            self.model.restore_from_key(state, moved);
        }
    }

    /// Grows the visited set, between blocks, when the blocks every thread may be in could fill it past three
    /// quarters (probes stay short, and it never fills). One thread grows it; the others wait without holding it.
    /// (A writer waiting on the lock can be overtaken by a reader block after block: the lock lets a reader in
    /// before a woken writer runs.)
    fn make_room(&self) {
        let reserve = self.limits.threads.saturating_mul(BLOCK_RESERVE);
        let full = |visited: &Visited| {
            visited.len.load(Ordering::Relaxed).saturating_add(reserve) > visited.slots.len() / 4 * 3
        };
        while full(&self.visited.read().unwrap_or_else(PoisonError::into_inner)) {
            let mut growing = lock(&self.growing);
            if *growing {
                while *growing {
                    growing = self.grown.wait(growing).unwrap_or_else(PoisonError::into_inner);
                }
                continue;
            }
            *growing = true;
            drop(growing);
            let _growth = Growth(self);
            let mut visited = self.visited.write().unwrap_or_else(PoisonError::into_inner);
            if full(&visited) {
                *visited = visited.doubled();
            }
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

    /// Hands half of `pending` to a waiting thread.
    fn share(&self, pending: &mut Pending) {
        let mut pool = lock(&self.pool);
        if pool.idle_threads > pool.batches.len() && pending.len > 1 {
            let half = pending.split_off_half();
            if !half.is_empty() {
                pool.batches.push(half);
                self.work_ready.notify_one();
            }
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
        let (mut actions, mut successors) = (Vec::new(), Vec::new());
        let mut pending = Pending::new(self.time_shifts);
        while let Some(batch) = self.take() {
            for job in batch {
                pending.push(job);
            }
            while !pending.is_empty() {
                self.expand_block(always, &mut pending, &mut actions, &mut successors);
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                if self.hungry.load(Ordering::Relaxed) {
                    self.share(&mut pending);
                }
            }
        }
    }

    /// Takes up to [`BLOCK_STATES`] states from `pending` (fewer once it has added [`MAX_BLOCK_INSERTS`] to the
    /// visited set): judges each, and adds its new successors.
    fn expand_block(
        &self,
        always: &[Property<LeaseModel>],
        pending: &mut Pending,
        actions: &mut Vec<<LeaseModel as Model>::Action>,
        successors: &mut Vec<(WorldState, Keyed)>,
    ) {
        self.make_room();
        let visited = self.visited.read().unwrap_or_else(PoisonError::into_inner);
        let (mut states, mut unique_states, mut revisits, mut max_depth) = (0, 0, 0, 0);
        for _ in 0..BLOCK_STATES {
            if unique_states >= MAX_BLOCK_INSERTS {
                break;
            }
            let Some(Job { state, depth }) = pending.pop() else { break };
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
            assert!(actions.len() <= MAX_BLOCK_INSERTS, "a state has more successors than a block's reserve");
            for action in actions.drain(..) {
                let Some(mut next) = self.model.next_state(&state, action) else { continue };
                let keyed = self.key(&mut next);
                successors.push((next, keyed));
            }
            states += successors.len();
            // Every slot on its way before the first is looked at: the lookups wait on memory together.
            for (_, keyed) in successors.iter() {
                visited.touch(keyed.fingerprint);
            }
            for (mut next, keyed) in successors.drain(..) {
                match visited.visit(keyed.fingerprint, keyed.at_ms()) {
                    Visit::Seen => continue,
                    Visit::New => unique_states += 1,
                    Visit::Earlier => revisits += 1,
                }
                self.unkey(&mut next, &keyed);
                pending.push(Job { state: next, depth: depth + 1 });
            }
        }
        visited.len.fetch_add(unique_states, Ordering::Relaxed);
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
        visited: RwLock::new(Visited::with_capacity(
            limits.threads.saturating_mul(BLOCK_RESERVE).saturating_mul(4).max(MIN_VISITED_SLOTS),
        )),
        growing: Mutex::new(false),
        grown: Condvar::new(),
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
    let mut init: Vec<Job> = model.init_states().into_iter().map(|state| Job { state, depth: 1 }).collect();
    shared.states.store(init.len(), Ordering::Relaxed);
    for job in &mut init {
        let keyed = shared.key(&mut job.state);
        shared.unkey(&mut job.state, &keyed);
        let visited = shared.visited.read().unwrap_or_else(PoisonError::into_inner);
        if visited.visit(keyed.fingerprint, keyed.at_ms()) == Visit::New {
            visited.len.fetch_add(1, Ordering::Relaxed);
            shared.unique_states.fetch_add(1, Ordering::Relaxed);
        }
    }
    lock(&shared.pool).batches.push(init);
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
                let line = progress_line(
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

/// The line both searches print while they run.
pub(crate) fn progress_line(states: usize, unique_states: usize, depth: usize, elapsed: Duration) -> String {
    let rate = states as f64 / elapsed.as_secs_f64().max(1e-9);
    format!(
        "checking: states={states} unique={unique_states} depth={depth} seconds={} states_per_second={rate:.0}",
        elapsed.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_visited_set_keeps_each_fingerprint_and_its_earliest_time_as_it_grows() {
        let mut visited = Visited::with_capacity(8);
        assert_eq!(visited.visit(EMPTY, 5), Visit::New, "fingerprint 0 is taken for its stand-in, not for a free slot");
        assert_eq!(visited.visit(EMPTY_STANDIN, 5), Visit::Seen);
        // Every fingerprint lands in slot 3 first: the probe goes on past taken slots.
        let colliding = [3, 11, 19, 27];
        for (at_ms, &fingerprint) in (0..).zip(&colliding) {
            assert_eq!(visited.visit(fingerprint, at_ms), Visit::New);
        }
        assert_eq!(visited.visit(11, 1), Visit::Seen, "visited at the same time");
        assert_eq!(visited.visit(11, 2), Visit::Seen, "visited later");
        assert_eq!(visited.visit(11, 0), Visit::Earlier);
        assert_eq!(visited.visit(11, 0), Visit::Seen, "the earlier time is kept");
        *visited.len.get_mut() = 5;
        let mut doubled = visited.doubled();
        assert_eq!((doubled.slots.len(), *doubled.len.get_mut()), (16, 5));
        assert_eq!(doubled.visit(11, 0), Visit::Seen);
        assert_eq!(doubled.visit(27, 2), Visit::Earlier);
        assert_eq!(doubled.visit(EMPTY, 4), Visit::Earlier);
        assert_eq!(doubled.visit(35, 9), Visit::New);
    }

    #[test]
    fn threads_visiting_one_set_find_each_class_new_once_and_keep_its_earliest_time() {
        const CLASSES: u64 = 10_000;
        let visited = Visited::with_capacity(1 << 15);
        let time_of = |thread: u64, fingerprint: u64| if thread == 0 { 3 } else { fingerprint % 5 };
        let new_per_thread: Vec<u64> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..2)
                .map(|thread| {
                    let visited = &visited;
                    scope.spawn(move || {
                        (1..=CLASSES).filter(|&f| visited.visit(f, time_of(thread, f)) == Visit::New).count() as u64
                    })
                })
                .collect();
            threads.into_iter().map(|thread| thread.join().expect("a visiting thread panicked")).collect()
        });
        assert_eq!(new_per_thread.iter().sum::<u64>(), CLASSES, "each class is new to exactly one thread");
        for fingerprint in 1..=CLASSES {
            let earliest = time_of(0, fingerprint).min(time_of(1, fingerprint));
            assert_eq!(visited.visit(fingerprint, earliest), Visit::Seen, "{fingerprint}");
            if earliest > 0 {
                assert_eq!(visited.visit(fingerprint, earliest - 1), Visit::Earlier, "{fingerprint}");
            }
        }
    }
}
