//! The deployment files agree with the code: every metric the alert rules and the Grafana
//! dashboard query is one that segstream registers, the dashboard is valid JSON, the example
//! configurations load, the Kubernetes ConfigMap carries the repository's segment library,
//! and the compose stack creates the topics the configuration reads and writes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use segstream::config::Config;
use segstream::metrics::Metrics;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

fn load_config(path: &Path) -> Config {
    Config::load(Some(path), std::iter::empty())
        .unwrap_or_else(|e| panic!("{} does not load:\n{e}", path.display()))
}

/// Every metric family `Metrics::new()` registers, with its type, from the `# TYPE` lines
/// of the text exposition.
fn registered_metrics() -> BTreeMap<String, String> {
    let m = Metrics::new();
    // A labelled family is rendered only once it has a child: give each one.
    m.events_consumed.with_label_values(&["topic", "accepted"]);
    m.transitions.with_label_values(&["segment", "entered"]);
    m.segment_population.with_label_values(&["segment"]);
    m.dead_letters.with_label_values(&["invalid_json"]);
    m.consumer_lag.with_label_values(&["topic", "0"]);
    m.rebalances.with_label_values(&["assign"]);
    m.reloads.with_label_values(&["ok"]);
    // The families whose label values come from enums (persons records, refusals, …).
    m.init_series();
    let text = m.render();
    let types: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| {
            let mut parts = rest.split_whitespace();
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect();
    assert!(
        types.contains_key("segstream_events_consumed_total"),
        "unexpected exposition:\n{text}"
    );
    types
}

/// Every `segstream_[a-z0-9_]+` name in `text` (not preceded by an identifier character).
fn metric_names(text: &str) -> BTreeSet<String> {
    const PREFIX: &str = "segstream_";
    let bytes = text.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(pos) = text[from..].find(PREFIX) {
        let start = from + pos;
        let mut end = start + PREFIX.len();
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        if (start == 0 || !ident(bytes[start - 1])) && end > start + PREFIX.len() {
            names.insert(text[start..end].to_string());
        }
        from = end;
    }
    names
}

/// Whether `name`, as used in a query, is an exported series: a registered family, or the
/// `_bucket`, `_sum` or `_count` series of a registered histogram or summary.
fn is_registered(name: &str, registered: &BTreeMap<String, String>) -> bool {
    if registered.contains_key(name) {
        return true;
    }
    // The process collector is registered on Linux only.
    if !cfg!(target_os = "linux") && name.starts_with("segstream_process_") {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .and_then(|family| registered.get(family))
            .is_some_and(|kind| kind == "histogram" || kind == "summary")
    })
}

#[test]
fn alerts_and_dashboard_use_only_registered_metrics() {
    let registered = registered_metrics();
    for (file, at_least) in [
        ("deploy/prometheus/alerts.yml", 6),
        ("deploy/grafana/dashboards/segstream.json", 15),
    ] {
        let used = metric_names(&read(file));
        assert!(
            used.len() >= at_least,
            "{file}: only {} metric names found ({used:?}); is the scan broken?",
            used.len()
        );
        let unknown: Vec<&String> = used
            .iter()
            .filter(|n| !is_registered(n, &registered))
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics that segstream does not register: {unknown:?}\nregistered: {:?}",
            registered.keys().collect::<Vec<_>>()
        );
    }
}

/// `promtool check rules` and `check config`. scripts/setup.sh installs promtool; a plain
/// `cargo test` without it skips with a message, but under CI (`CI` set) a missing promtool
/// fails, as every other missing test dependency does.
#[test]
fn prometheus_files_pass_promtool() {
    let dir = repo().join("deploy/prometheus");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["check", "config", "prometheus.yml"],
    ] {
        let out = match std::process::Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
        {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
                assert!(
                    !ci,
                    "promtool is not installed: run scripts/setup.sh (CI runs it)"
                );
                eprintln!(
                    "promtool not installed (run scripts/setup.sh): skipping `promtool {}`",
                    args.join(" ")
                );
                return;
            }
            Err(e) => panic!("promtool: {e}"),
        };
        assert!(
            out.status.success(),
            "promtool {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_metric_name_scan_finds_what_it_should() {
    let names = metric_names(
        "rate(segstream_dead_letters_total[5m]) x_segstream_not_this segstream_ segstream_a_bucket{le}",
    );
    let expected: BTreeSet<String> = ["segstream_dead_letters_total", "segstream_a_bucket"]
        .map(String::from)
        .into();
    assert_eq!(names, expected);
    let registered = registered_metrics();
    assert!(is_registered(
        "segstream_event_to_transition_latency_seconds_bucket",
        &registered
    ));
    assert!(is_registered(
        "segstream_batch_processing_seconds_sum",
        &registered
    ));
    assert!(!is_registered("segstream_ready_count", &registered));
    assert!(!is_registered("segstream_no_such_metric", &registered));
}

