//! The functions platform, independent of the unikernel: which endpoint a path addresses,
//! deployed functions and their limits, the admin API, per-function statistics and Prometheus
//! metrics. [`app::App`] is the HTTP handler the server runs.

pub mod app;
pub mod error;
pub mod functions;
pub mod route;
pub mod stats;
