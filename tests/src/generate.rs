//! The operation generator: a proptest-state-machine reference machine whose state is the reference harness
//! itself, so only operations valid in the current state are generated (and kept while shrinking).

use crate::harness::{Fate, InFlight, Op, Side};
use crate::now_or_never;
use crate::reference::Reference;
use proptest::prelude::*;
use proptest::strategy::Union;
use proptest_state_machine::ReferenceStateMachine;
use spanner_mutex_model::txn::TxnRequest;
use spanner_mutex_model::{Config, ConfigParams, OperatorAction, Protocol};
use std::fmt::Debug;
use std::marker::PhantomData;

/// How a family of cases picks configurations and time steps.
pub trait Profile: Clone + Debug + 'static {
    /// Whether the clients are lock clients (see [`Side::lock_mode`]) whose users also cancel, not run-once ones.
    const LOCK_MODE: bool = false;
    /// Configurations to test.
    fn config() -> BoxedStrategy<Config>;
    /// Time steps worth taking from this state.
    fn advances(state: &Side<Reference>) -> BoxedStrategy<u64>;
}

/// Milliseconds until the earliest due timer of any client, if one is pending.
fn next_timer_ms(state: &Side<Reference>) -> Option<u64> {
    let now_us = state.now_ms * 1_000;
    state
        .clients
        .iter()
        .filter_map(|c| c.machine.poll_timeout())
        .map(|at| at.micros().saturating_sub(now_us).div_ceil(1_000))
        .filter(|&ms| ms > 0)
        .min()
}

/// Exact time (reference and in-memory store share a manual clock): configurations at their edges, and time
/// steps that land exactly on timers and expiries, one before and one after.
#[derive(Clone, Debug)]
pub struct ExactTime;

/// Edge-leaning protocol configurations of `protocol`, all valid by construction.
pub fn edge_config(protocol: Protocol) -> BoxedStrategy<Config> {
    let ttl = prop_oneof![Just(2u64), Just(3), 4..=40u64, Just(10_000)];
    ttl.prop_flat_map(|ttl_ms| (Just(ttl_ms), prop_oneof![Just(0u64), 0..=ttl_ms - 2, Just(ttl_ms - 2)]))
        .prop_flat_map(|(ttl_ms, margin_ms)| {
            let lease_ms = ttl_ms - margin_ms;
            (
                Just((ttl_ms, margin_ms)),
                prop_oneof![Just(1u64), 1..lease_ms, Just(lease_ms - 1)],
                prop_oneof![Just(1u64), 1..=ttl_ms],
                prop_oneof![Just(0u32), Just(1), Just(2), 3..=10u32],
            )
        })
        .prop_flat_map(|((ttl_ms, margin_ms), renew_ms, wait_ms, retries)| {
            let floor_ms = ttl_ms.max(u64::from(retries) * wait_ms);
            (
                Just((ttl_ms, margin_ms, renew_ms, wait_ms, retries)),
                prop_oneof![Just(wait_ms), wait_ms..=2 * ttl_ms.max(wait_ms)],
                prop_oneof![Just(floor_ms + 1), floor_ms + 1..=floor_ms + 4 * ttl_ms],
            )
        })
        .prop_flat_map(|(base, max_wait_ms, staleness_ms)| {
            let wait_ms = base.3;
            (
                Just((base, max_wait_ms, staleness_ms)),
                prop_oneof![3 => Just(0u64), 1 => 0..=max_wait_ms],
                // 0: an unavailable Spanner fails the run at once; otherwise it is retried for a few waits.
                prop_oneof![Just(0u64), 1..=4 * wait_ms],
                // Polls before the expiry a waiter read, or none that early.
                prop_oneof![1..=2 * max_wait_ms, Just(2 * max_wait_ms)],
            )
        })
        .prop_map(
            move |(
                ((ttl_ms, safety_margin_ms, renew_interval_ms, wait_ms, max_retries), max_wait_ms, staleness_ms),
                jitter_ms,
                unavailable_ms,
                poll_ms,
            )| {
                ConfigParams {
                    ttl_ms,
                    staleness_ms,
                    wait_ms,
                    max_wait_ms,
                    poll_ms,
                    max_retries,
                    renew_interval_ms,
                    safety_margin_ms,
                    // The conformance worlds have exact clocks; the machine reads only the margin.
                    clock_drift_ppm: 0,
                    server_uncertainty_ms: 0,
                    jitter_ms,
                    unavailable_ms,
                }
                .validate()
                .expect("generated configurations are valid by construction")
                .with_protocol(protocol)
            },
        )
        .boxed()
}

