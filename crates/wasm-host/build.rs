//! Generates the host side of the `http-function` world from `wit/` with `wit-parser`:
//! Rust types for every WIT type (with canonical ABI impls from `src/abi.rs`), one `Host` trait
//! per imported interface, `add_to_linker` functions that register wasmi import functions doing
//! the lifting/lowering, and typed callers for the world's exports.

use std::fmt::Write as _;
use std::path::PathBuf;

use wit_parser::abi::{AbiVariant, WasmType};
use wit_parser::{
    Function, FunctionKind, Handle, InterfaceId, Resolve, Type, TypeDefKind, TypeId, TypeOwner,
    WorldItem,
};

const WORLD: &str = "http-function";

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let wit_dir = manifest.join("../../wit");
    println!("cargo:rerun-if-changed={}", wit_dir.display());
    if let Ok(entries) = std::fs::read_dir(&wit_dir) {
        for entry in entries.flatten() {
            println!("cargo:rerun-if-changed={}", entry.path().display());
        }
    }
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_dir(&wit_dir)
        .unwrap_or_else(|e| panic!("cannot parse {}: {e:?}", wit_dir.display()));
    let world = resolve
        .select_world(&[package], Some(WORLD))
        .unwrap_or_else(|e| panic!("no world {WORLD}: {e:?}"));
    let code = Generator { resolve: &resolve }.world(world);
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("bindings.rs");
    std::fs::write(&out, code).expect("write bindings");
}

struct Generator<'a> {
    resolve: &'a Resolve,
}

fn snake(name: &str) -> String {
    let s = name.replace('-', "_");
    match s.as_str() {
        "type" | "self" | "fn" | "match" | "move" | "ref" | "use" | "mod" | "impl" | "in"
        | "loop" | "where" | "struct" | "enum" | "trait" | "let" | "const" | "static" | "crate"
        | "super" | "async" | "await" | "dyn" | "box" | "yield" | "as" | "break" | "continue"
        | "else" | "extern" | "false" | "true" | "for" | "if" | "mut" | "pub" | "return"
        | "unsafe" | "while" => format!("r#{s}"),
        _ => s,
    }
}

fn camel(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

fn flat(ty: &WasmType) -> &'static str {
    match ty {
        WasmType::I32 | WasmType::Pointer | WasmType::Length => "abi::FlatType::I32",
        WasmType::I64 | WasmType::PointerOrI64 => "abi::FlatType::I64",
        WasmType::F32 => "abi::FlatType::F32",
        WasmType::F64 => "abi::FlatType::F64",
    }
}

fn flat_list(tys: &[WasmType]) -> String {
    format!("&[{}]", tys.iter().map(flat).collect::<Vec<_>>().join(", "))
}

