//! Restore benchmark: how fast the service rebuilds its profiles from the changelog topic,
//! next to the raw consume rate of the same topic in the same run, and the resident memory
//! with N profiles. See `docs/restore.md` for the definitions, the commands and the figures.
//!
//! 1. **Records**: the seeded reference funnel (`generator::generate`, `--customers`
//!    customers, `--days` days) through an `Engine` of `segments/library.toml` with change
//!    tracking; the final changelog record of every customer is a pool of realistic records
//!    ([`pool`]).
//! 2. **Produce**: `--profiles` N records, key `c-{i:09}`, payload `pool[i % pool.len()]`,
//!    partition `i % P`, into a fresh changelog topic of P partitions. The MockCluster keeps
//!    at most 5 MB per partition (older message sets are dropped) and answers a fetch with
//!    one message set per partition, so with it P is raised until every partition holds at
//!    most 4 MB, and each partition is produced in one go (large batches). The watermarks
//!    are checked: every partition must start at 0 and hold all its records ([`changelog`]).
//! 3. **Raw consume**: the service's consumer settings (`kafka::consumer_config`, no
//!    auto-commit, the service's client context), assigned to all P partitions from the
//!    beginning, reads until every partition's high watermark and only sums payload
//!    lengths: `BaseConsumer::poll` (reference) and `StreamConsumer::recv` (the client type
//!    the restore uses). Clock: from the first watermark request to the last message
//!    ([`read`]).
//! 4. **Restore**: `segstream::service::restore_partitions` (exactly what the service runs
//!    on assignment) into a fresh engine, with a fresh reader created like the service's
//!    `restorer`. Clock: the whole call. `profile_count` must equal N ([`read`]).
//! 5. **Memory**: VmRSS (`/proc/self/status`) just before the restore engine is created
//!    and after the restore (the MockCluster's copy of the topic lives in this process, so
//!    only the difference is the engine's). `--rss-only` skips Kafka: it decodes N records
//!    straight into an engine with `Engine::restore_record` (the clean "resident memory
//!    with N profiles" figure, and the engine-only restore rate).
//!
//! Run: `cargo run --release --example restore -- --profiles 1000000`; `--help` lists the
//! options.

#[path = "../common/mod.rs"]
mod common;

mod changelog;
mod pool;
mod read;

use anyhow::bail;
use clap::Parser;

use common::kafka::{Broker, MOCK_PARTITION_BYTES};
use common::{mib, rss, unique, Table};

/// As in the `segstream` binary: the service's allocation pattern wants mimalloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Bytes a record costs in a record batch besides key and value (length, attributes,
/// timestamp and offset deltas, key and value lengths, header count: varints), rounded up.
const RECORD_OVERHEAD: usize = 16;

/// Restore benchmark: the changelog restore against raw consume, and memory per profile
/// (see docs/restore.md).
#[derive(Debug, Clone, Parser)]
#[command(name = "restore", long_about = None)]
#[command(override_usage = "cargo run --release --example restore -- [OPTIONS]")]
pub struct Options {
    /// Profiles (changelog records) to restore; `_` may separate digits
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = common::count)]
    pub profiles: usize,
    /// Changelog partitions (with the MockCluster raised until every partition holds at
    /// most 4 MB: it keeps at most 5 MB each)
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: i32,
    /// Customers simulated for the record pool
    #[arg(long, value_name = "N", default_value_t = 20_000, value_parser = common::count)]
    pub customers: usize,
    /// Days simulated for the record pool
    #[arg(long, value_name = "N", default_value_t = 7,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub days: u32,
    /// An existing broker (topic created with the admin API) [default: an in-process
    /// rdkafka MockCluster]
    #[arg(long, value_name = "HOST:PORT")]
    pub brokers: Option<String>,
    /// librdkafka setting for the readers (kafka.librdkafka; repeatable)
    #[arg(long, value_name = "KEY=VALUE", value_parser = common::key_value)]
    pub rdkafka: Vec<(String, String)>,
    /// No Kafka: decode N records straight into an engine (Engine::restore_record) and
    /// report memory and the engine-only rate
    #[arg(long)]
    pub rss_only: bool,
    /// With --rss-only: customer ids shaped as UUIDs (36 characters, as Segment's
    /// anonymousId or many CRMs' keys) instead of `c-{i:09}` (11 characters)
    #[arg(long, requires = "rss_only")]
    pub uuid_ids: bool,
    /// Also print the figures as one JSON object (last line)
    #[arg(long)]
    pub json: bool,
    /// Internal: write the record pool to stdout and exit (see `pool::pool_in_child`).
    #[arg(long, hide = true)]
    pub pool_out: bool,
}

fn main() -> anyhow::Result<()> {
    let o = Options::parse();
    common::init_tracing();
    if o.pool_out {
        return pool::write_pool(&pool::pool(o.customers, o.days)?);
    }
    let pool = pool::pool_in_child(o.customers, o.days)?;
    println!(
        "segstream restore: {} profiles; record pool: {} records from {} customers x {} days ({} events, {:.1} s), mean {:.1} bytes, max {} bytes",
        o.profiles,
        pool.records.len(),
        o.customers,
        o.days,
        pool.events,
        pool.secs,
        pool.mean(),
        pool.max()
    );
    if o.rss_only {
        engine_only(&o, &pool)?;
    } else {
        with_kafka(&o, &pool)?;
    }
    // Skip tearing down N profiles (and the broker's copy of the topic).
    std::process::exit(0);
}

