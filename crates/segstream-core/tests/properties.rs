//! Property tests of the engine over generated event streams (out-of-order and late events,
//! forgets, every condition kind, timers):
//! - replaying the same events gives the same transitions;
//! - splitting the stream anywhere and carrying the state over only by changelog records
//!   (drained at random batch boundaries, compacted by key, restored in another order into
//!   a new engine) gives the same transitions and the same profiles;
//! - per customer and segment, entered and exited alternate, sequences count up from 1,
//!   time never goes backwards, and the transitions add up to the final memberships.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use segstream_core::engine::{Engine, EngineConfig};
use segstream_core::event::parse_event;
use segstream_core::profile::Profile;
use segstream_core::symbols::Symbols;
use segstream_core::time::{format_rfc3339, Millis, HOUR, MINUTE};
use segstream_core::transition::{Direction, Transition};
use serde_json::json;

const DEFS: &str = include_str!("fixtures/segments/properties.toml");
const START: Millis = 1_795_000_000_000;

fn config() -> EngineConfig {
    EngineConfig {
        allowed_lateness: 5 * MINUTE,
        profile_ttl: Some(6 * HOUR),
        ..EngineConfig::default()
    }
}

#[derive(Debug, Clone)]
struct Step {
    customer: u8,
    kind: u8,
    gap_min: u16,
    back_min: u16,
    value: u8,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0u8..4,
        0u8..12,
        0u16..45,
        prop_oneof![8 => Just(0u16), 2 => 1u16..12],
        any::<u8>(),
    )
        .prop_map(|(customer, kind, gap_min, back_min, value)| Step {
            customer,
            kind,
            gap_min,
            back_min,
            value,
        })
}

fn events(steps: &[Step]) -> Vec<String> {
    let mut t = START;
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            t += Millis::from(s.gap_min) * MINUTE;
            let ts = t - Millis::from(s.back_min) * MINUTE;
            let (ty, props): (&str, serde_json::Value) = match s.kind {
                0 | 1 => ("page_view", json!({"url": "/"})),
                2 => ("page_view", json!({"url": "/pricing"})),
                3 => ("ad_click", json!({"campaign": if s.value % 3 == 0 { "other" } else { "q4" }})),
                4 => (
                    "webinar_registered",
                    json!({"webinar_id": if s.value % 2 == 0 { "W1" } else { "W2" }, "ends_at": format_rfc3339(ts + Millis::from(s.value % 90) * MINUTE)}),
                ),
                5 => ("webinar_attended", json!({"webinar_id": if s.value % 2 == 0 { "W1" } else { "W2" }})),
                6 => ("purchase", json!({"amount": s.value, "currency": "EUR"})),
                7 => {
                    let country = ["DE", "FR", "AT"][usize::from(s.value % 3)];
                    ("identify", json!({ "country": country }))
                }
                8 => ("unsubscribe", json!({})),
                9 => ("subscribe", json!({})),
                10 => ("email_open", json!({})),
                _ if s.value % 4 == 0 => ("forget", json!(null)),
                _ => ("click", json!({})),
            };
            let mut e = json!({
                "event_id": format!("e{i}"),
                "customer_id": format!("c{}", s.customer),
                "type": ty,
                "timestamp": format_rfc3339(ts),
            });
            if ty == "identify" {
                e["traits"] = props;
            } else if !props.is_null() {
                e["properties"] = props;
            }
            e.to_string()
        })
        .collect()
}

fn engine() -> Engine {
    Engine::from_source("properties.toml", DEFS, config()).expect("definitions compile")
}

/// Runs events through an engine; late events are rejected (and that is fine).
fn run(engine: &mut Engine, events: &[String]) -> Vec<Transition> {
    let mut out = Vec::new();
    for e in events {
        let _ = engine.process(e.as_bytes(), &mut out);
    }
    out
}

/// Like [`run`], in shard `shard`.
fn run_in(engine: &mut Engine, shard: u16, events: &[String]) -> Vec<Transition> {
    let mut out = Vec::new();
    for e in events {
        if let Ok(event) = parse_event(e.as_bytes()) {
            let _ = engine.apply_and_advance(shard, &event, &mut out);
        }
    }
    out
}

/// A customer's profile with its names interned in `names`: equal for equal profiles
/// whatever order the engines met the names in.
fn canonical(engine: &Engine, id: &str, names: &mut Symbols) -> Option<Profile> {
    let profile = engine.profile(id)?;
    let mut codec = engine.codec();
    let mut record = Vec::new();
    codec.encode(engine.symbols(), profile, &mut record);
    Some(
        codec
            .decode(names, &record)
            .expect("own record decodes")
            .profile,
    )
}

fn finish(engine: &mut Engine) -> Vec<Transition> {
    let mut out = Vec::new();
    engine.advance_watermark(START + 1000 * HOUR, &mut out);
    out
}

