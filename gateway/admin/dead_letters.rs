//! `GET /v1/dead-letters`, `GET|DELETE /v1/dead-letters/{id}`, `POST /v1/dead-letters/{id}/replay`,
//! `POST /v1/dead-letters/replay`: inspect failed inbound events, and put them back once the cause is fixed.

use super::Query;
use crate::deliver::{DeadLetters, Filter};
use crate::error::Error;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

pub fn routes(dead: DeadLetters) -> Router {
    Router::new()
        .route("/v1/dead-letters", get(list))
        .route("/v1/dead-letters/replay", post(replay_all))
        .route("/v1/dead-letters/{id}", get(show).delete(remove))
        .route("/v1/dead-letters/{id}/replay", post(replay))
        .with_state(dead)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    source: Option<String>,
    reason: Option<String>,
    /// The `next` of the previous page.
    after: Option<String>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterQuery {
    source: Option<String>,
    reason: Option<String>,
    /// Every dead letter: said in so many words, never the result of a missing filter.
    all: Option<bool>,
}

fn unavailable(e: redis::RedisError) -> Error {
    tracing::warn!(error = %e, "dead letters: redis did not answer");
    Error::Unavailable
}

async fn list(
    State(dead): State<DeadLetters>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, Error> {
    let filter = Filter {
        source: q.source,
        reason: q.reason,
    };
    let after = q.after.as_deref().map(super::cursor).transpose()?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let page = dead
        .list(&filter, after, limit)
        .await
        .map_err(unavailable)?;
    Ok(Json(
        json!({ "dead_letters": page.items, "next": page.next }),
    ))
}

async fn show(
    State(dead): State<DeadLetters>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    dead.get(super::path_id(&id)?)
        .await
        .map_err(unavailable)?
        .map(Json)
        .ok_or(Error::NotFound)
}

async fn remove(
    State(dead): State<DeadLetters>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    if dead
        .delete(super::path_id(&id)?)
        .await
        .map_err(unavailable)?
    {
        Ok(Json(json!({ "deleted": id })))
    } else {
        Err(Error::NotFound)
    }
}

async fn replay(
    State(dead): State<DeadLetters>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    match dead
        .replay(super::path_id(&id)?)
        .await
        .map_err(unavailable)?
    {
        Some(new) => Ok(Json(json!({ "replayed": id, "inbound_id": new }))),
        None => Err(Error::NotFound),
    }
}

async fn replay_all(
    State(dead): State<DeadLetters>,
    Query(q): Query<FilterQuery>,
) -> Result<Json<Value>, Error> {
    super::bulk_scope(q.source.is_some() || q.reason.is_some(), q.all, "source")?;
    let filter = Filter {
        source: q.source,
        reason: q.reason,
    };
    let n = dead.replay_all(&filter).await.map_err(unavailable)?;
    Ok(Json(json!({ "replayed": n })))
}
