//! The examples as a user runs them: real processes against the emulator. A missing emulator fails the tests:
//! they never skip.

use spanner_mutex::Timeouts;
use spanner_mutex::emulator::Emulator;
use std::path::PathBuf;

const DATABASE: &str = "projects/example-project/instances/example-instance/databases/example-db";

/// The example's binary beside this test's own, brought up to date by cargo (a filtered `cargo test` skips
/// examples, and a stale one would test old code).
fn example(name: &str) -> PathBuf {
    let test = std::env::current_exe().expect("test path");
    let profile_dir = test.parent().and_then(std::path::Path::parent).expect("profile dir").to_path_buf();
    let mut build = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build.args(["build", "-q", "--workspace", "--example", name]);
    if profile_dir.ends_with("release") {
        build.arg("--release");
    }
    assert!(build.status().expect("cargo runs").success(), "building example {name}");
    profile_dir.join("examples").join(name)
}

/// An emulator with the lease table, the tables the examples write, and a config file naming them.
async fn emulator_with(tables: &[&str]) -> (Emulator, PathBuf) {
    let emulator = Emulator::start().await.expect("the Spanner emulator must be installed (see README)");
    let timeouts = Timeouts { connect_ms: 5_000, rpc_ms: 1_000, transaction_ms: 2_000 };
    emulator
        .create_database("example-project", "example-instance", "example-db", "SpannerMutex", timeouts)
        .await
        .expect("database created");
    if !tables.is_empty() {
        emulator.apply_ddl(DATABASE, tables.iter().map(|t| (*t).to_owned()).collect()).await.expect("tables");
    }
    let config = std::env::temp_dir().join(format!("spanner-mutex-example-{}.toml", std::process::id()));
    let text = "name = \"example\"\nproject_id = \"example-project\"\ninstance_id = \"example-instance\"\n\
                database_id = \"example-db\"\n[lease]\nttl_ms = 5000\nrenew_interval_ms = 1500\nsafety_margin_ms = 500\n";
    std::fs::write(&config, text).expect("config written");
    (emulator, config)
}

fn host(emulator: &Emulator) -> String {
    emulator.endpoint().trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn the_migration_example_run_by_three_processes_applies_each_migration_once() {
    let (emulator, config) = emulator_with(&["CREATE TABLE Applied (id STRING(64) NOT NULL) PRIMARY KEY (id)"]).await;
    let binary = example("migrate");
    let runs: Vec<_> = (0..3)
        .map(|_| {
            tokio::process::Command::new(&binary).arg(&config).env("SPANNER_EMULATOR_HOST", host(&emulator)).output()
        })
        .collect();
    let mut outcomes = Vec::new();
    for run in runs {
        let output = run.await.expect("example ran");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        outcomes.push(String::from_utf8_lossy(&output.stdout).trim().to_owned());
    }
    let executed = outcomes.iter().filter(|o| o.starts_with("executed")).count();
    assert_eq!(executed, 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| o.starts_with("executed") || o == "not needed" || o.starts_with("done by")));
    // Run again later: nothing left to apply.
    let again = tokio::process::Command::new(&binary)
        .arg(&config)
        .env("SPANNER_EMULATOR_HOST", host(&emulator))
        .output()
        .await
        .expect("ran");
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), "not needed");
    let store = store_of(&emulator).await;
    let query = google_cloud_spanner::statement::Statement::builder("SELECT id FROM Applied ORDER BY id").build();
    let mut rows = store.database_client().await.single_use().build().execute_query(query).await.expect("query");
    let mut applied = Vec::<String>::new();
    while let Some(row) = rows.next().await.transpose().expect("row") {
        applied.push(row.get("id").expect("id"));
    }
    assert_eq!(applied, ["001-create-users", "002-backfill-emails", "003-drop-legacy"]);
}

const LEADER_WRITES: &str = "CREATE TABLE LeaderWrites (term INT64 NOT NULL, seq INT64 NOT NULL, pid INT64 NOT NULL, \
                             committed_at TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp = true)) PRIMARY KEY (term, seq)";

/// A leader example process and the lines it prints, as they come.
struct Candidate {
    child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Candidate {
    fn start(binary: &std::path::Path, config: &std::path::Path, host: &str) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(binary)
            .arg(config)
            .env("SPANNER_EMULATOR_HOST", host)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("example starts");
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                let _ = tx.send(line);
            }
        });
        Self { child, lines }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill").args([signal, &self.pid().to_string()]).status();
        assert!(status.expect("kill runs").success());
    }
}

/// The first line starting with `prefix` any candidate prints within `within`, and who printed it.
async fn first_line(candidates: &mut [Candidate], prefix: &str, within: std::time::Duration) -> (usize, String) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        for (i, c) in candidates.iter_mut().enumerate() {
            while let Ok(line) = c.lines.try_recv() {
                if line.starts_with(prefix) {
                    return (i, line);
                }
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "nobody printed {prefix:?} within {within:?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn term_of(line: &str) -> i64 {
    line.split_whitespace().nth(2).and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("a term in {line:?}"))
}

