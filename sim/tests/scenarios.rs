//! The checked-in scenarios: each passes, shows what its name claims, and has its trace pinned; the seed's
//! protocol fails the pause scenario; a re-inserted bug is found by a sweep; checker counterexamples replay here.

use spanner_mutex_check::{
    CheckOptions, DOUBLE_EXECUTION, Faults, NO_STALE_WRITE, NO_WRITE_AFTER_FORCED_RELEASE, RELIANCE_BACKED_BY_ROW,
    SINGLE_RELIANCE, SearchOptions, Verdict, WRITES_ONCE, decode_path, run_check,
};
use spanner_mutex_model::Protocol;
use spanner_mutex_sim::scenario::Fault;
use spanner_mutex_sim::{GenerateOptions, RunReport, Scenario, SweepOptions, replay, run, sweep};
use std::path::PathBuf;
use std::time::Duration;

fn scenario(name: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Scenario::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn outcome(report: &RunReport, name: &str) -> u64 {
    report.stats.outcomes.get(name).copied().unwrap_or(0)
}

/// Runs a scenario twice (the traces must be identical), checks it passes, and pins its trace.
fn passes_and_is_pinned(name: &str) -> RunReport {
    let s = scenario(name);
    let report = run(&s, true).expect("runs");
    let again = run(&s, true).expect("runs");
    assert_eq!(report.json_lines(), again.json_lines(), "{name}: same seed, same trace");
    assert!(report.violations.is_empty(), "{name}: {:?}\n{}", report.violations, report.timeline());
    insta::assert_snapshot!(name, format!("{}\n{}", report.timeline(), report.summary()));
    report
}

#[test]
fn holder_crash_mid_section() {
    let r = passes_and_is_pinned("holder-crash-mid-section");
    assert_eq!((r.stats.takeovers, r.stats.effects, outcome(&r, "executed")), (1, 1, 1));
}

#[test]
fn holder_paused_past_ttl() {
    let r = passes_and_is_pinned("holder-paused-past-ttl");
    assert_eq!((r.stats.takeovers, r.stats.effects, r.stats.fenced_writes_rejected), (1, 1, 1));
    assert_eq!((r.stats.lock_lost_signals, outcome(&r, "executed"), outcome(&r, "done-by-other")), (1, 1, 1));
}

/// When `who`'s line whose detail starts with `detail` was written, in microseconds (the first such line).
fn at_us(r: &RunReport, who: &str, detail: &str) -> u64 {
    r.trace
        .iter()
        .find(|l| l.who == who && l.detail.starts_with(detail))
        .unwrap_or_else(|| panic!("no {who} line {detail:?}\n{}", r.timeline()))
        .at_us
}

/// When the lease row last written by `holder` before `before_us` expires, in microseconds.
fn expiry_us(r: &RunReport, holder: &str, before_us: u64) -> u64 {
    let line = r
        .trace
        .iter()
        .rfind(|l| l.who == "row0" && l.at_us < before_us && l.detail.starts_with(&format!("STARTED by {holder},")))
        .unwrap_or_else(|| panic!("no row written by {holder}\n{}", r.timeline()));
    let ms: u64 =
        line.detail.rsplit("expires in ").next().and_then(|t| t.trim_end_matches(" ms").parse().ok()).expect("expiry");
    line.at_us + ms * 1_000
}

/// One poll at the most, plus a round trip: `poll_ms + jitter_ms`, twice the slowest latency and a commit's hold.
fn one_poll_us(s: &Scenario) -> u64 {
    (s.config.poll_ms + s.config.jitter_ms + 2 * s.network.latency_max_ms + s.network.commit_max_ms) * 1_000
}

#[test]
fn leader_killed() {
    let r = passes_and_is_pinned("leader-killed");
    let s = scenario("leader-killed");
    assert_eq!((r.stats.takeovers, r.stats.term_writes, outcome(&r, "released")), (1, 1, 1));
    // The dead leader's lease runs out; the candidate leads no earlier, and within one poll of it.
    let expired = expiry_us(&r, "a#1", at_us(&r, "a#1", "process crashed"));
    let leads = at_us(&r, "b#1", "acquire commits: ACQUIRED");
    assert!(leads >= expired && leads <= expired + one_poll_us(&s), "{expired} {leads}\n{}", r.timeline());
}

#[test]
fn leader_paused_past_its_ttl() {
    let r = passes_and_is_pinned("leader-paused-past-ttl");
    assert_eq!((r.stats.takeovers, r.stats.fenced_writes_rejected, r.stats.lock_lost_signals), (1, 1, 1));
    assert_eq!((outcome(&r, "lease-lost"), outcome(&r, "released")), (1, 1));
    // The old term's write comes after the new term began, and is refused.
    let new_term = at_us(&r, "b#1", "acquire commits: ACQUIRED");
    let refused = at_us(&r, "a#1", "fenced write 1 with fence");
    assert!(refused > new_term, "{}", r.timeline());
    assert!(r.trace.iter().any(|l| l.who == "a#1" && l.detail.ends_with("REJECTED")), "{}", r.timeline());
}

#[test]
fn a_released_lock_is_handed_to_a_waiter() {
    let r = passes_and_is_pinned("release-handed-to-waiter");
    let s = scenario("release-handed-to-waiter");
    assert_eq!((r.stats.takeovers, outcome(&r, "released")), (0, 2));
    let released = at_us(&r, "a#1", "release fence");
    let taken = at_us(&r, "b#1", "acquire commits: ACQUIRED");
    assert!(taken > released && taken <= released + one_poll_us(&s), "{released} {taken}\n{}", r.timeline());
    assert!(taken < expiry_us(&r, "a#1", released), "long before the lease would have expired");
}

#[test]
fn an_every_mode_sweep_passes_and_finds_the_re_inserted_cancel_leak() {
    let every_mode = GenerateOptions { every_mode: true, ..GenerateOptions::default() };
    let options = SweepOptions { first_seed: 0, seeds: 2_000, generate: every_mode.clone(), threads: 2, stop_after: 0 };
    let summary = sweep(&options, &|_| {});
    assert!(summary.failing.is_empty(), "{:?}", summary.failing.first());
    let leaky = GenerateOptions { protocol: Protocol::LeakOnCancelInNeedCheck, ..every_mode };
    let summary = sweep(&SweepOptions { seeds: 20_000, generate: leaky, stop_after: 1, ..options }, &|_| {});
    assert!(!summary.failing.is_empty(), "a cancel during the need check under the lease leaks the lease");
}

#[test]
fn unknown_commit_that_landed() {
    let r = passes_and_is_pinned("unknown-commit-landed");
    assert_eq!((r.stats.unknown_outcomes, r.stats.acquisitions, r.stats.effects), (1, 1, 1));
    // The row was created by a's acquisition, read at 4.582 ms of simulated server time: that is its fence, in us.
    assert!(r.trace.iter().any(|l| l.who == "a#1" && l.detail == "run ends: executed with fence 1767225600004582"));
}

#[test]
fn unknown_commit_that_did_not_land() {
    let r = passes_and_is_pinned("unknown-commit-lost");
    assert_eq!((r.stats.unknown_outcomes, r.stats.acquisitions, r.stats.effects), (1, 1, 1));
    assert_eq!(outcome(&r, "executed"), 1);
}

#[test]
fn simultaneous_takeover_race() {
    let r = passes_and_is_pinned("takeover-race");
    assert_eq!(
        (r.stats.takeovers, r.stats.effects, outcome(&r, "executed"), outcome(&r, "done-by-other")),
        (1, 1, 1, 5 - 1)
    );
    assert!(r.stats.aborts >= 1, "the racers conflict: {}", r.timeline());
}

#[test]
fn clock_skew_changes_nothing_because_time_is_spanners() {
    let skewed = passes_and_is_pinned("clock-skew");
    assert_eq!((skewed.stats.takeovers, skewed.stats.effects), (1, 1));
    let mut exact = scenario("clock-skew");
    for client in &mut exact.clients {
        client.wall_skew_ms = 0;
    }
    // Not just as safe: the very same run, takeover time included.
    assert_eq!(run(&exact, true).expect("runs").json_lines(), skewed.json_lines());
}

#[test]
fn renewal_failing() {
    let r = passes_and_is_pinned("renewal-failing");
    assert_eq!((r.stats.lock_lost_signals, r.stats.fenced_writes_rejected, r.stats.effects), (1, 1, 1));
}

#[test]
fn max_retries_reached() {
    let r = passes_and_is_pinned("max-retries");
    assert_eq!((outcome(&r, "gave-up"), outcome(&r, "executed")), (1, 1));
}

#[test]
fn done_then_new_need_after_staleness() {
    let r = passes_and_is_pinned("done-then-new-need");
    assert_eq!((r.stats.effects, outcome(&r, "executed")), (2, 2));
    assert!(outcome(&r, "not-needed") + outcome(&r, "done-by-other") > 0);
}

#[test]
fn spanner_unavailable_longer_than_the_ttl() {
    let r = passes_and_is_pinned("spanner-outage");
    assert_eq!((r.stats.lock_lost_signals, r.stats.effects), (1, 1));
    assert!(outcome(&r, "failed") >= 1, "requests during the outage fail in bounded time: {}", r.timeline());
}

#[test]
fn a_need_check_failing_under_the_lease_gives_the_lease_up_at_once() {
    let r = passes_and_is_pinned("need-check-fails-under-the-lease");
    // b acquires a FAILED row, not an expired one: no takeover.
    let stats = (r.stats.takeovers, r.stats.effects, outcome(&r, "executed"), outcome(&r, "failed"));
    assert_eq!(stats, (0, 1, 1, 1), "{}", r.timeline());
    assert!(r.trace.iter().any(|l| l.detail.ends_with("as FAILED commits: released")), "{}", r.timeline());
    assert!(r.trace.iter().any(|l| l.detail.contains("(after a failure)")), "{}", r.timeline());
}

#[test]
fn a_need_check_that_fails_after_its_user_cancelled_answers_nobody() {
    // a's checks take 300 ms: the check under the lease runs from about 313 to 613 ms; its user cancels at 608 ms,
    // and the check's failure comes back while the release is in flight.
    let mut s = scenario("need-check-fails-under-the-lease");
    s.clients[0].need_check_ms = 300;
    s.faults.push(Fault::Cancel { at_ms: 608, client: "a".into() });
    let report = run(&s, true).expect("runs");
    assert!(report.violations.is_empty(), "{:?}\n{}", report.violations, report.timeline());
    assert_eq!((outcome(&report, "cancelled"), outcome(&report, "executed")), (1, 1), "{}", report.timeline());
}

#[test]
fn every_scenario_file_is_tested() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("scenarios/")
        .map(|e| e.expect("entry").path().file_stem().expect("stem").to_string_lossy().into_owned())
        .collect();
    names.sort();
    let source = include_str!("scenarios.rs");
    for name in names {
        assert!(source.contains(&format!("passes_and_is_pinned(\"{name}\")")), "scenario {name} has no test");
    }
}

