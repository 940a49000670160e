//! `/v1/subscriptions`: create, list (`?account=`), get, patch, delete, and `POST /{id}/test`.
//! File subscriptions (`subscriptions_file`) are listed and shown like the others, marked
//! `"origin": "file"`; the API cannot change or delete them, except to re-enable one hookgate disabled.
//! The signing secret is shown in full only in the answers that set it (create, rotation).

use super::events::parse;
use super::Query;
use crate::error::Error;
use crate::outbound::registry::{hf, Compiled, WriteError};
use crate::outbound::subscription::{
    generate_secret, Input, OldSecret, Origin, Spec, ROTATION_OVERLAP,
};
use crate::outbound::Outbound;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

pub fn routes(o: Outbound) -> Router {
    Router::new()
        .route("/v1/subscriptions", get(list).post(create))
        .route(
            "/v1/subscriptions/{id}",
            get(show).patch(patch).delete(remove),
        )
        .route("/v1/subscriptions/{id}/test", post(test))
        .with_state(o)
}

fn unavailable(e: redis::RedisError) -> Error {
    tracing::warn!(error = %e, "subscriptions: redis did not answer");
    Error::Unavailable
}

fn now() -> u64 {
    crate::clock::now_ms()
}

/// The public view plus where it came from and its health. `unusable`: why the last load skipped it.
fn view(
    spec: &Spec,
    origin: Origin,
    health: &HashMap<String, String>,
    unusable: Option<&String>,
) -> Map<String, Value> {
    let mut m = spec.public();
    m.insert("origin".into(), json!(origin));
    let num = |k: &str| health.get(k).and_then(|v| v.parse::<u64>().ok());
    m.insert(
        "disabled_reason".into(),
        json!(health.get(hf::DISABLED_REASON)),
    );
    m.insert("disabled_at".into(), json!(num(hf::DISABLED_AT)));
    m.insert("failing_since".into(), json!(num(hf::FAILING_SINCE)));
    m.insert("last_success_at".into(), json!(num(hf::LAST_SUCCESS_AT)));
    m.insert(
        "active".into(),
        json!(spec.enabled && !health.contains_key(hf::DISABLED_REASON) && unusable.is_none()),
    );
    m.insert("unusable".into(), json!(unusable));
    m
}

async fn find(o: &Outbound, id: &str) -> Result<(Spec, Origin), Error> {
    if let Some(s) = o.registry.file_specs().iter().find(|s| s.id == id) {
        return Ok((s.clone(), Origin::File));
    }
    o.registry
        .get_stored(id)
        .await
        .map_err(unavailable)?
        .map(|s| (s, Origin::Api))
        .ok_or(Error::NotFound)
}