/// `--rss-only`: the engine alone.
fn engine_only(o: &Options, pool: &pool::Pool) -> anyhow::Result<()> {
    let n = o.profiles;
    let r = read::engine_only(n, o.partitions, &pool.records, o.uuid_ids)?;
    if r.profiles != n {
        bail!(
            "the engine holds {} profiles, {n} were restored",
            r.profiles
        );
    }
    let delta = r.rss_after.saturating_sub(r.rss_before);
    println!();
    let mut t = Table::new(["engine only (restore_record, no Kafka)", ""]);
    t.row(["profiles".to_string(), r.profiles.to_string()]);
    t.row([
        "restore".to_string(),
        format!("{:.0} profiles/s ({:.2} s)", n as f64 / r.secs, r.secs),
    ]);
    t.row([
        "RSS before / after".to_string(),
        format!("{:.0} / {:.0} MiB", mib(r.rss_before), mib(r.rss_after)),
    ]);
    t.row([
        "RSS of the profiles".to_string(),
        format!(
            "{:.0} MiB ({:.0} bytes/profile)",
            mib(delta),
            delta as f64 / n as f64
        ),
    ]);
    t.row([
        "peak RSS (VmHWM)".to_string(),
        format!("{:.0} MiB", mib(r.hwm_after)),
    ]);
    t.row([
        "engine.profile_bytes()".to_string(),
        format!(
            "{:.0} MiB ({:.0} bytes/profile)",
            mib(r.profile_bytes as u64),
            r.profile_bytes as f64 / n as f64
        ),
    ]);
    t.print();
    if o.json {
        println!(
            "{}",
            serde_json::json!({
                "mode": "rss-only",
                "profiles": n,
                "record_mean_bytes": pool.mean(),
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
    Ok(())
}

/// The changelog through a broker: produce, raw consume, restore.
fn with_kafka(o: &Options, pool: &pool::Pool) -> anyhow::Result<()> {
    let n = o.profiles;
    let mean = pool.mean();
    // The mock cluster lives on this thread for the whole run.
    let broker = Broker::new(o.brokers.as_deref())?;
    let brokers = broker.bootstrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let per_record = mean + 11.0 + RECORD_OVERHEAD as f64;
    let mut partitions = o.partitions;
    if broker.is_mock() {
        let need = (n as f64 * per_record / MOCK_PARTITION_BYTES as f64).ceil() as i32;
        partitions = partitions.max(need);
    }
    let topic = unique("restore-changelog");
    rt.block_on(broker.create_topic(&topic, partitions, true))?;
    let broker_name = match &broker {
        Broker::Mock(_) => "MockCluster (in-process)".to_string(),
        Broker::External(_) => broker.describe(),
    };
    println!(
        "changelog topic: {partitions} partitions (~{:.1} MB each), {broker_name}",
        n as f64 * per_record / partitions as f64 / 1e6
    );

    let produced = changelog::produce(&brokers, &topic, partitions, n, &pool.records)?;
    // Records and the position markers between them.
    let all = n + produced.markers;
    changelog::check_watermarks(&broker, &topic, partitions, all)?;
    println!(
        "produced: {n} records in {:.2} s ({:.0} records/s, {:.1} MB/s of keys and values)",
        produced.secs,
        n as f64 / produced.secs,
        produced.bytes as f64 / produced.secs / 1e6
    );

    let base = read::raw_base(o, &brokers, &topic, partitions)?;
    let stream = rt.block_on(read::raw_stream(o, &brokers, &topic, partitions))?;
    for (name, r) in [
        ("BaseConsumer::poll", &base),
        ("StreamConsumer::recv", &stream),
    ] {
        if r.messages != all as u64 {
            bail!("raw consume ({name}) read {} of {all} messages", r.messages);
        }
    }
    let r = rt.block_on(read::restore(o, &brokers, &topic, partitions))?;
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

    let rate = |rd: &read::Read| rd.messages as f64 / rd.secs;
    let restore_rate = n as f64 / r.secs;
    let (base_rate, stream_rate) = (rate(&base), rate(&stream));
    let delta = r.rss_after.saturating_sub(r.rss_before);
    println!();
    let mut t = Table::new([
        format!("{n} profiles, {partitions} partitions"),
        "records/s".into(),
        "seconds".into(),
        "MB/s".into(),
        "vs. restore".into(),
    ]);
    for (name, rd) in [
        ("raw consume, BaseConsumer::poll", &base),
        ("raw consume, StreamConsumer::recv", &stream),
    ] {
        t.row([
            name.to_string(),
            format!("{:.0}", rate(rd)),
            format!("{:.2} (setup {:.2})", rd.secs, rd.setup_secs),
            format!("{:.1}", rd.bytes as f64 / rd.secs / 1e6),
            format!("restore = {:.2} x", restore_rate / rate(rd)),
        ]);
    }
    t.row([
        "restore, service::restore_partitions".to_string(),
        format!("{restore_rate:.0}"),
        format!("{:.2}", r.secs),
        format!("{:.1}", stream.bytes as f64 / r.secs / 1e6),
        String::new(),
    ]);
    t.print();
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
    let faster = base_rate.max(stream_rate);
    println!(
        "target restore >= 1/2 of raw consume: {} ({:.2} of the faster raw reader)",
        if restore_rate >= 0.5 * faster {
            "met"
        } else {
            "MISSED"
        },
        restore_rate / faster
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
    // Leaves the broker (and its copy of the topic) to the process exit.
    std::mem::forget(broker);
    Ok(())
}
