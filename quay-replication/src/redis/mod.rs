//! The Redis job queue, [`RedisJobQueue`], and the [`OutboxRelay`] that feeds it from the SQL
//! outbox.
//!
//! # Data model
//!
//! Every key starts with the configured prefix `P` (default `quay:jobs:`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P job:<id>` | hash | `kind`, `digest`, `target`, `attempts`, `enqueued_at`, `last_error`, and `token` while leased |
//! | `P pending` | sorted set | ids of waiting jobs, scored by when they are due (ms) |
//! | `P leased` | sorted set | ids of claimed jobs, scored by when their lease ends (ms) |
//! | `P dead` | sorted set | ids of dead-lettered jobs, scored by id (enqueue order) |
//! | `P live` | sorted set | ids of jobs not dead, scored by enqueue time (for `oldest_pending`) |
//! | `P ids` | hash | `"<kind> <digest> <target>"` → id, for every job queued, leased or dead |
//! | `P seq` | string | the last id given |
//! | `P workers` | sorted set | ids of replication workers, scored by their last beat (ms, the worker's clock) |
//! | `P worker_info` | hash | worker id → its last beat (JSON) |
//!
//! A job is in exactly one of `pending`, `leased` and `dead`. Each operation is one Lua script,
//! atomic on the server: `claim` moves due ids from `pending`, and ids whose lease ended from
//! `leased`, into `leased` with a new end, sets the token and counts the attempt; heartbeat,
//! complete, fail and defer first check the job's token, and change nothing (the caller gets
//! `Conflict`) when it is not theirs. Times are the server's clock (`TIME`), so workers with
//! skewed clocks agree on when a lease ends. A job whose worker died stays in `leased` until
//! its lease ends, then is claimed again: none is lost.
//!
//! Durability is Redis's own: with persistence off, a restart loses the queue. Blob commits
//! write their jobs to the SQL outbox first (see [`OutboxRelay`]), and the reconciler enqueues
//! whatever copy is still missing, so a flushed Redis delays replication but loses nothing.
//!
//! # Connections
//!
//! A small bb8 pool of multiplexed connections, each checked with `PING` when taken. Waiting for
//! a connection, and for a reply, is bounded ([`RedisQueueConfig::connect_timeout`],
//! [`RedisQueueConfig::response_timeout`], 5 s each by default): a Redis that is down makes
//! operations fail with a temporary `Unavailable` after at most that long. The client is built
//! from host, port, password and database (never from a URL), and the password appears in no
//! `Debug` output, error or log.

mod config;
mod connection;
mod error;
mod outboxed;
mod queue;
mod relay;
mod scripts;
mod workers;

pub use self::config::{RedisQueueConfig, DEFAULT_PREFIX};
pub use self::outboxed::OutboxedRedisQueue;
pub use self::queue::RedisJobQueue;
pub use self::relay::OutboxRelay;
