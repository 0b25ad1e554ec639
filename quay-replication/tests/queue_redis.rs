//! The `JobQueue` conformance suite on Redis (a random key prefix per case, on the server of
//! `quay_replication::testkit::redis`), what only `RedisJobQueue` has, and the outbox relay.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use quay_core::config::RedisConfig;
use quay_core::{Digest, ErrorKind, JobKind, JobQueue, JobSpec};
use quay_replication::redis::{OutboxRelay, RedisJobQueue, RedisQueueConfig};
use quay_replication::testkit::queue::{test_policy, QueueHarness};
use quay_replication::testkit::redis::{connect, test_config, RedisQueueHarness};
use quay_storage::testkit::metadata::fresh_sqlite;
use quay_storage::SqlJobQueue;

quay_replication::queue_conformance_tests!(RedisQueueHarness);

fn spec(seed: &str, target: &str) -> JobSpec {
    JobSpec {
        kind: JobKind::Replicate,
        digest: Digest::sha256_of(seed.as_bytes()),
        target: target.parse().unwrap(),
    }
}

async fn claim_soon(queue: &RedisJobQueue) -> quay_core::Lease {
    let start = Instant::now();
    loop {
        if let Some(l) = queue.claim(1, Duration::from_secs(60)).await.unwrap().pop() {
            return l;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "nothing to claim");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn retry_dead_puts_dead_jobs_back_with_attempts_reset() {
    let h = RedisQueueHarness::create(test_policy()).await.unwrap();
    let queue = h.open().await.unwrap();
    queue
        .enqueue(&[spec("a", "us"), spec("b", "us")])
        .await
        .unwrap();
    for _ in 0..test_policy().max_attempts {
        for _ in 0..2 {
            let lease = claim_soon(&queue).await;
            queue.fail(&lease, "gone").await.unwrap();
        }
    }
    let stats = queue.stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.dead, stats.oldest_pending),
        (0, 2, None)
    );
    assert_eq!(queue.retry_dead().await.unwrap(), 2);
    assert_eq!(queue.retry_dead().await.unwrap(), 0);
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.pending, stats.dead), (2, 0));
    assert!(stats.oldest_pending.is_some());
    let lease = claim_soon(&queue).await;
    assert_eq!(lease.job.attempts, 1);
    assert_eq!(lease.job.last_error.as_deref(), Some("gone"));
    h.destroy().await.unwrap();
}

#[tokio::test]
async fn enqueue_at_keeps_the_given_enqueue_time() {
    let h = RedisQueueHarness::create(test_policy()).await.unwrap();
    let queue = h.open().await.unwrap();
    let jobs = [(spec("a", "us"), 1_000), (spec("b", "us"), 2_000)];
    assert_eq!(queue.enqueue_at(&jobs).await.unwrap(), 2);
    assert_eq!(queue.enqueue_at(&jobs).await.unwrap(), 0);
    assert_eq!(queue.stats().await.unwrap().oldest_pending, Some(1_000));
    let claimed = queue.claim(10, Duration::from_secs(60)).await.unwrap();
    let times: BTreeSet<_> = claimed.iter().map(|l| l.job.enqueued_at).collect();
    assert_eq!(times, BTreeSet::from([1_000, 2_000]));
    h.destroy().await.unwrap();
}

#[tokio::test]
async fn scripts_are_loaded_again_after_a_script_flush() {
    let h = RedisQueueHarness::create(test_policy()).await.unwrap();
    let queue = h.open().await.unwrap();
    queue.enqueue(&[spec("a", "us")]).await.unwrap();
    let server = &h.config().server;
    let status = std::process::Command::new("redis-cli")
        .args([
            "-h",
            &server.host,
            "-p",
            &server.port.to_string(),
            "SCRIPT",
            "FLUSH",
        ])
        .status()
        .expect("redis-cli runs");
    assert!(status.success());
    assert_eq!(queue.enqueue(&[spec("b", "us")]).await.unwrap(), 1);
    assert_eq!(queue.stats().await.unwrap().pending, 2);
    h.destroy().await.unwrap();
}

