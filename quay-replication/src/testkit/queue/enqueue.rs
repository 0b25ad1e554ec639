//! Cases of `enqueue`: idempotent per `(kind, digest, target)`, counting what is new.

use quay_core::{JobKind, JobQueue, Result};

use super::{job, only, replicate, replicate_many, specs, QueueHarness, LONG};

/// `enqueue` returns how many jobs were not queued yet, counting a job repeated within one
/// call once.
pub async fn enqueue_returns_the_count_of_new_jobs<H: QueueHarness>(h: &H) -> Result<()> {
    let queue = h.open().await?;
    assert_eq!(queue.enqueue(&[]).await?, 0, "enqueue of nothing");
    let jobs = replicate_many(3)?;
    assert_eq!(queue.enqueue(&jobs[..2]).await?, 2, "two new jobs");
    assert_eq!(queue.enqueue(&jobs).await?, 1, "one new job among three");
    let d = replicate("repeated")?;
    assert_eq!(
        queue.enqueue(&[d.clone(), d.clone()]).await?,
        1,
        "one new job given twice in one call"
    );
    assert_eq!(queue.stats().await?.pending, 4);
    Ok(())
}

/// Kind, digest and target together make a job's identity: changing any one of them makes
/// another job, repeating all three adds nothing.
pub async fn enqueue_is_idempotent_per_kind_digest_and_target<H: QueueHarness>(
    h: &H,
) -> Result<()> {
    let queue = h.open().await?;
    let jobs = [
        job(JobKind::Replicate, "x", "us")?,
        job(JobKind::Delete, "x", "us")?,
        job(JobKind::Replicate, "y", "us")?,
        job(JobKind::Replicate, "x", "eu")?,
    ];
    assert_eq!(queue.enqueue(&jobs).await?, 4, "four distinct jobs");
    assert_eq!(queue.enqueue(&jobs).await?, 0, "the same four again");
    for j in &jobs {
        assert_eq!(
            queue.enqueue(std::slice::from_ref(j)).await?,
            0,
            "{j:?} again"
        );
    }
    assert_eq!(queue.stats().await?.pending, 4);
    let claimed = queue.claim(10, LONG).await?;
    assert_eq!(specs(&claimed), jobs.into_iter().collect());
    Ok(())
}

/// A job that a worker holds is still queued: enqueuing it again adds nothing.
pub async fn enqueue_of_a_leased_job_adds_nothing<H: QueueHarness>(h: &H) -> Result<()> {
    let queue = h.open().await?;
    let spec = replicate("a")?;
    queue.enqueue(std::slice::from_ref(&spec)).await?;
    let lease = only(queue.claim(10, LONG).await?, "claim");
    assert_eq!(queue.enqueue(std::slice::from_ref(&spec)).await?, 0);
    let stats = queue.stats().await?;
    assert_eq!((stats.pending, stats.leased), (0, 1), "{stats:?}");
    assert!(
        queue.claim(10, LONG).await?.is_empty(),
        "claim of the held job"
    );
    queue.complete(&lease).await?;
    Ok(())
}

/// Two handles (two processes) see one queue: what one enqueues the other claims and
/// deduplicates.
pub async fn handles_share_one_queue<H: QueueHarness>(h: &H) -> Result<()> {
    let a = h.open().await?;
    let b = h.open().await?;
    let spec = replicate("shared")?;
    assert_eq!(a.enqueue(std::slice::from_ref(&spec)).await?, 1);
    assert_eq!(b.enqueue(std::slice::from_ref(&spec)).await?, 0);
    let lease = only(b.claim(10, LONG).await?, "claim on the second handle");
    assert_eq!(lease.job.spec, spec);
    assert!(
        a.claim(10, LONG).await?.is_empty(),
        "claim on the first handle"
    );
    a.heartbeat(&lease, LONG).await?;
    a.complete(&lease).await?;
    assert_eq!(b.stats().await?, Default::default());
    Ok(())
}
