//! Why an invocation did not produce a result.

use sandbox::Fault;

/// Why loading or running a guest failed.
///
/// A WASI command that calls `proc_exit` with a non-zero code is *not* an error: the code is
/// reported in [`crate::WasiOutput::exit_code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The run stopped: a trap or a limit (fuel, deadline, memory, output).
    #[error("{0}")]
    Fault(Fault),
    /// The invocation arguments do not fit the guest (count, type, syntax).
    #[error("bad arguments: {0}")]
    BadArgs(String),
    /// The module is malformed, fails to validate, or is not of the expected kind.
    #[error("invalid module: {0}")]
    Invalid(String),
}

impl From<Fault> for RunError {
    /// A module that cannot be linked is invalid; every other fault stopped the run.
    fn from(fault: Fault) -> Self {
        match fault {
            Fault::Instantiate(message) => RunError::Invalid(message),
            fault => RunError::Fault(fault),
        }
    }
}
