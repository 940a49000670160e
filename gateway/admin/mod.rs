//! The admin listener: health, readiness and metrics (unauthenticated), and the admin API (bearer token).

mod auth;
mod dead_letters;
mod deliveries;
mod events;
mod received;
mod sources;
mod subscriptions;

use crate::catalog::LiveCatalog;
use crate::error::Error;
pub use auth::AdminToken;

use crate::inbound::SourceRegistry;
use crate::stream::Store;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use http::{header, StatusCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What readiness depends on.
pub struct Readiness {
    pub store: Store,
    pub sources: Arc<SourceRegistry>,
    /// Set first on SIGTERM so load balancers stop sending before connections close.
    pub shutting_down: AtomicBool,
}

/// The probes, `/metrics` and the inbound admin API; [`guarded`] puts the API behind the token.
pub fn router(
    ready: Arc<Readiness>,
    live: Arc<LiveCatalog>,
    dead: crate::deliver::DeadLetters,
    received: crate::deliver::Received,
) -> Router {
    let api = Router::new()
        .route("/v1/sources", get(sources::list))
        .route("/v1/mappings/reload", axum::routing::post(sources::reload))
        .with_state(live)
        .merge(dead_letters::routes(dead))
        .merge(received::routes(received));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ready)
        .merge(api)
}

/// The whole admin router's answers for what no route serves, in the JSON every other answer has: 404 for
/// an unknown path, 405 (with the router's `Allow`) for a method a path does not serve.
pub fn with_fallbacks(r: Router) -> Router {
    r.fallback(|| async { Error::NotFound })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowedHere })
}

/// The whole admin router, fallbacks included, behind [`auth::guard_api`]: one guard for every `/v1`
/// path, checked before routing (a layer per route group let a 405 or 404 answer first).
pub fn guarded(r: Router, token: Arc<AdminToken>) -> Router {
    r.layer(axum::middleware::from_fn_with_state(token, auth::guard_api))
}

/// `axum`'s query extractor, refusing in our JSON (`400 bad_request` with serde's reason) instead of
/// plain text. The query types deny unknown keys: a misspelt filter (`?sourc=`) must not widen what a
/// call lists or replays.
pub(crate) struct Query<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, Error> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| {
                let text = e.body_text();
                let reason = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                Error::BadRequest(crate::error::one_line_within(
                    &format!("query: {reason}"),
                    200,
                ))
            })
    }
}

/// A bulk replay names what it replays: a filter, or `all=true` for every dead letter (not both), so that a
/// forgotten filter is a 400, not every letter of every source sent again.
pub(crate) fn bulk_scope(filtered: bool, all: Option<bool>, key: &str) -> Result<(), Error> {
    match (filtered, all) {
        (true, None | Some(false)) | (false, Some(true)) => Ok(()),
        (true, Some(true)) => Err(Error::BadRequest(format!(
            "all=true replays every dead letter: give it without {key}= or reason="
        ))),
        (false, _) => Err(Error::BadRequest(format!(
            "name what to replay: {key}= and/or reason=, or all=true for every dead letter"
        ))),
    }
}

/// Whether `id` is a stream entry id, `<ms>-<seq>`, each part a 64-bit unsigned number.
fn stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    let part = |p: &str| {
        (!p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
            .then(|| p.parse::<u64>().ok())
            .flatten()
    };
    Some((part(ms)?, part(seq)?))
}

/// An entry id in a path: anything but a stream id is simply not found.
pub(crate) fn path_id(id: &str) -> Result<&str, Error> {
    stream_id(id).map(|_| id).ok_or(Error::NotFound)
}

/// A page cursor, the `next` of the previous page: anything else is the client's mistake (400), not a
/// storage outage. The largest id is refused too: no entry can follow it, and Redis refuses the range.
pub(crate) fn cursor(after: &str) -> Result<&str, Error> {
    match stream_id(after) {
        Some((ms, seq)) if (ms, seq) != (u64::MAX, u64::MAX) => Ok(after),
        _ => Err(Error::BadRequest(format!(
            "after: `{}` is not a cursor; pass the previous page's `next` (a stream id such as 1767225600000-0)",
            crate::error::one_line(after)
        ))),
    }
}

/// The outbound admin API (events, subscriptions, deliveries, outbound dead letters); [`guarded`] puts it
/// behind the token.
pub fn outbound_router(o: crate::outbound::Outbound) -> Router {
    Router::new()
        .route(
            "/v1/events",
            axum::routing::post(events::publish).with_state(o.clone()),
        )
        .merge(subscriptions::routes(o.clone()))
        .merge(deliveries::routes(o))
}

/// Ready when Redis answers, mappings are loaded and we are not shutting down; otherwise 503 with why.
async fn readyz(State(r): State<Arc<Readiness>>) -> (StatusCode, String) {
    if r.shutting_down.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    if r.sources.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no sources loaded\n".into(),
        );
    }
    match tokio::time::timeout(Duration::from_secs(1), r.store.ready()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n".into()),
        Ok(Err(why)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "redis not answering\n".into(),
        ),
    }
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::metrics().render(),
    )
}
