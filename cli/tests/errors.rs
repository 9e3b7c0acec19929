//! The CLI's failures, as a person sees them: one line saying what is wrong and what to do, exit status 1, no
//! Rust backtrace whatever `RUST_BACKTRACE` says.

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_spanner-mutex"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .envs(env.iter().copied())
        .output()
        .expect("the CLI runs");
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).trim().to_owned())
}

#[test]
fn bad_lease_flags_name_the_flags() {
    let (code, stderr) = run(&["demo", "--store", "memory", "--ttl-ms", "100"], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr, "error: invalid lease flags: --safety-margin-ms = 500 must be less than --ttl-ms = 100");
}

#[test]
fn a_missing_config_file_is_named() {
    let (code, stderr) = run(&["status", "--config", "/nonexistent/mutex.toml"], &[]);
    assert_eq!(code, 1);
    assert!(stderr.starts_with("error: reading /nonexistent/mutex.toml") && !stderr.contains("backtrace"), "{stderr}");
}

#[test]
fn an_emulator_without_a_rest_gateway_where_expected_says_what_to_set() {
    // Nothing listens on port 1 (+10): init cannot find the REST gateway it needs and says which variable to set.
    let config = std::env::temp_dir().join(format!("spanner-mutex-cli-errors-{}.toml", std::process::id()));
    std::fs::write(&config, "name = \"x\"\nproject_id = \"p-1\"\ninstance_id = \"i-1\"\ndatabase_id = \"d-1\"\n")
        .expect("written");
    let config = config.to_string_lossy().into_owned();
    let (code, stderr) = run(&["init", "--config", &config], &[("SPANNER_EMULATOR_HOST", "127.0.0.1:1")]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("nothing answers HTTP at 127.0.0.1:11") && stderr.contains("SPANNER_EMULATOR_REST"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
