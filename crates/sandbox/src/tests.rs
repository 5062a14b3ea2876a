use std::time::{Duration, Instant};

use wasmi::{Caller, Linker, Val};

use super::*;

fn limits() -> Limits {
    Limits {
        fuel: 1_000_000_000,
        timeout: Duration::from_secs(10),
        max_memory: 1 << 20,
    }
}

/// The host bytes an instance of `wat` is charged.
fn instance_bytes(wat: &str) -> usize {
    compile(wat.as_bytes())
        .expect("valid module")
        .footprint()
        .host_bytes()
}

/// Compiles `wat` and runs its export `run` with `limits`; host import `host.reenter` calls the
/// export `callback` on the host's behalf.
fn run(wat: &str, limits: Limits) -> (Result<Vec<Val>, Fault>, Report) {
    let engine = engine();
    let module = Module::new(&engine, wat.as_bytes()).expect("valid module");
    let mut store = store(&engine, limits, ());
    let mut linker = Linker::new(&engine);
    linker
        .func_wrap("host", "reenter", |mut caller: Caller<'_, Guest<()>>| {
            enter_host(&mut caller, "host.reenter")?;
            let callback_fn = caller
                .get_export("callback")
                .and_then(wasmi::Extern::into_func)
                .ok_or_else(|| wasmi::Error::new("no callback export"))?;
            callback(&mut caller, callback_fn, &[], &mut [])?;
            Ok(())
        })
        .expect("define");
    let outcome = instantiate(&mut store, &linker, &module).and_then(|instance| {
        let func = instance.get_func(&store, "run").expect("run export");
        let mut results = vec![Val::I32(0); func.ty(&store).results().len()];
        call(&mut store, func, &[], &mut results).map(|()| results)
    });
    (outcome, report(&store))
}

#[test]
fn a_result_and_its_cost() {
    let wat = r#"(module (memory 2) (func (export "run") (result i32) i32.const 7))"#;
    let (outcome, report) = run(wat, limits());
    assert_eq!(outcome.expect("runs").first().and_then(Val::i32), Some(7));
    assert!(report.fuel_used > 0 && report.fuel_used < 100, "{report:?}");
    assert_eq!(
        report.peak_memory,
        2 * 65536 + instance_bytes(wat),
        "the instance and its initial memory are charged"
    );
}

#[test]
fn an_endless_loop_stops_at_the_deadline() {
    let started = Instant::now();
    let (outcome, report) = run(
        r#"(module (func (export "run") (loop br 0)))"#,
        Limits {
            timeout: Duration::from_millis(100),
            ..limits()
        },
    );
    assert_eq!(
        outcome.expect_err("stopped"),
        Fault::Timeout {
            limit: Duration::from_millis(100)
        }
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(report.fuel_used > 0);
}

#[test]
fn fuel_runs_out_and_is_reported() {
    let (outcome, report) = run(
        r#"(module (func (export "run") (loop br 0)))"#,
        Limits {
            fuel: 1_000_000,
            ..limits()
        },
    );
    assert_eq!(
        outcome.expect_err("stopped"),
        Fault::OutOfFuel { limit: 1_000_000 }
    );
    assert_eq!(report.fuel_used, 1_000_000);
}

#[test]
fn memory_growth_beyond_the_budget_fails_and_explains_the_trap() {
    let wat = r#"(module (memory 1)
            (func (export "run")
              (if (i32.eq (memory.grow (i32.const 100)) (i32.const -1)) (then unreachable))))"#;
    let (outcome, report) = run(wat, limits());
    match outcome.expect_err("stopped") {
        Fault::Memory {
            spent: Spend::LinearMemory,
            limit,
            ..
        } => assert_eq!(limit, 1 << 20),
        other => panic!("{other:?}"),
    }
    assert_eq!(report.peak_memory, 65536 + instance_bytes(wat));
}

#[test]
fn table_growth_is_charged() {
    let (outcome, _) = run(
        r#"(module (table 0 funcref)
            (func (export "run")
              (if (i32.eq (table.grow (ref.null func) (i32.const 1000000)) (i32.const -1))
                (then unreachable))))"#,
        limits(),
    );
    assert!(
        matches!(
            outcome,
            Err(Fault::Memory {
                spent: Spend::Table,
                ..
            })
        ),
        "{outcome:?}"
    );
}