#[test]
fn a_row_deleted_by_its_policy_is_created_again_with_fences_above_every_earlier_one() {
    // Before fences started at the creating server time, the new row started again at 1, below the fences an
    // outside resource had seen.
    let mut s = scenario("holder-crash-mid-section");
    s.faults.push(Fault::RowDeleted { at_ms: 9_000, mutex: 0, older_than_ms: 2_500 });
    s.faults.push(Fault::NewNeed { at_ms: 9_500 });
    s.clients[1].repeat_after_ms = Some(4_000);
    s.duration_ms = 16_000;
    let report = run(&s, true).expect("runs");
    assert!(report.violations.is_empty(), "{:?}\n{}", report.violations, report.timeline());
    let timeline = report.timeline();
    assert!(timeline.contains("DELETED by a row deletion policy"), "{timeline}");
    let fences: Vec<u64> = report
        .trace
        .iter()
        .filter_map(|l| l.detail.strip_prefix("acquire commits: ACQUIRED fence "))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(fences.len() >= 3, "acquired before and after the deletion: {fences:?}\n{timeline}");
    assert!(fences.windows(2).all(|w| w[0] < w[1]), "{fences:?}");
}

#[test]
fn a_commit_that_lands_after_its_unknown_answer() {
    let r = passes_and_is_pinned("late-commit");
    assert!(r.trace.iter().any(|l| l.detail == "LATE acquire reaches Spanner and lands"), "{}", r.timeline());
    assert_eq!((r.stats.takeovers, r.stats.effects, outcome(&r, "executed")), (1, 1, 1));
}

