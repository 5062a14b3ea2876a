//! Functions built into the image: `(name, .wasm or .wat bytes)` pairs, deployed at boot.

/// The embedded functions, in deploy order.
pub const FUNCTIONS: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/functions.rs"));
