//! The [`HealthCheck`] trait: a named check of one dependency.

use async_trait::async_trait;

/// The outcome of one health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthStatus {
    /// Working.
    Healthy,
    /// Working, with a problem worth reporting.
    Degraded(String),
    /// Not working.
    Failed(String),
}

impl HealthStatus {
    /// Whether the dependency can be used (healthy or degraded).
    pub fn is_usable(&self) -> bool {
        !matches!(self, HealthStatus::Failed(_))
    }
}

/// A named check of one dependency (database, Redis, a storage location).
///
/// # Behavior
///
/// - `check` is cheap and bounded in time; it never writes user data.
/// - `name` is stable and unique among the checks of one registry (e.g. `database`,
///   `storage_usstorage`).
#[async_trait]
pub trait HealthCheck: Send + Sync {
    /// The check's stable name.
    fn name(&self) -> &str;
    /// Runs the check.
    async fn check(&self) -> HealthStatus;
}
