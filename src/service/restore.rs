//! Restoring partitions' state from the changelog: read each newly assigned partition of
//! the changelog from the beginning to its current end into the engine, applying records
//! only up to the partition's last position marker (a batch cut short by a crash is read
//! again from the input instead), with progress in the restore metrics.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use segstream_core::changelog::{identity_of_key, DecodeError, Parsed, Position, POSITION_KEY};
use segstream_core::engine::Engine;
use segstream_core::transition::Transition;
use tracing::{info, warn};

use crate::metrics::{series, Label, Metrics, RestoreOutcome};
use crate::shared::lock;

/// What a restore read.
#[derive(Debug, Default)]
pub struct Restored {
    /// Changelog entries read (records, tombstones, markers, skipped tail).
    pub entries: u64,
    /// The last position marker per partition.
    pub positions: HashMap<i32, Position>,
}

/// Reads partitions `parts` of the changelog `topic` from the beginning to their current
/// end into the engine (records restored into the shard of their partition number), with
/// progress in `metrics`. `restorer` is a consumer outside any group (nothing committed).
/// Transitions of records written under other definitions go to `out`. Returns the number
/// of entries read. A tight polling loop: restoring is all this worker does meanwhile (on a
/// worker's own thread it blocks that thread; on a multi-thread runtime it runs in
/// `block_in_place`).
pub async fn restore_partitions<C: rdkafka::consumer::ConsumerContext + 'static>(
    restorer: &BaseConsumer<C>,
    topic: &str,
    parts: &[i32],
    engine: &Mutex<Engine>,
    metrics: &Metrics,
    out: &mut Vec<Transition>,
) -> anyhow::Result<Restored> {
    let mut restore = || restore_blocking(restorer, topic, parts, engine, metrics, out);
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(restore),
        _ => restore(),
    }
}

