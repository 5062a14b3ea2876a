//! The limits of one function, set at deploy time (`?fuel=&timeout-ms=&max-memory=&max-body=`).

use std::time::Duration;

/// Default memory budget of one run: sized so that a 64 MiB image holds its default two workers
/// each running a memory bomb at once (see [`crate::memory::reservation_for`]).
pub const DEFAULT_MAX_MEMORY: usize = 4 << 20;

/// Limits applied to every invocation of one function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionLimits {
    /// Fuel (roughly: wasm instructions) per invocation.
    pub fuel: u64,
    /// Wall-clock deadline per invocation, host calls included.
    pub timeout: Duration,
    /// Memory budget per invocation: linear memory, tables and what the host allocates for the
    /// guest, in bytes.
    pub max_memory: usize,
    /// Largest request body and largest response body (or captured output), in bytes.
    pub max_body: usize,
}

impl Default for FunctionLimits {
    fn default() -> Self {
        FunctionLimits {
            fuel: 1_000_000_000,
            timeout: Duration::from_secs(10),
            max_memory: DEFAULT_MAX_MEMORY,
            max_body: 1 << 20,
        }
    }
}

impl FunctionLimits {
    /// These limits with overrides from deploy query parameters (`fuel`, `timeout-ms`,
    /// `max-memory`, `max-body`; sizes may end in `k`, `m` or `g`); unknown parameters are errors.
    pub fn with_overrides(mut self, query: Option<&str>) -> Result<Self, String> {
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let number = || -> Result<u64, String> {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("{key}={value:?} is not a whole number"))
            };
            // Sizes as on the command line (`max-body=4m` there and here).
            let size = || boot_config::parse_size(value).map_err(|e| format!("{key}={e}"));
            match key {
                "fuel" => self.fuel = number()?.max(1),
                "timeout-ms" | "timeout_ms" => {
                    self.timeout = Duration::from_millis(number()?.max(1));
                }
                "max-memory" | "max_memory" => self.max_memory = size()?,
                "max-body" | "max_body" => self.max_body = size()?,
                _ => {
                    return Err(format!(
                        "unknown limit {key:?}; known: fuel, timeout-ms, max-memory, max-body"
                    ));
                }
            }
        }
        Ok(self)
    }

    /// The limits as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "fuel": self.fuel,
            "timeout_ms": u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
            "max_memory": self.max_memory,
            "max_body": self.max_body,
        })
    }

    /// The limits as deploy query parameters; [`FunctionLimits::with_overrides`] reads them back.
    pub fn to_query(&self) -> String {
        format!(
            "fuel={}&timeout-ms={}&max-memory={}&max-body={}",
            self.fuel,
            self.timeout.as_millis(),
            self.max_memory,
            self.max_body
        )
    }

    /// The sandbox limits of one run.
    pub fn sandbox(&self) -> sandbox::Limits {
        sandbox::Limits {
            fuel: self.fuel,
            timeout: self.timeout,
            max_memory: self.max_memory,
        }
    }

    /// The limits of a WASI command or nanoprocess run.
    pub fn faas(&self) -> wasm_faas::Limits {
        wasm_faas::Limits {
            fuel: self.fuel,
            deadline: self.timeout,
            max_memory_bytes: self.max_memory,
            max_output_bytes: self.max_body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_overrides() {
        let base = FunctionLimits::default();
        let l = base
            .with_overrides(Some("fuel=5&timeout-ms=250&max-memory=1m&max-body=10"))
            .expect("valid");
        assert_eq!(l.fuel, 5);
        assert_eq!(l.timeout, Duration::from_millis(250));
        assert_eq!(l.max_memory, 1 << 20);
        assert_eq!(l.max_body, 10);
        assert_eq!(base.with_overrides(None), Ok(base));
        assert!(base.with_overrides(Some("fuel=x")).is_err());
        assert!(base.with_overrides(Some("max-body=4x")).is_err());
        let suffixes = base
            .with_overrides(Some("max-memory=2M&max-body=64k"))
            .expect("sizes");
        assert_eq!(
            (suffixes.max_memory, suffixes.max_body),
            (2 << 20, 64 << 10)
        );
        let message = base.with_overrides(Some("max-memory=1x")).unwrap_err();
        assert!(
            message.contains("max-memory=\"1x\" is not a size"),
            "{message}"
        );
        assert!(base.with_overrides(Some("color=red")).is_err());
        let round_trip = base.with_overrides(Some(&l.to_query()));
        assert_eq!(round_trip, Ok(l));
    }
}
