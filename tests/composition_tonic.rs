//! Composition: a tonic gRPC client `Channel` wrapped in tower-llm's breaker and retry, against
//! a tonic server on loopback serving the gRPC health protocol (`tonic-health`'s generated
//! client and server: no protoc).
//!
//! Two pieces adapt the HTTP-generic layers to gRPC:
//! - [`GrpcClassifier`], a [`Classify`] for `http::Response<_>` that reads `grpc-status`. A unary
//!   call that fails is answered "trailers-only": HTTP 200 with `grpc-status` in the *headers*,
//!   which is what this classifier sees (a status sent in real trailers, after a streamed body,
//!   is not visible to it; that is a success as far as the layers are concerned).
//! - request bodies: tonic's `Body` is a stream, so core's `BufferRequestBodyLayer` buffers it
//!   into a `ReplayBody` above the retry (a unary request is one small frame), and a `map_request`
//!   below the retry turns it back into a tonic `Body` for the channel.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::stream::{self, BoxStream};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};
use tower::{Service, ServiceBuilder};
use tower_llm::breaker::{BreakerHandle, CircuitBreakerLayer, OpenReason, State};
use tower_llm::core::{
    BoxError, BreakerOpen, BufferRequestBodyLayer, Classification, Classify, ErrorKind, Failure,
    HttpClassifier, ReplayBody,
};
use tower_llm::retry::{Backoff, RetryLayer};

/// gRPC's own retry pushback (the gRPC retry design, A6): the server's delay in milliseconds.
const RETRY_PUSHBACK_MS: &str = "grpc-retry-pushback-ms";

/// Classifies gRPC responses by their `grpc-status` header; non-200 HTTP answers (a proxy's 503)
/// fall back to [`HttpClassifier`].
#[derive(Clone, Debug, Default)]
struct GrpcClassifier {
    http: HttpClassifier,
}

/// The taxonomy row of a gRPC status code, or `None` for `OK`.
fn grpc_kind(code: Code) -> Option<ErrorKind> {
    Some(match code {
        Code::Ok => return None,
        Code::Unavailable => ErrorKind::Overloaded,
        Code::ResourceExhausted => ErrorKind::RateLimited,
        Code::DeadlineExceeded => ErrorKind::Timeout,
        Code::Unauthenticated | Code::PermissionDenied => ErrorKind::Auth,
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::NotFound
        | Code::AlreadyExists
        | Code::Unimplemented => ErrorKind::BadRequest,
        Code::Internal | Code::Unknown | Code::DataLoss | Code::Aborted => ErrorKind::ServerError,
        Code::Cancelled => ErrorKind::Unknown,
    })
}

impl<B> Classify<http::Response<B>> for GrpcClassifier {
    fn classify_response(&self, res: &http::Response<B>) -> Classification {
        if res.status() != http::StatusCode::OK {
            return self.http.classify_response(res);
        }
        let header = |name: &str| res.headers().get(name).and_then(|v| v.to_str().ok());
        let code = match header("grpc-status").and_then(|v| v.parse::<i32>().ok()) {
            // No status yet: it comes in the trailers, after a body the layers do not read.
            None => return Classification::Success,
            Some(code) => Code::from(code),
        };
        match grpc_kind(code) {
            None => Classification::Success,
            Some(kind) => {
                let pushback = header(RETRY_PUSHBACK_MS)
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_millis);
                Classification::Failure(Failure::new(kind).with_retry_after(pushback))
            }
        }
    }
}

/// What the test server does with the next `Check` calls.
#[derive(Default)]
struct Script {
    /// Statuses to answer the next calls with, in order; then the real health service answers.
    errors: Mutex<VecDeque<Status>>,
    /// Every `Check` the server received.
    calls: AtomicUsize,
}

impl Script {
    fn fail_next(&self, n: usize, status: impl Fn() -> Status) {
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        errors.extend((0..n).map(|_| status()));
    }

    fn clear(&self) {
        self.errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// `tonic-health`'s own service, with scripted failures in front and a validating `service` name.
struct ScriptedHealth {
    real: HealthService,
    script: Arc<Script>,
}

#[tonic::async_trait]
impl Health for ScriptedHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.script.calls.fetch_add(1, Ordering::SeqCst);
        if request.get_ref().service.contains('/') {
            return Err(Status::invalid_argument("a service name has no '/'"));
        }
        let scripted = self
            .script
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        match scripted {
            Some(status) => Err(status),
            None => self.real.check(request).await,
        }
    }