fn restore_blocking<C: rdkafka::consumer::ConsumerContext + 'static>(
    restorer: &BaseConsumer<C>,
    topic: &str,
    parts: &[i32],
    engine: &Mutex<Engine>,
    metrics: &Metrics,
    out: &mut Vec<Transition>,
) -> anyhow::Result<Restored> {
    let m = metrics;
    let mut restored = Restored::default();
    // The counters once, not a label lookup per entry.
    let counters: Vec<prometheus::IntCounter> = RestoreOutcome::ALL
        .iter()
        .map(|o| series(&m.restore_records, *o))
        .collect();
    // `ALL` lists the variants in declaration order.
    let count = |outcome: RestoreOutcome| counters[outcome as usize].inc();
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for &p in parts {
        let mut backoff = Duration::from_millis(200);
        let (low, high) = loop {
            match restorer.fetch_watermarks(topic, p, Duration::from_secs(5)) {
                Ok(w) => break w,
                Err(e) => {
                    warn!(error = %e, partition = p, "changelog offsets unavailable; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
            m.restore_remaining.add(high - low);
        }
    }
    m.restoring_partitions.set(ends.len() as i64);
    if ends.is_empty() {
        return Ok(restored);
    }
    // The changelog is compacted: about one record per customer. Growing the map once
    // saves the rehashes (time, and the transient doubling of memory); a changelog the
    // broker has not compacted yet over-reserves at most by its dirty share.
    let total: i64 = ends.values().sum::<i64>();
    lock(engine).reserve(usize::try_from(total).unwrap_or(0).min(RESERVE_MAX));
    restorer
        .assign(&tpl)
        .context("assigning changelog partitions")?;
    let codec = lock(engine).codec();
    // This thread reads and groups entries by marker; a second one applies the groups to
    // the engine, so reading and decoding overlap.
    let applied: anyhow::Result<Vec<Transition>> = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(i32, Vec<Entry>)>(64);
        let count = &count;
        let applier = scope.spawn(move || {
            let mut out = Vec::new();
            for (p, entries) in rx {
                let mut engine = lock(engine);
                for entry in entries {
                    count(restore_one(&mut engine, p, entry, &mut out));
                }
            }
            out
        });
        // Per partition, the entries after its last marker so far.
        let mut tail: HashMap<i32, Vec<Entry>> = HashMap::new();
        let mut read = 0u64;
        while !ends.is_empty() {
            let msg = match restorer.poll(Duration::from_secs(1)) {
                None => {
                    // Nothing more to read: a partition may end in offsets that carry no
                    // record (transaction markers), so also ask where the reader stands.
                    if let Ok(pos) = restorer.position() {
                        for e in pos.elements() {
                            if let (Offset::Offset(o), Some(&end)) =
                                (e.offset(), ends.get(&e.partition()))
                            {
                                if o >= end {
                                    ends.remove(&e.partition());
                                }
                            }
                        }
                        m.restoring_partitions.set(ends.len() as i64);
                    }
                    continue;
                }
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    warn!(error = %e, "restore: consumer error; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            };
            let p = msg.partition();
            let Some(&end) = ends.get(&p) else { continue };
            read += 1;
            m.restore_remaining.dec();
            match msg.key().and_then(|k| std::str::from_utf8(k).ok()) {
                None => count(RestoreOutcome::Invalid),
                Some(POSITION_KEY) => match msg.payload().and_then(Position::decode) {
                    Some(pos) => {
                        let entries = tail.remove(&p).unwrap_or_default();
                        if !entries.is_empty() && tx.send((p, entries)).is_err() {
                            break;
                        }
                        restored.positions.insert(p, pos);
                    }
                    _ => {
                        warn!(
                            partition = p,
                            offset = msg.offset(),
                            "invalid position marker skipped"
                        );
                        count(RestoreOutcome::Invalid);
                    }
                },
                Some(key) => {
                    let entry = match identity_of_key(key) {
                        Some(id) => Entry::Identity(
                            id.to_string(),
                            msg.payload()
                                .map(|b| String::from_utf8_lossy(b).into_owned()),
                        ),
                        // Parsed here, finished against the engine on the applier thread.
                        None => {
                            Entry::Profile(key.to_string(), msg.payload().map(|b| codec.parse(b)))
                        }
                    };
                    tail.entry(p).or_default().push(entry);
                }
            }
            if msg.offset() + 1 >= end {
                ends.remove(&p);
                m.restoring_partitions.set(ends.len() as i64);
            }
        }
        // Entries after a partition's last marker belong to a batch whose offsets were
        // never stored: it is read again from the input. A partition without any marker
        // (written by an older version) is taken as it is.
        for (p, entries) in tail {
            if restored.positions.contains_key(&p) {
                info!(
                    partition = p,
                    entries = entries.len(),
                    "changelog tail of an unfinished batch skipped"
                );
            } else if tx.send((p, entries)).is_err() {
                break;
            }
        }
        drop(tx);
        restored.entries = read;
        applier
            .join()
            .map_err(|_| anyhow::anyhow!("the restore applier panicked"))
    });
    out.extend(applied?);
    m.restore_remaining.set(0);
    restorer
        .unassign()
        .context("releasing changelog partitions")?;
    Ok(restored)
}

/// The most profile slots a restore reserves in advance.
const RESERVE_MAX: usize = 64 << 20;

/// A changelog entry read but not applied yet.
enum Entry {
    /// A customer's record parsed (or a tombstone).
    Profile(String, Option<Result<Parsed, DecodeError>>),
    /// An identity entry: the id and its canonical id (or a tombstone).
    Identity(String, Option<String>),
}

fn restore_one(
    engine: &mut Engine,
    partition: i32,
    entry: Entry,
    out: &mut Vec<Transition>,
) -> RestoreOutcome {
    let (id, record) = match entry {
        Entry::Identity(id, canonical) => {
            engine.restore_identity(&id, canonical.as_deref());
            return if canonical.is_some() {
                RestoreOutcome::Restored
            } else {
                RestoreOutcome::Tombstone
            };
        }
        Entry::Profile(id, record) => (id, record),
    };
    let id = id.as_str();
    let tombstone = record.is_none();
    let restored = match record.transpose() {
        Ok(parsed) => engine.restore_parsed(partition as u16, id, parsed, out),
        Err(e) => Err(e),
    };
    match restored {
        Ok(()) if tombstone => RestoreOutcome::Tombstone,
        Ok(()) => RestoreOutcome::Restored,
        Err(e) => {
            warn!(error = %e, partition, customer = id, "changelog record skipped");
            RestoreOutcome::Invalid
        }
    }
}
