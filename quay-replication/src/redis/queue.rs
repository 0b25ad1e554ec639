//! [`RedisJobQueue`]: the [`JobQueue`] over Redis, each operation one Lua script.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use quay_core::metadata::TimestampMs;
use quay_core::{
    Error, ErrorKind, FailOutcome, Job, JobKind, JobQueue, JobSpec, Lease, QueueStats, Result,
    RetryPolicy, TargetStats, WorkerBeat,
};

use super::config::RedisQueueConfig;
use super::connection::{delete_prefixed, Connections, Script};
use super::error::bad_reply;
use super::scripts;

static ENQUEUE: Script = Script::new(scripts::ENQUEUE);
static CLAIM: Script = Script::new(scripts::CLAIM);
static HEARTBEAT: Script = Script::new(scripts::HEARTBEAT);
static COMPLETE: Script = Script::new(scripts::COMPLETE);
static FAIL: Script = Script::new(scripts::FAIL);
static DEFER: Script = Script::new(scripts::DEFER);
static STATS: Script = Script::new(scripts::STATS);
static DEAD_JOBS: Script = Script::new(scripts::DEAD_JOBS);
static RETRY_DEAD: Script = Script::new(scripts::RETRY_DEAD);
static PRIORITIZE: Script = Script::new(scripts::PRIORITIZE);

/// Jobs per enqueue script, and dead jobs revived per `retry_dead` script: bounds how long one
/// script holds the server.
const BATCH: usize = 500;

/// Values per job in script replies.
const JOB_FIELDS: usize = 7;

/// The job queue in Redis. Cheap to clone: clones share one connection pool.
///
/// ```no_run
/// # async fn run() -> quay_core::Result<()> {
/// use quay_core::{JobQueue, RetryPolicy};
/// use quay_replication::redis::{RedisJobQueue, RedisQueueConfig};
/// use quay_core::config::RedisConfig;
///
/// let server = RedisConfig { host: "127.0.0.1".into(), port: 6379, password: None };
/// let queue = RedisJobQueue::connect(&RedisQueueConfig::new(server), RetryPolicy::default()).await?;
/// println!("{:?}", queue.stats().await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisJobQueue {
    inner: Arc<Inner>,
}

struct Inner {
    connections: Connections,
    policy: RetryPolicy,
    prefix: String,
    /// pending, leased, dead, live, ids, seq, workers, worker_info: the `KEYS` of every
    /// script.
    keys: Vec<String>,
    /// The prefix of job hashes, `ARGV[1]` of every script.
    job_prefix: String,
}

impl fmt::Debug for RedisJobQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisJobQueue")
            .field("endpoint", &self.inner.connections.endpoint())
            .field("prefix", &self.inner.prefix)
            .field("policy", &self.inner.policy)
            .finish()
    }
}

fn millis(d: Duration) -> String {
    d.as_millis().min(i64::MAX as u128).to_string()
}

impl RedisJobQueue {
    /// Connects to the Redis of `config` and checks that it answers, within the configured
    /// connect timeout. Fails with `Unavailable` when it does not, `Config` when the settings
    /// or the password are wrong; the password appears in no error.
    pub async fn connect(config: &RedisQueueConfig, policy: RetryPolicy) -> Result<Self> {
        let queue = Self::connect_lazy(config, policy)?;
        queue.inner.connections.get("connect").await?;
        Ok(queue)
    }

    /// Like [`connect`](Self::connect), without waiting for Redis: the first operation
    /// connects, and every operation fails with `Unavailable` while Redis is down.
    pub fn connect_lazy(config: &RedisQueueConfig, policy: RetryPolicy) -> Result<Self> {
        let connections = Connections::new(config)?;
        let p = &config.prefix;
        let keys = [
            "pending",
            "leased",
            "dead",
            "live",
            "ids",
            "seq",
            "workers",
            "worker_info",
        ]
        .iter()
        .map(|k| format!("{p}{k}"))
        .collect();
        Ok(RedisJobQueue {
            inner: Arc::new(Inner {
                connections,
                policy,
                prefix: p.clone(),
                keys,
                job_prefix: format!("{p}job:"),
            }),
        })
    }

