//! [`Connector`]: TCP (`TCP_NODELAY`, keep-alive, per-host address overrides), then TLS for
//! `https` with the provider's roots and ALPN, the whole within the connect timeout.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Scheme;
use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::Service;
use tower_llm_core::BoxError;

/// One connection of the default client: a TCP stream, in TLS for `https` (with the `tls`
/// feature).
#[cfg(feature = "tls")]
pub type Connection = hyper_rustls::MaybeHttpsStream<TokioIo<TcpStream>>;
/// One connection of the default client: a TCP stream (plain HTTP only without the `tls`
/// feature).
#[cfg(not(feature = "tls"))]
pub type Connection = TokioIo<TcpStream>;

/// The connector of [`UpstreamClient`](super::UpstreamClient): resolves the host (or takes the
/// address given to [`connect_to`](super::UpstreamClientBuilder::connect_to)), connects with
/// `TCP_NODELAY` and keep-alive, and for `https` performs the TLS handshake with the provider's
/// roots, offering `h2` by ALPN when `http2 = true`. TCP connect and handshake together must
/// finish within `connect_timeout_ms` (a `TimedOut` I/O error otherwise: a `timeout` failure).
/// A failed handshake is a [`TlsError`](super::TlsError) that says why.
#[derive(Clone)]
pub struct Connector {
    tcp: HttpConnector,
    overrides: Arc<HashMap<String, SocketAddr>>,
    #[cfg(feature = "tls")]
    tls: tokio_rustls::TlsConnector,
    timeout: Duration,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("timeout", &self.timeout)
            .field("tls", &cfg!(feature = "tls"))
            .finish_non_exhaustive()
    }
}

/// TCP settings of one [`Connector`].
pub(super) struct Tcp {
    pub(super) timeout: Duration,
    pub(super) keepalive: Option<Duration>,
    pub(super) overrides: Arc<HashMap<String, SocketAddr>>,
}

impl Connector {
    pub(super) fn new(
        tcp: Tcp,
        #[cfg(feature = "tls")] tls: Arc<rustls::ClientConfig>,
    ) -> Connector {
        let mut http = HttpConnector::new();
        // Small SSE writes must leave at once, not wait for the peer's delayed ACK.
        http.set_nodelay(true);
        http.set_keepalive(tcp.keepalive);
        // `https` URIs reach the TCP step too; TLS is added below.
        http.enforce_http(false);
        Connector {
            tcp: http,
            overrides: tcp.overrides,
            #[cfg(feature = "tls")]
            tls: tokio_rustls::TlsConnector::from(tls),
            timeout: tcp.timeout,
        }
    }
}

type ConnectFuture = Pin<Box<dyn Future<Output = Result<Connection, BoxError>> + Send>>;

impl Service<Uri> for Connector {
    type Response = Connection;
    type Error = BoxError;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let https = uri.scheme() == Some(&Scheme::HTTPS);
        let host = uri
            .authority()
            .map_or_else(String::new, ToString::to_string);
        let timeout = self.timeout;
        #[cfg(not(feature = "tls"))]
        if https {
            let message = format!(
                "cannot connect to https://{host}: tower-llm was built without its `tls` feature"
            );
            return Box::pin(async move { Err(io::Error::other(message).into()) });
        }
        // An overridden host is dialled at its address; TLS still checks the URI's host.
        let dial = match uri.host().and_then(|h| self.overrides.get(h)) {
            Some(addr) => match Uri::try_from(format!("http://{addr}/")) {
                Ok(dial) => dial,
                Err(e) => return Box::pin(async move { Err(e.into()) }),
            },
            None => uri.clone(),
        };
        let tcp = self.tcp.call(dial);
        #[cfg(feature = "tls")]
        let tls = self.tls.clone();
        Box::pin(async move {
            #[cfg(feature = "tls")]
            let tls_host = host.clone();
            let connect = async move {
                let tcp = tcp.await.map_err(BoxError::from)?;
                if !https {
                    return Ok(Connection::from(tcp));
                }
                #[cfg(feature = "tls")]
                {
                    let name = server_name(&uri)?;
                    match tls.connect(name, TokioIo::new(tcp)).await {
                        Ok(stream) => Ok(Connection::from(stream)),
                        Err(error) => {
                            Err(Box::new(super::TlsError::new(tls_host, error)) as BoxError)
                        }
                    }
                }
                #[cfg(not(feature = "tls"))]
                unreachable_https()
            };
            match tokio::time::timeout(timeout, connect).await {
                Ok(connected) => connected,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "connecting to {host} took longer than {} ms (`connect_timeout_ms`)",
                        timeout.as_millis()
                    ),
                )
                .into()),
            }
        })
    }
}

#[cfg(not(feature = "tls"))]
fn unreachable_https() -> Result<Connection, BoxError> {
    // `call` refuses https before connecting.
    Err(io::Error::other("https without the `tls` feature").into())
}

#[cfg(feature = "tls")]
fn server_name(uri: &Uri) -> Result<rustls::pki_types::ServerName<'static>, BoxError> {
    let host = uri.host().unwrap_or_default();
    // `[::1]` in a URI is `::1` to TLS.
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("`{host}`: {e}")).into())
}
