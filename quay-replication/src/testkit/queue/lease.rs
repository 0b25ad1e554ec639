//! Cases of leases: expiry hands a job to another worker, heartbeats keep it, and a lost or
//! released lease can change nothing.

use std::time::{Duration, Instant};

use quay_core::metadata::now_ms;
use quay_core::{ErrorKind, JobQueue, Lease, QueueStats, Result};

use super::{
    assert_kind, assert_nothing_due_before, claim_within, only, replicate, replicate_many,
    QueueHarness, LONG,
};

/// A worker claims a job and vanishes (no heartbeat, no completion): once its lease ends,
/// another worker claims the job, on its second attempt, under another token.
pub async fn job_of_a_vanished_worker_is_claimed_again_after_its_lease<H: QueueHarness>(
    h: &H,
) -> Result<()> {
    let gone = h.open().await?;
    let other = h.open().await?;
    let spec = replicate("a")?;
    gone.enqueue(std::slice::from_ref(&spec)).await?;
    let lost = only(
        gone.claim(1, Duration::from_millis(150)).await?,
        "first claim",
    );
    assert_nothing_due_before(&other, lost.expires_at, "claim during the lease").await?;
    let lease = only(
        claim_within(&other, 10, LONG, "claim after the lease").await?,
        "claim after the lease",
    );
    assert!(
        now_ms() >= lost.expires_at,
        "claimed again {} ms before the first lease ended",
        lost.expires_at - now_ms()
    );
    assert_eq!(lease.job.id, lost.job.id);
    assert_eq!(lease.job.spec, spec);
    assert_eq!(lease.job.attempts, 2, "attempts after a lost lease");
    assert_ne!(lease.token, lost.token, "a new lease has a new token");
    other.complete(&lease).await?;
    assert_eq!(other.stats().await?, QueueStats::default());
    Ok(())
}

/// Jobs whose lease ended are claimed before due jobs, and a claim of both kinds together
/// still hands out at most `max`: a worker's jobs are taken over first, not after the queue.
pub async fn expired_leases_are_claimed_first_within_max<H: QueueHarness>(h: &H) -> Result<()> {
    let gone = h.open().await?;
    let other = h.open().await?;
    gone.enqueue(&[replicate("lost-a")?, replicate("lost-b")?])
        .await?;
    let lost = gone.claim(2, Duration::from_millis(150)).await?;
    assert_eq!(lost.len(), 2, "first claim");
    gone.enqueue(&replicate_many(3)?).await?;
    let ends = lost.iter().map(|l| l.expires_at).max().unwrap_or_default();
    while now_ms() <= ends + 20 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let retaken =
        |leases: &[quay_core::Lease]| leases.iter().filter(|l| l.job.attempts == 2).count();
    let first = other.claim(1, LONG).await?;
    assert_eq!(first.len(), 1, "claim of 1 job");
    assert_eq!(
        retaken(&first),
        1,
        "an expired job comes before the due ones"
    );
    let second = other.claim(3, LONG).await?;
    assert_eq!(second.len(), 3, "claim of at most 3 jobs, with 4 claimable");
    assert_eq!(retaken(&second), 1, "the other expired job, then due ones");
    let third = other.claim(3, LONG).await?;
    assert_eq!(third.len(), 1, "the last due job");
    let all: Vec<_> = first.iter().chain(&second).chain(&third).collect();
    let distinct: std::collections::BTreeSet<&str> =
        all.iter().map(|l| l.job.id.as_str()).collect();
    assert_eq!(distinct.len(), 5, "five distinct jobs");
    Ok(())
}

