//! `segstream demo`: the real service against an embedded broker (librdkafka's
//! `MockCluster`), fed by a live simulation of the reference funnel on a compressed clock,
//! with the transitions printed as they happen.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use crate::clock::now_millis;
use crate::config::Config;
use segstream_core::time::{format_rfc3339, Millis, SECOND};
use segstream_core::transition::Transition;

pub const CAMPAIGN: &str = "demo-webinar-ads";
pub const WEBINAR: &str = "W-DEMO";
const INPUTS: [&str; 5] = ["clickstream", "email", "webinar", "purchases", "crm"];

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub customers: usize,
    pub listen: SocketAddr,
    /// Stop by itself after this long (otherwise on Ctrl-C).
    pub duration: Option<Duration>,
    pub seed: u64,
    /// Print every transition (otherwise a summary every few seconds).
    pub verbose: bool,
}

/// One simulated event: when to send it, where, under which key, and what.
struct Planned {
    at: Millis,
    topic: &'static str,
    /// The Kafka key: the customer id, or the cookie when the event has none.
    key: String,
    body: serde_json::Value,
}

/// Which ids an event carries.
#[derive(Clone, Copy)]
enum Who<'a> {
    Known(&'a str),
    Anonymous(&'a str),
    /// Both: a link of the cookie to the customer.
    Both(&'a str, &'a str),
}

/// The reference funnel for `customers` people starting at `start`. Half of them are known
/// from the start (a CRM record); the others arrive as anonymous visitors with a cookie:
/// ad click, landing page; some register within the 20 s deadline, and their registration
/// links the cookie to a new customer id (the CRM record follows); the others stay
/// anonymous and enter clicked-but-not-registered under their cookie. The webinar ends
/// 90 s in, most registrants attend; known customers get mail; a few buy or unsubscribe.
fn plan(customers: usize, start: Millis, seed: u64) -> Vec<Planned> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let webinar_end = start + 90 * SECOND;
    let mut out = Vec::new();
    let mut n = 0u64;
    let mut push = |out: &mut Vec<Planned>,
                    at: Millis,
                    topic,
                    who: Who<'_>,
                    ty: &str,
                    props: serde_json::Value| {
        n += 1;
        let mut body = json!({
            "event_id": format!("demo-{n}"),
            "type": ty,
            "timestamp": format_rfc3339(at),
        });
        let key = match who {
            Who::Known(c) => {
                body["customer_id"] = c.into();
                c
            }
            Who::Anonymous(a) => {
                body["anonymous_id"] = a.into();
                a
            }
            Who::Both(c, a) => {
                body["customer_id"] = c.into();
                body["anonymous_id"] = a.into();
                c
            }
        };
        if ty == "identify" {
            body["traits"] = props;
        } else {
            body["properties"] = props;
        }
        out.push(Planned {
            at,
            topic,
            key: key.to_string(),
            body,
        });
    };
    for i in 0..customers {
        let c = format!("c-{:06}", i + 1);
        let cookie = format!("v-{:08x}", rng.u32(..));
        let visitor = rng.bool();
        // Arrivals spread over the first 30 s, so every deadline fires within a minute.
        let t0 = start + rng.i64(0..30_000);
        let country = ["DE", "AT", "CH", "NL", "FR"][rng.usize(0..5)];
        let role = ["ceo", "cmo", "head_of_marketing", "developer", "analyst"][rng.usize(0..5)];
        let traits = json!({"country": country, "role": role, "customer_status": "lead"});
        if !visitor {
            push(
                &mut out,
                t0,
                "crm",
                Who::Known(&c),
                "identify",
                traits.clone(),
            );
        }
        // Before registering, a visitor is only a cookie.
        let web = if visitor {
            Who::Anonymous(&cookie)
        } else {
            Who::Known(&c)
        };
        let mut known = !visitor;
        if rng.f64() < 0.7 {
            push(
                &mut out,
                t0 + 500,
                "clickstream",
                web,
                "ad_click",
                json!({"campaign": CAMPAIGN}),
            );
            push(
                &mut out,
                t0 + 1500,
                "clickstream",
                web,
                "page_view",
                json!({"url": "/webinar/w-demo", "utm_source": "ads", "utm_campaign": CAMPAIGN}),
            );
            if rng.f64() < 0.35 {
                let reg = t0 + rng.i64(3_000..15_000);
                let who = if visitor {
                    Who::Both(&c, &cookie)
                } else {
                    Who::Known(&c)
                };
                push(
                    &mut out,
                    reg,
                    "webinar",
                    who,
                    "webinar_registered",
                    json!({"webinar_id": WEBINAR, "starts_at": format_rfc3339(webinar_end - 30 * SECOND), "ends_at": format_rfc3339(webinar_end)}),
                );
                if visitor {
                    push(
                        &mut out,
                        reg + 200,
                        "crm",
                        Who::Known(&c),
                        "identify",
                        traits,
                    );
                    known = true;
                }
                if rng.f64() < 0.6 {
                    let at = webinar_end - rng.i64(5_000..25_000);
                    push(
                        &mut out,
                        at,
                        "webinar",
                        Who::Known(&c),
                        "webinar_attended",
                        json!({"webinar_id": WEBINAR}),
                    );
                }
            }
        }
        if !known {
            // An anonymous visitor left no address: no mail, no purchase.
            continue;
        }
        push(
            &mut out,
            t0 + 16_000,
            "email",
            Who::Known(&c),
            "email_sent",
            json!({"campaign": "demo-newsletter"}),
        );
        if rng.f64() < 0.4 {
            push(
                &mut out,
                t0 + rng.i64(17_000..40_000),
                "email",
                Who::Known(&c),
                "email_open",
                json!({"campaign": "demo-newsletter"}),
            );
        }
        if rng.f64() < 0.03 {
            push(
                &mut out,
                t0 + rng.i64(20_000..50_000),
                "email",
                Who::Known(&c),
                "unsubscribe",
                json!({}),
            );
        }
        if rng.f64() < 0.1 {
            let amount = [49.0, 199.0, 599.0][rng.usize(0..3)];
            push(
                &mut out,
                t0 + rng.i64(20_000..60_000),
                "purchases",
                Who::Known(&c),
                "purchase",
                json!({"amount": amount, "currency": "EUR", "product": "segstream-pro", "category": "software"}),
            );
        }
    }
    out.sort_by_key(|p| p.at);
    out
}

