//! Our own accept loop: hyper-util's auto builder (HTTP/1 and HTTP/2) with a timer, a header-read timeout
//! and a header count limit (which `axum::serve` does not set), and graceful shutdown of open connections.
//!
//! Each connection is driven here rather than by hyper-util's `GracefulShutdown`, because it may be
//! closed for two reasons: shutdown, and idleness (no request started for `idle_timeout`; HTTP/2 has no
//! timer for that). A connection that sends nothing is closed after the header-read timeout, since the
//! HTTP/1-or-2 detection has no timer. The connection slots double as the count of open connections.

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

/// hyper's HTTP/1 header limit when none is set.
const HYPER_MAX_HEADERS: usize = 100;

/// Connection-level limits.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub max_headers: usize,
    /// Open connections at most; further ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// A connection on which no request has started for this long is closed gracefully.
    pub idle_timeout: Duration,
    /// How long open connections get to finish once shutdown starts.
    pub grace: Duration,
}

/// What the accept loop serves: a tower service of our requests, cloned for each connection.
pub trait App<B>:
    Service<Request<Body>, Response = http::Response<B>, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S, B> App<B> for S where
    S: Service<
            Request<Body>,
            Response = http::Response<B>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// A response body hyper can send from any connection's task.
pub trait Reply:
    hyper::body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + 'static
{
}

impl<B> Reply for B where
    B: hyper::body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static
{
}

/// Serve `app` on `listener` until `shutdown` resolves; then stop accepting and let open requests finish
/// within the grace period. Each request carries `ConnectInfo<SocketAddr>` of its peer.
pub async fn serve<S: App<B>, B: Reply>(
    listener: TcpListener,
    app: S,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    // hyper's own limit is 100 and parses into a stack array; any explicit limit, even 100, makes it fill
    // a buffer of that size on every request.
    if limits.max_headers != HYPER_MAX_HEADERS {
        builder.http1().max_headers(limits.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    // Each connection holds a slot until it ends: all slots free again means every connection is closed.
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    tokio::pin!(shutdown);
    loop {
        // Shutdown is watched while waiting for a slot too: a full server must still stop.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            Accepted { stream, peer, slot },
            app.clone(),
            builder.clone(),
            limits,
            stop_rx.clone(),
        ));
    }
    drop(listener);
    // Every connection finishes its requests in flight and closes (HTTP/2: GOAWAY).
    let _ = stop_tx.send(());
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = slots.acquire_many(all) => {}
        () = tokio::time::sleep(limits.grace) => tracing::warn!("grace period over; closing remaining connections"),
    }
}

/// An accepted connection and the slot it holds until it ends.
struct Accepted {
    stream: TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
}

/// Serve one connection until it ends, it has been idle for `idle_timeout`, or shutdown closes it.
async fn connection<S: App<B>, B: Reply>(
    accepted: Accepted,
    app: S,
    builder: auto::Builder<TokioExecutor>,
    limits: ConnLimits,
    mut stop: tokio::sync::watch::Receiver<()>,
) {
    let Accepted {
        stream,
        peer,
        slot: _slot,
    } = accepted;
    // hyper-util reads the first bytes to tell HTTP/1 from HTTP/2 with no timer, and HTTP/1's
    // header-read timeout starts only after that: a connection that never sends a byte would otherwise
    // hold its slot forever.
    let mut first_byte = [0u8; 1];
    tokio::select! {
        // `peek`, not `readable`: readiness may be reported before any byte is there.
        first = tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut first_byte)) => {
            if !matches!(first, Ok(Ok(1..))) {
                tracing::debug!(%peer, "nothing received within the header-read timeout; closing");
                return;
            }
        }
        _ = stop.changed() => return,
    }
    let opened = Instant::now();
    // When the last request started, in ms after `opened`: the idle timer's reference.
    let last_request = Arc::new(AtomicU64::new(0));
    let started = last_request.clone();
    let svc = app.map_request(move |req: Request<Incoming>| {
        started.store(millis(opened.elapsed()), Ordering::Relaxed);
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    });
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
    tokio::pin!(conn);
    // The idle timer and shutdown are watched by a task of their own: polled here, a timer would be
    // polled again on every wake of the connection (measured: about 1% of the instructions per request).
    let (close_tx, mut close) = tokio::sync::oneshot::channel();
    tokio::spawn(close_when_idle_or_stopped(
        last_request,
        opened,
        limits.idle_timeout,
        stop,
        close_tx,
    ));
    tokio::select! {
        biased;
        ended = conn.as_mut() => {
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            return;
        }
        // Only a word from the watchdog closes: should it end without one, the connection goes on.
        Ok(()) = &mut close => conn.as_mut().graceful_shutdown(),
    }
    // Asked to close (GOAWAY on HTTP/2): the requests in flight get the grace period.
    match tokio::time::timeout(limits.grace, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
        Err(_) => {
            tracing::debug!(%peer, "connection still open after its grace period; dropping it")
        }
    }
}

/// Tell the connection to close once no request has started on it for `idle` (`last_request`: ms after
/// `opened`), or at shutdown; return without a word when the connection ended first (`close` closed).
async fn close_when_idle_or_stopped(
    last_request: Arc<AtomicU64>,
    opened: Instant,
    idle: Duration,
    mut stop: tokio::sync::watch::Receiver<()>,
    mut close: tokio::sync::oneshot::Sender<()>,
) {
    // `None` past the clock's range: never idle.
    let idle_at = || {
        opened.checked_add(
            Duration::from_millis(last_request.load(Ordering::Relaxed)).saturating_add(idle),
        )
    };
    loop {
        let Some(at) = idle_at() else {
            tokio::select! {
                () = close.closed() => return,
                _ = stop.changed() => break,
            }
        };
        tokio::select! {
            () = close.closed() => return,
            _ = stop.changed() => break,
            () = tokio::time::sleep_until(at) => {
                // A request may have started meanwhile: then sleep on to its own idle time.
                if idle_at().is_some_and(|at| at <= Instant::now()) {
                    break;
                }
            }
        }
    }
    let _ = close.send(());
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