impl Generator<'_> {
    fn iface_mod(&self, id: InterfaceId) -> String {
        snake(
            self.resolve.interfaces[id]
                .name
                .as_deref()
                .expect("named interface"),
        )
    }

    fn type_path(&self, id: TypeId) -> String {
        let def = &self.resolve.types[id];
        let name = camel(def.name.as_deref().expect("named type"));
        match def.owner {
            TypeOwner::Interface(i) => format!("crate::bindings::{}::{name}", self.iface_mod(i)),
            TypeOwner::World(_) | TypeOwner::None => format!("crate::bindings::{name}"),
        }
    }

    fn ty(&self, ty: &Type) -> String {
        match ty {
            Type::Bool => "bool".into(),
            Type::U8 => "u8".into(),
            Type::U16 => "u16".into(),
            Type::U32 => "u32".into(),
            Type::U64 => "u64".into(),
            Type::S8 => "i8".into(),
            Type::S16 => "i16".into(),
            Type::S32 => "i32".into(),
            Type::S64 => "i64".into(),
            Type::F32 => "f32".into(),
            Type::F64 => "f64".into(),
            Type::Char => "char".into(),
            Type::String => "String".into(),
            Type::ErrorContext => panic!("error-context is not supported"),
            Type::Id(id) => {
                if self.resolve.types[*id].name.is_some() {
                    self.type_path(*id)
                } else {
                    self.anonymous(*id)
                }
            }
        }
    }

    fn opt_ty(&self, ty: Option<&Type>) -> String {
        ty.map(|t| self.ty(t)).unwrap_or_else(|| "()".into())
    }

    fn anonymous(&self, id: TypeId) -> String {
        match &self.resolve.types[id].kind {
            TypeDefKind::List(t) => format!("Vec<{}>", self.ty(t)),
            TypeDefKind::Option(t) => format!("Option<{}>", self.ty(t)),
            TypeDefKind::Result(r) => format!(
                "Result<{}, {}>",
                self.opt_ty(r.ok.as_ref()),
                self.opt_ty(r.err.as_ref())
            ),
            TypeDefKind::Tuple(t) => format!(
                "({},)",
                t.types
                    .iter()
                    .map(|t| self.ty(t))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            TypeDefKind::Handle(Handle::Own(r) | Handle::Borrow(r)) => {
                format!("abi::Resource<{}>", self.type_path(self.resource_def(*r)))
            }
            TypeDefKind::Type(t) => self.ty(t),
            other => panic!("unsupported anonymous WIT type {other:?}"),
        }
    }

    /// Follows `use` aliases to the resource's definition.
    fn resource_def(&self, mut id: TypeId) -> TypeId {
        while let TypeDefKind::Type(Type::Id(next)) = self.resolve.types[id].kind {
            id = next;
        }
        id
    }

    fn typedef(&self, out: &mut String, id: TypeId) {
        let def = &self.resolve.types[id];
        let wit_name = def.name.as_deref().expect("named type");
        let name = camel(wit_name);
        let docs = def.docs.contents.as_deref().unwrap_or("").trim();
        for line in docs.lines() {
            let _ = writeln!(out, "/// {line}");
        }
        match &def.kind {
            TypeDefKind::Record(r) => {
                let _ = writeln!(
                    out,
                    "#[derive(Debug, Clone, PartialEq)]\npub struct {name} {{"
                );
                for f in &r.fields {
                    let _ = writeln!(out, "    pub {}: {},", snake(&f.name), self.ty(&f.ty));
                }
                out.push_str("}\n");
                let fields: Vec<(String, String)> = r
                    .fields
                    .iter()
                    .map(|f| (snake(&f.name), self.ty(&f.ty)))
                    .collect();
                self.record_impl(out, &name, &fields);
            }
            TypeDefKind::Variant(v) => {
                let cases: Vec<(String, Option<String>)> = v
                    .cases
                    .iter()
                    .map(|c| (camel(&c.name), c.ty.as_ref().map(|t| self.ty(t))))
                    .collect();
                self.variant(out, &name, wit_name, &cases, false);
            }
            TypeDefKind::Enum(e) => {
                let cases: Vec<(String, Option<String>)> =
                    e.cases.iter().map(|c| (camel(&c.name), None)).collect();
                self.variant(out, &name, wit_name, &cases, true);
            }
            TypeDefKind::Resource => {
                let _ = writeln!(
                    out,
                    "/// Marker for handles of the `{wit_name}` resource.\n#[derive(Debug)]\npub struct {name};"
                );
            }
            TypeDefKind::Type(t) => {
                let _ = writeln!(out, "pub type {name} = {};", self.ty(t));
            }
            TypeDefKind::List(_)
            | TypeDefKind::Option(_)
            | TypeDefKind::Result(_)
            | TypeDefKind::Tuple(_)
            | TypeDefKind::Handle(_) => {
                let _ = writeln!(out, "pub type {name} = {};", self.anonymous(id));
            }
            other => panic!("unsupported WIT type {wit_name}: {other:?}"),
        }
    }

    fn record_impl(&self, out: &mut String, name: &str, fields: &[(String, String)]) {
        let layout: Vec<String> = fields
            .iter()
            .map(|(_, t)| format!("(<{t} as abi::WitType>::SIZE, <{t} as abi::WitType>::ALIGN)"))
            .collect();
        let layout = layout.join(", ");
        let _ = writeln!(out, "impl abi::WitType for {name} {{");
        let _ = writeln!(
            out,
            "    const SIZE: u32 = abi::record_layout(&[{layout}]).0;"
        );
        let _ = writeln!(
            out,
            "    const ALIGN: u32 = abi::record_layout(&[{layout}]).1;"
        );
        out.push_str("    fn flat_types(out: &mut Vec<abi::FlatType>) {\n");
        for (_, t) in fields {
            let _ = writeln!(out, "        <{t} as abi::WitType>::flat_types(out);");
        }
        out.push_str("    }\n");
        out.push_str("    fn load(mem: &dyn abi::GuestMemory, ptr: u32) -> Result<Self, abi::AbiError> {\n        let mut offset = 0u32;\n");
        for (f, t) in fields {
            let _ = writeln!(
                out,
                "        offset = abi::align_to(offset, <{t} as abi::WitType>::ALIGN);\n        let {f} = <{t} as abi::WitType>::load(mem, ptr.wrapping_add(offset))?;\n        offset += <{t} as abi::WitType>::SIZE;"
            );
        }
        let names: Vec<&str> = fields.iter().map(|(f, _)| f.as_str()).collect();
        let _ = writeln!(
            out,
            "        let _ = offset;\n        Ok(Self {{ {} }})\n    }}",
            names.join(", ")
        );
        out.push_str("    fn store(&self, mem: &mut dyn abi::GuestMemory, ptr: u32) -> Result<(), abi::AbiError> {\n        let mut offset = 0u32;\n");
        for (f, t) in fields {
            let _ = writeln!(
                out,
                "        offset = abi::align_to(offset, <{t} as abi::WitType>::ALIGN);\n        self.{f}.store(mem, ptr.wrapping_add(offset))?;\n        offset += <{t} as abi::WitType>::SIZE;"
            );
        }
        out.push_str("        let _ = offset;\n        Ok(())\n    }\n");
        out.push_str("    fn lift_flat(mem: &dyn abi::GuestMemory, vals: &mut abi::FlatIter<'_>) -> Result<Self, abi::AbiError> {\n        Ok(Self {\n");
        for (f, t) in fields {
            let _ = writeln!(
                out,
                "            {f}: <{t} as abi::WitType>::lift_flat(mem, vals)?,"
            );
        }
        out.push_str("        })\n    }\n");
        out.push_str("    fn lower_flat(&self, mem: &mut dyn abi::GuestMemory, out: &mut Vec<abi::FlatVal>) -> Result<(), abi::AbiError> {\n");
        for (f, _) in fields {
            let _ = writeln!(out, "        self.{f}.lower_flat(mem, out)?;");
        }
        out.push_str("        Ok(())\n    }\n}\n");
    }

    fn variant(
        &self,
        out: &mut String,
        name: &str,
        wit_name: &str,
        cases: &[(String, Option<String>)],
        is_enum: bool,
    ) {
        let derive = if is_enum {
            "Debug, Clone, Copy, PartialEq, Eq"
        } else {
            "Debug, Clone, PartialEq"
        };
        let _ = writeln!(out, "#[derive({derive})]\npub enum {name} {{");
        for (c, t) in cases {
            match t {
                Some(t) => {
                    let _ = writeln!(out, "    {c}({t}),");
                }
                None => {
                    let _ = writeln!(out, "    {c},");
                }
            }
        }
        out.push_str("}\n");
        let n = cases.len();
        let payload = |t: &Option<String>| t.clone().unwrap_or_else(|| "()".into());
        let layout: Vec<String> = cases
            .iter()
            .map(|(_, t)| {
                let t = payload(t);
                format!("(<{t} as abi::WitType>::SIZE, <{t} as abi::WitType>::ALIGN)")
            })
            .collect();
        let layout = layout.join(", ");
        let flats: Vec<String> = cases
            .iter()
            .map(|(_, t)| match t {
                Some(t) => format!("<{t} as abi::WitType>::flat_types"),
                None => "abi::no_payload".into(),
            })
            .collect();
        let _ = writeln!(
            out,
            "impl {name} {{\n    const __CASES: [abi::CaseFlat; {n}] = [{}];\n    const __LAYOUT: (u32, u32, u32) = abi::variant_layout(&[{layout}]);\n}}",
            flats.join(", ")
        );
        let _ = writeln!(out, "impl abi::WitType for {name} {{");
        out.push_str(
            "    const SIZE: u32 = Self::__LAYOUT.0;\n    const ALIGN: u32 = Self::__LAYOUT.1;\n",
        );
        out.push_str("    fn flat_types(out: &mut Vec<abi::FlatType>) {\n        abi::variant_flat_types(out, &Self::__CASES);\n    }\n");
        // load
        let _ = writeln!(
            out,
            "    fn load(mem: &dyn abi::GuestMemory, ptr: u32) -> Result<Self, abi::AbiError> {{\n        let at = ptr.wrapping_add(Self::__LAYOUT.2);\n        let _ = at;\n        match abi::load_discriminant(mem, ptr, {n}, \"{wit_name}\")? {{"
        );
        for (i, (c, t)) in cases.iter().enumerate() {
            match t {
                Some(t) => {
                    let _ = writeln!(
                        out,
                        "            {i} => Ok(Self::{c}(<{t} as abi::WitType>::load(mem, at)?)),"
                    );
                }
                None => {
                    let _ = writeln!(out, "            {i} => Ok(Self::{c}),");
                }
            }
        }
        let _ = writeln!(
            out,
            "            value => Err(abi::AbiError::InvalidDiscriminant {{ type_name: \"{wit_name}\", value }}),\n        }}\n    }}"
        );
        // store
        out.push_str("    fn store(&self, mem: &mut dyn abi::GuestMemory, ptr: u32) -> Result<(), abi::AbiError> {\n        let at = ptr.wrapping_add(Self::__LAYOUT.2);\n        let _ = at;\n        match self {\n");
        for (i, (c, t)) in cases.iter().enumerate() {
            match t {
                Some(_) => {
                    let _ = writeln!(
                        out,
                        "            Self::{c}(v) => {{ abi::store_discriminant(mem, ptr, {n}, {i})?; v.store(mem, at) }}"
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "            Self::{c} => abi::store_discriminant(mem, ptr, {n}, {i}),"
                    );
                }
            }
        }
        out.push_str("        }\n    }\n");
        // lift_flat
        let _ = writeln!(
            out,
            "    fn lift_flat(mem: &dyn abi::GuestMemory, vals: &mut abi::FlatIter<'_>) -> Result<Self, abi::AbiError> {{\n        let (disc, payload) = abi::lift_variant_flat(vals, &Self::__CASES, \"{wit_name}\")?;\n        let _ = (mem, &payload);\n        match disc {{"
        );
        for (i, (c, t)) in cases.iter().enumerate() {
            match t {
                Some(t) => {
                    let _ = writeln!(
                        out,
                        "            {i} => Ok(Self::{c}(abi::lift_case::<{t}>(mem, &payload)?)),"
                    );
                }
                None => {
                    let _ = writeln!(out, "            {i} => Ok(Self::{c}),");
                }
            }
        }
        let _ = writeln!(
            out,
            "            value => Err(abi::AbiError::InvalidDiscriminant {{ type_name: \"{wit_name}\", value }}),\n        }}\n    }}"
        );
        // lower_flat
        out.push_str("    fn lower_flat(&self, mem: &mut dyn abi::GuestMemory, out: &mut Vec<abi::FlatVal>) -> Result<(), abi::AbiError> {\n        match self {\n");
        for (i, (c, t)) in cases.iter().enumerate() {
            match t {
                Some(_) => {
                    let _ = writeln!(
                        out,
                        "            Self::{c}(v) => abi::lower_variant_case(mem, out, &Self::__CASES, {i}, v),"
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "            Self::{c} => abi::lower_variant_case(mem, out, &Self::__CASES, {i}, &()),"
                    );
                }
            }
        }
        out.push_str("        }\n    }\n}\n");
    }

    /// The trait method name of an imported function.
    fn method_name(&self, func: &Function) -> String {
        let res = |id: &TypeId| {
            snake(
                self.resolve.types[*id]
                    .name
                    .as_deref()
                    .expect("named resource"),
            )
        };
        match &func.kind {
            FunctionKind::Freestanding => snake(&func.name),
            FunctionKind::Method(r) | FunctionKind::Static(r) => {
                format!(
                    "{}_{}",
                    res(r).trim_start_matches("r#"),
                    snake(func.item_name()).trim_start_matches("r#")
                )
            }
            FunctionKind::Constructor(r) => format!("{}_new", res(r).trim_start_matches("r#")),
            other => panic!("unsupported function kind {other:?} for {}", func.name),
        }
    }

    fn params(&self, func: &Function) -> Vec<(String, String)> {
        func.params
            .iter()
            .map(|p| {
                let name = if p.name == "self" {
                    "this".to_string()
                } else {
                    snake(&p.name)
                };
                (name, self.ty(&p.ty))
            })
            .collect()
    }

    fn interface(&self, out: &mut String, id: InterfaceId, sigs: &mut Vec<String>) {
        let iface = &self.resolve.interfaces[id];
        let module = self.resolve.id_of(id).expect("interface id");
        let mod_name = self.iface_mod(id);
        let _ = writeln!(
            out,
            "/// Interface `{module}`.\n#[allow(dead_code, clippy::all)]\npub mod {mod_name} {{\nuse crate::abi::{{self, WitType as _}};\n"
        );
        for (_, &ty) in &iface.types {
            self.typedef(out, ty);
        }
        if iface.functions.is_empty() {
            out.push_str("}\n");
            return;
        }
        let resources: Vec<TypeId> = iface
            .types
            .values()
            .copied()
            .filter(|t| matches!(self.resolve.types[*t].kind, TypeDefKind::Resource))
            .collect();
        // Host trait.
        let _ = writeln!(
            out,
            "/// What the host implements for `{module}`.\npub trait Host {{"
        );
        for func in iface.functions.values() {
            let params: Vec<String> = self
                .params(func)
                .iter()
                .map(|(n, t)| format!("{n}: {t}"))
                .collect();
            let docs = func.docs.contents.as_deref().unwrap_or("").trim();
            for line in docs.lines() {
                let _ = writeln!(out, "    /// {line}");
            }
            let _ = writeln!(
                out,
                "    fn {}(&mut self, {}) -> Result<{}, sandbox::Fault>;",
                self.method_name(func),
                params.join(", "),
                self.opt_ty(func.result.as_ref())
            );
        }
        for r in &resources {
            let rname = self.resolve.types[*r].name.as_deref().expect("named");
            let _ = writeln!(
                out,
                "    /// The guest dropped its `{rname}` handle.\n    fn {}_drop(&mut self, handle: abi::Resource<{}>) -> Result<(), sandbox::Fault>;",
                snake(rname).trim_start_matches("r#"),
                camel(rname)
            );
        }
        out.push_str("}\n\n");
        // Linker registration.
        let _ = writeln!(
            out,
            "/// Core module name of this interface's imports.\npub const MODULE: &str = \"{module}\";\n"
        );
        out.push_str("/// Registers this interface's import functions.\npub fn add_to_linker<T: Host + sandbox::HasQuota + 'static>(linker: &mut wasmi::Linker<T>) -> Result<(), wasmi::Error> {\n");
        for func in iface.functions.values() {
            let sig = self.resolve.wasm_signature(AbiVariant::GuestImport, func);
            let params = self.params(func);
            let ret = self.opt_ty(func.result.as_ref());
            let _ = writeln!(
                out,
                "    linker.func_new(MODULE, \"{}\", crate::glue::func_type({}, {}), |mut caller: wasmi::Caller<'_, T>, params: &[wasmi::Val], results: &mut [wasmi::Val]| -> Result<(), wasmi::Error> {{",
                func.name,
                flat_list(&sig.params),
                flat_list(&sig.results)
            );
            let _ = writeln!(
                out,
                "        sandbox::enter_host(&mut caller, \"{module}#{}\")?;\n        let flat = crate::glue::vals_to_flat(params)?;",
                func.name
            );
            let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
            let tuple_ty: Vec<&str> = params.iter().map(|(_, t)| t.as_str()).collect();
            let pattern = if names.is_empty() {
                "()".to_string()
            } else {
                format!("({},)", names.join(", "))
            };
            let _ = writeln!(
                out,
                "        let ({pattern}, charged) = {{\n            let mem = crate::glue::WasmiMemory::from_caller(&mut caller)?;\n            let args = {{"
            );
            if sig.indirect_params {
                let _ = writeln!(
                    out,
                    "            let ptr = crate::glue::flat_ptr(&flat, 0)?;\n            <({},) as abi::WitType>::load(&mem, ptr)?",
                    tuple_ty.join(", ")
                );
            } else {
                out.push_str(
                    "            let mut vals = abi::FlatIter::new(&flat);\n            (",
                );
                for t in &tuple_ty {
                    let _ = write!(out, "<{t} as abi::WitType>::lift_flat(&mem, &mut vals)?, ");
                }
                out.push_str(")\n");
            }
            out.push_str("            };\n            (args, mem.charged())\n        };\n        crate::glue::commit_lifted(&mut caller, charged)?;\n");
            let _ = writeln!(
                out,
                "        let ret: {ret} = <T as Host>::{}(caller.data_mut(), {})?;",
                self.method_name(func),
                names.join(", ")
            );
            if func.result.is_some() {
                out.push_str(
                    "        let mut mem = crate::glue::WasmiMemory::from_caller(&mut caller)?;\n",
                );
                if sig.retptr {
                    out.push_str("        let retptr = crate::glue::flat_ptr(&flat, flat.len().wrapping_sub(1))?;\n        crate::glue::store_at(&mut mem, retptr, &ret)?;\n");
                } else {
                    out.push_str("        let mut out = Vec::new();\n        ret.lower_flat(&mut mem, &mut out)?;\n        crate::glue::flat_to_vals(&out, results)?;\n");
                }
            }
            out.push_str("        crate::glue::end_host_call(&mut caller);\n        let _ = results;\n        Ok(())\n    })?;\n");
            sigs.push(format!("crate::glue::CoreFunc {{ module: \"{module}\", name: \"{}\", params: {}, results: {} }}", func.name, flat_list(&sig.params), flat_list(&sig.results)));
        }
        for r in &resources {
            let rname = self.resolve.types[*r].name.as_deref().expect("named");
            let _ = writeln!(
                out,
                "    linker.func_new(MODULE, \"[resource-drop]{rname}\", crate::glue::func_type(&[abi::FlatType::I32], &[]), |mut caller: wasmi::Caller<'_, T>, params: &[wasmi::Val], _: &mut [wasmi::Val]| -> Result<(), wasmi::Error> {{\n        sandbox::enter_host(&mut caller, \"{module}#[resource-drop]{rname}\")?;\n        let flat = crate::glue::vals_to_flat(params)?;\n        let handle = abi::Resource::new(crate::glue::flat_ptr(&flat, 0)?);\n        Ok(<T as Host>::{}_drop(caller.data_mut(), handle)?)\n    }})?;",
                snake(rname).trim_start_matches("r#")
            );
            sigs.push(format!("crate::glue::CoreFunc {{ module: \"{module}\", name: \"[resource-drop]{rname}\", params: &[abi::FlatType::I32], results: &[] }}"));
        }
        out.push_str("    Ok(())\n}\n}\n\n");
    }

    fn world(&self, world_id: wit_parser::WorldId) -> String {
        let world = &self.resolve.worlds[world_id];
        let mut out = String::from(
            "// @generated by crates/wasm-host/build.rs from wit/ — do not edit.\n\nuse crate::abi::{self, WitType as _};\n\n",
        );
        let mut sigs = Vec::new();
        let mut host_bounds = Vec::new();
        let mut adds = Vec::new();
        for item in world.imports.values() {
            match item {
                WorldItem::Interface { id, .. } => {
                    self.interface(&mut out, *id, &mut sigs);
                    if !self.resolve.interfaces[*id].functions.is_empty() {
                        let m = self.iface_mod(*id);
                        host_bounds.push(format!("{m}::Host"));
                        adds.push(format!("    {m}::add_to_linker(linker)?;"));
                    }
                }
                WorldItem::Type { id, .. } => {
                    let _ = writeln!(
                        out,
                        "pub use {};",
                        self.ty(&Type::Id(self.resource_def(*id)))
                    );
                }
                WorldItem::Function(f) => panic!("world-level import {} is not supported", f.name),
            }
        }
        let _ = writeln!(
            out,
            "/// Every import function of the world, for validating guests.\npub const IMPORTS: &[crate::glue::CoreFunc] = &[\n    {}\n];\n",
            sigs.join(",\n    ")
        );
        let _ = writeln!(
            out,
            "/// Registers all import functions of the world.\npub fn add_to_linker<T: {} + sandbox::HasQuota + 'static>(linker: &mut wasmi::Linker<T>) -> Result<(), wasmi::Error> {{\n{}\n    Ok(())\n}}\n",
            host_bounds.join(" + "),
            adds.join("\n")
        );

        // Exports.
        let funcs: Vec<&Function> = world
            .exports
            .values()
            .map(|item| match item {
                WorldItem::Function(f) => f,
                _ => panic!("only world-level function exports are supported"),
            })
            .collect();
        let mut export_sigs = Vec::new();
        out.push_str("/// The world's exports of one instance, type-checked.\n#[derive(Debug, Clone, Copy)]\npub struct Exports {\n    memory: wasmi::Memory,\n    realloc: Option<wasmi::Func>,\n");
        for f in &funcs {
            let _ = writeln!(
                out,
                "    {}: (wasmi::Func, Option<wasmi::Func>),",
                snake(&f.name)
            );
        }
        out.push_str("}\n\n#[allow(clippy::all)]\nimpl Exports {\n    /// Looks up and type-checks the exports of `instance`.\n    pub fn new(store: &impl wasmi::AsContext, instance: &wasmi::Instance) -> Result<Self, crate::glue::ExportError> {\n        Ok(Self {\n            memory: crate::glue::export_memory(store, instance)?,\n            realloc: crate::glue::export_realloc(store, instance)?,\n");
        for f in &funcs {
            let sig = self.resolve.wasm_signature(AbiVariant::GuestExport, f);
            let _ = writeln!(
                out,
                "            {}: crate::glue::export_func(store, instance, \"{}\", {}, {})?,",
                snake(&f.name),
                f.name,
                flat_list(&sig.params),
                flat_list(&sig.results)
            );
            export_sigs.push(format!(
                "crate::glue::CoreFunc {{ module: \"\", name: \"{}\", params: {}, results: {} }}",
                f.name,
                flat_list(&sig.params),
                flat_list(&sig.results)
            ));
        }
        out.push_str("        })\n    }\n");
        for f in &funcs {
            let sig = self.resolve.wasm_signature(AbiVariant::GuestExport, f);
            let params = self.params(f);
            let ret = self.opt_ty(f.result.as_ref());
            let args: Vec<String> = params.iter().map(|(n, t)| format!("{n}: &{t}")).collect();
            let fname = snake(&f.name);
            let _ = writeln!(
                out,
                "    /// Calls the guest's `{}` export.\n    pub fn call_{fname}<T: sandbox::HasQuota + 'static>(&self, store: &mut wasmi::Store<T>, {}) -> Result<{ret}, crate::glue::CallError> {{",
                f.name,
                args.join(", ")
            );
            out.push_str("        let mut mem = crate::glue::WasmiMemory::new(&mut *store, self.memory, self.realloc);\n        let mut args: Vec<abi::FlatVal> = Vec::new();\n");
            if sig.indirect_params {
                let tys: Vec<&str> = params.iter().map(|(_, t)| t.as_str()).collect();
                let _ = writeln!(
                    out,
                    "        let ptr = abi::alloc(&mut mem, <({},) as abi::WitType>::SIZE, <({},) as abi::WitType>::ALIGN)?;\n        let mut offset = 0u32;",
                    tys.join(", "),
                    tys.join(", ")
                );
                for (n, t) in &params {
                    let _ = writeln!(
                        out,
                        "        offset = abi::align_to(offset, <{t} as abi::WitType>::ALIGN);\n        {n}.store(&mut mem, ptr + offset)?;\n        offset += <{t} as abi::WitType>::SIZE;"
                    );
                }
                out.push_str(
                    "        let _ = offset;\n        args.push(abi::FlatVal::I32(ptr as i32));\n",
                );
            } else {
                for (n, _) in &params {
                    let _ = writeln!(out, "        {n}.lower_flat(&mut mem, &mut args)?;");
                }
            }
            let _ = writeln!(
                out,
                "        drop(mem);\n        let results = crate::glue::call(&mut *store, self.{fname}.0, &args, {})?;",
                sig.results.len()
            );
            out.push_str("        let mem = crate::glue::WasmiMemory::new(&mut *store, self.memory, self.realloc);\n");
            if f.result.is_none() {
                out.push_str("        let ret = ();\n");
            } else if sig.retptr {
                let _ = writeln!(
                    out,
                    "        let ret = crate::glue::load_at::<{ret}>(&mem, crate::glue::flat_ptr(&results, 0)?)?;"
                );
            } else {
                let _ = writeln!(
                    out,
                    "        let ret = <{ret} as abi::WitType>::lift_flat(&mem, &mut abi::FlatIter::new(&results))?;"
                );
            }
            let _ = writeln!(
                out,
                "        let charged = mem.charged();\n        drop(mem);\n        crate::glue::keep_charged(&mut *store, charged)?;\n        if let Some(post) = self.{fname}.1 {{\n            crate::glue::post_return(&mut *store, post, &results)?;\n        }}\n        Ok(ret)\n    }}"
            );
        }
        out.push_str("}\n\n");
        let _ = writeln!(
            out,
            "/// Every export function of the world, for validating guests.\npub const EXPORTS: &[crate::glue::CoreFunc] = &[\n    {}\n];",
            export_sigs.join(",\n    ")
        );
        out
    }
}
