//! HTTP: `/metrics`, `/healthz`, `/readyz` (open), and the token-protected
//! `GET /profiles/{customer_id}`, `GET /profiles/{customer_id}/explain?segment=NAME`,
//! `GET /segments`, `GET /segments/{name}`, `GET /segments/{name}/members`,
//! `POST /segments/reload` and `POST /segments/preview`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use segstream_core::engine::{Cursor, DefinitionsChanged, Preview, PreviewAnswer, Tally};
use segstream_core::segment::diagnostic::Diagnostics;
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::shared::Instance;

pub fn router(shared: Arc<Instance>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/profiles/{customer_id}", get(profile))
        .route("/profiles/{customer_id}/explain", get(explain))
        .route("/segments", get(segments))
        .route("/segments/reload", post(reload))
        .route("/segments/{name}", get(segment))
        .route("/segments/{name}/members", get(members))
        .route("/segments/preview", post(preview))
        .layer(Extension(Arc::new(PreviewGate::default())))
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

/// The query of `GET /profiles/{customer_id}/explain`.
#[derive(serde::Deserialize)]
struct ExplainQuery {
    segment: Option<String>,
}

/// Why a customer is (or is not) in a segment: the condition as a tree of values and
/// results at the engine's time for the customer (`Engine::explain_now`). 404 for an
/// unknown customer, 400 for a missing or unknown segment (with a suggestion).
///
/// `causes`: the person's transitions of the segment among the answering worker's latest
/// (`activity::RECENT`); the engine itself keeps no transition history.
async fn explain(
    State(s): State<Arc<Instance>>,
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
    // The worker that holds the person answers; the others do not know the id.
    let result = s
        .workers
        .iter()
        .find_map(|w| {
            let r = w.engine().explain_now(&customer_id, &segment);
            match r {
                Err(ExplainError::UnknownProfile(_)) => None,
                Ok(mut e) => {
                    let person = e.customer_id.clone();
                    e.add_causes(w.activity().recent_of(&person));
                    Some(Ok(e))
                }
                Err(e) => Some(Err(e)),
            }
        })
        .unwrap_or_else(|| Err(ExplainError::UnknownProfile(customer_id.clone())));
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

// ---- preview ---------------------------------------------------------------------------

/// Profiles evaluated per hold of the engine lock (a few milliseconds of work).
const PREVIEW_CHUNK: usize = 10_000;
/// A preview's time limit unless `timeout_ms` says otherwise, and the most it may say.
const PREVIEW_TIMEOUT: Duration = Duration::from_secs(10);
const PREVIEW_TIMEOUT_MAX: Duration = Duration::from_secs(60);
/// Member ids in the answer unless `sample` says otherwise, and the most it may say.
const PREVIEW_SAMPLE: usize = segstream_core::engine::DEFAULT_SAMPLE;
const PREVIEW_SAMPLE_MAX: usize = 1_000;
/// The largest candidate accepted.
const PREVIEW_MAX_BYTES: usize = 64 * 1024;
/// The name of the candidate in diagnostics.
const PREVIEW_FILE: &str = "candidate";

/// Lets one preview run at a time.
#[derive(Default)]
struct PreviewGate(AtomicBool);

/// The right to run the one preview; given back when dropped (also if the request is
/// abandoned: the pass lives in the blocking task, which runs to its end or deadline).
struct PreviewPass(Arc<PreviewGate>);

impl PreviewGate {
    fn try_enter(self: &Arc<Self>) -> Option<PreviewPass> {
        self.0
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| PreviewPass(self.clone()))
    }
}

impl Drop for PreviewPass {
    fn drop(&mut self) {
        self.0 .0.store(false, Ordering::Release);
    }
}

#[derive(Deserialize)]
struct PreviewQuery {
    timeout_ms: Option<u64>,
    sample: Option<usize>,
}

enum PreviewFailure {
    Invalid(Diagnostics),
    Changed(DefinitionsChanged),
}

/// `POST /segments/preview`: the body is a candidate segment (one `[segments.NAME]` table,
/// or a bare condition). 200 with the answer; 400 with the diagnostics of an invalid
/// candidate; 429 while another preview runs; 503 with the partial answer (`complete:
/// false`) when the time limit ran out; 409 when the definitions were reloaded meanwhile.
/// Nothing is activated and no transition is emitted.
async fn preview(
    State(s): State<Arc<Instance>>,
    Extension(gate): Extension<Arc<PreviewGate>>,
    headers: HeaderMap,
    Query(q): Query<PreviewQuery>,
    body: String,
) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    if body.len() > PREVIEW_MAX_BYTES {
        let error = format!(
            "the candidate has {} bytes; at most {PREVIEW_MAX_BYTES}",
            body.len()
        );
        return (StatusCode::PAYLOAD_TOO_LARGE, Json(json!({"error": error}))).into_response();
    }
    let Some(pass) = gate.try_enter() else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"error": "another preview is running; one runs at a time, try again when it has finished"})),
        )
            .into_response();
    };
    let timeout = q
        .timeout_ms
        .map_or(PREVIEW_TIMEOUT, Duration::from_millis)
        .min(PREVIEW_TIMEOUT_MAX);
    let sample = q.sample.unwrap_or(PREVIEW_SAMPLE).min(PREVIEW_SAMPLE_MAX);
    let deadline = Instant::now() + timeout;
    let task = tokio::task::spawn_blocking(move || {
        let _pass = pass;
        run_preview(&s, &body, sample, deadline)
    });
    match task.await {
        Ok(Ok(answer)) if answer.complete => Json(answer).into_response(),
        Ok(Ok(answer)) => {
            let error = format!(
                "the preview ran out of time after {} ms ({} of {} profiles); the answer is partial \
                 (raise timeout_ms, at most {} ms)",
                timeout.as_millis(),
                answer.profiles_scanned,
                answer.profiles,
                PREVIEW_TIMEOUT_MAX.as_millis()
            );
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": error, "partial": answer})),
            )
                .into_response()
        }
        Ok(Err(PreviewFailure::Invalid(diags))) => {
            let list: Vec<_> = diags
                .sorted()
                .into_iter()
                .map(|d| json!({"file": d.file, "line": d.line, "column": d.column, "message": d.message}))
                .collect();
            (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "the candidate was rejected", "diagnostics": list})),
            )
                .into_response()
        }
        Ok(Err(PreviewFailure::Changed(e))) => (
            StatusCode::CONFLICT,
            Json(json!({"error": format!("{e}; try again")})),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "preview task failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": "the preview failed"})),
            )
                .into_response()
        }
    }
}