/// Runs the demo. The mock cluster lives on this thread for the whole run.
pub fn run(options: DemoOptions, mut config: Config) -> anyhow::Result<()> {
    let cluster = MockCluster::new(1).context("starting the embedded Kafka (MockCluster)")?;
    let brokers = cluster.bootstrap_servers();
    for t in INPUTS {
        cluster.create_topic(t, 4, 1)?;
    }
    config.kafka.brokers = brokers.clone();
    config.kafka.input_topics = INPUTS.map(String::from).to_vec();
    cluster.create_topic(&config.kafka.output_topic, 4, 1)?;
    cluster.create_topic(&config.kafka.dead_letter_topic, 1, 1)?;
    // The mock cluster does not implement CreateTopics: the internal topics are made here.
    cluster.create_topic(&config.kafka.changelog_topic, 4, 1)?;
    cluster.create_topic(&config.kafka.persons_topic, 4, 1)?;
    cluster.create_topic(&config.kafka.membership_topic, 4, 1)?;
    config.kafka.group_id = "segstream-demo".into();
    config.http.listen = options.listen;
    config.engine.allowed_lateness = 5 * SECOND;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(demo(options, config, brokers))
}

async fn demo(options: DemoOptions, config: Config, brokers: String) -> anyhow::Result<()> {
    let stop = tokio_util::sync::CancellationToken::new();
    let service = crate::service::Background::start(config.clone(), Duration::from_secs(60))
        .await
        .context("the service did not start")?;
    let url = service.url();
    println!("segstream demo: embedded Kafka at {brokers}");
    println!("  segments:  {}", config.segments.file.display());
    println!("  metrics:   {url}/metrics");
    println!("  profiles:  {url}/profiles/c-000001   segments: {url}/segments");
    println!(
        "  {} simulated customers: ad click -> landing page -> some register within 20 s -> webinar ends at +90 s",
        options.customers
    );
    println!("  half the people arrive as anonymous visitors (a cookie); a registration links the cookie to a customer id (cause merge:<id>).");
    println!("  clicked-but-not-registered fires 20 s after a click without registration. Ctrl-C stops.\n");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "5")
        .create()?;
    let start = now_millis() + 500;
    let planned = plan(options.customers, start, options.seed);
    let traffic_stop = stop.clone();
    let traffic = tokio::spawn(async move {
        for p in planned {
            let wait = p.at - now_millis();
            if wait > 0 {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                    _ = traffic_stop.cancelled() => return,
                }
            }
            let payload = p.body.to_string();
            let record = FutureRecord::to(p.topic).key(&p.key).payload(&payload);
            if let Err((e, _)) = producer.send(record, Duration::from_secs(5)).await {
                eprintln!("demo traffic: {e}");
            }
        }
    });

    let printer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "segstream-demo-printer")
        .set("auto.offset.reset", "earliest")
        .create()?;
    printer.subscribe(&[&config.kafka.output_topic])?;
    let deadline = options.duration.map(|d| tokio::time::Instant::now() + d);
    let mut counts: std::collections::BTreeMap<(String, &'static str), u64> = Default::default();
    let mut last_summary = tokio::time::Instant::now();
    loop {
        let sleep_until =
            deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep_until(sleep_until) => break,
            m = printer.recv() => {
                let Ok(m) = m else { continue };
                let Some(Ok(t)) = m.payload().map(serde_json::from_slice::<Transition>) else { continue };
                let ce_type = m.headers().and_then(|h| h.iter().find(|h| h.key == "ce_type").and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))).unwrap_or_default();
                *counts.entry((t.segment.to_string(), t.direction.as_str())).or_default() += 1;
                let merge = matches!(t.cause, segstream_core::transition::Cause::Merge(_));
                if options.verbose || merge || t.segment.as_ref() == "clicked-but-not-registered" {
                    let who = if t.known {
                        t.customer_id.to_string()
                    } else {
                        format!("{} (anonymous)", t.customer_id)
                    };
                    let ids = if t.anonymous_ids.is_empty() {
                        String::new()
                    } else {
                        format!("  ids {}", t.anonymous_ids.join(","))
                    };
                    println!(
                        "{}  {:<24} {:<7} {:<28} cause {}  [{}]{}",
                        &format_rfc3339(t.timestamp)[11..19],
                        who,
                        t.direction.as_str(),
                        t.segment,
                        t.cause,
                        ce_type,
                        ids,
                    );
                }
                if last_summary.elapsed() > Duration::from_secs(10) {
                    print_summary(&counts);
                    last_summary = tokio::time::Instant::now();
                }
            }
        }
    }
    print_summary(&counts);
    stop.cancel();
    traffic.abort();
    service.stop(Duration::from_secs(60)).await?;
    Ok(())
}

fn print_summary(counts: &std::collections::BTreeMap<(String, &'static str), u64>) {
    println!("--- transitions so far ---");
    for ((seg, dir), n) in counts {
        println!("  {seg:<28} {dir:<7} {n}");
    }
}
