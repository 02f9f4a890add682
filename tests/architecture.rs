//! The architecture as the compiler and Cargo see it: the core crate's normal
//! dependencies include no I/O runtime, Kafka client, HTTP stack or metrics library, so
//! the engine stays pure by construction (see ARCHITECTURE.md).

use std::process::Command;

/// Crates the core may never depend on, directly or through another crate.
const EXCLUDED: [&str; 5] = ["tokio", "rdkafka", "axum", "hyper", "prometheus"];

#[test]
fn the_core_crate_depends_on_no_io_runtime_kafka_http_or_metrics_crate() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--package",
            "segstream-core",
            "--edges",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "--locked",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).unwrap();
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        crates.contains(&"segstream-core") && crates.contains(&"serde"),
        "the tree lists the core and its dependencies:\n{tree}"
    );
    let found: Vec<&&str> = EXCLUDED.iter().filter(|x| crates.contains(x)).collect();
    assert!(found.is_empty(), "the core depends on {found:?}:\n{tree}");
}
