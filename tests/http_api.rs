//! The HTTP API: health, readiness, the token-protected profile and segment endpoints,
//! reloads rejected and accepted, metrics.

mod support;

use std::time::Duration;

use support::http;
use support::mock::{produce, read, setup, start, stop, url, wait_for_readyz};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_health_profiles_with_token_segments_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("segments.toml");
    std::fs::write(
        &defs,
        "[segments.dach]\ncondition = 'trait.country = \"DE\"'\n",
    )
    .unwrap();
    let (_cluster, mut cfg, input) = setup(2, defs.to_str().unwrap());
    let brokers = cfg.kafka.brokers.clone();
    cfg.http.token = Some("0123456789abcdef-token".into());
    let svc = start(cfg.clone()).await;
    let token = cfg.http.token.as_deref();

    assert_eq!(http::get(&url(&svc, "/healthz"), None).await.0, 200);
    // Ready once partitions are assigned and the input is caught up.
    wait_for_readyz(&svc, 200, 20).await;

    produce(&brokers, &input, &[(Some("c1".into()), br#"{"event_id":"a","customer_id":"c1","type":"identify","timestamp":"2026-11-22T10:00:00Z","traits":{"country":"DE"}}"#.to_vec())]).await;
    assert_eq!(
        read(
            &brokers,
            &cfg.kafka.output_topic,
            1,
            Duration::from_secs(30)
        )
        .await
        .len(),
        1
    );

    // The profile API needs the token; metrics and health do not.
    assert_eq!(http::get(&url(&svc, "/profiles/c1"), None).await.0, 401);
    assert_eq!(
        http::get(&url(&svc, "/profiles/c1"), Some("wrong-token-0000000000"))
            .await
            .0,
        401
    );
    let (status, body) = http::get(&url(&svc, "/profiles/c1"), token).await;
    assert_eq!(status, 200);
    let profile: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(profile["segments"], serde_json::json!(["dach"]));
    assert_eq!(profile["traits"]["country"], "DE");
    assert_eq!(
        http::get(&url(&svc, "/profiles/nobody"), token).await.0,
        404
    );
    let (status, body) = http::get(&url(&svc, "/segments"), token).await;
    assert_eq!(status, 200);
    let segs: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(segs["segments"][0]["population"], 1);

    // An invalid file is rejected and the running set stays.
    std::fs::write(&defs, "[segments.dach]\ncondition = 'trait.country ='\n").unwrap();
    let (status, body) = http::post(&url(&svc, "/segments/reload"), token).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("segments.toml:2:"), "{body}");
    // A valid one takes effect, with its transitions.
    std::fs::write(&defs, "[segments.dach]\ncondition = 'trait.country = \"DE\"'\n[segments.not-dach]\ncondition = 'not in_segment(\"dach\")'\n[segments.german]\ncondition = 'trait.country in [\"DE\", \"AT\"]'\n").unwrap();
    let (status, body) = http::post(&url(&svc, "/segments/reload"), token).await;
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["added"], serde_json::json!(["not-dach", "german"]));
    let out = read(
        &brokers,
        &cfg.kafka.output_topic,
        2,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(out.len(), 2, "dach (before) and german (reload)");
    let metrics = http::get(&url(&svc, "/metrics"), None).await.1;
    assert!(
        metrics.contains(r#"segstream_segment_reloads_total{outcome="ok"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"segstream_segment_reloads_total{outcome="rejected"} 1"#));
    stop(svc).await;
}

/// `POST /segments/preview`: token-protected; an invalid candidate gets 400 with the
/// diagnostics (line and column within the candidate); a valid one the population, members
/// and overlaps over the live profiles, as a reload of it then gives; nothing is activated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_answers_what_a_reload_would_give_and_activates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("segments.toml");
    let running = "[segments.dach]\ncondition = 'trait.country = \"DE\"'\n";
    std::fs::write(&defs, running).unwrap();
    let (_cluster, mut cfg, input) = setup(2, defs.to_str().unwrap());
    let brokers = cfg.kafka.brokers.clone();
    cfg.http.token = Some("0123456789abcdef-token".into());
    let svc = start(cfg.clone()).await;
    let token = cfg.http.token.as_deref();
    wait_for_readyz(&svc, 200, 20).await;
    let events: Vec<_> = [("c1", "DE"), ("c2", "AT"), ("c3", "DE"), ("c4", "FR")]
        .iter()
        .enumerate()
        .map(|(i, (c, country))| {
            let e = format!(
                r#"{{"event_id":"p{i}","customer_id":"{c}","type":"identify","timestamp":"2026-11-22T10:00:0{i}Z","traits":{{"country":"{country}"}}}}"#
            );
            (Some(c.to_string()), e.into_bytes())
        })
        .collect();
    produce(&brokers, &input, &events).await;
    let out = read(
        &brokers,
        &cfg.kafka.output_topic,
        2,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(out.len(), 2, "c1 and c3 entered dach");
    let preview_url = url(&svc, "/segments/preview");

    let cand = "[segments.german]\ncondition = 'trait.country in [\"DE\", \"AT\"]'\n";
    let (status, _) = http::post_body(&preview_url, None, cand.into()).await;
    assert_eq!(status, 401);
    let (status, body) = http::post_body(&preview_url, token, cand.into()).await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["segment"], "german");
    assert_eq!(answer["population"], 3);
    assert_eq!(answer["sample"], serde_json::json!(["c1", "c2", "c3"]));
    assert_eq!(answer["overlap"], serde_json::json!({"dach": 2}));
    assert_eq!(answer["complete"], true);
    assert_eq!(answer["profiles"], 4);

    // A bare condition, and a changed running segment; `sample` bounds the member list.
    let (status, body) = http::post_body(
        &format!("{preview_url}?sample=1"),
        token,
        "not in_segment(\"dach\")".into(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["segment"], "preview");
    assert_eq!(answer["population"], 2);
    assert_eq!(answer["sample"], serde_json::json!(["c2"]));
    let changed = "[segments.dach]\ncondition = 'trait.country in [\"AT\", \"CH\"]'\n";
    let (status, body) = http::post_body(&preview_url, token, changed.into()).await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["replaces"], true);
    assert_eq!(answer["population"], 1);
    assert_eq!(answer["overlap"], serde_json::json!({"dach": 0}));

    // Invalid: 400 with the loader's diagnostics, within the candidate.
    let (status, body) = http::post_body(
        &preview_url,
        token,
        "[segments.x]\ncondition = '''\ntrait.country = \"DE\"\n  and in_segment(\"dah\")'''\n"
            .into(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let err: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        err["diagnostics"],
        serde_json::json!([{"file": "candidate", "line": 4, "column": 18,
            "message": "segment `x` uses unknown segment `dah`; did you mean `dach`?"}])
    );

    // Nothing was activated: the running set is unchanged...
    let (_, body) = http::get(&url(&svc, "/segments"), token).await;
    let segs: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(segs["segments"].as_array().unwrap().len(), 1);
    assert_eq!(segs["segments"][0]["population"], 2);
    // ... and a reload with the first candidate gives the population it previewed.
    std::fs::write(&defs, format!("{running}{cand}")).unwrap();
    let (status, body) = http::post(&url(&svc, "/segments/reload"), token).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = http::get(&url(&svc, "/segments"), token).await;
    let segs: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(segs["segments"][1]["name"], "german");
    assert_eq!(segs["segments"][1]["population"], 3);
    // 2 before, 3 from the reload, none from the previews (waiting for a sixth in vain).
    let out = read(&brokers, &cfg.kafka.output_topic, 6, Duration::from_secs(8)).await;
    assert_eq!(
        out.len(),
        5,
        "no transition from the previews, 3 from the reload"
    );
    stop(svc).await;
}

/// `GET /profiles/{id}/explain?segment=NAME`: token-protected like the profile, the
/// condition as a tree whose result is the recorded membership, 404 for an unknown
/// customer, 400 for a missing or unknown segment (with a suggestion).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_explains_a_membership() {
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("segments.toml");
    std::fs::write(
        &defs,
        r#"[segments.dach]
condition = 'trait.country in ["DE", "AT"]'
[segments.engaged-reader]
condition = 'in_segment("dach") and count(email_open, 30d) >= 3'
"#,
    )
    .unwrap();
    let (_cluster, mut cfg, input) = setup(2, defs.to_str().unwrap());
    let brokers = cfg.kafka.brokers.clone();
    cfg.http.token = Some("0123456789abcdef-token".into());
    let svc = start(cfg.clone()).await;
    let token = cfg.http.token.as_deref();
    wait_for_readyz(&svc, 200, 20).await;

    let ev = |id: &str, ty: &str, time: &str, extra: &str| {
        (
            Some("c1".to_string()),
            format!(r#"{{"event_id":"{id}","customer_id":"c1","type":"{ty}","timestamp":"{time}"{extra}}}"#)
                .into_bytes(),
        )
    };
    produce(
        &brokers,
        &input,
        &[
            ev("o1", "email_open", "2026-11-22T09:00:00Z", ""),
            ev("o2", "email_open", "2026-11-22T09:30:00Z", ""),
            ev(
                "i1",
                "identify",
                "2026-11-22T10:00:00Z",
                r#","traits":{"country":"DE"}"#,
            ),
        ],
    )
    .await;
    // dach is entered by the identify: then the whole batch has been applied.
    assert_eq!(
        read(
            &brokers,
            &cfg.kafka.output_topic,
            1,
            Duration::from_secs(30)
        )
        .await
        .len(),
        1
    );

    let path = "/profiles/c1/explain?segment=engaged-reader";
    assert_eq!(http::get(&url(&svc, path), None).await.0, 401);
    let (status, body) = http::get(&url(&svc, path), token).await;
    assert_eq!(status, 200, "{body}");
    let e: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["customer_id"], "c1");
    assert_eq!(e["segment"], "engaged-reader");
    assert_eq!(e["member"], false);
    assert_eq!(e["result"], false);
    assert_eq!(e["at"], "2026-11-22T10:00:00.000Z");
    assert_eq!(e["causes"], serde_json::json!([]));
    let c = &e["condition"];
    assert_eq!(c["kind"], "and");
    assert_eq!(c["value"], 1);
    assert_eq!(c["children"][0]["kind"], "segment");
    assert_eq!(c["children"][0]["value"], true);
    let count = &c["children"][1];
    assert_eq!(count["text"], "count(email_open,4w2d)>=3");
    assert_eq!(count["kind"], "count");
    assert_eq!(count["value"], 2);
    assert_eq!(count["needs"], ">= 3");
    assert_eq!(count["result"], false);
    assert_eq!(count["next_change"]["kind"], "window");

    let (status, body) = http::get(&url(&svc, "/profiles/c1/explain?segment=dach"), token).await;
    assert_eq!(status, 200, "{body}");
    let e: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((&e["member"], &e["result"]), (&true.into(), &true.into()));
    assert_eq!(e["condition"]["value"], "DE");
    // The entering transition, from the worker's latest transitions.
    assert_eq!(
        e["causes"],
        serde_json::json!([{
            "at": "2026-11-22T10:00:00.000Z",
            "direction": "entered",
            "cause": "event:i1",
            "sequence": 1,
            "rule_version": e["rule_version"],
            "customer_id": "c1"
        }]),
        "{body}"
    );

    let (status, body) = http::get(
        &url(&svc, "/profiles/c1/explain?segment=engaged-raeder"),
        token,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let err: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["did_you_mean"], "engaged-reader");
    assert!(
        err["error"].as_str().unwrap().contains("did you mean"),
        "{body}"
    );
    assert_eq!(
        http::get(&url(&svc, "/profiles/c1/explain"), token).await.0,
        400
    );
    assert_eq!(
        http::get(&url(&svc, "/profiles/nobody/explain?segment=dach"), token)
            .await
            .0,
        404
    );
    stop(svc).await;
}
