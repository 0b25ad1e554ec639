//! A fresh Redis queue per test: a random key prefix on the test server, every key under it
//! deleted at the end.
//!
//! The server is `QUAY_TEST_REDIS_ADDR` (`host:port`, default `127.0.0.1:6379`), with the
//! password in `QUAY_TEST_REDIS_PASSWORD` if it needs one. When it cannot be reached, the
//! helpers fail with a message that says how to start it: tests that need Redis fail, they
//! never skip.

use async_trait::async_trait;
use quay_core::config::RedisConfig;
use quay_core::{Error, ErrorKind, Result, RetryPolicy};

use super::queue::QueueHarness;
use crate::redis::{RedisJobQueue, RedisQueueConfig};

/// The environment variable naming the test server, `host:port`.
pub const REDIS_ADDR_VAR: &str = "QUAY_TEST_REDIS_ADDR";

/// The environment variable holding the test server's password, if it has one.
pub const REDIS_PASSWORD_VAR: &str = "QUAY_TEST_REDIS_PASSWORD";

/// The server used when [`REDIS_ADDR_VAR`] is not set.
pub const DEFAULT_REDIS_ADDR: &str = "127.0.0.1:6379";

/// How to start the development and CI server.
pub const START_HINT: &str = "start it with: redis-server --daemonize yes --bind 127.0.0.1 \
     --port 6379 --save \"\" --appendonly no";

/// Settings for the test server under a fresh random prefix, `quay-test:<32 hex>:`.
pub fn test_config() -> Result<RedisQueueConfig> {
    let addr = std::env::var(REDIS_ADDR_VAR).unwrap_or_else(|_| DEFAULT_REDIS_ADDR.to_owned());
    let invalid = || {
        Error::new(
            ErrorKind::Config,
            format!("{REDIS_ADDR_VAR} must be host:port, not {addr:?}"),
        )
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(invalid)?;
    let server = RedisConfig {
        host: host.to_owned(),
        port: port.parse().map_err(|_| invalid())?,
        password: std::env::var(REDIS_PASSWORD_VAR).ok(),
    };
    let prefix = format!("quay-test:{}:", uuid::Uuid::new_v4().simple());
    Ok(RedisQueueConfig::new(server).with_prefix(prefix))
}

/// Connects a queue with `config`, failing with [`START_HINT`] when Redis is not reachable.
pub async fn connect(config: &RedisQueueConfig, policy: RetryPolicy) -> Result<RedisJobQueue> {
    RedisJobQueue::connect(config, policy).await.map_err(|e| {
        if e.kind() == ErrorKind::Unavailable {
            Error::new(
                ErrorKind::Unavailable,
                format!(
                    "Redis for tests is not reachable at {} ({REDIS_ADDR_VAR} names another \
                     server); {START_HINT}",
                    config.endpoint()
                ),
            )
            .with_source(e)
        } else {
            e
        }
    })
}

/// [`RedisJobQueue`] under a fresh prefix per case; `destroy` deletes every key under it.
#[derive(Debug)]
pub struct RedisQueueHarness {
    config: RedisQueueConfig,
    policy: RetryPolicy,
    first: RedisJobQueue,
}

impl RedisQueueHarness {
    /// The settings the handles connect with.
    pub fn config(&self) -> &RedisQueueConfig {
        &self.config
    }
}

#[async_trait]
impl QueueHarness for RedisQueueHarness {
    type Queue = RedisJobQueue;

    async fn create(policy: RetryPolicy) -> Result<Self> {
        let config = test_config()?;
        let first = connect(&config, policy.clone()).await?;
        Ok(RedisQueueHarness {
            config,
            policy,
            first,
        })
    }

    async fn open(&self) -> Result<RedisJobQueue> {
        connect(&self.config, self.policy.clone()).await
    }

    async fn destroy(self) -> Result<()> {
        self.first.delete_all().await?;
        let left = self.first.delete_all().await?;
        if left > 0 {
            return Err(Error::internal(format!(
                "{left} keys under {} were written after the case ended",
                self.config.prefix
            )));
        }
        Ok(())
    }
}
