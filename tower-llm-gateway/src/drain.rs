//! A connection raced against the gateway's drain signal, asking the signal only when it fired:
//! [`UntilDrained`].
//!
//! `tokio::select!` over the connection and `watch::Receiver::wait_for` polled both on every
//! wake-up of the connection's task, several per streamed event. Polling a waiting `wait_for`
//! locks the mutex of the watch channel's waiter list, and every connection waits on the same
//! channel, so each streamed event took a lock contended by all connections. Here the signal's
//! future is polled with a waker of its own ([`WakeFlag`]), and only after that waker fired (and
//! once at the start, to register it).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::wake::WakeFlag;

/// Polls `conn` until it ends or `drain` completes, whichever comes first. `drain` is polled
/// only when its own waker fired since it was last polled (and on the first poll).
pub(crate) struct UntilDrained<C, D> {
    conn: C,
    drain: D,
    signal: Arc<WakeFlag>,
    /// `signal` as a waker, made once.
    waker: Waker,
}

/// How an [`UntilDrained`] ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended<T> {
    /// The connection ended first, with this output.
    Finished(T),
    /// The drain signal came first; the connection is still open.
    Draining,
}

impl<C, D> UntilDrained<C, D>
where
    C: Future + Unpin,
    D: Future + Unpin,
{
    /// Race `conn` against `drain`.
    pub(crate) fn new(conn: C, drain: D) -> Self {
        // Fired: the first poll registers the signal's waker.
        let signal = WakeFlag::new(true);
        UntilDrained {
            conn,
            drain,
            waker: Waker::from(Arc::clone(&signal)),
            signal,
        }
    }
}

impl<C, D> Future for UntilDrained<C, D>
where
    C: Future + Unpin,
    D: Future + Unpin,
{
    type Output = Ended<C::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(out) = Pin::new(&mut this.conn).poll(cx) {
            return Poll::Ready(Ended::Finished(out));
        }
        // Registered before the flag is read: a signal firing in between still wakes this task.
        this.signal.register(cx.waker());
        let drained = this.signal.take_fired()
            && Pin::new(&mut this.drain)
                .poll(&mut Context::from_waker(&this.waker))
                .is_ready();
        if drained {
            Poll::Ready(Ended::Draining)
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::{oneshot, watch};

    /// A future that counts its polls.
    struct Counted<F> {
        inner: F,
        polls: Arc<AtomicUsize>,
    }

    impl<F: Future + Unpin> Future for Counted<F> {
        type Output = F::Output;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            Pin::new(&mut self.inner).poll(cx)
        }
    }

    fn counted<F>(inner: F) -> (Counted<F>, Arc<AtomicUsize>) {
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = Counted {
            inner,
            polls: Arc::clone(&polls),
        };
        (counted, polls)
    }

    #[tokio::test]
    async fn the_connection_ending_first_is_finished() {
        let (_stop, mut drain) = watch::channel(false);
        let conn = Box::pin(async { 7 });
        let signal = Box::pin(drain.wait_for(|d| *d));
        assert_eq!(UntilDrained::new(conn, signal).await, Ended::Finished(7));
    }

    #[tokio::test]
    async fn the_signal_ends_the_wait_of_a_busy_connection() {
        let (stop, mut drain) = watch::channel(false);
        let (_never, conn) = oneshot::channel::<()>();
        let waiting = tokio::spawn(async move {
            let signal = Box::pin(drain.wait_for(|d| *d));
            let ended = UntilDrained::new(conn, signal).await;
            matches!(ended, Ended::Draining)
        });
        tokio::task::yield_now().await;
        stop.send(true).unwrap();
        assert!(waiting.await.unwrap(), "drained");
    }

    #[tokio::test]
    async fn a_signal_sent_before_the_first_poll_is_seen() {
        let (stop, mut drain) = watch::channel(false);
        stop.send(true).unwrap();
        let (_never, conn) = oneshot::channel::<()>();
        let signal = Box::pin(drain.wait_for(|d| *d));
        assert!(matches!(
            UntilDrained::new(conn, signal).await,
            Ended::Draining
        ));
    }

    /// The point of the type: the connection's own wake-ups do not poll the signal.
    #[tokio::test]
    async fn the_connections_wake_ups_do_not_poll_the_signal() {
        let (stop, mut drain) = watch::channel(false);
        let signal_polls = Arc::new(AtomicUsize::new(0));
        let polls = Arc::clone(&signal_polls);
        // A connection that wakes its task 100 times before it ends.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(1);
        let conn = Box::pin(async move {
            let mut seen = 0;
            while rx.recv().await.is_some() {
                seen += 1;
            }
            seen
        });
        let (conn, conn_polls) = counted(conn);
        let run = tokio::spawn(async move {
            let signal = Counted {
                inner: Box::pin(drain.wait_for(|d| *d)),
                polls,
            };
            UntilDrained::new(conn, signal).await
        });
        for i in 0..100 {
            tx.send(i).await.unwrap();
            tokio::task::yield_now().await;
        }
        drop(tx);
        assert_eq!(run.await.unwrap(), Ended::Finished(100));
        assert!(conn_polls.load(Ordering::Relaxed) >= 100);
        assert_eq!(signal_polls.load(Ordering::Relaxed), 1, "registered once");
        drop(stop);
    }
}
