//! The architecture's rules, enforced (issue #9.6): dependencies point down only, and the pure core depends on
//! nothing that does I/O, runs an async runtime or talks to a store. Read from each crate's `Cargo.toml`, so a new
//! dependency that breaks a rule fails `cargo test`. (The wall-clock rule is `clippy.toml`'s `disallowed-methods`.)

use std::collections::BTreeSet;
use std::path::Path;

/// Which sosw crates each crate may depend on (`[dependencies]`; dev-dependencies are free).
const LAYERS: &[(&str, &[&str])] = &[
    ("sosw-core", &[]),
    ("sosw-engine", &["sosw-core"]),
    ("sosw-sqlite", &["sosw-core"]),
    ("sosw-local", &["sosw-core"]),
    ("sosw-aws", &["sosw-core"]),
    ("sosw-testkit", &["sosw-core"]),
    ("sosw-server", &["sosw-core", "sosw-engine"]),
    ("sosw-worker", &[]),
    (
        "sosw-cli",
        &[
            "sosw-core",
            "sosw-engine",
            "sosw-sqlite",
            "sosw-local",
            "sosw-aws",
            "sosw-server",
        ],
    ),
    ("sosw-lambda", &["sosw-core", "sosw-engine", "sosw-local", "sosw-aws"]),
];

/// What the core may depend on: data, serialisation, errors, hashing (task ids) and the trait-object helper.
const CORE_MAY_USE: &[&str] = &["async-trait", "serde", "serde_json", "sha2", "thiserror"];

/// The names under `[dependencies]` of `manifest` (one `name = …` or `name.workspace = true` per line).
fn dependencies(manifest: &str) -> BTreeSet<String> {
    let mut inside = false;
    let mut names = BTreeSet::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == "[dependencies]";
            continue;
        }
        if inside && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.', ' ']).next().unwrap_or_default();
            names.insert(name.to_string());
        }
    }
    names
}

fn manifest(krate: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("Cargo.toml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_crate_is_in_the_layer_map() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for entry in std::fs::read_dir(&crates).expect("crates/") {
        let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
        if crates.join(&name).join("Cargo.toml").exists() {
            assert!(
                LAYERS.iter().any(|(k, _)| *k == name),
                "`{name}` is not in the layer map of this test: say which sosw crates it may depend on"
            );
        }
    }
}

#[test]
fn dependencies_point_down_only() {
    for (krate, allowed) in LAYERS {
        for dep in dependencies(&manifest(krate)) {
            if dep.starts_with("sosw-") {
                assert!(
                    allowed.contains(&dep.as_str()),
                    "`{krate}` depends on `{dep}`, which it may not (allowed: {allowed:?}; see ARCHITECTURE.md)"
                );
            }
        }
    }
}

#[test]
fn the_core_does_no_io() {
    for dep in dependencies(&manifest("sosw-core")) {
        assert!(
            CORE_MAY_USE.contains(&dep.as_str()),
            "`sosw-core` depends on `{dep}`: the core does no I/O, runs no runtime and reads no clock; put it in \
             an adapter (or add it to CORE_MAY_USE with a reason)"
        );
    }
}

#[test]
fn the_manifest_reader_reads_manifests() {
    let deps = dependencies(
        "[package]\nname = \"x\"\n\n[dependencies]\nsosw-core.workspace = true\nserde = { version = \"1\" }\n\n\
         [dev-dependencies]\ntempfile = \"3\"\n",
    );
    assert_eq!(deps.into_iter().collect::<Vec<_>>(), vec!["serde", "sosw-core"]);
}
