//! `POST /webhooks/{source}`: allowlist → limits → verify → dedup → XADD → 202. Nothing is answered 2xx
//! before the event is in Redis.

use super::source::{DedupKey, InboundSource, SourceRegistry};
use super::verify::SignedRequest;
use crate::error::Error;
use crate::ip_policy::{client_ip, CidrList};
use crate::payload::{self, BodyKind};
use crate::stream::{InboundRecord, Store, Stored};
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use http::{header, HeaderMap, Method, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use serde_json::{json, Map, Value};
use sha2::Digest;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// What the receive path needs.
pub struct InboundState {
    pub sources: Arc<SourceRegistry>,
    pub store: Store,
    pub trusted_proxies: CidrList,
    pub default_max_body: u64,
    pub max_json_depth: usize,
    /// Requests being handled; bounds memory held by bodies (`max_in_flight × max_body`).
    pub in_flight: Arc<tokio::sync::Semaphore>,
}

/// How long a request waits for an in-flight slot before it is answered 503.
const SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub fn router(state: Arc<InboundState>) -> Router {
    Router::new()
        .route("/webhooks/{source}", post(receive))
        .with_state(state)
}

async fn receive(
    State(st): State<Arc<InboundState>>,
    Path(name): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = std::time::Instant::now();
    let source = st.sources.get(&name);
    // Unknown names share one label so a scan cannot blow up the metric's cardinality.
    let label = source
        .as_ref()
        .map_or_else(|| "unknown".to_string(), |s| s.name.clone());
    let result = match source {
        None => Err(Error::UnknownSource(name)),
        // A burst waits briefly for a slot before its body is read; a sustained overload gets 503.
        Some(src) => {
            match tokio::time::timeout(SLOT_WAIT, st.in_flight.clone().acquire_owned()).await {
                Ok(Ok(_slot)) => accept(&st, &src, peer, &method, &uri, &headers, body).await,
                _ => Err(Error::Overloaded),
            }
        }
    };
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            if let Error::Unauthorized(_) = &e {
                tracing::info!(source = %label, reason = %e, "verification failed");
            } else if e.status().is_server_error() {
                tracing::warn!(source = %label, error = %e, "inbound event not stored");
            } else {
                tracing::debug!(source = %label, error = %e, "inbound request refused");
            }
            e.into_response()
        }
    };
    let status = resp.status().as_u16().to_string();
    metrics::counter!("hookgate_inbound_requests_total", "source" => label.clone(), "status" => status).increment(1);
    metrics::histogram!("hookgate_inbound_duration_seconds", "source" => label)
        .record(started.elapsed().as_secs_f64());
    resp
}

async fn accept(
    st: &InboundState,
    src: &InboundSource,
    peer: SocketAddr,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let client = client_ip(peer.ip(), headers, &st.trusted_proxies);
    if !src.allow.allows(client) {
        return Err(Error::IpNotAllowed(client));
    }
    let limit = src.max_body.unwrap_or(st.default_max_body);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Error::TooLarge(limit));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let kind = BodyKind::from_content_type(content_type)?;
    let raw = read_limited(body, limit).await?;

    if let Some(verifier) = &src.verifier {
        let url = signed_url(peer, headers, uri, &st.trusted_proxies);
        let req = SignedRequest {
            method: method.as_str(),
            url: &url,
            headers,
            body: &raw,
        };
        if let Err(e) = verifier.verify(&req, SystemTime::now()) {
            metrics::counter!("hookgate_verify_failures_total", "source" => src.name.clone(), "reason" => e.reason())
                .increment(1);
            return Err(Error::Unauthorized(e.to_string()));
        }
    }
    let event_id = validate_and_dedup_id(src, kind, &raw, headers, st.max_json_depth)?;
    let ttl = src
        .dedup
        .as_ref()
        .map_or(super::source::DEFAULT_DEDUP_TTL, |(_, ttl)| *ttl);
    let rec = InboundRecord {
        source: &src.name,
        received_at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        content_type: content_type.unwrap_or(""),
        client_ip: client.to_string(),
        request_id: headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
        event_id: event_id.as_deref(),
        dedup_binding: src
            .dedup_binds_body
            .then(|| hex::encode(&sha2::Sha256::digest(&raw)[..16])),
        headers_json: kept_headers(headers, &src.secret_headers),
        body: &raw,
    };
    let stored = st.store.store_inbound(&rec, ttl).await;
    if let Ok(Stored::New(id) | Stored::Duplicate(id)) = &stored {
        tracing::Span::current().record("event_id", id.as_str());
    }
    match stored {
        Ok(Stored::New(id)) => {
            Ok((StatusCode::ACCEPTED, Json(json!({ "id": id }))).into_response())
        }
        Ok(Stored::Duplicate(id)) => {
            Ok((StatusCode::OK, Json(json!({ "id": id, "duplicate": true }))).into_response())
        }
        Err(e) => {
            tracing::warn!(source = %src.name, error = %e, "redis did not take the event");
            Err(Error::Unavailable)
        }
    }
}

