//! Outage scenarios: many clients drive a resilient service while mock upstreams fail on a
//! timeline, and a [`ScenarioReport`] says what the users lived through.
//!
//! A [`Scenario`] names a [`Load`] (16 closed-loop clients by default, or one request every few
//! seconds), a [`Timeline`] (a 16 s run with a fault from 4 s to 10 s by default) and an
//! [`Outage`] (is only the primary down, or both providers?). [`Scenario::drive`] sends OpenAI
//! chat requests through any `tower::Service<http::Request<Full<Bytes>>>` and records one
//! [`Sample`] per request; [`Scenario::report`] combines the samples with the two mocks' attempt
//! logs ([`UpstreamCalls`]); [`Scenario::run`] does both. The same driver runs against a stack
//! built in-process and against a gateway over loopback: a hyper-util `Client` is itself such a
//! service, so point [`Load::uri`] at the gateway's `…/v1/chat/completions` and drive the
//! client.
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tower_llm_chaos::scenario::{Load, Scenario, Timeline};
//! use tower_llm_chaos::MockUpstream;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The primary answers 500 from 0.5 s to 1 s; healthy answers take 50 ms (see below why).
//! let primary = MockUpstream::start("500ms-1s=status:500; default=latency:50ms".parse()?).await?;
//! let secondary = MockUpstream::start("latency:50ms".parse()?).await?;
//!
//! // A tiny failover: try the primary, on anything but a 2xx try the secondary.
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//! let targets = [
//!     ("primary/gpt-4o", "none", primary.completions_url()),
//!     ("secondary/gpt-4o", "target", secondary.completions_url()),
//! ];
//! let failover = tower::service_fn(move |req: http::Request<Full<Bytes>>| {
//!     let (client, targets) = (client.clone(), targets.clone());
//!     async move {
//!         let body = req.into_body();
//!         let mut last = None;
//!         for (target, fallback, url) in targets {
//!             let attempt = http::Request::post(url).body(body.clone())?;
//!             let mut res = client.request(attempt).await?;
//!             if res.status().is_success() {
//!                 res.headers_mut().insert("x-llm-target", target.parse()?);
//!                 res.headers_mut().insert("x-llm-fallback", fallback.parse()?);
//!                 return Ok(res);
//!             }
//!             last = Some(res);
//!         }
//!         last.ok_or_else(|| tower::BoxError::from("no target"))
//!     }
//! });
//!
//! let report = Scenario::new("primary 500s")
//!     .load(Load::closed(16))
//!     .timeline(Timeline::new(
//!         Duration::from_secs(2),
//!         Duration::from_millis(500),
//!         Duration::from_secs(1),
//!     ))
//!     .run(failover, &primary, &secondary)
//!     .await;
//!
//! assert!(report.requests > 500);
//! assert_eq!(report.answered, report.requests); // every user got the whole answer
//! assert_eq!(report.success_rate_when_up, 1.0);
//! assert!(report.primary_calls_during_fault > 0); // nothing benches the primary here...
//! assert_eq!(report.upstream_calls_per_request, 2.0); // ...so every request costs two calls
//! assert_eq!(report.recovery, Some(Duration::from_millis(50)));
//! println!("{}\n{}", tower_llm_chaos::scenario::ScenarioReport::markdown_header(), report.markdown_row());
//! # Ok(())
//! # }
//! ```
//!
//! # Paused time
//!
//! Scenarios are meant to run on a paused tokio clock (`start_paused = true` on a current-thread
//! runtime): a 16 s run takes well under a second of real time and every figure is exact. Two
//! things follow from how a paused clock moves — it jumps to the next timer whenever the runtime
//! has nothing left to do:
//!
//! - **Healthy mocks need a small latency** (`default=latency:50ms`). A mock that answers at
//!   once lets a closed-loop client send its next request at once, so the runtime never runs out
//!   of work and the clock never reaches the end of the run. With a latency, every request waits
//!   on a timer and time moves in steps of it. For the same reason a closed-loop client pauses
//!   [`Load::error_pause`] after every request that was not a real answer (errors are often
//!   instant).
//! - **Loopback IO is usually instant, but not always.** Mocks, the stack and the driver share
//!   one runtime, so bytes written to a loopback socket are normally readable before the runtime
//!   goes idle. When real work happens off the runtime (another thread, a blocking task), the
//!   clock may jump ahead while it is under way; see [`hold_auto_advance`](crate::clock) for
//!   holding it still.
//!
//! The mocks' fault windows count from each mock's start and the scenario's timeline from the
//! driver's start: start the mocks right before the driver (on a paused clock no time passes in
//! between). [`Scenario::run`] and [`UpstreamCalls::from_mock`] measure the offset between the
//! two clocks and convert the attempt log to the driver's clock.