#[test]
fn a_checker_path_with_a_late_commit_replays_in_the_simulator() {
    let options = CheckOptions { clients: 2, faults: Faults { late: true, ..Faults::NONE }, ..CheckOptions::default() };
    let actions = decode_path("commit:0:unknown-late late-commit commit:1:ok").expect("decodes");
    let report = replay(&options, &actions).expect("replays");
    assert!(report.violations.is_empty() && report.model_violations.is_empty(), "{}", report.text());
    let text = report.text();
    assert!(text.contains("LATE acquire reaches Spanner and lands"), "{text}");
    assert!(text.contains("aborts: the row changed since its read"), "{text}");
}

#[test]
fn a_checker_path_with_a_cancel_under_the_lease_replays_in_the_simulator() {
    // Client 0 wins the lease; its user cancels during the need check under it; the release commits at once.
    let options = CheckOptions { clients: 2, cancels: 1, faults: Faults::NONE, ..CheckOptions::default() };
    let actions = decode_path("need:0 commit:0:ok cancel:0 commit:0:ok").expect("decodes");
    let report = replay(&options, &actions).expect("replays");
    assert!(report.violations.is_empty() && report.model_violations.is_empty(), "{}", report.text());
    let text = report.text();
    assert!(text.contains("cancelled"), "{text}");
    assert!(replay(&options, &decode_path("need:0 need:0").expect("decodes")).is_err(), "one need check pending");
}

