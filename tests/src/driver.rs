//! The production async driver under conformance: several `SpannerMutex` clients (each its own "process") on one
//! in-memory store with fault injection, in virtual time (tokio's paused clock), driven by generated user
//! actions, faults and time steps. Every store call is mirrored on the model's reference semantics at the same
//! server time; after every step the store must agree with the reference, and what each client believes and
//! reports must be true of the reference's row:
//!
//! - store == reference: each call's answer and the row after it (fates applied as the reference defines them);
//! - safety: the effect at most once, no write under a superseded fence, at most one client relying on the lease,
//!   and a client relies on it only while the reference row names it, with its fence, unexpired;
//! - outcomes true: `Executed`, `DoneByOther`, `NotNeeded` and a confirmed release match the reference's row and
//!   resource; `Unavailable` only after a fault; `Cancelled` only when cancelled; never a driver error; no hang;
//! - timing, in virtual time: a cancel releases within [`CANCEL_BOUND`]; while Spanner is unavailable, a call in
//!   the library's hands returns within [`Bounds::unavailable`]; a free row is taken or reported by a waiter
//!   within [`Bounds::hand_over`]. A transaction made to wait before it runs ([`Step::Delay`]) adds its wait to
//!   its call's bounds, and a cancel's bound is not judged while one is queued or for a call that met one.

use crate::coverage::event_label;
use crate::emulator::{EmulatorEnv, SpannerEmulator};
use crate::harness::{Backend, Fate, RowView, compare};
use crate::memory::{effect_write, injected_fault};
use crate::now_or_never;
use crate::reference::{Reference, START, row_view};
use spanner_mutex::{
    BoxError, CriticalSection, FaultyStore, LeaseHandle, LeaseStore, LockGuard, MemoryStore, RunError, RunOutcome,
    SpannerMutex, StoreError, StoreErrorKind, read_event, txn_event,
};
use spanner_mutex::{FencedAnswer, FencedWork, RowRead, WriteId};
use spanner_mutex_model::{ClientId, Config, Event, Fence, MutexName, Status, TxnReply, TxnRequest};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Every store call takes one round trip: half on the way to the store, half back.
pub const RTT_MS: u64 = 20;
/// A cancel releases what its client held or was winning within this: the operation in flight answers (at most
/// one round trip), then the release commits (one round trip). One millisecond for the timer wheel.
pub const CANCEL_BOUND: Duration = Duration::from_millis(2 * RTT_MS + 1);

/// How often the properties are checked while time passes: a bound is enforced to within this.
pub const CHECK_EVERY_MS: u64 = 5;

/// The timing bounds a configuration promises.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Longest a waiter sleeps between two store calls: a poll or a capped backoff, plus jitter.
    pub gap_ms: u64,
    /// From the moment Spanner stops answering, a call in the library's hands returns within this.
    pub unavailable_ms: u64,
    /// From the moment the row is free (released, done, failed or expired), a waiter takes it or reports it.
    pub hand_over_ms: u64,
    /// How long after a fault the hand-over bound is suspended: a backoff the fault may have started, and a
    /// resolution.
    pub calm_ms: u64,
}

impl Bounds {
    /// The bounds of `cfg` with this module's round trip.
    pub fn of(cfg: &Config) -> Self {
        let gap_ms = cfg.poll_ms().max(cfg.max_wait_ms()) + cfg.jitter_ms();
        Self {
            gap_ms,
            // The next call after the gap fails and starts the budget; the last retry's call, then one more.
            unavailable_ms: gap_ms + cfg.unavailable_ms() + 2 * RTT_MS + 1,
            // A waiter on a busy row polls; the next poll reads the row, then the acquisition commits.
            hand_over_ms: cfg.poll_ms() + cfg.jitter_ms() + 2 * RTT_MS + 1,
            calm_ms: gap_ms + 2 * RTT_MS,
        }
    }
}

/// One generated step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Virtual time passes (every task runs meanwhile).
    Advance {
        /// How long.
        ms: u64,
    },
    /// The client's user does the next natural thing, chosen by `choice`: start a call if idle (run-once, or
    /// lock acquire / try / timeout), answer a pending need check (truthfully, or fail it), write / complete /
    /// fail in the section, or release a held lock.
    User {
        /// Which client.
        client: usize,
        /// Which of the actions open to it.
        choice: u8,
    },
    /// The client's caller goes away: the call's future or the lock guard is dropped, wherever it is.
    Cancel {
        /// Which client.
        client: usize,
    },
    /// The next transaction to reach the store meets this fate.
    Fault {
        /// The fate.
        fate: Fate,
    },
    /// The next single-use read fails (unavailable).
    FailRead,
    /// The next transaction to reach the store waits this long before it runs: it reads the row and the server's
    /// time then, so a renewal can find the lease taken over and be refused (or its client stops waiting first).
    Delay {
        /// How long.
        ms: u64,
    },
    /// Spanner answers nothing but "unavailable" for this long.
    Outage {
        /// How long.
        ms: u64,
    },
}

