//! HTTP: `/metrics`, `/healthz`, `/readyz` (open), and the token-protected
//! `GET /profiles/{customer_id}`, `GET /segments` and `POST /segments/reload`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::shared::Instance;

pub fn router(shared: Arc<Instance>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/profiles/{customer_id}", get(profile))
        .route("/segments", get(segments))
        .route("/segments/reload", post(reload))
        .route("/segments/{name}", get(segment))
        .route("/segments/{name}/members", get(members))
        .with_state(shared)
}

/// Serves until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Instance>,
    stop: CancellationToken,
) {
    let app = router(shared);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "http server failed");
    }
}

async fn metrics(State(s): State<Arc<Instance>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(s): State<Arc<Instance>>) -> Response {
    let assigned = s.assigned();
    let healthy = s.healthy();
    if s.ready() && healthy {
        (
            StatusCode::OK,
            format!("ready: {assigned} partitions, caught up\n"),
        )
            .into_response()
    } else {
        let why = if !healthy {
            "the broker is unavailable"
        } else if assigned == 0 {
            "no partitions assigned (yet)"
        } else {
            "catching up, or the broker is unavailable"
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response()
    }
}

/// With a configured token, requests must carry it as `Authorization: Bearer <token>`.
fn authorized(s: &Instance, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(token) = &s.config.http.token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Constant-time comparison: the token is a secret.
    let ok = given.is_some_and(|g| {
        g.len() == token.len()
            && g.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if ok {
        Ok(())
    } else {
        Err(Box::new(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a valid bearer token is required\n",
            )
                .into_response(),
        ))
    }
}

async fn profile(
    State(s): State<Arc<Instance>>,
    headers: HeaderMap,
    Path(customer_id): Path<String>,
) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    let view = s.find(|engine| crate::profile_view::profile_json(engine, &customer_id));
    match view {
        Some(v) => Json(v).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no profile for this customer", "customer_id": customer_id})),
        )
            .into_response(),
    }
}

async fn segments(State(s): State<Arc<Instance>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    let defs = s.workers[0].engine().definitions().clone();
    let mut populations = vec![0usize; defs.segments.len()];
    s.each(|engine| {
        // By name: a worker a moment behind a reload counts where the names agree.
        for (name, n) in engine.populations() {
            if let Some(i) = defs.segments.iter().position(|seg| seg.name == name) {
                populations[i] += n;
            }
        }
    });
    let list: Vec<_> = defs
        .segments
        .iter()
        .zip(populations)
        .map(|(seg, population)| {
            json!({
                "name": &*seg.name,
                "description": seg.description,
                "version": &*seg.version,
                "condition": seg.condition_text,
                "population": population,
            })
        })
        .collect();
    Json(json!({
        "file": defs.file,
        "version": &*defs.version,
        "segments": list,
    }))
    .into_response()
}

async fn reload(State(s): State<Arc<Instance>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    match s.reload().await {
        Ok(report) => Json(report).into_response(),
        Err(errors) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": "the definitions were rejected; the running set stays", "details": errors})),
        )
            .into_response(),
    }
}

/// The definition of segment `name`, or a 404 naming the closest known segment.
fn find_segment(
    s: &Instance,
    name: &str,
) -> Result<Arc<segstream_core::segment::compile::Definitions>, Box<Response>> {
    let defs = s.workers[0].engine().definitions().clone();
    if defs.segments.iter().any(|seg| &*seg.name == name) {
        return Ok(defs);
    }
    let hint =
        segstream_core::segment::suggest::suggest(name, defs.segments.iter().map(|seg| &*seg.name));
    Err(Box::new(
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such segment", "segment": name, "did_you_mean": hint})),
        )
            .into_response(),
    ))
}

/// `GET /segments/{name}`: its definition, its population now (over every worker), and the
/// customers who entered and exited it over the last hour and day (by the wall-clock
/// minute the transitions were produced in).
async fn segment(
    State(s): State<Arc<Instance>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    let defs = match find_segment(&s, &name) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let seg = defs
        .segments
        .iter()
        .find(|seg| *seg.name == *name)
        .expect("found");
    let mut population = 0;
    s.each(|engine| {
        population += engine
            .populations()
            .iter()
            .find(|(n, _)| **n == *name)
            .map_or(0, |(_, c)| *c);
    });
    let now = crate::clock::now_millis();
    let mut counts = crate::activity::Counts::default();
    for w in &s.workers {
        counts += w.activity().counts(&name, now);
    }
    Json(json!({
        "name": &*seg.name,
        "description": seg.description,
        "version": &*seg.version,
        "condition": seg.condition_text,
        "population": population,
        "activity": counts,
    }))
    .into_response()
}

/// `?limit=N&cursor=ID` of `GET /segments/{name}/members`.
#[derive(serde::Deserialize)]
struct Page {
    limit: Option<usize>,
    cursor: Option<String>,
}

/// The largest page of members.
pub const MAX_PAGE: usize = 10_000;

/// `GET /segments/{name}/members`: the members now, in customer-id order, `limit` (default
/// 1000, at most [`MAX_PAGE`]) per page; `next_cursor` (the last id of the page) asks for
/// the next one, `null` on the last page. Each worker's engine is locked for one pass over
/// its profiles per page; for the whole audience at scale read the membership topic.
async fn members(
    State(s): State<Arc<Instance>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(page): Query<Page>,
) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    if let Err(r) = find_segment(&s, &name) {
        return *r;
    }
    let limit = page.limit.unwrap_or(1000).clamp(1, MAX_PAGE);
    let mut ids: Vec<Arc<str>> = Vec::new();
    s.each(|engine| {
        ids.extend(crate::profile_view::members_after(
            engine,
            &name,
            page.cursor.as_deref(),
            limit + 1,
        ))
    });
    ids.sort();
    ids.dedup();
    let more = ids.len() > limit;
    ids.truncate(limit);
    let next = if more {
        ids.last().map(|i| i.to_string())
    } else {
        None
    };
    Json(json!({
        "segment": name,
        "members": ids.iter().map(|i| &**i).collect::<Vec<_>>(),
        "next_cursor": next,
    }))
    .into_response()
}
