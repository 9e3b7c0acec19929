//! A randomized search: many generated scenarios, one per seed, run without tracing on every core. Each run is
//! still deterministic, so any violation is reproduced by its seed alone.

use crate::invariants::Violation;
use crate::run::run;
use crate::scenario::{GenerateOptions, Scenario};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// What to sweep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepOptions {
    /// The first seed.
    pub first_seed: u64,
    /// How many seeds, from `first_seed` on.
    pub seeds: u64,
    /// How the scenarios are generated.
    pub generate: GenerateOptions,
    /// Worker threads.
    pub threads: usize,
    /// Stop after this many violating seeds (0: never stop early).
    pub stop_after: u64,
}

/// A seed whose run broke an invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailingSeed {
    /// The seed.
    pub seed: u64,
    /// What broke.
    pub violations: Vec<Violation>,
}

/// What a sweep found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepSummary {
    /// Runs completed.
    pub runs: u64,
    /// Acquisitions that committed, over all runs.
    pub acquisitions: u64,
    /// Simulated time over all runs, microseconds.
    pub simulated_us: u64,
    /// Violating seeds, in seed order.
    pub failing: Vec<FailingSeed>,
}

/// Runs the sweep; `progress` is called after every run with the runs done so far.
pub fn sweep(options: &SweepOptions, progress: &(dyn Fn(u64) + Sync)) -> SweepSummary {
    let next = AtomicU64::new(0);
    let found = AtomicU64::new(0);
    let total = Mutex::new(SweepSummary::default());
    std::thread::scope(|scope| {
        for _ in 0..options.threads.max(1) {
            scope.spawn(|| {
                let mut mine = SweepSummary::default();
                loop {
                    if options.stop_after > 0 && found.load(Ordering::Relaxed) >= options.stop_after {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= options.seeds {
                        break;
                    }
                    let seed = options.first_seed.wrapping_add(i);
                    let scenario = Scenario::generate(seed, &options.generate);
                    let report = run(&scenario, false).expect("generated scenarios are valid");
                    mine.runs += 1;
                    mine.acquisitions += report.stats.acquisitions;
                    mine.simulated_us += report.end_us;
                    if !report.violations.is_empty() {
                        found.fetch_add(1, Ordering::Relaxed);
                        mine.failing.push(FailingSeed { seed, violations: report.violations });
                    }
                    progress(i + 1);
                }
                let mut total = total.lock().expect("no sweep worker panics while holding the lock");
                total.runs += mine.runs;
                total.acquisitions += mine.acquisitions;
                total.simulated_us += mine.simulated_us;
                total.failing.extend(mine.failing);
            });
        }
    });
    let mut summary = total.into_inner().expect("no sweep worker panicked");
    summary.failing.sort_by_key(|f| f.seed);
    summary
}
