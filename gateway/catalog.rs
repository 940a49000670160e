//! The set of sources being served: the mapping files compiled into inbound heads and mappings, loaded
//! all-or-nothing so a bad edit never replaces a good set, and reloaded when the directory changes
//! (a Kubernetes ConfigMap swaps a `..data` symlink: we watch the directory, debounce, compare hashes).

use crate::inbound::source::HeadProblem;
use crate::inbound::{InboundSource, SourceRegistry};
use crate::mapping::{self, Diagnostic, Mapping};
use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// One source as loaded from its file.
pub struct LoadedSource {
    pub name: String,
    pub file: PathBuf,
    /// SHA-256 of the file's text.
    pub hash: String,
    /// When this content was first loaded (unchanged files keep their time across reloads; a changed
    /// secret file is a change).
    pub loaded_at: SystemTime,
    pub inbound: Arc<InboundSource>,
    pub mapping: Arc<Mapping>,
    /// The file's warnings (`file:line:col: warning: ...`), as `hookgate check` prints them but for
    /// the test coverage, which needs the tests run: logged when the file is loaded, and listed by
    /// `GET /v1/sources`.
    pub warnings: Vec<String>,
    /// Loaded from new content (or a new secret) rather than kept from the previous set: its
    /// warnings are logged when the set is applied.
    pub changed: bool,
    /// The secret files its `verify:` names, each with the digest of its content when the source was
    /// built (read before the build: a change in between only causes one more reload).
    pub secret_files: Vec<(PathBuf, Option<[u8; 32]>)>,
}

/// The digest of a file's content; `None` when it cannot be read.
fn file_digest(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(&b).into())
}

impl Catalog {
    /// The first secret file whose content is no longer what a source was built with.
    fn rotated_secret(&self) -> Option<&Path> {
        let files: std::collections::BTreeMap<&Path, &Option<[u8; 32]>> = (self.sources.values())
            .flat_map(|s| &s.secret_files)
            .map(|(path, digest)| (path.as_path(), digest))
            .collect();
        files
            .into_iter()
            .find(|(path, digest)| file_digest(path) != **digest)
            .map(|(path, _)| path)
    }
}

/// Everything loaded from one mappings directory.
#[derive(Default)]
pub struct Catalog {
    pub sources: HashMap<String, Arc<LoadedSource>>,
}

/// Load and compile every file in `dir`; any problem anywhere rejects the whole set, with every problem
/// listed. `previous` lends its load times to files whose content did not change.
pub fn load(dir: &Path, previous: Option<&Catalog>) -> Result<Catalog, Vec<Diagnostic>> {
    if !dir.is_dir() {
        return Err(vec![Diagnostic::new(
            dir.display().to_string(),
            1,
            1,
            "mappings_dir is not a directory",
        )]);
    }
    let (files, mut problems) = mapping::load_files(&[dir.to_path_buf()]);
    let now = SystemTime::now();
    let mut sources = HashMap::new();
    for f in files {
        let at = f.head.name.referenced;
        let file = f.path.display().to_string();
        let name = f.head.name.value.clone();
        let secret_files = (f.head.verify.iter().flat_map(|v| v.secret_files()))
            .map(|path| {
                let digest = file_digest(&path);
                (path, digest)
            })
            .collect();
        match InboundSource::build(&f.head) {
            Ok(inbound) => {
                let kept = previous
                    .and_then(|p| p.sources.get(&name))
                    .filter(|p| p.hash == f.hash && p.secret_files == secret_files);
                let loaded_at = kept.map_or(now, |p| p.loaded_at);
                let src = LoadedSource {
                    name: name.clone(),
                    file: f.path,
                    hash: f.hash,
                    loaded_at,
                    inbound: Arc::new(inbound),
                    mapping: Arc::new(f.mapping),
                    warnings: f.warnings.iter().map(ToString::to_string).collect(),
                    changed: kept.is_none(),
                    secret_files,
                };
                sources.insert(name, Arc::new(src));
            }
            Err(ps) => problems.extend(ps.into_iter().map(|p: HeadProblem| {
                let (line, col) = if p.line == 0 {
                    (at.line() as u32, at.column() as u32)
                } else {
                    (p.line, p.column)
                };
                Diagnostic::new(&file, line, col, p.message)
            })),
        }
    }
    if problems.is_empty() {
        Ok(Catalog { sources })
    } else {
        Err(problems)
    }
}

/// What a reload did.
pub enum Reload {
    /// No file changed since the last attempt.
    Unchanged,
    /// The new set is serving.
    /// How many sources, and every warning of the new set, sorted.
    Applied(usize, Vec<String>),
    /// The new set has problems; the previous set keeps serving.
    Rejected(Vec<Diagnostic>),
}

/// The catalog being served, and how to replace it.
pub struct LiveCatalog {
    dir: PathBuf,
    current: ArcSwap<Catalog>,
    registry: Arc<SourceRegistry>,
    /// Fingerprint of the directory at the last applied load. A rejected set is not recorded, so it is
    /// retried (and reported) at each poll: a secret it waits for may appear without any file changing.
    /// The lock is held across fingerprint, load and publish so two reloads never publish out of order.
    fingerprint: Mutex<Option<String>>,
}

