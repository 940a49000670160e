//! Our own accept loop: hyper-util's auto builder (HTTP/1 and HTTP/2) with a timer, a header-read timeout
//! and a header count limit (which `axum::serve` does not set), and graceful shutdown of open connections.
//!
//! Each connection is driven here rather than by hyper-util's `GracefulShutdown`, because it may be
//! closed for three reasons: shutdown, idleness (no request started for `idle_timeout`; HTTP/2 has no
//! timer for that), and a request head not complete within `header_read_timeout` of its first byte. A
//! connection that sends nothing is closed after the header-read timeout, since the HTTP/1-or-2
//! detection has no timer. The connection slots double as the count of open connections.
//!
//! The head timer is ours, not hyper's: hyper starts its timer as soon as it waits for the next request,
//! so an idle keep-alive connection would be closed after `header_read_timeout` (10 s) instead of
//! `idle_timeout`, shorter than a load balancer's idle timeout (60 s on AWS ALB, nginx), which then
//! sends a request onto a connection we are closing and answers the sender 502. As in Go's server, the
//! wait for a next request is bounded by the idle timeout and the head by the header-read timeout.

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
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

/// How soon after an unread body is dropped hyper's drain read comes (the same poll of the connection;
/// generous for a loaded machine). Bytes later than this start a head.
const DRAIN_MS: u64 = 20;

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
        // hyper's head timer (30 s when unset) would run while the connection waits for a next request
        // too; `Activity` bounds the head instead.
        .header_read_timeout(None)
        // A client may shut down its sending side once its request is written (`nc -N`, some proxies)
        // and still wait for the answer; without half-close hyper drops the connection unanswered, while
        // the event may already be stored.
        .half_close(true);
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
    let activity = Arc::new(Activity {
        opened: Instant::now(),
        last_request: AtomicU64::new(1),
        in_flight: AtomicUsize::new(0),
        head_since: AtomicU64::new(0),
        http2: AtomicBool::new(false),
        dropped_body_at: AtomicU64::new(0),
    });
    let seen = activity.clone();
    let done = activity.clone();
    let svc = app
        .map_request(move |req: Request<Incoming>| {
            seen.request_started();
            let activity = seen.clone();
            let mut req = req.map(|inner| {
                Body::new(Tracked {
                    inner,
                    activity,
                    ended: false,
                })
            });
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        })
        .map_response(move |resp| {
            done.request_answered();
            resp
        });
    let io = Watched {
        io: stream,
        activity: activity.clone(),
        sniffed: Vec::new(),
    };
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(svc));
    tokio::pin!(conn);
    // The timers and shutdown are watched by a task of their own: polled here, a timer would be polled
    // again on every wake of the connection (measured: about 1% of the instructions per request).
    loop {
        let (close_tx, mut close) = tokio::sync::oneshot::channel();
        tokio::spawn(watch(activity.clone(), limits, stop.clone(), close_tx));
        tokio::select! {
            biased;
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            // Only a word from the watchdog closes: should it end without one, the connection goes on.
            Ok(how) = &mut close => match how {
                Close::Graceful => {
                    conn.as_mut().graceful_shutdown();
                    break;
                }
                // The head may have completed since the watchdog looked: its request is then running,
                // and dropping the connection would cancel it (mid-store). Watch on instead.
                Close::Abort(head) if activity.head_since.load(Ordering::Relaxed) != head => continue,
                Close::Abort(_) => {
                    tracing::debug!(%peer, "request head not complete within the header-read timeout; closing");
                    return;
                }
            },
        }
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

/// What a connection's reads, its requests and its watchdog share. Times are ms after `opened`, counted
/// from 1, so that 0 can mean "none".
struct Activity {
    opened: Instant,
    /// When the last request started, or was answered: the idle timer's reference.
    last_request: AtomicU64,
    /// Requests whose response is not produced yet: bytes meanwhile are their bodies, not a next head.
    in_flight: AtomicUsize,
    /// When the first byte of a request head arrived; 0 while none is pending.
    head_since: AtomicU64,
    /// HTTP/2, known by its preface (`Watched::sniff`): frames (pings, settings) arrive between requests,
    /// so it has no head timer.
    http2: AtomicBool,
    /// When a request body was dropped unread (an early refusal); 0: none. hyper then drains
    /// the rest with one read in the same poll, whose bytes are no head: bytes within `DRAIN_MS` of the
    /// drop start no head timer, later ones do.
    dropped_body_at: AtomicU64,
}

impl Activity {
    fn now(&self) -> u64 {
        millis(self.opened.elapsed()).saturating_add(1)
    }

    /// Bytes were read: with no request in flight they start a head (once, until it completes).
    fn bytes_arrived(&self) {
        if self.head_since.load(Ordering::Relaxed) != 0
            || self.in_flight.load(Ordering::Relaxed) != 0
            || self.http2.load(Ordering::Relaxed)
        {
            return;
        }
        let now = self.now();
        let dropped = self.dropped_body_at.swap(0, Ordering::Relaxed);
        if dropped != 0 && now.saturating_sub(dropped) <= DRAIN_MS {
            return;
        }
        self.head_since.store(now, Ordering::Relaxed);
    }

    /// hyper has parsed a head and calls the service.
    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
        self.dropped_body_at.store(0, Ordering::Relaxed);
        self.last_request.store(self.now(), Ordering::Relaxed);
    }

    /// The service has produced its answer: idle from now on, so a long request does not shorten the
    /// wait for the next one.
    fn request_answered(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.last_request.store(self.now(), Ordering::Relaxed);
    }
}

