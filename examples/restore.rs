//! Restore benchmark: how fast the service rebuilds its profiles from the changelog topic,
//! next to the raw consume rate of the same topic in the same run, and the resident memory
//! with N profiles. See `docs/restore.md` for the definitions, the commands and the figures.
//!
//! 1. **Records**: the seeded reference funnel (`generator::generate`, `--customers`
//!    customers, `--days` days) through an `Engine` of `segments/library.toml` with change
//!    tracking; the final changelog record of every customer is a pool of realistic records.
//! 2. **Produce**: `--profiles` N records, key `c-{i:09}`, payload `pool[i % pool.len()]`,
//!    partition `i % P`, into a fresh changelog topic of P partitions. The MockCluster keeps
//!    at most 5 MB per partition (older message sets are dropped) and answers a fetch with
//!    one message set per partition, so with it P is raised until every partition holds at
//!    most 4 MB, and each partition is produced in one go (large batches). The watermarks
//!    are checked: every partition must start at 0 and hold all its records.
//! 3. **Raw consume**: the service's consumer settings (`kafka::consumer_config`, no
//!    auto-commit, the service's client context), assigned to all P partitions from the
//!    beginning, reads until every partition's high watermark and only sums payload
//!    lengths: `BaseConsumer::poll` (reference) and `StreamConsumer::recv` (the client type
//!    the restore uses). Clock: from the first watermark request to the last message.
//! 4. **Restore**: `segstream::service::restore_partitions` (exactly what the service runs
//!    on assignment) into a fresh engine, with a fresh reader created like the service's
//!    `restorer`. Clock: the whole call. `profile_count` must equal N.
//! 5. **Memory**: VmRSS (`/proc/self/status`) just before the restore engine is created
//!    and after the restore (the MockCluster's copy of the topic lives in this process, so
//!    only the difference is the engine's). `--rss-only` skips Kafka: it decodes N records
//!    straight into an engine with `Engine::restore_record` (the clean "resident memory
//!    with N profiles" figure, and the engine-only restore rate).
//!
//! Run: `cargo run --release --example restore -- --profiles 1000000`; `--help` lists the
//! options.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{
    BaseRecord, DefaultProducerContext, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use segstream::config::KafkaConfig;
use segstream::generator::{generate, FunnelConfig};
use segstream::kafka::{KafkaContext as Context, KafkaState};
use segstream::metrics::Metrics;
use segstream_core::engine::{Engine, EngineConfig, StateChange};
use segstream_core::transition::Transition;

/// As in the `segstream` binary: the service's allocation pattern wants mimalloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LIBRARY: &str = include_str!("../segments/library.toml");
const LIBRARY_FILE: &str = "segments/library.toml";
/// MockCluster drops a partition's oldest message sets beyond 5 MiB; stay well below.
const MOCK_PARTITION_BYTES: usize = 4 << 20;
/// Bytes a record costs in a record batch besides key and value (length, attributes,
/// timestamp and offset deltas, key and value lengths, header count: varints), rounded up.
const RECORD_OVERHEAD: usize = 16;

const USAGE: &str = "\
usage: cargo run --release --example restore -- [OPTIONS]

  --profiles N        profiles (changelog records) to restore (default 1000000)
  --partitions N      changelog partitions (default 4; with the MockCluster raised until
                      every partition holds at most 4 MB: it keeps at most 5 MB each)
  --customers N       customers simulated for the record pool (default 20000)
  --days N            days simulated for the record pool (default 7)
  --brokers HOST:PORT an existing broker (topic created with the admin API);
                      default: an in-process rdkafka MockCluster
  --rdkafka KEY=VALUE librdkafka setting for the readers (kafka.librdkafka; repeatable)
  --rss-only          no Kafka: decode N records straight into an engine
                      (Engine::restore_record) and report memory and the engine-only rate
  --json              also print the figures as one JSON object (last line)
";

