//! The step harness: K client machines and one backend, driven one operation at a time. The same harness runs
//! over the model's reference semantics, the real client's in-memory store and the real client's Spanner store,
//! so the three can be compared after every step.

use crate::coverage::{Transition, event_label};
use spanner_mutex_model::txn::TxnRequest;
use spanner_mutex_model::world::{Executor, FencedOutcome, Work};
use spanner_mutex_model::{
    ClientId, ClientMachine, Command, Config, Event, Fence, LocalInstant, OperatorAction, Outcome, SectionResult,
    Status,
};
use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;

/// The most clients a case has.
pub const MAX_CLIENTS: usize = 3;

/// What becomes of a transaction when it reaches the store: the world kernel's fates. A read meets only
/// [`Fate::AsDecided`] (it answers), and no store here holds a commit back to land late
/// ([`Fate::UnknownLate`] is the checker's and the simulator's).
pub use spanner_mutex_model::world::CommitFate as Fate;

/// One generated operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Server time and every client's clock advance.
    Advance {
        /// By this much.
        ms: u64,
    },
    /// The client's transaction or read in flight reaches the store and is answered.
    Deliver {
        /// Which client.
        client: usize,
        /// With what fate (reads: always `Commit`).
        fate: Fate,
    },
    /// The client's due timer fires (renewal, retry, local deadline).
    Timer {
        /// Which client.
        client: usize,
    },
    /// An operator force-releases the lease or resets a DONE row (`spanner-mutex release` / `reset`), in a
    /// transaction of its own; on a row it does not apply to, nothing is written.
    Operator {
        /// Which control.
        action: OperatorAction,
    },
    /// The client's section makes its fenced write.
    Write {
        /// Which client.
        client: usize,
    },
    /// The client's section returns what its write achieved (completed if accepted, failed if refused).
    Return {
        /// Which client.
        client: usize,
    },
    /// The client's section fails before writing.
    Fail {
        /// Which client.
        client: usize,
    },
    /// The client's process restarts (crashing if it was running) and starts a new run with a new id. For a
    /// leader whose term ended, this is its next campaign.
    Restart {
        /// Which client.
        client: usize,
    },
    /// The client's user cancels the run (drops the future): its section is dropped, a transaction in flight
    /// still answers the machine.
    Cancel {
        /// Which client.
        client: usize,
    },
}

/// What a client has in flight towards the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InFlight {
    /// A read-write transaction.
    Txn(TxnRequest),
    /// A single-use read.
    Read,
}

/// Where a client's critical section is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Not running.
    Idle,
    /// Running under this fence, write not yet made.
    Running {
        /// The fence.
        fence: Fence,
    },
    /// Its fenced write was made.
    Wrote {
        /// Whether the resource accepted it.
        accepted: bool,
    },
}

/// One client process.
#[derive(Clone, Debug)]
pub struct Client {
    /// Its current run's machine.
    pub machine: ClientMachine,
    /// Runs started before this one.
    pub incarnation: u32,
    /// Its operation in flight.
    pub in_flight: Option<InFlight>,
    /// Its section.
    pub section: Stage,
    /// Whether the lock-lost signal was given in this run.
    pub lock_lost: bool,
    /// Whether its user cancelled this run.
    pub cancelled: bool,
}

/// The lease row as compared: absolute times are replaced by times relative to the server's now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowView {
    /// Status.
    pub status: Status,
    /// Holder.
    pub holder: ClientId,
    /// Fence.
    pub fence: Fence,
    /// Attempt counter.
    pub attempt: u32,
    /// Last error text.
    pub last_error: Option<String>,
    /// The record of fenced writes landed under `fence`.
    pub fenced_writes: u32,
    /// `expires_at - now`, microseconds (negative once expired).
    pub remaining_us: i64,
    /// `now - updated_at`, microseconds.
    pub age_us: i64,
}

/// What a backend holds: its row and its protected resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The lease row.
    pub row: Option<RowView>,
    /// Accepted effects, `(writer, fence)`, sorted.
    pub effects: Vec<(ClientId, Fence)>,
}

/// A store with a protected resource, as the harness drives it.
pub trait Backend {
    /// Runs `request` through the store's read-write transaction with `fate`; the event the machine gets.
    fn transact(&mut self, cfg: &Config, request: &TxnRequest, fate: Fate) -> impl Future<Output = Event>;
    /// A single-use read; the event the machine gets.
    fn read(&mut self) -> impl Future<Output = Event>;
    /// The section's fenced write of its effect; whether it was accepted.
    fn fenced_write(&mut self, cfg: &Config, client: ClientId, fence: Fence) -> impl Future<Output = bool>;
    /// The user's need check: no effect yet.
    fn needed(&mut self) -> impl Future<Output = bool>;
    /// Advances server time.
    fn advance(&mut self, ms: u64) -> impl Future<Output = ()>;
    /// The row and the resource now.
    fn observe(&mut self) -> impl Future<Output = Observed>;
}

