//! Nanoprocesses, limits, kind detection and loading.

mod common;

use std::time::{Duration, Instant};

use common::{engine, inline, test_limits, wat_module};
use wasm_faas::{
    Fault, Kind, Limits, RunError, Val, ValType, WasiInput, classify, load_module,
    nanoprocess_signature, parse_args, run_nanoprocess, run_nanoprocess_str, run_wasi,
};

#[test]
fn answer_is_42() {
    let engine = engine();
    let module = wat_module(&engine, "answer.wat");
    assert_eq!(
        classify(&module),
        Kind::Nanoprocess {
            params: vec![],
            results: vec![ValType::I32]
        }
    );
    let run = run_nanoprocess_str(&module, "", &test_limits());
    assert_eq!(run.result.expect("runs").results, ["42"]);
    assert!(run.report.fuel_used > 0);
}

#[test]
fn sum_adds_its_arguments() {
    let engine = engine();
    let module = wat_module(&engine, "sum.wat");
    assert_eq!(
        run_nanoprocess_str(&module, "5,2", &test_limits())
            .result
            .expect("runs")
            .results,
        ["7"]
    );
    assert_eq!(
        run_nanoprocess_str(&module, " -3 , 0x10 ", &test_limits())
            .result
            .expect("runs")
            .results,
        ["13"]
    );
    let typed = run_nanoprocess(&module, &[Val::I32(40), Val::I32(2)], &test_limits())
        .result
        .expect("runs");
    assert_eq!(typed.results, ["42"]);
}

#[test]
fn float_and_wide_parameters() {
    let engine = engine();
    let module = inline(
        &engine,
        r#"(module (func (export "_start") (param f64 i64 f32) (result f64 i64)
            (f64.add (local.get 0) (f64.promote_f32 (local.get 2)))
            (i64.mul (local.get 1) (i64.const 2))))"#,
    );
    let output = run_nanoprocess_str(&module, "1.25,4000000000,0.5", &test_limits())
        .result
        .expect("runs");
    assert_eq!(output.results, ["1.75", "8000000000"]);
}

#[test]
fn bad_arguments_are_reported() {
    let engine = engine();
    let module = wat_module(&engine, "sum.wat");
    for args in [
        "5",
        "5,2,1",
        "5,x",
        "5,",
        "5000000000,1",
        "1.5,2",
        "--1,2",
        "",
    ] {
        match run_nanoprocess_str(&module, args, &test_limits()).result {
            Err(RunError::BadArgs(message)) => assert!(!message.is_empty()),
            other => panic!("args {args:?}: expected BadArgs, got {other:?}"),
        }
    }
    assert!(matches!(
        run_nanoprocess(&module, &[Val::I64(1), Val::I32(2)], &test_limits()).result,
        Err(RunError::BadArgs(_))
    ));
    assert!(
        parse_args("4294967295", &[ValType::I32])
            .is_ok_and(|args| matches!(args[..], [Val::I32(-1)]))
    );
}

#[test]
fn stuck_is_stopped_by_fuel() {
    let engine = engine();
    let module = wat_module(&engine, "stuck.wat");
    let limits = Limits {
        fuel: (2_000_000),
        deadline: Duration::MAX,
        ..Limits::default()
    };
    assert!(matches!(
        run_nanoprocess_str(&module, "", &limits).result,
        Err(RunError::Fault(Fault::OutOfFuel { .. }))
    ));
    // Fuel is also enforced across deadline slices.
    let limits = Limits {
        fuel: (2_000_000),
        deadline: (Duration::from_secs(30)),
        ..Limits::default()
    };
    assert!(matches!(
        run_nanoprocess_str(&module, "", &limits).result,
        Err(RunError::Fault(Fault::OutOfFuel { .. }))
    ));
}

