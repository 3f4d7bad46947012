//! Wake-ups a future gives its own task while it is being polled, polled again at once rather
//! than through the scheduler: [`PollAgain`] for a whole connection, `SelfWake` for the client's
//! own polls of its connections.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use pin_project::pin_project;

#[cfg(tower_llm_loom)]
use loom::sync::atomic::{AtomicU8, Ordering};
#[cfg(not(tower_llm_loom))]
use std::sync::atomic::{AtomicU8, Ordering};

/// How many times one poll polls the future again after it woke itself (then the scheduler's
/// turn: other tasks run first).
const MAX_AGAIN: usize = 4;

/// Not being polled: a wake-up goes to the task.
const IDLE: u8 = 0;
/// Being polled: a wake-up is noted.
const POLLING: u8 = 1;
/// Being polled, and woken meanwhile.
const WOKEN: u8 = 2;

/// Where a wake-up goes: noted while a poll is under way, to the task otherwise.
pub(crate) struct WakeState {
    state: AtomicU8,
}

impl WakeState {
    /// Not being polled.
    pub(crate) fn new() -> Self {
        WakeState {
            state: AtomicU8::new(IDLE),
        }
    }

    /// A poll starts.
    pub(crate) fn begin(&self) {
        self.state.store(POLLING, Ordering::SeqCst);
    }

    /// A wake-up: `true` when it must go to the task (no poll under way), `false` when the poll
    /// under way noted it.
    pub(crate) fn wake(&self) -> bool {
        match self
            .state
            .compare_exchange(POLLING, WOKEN, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) | Err(WOKEN) => false,
            Err(_) => true,
        }
    }

    /// The poll ended: whether it was woken meanwhile (the caller then polls again, or hands the
    /// wake-up to the task). A wake-up after this goes to the task.
    pub(crate) fn end(&self) -> bool {
        self.state.swap(IDLE, Ordering::SeqCst) == WOKEN
    }
}

/// The waker a [`SelfWake`] polls with.
struct Again {
    state: WakeState,
    task: AtomicWaker,
}

impl Wake for Again {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.state.wake() {
            self.task.wake();
        }
    }
}

/// A waker of its own for what one task polls on its behalf, made once (per connection) and used
/// for every poll: see [`PollAgain`].
pub(crate) struct SelfWake {
    again: Arc<Again>,
    waker: Waker,
}

impl SelfWake {
    pub(crate) fn new() -> Self {
        let again = Arc::new(Again {
            state: WakeState::new(),
            task: AtomicWaker::new(),
        });
        SelfWake {
            waker: Waker::from(Arc::clone(&again)),
            again,
        }
    }

