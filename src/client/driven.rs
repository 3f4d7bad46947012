//! HTTP/1.1 upstream connections driven by the task that reads the answer.
//!
//! hyper-util's client runs every connection in a task of its own, which hands the answer's
//! body over one chunk at a time through a one-slot channel: for a streamed answer, every event
//! crosses tasks (the connection's task wakes the reader's, and the reader's wakes it back for
//! the next), and the reader never holds more than one event, so a proxy writes each event on
//! its own however many arrived in one read. Here the connection is polled by whoever polls the
//! answer — first its response future, then its body, whenever the body has nothing at hand —
//! so every event already read from the socket is handed over in the same poll, and hyper's
//! server writes them out together.
//!
//! The pool keeps idle connections, newest first, per scheme and authority; nobody polls an
//! idle connection, so one is checked (polled once, with a no-op waker) before it is reused,
//! and a reaper task drops those past the idle timeout or closed by the peer. A request that a
//! reused connection could not send (closed meanwhile) is sent once more on a new connection.
//! Used for `http` upstreams and for `https` ones without `http2 = true`; HTTP/2 multiplexes
//! answers on one connection, which a single answer's reader cannot drive, and stays with
//! hyper-util's client.

use std::error::Error as StdError;
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use tokio::time::Instant;
use tower::ServiceExt;
use tower_llm_core::BoxError;

use super::again::SelfWake;
use super::connect::{Connection, Connector};

type Conn<B> = http1::Connection<Connection, B>;

/// Which connections are interchangeable.
#[derive(Clone)]
struct PoolKey {
    scheme: Scheme,
    authority: Authority,
}

impl PoolKey {
    /// The same scheme and authority, byte for byte (`Authority`'s own `==` ignores case, byte
    /// by byte; a provider's URL is always written the same way, and two spellings of one host
    /// only keep two lists).
    fn same(&self, other: &PoolKey) -> bool {
        self.authority.as_str() == other.authority.as_str() && self.scheme == other.scheme
    }
}

/// One connection, its request sender and the pool it returns to. Boxed once per connection
/// (a hyper connection is large: the box, not the connection, moves between the pool, the
/// response future and the body).
struct Checkout<B: Body + 'static> {
    sender: SendRequest<B>,
    conn: Conn<B>,
    /// The waker the connection, and the answer's body it feeds, are polled with: their
    /// wake-ups of each other during a poll are polled again at once (`again.rs`).
    wake: SelfWake,
    /// Weak: an idle connection sits in its pool.
    pool: Weak<Pool<B>>,
    key: PoolKey,
}

struct Idle<B: Body + 'static> {
    checkout: Box<Checkout<B>>,
    since: Instant,
}

/// Idle connections of one client.
pub(super) struct Pool<B: Body + 'static> {
    /// Per scheme and authority (a client serves few hosts: a list, not a hash map, whose
    /// hashing of the authority cost more than the search).
    idle: Mutex<Vec<(PoolKey, Vec<Idle<B>>)>>,
    max_idle_per_host: usize,
    idle_timeout: Duration,
    connector: Connector,
    reaper: AtomicBool,
}

/// Whether an idle connection can take a request: not closed by the peer meanwhile (polled once,
/// with a no-op waker: whoever reuses it polls it with a real one) and ready for a request.
fn usable<B>(sender: &SendRequest<B>, conn: &mut Conn<B>) -> bool
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(conn).poll(&mut cx).is_pending() && sender.is_ready()
}

