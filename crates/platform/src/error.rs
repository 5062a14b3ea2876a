//! Everything that can go wrong in the platform, and the single mapping to HTTP statuses.

use http_front::Response;
use sandbox::Fault;

/// Bytes of an error message answered at most (control characters escaped): messages quote
/// guest and client text, cut to [`sandbox::GUEST_TEXT_MAX`] where they are made, and this
/// bounds the whole.
pub const MAX_ERROR_MESSAGE: usize = 4 * sandbox::GUEST_TEXT_MAX;

/// A platform failure answered to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    /// No endpoint or function at this path.
    #[error("not found: {0}")]
    NotFound(String),
    /// The endpoint exists but not with this method.
    #[error("method {method} not allowed here; allowed: {allowed}")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The methods the endpoint accepts (for the `Allow` header).
        allowed: std::borrow::Cow<'static, str>,
    },
    /// Missing or wrong bearer token.
    #[error("unauthorized: a valid `Authorization: Bearer <admin-token>` header is required")]
    Unauthorized,
    /// No admin token was configured at boot.
    #[error("the admin API is disabled (boot with admin-token=... to enable it)")]
    AdminDisabled,
    /// The request is malformed for this endpoint.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A deploy was rejected; the previous version (if any) keeps serving.
    #[error("deploy of {function} rejected: {reason}")]
    DeployRejected {
        /// The function name.
        function: String,
        /// Why.
        reason: String,
    },
    /// The function exists but is of another kind than the endpoint serves.
    #[error("{function} is a {kind} function; {hint}")]
    WrongKind {
        /// The function name.
        function: String,
        /// Its kind.
        kind: &'static str,
        /// Where to call it instead.
        hint: String,
    },
    /// A request or response body exceeded the function's limit.
    #[error("{0}")]
    BodyTooLarge(String),
    /// A function's run stopped: a trap, or one of its limits (fuel, deadline, memory, output).
    #[error("{function}: {fault}")]
    Fault {
        /// The function (and the export or handler) that ran.
        function: String,
        /// Why it stopped.
        fault: Fault,
    },
    /// The server's memory budget for functions is spent right now; retry shortly.
    #[error("{0}")]
    Busy(String),
    /// The function failed (trap, memory limit, non-zero exit, ...), or a guest error status.
    #[error("{message}")]
    Function {
        /// Status to answer with.
        status: u16,
        /// What happened, naming the function.
        message: String,
    },
}

impl PlatformError {
    /// The HTTP status of this error.
    pub fn status(&self) -> u16 {
        match self {
            PlatformError::NotFound(_) => 404,
            PlatformError::MethodNotAllowed { .. } => 405,
            PlatformError::Unauthorized => 401,
            PlatformError::AdminDisabled => 403,
            PlatformError::BadRequest(_) | PlatformError::DeployRejected { .. } => 400,
            PlatformError::WrongKind { .. } => 400,
            PlatformError::BodyTooLarge(_) => 413,
            PlatformError::Fault { fault, .. } => match fault {
                Fault::Timeout { .. } | Fault::OutOfFuel { .. } => 504,
                _ => 500,
            },
            PlatformError::Busy(_) => 503,
            PlatformError::Function { status, .. } => *status,
        }
    }

    /// The JSON error response; its message is cut to [`MAX_ERROR_MESSAGE`] bytes.
    pub fn to_response(&self) -> Response {
        let message = sandbox::clip_display(self, MAX_ERROR_MESSAGE);
        let response = Response::json(
            self.status(),
            &serde_json::json!({ "error": message, "status": self.status() }),
        );
        match self {
            PlatformError::MethodNotAllowed { allowed, .. } => {
                response.with_header("Allow", allowed)
            }
            PlatformError::Unauthorized => response.with_header("WWW-Authenticate", "Bearer"),
            PlatformError::Busy(_) => response.with_header("Retry-After", "1"),
            _ => response,
        }
    }
}