#[test]
fn fenced_write_whose_answer_was_lost() {
    let r = passes_and_is_pinned("fenced-write-unknown");
    assert_eq!((r.stats.unknown_outcomes, r.stats.effects, outcome(&r, "executed")), (1, 1, 1));
    assert!(r.trace.iter().any(|l| l.detail.contains("found ALREADY APPLIED")), "{}", r.timeline());
}

#[test]
fn a_second_fenced_write_whose_answer_was_lost() {
    let r = passes_and_is_pinned("second-fenced-write-unknown");
    // a's two writes applied once each; b finds the section done and writes nothing.
    assert_eq!((r.stats.unknown_outcomes, r.stats.effects, outcome(&r, "executed")), (1, 2, 1));
    assert!(r.trace.iter().any(|l| l.detail.contains("fenced write 2") && l.detail.contains("found ALREADY APPLIED")));
    // Recorded as write 1, the second write's retry applies it again.
    let mut broken = scenario("second-fenced-write-unknown");
    broken.protocol = Protocol::RecordsFirstWriteOnly;
    let report = run(&broken, true).expect("runs");
    assert_eq!(violated(&report), [DOUBLE_EXECUTION, WRITES_ONCE], "{}", report.timeline());
}

#[test]
fn an_operator_force_releases_a_stuck_holder() {
    let r = passes_and_is_pinned("operator-force-releases-a-stuck-holder");
    // a renews every 1.5 s, so without the release b would wait for a's whole 6 s section.
    assert_eq!((r.stats.lock_lost_signals, r.stats.fenced_writes_rejected), (1, 1), "{}", r.timeline());
    let released_us = at_us(&r, "row0", "an operator's forced release");
    let acquired_us = at_us(&r, "b#1", "acquire commits: ACQUIRED");
    // Within one poll and jitter, plus a read's and an acquisition's round trips (10 ms each way at most).
    assert!(acquired_us - released_us <= (250 + 50 + 40) * 1_000, "{}", r.timeline());
    // A release that only records itself leaves the lease to a: its write lands after the release.
    let mut broken = scenario("operator-force-releases-a-stuck-holder");
    broken.protocol = Protocol::ForceReleaseRecordsOnly;
    let report = run(&broken, true).expect("runs");
    assert!(violated(&report).contains(&NO_WRITE_AFTER_FORCED_RELEASE), "{}", report.timeline());
}

