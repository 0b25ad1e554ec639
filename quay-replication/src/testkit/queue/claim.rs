//! Cases of `claim`: due jobs under fresh leases, at most `max`, never two live leases on one
//! job.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quay_core::metadata::now_ms;
use quay_core::{Error, JobQueue, Lease, Result};

use super::{ids, only, replicate_many, specs, QueueHarness, LONG, WAIT};

/// Claiming from an empty queue hands out nothing.
pub async fn claim_of_an_empty_queue_is_empty<H: QueueHarness>(h: &H) -> Result<()> {
    let queue = h.open().await?;
    assert!(queue.claim(10, LONG).await?.is_empty());
    Ok(())
}

/// A claim hands out the due jobs as enqueued, on their first attempt, each under a lease that
/// ends `lease` from now.
pub async fn claim_returns_due_jobs_with_their_first_attempt<H: QueueHarness>(h: &H) -> Result<()> {
    let queue = h.open().await?;
    let jobs = replicate_many(2)?;
    let before = now_ms();
    queue.enqueue(&jobs).await?;
    let after = now_ms();
    let lease = Duration::from_secs(30);
    let claimed = queue.claim(10, lease).await?;
    let claimed_at = now_ms();
    assert_eq!(specs(&claimed), jobs.into_iter().collect());
    assert_eq!(ids(&claimed).len(), 2, "distinct job ids");
    for l in &claimed {
        assert_eq!(l.job.attempts, 1, "attempts of {:?}", l.job);
        assert_eq!(l.job.last_error, None, "last error of {:?}", l.job);
        assert!(
            (before..=after).contains(&l.job.enqueued_at),
            "enqueued_at {} not within [{before}, {after}]",
            l.job.enqueued_at
        );
        assert!(
            (after + 30_000..=claimed_at + 30_000).contains(&l.expires_at),
            "lease of 30 s from {after}..{claimed_at} ends at {}",
            l.expires_at
        );
        assert!(!l.token.is_empty(), "empty lease token");
    }
    Ok(())
}

/// A claim hands out at most `max` jobs (none for 0), and each job once.
pub async fn claim_respects_max<H: QueueHarness>(h: &H) -> Result<()> {
    let queue = h.open().await?;
    queue.enqueue(&replicate_many(5)?).await?;
    assert!(queue.claim(0, LONG).await?.is_empty(), "claim of 0 jobs");
    let mut all = Vec::new();
    for expected in [2, 2, 1, 0] {
        let claimed = queue.claim(2, LONG).await?;
        assert_eq!(claimed.len(), expected, "claim of at most 2 jobs");
        all.extend(claimed);
    }
    assert_eq!(ids(&all).len(), 5, "five distinct jobs");
    Ok(())
}

/// A job under a live lease is not handed to another claim, from this handle or another.
pub async fn leased_job_is_not_claimed_again<H: QueueHarness>(h: &H) -> Result<()> {
    let a = h.open().await?;
    let b = h.open().await?;
    a.enqueue(&replicate_many(1)?).await?;
    let lease = only(a.claim(10, LONG).await?, "first claim");
    assert!(
        a.claim(10, LONG).await?.is_empty(),
        "claim on the same handle"
    );
    assert!(
        b.claim(10, LONG).await?.is_empty(),
        "claim on another handle"
    );
    let stats = b.stats().await?;
    assert_eq!((stats.pending, stats.leased), (0, 1), "{stats:?}");
    a.complete(&lease).await?;
    Ok(())
}

/// Many workers on two handles claim at once: every job is handed out exactly once while
/// all leases are live, and each holder can complete its jobs.
pub async fn two_workers_never_both_hold_a_live_lease<H: QueueHarness>(h: &H) -> Result<()> {
    const JOBS: usize = 60;
    const WORKERS_PER_HANDLE: usize = 4;
    let handles = [Arc::new(h.open().await?), Arc::new(h.open().await?)];
    handles[0].enqueue(&replicate_many(JOBS)?).await?;
    let held: Arc<Mutex<Vec<Lease>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    for queue in &handles {
        for _ in 0..WORKERS_PER_HANDLE {
            let queue = Arc::clone(queue);
            let held = Arc::clone(&held);
            tasks.spawn(async move {
                let start = Instant::now();
                loop {
                    let claimed = queue.claim(3, LONG).await?;
                    let got = !claimed.is_empty();
                    let total = {
                        let mut held = held.lock().map_err(|_| Error::internal("poisoned"))?;
                        held.extend(claimed);
                        held.len()
                    };
                    if total >= JOBS || start.elapsed() > WAIT * 2 {
                        return Ok::<_, Error>(());
                    }
                    if !got {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            });
        }
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(result) => result?,
            Err(e) => panic!("a claiming task failed: {e}"),
        }
    }
    let held = std::mem::take(&mut *held.lock().map_err(|_| Error::internal("poisoned"))?);
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &held {
        *times.entry(l.job.id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "jobs handed out more than once: {twice:?}"
    );
    assert_eq!(held.len(), JOBS, "jobs handed out");
    for queue in &handles {
        assert!(queue.claim(10, LONG).await?.is_empty(), "claim after all");
    }
    for (i, lease) in held.iter().enumerate() {
        handles[i % 2].complete(lease).await?;
    }
    assert_eq!(handles[1].stats().await?, Default::default());
    Ok(())
}
