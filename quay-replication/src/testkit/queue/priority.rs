//! Cases of `prioritize`: a job a pull waits for goes to the front of the queue.

use std::collections::BTreeSet;

use quay_core::{JobQueue, JobSpec, Result};

use super::{only, replicate, replicate_many, specs, tick, QueueHarness, LONG};

/// A prioritized job is claimed before the 1,000 jobs queued ahead of it, and only the
/// pending jobs named are moved.
pub async fn prioritized_job_is_claimed_before_older_jobs<H: QueueHarness>(h: &H) -> Result<()> {
    let queue = h.open().await?;
    queue.enqueue(&replicate_many(1000)?).await?;
    tick().await;
    let urgent = replicate("wanted by a pull")?;
    queue.enqueue(std::slice::from_ref(&urgent)).await?;
    let unknown = replicate("never queued")?;
    let moved = queue.prioritize(&[urgent.clone(), unknown]).await?;
    assert_eq!(moved, 1, "one pending job named, one unknown");
    let first = only(queue.claim(1, LONG).await?, "claim after prioritize");
    assert_eq!(first.job.spec, urgent, "the prioritized job comes first");
    assert_eq!(first.job.attempts, 1, "attempts of the prioritized job");
    // A leased job is not moved.
    assert_eq!(queue.prioritize(std::slice::from_ref(&urgent)).await?, 0);
    let rest = queue.claim(2000, LONG).await?;
    assert_eq!(rest.len(), 1000, "the other jobs are still there");
    assert!(!specs(&rest).contains(&urgent), "the prioritized job once");
    Ok(())
}

/// Prioritized jobs are claimed in the order they were moved, and the priority lasts until
/// the next claim: a deferred prioritized job goes back to normal priority.
pub async fn priority_lasts_until_the_next_claim<H: QueueHarness>(h: &H) -> Result<()> {
    let queue = h.open().await?;
    let jobs = replicate_many(5)?;
    queue.enqueue(&jobs).await?;
    queue.prioritize(&jobs[4..5]).await?;
    // Apart by more than the coarsest database clock step (SQLite's `julianday`).
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    queue.prioritize(&jobs[3..4]).await?;
    // One at a time: a claim's leases come in no particular order.
    let mut claimed = queue.claim(1, LONG).await?;
    claimed.extend(queue.claim(1, LONG).await?);
    assert_eq!(
        claimed
            .iter()
            .map(|l| l.job.spec.clone())
            .collect::<Vec<_>>(),
        vec![jobs[4].clone(), jobs[3].clone()],
        "prioritized jobs, oldest move first"
    );
    for lease in &claimed {
        queue.defer(lease, std::time::Duration::ZERO).await?;
    }
    let first = queue.claim(3, LONG).await?;
    assert_eq!(
        specs(&first),
        specs_of(&jobs[..3]),
        "after a claim, moved jobs are back to normal priority"
    );
    // A finished job cannot be moved; an empty list moves nothing.
    assert_eq!(queue.prioritize(&[]).await?, 0);
    queue.complete(&first[0]).await?;
    assert_eq!(queue.prioritize(&[first[0].job.spec.clone()]).await?, 0);
    Ok(())
}

fn specs_of(jobs: &[JobSpec]) -> BTreeSet<JobSpec> {
    jobs.iter().cloned().collect()
}