async fn read_limited(body: Body, limit: u64) -> Result<Bytes, Error> {
    match Limited::new(body, limit as usize).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Error::TooLarge(limit)),
        Err(e) => Err(Error::Malformed(format!("could not read the body: {e}"))),
    }
}

/// The URL as the sender addressed it, for schemes that sign it (twilio, hubspot). The scheme comes from
/// `X-Forwarded-Proto` only when the peer is a trusted proxy.
fn signed_url(peer: SocketAddr, headers: &HeaderMap, uri: &Uri, trusted: &CidrList) -> String {
    let proto = if trusted.contains(peer.ip()) {
        headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .filter(|p| *p == "https" || *p == "http")
            .unwrap_or("http")
    } else {
        "http"
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("{proto}://{host}{pq}")
}

/// Check the body is well-formed and find the sender's event id. The common case (a JSON body, an id at a
/// plain member path such as `$.id`) is one pass that builds nothing but the id.
fn validate_and_dedup_id(
    src: &InboundSource,
    kind: BodyKind,
    raw: &[u8],
    headers: &HeaderMap,
    max_depth: usize,
) -> Result<Option<String>, Error> {
    let id = match (&src.dedup, kind) {
        (Some((DedupKey::Path(p), _)), BodyKind::Json) => match p.member_names() {
            Some(names) => payload::json_member(raw, &names, max_depth)?
                .as_ref()
                .and_then(id_text),
            None => p
                .first(&payload::parse(kind, raw, max_depth)?)
                .and_then(id_text),
        },
        (Some((DedupKey::Path(p), _)), BodyKind::Form) => p
            .first(&payload::parse(kind, raw, max_depth)?)
            .and_then(id_text),
        (dedup, BodyKind::Json) => {
            payload::validate_json(raw, max_depth)?;
            header_id(dedup, headers)
        }
        (dedup, BodyKind::Form) => {
            payload::parse(kind, raw, max_depth)?;
            header_id(dedup, headers)
        }
    };
    // Ids are sender-chosen: a long one is hashed before it becomes part of a Redis key.
    Ok(id.and_then(|id| match id.len() {
        0 => None,
        1..=128 => Some(id),
        _ => Some(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(id.as_bytes()))
        )),
    }))
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn header_id(
    dedup: &Option<(DedupKey, std::time::Duration)>,
    headers: &HeaderMap,
) -> Option<String> {
    match dedup {
        Some((DedupKey::Header(h), _)) => headers.get(h)?.to_str().ok().map(str::to_owned),
        _ => None,
    }
}

/// The request headers worth keeping for mapping and audit, as a JSON object; credentials are dropped and
/// repeated headers joined with `, `.
fn kept_headers(headers: &HeaderMap, secret: &[http::HeaderName]) -> String {
    let mut out = Map::new();
    for (name, value) in headers {
        if secret.contains(name) {
            continue;
        }
        let v = String::from_utf8_lossy(value.as_bytes());
        match out.get_mut(name.as_str()) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                out.insert(name.as_str().to_string(), Value::String(v.into_owned()));
            }
        }
    }
    Value::Object(out).to_string()
}
