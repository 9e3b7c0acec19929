//! The model check's own tests: the default check passes with a pinned state count, the seed's protocol and a
//! re-inserted bug are caught, and the `sometimes` companions really depend on the faults they are about.

use super::*;
use spanner_mutex_model::txn::TxnReply;
use spanner_mutex_model::{ClientId, Command, Event, Fence, LeaseRow, Outcome, Protocol, ServerTime, Status};
use stateright::Path;

/// One thread: only a single-threaded depth-first search visits a deterministic number of states.
fn one_thread() -> SearchOptions {
    SearchOptions { threads: 1, ..SearchOptions::default() }
}

#[test]
fn default_check_passes_with_a_pinned_state_count() {
    let first_world = || CheckOptions::default_worlds().remove(0);
    let summary = run_check(first_world(), one_thread());
    assert_eq!(summary.verdict, Verdict::Pass, "{summary:#?}");
    assert!(summary.unreached.is_empty());
    // A change here means the protocol or the world changed: review the diff, then update the pin.
    assert_eq!((summary.states, summary.unique_states, summary.max_depth), (7_330_362, 1_892_558, 31));
    // The same world keyed state by state, as stateright keys it.
    let each_state = run_check(first_world(), SearchOptions { time_shifts: false, ..one_thread() });
    assert_eq!((each_state.states, each_state.unique_states, each_state.max_depth), (13_393_602, 3_679_396, 35));
}

/// Two small worlds the searches are compared in: run-once clients, and a lock and a leader client with a cancel.
fn two_client_worlds() -> [CheckOptions; 2] {
    [
        CheckOptions { clients: 2, ..CheckOptions::default() },
        CheckOptions {
            clients: 2,
            cancels: 1,
            kinds: vec![ClientKind::Lock, ClientKind::Leader],
            ..CheckOptions::default()
        },
    ]
}

/// The number of classes among every reachable state of `options`'s world.
fn classes_of_every_reachable_state(options: &CheckOptions) -> usize {
    crosscheck::classes_of_every_state(options).0
}

/// A world with server clock errors, late commits, drift and a DONE row that can go stale within the horizon.
fn late_and_clock_errors() -> CheckOptions {
    CheckOptions {
        clients: 2,
        faults: Faults { clock_error: true, late: true, unknown: true, drift: true, ..Faults::NONE },
        max_time_ms: 5,
        staleness_ms: 6,
        ..CheckOptions::default()
    }
}

#[test]
fn a_search_key_moves_back_to_its_state_but_for_what_it_forgot() {
    // The search expands a key moved back, not the state it was made from: they must differ only in what the
    // key forgets, which nothing reads.
    let [run_once, lock_and_leader] = two_client_worlds();
    let mut keys_that_moved = 0;
    for options in [run_once, lock_and_leader, late_and_clock_errors()] {
        let model = LeaseModel::new(options.clone()).tallying_witnesses();
        crosscheck::for_each_reachable_state(&model, |state| {
            let mut key = state.clone();
            let moved = model.key_for_search(&mut key);
            keys_that_moved += usize::from(key != *state);
            model.restore_from_key(&mut key, moved);
            let mut forgotten = state.clone();
            if let Some(row) = &mut forgotten.spanner.row {
                row.attempt = 0;
                if model.staleness_unseen() {
                    row.updated_at = ServerTime::from_unix_micros(0);
                }
            }
            for slot in &mut forgotten.clients {
                slot.machine.forget_uncounted_attempts(&model.cfg);
            }
            assert_eq!(key, forgotten, "{options:?}");
        });
    }
    assert!(keys_that_moved > 0, "no key differed from its state: nothing was tested");
}

#[test]
fn the_reduction_by_time_shifts_reaches_every_class() {
    // A state is not expanded when a member of its class was visited at the same server time or earlier; if
    // some step of the world depended on when it happens (not only on the times' differences), a class
    // reachable only through such a state would be missed. Here every class of every reachable state is
    // reached, in a run-once world, a lock and leader world with a cancel, and one with server
    // clock errors, late commits and a DONE row that can go stale.
    let [run_once, lock_and_leader] = two_client_worlds();
    for options in [run_once, lock_and_leader, late_and_clock_errors()] {
        let reduced = run_check(options.clone(), one_thread());
        assert!(reduced.counterexamples.is_empty(), "{options:?}");
        assert_eq!(reduced.unique_states, classes_of_every_reachable_state(&options), "{options:?}");
    }
}

