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

/// Runs `segstream replay` over `events` (stdin) with extra arguments; the JSON summary.
fn replay_summary(events: &[u8], args: &[&str]) -> serde_json::Value {
    replay(events, args, false).0
}

/// [`replay_summary`], and the transitions written (when `transitions`, else discarded).
fn replay(events: &[u8], args: &[&str], transitions: bool) -> (serde_json::Value, Vec<u8>) {
    let mut child = bin()
        .args([
            "replay",
            "-s",
            "segments/library.toml",
            "-e",
            "-",
            "-t",
            if transitions { "-" } else { "/dev/null" },
        ])
        .arg("--json-summary")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(if transitions {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = events.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (serde_json::from_slice(&out.stderr).unwrap(), out.stdout)
}

/// One event dated 2099 in the middle of a replay: rejected as `future_timestamp`, and
/// every later event is applied (before the guard, it made them all late). Synthetic data
/// dated in the future replays with `--now`.
#[test]
fn replay_rejects_an_event_from_the_future_without_poisoning_the_rest() {
    let funnel = segstream::generator::FunnelConfig {
        customers: 200,
        days: 3,
        ..Default::default()
    };
    let events = segstream::generator::generate(&funnel);
    let mut input = String::new();
    for (i, e) in events.iter().enumerate() {
        if i == events.len() / 2 {
            input.push_str(r#"{"event_id":"broken-clock","customer_id":"c-000001","type":"page_view","timestamp":"2099-01-01T00:00:00Z","properties":{"url":"/"}}"#);
            input.push('\n');
        }
        input.push_str(&e.json);
        input.push('\n');
    }
    let s = replay_summary(input.as_bytes(), &[]);
    assert_eq!(s["rejected_by_reason"]["future_timestamp"], 1, "{s}");
    assert_eq!(s["rejected"], 1, "{s}");
    assert_eq!(s["late"], 0, "{s}");
    assert_eq!(s["accepted"], events.len());

    // The same funnel moved five years ahead: all of it is "in the future" by the wall
    // clock...
    let five_years = 5 * 365 * 86_400_000;
    let future: String = events
        .iter()
        .map(|e| {
            let mut v: serde_json::Value = serde_json::from_str(&e.json).unwrap();
            v["timestamp"] = serde_json::Value::from(segstream_core::time::format_rfc3339(
                e.timestamp_ms + five_years,
            ));
            format!("{v}\n")
        })
        .collect();
    let n = future.lines().count();
    let s = replay_summary(future.as_bytes(), &[]);
    assert_eq!(s["rejected_by_reason"]["future_timestamp"], n, "{s}");
    // ... and replays whole with --now, or with the guard off.
    let s = replay_summary(future.as_bytes(), &["--now", "2031-12-31T00:00:00Z"]);
    assert_eq!(s["accepted"], n, "{s}");
    let s = replay_summary(future.as_bytes(), &["--max-future-skew", "off"]);
    assert_eq!(s["accepted"], n, "{s}");
}

/// A flood of distinct customer ids (a bot, a broken producer): with
/// `--max-profiles`, memory stays flat once the limit is reached. Four times as many ids
/// need no more memory; without the limit, memory grows with the ids.
#[test]
fn an_id_flood_keeps_memory_flat_at_max_profiles() {
    fn flood(n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n * 150);
        for i in 0..n {
            let minute = i / 20_000;
            writeln!(
                out,
                r#"{{"event_id":"f{i}","customer_id":"bot-{i:08x}","type":"page_view","timestamp":"2026-11-02T{:02}:{:02}:00Z","properties":{{"url":"/x"}}}}"#,
                minute / 60,
                minute % 60
            )
            .unwrap();
        }
        out
    }
    let cap = "20000";
    let small = replay_summary(&flood(500_000), &["--max-profiles", cap]);
    let large = replay_summary(&flood(2_000_000), &["--max-profiles", cap]);
    let uncapped = replay_summary(&flood(500_000), &[]);
    let peak =
        |s: &serde_json::Value| s["peak_resident_bytes"].as_u64().unwrap() as f64 / 1048576.0;
    eprintln!(
        "peak resident MiB: 500k ids capped {:.0}, 2M ids capped {:.0}, 500k ids uncapped {:.0}",
        peak(&small),
        peak(&large),
        peak(&uncapped)
    );
    assert!(large["profiles"].as_u64().unwrap() <= 20_000, "{large}");
    assert_eq!(
        large["profiles_evicted"].as_u64().unwrap() + large["profiles"].as_u64().unwrap(),
        2_000_000
    );
    assert!(
        peak(&large) <= peak(&small) * 1.15 + 8.0,
        "memory grew with the ids: {:.0} MiB for 2M, {:.0} MiB for 500k",
        peak(&large),
        peak(&small)
    );
    assert!(
        peak(&uncapped) > peak(&small) * 1.5,
        "the limit is what keeps memory down: {:.0} vs {:.0} MiB",
        peak(&uncapped),
        peak(&small)
    );
}

/// `--format segment` reads the Segment Spec: the example funnel is accepted whole, links the
/// anonymous visitor to the customer, and transitions carry the merged ids. The same file in
/// the default format is rejected line by line.
#[test]
fn replay_reads_the_segment_spec_with_format_segment() {
    let funnel = std::fs::read("schemas/examples/segment/funnel.jsonl").unwrap();
    let lines = funnel
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count() as u64;
    let (summary, stdout) = replay(
        &funnel,
        &[
            "--format",
            "segment",
            "--advance-to",
            "2026-11-25T00:00:00Z",
        ],
        true,
    );
    assert_eq!(summary["events_read"], lines);
    assert_eq!(summary["accepted"], lines, "{summary}");
    assert!(summary["merges"].as_u64().unwrap() >= 2, "{summary}");
    let transitions: Vec<serde_json::Value> = String::from_utf8(stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let attendee = transitions
        .iter()
        .find(|t| t["segment"] == "webinar-attendee")
        .expect("the attendee enters webinar-attendee");
    assert_eq!(attendee["customer_id"], "c-000301");
    assert_eq!(
        attendee["anonymous_ids"],
        serde_json::json!(["anon-7f3a9c"])
    );
    assert_eq!(attendee["known"], true);
    assert!(transitions
        .iter()
        .any(|t| t["segment"] == "new-customer" && t["cause"] == "event:seg-011"));

    let s = replay_summary(&funnel, &[]);
    assert_eq!(s["rejected_by_reason"]["missing_field"], lines, "{s}");
    let out = bin()
        .args([
            "replay",
            "-s",
            "segments/library.toml",
            "-e",
            "-",
            "-t",
            "-",
        ])
        .args(["--format", "rudderstack"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "an unknown format is refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown input format `rudderstack`; expected one of: segstream, segment"),
        "{err}"
    );
}

/// `segstream replay --preview FILE`: the answer is printed on stdout after the replay, and
/// its population and members are what a replay with the candidate in the file gives.
#[test]
fn replay_previews_a_candidate_as_a_reload_of_it_would_give() {
    let dir = tempfile::tempdir().unwrap();
    let candidate = "[segments.dach-contact]\ndescription = \"Anyone in DACH\"\n\
                     condition = 'trait.country in [\"DE\", \"AT\", \"CH\"] and not profile.opted_out'\n";
    let cand = dir.path().join("candidate.toml");
    std::fs::write(&cand, candidate).unwrap();
    let run = |segments: &std::path::Path, preview: Option<&std::path::Path>| {
        let pr = dir.path().join("p.jsonl");
        let mut cmd = bin();
        cmd.args(["replay", "-s"])
            .arg(segments)
            .arg("-e")
            .arg("schemas/examples/events/reference-funnel.jsonl")
            .args(["-t", "/dev/null", "--profiles-out"])
            .arg(&pr);
        if let Some(p) = preview {
            cmd.arg("--preview").arg(p);
        }
        let out = cmd.output().unwrap();
        let profiles: Vec<serde_json::Value> = std::fs::read_to_string(&pr)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (out, profiles)
    };
    let (out, profiles) = run("segments/library.toml".as_ref(), Some(&cand));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["segment"], "dach-contact");
    assert_eq!(answer["complete"], true);
    assert_eq!(answer["replaces"], false);
    assert_eq!(answer["profiles"], profiles.len());
    // Overlap: the candidate's members that are in each running segment.
    let members: Vec<&str> = answer["sample"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let in_dach = profiles
        .iter()
        .filter(|p| members.contains(&p["customer_id"].as_str().unwrap()))
        .filter(|p| {
            p["segments"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s == "dach-decision-makers")
        })
        .count();
    assert_eq!(answer["overlap"]["dach-decision-makers"], in_dach);

    // The library with the candidate in it, replayed: the same members.
    let with = dir.path().join("with.toml");
    let library = std::fs::read_to_string("segments/library.toml").unwrap();
    std::fs::write(&with, format!("{library}\n{candidate}")).unwrap();
    let (out, profiles) = run(&with, None);
    assert!(out.status.success());
    let mut expected: Vec<&str> = profiles
        .iter()
        .filter(|p| {
            p["segments"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s == "dach-contact")
        })
        .map(|p| p["customer_id"].as_str().unwrap())
        .collect();
    expected.sort();
    assert!(!expected.is_empty());
    assert_eq!(answer["population"], expected.len());
    assert_eq!(members, expected);

    // An invalid candidate stops the replay with its diagnostics, before anything runs.
    std::fs::write(
        &cand,
        "[segments.x]\ncondition = 'in_segment(\"dach-decision-maker\")'\n",
    )
    .unwrap();
    let (out, _) = run("segments/library.toml".as_ref(), Some(&cand));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:2:25: segment `x` uses unknown segment",
            cand.display()
        )),
        "{err}"
    );
}