#[tokio::test]
async fn delete_all_removes_every_key_of_the_queue_only() {
    let a = RedisQueueHarness::create(test_policy()).await.unwrap();
    let b = RedisQueueHarness::create(test_policy()).await.unwrap();
    let (qa, qb) = (a.open().await.unwrap(), b.open().await.unwrap());
    qa.enqueue(&[spec("x", "us")]).await.unwrap();
    qb.enqueue(&[spec("x", "us")]).await.unwrap();
    claim_soon(&qa).await;
    assert!(qa.delete_all().await.unwrap() >= 4);
    assert_eq!(qa.delete_all().await.unwrap(), 0);
    assert_eq!(qa.stats().await.unwrap(), Default::default());
    assert_eq!(
        qb.stats().await.unwrap().pending,
        1,
        "the other queue is untouched"
    );
    a.destroy().await.unwrap();
    b.destroy().await.unwrap();
}

#[tokio::test]
async fn unreachable_redis_is_unavailable_within_the_connect_timeout() {
    let mut config = RedisQueueConfig::new(RedisConfig {
        host: "127.0.0.1".to_owned(),
        port: 1,
        password: Some("s3cret-pw".to_owned()),
    });
    config.connect_timeout = Duration::from_millis(500);
    let start = Instant::now();
    let err = RedisJobQueue::connect(&config, test_policy())
        .await
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.is_temporary());
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("127.0.0.1:1"), "{shown}");
    assert!(!shown.contains("s3cret-pw"), "{shown}");

    // A queue made without waiting fails each operation the same way, in bounded time.
    let lazy = RedisJobQueue::connect_lazy(&config, test_policy()).unwrap();
    assert!(!format!("{lazy:?}").contains("s3cret-pw"));
    let start = Instant::now();
    let err = lazy.claim(1, Duration::from_secs(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_wrong_password_is_refused_without_showing_it() {
    let mut config = test_config().unwrap();
    config.server.password = Some("not-the-password-42".to_owned());
    config.connect_timeout = Duration::from_millis(500);
    let err = RedisJobQueue::connect(&config, test_policy())
        .await
        .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("not-the-password-42"), "{shown}");
    // The test server has no password: AUTH fails, a setting that waiting will not fix.
    assert!(shown.to_lowercase().contains("auth"), "{shown}");
    assert_eq!(err.kind(), ErrorKind::Config, "{shown}");
    assert!(!err.is_temporary());
}

#[tokio::test]
async fn invalid_settings_are_a_config_error() {
    let config = test_config().unwrap().with_prefix("");
    let err = RedisJobQueue::connect(&config, test_policy())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

// The outbox relay: SQL (SQLite here) to Redis.

async fn outbox() -> (SqlJobQueue, quay_storage::testkit::metadata::TestSqlite) {
    let (store, guard) = fresh_sqlite().await.unwrap();
    (SqlJobQueue::new(&store, test_policy()), guard)
}

#[tokio::test]
async fn relay_moves_every_outbox_job_to_redis_once() {
    let (sql, _guard) = outbox().await;
    let redis = connect(&test_config().unwrap(), test_policy())
        .await
        .unwrap();
    let jobs: Vec<JobSpec> = (0..1234)
        .map(|i| spec(&format!("blob-{i}"), "eu"))
        .collect();
    sql.enqueue(&jobs).await.unwrap();
    let sql_jobs = sql.claim(1, Duration::from_millis(1)).await.unwrap();
    sql.defer(&sql_jobs[0], Duration::ZERO).await.unwrap();

    let relay = OutboxRelay::new(std::sync::Arc::new(sql.clone()), redis.clone()).with_batch(100);
    assert_eq!(relay.run_once().await.unwrap(), 1234);
    assert_eq!(relay.run_once().await.unwrap(), 0);
    assert_eq!(
        sql.stats().await.unwrap(),
        Default::default(),
        "the outbox is empty"
    );
    let stats = redis.stats().await.unwrap();
    assert_eq!((stats.pending, stats.leased, stats.dead), (1234, 0, 0));

    let mut seen = BTreeSet::new();
    loop {
        let claimed = redis.claim(500, Duration::from_secs(60)).await.unwrap();
        if claimed.is_empty() {
            break;
        }
        for l in claimed {
            assert!(seen.insert(l.job.spec.clone()), "{:?} twice", l.job.spec);
        }
    }
    assert_eq!(seen, jobs.into_iter().collect());
    redis.delete_all().await.unwrap();
}

#[tokio::test]
async fn relay_keeps_the_commit_time_and_deduplicates_a_replay() {
    let (sql, _guard) = outbox().await;
    let redis = connect(&test_config().unwrap(), test_policy())
        .await
        .unwrap();
    sql.enqueue(&[spec("a", "eu")]).await.unwrap();
    let committed = sql.stats().await.unwrap().oldest_pending.unwrap();
    // A relay that died after enqueuing in Redis, before completing in SQL: its lease runs out.
    let lease = sql
        .claim(1, Duration::from_millis(50))
        .await
        .unwrap()
        .pop()
        .unwrap();
    redis
        .enqueue_at(&[(lease.job.spec.clone(), lease.job.enqueued_at)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;

    let relay = OutboxRelay::new(std::sync::Arc::new(sql.clone()), redis.clone());
    assert_eq!(
        relay.run_once().await.unwrap(),
        1,
        "the job is relayed again"
    );
    let stats = redis.stats().await.unwrap();
    assert_eq!(stats.pending, 1, "Redis holds it once");
    assert_eq!(
        stats.oldest_pending,
        Some(committed),
        "enqueued at the commit"
    );
    assert_eq!(sql.stats().await.unwrap(), Default::default());
    redis.delete_all().await.unwrap();
}

#[tokio::test]
async fn concurrent_relays_lose_and_duplicate_nothing() {
    let (sql, _guard) = outbox().await;
    let redis = connect(&test_config().unwrap(), test_policy())
        .await
        .unwrap();
    let jobs: Vec<JobSpec> = (0..600).map(|i| spec(&format!("blob-{i}"), "us")).collect();
    let relays: Vec<_> = (0..3)
        .map(|_| OutboxRelay::new(std::sync::Arc::new(sql.clone()), redis.clone()).with_batch(25))
        .collect();
    // Jobs keep arriving while the relays run.
    let writer = async {
        for chunk in jobs.chunks(50) {
            sql.enqueue(chunk).await.unwrap();
            tokio::task::yield_now().await;
        }
    };
    let runs = futures::future::join_all(relays.iter().map(|r| async move {
        let mut moved = 0;
        for _ in 0..20 {
            moved += r.run_once().await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        moved
    }));
    let ((), moved) = tokio::join!(writer, runs);
    let mut total: u64 = moved.iter().sum();
    total += relays[0].run_once().await.unwrap();
    assert_eq!(total, 600, "each outbox job moved once");
    let stats = redis.stats().await.unwrap();
    assert_eq!(stats.pending, 600);
    assert_eq!(sql.stats().await.unwrap(), Default::default());
    redis.delete_all().await.unwrap();
}

#[tokio::test]
async fn relay_gives_the_batch_back_when_redis_is_down() {
    let (sql, _guard) = outbox().await;
    let mut config = test_config().unwrap();
    config.server.port = 1;
    config.connect_timeout = Duration::from_millis(300);
    let down = RedisJobQueue::connect_lazy(&config, test_policy()).unwrap();
    sql.enqueue(&[spec("a", "eu"), spec("b", "eu")])
        .await
        .unwrap();
    let err = OutboxRelay::new(std::sync::Arc::new(sql.clone()), down)
        .run_once()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let stats = sql.stats().await.unwrap();
    assert_eq!((stats.pending, stats.leased), (2, 0), "{stats:?}");
    let lease = sql
        .claim(1, Duration::from_secs(1))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(lease.job.attempts, 1, "the relay's attempt was given back");
}

#[tokio::test]
async fn relay_run_stops_on_shutdown() {
    let (sql, _guard) = outbox().await;
    let redis = connect(&test_config().unwrap(), test_policy())
        .await
        .unwrap();
    sql.enqueue(&[spec("a", "eu")]).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = OutboxRelay::new(std::sync::Arc::new(sql.clone()), redis.clone());
    let task = tokio::spawn(relay.run(Duration::from_millis(20), async {
        let _ = stopped.await;
    }));
    let start = Instant::now();
    while redis.stats().await.unwrap().pending == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "not relayed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    redis.delete_all().await.unwrap();
}