    type WatchStream = BoxStream<'static, Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Ok(Response::new(Box::pin(stream::empty())))
    }
}

/// The client stack's settings per test.
struct Setup {
    failures_to_open: u32,
    max_attempts: u32,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            failures_to_open: 3,
            max_attempts: 3,
        }
    }
}

struct Harness {
    script: Arc<Script>,
    reporter: HealthReporter,
    breaker: BreakerHandle,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

/// What the client stack is, to the generated client: a `Service` over tonic's bodies.
trait GrpcStack:
    Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
        Error = BoxError,
        Future: Send,
    > + Clone
    + Send
{
}

impl<S> GrpcStack for S where
    S: Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = BoxError,
            Future: Send,
        > + Clone
        + Send
{
}

/// Start the health server on 127.0.0.1:0 (with `greeter` serving) and build the client stack.
async fn start(setup: Setup) -> (Harness, HealthClient<impl GrpcStack>) {
    let reporter = HealthReporter::new();
    reporter
        .set_service_status("greeter", tonic_health::ServingStatus::Serving)
        .await;
    let script = Arc::new(Script::default());
    let server = HealthServer::new(ScriptedHealth {
        real: HealthService::from_health_reporter(reporter.clone()),
        script: Arc::clone(&script),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        Server::builder()
            .add_service(server)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stopped.await;
            }),
    );

    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let breaker = CircuitBreakerLayer::builder()
        .name("health-grpc")
        .consecutive_failures(setup.failures_to_open)
        .open_duration(Duration::from_secs(5))
        .permitted_calls_in_half_open(1)
        .classifier(GrpcClassifier::default())
        .build()
        .unwrap();
    let retry = RetryLayer::builder()
        .max_attempts(setup.max_attempts)
        .backoff(Backoff::constant(Duration::from_millis(50)))
        .attempt_timeout(Duration::from_secs(5))
        .classifier(GrpcClassifier::default())
        .seed(3)
        .build()
        .unwrap();
    let breaker_handle = breaker.handle();
    let stack = ServiceBuilder::new()
        // tonic's request body is a stream: buffer it (a unary request is one small frame) so
        // the retry can send it again.
        .layer(BufferRequestBodyLayer::new(64 * 1024))
        .layer(breaker)
        .layer(retry)
        .map_request(|req: http::Request<ReplayBody<tonic::body::Body>>| {
            req.map(tonic::body::Body::new)
        })
        .service(channel);
    let harness = Harness {
        script,
        reporter,
        breaker: breaker_handle,
        _shutdown: shutdown,
    };
    (harness, HealthClient::new(stack))
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.into(),
    }
}

/// The breaker's rejection inside a `Status` (tonic wraps service errors as `Code::Unknown`
/// with the error as its source).
fn breaker_open(status: &Status) -> Option<&BreakerOpen> {
    std::iter::successors(Some(status as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    })
    .find_map(|e| e.downcast_ref::<BreakerOpen>())
}

#[tokio::test(start_paused = true)]
async fn a_healthy_server_answers_through_breaker_and_retry() {
    let (h, mut client) = start(Setup::default()).await;
    let res = client.check(check("greeter")).await.unwrap();
    assert_eq!(res.get_ref().status(), ServingStatus::Serving);

    // NOT_SERVING is an answer, not a failed call: the RPC succeeded (grpc-status 0).
    h.reporter
        .set_service_status("greeter", tonic_health::ServingStatus::NotServing)
        .await;
    let res = client.check(check("greeter")).await.unwrap();
    assert_eq!(res.get_ref().status(), ServingStatus::NotServing);

    assert_eq!(h.script.calls(), 2);
    let counts = h.breaker.counts();
    assert_eq!((counts.calls, counts.failures), (2, 0));
}

