//! Wrappers around any [`quay_core::StorageEngine`], written once: metrics, timeouts and
//! fault injection. A location is built as `Metered(Timeout(backend))`.

mod faults;
mod metered;
mod timeout;

pub use faults::{Fault, FaultSwitch, FaultyStorage};
pub use metered::MeteredStorage;
pub use timeout::TimeoutStorage;
