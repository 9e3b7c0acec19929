//! Soak: 50 mutexes with 10 clients each, through thousands of acquire / try / timeout / release / drop /
//! run-once / cancel cycles on the in-memory store, in virtual time. Alive tasks (each driver with its timers)
//! return to the baseline after every round, so no detached task outlives its work, and resident memory stays
//! flat. `SOAK_ROUNDS=N` runs longer (CI: 20 rounds, 10,000 cycles). Alone in its file: memory is per process.

use spanner_mutex::{BoxError, CriticalSection, LeaseHandle, MemoryStore, SpannerMutex};
use spanner_mutex_model::{ConfigParams, MutexName};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::time::Instant;

const MUTEXES: usize = 50;
const CLIENTS: usize = 10;
/// How long after a round its background releases may still run: the in-memory store answers at once, so this is
/// far below the TTL a leaked lease would take to expire.
const SETTLE: Duration = Duration::from_millis(20);
/// Resident memory may vary by allocator slack, not grow with the number of cycles.
const RSS_SLACK_KIB: u64 = 4 * 1024;

fn rounds() -> u64 {
    std::env::var("SOAK_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a number")
}

/// A section that completes at once, or one that never does (it is cancelled).
struct Section {
    hangs: bool,
}

impl CriticalSection for Section {
    async fn is_needed(&self) -> Result<bool, BoxError> {
        Ok(true)
    }
    async fn execute(&self, _: &LeaseHandle) -> Result<(), BoxError> {
        if self.hangs {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

/// What client `c` of mutex `m` does in `round`: a fixed, well-mixed choice (no unseeded randomness).
fn pick(round: u64, m: usize, c: usize) -> u64 {
    let mut z =
        round.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((m * CLIENTS + c) as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z ^= z >> 31;
    z % 6
}

async fn cycle(lock: SpannerMutex, once: SpannerMutex, what: u64) {
    let short = Duration::from_millis(3);
    match what {
        0 => {
            if let Ok(guard) = lock.acquire().await {
                tokio::time::sleep(short).await;
                let _ = guard.release().await;
            }
        }
        1 => {
            if let Ok(Some(guard)) = lock.try_acquire().await {
                drop(guard); // released in the background
            }
        }
        2 => {
            // Gives up waiting, or wins and drops the guard.
            let _ = lock.acquire_timeout(short).await;
        }
        3 => {
            let _ = once.run(&Section { hangs: false }).await;
        }
        4 => {
            // Cancelled wherever it is: waiting, acquiring or in the section.
            let _ = tokio::time::timeout(short, once.run(&Section { hangs: true })).await;
        }
        _ => {
            // The acquisition future itself dropped midway.
            let _ = tokio::time::timeout(Duration::from_micros(1_500), lock.acquire()).await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn fifty_mutexes_with_ten_clients_each_keep_tasks_and_memory_flat() {
    let cfg = ConfigParams {
        ttl_ms: 300,
        renew_interval_ms: 100,
        safety_margin_ms: 50,
        wait_ms: 1,
        max_wait_ms: 10,
        poll_ms: 5,
        jitter_ms: 2,
        max_retries: 3,
        staleness_ms: 60_000,
        ..ConfigParams::default()
    }
    .validate()
    .expect("valid");
    let store = MemoryStore::new();
    let named =
        |name: String| SpannerMutex::on_store(store.clone(), cfg.clone(), MutexName::new(name).expect("valid"), "soak");
    let locks: Vec<_> = (0..MUTEXES).map(|i| named(format!("soak-lock-{i}"))).collect();
    let onces: Vec<_> = (0..MUTEXES).map(|i| named(format!("soak-once-{i}"))).collect();
    let metrics = Handle::current().metrics();
    let baseline_tasks = metrics.num_alive_tasks();
    let mut warm_rss = None;
    let rounds = rounds();
    for round in 0..rounds {
        let cycles: Vec<_> = (0..MUTEXES)
            .flat_map(|m| (0..CLIENTS).map(move |c| (m, c)))
            .map(|(m, c)| tokio::spawn(cycle(locks[m].clone(), onces[m].clone(), pick(round, m, c))))
            .collect();
        for cycle in cycles {
            cycle.await.expect("no panic");
        }
        // Background releases of dropped guards and cancelled runs end promptly (virtual time).
        let settling = Instant::now();
        while metrics.num_alive_tasks() > baseline_tasks {
            assert!(
                settling.elapsed() < SETTLE,
                "round {round}: {} tasks still alive (baseline {baseline_tasks})",
                metrics.num_alive_tasks()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if round == 1 {
            warm_rss = Some(rss_kib());
        }
    }
    let acquisitions: u64 = locks.iter().chain(&onces).map(|m| m.metrics().acquisitions + m.metrics().takeovers).sum();
    assert!(acquisitions >= rounds * MUTEXES as u64, "the cycles really acquire: {acquisitions}");
    let (warm, end) = (warm_rss.expect("at least two rounds"), rss_kib());
    println!(
        "soak: {rounds} rounds, {} cycles, {acquisitions} acquisitions, tasks back to {baseline_tasks} after each, RSS {warm} KiB after round 2, {end} KiB at the end",
        rounds * (MUTEXES * CLIENTS) as u64
    );
    assert!(end <= warm + RSS_SLACK_KIB, "resident memory grew from {warm} KiB to {end} KiB");
    let start = Instant::now();
    for mutex in locks.iter().chain(&onces) {
        mutex.shutdown().await;
    }
    assert_eq!(start.elapsed(), Duration::ZERO, "nothing was left running to shut down");
}