mod drive;
mod report;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::Full;
use tower_llm_core::BoxError;
use tower_service::Service;

pub use drive::{Run, Sample};
pub use report::{nearest_rank, ScenarioReport, UpstreamCalls};

use crate::MockHandle;

/// When the fault is on during a run: the run lasts `run` and the fault is on in
/// `[fault_from, fault_until)`, all measured from the driver's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeline {
    /// How long requests are started for.
    pub run: Duration,
    /// When the fault starts (inclusive).
    pub fault_from: Duration,
    /// When the fault ends (exclusive).
    pub fault_until: Duration,
}

impl Timeline {
    /// A run of `run` with the fault on in `[fault_from, fault_until)`.
    pub const fn new(run: Duration, fault_from: Duration, fault_until: Duration) -> Timeline {
        Timeline {
            run,
            fault_from,
            fault_until,
        }
    }

    /// Whether `t` (since the driver's start) falls in the fault.
    pub fn in_fault(&self, t: Duration) -> bool {
        t >= self.fault_from && t < self.fault_until
    }
}

impl Default for Timeline {
    /// A 16 s run with the fault from 4 s to 10 s.
    fn default() -> Self {
        Timeline::new(
            Duration::from_secs(16),
            Duration::from_secs(4),
            Duration::from_secs(10),
        )
    }
}

/// Which providers are down during the fault; decides which requests count for
/// [`ScenarioReport::success_rate_when_up`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Outage {
    /// Only the primary is in trouble; the secondary stays up, so every request counts.
    #[default]
    Primary,
    /// Both providers are down during the fault; only requests started outside it count.
    Both,
}

/// How requests are sent: closed loop or paced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// `clients` concurrent clients; each sends its next request as soon as the previous answer
    /// was read whole (after [`Load::error_pause`] when it was not a real answer).
    Closed {
        /// How many clients.
        clients: usize,
    },
    /// One request every `every`, from the start of the run, each independent of the others (a
    /// request does not wait for the previous one). A zero interval counts as 1 ms.
    Every(Duration),
}

/// What the clients send and how: the [`Pace`], JSON or a stream, the model, the URI.
///
/// Every request is `POST` with `content-type: application/json` and the body
/// `{"model":<model>,"messages":[{"role":"user","content":"hi"}]}`, plus `"stream":true` for a
/// streamed load.
///
/// ```
/// use std::time::Duration;
/// use tower_llm_chaos::scenario::{Load, Pace};
///
/// let load = Load::closed(16).stream(true).model("gpt-4o-mini");
/// assert_eq!(load.pace, Pace::Closed { clients: 16 });
/// assert_eq!(load.error_pause, Duration::from_millis(50));
/// assert_eq!(Load::default(), Load::closed(16));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Load {
    /// Closed loop or paced (default: 16 closed-loop clients).
    pub pace: Pace,
    /// Ask for a stream (`"stream": true`) instead of a JSON answer (default: false).
    pub stream: bool,
    /// The requested model (default `gpt-4o`).
    pub model: String,
    /// How long a closed-loop client waits after a request that was not a real answer — an error
    /// status, a transport error, a broken body, a cache/static tier answer (default 50 ms).
    /// Real clients back off; and with a paused clock a client that loops on instant local
    /// errors would keep time from advancing.
    pub error_pause: Duration,
    /// The request URI (default `/v1/chat/completions`; the service under test decides where it
    /// really goes).
    pub uri: Uri,
    /// Closed-loop clients start spread evenly over this time (default 50 ms, the latency of a
    /// healthy scenario mock): real clients are not synchronised, and clients in lockstep would
    /// all cross a fault's start at the same instant.
    pub stagger: Duration,
}

impl Default for Load {
    fn default() -> Self {
        Load::closed(16)
    }
}

impl Load {
    /// `clients` closed-loop clients, JSON requests for `gpt-4o`.
    pub fn closed(clients: usize) -> Load {
        Load {
            pace: Pace::Closed { clients },
            stream: false,
            model: "gpt-4o".to_owned(),
            error_pause: Duration::from_millis(50),
            uri: Uri::from_static(crate::upstream::COMPLETIONS_PATH),
            stagger: Duration::from_millis(50),
        }
    }

    /// One independent request every `every`, JSON requests for `gpt-4o`.
    pub fn paced(every: Duration) -> Load {
        Load {
            pace: Pace::Every(every),
            ..Load::closed(0)
        }
    }