#[test]
fn fenced_writes_without_their_record_apply_a_retried_write_twice() {
    let mut broken = scenario("fenced-write-unknown");
    broken.protocol = Protocol::NoFencedWriteRecord;
    let report = run(&broken, true).expect("runs");
    assert_eq!(violated(&report), [DOUBLE_EXECUTION, WRITES_ONCE], "{}", report.timeline());
    // And a sweep finds it from scratch.
    let options = SweepOptions {
        first_seed: 0,
        seeds: 5_000,
        generate: GenerateOptions { protocol: Protocol::NoFencedWriteRecord, ..GenerateOptions::default() },
        threads: 1,
        stop_after: 1,
    };
    let summary = sweep(&options, &|_| {});
    let first = summary.failing.first().expect("a violation within 5,000 seeds");
    assert!(first.violations.iter().any(|v| v.invariant == DOUBLE_EXECUTION), "{:?}", first.violations);
}

#[test]
fn server_clock_error_is_paid_for_by_the_margin() {
    let r = passes_and_is_pinned("server-clock-error");
    assert_eq!((r.stats.takeovers, r.stats.lock_lost_signals, r.stats.effects), (1, 1, 1));
}

#[test]
fn server_clock_error_without_its_margin_overlaps_two_holders() {
    // The audit's trace: margin 0 (the rule relaxed by declaring a perfect server clock) and servers that err
    // 8 ms each way: the new holder takes over while the old one still relies on its lease.
    let mut relaxed = scenario("server-clock-error");
    relaxed.config.safety_margin_ms = 0;
    relaxed.config.server_uncertainty_ms = 0;
    let report = run(&relaxed, true).expect("runs");
    let names = violated(&report);
    assert!(names.contains(&SINGLE_RELIANCE), "{names:?}\n{}", report.timeline());
    assert!(!names.contains(&DOUBLE_EXECUTION) && !names.contains(&NO_STALE_WRITE), "{names:?}");
    // And the configuration rule refuses that margin once the error is declared.
    let mut declared = relaxed.config.clone();
    declared.server_uncertainty_ms = 8;
    let err = declared.validate().expect_err("margin too small");
    assert_eq!(
        err.to_string(),
        "safety_margin_ms = 0 must be at least ttl_ms * clock_drift_ppm / 1e6 + 2 * server_uncertainty_ms = 16"
    );
}

#[test]
fn the_seed_protocol_runs_the_paused_holders_section_twice() {
    let mut naive = scenario("holder-paused-past-ttl");
    naive.protocol = Protocol::Naive;
    let report = run(&naive, true).expect("runs");
    let names: Vec<&str> = report.violations.iter().map(|v| v.invariant).collect();
    assert!(names.contains(&DOUBLE_EXECUTION), "{names:?}\n{}", report.timeline());
    assert_eq!(report.stats.effects, 2);
}

fn violated(report: &RunReport) -> Vec<&'static str> {
    report.violations.iter().map(|v| v.invariant).collect()
}

#[test]
fn drift_within_the_safety_margin_is_absorbed_and_beyond_it_only_fencing_holds() {
    // The holder's renewals keep failing, so only its local deadline ends its reliance on the lease: a clock 5%
    // slow stays inside the 10% margin; 15% slow relies on the lease after Spanner expired it.
    let with_drift = |ppm| {
        let mut s = scenario("renewal-failing");
        s.clients[0].drift_ppm = ppm;
        run(&s, true).expect("runs")
    };
    let within = with_drift(-50_000);
    assert!(within.violations.is_empty(), "{:?}", within.violations);
    let beyond = with_drift(-150_000);
    let names = violated(&beyond);
    assert!(names.contains(&RELIANCE_BACKED_BY_ROW), "{names:?}");
    assert!(!names.contains(&DOUBLE_EXECUTION) && !names.contains(&NO_STALE_WRITE), "{names:?}");
    assert_eq!((beyond.stats.effects, beyond.stats.fenced_writes_rejected), (1, 1));
}

