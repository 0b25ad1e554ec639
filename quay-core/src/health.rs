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

/// When a location's circuit opens and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// How long an open circuit refuses the location before one trial request (half-open).
    pub open_for: std::time::Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 3,
            open_for: std::time::Duration::from_secs(5),
        }
    }
}

/// A location's state as the tracker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationState {
    /// Working (closed circuit).
    Up,
    /// Failing but still tried (closed circuit with recent failures, or half-open).
    Degraded(String),
    /// Skipped until the circuit half-opens.
    Down(String),
}

#[derive(Debug, Clone)]
struct Breaker {
    failures: u32,
    open_until: Option<std::time::Instant>,
    trial_in_flight: bool,
    last_error: Option<String>,
}

/// Per-location circuit breakers, fed by probes and by the outcome of real requests.
///
/// A location opens after `failure_threshold` consecutive failures (outages and timeouts only:
/// a missing object is not a failure of the location); an open location is skipped by reads,
/// writes and replication until `open_for` has passed, then one request is let through
/// (half-open): a success closes the circuit, a failure opens it again.
#[derive(Debug, Default)]
pub struct HealthTracker {
    config: BreakerConfig,
    states: std::sync::Mutex<std::collections::BTreeMap<crate::LocationId, Breaker>>,
}

/// Whether an error says the location itself is failing (not the request).
pub fn is_outage(err: &crate::Error) -> bool {
    matches!(
        err.kind(),
        crate::ErrorKind::Unavailable | crate::ErrorKind::Timeout
    )
}

impl HealthTracker {
    /// A tracker with `config`.
    pub fn new(config: BreakerConfig) -> Self {
        HealthTracker {
            config,
            states: std::sync::Mutex::default(),
        }
    }

    fn with<R>(&self, location: &crate::LocationId, f: impl FnOnce(&mut Breaker) -> R) -> R {
        let mut states = match self.states.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let b = states.entry(location.clone()).or_insert(Breaker {
            failures: 0,
            open_until: None,
            trial_in_flight: false,
            last_error: None,
        });
        f(b)
    }

    /// Records a successful operation (or probe) on `location`: the circuit closes.
    pub fn record_success(&self, location: &crate::LocationId) {
        self.with(location, |b| {
            b.failures = 0;
            b.open_until = None;
            b.trial_in_flight = false;
            b.last_error = None;
        });
    }

    /// Records a failed operation on `location`. Only outages count.
    pub fn record_failure(&self, location: &crate::LocationId, err: &crate::Error) {
        if !is_outage(err) {
            return;
        }
        let threshold = self.config.failure_threshold.max(1);
        let open_for = self.config.open_for;
        let opened = self.with(location, |b| {
            b.failures = b.failures.saturating_add(1);
            b.last_error = Some(err.to_string());
            b.trial_in_flight = false;
            if b.failures >= threshold {
                let was_closed = b.open_until.is_none();
                b.open_until = Some(std::time::Instant::now() + open_for);
                was_closed
            } else {
                false
            }
        });
        if opened {
            tracing::warn!(%location, error = %err, "storage location marked down");
        }
    }

    /// Records the outcome of an operation.
    pub fn record<T>(&self, location: &crate::LocationId, result: &crate::Result<T>) {
        match result {
            Ok(_) => self.record_success(location),
            Err(e) => self.record_failure(location, e),
        }
    }

    /// Whether `location` may be used now. An open circuit past its time lets exactly one
    /// caller through as a trial.
    pub fn allow(&self, location: &crate::LocationId) -> bool {
        self.with(location, |b| match b.open_until {
            None => true,
            Some(until) if std::time::Instant::now() >= until && !b.trial_in_flight => {
                b.trial_in_flight = true;
                true
            }
            Some(_) => false,
        })
    }

    /// Whether `location` is believed up, without taking a trial slot.
    pub fn is_up(&self, location: &crate::LocationId) -> bool {
        self.with(location, |b| b.open_until.is_none())
    }

    /// The state of `location`.
    pub fn state(&self, location: &crate::LocationId) -> LocationState {
        self.with(location, |b| {
            let msg = b.last_error.clone().unwrap_or_default();
            match (b.open_until, b.failures) {
                (Some(_), _) => LocationState::Down(msg),
                (None, 0) => LocationState::Up,
                (None, _) => LocationState::Degraded(msg),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, ErrorKind, LocationId};

    #[test]
    fn opens_after_threshold_and_half_opens() {
        let t = HealthTracker::new(BreakerConfig {
            failure_threshold: 2,
            open_for: std::time::Duration::from_millis(30),
        });
        let us: LocationId = "us".parse().unwrap();
        let down = Error::new(ErrorKind::Unavailable, "connection refused");
        t.record_failure(&us, &Error::new(ErrorKind::NotFound, "missing object"));
        assert!(t.is_up(&us));
        t.record_failure(&us, &down);
        assert!(matches!(t.state(&us), LocationState::Degraded(_)));
        t.record_failure(&us, &down);
        assert!(!t.allow(&us));
        assert!(matches!(t.state(&us), LocationState::Down(_)));
        std::thread::sleep(std::time::Duration::from_millis(40));
        assert!(t.allow(&us), "one trial after open_for");
        assert!(!t.allow(&us), "only one trial at a time");
        t.record_success(&us);
        assert!(t.allow(&us));
        assert_eq!(t.state(&us), LocationState::Up);
    }
}
