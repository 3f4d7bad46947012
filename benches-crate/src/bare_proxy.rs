//! The physical baseline of the gateway benches: a bare pass-through HTTP/1.1 proxy.
//!
//! hyper's server in front, hyper-util's pooled client behind, bodies streamed both ways frame by
//! frame, `TCP_NODELAY` on both sides (as the gateway sets it), no layers, no parsing, no
//! headers added or removed: what any streaming HTTP hop costs at the least. `gateway_load` runs
//! it as a separate process (so its CPU time can be read from `/proc`) next to the gateway.
//!
//! ```
//! use http_body_util::{BodyExt, Full};
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tower_llm_benches::bare_proxy;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // An upstream that answers every request with "hello" (the benches use the chaos mock).
//! let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let upstream_addr = upstream.local_addr()?;
//! tokio::spawn(async move {
//!     let (stream, _) = upstream.accept().await?;
//!     let answer = hyper::service::service_fn(|_req| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(bytes::Bytes::from("hello"))))
//!     });
//!     hyper::server::conn::http1::Builder::new()
//!         .serve_connection(hyper_util::rt::TokioIo::new(stream), answer)
//!         .await
//!         .map_err(std::io::Error::other)
//! });
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let proxy_addr = listener.local_addr()?;
//! tokio::spawn(bare_proxy::serve(listener, upstream_addr));
//!
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
//! let res = client.get(format!("http://{proxy_addr}/v1/models").parse()?).await?;
//! assert_eq!(res.status(), 200);
//! assert_eq!(res.into_body().collect().await?.to_bytes(), "hello");
//! # Ok(())
//! # }
//! ```

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The proxy's answer body: the upstream's, streamed, or empty for its own 502.
pub type ProxyBody = Either<Incoming, Empty<Bytes>>;

/// Accept connections on `listener` for ever and forward every request to `upstream` (same path
/// and query, same method, headers and body), answering with the upstream's response as it
/// streams in; `502` when the upstream cannot be reached. Returns only when accepting fails.
pub async fn serve(listener: TcpListener, upstream: SocketAddr) -> io::Result<()> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .build(connector);
    loop {
        let (stream, _) = listener.accept().await?;
        // As the gateway does: small writes (one event) go out at once.
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| forward(client.clone(), upstream, req));
            // A client that goes away mid-answer ends its connection: nothing to report.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Send `req` on to `upstream` and hand its response back, body untouched.
async fn forward(
    client: Client<HttpConnector, Incoming>,
    upstream: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    match Uri::try_from(format!("http://{upstream}{path}")) {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
    }
    match client.request(req).await {
        Ok(res) => Ok(res.map(Either::Left)),
        Err(_) => Ok(status(StatusCode::BAD_GATEWAY)),
    }
}

fn status(code: StatusCode) -> Response<ProxyBody> {
    let mut res = Response::new(Either::Right(Empty::new()));
    *res.status_mut() = code;
    res
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use std::future::Future;
    use tower_llm_chaos::{Fault, MockUpstream};

    /// A proxy served by `serve` on a fresh loopback port, in front of `upstream`.
    pub(crate) async fn listening<F, Fut>(serve: F, upstream: SocketAddr) -> SocketAddr
    where
        F: FnOnce(TcpListener, SocketAddr) -> Fut,
        Fut: Future<Output = io::Result<()>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, upstream));
        addr
    }

    async fn proxy_to(upstream: SocketAddr) -> SocketAddr {
        listening(serve, upstream).await
    }

    pub(crate) fn chat(addr: SocketAddr, stream: bool) -> Request<Full<Bytes>> {
        Request::post(format!("http://{addr}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(Full::from(format!(
                r#"{{"model":"m","messages":[],"stream":{stream}}}"#
            )))
            .unwrap()
    }

    /// Through a proxy served by `serve`: a client that reads one event of a stalled stream and
    /// goes away closes the proxy's upstream connection.
    pub(crate) async fn a_client_going_away_mid_stream_closes_the_upstream_connection<F, Fut>(
        serve: F,
    ) where
        F: FnOnce(TcpListener, SocketAddr) -> Fut,
        Fut: Future<Output = io::Result<()>> + Send + 'static,
    {
        let mock = MockUpstream::builder()
            .default_fault(Fault::Stall { after: 2 })
            .start()
            .await
            .unwrap();
        let proxy = listening(serve, mock.addr()).await;
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build_http::<Full<Bytes>>();
        let res = client.request(chat(proxy, true)).await.unwrap();
        let mut body = res.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.data_ref().unwrap().starts_with(b"data: "));
        assert_eq!(mock.open_connections(), 1);
        drop(body);
        drop(client);
        // The proxy's server connection ends, its upstream body is dropped, the mock sees the
        // connection close (bounded wait on real loopback IO).
        for _ in 0..500 {
            if mock.open_connections() == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        panic!("the upstream connection stayed open");
    }

    #[tokio::test]
    async fn answers_are_the_upstreams_byte_for_byte() {
        let mock = MockUpstream::builder().start().await.unwrap();
        let proxy = proxy_to(mock.addr()).await;
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        for stream in [false, true] {
            let direct = client.request(chat(mock.addr(), stream)).await.unwrap();
            let proxied = client.request(chat(proxy, stream)).await.unwrap();
            assert_eq!(proxied.status(), 200);
            assert_eq!(
                proxied.headers()["content-type"],
                direct.headers()["content-type"]
            );
            let direct = direct.into_body().collect().await.unwrap().to_bytes();
            let proxied = proxied.into_body().collect().await.unwrap().to_bytes();
            // The mock numbers its completions: the proxied one is the next.
            let renumbered = String::from_utf8(proxied.to_vec()).unwrap().replace(
                &tower_llm_chaos::canonical::completion_id(if stream { 4 } else { 2 }),
                &tower_llm_chaos::canonical::completion_id(if stream { 3 } else { 1 }),
            );
            assert_eq!(renumbered.as_bytes(), &direct[..]);
        }
        let attempts = mock.attempts();
        assert_eq!(attempts.len(), 4);
        assert_eq!(attempts[1].path, "/v1/chat/completions");
        assert_eq!(attempts[1].headers["content-type"], "application/json");
    }

    #[tokio::test]
    async fn a_dead_upstream_is_a_502_and_an_upstream_error_passes_through() {
        let mock = MockUpstream::builder()
            .default_fault(Fault::status(429).retry_after_secs(2))
            .start()
            .await
            .unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let res = client
            .request(chat(proxy_to(mock.addr()).await, false))
            .await
            .unwrap();
        assert_eq!(res.status(), 429);
        assert_eq!(res.headers()["retry-after"], "2");

        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone = closed.local_addr().unwrap();
        drop(closed);
        let res = client
            .request(chat(proxy_to(gone).await, false))
            .await
            .unwrap();
        assert_eq!(res.status(), 502);
    }

    #[tokio::test]
    async fn a_client_that_goes_away_mid_stream_releases_the_upstream_connection() {
        a_client_going_away_mid_stream_closes_the_upstream_connection(serve).await;
    }
}