#[test]
fn dashboard_is_valid_json_with_unique_panels() {
    let text = read("deploy/grafana/dashboards/segstream.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("segstream.json: {e}"));
    assert_eq!(dashboard["uid"], "segstream");
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {p}");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id: {title}"
        );
        let grid = &p["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(x + w <= 24, "{title}: wider than the grid");
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(expr.contains("segstream_"), "{title}: query {expr:?}");
            queries += 1;
        }
    }
    assert!(queries >= 20, "only {queries} queries");
}

#[test]
fn deploy_config_loads() {
    let c = load_config(&repo().join("deploy/segstream.toml"));
    assert_eq!(c.kafka.brokers, "kafka:9092");
    assert_eq!(c.http.listen.to_string(), "0.0.0.0:9464");
    assert_eq!(
        c.segments.file,
        Path::new("/etc/segstream/segments/library.toml")
    );
    assert_eq!(c.log.format, "json");
    assert_eq!(
        c.http.token, None,
        "no token in a file under version control"
    );
    // The file documents the defaults: apart from the container settings it must not
    // drift from them.
    let mut expected = Config::default();
    expected.kafka.brokers = c.kafka.brokers.clone();
    expected.http.listen = c.http.listen;
    expected.segments.file = c.segments.file.clone();
    expected.log.format = c.log.format.clone();
    assert_eq!(
        c, expected,
        "deploy/segstream.toml no longer shows the defaults"
    );
}

/// The content of the literal block scalar `  key: |` under `data:` in a ConfigMap.
fn configmap_entry(yaml: &str, key: &str) -> String {
    let header = format!("  {key}: |");
    let mut lines = yaml.lines();
    lines
        .by_ref()
        .find(|l| l.trim_end() == header)
        .unwrap_or_else(|| panic!("no `{header}` in the ConfigMap"));
    let mut out = String::new();
    for line in lines {
        if line.is_empty() {
            out.push('\n');
        } else if let Some(content) = line.strip_prefix("    ") {
            out.push_str(content);
            out.push('\n');
        } else {
            break;
        }
    }
    // `|` keeps exactly one final newline.
    format!("{}\n", out.trim_end_matches('\n'))
}

#[test]
fn k8s_configmap_matches_the_repository() {
    let yaml = read("deploy/k8s/configmap.yaml");
    assert_eq!(
        configmap_entry(&yaml, "library.toml"),
        read("segments/library.toml"),
        "deploy/k8s/configmap.yaml: data.library.toml must be a copy of segments/library.toml \
         (indented by 4 spaces)"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("segstream.toml");
    std::fs::write(&path, configmap_entry(&yaml, "segstream.toml")).unwrap();
    let c = load_config(&path);
    assert_eq!(c.http.listen.port(), 9464);
    assert_eq!(
        c.segments.file,
        Path::new("/etc/segstream/segments/library.toml")
    );

    // Kubernetes must wait longer than segstream's own shutdown deadline.
    let deployment = read("deploy/k8s/deployment.yaml");
    let grace: i64 = deployment
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds:"))
        .expect("terminationGracePeriodSeconds")
        .trim()
        .parse()
        .unwrap();
    assert!(
        grace * 1000 > c.shutdown_deadline,
        "terminationGracePeriodSeconds {grace} must exceed shutdown_deadline {} ms",
        c.shutdown_deadline
    );
    assert!(deployment.contains("containerPort: 9464"));
}

#[test]
fn compose_creates_the_configured_topics() {
    let c = load_config(&repo().join("deploy/segstream.toml"));
    let compose = read("docker-compose.yml");
    let topics: Vec<&str> = compose
        .lines()
        .find_map(|l| l.trim().strip_prefix("INPUT_TOPICS:"))
        .expect("INPUT_TOPICS in kafka-init")
        .split_whitespace()
        .collect();
    assert_eq!(
        topics, c.kafka.input_topics,
        "kafka-init must create exactly the input topics of deploy/segstream.toml"
    );
    for t in [&c.kafka.output_topic, &c.kafka.dead_letter_topic] {
        assert!(
            compose.contains(&format!("create {t} ")),
            "kafka-init does not create {t}"
        );
    }
    let grace = compose
        .lines()
        .find_map(|l| l.trim().strip_prefix("stop_grace_period:"))
        .expect("stop_grace_period for segstream");
    let grace = segstream_core::time::parse_duration(grace.trim()).expect("a duration");
    assert!(grace > c.shutdown_deadline);
}
