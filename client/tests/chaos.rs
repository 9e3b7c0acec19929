//! A small Jepsen: real OS processes of the CLI's `chaos-worker` race for a run-once section of fenced steps
//! against the emulator, while a nemesis SIGKILLs workers (and starts replacements) and SIGSTOPs one past its
//! TTL before resuming it. A checker over the recorded history (the `ChaosSteps` rows with their fences and
//! commit timestamps, and each worker's reported outcomes) asserts: every step applied exactly once, fences
//! never go back in commit order (no write with an older fence lands after a newer one), every reported outcome
//! true, and every worker ends (no hang). `CHAOS_ROUNDS=N` for long runs. Emulator restarts are not part of it:
//! the emulator forgets every database when it restarts, and with it the history.

use google_cloud_spanner::statement::Statement;
use spanner_mutex::SpannerStore;
use spanner_mutex::emulator::Emulator;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

const DATABASE: &str = "projects/chaos-project/instances/chaos-instance/databases/chaos-db";
const WORKERS: usize = 3;
const STEPS: i64 = 6;
/// Longer than the chaos lease (1 s), so the stopped holder is taken over.
const STOP_FOR: Duration = Duration::from_millis(1_500);
/// A round that has not ended by then has hung.
const ROUND_LIMIT: Duration = Duration::from_secs(60);

fn rounds() -> u64 {
    std::env::var("CHAOS_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(30)
}

/// A seeded stream of choices (SplitMix64): the same rounds every run.
struct Choices(u64);

impl Choices {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

struct Worker {
    child: Child,
    lines: tokio::task::JoinHandle<Vec<String>>,
}

fn spawn_worker(endpoint: &str, round: &str) -> Worker {
    let mut child = Command::new(env!("CARGO_BIN_EXE_spanner-mutex"))
        .args(["chaos-worker", "--endpoint", endpoint, "--database", DATABASE, "--name", round])
        .args(["--steps", &STEPS.to_string()])
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the CLI binary starts");
    let stdout = child.stdout.take().expect("piped");
    let lines = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut all = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            all.push(line);
        }
        all
    });
    Worker { child, lines }
}

fn signal(worker: &Worker, name: &str) {
    let pid = worker.child.id().expect("running").to_string();
    let status = std::process::Command::new("kill").args([name, &pid]).status().expect("kill runs");
    assert!(status.success(), "kill {name} {pid}");
}

/// One recorded step and the fence it was written under, in commit order.
#[derive(Debug)]
struct Applied {
    step: i64,
    fence: i64,
}

async fn history(store: &SpannerStore, round: &str) -> Vec<Applied> {
    let client = store.database_client().await;
    let statement =
        Statement::builder("SELECT step, fence FROM ChaosSteps WHERE round = @round ORDER BY committed_at, fence")
            .add_param("round", round)
            .build();
    let mut rows = client.single_use().build().execute_query(statement).await.expect("history query");
    let mut applied = Vec::new();
    while let Some(row) = rows.next().await.transpose().expect("row") {
        applied.push(Applied { step: row.get("step").expect("step"), fence: row.get("fence").expect("fence") });
    }
    applied
}

