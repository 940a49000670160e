//! `POST /webhooks/{source}`: allowlist → limits → verify → dedup → XADD → 202. Nothing is answered 2xx
//! before the event is in Redis.

use super::metrics;
use super::source::{DedupKey, InboundSource, SourceRegistry};
use super::verify::SignedRequest;
use crate::error::Error;
use crate::ip_policy::{client_ip, CidrList};
use crate::payload::{self, BodyKind};
use crate::stream::{InboundRecord, Store, Stored};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap, Method, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use serde_json::{json, Value};
use sha2::Digest;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// What the receive path needs.
pub struct InboundState {
    pub sources: Arc<SourceRegistry>,
    pub store: Store,
    pub trusted_proxies: CidrList,
    pub default_max_body: u64,
    pub max_json_depth: usize,
    /// `limits.max_headers`. hyper enforces it on HTTP/1 heads; an HTTP/2 head is bounded only by its
    /// size, so the receiver counts.
    pub max_headers: usize,
    /// Requests being handled; bounds memory held by bodies (`max_in_flight × max_body`).
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// The least rate a body must arrive at (`limits.min_body_rate`), so a stalled one frees its slot.
    pub pace: Option<super::pace::Pace>,
}

/// The route's path, before the source name (one segment, which the router matches).
const PREFIX: &str = "/webhooks/";

/// The inbound listener: an axum router with one route, `/webhooks/{source}`, served by [`Receiver`];
/// any other path gets the JSON 404 every refusal has. The route is a service rather than a handler: the
/// receiver takes the request whole (no extractor clones the header map, method or URI), which keeps the
/// router's share of each request to matching the path.
pub fn router(state: Arc<InboundState>) -> axum::Router {
    axum::Router::new()
        .route_service(&format!("{PREFIX}{{source}}"), Receiver(state))
        .fallback(|| async {
            metrics::record_other(metrics::UNKNOWN, 404);
            Error::NotFound
        })
}

/// `POST /webhooks/{source}` as a tower service. The tower layers every listener gets (request id,
/// trace, catch-panic, timeout) wrap the router, as they wrap the admin router.
#[derive(Clone)]
pub struct Receiver(Arc<InboundState>);

impl tower::Service<Request> for Receiver {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let st = self.0.clone();
        Box::pin(async move { Ok(route(st, req).await) })
    }
}

/// The source a webhook path names: its segment after [`PREFIX`], percent-decoded; `None` for another
/// path, or a name that is not UTF-8.
fn source_name(uri: &Uri) -> Option<String> {
    let name = uri.path().strip_prefix(PREFIX)?;
    if name.contains('/') {
        return None;
    }
    percent_encoding::percent_decode_str(name)
        .decode_utf8()
        .ok()
        .map(|n| n.into_owned())
}

/// Count a refusal the receiver did not make (a layer's 408, 413 or 500, see
/// [`crate::error::LayerRefusals`]; the route's 404 or 405) as the receiver counts its own: under the
/// source, or [`metrics::UNKNOWN`] for a path naming none.
pub fn count_refusal(sources: &SourceRegistry, uri: &Uri, e: &Error) {
    let status = e.status().as_u16();
    match source_name(uri).filter(|n| sources.get(n).is_some()) {
        Some(name) => metrics::record_other(&name, status),
        None => metrics::record_other(metrics::UNKNOWN, status),
    }
}

/// The body limit of the source a webhook path names (its `max_body`, else `default`); `None` for a path
/// naming no source. The backstop's 413 names it, as the receiver's own would.
pub fn body_limit(sources: &SourceRegistry, uri: &Uri, default: u64) -> Option<u64> {
    let src = sources.get(&source_name(uri)?)?;
    Some(src.max_body.unwrap_or(default))
}

