//! The egress policy against real connections: raw HTTP servers on loopback that count every TCP connection
//! they accept, so "refused" means "nothing reached the server", not just "an error came back".

use hookgate::config::Egress;
use hookgate::egress::{egress_denied, is_egress_denied, EgressPolicy, USER_AGENT};
use reqwest::Url;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A loopback HTTP/1.1 server answering every request with `response`; it records the connections it
/// accepted and the bytes of each request.
struct Server {
    port: u16,
    ip: &'static str,
    accepted: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Server {
    async fn start(ip: &'static str, response: String) -> Self {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind loopback");
        let port = listener.local_addr().expect("local addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (acc, reqs) = (accepted.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                acc.fetch_add(1, Ordering::SeqCst);
                let reqs = reqs.clone();
                let response = response.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        if complete(&buf) {
                            break;
                        }
                    }
                    if !buf.is_empty() {
                        reqs.lock()
                            .expect("lock")
                            .push(String::from_utf8_lossy(&buf).into_owned());
                        let _ = sock.write_all(response.as_bytes()).await;
                    }
                    let _ = sock.shutdown().await;
                });
            }
        });
        Self {
            port,
            ip,
            accepted,
            requests,
        }
    }

    async fn ok(ip: &'static str) -> Self {
        Self::start(ip, answer("204 No Content", "")).await
    }

    fn url(&self, host: &str, path: &str) -> Url {
        Url::parse(&format!("http://{host}:{}{path}", self.port)).expect("url")
    }

    fn own_url(&self) -> Url {
        self.url(self.ip, "/hook")
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}

fn answer(status: &str, extra_headers: &str) -> String {
    format!("HTTP/1.1 {status}\r\n{extra_headers}content-length: 0\r\nconnection: close\r\n\r\n")
}

/// Whether `buf` holds a whole request (head, and the body its content-length announces).
fn complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    buf.len() >= end + 4 + len
}

fn policy(allow: &[&str], deny: &[&str], allow_http: bool) -> EgressPolicy {
    let nets = |v: &[&str]| v.iter().map(|s| s.parse().expect("cidr")).collect();
    EgressPolicy::new(&Egress {
        allow: nets(allow),
        deny: nets(deny),
        allow_http,
    })
    .expect("policy")
}

fn client(p: &EgressPolicy) -> reqwest::Client {
    p.client(Duration::from_secs(2), Duration::from_secs(5))
        .expect("client")
}

/// Lets a connection that was (wrongly) started reach the server's accept loop before we count.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

#[test]
fn whatwg_parser_normalises_numeric_hosts() {
    for (raw, want) in [
        ("https://0x7f.1/", "127.0.0.1"),
        ("https://2130706433/", "127.0.0.1"),
        ("https://0177.0.0.01/", "127.0.0.1"),
        ("https://[::ffff:127.0.0.1]/", "[::ffff:7f00:1]"),
        ("https://0xA9.0xFE.0xA9.0xFE/", "169.254.169.254"),
    ] {
        let url = Url::parse(raw).expect("parses");
        assert_eq!(url.host_str(), Some(want), "{raw}");
    }
}

#[test]
fn default_policy_refuses_forbidden_literals_in_urls() {
    let p = policy(&[], &[], false);
    for (raw, reason) in [
        ("https://10.0.0.1/hook", "private"),
        ("https://169.254.169.254/latest/meta-data/", "link_local"),
        ("https://[::ffff:127.0.0.1]/hook", "loopback"),
        ("https://0x7f.1/hook", "loopback"),
        ("https://2130706433/hook", "loopback"),
        ("https://[64:ff9b::a9fe:a9fe]/", "link_local"),
        ("https://[2002:a00:1::1]/", "private"),
        ("https://[fd00::1]/", "unique_local"),
        ("https://100.100.100.200/", "shared"),
    ] {
        let url = Url::parse(raw).expect("url");
        let err = p.check_url(&url).expect_err(raw);
        assert_eq!(err.reason, reason, "{raw}: {err}");
        assert!(err.to_string().starts_with("egress denied: "), "{err}");
    }
    let ok = Url::parse("https://hooks.example.com/x").expect("url");
    assert_eq!(p.check_url(&ok), Ok(()));
}

#[test]
fn http_needs_allow_http() {
    let url = Url::parse("http://hooks.example.com/x").expect("url");
    let err = policy(&[], &[], false).check_url(&url).expect_err("http");
    assert_eq!(err.reason, "scheme");
    assert_eq!(policy(&[], &[], true).check_url(&url), Ok(()));
}

