//! Compiled guest code: what a module may declare, and the host memory one instance of it takes.
//!
//! wasmi allocates host memory for every function, global, table, element item, data segment
//! and export of a module each time it is instantiated, outside linear memory. [`Module`]
//! measures that [`Footprint`] once, at compile time, and [`crate::instantiate`] charges it to
//! the run's budget before instantiating, so a module whose instances are large fails its own
//! run with a memory fault instead of the host running out of memory.

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};

use wasmparser::{ElementItems, Parser, Payload, TypeRef};

use crate::interface::Interface;

/// Most imports a module may declare (each becomes a function entity in every instance).
pub const MAX_IMPORTS: usize = 1_000;

/// Most exports a module may declare (every instance keeps a copy of each export name).
pub const MAX_EXPORTS: usize = 10_000;

/// Most element items (table initializers) a module may declare in all its segments.
pub const MAX_ELEMENT_ITEMS: usize = 1_000_000;

/// Host bytes charged per function of an instance, imported or defined: its store entity, its
/// slot in the instance, and the store's arena growing by copy (measured with wasmi 2.0: about
/// 130 per defined and 160 per imported function at the peak).
pub const FUNCTION_BYTES: usize = 192;

/// Host bytes charged per global of an instance (measured: about 90).
pub const GLOBAL_BYTES: usize = 128;

/// Host bytes charged per table or memory of an instance besides its elements or pages
/// (charged as they grow; measured: about 900).
pub const TABLE_OR_MEMORY_BYTES: usize = 1024;

/// Host bytes charged per element segment of an instance, besides its items (measured: about
/// 110).
pub const ELEMENT_SEGMENT_BYTES: usize = 160;

/// Host bytes charged per element item, a reference copied out of the module for every instance
/// (measured: 4).
pub const ELEMENT_ITEM_BYTES: usize = 8;

/// Host bytes charged per data segment of an instance; its bytes are shared with the module or
/// copied into linear memory (measured: about 90).
pub const DATA_SEGMENT_BYTES: usize = 128;

/// Host bytes charged per export of an instance, besides a copy of its name (measured: about 55).
pub const EXPORT_BYTES: usize = 96;

/// Host bytes charged per instance whatever the module holds.
pub const INSTANCE_BYTES: usize = 1024;

/// What one instance of a module consists of, as far as host memory is concerned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Functions, imported and defined.
    pub functions: usize,
    /// Globals, imported and defined.
    pub globals: usize,
    /// Tables and memories, imported and defined.
    pub tables_and_memories: usize,
    /// Element segments.
    pub element_segments: usize,
    /// Items of all element segments.
    pub element_items: usize,
    /// Data segments.
    pub data_segments: usize,
    /// Imports of any kind.
    pub imports: usize,
    /// Exports.
    pub exports: usize,
    /// Bytes of all export names.
    pub export_name_bytes: usize,
}

impl Footprint {
    /// Reads the footprint of the wasm binary `wasm`.
    pub fn of(wasm: &[u8]) -> Result<Footprint, CompileError> {
        let invalid =
            |error: wasmparser::BinaryReaderError| CompileError::Invalid(error.to_string());
        let mut footprint = Footprint::default();
        for payload in Parser::new(0).parse_all(wasm) {
            match payload.map_err(invalid)? {
                Payload::ImportSection(imports) => {
                    for import in imports {
                        footprint.imports += 1;
                        match import.map_err(invalid)?.ty {
                            TypeRef::Func(_) => footprint.functions += 1,
                            TypeRef::Global(_) => footprint.globals += 1,
                            TypeRef::Table(_) | TypeRef::Memory(_) => {
                                footprint.tables_and_memories += 1;
                            }
                            TypeRef::Tag(_) => {}
                        }
                    }
                }
                Payload::FunctionSection(functions) => {
                    footprint.functions += count(functions.count());
                }
                Payload::TableSection(tables) => {
                    footprint.tables_and_memories += count(tables.count());
                }
                Payload::MemorySection(memories) => {
                    footprint.tables_and_memories += count(memories.count());
                }
                Payload::GlobalSection(globals) => footprint.globals += count(globals.count()),
                Payload::ExportSection(exports) => {
                    for export in exports {
                        let export = export.map_err(invalid)?;
                        footprint.exports += 1;
                        footprint.export_name_bytes += export.name.len();
                    }
                }
                Payload::ElementSection(segments) => {
                    for segment in segments {
                        footprint.element_segments += 1;
                        footprint.element_items += count(match segment.map_err(invalid)?.items {
                            ElementItems::Functions(items) => items.count(),
                            ElementItems::Expressions(_, items) => items.count(),
                        });
                    }
                }
                Payload::DataSection(segments) => {
                    footprint.data_segments += count(segments.count());
                }
                _ => {}
            }
        }
        Ok(footprint)
    }

