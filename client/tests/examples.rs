//! The examples as a user runs them: real processes against the emulator. A missing emulator fails the tests:
//! they never skip.

use spanner_mutex::Timeouts;
use spanner_mutex::emulator::Emulator;
use std::path::PathBuf;

const DATABASE: &str = "projects/example-project/instances/example-instance/databases/example-db";

/// The example's binary, built by `cargo test` beside this test's own (built here if a filter skipped it).
fn example(name: &str) -> PathBuf {
    let deps = std::env::current_exe().expect("test path").parent().expect("deps").to_path_buf();
    let profile_dir = deps.parent().expect("profile dir").to_path_buf();
    let binary = profile_dir.join("examples").join(name);
    if !binary.is_file() {
        let mut build = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        build.args(["build", "-p", "spanner-mutex", "--example", name]);
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        assert!(build.status().expect("cargo runs").success(), "building example {name}");
    }
    binary
}

/// An emulator with the lease table, the tables the examples write, and a config file naming them.
async fn emulator_with(tables: &[&str]) -> (Emulator, PathBuf) {
    let emulator = Emulator::start().await.expect("the Spanner emulator must be installed (see README)");
    let timeouts = Timeouts { connect_ms: 5_000, rpc_ms: 1_000, transaction_ms: 2_000 };
    emulator
        .create_database("example-project", "example-instance", "example-db", "SpannerMutex", timeouts)
        .await
        .expect("database created");
    emulator.apply_ddl(DATABASE, tables.iter().map(|t| (*t).to_owned()).collect()).await.expect("tables");
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
}
