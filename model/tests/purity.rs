//! model/ must stay pure: its dependencies are an allow-list, so tokio, Google's crates, the checker's search
//! or anything doing I/O cannot creep in. (Clock reads, sleeps and unseeded ids are banned by model/clippy.toml,
//! with no exception in the crate.)

#[test]
fn model_depends_only_on_allowed_crates() {
    const ALLOWED: &[&str] = &["serde", "thiserror", "uuid"];
    let manifest: toml::Table = include_str!("../Cargo.toml").parse().expect("valid toml");
    let deps = manifest["dependencies"].as_table().expect("dependencies table");
    let unexpected: Vec<_> = deps.keys().filter(|name| !ALLOWED.contains(&name.as_str())).collect();
    assert!(unexpected.is_empty(), "model/ must not depend on {unexpected:?}");
}

#[test]
fn model_allows_no_exception_to_its_purity_rules() {
    let sources = [
        include_str!("../src/lib.rs"),
        include_str!("../src/config.rs"),
        include_str!("../src/ids.rs"),
        include_str!("../src/machine.rs"),
        include_str!("../src/machine/state.rs"),
        include_str!("../src/rename.rs"),
        include_str!("../src/row.rs"),
        include_str!("../src/time.rs"),
        include_str!("../src/txn.rs"),
        include_str!("../src/world.rs"),
    ];
    assert_eq!(
        rust_files(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        sources.len(),
        "a file of model/src is missing from this list"
    );
    for source in sources {
        assert!(!source.contains("disallowed_"), "model/src must not allow what model/clippy.toml disallows");
    }
}

/// How many `.rs` files `dir` and its subdirectories hold.
fn rust_files(dir: &str) -> usize {
    std::fs::read_dir(dir)
        .expect("readable source directory")
        .map(|entry| entry.expect("directory entry").path())
        .map(|path| match path.to_str() {
            Some(sub) if path.is_dir() => rust_files(sub),
            _ => usize::from(path.extension().is_some_and(|ext| ext == "rs")),
        })
        .sum()
}
