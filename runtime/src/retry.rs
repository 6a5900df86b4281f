//! Riding out NATS outages: a server restart, a stream's leader election, a lost link. Every
//! write a retry may repeat is safe to repeat: messages carry a `Nats-Msg-Id`, state changes
//! are compare-and-set on a revision ([`crate::state::cas_persist`] also settles a write whose
//! answer was lost).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long an operation keeps retrying before its caller hears of the failure: longer than a
/// leader election (a few seconds) or a server restart, short enough that a worker whose
/// server is gone for good gives its job back to the lease.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Retries this process made, for tests and benchmarks that measure an outage's cost.
static RETRIES: AtomicU64 = AtomicU64::new(0);

/// How many times this process has retried an operation on the server so far.
pub fn retries() -> u64 {
    RETRIES.load(Ordering::Relaxed)
}

/// Doubling delays from 50 ms up to 2 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::from_millis(50))
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(2));
    }
}

/// Runs `f` until it succeeds, fails with an error `retry` refuses, or `patience` is spent.
pub async fn retry<T, F, Fut>(
    what: &str,
    patience: Duration,
    retry: fn(&Error) -> bool,
    mut f: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + patience;
    let mut backoff = Backoff::new();
    let mut tries = 0u32;
    loop {
        match f().await {
            Ok(v) => {
                if tries > 0 {
                    tracing::info!(tries, "{what} went through after retries");
                }
                return Ok(v);
            }
            Err(e) if retry(&e) && Instant::now() < deadline => {
                tries += 1;
                RETRIES.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, tries, "{what} failed; retrying");
                backoff.wait().await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Retries any failure but an unreadable state (which no retry fixes) for [`PATIENCE`].
pub async fn persist<T, F, Fut>(what: &str, f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    retry(what, PATIENCE, |e| !matches!(e, Error::BadState { .. }), f).await
}

/// Retries only while NATS is unavailable, for `patience`; any other error returns at once.
pub async fn through_outages<T, F, Fut>(what: &str, patience: Duration, f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    retry(what, patience, Error::is_unavailable, f).await
}