    /// `poll` called with this waker, and called again at once while it wakes itself; the task
    /// behind `cx` gets the wake-ups that come between polls.
    pub(crate) fn poll<T>(
        &self,
        cx: &mut Context<'_>,
        mut poll: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        // Registered first: a wake-up that arrives after a poll ended wakes the task.
        self.again.task.register(cx.waker());
        let mut own = Context::from_waker(&self.waker);
        for _ in 0..=MAX_AGAIN {
            self.again.state.begin();
            let polled = poll(&mut own);
            let woken = self.again.state.end();
            if polled.is_ready() || !woken {
                return polled;
            }
            // Out of budget: tokio's resources would answer `Pending` and wake the task again.
            if !tokio::task::coop::has_budget_remaining() {
                break;
            }
        }
        // Woken during the last poll: the scheduler's turn.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A future (a server's connection, typically) polled again at once when it wakes its own task
/// during a poll, instead of through the scheduler.
///
/// A task that serves HTTP and calls this client wakes itself several times per answer: hyper's
/// body channels wake the sending side when the reading side takes a chunk, and both sides run
/// in the one task (a server's dispatcher and the handler reading the request; the upstream
/// connection and the answer's reader, which drives it), as does the connection's hand-over of
/// the answer's head. Each wake-up made while the task is running makes tokio's multi-thread
/// scheduler put the task back in its queue and wake a parked worker to steal it: a futex call
/// on this thread, a worker woken for nothing, and one more trip through the scheduler before
/// the task runs again. Polled with a waker of its own, the future's wake-ups during a poll are
/// noted instead of passed on, and the poll polls it again at once (a few times at most, and
/// only while the task has coop budget left: past either, the wake-up goes to the scheduler as
/// before). Wake-ups between polls go to the task unchanged.
///
/// The client polls its HTTP/1.1 connections that way (see the [module docs](crate::client)); a
/// server in front of it can serve each connection the same way:
///
/// ```
/// use std::convert::Infallible;
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use hyper::server::conn::http1;
/// use hyper_util::rt::TokioIo;
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// use tower_llm::client::PollAgain;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let addr = listener.local_addr()?;
/// tokio::spawn(async move {
///     let (tcp, _) = listener.accept().await?;
///     let service = hyper::service::service_fn(|_req| async {
///         Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"hi"))))
///     });
///     // Serve the connection as usual, wrapped.
///     PollAgain::new(http1::Builder::new().serve_connection(TokioIo::new(tcp), service)).await?;
///     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
/// });
/// let mut client = tokio::net::TcpStream::connect(addr).await?;
/// client.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await?;
/// let mut answer = String::new();
/// client.read_to_string(&mut answer).await?;
/// assert!(answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("hi"));
/// # Ok(()) }
/// ```
///
/// Nothing waits longer than it would unwrapped, and a future that keeps waking itself gets at
/// most a few polls in a row before the scheduler's turn.
#[pin_project]
pub struct PollAgain<F> {
    #[pin]
    inner: F,
    wake: SelfWake,
}

impl<F> PollAgain<F> {
    /// `inner`, polled with a waker of its own.
    pub fn new(inner: F) -> Self {
        PollAgain {
            inner,
            wake: SelfWake::new(),
        }
    }

    /// The wrapped future, pinned (to call its own methods, such as a hyper connection's
    /// `graceful_shutdown`).
    pub fn inner(self: Pin<&mut Self>) -> Pin<&mut F> {
        self.project().inner
    }

    /// The wrapped future.
    pub fn into_inner(self) -> F {
        self.inner
    }
}

impl<F: fmt::Debug> fmt::Debug for PollAgain<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PollAgain")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for PollAgain<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let mut inner = this.inner;
        this.wake.poll(cx, |own| inner.as_mut().poll(own))
    }
}

