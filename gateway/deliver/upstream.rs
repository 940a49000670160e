//! One action → one HTTP request to the contacts API, and what its answer means for the event.

use super::envelope::Envelope;
use super::retry;
use crate::action::Action;
use crate::config::{Deliver, Upstream as UpstreamConfig};
use crate::route::Routes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::time::{Duration, Instant};

/// The first bytes of a refusing answer kept for the dead letter.
const BODY_START: usize = 1024;

/// What one request achieved.
#[derive(Debug)]
pub enum Sent {
    Delivered,
    /// Worth trying again later (connection error, timeout, 408, 429, 5xx).
    Retry {
        error: String,
        /// The upstream's answer, when it gave one (429, 5xx, 408).
        status: Option<u16>,
        after: Option<Duration>,
        /// No connection could be made: the upstream is down for every source alike.
        unreachable: bool,
    },
    /// Refused for good (any other status): retrying would get the same answer.
    Refused {
        status: u16,
        body: String,
    },
    /// Not sent: the configured route cannot be filled from this action (a path placeholder it has no
    /// value for). Sending it anyway would reach another URL, i.e. another contact or none.
    Unroutable(String),
}

/// The configured upstream: base URL, fixed headers (secrets resolved once at start), routes, HTTP client.
pub struct Upstream {
    base: String,
    headers: HeaderMap,
    routes: Routes,
    client: reqwest::Client,
}

impl Upstream {
    /// Resolve secret header values (`${env:..}`, `${file:..}`) now, so a missing secret stops the start.
    pub fn new(up: &UpstreamConfig, d: &Deliver) -> anyhow::Result<Self> {
        let mut headers = HeaderMap::new();
        for (name, value) in &up.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| anyhow::anyhow!("upstream.headers: `{name}` is not a header name"))?;
            let raw = if value.trim_start().starts_with("${") {
                crate::secret::Secret::resolve(value)
                    .map_err(|e| anyhow::anyhow!("upstream.headers.{name}: {e}"))?
                    .expose()
                    .to_string()
            } else {
                value.clone()
            };
            let mut v = HeaderValue::from_str(&raw).map_err(|_| {
                anyhow::anyhow!("upstream.headers.{name}: not a valid header value")
            })?;
            v.set_sensitive(true);
            headers.insert(name, v);
        }
        let client = reqwest::Client::builder()
            .connect_timeout(d.connect_timeout)
            .timeout(d.timeout)
            // A redirect would turn a POST into a GET; a moved API is a configuration error to see.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hookgate/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(64)
            .build()?;
        let routes = up.compiled_routes().map_err(|ps| {
            let all: Vec<String> = ps.into_iter().map(|(k, m)| format!("{k}: {m}")).collect();
            anyhow::anyhow!("{}", all.join("; "))
        })?;
        Ok(Self {
            base: up.url.trim_end_matches('/').to_string(),
            headers,
            routes,
            client,
        })
    }

    /// Send one action of `env` under `key` (its `Idempotency-Key`); never panics on any answer.
    pub async fn send(&self, env: &Envelope, key: &str, action: &Action) -> Sent {
        let req = match self.routes.request(action) {
            Ok(r) => r,
            Err(why) => return Sent::Unroutable(why),
        };
        let body = match req.body.as_ref().map(serde_json::to_vec).transpose() {
            Ok(b) => b,
            Err(e) => {
                return Sent::Refused {
                    status: 0,
                    body: format!("body not serializable: {e}"),
                }
            }
        };
        let started = Instant::now();
        let mut builder = self
            .client
            .request(req.method, format!("{}{}", self.base, req.path))
            .headers(self.headers.clone())
            .header("idempotency-key", key)
            .header("x-hookgate-source", env.source())
            .header("x-hookgate-event-id", &env.origin_id);
        if let Some(body) = body {
            builder = builder
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let result = builder.send().await;
        let sent = match result {
            Ok(resp) => classify(resp).await,
            Err(e) => Sent::Retry {
                error: describe(&e),
                status: None,
                after: None,
                unreachable: e.is_connect(),
            },
        };
        let outcome = match &sent {
            Sent::Delivered => "delivered",
            Sent::Retry { .. } => "retry",
            Sent::Refused { .. } => "refused",
            Sent::Unroutable(_) => "unroutable",
        };
        metrics::histogram!("hookgate_upstream_request_duration_seconds", "action" => action.kind(), "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        sent
    }
}

async fn classify(mut resp: reqwest::Response) -> Sent {
    let status = resp.status();
    if status.is_success() {
        // Drain a small answer so the connection goes back to the pool.
        let _ = read_start(&mut resp, 64 * 1024).await;
        return Sent::Delivered;
    }
    if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        let after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry::parse_retry_after(v, std::time::SystemTime::now()));
        // What it said, as far as the first KiB: kept as the dead letter's detail if it is the last answer.
        let body = read_start(&mut resp, BODY_START).await;
        let error = match String::from_utf8_lossy(&body).trim() {
            "" => format!("upstream answered {}", status.as_u16()),
            said => format!("upstream answered {}: {said}", status.as_u16()),
        };
        return Sent::Retry {
            error,
            status: Some(status.as_u16()),
            after,
            unreachable: false,
        };
    }
    // Redirects are not followed (a contacts API that moved is a configuration to fix, and following
    // could leave the allowed upstream): where it pointed is what the operator needs to know.
    // Shown without a query or credentials, which may carry tokens; a 304 (no redirect) has none.
    let redirect = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
    let location = redirect
        .then(|| resp.headers().get(http::header::LOCATION))
        .map(|l| {
            l.and_then(|v| v.to_str().ok())
                .map_or("no Location".to_owned(), |to| {
                    crate::error::one_line_within(&shown_location(to), 200)
                })
        });
    let body = read_start(&mut resp, BODY_START).await;
    let said = String::from_utf8_lossy(&body).into_owned();
    Sent::Refused {
        status: status.as_u16(),
        body: match location {
            Some(to) if said.trim().is_empty() => format!("redirect to {to} (not followed)"),
            Some(to) => format!("redirect to {to} (not followed): {said}"),
            None => said,
        },
    }
}

/// A `Location` as it may be stored: without its query or fragment, and without credentials. A relative
/// one (no scheme) is cut the same way.
fn shown_location(to: &str) -> String {
    match url::Url::parse(to) {
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            "a URL with credentials".to_owned()
        }
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => to.split(['?', '#']).next().unwrap_or(to).to_owned(),
    }
}

/// Up to `limit` bytes of the body; a body that fails midway keeps what arrived.
async fn read_start(resp: &mut reqwest::Response, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < limit {
        match resp.chunk().await {
            Ok(Some(c)) => out.extend_from_slice(&c[..c.len().min(limit - out.len())]),
            _ => break,
        }
    }
    out
}

/// A transport error in one line, without the URL (it may carry credentials).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut msg = format!("upstream {kind}");
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut last = None;
    while let Some(s) = src {
        last = Some(s.to_string());
        src = s.source();
    }
    if let Some(cause) = last {
        msg.push_str(": ");
        msg.push_str(&cause);
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::shown_location;

    #[test]
    fn a_location_is_stored_without_query_fragment_or_credentials() {
        assert_eq!(
            shown_location("https://api.example.com/v3/contacts?token=s3cret#x"),
            "https://api.example.com/v3/contacts"
        );
        assert_eq!(
            shown_location("https://user:pw@api.example.com/v3"),
            "a URL with credentials"
        );
        assert_eq!(shown_location("/v3/contacts?token=s3cret"), "/v3/contacts");
    }
}