/// The router matched the path's shape, so [`source_name`] finds the name; one that is not UTF-8 is no
/// source (404). Another method than POST gets 405 with `Allow`, but for a GET (or HEAD) to a source
/// that answers its provider's check of the URL (`handshake: get`), which [`receive`] decides with the
/// source it serves the request with.
async fn route(st: Arc<InboundState>, req: Request) -> Response {
    let refuse = |e: Error| {
        count_refusal(&st.sources, req.uri(), &e);
        e.into_response()
    };
    let Some(name) = source_name(req.uri()) else {
        return refuse(Error::NotFound);
    };
    if req.method() != Method::POST && !is_get(req.method()) {
        let answers_get = st.sources.get(&name).is_some_and(|s| s.answers_get);
        return refuse(Error::MethodNotAllowed(if answers_get {
            HANDSHAKE_METHODS
        } else {
            "POST"
        }));
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let Some(peer) = peer else {
        return refuse(Error::Internal("no peer address on the request".into()));
    };
    receive(st, name, peer, req).await
}

async fn receive(st: Arc<InboundState>, name: String, peer: SocketAddr, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let started = std::time::Instant::now();
    let Some(src) = st.sources.get(&name) else {
        let resp = Error::UnknownSource(crate::error::one_line(&name)).into_response();
        metrics::record_unknown(resp.status().as_u16(), started.elapsed().as_secs_f64());
        return resp;
    };
    // What needs no body is refused at once. A burst waits briefly for a slot before its body is read;
    // a sustained overload gets 503 (a sender told to retry, which a 403 or 415 never should be).
    let result = async {
        // Decided with the source this request is served with: a reload may have changed it since.
        if is_get(&parts.method) {
            if !src.answers_get {
                return Err(Error::MethodNotAllowed("POST"));
            }
            return handshake_get(&st, &src, peer, &parts);
        }
        let admitted = admit(&st, &src, peer, &parts)?;
        let Some(_slot) =
            crate::admission::permit_within(&st.in_flight, crate::config::IN_FLIGHT_WAIT).await
        else {
            return Err(Error::Overloaded);
        };
        accept(&st, &src, peer, admitted, &parts, body).await
    }
    .await;
    let resp = result.unwrap_or_else(|e| {
        match &e {
            Error::Unauthorized(_) => {
                tracing::info!(source = %src.name, reason = %e, "verification failed");
            }
            // Not "not stored": a store that timed out may still land in Redis, and then the sender's
            // retry is answered as a duplicate.
            Error::Unavailable | Error::Overloaded | Error::Internal(_) => {
                tracing::warn!(source = %src.name, error = %e, "inbound event not acknowledged; the sender retries");
            }
            _ => tracing::debug!(source = %src.name, error = %e, "inbound request refused"),
        }
        e.into_response()
    });
    src.metrics.record(
        &src.name,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    resp
}

/// What the checks that need no body found.
struct Admitted<'h> {
    client: IpAddr,
    limit: u64,
    kind: BodyKind,
    content_type: Option<&'h str>,
}

/// The first coding in the `name` fields (comma-separated lists) that is not `ok`, fit for a reason.
fn coding_other_than(headers: &HeaderMap, name: header::HeaderName, ok: &str) -> Option<String> {
    headers.get_all(name).iter().find_map(|field| {
        field
            .to_str()
            .unwrap_or("(not visible ASCII)")
            .split(',')
            .map(str::trim)
            .find(|c| !c.is_empty() && !c.eq_ignore_ascii_case(ok))
            .map(crate::error::one_line)
    })
}

/// The methods a source with `handshake: get` takes.
const HANDSHAKE_METHODS: &str = "GET, HEAD, POST";

/// GET, or HEAD, which asks for what GET would answer without its body.
fn is_get(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// `handshake: get`: the provider's GET of the URL gets an empty 200 once the header count and the
/// allowlist pass. The credential is not asked for: a GET is no event, nothing is read, stored or done,
/// and its answer tells only that the source exists, which a POST's 401 tells too; Mailchimp does not
/// document that its check carries the URL's query, where its token is. Never cached: the URL may carry
/// the token.
fn handshake_get(
    st: &InboundState,
    src: &InboundSource,
    peer: SocketAddr,
    parts: &Parts,
) -> Result<Response, Error> {
    admit_sender(st, src, peer, parts)?;
    tracing::info!(source = %src.name, kind = "get", "handshake answered; nothing stored");
    let mut resp = reply(StatusCode::OK, None, Body::empty());
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

/// The checks on the head's size and the sender's address: header count, allowlist. The client address.
fn admit_sender(
    st: &InboundState,
    src: &InboundSource,
    peer: SocketAddr,
    parts: &Parts,
) -> Result<IpAddr, Error> {
    let headers = &parts.headers;
    // The request-id layer has set `x-request-id`: not the sender's field. An HTTP/2 request names its
    // host in `:authority`, no field here, where HTTP/1's Host line counts against the same limit.
    let authority = parts.version == http::Version::HTTP_2
        && parts.uri.authority().is_some()
        && !headers.contains_key(header::HOST);
    // The sender's own `x-request-id` fields were taken off (`telemetry::drop_sender_request_id`) and
    // ours put on: theirs count, ours does not.
    let theirs = parts
        .extensions
        .get::<crate::telemetry::SenderRequestIds>()
        .map_or(0, |t| t.0);
    let sent = headers.len() + usize::from(authority) + theirs
        - usize::from(headers.contains_key("x-request-id"));
    if sent > st.max_headers {
        return Err(Error::TooManyHeaders(st.max_headers));
    }
    let client = client_ip(peer.ip(), headers, &st.trusted_proxies);
    if !src.allow.allows(client) {
        return Err(Error::IpNotAllowed(client));
    }
    Ok(client)
}

/// The checks on the head and the address: header count, allowlist, declared length, content type.
fn admit<'h>(
    st: &InboundState,
    src: &InboundSource,
    peer: SocketAddr,
    parts: &'h Parts,
) -> Result<Admitted<'h>, Error> {
    let headers = &parts.headers;
    let client = admit_sender(st, src, peer, parts)?;
    let limit = src.max_body.unwrap_or(st.default_max_body);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Error::TooLarge(limit));
    }
    // Two fields read as their combined value (`a, b`), which is no one type; a value that is not
    // visible ASCII is named as such rather than as missing.
    let mut sent = headers.get_all(header::CONTENT_TYPE).iter();
    let content_type = match (sent.next(), sent.next()) {
        (None, _) => None,
        (Some(one), None) => Some(one.to_str().unwrap_or("(not visible ASCII)")),
        (Some(_), Some(_)) => {
            let all = headers.get_all(header::CONTENT_TYPE).iter();
            let joined: Vec<&str> = all.map(|v| v.to_str().unwrap_or("?")).collect();
            let joined = joined.join(", ");
            return Err(Error::UnsupportedType(crate::error::one_line(&joined)));
        }
    };
    let kind = BodyKind::from_content_type_with(content_type, src.text_is_json)?;
    // Its signature is read from a JSON body, and its dedup id too: under another type the two would not
    // read the same token.
    if src.single_use_token && !matches!(kind, BodyKind::Json) {
        return Err(Error::JsonOnly(crate::error::one_line(
            content_type.unwrap_or(""),
        )));
    }
    if src.form_only && !matches!(kind, BodyKind::Form(_)) {
        return Err(Error::FormOnly(crate::error::one_line(
            content_type.unwrap_or(""),
        )));
    }
    // Content codings, in the order applied; only `identity` (no coding) is read.
    if let Some(other) = coding_other_than(headers, header::CONTENT_ENCODING, "identity") {
        return Err(Error::UnsupportedEncoding(other));
    }
    // Transfer codings: hyper has undone `chunked` (which must come last); anything else is still on.
    if let Some(other) = coding_other_than(headers, header::TRANSFER_ENCODING, "chunked") {
        return Err(Error::UnsupportedTransferCoding(other));
    }
    Ok(Admitted {
        client,
        limit,
        kind,
        content_type,
    })
}