/// The HTTP/2 client preface: a connection starting with all of it is HTTP/2, as hyper-util decides
/// (`PRI / HTTP/1.1` is a valid HTTP/1 request line, so a shorter match would not do).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The connection's socket, telling `Activity` when bytes arrive.
struct Watched {
    io: TcpStream,
    activity: Arc<Activity>,
    /// The connection's first bytes, until they tell HTTP/2's preface from an HTTP/1 request line.
    sniffed: Vec<u8>,
}

impl Watched {
    /// Note the first bytes: an HTTP/2 connection is known before its first request, so a client that
    /// opens one and waits (a pooling proxy) is closed at the idle timeout, with GOAWAY, not cut.
    fn sniff(&mut self, got: &[u8]) {
        let want = H2_PREFACE.len();
        if self.sniffed.len() >= want {
            return;
        }
        let take = (want - self.sniffed.len()).min(got.len());
        self.sniffed.extend_from_slice(&got[..take]);
        if self.sniffed.len() == want {
            if self.sniffed == H2_PREFACE {
                self.activity.http2.store(true, Ordering::Relaxed);
            }
        } else if !H2_PREFACE.starts_with(&self.sniffed) {
            // Not the preface: stop looking.
            self.sniffed.resize(want, 0);
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.sniff(&buf.filled()[before..]);
            self.activity.bytes_arrived();
        }
        read
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A request body that tells `Activity` when it is dropped before its end (see
/// `Activity::dropped_body_at`).
struct Tracked {
    inner: Incoming,
    activity: Arc<Activity>,
    ended: bool,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            self.ended = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if !self.ended && !hyper::body::Body::is_end_stream(&self.inner) {
            let at = self.activity.now();
            self.activity.dropped_body_at.store(at, Ordering::Relaxed);
        }
    }
}

/// How the watchdog asks a connection to close.
enum Close {
    /// Idle, or shutting down: finish what is in flight (HTTP/2: GOAWAY).
    Graceful,
    /// A request head still incomplete after the header-read timeout: drop the connection, unless
    /// `head_since` has changed since (that head completed; another may have started).
    Abort(u64),
}

/// Ask the connection to close once it has been idle (no request started or answered, no head arriving)
/// for `idle_timeout`, a head has been
/// arriving for longer than `header_read_timeout`, or at shutdown; return without a word when the
/// connection ended first (`close` closed). It looks at the head every quarter of the header-read
/// timeout, so a head is given between 1 and 1.25 times that; a timer armed per request would cost each
/// request a wake of this task.
async fn watch(
    activity: Arc<Activity>,
    limits: ConnLimits,
    mut stop: tokio::sync::watch::Receiver<()>,
    mut close: tokio::sync::oneshot::Sender<Close>,
) {
    let head_ms = millis(limits.header_read_timeout);
    let tick = (limits.header_read_timeout / 4).max(Duration::from_millis(10));
    let how = loop {
        let now = activity.now();
        let head = activity.head_since.load(Ordering::Relaxed);
        if head != 0 && now.saturating_sub(head) >= head_ms {
            break Close::Abort(head);
        }
        let idle_for = now.saturating_sub(activity.last_request.load(Ordering::Relaxed));
        let idle_left = limits
            .idle_timeout
            .saturating_sub(Duration::from_millis(idle_for));
        // In flight or not: `idle_timeout` outlasts `request_timeout`, and closing is graceful. Not
        // while a head arrives: closing would cut it (its timer bounds it), which is what a load balancer
        // sending at the end of its own idle time would answer 502 for.
        if idle_left.is_zero() && head == 0 {
            break Close::Graceful;
        }
        let wait = if idle_left.is_zero() {
            tick
        } else {
            idle_left.min(tick)
        };
        tokio::select! {
            () = close.closed() => return,
            _ = stop.changed() => break Close::Graceful,
            () = tokio::time::sleep(wait) => {}
        }
    };
    let _ = close.send(how);
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
