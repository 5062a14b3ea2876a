//! What a module imports and exports, read from its binary without compiling it: enough to tell
//! which kind of function it is (and to refuse it) before any code is compiled.

use wasmparser::{ExternalKind, Parser, Payload, TypeRef};

use crate::module::CompileError;

/// Parameter and result types of a function.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signature {
    /// Parameter types.
    pub params: Vec<wasmi::ValType>,
    /// Result types.
    pub results: Vec<wasmi::ValType>,
}

/// The type of an imported or exported item; only functions carry theirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemType {
    /// A function of this signature.
    Func(Signature),
    /// A table.
    Table,
    /// A linear memory.
    Memory,
    /// A global.
    Global,
    /// An exception tag.
    Tag,
}

/// One import: `module.name` and its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// The module namespace it is imported from.
    pub module: String,
    /// Its name there.
    pub name: String,
    /// Its type.
    pub ty: ItemType,
}

/// The imports and exports of a module, in declaration order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    /// Everything the module imports.
    pub imports: Vec<Import>,
    /// Everything the module exports, by name.
    pub exports: Vec<(String, ItemType)>,
}

impl AsRef<Interface> for Interface {
    fn as_ref(&self) -> &Interface {
        self
    }
}

/// Function types as read from the type section, kept compactly (the section may hold many):
/// every type's parameters and results, one after the other, in one list.
#[derive(Default)]
struct TypeTable {
    /// Per type: where its value types start, how many parameters and results it has.
    spans: Vec<(usize, usize, usize)>,
    values: Vec<wasmi::ValType>,
}

impl TypeTable {
    fn push(&mut self, ty: &wasmparser::FuncType) -> Result<(), CompileError> {
        let start = self.values.len();
        for value in ty.params().iter().chain(ty.results()) {
            self.values.push(value_type(*value)?);
        }
        self.spans
            .push((start, ty.params().len(), ty.results().len()));
        Ok(())
    }

    fn signature(&self, index: u32) -> Result<Signature, CompileError> {
        let undefined = || CompileError::Invalid(format!("type index {index} is not defined"));
        let &(start, params, results) = usize::try_from(index)
            .ok()
            .and_then(|index| self.spans.get(index))
            .ok_or_else(undefined)?;
        let values = |from: usize, count: usize| {
            from.checked_add(count)
                .and_then(|end| self.values.get(from..end))
                .map(<[wasmi::ValType]>::to_vec)
                .ok_or_else(undefined)
        };
        Ok(Signature {
            params: values(start, params)?,
            results: values(start.saturating_add(params), results)?,
        })
    }
}

fn value_type(value: wasmparser::ValType) -> Result<wasmi::ValType, CompileError> {
    use wasmparser::ValType as V;
    Ok(match value {
        V::I32 => wasmi::ValType::I32,
        V::I64 => wasmi::ValType::I64,
        V::F32 => wasmi::ValType::F32,
        V::F64 => wasmi::ValType::F64,
        V::V128 => wasmi::ValType::V128,
        V::Ref(reference) if reference == wasmparser::RefType::FUNCREF => wasmi::ValType::FuncRef,
        V::Ref(reference) if reference == wasmparser::RefType::EXTERNREF => {
            wasmi::ValType::ExternRef
        }
        V::Ref(reference) => {
            return Err(CompileError::Invalid(format!(
                "unsupported reference type {reference}"
            )));
        }
    })
}

impl Interface {
    /// Reads the imports and exports of the wasm binary `wasm` (function bodies are not looked
    /// at: a module that reads well here may still fail to compile). What it keeps is bounded
    /// by what [`crate::Footprint::check`] allows: check that first.
    pub fn of(wasm: &[u8]) -> Result<Interface, CompileError> {
        let invalid =
            |error: wasmparser::BinaryReaderError| CompileError::Invalid(error.to_string());
        let mut types = TypeTable::default();
        // Type indices of imported functions, then of defined ones: the function index space.
        let mut functions: Vec<u32> = Vec::new();
        let mut interface = Interface::default();
        // Exports refer to functions by index; their types are looked up once all are read.
        let mut exports: Vec<(String, ExternalKind, u32)> = Vec::new();
        for payload in Parser::new(0).parse_all(wasm) {
            match payload.map_err(invalid)? {
                Payload::TypeSection(reader) => {
                    for ty in reader.into_iter_err_on_gc_types() {
                        types.push(&ty.map_err(invalid)?)?;
                    }
                }
                Payload::ImportSection(reader) => {
                    for import in reader {
                        let import = import.map_err(invalid)?;
                        let ty = match import.ty {
                            TypeRef::Func(index) => {
                                functions.push(index);
                                ItemType::Func(types.signature(index)?)
                            }
                            TypeRef::Table(_) => ItemType::Table,
                            TypeRef::Memory(_) => ItemType::Memory,
                            TypeRef::Global(_) => ItemType::Global,
                            TypeRef::Tag(_) => ItemType::Tag,
                        };
                        interface.imports.push(Import {
                            module: import.module.to_string(),
                            name: import.name.to_string(),
                            ty,
                        });
                    }
                }
                Payload::FunctionSection(reader) => {
                    for index in reader {
                        functions.push(index.map_err(invalid)?);
                    }
                }
                Payload::ExportSection(reader) => {
                    for export in reader {
                        let export = export.map_err(invalid)?;
                        exports.push((export.name.to_string(), export.kind, export.index));
                    }
                }
                // Nothing after the code section names an import or export.
                Payload::CodeSectionStart { .. } => break,
                _ => {}
            }
        }
        for (name, kind, index) in exports {
            let ty = match kind {
                ExternalKind::Func => {
                    let ty = usize::try_from(index)
                        .ok()
                        .and_then(|index| functions.get(index))
                        .ok_or_else(|| {
                            CompileError::Invalid(format!(
                                "export {name:?} names function {index}, which is not defined"
                            ))
                        })?;
                    ItemType::Func(types.signature(*ty)?)
                }
                ExternalKind::Table => ItemType::Table,
                ExternalKind::Memory => ItemType::Memory,
                ExternalKind::Global => ItemType::Global,
                ExternalKind::Tag => ItemType::Tag,
            };
            interface.exports.push((name, ty));
        }
        Ok(interface)
    }

    /// The type of the export `name`.
    pub fn export(&self, name: &str) -> Option<&ItemType> {
        self.exports
            .iter()
            .find(|(export, _)| export == name)
            .map(|(_, ty)| ty)
    }
}
