//! `rediss://`: the gateway stores webhooks in a redis-server that only speaks TLS on the port it is given,
//! trusting a private CA from `redis.tls_ca_file`, and with a client certificate when Redis requires one.
//! Without the CA, the certificate is refused and webhooks get 503: verification is on. The certificates
//! are made by the `openssl` command line for each run.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SHOP: &str = "source: shop\nallow_ips: [127.0.0.0/8]\nrules: []\n";

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn make() -> Self {
        let dir = tempfile::tempdir().expect("pki tempdir");
        let d = dir.path();
        openssl(d, "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=hookgate-test-CA");
        for (name, cn, ext) in [
            ("server", "127.0.0.1", "subjectAltName=IP:127.0.0.1"),
            ("client", "hookgate", "extendedKeyUsage=clientAuth"),
        ] {
            std::fs::write(d.join(format!("{name}.ext")), format!("{ext}\n")).expect("write ext");
            openssl(
                d,
                &format!(
                    "req -newkey rsa:2048 -nodes -keyout {name}.key -out {name}.csr -subj /CN={cn}"
                ),
            );
            openssl(d, &format!("x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {name}.pem -days 2 -extfile {name}.ext"));
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Run `openssl` with these whitespace-separated arguments in `dir`; panics with its error output.
fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .expect("openssl must be installed");
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A redis-server with a TLS port (what the gateway gets) and a plain one on loopback (what the test reads
/// the stream through).
struct TlsRedis {
    tls_port: u16,
    plain_port: u16,
    ca: Option<PathBuf>,
    client: Option<(PathBuf, PathBuf)>,
    child: Child,
}

impl TlsRedis {
    fn start(pki: &Pki, require_client_cert: bool) -> Self {
        let (tls_port, plain_port) = (free_port(), free_port());
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args([
                "--port",
                &plain_port.to_string(),
                "--tls-port",
                &tls_port.to_string(),
            ])
            .arg("--tls-cert-file")
            .arg(pki.path("server.pem"))
            .arg("--tls-key-file")
            .arg(pki.path("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(pki.path("ca.pem"))
            .args([
                "--tls-auth-clients",
                if require_client_cert { "yes" } else { "no" },
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        let r = TlsRedis {
            tls_port,
            plain_port,
            ca: None,
            client: None,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.plain().is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server with TLS did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn plain(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.plain_port))?.get_connection()
    }

    fn stored(&self) -> u64 {
        let mut c = self.plain().expect("plain connection");
        redis::cmd("XLEN")
            .arg("hookgate:inbound")
            .query(&mut c)
            .expect("XLEN")
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RedisTarget for TlsRedis {
    fn point(&self, cfg: &mut hookgate::config::Config) {
        cfg.redis_url = format!("rediss://127.0.0.1:{}", self.tls_port);
        cfg.redis.tls_ca_file = self.ca.clone();
        cfg.redis.tls_client_cert_file = self.client.as_ref().map(|c| c.0.clone());
        cfg.redis.tls_client_key_file = self.client.as_ref().map(|c| c.1.clone());
    }
}

async fn post(gw: &Gateway) -> u16 {
    post_json(gw, "shop", r#"{"email":"tls@example.org"}"#)
        .await
        .0
}

fn with_files(mut r: TlsRedis, ca: Option<&Path>, client: Option<(&Path, &Path)>) -> TlsRedis {
    r.ca = ca.map(Path::to_path_buf);
    r.client = client.map(|(c, k)| (c.to_path_buf(), k.to_path_buf()));
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn rediss_with_a_private_ca_stores_and_an_unknown_ca_is_refused() {
    let pki = Pki::make();
    let redis = with_files(
        TlsRedis::start(&pki, false),
        Some(&pki.path("ca.pem")),
        None,
    );
    let gw = Gateway::start(&redis, &[("shop.yaml", SHOP)], "").await;
    assert_eq!(post(&gw).await, 202, "stored over TLS");
    assert_eq!(redis.stored(), 1);
    let _ = gw.stop().await;

    // The same server, trusting only the public roots: its certificate is refused, nothing is stored.
    let untrusted = with_files(TlsRedis::start(&pki, false), None, None);
    let gw = Gateway::start(&untrusted, &[("shop.yaml", SHOP)], "").await;
    assert_eq!(post(&gw).await, 503, "an unverifiable Redis is unavailable");
    assert_eq!(untrusted.stored(), 0);
    let _ = gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_that_requires_client_certificates_gets_ours() {
    let pki = Pki::make();
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    let redis = with_files(
        TlsRedis::start(&pki, true),
        Some(&pki.path("ca.pem")),
        Some((&cert, &key)),
    );
    let gw = Gateway::start(&redis, &[("shop.yaml", SHOP)], "").await;
    assert_eq!(post(&gw).await, 202, "stored with a client certificate");
    assert_eq!(redis.stored(), 1);
    let _ = gw.stop().await;

    let without = with_files(TlsRedis::start(&pki, true), Some(&pki.path("ca.pem")), None);
    let gw = Gateway::start(&without, &[("shop.yaml", SHOP)], "").await;
    assert_eq!(post(&gw).await, 503, "no client certificate, no connection");
    assert_eq!(without.stored(), 0);
    let _ = gw.stop().await;
}