/// `replay --explain ID [--segment NAME]`: after the replay, the customer's segments
/// explained as pretty JSON on stdout, with the customer's transitions as causes; the
/// other outputs are unchanged.
#[test]
fn replay_explains_a_customer_after_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let tr = dir.path().join("t.jsonl");
    let run = |extra: &[&str]| {
        bin()
            .args(["replay", "--segments", "segments/library.toml", "--events"])
            .arg("schemas/examples/events/reference-funnel.jsonl")
            .arg("--transitions-out")
            .arg(&tr)
            .args(["--advance-to", "2026-11-20T00:00:00Z", "--json-summary"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[
        "--explain",
        "c-000103",
        "--segment",
        "clicked-but-not-registered",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let golden =
        std::fs::read_to_string("schemas/examples/transitions/reference-funnel.jsonl").unwrap();
    assert_eq!(std::fs::read_to_string(&tr).unwrap(), golden);
    let summary: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(summary["events_read"], 43);
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["customer_id"], "c-000103");
    assert_eq!(e["segment"], "clicked-but-not-registered");
    assert_eq!((&e["member"], &e["result"]), (&true.into(), &true.into()));
    assert_eq!(e["at"], "2026-11-20T00:00:00.000Z");
    let c = &e["condition"];
    assert_eq!(c["kind"], "absence");
    assert_eq!(
        c["text"],
        r#"ad_click(campaign="webinar-q4-ads") then no webinar_registered(webinar_id="W-2026-12") within 1d"#
    );
    assert_eq!(c["value"]["pending"][0]["passed"], true);
    // The causes are this customer's transitions of this segment in the replay.
    let expected: Vec<serde_json::Value> = golden
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|t| t["customer_id"] == "c-000103" && t["segment"] == e["segment"])
        .collect();
    assert!(!expected.is_empty());
    let causes = e["causes"].as_array().unwrap();
    assert_eq!(causes.len(), expected.len());
    for (c, t) in causes.iter().zip(&expected) {
        assert_eq!(
            (&c["at"], &c["direction"], &c["cause"], &c["sequence"]),
            (
                &t["timestamp"],
                &t["direction"],
                &t["cause"],
                &t["sequence"]
            )
        );
    }

    // Without --segment: every segment, in definition order, each result the recorded
    // membership (as in the profile).
    let out = run(&["--explain", "c-000103"]);
    assert!(out.status.success());
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 15);
    for e in &list {
        assert_eq!(e["result"], e["member"], "{e:#}");
        assert_eq!(e["condition"]["result"], e["result"]);
    }
    let members: Vec<&str> = list
        .iter()
        .filter(|e| e["member"] == true)
        .map(|e| e["segment"].as_str().unwrap())
        .collect();
    assert_eq!(
        members,
        [
            "clicked-but-not-registered",
            "unsubscribed",
            "dach-decision-makers"
        ]
    );

    // An unknown segment stops before the replay, with a suggestion; an unknown customer
    // fails after it.
    let out = run(&["--explain", "c-000103", "--segment", "unsubscrbed"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(r#"did you mean "unsubscribed""#), "{err}");
    let out = run(&["--explain", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no profile for customer \"nobody\""));
    assert!(out.stdout.is_empty());
}

/// One `segstream replay` over the file `events` with `--workers workers` and `args`: the
/// JSON summary (without the peak memory, which is the process's own), the transitions
/// and the profiles as written.
fn replay_with_workers(
    events: &std::path::Path,
    workers: u16,
    args: &[&str],
) -> (serde_json::Value, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let tr = dir.path().join("t.jsonl");
    let pr = dir.path().join("p.jsonl");
    let out = bin()
        .args(["replay", "-s", "segments/library.toml", "-e"])
        .arg(events)
        .arg("-t")
        .arg(&tr)
        .arg("--profiles-out")
        .arg(&pr)
        .args(["--json-summary", "--workers", &workers.to_string()])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut summary: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    summary
        .as_object_mut()
        .unwrap()
        .remove("peak_resident_bytes");
    (
        summary,
        std::fs::read_to_string(&tr).unwrap(),
        std::fs::read_to_string(&pr).unwrap(),
    )
}

/// Per customer id, its transitions in the order written.
fn per_customer(transitions: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut m: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for l in transitions.lines() {
        let t: serde_json::Value = serde_json::from_str(l).unwrap();
        m.entry(t["customer_id"].as_str().unwrap().to_string())
            .or_default()
            .push(l.to_string());
    }
    m
}

/// Replays `events` with 1, 2 and 3 workers and checks that the transitions (as a set,
/// per customer in order, and byte for byte), the summaries and the profiles are the same.
/// Returns the one-worker summary.
fn assert_workers_agree(events: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let (summary, transitions, profiles) = replay_with_workers(events, 1, args);
    for workers in [2, 3] {
        let (s, t, p) = replay_with_workers(events, workers, args);
        let mut set_one: Vec<&str> = transitions.lines().collect();
        let mut set_n: Vec<&str> = t.lines().collect();
        set_one.sort_unstable();
        set_n.sort_unstable();
        assert!(
            set_one == set_n,
            "{}: the transitions of {workers} workers are not one worker's (as a set)",
            events.display()
        );
        assert!(
            per_customer(&transitions) == per_customer(&t),
            "{}: per customer, {workers} workers write another order",
            events.display()
        );
        assert!(
            transitions == t,
            "{}: {workers} workers write the same transitions in another order",
            events.display()
        );
        assert_eq!(s, summary, "{}: {workers} workers", events.display());
        assert!(
            profiles == p,
            "{}: the profiles of {workers} workers differ",
            events.display()
        );
    }
    summary
}

/// `--workers N` writes exactly what one worker writes, on the repository's example
/// event files (both formats; valid and invalid lines, links, merges, forgets).
#[test]
fn replay_workers_match_one_worker_on_the_example_files() {
    let now = ["--now", "2026-12-31T00:00:00Z"];
    for f in [
        "identity.jsonl",
        "invalid-identity.jsonl",
        "invalid.jsonl",
        "reference-funnel.jsonl",
    ] {
        let path = std::path::Path::new("schemas/examples/events").join(f);
        assert_workers_agree(&path, &now);
        assert_workers_agree(
            &path,
            &[&now[..], &["--advance-to", "2026-12-30T00:00:00Z"]].concat(),
        );
    }
    for f in ["funnel.jsonl", "invalid.jsonl", "rudderstack.jsonl"] {
        let path = std::path::Path::new("schemas/examples/segment").join(f);
        let args = [
            &now[..],
            &[
                "--format",
                "segment",
                "--advance-to",
                "2026-12-30T00:00:00Z",
            ],
        ]
        .concat();
        assert_workers_agree(&path, &args);
    }
}

/// A week of the generated reference funnel for `customers` customers, as JSON lines.
fn funnel_week(customers: usize, seed: u64) -> Vec<String> {
    let cfg = segstream::generator::FunnelConfig {
        customers,
        days: 7,
        seed,
        ..Default::default()
    };
    segstream::generator::generate(&cfg)
        .into_iter()
        .map(|e| e.json)
        .collect()
}

/// `--workers N` on a generated funnel (40% anonymous visitors who link later, second
/// devices linked by a mail click, so persons that lived on different workers merge),
/// over more than one chunk of lines, with timers fired by event time and at the end:
/// exactly one worker's transitions, summary and profiles.
#[test]
fn replay_workers_match_one_worker_on_a_generated_funnel() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("funnel.jsonl");
    let mut lines = funnel_week(3000, 11);
    assert!(
        lines.len() > segstream::replay::CHUNK_LINES,
        "more than one chunk: {} lines",
        lines.len()
    );
    // A blank line and a broken one keep their line numbers.
    lines.insert(100, String::new());
    lines.insert(40_000, "{not json".to_string());
    std::fs::write(&events, lines.join("\n")).unwrap();

    // The input links persons that already had events of their own (a merge of two
    // persons that, by their first ids, start on different workers).
    let mut parent: std::collections::HashMap<String, String> = Default::default();
    fn root(parent: &std::collections::HashMap<String, String>, id: &str) -> String {
        let mut r = id.to_string();
        while let Some(p) = parent.get(&r).filter(|p| **p != r) {
            r = p.clone();
        }
        r
    }
    let mut merges_of_two = 0;
    for l in &lines {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
            continue;
        };
        let ids: Vec<String> = ["customer_id", "anonymous_id"]
            .iter()
            .filter_map(|k| v[*k].as_str().map(str::to_string))
            .collect();
        let both_seen = ids.len() == 2 && ids.iter().all(|id| parent.contains_key(id));
        for id in &ids {
            parent.entry(id.clone()).or_insert_with(|| id.clone());
        }
        if let [c, a] = &ids[..] {
            let (rc, ra) = (root(&parent, c), root(&parent, a));
            if rc != ra {
                merges_of_two += usize::from(both_seen);
                parent.insert(ra, rc);
            }
        }
    }
    assert!(merges_of_two >= 1, "{merges_of_two} links of two known ids");

    let summary = assert_workers_agree(
        &events,
        &[
            "--now",
            "2026-12-31T00:00:00Z",
            "--advance-to",
            "2026-12-30T00:00:00Z",
        ],
    );
    assert!(summary["merges"].as_u64().unwrap() > 100, "{summary}");
    assert!(summary["transitions"].as_u64().unwrap() > 1000, "{summary}");
    assert_eq!(summary["rejected"], 1, "{summary}");
    assert_eq!(summary["rejections"][0]["line"], 40_001, "{summary}");
    // Without --advance-to, time stops at the last event's watermark.
    assert_workers_agree(&events, &["--now", "2026-12-31T00:00:00Z"]);
}

/// Two persons with events of their own, whose ids start on different workers (with 2 and
/// with 3), merge; before and after, other customers' timers fire around them: the person
/// moves between workers and the output is one worker's.
#[test]
fn replay_workers_move_a_person_when_a_link_joins_two_workers() {
    use segstream_core::engine::home;
    let customer = "c-100001";
    let anon = (0..)
        .map(|i| format!("anon-{i:04x}"))
        .find(|a| home(a, 2) != home(customer, 2) && home(a, 3) != home(customer, 3))
        .unwrap();
    let mut lines = Vec::new();
    let mut ev = |n: usize, ids: &str, ty: &str, minute: usize, props: &str| {
        lines.push(format!(
            r#"{{"event_id": "m-{n}", {ids}, "type": "{ty}", "timestamp": "2026-11-16T{:02}:{:02}:00Z", "properties": {props}}}"#,
            10 + minute / 60,
            minute % 60
        ));
    };
    let url = r#"{"url": "https://segstream.dev/pricing"}"#;
    let c = format!(r#""customer_id": "{customer}""#);
    let a = format!(r#""anonymous_id": "{anon}""#);
    let both = format!(r#""customer_id": "{customer}", "anonymous_id": "{anon}""#);
    let mut n = 0;
    for minute in 0..30 {
        n += 1;
        ev(n, &a, "page_view", minute, url);
        n += 1;
        ev(
            n,
            &c,
            "click",
            minute,
            r#"{"url": "https://segstream.dev/docs"}"#,
        );
        n += 1;
        let other = format!(r#""customer_id": "c-2{minute:05}""#);
        ev(n, &other, "page_view", minute, url);
    }
    n += 1;
    ev(n, &both, "page_view", 31, url);
    for minute in 32..300 {
        n += 1;
        ev(n, &both, "page_view", minute, url);
        n += 1;
        let other = format!(r#""customer_id": "c-3{minute:05}""#);
        ev(n, &other, "click", minute, url);
    }
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("merge.jsonl");
    std::fs::write(&events, lines.join("\n")).unwrap();
    let summary = assert_workers_agree(
        &events,
        &[
            "--now",
            "2026-12-31T00:00:00Z",
            "--advance-to",
            "2026-12-30T00:00:00Z",
        ],
    );
    assert_eq!(summary["merges"], 1, "{summary}");
}

/// A transitions file that cannot be written stops a replay with several workers with the
/// error (no hang: the workers and parse threads are told to stop), as with one worker.
#[test]
fn replay_workers_stop_with_the_error_when_the_output_fails() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("funnel.jsonl");
    let lines = funnel_week(3000, 5);
    assert!(lines.len() > 3 * segstream::replay::CHUNK_LINES);
    std::fs::write(&events, lines.join("\n")).unwrap();
    for workers in ["1", "2", "3"] {
        let out = bin()
            .args(["replay", "-s", "segments/library.toml", "-e"])
            .arg(&events)
            .args(["-t", "/dev/full", "--workers", workers])
            .args(["--now", "2026-12-31T00:00:00Z"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{workers} workers: {stderr}");
        assert!(
            stderr.contains("No space left on device"),
            "{workers} workers: {stderr}"
        );
    }
}