#[test]
fn a_holder_whose_clock_counts_a_suspension_is_told_the_lock_is_lost_on_waking() {
    // The production client on Linux: its clock and alarm count the suspension, so on waking past its TTL it
    // stops relying on the lease at once and is told so, as after a pause.
    let paused = run(&scenario("holder-paused-past-ttl"), false).expect("runs");
    let mut suspended = scenario("holder-paused-past-ttl");
    for fault in &mut suspended.faults {
        if let Fault::Pause { at_ms, client, duration_ms } = fault.clone() {
            *fault = Fault::Suspend { at_ms, client, duration_ms, clock_stops: false };
        }
    }
    let report = run(&suspended, false).expect("runs");
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    let signals = |r: &RunReport| (r.stats.lock_lost_signals, r.stats.effects, r.stats.fenced_writes_rejected);
    assert_eq!(signals(&report), (1, 1, 1));
    assert_eq!(signals(&report), signals(&paused));
}

#[test]
fn a_suspended_holders_clock_stops_so_lock_lost_never_comes_but_fencing_holds() {
    // Suspension (VM or laptop sleep) stops CLOCK_MONOTONIC: on waking the holder believes its lease is still
    // good. The local deadline cannot protect it; the fenced write does.
    let mut suspended = scenario("holder-paused-past-ttl");
    for fault in &mut suspended.faults {
        if let Fault::Pause { at_ms, client, duration_ms } = fault.clone() {
            *fault = Fault::Suspend { at_ms, client, duration_ms, clock_stops: true };
        }
    }
    let report = run(&suspended, true).expect("runs");
    let names = violated(&report);
    assert!(names.contains(&RELIANCE_BACKED_BY_ROW), "{names:?}\n{}", report.timeline());
    assert!(!names.contains(&DOUBLE_EXECUTION) && !names.contains(&NO_STALE_WRITE), "{names:?}");
    assert_eq!((report.stats.lock_lost_signals, report.stats.effects, report.stats.fenced_writes_rejected), (0, 1, 1));
}

#[test]
fn a_sweep_finds_the_fence_check_removed() {
    let options = SweepOptions {
        first_seed: 0,
        seeds: 2_000,
        generate: GenerateOptions { protocol: Protocol::NoFenceCheck, ..GenerateOptions::default() },
        threads: 1,
        stop_after: 1,
    };
    let summary = sweep(&options, &|_| {});
    let first = summary.failing.first().expect("a violation within 2,000 seeds");
    assert!(
        first.violations.iter().any(|v| v.invariant == DOUBLE_EXECUTION || v.invariant.contains("superseded fence")),
        "{:?}",
        first.violations
    );
    // The same seed with the fence check in place passes.
    let fenced = Scenario::generate(first.seed, &GenerateOptions::default());
    assert!(run(&fenced, false).expect("runs").violations.is_empty());
}

#[test]
fn a_fenced_sweep_passes() {
    let options = SweepOptions {
        first_seed: 1_000_000,
        seeds: 500,
        generate: GenerateOptions::default(),
        threads: 2,
        stop_after: 0,
    };
    let summary = sweep(&options, &|_| {});
    assert_eq!(summary.runs, 500);
    assert!(summary.acquisitions > 500, "runs acquire: {summary:?}");
    assert!(summary.failing.is_empty(), "{:?}", summary.failing);
}

#[test]
fn the_checkers_naive_counterexample_replays_to_the_same_violation() {
    let options = CheckOptions {
        faults: Faults { unknown: false, ..Faults::ALL },
        protocol: Protocol::Naive,
        ..CheckOptions::default()
    };
    let search =
        SearchOptions { threads: 1, progress_interval: Duration::from_secs(3_600), ..SearchOptions::default() };
    let summary = run_check(options.clone(), search);
    assert_eq!(summary.verdict, Verdict::Violated);
    let headline = summary.counterexamples.iter().find(|c| c.property == DOUBLE_EXECUTION).expect("double execution");
    let report = replay(&options, &decode_path(&headline.encoded).expect("decodes")).expect("replays");
    assert!(report.model_violations.contains(&DOUBLE_EXECUTION), "{:?}", report.model_violations);
    let seen: Vec<&str> = report.violations.iter().map(|v| v.invariant).collect();
    assert!(seen.contains(&DOUBLE_EXECUTION), "{seen:?}\n{}", report.text());
    insta::assert_snapshot!("naive_counterexample_replay", report.text());
}

