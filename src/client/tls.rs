//! rustls client configurations (`ring` provider): the trusted roots (bundled or the platform's,
//! plus a provider's `ca_file`), the ALPN protocols, and TLS failures told in words.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::client::ClientConfig;
use rustls::{CertificateError, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::config::TlsRoots;

/// A client configuration trusting `roots` and the certificates of `ca_file`, offering `h2` by
/// ALPN when `http2`. The error says what is wrong, for the `tls_roots` or `ca_file` key.
pub(super) fn client_config(
    roots: TlsRoots,
    ca_file: Option<&Path>,
    http2: bool,
) -> Result<Arc<ClientConfig>, (&'static str, String)> {
    let mut store = RootCertStore::empty();
    match roots {
        TlsRoots::Webpki => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        TlsRoots::Native => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map_or_else(|| "it is empty".to_owned(), ToString::to_string);
                return Err((
                    "tls_roots",
                    format!("no usable certificate in the platform's trust store: {why}"),
                ));
            }
        }
    }
    if let Some(path) = ca_file {
        let shown = path.display();
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|e| ("ca_file", format!("cannot read `{shown}`: {e}")))?;
        if certs.is_empty() {
            return Err(("ca_file", format!("no certificate in `{shown}`")));
        }
        for cert in certs {
            store
                .add(cert)
                .map_err(|e| ("ca_file", format!("`{shown}`: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ("tls_roots", e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// A TLS handshake that failed: the host and why, in words (unknown issuer, name mismatch,
/// expired certificate, an alert from the server…). Inside hyper-util's connect error, so
/// [`classify_error`](tower_llm_core::classify_error) reads it as `transport`.
#[derive(Debug)]
pub struct TlsError {
    host: String,
    reason: String,
    source: io::Error,
}

impl TlsError {
    pub(super) fn new(host: String, source: io::Error) -> Self {
        let reason = reason(&host, &source);
        TlsError {
            host,
            reason,
            source,
        }
    }

    /// The host (and port) the handshake was with.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Why it failed, in words.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TLS handshake with {} failed: {}",
            self.host, self.reason
        )
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn reason(host: &str, error: &io::Error) -> String {
    let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        // Not rustls's verdict: the peer closed or reset the connection mid-handshake.
        return format!("handshake interrupted ({error})");
    };
    match tls {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => "unknown issuer: the server's certificate does not \
                 chain to a trusted root (`tls_roots`) nor to a CA of the provider's `ca_file`"
                .to_owned(),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("name mismatch: the server's certificate is not valid for `{host}`")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet".to_owned()
            }
            other => format!("invalid certificate ({other:?})"),
        },
        rustls::Error::AlertReceived(alert) => {
            format!("handshake refused: the server sent the alert `{alert:?}`")
        }
        rustls::Error::NoApplicationProtocol => {
            "handshake failed: no application protocol in common (ALPN)".to_owned()
        }
        other => format!("handshake failed: {other}"),
    }
}
