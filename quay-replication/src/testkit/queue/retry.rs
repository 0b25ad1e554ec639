//! Cases of `fail` and `defer`: back-off, dead-lettering with the last error, and deferral that
//! does not count the attempt.

use std::time::Duration;

use quay_core::metadata::now_ms;
use quay_core::{FailOutcome, JobQueue, Result};

use super::{
    assert_nothing_due_before, claim_within, dead_letter, only, replicate, test_policy, tick,
    QueueHarness, LONG,
};

/// A failed job backs off (at least half the base delay, at most the base delay after the
/// first failure), is not claimable before then, and is claimed after it on its second attempt,
/// carrying the error.
pub async fn failed_job_is_retried_after_its_back_off<H: QueueHarness>(h: &H) -> Result<()> {
    let queue = h.open().await?;
    queue.enqueue(&[replicate("a")?]).await?;
    let lease = only(queue.claim(1, LONG).await?, "claim");
    let base = i64::try_from(test_policy().base_delay.as_millis()).unwrap_or(i64::MAX);
    let before = now_ms();
    let outcome = queue.fail(&lease, "connection reset").await?;
    let after = now_ms();
    let FailOutcome::Retry { not_before } = outcome else {
        panic!("first failure of three allowed: expected a retry, got {outcome:?}");
    };
    assert!(
        not_before >= before + base / 2 && not_before <= after + base,
        "back-off after the first failure in {before}..{after} ends at {not_before}, \
         not within [{}, {}]",
        before + base / 2,
        after + base
    );
    assert_nothing_due_before(&queue, not_before, "claim during the back-off").await?;
    let stats = queue.stats().await?;
    assert_eq!((stats.pending, stats.leased), (1, 0), "{stats:?}");
    let retry = only(
        claim_within(&queue, 1, LONG, "claim after the back-off").await?,
        "claim",
    );
    assert!(now_ms() >= not_before, "claimed before the back-off ended");
    assert_eq!(retry.job.id, lease.job.id);
    assert_eq!(retry.job.attempts, 2);
    assert_eq!(retry.job.last_error.as_deref(), Some("connection reset"));
    Ok(())
}

/// After `max_attempts` failed attempts the job is dead: kept with its last error and attempts,
/// listed by `dead_jobs`, counted by `stats`, and never claimed again.
pub async fn job_is_dead_lettered_after_max_attempts<H: QueueHarness>(h: &H) -> Result<()> {
    let queue = h.open().await?;
    let spec = replicate("doomed")?;
    let before = now_ms();
    queue.enqueue(std::slice::from_ref(&spec)).await?;
    let after = now_ms();
    dead_letter(&queue, &spec).await?;
    let other = h.open().await?;
    let dead = other.dead_jobs(10).await?;
    assert_eq!(dead.len(), 1, "dead jobs: {dead:?}");
    let job = &dead[0];
    assert_eq!(job.spec, spec);
    assert_eq!(job.attempts, test_policy().max_attempts);
    assert_eq!(
        job.last_error.as_deref(),
        Some("error 3"),
        "the last error is kept"
    );
    assert!(
        (before..=after).contains(&job.enqueued_at),
        "enqueued_at {}",
        job.enqueued_at
    );
    let stats = other.stats().await?;
    assert_eq!(
        (stats.pending, stats.leased, stats.dead),
        (0, 0, 1),
        "{stats:?}"
    );
    assert_eq!(stats.oldest_pending, None, "a dead job is not pending");
    // Longer than any back-off of the policy.
    tokio::time::sleep(test_policy().max_delay + Duration::from_millis(50)).await;
    assert!(
        other.claim(10, LONG).await?.is_empty(),
        "claim of a dead job"
    );
    assert_eq!(other.dead_jobs(10).await?, dead, "dead jobs stay");
    Ok(())
}

/// A dead job still holds its identity: enqueuing the same job adds nothing and leaves it dead.
pub async fn enqueue_of_a_dead_job_adds_nothing<H: QueueHarness>(h: &H) -> Result<()> {
    let queue = h.open().await?;
    let spec = replicate("doomed")?;
    queue.enqueue(std::slice::from_ref(&spec)).await?;
    dead_letter(&queue, &spec).await?;
    assert_eq!(queue.enqueue(std::slice::from_ref(&spec)).await?, 0);
    let stats = queue.stats().await?;
    assert_eq!(
        (stats.pending, stats.leased, stats.dead),
        (0, 0, 1),
        "{stats:?}"
    );
    assert!(
        queue.claim(10, LONG).await?.is_empty(),
        "claim of a dead job"
    );
    Ok(())
}