/// The store and its mirror: the in-memory store (through the fault-injecting wrapper) and the model's
/// reference, kept at the same server time and fed the same calls with the same fates.
#[derive(Debug)]
struct World {
    store: FaultyStore<MemoryStore>,
    reference: Reference,
    /// Server time, milliseconds since [`START`], both stores.
    server_ms: u64,
    epoch: Instant,
    fates: VecDeque<Fate>,
    failing_reads: u32,
    /// Delays before the next transactions run, in the order planned.
    delays: VecDeque<u64>,
    /// The delays each call (by number) met: its time in the store, which the bounds add.
    delayed_ms: BTreeMap<usize, u64>,
    /// Delayed renewals the row refused.
    delayed_renewals_refused: u64,
    outage_until: Option<Instant>,
    /// The ids each call used (a lock's acquisition and release are one call), as seen in its requests.
    ids: Vec<BTreeSet<ClientId>>,
    /// Since when Spanner has been down, if it is.
    outage_since: Option<Instant>,
    /// Faults that reached a call so far (fates other than commit, failed reads, answers during an outage).
    faults: u64,
    /// The calls (by number) a fault reached.
    faulted_calls: BTreeSet<usize>,
    /// When a fault last reached a call.
    last_disturbance: Option<Instant>,
    /// The first disagreement between the store (or the emulator) and the reference.
    mismatch: Option<String>,
    /// The emulator, run beside the in-memory store when the case is one of the emulator subset.
    emulator: Option<EmulatorMirror>,
    /// Store calls so far.
    calls: u64,
}

impl World {
    /// How long call `call_no`'s transactions were made to wait in the store: its bounds grow by that much.
    fn delayed_ms_of(&self, call_no: usize) -> u64 {
        self.delayed_ms.get(&call_no).copied().unwrap_or(0)
    }

    /// Brings both server clocks to virtual now.
    fn sync(&mut self) {
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).expect("fits");
        let delta = now_ms - self.server_ms;
        if delta > 0 {
            self.store.inner().advance_server_clock_ms(delta);
            now_or_never(self.reference.advance(delta));
            if let Some(emulator) = &mut self.emulator {
                now_or_never(emulator.backend.advance(delta));
            }
            self.server_ms = now_ms;
        }
    }

    fn differs(&mut self, what: String) {
        self.mismatch.get_or_insert(what);
    }

    /// Runs `request` with `fate` on the emulator too, if there is one; its answer must be the reference's
    /// `expected` (up to times) and its row the reference's (within [`EMULATOR_SLACK_US`]).
    fn mirror_transact(&mut self, cfg: &Config, request: &TxnRequest, fate: Fate, expected: &Event) {
        let Some(emulator) = &mut self.emulator else { return };
        let answered = event_label(&emulator.blocking(|e| e.transact(cfg, request, fate)));
        let observed = emulator.blocking(Backend::observe);
        let expected = event_label(expected);
        if answered != expected {
            self.differs(format!("{request:?} with fate {fate:?}: emulator {answered}, reference {expected}"));
        } else if let Err(e) = compare(&self.reference.observed(), &observed, EMULATOR_SLACK_US) {
            self.differs(format!("after {request:?} on the emulator: {e}"));
        }
    }

    fn in_outage(&self) -> bool {
        self.outage_until.is_some_and(|until| Instant::now() < until)
    }

    fn disturbed(&mut self, call: usize) {
        self.faults += 1;
        self.faulted_calls.insert(call);
        self.last_disturbance = Some(Instant::now());
    }

    /// Since when Spanner has been down without a break, if it is down now.
    fn down_since(&self) -> Option<Instant> {
        self.outage_since.filter(|_| self.in_outage())
    }

    fn store_row(&self, name: &MutexName) -> Option<RowView> {
        let now = START.plus_ms(self.server_ms);
        self.store.inner().row(name).map(|row| row_view(&row, now))
    }

    fn compare_rows(&mut self, name: &MutexName, after: &str) {
        let (ours, theirs) = (self.store_row(name), self.reference.observed().row);
        if ours != theirs {
            self.differs(format!("row differs after {after}:\n  store     {ours:?}\n  reference {theirs:?}"));
        }
    }
}

/// How far the emulator's relative row times may be from the reference's: its server clock follows virtual time
/// to within one operation's duration (see `crate::emulator`), with room for a loaded machine.
pub const EMULATOR_SLACK_US: i64 = 400_000;

/// The emulator as a third participant: every store call also runs there, on a real-time runtime of its own,
/// while the paused runtime waits (so virtual time stands still meanwhile). Its row and answers are compared with
/// the reference's.
pub struct EmulatorMirror {
    backend: SpannerEmulator,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for EmulatorMirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmulatorMirror")
    }
}

