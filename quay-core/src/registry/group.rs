//! Group commit: concurrent callers of one operation share a round trip.
//!
//! A caller adds its request to a queue and then waits, at the same time, for its answer and
//! for its turn to lead (a fair lock). The leader takes everything queued (up to a limit), runs
//! it as one batch, answers each request, and lets the next waiting caller lead. So a batch is
//! whatever queued while the previous one ran: one caller alone pays no wait, and many callers
//! pay one round trip (one transaction, one commit) for many requests.
//!
//! A group may also *linger*: under load (the previous batch held more than one request), the
//! leader waits that long before taking the queue, so that a batch gathers what arrives
//! meanwhile. Callers that come one at a time never wait. On the replication worker's small
//! copies, a 2 ms linger on placements made their batches about twice as large and cut
//! PostgreSQL's CPU per job by a third (the statement's fixed cost dominates); 5 ms, the
//! placements' linger now, took about a fifth more off.
//!
//! A leader whose future is dropped mid-batch (its caller went away: a client hung up) drops
//! that batch's answers: their callers queue their requests again, and the next caller to lead
//! runs them, so one caller's cancellation never fails another's request. Requests must be
//! safe to run twice (reads, and writes that are idempotent). A request whose caller went away
//! is still run; its answer is dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use futures::channel::oneshot;
use futures::future::{select, Either};

use crate::error::{Error, Result};

type Waiting<Req, Resp> = (Req, oneshot::Sender<Result<Resp>>);

/// Requests of type `Req` answered in batches (see the [module docs](self)).
pub(crate) struct GroupCommit<Req, Resp> {
    queue: Mutex<Vec<Waiting<Req, Resp>>>,
    turn: futures::lock::Mutex<()>,
    max_batch: usize,
    linger: Duration,
    /// How many requests the last batch held.
    last_batch: AtomicUsize,
}

impl<Req: Clone, Resp> GroupCommit<Req, Resp> {
    /// Batches of at most `max_batch` requests.
    pub(crate) fn new(max_batch: usize) -> Self {
        GroupCommit {
            queue: Mutex::new(Vec::new()),
            turn: futures::lock::Mutex::new(()),
            max_batch: max_batch.max(1),
            linger: Duration::ZERO,
            last_batch: AtomicUsize::new(0),
        }
    }