impl Profile for ExactTime {
    fn config() -> BoxedStrategy<Config> {
        edge_config(Protocol::Fenced)
    }

    fn advances(state: &Side<Reference>) -> BoxedStrategy<u64> {
        exact_advances(state)
    }
}

/// Profile `P` with lock clients whose users write under the lease and release, restart (a leader's next
/// campaign) and cancel.
#[derive(Clone, Debug)]
pub struct WithLockClients<P>(PhantomData<P>);

impl<P: Profile> Profile for WithLockClients<P> {
    const LOCK_MODE: bool = true;

    fn config() -> BoxedStrategy<Config> {
        P::config()
    }

    fn advances(state: &Side<Reference>) -> BoxedStrategy<u64> {
        P::advances(state)
    }
}

/// Lock clients in exact time.
pub type LockClients = WithLockClients<ExactTime>;
/// Lock clients on the emulator's time grid.
pub type LockGridTime = WithLockClients<GridTime>;

/// Time steps for exact-time profiles: random, or exactly onto the next timer, the row's expiry (and a
/// millisecond either side) or its staleness.
pub fn exact_advances(state: &Side<Reference>) -> BoxedStrategy<u64> {
    {
        let ttl_ms = state.cfg.ttl_ms();
        let mut exact = Vec::new();
        if let Some(ms) = next_timer_ms(state) {
            exact.push(ms);
        }
        if let Some(row) = &state.backend.observed().row {
            let remaining_ms = u64::try_from(row.remaining_us.max(0)).unwrap_or(0).div_ceil(1_000);
            exact.extend([remaining_ms, remaining_ms + 1, remaining_ms.saturating_sub(1)]);
            let stale_ms =
                u64::try_from((i64::try_from(state.cfg.staleness_ms() * 1_000).unwrap_or(0) - row.age_us).max(0))
                    .unwrap_or(0)
                    .div_ceil(1_000);
            exact.extend([stale_ms, stale_ms + 1]);
        }
        exact.retain(|&ms| ms > 0);
        if exact.is_empty() {
            (1..=2 * ttl_ms).boxed()
        } else {
            prop_oneof![1 => 1..=2 * ttl_ms, 2 => proptest::sample::select(exact)].boxed()
        }
    }
}

/// Time on a 1 s grid against a configuration whose every duration ends half a second off the grid, so a real
/// Spanner whose clock moves on by some milliseconds per step decides exactly as the reference does.
#[derive(Clone, Debug)]
pub struct GridTime;

/// The grid step.
pub const GRID_MS: u64 = 1_000;

impl Profile for GridTime {
    fn config() -> BoxedStrategy<Config> {
        // unavailable_ms ends off the grid too (retries are decided at grid time plus wait_ms).
        (
            prop_oneof![Just(6_500u64), Just(10_500)],
            prop_oneof![Just(0u32), Just(2), Just(5)],
            prop_oneof![Just(0u64), Just(1_700)],
        )
            .prop_map(|(ttl_ms, max_retries, unavailable_ms)| {
                ConfigParams {
                    ttl_ms,
                    staleness_ms: 30_500,
                    wait_ms: 300,
                    max_wait_ms: 2_500,
                    poll_ms: 1_700,
                    max_retries,
                    renew_interval_ms: 2_500,
                    safety_margin_ms: 1_000,
                    clock_drift_ppm: 0,
                    server_uncertainty_ms: 0,
                    jitter_ms: 0,
                    unavailable_ms,
                }
                .validate()
                .expect("valid")
            })
            .boxed()
    }

