//! The mock served over TLS (the `tls` feature): a certificate and key from PEM, HTTP/2 offered by
//! ALPN unless turned off.
//!
//! ```
//! use tower_llm_chaos::{MockTls, MockUpstream};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A self-signed certificate for the loopback address (tests sign one with their own CA).
//! let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])?;
//! let tls = MockTls::from_pem(&cert.cert.pem(), &cert.key_pair.serialize_pem())?.http2(false);
//! let upstream = MockUpstream::builder().tls(tls).start().await?;
//! assert!(upstream.base_url().starts_with("https://127.0.0.1:"));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// The TLS side of a [`MockUpstream`](crate::MockUpstream): its certificate and whether HTTP/2 is
/// offered. Pass it to [`MockUpstreamBuilder::tls`](crate::MockUpstreamBuilder::tls).
#[derive(Clone)]
pub struct MockTls {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    http2: bool,
}

impl fmt::Debug for MockTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of logs.
        f.debug_struct("MockTls")
            .field("certificates", &self.chain.len())
            .field("http2", &self.http2)
            .finish_non_exhaustive()
    }
}

impl MockTls {
    /// The server's certificate chain (leaf first) and private key, both PEM. HTTP/2 is offered
    /// by ALPN (`h2`, then `http/1.1`); see [`http2`](Self::http2).
    ///
    /// Fails with [`io::ErrorKind::InvalidInput`] when the PEM holds no certificate or no key.
    pub fn from_pem(cert_chain_pem: &str, key_pem: &str) -> io::Result<MockTls> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
        let chain = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("bad certificate PEM: {e}")))?;
        if chain.is_empty() {
            return Err(invalid("no certificate in the PEM".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| invalid(format!("bad private key PEM: {e}")))?;
        Ok(MockTls {
            chain,
            key: Arc::new(key),
            http2: true,
        })
    }

    /// Offer HTTP/2 by ALPN (default `true`); with `false` only `http/1.1` is offered, and every
    /// connection is HTTP/1.1.
    pub fn http2(mut self, offer: bool) -> Self {
        self.http2 = offer;
        self
    }

    /// The acceptor for the mock's connections.
    pub(super) fn acceptor(&self) -> io::Result<TlsAcceptor> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        config.alpn_protocols = if self.http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}