impl EmulatorMirror {
    /// Mirrors onto `env`'s database, mutex `name` (one per case), driving it on `runtime`.
    pub fn new(env: &EmulatorEnv, name: MutexName, runtime: Arc<tokio::runtime::Runtime>) -> Self {
        Self { backend: SpannerEmulator::new(env, name), runtime }
    }

    /// Runs `call` on the emulator to completion, blocking this (paused) thread meanwhile.
    fn blocking<'a, F, T>(&'a mut self, call: impl FnOnce(&'a mut SpannerEmulator) -> F) -> T
    where
        F: Future<Output = T> + Send + 'a,
        T: Send,
    {
        let future = call(&mut self.backend);
        let runtime = &self.runtime;
        std::thread::scope(|scope| scope.spawn(|| runtime.block_on(future)).join().expect("the emulator call ran"))
    }
}

/// The store every call uses; `who` is the call's number.
#[derive(Clone, Debug)]
pub struct Mirror {
    world: Arc<Mutex<World>>,
    who: usize,
}

impl Mirror {
    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The section's fenced write of the effect, on the in-memory store and on the reference; whether accepted.
    fn fenced_write(&self, cfg: &Config, name: &MutexName, client: ClientId, fence: Fence) -> bool {
        let mut world = self.world();
        world.sync();
        let (_, ours) = now_or_never(effect_write(world.store.inner(), cfg, name, client, fence));
        let theirs = now_or_never(world.reference.fenced_write(cfg, client, fence));
        if ours != theirs {
            world.differs(format!("fenced write of {fence}: store accepted {ours}, reference accepted {theirs}"));
        }
        if let Some(emulator) = &mut world.emulator
            && emulator.blocking(|e| e.fenced_write(cfg, client, fence)) != theirs
        {
            world.differs(format!("fenced write of {fence}: the emulator disagrees with the reference ({theirs})"));
        }
        theirs
    }
}

fn half_trip() -> tokio::time::Sleep {
    tokio::time::sleep(Duration::from_millis(RTT_MS / 2))
}

fn unavailable() -> StoreError {
    StoreError::new(StoreErrorKind::Unavailable, "injected: Spanner unavailable")
}

impl LeaseStore for Mirror {
    async fn transact(&self, cfg: &Config, name: &MutexName, request: &TxnRequest) -> Result<TxnReply, StoreError> {
        half_trip().await;
        let delay = {
            let mut world = self.world();
            let delay = world.delays.pop_front();
            if let Some(ms) = delay {
                world.disturbed(self.who);
                *world.delayed_ms.entry(self.who).or_default() += ms;
            }
            delay
        };
        if let Some(ms) = delay {
            // If its client stops waiting meanwhile, this future is dropped and the transaction never runs.
            tokio::time::sleep(Duration::from_millis(ms)).await;
            // The bounds that wait for calm count from the end of the delay.
            self.world().last_disturbance = Some(Instant::now());
        }
        let result = {
            let mut world = self.world();
            world.sync();
            world.calls += 1;
            world.ids[self.who].extend(request.client());
            let fate =
                if world.in_outage() { Fate::Unavailable } else { world.fates.pop_front().unwrap_or(Fate::AsDecided) };
            if fate != Fate::AsDecided {
                world.disturbed(self.who);
            }
            if let Some(fault) = injected_fault(request, fate) {
                world.store.inject(fault);
            }
            let result = now_or_never(world.store.transact(cfg, name, request));
            let theirs = now_or_never(world.reference.transact(cfg, request, fate));
            let ours = txn_event(result.clone());
            let refused = theirs == Event::TxnCommitted(TxnReply::NotHolder);
            if delay.is_some() && matches!(request, TxnRequest::Renew { .. }) && refused {
                world.delayed_renewals_refused += 1;
            }
            if ours != theirs {
                world.differs(format!("{request:?} with fate {fate:?}: store {ours:?}, reference {theirs:?}"));
            }
            world.compare_rows(name, &format!("{request:?}"));
            world.mirror_transact(cfg, request, fate, &theirs);
            result
        };
        half_trip().await;
        result
    }

    /// Not mirrored: the rig's sections write through [`Mirror::fenced_write`], which is.
    async fn fenced(&self, cfg: &Config, name: &MutexName, id: WriteId, work: FencedWork) -> FencedAnswer {
        let store = self.world().store.clone();
        store.fenced(cfg, name, id, work).await
    }

