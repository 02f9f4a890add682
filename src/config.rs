//! Service configuration: embedded defaults, then an optional TOML file, then environment
//! variables `SEGSTREAM__SECTION__KEY=value` (e.g. `SEGSTREAM__KAFKA__BROKERS=kafka:9092`).
//! An invalid configuration stops start-up with every problem listed.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use segstream_core::engine::EngineConfig;
use segstream_core::event::InputFormat;
use segstream_core::time::Millis;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub segments: SegmentsConfig,
    pub engine: EngineConfig,
    pub http: HttpConfig,
    #[serde(with = "segstream_core::time::serde_duration")]
    pub shutdown_deadline: Millis,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kafka: KafkaConfig::default(),
            segments: SegmentsConfig::default(),
            engine: EngineConfig::default(),
            http: HttpConfig::default(),
            shutdown_deadline: default_shutdown_deadline(),
            log: LogConfig::default(),
        }
    }
}

/// 30 s: enough to finish a batch, flush the producer and commit.
pub fn default_shutdown_deadline() -> Millis {
    30_000
}

/// A map of librdkafka settings: strings, or numbers and booleans as their text.
fn scalars_as_text<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a string, number or boolean")]
    enum Scalar {
        Text(String),
        Integer(i64),
        Float(f64),
        Bool(bool),
    }
    let map = BTreeMap::<String, Scalar>::deserialize(d)?;
    Ok(map
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                Scalar::Text(s) => s,
                Scalar::Integer(i) => i.to_string(),
                Scalar::Float(f) => f.to_string(),
                Scalar::Bool(b) => b.to_string(),
            };
            (k, text)
        })
        .collect())
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    pub group_id: String,
    /// Input topics, all keyed and partitioned by customer id.
    pub input_topics: Vec<String>,
    /// The wire format of an input topic, by topic: `segstream` (the default for every topic
    /// not listed) or `segment` (the Segment Spec; see `docs/events.md`). Names are checked
    /// by [`Config::load`]; read them with [`KafkaConfig::input_format`].
    pub input_formats: BTreeMap<String, String>,
    pub output_topic: String,
    pub dead_letter_topic: String,
    /// The compacted topic holding every customer's profile (keyed by customer id, one
    /// partition per input partition). Created at start-up if missing.
    pub changelog_topic: String,
    /// The compacted current-membership topic: one record per (segment, customer) while
    /// the customer is a member, keyed `{segment}/{customer_id}`, a tombstone on exit;
    /// written with the transitions (same batch, or same transaction). Created at
    /// start-up if missing.
    pub membership_topic: String,
    /// Route events through `persons_topic` (the default): a router stage re-keys every
    /// event by the id it is recorded under to that id's home partition, so one person's
    /// events meet whatever the producers keyed them by, and persons whose ids live in
    /// different partitions and instances are merged by handoffs on that topic. `false`:
    /// the input topics are read directly and must be co-partitioned, every event of a
    /// person keyed by one and the same id.
    pub router: bool,
    /// The internal topic between the router and the segment stage (events by person,
    /// forwards and merge handoffs). Created at start-up if missing, with as many
    /// partitions as the changelog.
    pub persons_topic: String,
    /// Partitions of the persons and changelog topics when segstream creates them (with
    /// `router`). Default: the most partitions of any input topic. They bound how many
    /// instances share the work; they cannot change later without a new changelog.
    pub partitions: Option<i32>,
    /// Exactly-once: the transitions, dead letters, changelog records and input offsets of
    /// a batch are committed in one Kafka transaction (the broker must support
    /// transactions; readers of the output use `isolation.level=read_committed`).
    pub exactly_once: bool,
    /// The producer's `transactional.id` with `exactly_once`: unique per instance and stable
    /// across its restarts (e.g. the pod name), so a restarted instance fences its former
    /// self at once. Default: `{group_id}-{hostname}`.
    pub transactional_id: Option<String>,
    /// Messages larger than this go to the dead-letter topic (`too_large`).
    pub max_message_bytes: usize,
    /// The largest dead letter written: a larger original's value is cut to fit (with
    /// `segstream_truncated` and `segstream_original_size` headers). Below the producer's
    /// `message.max.bytes` (librdkafka's default 1 000 000) and the dead-letter topic's
    /// `max.message.bytes`.
    pub dead_letter_max_bytes: usize,
    /// At most this many messages are processed between two offset stores. A batch takes
    /// the messages the consumer already holds and ends as soon as none is waiting.
    pub batch_size: usize,
    /// A batch is closed after this long even if messages are still waiting.
    #[serde(with = "segstream_core::time::serde_duration")]
    pub batch_timeout: Millis,
    /// With no message for this long, the input counts as idle and caught up.
    #[serde(with = "segstream_core::time::serde_duration")]
    pub idle_after: Millis,
    /// A partition that delivered nothing for this long no longer holds the event-time
    /// watermark back (the watermark is the minimum over the active partitions).
    #[serde(with = "segstream_core::time::serde_duration")]
    pub partition_idle_after: Millis,
    /// `source` attribute of the CloudEvents headers.
    pub cloudevents_source: String,
    /// Passed to librdkafka as they are, for consumer and producer (e.g. security settings).
    /// Numbers and booleans are taken as their text (`"linger.ms" = 5`, or
    /// `SEGSTREAM__KAFKA__LIBRDKAFKA__LINGER.MS=5`, which the environment parses as a number).
    #[serde(deserialize_with = "scalars_as_text")]
    pub librdkafka: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "localhost:9092".into(),
            group_id: "segstream".into(),
            input_topics: ["clickstream", "email", "webinar", "purchases", "crm"]
                .map(String::from)
                .to_vec(),
            input_formats: BTreeMap::new(),
            output_topic: "segment-transitions".into(),
            dead_letter_topic: "segstream-dead-letters".into(),
            changelog_topic: "segstream-changelog".into(),
            membership_topic: "segstream-membership".into(),
            router: true,
            persons_topic: "segstream-persons".into(),
            partitions: None,
            exactly_once: false,
            transactional_id: None,
            max_message_bytes: 1 << 20,
            dead_letter_max_bytes: 900_000,
            batch_size: 1000,
            batch_timeout: 5,
            idle_after: 200,
            partition_idle_after: 5_000,
            cloudevents_source: "/segstream".into(),
            librdkafka: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// The format of the messages on `topic` (a name `Config::load` did not accept never
    /// gets here; the default stands in for it).
    pub fn input_format(&self, topic: &str) -> InputFormat {
        self.input_formats
            .get(topic)
            .and_then(|name| InputFormat::from_name(name))
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SegmentsConfig {
    /// The segment definitions file; reloaded on SIGHUP and `POST /segments/reload`.
    pub file: PathBuf,
}

impl Default for SegmentsConfig {
    fn default() -> Self {
        SegmentsConfig {
            file: "segments/library.toml".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Where `/metrics`, the health checks and the profile API listen. Localhost by
    /// default: the profile API serves personal data.
    pub listen: SocketAddr,
    /// When set, `/profiles`, `/segments` and the reload endpoint require
    /// `Authorization: Bearer <token>`; `/metrics`, `/healthz` and `/readyz` stay open.
    pub token: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            token: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `segstream=debug,rdkafka=warn`.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problems):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

const ENV_PREFIX: &str = "SEGSTREAM__";

impl Config {
    /// Defaults, overlaid by `file` (if any), overlaid by `SEGSTREAM__*` variables in `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let mut table = toml::Table::new();
        let origin = file.map_or("defaults".to_string(), |p| p.display().to_string());
        if let Some(path) = file {
            match std::fs::read_to_string(path) {
                Ok(text) => match text.parse::<toml::Table>() {
                    Ok(t) => table = t,
                    Err(e) => {
                        let at = e
                            .span()
                            .map(|s| {
                                let line = text[..s.start].matches('\n').count() + 1;
                                let col =
                                    s.start - text[..s.start].rfind('\n').map_or(0, |i| i + 1) + 1;
                                format!(":{line}:{col}")
                            })
                            .unwrap_or_default();
                        errors.push(format!("{origin}{at}: {}", e.message()));
                    }
                },
                Err(e) => errors.push(format!("{origin}: cannot read: {e}")),
            }
        }
        for (key, value) in env {
            let Some(path) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
            if parts.iter().any(String::is_empty) {
                errors.push(format!("{key}: malformed variable name"));
                continue;
            }
            // A value that parses as TOML (number, boolean, array) keeps its type.
            let parsed = format!("v = {value}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(value));
            if let Err(e) = set_path(&mut table, &parts, parsed) {
                errors.push(format!("{key}: {e}"));
            }
        }
        check_keys(&table, &origin, &mut errors);
        let config = if errors.is_empty() {
            match Config::deserialize(toml::Value::Table(table)) {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.push(format!("{origin}: {}", e.message()));
                    None
                }
            }
        } else {
            None
        };
        if let Some(c) = &config {
            c.validate(&mut errors);
        }
        match config {
            Some(c) if errors.is_empty() => Ok(c),
            _ => Err(ConfigErrors(errors)),
        }
    }

    fn validate(&self, errors: &mut Vec<String>) {
        let k = &self.kafka;
        if k.brokers.trim().is_empty() {
            errors.push("kafka.brokers must not be empty".into());
        }
        if k.group_id.trim().is_empty() {
            errors.push("kafka.group_id must not be empty".into());
        }
        if k.input_topics.is_empty() {
            errors.push("kafka.input_topics must name at least one topic".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for t in &k.input_topics {
            if t.trim().is_empty() {
                errors.push("kafka.input_topics contains an empty name".into());
            }
            if !seen.insert(t) {
                errors.push(format!("kafka.input_topics lists `{t}` twice"));
            }
        }
        for (topic, format) in &k.input_formats {
            if !k.input_topics.contains(topic) {
                errors.push(format!(
                    "kafka.input_formats names `{topic}`, which is not one of kafka.input_topics ({})",
                    k.input_topics.join(", ")
                ));
            }
            if InputFormat::from_name(format).is_none() {
                errors.push(format!(
                    "kafka.input_formats.`{topic}`: unknown format `{format}`; expected one of: {}",
                    InputFormat::ALL.map(InputFormat::name).join(", ")
                ));
            }
        }
        for (name, t) in [
            ("kafka.output_topic", &k.output_topic),
            ("kafka.dead_letter_topic", &k.dead_letter_topic),
            ("kafka.changelog_topic", &k.changelog_topic),
            ("kafka.membership_topic", &k.membership_topic),
        ] {
            if t.trim().is_empty() {
                errors.push(format!("{name} must not be empty"));
            }
            if k.input_topics.contains(t) {
                errors.push(format!("{name} `{t}` is also an input topic (a loop)"));
            }
        }
        let internal = [
            &k.output_topic,
            &k.dead_letter_topic,
            &k.changelog_topic,
            &k.membership_topic,
        ];
        if internal
            .iter()
            .enumerate()
            .any(|(i, a)| internal[i + 1..].contains(a))
        {
            errors.push(
                "kafka.output_topic, kafka.dead_letter_topic, kafka.changelog_topic and kafka.membership_topic must differ"
                    .into(),
            );
        }
        if k.router {
            let t = &k.persons_topic;
            if t.trim().is_empty() {
                errors.push("kafka.persons_topic must not be empty".into());
            } else if k.input_topics.contains(t) {
                errors.push(format!(
                    "kafka.persons_topic `{t}` is also an input topic (a loop)"
                ));
            } else if internal.contains(&t) {
                errors.push(format!(
                    "kafka.persons_topic `{t}` must differ from the output, dead-letter, changelog and membership topics"
                ));
            }
        }
        if let Some(n) = k.partitions {
            if !(1..=i32::from(u16::MAX)).contains(&n) {
                errors.push(format!(
                    "kafka.partitions ({n}) must be between 1 and {}",
                    u16::MAX
                ));
            }
        }
        if k.batch_size == 0 {
            errors.push("kafka.batch_size must be at least 1".into());
        }
        if k.max_message_bytes < 64 {
            errors.push("kafka.max_message_bytes must be at least 64".into());
        }
        let producer_max: usize = k
            .librdkafka
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        if k.dead_letter_max_bytes < 4096 || k.dead_letter_max_bytes >= producer_max {
            errors.push(format!(
                "kafka.dead_letter_max_bytes ({}) must be at least 4096 and below the producer's message.max.bytes ({producer_max})",
                k.dead_letter_max_bytes
            ));
        }
        if k.batch_timeout == 0 || k.idle_after == 0 {
            errors.push("kafka.batch_timeout and kafka.idle_after must be positive".into());
        }
        for key in k.librdkafka.keys() {
            if matches!(
                key.as_str(),
                "enable.auto.offset.store"
                    | "enable.auto.commit"
                    | "group.id"
                    | "bootstrap.servers"
                    | "transactional.id"
                    | "isolation.level"
            ) {
                errors.push(format!(
                    "kafka.librdkafka.`{key}` is managed by segstream (at-least-once needs it); set it through its own option"
                ));
            }
        }
        if self
            .http
            .token
            .as_deref()
            .is_some_and(|t| t.trim().len() < 16)
        {
            errors.push("http.token must be at least 16 characters".into());
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            errors.push(format!(
                "log.format `{}` must be `text` or `json`",
                self.log.format
            ));
        }
        if self.engine.allowed_lateness > 7 * segstream_core::time::DAY {
            errors.push("engine.allowed_lateness must be at most 7d".into());
        }
        if let Some(w) = self.engine.workers {
            if !(1..=256).contains(&w) {
                errors.push(format!(
                    "engine.workers must be between 1 and 256 (got {w})"
                ));
            }
        }
        if self.engine.max_profiles == Some(0) {
            errors
                .push("engine.max_profiles must be at least 1 (leave it out for no limit)".into());
        }
        if self.shutdown_deadline == 0 {
            errors.push("shutdown_deadline must be positive".into());
        }
    }
}

/// Sets `a.b.c = value`, creating sections on the way.
fn set_path(table: &mut toml::Table, parts: &[String], value: toml::Value) -> Result<(), String> {
    let (last, sections) = parts.split_last().ok_or("empty name")?;
    let mut cursor = table;
    for part in sections {
        let entry = cursor
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cursor = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(format!("`{part}` is not a section")),
        };
    }
    cursor.insert(last.clone(), value);
    Ok(())
}

/// Unknown keys, all of them, with what is expected instead.
fn check_keys(table: &toml::Table, origin: &str, errors: &mut Vec<String>) {
    let sections: &[(&str, &[&str])] = &[
        (
            "",
            &[
                "kafka",
                "segments",
                "engine",
                "http",
                "shutdown_deadline",
                "log",
            ],
        ),
        (
            "kafka",
            &[
                "brokers",
                "group_id",
                "input_topics",
                "input_formats",
                "output_topic",
                "dead_letter_topic",
                "changelog_topic",
                "membership_topic",
                "router",
                "persons_topic",
                "partitions",
                "exactly_once",
                "transactional_id",
                "max_message_bytes",
                "dead_letter_max_bytes",
                "batch_size",
                "batch_timeout",
                "idle_after",
                "partition_idle_after",
                "cloudevents_source",
                "librdkafka",
            ],
        ),
        ("segments", &["file"]),
        (
            "engine",
            &[
                "allowed_lateness",
                "profile_ttl",
                "idle_lag",
                "max_future_skew",
                "max_profiles",
                "identity",
                "workers",
            ],
        ),
        ("http", &["listen", "token"]),
        ("log", &["level", "format"]),
    ];
    let check = |name: &str, t: &toml::Table, errors: &mut Vec<String>| {
        let Some((_, allowed)) = sections.iter().find(|(n, _)| *n == name) else {
            return;
        };
        for key in t.keys() {
            if !allowed.contains(&key.as_str()) {
                let at = if name.is_empty() {
                    String::new()
                } else {
                    format!("{name}.")
                };
                errors.push(format!(
                    "{origin}: unknown key `{at}{key}`; expected one of: {}",
                    allowed.join(", ")
                ));
            }
        }
    };
    check("", table, errors);
    for (name, value) in table {
        if let toml::Value::Table(t) = value {
            check(name, t, errors);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_work_without_a_file() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.http.listen.ip().to_string(), "127.0.0.1");
    }

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[kafka]\nbrokers = \"a:9092\"\nbatch_size = 10\n[kafka.librdkafka]\n\"security.protocol\" = \"ssl\"\n\"linger.ms\" = 5\n\"queue.buffering.backpressure.threshold\" = 1.5\n[engine]\nallowed_lateness = \"1m\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&path),
            env(&[
                ("SEGSTREAM__KAFKA__BROKERS", "b:9092"),
                ("SEGSTREAM__KAFKA__INPUT_TOPICS", "[\"x\", \"y\"]"),
                ("SEGSTREAM__HTTP__LISTEN", "0.0.0.0:9000"),
                ("SEGSTREAM__ENGINE__WORKERS", "3"),
                ("SEGSTREAM__KAFKA__MEMBERSHIP_TOPIC", "audience"),
                ("SEGSTREAM__KAFKA__LIBRDKAFKA__BATCH.NUM.MESSAGES", "1"),
                (
                    "SEGSTREAM__KAFKA__LIBRDKAFKA__ENABLE.SSL.CERTIFICATE.VERIFICATION",
                    "false",
                ),
                ("OTHER", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.kafka.brokers, "b:9092");
        assert_eq!(c.kafka.batch_size, 10);
        assert_eq!(c.kafka.input_topics, ["x", "y"]);
        assert_eq!(c.kafka.librdkafka["security.protocol"], "ssl");
        // Numbers and booleans (from the file, or parsed so from the environment) as text.
        assert_eq!(c.kafka.librdkafka["linger.ms"], "5");
        assert_eq!(
            c.kafka.librdkafka["queue.buffering.backpressure.threshold"],
            "1.5"
        );
        assert_eq!(c.kafka.librdkafka["batch.num.messages"], "1");
        assert_eq!(
            c.kafka.librdkafka["enable.ssl.certificate.verification"],
            "false"
        );
        assert_eq!(c.engine.allowed_lateness, 60_000);
        assert_eq!(c.http.listen.port(), 9000);
        assert_eq!(c.engine.workers, Some(3));
        assert_eq!(c.kafka.membership_topic, "audience");
    }

    #[test]
    fn every_problem_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "colour = 1\n[kafka]\nbrokrs = \"x\"\noutput_topic = \"clickstream\"\n[http]\nport = 1\n",
        )
        .unwrap();
        let err = Config::load(Some(&path), env(&[("SEGSTREAM__LOG__FORMAT", "xml")])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("unknown key `colour`"), "{text}");
        assert!(text.contains("unknown key `kafka.brokrs`"), "{text}");
        assert!(text.contains("unknown key `http.port`"), "{text}");
        // Semantic checks need a well-formed config; they are listed together too.
        let err = Config::load(
            None,
            env(&[
                ("SEGSTREAM__KAFKA__OUTPUT_TOPIC", "email"),
                ("SEGSTREAM__KAFKA__BATCH_SIZE", "0"),
                ("SEGSTREAM__LOG__FORMAT", "xml"),
                ("SEGSTREAM__HTTP__TOKEN", "short"),
            ]),
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 4, "{err}");
    }

    #[test]
    fn input_formats_choose_the_parser_per_topic_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[kafka]\ninput_topics = [\"web\", \"crm\", \"Mixed.Case\"]\n[kafka.input_formats]\nweb = \"segment\"\ncrm = \"segstream\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&path),
            env(&[("SEGSTREAM__KAFKA__INPUT_FORMATS__MIXED.CASE", "segment")]),
        );
        // Variable names are lower-cased: a topic with capitals needs the inline table.
        let err = c.unwrap_err();
        assert!(
            err.to_string()
                .contains("`mixed.case`, which is not one of"),
            "{err}"
        );
        let c = Config::load(
            Some(&path),
            env(&[(
                "SEGSTREAM__KAFKA__INPUT_FORMATS",
                "{ web = \"segment\", \"Mixed.Case\" = \"segment\" }",
            )]),
        )
        .unwrap();
        assert_eq!(c.kafka.input_format("web"), InputFormat::SegmentSpec);
        assert_eq!(c.kafka.input_format("Mixed.Case"), InputFormat::SegmentSpec);
        assert_eq!(c.kafka.input_format("crm"), InputFormat::Segstream);
        assert_eq!(
            Config::default().kafka.input_format("email"),
            InputFormat::Segstream
        );

        // An unknown format and a topic that is not an input are listed with the others.
        std::fs::write(
            &path,
            "[kafka]\nbatch_size = 0\n[kafka.input_formats]\nclickstream = \"rudderstack\"\nweb = \"segment\"\n",
        )
        .unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
        let text = err.to_string();
        assert!(text.contains("kafka.input_formats.`clickstream`: unknown format `rudderstack`; expected one of: segstream, segment"), "{text}");
        assert!(
            text.contains(
                "kafka.input_formats names `web`, which is not one of kafka.input_topics"
            ),
            "{text}"
        );
        assert!(text.contains("kafka.batch_size"), "{text}");
    }

    #[test]
    fn toml_syntax_errors_have_a_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[kafka]\nbrokers = \n").unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err();
        assert!(err.0[0].contains("c.toml:2:"), "{err}");
    }
}