#[cfg(all(test, not(tower_llm_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A task waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Count {
        fn get(&self) -> usize {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// Wakes itself on its first `wakes` polls, then is ready; counts its polls.
    struct WakesItself {
        wakes: usize,
        polls: usize,
    }

    impl Future for WakesItself {
        type Output = usize;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            self.polls += 1;
            if self.polls > self.wakes {
                return Poll::Ready(self.polls);
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn poll_once<F: Future + Unpin>(fut: &mut F, task: &Arc<Count>) -> Poll<F::Output> {
        let waker = Waker::from(Arc::clone(task));
        Pin::new(fut).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_self_wake_is_polled_again_within_the_same_poll_without_waking_the_task() {
        let task = Arc::new(Count::default());
        let mut fut = PollAgain::new(WakesItself { wakes: 2, polls: 0 });
        assert_eq!(poll_once(&mut fut, &task), Poll::Ready(3));
        assert_eq!(task.get(), 0, "the task was not woken");
    }

    #[test]
    fn a_future_that_keeps_waking_itself_gets_the_scheduler_s_turn() {
        let task = Arc::new(Count::default());
        let mut fut = PollAgain::new(WakesItself {
            wakes: usize::MAX,
            polls: 0,
        });
        assert!(poll_once(&mut fut, &task).is_pending());
        assert_eq!(fut.inner.polls, MAX_AGAIN + 1, "bounded");
        assert_eq!(task.get(), 1, "the wake-up went to the task");
    }

    #[test]
    fn a_wake_up_between_polls_goes_to_the_task_registered_last() {
        let first = Arc::new(Count::default());
        let last = Arc::new(Count::default());
        // Pending without waking itself; its waker kept to wake it later.
        let mut kept: Option<Waker> = None;
        let mut fut = PollAgain::new(std::future::poll_fn(|cx| {
            kept = Some(cx.waker().clone());
            Poll::<()>::Pending
        }));
        assert!(poll_once(&mut fut, &first).is_pending());
        assert!(poll_once(&mut fut, &last).is_pending());
        drop(fut);
        kept.expect("polled").wake();
        assert_eq!((first.get(), last.get()), (0, 1));
    }

    #[test]
    fn a_wake_up_from_another_thread_during_a_poll_is_polled_again() {
        let task = Arc::new(Count::default());
        let mut polls = 0;
        let mut fut = PollAgain::new(std::future::poll_fn(|cx| {
            polls += 1;
            if polls == 1 {
                // Woken from elsewhere while this poll runs (a socket's readiness, say).
                let waker = cx.waker().clone();
                std::thread::spawn(move || waker.wake())
                    .join()
                    .expect("woke");
                return Poll::Pending;
            }
            Poll::Ready(polls)
        }));
        assert_eq!(poll_once(&mut fut, &task), Poll::Ready(2));
        assert_eq!(task.get(), 0);
    }

    #[tokio::test]
    async fn serves_a_hyper_connection_whose_handler_reads_the_request_body() {
        use bytes::Bytes;
        use http_body_util::{BodyExt, Full};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let service =
                hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async {
                    let body = req.into_body().collect().await?.to_bytes();
                    Ok::<_, hyper::Error>(http::Response::new(Full::new(Bytes::from(
                        body.to_vec(),
                    ))))
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
            PollAgain::new(conn).await
        });
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        // Two requests on one connection: the first kept alive, the second closes it.
        let request = |close: &str| {
            format!("POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n{close}\r\nhello")
        };
        client
            .write_all(request("").as_bytes())
            .await
            .expect("write");
        client
            .write_all(request("connection: close\r\n").as_bytes())
            .await
            .expect("write");
        let mut answers = String::new();
        client.read_to_string(&mut answers).await.expect("read");
        assert_eq!(answers.matches("HTTP/1.1 200 OK").count(), 2, "{answers}");
        assert_eq!(answers.matches("hello").count(), 2, "{answers}");
        server.await.expect("joined").expect("served");
    }
}

#[cfg(all(test, tower_llm_loom))]
mod loom_tests {
    //! Every interleaving of a poll and a wake-up from another thread: the wake-up is never
    //! lost, and goes exactly one way (to the task, or to the poll that notes it).
    //!
    //! ```text
    //! RUSTFLAGS="--cfg tower_llm_loom" CARGO_TARGET_DIR=target/loom \
    //!     cargo test -p tower-llm --release --lib client::again::loom_tests
    //! ```
    use super::WakeState;
    use loom::sync::atomic::{AtomicBool, Ordering};
    use loom::sync::Arc;
    use loom::thread;

    #[test]
    fn a_wake_up_goes_to_the_task_or_to_a_poll_exactly_once() {
        loom::model(|| {
            let state = Arc::new(WakeState::new());
            let forwarded = Arc::new(AtomicBool::new(false));
            let waker = {
                let (state, forwarded) = (Arc::clone(&state), Arc::clone(&forwarded));
                thread::spawn(move || forwarded.store(state.wake(), Ordering::SeqCst))
            };
            // Two polls in a row, as a task polls its future.
            state.begin();
            let first = state.end();
            state.begin();
            let second = state.end();
            waker.join().expect("joined");
            let noted = usize::from(first) + usize::from(second);
            let forwarded = usize::from(forwarded.load(Ordering::SeqCst));
            assert_eq!(noted + forwarded, 1);
        });
    }

    #[test]
    fn two_wake_ups_during_one_poll_are_noted_once_and_none_is_lost() {
        loom::model(|| {
            let state = Arc::new(WakeState::new());
            let wakers: Vec<_> = (0..2)
                .map(|_| {
                    let state = Arc::clone(&state);
                    thread::spawn(move || state.wake())
                })
                .collect();
            state.begin();
            let noted = state.end();
            let forwarded: Vec<bool> = wakers
                .into_iter()
                .map(|w| w.join().expect("joined"))
                .collect();
            // Every wake-up that was not forwarded landed in the poll, which noted it.
            if forwarded.iter().any(|f| !f) {
                assert!(noted);
            }
        });
    }
}