#[test]
fn deep_recursion_traps() {
    let (outcome, _) = run(r#"(module (func $f (export "run") (call $f)))"#, limits());
    assert!(
        matches!(&outcome, Err(Fault::Trap(message)) if message.contains("stack")),
        "{outcome:?}"
    );
}

#[test]
fn a_host_callback_cannot_call_the_host_again() {
    let (outcome, _) = run(
        r#"(module (import "host" "reenter" (func $reenter))
            (func (export "callback") (call $reenter))
            (func (export "run") (call $reenter)))"#,
        limits(),
    );
    assert!(matches!(outcome, Err(Fault::Reentrance(_))), "{outcome:?}");
}

#[test]
fn a_looping_callback_stops_at_the_deadline_too() {
    let started = Instant::now();
    let (outcome, _) = run(
        r#"(module (import "host" "reenter" (func $reenter))
            (func (export "callback") (loop br 0))
            (func (export "run") (call $reenter)))"#,
        Limits {
            timeout: Duration::from_millis(100),
            ..limits()
        },
    );
    assert!(matches!(outcome, Err(Fault::Timeout { .. })), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn start_functions_are_refused_at_compile_time() {
    let engine = engine();
    let error = Module::new(&engine, br#"(module (func $s (loop br 0)) (start $s))"#)
        .expect_err("start refused");
    assert!(error.to_string().contains("start"), "{error}");
}

#[test]
fn an_initial_memory_beyond_the_budget_fails_instantiation() {
    let (outcome, _) = run(r#"(module (memory 100) (func (export "run")))"#, limits());
    assert!(
        matches!(
            outcome,
            Err(Fault::Memory {
                spent: Spend::LinearMemory,
                ..
            })
        ),
        "{outcome:?}"
    );
}

/// Appends `value` as unsigned LEB128.
fn leb(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Appends section `id` holding `count` copies of `item`.
fn section(out: &mut Vec<u8>, id: u8, count: usize, item: &[u8]) {
    let mut body = Vec::new();
    leb(&mut body, count);
    for _ in 0..count {
        body.extend_from_slice(item);
    }
    out.push(id);
    leb(out, body.len());
    out.extend_from_slice(&body);
}

/// The module of the finding: `functions` empty functions and `globals` globals (400,000 of
/// each made 3.5 MiB of wasm and 58 MiB of host memory per instance, none of it charged).
fn empty_functions_and_globals(functions: usize, globals: usize) -> Vec<u8> {
    let mut wasm = b"\0asm\x01\0\0\0".to_vec();
    section(&mut wasm, 1, 1, &[0x60, 0, 0]); // type 0: () -> ()
    section(&mut wasm, 3, functions, &[0]);
    section(&mut wasm, 6, globals, &[0x7f, 1, 0x41, 0, 0x0b]); // (mut i32) (i32.const 0)
    section(&mut wasm, 10, functions, &[2, 0, 0x0b]); // no locals, end
    wasm
}

#[test]
fn modules_declaring_too_much_are_refused_at_compile_time() {
    let refused = |wasm: &[u8]| match compile(wasm) {
        Err(CompileError::Invalid(message)) => message,
        other => panic!("{other:?}"),
    };
    let started = Instant::now();
    let big = empty_functions_and_globals(400_000, 400_000);
    assert!(big.len() > 3 << 20, "{}", big.len());
    assert!(refused(&big).contains("limit of 10000 functions"));
    assert!(refused(&empty_functions_and_globals(1, 400_000)).contains("1000 global variables"));
    assert!(
        refused(&empty_functions_and_globals(1_000, 0)).contains("average bytes per function"),
        "empty functions are refused long before the function limit"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // Within the caps, the module compiles.
    assert!(compile(&empty_functions_and_globals(300, 1_000)).is_ok());

    let imports: String = (0..=MAX_IMPORTS)
        .map(|_| r#"(import "host" "f" (func))"#)
        .collect();
    assert_eq!(
        compile(format!("(module {imports})").as_bytes()).map(|_| ()),
        Err(CompileError::TooMany {
            what: "imports",
            count: MAX_IMPORTS + 1,
            limit: MAX_IMPORTS
        })
    );
}

#[test]
fn the_instance_is_charged_and_one_beyond_max_memory_is_a_memory_fault() {
    let wasm = empty_functions_and_globals(300, 1_000);
    let module = compile(&wasm).expect("within the caps");
    let bytes = module.footprint().host_bytes();
    assert!(
        bytes >= 300 * FUNCTION_BYTES + 1_000 * GLOBAL_BYTES,
        "{bytes}"
    );
    let linker = Linker::<Guest<()>>::new(module.engine());
    let mut fits = store(module.engine(), limits(), ());
    instantiate(&mut fits, &linker, &module).expect("fits in 1 MiB");
    assert_eq!(report(&fits).peak_memory, bytes);

    let small = Limits {
        max_memory: bytes - 1,
        ..limits()
    };
    let mut too_small = store(module.engine(), small, ());
    let fault = instantiate(&mut too_small, &linker, &module).expect_err("does not fit");
    assert_eq!(
        fault,
        Fault::Memory {
            spent: Spend::Instance,
            needed: bytes,
            used: 0,
            limit: bytes - 1
        }
    );
    assert!(fault.to_string().contains("module instance"), "{fault}");
}

#[test]
fn attachments_are_built_once_and_the_engine_dies_with_the_module() {
    let module = compile(b"(module)").expect("valid module");
    let builds = std::cell::Cell::new(0);
    let build = |engine: &wasmi::Engine| {
        builds.set(builds.get() + 1);
        Ok::<_, wasmi::Error>(Linker::<Guest<()>>::new(engine))
    };
    let first = module.attachment(build).expect("built");
    let again = module.clone().attachment(build).expect("kept");
    assert!(std::sync::Arc::ptr_eq(&first, &again));
    assert_eq!(builds.get(), 1);
    let engine = module.engine().weak();
    drop((first, again, module));
    assert!(engine.upgrade().is_none(), "nothing else keeps the code");
}

/// The interface read before compiling agrees with what wasmi reads when it compiles.
#[test]
fn the_interface_is_read_without_compiling() {
    let wat = r#"(module
        (type $unused (func (param f32)))
        (type $now (func (result f64)))
        (import "platform" "now" (func $now (type $now)))
        (import "env" "memory" (memory 1))
        (import "env" "g" (global i32))
        (func $start (param i32 i64) (result f64) call $now)
        (func $other)
        (table (export "table") 1 funcref)
        (export "_start" (func $start))
        (export "now-again" (func $now))
        (export "other" (func $other)))"#;
    let inspected = inspect(wat.as_bytes()).expect("reads");
    let interface = inspected.interface().clone();
    let f64_result = Signature {
        params: vec![],
        results: vec![wasmi::ValType::F64],
    };
    assert_eq!(
        interface.imports,
        vec![
            Import {
                module: "platform".into(),
                name: "now".into(),
                ty: ItemType::Func(f64_result.clone()),
            },
            Import {
                module: "env".into(),
                name: "memory".into(),
                ty: ItemType::Memory,
            },
            Import {
                module: "env".into(),
                name: "g".into(),
                ty: ItemType::Global,
            },
        ]
    );
    assert_eq!(
        interface.export("_start"),
        Some(&ItemType::Func(Signature {
            params: vec![wasmi::ValType::I32, wasmi::ValType::I64],
            results: vec![wasmi::ValType::F64],
        }))
    );
    assert_eq!(
        interface.export("now-again"),
        Some(&ItemType::Func(f64_result))
    );
    assert_eq!(
        interface.export("other"),
        Some(&ItemType::Func(Signature::default()))
    );
    assert_eq!(interface.export("table"), Some(&ItemType::Table));
    assert_eq!(interface.export("missing"), None);

    let module = inspected.compile().expect("compiles");
    assert_eq!(module.interface(), &interface);
    for export in module.exports() {
        let read = interface
            .export(export.name())
            .expect("read before compiling");
        if let (wasmi::ExternType::Func(compiled), ItemType::Func(read)) = (export.ty(), read) {
            assert_eq!(
                (compiled.params(), compiled.results()),
                (read.params.as_slice(), read.results.as_slice())
            );
        }
    }
}

/// A module whose imports or exports cannot be read is refused before anything is compiled.
#[test]
fn a_bad_interface_is_refused() {
    for wat in [
        r#"(module (export "f" (func 3)) (func))"#,
        r#"(module (import "a" "b" (func (type 7))))"#,
    ] {
        // WAT text that names what does not exist is refused by the WAT parser or by the
        // interface reader, never accepted.
        assert!(inspect(wat.as_bytes()).is_err(), "{wat}");
    }
    // A binary whose export names a function that is not there.
    let binary = [
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // header
        0x07, 0x05, 0x01, 0x01, b'f', 0x00, 0x09, // export "f" = func 9
    ];
    let error = inspect(&binary).expect_err("refused");
    assert!(error.to_string().contains("not defined"), "{error}");
}
