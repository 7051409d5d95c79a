//! Bounded exponential backoff for reconnecting a dump after a transient error. The resume
//! position is the caller's (the last transaction boundary it persisted).

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::error::ReplicaError;

/// Exponential backoff: `initial`, doubling up to `max`, each delay plus up to 25% jitter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    attempts: u32,
}

impl Backoff {
    /// A backoff from `initial` to `max` (`max` is raised to `initial` if smaller).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max: max.max(initial), next: initial, attempts: 0 }
    }

    /// Roughly Canal's retry pacing (10 s + random 0–10 s), capped at 60 s after repeats.
    pub fn canal_default() -> Self {
        Self::new(Duration::from_secs(10), Duration::from_secs(60))
    }

    /// The delay before the next attempt; advances the backoff.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        self.attempts = self.attempts.saturating_add(1);
        let quarter = base / 4;
        let jitter = if quarter.is_zero() {
            Duration::ZERO
        } else {
            // Cheap jitter without an RNG dependency: sub-second clock noise.
            let noise =
                SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().subsec_nanos();
            Duration::from_nanos(
                u64::from(noise) % (quarter.as_nanos().min(u128::from(u64::MAX)) as u64 + 1),
            )
        };
        (base + jitter).min(self.max + self.max / 4)
    }

    /// Attempts made since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Back to the initial delay (call after a dump ran successfully for a while).
    pub fn reset(&mut self) {
        self.next = self.initial;
        self.attempts = 0;
    }
}

/// Runs `attempt` until it succeeds, a definite error occurs, or `max_attempts` attempts failed
/// transiently (then the last transient error is returned). Sleeps `backoff.next_delay()`
/// between attempts.
///
/// # Errors
/// The first definite error, or the last transient one after `max_attempts`.
///
/// # Cancel safety
/// Cancel-safe if `attempt`'s futures are: dropping it stops between or during attempts.
pub async fn retry_transient<T, F, Fut>(
    backoff: &mut Backoff,
    max_attempts: u32,
    mut attempt: F,
) -> Result<T, ReplicaError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ReplicaError>>,
{
    let mut tries = 0u32;
    loop {
        tries += 1;
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && tries < max_attempts => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, attempt = tries, ?delay, "transient replica error, retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let d: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(100) && d[0] <= Duration::from_millis(125));
        assert!(d[1] >= Duration::from_millis(200));
        assert!(d[5] <= Duration::from_millis(625));
        assert_eq!(b.attempts(), 6);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(125));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_only_transient() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(4));
        let mut n = 0;
        let r: Result<u32, _> = retry_transient(&mut b, 5, || {
            n += 1;
            let k = n;
            async move {
                if k < 3 {
                    Err(ReplicaError::Timeout { op: "t", after: Duration::from_secs(1) })
                } else {
                    Ok(k)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
        let mut calls = 0;
        let r: Result<(), _> = retry_transient(&mut b, 5, || {
            calls += 1;
            async { Err(ReplicaError::PositionNotFound { target_ms: 0, searched: vec![] }) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }
}
