use std::time::{Duration, Instant};

use wasmi::{Caller, Linker, Module, Val};

use super::*;

fn limits() -> Limits {
    Limits {
        fuel: 1_000_000_000,
        timeout: Duration::from_secs(10),
        max_memory: 1 << 20,
    }
}

/// Compiles `wat` and runs its export `run` with `limits`; host import `host.reenter` calls the
/// export `callback` on the host's behalf.
fn run(wat: &str, limits: Limits) -> (Result<Vec<Val>, Fault>, Report) {
    let engine = engine();
    let module = Module::new(&engine, wat).expect("valid module");
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
    let (outcome, report) = run(
        r#"(module (memory 2) (func (export "run") (result i32) i32.const 7))"#,
        limits(),
    );
    assert_eq!(outcome.expect("runs").first().and_then(Val::i32), Some(7));
    assert!(report.fuel_used > 0 && report.fuel_used < 100, "{report:?}");
    assert_eq!(
        report.peak_memory,
        2 * 65536,
        "the initial memory is charged"
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
    let (outcome, report) = run(
        r#"(module (memory 1)
            (func (export "run")
              (if (i32.eq (memory.grow (i32.const 100)) (i32.const -1)) (then unreachable))))"#,
        limits(),
    );
    match outcome.expect_err("stopped") {
        Fault::Memory {
            spent: Spend::LinearMemory,
            limit,
            ..
        } => assert_eq!(limit, 1 << 20),
        other => panic!("{other:?}"),
    }
    assert_eq!(report.peak_memory, 65536);
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
    let error = Module::new(&engine, r#"(module (func $s (loop br 0)) (start $s))"#)
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
