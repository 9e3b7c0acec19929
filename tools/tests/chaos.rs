//! A small Jepsen: `spanner-mutex-dev chaos` runs real worker processes against the emulator under a nemesis that
//! SIGKILLs and SIGSTOPs workers, freezes the emulator and restarts it, and checks the recorded history (see
//! `tools/src/chaos.rs`). CI runs 30 rounds; `CHAOS_ROUNDS=N` here, or `spanner-mutex-dev chaos --rounds N`, for
//! long runs.

#[test]
fn real_processes_under_kills_stops_outages_and_restarts_apply_every_step_exactly_once() {
    let rounds = std::env::var("CHAOS_ROUNDS").unwrap_or_else(|_| "30".into());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_spanner-mutex-dev"))
        .args(["chaos", "--rounds", &rounds])
        .env("RUST_LOG", "off")
        .output()
        .expect("the CLI binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let summary = stdout.lines().find(|l| l.starts_with("rounds=")).expect("a summary line");
    let count = |key: &str| -> u64 {
        let field = summary.split_whitespace().find_map(|f| f.strip_prefix(&format!("{key}=")));
        field.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{key} in {summary}"))
    };
    assert_eq!(count("violations"), 0, "{summary}");
    for action in ["kills", "pauses", "outages", "restarts"] {
        assert!(count(action) > 0, "the nemesis never acted ({action}): {summary}");
    }
}