    fn advances(state: &Side<Reference>) -> BoxedStrategy<u64> {
        let mut jumps: Vec<u64> = next_timer_ms(state).into_iter().collect();
        if let Some(row) = &state.backend.observed().row {
            let ms_until = |us: i64| u64::try_from(us.max(0)).unwrap_or(0).div_ceil(1_000);
            jumps.push(ms_until(row.remaining_us));
            jumps.push(ms_until(i64::try_from(state.cfg.staleness_ms() * 1_000).unwrap_or(0) - row.age_us));
        }
        // Onto the grid point after the timer, expiry or staleness.
        let jumps: Vec<u64> = jumps.into_iter().filter(|&ms| ms > 0).map(|ms| ms.div_ceil(GRID_MS) * GRID_MS).collect();
        let steps = (1..=8u64).prop_map(|k| k * GRID_MS);
        if jumps.is_empty() {
            steps.boxed()
        } else {
            prop_oneof![1 => steps, 2 => proptest::sample::select(jumps)].boxed()
        }
    }
}

/// The reference state machine for profile `P`.
#[derive(Clone, Debug)]
pub struct Conformance<P>(PhantomData<P>);

/// Commit fates; releases fail more often, so their bounded resends run out in short sequences too.
fn fates(request: &TxnRequest) -> BoxedStrategy<Fate> {
    let (commit, abort) = if matches!(request, TxnRequest::Release { .. }) { (4, 6) } else { (12, 2) };
    prop_oneof![
        commit => Just(Fate::AsDecided),
        abort => Just(Fate::Aborted),
        2 => Just(Fate::UnknownLanded),
        2 => Just(Fate::UnknownLost),
        1 => Just(Fate::Unavailable),
    ]
    .boxed()
}

impl<P: Profile> ReferenceStateMachine for Conformance<P> {
    type State = Side<Reference>;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Self::State> {
        (P::config(), 2..=crate::harness::MAX_CLIENTS)
            .prop_map(|(cfg, clients)| now_or_never(Side::new(cfg, Reference::default(), clients, P::LOCK_MODE)))
            .boxed()
    }

    fn transitions(state: &Self::State) -> BoxedStrategy<Op> {
        let mut options: Vec<(u32, BoxedStrategy<Op>)> =
            vec![(3, P::advances(state).prop_map(|ms| Op::Advance { ms }).boxed())];
        for (c, client) in state.clients.iter().enumerate() {
            match &client.in_flight {
                Some(InFlight::Txn(request)) => {
                    options.push((8, fates(request).prop_map(move |fate| Op::Deliver { client: c, fate }).boxed()));
                }
                Some(InFlight::Read) => {
                    options.push((8, Just(Op::Deliver { client: c, fate: Fate::AsDecided }).boxed()))
                }
                None => {}
            }
            if state.applicable(&Op::Timer { client: c }).is_ok() {
                options.push((8, Just(Op::Timer { client: c }).boxed()));
            }
            for (weight, op) in
                [(5, Op::Write { client: c }), (1, Op::Fail { client: c }), (6, Op::Return { client: c })]
            {
                if state.applicable(&op).is_ok() {
                    options.push((weight, Just(op).boxed()));
                }
            }
            options.push((1, Just(Op::Restart { client: c }).boxed()));
            if P::LOCK_MODE && state.applicable(&Op::Cancel { client: c }).is_ok() {
                options.push((1, Just(Op::Cancel { client: c }).boxed()));
            }
        }
        // An operator, now and then: a forced release of any lease, and (run-once) a reset of a DONE row.
        let reset = if P::LOCK_MODE { OperatorAction::ForceRelease } else { OperatorAction::Reset };
        let operator = prop_oneof![Just(OperatorAction::ForceRelease), Just(reset)];
        options.push((1, operator.prop_map(|action| Op::Operator { action }).boxed()));
        Union::new_weighted(options).boxed()
    }

    fn apply(mut state: Self::State, op: &Op) -> Self::State {
        now_or_never(state.apply(op)).expect("generated operations satisfy their preconditions");
        state
    }

    fn preconditions(state: &Self::State, op: &Op) -> bool {
        state.applicable(op).is_ok()
    }
}
