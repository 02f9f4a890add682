//! Previewing a candidate segment: the population, members and overlaps it reports are
//! what a reload with the same definition then produces; nothing changes meanwhile; the
//! scan can be split anywhere; invalid candidates come back with the loader's diagnostics.

mod common;

use std::collections::BTreeMap;

use segstream_core::engine::PreviewAnswer;
use segstream_core::engine::{Cursor, DefinitionsChanged, Engine, EngineConfig, Preview, Tally};
use segstream_core::time::{format_rfc3339, parse_rfc3339, DAY, MINUTE};
use serde_json::json;

const LIBRARY: &str = "segments/library.toml";

/// A small seeded generator (xorshift), so the funnel is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, of: &[&'a str]) -> &'a str {
        of[self.below(of.len() as u64) as usize]
    }
}

/// A generated funnel: `customers` people identified with firmographics, then 60 days of
/// mails, page views (some on pricing), webinars and purchases (some with a discount code),
/// in time order.
fn funnel(customers: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng(seed | 1);
    let start = parse_rfc3339("2026-09-01T08:00:00Z").unwrap();
    let mut events: Vec<(i64, String)> = Vec::new();
    let mut n = 0u64;
    let mut push = |t: i64, v: serde_json::Value, events: &mut Vec<(i64, String)>| {
        n += 1;
        let mut v = v;
        v["event_id"] = json!(format!("g-{n}"));
        v["timestamp"] = json!(format_rfc3339(t));
        events.push((t, v.to_string()));
    };
    for c in 0..customers {
        let id = format!("c-{c:05}");
        let t0 = start + rng.below(5 * DAY as u64) as i64;
        let status = rng.pick(&["lead", "lead", "lead", "customer", "key_account"]);
        push(
            t0,
            json!({"customer_id": id, "type": "identify", "traits": {
                "country": rng.pick(&["DE", "AT", "CH", "FR", "US"]),
                "role": rng.pick(&["ceo", "cmo", "engineer", "head_of_marketing", "analyst"]),
                "customer_status": status,
            }}),
            &mut events,
        );
        let activity = rng.below(40);
        for _ in 0..activity {
            let t = t0 + MINUTE + rng.below(60 * DAY as u64) as i64;
            let campaign = rng.pick(&["news-1", "news-2", "promo"]);
            let ev = match rng.below(10) {
                0..=2 => json!({"customer_id": id, "type": "email_sent",
                    "properties": {"campaign": campaign, "message_id": "m-1"}}),
                3 | 4 => json!({"customer_id": id, "type": "email_open",
                    "properties": {"campaign": campaign, "message_id": "m-1"}}),
                5 | 6 => json!({"customer_id": id, "type": "page_view", "properties": {
                    "url": rng.pick(&["/pricing", "/pricing/enterprise", "/blog/a", "/"])}}),
                7 => json!({"customer_id": id, "type": "webinar_attended",
                    "properties": {"webinar_id": "W-1"}}),
                _ => {
                    let mut p = json!({"amount": (rng.below(3000) + 10) as f64,
                        "currency": "EUR", "order_id": format!("o-{}", rng.next())});
                    if rng.below(2) == 0 {
                        p["discount_code"] = json!("SAVE10");
                    }
                    json!({"customer_id": id, "type": "purchase", "properties": p})
                }
            };
            push(t, ev, &mut events);
        }
    }
    events.sort_by_key(|(t, _)| *t);
    events.into_iter().map(|(_, e)| e).collect()
}