impl<B> Pool<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    pub(super) fn new(
        connector: Connector,
        max_idle_per_host: usize,
        idle_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Pool {
            idle: Mutex::new(Vec::new()),
            max_idle_per_host,
            idle_timeout,
            connector,
            reaper: AtomicBool::new(false),
        })
    }

    /// The newest usable idle connection to `key`; the unusable ones met on the way are dropped.
    fn take(&self, key: &PoolKey) -> Option<Box<Checkout<B>>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let (_, list) = idle.iter_mut().find(|(k, _)| k.same(key))?;
        while let Some(Idle {
            mut checkout,
            since,
        }) = list.pop()
        {
            let c = &mut *checkout;
            if since.elapsed() < self.idle_timeout && usable(&c.sender, &mut c.conn) {
                return Some(checkout);
            }
        }
        None
    }

    /// Keep a connection whose answer has ended, if it can take another request. (The poll that
    /// read the answer's end left the connection ready for the next request, or not: a
    /// `Connection: close` answer, an answer cut short.)
    fn put(self: &Arc<Self>, checkout: Box<Checkout<B>>) {
        if self.max_idle_per_host == 0 || !checkout.sender.is_ready() {
            return;
        }
        let dropped = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let at = match idle.iter().position(|(k, _)| k.same(&checkout.key)) {
                Some(at) => at,
                None => {
                    idle.push((checkout.key.clone(), Vec::new()));
                    idle.len() - 1
                }
            };
            let list = &mut idle[at].1;
            // Full: the oldest goes (dropped outside the lock).
            let oldest = (list.len() >= self.max_idle_per_host).then(|| list.remove(0));
            list.push(Idle {
                checkout,
                since: Instant::now(),
            });
            oldest
        };
        drop(dropped);
        if !self.reaper.swap(true, Ordering::Relaxed) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(reap(Arc::downgrade(self)));
            }
        }
    }

    /// Drop the idle connections past the idle timeout or closed by the peer.
    fn reap(&self) {
        let dropped: Vec<Idle<B>> = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let mut dropped = Vec::new();
            for (_, list) in idle.iter_mut() {
                let mut i = 0;
                while i < list.len() {
                    let entry = &mut list[i];
                    let c = &mut *entry.checkout;
                    if entry.since.elapsed() < self.idle_timeout && usable(&c.sender, &mut c.conn) {
                        i += 1;
                    } else {
                        dropped.push(list.remove(i));
                    }
                }
            }
            idle.retain(|(_, list)| !list.is_empty());
            dropped
        };
        drop(dropped);
    }

    /// A new connection to `key`.
    async fn connect(self: &Arc<Self>, key: &PoolKey) -> Result<Box<Checkout<B>>, BoxError> {
        let uri = Uri::builder()
            .scheme(key.scheme.clone())
            .authority(key.authority.clone())
            .path_and_query("/")
            .build()?;
        let io = self
            .connector
            .clone()
            .oneshot(uri)
            .await
            .map_err(connect_error)?;
        let (sender, conn) = http1::Builder::new().handshake(io).await?;
        Ok(Box::new(Checkout {
            sender,
            conn,
            wake: SelfWake::new(),
            pool: Arc::downgrade(self),
            key: key.clone(),
        }))
    }

    /// Send `req` (absolute URI) and wait for the answer's head, driving the connection.
    ///
    /// Not an `async fn`, whose future would hold the request twice (the argument and its
    /// moved copy); and the rare wait for a new connection is boxed, so the future (boxed per
    /// request, and copied there whole) carries no room for it.
    pub(super) fn send(
        self: Arc<Self>,
        mut req: Request<B>,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, BoxError>> + Send + 'static {
        let key = to_origin_form(&mut req);
        async move {
            let key = key?;
            loop {
                let (checkout, reused) = match self.take(&key) {
                    Some(checkout) => (checkout, true),
                    None => (Box::pin(self.connect(&key)).await?, false),
                };
                match exchange(checkout, req).await {
                    Ok((res, checkout)) => {
                        let driver = checkout.map(|c| c as Box<dyn Drive>);
                        return Ok(res.map(|body| UpstreamBody { body, driver }));
                    }
                    Err(mut e) => match e.take_message() {
                        // A reused connection closed before the request went out: once more, on a
                        // new connection (`take` would not give that one out again).
                        Some(back) if reused => req = back,
                        _ => return Err(e.into_error().into()),
                    },
                }
            }
        }
    }
}

/// Send `req` on `checkout`'s connection and drive the connection until the answer's head
/// arrives; the connection comes back with the answer unless it ended meanwhile.
#[allow(clippy::type_complexity, clippy::result_large_err)]
async fn exchange<B>(
    checkout: Box<Checkout<B>>,
    req: Request<B>,
) -> Result<
    (Response<Incoming>, Option<Box<Checkout<B>>>),
    hyper::client::conn::TrySendError<Request<B>>,