#[tokio::test]
async fn the_leader_example_fails_over_after_a_kill_and_a_stopped_leaders_term_never_writes_after_the_next() {
    let (emulator, config) = emulator_with(&[LEADER_WRITES]).await;
    let (binary, host) = (example("leader"), host(&emulator));
    let mut candidates: Vec<_> = (0..3).map(|_| Candidate::start(&binary, &config, &host)).collect();
    let long = std::time::Duration::from_secs(30);
    let (first, line) = first_line(&mut candidates, "leading", long).await;
    let first_term = term_of(&line);
    // SIGKILL the leader: it cannot resign, so its lease must expire.
    candidates[first].signal("-KILL");
    let killed_at = std::time::Instant::now();
    let (second, line) = first_line(&mut candidates, "leading", long).await;
    let failover = killed_at.elapsed();
    let second_term = term_of(&line);
    assert!(second != first && second_term > first_term, "{first}:{first_term} then {second}:{second_term}");
    // SIGSTOP the new leader past its lease: the third takes over; once resumed, the stopped leader's writes of
    // its old term are refused (its lock-lost or a refused write ends its term).
    // Stopped mid-term, after some writes, so there are writes of its term to compare.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    candidates[second].signal("-STOP");
    let (third, line) = first_line(&mut candidates, "leading", long).await;
    let third_term = term_of(&line);
    assert!(third != second && third_term > second_term);
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    candidates[second].signal("-CONT");
    let (ended, line) = first_line(&mut candidates, "lost term", long).await;
    assert_eq!((ended, term_of(&line)), (second, second_term));
    // Let the new leader write on, then compare commit times: no write of the stopped term after the next term's first.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let store = store_of(&emulator).await;
    let sql = "SELECT (SELECT MAX(committed_at) FROM LeaderWrites WHERE term = @old) < \
               (SELECT MIN(committed_at) FROM LeaderWrites WHERE term = @new) AS ordered, \
               (SELECT COUNT(*) FROM LeaderWrites WHERE term = @old) AS old_writes, \
               (SELECT COUNT(*) FROM LeaderWrites WHERE term = @new) AS new_writes";
    let statement = google_cloud_spanner::statement::Statement::builder(sql)
        .add_param("old", second_term)
        .add_param("new", third_term)
        .build();
    let mut rows = store.database_client().await.single_use().build().execute_query(statement).await.expect("query");
    let row = rows.next().await.transpose().expect("row").expect("one row");
    let ordered: Option<bool> = row.get("ordered").expect("ordered");
    let writes: (i64, i64) = (row.get("old_writes").expect("old"), row.get("new_writes").expect("new"));
    assert!(writes.0 > 0 && writes.1 > 0, "both terms must have written: {writes:?}");
    assert_eq!(ordered, Some(true), "a write of term {second_term} landed after term {third_term} began writing");
    println!("failover after SIGKILL: {} ms (ttl 5000 ms, poll 400 + jitter <= 250 ms)", failover.as_millis());
    // SIGTERM, as Cloud Run and GKE send: the leader resigns and exits cleanly, and the other candidate leads.
    candidates[third].signal("-TERM");
    let terminated_at = std::time::Instant::now();
    let status = tokio::time::timeout(long, candidates[third].child.wait()).await.expect("exits").expect("waited");
    assert!(status.success(), "{status}");
    let (fourth, line) = first_line(&mut candidates, "leading", long).await;
    assert!(fourth == second && term_of(&line) > third_term, "{fourth}: {line}");
    println!("hand-over after SIGTERM: {} ms", terminated_at.elapsed().as_millis());
}

#[tokio::test]
async fn the_lock_example_run_twice_at_once_runs_the_job_one_after_the_other() {
    let (emulator, config) = emulator_with(&[]).await;
    let binary = example("lock");
    // Jobs of 1.5 s: the second instance waits for the first's release, then runs under a greater fence.
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let mut command = tokio::process::Command::new(&binary);
            command.arg(&config).arg("1500").env("SPANNER_EMULATOR_HOST", host(&emulator)).output()
        })
        .collect();
    let mut fences = Vec::new();
    for run in runs {
        let output = run.await.expect("example ran");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
        let fence = |prefix: &str| stdout.lines().find_map(|l| l.strip_prefix(prefix)).map(str::to_owned);
        let locked = fence("locked with fence ").expect("locked");
        assert_eq!(fence("released fence ").as_deref(), Some(locked.as_str()), "{stdout}");
        fences.push(locked.parse::<u64>().expect("a fence"));
    }
    fences.sort_unstable();
    assert!(fences[0] < fences[1], "two holders with one fence: {fences:?}");
}

/// The example database's store on `emulator`, through the public builder.
async fn store_of(emulator: &Emulator) -> spanner_mutex::SpannerStore {
    spanner_mutex::SpannerStore::builder()
        .database(DATABASE)
        .emulator_host(emulator.endpoint())
        .connect()
        .await
        .expect("connects")
}
