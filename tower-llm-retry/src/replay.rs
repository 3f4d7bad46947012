//! Sending a request again: [`ReplayRequest`] copies a request for the next attempt and tags it;
//! [`RecordResponse`] reads a response's status for the attempt log and attaches that log.
//!
//! Two implementations ship:
//!
//! - [`HttpReplay`] (the default) for `http::Request<B>` / `http::Response<B>`: copies method, URI,
//!   version, headers and extensions, and the body through
//!   [`ReplayableBody::try_clone`]. A body that cannot
//!   be cloned (over the buffering limit, or streamed) is sent once and not retried; the reason
//!   ([`NotReplayable`]) is recorded. Put core's
//!   [`BufferRequestBodyLayer`](tower_llm_core::BufferRequestBodyLayer) above the retry layer to
//!   make any body (hyper's `Incoming`, axum's `Body`) replayable up to a size limit.
//! - [`CloneReplay`] for typed clients whose request is `Clone`
//!   (`Service<ChatRequest, Response = ChatResponse>`).
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower_llm_retry::{Attempt, HttpReplay, ReplayRequest};
//!
//! let replay = HttpReplay::new().with_retry_count_header(http::HeaderName::from_static("x-retry-count"));
//! let original = http::Request::post("http://localhost/v1/chat/completions")
//!     .header("authorization", "Bearer sk-test")
//!     .body(Full::new(Bytes::from_static(b"{}")))
//!     .unwrap();
//! let mut second = replay.replay(&original).unwrap();
//! replay.tag(&mut second, Attempt(2));
//! assert_eq!(second.headers()["authorization"], "Bearer sk-test");
//! assert_eq!(second.headers()["x-retry-count"], "1");
//! assert_eq!(Attempt::of(second.extensions()), Attempt(2));
//! assert_eq!(Attempt::of(original.extensions()), Attempt(1));
//! ```

use http::{HeaderName, HeaderValue, Request, Response};
use tower_llm_core::{AttemptBudget, NotReplayable, ReplayableBody, Target};

use crate::policy::RetryAttempts;

/// The attempt number of a request, 1-based, as a request extension.
///
/// The retry layer sets it on every attempt after the first (retries and hedges). The first
/// attempt is sent untouched so the happy path allocates nothing: a request without the
/// extension is attempt 1, which is what [`Attempt::of`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attempt(pub u32);

impl Attempt {
    /// The attempt number recorded in `extensions` (1 when none is).
    pub fn of(extensions: &http::Extensions) -> Attempt {
        extensions.get::<Attempt>().copied().unwrap_or(Attempt(1))
    }

    /// How many attempts came before this one (the value of an `x-retry-count` header).
    pub const fn previous(self) -> u32 {
        self.0.saturating_sub(1)
    }

    /// Whether this attempt repeats an earlier one.
    pub const fn is_retry(self) -> bool {
        self.0 > 1
    }
}

/// How a retry layer copies a request for another attempt, tags it, and finds its target.
pub trait ReplayRequest<Req>: Clone + Send + Sync + 'static {
    /// A copy of `req` to send again, or why it cannot be sent again.
    fn replay(&self, req: &Req) -> Result<Req, NotReplayable>;

    /// Mark `req` as attempt `attempt`. Called for every attempt, the first included, just
    /// before it is sent. The default does nothing.
    fn tag(&self, req: &mut Req, attempt: Attempt) {
        let _ = (req, attempt);
    }

    /// The target the request goes to (keys per-target budgets, labels records and metrics).
    /// The default is `None`.
    fn target(&self, req: &Req) -> Option<Target> {
        let _ = req;
        None
    }

    /// The [`AttemptBudget`] a layer above (a fallback chain) set on the request: its deadline
    /// bounds every attempt and backoff, and a budget that does not
    /// [allow retries](AttemptBudget::allows_retries) makes the call a single attempt. The
    /// default is `None` (typed requests carry none).
    fn budget(&self, req: &Req) -> Option<AttemptBudget> {
        let _ = req;
        None
    }
}