>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut checkout = checkout;
    let mut sent = std::pin::pin!(checkout.sender.try_send_request(req));
    let mut checkout = Some(checkout);
    let res = poll_fn(|cx| {
        if let Some(c) = checkout.as_mut() {
            let Checkout { conn, wake, .. } = &mut **c;
            // The connection first: it writes the request and reads the answer's head, which
            // it hands over (waking the task: polled again at once instead).
            let polled = wake.poll(cx, |own| {
                if Pin::new(&mut *conn).poll(own).is_ready() {
                    return Poll::Ready(None);
                }
                sent.as_mut().poll(own).map(Some)
            });
            match polled {
                Poll::Ready(Some(res)) => return Poll::Ready(res),
                Poll::Pending => return Poll::Pending,
                // Ended (closed, or failed): dropping it answers the request with the error.
                Poll::Ready(None) => checkout = None,
            }
        }
        sent.as_mut().poll(cx)
    })
    .await?;
    Ok((res, checkout))
}

/// `req`'s URI in origin form (the path), its `Host` header set from the URI when absent, its
/// version HTTP/1.1: what hyper-util's client does for an HTTP/1.1 connection.
fn to_origin_form<B>(req: &mut Request<B>) -> Result<PoolKey, BoxError> {
    let uri = req.uri();
    let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the upstream request's URI `{uri}` is not absolute"),
        )
        .into());
    };
    let key = PoolKey {
        scheme: scheme.clone(),
        authority: authority.clone(),
    };
    if !req.headers().contains_key(HOST) {
        let default_port = if key.scheme == Scheme::HTTPS { 443 } else { 80 };
        let host = match key.authority.port_u16() {
            Some(port) if port != default_port => {
                HeaderValue::from_str(&format!("{}:{port}", key.authority.host()))
            }
            _ => HeaderValue::from_str(key.authority.host()),
        }?;
        req.headers_mut().insert(HOST, host);
    }
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(path);
    if req.version() != Version::HTTP_10 {
        *req.version_mut() = Version::HTTP_11;
    }
    Ok(key)
}

/// A failed connect as an I/O error of the kind the classifier reads: `TimedOut` for a
/// connect timeout (a silent target), otherwise `ConnectionRefused`-like `Other` kinds (a
/// transport failure), the cause kept as its source.
fn connect_error(e: BoxError) -> BoxError {
    let mut current: Option<&(dyn StdError + 'static)> = Some(&*e);
    let mut timed_out = false;
    while let Some(err) = current {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            timed_out |= io.kind() == io::ErrorKind::TimedOut;
        }
        current = err.source();
    }
    let kind = if timed_out {
        io::ErrorKind::TimedOut
    } else {
        io::ErrorKind::ConnectionRefused
    };
    Box::new(io::Error::new(kind, ConnectFailed(e)))
}

/// Connecting to the upstream failed: the connector's error.
#[derive(Debug)]
struct ConnectFailed(BoxError);

impl fmt::Display for ConnectFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connecting to the upstream failed: {}", self.0)
    }
}

impl StdError for ConnectFailed {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}

/// A connection the answer's body drives, type-erased (the request body type stays out of the
/// answer's).
trait Drive: Send {
    /// The answer's next frame from `body`, polling the connection whenever the body has
    /// nothing at hand; `ended` is set once the connection has ended (the body then sees the
    /// end or the error on its own).
    fn poll_frame(
        &mut self,
        body: &mut Incoming,
        ended: &mut bool,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>>;
    /// The answer ended: back to the pool, if the connection can take another request.
    fn release(self: Box<Self>);
}

impl<B> Drive for Checkout<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    fn poll_frame(
        &mut self,
        body: &mut Incoming,
        ended: &mut bool,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let Checkout { conn, wake, .. } = self;
        // The body, then (when it has nothing) the connection, which may hand it a frame, then
        // the body once more. The two wake each other as they go (the connection the body's
        // reader when it hands over a frame, the body the connection when it takes one): with
        // their own waker, those wake-ups are noted here instead of sent to the task.
        wake.poll(cx, |own| {
            for _ in 0..2 {
                match Pin::new(&mut *body).poll_frame(own) {
                    Poll::Pending => {}
                    frame => return frame,
                }
                if *ended {
                    break;
                }
                *ended = Pin::new(&mut *conn).poll(own).is_ready();
            }
            Poll::Pending
        })
    }

