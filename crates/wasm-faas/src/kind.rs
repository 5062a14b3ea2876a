//! Which calling convention a module follows, read from its imports and exports (before it is
//! compiled, see [`sandbox::inspect`]).

use sandbox::{Interface, ItemType, Signature};
use wasmi::ValType;

/// Import module of WASI preview 1.
pub const WASI_MODULE: &str = "wasi_snapshot_preview1";
/// Import module of the nanoprocess host functions.
pub const PLATFORM_MODULE: &str = "platform";
/// The only nanoprocess host function: `platform.now: () -> f64`.
pub const PLATFORM_NOW: &str = "now";
/// The entry point of both kinds.
pub const ENTRY: &str = "_start";

/// The calling convention of a classic FaaS module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A WASI preview1 command: imports only from `wasi_snapshot_preview1` (or nothing) and
    /// exports `_start: () -> ()`. Run with [`crate::run_wasi`].
    WasiCommand,
    /// A numeric function: exports `_start` whose parameters and results are all
    /// i32/i64/f32/f64, imports at most `platform.now: () -> f64`. Run with
    /// [`crate::run_nanoprocess`].
    Nanoprocess {
        /// Parameter types of `_start`.
        params: Vec<ValType>,
        /// Result types of `_start`.
        results: Vec<ValType>,
    },
    /// Neither; the reason says what does not fit.
    Unknown(String),
}

impl Kind {
    /// Short name for logs and listings: `wasi`, `nanoprocess` or `unknown`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::WasiCommand => "wasi",
            Self::Nanoprocess { .. } => "nanoprocess",
            Self::Unknown(_) => "unknown",
        }
    }
}

/// Decides the [`Kind`] of a module (a [`sandbox::Module`], or the [`Interface`] of one not
/// compiled yet) from its imports and the type of its `_start` export.
///
/// A module without imports whose `_start` is `() -> ()` counts as a WASI command (it can run
/// as one and simply prints nothing); it also runs as a nanoprocess (see
/// [`nanoprocess_signature`]).
pub fn classify(module: &impl AsRef<Interface>) -> Kind {
    let interface = module.as_ref();
    let entry = match interface.export(ENTRY) {
        Some(ItemType::Func(entry)) => entry,
        Some(_) => return Kind::Unknown(format!("export `{ENTRY}` is not a function")),
        None => return Kind::Unknown(format!("no `{ENTRY}` function is exported")),
    };
    let mut wasi_imports = 0usize;
    let mut platform_imports = 0usize;
    for import in &interface.imports {
        let (namespace, name) = (import.module.as_str(), import.name.as_str());
        match (namespace, &import.ty) {
            (WASI_MODULE, ItemType::Func(_)) => wasi_imports += 1,
            (PLATFORM_MODULE, ItemType::Func(ty)) if name == PLATFORM_NOW && is_now(ty) => {
                platform_imports += 1;
            }
            (PLATFORM_MODULE, _) => {
                return Kind::Unknown(format!(
                    "import `{namespace}.{name}` is not `{PLATFORM_MODULE}.{PLATFORM_NOW}: () -> f64`"
                ));
            }
            _ => return Kind::Unknown(format!("unsupported import `{namespace}.{name}`")),
        }
    }
    let is_command = entry.params.is_empty() && entry.results.is_empty();
    match (wasi_imports, platform_imports) {
        (0, 0) if is_command => Kind::WasiCommand,
        (_, 0) if wasi_imports > 0 => {
            if is_command {
                Kind::WasiCommand
            } else {
                Kind::Unknown(format!(
                    "a WASI command's `{ENTRY}` must take and return nothing, found {}",
                    describe(entry)
                ))
            }
        }
        (0, _) => nanoprocess(entry),
        _ => Kind::Unknown(format!(
            "mixes `{WASI_MODULE}` and `{PLATFORM_MODULE}` imports"
        )),
    }
}

/// The parameter and result types `module` runs with as a nanoprocess: those of a
/// nanoprocess's `_start`, and none for a WASI command without imports (whose `_start` takes
/// and returns nothing: it runs either way). `None` for any other module.
pub fn nanoprocess_signature(module: &impl AsRef<Interface>) -> Option<Signature> {
    match classify(module) {
        Kind::Nanoprocess { params, results } => Some(Signature { params, results }),
        Kind::WasiCommand if module.as_ref().imports.is_empty() => Some(Signature::default()),
        Kind::WasiCommand | Kind::Unknown(_) => None,
    }
}

fn nanoprocess(entry: &Signature) -> Kind {
    let is_numeric = |ty: &ValType| {
        matches!(
            ty,
            ValType::I32 | ValType::I64 | ValType::F32 | ValType::F64
        )
    };
    if entry.params.iter().chain(&entry.results).all(is_numeric) {
        Kind::Nanoprocess {
            params: entry.params.clone(),
            results: entry.results.clone(),
        }
    } else {
        Kind::Unknown(format!(
            "a nanoprocess `{ENTRY}` must use only i32/i64/f32/f64, found {}",
            describe(entry)
        ))
    }
}

fn is_now(ty: &Signature) -> bool {
    ty.params.is_empty() && ty.results == [ValType::F64]
}

/// `(i32, i32) -> (i32)` style rendering of a function type.
pub(crate) fn describe(ty: &Signature) -> String {
    format!(
        "({}) -> ({})",
        type_list(&ty.params),
        type_list(&ty.results)
    )
}

pub(crate) fn type_list(types: &[ValType]) -> String {
    types
        .iter()
        .map(|ty| format!("{ty:?}").to_lowercase())
        .collect::<Vec<_>>()
        .join(", ")
}
