//! Activation: the current audience. The compacted membership topic, read from the start,
//! is exactly the set of members the transitions give; `GET /segments/{name}/members`
//! pages through the same set and `GET /segments/{name}` counts it, with the entries and
//! exits of the last hour and day.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use std::time::Duration;
use support::members_of;

use rdkafka::message::Message;
use support::http;
use support::mock::{produce, setup, start, stop, url, Reader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_membership_topic_and_the_members_endpoint_hold_exactly_the_current_audience() {
    let (_cluster, mut cfg, input) = setup(4, "segments/library.toml");
    let brokers = cfg.kafka.brokers.clone();
    cfg.engine.idle_lag = 10 * 365 * 86_400_000;
    cfg.engine.workers = Some(2);
    cfg.http.token = Some("activation-test-token-0123".into());
    let token = cfg.http.token.as_deref();
    let (lines, expected) = support::known_funnel(300, 11, &cfg);
    let members = members_of(&expected);
    assert!(
        members.len() > 50,
        "an audience worth paging: {}",
        members.len()
    );
    produce(&brokers, &input, &lines).await;
    let svc = start(cfg.clone()).await;
    let mut out = Reader::new(&brokers, &cfg.kafka.output_topic);
    out.until(expected.len(), Duration::from_secs(60)).await;
    assert_eq!(out.got.len(), expected.len());

    // One membership record per transition, in the same batch: read from the start and
    // folded by key (what compaction keeps), it is the current audience.
    let mut topic = Reader::new(&brokers, &cfg.kafka.membership_topic);
    topic.until(expected.len(), Duration::from_secs(30)).await;
    let mut folded: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for m in &topic.got {
        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        match m.payload() {
            Some(v) => {
                folded.insert(key, serde_json::from_slice(v).unwrap());
            }
            None => {
                folded.remove(&key);
            }
        }
    }
    assert_eq!(
        folded.keys().collect::<Vec<_>>(),
        members.keys().collect::<Vec<_>>(),
        "the membership topic is the audience the transitions give"
    );
    for (key, (since, version)) in &members {
        let v = &folded[key];
        assert_eq!(v["since"].as_str(), Some(since.as_str()), "{key}");
        assert_eq!(v["rule_version"].as_str(), Some(version.as_str()), "{key}");
        assert_eq!(
            format!(
                "{}/{}",
                v["segment"].as_str().unwrap(),
                v["customer_id"].as_str().unwrap()
            ),
            *key
        );
    }

    // The same audience over HTTP, page by page, and its counts.
    let (status, _) = http::get(&url(&svc, "/segments/webinar-attendee/members"), None).await;
    assert_eq!(status, 401, "token-protected");
    let segments: BTreeSet<&str> = members
        .keys()
        .map(|k| k.split('/').next().unwrap())
        .collect();
    let mut entered: BTreeMap<String, u64> = BTreeMap::new();
    let mut exited: BTreeMap<String, u64> = BTreeMap::new();
    for line in &expected {
        let t: serde_json::Value = serde_json::from_str(line).unwrap();
        let to = if t["direction"] == "entered" {
            &mut entered
        } else {
            &mut exited
        };
        *to.entry(t["segment"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    for segment in segments {
        let want: Vec<String> = members
            .keys()
            .filter_map(|k| k.strip_prefix(&format!("{segment}/")).map(String::from))
            .collect();
        let mut got: Vec<String> = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut path = format!("/segments/{segment}/members?limit=7");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (status, body) = http::get(&url(&svc, &path), token).await;
            assert_eq!(status, 200, "{body}");
            let page: serde_json::Value = serde_json::from_str(&body).unwrap();
            let ids = page["members"].as_array().unwrap();
            assert!(ids.len() <= 7);
            got.extend(ids.iter().map(|i| i.as_str().unwrap().to_string()));
            pages += 1;
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(got, want, "{segment}: every member once, in id order");
        assert_eq!(pages, want.len().div_ceil(7).max(1), "{segment}");
        let (status, body) = http::get(&url(&svc, &format!("/segments/{segment}")), token).await;
        assert_eq!(status, 200, "{body}");
        let s: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            s["population"].as_u64(),
            Some(want.len() as u64),
            "{segment}"
        );
        // Everything was produced within this test: the last hour holds it all.
        let a = &s["activity"];
        assert_eq!(
            a["entered_last_hour"].as_u64(),
            entered.get(segment).copied().or(Some(0))
        );
        assert_eq!(
            a["exited_last_hour"].as_u64(),
            exited.get(segment).copied().or(Some(0))
        );
        assert_eq!(a["entered_last_day"], a["entered_last_hour"]);
    }
    let (status, body) = http::get(&url(&svc, "/segments/webinar-atendee"), token).await;
    assert_eq!(status, 404);
    assert!(body.contains("webinar-attendee"), "did you mean: {body}");
    stop(svc).await;
}