    fn release(self: Box<Self>) {
        if let Some(pool) = self.pool.upgrade() {
            pool.put(self);
        }
    }
}

/// The body of an upstream answer from [`UpstreamClient`](super::UpstreamClient): hyper's, and
/// for an HTTP/1.1 connection the connection itself, polled whenever the body has nothing at hand
/// (see the [`client`](crate::client) module docs). Dropped before its end, it closes the
/// connection.
pub struct UpstreamBody {
    body: Incoming,
    driver: Option<Box<dyn Drive>>,
}

impl UpstreamBody {
    /// A body read from a connection that runs in a task of its own (HTTP/2).
    pub(super) fn spawned(body: Incoming) -> Self {
        UpstreamBody { body, driver: None }
    }
}

impl fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("body", &self.body)
            .field("driven", &self.driver.is_some())
            .finish()
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = match this.driver.as_mut() {
            Some(driver) => {
                let mut ended = false;
                let polled = driver.poll_frame(&mut this.body, &mut ended, cx);
                if ended {
                    // The body sees the end or the error on its own from here.
                    this.driver = None;
                }
                polled
            }
            None => Pin::new(&mut this.body).poll_frame(cx),
        };
        match polled {
            Poll::Ready(None) => {
                if let Some(driver) = this.driver.take() {
                    driver.release();
                }
            }
            Poll::Ready(Some(Err(_))) => this.driver = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Every so often, drop the idle connections past the idle timeout or closed by the peer;
/// ends with the pool.
async fn reap<B>(pool: Weak<Pool<B>>)
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let period = match pool.upgrade() {
        Some(pool) => {
            (pool.idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(10))
        }
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match pool.upgrade() {
            Some(pool) => pool.reap(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_llm_core::{classify_error, ErrorKind};

    /// A connect timeout reads as a silent target, anything else as a transport failure,
    /// whatever wraps the I/O error.
    #[test]
    fn connect_errors_read_as_timeout_or_transport() {
        let timed_out: BoxError = Box::new(io::Error::new(io::ErrorKind::TimedOut, "slow"));
        let err = connect_error(timed_out);
        assert_eq!(classify_error(&*err).kind, ErrorKind::Timeout);
        assert!(err.to_string().contains("slow"), "{err}");

        let refused: BoxError = Box::new(io::Error::new(io::ErrorKind::ConnectionRefused, "no"));
        assert_eq!(
            classify_error(&*connect_error(refused)).kind,
            ErrorKind::Transport
        );
        // A TLS failure surfaces as invalid data from rustls: still a transport failure.
        let tls: BoxError = Box::new(io::Error::new(io::ErrorKind::InvalidData, "bad cert"));
        assert_eq!(
            classify_error(&*connect_error(tls)).kind,
            ErrorKind::Transport
        );
    }

    #[test]
    fn requests_go_out_in_origin_form_with_their_host() {
        let mut req = Request::post("http://example.test:8080/v1/chat?x=1")
            .body(())
            .unwrap();
        let key = to_origin_form(&mut req).unwrap();
        assert_eq!(key.authority.as_str(), "example.test:8080");
        assert_eq!(req.uri().to_string(), "/v1/chat?x=1");
        assert_eq!(req.headers()[HOST], "example.test:8080");
        assert_eq!(req.version(), Version::HTTP_11);

        let mut req = Request::get("https://example.test:443").body(()).unwrap();
        *req.version_mut() = Version::HTTP_2;
        to_origin_form(&mut req).unwrap();
        assert_eq!(req.uri().to_string(), "/");
        assert_eq!(req.headers()[HOST], "example.test");
        assert_eq!(req.version(), Version::HTTP_11);

        // A Host header already set is kept.
        let mut req = Request::get("http://127.0.0.1:9/")
            .header(HOST, "api.example.test")
            .body(())
            .unwrap();
        to_origin_form(&mut req).unwrap();
        assert_eq!(req.headers()[HOST], "api.example.test");
    }
}