/// Random walks through a lock-and-leader world (faults, a cancel, an operator, two campaigns), each replayed in
/// the simulator: every step the checker takes must be possible there, leave the same row and machine phases, and
/// neither side may see a violation.
#[test]
fn random_checker_paths_of_lock_and_leader_clients_replay_alike() {
    use rand::{Rng, SeedableRng};
    use spanner_mutex_check::{Action, ClientKind, LeaseModel};
    use stateright::Model;
    let options = CheckOptions {
        clients: 2,
        cancels: 1,
        operators: 1,
        fault_budget: 2,
        kinds: vec![ClientKind::Lock, ClientKind::Leader],
        max_time_ms: 6,
        ..CheckOptions::default()
    };
    let model = LeaseModel::new(options.clone());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
    let (mut released, mut campaigned_again, mut cancelled, mut force_released) = (0, 0, 0, 0);
    for walk in 0..400 {
        let mut state = model.init_states().remove(0);
        let mut path: Vec<Action> = Vec::new();
        let mut actions = Vec::new();
        for _ in 0..40 {
            model.actions(&state, &mut actions);
            let next: Vec<_> =
                actions.drain(..).filter_map(|a| model.next_state(&state, a).map(|next| (a, next))).collect();
            if next.is_empty() {
                break;
            }
            let pick = rng.random_range(0..next.len());
            let (action, next) = next.into_iter().nth(pick).expect("in range");
            path.push(action);
            state = next;
        }
        let report = replay(&options, &path).unwrap_or_else(|e| panic!("walk {walk}: {e}"));
        let text = report.text();
        assert!(report.violations.is_empty() && report.model_violations.is_empty(), "walk {walk}:\n{text}");
        // Step by step, the same row and the same machine phases as the checker's. Fences are numbered from
        // each world's own start (the checker's clock starts at 0, the simulator's at its epoch), so they must
        // differ by one constant.
        let init = model.init_states().remove(0);
        let states = stateright::Path::from_actions(&model, init, &path).expect("the walk's own path").into_states();
        let mut fence_offset = None;
        for (i, (step, state)) in report.steps.iter().zip(&states[1..]).enumerate() {
            let checker_row = state.spanner.row.as_ref().map(|r| (r.status, r.holder));
            let sim_row = step.row.as_ref().map(|r| (r.status, r.holder));
            assert_eq!(sim_row, checker_row, "walk {walk} step {}:\n{text}", i + 1);
            if let (Some(sim), Some(checker)) = (&step.row, &state.spanner.row) {
                let offset = i128::from(sim.fence.get()) - i128::from(checker.fence.get());
                assert_eq!(*fence_offset.get_or_insert(offset), offset, "walk {walk} step {}:\n{text}", i + 1);
            }
            let phases: Vec<_> = state.clients.iter().map(|c| c.machine.phase()).collect();
            assert_eq!(step.phases, phases, "walk {walk} step {}:\n{text}", i + 1);
        }
        released += usize::from(text.contains("released"));
        // The leader (slot 1) starts a second run without a crash: it campaigned again after its term.
        campaigned_again += usize::from(
            text.contains("(id 00000000-0000-0000-0000-000000000201)") && !path.contains(&Action::Crash(1)),
        );
        cancelled += usize::from(path.iter().any(|a| matches!(a, Action::Cancel(_))));
        force_released += usize::from(path.iter().any(|a| matches!(a, Action::Operator(_))));
    }
    let counts = (released, campaigned_again, cancelled, force_released);
    assert!(released > 0 && campaigned_again > 0 && cancelled > 0 && force_released > 0, "{counts:?}");
}