    async fn read(&self, name: &MutexName) -> Result<RowRead, StoreError> {
        half_trip().await;
        let result = {
            let mut world = self.world();
            world.sync();
            world.calls += 1;
            if world.in_outage() || world.failing_reads > 0 {
                world.failing_reads = world.failing_reads.saturating_sub(1);
                world.disturbed(self.who);
                Err(unavailable())
            } else {
                let result = now_or_never(world.store.read(name));
                let (ours, theirs) = (read_event(result.clone()), now_or_never(world.reference.read()));
                if ours != theirs {
                    world.differs(format!("read: store {ours:?}, reference {theirs:?}"));
                }
                if let Some(emulator) = &mut world.emulator {
                    let (label, expected) = (event_label(&emulator.blocking(Backend::read)), event_label(&theirs));
                    if label != expected {
                        world.differs(format!("read: emulator {label}, reference {expected}"));
                    }
                }
                result
            }
        };
        half_trip().await;
        result
    }
}

/// What the user code of a run-once client is doing, as the harness sees it.
#[derive(Debug, Default)]
struct Slot {
    /// A need check waiting for the harness's answer.
    need: Option<oneshot::Sender<Result<bool, String>>>,
    /// A running section's controls.
    section: Option<mpsc::Sender<SectionAction>>,
    /// The fence of a section that returned completed.
    completed: Option<Fence>,
}

/// What the harness tells a running section to do.
#[derive(Debug)]
enum SectionAction {
    /// Report the lease as the section sees it: client, fence, deadline, lock-lost.
    Probe(oneshot::Sender<(ClientId, Fence, Instant, bool)>),
    /// Make the fenced write; reply whether it was accepted.
    Write(oneshot::Sender<bool>),
    /// Return: completed or failed.
    Return(bool),
}

/// A run-once client's user code: every answer comes from the harness.
struct UserCode {
    slot: Arc<Mutex<Slot>>,
    store: Mirror,
    cfg: Config,
    name: MutexName,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl CriticalSection for UserCode {
    async fn is_needed(&self) -> Result<bool, BoxError> {
        let (answer, answered) = oneshot::channel();
        lock(&self.slot).need = Some(answer);
        match answered.await {
            Ok(answer) => answer.map_err(BoxError::from),
            // The harness never drops an unanswered check; this run is being torn down.
            Err(_) => std::future::pending().await,
        }
    }

    async fn execute(&self, guard: &LeaseHandle) -> Result<(), BoxError> {
        let (controls, mut actions) = mpsc::channel(4);
        lock(&self.slot).section = Some(controls);
        let mut wrote = false;
        while let Some(action) = actions.recv().await {
            match action {
                SectionAction::Probe(reply) => {
                    let _ = reply.send((guard.client(), guard.fence(), guard.deadline(), guard.is_lock_lost()));
                }
                // One write per section: the effect happens once per execution.
                SectionAction::Write(reply) if !wrote => {
                    wrote = true;
                    let _ = reply.send(self.store.fenced_write(&self.cfg, &self.name, guard.client(), guard.fence()));
                }
                SectionAction::Write(_) => {}
                SectionAction::Return(completed) => {
                    let mut slot = lock(&self.slot);
                    slot.section = None;
                    slot.completed = completed.then(|| guard.fence());
                    return if completed { Ok(()) } else { Err("the section failed".into()) };
                }
            }
        }
        std::future::pending().await
    }
}

/// What a client's call returned.
#[derive(Debug)]
enum Returned {
    Run(Result<RunOutcome, RunError>),
    Lock(Result<Option<LockGuard>, RunError>),
    Release(Result<Fence, RunError>),
}

impl Returned {
    /// What kind of answer it is, for the tally.
    fn kind(&self) -> String {
        fn name(debug: String) -> String {
            debug.split([' ', '(', '{']).next().unwrap_or_default().to_owned()
        }
        let error = |e: &RunError| name(format!("{e:?}"));
        match self {
            Self::Run(Ok(outcome)) => format!("run: {}", name(format!("{outcome:?}"))),
            Self::Lock(Ok(Some(_))) => "lock: granted".into(),
            Self::Lock(Ok(None)) => "lock: not granted".into(),
            Self::Release(Ok(_)) => "release: released".into(),
            Self::Run(Err(e)) => format!("run: {}", error(e)),
            Self::Lock(Err(e)) => format!("lock: {}", error(e)),
            Self::Release(Err(e)) => format!("release: {}", error(e)),
        }
    }
}

/// One client process.
struct Client {
    /// The number of its current (or last) call.
    call_no: usize,
    run_once: bool,
    slot: Arc<Mutex<Slot>>,
    /// The call in progress.
    call: Option<JoinHandle<Returned>>,
    /// Since when the library (not user code) has had the call in hand, if it has.
    library_since: Option<Instant>,
    /// A held lock.
    guard: Option<LockGuard>,
    /// Its call is the release of its lock.
    releasing: bool,
    /// Its call's need check was answered with a failure.
    need_failed: bool,
    /// When its call's section last failed: the call then waits out its own backoff, whoever frees the row.
    section_failed_at: Option<Instant>,
}

/// What the generated cases reached, so a test can show they reach every path it claims to check.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Steps applied.
    pub steps: u64,
    /// Calls returned, by what they returned (`Executed`, `GaveUp`, `Released`, ...).
    pub returned: BTreeMap<String, u64>,
    /// Cancels whose bound was checked, by where the call was: `need check under the lease`, `section`,
    /// `holding the lock`, `releasing`, `acquiring` (with a lease of its own on the row: `acquiring, won`).
    pub cancels_checked: BTreeMap<&'static str, u64>,
    /// Checks of the unavailability bound with a call in the library's hands during an outage.
    pub unavailable_checked: u64,
    /// Checks of the hand-over bound with a waiter and a free row.
    pub hand_over_checked: u64,
    /// Store calls (transactions and reads) mirrored on the reference (and the emulator, if any).
    pub store_calls: u64,
    /// Delayed renewals the row refused (they ran after their lease was taken over).
    pub delayed_renewals_refused: u64,
}

impl Tally {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Self) {
        self.steps += other.steps;
        for (kind, n) in &other.returned {
            *self.returned.entry(kind.clone()).or_default() += n;
        }
        for (place, n) in &other.cancels_checked {
            *self.cancels_checked.entry(place).or_default() += n;
        }
        self.unavailable_checked += other.unavailable_checked;
        self.hand_over_checked += other.hand_over_checked;
        self.store_calls += other.store_calls;
        self.delayed_renewals_refused += other.delayed_renewals_refused;
    }
}

