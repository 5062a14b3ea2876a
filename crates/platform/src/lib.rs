//! The functions platform, independent of the unikernel: which endpoint a path addresses,
//! deployed functions and their limits, the admin API, function runs within the server's memory
//! budget, per-function statistics and Prometheus metrics. [`app::App`] is the HTTP handler the
//! server runs.

pub mod admin;
pub mod app;
pub mod boot;
pub mod error;
pub mod function_store;
pub mod functions;
pub mod invoke;
pub mod limits;
pub mod memory;
pub mod registry;
pub mod route;
pub mod stats;
