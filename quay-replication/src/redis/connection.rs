//! The connection pool (bb8 over multiplexed connections, with our timeouts) and the running of
//! Lua scripts by their SHA1, loading them when the server does not know them.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bb8_redis::bb8::{self, ErrorSink, Pool, PooledConnection, RunError};
use bb8_redis::redis::aio::MultiplexedConnection;
use bb8_redis::redis::{
    self, AsyncConnectionConfig, Client, ConnectionAddr, FromRedisValue, IntoConnectionInfo,
    RedisConnectionInfo, RedisError,
};
use quay_core::Result;

use super::config::RedisQueueConfig;
use super::error::{redis_error, unreachable};

/// Opens multiplexed connections with the configured timeouts.
pub(crate) struct Manager {
    client: Client,
    options: AsyncConnectionConfig,
}

impl bb8::ManageConnection for Manager {
    type Connection = MultiplexedConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<MultiplexedConnection, RedisError> {
        self.client
            .get_multiplexed_async_connection_with_config(&self.options)
            .await
    }

    async fn is_valid(&self, conn: &mut MultiplexedConnection) -> Result<(), RedisError> {
        // A multiplexed connection does not reconnect: a dead one must be replaced.
        redis::cmd("PING")
            .query_async::<String>(conn)
            .await
            .map(drop)
    }

    fn has_broken(&self, _: &mut MultiplexedConnection) -> bool {
        false
    }
}

/// Keeps the last connection error, so that a timed-out wait can say why.
#[derive(Debug, Clone, Default)]
struct LastError(Arc<Mutex<Option<RedisError>>>);

impl ErrorSink<RedisError> for LastError {
    fn sink(&self, error: RedisError) {
        if let Ok(mut last) = self.0.lock() {
            *last = Some(error);
        }
    }

    fn boxed_clone(&self) -> Box<dyn ErrorSink<RedisError>> {
        Box::new(self.clone())
    }
}

/// A pool of connections to one Redis database.
pub(crate) struct Connections {
    pool: Pool<Manager>,
    last_error: LastError,
    endpoint: String,
    timeout: Duration,
}

impl Connections {
    /// Builds the pool; connections are opened on first use.
    pub(crate) fn new(config: &RedisQueueConfig) -> Result<Self> {
        config.validate()?;
        let mut settings = RedisConnectionInfo::default().set_db(config.db);
        if let Some(password) = &config.server.password {
            settings = settings.set_password(password);
        }
        let info = ConnectionAddr::Tcp(config.server.host.clone(), config.server.port)
            .into_connection_info()
            .map_err(|e| redis_error("connect", e))?
            .set_redis_settings(settings);
        let client = Client::open(info).map_err(|e| redis_error("connect", e))?;
        let options = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout));
        let last_error = LastError::default();
        let pool = Pool::builder()
            .max_size(config.pool_size)
            .connection_timeout(config.connect_timeout)
            .error_sink(Box::new(last_error.clone()))
            .build_unchecked(Manager { client, options });
        Ok(Connections {
            pool,
            last_error,
            endpoint: config.endpoint(),
            timeout: config.connect_timeout,
        })
    }

    /// `host:port/db`.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A connection, within the connect timeout.
    pub(crate) async fn get(
        &self,
        operation: &'static str,
    ) -> Result<PooledConnection<'_, Manager>> {
        self.pool.get().await.map_err(|e| match e {
            RunError::User(e) => redis_error(operation, e),
            RunError::TimedOut => {
                let cause = self.last_error.0.lock().ok().and_then(|last| last.clone());
                unreachable(operation, &self.endpoint, self.timeout, cause)
            }
        })
    }

    /// Runs `script` with the queue's keys and `args`.
    pub(crate) async fn run<T: FromRedisValue>(
        &self,
        operation: &'static str,
        script: &Script,
        keys: &[String],
        args: &[String],
    ) -> Result<T> {
        let mut conn = self.get(operation).await?;
        script
            .run(&mut conn, keys, args)
            .await
            .map_err(|e| redis_error(operation, e))
    }
}

/// A Lua script, run with `EVALSHA`; its SHA1 comes from `SCRIPT LOAD`, done again when the
/// server forgot it (a restart, `SCRIPT FLUSH`).
pub(crate) struct Script {
    source: &'static str,
    sha: OnceLock<String>,
}

impl Script {
    pub(crate) const fn new(source: &'static str) -> Self {
        Script {
            source,
            sha: OnceLock::new(),
        }
    }

    async fn load(&self, conn: &mut MultiplexedConnection) -> Result<String, RedisError> {
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(self.source)
            .query_async(conn)
            .await?;
        // Every server computes the same SHA1 for the same source: keep the first.
        Ok(self.sha.get_or_init(|| sha).clone())
    }

    async fn run<T: FromRedisValue>(
        &self,
        conn: &mut MultiplexedConnection,
        keys: &[String],
        args: &[String],
    ) -> Result<T, RedisError> {
        let sha = match self.sha.get() {
            Some(sha) => sha.clone(),
            None => self.load(conn).await?,
        };
        match evalsha(&sha, keys, args).query_async(conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                let sha = self.load(conn).await?;
                evalsha(&sha, keys, args).query_async(conn).await
            }
            other => other,
        }
    }
}

fn evalsha(sha: &str, keys: &[String], args: &[String]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(sha).arg(keys.len()).arg(keys).arg(args);
    cmd
}

/// Deletes every key that starts with `prefix` (glob characters in it are escaped); returns
/// how many.
pub(crate) async fn delete_prefixed(connections: &Connections, prefix: &str) -> Result<u64> {
    let op = "delete_all";
    let mut conn = connections.get(op).await?;
    let pattern = format!("{}*", glob_escape(prefix));
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut *conn)
            .await
            .map_err(|e| redis_error(op, e))?;
        if !keys.is_empty() {
            let n: u64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut *conn)
                .await
                .map_err(|e| redis_error(op, e))?;
            deleted += n;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("quay:jobs:"), "quay:jobs:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
