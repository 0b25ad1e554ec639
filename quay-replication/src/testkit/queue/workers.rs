//! Cases of `target_stats` and of worker beats (`record_worker`, `workers`, `forget_worker`).

use quay_core::metadata::now_ms;
use quay_core::queue::WORKER_BEAT_RETENTION;
use quay_core::{JobKind, JobQueue, QueueStats, Result, WorkerBeat};

use super::{job, tick, QueueHarness, LONG};

/// A beat of worker `id`, last seen at `seen_at`, with `done` jobs finished.
fn beat(id: &str, seen_at: i64, done: u64) -> WorkerBeat {
    WorkerBeat {
        id: id.to_owned(),
        host: "host-1".to_owned(),
        pid: 4242,
        role: "test worker".to_owned(),
        started_at: seen_at - 1000,
        seen_at,
        jobs_done: done,
        jobs_failed: 1,
        bytes_copied: 5 << 30,
        running: 3,
    }
}

/// Per target, jobs are counted as `stats` counts them for the whole queue, and the counts add
/// up to `stats`'s.
pub async fn target_stats_count_the_jobs_of_each_location<H: QueueHarness>(h: &H) -> Result<()> {
    let queue = h.open().await?;
    assert!(queue.target_stats().await?.is_empty(), "an empty queue");
    let before = now_ms();
    queue
        .enqueue(&[
            job(JobKind::Replicate, "a", "us")?,
            job(JobKind::Delete, "b", "us")?,
        ])
        .await?;
    tick().await;
    let eu_from = now_ms();
    queue
        .enqueue(&[job(JobKind::Replicate, "c", "eu")?])
        .await?;
    // The oldest due job is one of the two of `us`.
    let held = queue.claim(1, LONG).await?;
    assert_eq!(held.len(), 1, "one job claimed");
    assert_eq!(held[0].job.spec.target.as_str(), "us", "the oldest job");

    let per_target = queue.target_stats().await?;
    let targets: Vec<&str> = per_target.iter().map(|t| t.target.as_str()).collect();
    assert_eq!(targets, ["eu", "us"], "one entry per location, in order");
    let (eu, us) = (&per_target[0].stats, &per_target[1].stats);
    assert_eq!((eu.pending, eu.leased, eu.dead), (1, 0, 0), "eu: {eu:?}");
    assert_eq!((us.pending, us.leased, us.dead), (1, 1, 0), "us: {us:?}");
    let now = now_ms();
    assert!(
        matches!(us.oldest_pending, Some(t) if (before..=now).contains(&t)),
        "us: oldest job {:?} not within [{before}, {now}]",
        us.oldest_pending
    );
    assert!(
        matches!(eu.oldest_pending, Some(t) if (eu_from..=now).contains(&t)),
        "eu: oldest job {:?} not within [{eu_from}, {now}]",
        eu.oldest_pending
    );
    let total = queue.stats().await?;
    let summed = per_target.iter().fold(QueueStats::default(), |mut sum, t| {
        sum.pending += t.stats.pending;
        sum.leased += t.stats.leased;
        sum.dead += t.stats.dead;
        sum
    });
    assert_eq!(
        (summed.pending, summed.leased, summed.dead),
        (total.pending, total.leased, total.dead),
        "the per-location counts add up to the queue's"
    );
    Ok(())
}

/// Beats are listed most recent first, a new beat replaces the worker's last one, `workers`
/// leaves out those seen before its bound, and a forgotten worker is gone for every handle.
pub async fn worker_beats_are_listed_replaced_and_forgotten<H: QueueHarness>(h: &H) -> Result<()> {
    let (queue, other) = (h.open().await?, h.open().await?);
    let t0 = now_ms();
    assert!(queue.workers(0).await?.is_empty(), "no worker yet");
    queue.record_worker(&beat("a", t0, 1)).await?;
    other.record_worker(&beat("b", t0 + 10, 2)).await?;
    let ids = |beats: Vec<WorkerBeat>| beats.into_iter().map(|b| b.id).collect::<Vec<_>>();
    assert_eq!(
        ids(queue.workers(t0).await?),
        ["b", "a"],
        "most recent first"
    );

    let newer = beat("a", t0 + 20, 7);
    queue.record_worker(&newer).await?;
    let listed = other.workers(t0).await?;
    assert_eq!(
        listed.len(),
        2,
        "a new beat replaces the last one: {listed:?}"
    );
    assert_eq!(listed[0], newer, "every field as recorded");
    assert_eq!(
        ids(other.workers(t0 + 15).await?),
        ["a"],
        "b was seen before the bound"
    );

    other.forget_worker("a").await?;
    assert_eq!(ids(queue.workers(0).await?), ["b"], "a is forgotten");
    queue.forget_worker("never-seen").await?;
    Ok(())
}

/// A worker that vanished without being forgotten is dropped once its last beat is older than
/// the retention.
pub async fn vanished_workers_are_dropped_after_the_retention<H: QueueHarness>(
    h: &H,
) -> Result<()> {
    let queue = h.open().await?;
    let now = now_ms();
    let retention = i64::try_from(WORKER_BEAT_RETENTION.as_millis()).unwrap_or(i64::MAX);
    queue
        .record_worker(&beat("gone", now - retention - 60_000, 1))
        .await?;
    queue.record_worker(&beat("alive", now, 1)).await?;
    let ids: Vec<String> = queue.workers(0).await?.into_iter().map(|b| b.id).collect();
    assert_eq!(ids, ["alive"], "the vanished worker is dropped");
    Ok(())
}
