//! deploy/ checked offline: every Kubernetes manifest and every rendered kustomize overlay validates
//! strictly against the Kubernetes schemas (`kubernetes-validate`, from PyPI, ships them), the rendered
//! objects keep the properties operations rely on (probes, non-root, read-only root, the mappings
//! mounted as a directory, Secret references, grace longer than the drain), the shipped config and
//! mappings load, and the Dockerfile is multi-stage, non-root and hadolint-clean.
//!
//! Tools: `.peers/venv` (scripts/setup-peers: kubernetes-validate, hadolint, PyYAML) and `kubectl
//! kustomize` (kubectl is on the project's machines). A missing tool fails the test; nothing is skipped.

mod common;
use common::repo_root;
use hookgate::config::Config;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const OVERLAYS: &[&str] = &["base", "overlays/dev", "overlays/prod"];

fn k8s_dir() -> PathBuf {
    repo_root().join("deploy/kubernetes")
}

fn venv_bin(name: &str) -> PathBuf {
    let p = repo_root().join(".peers/venv/bin").join(name);
    assert!(
        p.exists(),
        "{} missing: run scripts/setup-peers",
        p.display()
    );
    p
}

/// `kubernetes-validate --strict` over `files`: (passed, output without the INFO lines).
fn validate(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(venv_bin("kubernetes-validate"))
        .arg("--strict")
        .args(files)
        .output()
        .expect("run kubernetes-validate");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let problems: String = text
        .lines()
        .filter(|l| !l.starts_with("INFO"))
        .collect::<Vec<_>>()
        .join("\n");
    (out.status.success(), problems)
}

/// Every YAML file under `dir`, recursively.
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read deploy dir") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

/// The Kubernetes manifests: YAML files declaring an `apiVersion` and a `kind`, kustomizations aside.
fn manifests() -> Vec<PathBuf> {
    let mut all = Vec::new();
    yaml_files(&repo_root().join("deploy"), &mut all);
    all.retain(|p| {
        let text = std::fs::read_to_string(p).expect("read manifest");
        p.file_name().is_some_and(|n| n != "kustomization.yaml")
            && text.lines().any(|l| l.starts_with("apiVersion:"))
            && text.lines().any(|l| l.starts_with("kind:"))
    });
    all.sort();
    all
}

/// `kubectl kustomize DIR`, the kustomize built into kubectl.
fn render(dir: &str) -> String {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(k8s_dir().join(dir))
        .output()
        .unwrap_or_else(|e| panic!("kubectl (for `kubectl kustomize`) is needed: {e}"));
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("rendered YAML is UTF-8")
}

/// The YAML documents as JSON, parsed by PyYAML (independent of our own YAML reader).
fn documents(yaml: &str) -> Vec<Value> {
    use std::io::Write;
    let mut child = Command::new(venv_bin("python"))
        .args([
            "-c",
            "import sys, json, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("write YAML");
    let out = child.wait_with_output().expect("python output");
    assert!(out.status.success(), "PyYAML could not read the YAML");
    serde_json::from_slice(&out.stdout).expect("JSON from PyYAML")
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn named<'a>(docs: &'a [Value], kind: &str, prefix: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("no {kind} named {prefix}*"))
}

fn shipped_config() -> Config {
    let path = k8s_dir().join("base/hookgate.yaml");
    let text = std::fs::read_to_string(&path).expect("read base/hookgate.yaml");
    let cfg = Config::from_sources(&path.display().to_string(), &text, &[])
        .unwrap_or_else(|p| panic!("{p:?}"));
    cfg.validate().unwrap_or_else(|p| panic!("{p:?}"));
    cfg
}

#[test]
fn every_manifest_file_validates_strictly() {
    let files = manifests();
    let kinds: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).expect("read"))
        .collect();
    for kind in [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "StatefulSet",
    ] {
        assert!(
            kinds.contains(&format!("\nkind: {kind}\n")),
            "no {kind} manifest under deploy/"
        );
    }
    let (ok, problems) = validate(&files);
    assert!(ok, "{problems}");
}

