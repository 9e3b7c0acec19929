//! Every bad input a newcomer met, run as a newcomer runs it: a config file with a mistake, a moved or misspelt key,
//! py-spanner-mutex's JSON, an emulator address where nothing listens or where the connection closes, a missing
//! credentials file. Each must end with exit status 1 and one line in words on stderr (no Debug text, no gRPC or
//! HTTP library's error text), and must write nothing: not the file a run would append to, not the config file,
//! nothing else in its directory.

use std::path::{Path, PathBuf};

/// One bad input: what the config file holds (if the command reads one), the command's arguments after
/// `--config FILE`, or alone when `config` is `None`, and words the error line must contain.
struct BadInput {
    what: &'static str,
    config: Option<&'static str>,
    args: &'static [&'static str],
    /// The emulator address: `Nothing` listens, or a listener that `Closes` each connection at once.
    emulator: Emulator,
    says: &'static [&'static str],
}

#[derive(Clone, Copy, PartialEq)]
enum Emulator {
    /// The variable unset, no credentials file (Cloud Spanner is tried).
    Unset,
    /// The variable set to an address where nothing listens.
    Nothing,
    /// The variable set to an address that accepts and closes each connection at once.
    Closes,
    /// The variable unset, and credentials pointing at a file that is not there.
    MissingKeyFile,
}

const DATABASE: &str = "name = \"x\"\nproject_id = \"p-1\"\ninstance_id = \"i-1\"\ndatabase_id = \"d-1\"\n";

const fn run_once(what: &'static str, config: &'static str, says: &'static [&'static str]) -> BadInput {
    BadInput { what, config: Some(config), args: &["run-once"], emulator: Emulator::Unset, says }
}

const BAD_INPUTS: &[BadInput] = &[
    run_once(
        "a renewal interval the TTL leaves no room for",
        "name = \"x\"\nproject_id = \"p-1\"\ninstance_id = \"i-1\"\ndatabase_id = \"d-1\"\n[lease]\nttl_ms = 3000\nrenew_interval_ms = 3000\n",
        &["renew_interval_ms = 3000 must be less than", "does not set safety_margin_ms", "derived", "[lease]"],
    ),
    run_once(
        "an RPC bound past the default transaction bound",
        "name = \"x\"\nproject_id = \"p-1\"\ninstance_id = \"i-1\"\ndatabase_id = \"d-1\"\n[timeouts]\nrpc_ms = 3000\n",
        &["timeouts.rpc_ms = 3000", "does not set transaction_ms, so it is 2000, the default", "[timeouts]"],
    ),
    run_once(
        "a lease key at the top of the file",
        "name = \"x\"\nproject_id = \"p-1\"\ninstance_id = \"i-1\"\ndatabase_id = \"d-1\"\nunavailable_ms = 5000\n",
        &["unavailable_ms belongs under [lease]"],
    ),
    run_once(
        "a misspelt key",
        "name = \"x\"\nproject_id = \"p-1\"\ninstance_id = \"i-1\"\ndatabase_id = \"d-1\"\n[lease]\ntll_ms = 5000\n",
        &["unknown field `tll_ms`", "in `lease`"],
    ),
    run_once(
        "no name",
        "project_id = \"p-1\"\ninstance_id = \"i-1\"\ndatabase_id = \"d-1\"\n",
        &["missing field `name`"],
    ),
    run_once(
        "a TOML syntax error",
        "name = \"x\"\nproject_id = \"p-1\"\ninstance_id = \"i-1\"\ndatabase_id = \n",
        &["TOML: line 4, column"],
    ),
    run_once(
        "a database id with capitals and a space",
        "name = \"x\"\nproject_id = \"p-1\"\ninstance_id = \"i-1\"\ndatabase_id = \"My DB\"\n",
        &["invalid database_id", "lowercase"],
    ),
    run_once(
        "py-spanner-mutex's JSON without mutex_uuid",
        r#"{"instance_id": "i-1", "database_id": "d-1", "table_id": "t", "project_id": "p-1",
            "mutex_display_name": "m", "mutex_ttl_in_secs": 3, "mutex_staleness_in_secs": 600,
            "mutex_wait_time_in_secs": 5, "mutex_max_retries": 10}"#,
        &["missing field `mutex_uuid`"],
    ),
    BadInput {
        // Its 3 s TTL fits (the error is the address, read after the config was accepted).
        what: "py-spanner-mutex's JSON with a 3 s TTL, and nothing at the emulator address",
        config: Some(
            r#"{"mutex_uuid": "u-1", "instance_id": "i-1", "database_id": "d-1", "table_id": "t", "project_id": "p-1",
                "mutex_ttl_in_secs": 3, "mutex_staleness_in_secs": 600, "mutex_wait_time_in_secs": 5,
                "mutex_max_retries": 10}"#,
        ),
        args: &["status"],
        emulator: Emulator::Nothing,
        says: &["SPANNER_EMULATOR_HOST", "nothing listens"],
    },
    BadInput {
        what: "a config file that is not there",
        config: None,
        args: &["status", "--config", "no-such-mutex.toml"],
        emulator: Emulator::Unset,
        says: &["cannot read the config file no-such-mutex.toml: there is no such file"],
    },
    BadInput {
        what: "demo flags whose margin eats the TTL",
        config: None,
        args: &["demo", "--store", "memory", "--ttl-ms", "3000", "--safety-margin-ms", "3000"],
        emulator: Emulator::Unset,
        says: &["invalid lease flags: --safety-margin-ms = 3000 must be less than --ttl-ms = 3000"],
    },
    BadInput {
        what: "run-once with nothing at the emulator address",
        config: Some(DATABASE),
        args: &["run-once"],
        emulator: Emulator::Nothing,
        says: &["SPANNER_EMULATOR_HOST", "connection refused"],
    },
    BadInput {
        what: "status with nothing at the emulator address",
        config: Some(DATABASE),
        args: &["status"],
        emulator: Emulator::Nothing,
        says: &["SPANNER_EMULATOR_HOST", "nothing listens"],
    },
    BadInput {
        what: "init with nothing at the emulator address",
        config: Some(DATABASE),
        args: &["init"],
        emulator: Emulator::Nothing,
        says: &["SPANNER_EMULATOR_HOST", "nothing listens"],
    },
    BadInput {
        what: "demo with nothing at the emulator address",
        config: None,
        args: &["demo"],
        emulator: Emulator::Nothing,
        says: &["SPANNER_EMULATOR_HOST", "nothing listens"],
    },
    BadInput {
        what: "stress with nothing at the emulator address",
        config: None,
        args: &["stress"],
        emulator: Emulator::Nothing,
        says: &["SPANNER_EMULATOR_HOST", "nothing listens"],
    },
    BadInput {
        what: "status where the connection closes while connecting",
        config: Some(DATABASE),
        args: &["status"],
        emulator: Emulator::Closes,
        says: &["SPANNER_EMULATOR_HOST"],
    },
    BadInput {
        what: "run-once where the connection closes while connecting",
        config: Some(DATABASE),
        args: &["run-once"],
        emulator: Emulator::Closes,
        says: &["SPANNER_EMULATOR_HOST"],
    },
    BadInput {
        what: "init on Cloud Spanner with a credentials file that is not there",
        config: Some(DATABASE),
        args: &["init"],
        emulator: Emulator::MissingKeyFile,
        says: &["no usable Google Cloud credentials", "GOOGLE_APPLICATION_CREDENTIALS"],
    },
];

