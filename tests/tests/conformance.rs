//! model == client on the in-memory store == client on the Spanner emulator, on generated operation sequences.

use proptest::test_runner::{Config, FileFailurePersistence, RngSeed, TestError, TestRunner};
use proptest_state_machine::ReferenceStateMachine;
use spanner_mutex_model::{MutexName, Protocol};
use spanner_mutex_tests::coverage::{self, Transition};
use spanner_mutex_tests::emulator::{EmulatorEnv, SpannerEmulator};
use spanner_mutex_tests::generate::{
    Conformance, ExactTime, GridTime, LockClients, LockGridTime, Profile, edge_config, exact_advances,
};
use spanner_mutex_tests::harness::Side;
use spanner_mutex_tests::memory::Memory;
use spanner_mutex_tests::reference::Reference;
use spanner_mutex_tests::{now_or_never, run_case};
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Cases on the in-memory store: each is a sequence of up to `MEMORY_STEPS` operations.
const MEMORY_CASES: u32 = 10_000;
const MEMORY_STEPS: usize = 60;
/// Cases on the emulator: a few dozen short sequences.
const EMULATOR_CASES: u32 = 40;
const EMULATOR_STEPS: usize = 30;
/// The covering sequences run on the emulator are chosen from this many generated ones.
const COVERING_CANDIDATES: usize = 20_000;
const COVERING_SEED: u64 = 1;
/// How far the emulator's relative row times may drift from the reference's: one operation's duration (tens of
/// milliseconds), with room for a loaded machine, and below the half second that separates every decision from
/// the time grid.
const EMULATOR_SLACK_US: i64 = 400_000;

fn config(cases: u32, regressions: &'static str) -> Config {
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        ..Config::default()
    }
}

fn report(title: &str, covered: &BTreeSet<Transition>) {
    println!("{title}: {} transitions", covered.len());
    for t in covered {
        println!("  {t}");
    }
}