/// The validator is not a formality: an unknown field and a wrong type are both refused.
#[test]
fn a_broken_manifest_is_refused() {
    let good = std::fs::read_to_string(k8s_dir().join("base/deployment-api.yaml")).expect("read");
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, broken) in [
        (
            "unknown-field.yaml",
            good.replace("  replicas: 2\n", "  replicas: 2\n  replica: 2\n"),
        ),
        (
            "wrong-type.yaml",
            good.replace("  replicas: 2\n", "  replicas: two\n"),
        ),
        (
            "misplaced.yaml",
            good.replace(
                "readOnlyRootFilesystem: true",
                "readOnlyRootFileSystem: true",
            ),
        ),
    ] {
        assert_ne!(broken, good, "{name}: the mutation applied");
        let p = dir.path().join(name);
        std::fs::write(&p, broken).expect("write");
        let (ok, problems) = validate(&[p]);
        assert!(!ok, "{name} passed validation");
        assert!(problems.contains(name), "{name}: {problems}");
    }
}

#[test]
fn overlays_render_to_valid_manifests_with_the_operational_properties() {
    let cfg = shipped_config();
    let admin_port: u16 = cfg
        .admin_listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("admin port");
    let listen_port: u16 = cfg
        .listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("listen port");
    let drain = (cfg.shutdown_delay + cfg.shutdown_grace).as_secs();
    let dir = tempfile::tempdir().expect("tempdir");
    for overlay in OVERLAYS {
        let yaml = render(overlay);
        let file = dir
            .path()
            .join(format!("{}.yaml", overlay.replace('/', "-")));
        std::fs::write(&file, &yaml).expect("write rendered");
        let (ok, problems) = validate(&[file]);
        assert!(ok, "{overlay}: {problems}");

        let docs = documents(&yaml);
        for kind in [
            "Service",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
            "NetworkPolicy",
            "ConfigMap",
        ] {
            assert!(!of_kind(&docs, kind).is_empty(), "{overlay}: no {kind}");
        }
        let mappings_cm = named(&docs, "ConfigMap", "hookgate-mappings");
        assert_eq!(
            mappings_cm["metadata"]["name"], "hookgate-mappings",
            "{overlay}: the mappings ConfigMap keeps its name, so it is updated in place and hot-reloaded"
        );
        assert!(mappings_cm["data"]["stripe.yaml"].is_string());
        let config_cm = named(&docs, "ConfigMap", "hookgate-config");
        assert_ne!(
            config_cm["metadata"]["name"], "hookgate-config",
            "{overlay}: the config ConfigMap is hashed, so a config change rolls the pods"
        );

        let deployments = of_kind(&docs, "Deployment");
        let roles: Vec<String> = deployments
            .iter()
            .map(|d| {
                let args = &d["spec"]["template"]["spec"]["containers"][0]["args"];
                let args: Vec<&str> = args
                    .as_array()
                    .expect("args")
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                let at = args.iter().position(|a| *a == "--role").expect("--role");
                args[at + 1].to_string()
            })
            .collect();
        assert_eq!(
            roles,
            ["api", "worker"],
            "{overlay}: api and workers scale apart"
        );
        for d in &deployments {
            let name = d["metadata"]["name"].as_str().unwrap_or("?");
            let at = format!("{overlay}: {name}");
            assert!(
                d["spec"]["replicas"].as_u64() >= Some(2),
                "{at}: 2+ replicas"
            );
            let pod = &d["spec"]["template"]["spec"];
            assert_eq!(
                pod["enableServiceLinks"], false,
                "{at}: service links would inject HOOKGATE_* env vars"
            );
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{at}");
            assert!(
                pod["terminationGracePeriodSeconds"].as_u64() > Some(drain),
                "{at}: the kubelet waits longer than shutdown_delay + shutdown_grace"
            );
            let c = &pod["containers"][0];
            assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true, "{at}");
            assert_eq!(
                c["securityContext"]["allowPrivilegeEscalation"], false,
                "{at}"
            );
            assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{at}");
            assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{at}");
            assert!(
                c["resources"]["requests"]["cpu"].is_string(),
                "{at}: HPA needs a CPU request"
            );
            assert!(c["resources"]["limits"]["memory"].is_string(), "{at}");
            let ports: Vec<u64> = c["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .filter_map(|p| p["containerPort"].as_u64())
                .collect();
            assert!(
                ports.contains(&u64::from(admin_port)),
                "{at}: the probes' admin port"
            );
            if name.starts_with("hookgate-api") {
                assert!(
                    ports.contains(&u64::from(listen_port)),
                    "{at}: the webhook port"
                );
            }
            let mounts = c["volumeMounts"].as_array().expect("mounts");
            assert!(
                mounts.iter().all(|m| m.get("subPath").is_none()),
                "{at}: no subPath (it never sees ConfigMap updates)"
            );
            let volume_of = |path: &str| {
                let m = mounts
                    .iter()
                    .find(|m| m["mountPath"] == path)
                    .unwrap_or_else(|| panic!("{at}: nothing mounted at {path}"));
                pod["volumes"]
                    .as_array()
                    .expect("volumes")
                    .iter()
                    .find(|v| v["name"] == m["name"])
                    .expect("the mount's volume")
                    .clone()
            };
            let mappings = volume_of(&cfg.mappings_dir.display().to_string());
            assert_eq!(
                mappings["configMap"]["name"], "hookgate-mappings",
                "{at}: mappings_dir is the ConfigMap directory"
            );
            let config_path = c["args"]
                .as_array()
                .expect("args")
                .iter()
                .filter_map(Value::as_str)
                .skip_while(|a| *a != "--config")
                .nth(1)
                .expect("--config");
            let config = volume_of(
                Path::new(config_path)
                    .parent()
                    .expect("dir")
                    .to_str()
                    .expect("utf-8"),
            );
            assert_eq!(
                config["configMap"]["name"], config_cm["metadata"]["name"],
                "{at}"
            );
            // Secrets are referenced, never inlined.
            let env = c["env"].as_array().expect("env");
            let token_file = env
                .iter()
                .find(|e| e["name"] == "HOOKGATE_ADMIN_TOKEN_FILE")
                .expect("HOOKGATE_ADMIN_TOKEN_FILE");
            let token_dir = Path::new(token_file["value"].as_str().expect("path"))
                .parent()
                .expect("dir")
                .to_str()
                .expect("utf-8")
                .to_string();
            assert!(
                volume_of(&token_dir)["secret"]["secretName"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("hookgate-admin")),
                "{at}"
            );
            let redis = env
                .iter()
                .find(|e| e["name"] == "HOOKGATE_REDIS_URL")
                .expect("HOOKGATE_REDIS_URL");
            assert!(
                redis["valueFrom"]["secretKeyRef"]["name"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("hookgate-redis")),
                "{at}"
            );
            assert!(
                c["envFrom"][0]["secretRef"]["name"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("hookgate-providers")),
                "{at}"
            );
            assert!(
                env.iter().all(|e| e["name"] != "HOOKGATE_ADMIN_TOKEN"),
                "{at}: the token itself is never a literal"
            );
        }
        for hpa in of_kind(&docs, "HorizontalPodAutoscaler") {
            assert!(hpa["spec"]["minReplicas"].as_u64() >= Some(2), "{overlay}");
        }
        let redis = of_kind(&docs, "StatefulSet");
        if *overlay == "overlays/dev" {
            assert_eq!(redis.len(), 1, "dev brings its own Redis");
            let args: Vec<&str> = redis[0]["spec"]["template"]["spec"]["containers"][0]["args"]
                .as_array()
                .expect("args")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let joined = args.join(" ");
            assert!(joined.contains("--appendonly yes"), "{joined}");
            assert!(joined.contains("--maxmemory-policy noeviction"), "{joined}");
            let svc = named(&docs, "Service", "hookgate-redis");
            assert_eq!(
                svc["spec"]["selector"],
                redis[0]["spec"]["selector"]["matchLabels"]
            );
            let secret = named(&docs, "Secret", "hookgate-redis");
            assert!(
                secret["data"]["url"].is_string(),
                "the dev Redis URL is generated"
            );
        } else {
            assert!(redis.is_empty(), "{overlay}: Redis is the operator's");
            assert!(
                of_kind(&docs, "Secret").is_empty(),
                "{overlay}: no secret values in git"
            );
        }
    }
}

