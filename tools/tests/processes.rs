//! Worker processes against one emulator: run-once across processes. A missing emulator fails the test: it
//! never skips.

use google_cloud_spanner::statement::Statement;
use spanner_mutex::Timeouts;
use spanner_mutex::emulator::Emulator;

const DATABASE: &str = "projects/test-project/instances/test-instance/databases/test-db";

#[tokio::test]
async fn twenty_clients_across_four_processes_execute_once() {
    let emulator = Emulator::start().await.expect("the Spanner emulator must be installed (see README)");
    let timeouts = Timeouts { connect_ms: 5_000, rpc_ms: 1_000, transaction_ms: 3_000 };
    let store = emulator
        .create_database("test-project", "test-instance", "test-db", "SpannerMutex", timeouts)
        .await
        .expect("database created");
    let effects = "CREATE TABLE Effects (id STRING(64) NOT NULL, writer STRING(36) NOT NULL, fence INT64 NOT NULL) \
                   PRIMARY KEY (id)";
    emulator.apply_ddl(DATABASE, vec![effects.into()]).await.expect("effects table");
    let children: Vec<_> = (0..4)
        .map(|_| {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_spanner-mutex-dev"))
                .args(["stress-worker", "--endpoint", &emulator.endpoint(), "--database", DATABASE])
                .args(["--name", "procs", "--clients", "5", "--effects-table", "Effects"])
                .output()
        })
        .collect();
    let mut outcomes = Vec::new();
    for child in children {
        let output = child.await.expect("worker ran");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        outcomes.extend(String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned));
    }
    let executed = outcomes.iter().filter(|l| *l == "executed").count();
    let errors: Vec<_> = outcomes.iter().filter(|l| l.starts_with("error")).collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(executed, 1, "{outcomes:?}");
    let client = store.database_client().await;
    let statement =
        Statement::builder("SELECT COUNT(*) AS n FROM Effects WHERE id = @id").add_param("id", "procs").build();
    let mut rows = client.single_use().build().execute_query(statement).await.expect("query");
    let effects: i64 = rows.next().await.transpose().expect("row").expect("one row").get("n").expect("n");
    assert_eq!(effects, 1);
}