/// The library's engine after the funnel.
fn engine_after_funnel(customers: usize, seed: u64) -> (Engine, String) {
    let text = common::repo_file(LIBRARY);
    let mut engine = Engine::from_source(LIBRARY, &text, EngineConfig::default()).unwrap();
    let mut out = Vec::new();
    for line in funnel(customers, seed) {
        engine
            .process(line.as_bytes(), &mut out)
            .unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    (engine, text)
}

/// The whole preview in one scan.
fn preview(engine: &mut Engine, text: &str) -> PreviewAnswer {
    let p = Preview::compile(engine, "candidate.toml", text).unwrap_or_else(|e| panic!("{e}"));
    let mut tally = Tally::new(&p, usize::MAX);
    let mut cursor = Cursor::default();
    assert!(p.scan(engine, &mut tally, &mut cursor, usize::MAX).unwrap());
    tally.finish()
}

/// Members per segment, sorted.
fn members(engine: &Engine) -> BTreeMap<String, Vec<String>> {
    let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, _) in engine.profiles() {
        for s in engine.memberships(id) {
            by.entry(s.to_string()).or_default().push(id.to_string());
        }
    }
    for v in by.values_mut() {
        v.sort();
    }
    by
}

/// The running file with `segment` appended, or replacing the table of the same name.
fn file_with(text: &str, name: &str, segment: &str) -> String {
    let header = format!("[segments.{name}]");
    match text.find(&header) {
        None => format!("{text}\n{segment}"),
        Some(start) => {
            let rest = &text[start + header.len()..];
            let end = rest
                .find("\n[")
                .map_or(text.len(), |i| start + header.len() + i + 1);
            format!("{}{segment}\n{}", &text[..start], &text[end..])
        }
    }
}

/// Previews `segment`, then reloads the file with it and checks the preview against what
/// the reload produced (population and members) and against the memberships before it
/// (overlaps); the preview itself changed nothing.
fn preview_equals_reload(candidate: &str, name: &str, file_segment: &str) -> PreviewAnswer {
    let (mut engine, text) = engine_after_funnel(600, 0x5eed);
    let before = members(&engine);
    let stats = engine.stats().transitions;
    let populations = engine.populations();
    let answer = preview(&mut engine, candidate);
    assert_eq!(engine.stats().transitions, stats, "a preview emits nothing");
    assert_eq!(
        engine.populations(),
        populations,
        "a preview changes nothing"
    );
    assert_eq!(answer.segment, name);
    assert!(answer.complete);
    assert_eq!(answer.profiles, engine.profile_count() as u64);
    assert_eq!(answer.profiles_scanned, answer.profiles);
    for (seg, count) in &answer.overlap {
        let in_both = before.get(seg).map_or(0, |m| {
            m.iter().filter(|id| answer.sample.contains(id)).count()
        });
        assert_eq!(*count, in_both as u64, "overlap with {seg}");
    }

    let mut out = Vec::new();
    let report = engine
        .reload_source(LIBRARY, &file_with(&text, name, file_segment), &mut out)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer.replaces, report.changed.contains(&name.to_string()));
    let after = members(&engine);
    let reloaded = after.get(name).cloned().unwrap_or_default();
    assert_eq!(answer.population, reloaded.len() as u64);
    assert_eq!(answer.sample, reloaded);
    let version =
        &engine.definitions().segments[engine.definitions().segment_index(name).unwrap()].version;
    assert_eq!(answer.version, **version);
    answer
}

#[test]
fn a_new_segment_previews_what_a_reload_then_produces() {
    // A new feature (pricing views in 90 days), kept ones and a running segment.
    let seg = "[segments.dach-buyer]\ncondition = '''\nin_segment(\"dach-decision-makers\") \
               and count(purchase, 365d) >= 2\n  and count(page_view(url prefix \"/pricing\"), 7d) >= 1\n'''\n";
    let answer = preview_equals_reload(seg, "dach-buyer", seg);
    assert!(
        answer.population > 0,
        "the funnel should have some: {answer:?}"
    );
    assert!(!answer.replaces);
    // Every member is a DACH decision maker: the overlap is the whole population.
    assert_eq!(answer.overlap["dach-decision-makers"], answer.population);
}

