//! The accept loop: hyper's HTTP/1 server per connection, with the server limits of `[gateway]`.
//!
//! - `header_read_timeout_ms`: hyper's header-read timer. It runs whenever a connection waits
//!   for a request head, from the connection's start and, on keep-alive, from the end of the
//!   previous answer, so it bounds both a client sending half a head and an idle keep-alive
//!   connection; then the connection is closed.
//! - `max_connections`: a semaphore permit per connection, taken before `accept`: at the cap the
//!   gateway stops accepting, and new connections wait in the kernel's listen backlog (and are
//!   served, in order, as others close) rather than being accepted and dropped.
//! - `shutdown_grace_ms`: on shutdown the listener is closed, every connection is told to finish
//!   (hyper's graceful shutdown: idle ones close at once, busy ones after their answer), and
//!   those still open when the grace period ends are closed.
//!
//! Every accepted socket gets `TCP_NODELAY`: streamed events are small writes that Nagle's
//! algorithm would otherwise hold back until the client's delayed ACK. Each connection is polled
//! through [`PollAgain`]: hyper's request body wakes the connection's own task when the handler
//! takes it, and a wake-up made during the poll is polled again at once instead of through the
//! scheduler (which would put the task back in its queue and wake a parked worker for nothing).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use axum::body::{Bytes, HttpBody as Body};
use axum::BoxError;
use futures_util::TryFutureExt;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tower::{Service, ServiceExt};
use tower_llm::client::PollAgain;

use crate::drain::{Ended, UntilDrained};
use crate::gated_body::GatedBody;
use crate::gated_future::GatedFuture;
use crate::wake::WakeFlag;

/// The limits the accept loop applies.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServeLimits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) grace: Duration,
}

/// Serve `app` on `listener` until `stop` turns true, then drain within the grace period.
pub(crate) async fn serve<S, B>(
    listener: TcpListener,
    app: S,
    limits: ServeLimits,
    permits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut connections = JoinSet::new();
    let (drain_tx, drain_rx) = watch::channel(false);
    loop {
        // Forget connections that ended (their permits are back already).
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of descriptors and the like: wait a little instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let mut drain = drain_rx.clone();
        connections.spawn(async move {
            let _permit = permit;
            // hyper polls the handler's future and the answer's body on every wake-up of this
            // task; the gates let through only those that were theirs (`gated_future.rs`,
            // `gated_body.rs`). The handler's flag is the connection's: one request at a time.
            let flag = WakeFlag::new(false);
            let waker = Waker::from(Arc::clone(&flag));
            let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                let answer = app
                    .clone()
                    .oneshot(req)
                    .map_ok(|res| res.map(GatedBody::new));
                GatedFuture::new(answer, Arc::clone(&flag), waker.clone())
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            // Polled again at once when it wakes itself, not through the scheduler (a yield
            // and a parked worker woken for nothing: `tower_llm::client::PollAgain`).
            let conn = PollAgain::new(builder.serve_connection(TokioIo::new(tcp), service));
            tokio::pin!(conn);
            let signal = std::pin::pin!(drain.wait_for(|drain| *drain));
            if let Ended::Finished(_) = UntilDrained::new(conn.as_mut(), signal).await {
                return;
            }
            conn.as_mut().inner().graceful_shutdown();
            let _ = conn.await;
        });
    }
    // No new connections from here on.
    drop(listener);
    let _ = drain_tx.send(true);
    let drained = tokio::time::timeout(limits.grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            grace_ms = u64::try_from(limits.grace.as_millis()).unwrap_or(u64::MAX),
            "shutdown grace period over: closing the connections still open"
        );
        connections.shutdown().await;
    }
}
