//! A real broker and the real binary as separate processes: tansu (a Kafka-API broker in
//! Rust) over TCP, the `segstream` binary configured through `SEGSTREAM__*` variables, and
//! an independent client (kafka-python, `tests/e2e/kafka_client.py`) to produce events
//! and read topics.
//!
//! `scripts/setup.sh` installs tansu and kafka-python; a missing one fails these tests
//! (they never skip silently).

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn tansu_bin() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_default();
    let candidates = [
        PathBuf::from(format!("{home}/.cargo/bin/tansu")),
        PathBuf::from("tansu"),
    ];
    for c in candidates {
        if Command::new(&c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c;
        }
    }
    panic!(
        "the tansu broker is not installed: run scripts/setup.sh (CI runs it via scripts/test.sh)"
    );
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for_port(port: u16, timeout: Duration) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < timeout, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A tansu broker with in-memory storage on a port of its own.
pub struct Tansu {
    child: Option<Child>,
    pub port: u16,
}

impl Tansu {
    pub fn start_on(port: u16) -> Tansu {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--storage-engine",
                "memory://tansu/",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        wait_for_port(port, Duration::from_secs(20));
        Tansu {
            child: Some(child),
            port,
        }
    }

    pub fn broker(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(tansu_bin())
            .args([
                "topic",
                "create",
                "--broker",
                &format!("tcp://127.0.0.1:{}", self.port),
                "--partitions",
                &partitions.to_string(),
                name,
            ])
            .output()
            .expect("tansu topic create runs");
        assert!(
            out.status.success(),
            "creating {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The segstream binary, configured through `SEGSTREAM__*` variables.
pub struct Segstream {
    pub child: Option<Child>,
    pub http_port: u16,
}

impl Segstream {
    pub fn start(env: &[(&str, String)]) -> Segstream {
        let http_port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_segstream"));
        cmd.arg("run")
            .env("SEGSTREAM__HTTP__LISTEN", format!("127.0.0.1:{http_port}"))
            .env("RUST_LOG", "warn,segstream=info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("segstream starts");
        wait_for_port(http_port, Duration::from_secs(30));
        Segstream {
            child: Some(child),
            http_port,
        }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        super::http::get_blocking(&format!("http://127.0.0.1:{}{path}", self.http_port))
    }

    pub fn wait_ready(&self, ready: bool, timeout: Duration) {
        let start = Instant::now();
        loop {
            let ok = self.get("/readyz").0 == 200;
            if ok == ready {
                return;
            }
            assert!(start.elapsed() < timeout, "readyz never became {ready}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// The process's resident memory in bytes (`VmRSS`).
    pub fn resident_bytes(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc");
        let kib: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    pub fn metric(&self, line_prefix: &str) -> Option<String> {
        self.get("/metrics")
            .1
            .lines()
            .find(|l| l.starts_with(line_prefix))
            .map(|l| l[line_prefix.len()..].trim().to_string())
    }

    /// The sum of every series of a metric (`name{...} value` lines), 0 if none.
    pub fn metric_sum(&self, name: &str) -> u64 {
        let prefix = format!("{name}{{");
        self.get("/metrics")
            .1
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Waits until the instance is ready and its consumer group has settled: no rebalance
    /// for `quiet` (with several workers, cooperative rebalancing hands partitions over in
    /// rounds after start-up; a test that stalls the output meanwhile would see the
    /// handover's at-least-once duplicates).
    pub fn wait_settled(&self, quiet: Duration, timeout: Duration) {
        self.wait_ready(true, timeout);
        let start = Instant::now();
        let rebalances = || self.metric_sum("segstream_rebalances_total");
        let mut last = rebalances();
        let mut since = Instant::now();
        while since.elapsed() < quiet {
            assert!(start.elapsed() < timeout, "the group never settled");
            std::thread::sleep(Duration::from_millis(200));
            let now = rebalances();
            if now != last {
                last = now;
                since = Instant::now();
            }
        }
    }

    /// SIGTERM, and the exit status must be 0 within the deadline.
    pub fn terminate(&mut self) {
        let mut child = self.child.take().unwrap();
        let pid = child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "segstream exited with {status}");
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(35),
                "no exit within the shutdown deadline"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Segstream {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn python(args: &[&str], stdin: Option<&[u8]>) -> String {
    let mut cmd = Command::new("python3");
    cmd.arg("tests/e2e/kafka_client.py")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().expect("python3 runs");
    if let Some(data) = stdin {
        child.stdin.take().unwrap().write_all(data).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kafka_client.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn produce(broker: &str, topic: &str, lines: &str) {
    python(
        &["produce", "--broker", broker, "--topic", topic],
        Some(lines.as_bytes()),
    );
}

/// [`produce`] for messages up to `max_request_size` bytes.
pub fn produce_large(broker: &str, topic: &str, lines: &str, max_request_size: usize) {
    python(
        &[
            "produce",
            "--broker",
            broker,
            "--topic",
            topic,
            "--max-request-size",
            &max_request_size.to_string(),
        ],
        Some(lines.as_bytes()),
    );
}

pub fn consume(broker: &str, topic: &str, count: usize, timeout_s: u32) -> Vec<serde_json::Value> {
    consume_with(broker, topic, count, timeout_s, &[])
}

/// [`consume`] with extra options of the client (e.g. `--max-value-chars 100`).
pub fn consume_with(
    broker: &str,
    topic: &str,
    count: usize,
    timeout_s: u32,
    extra: &[&str],
) -> Vec<serde_json::Value> {
    let count = count.to_string();
    let timeout = timeout_s.to_string();
    let mut args = vec![
        "consume",
        "--broker",
        broker,
        "--topic",
        topic,
        "--count",
        &count,
        "--timeout",
        &timeout,
    ];
    args.extend_from_slice(extra);
    python(&args, None)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn base_env(tansu: &Tansu, segments: &str, group: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SEGSTREAM__KAFKA__BROKERS", tansu.broker()),
        ("SEGSTREAM__KAFKA__GROUP_ID", group.to_string()),
        ("SEGSTREAM__KAFKA__INPUT_TOPICS", "[\"events\"]".to_string()),
        ("SEGSTREAM__KAFKA__OUTPUT_TOPIC", "transitions".to_string()),
        (
            "SEGSTREAM__KAFKA__DEAD_LETTER_TOPIC",
            "dead-letters".to_string(),
        ),
        ("SEGSTREAM__SEGMENTS__FILE", segments.to_string()),
        // One record per batch from segstream's producers (the router's persons-topic
        // records, handoffs, the changelog): tansu 0.6 answers a fetch that starts inside a
        // record batch with the batches after it, so a consumer resuming mid-batch (after
        // a pause, a restart, a rebalance) would skip the rest of that batch. Kafka returns
        // the batch holding the offset. See `tests/e2e/kafka_client.py` for the same on
        // the test's own producer.
        (
            "SEGSTREAM__KAFKA__LIBRDKAFKA__BATCH.NUM.MESSAGES",
            "1".to_string(),
        ),
    ]
}

pub fn create_topics(tansu: &Tansu) {
    tansu.create_topic("events", 3);
    tansu.create_topic("transitions", 3);
    tansu.create_topic("dead-letters", 1);
    // The internal topics: the profile changelog and the persons topic, with as many
    // partitions as each other (the service checks it).
    tansu.create_topic("segstream-changelog", 3);
    tansu.create_topic("segstream-persons", 3);
}