/// A job whose lease is short but renewed by heartbeats well past its first expiry stays with
/// its holder: no other worker can claim it, and the holder completes it.
pub async fn heartbeats_keep_a_long_job<H: QueueHarness>(h: &H) -> Result<()> {
    let worker = h.open().await?;
    let rival = h.open().await?;
    worker.enqueue(&[replicate("long")?]).await?;
    let lease_time = Duration::from_millis(300);
    let lease = only(worker.claim(1, lease_time).await?, "claim");
    let first_expiry = lease.expires_at;
    let start = Instant::now();
    let mut expires = lease.expires_at;
    let mut beats = 0;
    // Three times the first lease, a heartbeat every 50 ms.
    while start.elapsed() < lease_time * 3 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = now_ms();
        let renewed = worker.heartbeat(&lease, lease_time).await?;
        beats += 1;
        assert!(
            renewed >= before + 300 && renewed >= expires,
            "heartbeat at {before} extended the lease to {renewed} (was {expires})"
        );
        expires = renewed;
        assert!(
            rival.claim(10, LONG).await?.is_empty(),
            "a rival claimed the job {} ms after its first lease ended",
            now_ms() - first_expiry
        );
    }
    assert!(
        now_ms() > first_expiry + 300,
        "the case ran past the first lease"
    );
    assert!(beats >= 6, "only {beats} heartbeats");
    let stats = rival.stats().await?;
    assert_eq!((stats.pending, stats.leased), (0, 1), "{stats:?}");
    worker.complete(&lease).await?;
    assert_eq!(rival.stats().await?, QueueStats::default());
    Ok(())
}

/// A heartbeat sets the lease's end to `extend` from now, longer or shorter than before.
pub async fn heartbeat_extends_the_lease_from_now<H: QueueHarness>(h: &H) -> Result<()> {
    let queue = h.open().await?;
    queue.enqueue(&[replicate("a")?]).await?;
    let lease = only(queue.claim(1, Duration::from_secs(10)).await?, "claim");
    let before = now_ms();
    let expires = queue.heartbeat(&lease, Duration::from_secs(120)).await?;
    let after = now_ms();
    assert!(
        (before + 120_000..=after + 120_000).contains(&expires),
        "heartbeat of 120 s in {before}..{after} ends the lease at {expires}"
    );
    queue.heartbeat(&lease, Duration::from_millis(100)).await?;
    let other = h.open().await?;
    let again = claim_within(&other, 1, LONG, "claim after a shortened lease").await?;
    assert_eq!(only(again, "claim").job.id, lease.job.id);
    Ok(())
}

/// Two handles, `slow` and `fast`, and a job `seed` whose short lease `slow` lost: it expired
/// and `fast` claimed the job again. Returns `(slow, fast, lost lease, fast's lease)`.
async fn lease_lost_to_another<H: QueueHarness>(
    h: &H,
    seed: &str,
) -> Result<(H::Queue, H::Queue, Lease, Lease)> {
    let slow = h.open().await?;
    let fast = h.open().await?;
    slow.enqueue(&[replicate(seed)?]).await?;
    let lost = only(slow.claim(1, Duration::from_millis(100)).await?, "claim");
    let taken = only(
        claim_within(&fast, 1, LONG, "claim after the lease").await?,
        "claim after the lease",
    );
    Ok((slow, fast, lost, taken))
}

/// `complete_all` removes the jobs whose leases it is given and returns how many: a lost lease
/// (the job claimed again since) and a lease named twice change nothing more, and the new
/// holder keeps its job.
pub async fn complete_all_removes_only_jobs_under_the_given_leases<H: QueueHarness>(
    h: &H,
) -> Result<()> {
    let (slow, fast, lost, taken) = lease_lost_to_another(h, "lost").await?;
    slow.enqueue(&[replicate("a")?, replicate("b")?]).await?;
    let held = slow.claim(2, LONG).await?;
    assert_eq!(held.len(), 2, "claim of a and b");
    let mut given = held.clone();
    given.push(lost.clone());
    given.push(held[0].clone());
    assert_eq!(slow.complete_all(&given).await?, 2, "a and b removed");
    let stats = fast.stats().await?;
    assert_eq!(
        (stats.pending, stats.leased, stats.dead),
        (0, 1, 0),
        "the job claimed again is still held: {stats:?}"
    );
    assert_eq!(slow.complete_all(&[]).await?, 0, "nothing given");
    fast.complete(&taken).await?;
    assert_eq!(fast.stats().await?, QueueStats::default());
    Ok(())
}