#[test]
fn stuck_is_stopped_by_the_deadline_with_unlimited_fuel() {
    let engine = engine();
    let module = wat_module(&engine, "stuck.wat");
    let limits = Limits {
        fuel: u64::MAX,
        deadline: (Duration::from_millis(300)),
        ..Limits::default()
    };
    let started = Instant::now();
    assert!(matches!(
        run_nanoprocess_str(&module, "", &limits).result,
        Err(RunError::Fault(Fault::Timeout { .. }))
    ));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
}

#[test]
fn sleep_is_stopped_by_a_one_second_deadline() {
    let engine = engine();
    let module = wat_module(&engine, "sleep.wat");
    let limits = Limits {
        fuel: u64::MAX,
        deadline: (Duration::from_secs(1)),
        ..Limits::default()
    };
    let started = Instant::now();
    assert!(matches!(
        run_nanoprocess_str(&module, "3000", &limits).result,
        Err(RunError::Fault(Fault::Timeout { .. }))
    ));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_millis(1800),
        "{elapsed:?}"
    );
    // A short sleep finishes and reports how long it waited (platform.now is in milliseconds).
    let output = run_nanoprocess_str(&module, "50", &limits)
        .result
        .expect("short sleep finishes");
    let waited: f64 = output.results[0].parse().expect("a number");
    assert!((50.0..900.0).contains(&waited), "{waited}");
}

#[test]
fn memory_bomb_is_stopped_by_the_cap() {
    let engine = engine();
    let module = wat_module(&engine, "membomb.wat");
    let limits = Limits {
        max_memory_bytes: 4 << 20,
        ..test_limits()
    };
    assert!(matches!(
        run_nanoprocess_str(&module, "", &limits).result,
        Err(RunError::Fault(Fault::Memory { .. }))
    ));
    // An initial memory above the cap fails at instantiation.
    let big = inline(
        &engine,
        r#"(module (memory (export "memory") 100) (func (export "_start") (result i32) i32.const 1))"#,
    );
    assert!(matches!(
        run_nanoprocess_str(&big, "", &limits).result,
        Err(RunError::Fault(Fault::Memory { .. }))
    ));
    // Below the cap it runs and reports its memory.
    let run = run_nanoprocess_str(
        &big,
        "",
        &Limits {
            max_memory_bytes: 8 << 20,
            ..test_limits()
        },
    );
    assert!(run.result.is_ok());
    // The instance's host memory counts too.
    assert_eq!(
        run.report.peak_memory,
        100 * 65536 + big.footprint().host_bytes()
    );
}

#[test]
fn traps_are_errors_not_panics() {
    let engine = engine();
    let module = wat_module(&engine, "trap.wat");
    assert_eq!(
        run_nanoprocess_str(&module, "4", &test_limits())
            .result
            .expect("runs")
            .results,
        ["25"]
    );
    for args in ["0", "-1"] {
        assert!(
            matches!(
                run_nanoprocess_str(&module, args, &test_limits()).result,
                Err(RunError::Fault(Fault::Host(_) | Fault::Trap(_)))
            ),
            "{args}"
        );
    }
    let recursion = inline(
        &engine,
        r#"(module (func $f (export "_start") (result i32) (i32.add (call $f) (i32.const 1))))"#,
    );
    assert!(matches!(
        run_nanoprocess_str(&recursion, "", &test_limits()).result,
        Err(RunError::Fault(Fault::Host(_) | Fault::Trap(_)))
    ));
}

#[test]
fn every_invocation_gets_a_fresh_instance() {
    let engine = engine();
    let module = inline(
        &engine,
        r#"(module (global $calls (mut i32) (i32.const 0))
            (func (export "_start") (result i32)
              (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
              (global.get $calls)))"#,
    );
    for _ in 0..3 {
        assert_eq!(
            run_nanoprocess_str(&module, "", &test_limits())
                .result
                .expect("runs")
                .results,
            ["1"]
        );
    }
}

