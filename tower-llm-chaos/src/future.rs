//! [`ResponseFuture`]: the future of a [`Chaos`](crate::Chaos) call.
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Service, ServiceExt};
//! use tower_layer::Layer;
//! use tower_llm_chaos::{future::ResponseFuture, ChaosLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_llm_core::BoxError> {
//! tokio::time::pause();
//! let layer = ChaosLayer::builder().latency(Duration::from_secs(3), 1.0).build()?;
//! let mut svc = layer.layer(service_fn(|x: u8| async move { Ok::<_, std::io::Error>(x) }));
//! let start = tokio::time::Instant::now();
//! // The future is a named type: it can be stored in a struct without boxing.
//! let future: ResponseFuture<_, u8> = svc.ready().await?.call(1);
//! assert_eq!(future.await?, 1);
//! assert!(start.elapsed() >= Duration::from_secs(3));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project::pin_project;
use tokio::time::Sleep;
use tower_llm_core::BoxError;

/// What a call does once its injected delay (if any) has passed.
pub(crate) enum Next<Fut, Res> {
    /// Poll the inner service's future.
    Forward(Fut),
    /// Return this (an injected error or canned response).
    Ready(Result<Res, BoxError>),
}

/// The future of a [`Chaos`](crate::Chaos) call: the inner future, possibly after an injected
/// delay, or an injected result. A forwarded call without delay allocates nothing.
#[pin_project]
pub struct ResponseFuture<Fut, Res> {
    #[pin]
    state: State<Fut, Res>,
}

#[pin_project(project = StateProj)]
enum State<Fut, Res> {
    Delayed {
        // Boxed: only injected delays pay for a timer, forwarded calls stay small.
        sleep: Pin<Box<Sleep>>,
        next: Option<Next<Fut, Res>>,
    },
    Inner {
        #[pin]
        future: Fut,
    },
    Ready {
        result: Option<Result<Res, BoxError>>,
    },
}

impl<Fut, Res> ResponseFuture<Fut, Res> {
    pub(crate) fn forward(future: Fut) -> Self {
        ResponseFuture {
            state: State::Inner { future },
        }
    }

    pub(crate) fn new(delay: Option<Duration>, next: Next<Fut, Res>) -> Self {
        let state = match (delay, next) {
            (Some(delay), next) => State::Delayed {
                sleep: Box::pin(tokio::time::sleep(delay)),
                next: Some(next),
            },
            (None, Next::Forward(future)) => State::Inner { future },
            (None, Next::Ready(result)) => State::Ready {
                result: Some(result),
            },
        };
        ResponseFuture { state }
    }
}

impl<Fut, Res> fmt::Debug for ResponseFuture<Fut, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Delayed { .. } => "delayed",
            State::Inner { .. } => "inner",
            State::Ready { .. } => "ready",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

/// The future was polled again after it completed.
#[derive(Debug)]
struct PolledAfterCompletion;

impl fmt::Display for PolledAfterCompletion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("chaos response future polled after completion")
    }
}

impl std::error::Error for PolledAfterCompletion {}

impl<Fut, Res, E> Future for ResponseFuture<Fut, Res>
where
    Fut: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Delayed { sleep, next } => {
                    ready!(sleep.as_mut().poll(cx));
                    match next.take() {
                        Some(Next::Forward(future)) => state.set(State::Inner { future }),
                        Some(Next::Ready(result)) => state.set(State::Ready {
                            result: Some(result),
                        }),
                        None => return Poll::Ready(Err(Box::new(PolledAfterCompletion))),
                    }
                }
                StateProj::Inner { future } => return future.poll(cx).map_err(Into::into),
                StateProj::Ready { result } => {
                    return Poll::Ready(
                        result
                            .take()
                            .unwrap_or_else(|| Err(Box::new(PolledAfterCompletion))),
                    )
                }
            }
        }
    }
}
