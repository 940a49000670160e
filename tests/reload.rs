//! Hot reload of mappings_dir: new files are picked up without a restart, a bad edit is rejected with
//! `file:line:col` problems while the last good set keeps serving, and a Kubernetes ConfigMap's atomic
//! `..data` symlink swap is seen. Also the admin API's token guard.

mod common;
use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

const A: &str = "source: a\nallow_ips: [127.0.0.0/8]\n";
const B: &str = "source: b\nallow_ips: [127.0.0.0/8]\ndedup: { id: $.id }\n";

/// Each post is a new event (its own id), so a source with dedup never answers "duplicate".
async fn status(url: &str) -> u16 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    client()
        .post(url)
        .header("content-type", "application/json")
        .body(format!("{{\"id\":\"e{n}\"}}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Wait up to `secs` for `url` to answer `want`.
async fn eventually(url: &str, want: u16, secs: u64) -> bool {
    for _ in 0..secs * 20 {
        if status(url).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn admin_get(gw: &Gateway, path: &str) -> Value {
    client()
        .get(gw.admin_url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn watched_directory_reloads_and_bad_edits_keep_the_last_good_set() {
    let redis = Redis::start();
    // polling effectively off: changes must be seen through directory events
    let gw = Gateway::start(&redis, &[("a.yaml", A)], "mappings_poll: 1h\n").await;
    let dir = gw.mappings_dir().to_path_buf();
    assert_eq!(status(&gw.url("b")).await, 404);

    std::fs::write(dir.join("b.yaml"), B).unwrap();
    assert!(
        eventually(&gw.url("b"), 202, 5).await,
        "new source served without a restart"
    );
    let listed = admin_get(&gw, "/v1/sources").await;
    let b = listed["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "b")
        .expect("b listed")
        .clone();
    assert_eq!(b["sha256"], hex::encode(Sha256::digest(B.as_bytes())));
    assert!(b["loaded_at"].as_str().unwrap().ends_with('Z'));
    let a_loaded = listed["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "a")
        .unwrap()["loaded_at"]
        .clone();

    // a broken edit: b loses its head's closing brace; a gains an unknown key
    std::fs::write(
        dir.join("b.yaml"),
        "source: b\nallow_ips: [127.0.0.0/8]\ndedup: { id: $.[[?id }\n",
    )
    .unwrap();
    std::fs::write(dir.join("a.yaml"), format!("{A}alow_ips: []\n")).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        status(&gw.url("b")).await,
        202,
        "the last good set keeps serving"
    );
    let r = client()
        .post(gw.admin_url("/v1/mappings/reload"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let problems: Vec<String> = r.json::<Value>().await.unwrap()["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert!(
        problems.iter().any(|p| p.contains("b.yaml:3:")),
        "every file's problems, located: {problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("a.yaml:3:")),
        "{problems:?}"
    );
    assert_eq!(
        status(&gw.url("b")).await,
        202,
        "still the last good set after the forced reload"
    );

    // fixed: served again, and a's load time survived because its content is back to what it was
    std::fs::write(dir.join("b.yaml"), B.replace("127.0.0.0/8", "10.0.0.0/8")).unwrap();
    std::fs::write(dir.join("a.yaml"), A).unwrap();
    assert!(
        eventually(&gw.url("b"), 403, 5).await,
        "the fixed file is applied"
    );
    let listed = admin_get(&gw, "/v1/sources").await;
    let a = listed["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "a")
        .unwrap()
        .clone();
    assert_eq!(
        a["loaded_at"], a_loaded,
        "unchanged content keeps its load time"
    );

    // a removed file stops being served
    std::fs::remove_file(dir.join("b.yaml")).unwrap();
    assert!(eventually(&gw.url("b"), 404, 5).await);

    // A link that lost its target is a problem, not a removal: a keeps serving.
    let a_text = std::fs::read_to_string(dir.join("a.yaml")).unwrap();
    std::fs::write(dir.join("..a_real.yaml"), &a_text).unwrap();
    std::fs::remove_file(dir.join("a.yaml")).unwrap();
    std::os::unix::fs::symlink(dir.join("..a_real.yaml"), dir.join("a.yaml")).unwrap();
    let (s, _) = admin_reload(&gw).await;
    assert_eq!(s, 200, "a symlink to a mapping file is one");
    std::fs::remove_file(dir.join("..a_real.yaml")).unwrap();
    refused_while_a_serves(&gw, &["a.yaml", "cannot read"]).await;
    // Every file gone (a mount caught mid-update, a mistake): the sources keep serving.
    std::fs::remove_file(dir.join("a.yaml")).unwrap();
    refused_while_a_serves(&gw, &["no mapping files", "1 source(s)"]).await;
}

/// A forced reload is refused with a problem naming all of `needles`, and source `a` keeps serving.
async fn refused_while_a_serves(gw: &Gateway, needles: &[&str]) {
    let (s, problems) = admin_reload(gw).await;
    assert_eq!(s, 422, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| needles.iter().all(|n| p.contains(n))),
        "{needles:?} in {problems:?}"
    );
    assert_eq!(
        status(&gw.url("a")).await,
        202,
        "the last good set keeps serving"
    );
}

/// `POST /v1/mappings/reload`: the status and, for a 422, every problem.
async fn admin_reload(gw: &Gateway) -> (u16, Vec<String>) {
    let r = client()
        .post(gw.admin_url("/v1/mappings/reload"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    let problems = body["problems"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    (status, problems)
}

/// Lay out `dir` the way the kubelet mounts a ConfigMap: `..data -> ..<ts>/`, each key a symlink
/// `name -> ..data/name`; an update writes a new `..<ts>` directory and renames `..data_tmp` over `..data`.
fn configmap_publish(dir: &Path, version: &str, files: &[(&str, &str)]) {
    let ts = dir.join(format!("..{version}"));
    std::fs::create_dir(&ts).unwrap();
    for (name, text) in files {
        std::fs::write(ts.join(name), text).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for (name, _) in files {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn configmap_symlink_swap_is_picked_up() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[], "mappings_poll: 1h\n").await;
    let dir = gw.mappings_dir().to_path_buf();
    configmap_publish(
        &dir,
        "2026_11_23_v1",
        &[("a.yaml", &A.replace("127.0.0.0/8", "10.0.0.0/8"))],
    );
    assert!(
        eventually(&gw.url("a"), 403, 5).await,
        "first ConfigMap version loaded"
    );
    configmap_publish(&dir, "2026_11_23_v2", &[("a.yaml", A)]);
    assert!(
        eventually(&gw.url("a"), 202, 5).await,
        "the ..data swap is seen"
    );
    let listed = admin_get(&gw, "/v1/sources").await;
    assert_eq!(
        listed["sources"][0]["sha256"],
        hex::encode(Sha256::digest(A.as_bytes()))
    );
}

/// A file rewritten over and over in the directory (a status file, a log) does not hold reloads off:
/// waiting for quiet is bounded, and a new mapping file is served within seconds.
#[tokio::test(flavor = "multi_thread")]
async fn a_noisy_directory_does_not_starve_reloads() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[("a.yaml", A)], "mappings_poll: 1h\n").await;
    let dir = gw.mappings_dir().to_path_buf();
    let noise = dir.join("status.txt");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                std::fs::write(&noise, n.to_string()).expect("write noise");
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(dir.join("b.yaml"), B).expect("write b.yaml");
    let served = eventually(&gw.url("b"), 202, 8).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().expect("noise writer");
    assert!(served, "b.yaml served while the directory kept changing");
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_needs_the_token() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[("a.yaml", A)], "").await;
    let c = client();
    let url = gw.admin_url("/v1/sources");
    assert_eq!(c.get(&url).send().await.unwrap().status().as_u16(), 401);
    assert_eq!(
        c.get(&url)
            .bearer_auth("not-the-token")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        c.get(&url)
            .bearer_auth(format!("{ADMIN_TOKEN}x"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        c.get(&url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    // health, readiness and metrics stay open
    let r = c
        .get(&url)
        .header("authorization", format!("bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "the scheme is case-insensitive");
    // What no route serves is answered in the same JSON as everything else.
    let r = c
        .get(gw.admin_url("/v1/nope"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "not_found");
    let r = c
        .delete(gw.admin_url("/v1/sources"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let allow = r
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_string());
    assert!(
        allow.as_deref().is_some_and(|a| a.contains("GET")),
        "{allow:?}"
    );
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "method_not_allowed"
    );
    // Without the token, nothing under /v1 says which routes or methods exist: the token comes first.
    for (method, path) in [
        (reqwest::Method::DELETE, "/v1/sources"),
        (reqwest::Method::GET, "/v1/nope"),
        (reqwest::Method::GET, "/v1"),
        (reqwest::Method::GET, "/v1/sources"),
    ] {
        let r = c
            .request(method.clone(), gw.admin_url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{method} {path}");
    }
    // The probes and the metrics stay open; another unknown path is a plain 404.
    for (path, status) in [("/healthz", 200), ("/metrics", 200), ("/nope", 404)] {
        let r = c.get(gw.admin_url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
    }
    for pair in [
        [format!("Bearer {ADMIN_TOKEN}"), "Bearer wrong".to_string()],
        ["Bearer wrong".to_string(), format!("Bearer {ADMIN_TOKEN}")],
    ] {
        let r = c
            .get(&url)
            .header("authorization", &pair[0])
            .header("authorization", &pair[1])
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            401,
            "two Authorization fields: {pair:?}"
        );
    }
    let r = c
        .post(gw.admin_url("/v1/mappings/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "reload needs the token too");
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            c.get(gw.admin_url(open))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
            200,
            "{open}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_is_closed_without_a_configured_token() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis, &[("a.yaml", A)], "# no admin token\n").await;
    let c = client();
    for (method, path) in [("GET", "/v1/sources"), ("POST", "/v1/mappings/reload")] {
        let r = c
            .request(method.parse().unwrap(), gw.admin_url(path))
            .bearer_auth("anything")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "{method} {path}");
    }
    assert_eq!(
        c.get(gw.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

/// A secret file a source is verified with (a mounted Kubernetes Secret) is read again when it changes,
/// though no mapping file did: once the kubelet-style swap is seen (at the next poll), the new token is
/// accepted, the old one refused, and the source's `loaded_at` moves. A secret file emptied mid-rotation
/// makes a rejected set, and the last good secret keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_secret_file_is_read_again_without_a_restart() {
    let redis = Redis::start();
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("token");
    std::fs::write(&secret, "old-token\n").unwrap();
    let file = format!(
        "source: t\nverify: {{ preset: token, header: X-Token, secret: \"${{file:{}}}\" }}\n",
        secret.display()
    );
    let gw = Gateway::start(&redis, &[("t.yaml", &file)], "mappings_poll: 1s\n").await;
    let url = gw.url("t");
    let with = |token: &'static str| {
        let url = url.clone();
        async move {
            client()
                .post(url)
                .header("content-type", "application/json")
                .header("x-token", token)
                .body("{}")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(with("old-token").await, 202);
    assert_eq!(with("new-token").await, 401);
    let loaded_at = |v: Value| v["sources"][0]["loaded_at"].as_str().map(str::to_owned);
    let first = loaded_at(admin_get(&gw, "/v1/sources").await);
    assert!(first.is_some());

    // Replaced the way the kubelet does it: a new file renamed over the old.
    let swap = |text: &str| {
        let tmp = secrets.path().join("..token_tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &secret).unwrap();
    };
    swap("new-token\n");
    let mut rotated = false;
    for _ in 0..100 {
        if with("new-token").await == 202 {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rotated, "the new secret is served within 10 s");
    assert_eq!(with("old-token").await, 401, "the old one is not");
    let second = loaded_at(admin_get(&gw, "/v1/sources").await);
    assert!(second.is_some() && second != first, "{first:?} {second:?}");

    // Emptied: the set is rejected at each poll, and the last good secret keeps serving.
    swap("");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(with("new-token").await, 202);
    assert_eq!(loaded_at(admin_get(&gw, "/v1/sources").await), second);
    let (status, problems) = admin_reload(&gw).await;
    assert_eq!(status, 422);
    assert!(
        problems.iter().any(|p| p.contains("is empty")),
        "{problems:?}"
    );
}