/// The driver conformance harness for one case.
pub struct DriverHarness {
    cfg: Config,
    name: MutexName,
    /// Every call's mutex, as if each call were made by a process of its own (shut down at the end).
    mutexes: Vec<SpannerMutex>,
    bounds: Bounds,
    world: Arc<Mutex<World>>,
    clients: Vec<Client>,
    /// What the case reached.
    pub tally: Tally,
    /// What happened, for the failure report.
    pub log: Vec<String>,
}

/// Lets every task run until all wait for time or for each other (virtual time does not move).
async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

impl DriverHarness {
    /// `clients` clients of one kind (run-once, or lock) on a fresh store, with protocol `cfg`.
    pub fn new(cfg: Config, clients: usize, run_once: bool) -> Self {
        Self::mirrored(cfg, clients, run_once, None)
    }

    /// [`Self::new`], with every store call also run on the emulator and compared.
    pub fn with_emulator(cfg: Config, clients: usize, run_once: bool, emulator: EmulatorMirror) -> Self {
        Self::mirrored(cfg, clients, run_once, Some(emulator))
    }

    fn mirrored(cfg: Config, clients: usize, run_once: bool, emulator: Option<EmulatorMirror>) -> Self {
        let epoch = Instant::now();
        let world = World {
            store: FaultyStore::new(MemoryStore::with_manual_clock(START)),
            reference: Reference::default(),
            server_ms: 0,
            epoch,
            fates: VecDeque::new(),
            failing_reads: 0,
            delays: VecDeque::new(),
            delayed_ms: BTreeMap::new(),
            delayed_renewals_refused: 0,
            outage_until: None,
            outage_since: None,
            faults: 0,
            faulted_calls: BTreeSet::new(),
            ids: Vec::new(),
            last_disturbance: None,
            mismatch: None,
            emulator,
            calls: 0,
        };
        let world = Arc::new(Mutex::new(world));
        let name = MutexName::new("conformance").expect("valid");
        let clients = (0..clients)
            .map(|_| Client {
                call_no: usize::MAX,
                run_once,
                slot: Arc::default(),
                call: None,
                library_since: None,
                section_failed_at: None,
                guard: None,
                releasing: false,
                need_failed: false,
            })
            .collect();
        Self {
            bounds: Bounds::of(&cfg),
            cfg,
            name,
            world,
            clients,
            mutexes: Vec::new(),
            tally: Tally::default(),
            log: Vec::new(),
        }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    /// Applies `step`, then checks every property.
    pub async fn apply(&mut self, step: &Step) -> Result<(), String> {
        self.tally.steps += 1;
        let at_ms = self.world().epoch.elapsed().as_millis();
        self.log.push(format!("{at_ms} ms: {step:?}"));
        match *step {
            Step::Advance { ms } => self.advance(ms).await?,
            Step::User { client, choice } => self.user(client, choice).await,
            Step::Cancel { client } => self.cancel(client).await?,
            Step::Fault { fate } => self.world().fates.push_back(fate),
            Step::FailRead => self.world().failing_reads += 1,
            Step::Delay { ms } => self.world().delays.push_back(ms),
            Step::Outage { ms } => {
                let mut world = self.world();
                let now = Instant::now();
                if world.down_since().is_none() {
                    world.outage_since = Some(now);
                }
                world.outage_until = Some(world.outage_until.unwrap_or(now).max(now + Duration::from_millis(ms)));
            }
        }
        settle().await;
        self.check().await
    }

    /// Advances virtual time in steps of [`CHECK_EVERY_MS`], checking between them.
    async fn advance(&mut self, ms: u64) -> Result<(), String> {
        let mut left = ms;
        while left > 0 {
            let step = left.min(CHECK_EVERY_MS);
            tokio::time::sleep(Duration::from_millis(step)).await;
            left -= step;
            settle().await;
            self.check().await?;
        }
        Ok(())
    }

    async fn user(&mut self, c: usize, choice: u8) {
        settle().await;
        let client = &mut self.clients[c];
        let need = lock(&client.slot).need.take_if(|answer| !answer.is_closed());
        let section = lock(&client.slot).section.clone().filter(|controls| !controls.is_closed());
        if let Some(need) = need {
            let answer = if choice % 8 == 7 {
                client.need_failed = true;
                Err("the need check failed".to_owned())
            } else {
                Ok(now_or_never(lock(&self.world).reference.needed()))
            };
            client.library_since = Some(Instant::now());
            let _ = need.send(answer);
        } else if let Some(controls) = section {
            let action = match choice % 3 {
                0 => SectionAction::Write(oneshot::channel().0),
                1 => SectionAction::Return(true),
                _ => SectionAction::Return(false),
            };
            if matches!(action, SectionAction::Return(_)) {
                client.library_since = Some(Instant::now());
            }
            if matches!(action, SectionAction::Return(false)) {
                client.section_failed_at = Some(Instant::now());
            }
            let _ = controls.send(action).await;
        } else if let Some(guard) = client.guard.take() {
            client.releasing = true;
            client.library_since = Some(Instant::now());
            client.call = Some(tokio::spawn(async move { Returned::Release(guard.release().await) }));
        } else if client.call.is_none() {
            client.releasing = false;
            client.need_failed = false;
            client.section_failed_at = None;
            let call_no = self.mutexes.len();
            lock(&self.world).ids.push(BTreeSet::new());
            let mirror = Mirror { world: Arc::clone(&self.world), who: call_no };
            let mutex =
                SpannerMutex::on_store(mirror.clone(), self.cfg.clone(), self.name.clone(), format!("client {c}"));
            self.mutexes.push(mutex.clone());
            client.call_no = call_no;
            client.library_since = Some(Instant::now());
            client.call = Some(if client.run_once {
                let code = UserCode {
                    slot: Arc::clone(&client.slot),
                    store: mirror,
                    cfg: mutex.config().clone(),
                    name: mutex.name().clone(),
                };
                tokio::spawn(async move { Returned::Run(mutex.run(&code).await) })
            } else {
                match choice % 3 {
                    0 => tokio::spawn(async move { Returned::Lock(mutex.acquire().await.map(Some)) }),
                    1 => tokio::spawn(async move { Returned::Lock(mutex.try_acquire().await) }),
                    _ => {
                        let timeout = Duration::from_millis(u64::from(choice) * 10);
                        tokio::spawn(async move { Returned::Lock(mutex.acquire_timeout(timeout).await) })
                    }
                }
            });
        }
    }

    async fn cancel(&mut self, c: usize) -> Result<(), String> {
        // A call that already returned is judged, not cancelled.
        settle().await;
        self.collect().await?;
        // The bound is promised when nothing fails: no fault queued, none in flight (one reached a call within
        // the last round trip), none during the bound.
        let (clean, faults) = {
            let world = self.world();
            let recent = world.last_disturbance.is_some_and(|d| d + Duration::from_millis(RTT_MS) >= Instant::now());
            // A delayed transaction of this call, in flight or done, took longer than its round trip.
            let delayed = world.delayed_ms.contains_key(&self.clients[c].call_no);
            let quiet = world.fates.is_empty() && world.failing_reads == 0 && world.delays.is_empty() && !delayed;
            (quiet && !world.in_outage() && !recent, world.faults)
        };
        let client = &mut self.clients[c];
        if client.call.is_none() && client.guard.is_none() {
            return Ok(());
        }
        let call_no = client.call_no;
        let won = {
            let world = lock(&self.world);
            let row = world.reference.observed().row;
            row.is_some_and(|r| {
                r.status == Status::Started && r.remaining_us > 0 && world.ids[call_no].contains(&r.holder)
            })
        };
        let place = {
            let slot = lock(&client.slot);
            if slot.need.as_ref().is_some_and(|n| !n.is_closed()) {
                if won { "need check under the lease" } else { "need check" }
            } else if slot.section.as_ref().is_some_and(|s| !s.is_closed()) {
                "section"
            } else if client.guard.is_some() {
                "holding the lock"
            } else if client.releasing {
                "releasing"
            } else if won {
                "acquiring, won"
            } else {
                "acquiring"
            }
        };
        if let Some(call) = client.call.take() {
            call.abort();
        }
        client.guard = None;
        client.library_since = None;
        *lock(&client.slot) = Slot::default();
        if !clean {
            return Ok(());
        }
        // Nothing can fail the release: within the bound, no lease of this client's is left on the row.
        tokio::time::sleep(CANCEL_BOUND).await;
        settle().await;
        self.check().await?;
        let world = lock(&self.world);
        if world.faults != faults {
            return Ok(());
        }
        *self.tally.cancels_checked.entry(place).or_default() += 1;
        if let Some(row) = world.reference.observed().row
            && row.status == Status::Started
            && row.remaining_us > 0
            && world.ids[call_no].contains(&row.holder)
        {
            return Err(format!("client {c} was cancelled {CANCEL_BOUND:?} ago and still holds the lease: {row:?}"));
        }
        Ok(())
    }

    /// Tears the case down: every caller goes away, every mutex shuts down (within a virtual minute: no hang).
    pub async fn finish(mut self) -> Result<(), String> {
        for c in 0..self.clients.len() {
            if let Some(call) = self.clients[c].call.take() {
                call.abort();
            }
            self.clients[c].guard = None;
        }
        for mutex in &self.mutexes {
            tokio::time::timeout(Duration::from_secs(60), mutex.shutdown())
                .await
                .map_err(|_| "shutdown did not finish within a virtual minute".to_owned())?;
        }
        self.check().await
    }

    /// Collects finished calls and judges what they returned.
    async fn collect(&mut self) -> Result<(), String> {
        for c in 0..self.clients.len() {
            if !self.clients[c].call.as_ref().is_some_and(JoinHandle::is_finished) {
                continue;
            }
            let returned = self.clients[c].call.take().expect("checked").await.map_err(|e| e.to_string())?;
            self.clients[c].library_since = None;
            self.log.push(format!("client {c} returned {returned:?}"));
            *self.tally.returned.entry(returned.kind()).or_default() += 1;
            self.judge(c, returned)?;
            *lock(&self.clients[c].slot) = Slot::default();
        }
        Ok(())
    }

    /// Whether what client `c` was told is true of the reference.
    fn judge(&mut self, c: usize, returned: Returned) -> Result<(), String> {
        let run_once = matches!(returned, Returned::Run(_));
        let world = self.world();
        let observed = world.reference.observed();
        let ids = &world.ids[self.clients[c].call_no];
        let row = observed.row.as_ref();
        let error = match returned {
            // The section completed under that fence (whether DONE was confirmed is not part of the claim).
            Returned::Run(Ok(RunOutcome::Executed { fence })) => {
                let completed = lock(&self.clients[c].slot).completed;
                return if completed == Some(fence) {
                    Ok(())
                } else {
                    Err(format!("client {c}: Executed with {fence}, but its section completed with {completed:?}"))
                };
            }
            Returned::Run(Ok(RunOutcome::DoneByOther { holder, fence, .. })) => {
                let done = row.is_some_and(|r| r.status == Status::Done && r.holder == holder && r.fence == fence);
                // (Done by another call; possibly an earlier, cancelled one of this process.)
                return if done {
                    Ok(())
                } else {
                    Err(format!("client {c}: DoneByOther {holder} {fence}, row {row:?}"))
                };
            }
            Returned::Run(Ok(RunOutcome::NotNeeded)) => {
                return if observed.effects.is_empty() {
                    Err(format!("client {c}: NotNeeded, but no effect exists"))
                } else {
                    Ok(())
                };
            }
            Returned::Lock(Ok(Some(guard))) => {
                drop(world);
                self.clients[c].guard = Some(guard);
                return Ok(());
            }
            Returned::Lock(Ok(None)) => return Ok(()),
            Returned::Release(Ok(fence)) => {
                let held = row.is_some_and(|r| {
                    r.status == Status::Started && r.remaining_us > 0 && ids.contains(&r.holder) && r.fence == fence
                });
                return if held {
                    Err(format!("client {c}: release of {fence} confirmed, row {row:?}"))
                } else {
                    Ok(())
                };
            }
            Returned::Run(Err(e)) | Returned::Lock(Err(e)) | Returned::Release(Err(e)) => e,
        };
        // Only a fault that reached this call explains `Unavailable`; only a failed check of its own, `NeedCheck`.
        let faulted = world.faulted_calls.contains(&self.clients[c].call_no);
        let explained = match &error {
            RunError::Unavailable(_) | RunError::ReleaseUnconfirmed { .. } => faulted,
            RunError::NeedCheck(_) => self.clients[c].need_failed,
            // A lock call waits without limit (`try_acquire` answers `None`, never `GaveUp`).
            RunError::GaveUp { .. } => run_once,
            RunError::LeaseLost { .. } => true,
            // Cancelled, Rejected, Driver, and any kind added later.
            _ => false,
        };
        if explained { Ok(()) } else { Err(format!("client {c}: unexplained error {error:?}")) }
    }

    /// Every property after a step.
    async fn check(&mut self) -> Result<(), String> {
        {
            let mut world = lock(&self.world);
            world.sync();
            if let Some(mismatch) = world.mismatch.take() {
                return Err(mismatch);
            }
            self.tally.store_calls = world.calls;
            self.tally.delayed_renewals_refused = world.delayed_renewals_refused;
        }
        self.collect().await?;
        self.safety().await?;
        self.timing()
    }

    /// What each client relies on now, as its user code sees it: `(client, holder id, fence)`.
    async fn reliant(&mut self) -> Vec<(usize, ClientId, Fence)> {
        let now = Instant::now();
        let mut reliant = Vec::new();
        for (c, client) in self.clients.iter().enumerate() {
            if let Some(guard) = &client.guard
                && !guard.is_lock_lost()
                && now < guard.deadline()
            {
                reliant.push((c, guard.client(), guard.fence()));
            }
            let section = lock(&client.slot).section.clone();
            if let Some(controls) = section {
                let (reply, seen) = oneshot::channel();
                if controls.send(SectionAction::Probe(reply)).await.is_ok() {
                    settle().await;
                    if let Ok((id, fence, deadline, lost)) = seen.await
                        && !lost
                        && now < deadline
                    {
                        reliant.push((c, id, fence));
                    }
                }
            }
        }
        reliant
    }

    async fn safety(&mut self) -> Result<(), String> {
        let reliant = self.reliant().await;
        let world = self.world();
        let observed = world.reference.observed();
        if self.clients.first().is_some_and(|c| c.run_once) && observed.effects.len() > 1 {
            return Err(format!("the effect was applied twice: {:?}", observed.effects));
        }
        if world.reference.stale_write_accepted {
            return Err("a write with a superseded fence was accepted".into());
        }
        if reliant.len() > 1 {
            return Err(format!("more than one client relies on the lease: {reliant:?}"));
        }
        for &(c, id, fence) in &reliant {
            let held = observed.row.as_ref().is_some_and(|r| {
                r.status == Status::Started && r.holder == id && r.fence == fence && r.remaining_us > 0
            });
            if !held {
                return Err(format!("client {c} relies on {fence}, but the row is {:?}", observed.row));
            }
        }
        Ok(())
    }

    /// The bounds on unavailability and hand-over, in virtual time.
    fn timing(&mut self) -> Result<(), String> {
        let world = lock(&self.world);
        let now = Instant::now();
        // Since when the library has had each client's call in hand (not waiting for user code).
        let in_library = |client: &Client| {
            let slot = lock(&client.slot);
            let user_turn = slot.need.as_ref().is_some_and(|n| !n.is_closed())
                || slot.section.as_ref().is_some_and(|s| !s.is_closed());
            client.call.as_ref().and(client.library_since).filter(|_| !user_turn)
        };
        let late = |start: Instant, bound_ms: u64| now.duration_since(start) > Duration::from_millis(bound_ms);
        if let Some(down) = world.down_since() {
            for (c, client) in self.clients.iter().enumerate() {
                let Some(since) = in_library(client) else { continue };
                let bound_ms = self.bounds.unavailable_ms + world.delayed_ms_of(client.call_no);
                if !late(since.max(down), bound_ms / 2) {
                    continue;
                }
                // Counted once the call is at least half way to its bound: the check could fail.
                self.tally.unavailable_checked += 1;
                if late(since.max(down), bound_ms) {
                    return Err(format!(
                        "client {c}: Spanner has been down for {:?} of its call, which is still out (bound {} ms)",
                        now.duration_since(since.max(down)),
                        bound_ms
                    ));
                }
            }
        }
        // A free row (released, done, failed or expired) is taken or reported by a waiter within the bound,
        // counted from when it became free, the waiter began waiting, or a fault's effects ended (a gap and a
        // resolution later), whichever is last.
        let Some(row) = world.reference.observed().row else { return Ok(()) };
        let free_for_us = if row.status == Status::Started { -row.remaining_us } else { row.age_us };
        let Ok(free_for_us) = u64::try_from(free_for_us) else { return Ok(()) };
        if free_for_us == 0 {
            return Ok(());
        }
        let free_since = now - Duration::from_micros(free_for_us);
        let calm_since = world.last_disturbance.map(|d| d + Duration::from_millis(self.bounds.calm_ms));
        for (c, client) in self.clients.iter().enumerate() {
            // The call that freed the row (a failed section) waits out its own backoff; it is not a waiter.
            if world.ids.get(client.call_no).is_some_and(|ids| ids.contains(&row.holder)) {
                continue;
            }
            if let Some(since) = in_library(client) {
                // A call whose own section failed sleeps its backoff before it looks at the row again (found by
                // this test: it counted a row freed by another call during that backoff against the waiter).
                let backoff_over = client.section_failed_at.map(|f| f + Duration::from_millis(self.bounds.calm_ms));
                let start =
                    free_since.max(since).max(calm_since.unwrap_or(free_since)).max(backoff_over.unwrap_or(free_since));
                let bound_ms = self.bounds.hand_over_ms + world.delayed_ms_of(client.call_no);
                if start >= now || !late(start, bound_ms / 2) {
                    continue;
                }
                // Counted once the waiter is at least half way to its bound: the check could fail.
                self.tally.hand_over_checked += 1;
                if late(start, bound_ms) {
                    return Err(format!(
                        "client {c} still waits {:?} after the row was free (bound {} ms): {row:?}",
                        now.duration_since(start),
                        bound_ms
                    ));
                }
            }
        }
        Ok(())
    }
}