#[test]
fn a_changed_segment_previews_what_a_reload_then_produces() {
    // The same aggregate with another threshold: the state is kept, the population moves.
    let seg = "[segments.engaged-reader]\ndescription = \"Two opens will do\"\n\
               condition = 'count(email_open, 30d) >= 2'\n";
    let answer = preview_equals_reload(seg, "engaged-reader", seg);
    assert!(answer.replaces);
    assert!(answer.population > answer.overlap["engaged-reader"]);
    // A segment other segments use, changed so that some of its dependents' inputs change.
    let seg = "[segments.dach-decision-makers]\ncondition = 'trait.country in [\"DE\", \"AT\"]'\n";
    let answer = preview_equals_reload(seg, "dach-decision-makers", seg);
    assert!(answer.replaces);
    assert!(answer.population > 0);
}

#[test]
fn a_changed_segment_with_a_new_aggregate_starts_it_empty_as_a_reload_does() {
    // 14-day windows have another bucket size than the 30-day one: a new aggregate, empty
    // until events fill it, so nobody is in yet - as after the reload.
    let seg = "[segments.engaged-reader]\ncondition = 'count(email_open, 14d) >= 1'\n";
    let answer = preview_equals_reload(seg, "engaged-reader", seg);
    assert_eq!(answer.population, 0);
}

#[test]
fn a_bare_condition_is_previewed_as_a_segment_named_preview() {
    let cond = "count(purchase, 365d) >= 1 and not in_segment(\"regular-customer\")";
    let seg = format!("[segments.preview]\ncondition = '{cond}'\n");
    let answer = preview_equals_reload(cond, "preview", &seg);
    assert!(answer.population > 0);
    assert_eq!(answer.overlap["regular-customer"], 0);
}

#[test]
fn a_scan_in_chunks_gives_the_same_answer_and_says_when_it_is_incomplete() {
    let (mut engine, _) = engine_after_funnel(300, 7);
    let cand = "count(email_open, 30d) >= 1 or profile.purchases >= 2";
    let whole = preview(&mut engine, cand);
    let p = Preview::compile(&mut engine, "c", cand).unwrap();
    let mut tally = Tally::new(&p, 5);
    let mut cursor = Cursor::default();
    let mut chunks = 0;
    while !p.scan(&engine, &mut tally, &mut cursor, 37).unwrap() {
        chunks += 1;
    }
    assert!(chunks >= 300 / 37);
    let chunked = tally.finish();
    assert_eq!(chunked.population, whole.population);
    assert_eq!(chunked.overlap, whole.overlap);
    assert_eq!(
        chunked.sample,
        whole.sample[..5].to_vec(),
        "the 5 smallest ids"
    );

    let mut tally = Tally::new(&p, 5);
    let mut cursor = Cursor::default();
    assert!(!p.scan(&engine, &mut tally, &mut cursor, 100).unwrap());
    let partial = tally.finish();
    assert!(!partial.complete);
    assert_eq!(partial.profiles_scanned, 100);
    assert_eq!(partial.profiles, 300);
}

#[test]
fn one_tally_collects_the_scans_of_several_engines() {
    let (mut a, _) = engine_after_funnel(200, 11);
    let (mut b, _) = engine_after_funnel(150, 12);
    let cand = "count(page_view(url prefix \"/pricing\"), 30d) >= 2";
    let (ra, rb) = (preview(&mut a, cand), preview(&mut b, cand));
    let pa = Preview::compile(&mut a, "c", cand).unwrap();
    let pb = Preview::compile(&mut b, "c", cand).unwrap();
    let mut tally = Tally::new(&pa, 0);
    let (mut ca, mut cb) = (Cursor::default(), Cursor::default());
    assert!(pa.scan(&a, &mut tally, &mut ca, 1000).unwrap());
    let half = Tally::new(&pa, 0);
    assert!(!half.finish().complete, "nothing scanned is not complete");
    assert!(pb.scan(&b, &mut tally, &mut cb, 1000).unwrap());
    let both = tally.finish();
    assert!(both.complete);
    assert_eq!(both.population, ra.population + rb.population);
    assert_eq!(both.profiles, 350);
    for (seg, n) in &both.overlap {
        assert_eq!(*n, ra.overlap[seg] + rb.overlap[seg], "{seg}");
    }
}

