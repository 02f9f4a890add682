//! HTTP: `/metrics`, `/healthz`, `/readyz` (open), and the token-protected
//! `GET /profiles/{customer_id}`, `GET /profiles/{customer_id}/explain?segment=NAME`,
//! `GET /segments` and `POST /segments/reload`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::shared::Shared;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/profiles/{customer_id}", get(profile))
        .route("/profiles/{customer_id}/explain", get(explain))
        .route("/segments", get(segments))
        .route("/segments/reload", post(reload))
        .with_state(shared)
}

/// Serves until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
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

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    let assigned = s.kafka.assigned.load(Ordering::SeqCst);
    let healthy = s.kafka.healthy();
    if s.ready.load(Ordering::SeqCst) && healthy {
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
fn authorized(s: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
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
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(customer_id): Path<String>,
) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    let view = crate::profile_view::profile_json(&s.engine(), &customer_id);
    match view {
        Some(v) => Json(v).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no profile for this customer", "customer_id": customer_id})),
        )
            .into_response(),
    }
}

/// The query of `GET /profiles/{customer_id}/explain`.
#[derive(serde::Deserialize)]
struct ExplainQuery {
    segment: Option<String>,
}

/// Why a customer is (or is not) in a segment: the condition as a tree of values and
/// results at the engine's time for the customer (`Engine::explain_now`). 404 for an
/// unknown customer, 400 for a missing or unknown segment (with a suggestion).
///
/// `causes` is empty: the engine keeps no transition history.
async fn explain(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(customer_id): Path<String>,
    Query(q): Query<ExplainQuery>,
) -> Response {
    use segstream_core::engine::ExplainError;
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    let Some(segment) = q.segment else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "the query parameter `segment` is required: /profiles/{customer_id}/explain?segment=NAME"})),
        )
            .into_response();
    };
    let result = s.engine().explain_now(&customer_id, &segment);
    match result {
        Ok(e) => Json(e).into_response(),
        Err(e @ ExplainError::UnknownProfile(_)) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": e.to_string(), "customer_id": customer_id})),
        )
            .into_response(),
        Err(ref e @ ExplainError::UnknownSegment { ref suggestion, .. }) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": e.to_string(), "segment": segment, "did_you_mean": suggestion})),
        )
            .into_response(),
    }
}

async fn segments(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    let engine = s.engine();
    let defs = engine.definitions().clone();
    let populations = engine.populations();
    drop(engine);
    let list: Vec<_> = defs
        .segments
        .iter()
        .zip(populations)
        .map(|(seg, (_, population))| {
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

async fn reload(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
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