#[test]
fn the_search_visits_what_staterights_depth_first_search_visits() {
    // The same states in the same order: one thread of each gives the same counts, depth and violations, in every
    // mode and in the seed's protocol (which both find violated). Neither stops early: no property is named so.
    let [run_once, lock_and_leader] = two_client_worlds();
    let naive = CheckOptions { clients: 2, protocol: Protocol::Naive, ..CheckOptions::default() };
    for options in [run_once, lock_and_leader, naive] {
        let model = LeaseModel::new(options.clone()).tallying_witnesses();
        let limits = search::Limits {
            threads: 1,
            max_depth: None,
            symmetry: true,
            time_shifts: false,
            stop_at: search::NEVER_STOP,
            progress_interval: std::time::Duration::from_secs(3_600),
        };
        let ours = search::exhaustive(&model, &limits);
        let (states, unique_states, max_depth, discoveries) =
            report::search(&model, one_thread(), true, search::NEVER_STOP);
        let mut theirs: Vec<&str> = discoveries.into_keys().collect();
        theirs.sort_unstable();
        let mut violated = ours.violated.clone();
        violated.sort_unstable();
        assert_eq!(
            (ours.states, ours.unique_states, ours.max_depth),
            (states, unique_states, max_depth),
            "{options:?}"
        );
        assert_eq!(violated, theirs, "{options:?}");
        assert_eq!(violated.is_empty(), options.protocol == Protocol::Fenced, "{options:?}");
    }
}

#[test]
fn tallied_witnesses_judge_the_companions_as_marks_in_states_do() {
    // One world where some companions are unreached, and two where all are reached, in every mode.
    let worlds = [
        CheckOptions { clients: 2, faults: Faults::NONE, ..CheckOptions::default() },
        CheckOptions { clients: 2, cancels: 1, ..CheckOptions::default() },
        CheckOptions {
            clients: 2,
            cancels: 1,
            kinds: vec![ClientKind::Lock, ClientKind::Leader],
            ..CheckOptions::default()
        },
    ];
    for options in worlds {
        let tallied = run_check(options.clone(), SearchOptions::default()).unreached;
        assert_eq!(
            tallied,
            report::unreached_marked_in_states(options.clone(), SearchOptions::default()),
            "{options:?}"
        );
    }
}

#[test]
fn every_companion_is_judged_by_witnesses_alone() {
    // The tally judges a companion on a state holding nothing but the marks; one that read anything else would
    // be judged on the initial state.
    let options = CheckOptions {
        cancels: 1,
        faults: Faults { late: true, clock_error: true, ..Faults::ALL },
        staleness_ms: 6,
        max_time_ms: 8,
        ..CheckOptions::default()
    };
    for kinds in [vec![ClientKind::RunOnce], vec![ClientKind::Lock, ClientKind::Leader]] {
        let model = LeaseModel::new(CheckOptions { kinds, ..options.clone() });
        let mut state = model.init_states().remove(0);
        for p in model.properties().into_iter().filter(|p| p.expectation == stateright::Expectation::Sometimes) {
            state.ghost.witnessed = Witnessed(0);
            assert!(!(p.condition)(&model, &state), "{} holds with no marks", p.name);
            state.ghost.witnessed = Witnessed(u64::MAX);
            assert!((p.condition)(&model, &state), "{} does not hold with every mark", p.name);
        }
    }
}

#[test]
fn the_unique_state_count_does_not_depend_on_the_thread_count() {
    // The symmetry representative is canonical, and every class is reached whichever member is reached first,
    // so two threads reach the same classes as one.
    let first_world = CheckOptions::default_worlds().remove(0);
    let summary = run_check(first_world, SearchOptions { threads: 2, ..SearchOptions::default() });
    assert_eq!((summary.verdict, summary.unique_states), (Verdict::Pass, 1_892_558));
    // Keyed state by state, every state is visited at one time, so two threads expand none twice.
    let [run_once, _] = two_client_worlds();
    let each_state = SearchOptions { threads: 2, time_shifts: false, ..SearchOptions::default() };
    let two_threads = run_check(run_once.clone(), each_state);
    let one_thread = run_check(run_once, SearchOptions { time_shifts: false, ..one_thread() });
    assert_eq!((two_threads.unique_states, two_threads.revisits), (one_thread.unique_states, 0));
}

#[test]
fn every_order_of_tied_slots_is_a_candidate() {
    let mut slots = [0, 1, 2, 3, 4];
    let mut seen = std::collections::BTreeSet::new();
    each_tie_order(&mut slots, &[(0, 2), (2, 5)], &mut |order| {
        seen.insert(order.to_vec());
    });
    assert_eq!(seen.len(), 2 * 6, "2! orders of the first run times 3! of the second");
    assert_eq!(slots, [0, 1, 2, 3, 4], "left as found");
}