    /// Ask for streams (`true`) or JSON answers (`false`).
    pub fn stream(mut self, stream: bool) -> Load {
        self.stream = stream;
        self
    }

    /// Request this model.
    pub fn model(mut self, model: impl Into<String>) -> Load {
        self.model = model.into();
        self
    }

    /// Pause this long after a request that was not a real answer (closed loop only).
    pub fn error_pause(mut self, pause: Duration) -> Load {
        self.error_pause = pause;
        self
    }

    /// Spread the closed-loop clients' first requests over `stagger` (zero: all at once).
    pub fn stagger(mut self, stagger: Duration) -> Load {
        self.stagger = stagger;
        self
    }

    /// Send requests to this URI.
    pub fn uri(mut self, uri: Uri) -> Load {
        self.uri = uri;
        self
    }

    /// The request body.
    fn body(&self) -> Bytes {
        let mut body = serde_json::json!({
            "model": self.model,
            "messages": [{"role": "user", "content": "hi"}],
        });
        if self.stream {
            body["stream"] = serde_json::Value::Bool(true);
        }
        Bytes::from(body.to_string())
    }
}

/// An outage scenario: a name, a [`Load`], a [`Timeline`], which providers are down
/// ([`Outage`]) and how to tell the primary's answers (`x-llm-target` prefix). See the
/// [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Scenario {
    /// Shown in the report.
    pub name: String,
    /// What is sent and how.
    pub load: Load,
    /// How long the run lasts and when the fault is on.
    pub timeline: Timeline,
    /// Which providers are down during the fault (default: the primary only).
    pub outage: Outage,
    /// An answer whose `x-llm-target` starts with this came from the primary (default
    /// `primary`).
    pub primary_prefix: String,
    /// How long after the end of the run the driver waits for requests still in flight; those
    /// that have not finished by then count as failed (default 120 s).
    pub drain: Duration,
}

impl Scenario {
    /// A scenario with the default load (16 closed-loop clients, JSON), timeline (16 s, fault
    /// from 4 s to 10 s), outage (primary only), primary prefix (`primary`) and drain (120 s).
    pub fn new(name: impl Into<String>) -> Scenario {
        Scenario {
            name: name.into(),
            load: Load::default(),
            timeline: Timeline::default(),
            outage: Outage::Primary,
            primary_prefix: "primary".to_owned(),
            drain: Duration::from_secs(120),
        }
    }

    /// Replace the load.
    pub fn load(mut self, load: Load) -> Scenario {
        self.load = load;
        self
    }

    /// Replace the timeline.
    pub fn timeline(mut self, timeline: Timeline) -> Scenario {
        self.timeline = timeline;
        self
    }

    /// Say which providers are down during the fault.
    pub fn outage(mut self, outage: Outage) -> Scenario {
        self.outage = outage;
        self
    }

    /// Answers whose `x-llm-target` starts with `prefix` came from the primary.
    pub fn primary_prefix(mut self, prefix: impl Into<String>) -> Scenario {
        self.primary_prefix = prefix.into();
        self
    }

    /// Wait this long after the run for requests in flight.
    pub fn drain(mut self, drain: Duration) -> Scenario {
        self.drain = drain;
        self
    }

    /// Send the load through `service` for [`Timeline::run`], wait for the requests in flight
    /// (at most [`drain`](Scenario::drain)) and return one [`Sample`] per request.
    ///
    /// Requests run on tasks spawned onto the current runtime. A panic in the service is
    /// propagated to the caller.
    pub async fn drive<S, B>(&self, service: S) -> Run
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        drive::drive(self, service).await
    }

    /// [`drive`](Scenario::drive) the load through `service`, then [`report`](Scenario::report)
    /// on it with the attempt logs of the `primary` and `secondary` mocks (converted to the
    /// driver's clock, see [`UpstreamCalls::from_mock`]).
    pub async fn run<S, B>(
        &self,
        service: S,
        primary: &impl AsRef<MockHandle>,
        secondary: &impl AsRef<MockHandle>,
    ) -> ScenarioReport
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let run = self.drive(service).await;
        let primary = UpstreamCalls::from_mock(primary.as_ref(), &run);
        let secondary = UpstreamCalls::from_mock(secondary.as_ref(), &run);
        self.report(&run, &primary, &secondary)
    }

    /// The report of `run`, with the upstream calls of the primary and the secondary on the
    /// driver's clock. See [`ScenarioReport`] for each figure.
    pub fn report(
        &self,
        run: &Run,
        primary: &UpstreamCalls,
        secondary: &UpstreamCalls,
    ) -> ScenarioReport {
        report::compute(self, &run.samples, primary, secondary)
    }
}