/// How a retry layer reads a response for its attempt log and hands the log back.
pub trait RecordResponse<Res>: Clone + Send + Sync + 'static {
    /// The response's status code, for [`AttemptRecord::status`](tower_llm_core::AttemptRecord).
    fn status(&self, res: &Res) -> Option<u16> {
        let _ = res;
        None
    }

    /// Attach the attempt log to a response that is returned after at least one failed attempt
    /// (a success after retries, or the last failed response). The default drops it.
    fn attach(&self, res: &mut Res, attempts: RetryAttempts) {
        let _ = (res, attempts);
    }

    /// Whether [`attach`](RecordResponse::attach) keeps the log. When `false` the layer does not
    /// build one for a response (the records still go into
    /// [`RetriesExhausted`](tower_llm_core::RetriesExhausted) errors). The default is `true`;
    /// implementations that drop the log say `false` and save its allocation.
    fn keeps_attempts(&self) -> bool {
        true
    }
}

/// The default [`ReplayRequest`] / [`RecordResponse`] for `http` requests and responses.
///
/// - requests: method, URI, version, headers, extensions and a
///   [`try_clone`](ReplayableBody::try_clone) of the body; the [`Target`] extension is the target;
///   attempts after the first get an [`Attempt`] extension, and, when configured, every attempt a
///   retry-count header holding the number of previous attempts (`0` on the first);
/// - responses: the status, and a [`RetryAttempts`] response extension.
///
/// [`attempt_extensions(false)`](HttpReplay::attempt_extensions) leaves out both extensions, the
/// [`Attempt`] and the [`RetryAttempts`], for callers that read neither: each costs the message
/// a map of extensions (when it has none yet) and a box.
#[derive(Clone, Debug)]
pub struct HttpReplay {
    retry_count_header: Option<HeaderName>,
    extensions: bool,
}

impl Default for HttpReplay {
    fn default() -> Self {
        HttpReplay {
            retry_count_header: None,
            extensions: true,
        }
    }
}

impl HttpReplay {
    /// Copy requests; no retry-count header; the [`Attempt`] and [`RetryAttempts`] extensions
    /// set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether to set the [`Attempt`] extension on retried requests and the [`RetryAttempts`]
    /// log on responses that follow a failed attempt (default `true`). Off, a call that succeeds
    /// after a retry makes no extension map, boxed value or log for them: the layers below and
    /// the caller see no extension from the retry; the retry-count header, metrics and traces are unchanged, and
    /// a call whose retries are exhausted still fails with every record in its
    /// [`RetriesExhausted`](tower_llm_core::RetriesExhausted) error.
    ///
    /// ```
    /// use tower_llm_retry::{HttpReplay, RetryLayer};
    ///
    /// let layer = RetryLayer::builder()
    ///     .replay(HttpReplay::new().attempt_extensions(false))
    ///     .build()
    ///     .unwrap();
    /// # let _ = layer;
    /// ```
    pub fn attempt_extensions(mut self, on: bool) -> Self {
        self.extensions = on;
        self
    }

    /// Whether the [`Attempt`] and [`RetryAttempts`] extensions are set (see
    /// [`attempt_extensions`](HttpReplay::attempt_extensions)).
    pub fn sets_attempt_extensions(&self) -> bool {
        self.extensions
    }

    /// Also send `name` (e.g. `x-retry-count`) with the number of previous attempts on every
    /// attempt. Header values 0 to 9 are static; larger counts allocate.
    pub fn with_retry_count_header(mut self, name: HeaderName) -> Self {
        self.retry_count_header = Some(name);
        self
    }

    /// The retry-count header, if configured.
    pub fn retry_count_header(&self) -> Option<&HeaderName> {
        self.retry_count_header.as_ref()
    }
}

fn count_value(count: u32) -> HeaderValue {
    const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match DIGITS.get(count as usize) {
        Some(digit) => HeaderValue::from_static(digit),
        None => HeaderValue::from(count),
    }
}

impl<B> ReplayRequest<Request<B>> for HttpReplay
where
    B: ReplayableBody + Send + 'static,
{
    fn replay(&self, req: &Request<B>) -> Result<Request<B>, NotReplayable> {
        let body = match req.body().try_clone() {
            Some(body) => body,
            None => {
                return Err(req
                    .body()
                    .not_replayable_reason()
                    .unwrap_or(NotReplayable::Streaming))
            }
        };
        let mut copy = Request::new(body);
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Ok(copy)
    }

    fn tag(&self, req: &mut Request<B>, attempt: Attempt) {
        if self.extensions && attempt.is_retry() {
            match req.extensions_mut().get_mut::<Attempt>() {
                Some(existing) => *existing = attempt,
                None => {
                    req.extensions_mut().insert(attempt);
                }
            }
        }
        if let Some(name) = &self.retry_count_header {
            req.headers_mut()
                .insert(name.clone(), count_value(attempt.previous()));
        }
    }

    fn target(&self, req: &Request<B>) -> Option<Target> {
        req.extensions().get::<Target>().cloned()
    }

    fn budget(&self, req: &Request<B>) -> Option<AttemptBudget> {
        tower_llm_core::ReadBudget::budget(&tower_llm_core::HttpBudget, req)
    }
}

