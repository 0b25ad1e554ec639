//! The `JobQueue` conformance suite on PostgreSQL (a fresh database per case; see
//! `quay_storage::testkit::postgres` for the server).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

use std::time::Duration;

use quay_core::{Digest, JobKind, JobQueue, JobSpec};
use quay_replication::testkit::queue::{test_policy, QueueHarness};
use quay_replication::testkit::sql::PostgresQueueHarness;

quay_replication::queue_conformance_tests!(PostgresQueueHarness);

#[tokio::test]
async fn retry_dead_puts_dead_jobs_back_with_attempts_reset() {
    let h = PostgresQueueHarness::create(test_policy()).await.unwrap();
    let queue = h.open().await.unwrap();
    let spec = JobSpec {
        kind: JobKind::Delete,
        digest: Digest::sha256_of(b"a"),
        target: "eu".parse().unwrap(),
    };
    queue.enqueue(&[spec]).await.unwrap();
    for _ in 0..test_policy().max_attempts {
        let lease = loop {
            if let Some(l) = queue.claim(1, Duration::from_secs(60)).await.unwrap().pop() {
                break l;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        queue.fail(&lease, "gone").await.unwrap();
    }
    assert_eq!(queue.retry_dead().await.unwrap(), 1);
    let lease = queue
        .claim(1, Duration::from_secs(60))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(lease.job.attempts, 1);
    h.destroy().await.unwrap();
}
