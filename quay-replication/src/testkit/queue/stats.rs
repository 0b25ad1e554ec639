//! Cases of `stats`: pending, leased and dead counts, and the oldest job not dead.

use std::time::Duration;

use quay_core::metadata::now_ms;
use quay_core::{JobQueue, QueueStats, Result};

use super::{claim_within, dead_letter, only, replicate, tick, QueueHarness, LONG};

/// An empty queue counts nothing and has no oldest job.
pub async fn stats_of_an_empty_queue_are_zero<H: QueueHarness>(h: &H) -> Result<()> {
    let queue = h.open().await?;
    assert_eq!(queue.stats().await?, QueueStats::default());
    assert!(queue.dead_jobs(10).await?.is_empty());
    Ok(())
}

/// Pending, leased and dead jobs are counted apart; the oldest job not dead (leased or
/// pending) gives `oldest_pending`, and a dead job, older still, does not.
pub async fn stats_count_pending_leased_and_dead<H: QueueHarness>(h: &H) -> Result<()> {
    let queue = h.open().await?;
    let doomed = replicate("doomed")?;
    queue.enqueue(std::slice::from_ref(&doomed)).await?;
    dead_letter(&queue, &doomed).await?;
    tick().await;
    let before = now_ms();
    queue.enqueue(&[replicate("oldest")?]).await?;
    let after = now_ms();
    tick().await;
    queue.enqueue(&[replicate("b")?, replicate("c")?]).await?;
    let stats = queue.stats().await?;
    assert_eq!(
        (stats.pending, stats.leased, stats.dead),
        (3, 0, 1),
        "{stats:?}"
    );
    let Some(t) = stats.oldest_pending else {
        panic!("no oldest pending job among 3: {stats:?}");
    };
    assert!(
        (before..=after).contains(&t),
        "oldest_pending {t} not within [{before}, {after}]"
    );

    let held = queue.claim(3, LONG).await?;
    assert_eq!(held.len(), 3);
    let stats = queue.stats().await?;
    assert_eq!(
        (
            stats.pending,
            stats.leased,
            stats.dead,
            stats.oldest_pending
        ),
        (0, 3, 1, Some(t)),
        "leased jobs count in oldest_pending"
    );
    for lease in &held[..2] {
        queue.defer(lease, LONG).await?;
    }
    let stats = queue.stats().await?;
    assert_eq!(
        (stats.pending, stats.leased, stats.dead),
        (2, 1, 1),
        "{stats:?}"
    );
    Ok(())
}

/// A job whose lease ended without a heartbeat is pending again, not leased.
pub async fn expired_lease_counts_as_pending<H: QueueHarness>(h: &H) -> Result<()> {
    let queue = h.open().await?;
    queue.enqueue(&[replicate("a")?]).await?;
    let lease = only(queue.claim(1, Duration::from_millis(100)).await?, "claim");
    while now_ms() <= lease.expires_at + 5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = queue.stats().await?;
    assert_eq!((stats.pending, stats.leased), (1, 0), "{stats:?}");
    let again = only(claim_within(&queue, 1, LONG, "claim").await?, "claim");
    assert_eq!(again.job.attempts, 2);
    Ok(())
}