/// Runs `MEMORY_CASES` generated sequences of profile `P` on the reference and the in-memory client, and
/// requires the transitions taken to be exactly `declared` (named `list` in the messages).
fn in_memory_conformance<P: Profile>(
    title: &str,
    regressions: &'static str,
    declared: &BTreeSet<Transition>,
    list: &str,
) {
    let covered = Mutex::new(BTreeSet::new());
    let (cases, steps) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mut runner = TestRunner::new(config(MEMORY_CASES, regressions));
    let result = runner.run(&Conformance::<P>::sequential_strategy(1..MEMORY_STEPS), |(init, ops, seen)| {
        let side = now_or_never(run_case(&init, &ops, Memory::default(), 0, seen.as_deref()))
            .map_err(proptest::test_runner::TestCaseError::fail)?;
        covered.lock().expect("not poisoned").extend(side.transitions);
        cases.fetch_add(1, Ordering::Relaxed);
        steps.fetch_add(ops.len(), Ordering::Relaxed);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let covered = covered.into_inner().expect("not poisoned");
    let (cases, steps) = (cases.into_inner(), steps.into_inner());
    println!("{title}: {cases} cases, {steps} steps, each compared with the reference");
    assert!(cases >= MEMORY_CASES as usize, "every case ran: {cases}");
    report(title, &covered);
    let undeclared: Vec<_> = covered.difference(declared).collect();
    assert!(undeclared.is_empty(), "transitions taken but not in {list}: {undeclared:#?}");
    let missed: Vec<_> = declared.difference(&covered).collect();
    assert!(missed.is_empty(), "declared transitions never taken in {MEMORY_CASES} cases: {missed:#?}");
}

#[test]
fn in_memory_client_conforms_to_the_model() {
    in_memory_conformance::<ExactTime>(
        "in-memory",
        "proptest-regressions/in-memory.txt",
        &coverage::run_once(),
        "coverage::RUN_ONCE",
    );
}

#[test]
fn in_memory_lock_clients_conform_to_the_model() {
    in_memory_conformance::<LockClients>(
        "in-memory, lock clients",
        "proptest-regressions/in-memory-lock.txt",
        &coverage::lock_mode(),
        "coverage::LOCK_MODE",
    );
}

/// The fence check removed: every backend agrees (they run the same broken logic), but the safety properties
/// fail, and proptest shrinks the failure to a short sequence.
#[derive(Clone, Debug)]
struct WithoutFenceCheck;

impl Profile for WithoutFenceCheck {
    fn config() -> proptest::strategy::BoxedStrategy<spanner_mutex_model::Config> {
        edge_config(Protocol::NoFenceCheck)
    }

    fn advances(state: &Side<Reference>) -> proptest::strategy::BoxedStrategy<u64> {
        exact_advances(state)
    }
}

#[test]
fn removing_the_fence_check_fails_and_shrinks_to_a_short_sequence() {
    // No persistence: this failure is expected, not a regression to replay. A fixed seed keeps it reproducible.
    let config =
        Config { cases: MEMORY_CASES, failure_persistence: None, rng_seed: RngSeed::Fixed(7), ..Config::default() };
    let mut runner = TestRunner::new(config);
    let result =
        runner.run(&Conformance::<WithoutFenceCheck>::sequential_strategy(1..MEMORY_STEPS), |(init, ops, seen)| {
            now_or_never(run_case(&init, &ops, Memory::default(), 0, seen.as_deref()))
                .map(drop)
                .map_err(proptest::test_runner::TestCaseError::fail)
        });
    let Err(TestError::Fail(reason, (_, ops, _))) = result else { panic!("the broken protocol passed: {result:?}") };
    println!("minimal failing sequence ({} steps): {reason}", ops.len());
    for (i, op) in ops.iter().enumerate() {
        println!("  {:>2}. {op:?}", i + 1);
    }
    let reason = reason.to_string();
    assert!(reason.contains("applied twice") || reason.contains("superseded fence"), "{reason}");
    assert!(ops.len() <= 12, "shrunk to {} steps: {ops:#?}", ops.len());
}

#[test]
fn emulator_client_conforms_to_the_model() {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let env = runtime
        .block_on(EmulatorEnv::start())
        .expect("the Spanner emulator must be installed for the conformance tests (see README)");
    let covered = Mutex::new(BTreeSet::new());
    let (cases, steps) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let config =
        Config { rng_seed: RngSeed::Fixed(20_261_127), ..config(EMULATOR_CASES, "proptest-regressions/emulator.txt") };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&Conformance::<GridTime>::sequential_strategy(1..EMULATOR_STEPS), |(init, ops, seen)| {
        let n = cases.fetch_add(1, Ordering::Relaxed);
        // The same sequence on all three: reference and in-memory client, then reference and emulator client.
        now_or_never(run_case(&init, &ops, Memory::default(), 0, None))
            .map_err(|e| proptest::test_runner::TestCaseError::fail(format!("in-memory: {e}")))?;
        let name = MutexName::new(format!("case-{n}")).expect("a valid name");
        let backend = SpannerEmulator::new(&env, name);
        let side = runtime
            .block_on(run_case(&init, &ops, backend, EMULATOR_SLACK_US, seen.as_deref()))
            .map_err(|e| proptest::test_runner::TestCaseError::fail(format!("emulator: {e}")))?;
        covered.lock().expect("not poisoned").extend(side.transitions);
        steps.fetch_add(ops.len(), Ordering::Relaxed);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Then a few sequences chosen (from many generated ones, deterministically) to take every transition, of
    // run-once clients and of lock clients.
    let (covering, _) = coverage::covering_cases::<GridTime>(COVERING_SEED, COVERING_CANDIDATES, EMULATOR_STEPS);
    let (lock_covering, _) =
        coverage::covering_cases::<LockGridTime>(COVERING_SEED, COVERING_CANDIDATES, EMULATOR_STEPS);
    let (mut run_once_covered, mut lock_covered) = (BTreeSet::new(), BTreeSet::new());
    for (init, ops) in covering.iter().chain(&lock_covering) {
        let n = cases.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = now_or_never(run_case(init, ops, Memory::default(), 0, None)) {
            panic!("covering case failed in memory: {e}\ninitial state: {init:#?}\noperations: {ops:#?}");
        }
        let backend = SpannerEmulator::new(&env, MutexName::new(format!("case-{n}")).expect("a valid name"));
        let side = runtime.block_on(run_case(init, ops, backend, EMULATOR_SLACK_US, None)).unwrap_or_else(|e| {
            panic!(
                "covering case failed: {e}
initial state: {init:#?}
operations: {ops:#?}"
            )
        });
        if init.lock_mode { &mut lock_covered } else { &mut run_once_covered }.extend(side.transitions);
        steps.fetch_add(ops.len(), Ordering::Relaxed);
    }
    let mut covered = covered.into_inner().expect("not poisoned");
    covered.extend(run_once_covered);
    println!(
        "emulator: {} cases ({} chosen for coverage), {} steps, each compared with the reference and the in-memory client",
        cases.into_inner(),
        covering.len() + lock_covering.len(),
        steps.into_inner()
    );
    report("emulator runs", &covered);
    let missed: Vec<_> = coverage::run_once().difference(&covered).cloned().collect();
    println!(
        "transition coverage on the emulator: {} of {} declared",
        coverage::RUN_ONCE.len() - missed.len(),
        coverage::RUN_ONCE.len()
    );
    assert!(missed.is_empty(), "transitions the emulator runs never exercised: {missed:#?}");
    report("emulator runs, lock clients", &lock_covered);
    let missed: Vec<_> = coverage::lock_mode().difference(&lock_covered).cloned().collect();
    println!(
        "lock-client transition coverage on the emulator: {} of {} declared",
        coverage::LOCK_MODE.len() - missed.len(),
        coverage::LOCK_MODE.len()
    );
    assert!(missed.is_empty(), "lock-client transitions the emulator runs never exercised: {missed:#?}");
}

/// An in-memory store that deviates in one way: a commit reported unknown never lands. The comparison must
/// notice, or the conformance tests could pass whatever the backends did.
#[derive(Clone, Debug, Default)]
struct LosesUnknownCommits<const RELEASES_ONLY: bool>(Memory);

impl<const RELEASES_ONLY: bool> spanner_mutex_tests::harness::Backend for LosesUnknownCommits<RELEASES_ONLY> {
    async fn transact(
        &mut self,
        cfg: &spanner_mutex_model::Config,
        request: &spanner_mutex_model::TxnRequest,
        fate: spanner_mutex_tests::harness::Fate,
    ) -> spanner_mutex_model::Event {
        use spanner_mutex_tests::harness::Fate;
        let deviates = !RELEASES_ONLY || matches!(request, spanner_mutex_model::TxnRequest::Release { .. });
        let fate = if deviates && fate == Fate::UnknownLanded { Fate::UnknownLost } else { fate };
        self.0.transact(cfg, request, fate).await
    }
    async fn read(&mut self) -> spanner_mutex_model::Event {
        self.0.read().await
    }
    async fn fenced_write(
        &mut self,
        cfg: &spanner_mutex_model::Config,
        c: spanner_mutex_model::ClientId,
        f: spanner_mutex_model::Fence,
    ) -> bool {
        self.0.fenced_write(cfg, c, f).await
    }
    async fn needed(&mut self) -> bool {
        self.0.needed().await
    }
    async fn advance(&mut self, ms: u64) {
        self.0.advance(ms).await;
    }
    async fn observe(&mut self) -> spanner_mutex_tests::harness::Observed {
        self.0.observe().await
    }
}

/// Requires the conformance run of profile `P` to notice [`LosesUnknownCommits`] and shrink it; returns why it
/// failed.
fn deviation_is_caught<P: Profile, const RELEASES_ONLY: bool>() -> String {
    let config =
        Config { cases: MEMORY_CASES, failure_persistence: None, rng_seed: RngSeed::Fixed(11), ..Config::default() };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&Conformance::<P>::sequential_strategy(1..MEMORY_STEPS), |(init, ops, seen)| {
        now_or_never(run_case(&init, &ops, LosesUnknownCommits::<RELEASES_ONLY>::default(), 0, seen.as_deref()))
            .map(drop)
            .map_err(proptest::test_runner::TestCaseError::fail)
    });
    let Err(TestError::Fail(reason, (_, ops, _))) = result else { panic!("the deviation went unnoticed: {result:?}") };
    println!("caught after {} steps: {reason}", ops.len());
    assert!(ops.iter().any(|op| matches!(
        op,
        spanner_mutex_tests::harness::Op::Deliver { fate: spanner_mutex_tests::harness::Fate::UnknownLanded, .. }
    )));
    assert!(ops.len() <= 12, "shrunk to {ops:#?}");
    reason.to_string()
}

#[test]
fn a_deviating_store_is_caught() {
    deviation_is_caught::<ExactTime, false>();
}

#[test]
fn a_store_that_loses_lock_releases_is_caught() {
    // The lost release leaves the backend's row STARTED where the reference's is DONE.
    let reason = deviation_is_caught::<LockClients, true>();
    assert!(reason.contains("row differs") && reason.contains("status: Done"), "{reason}");
}