/// `dead_jobs` lists the oldest first and at most `limit`.
pub async fn dead_jobs_are_oldest_first_and_limited<H: QueueHarness>(h: &H) -> Result<()> {
    let queue = h.open().await?;
    let jobs = [replicate("a")?, replicate("b")?, replicate("c")?];
    for spec in &jobs {
        queue.enqueue(std::slice::from_ref(spec)).await?;
        dead_letter(&queue, spec).await?;
        tick().await;
    }
    let all: Vec<_> = queue
        .dead_jobs(10)
        .await?
        .into_iter()
        .map(|j| j.spec)
        .collect();
    assert_eq!(all, jobs);
    let first: Vec<_> = queue
        .dead_jobs(2)
        .await?
        .into_iter()
        .map(|j| j.spec)
        .collect();
    assert_eq!(first, jobs[..2]);
    assert!(queue.dead_jobs(0).await?.is_empty(), "dead_jobs(0)");
    Ok(())
}

/// `defer` gives the job back without counting the attempt: deferring more often than the
/// policy allows attempts neither raises the attempt count nor dead-letters the job.
pub async fn defer_does_not_burn_an_attempt<H: QueueHarness>(h: &H) -> Result<()> {
    let queue = h.open().await?;
    queue.enqueue(&[replicate("a")?]).await?;
    for round in 0..test_policy().max_attempts + 2 {
        let lease = only(claim_within(&queue, 1, LONG, "claim").await?, "claim");
        assert_eq!(lease.job.attempts, 1, "attempts after {round} deferrals");
        queue.defer(&lease, Duration::ZERO).await?;
    }
    let lease = only(claim_within(&queue, 1, LONG, "claim").await?, "claim");
    assert_eq!(lease.job.attempts, 1);
    let outcome = queue.fail(&lease, "first real failure").await?;
    assert!(
        matches!(outcome, FailOutcome::Retry { .. }),
        "the first failure after deferrals: expected a retry, got {outcome:?}"
    );
    assert!(queue.dead_jobs(10).await?.is_empty(), "no dead job");
    Ok(())
}

/// A deferred job is not claimable before its delay ends, and is claimable after.
pub async fn deferred_job_waits_for_its_delay<H: QueueHarness>(h: &H) -> Result<()> {
    let queue = h.open().await?;
    queue.enqueue(&[replicate("a")?]).await?;
    let lease = only(queue.claim(1, LONG).await?, "claim");
    let delay = Duration::from_millis(300);
    let before = now_ms();
    queue.defer(&lease, delay).await?;
    let due = before + 300;
    assert_nothing_due_before(&queue, due, "claim during the delay").await?;
    let stats = queue.stats().await?;
    assert_eq!((stats.pending, stats.leased), (1, 0), "{stats:?}");
    let again = only(
        claim_within(&queue, 1, LONG, "claim after the delay").await?,
        "claim",
    );
    assert!(
        now_ms() >= due,
        "claimed {} ms before the delay ended",
        due - now_ms()
    );
    assert_eq!(again.job.id, lease.job.id);
    assert_eq!(again.job.attempts, 1);
    Ok(())
}

/// `fail` keeps any error text: quotes, new lines, non-ASCII. A NUL character, which some
/// databases cannot store, does not make `fail` itself fail.
pub async fn fail_keeps_any_error_text<H: QueueHarness>(h: &H) -> Result<()> {
    let queue = h.open().await?;
    queue.enqueue(&[replicate("a")?]).await?;
    let text = "it's \"broken\"; DROP TABLE x; --\nline 2\t✓ żółw 🚀 \\ % _ $1 ?1";
    let lease = only(queue.claim(1, LONG).await?, "claim");
    queue.fail(&lease, text).await?;
    let again = only(
        claim_within(&queue, 1, LONG, "claim after fail").await?,
        "claim",
    );
    assert_eq!(again.job.last_error.as_deref(), Some(text));
    queue.fail(&again, "nul \0 byte").await?;
    let last = only(
        claim_within(&queue, 1, LONG, "claim after fail").await?,
        "claim",
    );
    let kept = last.job.last_error.unwrap_or_default();
    assert!(
        kept.starts_with("nul ") && kept.ends_with(" byte"),
        "{kept:?}"
    );
    Ok(())
}