/// Text that only a Debug format or a library's raw error would print.
const RAW: &[&str] =
    &["{", "}", "Some(", "None", "Error(", "Os {", "tonic::", "hyper::", "ConnectError", "panicked", "backtrace"];

/// The files under `dir`, by name.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("the case's directory")
        .map(|entry| entry.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A listener that accepts connections and closes each at once, on its own thread for the life of the test.
fn closing_listener() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let address = listener.local_addr().expect("has an address").to_string();
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            drop(connection);
        }
    });
    address
}

#[test]
fn every_bad_input_a_newcomer_met_ends_in_one_line_in_words_and_writes_nothing() {
    let nothing = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        listener.local_addr().expect("has an address").to_string()
    };
    let closes = closing_listener();
    for (index, input) in BAD_INPUTS.iter().enumerate() {
        let what = input.what;
        let dir: PathBuf = std::env::temp_dir().join(format!("spanner-mutex-newcomer-{}-{index}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("created");
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_spanner-mutex"));
        command.current_dir(&dir).args(input.args).env("RUST_BACKTRACE", "1");
        if let Some(text) = input.config {
            let name = if text.starts_with('{') { "mutex.json" } else { "mutex.toml" };
            std::fs::write(dir.join(name), text).expect("written");
            command.args(["--config", name]);
            if input.args == ["run-once"] {
                command.args(["--file", "appended.txt"]);
            }
        }
        command.env_remove("SPANNER_EMULATOR_HOST").env_remove("GOOGLE_APPLICATION_CREDENTIALS");
        match input.emulator {
            Emulator::Unset => {}
            Emulator::Nothing => {
                command.env("SPANNER_EMULATOR_HOST", &nothing);
            }
            Emulator::Closes => {
                command.env("SPANNER_EMULATOR_HOST", &closes);
            }
            Emulator::MissingKeyFile => {
                command.env("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json");
            }
        }
        let before = files(&dir);
        let output = command.output().expect("the CLI runs");
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert_eq!(output.status.code(), Some(1), "{what}: {stdout}{stderr}");
        let line = stderr.strip_suffix('\n').unwrap_or(&stderr);
        assert!(line.starts_with("error: ") && !line.contains('\n'), "{what}: not one line: {stderr}");
        for words in input.says {
            assert!(line.contains(words), "{what}: {line:?} does not say {words:?}");
        }
        for raw in RAW {
            assert!(!line.contains(raw), "{what}: {line:?} has {raw:?}");
        }
        assert_eq!(line.matches("error").count(), 1, "{what}: a sentence said twice: {line}");
        // init prints the DDL it would run before it connects; nothing else prints to stdout on a failure.
        if input.args != ["init"] {
            assert_eq!(stdout, "", "{what}");
        }
        assert_eq!(files(&dir), before, "{what}: wrote a file");
        if let Some(text) = input.config {
            let name = if text.starts_with('{') { "mutex.json" } else { "mutex.toml" };
            assert_eq!(std::fs::read_to_string(dir.join(name)).expect("still there"), text, "{what}");
        }
        std::fs::remove_dir_all(&dir).expect("removed");
    }
}