    /// Refuses a module that declares more than the host allows (see [`MAX_IMPORTS`] and
    /// friends; wasmi's [`wasmi::EnforcedLimits::strict`] caps functions, globals, tables and
    /// segments).
    pub fn check(&self) -> Result<(), CompileError> {
        let caps = [
            ("imports", self.imports, MAX_IMPORTS),
            ("exports", self.exports, MAX_EXPORTS),
            ("element items", self.element_items, MAX_ELEMENT_ITEMS),
        ];
        for (what, count, limit) in caps {
            if count > limit {
                return Err(CompileError::TooMany { what, count, limit });
            }
        }
        Ok(())
    }

    /// The host memory one instance takes, in bytes (an estimate on the generous side).
    pub fn host_bytes(&self) -> usize {
        let parts = [
            (self.functions, FUNCTION_BYTES),
            (self.globals, GLOBAL_BYTES),
            (self.tables_and_memories, TABLE_OR_MEMORY_BYTES),
            (self.element_segments, ELEMENT_SEGMENT_BYTES),
            (self.element_items, ELEMENT_ITEM_BYTES),
            (self.data_segments, DATA_SEGMENT_BYTES),
            (self.exports, EXPORT_BYTES),
            (self.export_name_bytes, 1),
        ];
        parts.iter().fold(INSTANCE_BYTES, |total, (count, bytes)| {
            total.saturating_add(count.saturating_mul(*bytes))
        })
    }
}

fn count(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Why code could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// Not valid wasm (or WAT), or beyond one of wasmi's enforced limits.
    #[error("{0}")]
    Invalid(String),
    /// Neither a wasm binary nor text.
    #[error(
        "neither a wasm binary (it does not start with \\0asm) nor WAT text (it is not UTF-8): \
         upload a .wasm or .wat file"
    )]
    NotWasm,
    /// Text that is not valid WAT.
    #[error("not a wasm binary (no \\0asm header) and not valid WAT text: {0}")]
    Wat(String),
    /// The module declares more of something than the host allows.
    #[error("the module declares {count} {what}, more than the {limit} allowed")]
    TooMany {
        /// What there are too many of.
        what: &'static str,
        /// How many the module declares.
        count: usize,
        /// The most allowed.
        limit: usize,
    },
}

/// Things built once per module on its engine (linkers), by type.
type Attachments = Vec<(TypeId, Arc<dyn Any + Send + Sync>)>;

/// A compiled module, its instance [`Footprint`], its [`Interface`], and what the host built for
/// it (see [`Module::attachment`]). Dereferences to the [`wasmi::Module`].
#[derive(Clone)]
pub struct Module {
    module: wasmi::Module,
    footprint: Footprint,
    interface: Arc<Interface>,
    attachments: Arc<Mutex<Attachments>>,
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module")
            .field("footprint", &self.footprint)
            .finish_non_exhaustive()
    }
}

impl Deref for Module {
    type Target = wasmi::Module;

    fn deref(&self) -> &wasmi::Module {
        &self.module
    }
}

impl AsRef<Interface> for Module {
    fn as_ref(&self) -> &Interface {
        &self.interface
    }
}

/// A `.wasm` binary starts with this magic; anything else is read as WAT text.
const WASM_MAGIC: &[u8] = b"\0asm";