#[tokio::test]
async fn http_is_not_sent_without_allow_http() {
    let server = Server::ok("127.0.0.1").await;
    let p = policy(&["127.0.0.0/8"], &[], false);
    assert!(p.check_url(&server.own_url()).is_err());
    // Even a caller that skipped check_url: the client itself is HTTPS-only.
    let err = client(&p)
        .post(server.own_url())
        .send()
        .await
        .expect_err("https only");
    assert!(!err.is_status(), "{err}");
    settle().await;
    assert_eq!(server.accepted(), 0);
}

#[tokio::test]
async fn host_name_resolving_to_loopback_is_refused_without_connecting() {
    let server = Server::ok("127.0.0.1").await;
    let p = policy(&[], &[], true);
    let url = server.url("localhost", "/hook");
    assert_eq!(
        p.check_url(&url),
        Ok(()),
        "a name is judged on what it resolves to"
    );
    let err = client(&p)
        .post(url.clone())
        .body("{}")
        .send()
        .await
        .expect_err("must be refused");
    assert!(is_egress_denied(&err), "{err:?}");
    let denied = egress_denied(&err).expect("carries EgressDenied");
    assert_eq!(denied.reason, "loopback");
    assert!(denied.what.contains("localhost"), "{denied}");
    let pre = p.vet_url_resolved(&url).await.expect_err("resolved check");
    assert_eq!(pre.reason, "loopback");
    settle().await;
    assert_eq!(server.accepted(), 0, "the server must see no connection");
}

#[tokio::test]
async fn ip_literal_that_skipped_check_url_is_stopped_before_the_request() {
    let server = Server::ok("127.0.0.1").await;
    let p = policy(&[], &[], true);
    for host in ["127.0.0.1", "0x7f.1", "2130706433"] {
        let url = server.url(host, "/hook");
        assert_eq!(p.check_url(&url).map_err(|e| e.reason), Err("loopback"));
        // The backstop: the connector checks the peer before a byte of the request is written.
        let err = client(&p)
            .post(url)
            .body("secret payload")
            .send()
            .await
            .expect_err("refused at connect");
        assert!(is_egress_denied(&err), "{host}: {err:?}");
    }
    settle().await;
    assert!(
        server.requests().is_empty(),
        "no request reached the server: {:?}",
        server.requests()
    );
}