#[test]
fn malformed_modules_are_invalid() {
    let engine = engine();
    for source in [
        &b""[..],
        b"\0asm\x01\0\0\0\xff\xff",
        b"(module (func",
        b"not wasm at all",
        b"(module (func (result i32)))",
    ] {
        assert!(
            matches!(load_module(&engine, source), Err(RunError::Invalid(_))),
            "{source:?}"
        );
    }
}

#[test]
fn kind_detection() {
    let engine = engine();
    let wasi = wat_module(&engine, "wasi_args.wat");
    assert_eq!(classify(&wasi), Kind::WasiCommand);
    assert!(matches!(
        run_nanoprocess_str(&wasi, "", &test_limits()).result,
        Err(RunError::Invalid(_))
    ));
    assert_eq!(nanoprocess_signature(&wasi), None, "it imports WASI");
    // Imports nothing, `_start: () -> ()`: a WASI command that prints nothing, and a
    // nanoprocess that returns nothing.
    let either = load_module(
        &engine,
        br#"(module (func (export "_start") (loop $l (br $l))))"#,
    )
    .expect("compiles");
    assert_eq!(classify(&either), Kind::WasiCommand);
    assert_eq!(nanoprocess_signature(&either), Some(Default::default()));
    let limits = Limits {
        deadline: Duration::from_millis(50),
        ..test_limits()
    };
    assert!(matches!(
        run_nanoprocess_str(&either, "", &limits).result,
        Err(RunError::Fault(Fault::Timeout { .. }))
    ));
    assert!(matches!(
        run_wasi(&either, &WasiInput::default(), &limits).result,
        Err(RunError::Fault(Fault::Timeout { .. }))
    ));
    let sleep = wat_module(&engine, "sleep.wat");
    assert_eq!(
        classify(&sleep),
        Kind::Nanoprocess {
            params: vec![ValType::I32],
            results: vec![ValType::F64]
        }
    );

    let unknown = [
        r#"(module (func (export "main")))"#,
        r#"(module (memory (export "_start") 1))"#,
        r#"(module (import "env" "f" (func)) (func (export "_start") (result i32) i32.const 0))"#,
        r#"(module (import "platform" "now" (func (result i32))) (func (export "_start") (result i32) i32.const 0))"#,
        r#"(module (import "wasi_snapshot_preview1" "sched_yield" (func (result i32)))
                   (func (export "_start") (result i32) i32.const 0))"#,
        r#"(module (func (export "_start") (param externref)))"#,
        r#"(module (import "wasi_snapshot_preview1" "sched_yield" (func (result i32)))
                   (import "platform" "now" (func (result f64))) (func (export "_start")))"#,
    ];
    for source in unknown {
        let module = inline(&engine, source);
        assert!(matches!(classify(&module), Kind::Unknown(_)), "{source}");
        assert!(
            matches!(
                run_nanoprocess_str(&module, "", &test_limits()).result,
                Err(RunError::Invalid(_))
            ),
            "{source}"
        );
        assert!(
            matches!(
                run_wasi(&module, &WasiInput::default(), &test_limits()).result,
                Err(RunError::Invalid(_))
            ),
            "{source}"
        );
    }
}

#[test]
fn failed_runs_report_their_cost() {
    let engine = engine();
    let module = wat_module(&engine, "stuck.wat");
    let limits = Limits {
        fuel: 3_000_000,
        ..test_limits()
    };
    let run = run_nanoprocess_str(&module, "", &limits);
    assert!(run.result.is_err());
    assert!(
        (2_900_000..=3_000_000).contains(&run.report.fuel_used),
        "{:?}",
        run.report
    );
    assert!(run.report.elapsed > Duration::ZERO);
}

#[test]
fn engine_without_fuel_is_rejected() {
    let plain = wasm_faas::Engine::default();
    let module = load_module(
        &plain,
        br#"(module (func (export "_start") (result i32) i32.const 1))"#,
    )
    .expect("compiles");
    assert!(matches!(
        run_nanoprocess_str(&module, "", &test_limits()).result,
        Err(RunError::Invalid(_))
    ));
}