#[tokio::test(start_paused = true)]
async fn unavailable_is_retried_until_the_server_answers() {
    let (h, mut client) = start(Setup::default()).await;
    h.script.fail_next(2, || Status::unavailable("warming up"));
    let started = tokio::time::Instant::now();
    let res = client.check(check("greeter")).await.unwrap();
    assert_eq!(res.get_ref().status(), ServingStatus::Serving);
    assert_eq!(h.script.calls(), 3, "two UNAVAILABLE answers, then SERVING");
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(100),
        "two 50 ms backoffs"
    );
    // The breaker above the retry saw one successful call.
    let counts = h.breaker.counts();
    assert_eq!((counts.calls, counts.failures), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn the_servers_retry_pushback_is_honoured() {
    let (h, mut client) = start(Setup::default()).await;
    h.script.fail_next(1, || {
        let mut status = Status::resource_exhausted("slow down");
        status
            .metadata_mut()
            .insert(RETRY_PUSHBACK_MS, "750".parse().unwrap());
        status
    });
    let started = tokio::time::Instant::now();
    client.check(check("greeter")).await.unwrap();
    assert_eq!(h.script.calls(), 2);
    assert_eq!(started.elapsed(), Duration::from_millis(750));
    // RESOURCE_EXHAUSTED is a rate limit: never held against the server.
    assert_eq!(h.breaker.counts().failures, 0);
}

#[tokio::test(start_paused = true)]
async fn invalid_argument_is_not_retried_nor_counted() {
    let (h, mut client) = start(Setup::default()).await;
    let status = client.check(check("no/such/service")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "a service name has no '/'");
    assert_eq!(h.script.calls(), 1, "a bad request is not retried");

    // Same for the real service's NOT_FOUND (an unknown service name).
    let status = client.check(check("unknown")).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(h.script.calls(), 2);

    let snapshot = h.breaker.snapshot();
    assert_eq!(snapshot.state, State::Closed);
    assert_eq!((snapshot.calls, snapshot.ignored), (0, 2));
}

#[tokio::test(start_paused = true)]
async fn an_unavailable_server_trips_the_breaker() {
    let (h, mut client) = start(Setup::default()).await;
    h.script
        .fail_next(usize::from(u8::MAX), || Status::unavailable("draining"));

    // Each call: three attempts, then the caller gets the server's own UNAVAILABLE.
    for call in 1..=3 {
        let status = client.check(check("greeter")).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "call {call}");
        assert_eq!(status.message(), "draining");
    }
    assert_eq!(h.script.calls(), 9);
    let snapshot = h.breaker.snapshot();
    assert_eq!(snapshot.state, State::Open);
    assert_eq!(snapshot.reason, Some(OpenReason::ConsecutiveFailures));

    // Open: the channel is not used; every clone of the client shares the breaker.
    let status = client.clone().check(check("greeter")).await.unwrap_err();
    let open = breaker_open(&status).expect("rejected by the breaker");
    assert_eq!(open.breaker(), "health-grpc");
    assert_eq!(open.retry_after(), Duration::from_secs(5));
    assert_eq!(h.script.calls(), 9);
    assert_eq!(h.breaker.snapshot().not_permitted, 1);

    // The server recovers; after the open duration one probe closes the breaker.
    h.script.clear();
    tokio::time::advance(Duration::from_secs(5)).await;
    let res = client.check(check("greeter")).await.unwrap();
    assert_eq!(res.get_ref().status(), ServingStatus::Serving);
    assert_eq!(h.breaker.state(), State::Closed);
    assert_eq!(h.script.calls(), 10);
}

#[test]
fn the_grpc_classifier_reads_trailers_only_responses() {
    let c = GrpcClassifier::default();
    let res = |code: Code| Status::new(code, "x").into_http::<()>();
    assert_eq!(c.classify_response(&res(Code::Ok)), Classification::Success);
    let rows = [
        (Code::Unavailable, ErrorKind::Overloaded),
        (Code::ResourceExhausted, ErrorKind::RateLimited),
        (Code::DeadlineExceeded, ErrorKind::Timeout),
        (Code::Unauthenticated, ErrorKind::Auth),
        (Code::InvalidArgument, ErrorKind::BadRequest),
        (Code::NotFound, ErrorKind::BadRequest),
        (Code::Internal, ErrorKind::ServerError),
    ];
    for (code, kind) in rows {
        let verdict = c.classify_response(&res(code));
        assert_eq!(verdict.kind(), Some(kind), "{code:?}");
        assert_eq!(
            verdict.kind().map(ErrorKind::is_retryable),
            Some(kind.is_retryable())
        );
    }
    // No grpc-status in the headers: the call is streaming its answer.
    let streaming = http::Response::builder().status(200).body(()).unwrap();
    assert_eq!(c.classify_response(&streaming), Classification::Success);
    // A proxy in front of the server answered with a plain HTTP 503.
    let proxy = http::Response::builder().status(503).body(()).unwrap();
    assert_eq!(
        c.classify_response(&proxy).kind(),
        Some(ErrorKind::Overloaded)
    );
}
