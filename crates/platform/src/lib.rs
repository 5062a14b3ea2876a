//! The functions platform, independent of the unikernel: which endpoint a path addresses,
//! deployed functions and their limits, the admin API, function runs within the server's memory
//! budget, per-function statistics and Prometheus metrics. [`app::App`] is the HTTP handler the
//! server runs.

// Client- and guest-controlled data passes through this crate: nothing here may panic on it (the
// image aborts on panic), so indexing, unwrap and friends are refused outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod admin;
pub mod app;
pub mod boot;
pub mod error;
pub mod fleet;
pub mod function_store;
pub mod functions;
pub mod invoke;
pub mod limits;
pub mod memory;
pub mod registry;
pub mod route;
pub mod stats;
