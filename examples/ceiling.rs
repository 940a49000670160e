//! The ceiling: the least a server can do and still do hookgate's essential inbound work for Stripe.
//!
//! Bare hyper 1 (hyper-util's auto builder, no axum, no tower layers, no metrics, no logging per request).
//! For `POST /webhooks/stripe` it reads the body (1 MiB cap), checks `Stripe-Signature` exactly as Stripe
//! documents it (`t=<unix>,v1=<hex>`, HMAC-SHA256 over `"<t>.<body>"` keyed with the whole `whsec_...`
//! string, constant-time compare, 300 s tolerance), XADDs the raw body with `source` and `received_at` to
//! the stream on one multiplexed `ConnectionManager`, and answers 202 `{"id": "<stream id>"}`; 401 on a bad
//! signature, 413 on a body over the cap, 503 when Redis fails.
//!
//! It does no dedup, no JSON parsing and keeps no headers: `scripts/load` compares hookgate against it to
//! show what the gateway's extra work costs.
//!
//! ```text
//! cargo run --release --example ceiling -- --listen 127.0.0.1:8090 \
//!     --redis-url redis://127.0.0.1:6379 --stream hookgate:inbound --secret-file /path/to/secret
//! ```

use bytes::Bytes;
use clap::Parser;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::Sha256;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

/// Body cap, as hookgate's default `limits.max_body`.
const MAX_BODY: usize = 1024 * 1024;
/// Stripe's default replay window.
const TOLERANCE_SECS: u64 = 300;
const PATH: &str = "/webhooks/stripe";
const SOURCE: &str = "stripe";

#[derive(Parser, Debug)]
#[command(about = "Minimal Stripe webhook receiver: verify, XADD, 202. The ceiling for hookgate.")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "CEILING_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Redis URL.
    #[arg(
        long,
        env = "CEILING_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    /// Stream key the events are XADDed to (hookgate's is `<key_prefix>:inbound`).
    #[arg(long, env = "CEILING_STREAM", default_value = "hookgate:inbound")]
    stream: String,
    /// The endpoint secret (`whsec_...`). Prefer --secret-file: argv is visible to every user.
    #[arg(long, env = "CEILING_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// A file holding the endpoint secret (surrounding whitespace ignored).
    #[arg(long, env = "CEILING_SECRET_FILE")]
    secret_file: Option<std::path::PathBuf>,
}

struct State {
    redis: ConnectionManager,
    stream: String,
    /// HMAC keyed with the secret, cloned per request (saves re-deriving the key pads).
    mac: Hmac<Sha256>,
}

type Reply = Response<Full<Bytes>>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let secret = match (&args.secret, &args.secret_file) {
        (Some(s), None) => s.clone(),
        (None, Some(p)) => std::fs::read_to_string(p)
            .map_err(|e| format!("reading {}: {e}", p.display()))?
            .trim()
            .to_string(),
        _ => return Err("give exactly one of --secret or --secret-file".into()),
    };
    if secret.is_empty() {
        return Err("the secret is empty".into());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(args, secret))
}

async fn serve(args: Args, secret: String) -> Result<(), Box<dyn std::error::Error>> {
    let client = redis::Client::open(args.redis_url.as_str())?;
    let cfg = ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_connection_timeout(Some(Duration::from_secs(1)));
    let redis = ConnectionManager::new_with_config(client, cfg).await?;
    let mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|e| format!("hmac key: {e}"))?;
    let state = Arc::new(State {
        redis,
        stream: args.stream,
        mac,
    });

    let listener = TcpListener::bind(args.listen).await?;
    eprintln!(
        "ceiling: listening on http://{}{PATH}, stream {}",
        listener.local_addr()?,
        state.stream
    );
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!("ceiling: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&state, req).await) }
            });
            // A client that goes away mid-request is not our error to report.
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