    /// Under load, a leader waits `linger` before taking the queue (see the
    /// [module docs](self)).
    pub(crate) fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Vec<Waiting<Req, Resp>>> {
        match self.queue.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Runs `request` in a batch with whatever else is queued: `run` gets the batch and returns
    /// one answer per request, in order.
    pub(crate) async fn submit<F, Fut>(&self, request: Req, run: F) -> Result<Resp>
    where
        F: Fn(Vec<Req>) -> Fut,
        Fut: std::future::Future<Output = Vec<Result<Resp>>>,
    {
        let (tx, mut rx) = oneshot::channel();
        self.queue().push((request.clone(), tx));
        loop {
            // Not `select!`: a receiver whose sender was dropped counts as terminated there,
            // and would never be polled to say so.
            let answer = match select(&mut rx, self.turn.lock()).await {
                Either::Left((answer, _)) => answer,
                Either::Right((_turn, _)) => {
                    if !self.linger.is_zero()
                        && self.last_batch.load(Ordering::Relaxed) > 1
                        && self.queue().len() < self.max_batch
                    {
                        futures_timer::Delay::new(self.linger).await;
                    }
                    let batch: Vec<Waiting<Req, Resp>> = {
                        let mut queue = self.queue();
                        let n = queue.len().min(self.max_batch);
                        queue.drain(..n).collect()
                    };
                    if batch.is_empty() {
                        // An earlier leader took this request: it answers, or drops the sender
                        // when it goes away.
                        drop(_turn);
                        (&mut rx).await
                    } else {
                        self.last_batch.store(batch.len(), Ordering::Relaxed);
                        self.lead(batch, &run).await;
                        continue;
                    }
                }
            };
            match answer {
                Ok(answer) => return answer,
                Err(oneshot::Canceled) => {
                    // The batch's leader went away before answering: queue the request again.
                    let (tx, again) = oneshot::channel();
                    rx = again;
                    self.queue().push((request.clone(), tx));
                }
            }
        }
    }

    /// Runs `batch` and sends each request its answer.
    async fn lead<F, Fut>(&self, batch: Vec<Waiting<Req, Resp>>, run: &F)
    where
        F: Fn(Vec<Req>) -> Fut,
        Fut: std::future::Future<Output = Vec<Result<Resp>>>,
    {
        let (requests, senders): (Vec<Req>, Vec<_>) = batch.into_iter().unzip();
        let count = senders.len();
        let mut answers = run(requests).await.into_iter();
        for sender in senders {
            let answer = answers.next().unwrap_or_else(|| {
                Err(Error::internal(format!(
                    "a batch of {count} requests got fewer answers"
                )))
            });
            let _ = sender.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// Answers each request with itself.
    async fn echo(reqs: Vec<u32>) -> Vec<Result<u32>> {
        reqs.into_iter().map(Ok).collect()
    }

    /// Submits `request` with a batch that never finishes: once it leads, it holds the turn
    /// until aborted.
    fn spawn_stuck_leader(
        group: &Arc<GroupCommit<u32, u32>>,
        request: u32,
    ) -> tokio::task::JoinHandle<Result<u32>> {
        let group = group.clone();
        tokio::spawn(async move {
            group
                .submit(request, |_| async {
                    std::future::pending::<()>().await;
                    Vec::new()
                })
                .await
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_batches_and_get_their_own_answers() {
        let group = Arc::new(GroupCommit::<u32, u32>::new(64));
        let batches = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let (group, batches) = (group.clone(), batches.clone());
            tasks.push(tokio::spawn(async move {
                group
                    .submit(i, |reqs| {
                        let batches = batches.clone();
                        async move {
                            batches.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            reqs.into_iter().map(|r| Ok(r * 2)).collect()
                        }
                    })
                    .await
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap().unwrap(), i as u32 * 2);
        }
        let n = batches.load(Ordering::Relaxed);
        assert!(n < 200, "requests were batched: {n} batches for 200");
    }

    #[tokio::test]
    async fn an_abandoned_leader_does_not_fail_the_others_in_its_batch() {
        let group = Arc::new(GroupCommit::<u32, u32>::new(64));
        // Holds the turn while 1 and 2 queue, so that the next leader takes both.
        let holder = {
            let group = group.clone();
            tokio::spawn(async move {
                group
                    .submit(0, |reqs| async move {
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        echo(reqs).await
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        // Leads the batch of 1 and 2 (it waits for the turn first), never finishes it.
        let stuck = spawn_stuck_leader(&group, 1);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let other = {
            let group = group.clone();
            tokio::spawn(async move { group.submit(2, echo).await })
        };
        assert_eq!(holder.await.unwrap().unwrap(), 0);
        tokio::time::sleep(Duration::from_millis(20)).await;
        stuck.abort();
        assert_eq!(
            other.await.unwrap().unwrap(),
            2,
            "queued again and answered"
        );
    }

    #[tokio::test]
    async fn an_abandoned_leader_lets_the_next_caller_lead() {
        let group = Arc::new(GroupCommit::<u32, u32>::new(64));
        // The leader's batch never finishes; it is dropped.
        let stuck = spawn_stuck_leader(&group, 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let queued = {
            let group = group.clone();
            tokio::spawn(async move { group.submit(2, echo).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        stuck.abort();
        assert_eq!(queued.await.unwrap().unwrap(), 2, "the next caller leads");
        let lone = group.submit(3, echo).await;
        assert_eq!(lone.unwrap(), 3);
    }

    /// Submits `request`, recording the size of the batch it ran in (when it led), after
    /// `hold` of work.
    fn spawn_recorded(
        group: &Arc<GroupCommit<u32, u32>>,
        sizes: &Arc<Mutex<Vec<usize>>>,
        request: u32,
        hold: Duration,
    ) -> tokio::task::JoinHandle<Result<u32>> {
        let (group, sizes) = (group.clone(), sizes.clone());
        tokio::spawn(async move {
            group
                .submit(request, |reqs| {
                    let sizes = sizes.clone();
                    async move {
                        sizes.lock().unwrap().push(reqs.len());
                        tokio::time::sleep(hold).await;
                        echo(reqs).await
                    }
                })
                .await
        })
    }

    #[tokio::test]
    async fn under_load_a_lingering_leader_gathers_later_requests() {
        let group =
            Arc::new(GroupCommit::<u32, u32>::new(64).with_linger(Duration::from_millis(50)));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let quick = Duration::ZERO;
        // A lone caller: its batch is itself.
        assert_eq!(
            spawn_recorded(&group, &sizes, 1, quick)
                .await
                .unwrap()
                .unwrap(),
            1
        );
        // Load: 3 and 4 queue while 2's batch runs, and go together.
        let holder = spawn_recorded(&group, &sizes, 2, Duration::from_millis(30));
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (three, four) = (
            spawn_recorded(&group, &sizes, 3, quick),
            spawn_recorded(&group, &sizes, 4, quick),
        );
        for (t, want) in [(holder, 2), (three, 3), (four, 4)] {
            assert_eq!(t.await.unwrap().unwrap(), want);
        }
        // Under load now: 5 leads and lingers, and 6, arriving after it took the turn, joins.
        let five = spawn_recorded(&group, &sizes, 5, quick);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let six = spawn_recorded(&group, &sizes, 6, quick);
        assert_eq!(five.await.unwrap().unwrap(), 5);
        assert_eq!(six.await.unwrap().unwrap(), 6);
        assert_eq!(*sizes.lock().unwrap(), vec![1, 1, 2, 2]);
    }

    #[tokio::test]
    async fn missing_answers_are_errors() {
        let group = GroupCommit::<u32, u32>::new(8);
        let got = group.submit(1, |_| async { Vec::new() }).await;
        assert_eq!(got.unwrap_err().kind(), crate::ErrorKind::Internal);
    }
}