#[test]
fn equivalent_states_have_one_representative() {
    // Clients 0 and 2 acquire in either order: the same state up to renaming, so the same representative.
    let model = LeaseModel::new(CheckOptions::default());
    let init = model.init_states().remove(0);
    let via = |first: u8| {
        let state = model.next_state(&init, Action::TxnCommit(first, CommitFate::AsDecided)).expect("step");
        representative(&state)
    };
    assert_eq!(via(0), via(2));
    assert_eq!(via(0), via(1));
}

/// Walks 4,000 states of `options`' world and requires every order of each state's slots to have the state's
/// representative; returns how many of them have a client naming another.
fn every_renaming_keeps_one_representative(options: CheckOptions) -> usize {
    let model = LeaseModel::new(options);
    let mut queue: std::collections::VecDeque<WorldState> = model.init_states().into();
    let mut seen = std::collections::HashSet::new();
    let (mut checked, mut naming_another) = (0, 0);
    let mut actions = Vec::new();
    while let Some(state) = queue.pop_front() {
        if checked == 4_000 {
            break;
        }
        if !seen.insert(checker_hash(&state)) {
            continue;
        }
        checked += 1;
        let expected = representative(&state);
        naming_another +=
            usize::from(state.clients.iter().any(|c| matches!(c.machine.outcome(), Some(Outcome::DoneByOther { .. }))));
        let mut order: Vec<usize> = (0..state.clients.len()).collect();
        while next_permutation(&mut order) {
            assert_eq!(representative(&permuted(&state, &order)), expected, "{order:?} of {state:#?}");
        }
        model.actions(&state, &mut actions);
        // Breadth-first, but every fifth action first, so the walk reaches finished runs early.
        for (i, action) in actions.drain(..).enumerate() {
            if let Some(next) = model.next_state(&state, action) {
                if i % 5 == 4 { queue.push_front(next) } else { queue.push_back(next) }
            }
        }
    }
    assert_eq!(checked, 4_000);
    naming_another
}

#[test]
fn every_renaming_of_a_state_has_its_representative() {
    // Four run-once clients (ties, crashes, "done by another" outcomes naming each other): one representative
    // per class, whether or not the sorted order is taken at once.
    // One fenced write, and need checks that answer at once: the walk reaches finished runs sooner.
    let naming_another = every_renaming_keeps_one_representative(CheckOptions {
        clients: 4,
        fault_budget: 2,
        fenced_writes: 1,
        faults: Faults { need_check_failure: false, ..Faults::ALL },
        ..CheckOptions::default()
    });
    assert!(naming_another > 0, "some states have a client naming another");
    // Lock, leader, lock: the leader is placed by its kind alone, the two lock clients by their content.
    every_renaming_keeps_one_representative(CheckOptions {
        clients: 3,
        cancels: 1,
        kinds: vec![ClientKind::Lock, ClientKind::Leader],
        ..CheckOptions::default()
    });
}

#[test]
fn a_client_naming_one_of_two_alike_clients_keeps_one_representative() {
    // Clients 0 and 1 are alike but for their ids; client 2 finished naming client 0 as the one that did the work.
    // Renaming 0 and 1 changes whom it names, so the sorted order alone is not canonical: the orders are tried.
    let model = LeaseModel::new(CheckOptions::default());
    let mut state = model.init_states().remove(0);
    let named = state.clients[0].machine.id();
    state.clients[2].op = Op::Idle;
    let reply = TxnReply::DoneByOther { holder: named, fence: Fence::FIRST };
    let now = LeaseModel::local_now(&state, 2);
    let command = state.clients[2].machine.handle(&model.cfg, now, Event::TxnCommitted(reply)).expect("accepted");
    assert!(matches!(command, Some(Command::Finish(Outcome::DoneByOther { .. }))), "{command:?}");
    let swapped = permuted(&state, &[1, 0, 2]);
    assert_ne!(swapped, state);
    assert_eq!(representative(&swapped), representative(&state));
}

/// The seed's protocol under every fault but unknown outcomes (it has no record of fenced writes either, so with
/// them it also applies a retried write twice, under one acquisition): its headline flaw, two acquisitions.
fn naive() -> CheckOptions {
    CheckOptions {
        protocol: Protocol::Naive,
        faults: Faults { unknown: false, ..Faults::ALL },
        ..CheckOptions::default()
    }
}