/// The harness over one backend.
#[derive(Clone, Debug)]
pub struct Side<B> {
    /// The protocol configuration.
    pub cfg: Config,
    /// The backend.
    pub backend: B,
    /// Virtual time, every client's monotonic clock.
    pub now_ms: u64,
    /// The clients.
    pub clients: Vec<Client>,
    /// Whether the clients are lock clients (a leader is a lock client that campaigns again after its term:
    /// at the machine, a restart), not run-once ones: a grant starts the user's work, which writes under the
    /// lease and then releases instead of finishing a section.
    pub lock_mode: bool,
    /// The highest fence a lock client was granted.
    pub max_granted: Option<Fence>,
    /// A lock client was granted a fence not above an earlier grant's.
    pub terms_regressed: bool,
    /// Every machine transition taken.
    pub transitions: BTreeSet<Transition>,
}

/// The id of a client slot's run: the same on every backend, so rows compare as they are.
pub fn client_id(slot: usize, incarnation: u32) -> ClientId {
    ClientId::from_u128(((slot as u128 + 1) << 32) | u128::from(incarnation))
}

/// Why an operation cannot be applied in the current state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotApplicable(pub &'static str);

impl fmt::Display for NotApplicable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl<B: Backend> Side<B> {
    /// `clients` machines on `backend` (lock clients if `lock_mode`, else run-once ones), each started.
    pub async fn new(cfg: Config, backend: B, clients: usize, lock_mode: bool) -> Self {
        let mut side = Self {
            cfg,
            backend,
            now_ms: 0,
            clients: Vec::new(),
            lock_mode,
            max_granted: None,
            terms_regressed: false,
            transitions: BTreeSet::new(),
        };
        for slot in 0..clients {
            let machine = side.machine(slot, 0);
            side.clients.push(Client {
                machine,
                incarnation: 0,
                in_flight: None,
                section: Stage::Idle,
                lock_lost: false,
                cancelled: false,
            });
            side.start(slot).await;
        }
        side
    }

    /// A new machine for run `incarnation` of client `slot`. A lock client is called as production calls it:
    /// `try_acquire` (no retries) when the configuration allows none, else `acquire` or `campaign` (no limit).
    fn machine(&self, slot: usize, incarnation: u32) -> ClientMachine {
        let (id, name) = (client_id(slot, incarnation), format!("client {slot}"));
        if self.lock_mode {
            ClientMachine::lock(id, name, if self.cfg.max_retries() == 0 { 0 } else { u32::MAX })
        } else {
            ClientMachine::run_once(id, name, &self.cfg)
        }
    }

    fn local_now(&self) -> LocalInstant {
        LocalInstant::from_ms(self.now_ms)
    }

