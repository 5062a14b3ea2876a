//! The admin API: deploy, replace, list and delete functions, and shut down; every call needs
//! the bearer token given at boot.

use std::time::Instant;

use http_front::{Request, Response};
use subtle::ConstantTimeEq;

use crate::app::{Answer, App};
use crate::error::PlatformError;
use crate::function_store::{FUNCTION_STORE, encode_stored};
use crate::invoke::{RESERVE_WAIT, refusal_message};
use crate::memory::{Refused, reservation_for};

/// Compares two byte strings in time that depends only on their lengths (`subtle`: the
/// comparison has no early exit the optimizer could add back).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

impl App {
    fn check_token(&self, request: &Request) -> Result<(), PlatformError> {
        let Some(token) = &self.admin_token else {
            return Err(PlatformError::AdminDisabled);
        };
        let presented = request
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        if constant_time_eq(presented.as_bytes(), token.as_bytes()) {
            Ok(())
        } else {
            Err(PlatformError::Unauthorized)
        }
    }

    /// The answer when [`FUNCTION_STORE`] cannot be written: 503 (507 when the key-value store
    /// is full), nothing changed.
    fn store_unavailable(name: &str, error: &keyvalue::KvError) -> PlatformError {
        log::warn!("admin change of {name} refused: store {FUNCTION_STORE} unavailable: {error}");
        let (status, what) = match error {
            keyvalue::KvError::Full { .. } => (507, "full"),
            _ => (503, "unavailable"),
        };
        PlatformError::Function {
            status,
            message: format!("function store {what}, {name} left unchanged: {error}"),
        }
    }

    /// Answers `/_admin{rest}`.
    pub(crate) fn admin(&self, request: &Request, rest: &str) -> Answer {
        self.check_token(request)?;
        let path = rest.trim_end_matches('/');
        if path == "/shutdown" {
            if request.method != "POST" {
                return Err(PlatformError::MethodNotAllowed {
                    method: request.method.clone(),
                    allowed: "POST".into(),
                });
            }
            let hook = self
                .shutdown
                .as_ref()
                .ok_or_else(|| PlatformError::NotFound("no shutdown hook in this server".into()))?;
            log::info!("shutdown requested through the admin API");
            hook();
            return Ok(Response::json(
                202,
                &serde_json::json!({ "status": "shutting down" }),
            ));
        }
        if path == "/functions" {
            Self::require_get(request)?;
            let list: Vec<_> = self.registry.list().iter().map(|f| f.to_json()).collect();
            return Ok(Response::json(
                200,
                &serde_json::json!({ "functions": list, "fleet": self.fleet_json() }),
            ));
        }
        let Some(name) = path
            .strip_prefix("/functions/")
            .filter(|n| !n.contains('/'))
        else {
            return Err(PlatformError::NotFound(format!(
                "no admin endpoint at /_admin{rest}"
            )));
        };
        match request.method.as_str() {
            "GET" | "HEAD" => {
                let function = self
                    .lookup(name)
                    .ok_or_else(|| crate::app::not_found_function(name))?;
                Ok(Response::json(200, &function.to_json()))
            }
            "PUT" | "POST" => {
                let reject = |reason: String| PlatformError::DeployRejected {
                    function: name.to_string(),
                    reason,
                };
                if request.body.is_empty() {
                    return Err(reject(
                        "empty body: send the .wasm binary or .wat text".into(),
                    ));
                }
                let limits = self
                    .default_limits
                    .with_overrides(request.query.as_deref())
                    .map_err(reject)?;
                let started = Instant::now();
                // An HTTP guest's `on-server-init` runs now, under the function's limits.
                let reservation = self
                    .memory
                    .reserve(reservation_for(limits.max_memory), RESERVE_WAIT)
                    .map_err(|refused| match refused {
                        Refused::TooLarge { .. } => reject(refusal_message(name, refused)),
                        Refused::Busy { .. } => PlatformError::Busy(refusal_message(name, refused)),
                    })?;
                let function = self
                    .compiler
                    .compile(name, &request.body, limits)
                    .map_err(reject)?;
                drop(reservation);
                // Kept first: a deploy that would not survive a reboot is not made at all.
                let info = function.to_json();
                let kind = function.program.kind();
                let replaced = self
                    .fleet_deploy(function, &encode_stored(&request.body, &limits))
                    .map_err(|e| Self::store_unavailable(name, &e))?;
                log::info!(
                    "{} {name} ({kind}, {} bytes) in {} us",
                    if replaced { "replaced" } else { "deployed" },
                    request.body.len(),
                    started.elapsed().as_micros()
                );
                Ok(Response::json(if replaced { 200 } else { 201 }, &info))
            }
            "DELETE" => {
                if self.lookup(name).is_none() {
                    return Err(crate::app::not_found_function(name));
                }
                if !self
                    .fleet_delete(name)
                    .map_err(|e| Self::store_unavailable(name, &e))?
                {
                    return Err(crate::app::not_found_function(name));
                }
                log::info!("deleted {name}");
                Ok(Response::new(204))
            }
            other => Err(PlatformError::MethodNotAllowed {
                method: other.to_string(),
                allowed: "GET, HEAD, PUT, POST, DELETE".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-tokem", b"secret-token"));
        assert!(!constant_time_eq(b"secret", b"secret-token"));
        assert!(!constant_time_eq(b"", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token-longer", b"secret-token"));
    }
}