#[test]
fn naive_protocol_executes_the_section_twice() {
    let options = naive();
    let summary = run_check(options, one_thread());
    assert_eq!(summary.verdict, Verdict::Violated);
    let headline = &summary.counterexamples[0];
    assert_eq!(headline.property, DOUBLE_EXECUTION);
    insta::assert_snapshot!("naive_double_execution", format!("{}\n\n{}", headline.encoded, headline.steps.join("\n")));
    // The Explorer's state pane ({:#?}) reads as words too.
    let model = LeaseModel::new(naive());
    let actions = decode_path(&headline.encoded).expect("decodes");
    let path = Path::from_actions(&model, model.init_states().remove(0), &actions).expect("replays");
    let pane = format!("{:#?}", path.last_state());
    assert!(pane.starts_with("server time: ") && pane.contains("effects: client"), "{pane}");
    assert!(!pane.contains('{') && !pane.contains("Fence("), "{pane}");
    // Every counterexample reads as words: no Rust Debug output (braces, tuple structs, quoted lists).
    for step in summary.counterexamples.iter().flat_map(|c| &c.steps) {
        for debug in ["{", "Fence(", "ServerTime", "AsDecided", "[\""] {
            assert!(!step.contains(debug), "{step}");
        }
    }
}

#[test]
fn the_naive_counterexample_replays_to_two_effects() {
    let options = naive();
    let encoded = run_check(options.clone(), one_thread()).counterexamples[0].encoded.clone();
    let model = LeaseModel::new(options);
    let init = model.init_states().remove(0);
    let actions = decode_path(&encoded).expect("decodes");
    let path = Path::from_actions(&model, init, &actions).expect("replays");
    let writers: Vec<_> = path.last_state().effects.iter().map(|e| e.fence).collect();
    assert_eq!(writers.len(), 2, "two effects: {writers:?}");
    assert_ne!(writers[0], writers[1], "written under two different acquisitions");
}

#[test]
fn removing_the_fence_check_fails_the_default_check() {
    let options = CheckOptions { protocol: Protocol::NoFenceCheck, ..CheckOptions::default() };
    let summary = run_check(options, one_thread());
    assert_eq!(summary.verdict, Verdict::Violated);
    let violated: Vec<_> = summary.counterexamples.iter().map(|c| c.property).collect();
    assert_eq!(violated[0], DOUBLE_EXECUTION, "{violated:?}");
    assert!(violated.contains(&"no write with a superseded fence is accepted"), "{violated:?}");
}

#[test]
fn without_faults_the_fault_companions_are_unreached() {
    let options = CheckOptions { clients: 2, faults: Faults::NONE, ..CheckOptions::default() };
    let summary = run_check(options, one_thread());
    assert_eq!(summary.verdict, Verdict::Unreached);
    assert_eq!(
        summary.unreached,
        [
            "a crashed holder's lease is taken over",
            "an unknown commit that landed is resolved as acquired",
            "an unknown commit that did not land is retried to success",
            "a fenced write whose answer was lost is found applied on retry",
            "another client executes after a section failed",
        ]
    );
}

#[test]
fn symmetry_reduction_keeps_the_verdict_and_shrinks_the_space() {
    let options = CheckOptions { clients: 2, ..CheckOptions::default() };
    let reduced = run_check(options.clone(), one_thread());
    let full = run_check(options.clone(), SearchOptions { depth_first: false, ..one_thread() });
    assert_eq!((reduced.verdict, full.verdict), (Verdict::Pass, Verdict::Pass));
    assert!(reduced.unique_states < full.unique_states, "{} vs {}", reduced.unique_states, full.unique_states);
    // Asked for without symmetry, the search keeps time shifts only (it once kept symmetry too).
    let asymmetric = run_check(options, SearchOptions { symmetry: false, ..one_thread() });
    assert_eq!(asymmetric.verdict, Verdict::Pass);
    assert!(
        reduced.unique_states < asymmetric.unique_states,
        "{} vs {}",
        reduced.unique_states,
        asymmetric.unique_states
    );
}

