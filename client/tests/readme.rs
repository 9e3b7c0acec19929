//! The README's quick start is the migration example, which CI builds and runs against the emulator.

#[test]
fn the_readme_shows_the_migration_example_as_it_is() {
    let readme = include_str!("../../README.md");
    let example = include_str!("../examples/migrate.rs");
    assert!(
        readme.contains(&format!("```rust,no_run\n{example}```")),
        "README.md's quick start differs from examples/migrate.rs"
    );
}
