//! Key reloads: on SIGHUP (Unix) and [`Gateway::reload_keys`](crate::Gateway::reload_keys).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::task::JoinHandle;
use tower_llm::core::BoxError;

use crate::auth::KeyStore;
use crate::config::GatewayConfig;

/// What a reload put in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyReload {
    /// Client keys now in use.
    pub client_keys: usize,
    /// Admin keys now in use.
    pub admin_keys: usize,
}

/// The key stores and where their keys come from.
pub(crate) struct KeyReloader {
    config: GatewayConfig,
    client: Arc<KeyStore>,
    admin: Arc<KeyStore>,
    reloads: AtomicU64,
}

impl KeyReloader {
    pub(crate) fn new(config: GatewayConfig, client: Arc<KeyStore>, admin: Arc<KeyStore>) -> Self {
        KeyReloader {
            config,
            client,
            admin,
            reloads: AtomicU64::new(0),
        }
    }

    pub(crate) fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Read the keys again and replace both sets, or change nothing.
    pub(crate) fn reload(&self) -> Result<KeyReload, BoxError> {
        let fresh;
        let config = match &self.config.source_path {
            Some(path) => {
                fresh = GatewayConfig::from_file(path)?;
                &fresh
            }
            None => &self.config,
        };
        let client = config.client_keys()?;
        let admin = config.admin_keys()?;
        for (what, now, next) in [
            ("client", self.client.current(), &client),
            ("admin", self.admin.current(), &admin),
        ] {
            if now.enabled() && !next.enabled() {
                return Err(format!(
                    "the reload found no {what} key; the {} in use stay (a reload never turns \
                     authentication off: restart the gateway for that)",
                    now.len()
                )
                .into());
            }
        }
        let done = KeyReload {
            client_keys: client.len(),
            admin_keys: admin.len(),
        };
        tracing::info!(
            client_keys = done.client_keys,
            clients = %client.names().join(","),
            admin_keys = done.admin_keys,
            "keys reloaded"
        );
        self.client.replace(client);
        self.admin.replace(admin);
        self.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(done)
    }
}

/// A task reloading the keys on each SIGHUP; `None` where there is no SIGHUP (or its handler
/// cannot be installed: logged).
pub(crate) fn on_sighup(keys: Arc<KeyReloader>) -> Option<JoinHandle<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hangups) => Some(tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    if let Err(e) = keys.reload() {
                        tracing::error!(error = %e, "SIGHUP: keys not reloaded");
                    }
                }
            })),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler: keys reload only by Gateway::reload_keys");
                None
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = keys;
        None
    }
}
