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
fn lease_flags_left_out_follow_the_ttl() {
    // A short TTL alone fits: the margin and the renewal interval follow it.
    let (code, stderr) = run(&["demo", "--store", "memory", "--clients", "2", "--ttl-ms", "100"], &[]);
    assert_eq!((code, stderr.as_str()), (0, ""));
}

/// A config file naming a database, written for one test.
fn config_file(test: &str) -> String {
    let config = std::env::temp_dir().join(format!("spanner-mutex-cli-{test}-{}.toml", std::process::id()));
    std::fs::write(&config, "name = \"x\"\nproject_id = \"p-1\"\ninstance_id = \"i-1\"\ndatabase_id = \"d-1\"\n")
        .expect("written");
    config.to_string_lossy().into_owned()
}

#[test]
fn an_emulator_without_a_rest_gateway_where_expected_says_what_to_set() {
    // Something listens at the gRPC address, nothing at its port + 10: init cannot find the REST gateway it needs
    // and says which variable to set.
    let grpc = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let host = grpc.local_addr().expect("has an address").to_string();
    let rest = format!("127.0.0.1:{}", grpc.local_addr().expect("has an address").port() + 10);
    let (code, stderr) = run(&["init", "--config", &config_file("no-rest")], &[("SPANNER_EMULATOR_HOST", &host)]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("nothing answers HTTP at {rest}")) && stderr.contains("SPANNER_EMULATOR_REST"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn a_closed_pipe_ends_the_demo_quietly() {
    use std::io::Read as _;
    let mut demo = std::process::Command::new(env!("CARGO_BIN_EXE_spanner-mutex"))
        .args(["demo", "--store", "memory"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the CLI runs");
    let mut stdout = demo.stdout.take().expect("piped");
    let mut first = [0u8; 6];
    stdout.read_exact(&mut first).expect("the demo prints");
    drop(stdout);
    let output = demo.wait_with_output().expect("the CLI ends");
    assert_eq!(&first, b"store:");
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
}

#[test]
fn init_without_an_emulator_or_credentials_prints_the_ddl_and_gives_up_after_connect_ms() {
    // No emulator and no Google Cloud credentials here: init still prints the DDL it would run, then ends with
    // one line (the bound, or the missing credentials) instead of the client's minute of retries.
    let config = std::env::temp_dir().join(format!("spanner-mutex-cli-no-spanner-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        "name = \"x\"\nproject_id = \"p-1\"\ninstance_id = \"i-1\"\ndatabase_id = \"d-1\"\n[timeouts]\nconnect_ms = 500\n",
    )
    .expect("written");
    let init = |credentials: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_spanner-mutex"));
        command.args(["init", "--config", &config.to_string_lossy()]).env_remove("SPANNER_EMULATOR_HOST");
        match credentials {
            Some(file) => command.env("GOOGLE_APPLICATION_CREDENTIALS", file),
            None => command.env_remove("GOOGLE_APPLICATION_CREDENTIALS"),
        };
        let output = command.output().expect("the CLI runs");
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
        assert!(stdout.contains("CREATE TABLE SpannerMutex ("), "{stdout}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        stderr.into_owned()
    };
    // No credentials to find: the bound, or the missing credentials, in one line.
    let stderr = init(None);
    assert!(stderr.contains("connect_ms = 500") || stderr.contains("no usable Google Cloud credentials"), "{stderr}");
    // A key file that is not there: said once, in words, with what to do.
    let stderr = init(Some("/nonexistent/key.json"));
    assert!(stderr.starts_with("error: no usable Google Cloud credentials"), "{stderr}");
    assert!(stderr.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{stderr}");
}