async fn handle(st: &State, req: Request<Incoming>) -> Reply {
    if req.uri().path() != PATH {
        return reply(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#);
    }
    if req.method() != Method::POST {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"error":"method not allowed"}"#,
        );
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            r#"{"error":"body too large"}"#,
        );
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                r#"{"error":"body too large"}"#,
            )
        }
        Err(_) => return reply(StatusCode::BAD_REQUEST, r#"{"error":"unreadable body"}"#),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let signature = parts.headers.get("stripe-signature");
    if !stripe_signature_ok(&st.mac, signature, &body, now.as_secs()) {
        return reply(StatusCode::UNAUTHORIZED, r#"{"error":"invalid signature"}"#);
    }

    let mut conn = st.redis.clone();
    let id: Result<String, _> = redis::cmd("XADD")
        .arg(&st.stream)
        .arg("*")
        .arg("source")
        .arg(SOURCE)
        .arg("received_at")
        .arg(now.as_millis() as u64)
        .arg("body")
        .arg(body.as_ref())
        .query_async(&mut conn)
        .await;
    match id {
        Ok(id) => match serde_json::to_vec(&serde_json::json!({ "id": id })) {
            Ok(json) => reply(StatusCode::ACCEPTED, json),
            Err(_) => reply(StatusCode::INTERNAL_SERVER_ERROR, r#"{"error":"internal"}"#),
        },
        Err(_) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":"unavailable"}"#,
        ),
    }
}

/// Stripe's scheme: `t=<unix seconds>` and one or more `v1=<hex>`; any other scheme (`v0`, ...) is
/// ignored. Valid when some v1 equals HMAC-SHA256(secret, "<t>.<body>") and `t` is no older than the
/// tolerance (a timestamp in the future is accepted, as Stripe's libraries do).
fn stripe_signature_ok(
    keyed: &Hmac<Sha256>,
    header: Option<&HeaderValue>,
    body: &[u8],
    now: u64,
) -> bool {
    let Some(header) = header.and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let mut timestamp: Option<&str> = None;
    for item in header.split(',') {
        if let Some(("t", v)) = item.trim().split_once('=') {
            timestamp = Some(v);
        }
    }
    let Some(t_str) = timestamp else {
        return false;
    };
    let Ok(t) = t_str.parse::<u64>() else {
        return false;
    };
    if t.saturating_add(TOLERANCE_SECS) < now {
        return false;
    }
    let mut mac = keyed.clone();
    mac.update(t_str.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    let mut ok = subtle::Choice::from(0u8);
    let mut decoded = [0u8; 32];
    for item in header.split(',') {
        if let Some(("v1", v)) = item.trim().split_once('=') {
            if hex::decode_to_slice(v, &mut decoded).is_ok() {
                ok |= decoded.ct_eq(expected.as_slice());
            }
        }
    }
    ok.into()
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: u64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key size");
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn check(secret: &str, header: &str, body: &[u8], now: u64) -> bool {
        let keyed = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key size");
        let h = HeaderValue::from_str(header).expect("ascii header");
        stripe_signature_ok(&keyed, Some(&h), body, now)
    }

    #[test]
    fn stripe_signatures() {
        let (s, body, now) = ("whsec_test", br#"{"id":"evt_1"}"#.as_slice(), 1_700_000_000);
        let good = sign(s, now, body);
        assert!(check(s, &good, body, now));
        assert!(check(s, &good, body, now + 300));
        assert!(!check(s, &good, body, now + 301), "too old");
        assert!(!check("whsec_other", &good, body, now), "wrong secret");
        assert!(!check(s, &good, b"{}", now), "other body");
        // Several signatures (secret rotation) and unknown schemes are allowed.
        let rotated = format!("{},v1={},v0=abc", good, "00".repeat(32));
        assert!(check(s, &rotated, body, now));
        assert!(!check(s, &format!("t={now}"), body, now), "no v1");
        assert!(!check(s, "v1=00", body, now), "no t");
        assert!(!check(s, &format!("t={now},v1=zz"), body, now), "bad hex");
        let keyed = Hmac::<Sha256>::new_from_slice(s.as_bytes()).expect("any key size");
        assert!(!stripe_signature_ok(&keyed, None, body, now), "no header");
    }
}