    /// The key prefix of this queue.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The prefix of job hashes, `ARGV[1]` of every script.
    pub(super) fn job_prefix(&self) -> String {
        self.inner.job_prefix.clone()
    }

    /// Adds jobs recorded elsewhere at `enqueued_at` (the outbox relay keeps the commit's
    /// time, the start of replication lag). Returns how many were not already queued.
    pub async fn enqueue_at(&self, jobs: &[(JobSpec, TimestampMs)]) -> Result<u64> {
        self.add(jobs.iter().map(|(spec, at)| (spec, Some(*at))))
            .await
    }

    /// Puts every dead-lettered job back in the queue, due now, with its attempts reset.
    /// Returns how many.
    pub async fn retry_dead(&self) -> Result<u64> {
        let mut revived = 0;
        loop {
            let n = self
                .count(
                    "retry_dead",
                    &RETRY_DEAD,
                    vec![self.inner.job_prefix.clone(), BATCH.to_string()],
                )
                .await?;
            revived += n;
            if n < BATCH as u64 {
                return Ok(revived);
            }
        }
    }

    /// Deletes every key under this queue's prefix: all its jobs, dead ones included. Returns
    /// how many keys. For tests, and to reset a queue (the reconciler enqueues again whatever
    /// is still missing).
    pub async fn delete_all(&self) -> Result<u64> {
        delete_prefixed(&self.inner.connections, &self.inner.prefix).await
    }

    async fn add<'a>(
        &self,
        jobs: impl Iterator<Item = (&'a JobSpec, Option<TimestampMs>)>,
    ) -> Result<u64> {
        let jobs: Vec<_> = jobs.collect();
        let mut added = 0;
        for chunk in jobs.chunks(BATCH) {
            let mut args = Vec::with_capacity(1 + chunk.len() * 4);
            args.push(self.inner.job_prefix.clone());
            for (spec, at) in chunk {
                args.push(spec.kind.as_str().to_owned());
                args.push(spec.digest.to_string());
                args.push(spec.target.to_string());
                args.push(at.map(|t| t.to_string()).unwrap_or_default());
            }
            added += self.count("enqueue", &ENQUEUE, args).await?;
        }
        Ok(added)
    }

    pub(super) async fn run(
        &self,
        op: &'static str,
        script: &Script,
        args: Vec<String>,
    ) -> Result<Vec<Option<String>>> {
        self.inner
            .connections
            .run(op, script, &self.inner.keys, &args)
            .await
    }

    /// Runs a script that returns a number, or nil when the lease was lost.
    async fn held(
        &self,
        op: &'static str,
        script: &Script,
        lease: &Lease,
        more: &[String],
    ) -> Result<String> {
        let mut args = vec![
            self.inner.job_prefix.clone(),
            job_id(lease)?,
            lease.token.clone(),
        ];
        args.extend_from_slice(more);
        let reply: Option<String> = self
            .inner
            .connections
            .run(op, script, &self.inner.keys, &args)
            .await?;
        reply.ok_or_else(lease_lost)
    }

    pub(super) async fn count(
        &self,
        op: &'static str,
        script: &Script,
        args: Vec<String>,
    ) -> Result<u64> {
        let reply: String = self
            .inner
            .connections
            .run(op, script, &self.inner.keys, &args)
            .await?;
        reply.parse().map_err(|_| bad_reply(op, reply))
    }
}

fn lease_lost() -> Error {
    Error::new(
        ErrorKind::Conflict,
        "the job's lease was lost: it expired and the job was claimed again",
    )
}

fn job_id(lease: &Lease) -> Result<String> {
    let id = &lease.job.id;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not a job id of this queue",
        ));
    }
    Ok(id.clone())
}

pub(super) fn number(op: &'static str, value: Option<&String>) -> Result<i64> {
    match value {
        Some(v) => v.parse().map_err(|_| bad_reply(op, v)),
        None => Err(bad_reply(op, "missing number")),
    }
}