#[test]
fn a_reload_during_the_scan_stops_it() {
    let (mut engine, text) = engine_after_funnel(50, 3);
    let p = Preview::compile(&mut engine, "c", "profile.purchases >= 1").unwrap();
    let mut tally = Tally::new(&p, 10);
    let mut cursor = Cursor::default();
    p.scan(&engine, &mut tally, &mut cursor, 10).unwrap();
    let mut out = Vec::new();
    let edited = text.replace("count(purchase, 365d) >= 3", "count(purchase, 365d) >= 4");
    engine.reload_source(LIBRARY, &edited, &mut out).unwrap();
    assert_eq!(
        p.scan(&engine, &mut tally, &mut cursor, 10),
        Err(DefinitionsChanged)
    );
}

fn errors(text: &str) -> Vec<String> {
    let (mut engine, _) = engine_after_funnel(5, 1);
    let version = engine.definitions().version.clone();
    let e = Preview::compile(&mut engine, "candidate.toml", text).unwrap_err();
    assert_eq!(engine.definitions().version, version);
    e.0.iter().map(|d| d.to_string()).collect()
}

#[test]
fn an_invalid_candidate_gets_the_loaders_diagnostics_within_the_candidate() {
    // In a table: line and column in the candidate, with a suggestion.
    assert_eq!(
        errors("[segments.x]\ncondition = '''\ncount(purchase, 30d) >= 1\n  and in_segment(\"regular-custmer\")\n'''\n"),
        ["candidate.toml:4:18: segment `x` uses unknown segment `regular-custmer`; did you mean `regular-customer`?"]
    );
    // A bare condition: a syntax error, and a type error.
    let e = errors("count(purchase, 30d) >=");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("candidate.toml:1:"), "{e:?}");
    assert_eq!(
        errors("\n  profile.revenue = \"a lot\""),
        ["candidate.toml:2:21: cannot compare a number with a string"]
    );
    // TOML errors, as the file loader reports them.
    let e = errors("[segments.x]\ncondition = 'score >= 1\n");
    assert!(
        e[0].starts_with("candidate.toml:2:") && e[0].contains("invalid TOML"),
        "{e:?}"
    );
    let e = errors("[segments.x]\nconditon = 'score >= 1'\n");
    assert!(
        e.iter().any(|m| m.contains("unknown field `conditon`")),
        "{e:?}"
    );
    // One segment at a time, no scoring.
    let e =
        errors("[segments.x]\ncondition = 'score >= 1'\n[segments.y]\ncondition = 'score >= 2'\n");
    assert_eq!(
        e,
        ["candidate.toml:3:11: a candidate is one segment; this one defines 2"]
    );
    let e = errors("[scoring]\nhalf_life = \"7d\"\n[segments.x]\ncondition = 'score >= 1'\n");
    assert_eq!(
        e,
        ["candidate.toml:2:13: a candidate is one segment; `[scoring]` cannot be previewed"]
    );
    // A change that closes a cycle through running segments.
    let e = errors(
        "[segments.dach-decision-makers]\ncondition = 'in_segment(\"hot-dach-prospect\")'\n",
    );
    assert!(e.iter().any(|m| m.contains("cycle")), "{e:?}");
}

#[test]
fn an_unchanged_segment_previews_its_running_membership() {
    let (mut engine, text) = engine_after_funnel(300, 21);
    let start = text.find("[segments.regular-customer]").unwrap();
    let end = start + text[start..].find("\n\n").unwrap();
    let answer = preview(&mut engine, &text[start..end]);
    assert!(answer.replaces);
    let running = engine
        .populations()
        .into_iter()
        .find(|(n, _)| &**n == "regular-customer")
        .unwrap()
        .1;
    assert_eq!(answer.population, running as u64);
    assert_eq!(answer.overlap["regular-customer"], answer.population);
}
