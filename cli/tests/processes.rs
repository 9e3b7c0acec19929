//! The CLI against a running emulator, as a user runs it. A missing emulator fails the test: it never skips.

use spanner_mutex::emulator::Emulator;

#[tokio::test]
async fn init_then_status_and_stress_on_a_running_emulator_need_nothing_created_by_hand() {
    // A running emulator with nothing in it, reached through the environment only, as a user would start one.
    let emulator = Emulator::start().await.expect("the Spanner emulator must be installed (see README)");
    let host = emulator.endpoint().trim_start_matches("http://").to_owned();
    let rest = emulator.rest_endpoint();
    let config = std::env::temp_dir().join(format!("spanner-mutex-cli-init-{}.toml", std::process::id()));
    std::fs::write(&config, "name = \"by-hand\"\nproject_id = \"hand-project\"\ninstance_id = \"hand-instance\"\ndatabase_id = \"hand-db\"\n")
        .expect("written");
    let cli = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_spanner-mutex"));
        command.args(args).env("SPANNER_EMULATOR_HOST", &host).env("SPANNER_EMULATOR_REST", &rest).output()
    };
    let config = config.to_string_lossy().into_owned();
    let app_ddl = "CREATE TABLE Applied (id STRING(64) NOT NULL) PRIMARY KEY (id)";
    for (run, expected) in [
        (
            "first",
            [
                "created projects/hand-project/instances/hand-instance/databases/hand-db with tables SpannerMutex and DemoEffects",
                "applied: CREATE TABLE Applied",
            ],
        ),
        // The second run finds everything there, says so, and still succeeds.
        ("second", ["databases/hand-db already has table SpannerMutex", "exists already: CREATE TABLE Applied"]),
    ] {
        let init = cli(&["init", "--config", &config, "--ddl", app_ddl]).await.expect("init ran");
        let stdout = String::from_utf8_lossy(&init.stdout);
        assert!(init.status.success(), "{run}: {stdout}{}", String::from_utf8_lossy(&init.stderr));
        assert_eq!(stdout.lines().count(), 2, "{run}: {stdout}");
        for line in expected {
            assert!(stdout.contains(line), "{run}: {stdout}");
        }
    }
    let status = cli(&["status", "--config", &config]).await.expect("status ran");
    assert_eq!(String::from_utf8_lossy(&status.stdout).lines().next(), Some("by-hand: free: never used"));
    let all = cli(&["status", "--config", &config, "--all"]).await.expect("status --all ran");
    assert_eq!(String::from_utf8_lossy(&all.stdout), "no mutex in table SpannerMutex yet\n");
    let log = std::env::temp_dir().join(format!("spanner-mutex-cli-run-once-{}.log", std::process::id()));
    let run = cli(&["run-once", "--config", &config, "--file", &log.to_string_lossy()]).await.expect("run-once ran");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let all = cli(&["status", "--config", &config, "--all"]).await.expect("status --all ran");
    let all = String::from_utf8_lossy(&all.stdout);
    assert!(all.starts_with("by-hand: free: DONE by ") && all.lines().count() == 1, "{all}");
    // The section's output is lost: while the row is DONE, another run reports it done and does not run it.
    std::fs::remove_file(&log).expect("removed");
    let run_once = || cli(&["run-once", "--config", &config, "--file", log.to_str().expect("a UTF-8 path")]);
    let done = run_once().await.expect("run-once ran");
    assert!(String::from_utf8_lossy(&done.stdout).contains("done by"), "{}", String::from_utf8_lossy(&done.stdout));
    assert!(!log.exists());
    // An operator names the fence `status` shows. Nothing to force-release on a DONE row; a reset, recorded on the
    // row, lets the next run ask its need check and execute.
    let status = cli(&["status", "--config", &config]).await.expect("status ran");
    let fence = fence_in(&String::from_utf8_lossy(&status.stdout));
    let release =
        cli(&["force-release", "--config", &config, "--fence", &fence, "--reason", "stuck"]).await.expect("ran");
    assert_eq!(release.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&release.stderr);
    assert!(
        stderr.contains("nothing to do: the row is DONE; only a STARTED row (a lease) can be force-released"),
        "{stderr}"
    );
    let reset = cli(&["reset", "--config", &config, "--fence", &fence, "--reason", "run it again", "--by", "alice"])
        .await
        .expect("reset ran");
    let stdout = String::from_utf8_lossy(&reset.stdout);
    assert!(reset.status.success(), "{stdout}{}", String::from_utf8_lossy(&reset.stderr));
    assert!(stdout.contains(" reset by alice: run it again"), "{stdout}");
    let recorded =
        stdout.lines().nth(1).is_some_and(|l| l.starts_with("by-hand: free: reset by alice: run it again at "));
    assert!(recorded, "{stdout}");
    let again = run_once().await.expect("run-once ran");
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(std::fs::read_to_string(&log).expect("the section ran again after the reset"), "ran by-hand\n");
    // A live holder in this process; an operator force-releases its lease from the command line.
    let text = std::fs::read_to_string(&config).expect("the config");
    let mutexes = spanner_mutex::Mutexes::builder()
        .config(spanner_mutex::MutexConfig::parse(&text).expect("valid"))
        .emulator_host(host.clone())
        .connect()
        .await
        .expect("connects");
    let guard = mutexes.mutex("held-by-hand").expect("a valid name").acquire().await.expect("acquired");
    let fence = guard.fence().get().to_string();
    let release = cli(&["force-release", "--config", &config, "held-by-hand", "--fence", &fence, "--reason", "hung"])
        .await
        .expect("force-release ran");
    let stdout = String::from_utf8_lossy(&release.stdout);
    assert!(release.status.success(), "{stdout}{}", String::from_utf8_lossy(&release.stderr));
    assert!(stdout.contains("held-by-hand: lease of ") && stdout.contains(" force-released by "), "{stdout}");
    assert!(stdout.contains("held-by-hand: free: force-released by "), "{stdout}");
    // Its holder's next fenced write is refused.
    let refused = guard.commit(Vec::new()).await;
    assert!(matches!(refused, Err(spanner_mutex::FencedError::Rejected { .. })), "{refused:?}");
    let stress = cli(&["stress", "--clients", "20"]).await.expect("stress ran");
    let stdout = String::from_utf8_lossy(&stress.stdout);
    assert!(stress.status.success(), "{stdout}{}", String::from_utf8_lossy(&stress.stderr));
    assert!(stdout.contains("executions=1 (must be 1)") && !stdout.contains("emulator start"), "{stdout}");
    assert!(stdout.contains("errors=0"), "{stdout}");
}

/// The fence in a `status` line: the digits after "with fence ".
fn fence_in(status: &str) -> String {
    let after = status.split("with fence ").nth(1).unwrap_or_else(|| panic!("no fence in {status:?}"));
    after.chars().take_while(char::is_ascii_digit).collect()
}