#[test]
fn representative_is_an_equivalent_state() {
    let model = LeaseModel::new(CheckOptions::default());
    let init = model.init_states().remove(0);
    // Let client 2 acquire and find the section still needed: its representative must move it, renaming ids
    // consistently.
    let acquired = model.next_state(&init, Action::TxnCommit(2, CommitFate::AsDecided)).expect("step");
    let state = model.next_state(&acquired, Action::NeedAnswer(2)).expect("step");
    let rep = representative(&state);
    let holder = rep.spanner.row.as_ref().expect("row").holder;
    let holding = rep.clients.iter().find(|c| c.machine.lease().is_some()).expect("a holder");
    assert_eq!(holding.machine.id(), holder);
    assert_eq!(representative(&rep), rep, "idempotent");
    for property in model.properties() {
        assert_eq!((property.condition)(&model, &state), (property.condition)(&model, &rep), "{}", property.name);
    }
}

#[test]
fn server_clock_errors_overlap_leases_unless_the_margin_pays_for_them() {
    // Two reads that err 1 ms each way: the first holder's lease expires 1 ms early on the row, a rival's server
    // judges it 1 ms late, and a margin that covers drift only leaves both relying on the lease.
    let relaxed = CheckOptions {
        clients: 2,
        faults: Faults { clock_error: true, ..Faults::NONE },
        fault_budget: 2,
        assume_exact_server_clock: true,
        ..CheckOptions::default()
    };
    let summary = run_check(relaxed.clone(), one_thread());
    assert_eq!(summary.verdict, Verdict::Violated);
    let violated: Vec<_> = summary.counterexamples.iter().map(|c| c.property).collect();
    assert!(violated.contains(&SINGLE_RELIANCE), "{violated:?}");
    let overlap = summary.counterexamples.iter().find(|c| c.property == SINGLE_RELIANCE).expect("found");
    let errors = decode_path(&overlap.encoded).expect("decodes");
    let erred = errors.iter().filter(|a| matches!(a, Action::ClockError(..))).count();
    assert_eq!(erred, 2, "one error each way: {}", overlap.encoded);

    // The rule kept: the configuration declares the error, so the lease and the margin grow by twice it.
    let kept = CheckOptions { assume_exact_server_clock: false, max_time_ms: 5, ..relaxed };
    let summary = run_check(kept, one_thread());
    assert!(summary.counterexamples.is_empty(), "{:#?}", summary.counterexamples);
    assert!(
        !summary.unreached.contains(&"a paused holder's lease is taken over after a server clock erred"),
        "{:?}",
        summary.unreached
    );
}

#[test]
fn fenced_writes_without_their_record_apply_a_retried_write_twice() {
    let options = CheckOptions { clients: 1, protocol: Protocol::NoFencedWriteRecord, ..CheckOptions::default() };
    let summary = run_check(options.clone(), one_thread());
    assert_eq!(summary.verdict, Verdict::Violated);
    let headline = &summary.counterexamples[0];
    assert_eq!(headline.property, DOUBLE_EXECUTION);
    assert!(headline.encoded.contains("write:0:unknown-landed"), "{}", headline.encoded);
    // With the record the same world passes, and the retry is seen to find its landed write.
    let summary = run_check(CheckOptions { protocol: Protocol::Fenced, ..options }, one_thread());
    assert!(summary.counterexamples.is_empty(), "{:#?}", summary.counterexamples);
    assert!(!summary.unreached.contains(&"a fenced write whose answer was lost is found applied on retry"));
}

#[test]
fn a_second_fenced_write_recorded_as_the_first_is_applied_twice_and_caught() {
    // One run-once client whose section writes twice; the row records every write as number 1.
    let options = CheckOptions {
        clients: 1,
        protocol: Protocol::RecordsFirstWriteOnly,
        fenced_writes: 2,
        ..CheckOptions::default()
    };
    let summary = run_check(options.clone(), one_thread());
    assert_eq!(summary.verdict, Verdict::Violated);
    let headline = &summary.counterexamples[0];
    assert_eq!(headline.property, DOUBLE_EXECUTION);
    assert!(summary.counterexamples.iter().any(|c| c.property == WRITES_ONCE), "{:#?}", summary.counterexamples);
    // Its second write's answer is lost, and the retry lands again.
    assert!(headline.encoded.contains("write:0 write:0:unknown-landed"), "{}", headline.encoded);
    // A section that writes once cannot show it; the protocol passes with two writes and reaches the retry.
    let once = run_check(CheckOptions { fenced_writes: 1, ..options.clone() }, one_thread());
    assert!(once.counterexamples.is_empty(), "{:#?}", once.counterexamples);
    let fenced = run_check(CheckOptions { protocol: Protocol::Fenced, ..options }, one_thread());
    assert!(fenced.counterexamples.is_empty(), "{:#?}", fenced.counterexamples);
    assert!(!fenced.unreached.contains(&"a second fenced write whose answer was lost is found applied on retry"));
}