#[derive(Debug, Clone)]
struct Options {
    profiles: usize,
    partitions: i32,
    customers: usize,
    days: u32,
    brokers: Option<String>,
    rdkafka: Vec<(String, String)>,
    rss_only: bool,
    json: bool,
    /// Internal: write the record pool to stdout and exit (see `pool_in_child`).
    pool_out: bool,
}

fn parse_args() -> anyhow::Result<Options> {
    let mut o = Options {
        profiles: 1_000_000,
        partitions: 4,
        customers: 20_000,
        days: 7,
        brokers: None,
        rdkafka: Vec::new(),
        rss_only: false,
        json: false,
        pool_out: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow!("{arg} needs a value\n\n{USAGE}"))
        };
        match arg.as_str() {
            "--profiles" => o.profiles = value()?.replace('_', "").parse()?,
            "--partitions" => o.partitions = value()?.parse()?,
            "--customers" => o.customers = value()?.parse()?,
            "--days" => o.days = value()?.parse()?,
            "--brokers" => o.brokers = Some(value()?),
            "--rdkafka" => {
                let v = value()?;
                let (k, val) = v
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--rdkafka wants KEY=VALUE, got `{v}`"))?;
                o.rdkafka.push((k.to_string(), val.to_string()));
            }
            "--rss-only" => o.rss_only = true,
            "--json" => o.json = true,
            "--pool-out" => o.pool_out = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    if o.profiles == 0 || o.partitions < 1 || o.customers == 0 || o.days == 0 {
        bail!("--profiles, --partitions, --customers and --days must be positive");
    }
    Ok(o)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", fastrand::u32(..))
}

/// (VmRSS, VmHWM) of this process in bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn engine() -> anyhow::Result<Engine> {
    Engine::from_source(LIBRARY_FILE, LIBRARY, EngineConfig::default())
        .map_err(|d| anyhow!("invalid {LIBRARY_FILE}:\n{d}"))
}

// ---- the record pool ------------------------------------------------------------------------

struct Pool {
    records: Vec<Vec<u8>>,
    events: usize,
    secs: f64,
}

impl Pool {
    fn mean(&self) -> f64 {
        self.records.iter().map(Vec::len).sum::<usize>() as f64 / self.records.len() as f64
    }

    fn max(&self) -> usize {
        self.records.iter().map(Vec::len).max().unwrap_or(0)
    }
}

/// The final changelog record of every simulated customer.
fn pool(customers: usize, days: u32) -> anyhow::Result<Pool> {
    let started = Instant::now();
    let events = generate(&FunnelConfig {
        customers,
        days,
        ..FunnelConfig::default()
    });
    let mut e = engine()?.with_change_tracking();
    let mut out: Vec<Transition> = Vec::new();
    for ev in &events {
        // Rejections (late events and the like) are part of the realistic stream.
        let _ = e.process(ev.json.as_bytes(), &mut out);
        out.clear();
    }
    let mut changes: Vec<StateChange> = Vec::new();
    e.drain_changes(&mut changes);
    // One entry per customer per drain; keep the last record of each.
    let mut last: HashMap<Arc<str>, Option<Vec<u8>>> = HashMap::new();
    let mut order = Vec::new();
    for c in changes {
        if !last.contains_key(&c.customer_id) {
            order.push(c.customer_id.clone());
        }
        last.insert(c.customer_id, c.record);
    }
    let records: Vec<Vec<u8>> = order
        .iter()
        .filter_map(|id| last.remove(id).flatten())
        .collect();
    if records.is_empty() {
        bail!("the simulated funnel left no profile records");
    }
    Ok(Pool {
        records,
        events: events.len(),
        secs: started.elapsed().as_secs_f64(),
    })
}

