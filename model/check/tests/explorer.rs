//! The Explorer in a real browser: `explore` serves a model, headless Chromium opens a counterexample path the
//! checker found, and the page must list that path's steps in order. A screenshot is written to
//! `target/explorer-counterexample.png`. Chromium is required (`apt-get install chromium`; `scripts/test` installs
//! it): a missing browser fails the test, it never skips.
// Driving a server process and a browser takes real time and sockets: the model's bans on clocks, sleeps and
// I/O are for the model.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use spanner_mutex_check::{
    CheckOptions, DOUBLE_EXECUTION, Faults, LeaseModel, SearchOptions, Verdict, decode_path, run_check,
};
use spanner_mutex_model::Protocol;
use stateright::{Model, Path};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the served Explorer when the test ends, however it ends.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn chromium() -> String {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        let found = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().expect("sh runs");
        if found.status.success() {
            return String::from_utf8_lossy(&found.stdout).trim().to_owned();
        }
    }
    panic!("no Chromium on PATH: install it (`apt-get install chromium`; scripts/test does) to run this test");
}

/// Runs headless Chromium on `url` with `args` (e.g. `--dump-dom`), letting the page's scripts run first.
fn browse(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(chromium())
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        .args(["--virtual-time-budget=10000", "--window-size=1280,1600"])
        .args(args)
        .arg(url)
        .stderr(Stdio::null())
        .output()
        .expect("chromium runs")
}

/// The page's text, tags removed.
fn text_of(html: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn the_explorer_shows_a_counterexample_path_in_a_browser() {
    // The seed's protocol double-executes: a short counterexample to open.
    let options = CheckOptions {
        clients: 2,
        protocol: Protocol::Naive,
        faults: Faults { unknown: false, ..Faults::ALL },
        ..CheckOptions::default()
    };
    let summary = run_check(options.clone(), SearchOptions { threads: 1, ..SearchOptions::default() });
    assert_eq!(summary.verdict, Verdict::Violated);
    let counterexample = summary.counterexamples.iter().find(|c| c.property == DOUBLE_EXECUTION).expect("found");
    let actions = decode_path(&counterexample.encoded).expect("decodes");
    let model = LeaseModel::new(options.clone());
    let init = model.init_states().remove(0);
    let path = Path::from_actions(&model, init, &actions).expect("the path replays");

    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_spanner-mutex-check"));
    command.args(["explore", "--addr", &format!("127.0.0.1:{port}")]);
    command.args(options.cli_args().split_whitespace());
    let _served = Served(command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("explore starts"));
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "explore did not listen on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }

    let url = format!("http://127.0.0.1:{port}/#/steps/{}", path.encode(&model));
    let page = browse(&url, &["--dump-dom"]);
    assert!(page.status.success(), "chromium failed on {url}");
    let text = text_of(&String::from_utf8_lossy(&page.stdout));
    let steps = text
        .split("Path of Actions")
        .nth(1)
        .and_then(|rest| rest.split("Next Action Choices").next())
        .unwrap_or_else(|| panic!("no path on the page:\n{text}"));
    // The state pane reads in words, not as a Debug dump.
    assert!(text.contains("server time: ") && text.contains("effects: client"), "no state in words:\n{text}");
    assert!(!text.contains("WorldState {"), "a Debug dump in the state pane:\n{text}");
    // Every step of the counterexample, in order.
    let mut rest = steps;
    for action in &actions {
        let shown = action.to_string();
        let at = rest.find(&format!(" {shown} ")).unwrap_or_else(|| panic!("step {shown} not shown in order: {steps}"));
        rest = &rest[at + shown.len()..];
    }

    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    std::fs::create_dir_all(&target).expect("target exists");
    let screenshot = target.join("explorer-counterexample.png");
    let _ = std::fs::remove_file(&screenshot);
    let shot = browse(&url, &[&format!("--screenshot={}", screenshot.display())]);
    assert!(shot.status.success() && screenshot.metadata().is_ok_and(|m| m.len() > 10_000), "no screenshot");
}