#[test]
fn a_forced_release_that_only_records_itself_lets_the_released_holder_write_and_is_caught() {
    // A lock holder and a waiter; an operator force-releases the lease while the holder still works.
    let options = CheckOptions {
        clients: 2,
        kinds: vec![ClientKind::Lock],
        operators: 1,
        faults: Faults::NONE,
        fault_budget: 0,
        protocol: Protocol::ForceReleaseRecordsOnly,
        ..CheckOptions::default()
    };
    let summary = run_check(options.clone(), one_thread());
    assert_eq!(summary.verdict, Verdict::Violated);
    let caught = summary.counterexamples.iter().find(|c| c.property == NO_WRITE_AFTER_FORCED_RELEASE);
    let caught = caught.unwrap_or_else(|| panic!("{:#?}", summary.counterexamples));
    assert!(caught.encoded.contains("operator:force-release"), "{}", caught.encoded);
    // The protocol passes the same world, and its holder's write after the release is seen refused.
    let fenced = run_check(CheckOptions { protocol: Protocol::Fenced, ..options }, one_thread());
    assert!(fenced.counterexamples.is_empty(), "{:#?}", fenced.counterexamples);
    assert!(!fenced.unreached.contains(&"a force-released holder's fenced write is refused"), "{:?}", fenced.unreached);
}

#[test]
fn a_renewal_accepted_on_any_started_row_is_caught_once_renewals_can_execute_late() {
    let options = CheckOptions {
        clients: 2,
        fault_budget: 2,
        protocol: Protocol::RenewsAnyStarted,
        kinds: vec![ClientKind::Lock],
        ..CheckOptions::default()
    };
    let summary = run_check(options.clone(), one_thread());
    assert_eq!(summary.verdict, Verdict::Violated);
    assert!(summary.counterexamples[0].encoded.contains("delay:"), "{}", summary.counterexamples[0].encoded);
    // Renewals that run when sent cannot meet another holder's row: without the delay the bug goes unseen.
    let on_time = CheckOptions { faults: Faults { delay: false, ..Faults::ALL }, ..options.clone() };
    assert_eq!(run_check(on_time, one_thread()).verdict, Verdict::Pass);
    // The protocol refuses the late renewal, and the world shows it does.
    let summary = run_check(CheckOptions { protocol: Protocol::Fenced, ..options }, one_thread());
    assert_eq!(summary.verdict, Verdict::Pass, "{:?}", summary.unreached);
}

/// Checks `bug` in two lock clients with a fault budget of 2 over 4 ms: the budget property's counterexample, whose
/// encoded path is returned; and the protocol passes the same world with every companion reached.
fn budget_breach_caught(bug: Protocol) -> String {
    let options = CheckOptions {
        clients: 2,
        fault_budget: 2,
        max_time_ms: 4,
        protocol: bug,
        kinds: vec![ClientKind::Lock],
        ..CheckOptions::default()
    };
    let summary = run_check(options.clone(), one_thread());
    assert_eq!(summary.verdict, Verdict::Violated);
    let headline = &summary.counterexamples[0];
    assert_eq!(headline.property, "no new attempt starts after the unavailability budget is spent");
    let encoded = headline.encoded.clone();
    let summary = run_check(CheckOptions { protocol: Protocol::Fenced, ..options }, one_thread());
    assert_eq!(summary.verdict, Verdict::Pass, "{:?}", summary.unreached);
    assert!(summary.unreached.is_empty(), "{:?}", summary.unreached);
    encoded
}

#[test]
fn an_unknown_outcome_that_does_not_start_the_clock_is_caught_once_resolving_reads_can_go_unanswered() {
    let encoded = budget_breach_caught(Protocol::UnknownStartsNoClock);
    // An unknown outcome left the clock stopped: a resolving read unanswered too, or a fenced write's.
    assert!(encoded.contains("unanswered:") || encoded.contains("write:0:unknown-"), "{encoded}");
}

#[test]
fn a_fenced_write_retrying_on_a_budget_of_its_own_is_caught_once_the_machine_hears_of_its_writes() {
    let encoded = budget_breach_caught(Protocol::FencedRetryOwnBudget);
    // A call of the run went unanswered before the write did: the write's own budget outlasts the run's.
    let steps: Vec<&str> = encoded.split(' ').collect();
    let write = steps.iter().rposition(|step| step.starts_with("write:")).expect("a fenced write");
    assert!(steps[write].ends_with(":unknown-lost") || steps[write].ends_with(":unknown-landed"), "{steps:?}");
    assert!(steps[..write].iter().any(|step| step.contains(":unknown-")), "{steps:?}");
}

