//! `GET /v1/inbound/events`, `GET /v1/inbound/events/{id}`: the webhooks received, newest first, as
//! stored (audit, debugging a provider's deliveries), for as long as the inbound stream keeps them.

use super::Query;
use crate::deliver::{Received, ReceivedFilter};
use crate::error::Error;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

pub fn routes(received: Received) -> Router {
    Router::new()
        .route("/v1/inbound/events", get(list))
        .route("/v1/inbound/events/{id}", get(show))
        .with_state(received)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    source: Option<String>,
    /// The sender's own id (Stripe's `evt_...`, `X-GitHub-Delivery`, ...): the dedup id.
    event_id: Option<String>,
    /// The `next` of the previous page.
    after: Option<String>,
    limit: Option<usize>,
}

fn unavailable(e: redis::RedisError) -> Error {
    tracing::warn!(error = %e, "received events: redis did not answer");
    Error::Unavailable
}

async fn list(
    State(received): State<Received>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, Error> {
    let filter = ReceivedFilter {
        source: q.source,
        event_id: q.event_id,
    };
    let after = q.after.as_deref().map(super::cursor).transpose()?;
    // Nothing is older than the first possible id (and Redis refuses the range below it).
    if after.and_then(super::stream_id) == Some((0, 0)) {
        return Ok(Json(json!({ "events": [], "next": null })));
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let page = received
        .list(&filter, after, limit)
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({ "events": page.items, "next": page.next })))
}

async fn show(
    State(received): State<Received>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    received
        .get(super::path_id(&id)?)
        .await
        .map_err(unavailable)?
        .map(Json)
        .ok_or(Error::NotFound)
}
