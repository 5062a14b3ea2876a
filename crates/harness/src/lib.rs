//! Client-side tools shared by `xtask` (deploy, benchmarks) and the end-to-end tests.
//!
//! [`http`] is a small HTTP/1.1 client over raw TCP, independent of the server's own code: the
//! tests also send malformed and pipelined requests and the load generators keep connections
//! alive themselves, so a client library that hides the connection (`ureq`) would not serve
//! them all, and two clients would be one too many. [`process_group`] runs a child in its own
//! process group and kills the whole group (QEMU included) when dropped.

pub mod http;
pub mod process_group;

pub use process_group::ProcessGroup;