impl<B> RecordResponse<Response<B>> for HttpReplay {
    fn status(&self, res: &Response<B>) -> Option<u16> {
        Some(res.status().as_u16())
    }

    fn attach(&self, res: &mut Response<B>, attempts: RetryAttempts) {
        if self.extensions {
            res.extensions_mut().insert(attempts);
        }
    }

    fn keeps_attempts(&self) -> bool {
        self.extensions
    }
}

/// [`ReplayRequest`] for requests that are `Clone` (typed clients); [`RecordResponse`] that keeps
/// nothing. Requests carry no target and no tag: implement the traits yourself for that.
#[derive(Clone, Copy, Debug, Default)]
pub struct CloneReplay;

impl<Req> ReplayRequest<Req> for CloneReplay
where
    Req: Clone,
{
    fn replay(&self, req: &Req) -> Result<Req, NotReplayable> {
        Ok(req.clone())
    }
}

impl<Res> RecordResponse<Res> for CloneReplay {
    fn keeps_attempts(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, StreamBody};
    use tower_llm_core::ReplayBody;

    #[tokio::test]
    async fn http_replay_copies_everything() {
        let mut req = Request::post("http://example.test/v1/chat/completions")
            .version(http::Version::HTTP_2)
            .header("authorization", "Bearer k")
            .body(Full::new(Bytes::from_static(b"{\"model\":\"m\"}")))
            .unwrap();
        req.extensions_mut().insert(Target::new("p", "m"));
        let replay = HttpReplay::new();
        let copy = replay.replay(&req).unwrap();
        assert_eq!(copy.method(), http::Method::POST);
        assert_eq!(copy.uri(), req.uri());
        assert_eq!(copy.version(), http::Version::HTTP_2);
        assert_eq!(copy.headers(), req.headers());
        assert_eq!(replay.target(&copy), Some(Target::new("p", "m")));
        assert_eq!(
            copy.into_body().collect().await.unwrap().to_bytes(),
            &b"{\"model\":\"m\"}"[..]
        );
    }

    #[tokio::test]
    async fn streaming_body_is_not_replayable() {
        let frames = futures_util::stream::iter(vec![Ok::<_, std::convert::Infallible>(
            http_body::Frame::data(Bytes::from_static(b"0123456789")),
        )]);
        let body = ReplayBody::buffer(StreamBody::new(frames), 4)
            .await
            .unwrap();
        let req = Request::new(body);
        assert_eq!(
            HttpReplay::new().replay(&req).unwrap_err(),
            NotReplayable::OverLimit { limit: 4 }
        );
        let streaming = Request::new(ReplayBody::streaming(Full::new(Bytes::new())));
        assert_eq!(
            HttpReplay::new().replay(&streaming).unwrap_err(),
            NotReplayable::Streaming
        );
    }

    #[test]
    fn tags_update_in_place() {
        let replay =
            HttpReplay::new().with_retry_count_header(HeaderName::from_static("x-retry-count"));
        let mut req = Request::new(Full::new(Bytes::new()));
        replay.tag(&mut req, Attempt(1));
        assert!(req.extensions().get::<Attempt>().is_none());
        assert_eq!(req.headers()["x-retry-count"], "0");
        replay.tag(&mut req, Attempt(3));
        replay.tag(&mut req, Attempt(12));
        assert_eq!(Attempt::of(req.extensions()), Attempt(12));
        assert_eq!(req.headers()["x-retry-count"], "11");
        assert_eq!(req.headers().get_all("x-retry-count").iter().count(), 1);
    }

    #[test]
    fn clone_replay_clones() {
        #[derive(Clone, Debug, PartialEq)]
        struct Chat(&'static str);
        assert_eq!(CloneReplay.replay(&Chat("hi")).unwrap(), Chat("hi"));
        assert_eq!(
            <CloneReplay as ReplayRequest<Chat>>::target(&CloneReplay, &Chat("hi")),
            None
        );
    }
}
