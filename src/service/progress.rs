//! What the processing loop knows about its input between batches: which partition
//! numbers it owns (their state is in the engine), the last offset applied per input
//! partition, and each partition's event time.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use super::watermarks::PartitionClocks;

/// The loop's bookkeeping (see the module documentation).
#[derive(Debug, Default)]
pub struct Progress {
    /// Partition numbers whose state this instance holds (restored from the changelog).
    pub owned: BTreeSet<i32>,
    /// Highest offset applied to the engine per input partition: a message seen again after
    /// a failure before its offset was stored is not applied twice.
    pub applied: HashMap<(String, i32), i64>,
    /// Event time per input partition.
    pub clocks: PartitionClocks,
    /// When the gauges that scan the profiles were last refreshed.
    pub last_gauges: Option<Instant>,
}

impl Progress {
    /// Whether a message at `offset` was applied already (then it is skipped); otherwise
    /// records it as applied.
    pub fn first_application(&mut self, topic: &str, partition: i32, offset: i64) -> bool {
        match self.applied.get_mut(&(topic.to_string(), partition)) {
            Some(a) if offset <= *a => false,
            Some(a) => {
                *a = offset;
                true
            }
            None => {
                self.applied.insert((topic.to_string(), partition), offset);
                true
            }
        }
    }

    /// Per input topic of partition number `shard`: the next offset to apply and the
    /// largest event time seen (what a position marker records).
    pub fn inputs_of(&self, shard: i32) -> std::collections::BTreeMap<String, (i64, i64)> {
        self.applied
            .iter()
            .filter(|((_, p), _)| *p == shard)
            .map(|((t, _), o)| (t.clone(), (o + 1, self.clocks.max_event_time(t, shard))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_applied_once_and_markers_record_the_next_offset() {
        let mut p = Progress::default();
        assert!(p.first_application("a", 0, 5));
        assert!(!p.first_application("a", 0, 5));
        assert!(!p.first_application("a", 0, 3));
        assert!(p.first_application("a", 0, 6));
        assert!(p.first_application("a", 1, 0));
        let inputs = p.inputs_of(0);
        assert_eq!(inputs.len(), 1);
        assert_eq!(inputs["a"].0, 7);
    }
}