/// The pool built in a child process (this program with `--pool-out`), so that the memory
/// the simulation used is not left in this process's allocator for the engine to reuse
/// (which would hide part of the engine's footprint from the RSS difference).
fn pool_in_child(customers: usize, days: u32) -> anyhow::Result<Pool> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--pool-out",
            "--customers",
            &customers.to_string(),
            "--days",
            &days.to_string(),
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running the pool child")?;
    if !out.status.success() {
        bail!("the pool child failed: {}", out.status);
    }
    let b = out.stdout;
    let num = |at: usize| -> anyhow::Result<u64> {
        Ok(u64::from_le_bytes(
            b.get(at..at + 8)
                .ok_or_else(|| anyhow!("short pool"))?
                .try_into()?,
        ))
    };
    let (events, secs) = (num(0)? as usize, f64::from_bits(num(8)?));
    let mut records = Vec::new();
    let mut at = 16;
    while at < b.len() {
        let len = num(at)? as usize;
        records.push(
            b.get(at + 8..at + 8 + len)
                .ok_or_else(|| anyhow!("short pool"))?
                .to_vec(),
        );
        at += 8 + len;
    }
    Ok(Pool {
        records,
        events,
        secs,
    })
}

fn write_pool(p: &Pool) -> anyhow::Result<()> {
    use std::io::Write;
    let mut b = Vec::new();
    b.extend_from_slice(&(p.events as u64).to_le_bytes());
    b.extend_from_slice(&p.secs.to_bits().to_le_bytes());
    for r in &p.records {
        b.extend_from_slice(&(r.len() as u64).to_le_bytes());
        b.extend_from_slice(r);
    }
    std::io::stdout().lock().write_all(&b)?;
    Ok(())
}

// ---- broker and producer --------------------------------------------------------------------

#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| e.to_string());
        }
    }
}

fn create_topic(
    mock: Option<&MockCluster<'static, DefaultProducerContext>>,
    brokers: &str,
    name: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    if let Some(m) = mock {
        // The mock broker has no admin API.
        return m
            .create_topic(name, partitions, 1)
            .with_context(|| format!("creating topic {name}"));
    }
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("creating the admin client")?;
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for r in rt.block_on(admin.create_topics([&topic], &opts))? {
        r.map_err(|(t, e)| anyhow!("creating topic {t}: {e}"))?;
    }
    Ok(())
}

struct Produced {
    secs: f64,
    bytes: u64,
    markers: usize,
}

/// Records between two position markers (the service writes one per batch of up to
/// `kafka.batch_size` = 1000 messages).
const MARKER_EVERY: usize = 1000;

/// Writes N records, partition by partition so that the batches are large.
fn produce(
    brokers: &str,
    topic: &str,
    partitions: i32,
    n: usize,
    pool: &[Vec<u8>],
) -> anyhow::Result<Produced> {
    let p: ThreadedProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "100")
        .set("batch.num.messages", "100000")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "2000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "600000")
        .create_with_context(Deliveries::default())
        .context("creating the producer")?;
    let started = Instant::now();
    let mut key = String::new();
    let mut bytes = 0u64;
    let mut markers = 0usize;
    // A position marker after every MARKER_EVERY records of a partition and at its end, as
    // the service writes one after every batch (a restore buffers the records between two).
    let marker = segstream_core::changelog::Position::new(0, 0, Default::default()).encode();
    let send = |mut record: BaseRecord<'_, str, [u8]>| -> anyhow::Result<()> {
        loop {
            match p.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    };
    for part in 0..partitions {
        let mut in_part = 0usize;
        for i in (part as usize..n).step_by(partitions as usize) {
            in_part += 1;
            if in_part % MARKER_EVERY == 0 {
                send(
                    BaseRecord::to(topic)
                        .partition(part)
                        .key(segstream_core::changelog::POSITION_KEY)
                        .payload(marker.as_slice()),
                )?;
                markers += 1;
            }
            key.clear();
            std::fmt::Write::write_fmt(&mut key, format_args!("c-{i:09}"))?;
            let payload = &pool[i % pool.len()];
            bytes += (key.len() + payload.len()) as u64;
            send(
                BaseRecord::to(topic)
                    .partition(part)
                    .key(key.as_str())
                    .payload(payload.as_slice()),
            )?;
        }
        send(
            BaseRecord::to(topic)
                .partition(part)
                .key(segstream_core::changelog::POSITION_KEY)
                .payload(marker.as_slice()),
        )?;
        markers += 1;
    }
    p.flush(Duration::from_secs(600))?;
    let secs = started.elapsed().as_secs_f64();
    let failed = p.context().failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = p.context().first_error.lock().ok().and_then(|e| e.clone());
        bail!(
            "{failed} records were not delivered (first error: {})",
            first.unwrap_or_default()
        );
    }
    Ok(Produced {
        secs,
        bytes,
        markers,
    })
}