#[test]
fn a_protocol_reading_what_the_search_key_forgets_fails_the_reductions_cross_check() {
    // KeepsFenceOnReacquire reads the row's attempt count, which the search key forgets: the reduced search never
    // meets a counted row and finds nothing, the search of every state finds fences that stop increasing, and
    // the cross-check `check` runs after its worlds tells the two apart.
    let bug = CheckOptions { protocol: Protocol::KeepsFenceOnReacquire, ..CheckOptions::default() };
    let [small] = <[CheckOptions; 1]>::try_from(reduction_worlds(&[bug])).expect("one mode, one small world");
    let cross_check = cross_check_reduction(&small);
    assert!(!cross_check.holds(), "{}", cross_check.line());
    assert!(cross_check.line().contains("FAILED: the reduced search missed"), "{}", cross_check.line());
    assert!(run_check(small.clone(), one_thread()).counterexamples.is_empty());
    let each_state = run_check(small, SearchOptions { time_shifts: false, ..one_thread() });
    assert_eq!(each_state.verdict, Verdict::Violated);
    // The protocol itself passes the cross-check in the small world of every mode of the default check.
    let worlds = reduction_worlds(&CheckOptions::default_worlds());
    let kinds: Vec<ClientKind> = worlds.iter().flat_map(|world| world.kinds.clone()).collect();
    assert_eq!(kinds, [ClientKind::RunOnce, ClientKind::Lock, ClientKind::Leader]);
    for cross_check in cross_check_reductions(&worlds) {
        assert!(cross_check.holds(), "{}: {}", cross_check.world, cross_check.line());
    }
}

#[test]
fn the_outcome_judge_is_the_simulators_strict_one() {
    let (a, b, c) = (ClientId::from_u128(1), ClientId::from_u128(2), ClientId::from_u128(3));
    let effects = [(b, Fence::new(5))];
    let facts = |client, row| OutcomeFacts {
        client,
        effects: &effects,
        row,
        last_need_answer: Some(true),
        waits: 0,
        max_retries: 2,
    };
    // "Done by other" must name the holder that applied it (or one that found an earlier fence's effect); the
    // checker's old judge accepted any report once some effect existed.
    assert!(outcome_is_true(&Outcome::DoneByOther { holder: b, fence: Fence::new(5) }, &facts(a, None)));
    assert!(outcome_is_true(&Outcome::DoneByOther { holder: c, fence: Fence::new(6) }, &facts(a, None)));
    assert!(!outcome_is_true(&Outcome::DoneByOther { holder: c, fence: Fence::new(5) }, &facts(a, None)));
    // "Not needed" must follow a need check that said so.
    assert!(!outcome_is_true(&Outcome::NotNeeded, &facts(a, None)));
    // "Lease lost" is false while the row still carries the client's fence (the old judge accepted it always).
    let row = LeaseRow {
        status: Status::Started,
        holder: a,
        holder_name: String::new(),
        fence: Fence::new(7),
        updated_at: ServerTime::from_unix_micros(0),
        expires_at: ServerTime::from_unix_micros(3_000),
        attempt: 1,
        last_error: None,
        fenced_writes: 0,
    };
    assert!(!outcome_is_true(&Outcome::LeaseLost { fence: Fence::new(7) }, &facts(a, Some(&row))));
    assert!(outcome_is_true(&Outcome::LeaseLost { fence: Fence::new(6) }, &facts(a, Some(&row))));
    // A DONE row needs an effect at or below its fence.
    let done = LeaseRow { status: Status::Done, ..row };
    assert!(done_has_effect(Some(&done), &effects));
    assert!(!done_has_effect(Some(&done), &[]));
    assert!(!done_has_effect(Some(&LeaseRow { fence: Fence::new(4), ..done }), &effects));
}

#[test]
fn commits_that_land_after_their_unknown_answer_keep_every_property() {
    // An acquisition, renewal, release or fenced write told "unknown" while still queued, landing later (unless
    // the row changed), after the client has read the row, retried, crashed or given up.
    let options = CheckOptions { clients: 2, faults: Faults { late: true, ..Faults::ALL }, ..CheckOptions::default() };
    let summary = run_check(options, one_thread());
    assert_eq!(summary.verdict, Verdict::Pass, "{summary:#?}");
    assert!(!summary.unreached.contains(&"a commit its client was told was unknown lands later"));
    let model = LeaseModel::new(CheckOptions {
        clients: 2,
        faults: Faults { late: true, ..Faults::NONE },
        ..CheckOptions::default()
    });
    // Client 0's acquisition is answered "unknown" and lands after client 1's acquisition read the row: client
    // 1's commit then aborts, as a transaction whose read changed must.
    let path = decode_path("commit:0:unknown-late late-commit commit:1:ok").expect("decodes");
    let init = model.init_states().remove(0);
    let last = Path::from_actions(&model, init, &path).expect("replays").last_state().clone();
    assert_eq!(last.spanner.row.as_ref().map(|r| r.holder), Some(client_id(0, 0)));
    assert!(last.queued.is_none());
}

