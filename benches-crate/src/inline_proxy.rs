//! The floor under the physical baseline: a bare pass-through proxy whose upstream connections
//! are driven inline.
//!
//! As [`bare_proxy`](crate::bare_proxy), but each upstream HTTP/1.1 connection is polled by the
//! downstream connection's task, from the response future and then from the response body,
//! rather than by a task of its own (what `tower_llm::client::UpstreamClient` does for HTTP/1.1):
//! no wake-up crosses tasks per event, and every event already read from the upstream socket is
//! handed to hyper's server in the same poll, which writes them together. `gateway_load
//! --serve-bare-proxy ADDR` serves it instead of the bare proxy when `BARE_PROXY_INLINE` is set
//! (`scripts/callgrind_proxy.sh bare ...` with it set counts it). No TLS, one pool for one
//! upstream, idle connections checked only when reused: a bench baseline, not a client.
//!
//! ```
//! use http_body_util::{BodyExt, Full};
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tower_llm_benches::inline_proxy;
//! use tower_llm_chaos::MockUpstream;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let upstream = MockUpstream::builder().start().await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let proxy_addr = listener.local_addr()?;
//! tokio::spawn(inline_proxy::serve(listener, upstream.addr()));
//!
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
//! let req = http::Request::post(format!("http://{proxy_addr}/v1/chat/completions"))
//!     .body(Full::from(r#"{"model":"m","messages":[],"stream":true}"#))?;
//! let res = client.request(req).await?;
//! assert_eq!(res.status(), 200);
//! let text = res.into_body().collect().await?.to_bytes();
//! assert!(text.ends_with(b"data: [DONE]\n\n"));
//! # Ok(())
//! # }
//! ```

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type Conn = Connection<TokioIo<TcpStream>, Incoming>;
type Sender = SendRequest<Incoming>;

/// Idle upstream connections (newest last).
#[derive(Clone, Default)]
struct Pool {
    idle: Arc<Mutex<Vec<(Sender, Conn)>>>,
}

impl Pool {
    fn take(&self) -> Option<(Sender, Conn)> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((sender, conn)) = idle.pop() {
            if !sender.is_closed() {
                return Some((sender, conn));
            }
        }
        None
    }

    fn put(&self, sender: Sender, conn: Conn) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((sender, conn));
    }
}

/// Accept connections on `listener` for ever and forward every request to `upstream`, driving
/// each upstream connection from the downstream connection's task.
pub async fn serve(listener: TcpListener, upstream: SocketAddr) -> io::Result<()> {
    let pool = Pool::default();
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let pool = pool.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| forward(pool.clone(), upstream, req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A new connection to `upstream`.
async fn connect(
    upstream: SocketAddr,
) -> Result<(Sender, Conn), Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    Ok(http1::handshake(TokioIo::new(stream)).await?)
}

/// Send `req` on to `upstream` on a pooled or new connection, driving it until the answer's head
/// arrives; the answer's body drives it from then on.
async fn forward(
    pool: Pool,
    upstream: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<InlineBody>, Infallible> {
    let (mut sender, mut conn) = match pool.take() {
        Some(pair) => pair,
        None => match connect(upstream).await {
            Ok(pair) => pair,
            Err(_) => return Ok(status(StatusCode::BAD_GATEWAY)),
        },
    };
    let mut sent = std::pin::pin!(sender.send_request(req));
    let mut conn_done = false;
    let answer = poll_fn(|cx| {
        for _ in 0..2 {
            if let Poll::Ready(res) = sent.as_mut().poll(cx) {
                return Poll::Ready(res);
            }
            if conn_done {
                return Poll::Pending;
            }
            if Pin::new(&mut conn).poll(cx).is_ready() {
                conn_done = true;
            }
        }
        Poll::Pending
    })
    .await;
    match answer {
        Ok(res) => Ok(res.map(|body| InlineBody {
            body: Some(body),
            conn: (!conn_done).then_some((sender, conn)),
            pool,
        })),
        Err(_) => Ok(status(StatusCode::BAD_GATEWAY)),
    }
}

/// The proxy's own answer (no body).
fn status(code: StatusCode) -> Response<InlineBody> {
    let mut res = Response::new(InlineBody {
        body: None,
        conn: None,
        pool: Pool::default(),
    });
    *res.status_mut() = code;
    res
}

/// The upstream's body (`None`: the proxy's own empty answer), its connection polled whenever
/// the body has nothing at hand, and pooled again at its end.
pub struct InlineBody {
    body: Option<Incoming>,
    conn: Option<(Sender, Conn)>,
    pool: Pool,
}

impl Body for InlineBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        for _ in 0..2 {
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(None) => {
                    if let Some((sender, mut conn)) = this.conn.take() {
                        // Let the connection go idle, then keep it.
                        if Pin::new(&mut conn).poll(cx).is_pending() && sender.is_ready() {
                            this.pool.put(sender, conn);
                        }
                    }
                    return Poll::Ready(None);
                }
                Poll::Ready(some) => return Poll::Ready(some),
                Poll::Pending => {}
            }
            match &mut this.conn {
                Some((_, conn)) => {
                    if Pin::new(conn).poll(cx).is_ready() {
                        this.conn = None;
                    }
                }
                None => return Poll::Pending,
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or(SizeHint::with_exact(0), Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bare_proxy::tests::{
        a_client_going_away_mid_stream_closes_the_upstream_connection, chat, listening,
    };
    use http_body_util::BodyExt;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tower_llm_chaos::MockUpstream;

    #[tokio::test]
    async fn answers_arrive_whole_over_one_upstream_connection() {
        let mock = MockUpstream::builder()
            .answer_tokens(100)
            .start()
            .await
            .unwrap();
        let proxy = listening(serve, mock.addr()).await;
        let client =
            Client::builder(TokioExecutor::new()).build_http::<http_body_util::Full<Bytes>>();
        for stream in [true, false, true] {
            let res = client.request(chat(proxy, stream)).await.unwrap();
            assert_eq!(res.status(), 200);
            let body = res.into_body().collect().await.unwrap().to_bytes();
            let text = String::from_utf8(body.to_vec()).unwrap();
            if stream {
                assert_eq!(text.matches("data: ").count(), 102, "{text}");
            } else {
                assert!(text.contains("\"chat.completion\""), "{text}");
            }
        }
        assert_eq!(mock.attempt_count(), 3);
        assert_eq!(mock.open_connections(), 1);
    }

    #[tokio::test]
    async fn a_client_that_goes_away_mid_stream_closes_the_upstream_connection() {
        a_client_going_away_mid_stream_closes_the_upstream_connection(serve).await;
    }
}