impl LiveCatalog {
    /// The first load: problems here stop the process (there is no previous set to fall back to).
    pub fn start(dir: &Path, registry: Arc<SourceRegistry>) -> Result<Self, Vec<Diagnostic>> {
        let fp = fingerprint(dir);
        let catalog = load(dir, None)?;
        let live = Self {
            dir: dir.to_path_buf(),
            current: ArcSwap::from_pointee(Catalog::default()),
            registry,
            fingerprint: Mutex::new(Some(fp)),
        };
        live.publish(catalog);
        Ok(live)
    }

    pub fn current(&self) -> Arc<Catalog> {
        self.current.load_full()
    }

    /// Reload if the directory changed, or a secret file a served source was built with; the swap is
    /// atomic and only happens for a fully valid set.
    pub fn reload(&self, force: bool) -> Reload {
        let mut last = self.fingerprint.lock().unwrap_or_else(|p| p.into_inner());
        let fp = fingerprint(&self.dir);
        let previous = self.current();
        if !force && last.as_deref() == Some(fp.as_str()) {
            // No mapping file changed: a secret file a served source was built with may have.
            match previous.rotated_secret() {
                None => return Reload::Unchanged,
                Some(path) => tracing::info!(
                    file = %path.display(),
                    "a secret file changed; reloading the mappings"
                ),
            }
        }
        let loaded = load(&self.dir, Some(&previous)).and_then(|c| {
            // A directory emptied while sources are served is far more often a mount caught mid-update
            // or a mistake than an intent, and applying it would answer 404 to every sender.
            if c.sources.is_empty() && !previous.sources.is_empty() {
                Err(vec![Diagnostic::new(
                    self.dir.display().to_string(),
                    0,
                    0,
                    format!(
                        "no mapping files: the {} source(s) being served keep serving (to serve none, \
                         restart with the directory empty)",
                        previous.sources.len()
                    ),
                )])
            } else {
                Ok(c)
            }
        });
        match loaded {
            Ok(catalog) => {
                let n = catalog.sources.len();
                let mut warnings: Vec<String> = (catalog.sources.values())
                    .flat_map(|s| s.warnings.iter().cloned())
                    .collect();
                warnings.sort();
                self.publish(catalog);
                *last = Some(fp);
                metrics::counter!("hookgate_mapping_reloads_total", "outcome" => "applied")
                    .increment(1);
                tracing::info!(sources = n, "mappings reloaded");
                Reload::Applied(n, warnings)
            }
            Err(problems) => {
                metrics::counter!("hookgate_mapping_reloads_total", "outcome" => "rejected")
                    .increment(1);
                for p in &problems {
                    tracing::error!(problem = %p.render(), "mapping reload rejected; the previous mappings keep serving");
                }
                Reload::Rejected(problems)
            }
        }
    }

    fn publish(&self, catalog: Catalog) {
        for s in catalog.sources.values().filter(|s| s.changed) {
            for w in &s.warnings {
                tracing::warn!(source = %s.name, warning = %w, "mapping file loaded with a warning");
            }
        }
        self.registry.replace(
            catalog
                .sources
                .iter()
                .map(|(k, v)| (k.clone(), v.inbound.clone()))
                .collect(),
        );
        metrics::gauge!("hookgate_sources_loaded").set(catalog.sources.len() as f64);
        self.current.store(Arc::new(catalog));
    }

    /// Reload on directory events (debounced) and, as a fallback for filesystems that send none, every
    /// `poll`. Runs until `stop` resolves.
    pub async fn watch(
        self: Arc<Self>,
        poll: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if res.is_ok_and(|e| may_change_files(&e.kind)) {
                let _ = tx.send(());
            }
        })
        .and_then(|mut w| {
            use notify::Watcher;
            w.watch(&self.dir, notify::RecursiveMode::NonRecursive)
                .map(|()| w)
        });
        let _watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch mappings_dir; polling only");
                None
            }
        };
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = tick.tick() => {}
                Some(()) = rx.recv() => {
                    // A ConfigMap update is several events in a burst: wait for quiet, but not for
                    // longer than DEBOUNCE_MAX: a file written over and over in the directory (a
                    // log, a status file) would otherwise hold every reload, and the poll, off.
                    let until = tokio::time::Instant::now() + DEBOUNCE_MAX;
                    while let Ok(Ok(Some(()))) = tokio::time::timeout_at(
                        until,
                        tokio::time::timeout(DEBOUNCE, rx.recv()),
                    )
                    .await
                    {}
                }
            }
            let live = self.clone();
            let _ = tokio::task::spawn_blocking(move || live.reload(false)).await;
        }
    }
}

/// Whether a directory event can change what a load reads. Reading is not: the reload's own opens and
/// reads of the files would otherwise trigger the next reload, three times a second, forever.
fn may_change_files(kind: &notify::EventKind) -> bool {
    !matches!(kind, notify::EventKind::Access(_))
}

/// Quiet time after the last directory event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// The longest a burst of directory events holds a reload back.
const DEBOUNCE_MAX: Duration = Duration::from_secs(2);

/// A hash over the names and contents of the files a load would read.
fn fingerprint(dir: &Path) -> String {
    let (paths, problems) = mapping::source_paths(&[dir.to_path_buf()]);
    let mut h = Sha256::new();
    for p in paths {
        h.update(p.to_string_lossy().as_bytes());
        h.update([0]);
        match std::fs::read(&p) {
            Ok(bytes) => h.update(Sha256::digest(&bytes)),
            Err(_) => h.update(b"unreadable"),
        }
    }
    h.update(problems.len().to_le_bytes());
    hex::encode(h.finalize())
}