/// Everything wrong with one round's history and reports.
fn violations(applied: &[Applied], reports: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let mut per_step: BTreeMap<i64, usize> = BTreeMap::new();
    for a in applied {
        *per_step.entry(a.step).or_default() += 1;
    }
    for step in 0..STEPS {
        match per_step.get(&step) {
            Some(1) => {}
            count => found.push(format!("step {step} applied {} times", count.copied().unwrap_or(0))),
        }
    }
    for pair in applied.windows(2) {
        if pair[1].fence < pair[0].fence {
            found.push(format!("fence {} landed after fence {}: {:?}", pair[1].fence, pair[0].fence, pair));
        }
    }
    let complete = per_step.len() as i64 == STEPS;
    for report in reports.iter().filter(|l| l.starts_with("call ")) {
        let fields: Vec<&str> = report.split_whitespace().collect();
        let true_ = match fields.get(2).copied() {
            Some("executed") => {
                let fence: i64 = fields.get(3).and_then(|f| f.parse().ok()).unwrap_or(-1);
                complete && applied.iter().any(|a| a.fence == fence)
            }
            Some("done-by-other" | "not-needed") => complete,
            // Errors are reported while the nemesis works; whether they are true is not judged here.
            _ => true,
        };
        if !true_ {
            found.push(format!("untrue report: {report}"));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_processes_under_kills_and_stops_apply_every_step_exactly_once() {
    let emulator = Emulator::start().await.expect("the Spanner emulator must be installed (see README)");
    let store = emulator
        .create_database(
            "chaos-project",
            "chaos-instance",
            "chaos-db",
            "SpannerMutex",
            spanner_mutex::Timeouts::default(),
        )
        .await
        .expect("database");
    let ddl = std::process::Command::new(env!("CARGO_BIN_EXE_spanner-mutex")).arg("chaos-ddl").output().expect("ddl");
    let ddl = String::from_utf8(ddl.stdout).expect("utf-8").trim().to_owned();
    emulator.apply_ddl(DATABASE, vec![ddl]).await.expect("ChaosSteps");
    let endpoint = emulator.endpoint();
    let mut choices = Choices(0x5eed);
    let (mut kills, mut stops, mut all_violations) = (0u64, 0u64, Vec::new());
    let rounds = rounds();
    for r in 0..rounds {
        let round = format!("chaos-{r}");
        let mut workers: Vec<Worker> = (0..WORKERS).map(|_| spawn_worker(&endpoint, &round)).collect();
        let mut reports = Vec::new();
        // Two nemesis actions at seeded moments while the workers race and step.
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(150 + choices.below(500))).await;
            let mut alive = Vec::new();
            for (i, worker) in workers.iter_mut().enumerate() {
                if worker.child.try_wait().expect("status").is_none() {
                    alive.push(i);
                }
            }
            if alive.is_empty() {
                break;
            }
            let victim = alive[usize::try_from(choices.below(alive.len() as u64)).expect("small")];
            if choices.below(2) == 0 {
                let mut killed = workers.swap_remove(victim);
                killed.child.start_kill().expect("SIGKILL");
                let _ = killed.child.wait().await;
                reports.extend(killed.lines.await.expect("lines"));
                workers.push(spawn_worker(&endpoint, &round));
                kills += 1;
            } else {
                signal(&workers[victim], "-STOP");
                tokio::time::sleep(STOP_FOR).await;
                signal(&workers[victim], "-CONT");
                stops += 1;
            }
        }
        for mut worker in workers {
            let status = tokio::time::timeout(ROUND_LIMIT, worker.child.wait())
                .await
                .unwrap_or_else(|_| panic!("round {r}: a worker hung"))
                .expect("status");
            reports.extend(worker.lines.await.expect("lines"));
            assert!(status.success(), "round {r}: a worker failed: {reports:?}");
        }
        let applied = history(&store, &round).await;
        let found = violations(&applied, &reports);
        if !found.is_empty() {
            all_violations.push(format!("round {r}: {found:?}\nhistory: {applied:?}\nreports: {reports:?}"));
        }
    }
    println!("rounds={rounds} kills={kills} pauses={stops} restarts=0 violations={}", all_violations.len());
    assert!(all_violations.is_empty(), "{}", all_violations.join("\n\n"));
    assert!(kills > 0 && stops > 0, "the nemesis acted: {kills} kills, {stops} stops");
}

#[test]
fn the_checker_finds_a_step_applied_twice_a_stale_fence_and_an_untrue_report() {
    let applied =
        |pairs: &[(i64, i64)]| -> Vec<Applied> { pairs.iter().map(|&(step, fence)| Applied { step, fence }).collect() };
    let clean = applied(&[(0, 1), (1, 1), (2, 2), (3, 2), (4, 2), (5, 3)]);
    assert_eq!(
        violations(&clean, &["call 900 executed 3".into(), "call 950 done-by-other".into()]),
        Vec::<String>::new()
    );
    let twice = applied(&[(0, 1), (1, 1), (1, 2), (2, 2), (3, 2), (4, 2), (5, 2)]);
    assert_eq!(violations(&twice, &[]).len(), 1, "step 1 twice");
    let stale = applied(&[(0, 2), (1, 1), (2, 2), (3, 2), (4, 2), (5, 2)]);
    assert_eq!(violations(&stale, &[]).len(), 1, "fence 1 after fence 2");
    let missing = applied(&[(0, 1)]);
    let found = violations(&missing, &["call 10 executed 1".into()]);
    assert!(found.iter().any(|v| v.starts_with("untrue report")), "{found:?}");
}