/// Every partition must start at offset 0 and hold exactly its share of the N records.
fn check_watermarks(brokers: &str, topic: &str, partitions: i32, n: usize) -> anyhow::Result<()> {
    // `n` counts every message: records and position markers.
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("restore-watermarks"))
        .create()?;
    let mut total = 0i64;
    for p in 0..partitions {
        let (low, high) = c.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        if low != 0 {
            bail!("partition {p} starts at offset {low}: the broker dropped records");
        }
        total += high;
    }
    if total != n as i64 {
        bail!("the topic holds {total} records, {n} were produced");
    }
    Ok(())
}

// ---- readers --------------------------------------------------------------------------------

fn kafka_config(o: &Options, brokers: &str, topic: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: brokers.to_string(),
        group_id: unique("restore-bench"),
        input_topics: vec![topic.to_string()],
        changelog_topic: topic.to_string(),
        librdkafka: o.rdkafka.iter().cloned().collect(),
        ..KafkaConfig::default()
    }
}

/// A reader created exactly like the service's `restorer`.
fn reader_config(o: &Options, brokers: &str, topic: &str) -> ClientConfig {
    segstream::kafka::restorer_config(&kafka_config(o, brokers, topic))
}

fn context() -> Context {
    Context(Arc::new(KafkaState::new(Arc::new(Metrics::new()))))
}

#[derive(Debug, Default, Clone, Copy)]
struct Read {
    messages: u64,
    bytes: u64,
    /// First watermark request to the last message.
    secs: f64,
    /// Watermark requests and assignment, before the first message is asked for.
    setup_secs: f64,
}