async fn accept(
    st: &InboundState,
    src: &InboundSource,
    peer: SocketAddr,
    admitted: Admitted<'_>,
    parts: &Parts,
    body: Body,
) -> Result<Response, Error> {
    let Admitted {
        client,
        limit,
        kind,
        content_type,
    } = admitted;
    let headers = &parts.headers;
    // One clock read for the replay window and the stored receive time.
    let now = SystemTime::now();
    let raw = match st.pace {
        Some(pace) => read_limited(super::pace::Paced::new(body, pace), limit).await?,
        None => read_limited(body, limit).await?,
    };

    let preset = src.verifier.as_ref().map(|v| v.preset());
    if super::handshake::woocommerce_ping(preset, kind, headers, &raw) {
        tracing::info!(source = %src.name, kind = "woocommerce", "handshake answered; nothing stored");
        return Ok(reply(StatusCode::OK, None, Body::empty()));
    }
    let signed_with = verify(st, src, peer, parts, &raw, now).await?;
    // A token carried in the body (Google Ads' `google_key`) is no part of the event: kept, it would be
    // read back wherever events are (the admin API, dead letters, replays).
    let raw = match &src.secret_field {
        Some(name) => super::verify::redact_member(&raw, name).map_or(raw, Bytes::from),
        None => raw,
    };
    if let Some(h) = super::handshake::of(preset, kind, &raw, st.max_json_depth)? {
        use super::handshake::Handshake;
        tracing::info!(source = %src.name, kind = %preset.map_or("", |p| p.name()), "handshake answered; nothing stored");
        return Ok(match h {
            Handshake::SlackChallenge(c) => answer(StatusCode::OK, json!({ "challenge": c })),
            Handshake::SlackSslCheck => reply(StatusCode::OK, None, Body::empty()),
            Handshake::ZoomUrlValidation(plain) => {
                // The request was verified: only the holder of a secret asks for this MAC, and it gets
                // it under the secret it signed with, which Zoom checks the answer with.
                let encrypted = src
                    .verifier
                    .as_ref()
                    .zip(signed_with)
                    .and_then(|(v, key)| v.key_hex_mac(key, &plain))
                    .ok_or_else(|| Error::Internal("a zoom validation without its key".into()))?;
                answer(
                    StatusCode::OK,
                    json!({ "plainToken": plain, "encryptedToken": encrypted }),
                )
            }
            Handshake::SnsSubscribe {
                topic,
                subscribe_url,
            } => confirm_sns(src, &topic, &subscribe_url).await?,
            Handshake::SnsUnsubscribed { topic } => {
                let what =
                    "SNS unsubscribed this source from a topic; it sends nothing more from it";
                tracing::warn!(source = %src.name, topic, "{what}");
                reply(StatusCode::OK, None, Body::empty())
            }
        });
    }
    let event_id = validate_and_dedup_id(src, kind, &raw, headers, st.max_json_depth)?;
    let ttl = src
        .dedup
        .as_ref()
        .map_or(super::source::DEFAULT_DEDUP_TTL, |(_, ttl)| *ttl);
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let rec = InboundRecord {
        source: &src.name,
        received_at_ms: now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        content_type: content_type.unwrap_or(""),
        client_ip: client.to_string(),
        request_id,
        event_id: event_id.as_deref(),
        dedup_binding: src
            .dedup_binds_body
            .then(|| hex::encode(&sha2::Sha256::digest(&raw)[..16])),
        headers_json: kept_headers(headers, &src.secret_headers),
        body: &raw,
    };
    let stored = st.store.store_inbound(&rec, ttl).await;
    match &stored {
        Ok(Stored::New(id)) => {
            tracing::Span::current().record("event_id", id.as_str());
        }
        Ok(Stored::Duplicate(_)) => src.metrics.redelivery(&src.name),
        Err(_) => {}
    }
    match (stored, &src.answer) {
        // The source's own answer (`response:`, or its preset's), to a new event and to a redelivery
        // alike: the sender is answered as it was the first time.
        (Ok(_), Some(own)) => Ok(reply(
            own.status,
            own.content_type.clone(),
            own.body.clone(),
        )),
        (Ok(Stored::New(id)), None) => {
            // A stream id is digits and a dash: nothing to escape, so no JSON value is built.
            Ok(answer_text(
                StatusCode::ACCEPTED,
                [r#"{"id":""#, &id, r#""}"#].concat(),
            ))
        }
        // The sender's own id names the original; on one Redis the pipeline does not learn its
        // stream id (on a cluster the script does, and it is given too).
        (Ok(Stored::Duplicate(original)), None) => {
            let mut body = json!({ "duplicate": true, "event_id": rec.event_id });
            if let Some(id) = original {
                body["id"] = json!(id);
            }
            Ok(answer(StatusCode::OK, body))
        }
        (Err(e), _) => {
            tracing::warn!(source = %src.name, error = %e, "event not acknowledged; the sender retries");
            Err(Error::Unavailable)
        }
    }
}

/// Amazon SNS's `SubscriptionConfirmation`, verified: confirm the subscription (fetch its
/// `SubscribeURL`) and answer an empty 200; if SNS does not take it, a 502, and SNS sends it again.
async fn confirm_sns(
    src: &InboundSource,
    topic: &str,
    subscribe_url: &str,
) -> Result<Response, Error> {
    let verifier = (src.verifier.as_ref())
        .ok_or_else(|| Error::Internal("an SNS confirmation without its verifier".into()))?;
    match verifier.confirm_subscription(subscribe_url).await {
        Ok(subscription) => {
            let source = src.name.clone();
            ::metrics::counter!("hookgate_sns_subscriptions_confirmed_total", "source" => source)
                .increment(1);
            let subscription = subscription.as_deref().unwrap_or("");
            tracing::info!(source = %src.name, topic, subscription, "SNS subscription confirmed");
            Ok(reply(StatusCode::OK, None, Body::empty()))
        }
        Err(why) => {
            tracing::warn!(source = %src.name, topic, reason = %why, "SNS subscription not confirmed");
            Err(Error::BadGateway(format!(
                "could not confirm the SNS subscription: {why}"
            )))
        }
    }
}

/// The source's signature or credential check; a failure is counted by its reason. Which secret made
/// the matching MAC, for a scheme that computes one.
async fn verify(
    st: &InboundState,
    src: &InboundSource,
    peer: SocketAddr,
    parts: &Parts,
    body: &[u8],
    now: SystemTime,
) -> Result<Option<usize>, Error> {
    let Some(verifier) = &src.verifier else {
        return Ok(None);
    };
    // Only the schemes that sign the URL (twilio, hubspot, square, a `{url}` template, a token parameter)
    // read it.
    let url = if verifier.needs_url() {
        signed_url(peer, &parts.headers, &parts.uri, &st.trusted_proxies)
    } else {
        String::new()
    };
    let req = SignedRequest {
        method: parts.method.as_str(),
        url: &url,
        headers: &parts.headers,
        body,
    };
    let refused = |e: super::verify::VerifyError| {
        ::metrics::counter!("hookgate_verify_failures_total", "source" => src.name.clone(), "reason" => e.reason())
            .increment(1);
        match e {
            // Not the sender's fault, and maybe a good message: a 5xx makes it retry.
            super::verify::VerifyError::CertUnavailable(_) => Error::BadGateway(e.to_string()),
            _ => Error::Unauthorized(e.to_string()),
        }
    };
    verifier.verify_fetching(&req, now).await.map_err(refused)
}

async fn read_limited<B>(body: B, limit: u64) -> Result<Bytes, Error>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<tower::BoxError>,
{
    match Limited::new(body, limit as usize).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if over_limit(e.as_ref()) => Err(Error::TooLarge(limit)),
        Err(e) if sender_left(e.as_ref()) => Err(Error::ClientClosed),
        Err(e) => match causes(e.as_ref()).find_map(|e| e.downcast_ref::<super::pace::TooSlow>()) {
            Some(slow) => Err(Error::TooSlow(slow.min_per_sec)),
            None => Err(Error::Malformed(format!("could not read the body: {e}"))),
        },
    }
}