/// Compiles the candidate against each worker's engine and scans its profiles chunk by
/// chunk into one tally, taking that engine's lock for each chunk only, until done or past
/// `deadline` (the answer then says `complete: false`). Blocking: run it off the async
/// runtime.
fn run_preview(
    s: &Instance,
    text: &str,
    sample: usize,
    deadline: Instant,
) -> Result<PreviewAnswer, PreviewFailure> {
    let mut tally: Option<Tally> = None;
    for w in &s.workers {
        let preview = Preview::compile(&mut w.engine(), PREVIEW_FILE, text)
            .map_err(PreviewFailure::Invalid)?;
        let t = tally.get_or_insert_with(|| Tally::new(&preview, sample));
        let mut cursor = Cursor::default();
        loop {
            let done = preview
                .scan(&w.engine(), t, &mut cursor, PREVIEW_CHUNK)
                .map_err(PreviewFailure::Changed)?;
            if done {
                break;
            }
            if Instant::now() >= deadline {
                let mut partial = tally.expect("started").finish();
                partial.complete = false;
                return Ok(partial);
            }
        }
    }
    Ok(tally.expect("at least one worker").finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_preview_at_a_time_and_the_gate_opens_when_the_pass_is_dropped() {
        let gate = Arc::new(PreviewGate::default());
        let pass = gate.try_enter().expect("the first enters");
        assert!(gate.try_enter().is_none(), "a second waits its turn");
        drop(pass);
        let again = gate.try_enter();
        assert!(again.is_some(), "free again after the first ended");
        // A pass moved into another thread still holds the gate until that thread ends.
        let pass = again.unwrap();
        let t = std::thread::spawn(move || drop(pass));
        t.join().unwrap();
        assert!(gate.try_enter().is_some());
    }
}