/// Once a lease expired and the job was claimed again, the first holder's heartbeat,
/// complete, fail and defer fail with `Conflict` and change nothing: the new holder keeps it.
pub async fn lost_lease_is_a_conflict_and_changes_nothing<H: QueueHarness>(h: &H) -> Result<()> {
    let (slow, fast, lost, lease) = lease_lost_to_another(h, "a").await?;
    assert_kind(
        slow.heartbeat(&lost, LONG).await,
        ErrorKind::Conflict,
        "heartbeat",
    );
    assert_kind(slow.complete(&lost).await, ErrorKind::Conflict, "complete");
    assert_kind(slow.fail(&lost, "late").await, ErrorKind::Conflict, "fail");
    assert_kind(
        slow.defer(&lost, Duration::ZERO).await,
        ErrorKind::Conflict,
        "defer",
    );
    let stats = fast.stats().await?;
    assert_eq!(
        (stats.pending, stats.leased, stats.dead),
        (0, 1, 0),
        "{stats:?}"
    );
    assert!(
        slow.claim(10, LONG).await?.is_empty(),
        "claim of the held job"
    );
    assert!(fast.dead_jobs(10).await?.is_empty(), "dead jobs");
    fast.heartbeat(&lease, LONG).await?;
    fast.complete(&lease).await?;
    assert_eq!(fast.stats().await?, QueueStats::default());
    Ok(())
}

/// A lease given back by `fail` or `defer` is spent: using it again is a `Conflict`.
pub async fn released_lease_cannot_be_used_again<H: QueueHarness>(h: &H) -> Result<()> {
    let queue = h.open().await?;
    queue.enqueue(&[replicate("a")?]).await?;
    let failed = only(queue.claim(1, LONG).await?, "claim");
    queue.fail(&failed, "boom").await?;
    assert_kind(
        queue.heartbeat(&failed, LONG).await,
        ErrorKind::Conflict,
        "heartbeat after fail",
    );
    assert_kind(
        queue.complete(&failed).await,
        ErrorKind::Conflict,
        "complete after fail",
    );
    assert_kind(
        queue.fail(&failed, "again").await,
        ErrorKind::Conflict,
        "fail after fail",
    );
    assert_kind(
        queue.defer(&failed, Duration::ZERO).await,
        ErrorKind::Conflict,
        "defer after fail",
    );

    let deferred = only(
        claim_within(&queue, 1, LONG, "claim after fail").await?,
        "claim",
    );
    assert_eq!(deferred.job.attempts, 2);
    queue.defer(&deferred, LONG).await?;
    assert_kind(
        queue.complete(&deferred).await,
        ErrorKind::Conflict,
        "complete after defer",
    );
    assert_kind(
        queue.fail(&deferred, "x").await,
        ErrorKind::Conflict,
        "fail after defer",
    );
    assert_kind(
        queue.defer(&deferred, LONG).await,
        ErrorKind::Conflict,
        "defer after defer",
    );
    let stats = queue.stats().await?;
    assert_eq!(
        (stats.pending, stats.leased, stats.dead),
        (1, 0, 0),
        "{stats:?}"
    );
    Ok(())
}

/// `complete` removes the job for good: nothing is left to claim or count, the lease is spent,
/// and the same job can be enqueued anew.
pub async fn complete_removes_the_job<H: QueueHarness>(h: &H) -> Result<()> {
    let queue = h.open().await?;
    let spec = replicate("a")?;
    queue.enqueue(std::slice::from_ref(&spec)).await?;
    let lease = only(queue.claim(1, LONG).await?, "claim");
    queue.complete(&lease).await?;
    assert_eq!(queue.stats().await?, QueueStats::default());
    assert!(
        queue.claim(10, LONG).await?.is_empty(),
        "claim after complete"
    );
    assert_kind(
        queue.complete(&lease).await,
        ErrorKind::Conflict,
        "complete twice",
    );
    assert_kind(
        queue.heartbeat(&lease, LONG).await,
        ErrorKind::Conflict,
        "heartbeat after complete",
    );
    assert_eq!(
        queue.enqueue(std::slice::from_ref(&spec)).await?,
        1,
        "enqueue after complete"
    );
    let again = only(queue.claim(1, LONG).await?, "claim of the new job");
    assert_eq!(again.job.attempts, 1, "a new job starts over");
    Ok(())
}
