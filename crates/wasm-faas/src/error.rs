//! Why an invocation did not produce a result, and how that maps onto HTTP.

use std::time::Duration;

/// Why loading or running a guest failed.
///
/// A WASI command that calls `proc_exit` with a non-zero code is *not* an error:
/// the code is reported in [`crate::WasiOutput::exit_code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The wall-clock deadline passed before the guest finished.
    #[error("deadline of {0:?} exceeded")]
    Timeout(Duration),
    /// The guest used up its fuel (instruction budget).
    #[error("fuel budget exhausted")]
    OutOfFuel,
    /// The guest asked for more linear memory (or table space) than allowed.
    #[error("memory limit exceeded")]
    MemoryLimit,
    /// stdout or stderr grew beyond the output limit.
    #[error("output limit exceeded")]
    OutputTooLarge,
    /// The guest trapped (unreachable, division by zero, bad pointer given to the host, ...).
    #[error("guest trapped: {0}")]
    Trap(String),
    /// The invocation arguments do not fit the guest (count, type, syntax).
    #[error("bad arguments: {0}")]
    BadArgs(String),
    /// The module is malformed, fails to validate, or is not of the expected kind.
    #[error("invalid module: {0}")]
    Invalid(String),
}

impl RunError {
    /// A stable, machine-readable name of the error, e.g. for a JSON body or a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::OutOfFuel => "out_of_fuel",
            Self::MemoryLimit => "memory_limit",
            Self::OutputTooLarge => "output_too_large",
            Self::Trap(_) => "trap",
            Self::BadArgs(_) => "bad_args",
            Self::Invalid(_) => "invalid_module",
        }
    }

    /// The HTTP status a FaaS front end should answer with.
    ///
    /// Limits that stop a running function (deadline, fuel) give 504, resource
    /// failures of the function (memory, output, traps) give 500, and problems
    /// with the request or the uploaded module give 400.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Timeout(_) | Self::OutOfFuel => 504,
            Self::MemoryLimit | Self::OutputTooLarge | Self::Trap(_) => 500,
            Self::BadArgs(_) | Self::Invalid(_) => 400,
        }
    }
}
