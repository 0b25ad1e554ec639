//! [`RedisQueueConfig`]: which Redis, which database and key prefix, and the bounds on waiting.

use std::fmt;
use std::time::Duration;

use quay_core::config::RedisConfig;
use quay_core::{Error, ErrorKind, Result};

/// The key prefix used when none is given.
pub const DEFAULT_PREFIX: &str = "quay:jobs:";

/// Where the Redis queue lives and how it connects.
///
/// The password (in [`RedisConfig`]) never appears in `Debug`, errors or logs.
#[derive(Clone)]
pub struct RedisQueueConfig {
    /// Host, port and password (Quay's `BUILDLOGS_REDIS` shape).
    pub server: RedisConfig,
    /// The Redis database index (`SELECT`), 0 by default.
    pub db: i64,
    /// Every key of the queue starts with this (default [`DEFAULT_PREFIX`]), so that several
    /// queues, or test runs, share one Redis without meeting. On Redis Cluster, put a hash tag
    /// in it (`{quay}:jobs:`) so that all keys of the queue live on one node.
    pub prefix: String,
    /// Connections in the pool (each one multiplexes many requests).
    pub pool_size: u32,
    /// The longest an operation waits for a connection, including connecting: a Redis that is
    /// down costs at most this much per operation.
    pub connect_timeout: Duration,
    /// The longest an operation waits for Redis to answer.
    pub response_timeout: Duration,
}

impl RedisQueueConfig {
    /// Settings for `server` with the defaults: database 0, prefix [`DEFAULT_PREFIX`], 4
    /// connections, 5 s to connect and 5 s to answer.
    pub fn new(server: RedisConfig) -> Self {
        RedisQueueConfig {
            server,
            db: 0,
            prefix: DEFAULT_PREFIX.to_owned(),
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
        }
    }

    /// The same settings on database `db`.
    pub fn with_db(mut self, db: i64) -> Self {
        self.db = db;
        self
    }

    /// The same settings under key prefix `prefix`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// `host:port/db`, for messages (never the password).
    pub fn endpoint(&self) -> String {
        format!("{}:{}/{}", self.server.host, self.server.port, self.db)
    }

    /// Checks every setting, reporting all problems at once.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self.server.host.is_empty() {
            problems.push("host is empty".to_owned());
        }
        if self.db < 0 {
            problems.push(format!("db {} is negative", self.db));
        }
        if self.prefix.is_empty() {
            problems.push("prefix is empty (the queue would share the key space)".to_owned());
        }
        if self.pool_size == 0 {
            problems.push("pool_size is 0".to_owned());
        }
        if self.connect_timeout.is_zero() {
            problems.push("connect_timeout is 0".to_owned());
        }
        if self.response_timeout.is_zero() {
            problems.push("response_timeout is 0".to_owned());
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Config,
            format!("invalid Redis queue settings: {}", problems.join("; ")),
        ))
    }
}

impl fmt::Debug for RedisQueueConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `RedisConfig`'s own Debug redacts the password.
        f.debug_struct("RedisQueueConfig")
            .field("server", &self.server)
            .field("db", &self.db)
            .field("prefix", &self.prefix)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> RedisConfig {
        RedisConfig {
            host: "redis.example".to_owned(),
            port: 6380,
            password: Some("hunter2".to_owned()),
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let shown = format!("{:?}", RedisQueueConfig::new(server()));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redis.example"), "{shown}");
        assert_eq!(
            RedisQueueConfig::new(server()).endpoint(),
            "redis.example:6380/0"
        );
    }

    #[test]
    fn validate_reports_every_problem() {
        let mut config = RedisQueueConfig::new(server()).with_db(-1).with_prefix("");
        config.pool_size = 0;
        let err = config.validate().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let message = err.to_string();
        for part in ["db -1", "prefix is empty", "pool_size is 0"] {
            assert!(message.contains(part), "{message}");
        }
        assert!(RedisQueueConfig::new(server()).validate().is_ok());
    }
}
