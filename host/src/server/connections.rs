//! The connections the socket serves, bounded so that no client (or crowd of them) can
//! keep the host from answering: at most [`Limits::max_connections`] at once, each with a
//! bounded number of streams, closed when the HTTP/2 preface does not arrive in time, when
//! idle for long, and evicted (the one idle longest first) when a new client needs room.
//!
//! A connection counts as busy while one of its requests is being handled (its body has
//! arrived); a connection whose requests all still wait for their bodies, or that has none,
//! may be evicted. A request body must arrive within [`Limits::body_timeout`].

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};
use tonic::codegen::Service;
use tonic::service::Routes;

/// How the socket bounds its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// Concurrent streams (calls) per connection; a client queues the rest itself.
    pub max_streams: u32,
    /// Bytes of request headers per call.
    pub max_header_bytes: u32,
    /// Time a new connection has to send the HTTP/2 preface and its first frame.
    pub handshake_timeout: Duration,
    /// Time a request has, after its headers, to send its whole body.
    pub body_timeout: Duration,
    /// A connection without calls for this long is closed (gracefully: GOAWAY).
    pub idle_timeout: Duration,
    /// The host pings a connection this often, and closes it when a ping goes unanswered
    /// for `keepalive_timeout`.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

pub const LIMITS: Limits = Limits {
    max_connections: 128,
    max_streams: 64,
    max_header_bytes: 16 << 10,
    handshake_timeout: Duration::from_secs(10),
    body_timeout: Duration::from_secs(10),
    idle_timeout: Duration::from_secs(600),
    keepalive_interval: Duration::from_secs(60),
    keepalive_timeout: Duration::from_secs(20),
};

/// The client preface (24 bytes) and a frame header (9): what a connection must have sent
/// within the handshake timeout.
const HANDSHAKE_BYTES: u64 = 24 + 9;
/// How often a connection checks its timeouts.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// At most one warning about refused connections per this long.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The live connections of the accept loop.
pub struct Connections {
    limits: Limits,
    tasks: JoinSet<()>,
    live: HashMap<tokio::task::Id, Tracked>,
    refused: u64,
    warned: Option<Instant>,
}

struct Tracked {
    activity: Arc<Activity>,
    abort: AbortHandle,
}

impl Connections {
    pub fn new(limits: Limits) -> Connections {
        Connections { limits, tasks: JoinSet::new(), live: HashMap::new(), refused: 0, warned: None }
    }

    /// Serves `stream`, making room by evicting an idle connection when at the limit; when
    /// every connection is busy, the new one is closed at once.
    pub fn admit(&mut self, stream: UnixStream, routes: Routes, shutdown: watch::Receiver<bool>) {
        if self.live.len() >= self.limits.max_connections && !self.evict_idle() {
            self.refused += 1;
            if self.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                tracing::warn!(
                    limit = self.limits.max_connections,
                    refused = self.refused,
                    "every connection is busy; refusing new connections"
                );
                self.warned = Some(Instant::now());
            }
            return;
        }
        let activity = Arc::new(Activity::new());
        let abort = self.tasks.spawn(serve(stream, routes, activity.clone(), self.limits, shutdown));
        self.live.insert(abort.id(), Tracked { activity, abort });
    }

    /// Closes the connection that has been without a call in progress the longest, if any.
    pub fn evict_idle(&mut self) -> bool {
        let Some(id) = self
            .live
            .iter()
            .filter(|(_, t)| !t.activity.busy())
            .min_by_key(|(_, t)| t.activity.last())
            .map(|(id, _)| *id)
        else {
            return false;
        };
        let tracked = self.live.remove(&id).expect("picked from the map");
        tracked.abort.abort();
        tracing::debug!("evicted an idle connection to make room");
        true
    }

    /// Waits until some connection ends and forgets it; pending forever when there is none.
    pub async fn reap(&mut self) {
        match self.tasks.join_next_with_id().await {
            Some(Ok((id, ()))) => {
                self.live.remove(&id);
            }
            Some(Err(e)) => {
                self.live.remove(&e.id());
                if e.is_panic() {
                    tracing::error!("a connection task panicked: {e}");
                }
            }
            None => std::future::pending().await,
        }
    }

    /// Waits until every connection has ended (after the shutdown signal was sent).
    pub async fn drain(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Serves one connection until it ends, is shut down, or breaks a limit.
async fn serve(
    stream: UnixStream,
    routes: Routes,
    activity: Arc<Activity>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let io = TokioIo::new(Counted { inner: stream, activity: activity.clone() });
    let handler = activity.clone();
    let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        let (mut routes, activity) = (routes.clone(), handler.clone());
        async move {
            let _serving = activity.serving();
            let request = request.map(|body| DeadlineBody::new(body, limits.body_timeout, activity.receiving()));
            std::future::poll_fn(|cx| Service::<http::Request<DeadlineBody>>::poll_ready(&mut routes, cx)).await?;
            routes.call(request).await
        }
    });
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams)
        .max_header_list_size(limits.max_header_bytes)
        .max_pending_accept_reset_streams(Some(limits.max_streams as usize))
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut draining = false;
    let mut check = tokio::time::interval(CHECK_EVERY);
    loop {
        let drain = tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!("connection ended: {e}");
                }
                return;
            }
            _ = shutdown.changed(), if !draining => true,
            _ = check.tick() => {
                if activity.read.load(Ordering::Relaxed) < HANDSHAKE_BYTES
                    && activity.started.elapsed() >= limits.handshake_timeout
                {
                    tracing::debug!("closing a connection that sent no HTTP/2 preface within {:?}", limits.handshake_timeout);
                    return;
                }
                !draining && activity.idle_for().is_some_and(|idle| idle >= limits.idle_timeout)
            }
        };
        if drain {
            draining = true;
            connection.as_mut().graceful_shutdown();
        }
    }
}