#[tokio::test]
async fn allowed_loopback_is_reached_by_address_and_by_name() {
    let server = Server::ok("127.0.0.1").await;
    let p = policy(&["127.0.0.0/8"], &[], true);
    for host in ["127.0.0.1", "localhost"] {
        let url = server.url(host, "/hook");
        p.check_url(&url).expect("allowed");
        p.vet_url_resolved(&url).await.expect("allowed");
        let resp = client(&p)
            .post(url)
            .body(r#"{"type":"contact.created"}"#)
            .send()
            .await
            .expect("delivered");
        assert_eq!(resp.status(), 204, "{host}");
    }
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert!(r.starts_with("POST /hook HTTP/1.1\r\n"), "{r}");
        assert!(
            r.to_ascii_lowercase()
                .contains(&format!("user-agent: {USER_AGENT}\r\n").to_ascii_lowercase()),
            "{r}"
        );
        assert!(r.ends_with(r#"{"type":"contact.created"}"#), "{r}");
    }
}

#[tokio::test]
async fn redirect_to_a_forbidden_address_is_not_followed() {
    // 127.0.0.2 is loopback too on Linux; the policy opens 127.0.0.1 only.
    let forbidden = Server::ok("127.0.0.2").await;
    let target = format!("http://127.0.0.2:{}/stolen", forbidden.port);
    let allowed = Server::start(
        "127.0.0.1",
        answer("307 Temporary Redirect", &format!("location: {target}\r\n")),
    )
    .await;
    let p = policy(&["127.0.0.1/32"], &[], true);
    let resp = client(&p)
        .post(allowed.own_url())
        .body("payload")
        .send()
        .await
        .expect("the 307 itself is the answer");
    assert_eq!(resp.status(), 307);
    assert_eq!(allowed.requests().len(), 1);
    // And the forbidden address is forbidden when asked directly.
    let direct = Url::parse(&target).expect("url");
    assert_eq!(p.check_url(&direct).map_err(|e| e.reason), Err("loopback"));
    settle().await;
    assert_eq!(
        forbidden.accepted(),
        0,
        "the redirect target saw no connection"
    );
}

#[tokio::test]
async fn deny_beats_allow_at_connect_time() {
    let server = Server::ok("127.0.0.2").await;
    let p = policy(&["127.0.0.0/8"], &["127.0.0.2/32"], true);
    let url = server.own_url();
    assert_eq!(p.check_url(&url).map_err(|e| e.reason), Err("deny_list"));
    let err = client(&p).post(url).send().await.expect_err("denied");
    assert_eq!(egress_denied(&err).map(|d| d.reason), Some("deny_list"));
    settle().await;
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn an_ordinary_connect_failure_is_not_egress_denied() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let p = policy(&["127.0.0.0/8"], &[], true);
    let err = client(&p)
        .post(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .expect_err("nobody listens");
    assert!(err.is_connect(), "{err:?}");
    assert!(!is_egress_denied(&err), "{err:?}");
}

#[tokio::test]
async fn denials_are_counted() {
    let handle = hookgate::telemetry::metrics();
    let count = |text: &str, reason: &str| -> u64 {
        let key = format!("hookgate_egress_denied_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let before = handle.render();
    let p = policy(&[], &[], true);
    let url = Url::parse("https://169.254.169.254/").expect("url");
    assert!(p.check_url(&url).is_err());
    let server = Server::ok("127.0.0.1").await;
    let err = client(&p)
        .get(server.url("localhost", "/"))
        .send()
        .await
        .expect_err("denied");
    assert!(is_egress_denied(&err));
    let after = handle.render();
    assert!(
        count(&after, "link_local") > count(&before, "link_local"),
        "{after}"
    );
    assert!(
        count(&after, "loopback") > count(&before, "loopback"),
        "{after}"
    );
    // Vetting a subscription's URL refuses the same addresses but sends nothing, so it is not counted:
    // the metric counts refused sends. No other test here touches the benchmarking range.
    let bench = Url::parse("https://198.18.0.1/").expect("url");
    let before = count(&handle.render(), "benchmarking");
    for _ in 0..3 {
        assert_eq!(p.vet_url(&bench).map_err(|e| e.reason), Err("benchmarking"));
        assert_eq!(
            p.vet_url_resolved(&bench).await.map_err(|e| e.reason),
            Err("benchmarking")
        );
    }
    assert_eq!(count(&handle.render(), "benchmarking"), before);
    assert!(p.check_url(&bench).is_err());
    assert_eq!(count(&handle.render(), "benchmarking"), before + 1);
}

/// Run by `proxy_from_the_environment_is_ignored` in a child process with proxy variables set (setting them
/// here would race with the other tests' threads).
#[tokio::test]
#[ignore = "run by proxy_from_the_environment_is_ignored"]
async fn proxy_env_child() {
    let target: Url = std::env::var("EGRESS_TEST_TARGET")
        .expect("target")
        .parse()
        .expect("url");
    let p = policy(&["127.0.0.1/32"], &[], true);
    let resp = client(&p).post(target).send().await.expect("sent");
    assert_eq!(resp.status(), 204);
}

#[tokio::test]
async fn proxy_from_the_environment_is_ignored() {
    let target = Server::ok("127.0.0.1").await;
    let proxy = Server::start("127.0.0.1", answer("502 Bad Gateway", "")).await;
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    let exe = std::env::current_exe().expect("test binary");
    let out = tokio::process::Command::new(exe)
        .args([
            "--exact",
            "proxy_env_child",
            "--ignored",
            "--test-threads=1",
        ])
        .env("EGRESS_TEST_TARGET", target.own_url().as_str())
        .env("HTTP_PROXY", &proxy_url)
        .env("http_proxy", &proxy_url)
        .env("HTTPS_PROXY", &proxy_url)
        .env("ALL_PROXY", &proxy_url)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .await
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(target.requests().len(), 1, "sent straight to the target");
    assert_eq!(proxy.accepted(), 0, "the proxy saw nothing");
}

#[test]
fn docs_list_every_default_range() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/egress.md"))
        .expect("docs/egress.md");
    for r in hookgate::ip_policy::NOT_GLOBAL {
        let row = format!("| `{}` | `{}` |", r.net, r.label);
        assert!(doc.contains(&row), "docs/egress.md lacks the row {row}");
    }
}
