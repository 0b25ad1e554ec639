//! The conformance suite of [`JobQueue`]: one small case per behaviour of its `# Behavior`
//! contract (idempotent enqueue, exclusive leases, expiry, heartbeats, back-off,
//! dead-lettering, `defer`, `stats`, per-location counts, worker beats, priorities).
//!
//! A backend joins the suite by implementing [`QueueHarness`] (a fresh, isolated queue per
//! case, on which several handles can be opened) and expanding
//! [`queue_conformance_tests!`](crate::queue_conformance_tests) in an integration test, which
//! writes one `#[tokio::test]` per case, named after it:
//!
//! ```ignore
//! // tests/queue_sqlite.rs (the crate needs tokio with `macros` and `rt-multi-thread`)
//! quay_replication::queue_conformance_tests!(quay_replication::testkit::sql::SqliteQueueHarness);
//! ```
//!
//! [`run_all`] runs every case in sequence instead. Each case gets the harness, created with
//! [`test_policy`], opens as many handles as it needs (two handles stand for two processes),
//! and returns an error or panics on an assertion when the queue misbehaves. Waits are short
//! and bounded: a case that waits for something polls until it happens or [`WAIT`] runs out.

mod claim;
mod enqueue;
mod lease;
mod priority;
mod retry;
mod stats;
mod workers;

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::FutureExt;
use quay_core::metadata::now_ms;
use quay_core::{
    Digest, ErrorKind, FailOutcome, JobKind, JobQueue, JobSpec, Lease, Result, RetryPolicy,
};

pub use self::claim::*;
pub use self::enqueue::*;
pub use self::lease::*;
pub use self::priority::*;
pub use self::retry::*;
pub use self::stats::*;
pub use self::workers::*;

/// A fresh, isolated queue for one case, on which handles are opened.
#[async_trait]
pub trait QueueHarness: Send + Sync + Sized + 'static {
    /// The queue under test.
    type Queue: JobQueue + 'static;

    /// Creates an empty queue that no other case uses, whose handles follow `policy`. Fails
    /// (never skips) when the backing service is missing, with a message that says how to
    /// start it.
    async fn create(policy: RetryPolicy) -> Result<Self>;

    /// Opens a new handle on this queue, as another process would (its own connections).
    async fn open(&self) -> Result<Self::Queue>;

    /// Removes the queue and everything it stored. Called after the case, passed or not.
    async fn destroy(self) -> Result<()>;
}

/// The policy every case runs with: three attempts, back-off from 50 ms up to 200 ms, so that
/// retries and dead-lettering happen within a fraction of a second.
pub fn test_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
    }
}

/// A lease that outlives any case.
pub const LONG: Duration = Duration::from_secs(60);

/// The longest a case waits for something that should happen soon (an expired lease, the end
/// of a back-off).
pub const WAIT: Duration = Duration::from_secs(5);

/// Runs one case on a fresh queue of `H`, then destroys the queue; panics with the case's name
/// when the case fails.
pub async fn run_case<H, F>(name: &str, case: F)
where
    H: QueueHarness,
    F: for<'a> FnOnce(&'a H) -> BoxFuture<'a, Result<()>>,
{
    let harness = match H::create(test_policy()).await {
        Ok(harness) => harness,
        Err(e) => panic!("{name}: cannot create a test queue: {e}"),
    };
    let outcome = AssertUnwindSafe(case(&harness)).catch_unwind().await;
    let cleanup = harness.destroy().await;
    match outcome {
        Err(panic) => std::panic::resume_unwind(panic),
        Ok(Err(e)) => panic!("{name} failed: {e}"),
        Ok(Ok(())) => {}
    }
    if let Err(e) = cleanup {
        panic!("{name}: cannot remove the test queue: {e}");
    }
}

/// Runs every case on `H`, one after the other, each on a fresh queue.
pub async fn run_all<H: QueueHarness>() {
    crate::__queue_cases!(run H);
}

/// Expands to one `#[tokio::test]` per case of the `JobQueue` conformance suite, run on the
/// given [`QueueHarness`] type. The calling crate needs `tokio` with the `macros` and
/// `rt-multi-thread` features.
#[macro_export]
macro_rules! queue_conformance_tests {
    ($harness:ty) => {
        $crate::__queue_cases!(tests $harness);
    };
}