/// Whether reading a body failed because the sender went away (the connection closed before the
/// declared length or the last chunk, or the stream was cancelled), not because it sent bad framing.
fn sender_left(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind as K;
    causes(e).any(|e| {
        e.downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_incomplete_message() || h.is_canceled())
            // HTTP/2: the sender reset its stream (RST_STREAM, CANCEL as a rule).
            || e.downcast_ref::<h2::Error>()
                .is_some_and(|h| h.is_reset() && h.is_remote())
            || e.downcast_ref::<std::io::Error>().is_some_and(|io| {
                matches!(
                    io.kind(),
                    K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe
                )
            })
    })
}

/// Whether reading a body stopped at a length limit: this request's, or the listener's backstop
/// (`app::layered`), whose error reaches us wrapped in the body's own.
fn over_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    causes(e).any(|e| e.is::<http_body_util::LengthLimitError>())
}

/// An error and every error under it: the body's errors reach us wrapped by each layer.
fn causes<'e>(
    e: &'e (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'e (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

/// The URL as the sender addressed it, for schemes that sign it (twilio, hubspot, square). The scheme comes from
/// `X-Forwarded-Proto` only when the peer is a trusted proxy: its left-most value (the scheme the first
/// proxy was reached by, where a chain appends), in any case (`HTTPS`).
fn signed_url(peer: SocketAddr, headers: &HeaderMap, uri: &Uri, trusted: &CidrList) -> String {
    let forwarded = headers
        .get("x-forwarded-proto")
        .filter(|_| trusted.contains(peer.ip()))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim);
    let proto = match forwarded {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        _ => "http",
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
    // Members that hold JSON text (`parse_json:`) are part of the body's form: they are checked with it,
    // and a dedup path may reach into them.
    let id = match &src.dedup {
        Some((DedupKey::Path(p), _)) => match (kind, p.member_names()) {
            (BodyKind::Json, Some(names)) if src.parse_json.is_empty() => {
                payload::json_member(raw, &names, max_depth)?
                    .as_ref()
                    .and_then(id_text)
            }
            _ => p
                .first(&payload::parse_with(kind, raw, max_depth, &src.parse_json)?)
                .and_then(id_text),
        },
        dedup => {
            payload::check_with(kind, raw, max_depth, &src.parse_json)?;
            // The exact bytes, by choice: not counted as an id that was missing.
            if matches!(dedup, Some((DedupKey::Body, _))) {
                return Ok(Some(body_id(src, kind, raw)));
            }
            header_id(dedup, headers)
        }
    };
    // A source with dedup whose event has no usable id is deduplicated by its exact bytes (a form signed
    // by its parameters, by those: `body_id`): stored once however often the same request is sent again
    // (also under another Content-Type, which no signature covers and under which the id is not found),
    // and never merged with another event.
    // An empty id (`"id": ""`, an empty header) is no id either.
    let id = match id.filter(|id| !id.is_empty()) {
        // A token that is the only thing signed (Mailgun's) must be the id: its bytes would make a
        // replayed signature on a new body a new event. The verifier read it, so this is a defence only.
        None if src.single_use_token => {
            ::metrics::counter!("hookgate_verify_failures_total", "source" => src.name.clone(), "reason" => "missing_field")
                .increment(1);
            return Err(Error::Unauthorized(
                "missing body field signature.token".to_owned(),
            ));
        }
        None if src.dedup.is_some() => {
            ::metrics::counter!("hookgate_dedup_id_missing_total", "source" => src.name.clone())
                .increment(1);
            return Ok(Some(body_id(src, kind, raw)));
        }
        id => id,
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

/// The id of an event known by its exact bytes (`dedup: { body: true }`, or no usable id). A form whose
/// signature covers its decoded parameters rather than its bytes (Twilio's, Mandrill's) is known by
/// what is signed: its bytes could be re-encoded (`%5b` for `%5B`, a trailing `&`) under the same
/// signature, and a captured request would be stored again. The parameters are joined as they are
/// signed, with no separator, on purpose: two bodies that join alike carry the same signature, so a
/// separator would let a holder of one re-split its parameters into a new key.
fn body_id(src: &InboundSource, kind: BodyKind, raw: &[u8]) -> String {
    let signed = match (kind, &src.verifier) {
        (BodyKind::Form(_), Some(v)) => v.signed_form_params(raw),
        _ => None,
    };
    match signed {
        Some(params) => format!(
            "signed-sha256:{}",
            hex::encode(sha2::Sha256::digest(params.as_bytes()))
        ),
        None => format!("body-sha256:{}", hex::encode(sha2::Sha256::digest(raw))),
    }
}

/// An id is a string, or an integer within 64 bits as its decimal text. Any other number (a fraction,
/// an exponent, a larger integer) is read as a float, whose text is not the sender's: two ids past
/// 2^64 could share one, and a redelivery test would merge two events. It is no id.
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
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

/// A JSON answer, serialised straight into the body.
fn answer(status: StatusCode, body: Value) -> Response {
    answer_text(status, body.to_string())
}

/// A JSON answer already written as text.
fn answer_text(status: StatusCode, json: String) -> Response {
    let json_type = http::HeaderValue::from_static("application/json");
    reply(status, Some(json_type), json)
}

/// An answer: ours in JSON, or a source's own (`response:`).
fn reply(
    status: StatusCode,
    content_type: Option<http::HeaderValue>,
    body: impl Into<Body>,
) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    if let Some(t) = content_type {
        resp.headers_mut().insert(header::CONTENT_TYPE, t);
    }
    resp
}

/// The request headers worth keeping for mapping and audit, as a JSON object; credentials are dropped and
/// repeated headers joined with `, `. Written straight into the string: this runs on every request.
fn kept_headers(headers: &HeaderMap, secret: &[http::HeaderName]) -> String {
    let mut out = Vec::with_capacity(64 * headers.len() + 2);
    out.push(b'{');
    // `iter` yields every value, those of one name one after another: no lookup per name.
    let mut all = headers.iter().peekable();
    while let Some((name, first)) = all.next() {
        let mut rest = Vec::new();
        while let Some((_, v)) = all.next_if(|(n, _)| *n == name) {
            rest.push(v);
        }
        if secret.contains(name) {
            continue;
        }
        if out.len() > 1 {
            out.push(b',');
        }
        // Header names are lowercase tokens: nothing in them needs escaping.
        out.push(b'"');
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b"\":");
        if rest.is_empty() && is_plain(first.as_bytes()) {
            out.push(b'"');
            out.extend_from_slice(first.as_bytes());
            out.push(b'"');
        } else if rest.is_empty() {
            push_json_str(&mut out, &String::from_utf8_lossy(first.as_bytes()));
        } else {
            let joined: Vec<_> = std::iter::once(first)
                .chain(rest)
                .map(|v| String::from_utf8_lossy(v.as_bytes()))
                .collect();
            push_json_str(&mut out, &joined.join(", "));
        }
    }
    out.push(b'}');
    // Only JSON-escaped UTF-8 was written.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Printable ASCII without `"` or `\\`: a JSON string as it is (most header values).
fn is_plain(v: &[u8]) -> bool {
    v.iter()
        .all(|b| (0x20..0x7f).contains(b) && *b != b'"' && *b != b'\\')
}

/// Append `s` as a JSON string.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail, and a &str always serialises.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    #[test]
    fn the_signed_url_takes_the_scheme_from_a_trusted_proxy_only() {
        let trusted = CidrList::new(&["10.0.0.0/8".parse().expect("net")]);
        let uri: Uri = "/webhooks/hubspot?a=1".parse().expect("uri");
        let url = |peer: &str, proto: Option<&str>| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("hooks.example.com"));
            if let Some(p) = proto {
                h.insert(
                    "x-forwarded-proto",
                    HeaderValue::from_str(p).expect("value"),
                );
            }
            signed_url(peer.parse().expect("peer"), &h, &uri, &trusted)
        };
        let https = "https://hooks.example.com/webhooks/hubspot?a=1";
        let http = "http://hooks.example.com/webhooks/hubspot?a=1";
        for proto in ["https", "HTTPS", " https ", "https, http", "Https,https"] {
            assert_eq!(url("10.1.2.3:443", Some(proto)), https, "{proto:?}");
        }
        for proto in ["http", "http, https", "ftp", "", ",https"] {
            assert_eq!(url("10.1.2.3:443", Some(proto)), http, "{proto:?}");
        }
        assert_eq!(url("10.1.2.3:443", None), http);
        assert_eq!(
            url("192.0.2.7:443", Some("https")),
            http,
            "an untrusted peer's header is ignored"
        );
    }

    /// The hand-written fast path writes the same JSON object serde_json would.
    #[test]
    fn kept_headers_are_the_json_serde_writes() {
        let mut h = HeaderMap::new();
        let values: [&[u8]; 6] = [
            b"plain value",
            b"with \"quotes\" and \\ backslash",
            b"tab\there",
            "caf\u{e9}".as_bytes(),
            b"\xff not utf-8",
            b"",
        ];
        for (i, v) in values.iter().enumerate() {
            h.insert(
                HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h.append("x-many", HeaderValue::from_static("a"));
        h.append("x-many", HeaderValue::from_static("b\"c"));
        h.insert("x-secret", HeaderValue::from_static("s3cret"));
        let got: Value =
            serde_json::from_str(&kept_headers(&h, &[HeaderName::from_static("x-secret")]))
                .unwrap();
        let mut want = serde_json::Map::new();
        for (i, v) in values.iter().enumerate() {
            want.insert(format!("x-h{i}"), json!(String::from_utf8_lossy(v)));
        }
        want.insert("x-many".into(), json!("a, b\"c"));
        assert_eq!(got, Value::Object(want));
    }
}
