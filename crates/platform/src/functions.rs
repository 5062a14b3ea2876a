//! Deployed functions: what kind each is, its limits, and an atomically replaceable registry.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keyvalue::{KeyValue, KvError};
use sha2::{Digest, Sha256};

use crate::route::is_valid_function_name;

/// Limits applied to every invocation of one function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionLimits {
    /// Fuel (roughly: wasm instructions) per invocation.
    pub fuel: u64,
    /// Wall-clock deadline per invocation (WASI and `_start` modules; HTTP guests are bounded
    /// by fuel).
    pub timeout: Duration,
    /// Largest linear memory, in bytes.
    pub max_memory: usize,
    /// Largest request body and largest response body (or captured output), in bytes.
    pub max_body: usize,
}

impl Default for FunctionLimits {
    fn default() -> Self {
        FunctionLimits {
            fuel: 1_000_000_000,
            timeout: Duration::from_secs(10),
            max_memory: 64 << 20,
            max_body: 1 << 20,
        }
    }
}

impl FunctionLimits {
    /// These limits with overrides from deploy query parameters (`fuel`, `timeout-ms`,
    /// `max-memory`, `max-body`); unknown parameters are errors.
    pub fn with_overrides(mut self, query: Option<&str>) -> Result<Self, String> {
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let number = || -> Result<u64, String> {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("{key}={value:?} is not a whole number"))
            };
            match key {
                "fuel" => self.fuel = number()?.max(1),
                "timeout-ms" | "timeout_ms" => {
                    self.timeout = Duration::from_millis(number()?.max(1))
                }
                "max-memory" | "max_memory" => {
                    self.max_memory = usize::try_from(number()?).unwrap_or(usize::MAX)
                }
                "max-body" | "max_body" => {
                    self.max_body = usize::try_from(number()?).unwrap_or(usize::MAX)
                }
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

    fn faas(&self) -> wasm_faas::Limits {
        wasm_faas::Limits {
            fuel: Some(self.fuel),
            deadline: Some(self.timeout),
            max_memory_bytes: self.max_memory,
            max_output_bytes: self.max_body,
        }
    }
}

/// The program behind a function, by kind.
pub enum Program {
    /// A Spiderlightning-style guest serving its own routes.
    Http(wasm_host::Function),
    /// A WASI preview1 command: stdin → stdout.
    Wasi(wasm_faas::Module),
    /// A module whose `_start` takes and returns numbers.
    Nanoprocess(wasm_faas::Module),
}

impl Program {
    /// The kind's name as shown in listings.
    pub fn kind(&self) -> &'static str {
        match self {
            Program::Http(_) => "http",
            Program::Wasi(_) => "wasi",
            Program::Nanoprocess(_) => "nanoprocess",
        }
    }
}

/// A deployed function.
pub struct Deployed {
    /// Its name (also its path prefix).
    pub name: String,
    /// The program.
    pub program: Program,
    /// Its limits.
    pub limits: FunctionLimits,
    /// Size of the deployed binary in bytes.
    pub size: usize,
    /// SHA-256 of the deployed binary, hex.
    pub sha256: String,
    /// Deploy time, seconds since the Unix epoch.
    pub deployed_at: u64,
}

impl Deployed {
    /// The function's description as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let mut info = serde_json::json!({
            "name": self.name,
            "kind": self.program.kind(),
            "size": self.size,
            "sha256": self.sha256,
            "deployed_at": self.deployed_at,
            "limits": self.limits.to_json(),
        });
        if let Program::Http(function) = &self.program {
            info["routes"] = function
                .routes()
                .iter()
                .map(|r| serde_json::json!({ "method": r.method.as_str(), "path": r.pattern.to_string() }))
                .collect();
        }
        info
    }
}

/// Compiles deployable code: one engine for WASI and `_start` modules, and the key-value
/// backend that HTTP guests get.
pub struct Compiler {
    faas_engine: wasm_faas::Engine,
    kv: Arc<dyn KeyValue>,
}

/// A `.wat` body is text; a `.wasm` body starts with this magic.
const WASM_MAGIC: &[u8] = b"\0asm";

impl Compiler {
    /// A compiler whose HTTP guests use `kv`, except the platform's own [`FUNCTION_STORE`].
    pub fn new(kv: Arc<dyn KeyValue>) -> Self {
        Compiler {
            faas_engine: wasm_faas::new_engine(),
            kv: Arc::new(GuestKeyValue(kv)),
        }
    }