#[test]
fn a_lock_holders_fenced_writes_landing_late_are_not_the_run_once_effect() {
    // Two late-landing writes of lock holders once counted as two run-once effects: a false double execution.
    let options = CheckOptions {
        clients: 2,
        kinds: vec![ClientKind::Lock],
        faults: Faults { late: true, ..Faults::NONE },
        fault_budget: 2,
        ..CheckOptions::default()
    };
    let summary = run_check(options.clone(), one_thread());
    // One kind of fault leaves most companions unreached; what matters is no counterexample,
    // with late landings reached.
    assert!(summary.counterexamples.is_empty(), "{:#?}", summary.counterexamples);
    assert!(!summary.unreached.contains(&"a commit its client was told was unknown lands later"));
    let model = LeaseModel::new(options);
    let path = decode_path("commit:0:ok write:0:unknown-late late-commit").expect("decodes");
    let init = model.init_states().remove(0);
    let replayed = Path::from_actions(&model, init, &path).expect("replays");
    let last = replayed.last_state();
    assert!(last.effects.is_empty(), "{:?}", last.effects);
    assert_eq!(last.spanner.row.as_ref().map(|r| r.fenced_writes), Some(1), "the late write landed");
    let steps = describe_path(&model, &replayed);
    assert!(steps.last().is_some_and(|s| s.contains("reaches Spanner: LANDS")), "{steps:#?}");
}

#[test]
fn re_inserting_the_cancel_during_need_check_leak_is_caught() {
    // The bug found by trying the library as a new user: a cancel during the need check under the lease was
    // remembered but never acted on, and the dropped check left the lease held until its expiry.
    let options =
        CheckOptions { clients: 2, cancels: 1, protocol: Protocol::LeakOnCancelInNeedCheck, ..CheckOptions::default() };
    let summary = run_check(options, one_thread());
    assert_eq!(summary.verdict, Verdict::Violated, "{summary:#?}");
    let headline = &summary.counterexamples[0];
    assert_eq!(headline.property, NO_CLIENT_STUCK, "{summary:#?}");
    assert!(headline.steps.iter().any(|s| s.contains("cancels in AwaitingNeedWhileHolding")), "{:#?}", headline.steps);
}

#[test]
fn lock_and_leader_worlds_have_their_own_companions() {
    let options = CheckOptions {
        clients: 2,
        cancels: 1,
        kinds: vec![ClientKind::Lock, ClientKind::Leader],
        ..CheckOptions::default()
    };
    let names: Vec<_> = LeaseModel::new(options).properties().into_iter().map(|p| p.name).collect();
    for wanted in [
        TERMS_INCREASE,
        RELEASE_LEAVES_NO_LEASE,
        "a released lock is handed to a waiter",
        "a leader's term ends and it leads again",
        "a user cancels while holding the lease",
        "a user cancels (gives up) while waiting for the lease",
    ] {
        assert!(names.contains(&wanted), "{wanted}");
    }
    assert!(!names.contains(&"a client executes the section"), "run-once companions only with run-once clients");
}

#[test]
fn run_once_and_lock_clients_cannot_share_a_mutex() {
    let options = CheckOptions { kinds: vec![ClientKind::RunOnce, ClientKind::Lock], ..CheckOptions::default() };
    assert!(options.validate().expect_err("refused").contains("cannot mix run-once"));
    assert!(CheckOptions { clients: 6, ..CheckOptions::default() }.validate().is_err());
}

#[test]
fn a_horizon_beyond_the_limit_is_refused_by_name() {
    let options = CheckOptions { max_time_ms: MAX_TIME_MS + 1, ..CheckOptions::default() };
    assert_eq!(options.validate(), Err(format!("--max-time-ms {} is beyond {MAX_TIME_MS}", MAX_TIME_MS + 1)));
    assert_eq!(CheckOptions { max_time_ms: MAX_TIME_MS, ..CheckOptions::default() }.validate(), Ok(()));
}
