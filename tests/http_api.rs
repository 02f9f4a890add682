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