async fn create(
    State(o): State<Outbound>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), Error> {
    let input: Input = parse(&body)?;
    if input.id.is_some() {
        return Err(Error::Invalid(
            "id: assigned by hookgate (ids are only given in subscriptions_file)".into(),
        ));
    }
    let id = format!("sub_{}", uuid::Uuid::now_v7().simple());
    let spec = input
        .into_spec(id, now(), &o.policy, false)
        .map_err(Error::Invalid)?;
    Compiled::check(&spec, Origin::Api).map_err(Error::Invalid)?;
    let url = url::Url::parse(&spec.url).map_err(|e| Error::Invalid(e.to_string()))?;
    o.policy
        .vet_url_resolved(&url)
        .await
        .map_err(|e| Error::Invalid(format!("url: {e}")))?;
    match o
        .registry
        .create(&spec, o.cfg.max_subscriptions_per_account)
        .await
    {
        Ok(()) => {}
        Err(WriteError::Limit(n)) => {
            return Err(Error::Conflict(format!(
                "the account already has {n} subscriptions (outbound.max_subscriptions_per_account)"
            )))
        }
        Err(WriteError::Redis(e)) => return Err(unavailable(e)),
    }
    tracing::info!(subscription = %spec.id, account = ?spec.account, "subscription created");
    let mut v = view(&spec, Origin::Api, &HashMap::new(), None);
    v.insert("secret".into(), json!(spec.secret));
    Ok((StatusCode::CREATED, Json(Value::Object(v))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only this account's; empty: only those without an account.
    account: Option<String>,
}

async fn list(State(o): State<Outbound>, Query(q): Query<ListQuery>) -> Result<Json<Value>, Error> {
    let mut all: Vec<(Spec, Origin)> = o
        .registry
        .file_specs()
        .iter()
        .map(|s| (s.clone(), Origin::File))
        .collect();
    all.extend(
        o.registry
            .list_stored()
            .await
            .map_err(unavailable)?
            .into_iter()
            .map(|s| (s, Origin::Api)),
    );
    if let Some(a) = &q.account {
        let want = (!a.is_empty()).then_some(a.as_str());
        all.retain(|(s, _)| s.account.as_deref() == want);
    }
    all.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    let snap = o.registry.snapshot().await;
    let mut out = Vec::with_capacity(all.len());
    for (s, origin) in &all {
        let h = o.registry.health(&s.id).await.map_err(unavailable)?;
        out.push(Value::Object(view(
            s,
            *origin,
            &h,
            snap.unusable.get(&s.id),
        )));
    }
    Ok(Json(json!({ "subscriptions": out })))
}

async fn show(State(o): State<Outbound>, Path(id): Path<String>) -> Result<Json<Value>, Error> {
    let (spec, origin) = find(&o, &id).await?;
    let h = o.registry.health(&id).await.map_err(unavailable)?;
    let snap = o.registry.snapshot().await;
    Ok(Json(Value::Object(view(
        &spec,
        origin,
        &h,
        snap.unusable.get(&id),
    ))))
}

async fn patch(
    State(o): State<Outbound>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, Error> {
    let changes: Map<String, Value> = parse(&body)?;
    let (old, origin) = find(&o, &id).await?;
    let reenable = changes.get("enabled") == Some(&Value::Bool(true));
    if origin == Origin::File {
        if reenable && changes.len() == 1 {
            o.registry.reenable(&id).await.map_err(unavailable)?;
            let h = o.registry.health(&id).await.map_err(unavailable)?;
            let snap = o.registry.snapshot().await;
            return Ok(Json(Value::Object(view(
                &old,
                origin,
                &h,
                snap.unusable.get(&id),
            ))));
        }
        return Err(Error::Conflict(
            "declared in subscriptions_file: change it there (the API may only re-enable it)"
                .into(),
        ));
    }
    let mut merged = old.as_input();
    let mut rotated = false;
    for (k, v) in changes {
        match k.as_str() {
            "id" | "created_at" | "updated_at" | "previous_secrets" => {
                return Err(Error::Invalid(format!("{k}: cannot be changed")))
            }
            "account" if v != json!(old.account) => {
                return Err(Error::Invalid(
                    "account: cannot be changed; create a subscription in the other account".into(),
                ))
            }
            "rotate_secret" => match v {
                Value::Bool(true) => {
                    merged.insert("secret".into(), json!(generate_secret()));
                    rotated = true;
                }
                Value::Bool(false) => {}
                _ => return Err(Error::Invalid("rotate_secret: true or false".into())),
            },
            "secret" => {
                rotated = v != json!(old.secret);
                merged.insert(k, v);
            }
            _ => {
                merged.insert(k, v);
            }
        }
    }
    let input: Input =
        serde_json::from_value(Value::Object(merged)).map_err(|e| Error::Invalid(e.to_string()))?;
    let t = now();
    let mut spec = input
        .into_spec(id.clone(), old.created_at, &o.policy, false)
        .map_err(Error::Invalid)?;
    Compiled::check(&spec, Origin::Api).map_err(Error::Invalid)?;
    if spec.url != old.url {
        let url = url::Url::parse(&spec.url).map_err(|e| Error::Invalid(e.to_string()))?;
        o.policy
            .vet_url_resolved(&url)
            .await
            .map_err(|e| Error::Invalid(format!("url: {e}")))?;
    }
    spec.updated_at = t;
    spec.previous_secrets = old
        .previous_secrets
        .into_iter()
        .filter(|p| p.expires_at > t)
        .collect();
    if rotated {
        spec.previous_secrets.push(OldSecret {
            secret: old.secret,
            expires_at: t + ROTATION_OVERLAP.as_millis() as u64,
        });
    }
    o.registry
        .update(&spec, reenable)
        .await
        .map_err(unavailable)?;
    let h = o.registry.health(&id).await.map_err(unavailable)?;
    // Just written and checked: loadable, whatever a snapshot taken before the write says.
    let mut v = view(&spec, Origin::Api, &h, None);
    if rotated {
        v.insert("secret".into(), json!(spec.secret));
    }
    Ok(Json(Value::Object(v)))
}

async fn remove(State(o): State<Outbound>, Path(id): Path<String>) -> Result<Json<Value>, Error> {
    let (spec, origin) = find(&o, &id).await?;
    if origin == Origin::File {
        return Err(Error::Conflict(
            "declared in subscriptions_file: remove it there".into(),
        ));
    }
    o.registry.delete(&spec).await.map_err(unavailable)?;
    tracing::info!(subscription = %id, "subscription deleted");
    Ok(Json(json!({ "deleted": id })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestInput {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Option<Value>,
}

/// Send a sample event now and answer with what the subscriber answered. Not recorded, not retried.
async fn test(
    State(o): State<Outbound>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, Error> {
    let input: TestInput = parse(&body)?;
    if !crate::outbound::subscription::valid_name(&input.kind, b"") {
        return Err(Error::Invalid(
            "type: an event type such as contact.created".into(),
        ));
    }
    o.registry.refresh(false).await.map_err(unavailable)?;
    let snap = o.registry.snapshot().await;
    if let Some(why) = snap.unusable.get(&id) {
        return Err(Error::Conflict(format!(
            "the subscription cannot be used: {why}"
        )));
    }
    let sub = snap.by_id.get(&id).cloned().ok_or(Error::NotFound)?;
    let event_id = format!("evt_test_{}", uuid::Uuid::now_v7().simple());
    let doc = json!({
        "id": event_id,
        "type": input.kind,
        "account": sub.spec.account,
        "timestamp": crate::clock::rfc3339_ms(now()),
        "data": input.data.unwrap_or_else(|| json!({"test": true, "note": "a sample event sent by hookgate"})),
    });
    let webhook_id = format!("msg_test_{}", uuid::Uuid::now_v7().simple());
    let a = o.sender.send(&sub, &webhook_id, &doc).await;
    Ok(Json(json!({
        "webhook_id": webhook_id,
        "status": a.status,
        "body": a.response,
        "latency_ms": a.latency_ms,
        "error": a.error,
        "delivered": a.ok(),
    })))
}
