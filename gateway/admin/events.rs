//! `POST /v1/events`: publish an event for the outbound relay. Stored durably (XADD to `<prefix>:events`)
//! before the 202; a producer's `id` is deduplicated for `outbound.dedup_ttl` in the same round trip.

use crate::error::Error;
use crate::outbound::event::PublishInput;
use crate::outbound::Outbound;
use crate::stream::Stored;
use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use http::StatusCode;
use serde_json::{json, Value};

/// A JSON object body: a syntax error is 400, a field of the wrong shape 422 (both with serde's reason).
/// Anything but an object is refused (422) even when it would fill the fields: serde also reads a
/// struct from an array of its fields in order, which no client means.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Ok(_) => Err(Error::Invalid("the body must be a JSON object".into())),
            Err(e) => Err(Error::Malformed(e.to_string())),
        };
    }
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Error::Invalid(e.to_string()),
        _ => Error::Malformed(e.to_string()),
    })
}

pub async fn publish(
    State(o): State<Outbound>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), Error> {
    let input: PublishInput = parse(&body)?;
    let fields = input
        .fields(crate::clock::now_ms())
        .map_err(Error::Invalid)?;
    let stored = o
        .store
        .store_event(
            input.account.as_deref(),
            input.id.as_deref(),
            &fields,
            o.cfg.dedup_ttl,
        )
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "publish not acknowledged; the producer retries");
            Error::Unavailable
        })?;
    let (sid, duplicate) = match stored {
        Stored::New(s) => (s, false),
        Stored::Duplicate(s) => (s.unwrap_or_default(), true),
    };
    metrics::counter!("hookgate_events_published_total", "outcome" => if duplicate { "duplicate" } else { "stored" })
        .increment(1);
    let id = input.id.unwrap_or_else(|| sid.clone());
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "stream_id": sid, "duplicate": duplicate})),
    ))
}