/// The wasm binary of `source`: itself when it starts with the wasm magic, else its WAT text
/// compiled; an upload that is neither says so.
pub fn wasm_binary(source: &[u8]) -> Result<Cow<'_, [u8]>, CompileError> {
    if source.starts_with(WASM_MAGIC) {
        return Ok(Cow::Borrowed(source));
    }
    if std::str::from_utf8(source).is_err() {
        return Err(CompileError::NotWasm);
    }
    wat::parse_bytes(source).map_err(|error| CompileError::Wat(error.to_string()))
}

/// A module read and checked against the host's caps, not compiled yet: its kind can be told
/// from its [`Interface`] and the module refused before compiling it.
#[derive(Debug)]
pub struct Inspected<'a> {
    binary: Cow<'a, [u8]>,
    footprint: Footprint,
    interface: Interface,
}

/// Reads `source` (wasm binary or WAT text) without compiling it: its footprint, checked
/// against the host's caps, and its imports and exports.
pub fn inspect(source: &[u8]) -> Result<Inspected<'_>, CompileError> {
    let binary = wasm_binary(source)?;
    // Caps first: counting is cheap, and they bound what the interface keeps.
    let footprint = Footprint::of(&binary)?;
    footprint.check()?;
    let interface = Interface::of(&binary)?;
    Ok(Inspected {
        binary,
        footprint,
        interface,
    })
}

impl Inspected<'_> {
    /// The module's imports and exports.
    pub fn interface(&self) -> &Interface {
        &self.interface
    }

    /// The wasm binary (WAT text already translated).
    pub fn binary(&self) -> &[u8] {
        &self.binary
    }

    /// Validates and compiles the module on an engine of its own (see [`crate::engine`]):
    /// dropping the last clone of the module (and the stores running it) frees its code, which
    /// wasmi keeps per engine.
    pub fn compile(self) -> Result<Module, CompileError> {
        self.compile_on(&crate::engine())
    }

    /// Validates and compiles the module on `engine`, which keeps its code until the engine is
    /// dropped.
    pub fn compile_on(self, engine: &wasmi::Engine) -> Result<Module, CompileError> {
        let module = wasmi::Module::new(engine, &self.binary)
            .map_err(|error| CompileError::Invalid(error.to_string()))?;
        Ok(Module {
            module,
            footprint: self.footprint,
            interface: Arc::new(self.interface),
            attachments: Arc::default(),
        })
    }
}

impl Module {
    /// Validates and compiles `source` (wasm binary or WAT text) on `engine`, refusing modules
    /// beyond the host's caps. Every module compiled on an engine keeps its code there until the
    /// engine is dropped: see [`compile`] for a module that owns its engine.
    pub fn new(engine: &wasmi::Engine, source: &[u8]) -> Result<Module, CompileError> {
        inspect(source)?.compile_on(engine)
    }

    /// The host memory one instance takes (charged by [`crate::instantiate`]).
    pub fn footprint(&self) -> &Footprint {
        &self.footprint
    }

    /// The module's imports and exports.
    pub fn interface(&self) -> &Interface {
        &self.interface
    }

    /// The attachment of type `T` (say, the linker a kind of guest uses), built by `build` on
    /// the module's engine the first time and kept, shared, for as long as the module lives.
    pub fn attachment<T, E>(
        &self,
        build: impl FnOnce(&wasmi::Engine) -> Result<T, E>,
    ) -> Result<Arc<T>, E>
    where
        T: Any + Send + Sync,
    {
        let mut attachments = self
            .attachments
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let found = attachments
            .iter()
            .find(|(id, _)| *id == TypeId::of::<T>())
            .and_then(|(_, value)| Arc::clone(value).downcast::<T>().ok());
        if let Some(value) = found {
            return Ok(value);
        }
        let value = Arc::new(build(self.module.engine())?);
        attachments.push((
            TypeId::of::<T>(),
            Arc::clone(&value) as Arc<dyn Any + Send + Sync>,
        ));
        Ok(value)
    }
}

/// Compiles `source` on an engine of its own (see [`Inspected::compile`]).
pub fn compile(source: &[u8]) -> Result<Module, CompileError> {
    inspect(source)?.compile()
}
