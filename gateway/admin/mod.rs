//! The admin listener: health, readiness and metrics (unauthenticated), and the admin API (bearer token).

mod auth;
mod dead_letters;
mod deliveries;
mod events;
mod sources;
mod subscriptions;

use crate::catalog::LiveCatalog;
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

pub fn router(
    ready: Arc<Readiness>,
    live: Arc<LiveCatalog>,
    token: Arc<AdminToken>,
    dead: crate::deliver::DeadLetters,
) -> Router {
    let api = Router::new()
        .route("/v1/sources", get(sources::list))
        .route("/v1/mappings/reload", axum::routing::post(sources::reload))
        .with_state(live)
        .merge(dead_letters::routes(dead))
        .layer(axum::middleware::from_fn_with_state(
            token,
            auth::require_token,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ready)
        .merge(api)
}

/// The outbound admin API (events, subscriptions, deliveries, outbound dead letters), behind the token.
pub fn outbound_router(o: crate::outbound::Outbound, token: Arc<AdminToken>) -> Router {
    Router::new()
        .route(
            "/v1/events",
            axum::routing::post(events::publish).with_state(o.clone()),
        )
        .merge(subscriptions::routes(o.clone()))
        .merge(deliveries::routes(o))
        .layer(axum::middleware::from_fn_with_state(
            token,
            auth::require_token,
        ))
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