#[test]
fn shipped_config_and_mappings_load() {
    let cfg = shipped_config();
    assert_eq!(cfg.log.format, hookgate::config::LogFormat::Json);
    // scripts/dev's config still loads too.
    let dev = std::fs::read_to_string(repo_root().join("deploy/hookgate.dev.yaml"))
        .expect("read dev config");
    Config::from_sources("hookgate.dev.yaml", &dev, &[])
        .and_then(|c| c.validate())
        .unwrap_or_else(|p| panic!("{p:?}"));
    // It lists every key, as the README says (an optional one with no default, in a comment).
    let listed: serde_json::Value = serde_saphyr::from_str(&dev).expect("dev config as YAML");
    let defaults = serde_json::to_value(Config::default()).expect("defaults as JSON");
    for (key, default) in defaults.as_object().expect("an object") {
        assert!(
            listed.get(key).is_some() || (default.is_null() && dev.contains(&format!("# {key}:"))),
            "deploy/hookgate.dev.yaml does not list `{key}`"
        );
    }

    // The cluster's stripe.yaml is the project's rules, without the tests (their payload files stay here).
    let project = std::fs::read_to_string(repo_root().join("mappings/stripe.yaml")).expect("read");
    let rules = &project[..project.find("\ntests:").expect("a tests section") + 1];
    let shipped =
        std::fs::read_to_string(k8s_dir().join("base/mappings/stripe.yaml")).expect("read");
    assert!(
        shipped.starts_with(rules),
        "deploy/kubernetes/base/mappings/stripe.yaml drifted from mappings/stripe.yaml"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .arg("check")
        .arg(k8s_dir().join("base/mappings"))
        .env("STRIPE_WEBHOOK_SECRET", "whsec_check")
        .output()
        .expect("run hookgate check");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Every file in the mappings directory is in the ConfigMap, and nothing else.
    let kustomization =
        std::fs::read_to_string(k8s_dir().join("base/kustomization.yaml")).expect("read");
    for e in std::fs::read_dir(k8s_dir().join("base/mappings")).expect("read dir") {
        let name = e.expect("entry").file_name().to_string_lossy().into_owned();
        assert!(
            kustomization.contains(&format!("- mappings/{name}\n")),
            "{name} is not in the ConfigMap"
        );
    }
}

#[test]
fn dockerfile_is_multi_stage_non_root_and_lint_clean() {
    let path = repo_root().join("deploy/Dockerfile");
    let text = std::fs::read_to_string(&path).expect("read deploy/Dockerfile");
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(froms[0].contains(" AS build"), "{froms:?}");
    let user = text
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER line");
    let uid: u32 = user[5..]
        .split(':')
        .next()
        .and_then(|u| u.trim().parse().ok())
        .expect("a numeric uid (runAsNonRoot needs one)");
    assert_ne!(uid, 0);
    let dockerignore =
        std::fs::read_to_string(repo_root().join(".dockerignore")).expect("read .dockerignore");
    assert_eq!(
        dockerignore.lines().find(|l| !l.starts_with('#')),
        Some("*"),
        "the context is an allowlist"
    );
    let out = Command::new(venv_bin("hadolint"))
        .arg(&path)
        .output()
        .expect("run hadolint");
    assert!(
        out.status.success(),
        "hadolint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