/// Watermarks of every partition (as `restore_partitions` asks for them) and the assignment
/// from the beginning.
fn assign_all<C: rdkafka::consumer::ConsumerContext>(
    c: &impl Consumer<C>,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<HashMap<i32, i64>> {
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let (low, high) = c.fetch_watermarks(topic, p, Duration::from_secs(5))?;
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    c.assign(&tpl)?;
    Ok(ends)
}

/// `BaseConsumer::poll` in a loop: counts messages and payload bytes, nothing else.
fn raw_base(o: &Options, brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<Read> {
    let c: BaseConsumer<Context> =
        reader_config(o, brokers, topic).create_with_context(context())?;
    let started = Instant::now();
    let mut ends = assign_all(&c, topic, partitions)?;
    let setup_secs = started.elapsed().as_secs_f64();
    let mut r = Read::default();
    while !ends.is_empty() {
        match c.poll(Duration::from_secs(10)) {
            None => bail!(
                "raw consumer: {} messages, then 10 s of silence",
                r.messages
            ),
            Some(Err(e)) => bail!("raw consumer: {e}"),
            Some(Ok(m)) => {
                r.messages += 1;
                r.bytes += (m.payload_len() + m.key().map_or(0, <[u8]>::len)) as u64;
                if ends
                    .get(&m.partition())
                    .is_some_and(|&end| m.offset() + 1 >= end)
                {
                    ends.remove(&m.partition());
                }
            }
        }
    }
    r.secs = started.elapsed().as_secs_f64();
    r.setup_secs = setup_secs;
    Ok(r)
}

/// `StreamConsumer::recv` in a loop: counts messages and payload bytes, nothing else.
async fn raw_stream(
    o: &Options,
    brokers: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<Read> {
    let c: StreamConsumer<Context> =
        reader_config(o, brokers, topic).create_with_context(context())?;
    let started = Instant::now();
    let mut ends = assign_all(&c, topic, partitions)?;
    let setup_secs = started.elapsed().as_secs_f64();
    let mut r = Read::default();
    while !ends.is_empty() {
        let m = match tokio::time::timeout(Duration::from_secs(10), c.recv()).await {
            Err(_) => bail!(
                "raw consumer: {} messages, then 10 s of silence",
                r.messages
            ),
            Ok(Err(e)) => bail!("raw consumer: {e}"),
            Ok(Ok(m)) => m,
        };
        r.messages += 1;
        r.bytes += (m.payload_len() + m.key().map_or(0, <[u8]>::len)) as u64;
        if ends
            .get(&m.partition())
            .is_some_and(|&end| m.offset() + 1 >= end)
        {
            ends.remove(&m.partition());
        }
    }
    r.secs = started.elapsed().as_secs_f64();
    r.setup_secs = setup_secs;
    Ok(r)
}

struct Restored {
    entries: u64,
    secs: f64,
    profiles: usize,
    profile_bytes: usize,
    transitions: usize,
    rss_before: u64,
    rss_after: u64,
    restored_metric: u64,
}

/// `service::restore_partitions` over every partition into a fresh engine.
async fn restore(
    o: &Options,
    brokers: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<Restored> {
    let metrics = Arc::new(Metrics::new());
    let ctx = Context(Arc::new(KafkaState::new(metrics.clone())));
    // As `service::run` creates its `restorer`.
    let restorer: BaseConsumer<Context> = reader_config(o, brokers, topic)
        .create_with_context(ctx)
        .context("creating the changelog reader")?;
    let (rss_before, _) = rss();
    let engine = Mutex::new(engine()?.with_change_tracking());
    let parts: Vec<i32> = (0..partitions).collect();
    let mut out: Vec<Transition> = Vec::new();
    let started = Instant::now();
    let entries = segstream::service::restore_partitions(
        &restorer, topic, &parts, &engine, &metrics, &mut out,
    )
    .await?
    .entries;
    let secs = started.elapsed().as_secs_f64();
    drop(restorer);
    let e = engine.into_inner().unwrap_or_else(|p| p.into_inner());
    let (rss_after, _) = rss();
    let r = Restored {
        entries,
        secs,
        profiles: e.profile_count(),
        profile_bytes: e.profile_bytes(),
        transitions: out.len(),
        rss_before,
        rss_after,
        restored_metric: metrics
            .restore_records
            .with_label_values(&["restored"])
            .get(),
    };
    // Keep the engine alive until RSS was read; dropping 10 M profiles takes a while.
    std::mem::forget(e);
    Ok(r)
}

// ---- engine only ----------------------------------------------------------------------------

struct EngineOnly {
    secs: f64,
    profiles: usize,
    profile_bytes: usize,
    rss_before: u64,
    rss_after: u64,
    hwm_after: u64,
}

/// N records decoded straight into a fresh engine: no Kafka, no lock, no metrics.
fn engine_only(n: usize, partitions: i32, pool: &[Vec<u8>]) -> anyhow::Result<EngineOnly> {
    let (rss_before, _) = rss();
    let mut e = engine()?;
    let mut out: Vec<Transition> = Vec::new();
    let mut key = String::new();
    let started = Instant::now();
    for i in 0..n {
        key.clear();
        std::fmt::Write::write_fmt(&mut key, format_args!("c-{i:09}"))?;
        e.restore_record(
            (i % partitions as usize) as u16,
            &key,
            Some(&pool[i % pool.len()]),
            &mut out,
        )
        .map_err(|err| anyhow!("record {i}: {err}"))?;
    }
    let secs = started.elapsed().as_secs_f64();
    let (rss_after, hwm_after) = rss();
    let r = EngineOnly {
        secs,
        profiles: e.profile_count(),
        profile_bytes: e.profile_bytes(),
        rss_before,
        rss_after,
        hwm_after,
    };
    std::mem::forget(e);
    Ok(r)
}

// ---- main -----------------------------------------------------------------------------------

fn main() -> anyhow::Result<()> {
    let o = parse_args()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let n = o.profiles;
    if o.pool_out {
        return write_pool(&pool(o.customers, o.days)?);
    }
    let pool = pool_in_child(o.customers, o.days)?;
    let mean = pool.mean();
    println!(
        "segstream restore: {n} profiles; record pool: {} records from {} customers x {} days ({} events, {:.1} s), mean {:.1} bytes, max {} bytes",
        pool.records.len(),
        o.customers,
        o.days,
        pool.events,
        pool.secs,
        mean,
        pool.max()
    );

    if o.rss_only {
        let r = engine_only(n, o.partitions, &pool.records)?;
        if r.profiles != n {
            bail!(
                "the engine holds {} profiles, {n} were restored",
                r.profiles
            );
        }
        let delta = r.rss_after.saturating_sub(r.rss_before);
        println!();
        println!("| engine only (restore_record, no Kafka) | |");
        println!("|---|---|");
        println!("| profiles | {} |", r.profiles);
        println!(
            "| restore | {:.0} profiles/s ({:.2} s) |",
            n as f64 / r.secs,
            r.secs
        );
        println!(
            "| RSS before / after | {:.0} / {:.0} MiB |",
            mib(r.rss_before),
            mib(r.rss_after)
        );
        println!(
            "| RSS of the profiles | {:.0} MiB ({:.0} bytes/profile) |",
            mib(delta),
            delta as f64 / n as f64
        );
        println!("| peak RSS (VmHWM) | {:.0} MiB |", mib(r.hwm_after));
        println!(
            "| engine.profile_bytes() | {:.0} MiB ({:.0} bytes/profile) |",
            mib(r.profile_bytes as u64),
            r.profile_bytes as f64 / n as f64
        );
        if o.json {
            println!(
                "{}",
                serde_json::json!({
                    "mode": "rss-only",
                    "profiles": n,
                    "record_mean_bytes": mean,
                    "restore_secs": r.secs,
                    "restore_profiles_per_sec": n as f64 / r.secs,
                    "rss_before_bytes": r.rss_before,
                    "rss_after_bytes": r.rss_after,
                    "rss_delta_bytes": delta,
                    "rss_peak_bytes": r.hwm_after,
                    "profile_bytes": r.profile_bytes,
                })
            );
        }
        // Skip freeing N profiles one by one.
        std::process::exit(0);
    }

    // The mock cluster lives on this thread for the whole run.
    let mock = match &o.brokers {
        Some(_) => None,
        None => Some(MockCluster::new(1).context("starting the MockCluster")?),
    };
    let brokers = match (&o.brokers, &mock) {
        (Some(b), _) => b.clone(),
        (None, Some(m)) => m.bootstrap_servers(),
        (None, None) => unreachable!(),
    };
    let per_record = mean + 11.0 + RECORD_OVERHEAD as f64;
    let mut partitions = o.partitions;
    if mock.is_some() {
        let need = (n as f64 * per_record / MOCK_PARTITION_BYTES as f64).ceil() as i32;
        partitions = partitions.max(need);
    }
    let topic = unique("restore-changelog");
    create_topic(mock.as_ref(), &brokers, &topic, partitions)?;
    let broker_name = if mock.is_some() {
        "MockCluster (in-process)".to_string()
    } else {
        format!("broker {brokers}")
    };
    println!(
        "changelog topic: {partitions} partitions (~{:.1} MB each), {broker_name}",
        n as f64 * per_record / partitions as f64 / 1e6
    );

    let produced = produce(&brokers, &topic, partitions, n, &pool.records)?;
    check_watermarks(&brokers, &topic, partitions, n + produced.markers)?;
    println!(
        "produced: {n} records in {:.2} s ({:.0} records/s, {:.1} MB/s of keys and values)",
        produced.secs,
        n as f64 / produced.secs,
        produced.bytes as f64 / produced.secs / 1e6
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let base = raw_base(&o, &brokers, &topic, partitions)?;
    let stream = rt.block_on(raw_stream(&o, &brokers, &topic, partitions))?;
    for (name, r) in [
        ("BaseConsumer::poll", &base),
        ("StreamConsumer::recv", &stream),
    ] {
        // Records and the position markers between them.
        let all = (n + produced.markers) as u64;
        if r.messages != all {
            bail!("raw consume ({name}) read {} of {all} messages", r.messages);
        }
    }
    let r = rt.block_on(restore(&o, &brokers, &topic, partitions))?;
    let (_, hwm) = rss();
    if r.profiles != n {
        bail!(
            "the engine holds {} profiles after restoring {} entries; {n} were produced",
            r.profiles,
            r.entries
        );
    }
    if r.restored_metric != n as u64 {
        bail!(
            "restore_records_total{{restored}} = {}, expected {n}",
            r.restored_metric
        );
    }

    let rate = |m: u64, s: f64| m as f64 / s;
    let restore_rate = n as f64 / r.secs;
    let base_rate = rate(base.messages, base.secs);
    let stream_rate = rate(stream.messages, stream.secs);
    let delta = r.rss_after.saturating_sub(r.rss_before);
    println!();
    println!(
        "| {n} profiles, {partitions} partitions | records/s | seconds | MB/s | vs. restore |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, rd) in [
        ("raw consume, BaseConsumer::poll", &base),
        ("raw consume, StreamConsumer::recv", &stream),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} (setup {:.2}) | {:.1} | restore = {:.2} x |",
            rate(rd.messages, rd.secs),
            rd.secs,
            rd.setup_secs,
            rd.bytes as f64 / rd.secs / 1e6,
            restore_rate / rate(rd.messages, rd.secs)
        );
    }
    println!(
        "| restore, service::restore_partitions | {:.0} | {:.2} | {:.1} | |",
        restore_rate,
        r.secs,
        stream.bytes as f64 / r.secs / 1e6
    );
    println!();
    println!(
        "profiles in the engine: {} (entries read {}, transitions {})",
        r.profiles, r.entries, r.transitions
    );
    println!(
        "RSS before the restore engine / after the restore: {:.0} / {:.0} MiB; difference {:.0} MiB ({:.0} bytes/profile); peak (VmHWM) {:.0} MiB",
        mib(r.rss_before),
        mib(r.rss_after),
        mib(delta),
        delta as f64 / n as f64,
        mib(hwm)
    );
    println!(
        "engine.profile_bytes(): {:.0} MiB ({:.0} bytes/profile)",
        mib(r.profile_bytes as u64),
        r.profile_bytes as f64 / n as f64
    );
    let half = restore_rate >= 0.5 * base_rate.max(stream_rate);
    println!(
        "target restore >= 1/2 of raw consume: {} ({:.2} of the faster raw reader)",
        if half { "met" } else { "MISSED" },
        restore_rate / base_rate.max(stream_rate)
    );
    println!(
        "at this rate 10 000 000 profiles take {:.1} s (target < 60 s: {})",
        1e7 / restore_rate,
        if 1e7 / restore_rate < 60.0 {
            "met"
        } else {
            "MISSED"
        }
    );
    if o.json {
        println!(
            "{}",
            serde_json::json!({
                "mode": "full",
                "profiles": n,
                "partitions": partitions,
                "broker": broker_name,
                "record_mean_bytes": mean,
                "produce_secs": produced.secs,
                "raw_base": {"secs": base.secs, "setup_secs": base.setup_secs, "records_per_sec": base_rate, "bytes": base.bytes},
                "raw_stream": {"secs": stream.secs, "setup_secs": stream.setup_secs, "records_per_sec": stream_rate, "bytes": stream.bytes},
                "restore": {"secs": r.secs, "records_per_sec": restore_rate, "transitions": r.transitions},
                "rss_before_restore_bytes": r.rss_before,
                "rss_after_restore_bytes": r.rss_after,
                "rss_peak_bytes": hwm,
                "profile_bytes": r.profile_bytes,
            })
        );
    }
    // Skip tearing down N profiles and the broker's copy of the topic.
    std::process::exit(0);
}
