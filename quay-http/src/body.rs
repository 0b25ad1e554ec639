//! Request bodies as the engine's byte streams, with a bound on how slowly a client may send.
//!
//! A body that stops arriving for [`BodyLimits::idle_timeout`], or that averages less than
//! [`BodyLimits::min_bytes_per_sec`] over any stretch of that length spent waiting for it, ends
//! with an [`ErrorKind::ClientTimeout`] error: the handler answers `408` (if the client is still
//! there), the connection is closed and whatever the request had written is removed. Only the
//! time spent *waiting for the client* counts: while the registry itself is busy (writing a
//! chunk to storage) it does not read, and that is not the client's delay.

use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use quay_core::{ByteStream, Error, ErrorKind, Result};

/// How slowly a client may send a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// The longest wait for the next bytes of a body (`QUAY_CLIENT_BODY_TIMEOUT_SECS`, 30 s).
    pub idle_timeout: Duration,
    /// The lowest average rate, in bytes per second, over each stretch of `idle_timeout` spent
    /// waiting for the body (`QUAY_CLIENT_BODY_MIN_BYTES_PER_SEC`, 1024); 0 turns the rate
    /// check off.
    pub min_bytes_per_sec: u64,
}

impl Default for BodyLimits {
    fn default() -> Self {
        BodyLimits {
            idle_timeout: Duration::from_secs(30),
            min_bytes_per_sec: 1024,
        }
    }
}

struct Pace {
    inner: axum::body::BodyDataStream,
    limits: BodyLimits,
    /// Time spent waiting for the client in the current stretch, and what it sent meanwhile.
    waited: Duration,
    received: u64,
    done: bool,
}

impl Pace {
    async fn next(&mut self) -> Option<Result<Bytes>> {
        if self.done {
            return None;
        }
        let started = Instant::now();
        let next = tokio::time::timeout(self.limits.idle_timeout, self.inner.next()).await;
        self.waited += started.elapsed();
        let item = match next {
            Err(_) => Err(Error::new(
                ErrorKind::ClientTimeout,
                format!(
                    "the request body stalled: nothing arrived for {} s",
                    self.limits.idle_timeout.as_secs_f64()
                ),
            )),
            Ok(None) => {
                self.done = true;
                return None;
            }
            Ok(Some(Err(e))) => Err(Error::new(
                ErrorKind::BlobUploadInvalid,
                "the request body ended early (the client went away)",
            )
            .with_source(e)),
            Ok(Some(Ok(chunk))) => {
                self.received += chunk.len() as u64;
                self.check_rate().map(|()| chunk)
            }
        };
        if item.is_err() {
            self.done = true;
        }
        Some(item)
    }

    fn check_rate(&mut self) -> Result<()> {
        let window = self.limits.idle_timeout;
        if self.limits.min_bytes_per_sec == 0 || self.waited < window {
            return Ok(());
        }
        let needed = (self.limits.min_bytes_per_sec as f64 * self.waited.as_secs_f64()) as u64;
        if self.received < needed {
            return Err(Error::new(
                ErrorKind::ClientTimeout,
                format!(
                    "the request body arrives too slowly: {} bytes in {:.0} s, below {} bytes/s",
                    self.received,
                    self.waited.as_secs_f64(),
                    self.limits.min_bytes_per_sec
                ),
            ));
        }
        self.waited = Duration::ZERO;
        self.received = 0;
        Ok(())
    }
}

/// The request body as a stream of the engine's byte chunks, bounded by `limits`.
pub fn paced(body: Body, limits: BodyLimits) -> ByteStream {
    let pace = Pace {
        inner: body.into_data_stream(),
        limits,
        waited: Duration::ZERO,
        received: 0,
        done: false,
    };
    Box::pin(futures::stream::unfold(pace, |mut pace| async move {
        let item = pace.next().await?;
        Some((item, pace))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(idle_ms: u64, rate: u64) -> BodyLimits {
        BodyLimits {
            idle_timeout: Duration::from_millis(idle_ms),
            min_bytes_per_sec: rate,
        }
    }

    async fn drain(mut s: ByteStream) -> std::result::Result<u64, Error> {
        let mut n = 0;
        while let Some(chunk) = s.next().await {
            n += chunk?.len() as u64;
        }
        Ok(n)
    }

    fn trickle(chunks: usize, every: Duration, size: usize) -> Body {
        let s = futures::stream::unfold(0usize, move |i| async move {
            if i == chunks {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((Ok::<_, std::io::Error>(Bytes::from(vec![0u8; size])), i + 1))
        });
        Body::from_stream(s)
    }

    #[tokio::test]
    async fn a_body_that_stops_is_the_clients_timeout() {
        let body = Body::from_stream(futures::stream::pending::<std::io::Result<Bytes>>());
        let err = drain(paced(body, limits(50, 0))).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ClientTimeout);
    }

    #[tokio::test]
    async fn a_dribble_is_refused() {
        // One byte every 10 ms is 100 bytes/s, below the 10 kB/s asked for.
        let body = trickle(100, Duration::from_millis(10), 1);
        let err = drain(paced(body, limits(50, 10_000))).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ClientTimeout);
        assert!(err.message().contains("too slowly"), "{err}");
    }

    #[tokio::test]
    async fn a_steady_body_passes() {
        let body = trickle(20, Duration::from_millis(5), 4096);
        assert_eq!(
            drain(paced(body, limits(100, 10_000))).await.unwrap(),
            20 * 4096
        );
    }

    #[tokio::test]
    async fn time_spent_by_the_reader_is_not_the_clients() {
        let body = Body::from(vec![1u8; 64]);
        let mut s = paced(body, limits(20, 1_000_000));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(s.next().await.unwrap().unwrap().len(), 64);
        assert!(s.next().await.is_none());
    }
}
