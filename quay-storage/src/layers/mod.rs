//! Wrappers around any [`quay_core::StorageEngine`], written once: metrics, timeouts and
//! fault injection, each with its [`StorageLayer`](quay_core::registry::StorageLayer) for the
//! registry builder, which applies them in one order (see `quay_core::registry::layers`):
//! `Metrics(Health(Timeout(Faults(backend))))`.

mod faults;
mod metered;
mod timeout;

pub use faults::{Fault, FaultLayer, FaultSwitch, FaultyStorage};
pub use metered::{MeteredStorage, MetricsLayer};
pub use timeout::{TimeoutLayer, TimeoutStorage};