/// The list of cases, written once for both the test macro and [`run_all`].
#[doc(hidden)]
#[macro_export]
macro_rules! __queue_cases {
    (@tests $harness:ty; $($case:ident)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::testkit::queue::run_case::<$harness, _>(
                    ::std::stringify!($case),
                    |h| ::std::boxed::Box::pin($crate::testkit::queue::$case(h)),
                )
                .await;
            }
        )*
    };
    (@run $harness:ty; $($case:ident)*) => {
        $(
            $crate::testkit::queue::run_case::<$harness, _>(
                ::std::stringify!($case),
                |h| ::std::boxed::Box::pin($crate::testkit::queue::$case(h)),
            )
            .await;
        )*
    };
    ($mode:ident $harness:ty) => {
        $crate::__queue_cases!(@$mode $harness;
            enqueue_returns_the_count_of_new_jobs
            enqueue_is_idempotent_per_kind_digest_and_target
            enqueue_of_a_leased_job_adds_nothing
            handles_share_one_queue
            claim_of_an_empty_queue_is_empty
            claim_returns_due_jobs_with_their_first_attempt
            claim_respects_max
            leased_job_is_not_claimed_again
            two_workers_never_both_hold_a_live_lease
            job_of_a_vanished_worker_is_claimed_again_after_its_lease
            expired_leases_are_claimed_first_within_max
            heartbeats_keep_a_long_job
            heartbeat_extends_the_lease_from_now
            lost_lease_is_a_conflict_and_changes_nothing
            complete_all_removes_only_jobs_under_the_given_leases
            released_lease_cannot_be_used_again
            complete_removes_the_job
            failed_job_is_retried_after_its_back_off
            fail_keeps_any_error_text
            job_is_dead_lettered_after_max_attempts
            enqueue_of_a_dead_job_adds_nothing
            dead_jobs_are_oldest_first_and_limited
            defer_does_not_burn_an_attempt
            deferred_job_waits_for_its_delay
            stats_of_an_empty_queue_are_zero
            stats_count_pending_leased_and_dead
            expired_lease_counts_as_pending
            target_stats_count_the_jobs_of_each_location
            worker_beats_are_listed_replaced_and_forgotten
            vanished_workers_are_dropped_after_the_retention
            prioritized_job_is_claimed_before_older_jobs
            priority_lasts_until_the_next_claim
        );
    };
}

// Fixtures and helpers shared by the cases.

/// A job of `kind` for the blob made from `seed`, on location `target`.
fn job(kind: JobKind, seed: &str, target: &str) -> Result<JobSpec> {
    Ok(JobSpec {
        kind,
        digest: Digest::sha256_of(seed.as_bytes()),
        target: target.parse()?,
    })
}

/// A replication job of the blob made from `seed` to `us`.
fn replicate(seed: &str) -> Result<JobSpec> {
    job(JobKind::Replicate, seed, "us")
}

/// `n` distinct replication jobs.
fn replicate_many(n: usize) -> Result<Vec<JobSpec>> {
    (0..n).map(|i| replicate(&format!("blob-{i}"))).collect()
}

fn ids(leases: &[Lease]) -> BTreeSet<String> {
    leases.iter().map(|l| l.job.id.clone()).collect()
}

fn specs(leases: &[Lease]) -> BTreeSet<JobSpec> {
    leases.iter().map(|l| l.job.spec.clone()).collect()
}

/// Claims exactly one job, which must be due now.
#[track_caller]
fn only(leases: Vec<Lease>, what: &str) -> Lease {
    match <[Lease; 1]>::try_from(leases) {
        Ok([lease]) => lease,
        Err(leases) => panic!("{what}: expected one job, claimed {}", leases.len()),
    }
}

/// Polls `claim(max, lease)` until it returns something, for at most [`WAIT`].
async fn claim_within<Q: JobQueue + ?Sized>(
    queue: &Q,
    max: usize,
    lease: Duration,
    what: &str,
) -> Result<Vec<Lease>> {
    let start = Instant::now();
    loop {
        let leases = queue.claim(max, lease).await?;
        if !leases.is_empty() {
            return Ok(leases);
        }
        if start.elapsed() > WAIT {
            panic!("{what}: nothing became claimable within {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Claims now and asserts that nothing was handed out, unless the claim ran at or after
/// `not_before` (so that a slow machine cannot make the check fail).
async fn assert_nothing_due_before<Q: JobQueue + ?Sized>(
    queue: &Q,
    not_before: i64,
    what: &str,
) -> Result<()> {
    let leases = queue.claim(10, LONG).await?;
    let now = now_ms();
    assert!(
        leases.is_empty() || now >= not_before,
        "{what}: claimed {} job(s) {} ms before they were due",
        leases.len(),
        not_before - now
    );
    Ok(())
}

/// Asserts that `result` failed with `kind`.
#[track_caller]
fn assert_kind<T: std::fmt::Debug>(result: Result<T>, kind: ErrorKind, what: &str) {
    match result {
        Err(e) if e.kind() == kind => {}
        other => panic!("{what}: expected a {kind} error, got {other:?}"),
    }
}

/// Takes `spec` (the only job due in `queue`) through every attempt of the policy until it is
/// dead-lettered; the last error is `"error N"` for the last attempt N.
async fn dead_letter<Q: JobQueue + ?Sized>(queue: &Q, spec: &JobSpec) -> Result<()> {
    let max = test_policy().max_attempts;
    for attempt in 1..=max {
        let lease = only(
            claim_within(queue, 1, LONG, "claim before failing").await?,
            "claim before failing",
        );
        assert_eq!(&lease.job.spec, spec, "the job to dead-letter");
        assert_eq!(lease.job.attempts, attempt, "attempts of the claim");
        let outcome = queue.fail(&lease, &format!("error {attempt}")).await?;
        if attempt < max {
            assert!(
                matches!(outcome, FailOutcome::Retry { .. }),
                "failed attempt {attempt} of {max}: expected a retry, got {outcome:?}"
            );
        } else {
            assert_eq!(
                outcome,
                FailOutcome::DeadLettered,
                "the last failed attempt"
            );
        }
    }
    Ok(())
}

/// Lets the millisecond clock move on, so that timestamps differ.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(3)).await;
}
