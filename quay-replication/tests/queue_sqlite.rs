//! The `JobQueue` conformance suite on SQLite, plus what only `SqlJobQueue` has.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

use std::time::Duration;

use quay_core::{Digest, JobKind, JobQueue, JobSpec, QueueStats};
use quay_replication::testkit::queue::{test_policy, QueueHarness};
use quay_replication::testkit::sql::SqliteQueueHarness;

quay_replication::queue_conformance_tests!(SqliteQueueHarness);

fn spec(seed: &str) -> JobSpec {
    JobSpec {
        kind: JobKind::Replicate,
        digest: Digest::sha256_of(seed.as_bytes()),
        target: "eu".parse().unwrap(),
    }
}

async fn kill(queue: &quay_storage::SqlJobQueue) {
    for _ in 0..test_policy().max_attempts {
        let lease = loop {
            if let Some(l) = queue.claim(1, Duration::from_secs(60)).await.unwrap().pop() {
                break l;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        queue.fail(&lease, "gone").await.unwrap();
    }
}

#[tokio::test]
async fn retry_dead_puts_dead_jobs_back_with_attempts_reset() {
    let h = SqliteQueueHarness::create(test_policy()).await.unwrap();
    let queue = h.open().await.unwrap();
    queue.enqueue(&[spec("a")]).await.unwrap();
    kill(&queue).await;
    assert_eq!(queue.stats().await.unwrap().dead, 1);
    assert_eq!(queue.retry_dead().await.unwrap(), 1);
    assert_eq!(queue.retry_dead().await.unwrap(), 0);
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.pending, stats.dead), (1, 0));
    let lease = queue
        .claim(1, Duration::from_secs(60))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(lease.job.attempts, 1);
    assert_eq!(lease.job.last_error.as_deref(), Some("gone"));
    h.destroy().await.unwrap();
}

#[tokio::test]
async fn complete_all_removes_held_jobs_only() {
    let h = SqliteQueueHarness::create(test_policy()).await.unwrap();
    let queue = h.open().await.unwrap();
    queue
        .enqueue(&[spec("a"), spec("b"), spec("c")])
        .await
        .unwrap();
    let mut leases = queue.claim(2, Duration::from_millis(50)).await.unwrap();
    let held = queue.claim(1, Duration::from_secs(60)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    // The first two leases ran out and one job was claimed again by someone else.
    let stolen = queue.claim(1, Duration::from_secs(60)).await.unwrap();
    leases.extend(held);
    assert_eq!(queue.complete_all(&leases).await.unwrap(), 2);
    assert_eq!(queue.complete_all(&[]).await.unwrap(), 0);
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.pending, stats.leased), (0, 1), "{stats:?}");
    queue.complete(&stolen[0]).await.unwrap();
    assert_eq!(queue.stats().await.unwrap(), QueueStats::default());
    h.destroy().await.unwrap();
}
