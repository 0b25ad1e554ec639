//! Operations that survive a database restart or failover.
//!
//! When PostgreSQL restarts (or a managed failover moves the primary), every pooled connection
//! is cut: statements in flight fail with an I/O error or `57P01 admin_shutdown`, and new
//! connections are refused until the server is back. The pool already waits for a refused
//! connection (up to the database timeout); this module re-runs an operation whose connection
//! was lost, on a fresh connection, until the same timeout runs out. Clients see a slower
//! request instead of a 503.
//!
//! Only what is safe to run twice runs twice. Each operation names its [`Replay`]:
//!
//! - [`Replay::Read`]: reads change nothing; running one again is always safe.
//! - [`Replay::Idempotent`]: writes whose statements leave the same rows however often they
//!   run (inserts with `ON CONFLICT DO NOTHING`, upserts to the same values, deletes by key).
//!   Even when the connection broke after the server committed, and only the acknowledgement
//!   was lost, the second run finds the rows in place and answers the same.
//! - [`Replay::BeforeCommit`]: writes that must not run twice (a delete that reports whether
//!   it removed something: its second run would answer "not found"). They run again only when the failure came
//!   before `COMMIT` was sent: the server rolled the transaction back with its connection, so
//!   nothing happened. A failure of the `COMMIT` itself leaves the outcome unknown and is
//!   returned.
//!
//! Retries count in `quay_metadata_retries_total{operation}`.

use std::future::Future;
use std::time::{Duration, Instant};

use quay_core::{Error, ErrorKind, Result};

/// The context key and value that [`mark_commit`] sets on an error of `COMMIT`.
const PHASE: &str = "phase";
const COMMIT: &str = "commit";

/// The first pause between two runs; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Whether an operation may run again after its connection was lost; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replay {
    /// A read.
    Read,
    /// A write that leaves the same rows however often it runs.
    Idempotent,
    /// A write that runs again only when it failed before `COMMIT`.
    BeforeCommit,
}

/// Marks an error raised by `COMMIT`: the transaction's outcome is unknown.
pub(crate) fn mark_commit(error: Error) -> Error {
    error.with_context(PHASE, COMMIT)
}

/// Whether `error` says the connection was lost or could not be had: the database is
/// restarting, failing over or out of connections for now.
fn connection_lost(error: &Error) -> bool {
    // Only the driver's own errors (`db_error`, `sqlx_error`: they name the operation) say
    // anything about the connection. A temporary refusal that an operation raises itself (a
    // removal of a former copy running) would be refused again on every run.
    let from_driver = error.context().iter().any(|(key, _)| *key == "operation");
    from_driver && error.kind() == ErrorKind::Unavailable && error.is_temporary()
}

fn at_commit(error: &Error) -> bool {
    error
        .context()
        .iter()
        .any(|(key, value)| *key == PHASE && value == COMMIT)
}

/// Runs `run` until it succeeds, fails for a reason other than a lost connection, may not
/// run again (`replay`), or `window` has passed since the first run.
pub(crate) async fn retrying<T, F, Fut>(
    operation: &'static str,
    replay: Replay,
    window: Duration,
    mut run: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let started = Instant::now();
    let mut pause = FIRST_PAUSE;
    let mut attempt = 1u32;
    loop {
        // A run after the first gets what is left of the window: the pool may wait for a
        // connection again, and the operation as a whole must end within the window.
        let outcome = if attempt == 1 {
            run().await
        } else {
            let left = window.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, run()).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Error::new(
                    ErrorKind::Unavailable,
                    format!("metadata database unreachable during {operation}"),
                )
                .set_temporary(true)
                .with_context("operation", operation)),
            }
        };
        let error = match outcome {
            Ok(value) => {
                if attempt > 1 {
                    tracing::info!(
                        operation,
                        attempts = attempt,
                        "metadata operation succeeded on a fresh connection"
                    );
                }
                return Ok(value);
            }
            Err(error) => error,
        };
        let replayable = match replay {
            Replay::Read | Replay::Idempotent => true,
            Replay::BeforeCommit => !at_commit(&error),
        };
        if !connection_lost(&error) || !replayable || started.elapsed() + pause >= window {
            return Err(error);
        }
        tracing::warn!(
            operation,
            attempt,
            error = %error,
            "metadata database connection lost; running the operation again"
        );
        metrics::counter!("quay_metadata_retries_total", "operation" => operation).increment(1);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn lost() -> Error {
        Error::new(ErrorKind::Unavailable, "connection reset")
            .set_temporary(true)
            .with_context("operation", "test")
    }

    async fn run_with(replay: Replay, errors: Vec<Error>) -> (Result<u32>, u32) {
        let calls = AtomicU32::new(0);
        let errors = std::sync::Mutex::new(errors);
        let result = retrying("test", replay, Duration::from_secs(5), || {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            let next = errors.lock().ok().and_then(|mut e| e.pop());
            async move {
                match next {
                    Some(e) => Err(e),
                    None => Ok(n),
                }
            }
        })
        .await;
        (result, calls.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_lost_connection_runs_the_operation_again() {
        let (result, calls) = run_with(Replay::Read, vec![lost(), lost()]).await;
        assert_eq!(result.ok(), Some(3));
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    async fn other_errors_are_returned_at_once() {
        let conflict = Error::new(ErrorKind::Conflict, "unique violation");
        let (result, calls) = run_with(Replay::Idempotent, vec![conflict]).await;
        assert_eq!(result.err().map(|e| e.kind()), Some(ErrorKind::Conflict));
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn a_temporary_refusal_of_the_operation_itself_is_returned_at_once() {
        let refusal = Error::new(ErrorKind::Unavailable, "a former copy is being removed");
        assert!(refusal.is_temporary());
        let (result, calls) = run_with(Replay::Idempotent, vec![refusal]).await;
        assert_eq!(result.err().map(|e| e.kind()), Some(ErrorKind::Unavailable));
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn a_failed_commit_is_replayed_only_when_idempotent() {
        let (result, calls) = run_with(Replay::BeforeCommit, vec![mark_commit(lost())]).await;
        assert_eq!(result.err().map(|e| e.kind()), Some(ErrorKind::Unavailable));
        assert_eq!(calls, 1);
        let (result, calls) = run_with(Replay::BeforeCommit, vec![lost()]).await;
        assert_eq!(result.ok(), Some(2));
        assert_eq!(calls, 2);
        let (result, _) = run_with(Replay::Idempotent, vec![mark_commit(lost())]).await;
        assert_eq!(result.ok(), Some(2));
    }

    #[tokio::test]
    async fn retries_stop_when_the_window_has_passed() {
        let calls = AtomicU32::new(0);
        let result: Result<()> = retrying("test", Replay::Read, Duration::from_millis(120), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(lost()) }
        })
        .await;
        assert!(result.is_err());
        let n = calls.load(Ordering::SeqCst);
        assert!((2..=3).contains(&n), "ran {n} times");
    }
}
