//! Wiring only: Redis, routers, workers, shutdown. `run` takes bound listeners so tests start the real app.

use crate::admin::{self, Readiness};
use crate::catalog::LiveCatalog;
use crate::config::{Config, Role};
use crate::deliver;
use crate::inbound::{self, InboundState, SourceRegistry};
use crate::ip_policy::CidrList;
use crate::redis_conn::Redis;
use crate::server::{self, ConnLimits};
use crate::stream::{Families, Store};
use anyhow::Context;
use axum::body::Body;
use http::header;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::TcpListener;
use tower::Service;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// The listeners a process serves on.
pub struct Listeners {
    pub inbound: TcpListener,
    pub admin: TcpListener,
}

/// Bind, run until SIGTERM or SIGINT, shut down gracefully.
pub fn serve(cfg: Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let inbound = TcpListener::bind(&cfg.listen)
            .await
            .with_context(|| format!("listen {}", cfg.listen))?;
        let admin = TcpListener::bind(&cfg.admin_listen)
            .await
            .with_context(|| format!("admin_listen {}", cfg.admin_listen))?;
        run(cfg, Listeners { inbound, admin }, shutdown_signal()).await
    })
}

/// Start everything on the given listeners; return when `shutdown` resolves and work has drained.
pub async fn run(
    cfg: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let _ = crate::telemetry::metrics();
    let redis = Redis::from_config(&cfg).context("redis")?;
    let families = Families::from_config(&cfg);
    let store = Store::connect(&redis, families.clone(), cfg.redis.response_timeout)
        .context("redis")?
        .with_format(cfg.inbound_format);
    let store = match crate::replica_ack::AckPolicy::from_config(&cfg.redis) {
        None => store,
        Some(policy) => store.with_acks(&redis, policy),
    };
    let sources = Arc::new(SourceRegistry::default());
    let live = LiveCatalog::start(&cfg.mappings_dir, sources.clone()).map_err(|problems| {
        let text: Vec<String> = problems.iter().map(|p| p.render()).collect();
        anyhow::Error::new(crate::error::InvalidFiles(format!(
            "mappings are not valid:\n{}",
            text.join("\n")
        )))
    })?;
    let live = Arc::new(live);
    if sources.is_empty() {
        tracing::warn!(dir = %cfg.mappings_dir.display(), "no source files found; /readyz stays unready");
    }
    tracing::info!(sources = sources.len(), role = ?cfg.role, "hookgate starting");

    let ready = Arc::new(Readiness {
        store: store.clone(),
        sources: sources.clone(),
        shutting_down: Default::default(),
    });
    let limits = ConnLimits {
        header_read_timeout: cfg.limits.header_read_timeout,
        max_headers: cfg.limits.max_headers,
        max_connections: cfg.limits.max_connections,
        idle_timeout: cfg.limits.idle_timeout,
        grace: cfg.shutdown_grace,
    };

    // One shutdown signal fans out: readiness fails first, then both listeners stop accepting.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let ready_flag = ready.clone();
    let delay = cfg.shutdown_delay;
    // A worker that died (a panic) shuts the process down as a signal would, and `run` then fails, so
    // the orchestrator restarts it: a replica that answers ready but delivers nothing helps no one.
    let died = Arc::new(tokio::sync::Notify::new());
    let failure: Arc<std::sync::OnceLock<String>> = Arc::default();
    let on_death = died.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown => {}
            () = on_death.notified() => {}
        }
        ready_flag.shutting_down.store(true, Ordering::Relaxed);
        tokio::time::sleep(delay).await;
        let _ = stop_tx.send(true);
    });
    crate::telemetry::spawn_upkeep(stop_rx.clone());
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    tokio::spawn(
        live.clone()
            .watch(cfg.mappings_poll, stopped(stop_rx.clone())),
    );
    let token = Arc::new(
        admin::AdminToken::new(cfg.admin_token.as_ref().map(|s| s.expose()))
            .allow_from(&cfg.admin_allow_ips, &cfg.trusted_proxies),
    );
    // Delivery gets its own connection: its commands never queue behind (or ahead of) the receive path's.
    let deliver_conn = redis.shared().context("redis")?;
    let inbound_keys = deliver::Keys::new(&families.inbound);
    let dead = deliver::DeadLetters::new(deliver_conn.clone(), inbound_keys.clone());
    // Reading back received events moves bodies: on a connection of its own, not ahead of delivery.
    let received = deliver::Received::new(redis.shared().context("redis")?, &inbound_keys);
    crate::gauges::spawn(
        deliver_conn.clone(),
        [
            crate::gauges::inbound(&families.inbound),
            crate::gauges::outbound(&families.outbound),
        ]
        .concat(),
        cfg.metrics_sample_interval,
        stop_rx.clone(),
    );
    let watch = |what: &'static str, parts: tokio::task::JoinSet<()>| {
        supervise(what, parts, died.clone(), failure.clone())
    };
    let workers = match cfg.role {
        Role::Api => None,
        Role::Worker | Role::All => Some(watch(
            "mapper worker",
            deliver::start(
                &cfg,
                live.clone(),
                &redis,
                deliver_conn,
                inbound_keys,
                stop_rx.clone(),
            )?,
        )),
    };
    let outbound = crate::outbound::Outbound::new(&cfg, &redis, &families.outbound, store.clone())?;
    let relays = match cfg.role {
        Role::Api => None,
        Role::Worker | Role::All => Some(watch(
            "outbound relay",
            outbound.start(&cfg, stop_rx.clone())?,
        )),
    };
    let admin_app = layered(
        admin::guarded(
            admin::with_fallbacks(
                admin::router(ready, live, dead, received).merge(admin::outbound_router(outbound)),
            ),
            token,
        ),
        &cfg,
        None,
        None,
    );
    let admin_task = tokio::spawn(server::serve(
        listeners.admin,
        admin_app,
        limits,
        stopped(stop_rx.clone()),
    ));
    if cfg.role != Role::Worker {
        let state = Arc::new(InboundState {
            sources,
            store,
            trusted_proxies: CidrList::new(&cfg.trusted_proxies),
            default_max_body: cfg.limits.max_body.as_u64(),
            max_json_depth: cfg.limits.max_json_depth,
            max_headers: cfg.limits.max_headers,
            in_flight: Arc::new(tokio::sync::Semaphore::new(cfg.limits.max_in_flight)),
            pace: inbound::pace::Pace::of(&cfg.limits),
        });
        let registry = state.sources.clone();
        let count: crate::error::RefusalCount =
            Box::new(move |uri, e| inbound::handler::count_refusal(&registry, uri, e));
        let (registry, default) = (state.sources.clone(), state.default_max_body);
        let limit_for: crate::error::LimitFor =
            Box::new(move |uri| inbound::handler::body_limit(&registry, uri, default));
        let app = layered(inbound::router(state), &cfg, Some(count), Some(limit_for));
        server::serve(listeners.inbound, app, limits, stopped(stop_rx)).await;
    } else {
        drop(listeners.inbound);
        stopped(stop_rx).await;
    }
    if let Some(w) = workers {
        let _ = w.await;
    }
    if let Some(r) = relays {
        let _ = r.await;
    }
    let _ = admin_task.await;
    // The failure was logged where it happened; main prints it as the reason for the exit status.
    match failure.get() {
        Some(why) => Err(anyhow::anyhow!("{why}")),
        None => {
            tracing::info!("hookgate stopped");
            Ok(())
        }
    }
}

