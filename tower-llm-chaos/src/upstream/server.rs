//! The accept loop, one connection per task (HTTP/1.1, or HTTP/2 when TLS negotiated `h2`), and
//! the request handler.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::prefill;
use super::respond::{self, Reply};
use super::{Attempt, MockBody, Shared, COMPLETIONS_SUFFIX};

/// What wraps each accepted connection in TLS (nothing can, without the `tls` feature).
#[cfg(feature = "tls")]
pub(super) type Acceptor = tokio_rustls::TlsAcceptor;
/// What wraps each accepted connection in TLS (nothing can, without the `tls` feature).
#[cfg(not(feature = "tls"))]
pub(super) type Acceptor = std::convert::Infallible;

pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<Acceptor>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Small SSE events must leave at once, not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    // Without the `tls` feature the acceptor is `Infallible`, which is `Copy`.
                    #[cfg_attr(not(feature = "tls"), allow(clippy::clone_on_copy))]
                    let tls = tls.clone();
                    connections.spawn(serve_connection(stream, shared.clone(), tls));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "mock upstream: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// Counts a connection as open for as long as it lives (also when its task is aborted).
struct OpenConnection(Arc<Shared>);

impl OpenConnection {
    fn new(shared: Arc<Shared>) -> Self {
        shared.open_connections.fetch_add(1, Ordering::AcqRel);
        shared.accepted_connections.fetch_add(1, Ordering::AcqRel);
        OpenConnection(shared)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>, tls: Option<Acceptor>) {
    let _open = OpenConnection::new(shared.clone());
    let reset = Arc::new(AtomicBool::new(false));
    let io = ConnIo {
        stream,
        reset: reset.clone(),
    };
    let service = hyper::service::service_fn(move |req| handle(req, shared.clone(), reset.clone()));
    let result = match tls {
        None => serve_http1(io, service).await,
        #[cfg(feature = "tls")]
        Some(acceptor) => {
            let stream = match acceptor.accept(io).await {
                Ok(stream) => stream,
                Err(error) => {
                    // A client that does not trust the mock's certificate ends here.
                    tracing::debug!(%error, "mock upstream: TLS handshake failed");
                    return;
                }
            };
            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await
            } else {
                serve_http1(stream, service).await
            }
        }
        #[cfg(not(feature = "tls"))]
        Some(never) => match never {},
    };
    if let Err(error) = result {
        tracing::trace!(%error, "mock upstream connection ended");
    }
}

async fn serve_http1<I, S>(io: I, service: S) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = MockBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
        .await
}

/// The connection's socket. When the handler asks for a reset, dropping it sets `SO_LINGER` to
/// zero first, so the kernel answers the close with an RST instead of a FIN.
struct ConnIo {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Acquire) {
            if let Err(error) = self.stream.set_zero_linger() {
                tracing::warn!(%error, "mock upstream: could not arm the connection reset");
            }
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The handler's error: hyper closes the connection without a response.
#[derive(Debug)]
pub(super) struct CloseConnection(&'static str);

impl std::fmt::Display for CloseConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for CloseConnection {}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    reset: Arc<AtomicBool>,
) -> Result<Response<MockBody>, CloseConnection> {
    let arrived = Instant::now();
    let at = arrived.saturating_duration_since(shared.started);
    if !req.uri().path().ends_with(COMPLETIONS_SUFFIX) {
        return Ok(respond::not_found(req.method(), req.uri().path()));
    }
    if req.method() != Method::POST {
        return Ok(respond::method_not_allowed(req.method()));
    }
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let version = parts.version;
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let rejected = |body: Bytes, fault: &'static str, reply: Response<MockBody>, model: String| {
        shared.record(Attempt {
            version,
            path: path.clone(),
            query: query.clone(),
            seq: 0,
            at,
            model,
            stream: false,
            fault,
            status: Some(reply.status().as_u16()),
            headers: headers.clone(),
            body,
        });
        Ok(reply)
    };

    let body = match Limited::new(body, shared.max_body_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<LengthLimitError>() => {
            let reply = respond::payload_too_large(shared.max_body_bytes);
            return rejected(Bytes::new(), "payload_too_large", reply, String::new());
        }
        // The client went away mid-body: nobody to answer.
        Err(_) => return Err(CloseConnection("request body read failed")),
    };
    let request = match serde_json::from_slice::<Value>(&body) {
        Ok(request @ Value::Object(_)) => request,
        _ => {
            let reply = respond::bad_request("the request body is not a JSON object");
            return rejected(body, "bad_request", reply, String::new());
        }
    };
    let model = match request.get("model") {
        Some(Value::String(model)) if !model.is_empty() => model.clone(),
        _ => {
            let reply = respond::bad_request("you must provide a model parameter");
            return rejected(body, "bad_request", reply, String::new());
        }
    };
    let stream = request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);

    let (prefill, answer) = shared.answering();
    let longer: Vec<&'static str>;
    let whole = match shared.answer_tokens {
        Some(n) => {
            longer = answer.tokens().iter().copied().cycle().take(n).collect();
            &longer[..]
        }
        None => answer.tokens(),
    };
    // A server validates the messages before running the model: a rejected prefill gets its 400
    // whatever the fault, and no sequence number (like the other rejections).
    let (seq, reply) = match prefill::decide(prefill, whole, &request) {
        prefill::Decision::Reject => (0, respond::prefill_rejected()),
        prefill::Decision::Answer(tokens) => {
            let seq = shared.seq.fetch_add(1, Ordering::Relaxed) + 1;
            let (picked, since_flap) = shared.pick(&model, arrived, seq);
            let fault = picked.resolve(since_flap, seq);
            (
                seq,
                respond::plan(
                    fault,
                    seq,
                    &model,
                    stream,
                    &request,
                    &tokens,
                    shared.token_interval,
                ),
            )
        }
    };
    if shared.wants_attempts() {
        shared.record(Attempt {
            version,
            path,
            query,
            seq,
            at,
            model,
            stream,
            fault: reply.fault_name(),
            status: reply.status(),
            headers,
            body,
        });
    } else {
        shared.count.send_modify(|count| *count += 1);
    }

    send(reply, &reset).await
}

/// Carry out the planned reply: answer (after its delay), never answer, or reset the connection.
async fn send(reply: Reply, reset: &AtomicBool) -> Result<Response<MockBody>, CloseConnection> {
    match reply {
        Reply::Respond {
            delay, response, ..
        } => {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            Ok(response)
        }
        Reply::Hang => std::future::pending().await,
        Reply::Reset => {
            reset.store(true, Ordering::Release);
            Err(CloseConnection("connection reset by the mock's fault"))
        }
    }
}
