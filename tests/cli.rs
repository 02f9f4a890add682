//! The `segstream replay` and `segstream validate` commands, run as a user runs them.

use std::io::Write;
use std::process::{Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_segstream"))
}

#[test]
fn replay_writes_transitions_profiles_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let tr = dir.path().join("t.jsonl");
    let pr = dir.path().join("p.jsonl");
    let out = bin()
        .args(["replay", "--segments", "segments/library.toml", "--events"])
        .arg("schemas/examples/events/reference-funnel.jsonl")
        .arg("--transitions-out")
        .arg(&tr)
        .arg("--profiles-out")
        .arg(&pr)
        .args(["--advance-to", "2026-11-20T00:00:00Z", "--json-summary"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The committed example is exactly what the replay produces (a golden file).
    let got = std::fs::read_to_string(&tr).unwrap();
    let golden =
        std::fs::read_to_string("schemas/examples/transitions/reference-funnel.jsonl").unwrap();
    assert_eq!(got, golden);
    let summary: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(summary["events_read"], 43);
    assert_eq!(summary["accepted"], 43);
    assert_eq!(summary["transitions"], golden.lines().count());
    let profiles: Vec<serde_json::Value> = std::fs::read_to_string(&pr)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(profiles.len() as u64, summary["profiles"].as_u64().unwrap());
    assert!(profiles
        .iter()
        .all(|p| p["segments"].is_array() && p["traits"].is_object()));
}

#[test]
fn replay_reads_stdin_and_reports_rejections_with_reasons_and_lines() {
    let mut child = bin()
        .args([
            "replay",
            "-s",
            "segments/library.toml",
            "-e",
            "-",
            "-t",
            "-",
            "--json-summary",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = concat!(
        r#"{"event_id":"a","customer_id":"c1","type":"identify","timestamp":"2026-11-01T10:00:00Z","traits":{"country":"DE","role":"ceo"}}"#,
        "\n",
        "not json\n",
        "\n",
        r#"{"event_id":"b","customer_id":"c1","type":"purchase","timestamp":"2026-11-01T10:01:00Z","properties":{"amount":"12","currency":"EUR"}}"#,
        "\n",
        r#"{"event_id":"c","customer_id":"c2","type":"page_view","timestamp":"2026-11-01T09:00:00Z","properties":{"url":"/"}}"#,
        "\n",
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(summary["events_read"], 4);
    assert_eq!(summary["accepted"], 1);
    assert_eq!(summary["rejected_by_reason"]["invalid_json"], 1);
    assert_eq!(summary["rejected_by_reason"]["wrong_type"], 1);
    assert_eq!(summary["rejected_by_reason"]["late_event"], 1);
    assert_eq!(summary["late"], 1);
    assert_eq!(summary["rejections"][0]["line"], 2);
    assert_eq!(summary["rejections"][1]["line"], 4);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains(r#""segment":"dach-decision-makers""#));
}

#[test]
fn invalid_definitions_stop_before_anything_runs_with_every_error() {
    let out = bin()
        .args([
            "validate",
            "-s",
            "crates/segstream-core/tests/fixtures/segments/invalid.toml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    let located = err
        .lines()
        .filter(|l| l.starts_with("crates/segstream-core/tests/fixtures/segments/invalid.toml:"))
        .count();
    assert!(located >= 8, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let tr = dir.path().join("t.jsonl");
    let out = bin()
        .args([
            "replay",
            "-s",
            "crates/segstream-core/tests/fixtures/segments/invalid.toml",
            "-e",
        ])
        .arg("schemas/examples/events/reference-funnel.jsonl")
        .arg("-t")
        .arg(&tr)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        !tr.exists(),
        "nothing is written when the definitions are invalid"
    );
}

#[test]
fn validate_accepts_the_library() {
    let out = bin()
        .args(["validate", "-s", "segments/library.toml"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("clicked-but-not-registered"));
}