    /// Validates and compiles `source` (`.wasm` binary or `.wat` text) as function `name`,
    /// detecting its kind from its imports and exports.
    pub fn compile(
        &self,
        name: &str,
        source: &[u8],
        limits: FunctionLimits,
    ) -> Result<Deployed, String> {
        if !is_valid_function_name(name) {
            return Err(format!(
                "{name:?} is not a valid function name (1-64 of A-Z a-z 0-9 _ -, not a reserved word)"
            ));
        }
        let binary = if source.starts_with(WASM_MAGIC) {
            source.to_vec()
        } else {
            wat::parse_bytes(source)
                .map_err(|e| format!("neither a wasm binary nor valid WAT text: {e}"))?
                .into_owned()
        };
        let module =
            wasm_faas::load_module(&self.faas_engine, &binary).map_err(|e| e.to_string())?;
        let program = match wasm_faas::classify(&module) {
            wasm_faas::Kind::WasiCommand => Program::Wasi(module),
            wasm_faas::Kind::Nanoprocess { .. } => Program::Nanoprocess(module),
            wasm_faas::Kind::Unknown(faas_reason) => {
                let host = wasm_host::FunctionHost::new(
                    Arc::clone(&self.kv),
                    wasm_host::HostConfig {
                        fuel_per_call: limits.fuel,
                        max_memory_bytes: limits.max_memory,
                        ..wasm_host::HostConfig::default()
                    },
                );
                match host.load(name, &binary) {
                    Ok(function) => Program::Http(function),
                    Err(err) => {
                        return Err(format!(
                            "not an http function ({err}); not a WASI or _start module either ({faas_reason})"
                        ));
                    }
                }
            }
        };
        let sha256 = Sha256::digest(&binary)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let deployed_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(Deployed {
            name: name.to_string(),
            program,
            limits,
            size: binary.len(),
            sha256,
            deployed_at,
        })
    }
}

/// The deployed functions by name. Replacing one swaps an `Arc`: requests in flight finish on
/// the version they started with.
#[derive(Default)]
pub struct Registry {
    functions: RwLock<BTreeMap<String, Arc<Deployed>>>,
}

impl Registry {
    /// The function named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Deployed>> {
        self.functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Deploys `function`, replacing a previous version; returns whether one was replaced.
    pub fn insert(&self, function: Deployed) -> bool {
        let name = function.name.clone();
        self.functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, Arc::new(function))
            .is_some()
    }

    /// Removes `name`; returns whether it existed.
    pub fn remove(&self, name: &str) -> bool {
        self.functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .is_some()
    }

    /// All functions, by name.
    pub fn list(&self) -> Vec<Arc<Deployed>> {
        self.functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// The key-value store in which deployed functions are kept, so that a server booting with the
/// same (Redis) backend serves them again. Guests cannot open it.
pub const FUNCTION_STORE: &str = "_functions";

/// First line of a stored function.
const STORED_MAGIC: &[u8] = b"uniwasm-function v1\n";

/// A deployed function as stored in [`FUNCTION_STORE`]: a magic line, its limits as a query
/// line, then the deployed source unchanged.
pub fn encode_stored(source: &[u8], limits: &FunctionLimits) -> Vec<u8> {
    let mut value = STORED_MAGIC.to_vec();
    value.extend_from_slice(limits.to_query().as_bytes());
    value.push(b'\n');
    value.extend_from_slice(source);
    value
}

/// The limits and source of a stored function ([`encode_stored`]); limits it does not name
/// keep their `defaults`.
pub fn decode_stored(
    value: &[u8],
    defaults: FunctionLimits,
) -> Result<(FunctionLimits, &[u8]), String> {
    let rest = value
        .strip_prefix(STORED_MAGIC)
        .ok_or_else(|| "not a stored function (unknown format)".to_string())?;
    let end = rest
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| "stored function has no limits line".to_string())?;
    let query =
        std::str::from_utf8(&rest[..end]).map_err(|_| "stored limits are not UTF-8".to_string())?;
    Ok((defaults.with_overrides(Some(query))?, &rest[end + 1..]))
}

/// The key-value backend as guests see it: [`FUNCTION_STORE`] is off limits.
struct GuestKeyValue(Arc<dyn KeyValue>);

impl GuestKeyValue {
    fn check(store: &str) -> Result<(), KvError> {
        if store == FUNCTION_STORE {
            return Err(KvError::InvalidKey(format!(
                "store {store:?} is reserved for the platform"
            )));
        }
        Ok(())
    }
}

impl KeyValue for GuestKeyValue {
    fn open(&self, store: &str) -> Result<(), KvError> {
        Self::check(store)?;
        self.0.open(store)
    }

    fn get(&self, store: &str, key: &str) -> Result<Vec<u8>, KvError> {
        Self::check(store)?;
        self.0.get(store, key)
    }

    fn set(&self, store: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        Self::check(store)?;
        self.0.set(store, key, value)
    }

    fn keys(&self, store: &str) -> Result<Vec<String>, KvError> {
        Self::check(store)?;
        self.0.keys(store)
    }

    fn delete(&self, store: &str, key: &str) -> Result<(), KvError> {
        Self::check(store)?;
        self.0.delete(store, key)
    }
}

