//! Deployed functions: what kind each is and how it is compiled.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use keyvalue::KeyValue;
use sha2::{Digest, Sha256};

use crate::function_store::GuestKeyValue;
use crate::limits::FunctionLimits;
use crate::route::is_valid_function_name;

/// Most resource handles (routers, stores) an HTTP guest may hold at once.
const MAX_HANDLES: usize = 10_000;

/// The program behind a function, by kind.
pub enum Program {
    /// A Spiderlightning-style guest serving its own routes.
    Http(wasm_host::Function),
    /// A WASI preview1 command: stdin → stdout (one that imports nothing also runs at `/exec`,
    /// see [`Program::as_nanoprocess`]).
    Wasi(wasm_faas::Module),
    /// A nanoprocess: a module whose `_start` takes and returns numbers.
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

    /// The module `/exec` runs: a nanoprocess, or a WASI command that imports nothing (its
    /// `_start` takes and returns nothing, so it runs either way).
    pub fn as_nanoprocess(&self) -> Option<&wasm_faas::Module> {
        match self {
            Program::Nanoprocess(module) => Some(module),
            Program::Wasi(module) if wasm_faas::nanoprocess_signature(module).is_some() => {
                Some(module)
            }
            Program::Wasi(_) | Program::Http(_) => None,
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
        if let (Program::Http(function), Some(object)) = (&self.program, info.as_object_mut()) {
            let routes = function
                .routes()
                .iter()
                .map(|r| serde_json::json!({ "method": r.method.as_str(), "path": r.pattern.to_string() }))
                .collect();
            object.insert("routes".into(), routes);
        }
        info
    }
}

/// Compiles deployable code, each module once and on an engine of its own (wasmi keeps the
/// code of every module compiled on an engine until the engine is dropped, so a shared engine
/// would keep the code of every replaced, deleted or refused deploy), and holds the key-value
/// backend that HTTP guests get.
pub struct Compiler {
    kv: Arc<dyn KeyValue>,
}

/// The export that makes a module an HTTP guest.
const HANDLE_HTTP: &str = "handle-http";

impl Compiler {
    /// A compiler whose HTTP guests use `kv`, except the platform's own
    /// [`crate::function_store::FUNCTION_STORE`].
    pub fn new(kv: Arc<dyn KeyValue>) -> Self {
        Compiler {
            kv: Arc::new(GuestKeyValue(kv)),
        }
    }

    /// Validates and compiles `source` (`.wasm` binary or `.wat` text) as function `name`,
    /// detecting its kind from its imports and exports. An HTTP guest's `on-server-init` runs
    /// here, in the sandbox under `limits`: the caller reserves memory for it.
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
        let binary = sandbox::wasm_binary(source)
            .map_err(|e| e.to_string())?
            .into_owned();
        // The kind is read from the module's imports and exports before anything is compiled:
        // a module of no kind is refused uncompiled, every other one is compiled once, on an
        // engine of its own, and keeps it.
        let inspected = sandbox::inspect(&binary).map_err(|e| format!("invalid module: {e}"))?;
        let kind = wasm_faas::classify(inspected.interface());
        let is_http = inspected.interface().export(HANDLE_HTTP).is_some();
        if let (wasm_faas::Kind::Unknown(faas_reason), false) = (&kind, is_http) {
            return Err(format!(
                "not an http function (it exports no `{HANDLE_HTTP}`); not a WASI command or \
                 nanoprocess either ({faas_reason})"
            ));
        }
        let module = inspected
            .compile()
            .map_err(|e| format!("invalid module: {e}"))?;
        let program = match kind {
            wasm_faas::Kind::WasiCommand => Program::Wasi(module),
            wasm_faas::Kind::Nanoprocess { .. } => Program::Nanoprocess(module),
            wasm_faas::Kind::Unknown(_) => {
                let host = wasm_host::FunctionHost::new(
                    Arc::clone(&self.kv),
                    wasm_host::HostConfig {
                        limits: limits.sandbox(),
                        max_handles: MAX_HANDLES,
                    },
                );
                Program::Http(host.load_module(name, module).map_err(|e| e.to_string())?)
            }
        };
        let sha256 = format!("{:x}", Sha256::digest(&binary));
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(
            err.contains("not a wasm binary (no \\0asm header) and not valid WAT text"),
            "{err}"
        );
        // A binary that is not wasm (an ELF here) is called what it is, not "not UTF-8".
        let err = c
            .compile(
                "x",
                b"\x7fELF\x02\x01\x01\xff\xfe",
                FunctionLimits::default(),
            )
            .err()
            .unwrap();
        assert!(
            err.starts_with("neither a wasm binary (it does not start with \\0asm) nor WAT text"),
            "{err}"
        );
        let err = c
            .compile(
                "x",
                br#"(module (func (export "other")))"#,
                FunctionLimits::default(),
            )
            .err()
            .unwrap();
        assert!(err.contains("not an http function"), "{err}");
        // Refused by its interface before compiling: its invalid body is never looked at.
        let err = c
            .compile(
                "x",
                br#"(module (func (export "other") (result i32)))"#,
                FunctionLimits::default(),
            )
            .err()
            .unwrap();
        assert!(err.contains("not an http function"), "{err}");
        // With a kind, it is compiled, and refused for its body.
        let err = c
            .compile(
                "x",
                br#"(module (func (export "_start") (result i32)))"#,
                FunctionLimits::default(),
            )
            .err()
            .unwrap();
        assert!(err.starts_with("invalid module: "), "{err}");
        assert!(
            c.compile("metrics", b"(module)", FunctionLimits::default())
                .is_err()
        );
        assert!(
            c.compile("a/b", b"(module)", FunctionLimits::default())
                .is_err()
        );
    }
}