/// Jobs from replies of 7 values each: id, kind, digest, target, attempts, enqueued_at,
/// last_error.
fn jobs(op: &'static str, values: &[Option<String>]) -> Result<Vec<Job>> {
    if values.len() % JOB_FIELDS != 0 {
        return Err(bad_reply(op, format!("{} values", values.len())));
    }
    values
        .chunks(JOB_FIELDS)
        .map(|f| {
            let text = |i: usize| -> Result<&str> {
                f[i].as_deref()
                    .ok_or_else(|| bad_reply(op, "a job without its fields"))
            };
            let kind = text(1)?;
            let corrupt = |what: &str, e: &dyn fmt::Display| {
                Error::internal(format!("corrupt job {what} in Redis: {e}"))
            };
            Ok(Job {
                id: text(0)?.to_owned(),
                spec: JobSpec {
                    kind: JobKind::parse(kind).ok_or_else(|| corrupt("kind", &kind))?,
                    digest: text(2)?.parse().map_err(|e| corrupt("digest", &e))?,
                    target: text(3)?.parse().map_err(|e| corrupt("target", &e))?,
                },
                attempts: u32::try_from(number(op, f[4].as_ref())?)
                    .map_err(|e| corrupt("attempts", &e))?,
                enqueued_at: number(op, f[5].as_ref())?,
                last_error: f[6].clone(),
            })
        })
        .collect()
}

#[async_trait]
impl JobQueue for RedisJobQueue {
    async fn prioritize(&self, jobs: &[JobSpec]) -> Result<u64> {
        let mut moved = 0;
        for chunk in jobs.chunks(BATCH) {
            let mut args = Vec::with_capacity(2 + chunk.len() * 3);
            args.push(self.inner.job_prefix.clone());
            args.push(scripts::PRIORITY_OFFSET_MS.to_string());
            for spec in chunk {
                args.push(spec.kind.as_str().to_owned());
                args.push(spec.digest.to_string());
                args.push(spec.target.to_string());
            }
            moved += self.count("prioritize", &PRIORITIZE, args).await?;
        }
        Ok(moved)
    }

    async fn retry_dead(&self) -> Result<u64> {
        RedisJobQueue::retry_dead(self).await
    }

    async fn target_stats(&self) -> Result<Vec<TargetStats>> {
        super::workers::target_stats(self).await
    }

    async fn record_worker(&self, beat: &WorkerBeat) -> Result<()> {
        super::workers::record(self, beat).await
    }

    async fn forget_worker(&self, id: &str) -> Result<()> {
        super::workers::forget(self, id).await
    }

    async fn workers(&self, seen_since: TimestampMs) -> Result<Vec<WorkerBeat>> {
        super::workers::list(self, seen_since).await
    }

    async fn enqueue(&self, jobs: &[JobSpec]) -> Result<u64> {
        self.add(jobs.iter().map(|spec| (spec, None))).await
    }

