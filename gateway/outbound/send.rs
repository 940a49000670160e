//! One request to a subscriber: the body (default shape, template, form), the Standard Webhooks
//! headers, auth and custom headers, through the egress-checked client; and what came back.

use super::registry::Compiled;
use super::sign;
use super::subscription::Format;
use crate::clock::now_ms;
use crate::egress::{is_egress_denied, EgressPolicy};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Response bytes kept per attempt.
pub const KEEP_BODY: usize = 4096;

pub use crate::egress::USER_AGENT;

/// What one attempt came to.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub at_ms: u64,
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// The first `KEEP_BODY` bytes of the response, as text.
    pub response: String,
    pub error: Option<String>,
    pub retry_after: Option<Duration>,
    /// Refused by the egress policy: not retried.
    pub denied: bool,
    /// The body could not be made (template): not retried.
    pub unrenderable: bool,
}

impl Attempt {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    pub fn to_json(&self) -> Value {
        json!({
            "at": crate::clock::rfc3339_ms(self.at_ms),
            "status": self.status,
            "latency_ms": self.latency_ms,
            "response": self.response,
            "error": self.error,
        })
    }

    fn failed(at_ms: u64, start: Instant, error: String) -> Self {
        Attempt {
            at_ms,
            status: None,
            latency_ms: start.elapsed().as_millis() as u64,
            response: String::new(),
            error: Some(error),
            retry_after: None,
            denied: false,
            unrenderable: false,
        }
    }
}

pub struct Sender {
    client: reqwest::Client,
    policy: Arc<EgressPolicy>,
}

/// The payload object: the template's output, or `{"type", "timestamp", "data"}`.
pub fn payload(sub: &Compiled, doc: &Value) -> Result<Value, String> {
    match &sub.template {
        Some(t) => t.render(doc).map(Value::Object),
        None => Ok(json!({
            "type": doc["type"],
            "timestamp": doc["timestamp"],
            "data": doc["data"],
        })),
    }
}

/// The body bytes and content type for the subscription's format.
pub fn body(sub: &Compiled, doc: &Value) -> Result<(&'static str, Vec<u8>), String> {
    let p = payload(sub, doc)?;
    Ok(match sub.spec.format {
        Format::Json => ("application/json", p.to_string().into_bytes()),
        Format::Form => {
            let mut ser = form_urlencoded::Serializer::new(String::new());
            flatten(&mut ser, "", &p);
            (
                "application/x-www-form-urlencoded",
                ser.finish().into_bytes(),
            )
        }
    })
}

/// `{"contact": {"email": "x"}}` → `contact[email]=x`; lists as `tags[0]=a`; null as empty.
fn flatten(ser: &mut form_urlencoded::Serializer<String>, prefix: &str, v: &Value) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}[{k}]")
        }
    };
    match v {
        Value::Object(m) => flatten_map(ser, prefix, m, &key),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten(ser, &key(&i.to_string()), item);
            }
        }
        Value::String(s) => {
            ser.append_pair(prefix, s);
        }
        Value::Null => {
            ser.append_pair(prefix, "");
        }
        other => {
            ser.append_pair(prefix, &other.to_string());
        }
    }
}

fn flatten_map(
    ser: &mut form_urlencoded::Serializer<String>,
    _prefix: &str,
    m: &Map<String, Value>,
    key: &dyn Fn(&str) -> String,
) {
    for (k, v) in m {
        flatten(ser, &key(k), v);
    }
}

impl Sender {
    pub fn new(
        policy: Arc<EgressPolicy>,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            client: policy.client(connect_timeout, timeout)?,
            policy,
        })
    }

    /// POST the event `doc` to `sub` as message `webhook_id`, signed now.
    pub async fn send(&self, sub: &Compiled, webhook_id: &str, doc: &Value) -> Attempt {
        let start = Instant::now();
        let at_ms = now_ms();
        if let Err(e) = self.policy.check_url(&sub.url) {
            return Attempt {
                denied: true,
                ..Attempt::failed(at_ms, start, e.to_string())
            };
        }
        let (content_type, body) = match body(sub, doc) {
            Ok(b) => b,
            Err(e) => {
                return Attempt {
                    unrenderable: true,
                    ..Attempt::failed(at_ms, start, format!("template: {e}"))
                }
            }
        };
        let ts = at_ms / 1000;
        let signature = sign::header(&sub.signing_keys(at_ms), webhook_id, ts, &body);
        let mut req = self
            .client
            .post(sub.url.clone())
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::USER_AGENT, USER_AGENT)
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature);
        if let Some(a) = &sub.auth {
            req = req.header(http::header::AUTHORIZATION, a.clone());
        }
        for (k, v) in &sub.headers {
            req = req.header(k.clone(), v.clone());
        }
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            Err(e) => {
                let denied = is_egress_denied(&e);
                return Attempt {
                    denied,
                    ..Attempt::failed(at_ms, start, error_text(&e))
                };
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::deliver::parse_retry_after(v, SystemTime::now()));
        let (response, read_error) = read_prefix(resp).await;
        let ok = (200..300).contains(&status);
        Attempt {
            at_ms,
            status: Some(status),
            latency_ms: start.elapsed().as_millis() as u64,
            response,
            error: if ok {
                None
            } else {
                Some(read_error.unwrap_or_else(|| format!("HTTP {status}")))
            },
            retry_after,
            denied: false,
            unrenderable: false,
        }
    }
}

/// The first `KEEP_BODY` bytes of the body; the rest is not read.
async fn read_prefix(mut resp: reqwest::Response) -> (String, Option<String>) {
    let mut buf = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                buf.extend_from_slice(&c[..c.len().min(KEEP_BODY - buf.len())]);
                if buf.len() >= KEEP_BODY {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                return (
                    String::from_utf8_lossy(&buf).into_owned(),
                    Some(error_text(&e)),
                )
            }
        }
    }
    (String::from_utf8_lossy(&buf).into_owned(), None)
}

/// The error and its causes on one line (reqwest's own message hides the cause).
fn error_text(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    if e.is_timeout() {
        s.insert_str(0, "timeout: ");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_flattening() {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        flatten(
            &mut ser,
            "",
            &json!({"type": "contact.created", "contact": {"email": "a@b.c", "tags": ["x", "y"], "n": 1, "z": null}}),
        );
        assert_eq!(
            ser.finish(),
            "type=contact.created&contact%5Bemail%5D=a%40b.c&contact%5Btags%5D%5B0%5D=x&contact%5Btags%5D%5B1%5D=y&contact%5Bn%5D=1&contact%5Bz%5D="
        );
    }
}
