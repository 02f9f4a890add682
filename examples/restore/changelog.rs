//! Step 2: the changelog topic, written as the service writes it (records, and a position
//! marker after every batch), and checked by its watermarks.

use std::time::{Duration, Instant};

use anyhow::bail;
use rdkafka::producer::BaseRecord;
use segstream_core::changelog::{Position, POSITION_KEY};

use crate::common::kafka::{self, Broker};

/// Records between two position markers (the service writes one per batch of up to
/// `kafka.batch_size` = 1000 messages).
const MARKER_EVERY: usize = 1000;

pub struct Produced {
    pub secs: f64,
    /// Keys and values of the records.
    pub bytes: u64,
    /// Position markers written besides the records.
    pub markers: usize,
}

/// Writes N records (key `c-{i:09}`, payload `pool[i % pool.len()]`, partition `i % P`),
/// partition by partition so that the batches are large.
pub fn produce(
    brokers: &str,
    topic: &str,
    partitions: i32,
    n: usize,
    pool: &[Vec<u8>],
) -> anyhow::Result<Produced> {
    let p = kafka::producer(
        brokers,
        &[
            ("linger.ms", "100"),
            ("batch.num.messages", "100000"),
            ("batch.size", "1000000"),
            ("queue.buffering.max.messages", "2000000"),
            ("queue.buffering.max.kbytes", "1048576"),
            ("message.timeout.ms", "600000"),
        ],
    )?;
    let started = Instant::now();
    let mut key = String::new();
    let mut bytes = 0u64;
    let mut markers = 0usize;
    // A position marker after every MARKER_EVERY records of a partition and at its end, as
    // the service writes one after every batch (a restore buffers the records between two).
    let marker = Position::new(0, 0, Default::default()).encode();
    let marker = || {
        BaseRecord::<str, [u8]>::to(topic)
            .key(POSITION_KEY)
            .payload(marker.as_slice())
    };
    for part in 0..partitions {
        let mut in_part = 0usize;
        for i in (part as usize..n).step_by(partitions as usize) {
            in_part += 1;
            if in_part % MARKER_EVERY == 0 {
                kafka::send(&p, marker().partition(part))?;
                markers += 1;
            }
            key.clear();
            std::fmt::Write::write_fmt(&mut key, format_args!("c-{i:09}"))?;
            let payload = &pool[i % pool.len()];
            bytes += (key.len() + payload.len()) as u64;
            kafka::send(
                &p,
                BaseRecord::to(topic)
                    .partition(part)
                    .key(key.as_str())
                    .payload(payload.as_slice()),
            )?;
        }
        kafka::send(&p, marker().partition(part))?;
        markers += 1;
    }
    kafka::finish(&p, Duration::from_secs(600))?;
    Ok(Produced {
        secs: started.elapsed().as_secs_f64(),
        bytes,
        markers,
    })
}

/// Every partition must start at offset 0, and the topic hold `n` messages (records and
/// position markers).
pub fn check_watermarks(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    n: usize,
) -> anyhow::Result<()> {
    let mut total = 0i64;
    for (p, (low, high)) in broker
        .watermarks(topic, partitions)?
        .into_iter()
        .enumerate()
    {
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