    async fn claim(&self, max: usize, lease: Duration) -> Result<Vec<Lease>> {
        let op = "claim";
        if max == 0 {
            return Ok(Vec::new());
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        let reply = self
            .run(
                op,
                &CLAIM,
                vec![
                    self.inner.job_prefix.clone(),
                    max.min(10_000).to_string(),
                    millis(lease),
                    token.clone(),
                ],
            )
            .await?;
        let Some((expires, rest)) = reply.split_first() else {
            return Err(bad_reply(op, "empty reply"));
        };
        let expires_at = number(op, expires.as_ref())?;
        Ok(jobs(op, rest)?
            .into_iter()
            .map(|job| Lease {
                job,
                token: token.clone(),
                expires_at,
            })
            .collect())
    }

    async fn heartbeat(&self, lease: &Lease, extend: Duration) -> Result<TimestampMs> {
        let reply = self
            .held("heartbeat", &HEARTBEAT, lease, &[millis(extend)])
            .await?;
        number("heartbeat", Some(&reply))
    }

    async fn complete(&self, lease: &Lease) -> Result<()> {
        self.held("complete", &COMPLETE, lease, &[]).await.map(drop)
    }

    async fn fail(&self, lease: &Lease, error: &str) -> Result<FailOutcome> {
        let error: String = error.chars().take(2000).collect();
        let policy = &self.inner.policy;
        let delay = policy.delay(lease.job.attempts, rand_unit());
        let reply = self
            .held(
                "fail",
                &FAIL,
                lease,
                &[error, policy.max_attempts.to_string(), millis(delay)],
            )
            .await?;
        if reply == "dead" {
            return Ok(FailOutcome::DeadLettered);
        }
        Ok(FailOutcome::Retry {
            not_before: number("fail", Some(&reply))?,
        })
    }

    async fn defer(&self, lease: &Lease, delay: Duration) -> Result<()> {
        self.held("defer", &DEFER, lease, &[millis(delay)])
            .await
            .map(drop)
    }

    async fn stats(&self) -> Result<QueueStats> {
        let op = "queue_stats";
        let reply = self
            .run(op, &STATS, vec![self.inner.job_prefix.clone()])
            .await?;
        let [pending, expired, leased, dead, oldest] = reply.as_slice() else {
            return Err(bad_reply(op, format!("{} values", reply.len())));
        };
        let count = |v: &Option<String>| number(op, v.as_ref()).map(|n| n.max(0) as u64);
        Ok(QueueStats {
            pending: count(pending)? + count(expired)?,
            leased: count(leased)?,
            dead: count(dead)?,
            oldest_pending: oldest.as_ref().map(|v| number(op, Some(v))).transpose()?,
        })
    }

    async fn dead_jobs(&self, limit: u64) -> Result<Vec<Job>> {
        let op = "dead_jobs";
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = limit.min(i64::MAX as u64);
        let reply = self
            .run(
                op,
                &DEAD_JOBS,
                vec![self.inner.job_prefix.clone(), limit.to_string()],
            )
            .await?;
        jobs(op, &reply)
    }
}

/// A number in `[0, 1)` for back-off jitter: the low 53 bits of a v4 UUID, all random (its
/// version and variant bits are higher up).
fn rand_unit() -> f64 {
    let bits = (uuid::Uuid::new_v4().as_u128() as u64) & ((1 << 53) - 1);
    (bits as f64) / ((1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_spreads_over_the_unit_interval() {
        let samples: Vec<f64> = (0..1000).map(|_| rand_unit()).collect();
        assert!(samples.iter().all(|j| (0.0..1.0).contains(j)));
        let (low, high) = samples
            .iter()
            .fold((1.0f64, 0.0f64), |(lo, hi), j| (lo.min(*j), hi.max(*j)));
        assert!(low < 0.05 && high > 0.95, "samples within [{low}, {high}]");
    }

    #[test]
    fn replies_of_the_wrong_shape_are_internal_errors() {
        let err = jobs("claim", &[Some("1".into())]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Internal);
        let bad_kind = [
            Some("1".to_owned()),
            Some("copy".to_owned()),
            Some(quay_core::Digest::sha256_of(b"x").to_string()),
            Some("us".to_owned()),
            Some("1".to_owned()),
            Some("0".to_owned()),
            None,
        ];
        assert_eq!(
            jobs("claim", &bad_kind).unwrap_err().kind(),
            ErrorKind::Internal
        );
    }

    #[test]
    fn only_digit_ids_are_ours() {
        let spec = JobSpec {
            kind: JobKind::Replicate,
            digest: quay_core::Digest::sha256_of(b"x"),
            target: "us".parse().unwrap(),
        };
        let lease = |id: &str| Lease {
            job: Job {
                id: id.to_owned(),
                spec: spec.clone(),
                attempts: 1,
                enqueued_at: 0,
                last_error: None,
            },
            token: "t".to_owned(),
            expires_at: 0,
        };
        assert_eq!(job_id(&lease("42")).unwrap(), "42");
        for bad in ["", "4*", "1 2", "x"] {
            assert_eq!(
                job_id(&lease(bad)).unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
        }
    }
}