/// Runs WASI and `_start` modules with `limits`.
pub(crate) fn faas_limits(limits: &FunctionLimits) -> wasm_faas::Limits {
    limits.faas()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_overrides() {
        let base = FunctionLimits::default();
        let l = base
            .with_overrides(Some("fuel=5&timeout-ms=250&max-memory=1024&max-body=10"))
            .unwrap();
        assert_eq!(l.fuel, 5);
        assert_eq!(l.timeout, Duration::from_millis(250));
        assert_eq!(l.max_memory, 1024);
        assert_eq!(l.max_body, 10);
        assert_eq!(base.with_overrides(None).unwrap(), base);
        assert!(base.with_overrides(Some("fuel=x")).is_err());
        assert!(base.with_overrides(Some("color=red")).is_err());
    }

    fn compiler() -> Compiler {
        Compiler::new(Arc::new(keyvalue::MemoryStore::new()))
    }

    #[test]
    fn kinds_are_detected_from_wat() {
        let c = compiler();
        let nano = c
            .compile(
                "answer",
                br#"(module (func (export "_start") (result i32) i32.const 42))"#,
                FunctionLimits::default(),
            )
            .unwrap();
        assert_eq!(nano.program.kind(), "nanoprocess");
        let wasi = c
            .compile(
                "w",
                br#"(module (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
                    (memory (export "memory") 1) (func (export "_start")))"#,
                FunctionLimits::default(),
            )
            .unwrap();
        assert_eq!(wasi.program.kind(), "wasi");
        assert_eq!(wasi.sha256.len(), 64);
    }

    #[test]
    fn bad_code_and_names_are_rejected() {
        let c = compiler();
        let err = c
            .compile("x", b"not wasm at all", FunctionLimits::default())
            .err()
            .unwrap();
        assert!(err.contains("neither a wasm binary nor valid WAT"), "{err}");
        let err = c
            .compile(
                "x",
                br#"(module (func (export "other")))"#,
                FunctionLimits::default(),
            )
            .err()
            .unwrap();
        assert!(err.contains("not an http function"), "{err}");
        assert!(
            c.compile("metrics", b"(module)", FunctionLimits::default())
                .is_err()
        );
        assert!(
            c.compile("a/b", b"(module)", FunctionLimits::default())
                .is_err()
        );
    }

    #[test]
    fn stored_functions_round_trip() {
        let limits = FunctionLimits {
            fuel: 7,
            timeout: Duration::from_millis(1500),
            max_memory: 1 << 20,
            max_body: 99,
        };
        let source = b"\0asm\x01\0\0\0 binary\n with newlines";
        let value = encode_stored(source, &limits);
        let (decoded, body) = decode_stored(&value, FunctionLimits::default()).unwrap();
        assert_eq!(decoded, limits);
        assert_eq!(body, source);
        assert!(decode_stored(b"garbage", FunctionLimits::default()).is_err());
        assert!(
            decode_stored(
                b"uniwasm-function v1\nfuel=x\n(module)",
                FunctionLimits::default()
            )
            .is_err()
        );
        assert!(
            decode_stored(
                b"uniwasm-function v1\nno newline",
                FunctionLimits::default()
            )
            .is_err()
        );
    }

    #[test]
    fn guests_cannot_open_the_function_store() {
        let kv: Arc<dyn KeyValue> = Arc::new(keyvalue::MemoryStore::new());
        kv.set(FUNCTION_STORE, "f", b"secret").unwrap();
        let guest = GuestKeyValue(Arc::clone(&kv));
        assert!(matches!(
            guest.open(FUNCTION_STORE),
            Err(KvError::InvalidKey(_))
        ));
        assert!(matches!(
            guest.get(FUNCTION_STORE, "f"),
            Err(KvError::InvalidKey(_))
        ));
        assert!(matches!(
            guest.set(FUNCTION_STORE, "f", b"x"),
            Err(KvError::InvalidKey(_))
        ));
        assert!(matches!(
            guest.keys(FUNCTION_STORE),
            Err(KvError::InvalidKey(_))
        ));
        assert!(matches!(
            guest.delete(FUNCTION_STORE, "f"),
            Err(KvError::InvalidKey(_))
        ));
        assert_eq!(kv.get(FUNCTION_STORE, "f").unwrap(), b"secret");
        guest.set("other", "k", b"v").unwrap();
        assert_eq!(guest.get("other", "k").unwrap(), b"v");
    }

    #[test]
    fn registry_replaces_atomically() {
        let c = compiler();
        let reg = Registry::default();
        let v1 = c
            .compile(
                "f",
                br#"(module (func (export "_start") (result i32) i32.const 1))"#,
                FunctionLimits::default(),
            )
            .unwrap();
        let v2 = c
            .compile(
                "f",
                br#"(module (func (export "_start") (result i32) i32.const 2))"#,
                FunctionLimits::default(),
            )
            .unwrap();
        assert!(!reg.insert(v1));
        let held = reg.get("f").unwrap();
        assert!(reg.insert(v2));
        assert_ne!(
            held.sha256,
            reg.get("f").unwrap().sha256,
            "old version still usable by its holder"
        );
        assert!(reg.remove("f"));
        assert!(reg.get("f").is_none());
        assert!(!reg.remove("f"));
    }
}
