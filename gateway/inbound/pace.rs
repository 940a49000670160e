//! The least rate at which a webhook body must arrive (`limits.min_body_rate`, checked once
//! `limits.body_rate_grace` has passed). A body being read holds an in-flight slot
//! (`limits.max_in_flight`) and the bytes it has sent; without a floor on its rate, a body that stalls
//! would hold both until `limits.request_timeout`, and as many stalled senders as there are slots could
//! take every one for half a minute. The rule is Kestrel's (`MinRequestBodyDataRate`): after the grace,
//! the bytes received so far must average at least the rate since the body began.

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};

/// `limits.min_body_rate` and `limits.body_rate_grace`; made only by [`Pace::of`], which keeps the rate
/// above 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pace {
    min_per_sec: u64,
    grace: std::time::Duration,
}

impl Pace {
    /// The pace `limits` sets; `None` when `min_body_rate` is 0 (no floor).
    pub fn of(limits: &crate::config::Limits) -> Option<Pace> {
        let min_per_sec = limits.min_body_rate.as_u64();
        (min_per_sec > 0).then_some(Pace {
            min_per_sec,
            grace: limits.body_rate_grace,
        })
    }

    /// The latest moment the next bytes may come, `received` bytes having come since `start`: the end of
    /// the grace, or the moment those bytes would have taken at the least rate, whichever is later.
    fn deadline(&self, start: Instant, received: u64) -> Instant {
        let earned = received as f64 / self.min_per_sec as f64;
        let earned =
            std::time::Duration::try_from_secs_f64(earned).unwrap_or(std::time::Duration::MAX);
        // Past what an Instant can hold: a year on, which no request outlives.
        let far = std::time::Duration::from_secs(366 * 86_400);
        let wait = self.grace.max(earned);
        start.checked_add(wait).unwrap_or(start + far)
    }
}

/// The error a body too slow ends with; the receiver answers it 408.
#[derive(Debug, thiserror::Error)]
#[error("the body arrived slower than {min_per_sec} bytes/s")]
pub struct TooSlow {
    pub min_per_sec: u64,
}

pin_project_lite::pin_project! {
    /// A body held to a [`Pace`]. The timer is made only when the sender makes us wait: a body that is
    /// already in the socket buffer, as most webhooks are, costs no timer and no clock read.
    pub struct Paced<B> {
        #[pin]
        inner: B,
        pace: Pace,
        // Set at the first wait: a body already in the socket buffer reads no clock.
        start: Option<Instant>,
        received: u64,
        timer: Option<Pin<Box<Sleep>>>,
    }
}

impl<B> Paced<B> {
    /// The clock starts when the body first makes the reader wait, microseconds after reading began.
    pub fn new(inner: B, pace: Pace) -> Self {
        Paced {
            inner,
            pace,
            start: None,
            received: 0,
            timer: None,
        }
    }
}

impl<B> Body for Paced<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<tower::BoxError>,
{
    type Data = Bytes;
    type Error = tower::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.received += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let start = *this.start.get_or_insert_with(Instant::now);
                let deadline = this.pace.deadline(start, *this.received);
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(TooSlow {
                        min_per_sec: this.pace.min_per_sec,
                    })))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use std::time::Duration;

    const PACE: Pace = Pace {
        min_per_sec: 1000,
        grace: Duration::from_secs(2),
    };

    /// A body whose chunks come at the given offsets from its start (virtual time).
    fn timed(chunks: Vec<(u64, usize)>) -> impl Body<Data = Bytes, Error = std::io::Error> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(8);
        tokio::spawn(async move {
            let start = Instant::now();
            for (at_ms, len) in chunks {
                tokio::time::sleep_until(start + Duration::from_millis(at_ms)).await;
                if tx
                    .send(Ok(Frame::data(Bytes::from(vec![b'x'; len]))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    async fn read(chunks: Vec<(u64, usize)>) -> Result<usize, String> {
        let body = Paced::new(timed(chunks), PACE);
        match body.collect().await {
            Ok(c) => Ok(c.to_bytes().len()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The deadline is the grace's end until the bytes received have earned more time.
    #[test]
    fn the_deadline_is_the_later_of_the_grace_and_the_time_earned() {
        let start = Instant::now();
        assert_eq!(PACE.deadline(start, 0), start + Duration::from_secs(2));
        assert_eq!(PACE.deadline(start, 1500), start + Duration::from_secs(2));
        assert_eq!(PACE.deadline(start, 5000), start + Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_ends_at_the_grace() {
        let started = Instant::now();
        let r = read(vec![(0, 10), (60_000, 10)]).await;
        assert_eq!(r, Err("the body arrived slower than 1000 bytes/s".into()));
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    /// 3,000 bytes by 1 s earn until 3 s; the next chunk at 4 s is late. One at 2.9 s is in time.
    #[tokio::test(start_paused = true)]
    async fn bytes_received_earn_time_at_the_least_rate() {
        let started = Instant::now();
        let late = read(vec![(1_000, 3_000), (4_000, 10)]).await;
        assert!(late.is_err(), "{late:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        let in_time = read(vec![(1_000, 3_000), (2_900, 10)]).await;
        assert_eq!(in_time, Ok(3_010));
    }

    /// A steady trickle above the rate is read whole, however long it lasts.
    #[tokio::test(start_paused = true)]
    async fn a_steady_body_above_the_rate_is_read_whole() {
        let chunks = (0..50).map(|i| (i * 500, 600)).collect();
        assert_eq!(read(chunks).await, Ok(30_000));
    }

    /// A body already complete never needs the timer (and so is never refused, whatever the clock says).
    #[tokio::test(start_paused = true)]
    async fn a_body_already_here_needs_no_timer() {
        let body = Paced::new(http_body_util::Full::new(Bytes::from_static(b"{}")), PACE);
        tokio::time::advance(Duration::from_secs(60)).await;
        let got = body.collect().await.map(|c| c.to_bytes());
        assert_eq!(got.ok(), Some(Bytes::from_static(b"{}")));
    }
}
