//! A real HTTP subscriber on 127.0.0.1 for the outbound tests: records every request with its raw body
//! (signatures are over the exact bytes), answers from a plan of statuses, optionally slowly.

use super::poll_until;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    /// Lowercase names.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub status: u16,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// A planned answer: status, an extra header, body.
type Answer = (u16, Option<(String, String)>, String);

#[derive(Default)]
struct State {
    got: Mutex<Vec<Received>>,
    /// (status, extra header, body) for the next requests, then `status`.
    plan: Mutex<VecDeque<Answer>>,
    status: AtomicU16,
    delay_ms: AtomicU64,
}

pub struct Subscriber {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    pub async fn start_on(port: u16) -> Self {
        use axum::extract::{Request, State as S};
        let state = Arc::new(State::default());
        state.status.store(200, Ordering::Relaxed);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind subscriber");
        let addr = listener.local_addr().expect("addr");
        let handler = |S(st): S<Arc<State>>, req: Request| async move {
            let (parts, body) = req.into_parts();
            let delay = st.delay_ms.load(Ordering::Relaxed);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let body = axum::body::to_bytes(body, 1 << 20)
                .await
                .unwrap_or_default()
                .to_vec();
            let (status, extra, answer) = st
                .plan
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| (st.status.load(Ordering::Relaxed), None, "ok".into()));
            st.got.lock().unwrap().push(Received {
                path: parts.uri.path().to_string(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
                body,
                status,
                at: Instant::now(),
            });
            let mut resp = axum::response::Response::new(axum::body::Body::from(answer));
            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
            if let Some((k, v)) = extra {
                resp.headers_mut().insert(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(&v).unwrap(),
                );
            }
            resp
        };
        let app = axum::Router::new()
            .fallback(handler)
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answer the next requests with these statuses (body `no`), in order.
    pub fn plan(&self, statuses: &[u16]) {
        let mut p = self.state.plan.lock().unwrap();
        for s in statuses {
            p.push_back((*s, None, "no".into()));
        }
    }

    /// Answer the next request with this status, header and body.
    pub fn plan_one(&self, status: u16, header: Option<(&str, &str)>, body: &str) {
        self.state.plan.lock().unwrap().push_back((
            status,
            header.map(|(k, v)| (k.to_string(), v.to_string())),
            body.to_string(),
        ));
    }

    pub fn set_status(&self, s: u16) {
        self.state.status.store(s, Ordering::Relaxed);
    }

    pub fn set_delay(&self, d: Duration) {
        self.state
            .delay_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.got.lock().unwrap().clone()
    }

    /// Look at the requests so far without copying them (for counting thousands often).
    pub fn with_received<R>(&self, f: impl FnOnce(&[Received]) -> R) -> R {
        f(&self.state.got.lock().unwrap())
    }

    pub fn delivered(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }

    /// Wait until `n` requests were answered 2xx; false after `secs`.
    pub async fn wait_delivered(&self, n: usize, secs: u64) -> bool {
        poll_until(secs, || self.delivered().len() >= n).await
    }

    pub async fn wait_received(&self, n: usize, secs: u64) -> bool {
        poll_until(secs, || self.received().len() >= n).await
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Verify received requests with the official `standardwebhooks` Python library
/// (`tests/peers/verify_standardwebhooks.py`); one verdict per request: None when valid, else the error.
pub fn verify_with_standardwebhooks(secret: &str, got: &[Received]) -> Vec<Option<String>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let python = super::repo_root().join(".peers/venv/bin/python");
    assert!(
        python.exists(),
        "peer libraries missing: run scripts/setup-peers"
    );
    let reqs: Vec<serde_json::Value> = got
        .iter()
        .map(|r| {
            serde_json::json!({
                "secret": secret,
                "body": String::from_utf8_lossy(&r.body),
                "headers": {
                    "webhook-id": r.header("webhook-id"),
                    "webhook-timestamp": r.header("webhook-timestamp"),
                    "webhook-signature": r.header("webhook-signature"),
                },
            })
        })
        .collect();
    let mut child = Command::new(python)
        .arg(super::repo_root().join("tests/peers/verify_standardwebhooks.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run verify_standardwebhooks.py");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(serde_json::Value::Array(reqs).to_string().as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success(), "verify_standardwebhooks.py failed");
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    v.into_iter()
        .map(|r| r["error"].as_str().map(str::to_string))
        .collect()
}