/// What the accept loop and the timeouts know of one connection.
struct Activity {
    started: Instant,
    /// Bytes the client sent (counted until the handshake is done).
    read: AtomicU64,
    /// Calls in progress, and of those the ones still receiving their body.
    in_flight: AtomicUsize,
    receiving: AtomicUsize,
    /// When a call last started or ended (or the connection opened).
    last: Mutex<Instant>,
}

impl Activity {
    fn new() -> Activity {
        let now = Instant::now();
        Activity {
            started: now,
            read: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            receiving: AtomicUsize::new(0),
            last: Mutex::new(now),
        }
    }

    fn touch(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn last(&self) -> Instant {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Some call of the connection is being handled.
    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > self.receiving.load(Ordering::Acquire)
    }

    /// How long the connection has been without calls, when it has none.
    fn idle_for(&self) -> Option<Duration> {
        (self.in_flight.load(Ordering::Acquire) == 0).then(|| self.last().elapsed())
    }

    fn serving(self: &Arc<Self>) -> Counter {
        Counter::new(self.clone(), |a| &a.in_flight)
    }

    fn receiving(self: &Arc<Self>) -> Counter {
        Counter::new(self.clone(), |a| &a.receiving)
    }
}

/// Counts one call (or one call's pending body) while alive.
struct Counter {
    activity: Arc<Activity>,
    field: fn(&Activity) -> &AtomicUsize,
}

impl Counter {
    fn new(activity: Arc<Activity>, field: fn(&Activity) -> &AtomicUsize) -> Counter {
        field(&activity).fetch_add(1, Ordering::AcqRel);
        activity.touch();
        Counter { activity, field }
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        (self.field)(&self.activity).fetch_sub(1, Ordering::AcqRel);
        self.activity.touch();
    }
}

/// Why a request body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body not complete within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Transport(#[from] hyper::Error),
}

/// A request body that must be complete within a deadline from its headers.
struct DeadlineBody {
    inner: Incoming,
    timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Held until the body is complete (or failed).
    receiving: Option<Counter>,
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration, receiving: Counter) -> DeadlineBody {
        let receiving = (!inner.is_end_stream()).then_some(receiving);
        DeadlineBody { inner, timeout, deadline: Box::pin(tokio::time::sleep(timeout)), receiving }
    }
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if this.receiving.is_none() {
            return polled.map_err(BodyError::from);
        }
        match polled {
            Poll::Ready(frame) => {
                if frame.is_none() || this.inner.is_end_stream() || matches!(frame, Some(Err(_))) {
                    this.receiving = None;
                }
                Poll::Ready(frame.map(|f| f.map_err(BodyError::from)))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.receiving = None;
                    Poll::Ready(Some(Err(BodyError::Timeout(this.timeout))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, counting the bytes the client sends.
struct Counted {
    inner: UnixStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Counted {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.activity.read.fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
