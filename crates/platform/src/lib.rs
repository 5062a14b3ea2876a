//! The functions platform, independent of the unikernel: which endpoint a path addresses,
//! per-function statistics and Prometheus metrics.

pub mod route;
pub mod stats;
pub mod app;
