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
    /// Working: the latest probe passed and no request failed since.
    Up,
    /// Working, with recent request failures (fewer than the threshold); still used.
    Degraded(String),
    /// Not used: the latest probe failed, or requests failed `failure_threshold` times in a
    /// row. Only the server itself tries it again (a probe, or a proxied request once
    /// `open_for` has passed); clients are never redirected into it.
    Down(String),
}

#[derive(Debug, Clone, Default)]
struct Breaker {
    /// Consecutive failed requests.
    failures: u32,
    /// Set while the location is down: until when no trial is made.
    open_until: Option<std::time::Instant>,
    /// A server-side trial is running.
    trial_in_flight: bool,
    /// The latest probe failed (cleared by a passing probe or a successful request).
    probe_failed: bool,
    last_error: Option<String>,
}

/// Per-location health: one view used by the health endpoints, reads, writes, redirects and
/// the replication worker, fed by the background probes and by the outcome of every storage
/// call (through the storage layers' health layer).
///
/// # The state machine
///
/// ```text
///            request outage                 failure_threshold-th outage
///   Up ─────────────────────► Degraded ─────────────────────────────► Down
///   ▲  ◄───────────────────────┘  │                                      │
///   │   a success                 │ probe failure (from Up or Degraded)  │ open_for passed:
///   │                             ▼                                      ▼ one server-side trial
///   └──────── probe passes, or a server-side trial succeeds ─────── Down / Trial
/// ```
///
/// - **Probes are authoritative**: one failed probe takes the location down at once; a
///   passing probe brings it back up.
/// - **Requests** count outages and timeouts of the backend only (a missing object, a
///   client's fault, a failed input are not the location's failure); `failure_threshold` in a
///   row take it down.
/// - **Down** means no client is handed the location: reads skip it (another holder serves,
///   or `503` names it), new uploads go to the next preferred location, replication waits.
/// - **Recovery** is tried by the server only: the next probe, or, once `open_for` has passed,
///   one proxied request (a read streamed through the server, a write, a copy), admitted by
///   [`HealthTracker::allow`]. A redirect ([`HealthTracker::may_redirect`]) is never a trial:
///   a client is redirected only into a location that is up and whose latest probe passed.
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
        f(states.entry(location.clone()).or_default())
    }

    fn close(b: &mut Breaker) -> bool {
        let was_down = b.open_until.is_some();
        *b = Breaker::default();
        was_down
    }

    /// Records a successful operation on `location`, or one the backend answered (an object
    /// not found): the location works.
    pub fn record_success(&self, location: &crate::LocationId) {
        if self.with(location, Self::close) {
            tracing::info!(%location, "storage location back up");
        }
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
            if b.failures >= threshold || b.open_until.is_some() {
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

    /// Records the outcome of a background probe: a failure takes the location down at once,
    /// a pass brings it back up.
    pub fn record_probe<T>(&self, location: &crate::LocationId, result: &crate::Result<T>) {
        match result {
            Ok(_) => self.record_success(location),
            Err(e) => {
                let open_for = self.config.open_for;
                let opened = self.with(location, |b| {
                    let was_closed = b.open_until.is_none();
                    b.probe_failed = true;
                    b.trial_in_flight = false;
                    b.last_error = Some(e.to_string());
                    b.open_until = Some(std::time::Instant::now() + open_for);
                    was_closed
                });
                if opened {
                    tracing::warn!(%location, error = %e, "storage location marked down by its probe");
                }
            }
        }
    }

    /// Records the outcome of an operation.
    pub fn record<T>(&self, location: &crate::LocationId, result: &crate::Result<T>) {
        match result {
            Ok(_) => self.record_success(location),
            Err(e) => self.record_failure(location, e),
        }
    }

    /// Whether the server may use `location` now for an operation it makes itself (a proxied
    /// read, a write, a copy). A down location past `open_for` lets exactly one such call
    /// through as a trial.
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

    /// Whether a client may be redirected into `location`: it is up (or degraded) and its
    /// latest probe passed. Never a trial.
    pub fn may_redirect(&self, location: &crate::LocationId) -> bool {
        self.with(location, |b| b.open_until.is_none() && !b.probe_failed)
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
        assert!(!t.may_redirect(&us), "a trial is never a redirect");
        assert!(t.allow(&us), "one trial after open_for");
        assert!(!t.allow(&us), "only one trial at a time");
        t.record_success(&us);
        assert!(t.allow(&us));
        assert!(t.may_redirect(&us));
        assert_eq!(t.state(&us), LocationState::Up);
    }

    #[test]
    fn one_failed_probe_stops_redirects_until_a_probe_passes() {
        let t = HealthTracker::new(BreakerConfig {
            failure_threshold: 3,
            open_for: std::time::Duration::from_millis(10),
        });
        let us: LocationId = "us".parse().unwrap();
        assert!(t.may_redirect(&us));
        t.record_probe::<()>(&us, &Err(Error::new(ErrorKind::Timeout, "no answer")));
        assert!(matches!(t.state(&us), LocationState::Down(_)));
        assert!(!t.may_redirect(&us));
        std::thread::sleep(std::time::Duration::from_millis(20));
        // Past open_for the server may try it (a proxied read), a client still may not.
        assert!(!t.may_redirect(&us));
        assert!(t.allow(&us));
        t.record_probe(&us, &Ok(()));
        assert!(t.may_redirect(&us));
        assert_eq!(t.state(&us), LocationState::Up);
    }
}