/// Await every task of `parts`; when one panics, record why and wake `died` (which shuts the process
/// down). The others are then aborted with the set: the process is failing, and what they held is
/// reclaimed after its lease, as after a crash.
fn supervise(
    what: &'static str,
    mut parts: tokio::task::JoinSet<()>,
    died: Arc<tokio::sync::Notify>,
    failure: Arc<std::sync::OnceLock<String>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(part) = parts.join_next().await {
            if part.as_ref().is_err_and(|e| e.is_panic()) {
                let why =
                    format!("{what} task panicked; shutting down so that the process is restarted");
                tracing::error!("{why}");
                let _ = failure.set(why); // the first failure names the exit
                died.notify_one();
                return;
            }
        }
    })
}

/// The cross-cutting concerns every route of both listeners gets, as tower layers around `svc` (the admin
/// router, or the inbound one, [`inbound::router`]).
/// `count` is told of the refusals the layers make themselves ([`crate::error::LayerRefusals`]).
fn layered<S>(
    svc: S,
    cfg: &Config,
    count: Option<crate::error::RefusalCount>,
    limit_for: Option<crate::error::LimitFor>,
) -> impl Service<
    http::Request<Body>,
    Response = http::Response<
        impl hyper::body::Body<Data = bytes::Bytes, Error = impl Into<tower::BoxError>> + Send + 'static,
    >,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
       + Send
       + 'static
where
    S: Service<http::Request<Body>, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::PROXY_AUTHORIZATION,
            header::COOKIE,
        ]))
        .map_request(crate::telemetry::drop_sender_request_id::<Body>)
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &http::Request<_>| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            // event_id is filled in once the event is stored, so every later line of the request names it.
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id, event_id = tracing::field::Empty)
        }).on_failure(crate::telemetry::log_failure))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            crate::error::Refusals {
                body_cap: crate::config::MAX_BODY_CAP.as_u64(),
                timeout: cfg.limits.request_timeout,
                count,
                limit_for,
            }
            .layer(),
        )
        .layer(CatchPanicLayer::new())
        .layer(TimeoutLayer::with_status_code(http::StatusCode::REQUEST_TIMEOUT, cfg.limits.request_timeout))
        // A backstop for every route: no body beyond the most any source may allow is read, and a larger
        // Content-Length is refused before routing. Each source's own limit is enforced by the receiver,
        // which alone knows the source.
        .map_response(|r: http::Response<tower_http::limit::ResponseBody<Body>>| r.map(Body::new))
        .layer(RequestBodyLimitLayer::new(crate::config::MAX_BODY_CAP.as_u64() as usize))
        .map_request(|req: http::Request<tower_http::body::Limited<Body>>| req.map(Body::new))
        .service(svc)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received");
}

#[cfg(test)]
mod tests {
    use super::supervise;
    use std::sync::Arc;
    use std::time::Duration;

    /// A panicking worker wakes the shutdown and leaves its reason for `run` to fail with; one that
    /// ends normally (at shutdown) does neither.
    #[tokio::test]
    async fn a_panicked_task_shuts_the_process_down() {
        let died = Arc::new(tokio::sync::Notify::new());
        let failure: Arc<std::sync::OnceLock<String>> = Arc::default();
        let mut calm = tokio::task::JoinSet::new();
        calm.spawn(async {});
        supervise("calm", calm, died.clone(), failure.clone())
            .await
            .expect("supervisor");
        assert!(failure.get().is_none());
        // One part panics while another would run until shutdown: the panic is seen at once.
        let mut parts = tokio::task::JoinSet::new();
        parts.spawn(std::future::pending::<()>());
        parts.spawn(async { panic!("overflow when multiplying duration by scalar") });
        let _watch = supervise("mapper worker", parts, died.clone(), failure.clone());
        tokio::time::timeout(Duration::from_secs(5), died.notified())
            .await
            .expect("the shutdown is woken");
        let why = failure.get().cloned().unwrap_or_default();
        assert!(why.starts_with("mapper worker task panicked"), "{why}");
    }
}