fn check_invariants(ts: &[Transition], final_engine: &Engine) -> Result<(), TestCaseError> {
    let mut last_dir: HashMap<(&str, &str), Direction> = HashMap::new();
    let mut last_seq: HashMap<&str, u32> = HashMap::new();
    let mut last_time: HashMap<&str, Millis> = HashMap::new();
    for t in ts {
        let key = (&*t.customer_id, &*t.segment);
        let expected = match last_dir.get(&key) {
            None | Some(Direction::Exited) => Direction::Entered,
            Some(Direction::Entered) => Direction::Exited,
        };
        prop_assert_eq!(t.direction, expected, "alternation broken at {:?}", t);
        last_dir.insert(key, t.direction);
        let seq = last_seq.entry(&t.customer_id).or_insert(0);
        // A sequence restarts at 1 only for a new life of the profile (after forget/TTL),
        // which begins after every segment was exited.
        if t.sequence == 1 && *seq != 0 {
            let all_out = last_dir
                .iter()
                .filter(|((c, _), _)| *c == &*t.customer_id)
                .all(|((_, s), d)| *d == Direction::Exited || (*s == &*t.segment));
            prop_assert!(all_out, "sequence restarted while in segments: {:?}", t);
        } else {
            prop_assert_eq!(t.sequence, *seq + 1, "sequence gap at {:?}", t);
        }
        *seq = t.sequence;
        let lt = last_time.entry(&t.customer_id).or_insert(Millis::MIN);
        prop_assert!(t.timestamp >= *lt, "time went backwards at {:?}", t);
        *lt = t.timestamp;
    }
    // Nothing invented, nothing lost: the transitions add up to the final memberships.
    for ((c, s), d) in &last_dir {
        let member = final_engine.memberships(c).iter().any(|m| &**m == *s);
        prop_assert_eq!(member, *d == Direction::Entered, "{} {}", c, s);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn replaying_the_same_events_gives_the_same_transitions(steps in prop::collection::vec(step(), 1..150)) {
        let evs = events(&steps);
        let mut a = engine();
        let mut ta = run(&mut a, &evs);
        ta.extend(finish(&mut a));
        let mut b = engine();
        let mut tb = run(&mut b, &evs);
        tb.extend(finish(&mut b));
        prop_assert_eq!(ta, tb);
    }

    #[test]
    fn splitting_and_restoring_from_the_changelog_gives_the_same_transitions(
        steps in prop::collection::vec(step(), 1..150),
        split in any::<prop::sample::Index>(),
        batch in 1usize..20,
    ) {
        let evs = events(&steps);
        let k = split.index(evs.len() + 1);
        let mut whole = engine();
        let mut expected = run(&mut whole, &evs);
        expected.extend(finish(&mut whole));

        let mut first = engine().with_change_tracking();
        // The compacted changelog: the latest record per customer, tombstones remove.
        let mut log: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut got = Vec::new();
        let mut changes = Vec::new();
        for chunk in evs[..k].chunks(batch) {
            got.extend(run_in(&mut first, 3, chunk));
            first.drain_changes(&mut changes);
            for c in changes.drain(..) {
                prop_assert_eq!(c.shard, 3);
                match c.record {
                    Some(r) => log.insert(c.customer_id.to_string(), r),
                    None => log.remove(&*c.customer_id),
                };
            }
        }
        let watermark = first.watermark();
        let ids: Vec<String> = first.profiles().map(|(k, _)| k.to_string()).collect();
        prop_assert_eq!(ids.len(), log.len());
        drop(first);

        let mut second = engine();
        let mut restore_out = Vec::new();
        // Reverse order: the new engine interns names in another order than the first.
        for (id, record) in log.iter().rev() {
            second.restore_record(3, id, Some(record), &mut restore_out).unwrap();
        }
        prop_assert!(restore_out.is_empty());
        second.advance_watermark(watermark, &mut restore_out);
        prop_assert!(restore_out.is_empty());
        got.extend(run_in(&mut second, 3, &evs[k..]));
        got.extend(finish(&mut second));
        // Per customer, in order (different customers' timers due at the same time may
        // interleave differently: the output is keyed, and ordered, by customer).
        let by_customer = |ts: &[Transition]| {
            let mut m: BTreeMap<String, Vec<Transition>> = BTreeMap::new();
            for t in ts {
                m.entry(t.customer_id.to_string()).or_default().push(t.clone());
            }
            m
        };
        prop_assert_eq!(by_customer(&expected), by_customer(&got));
        let mut names = Symbols::new();
        for (id, _) in whole.profiles() {
            prop_assert_eq!(canonical(&whole, id, &mut names), canonical(&second, id, &mut names));
        }
        prop_assert_eq!(whole.profile_count(), second.profile_count());
    }

    #[test]
    fn entered_and_exited_alternate_and_add_up(steps in prop::collection::vec(step(), 1..200)) {
        let evs = events(&steps);
        let mut e = engine();
        let mut ts = run(&mut e, &evs);
        check_invariants(&ts, &e)?;
        ts.extend(finish(&mut e));
        check_invariants(&ts, &e)?;
    }
}
