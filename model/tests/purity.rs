//! model/ must stay pure: its dependencies are an allow-list, so tokio, Google's crates or anything doing I/O
//! cannot creep in. (Clock reads, sleeps and unseeded ids are banned by model/clippy.toml.)

#[test]
fn model_depends_only_on_allowed_crates() {
    const ALLOWED: &[&str] =
        &["serde", "thiserror", "uuid", "stateright", "clap", "serde_json", "anyhow", "arrayvec", "ahash"];
    let manifest: toml::Table = include_str!("../Cargo.toml").parse().expect("valid toml");
    let deps = manifest["dependencies"].as_table().expect("dependencies table");
    let unexpected: Vec<_> = deps.keys().filter(|name| !ALLOWED.contains(&name.as_str())).collect();
    assert!(unexpected.is_empty(), "model/ must not depend on {unexpected:?}");
    for optional in ["stateright", "clap", "serde_json", "anyhow", "arrayvec", "ahash"] {
        assert_eq!(deps[optional]["optional"].as_bool(), Some(true), "{optional} must be behind the checker feature");
    }
}