    /// Whether `op` can be applied now (the generator's precondition).
    pub fn applicable(&self, op: &Op) -> Result<(), NotApplicable> {
        let client = |c: usize| self.clients.get(c).ok_or(NotApplicable("no such client"));
        match *op {
            Op::Advance { ms } => (ms > 0).then_some(()).ok_or(NotApplicable("advance by zero")),
            Op::Deliver { client: c, fate } => match &client(c)?.in_flight {
                None => Err(NotApplicable("nothing in flight")),
                Some(InFlight::Read) if fate != Fate::AsDecided => Err(NotApplicable("reads are not faulted")),
                Some(_) if fate == Fate::UnknownLate => Err(NotApplicable("the stores do not hold commits back")),
                Some(_) => Ok(()),
            },
            Op::Timer { client: c } => {
                let due = client(c)?.machine.poll_timeout().is_some_and(|at| at <= self.local_now());
                due.then_some(()).ok_or(NotApplicable("no timer due"))
            }
            Op::Fail { .. } if self.lock_mode => Err(NotApplicable("a lock holder's work releases; it does not fail")),
            Op::Write { client: c } | Op::Fail { client: c } => match client(c)?.section {
                Stage::Running { .. } => Ok(()),
                _ => Err(NotApplicable("no section running")),
            },
            Op::Return { client: c } => match client(c)?.section {
                Stage::Wrote { .. } => Ok(()),
                _ => Err(NotApplicable("no section has written")),
            },
            Op::Restart { client: c } => client(c).map(|_| ()),
            Op::Operator { .. } => Ok(()),
            Op::Cancel { client: c } => {
                let client = client(c)?;
                if client.cancelled {
                    Err(NotApplicable("already cancelled"))
                } else if client.machine.outcome().is_some() {
                    Err(NotApplicable("the run has finished"))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Applies `op`.
    pub async fn apply(&mut self, op: &Op) -> Result<(), NotApplicable> {
        self.applicable(op)?;
        match *op {
            Op::Advance { ms } => {
                self.now_ms += ms;
                self.backend.advance(ms).await;
            }
            Op::Operator { action } => {
                // The operator reads the row's fence first, as `spanner-mutex status` shows it.
                let Event::RowRead { row: Some(row), .. } = self.backend.read().await else { return Ok(()) };
                let request = TxnRequest::Operator {
                    action,
                    fence: row.fence,
                    by: "operator".into(),
                    reason: "conformance".into(),
                };
                // What the operator is told is not compared: the rows and the clients after it are.
                self.backend.transact(&self.cfg, &request, Fate::AsDecided).await;
            }
            Op::Deliver { client: c, fate } => {
                let event = match self.clients[c].in_flight.take().expect("checked applicable") {
                    InFlight::Txn(request) => self.backend.transact(&self.cfg, &request, fate).await,
                    InFlight::Read => self.backend.read().await,
                };
                self.feed(c, event).await;
            }
            Op::Timer { client: c } => {
                let from = self.clients[c].machine.phase().name();
                let now = self.local_now();
                let command = self.clients[c].machine.handle_timeout(&self.cfg, now);
                self.transitions.insert(Transition::new(
                    from,
                    "Timeout".into(),
                    self.clients[c].machine.phase().name(),
                ));
                self.execute(c, command).await;
            }
            Op::Write { client: c } => {
                let Stage::Running { fence } = self.clients[c].section else { unreachable!("checked applicable") };
                let id = self.clients[c].machine.id();
                let accepted = self.backend.fenced_write(&self.cfg, id, fence).await;
                self.clients[c].section = Stage::Wrote { accepted };
            }
            Op::Return { client: c } => {
                let Stage::Wrote { accepted } = self.clients[c].section else { unreachable!("checked applicable") };
                self.clients[c].section = Stage::Idle;
                let written = if accepted { FencedOutcome::Accepted } else { FencedOutcome::Rejected };
                let event = if self.lock_mode {
                    Event::ReleaseRequested
                } else {
                    Event::SectionFinished(written.section_result())
                };
                self.feed(c, event).await;
            }
            Op::Fail { client: c } => {
                self.clients[c].section = Stage::Idle;
                self.feed(c, Event::SectionFinished(SectionResult::Failed { error: "section failed".into() })).await;
            }
            Op::Restart { client: c } => {
                let client = &mut self.clients[c];
                client.incarnation += 1;
                let incarnation = client.incarnation;
                let machine = self.machine(c, incarnation);
                let client = &mut self.clients[c];
                client.machine = machine;
                client.in_flight = None;
                client.section = Stage::Idle;
                client.lock_lost = false;
                client.cancelled = false;
                self.start(c).await;
            }
            Op::Cancel { client: c } => {
                self.clients[c].cancelled = true;
                self.clients[c].section = Stage::Idle;
                self.feed(c, Event::Cancel).await;
            }
        }
        Ok(())
    }

    async fn start(&mut self, c: usize) {
        let now = self.local_now();
        let command = self.clients[c].machine.start(now);
        self.transitions.insert(Transition::new("NotStarted", "Start".into(), self.clients[c].machine.phase().name()));
        self.execute(c, command).await;
    }

    async fn feed(&mut self, c: usize, event: Event) {
        let label = event_label(&event);
        let from = self.clients[c].machine.phase().name();
        let now = self.local_now();
        match self.clients[c].machine.handle(&self.cfg, now, event) {
            Ok(command) => {
                self.transitions.insert(Transition::new(from, label, self.clients[c].machine.phase().name()));
                self.execute(c, command).await;
            }
            Err(unexpected) => panic!("the harness broke the driver contract: {unexpected}"),
        }
    }

    /// Executes commands through the world kernel; need checks answer at once, I/O waits for a `Deliver`.
    async fn execute(&mut self, c: usize, mut command: Option<Command>) {
        loop {
            let mut executor = SideExecutor { side: self, need_asked: false };
            spanner_mutex_model::world::execute(&mut executor, c, command.take());
            if !executor.need_asked {
                return;
            }
            let needed = self.backend.needed().await;
            let event = Event::NeedAnswered { needed };
            let (label, from) = (event_label(&event), self.clients[c].machine.phase().name());
            let now = self.local_now();
            command = self.clients[c].machine.handle(&self.cfg, now, event).expect("need is awaited");
            self.transitions.insert(Transition::new(from, label, self.clients[c].machine.phase().name()));
        }
    }

    /// The clients as compared.
    pub fn client_views(&self) -> Vec<ClientView> {
        self.clients
            .iter()
            .map(|c| ClientView {
                incarnation: c.incarnation,
                state: c.machine.phase().name(),
                outcome: c.machine.outcome().cloned(),
                lease: c.machine.lease().map(|l| (l.fence, l.lost)),
                in_flight: c.in_flight.clone(),
                section: c.section,
                lock_lost: c.lock_lost,
            })
            .collect()
    }

    /// Which clients rely on the lease now (for the exclusivity invariant).
    pub fn reliant(&self) -> Vec<(usize, Fence)> {
        let now = self.local_now();
        self.clients.iter().enumerate().filter_map(|(i, c)| c.machine.relies_on_lease_at(now).map(|f| (i, f))).collect()
    }
}

/// A client as compared across backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientView {
    /// Runs before this one.
    pub incarnation: u32,
    /// The machine's state.
    pub state: &'static str,
    /// Its outcome, once finished.
    pub outcome: Option<Outcome>,
    /// The lease it holds: fence and whether lock-lost was signalled.
    pub lease: Option<(Fence, bool)>,
    /// What it has in flight.
    pub in_flight: Option<InFlight>,
    /// Its section.
    pub section: Stage,
    /// Whether lock-lost was signalled in this run.
    pub lock_lost: bool,
}

/// Compares a backend's observation with the reference's; row times may differ by `slack_us`.
pub fn compare(reference: &Observed, other: &Observed, slack_us: i64) -> Result<(), String> {
    if reference.effects != other.effects {
        return Err(format!(
            "protected resource differs: reference {:?}, backend {:?}",
            reference.effects, other.effects
        ));
    }
    match (&reference.row, &other.row) {
        (None, None) => Ok(()),
        (Some(r), Some(o)) => {
            let same_facts = (r.status, r.holder, r.fence, r.attempt, &r.last_error, r.fenced_writes)
                == (o.status, o.holder, o.fence, o.attempt, &o.last_error, o.fenced_writes);
            let close = (r.remaining_us - o.remaining_us).abs() <= slack_us && (r.age_us - o.age_us).abs() <= slack_us;
            if same_facts && close {
                Ok(())
            } else {
                Err(format!("row differs:\n  reference {r:?}\n  backend   {o:?}"))
            }
        }
        (r, o) => Err(format!("row differs: reference {r:?}, backend {o:?}")),
    }
}

/// One side's world as the kernel's [`Executor`]. The backend's need check is awaited, so a check only marks that it
/// was asked, and [`Side::execute`] answers it.
struct SideExecutor<'a, B> {
    side: &'a mut Side<B>,
    need_asked: bool,
}

impl<B: Backend> Executor for SideExecutor<'_, B> {
    fn grants_locks(&self, _c: usize) -> bool {
        self.side.lock_mode
    }

    fn check_need(&mut self, _c: usize) -> Option<Command> {
        self.need_asked = true;
        None
    }

    fn run_txn(&mut self, c: usize, request: TxnRequest) -> Option<Command> {
        self.side.clients[c].in_flight = Some(InFlight::Txn(request));
        None
    }

    fn read_row(&mut self, c: usize) -> Option<Command> {
        self.side.clients[c].in_flight = Some(InFlight::Read);
        None
    }

    // A lock holder's work is the section's counterpart: it writes under the lease, then releases.
    fn start_work(&mut self, c: usize, work: Work, granted: bool) -> Option<Command> {
        let side = &mut *self.side;
        if granted {
            side.terms_regressed |= side.max_granted.is_some_and(|max| work.fence <= max);
            side.max_granted = side.max_granted.max(Some(work.fence));
        }
        side.clients[c].section = Stage::Running { fence: work.fence };
        None
    }

    fn lock_lost(&mut self, c: usize, _fence: Fence) -> Option<Command> {
        self.side.clients[c].lock_lost = true;
        None
    }

    fn finish(&mut self, _c: usize, _outcome: Outcome) -> Option<Command> {
        None
    }

    fn contract_broken(&mut self, _c: usize, what: &'static str) {
        panic!("the machine broke the driver contract: {what}");
    }
}