#[test]
fn a_passing_checker_path_replays_without_violations() {
    // One client acquires, runs, makes its two fenced writes and releases: the happy path in the checker's vocabulary.
    let options = CheckOptions { clients: 1, fenced_writes: 2, ..CheckOptions::default() };
    let actions = decode_path("commit:0:ok need:0 write:0 write:0 return:0 commit:0:ok").expect("decodes");
    let report = replay(&options, &actions).expect("replays");
    assert!(report.violations.is_empty() && report.model_violations.is_empty(), "{}", report.text());
    // The row is created at the simulator's epoch (2026-01-01): its first fence is that server time in us.
    assert!(report.text().contains("run ends: executed with fence 1767225600000000"), "{}", report.text());
}

#[test]
fn a_checker_path_whose_fenced_write_goes_unanswered_past_the_budget_replays_with_the_section_ending() {
    // A lock holder's write gets no answer at 0 ms and again at 1 ms: its run's 2 ms budget allows no third
    // attempt, so the section ends and the lock is released, in the checker and in the replay alike.
    let options = CheckOptions {
        clients: 1,
        kinds: vec![spanner_mutex_check::ClientKind::Lock],
        fault_budget: 2,
        ..CheckOptions::default()
    };
    let actions = decode_path("commit:0:ok write:0:unknown-lost tick write:0:unknown-lost return:0 commit:0:ok")
        .expect("decodes");
    let report = replay(&options, &actions).expect("replays");
    assert!(report.violations.is_empty() && report.model_violations.is_empty(), "{}", report.text());
    assert!(report.text().contains("run ends: released fence"), "{}", report.text());
}

/// One client whose clock runs 15% slow (beyond what the 200 ms margin covers) loses Spanner mid-section: its row
/// expires at about 2.0 s while it relies on its lease until about 2.1 s. `extra` adds an unrelated client (on
/// another mutex) whose first event falls in that window; the verdict must not depend on it.
fn slow_clock_outage(extra: bool) -> Scenario {
    let mut toml = String::from(
        r#"name = "slow clock, Spanner down mid-section"
seed = 1
duration_ms = 4000
mutexes = 2

[config]
ttl_ms = 2000
staleness_ms = 10000
wait_ms = 200
max_wait_ms = 2000
max_retries = 20
renew_interval_ms = 600
safety_margin_ms = 200
jitter_ms = 0

[[client]]
name = "slow"
drift_ppm = -150000
section_min_ms = 3000
section_max_ms = 3000

[[fault]]
kind = "outage"
at_ms = 300
duration_ms = 3000
"#,
    );
    if extra {
        toml.push_str("\n[[client]]\nname = \"bystander\"\nmutex = 1\nstart_ms = 2050\nsection_min_ms = 10\nsection_max_ms = 10\n");
    }
    Scenario::from_toml(&toml).expect("valid scenario")
}

#[test]
fn invariants_are_checked_where_they_can_change_not_only_at_events() {
    // Found by the audit of issue 10: without the bystander the run passed.
    for extra in [false, true] {
        let report = run(&slow_clock_outage(extra), false).expect("runs");
        let names: Vec<&str> = report.violations.iter().map(|v| v.invariant).collect();
        assert_eq!(names, [RELIANCE_BACKED_BY_ROW], "with bystander: {extra}\n{}", report.timeline());
    }
}

#[test]
fn a_release_whose_answer_was_lost_and_whose_done_row_an_operator_reset_is_still_confirmed() {
    // Seed 158027 (every mode): c0#4 releases as DONE and is told UNKNOWN; an operator resets the DONE row to FAILED
    // before its resolving read. The row's reset record is not a forced release: the release had landed, and the
    // run reports it released (judging the reset as a forced release reported a lost lease, which is untrue).
    let generated = Scenario::generate(158_027, &GenerateOptions { every_mode: true, ..GenerateOptions::default() });
    assert!(generated.faults.iter().any(|f| matches!(f, Fault::Operator { .. })), "the seed has an operator");
    let report = run(&generated, true).expect("runs");
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert!(report.trace.iter().any(|l| l.detail.starts_with("an operator's reset: APPLIED")), "{}", report.timeline());
}
