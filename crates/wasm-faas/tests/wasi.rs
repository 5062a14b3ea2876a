//! WASI preview1 commands: the fib guest and WAT commands.

mod common;

use std::time::Duration;

use common::{engine, fib_wasm, inline, test_limits, wat_module};
use wasm_faas::{Fault, Kind, Limits, RunError, WasiInput, classify, load_module, run_wasi};

fn stdin(text: &str) -> WasiInput {
    WasiInput {
        stdin: text.as_bytes().to_vec(),
        ..WasiInput::default()
    }
}

#[test]
fn fib_prints_the_first_n_numbers() {
    let engine = engine();
    let bytes = std::fs::read(fib_wasm()).expect("fib.wasm is readable");
    let module = load_module(&engine, &bytes).expect("fib.wasm compiles");
    assert_eq!(classify(&module), Kind::WasiCommand);

    let run = run_wasi(&module, &stdin("10\n"), &test_limits());
    let output = run.result.expect("fib runs");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "0,1,1,2,3,5,8,13,21,34\n"
    );
    assert_eq!(output.exit_code, 0);
    assert!(output.stderr.is_empty());
    assert!(run.report.fuel_used > 0);
    assert!(run.report.peak_memory >= 64 * 1024);

    let output = run_wasi(&module, &stdin("20"), &test_limits())
        .result
        .expect("fib runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(text.trim_end().rsplit(',').next(), Some("4181"));
}

#[test]
fn fib_reports_bad_input_with_exit_code() {
    let engine = engine();
    let bytes = std::fs::read(fib_wasm()).expect("fib.wasm is readable");
    let module = load_module(&engine, &bytes).expect("fib.wasm compiles");
    let output = run_wasi(&module, &stdin("ten"), &test_limits())
        .result
        .expect("fib runs");
    assert_eq!(output.exit_code, 1);
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("expected a non-negative count"));
}

#[test]
fn args_and_env_are_visible() {
    let engine = engine();
    let module = wat_module(&engine, "wasi_args.wat");
    let input = WasiInput {
        program_name: "args".into(),
        args: vec!["one".into(), "two words".into()],
        env: vec![
            ("GREETING".into(), "hello".into()),
            ("EMPTY".into(), String::new()),
        ],
        ..WasiInput::default()
    };
    let output = run_wasi(&module, &input, &test_limits())
        .result
        .expect("runs");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "args\none\ntwo words\nGREETING=hello\nEMPTY=\n"
    );
    assert_eq!(String::from_utf8_lossy(&output.stderr), "args done\n");
    assert_eq!(output.exit_code, 0);
}

#[test]
fn nul_bytes_and_bad_env_names_are_rejected() {
    let engine = engine();
    let module = wat_module(&engine, "wasi_args.wat");
    let input = WasiInput {
        args: vec!["a\0b".into()],
        ..WasiInput::default()
    };
    assert!(matches!(
        run_wasi(&module, &input, &test_limits()).result,
        Err(RunError::BadArgs(_))
    ));
    let input = WasiInput {
        env: vec![("A=B".into(), "c".into())],
        ..WasiInput::default()
    };
    assert!(matches!(
        run_wasi(&module, &input, &test_limits()).result,
        Err(RunError::BadArgs(_))
    ));
}

#[test]
fn exit_code_and_stderr_are_reported() {
    let engine = engine();
    let module = wat_module(&engine, "wasi_exit.wat");
    let output = run_wasi(&module, &WasiInput::default(), &test_limits())
        .result
        .expect("exit is not an error");
    assert_eq!(output.exit_code, 3);
    assert_eq!(String::from_utf8_lossy(&output.stderr), "failing\n");
    assert!(output.stdout.is_empty());
}

#[test]
fn stdin_is_copied_to_stdout() {
    let engine = engine();
    let module = wat_module(&engine, "echo.wat");
    let text: String = (0..20_000)
        .map(|index| char::from(b'a' + (index % 26) as u8))
        .collect();
    let output = run_wasi(&module, &stdin(&text), &test_limits())
        .result
        .expect("runs");
    assert_eq!(output.stdout, text.as_bytes());
    let output = run_wasi(&module, &WasiInput::default(), &test_limits())
        .result
        .expect("runs");
    assert!(output.stdout.is_empty());
}

#[test]
fn output_over_the_limit_is_an_error() {
    let engine = engine();
    let module = wat_module(&engine, "wasi_spam.wat");
    let limits = Limits {
        max_output_bytes: 4096,
        ..test_limits()
    };
    assert_eq!(
        run_wasi(&module, &WasiInput::default(), &limits).result,
        Err(RunError::Fault(Fault::Output { limit: 4096 }))
    );
    // stderr is not limited but only its end is kept.
    let module = inline(
        &engine,
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (func (export "_start") (local $i i32)
              (i32.store (i32.const 0) (i32.const 16))
              (i32.store (i32.const 4) (i32.const 1000))
              (loop $more
                (drop (call $w (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br_if $more (i32.lt_u (local.get $i) (i32.const 1000))))))"#,
    );
    let output = run_wasi(&module, &WasiInput::default(), &test_limits())
        .result
        .expect("runs");
    assert_eq!(output.exit_code, 0);
    assert!(output.stderr.len() <= 2 * wasm_faas::STDERR_CAPTURE);
    assert_eq!(output.stderr.len() + output.stderr_dropped, 1_000_000);
}

#[test]
fn out_of_bounds_pointer_traps_instead_of_panicking() {
    let engine = engine();
    let module = wat_module(&engine, "wasi_badptr.wat");
    match run_wasi(&module, &WasiInput::default(), &test_limits()).result {
        Err(RunError::Fault(Fault::Host(message) | Fault::Trap(message))) => {
            assert!(message.contains("outside linear memory"), "{message}")
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    // The iovec array itself out of bounds, and an out-of-bounds result pointer.
    let module = inline(
        &engine,
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "args_sizes_get" (func $a (param i32 i32) (result i32)))
            (memory (export "memory") 1)
            (func (export "_start")
              (if (i32.eqz (i32.load (i32.const 0)))
                (then (drop (call $w (i32.const 1) (i32.const 65532) (i32.const 2) (i32.const 8))))
                (else (drop (call $a (i32.const -1) (i32.const 0)))))))"#,
    );
    assert!(matches!(
        run_wasi(&module, &WasiInput::default(), &test_limits()).result,
        Err(RunError::Fault(Fault::Host(_) | Fault::Trap(_)))
    ));
}

#[test]
fn clocks_random_and_unsupported_calls() {
    let engine = engine();
    // Exits with 0 when: realtime is after 2020, monotonic works, random_get fills bytes,
    // path_open on fd 3 answers EBADF (8), fd_seek on stdout answers ESPIPE (70), and
    // fd_prestat_get answers EBADF (no preopens). Otherwise exits with the failing step.
    let module = inline(
        &engine,
        r#"(module
            (import "wasi_snapshot_preview1" "clock_time_get" (func $time (param i32 i64 i32) (result i32)))
            (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "path_open"
              (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "fd_seek" (func $seek (param i32 i64 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (func $check (param $ok i32) (param $step i32)
              (if (i32.eqz (local.get $ok)) (then (call $exit (local.get $step)))))
            (func (export "_start")
              (call $check (i32.eqz (call $time (i32.const 0) (i64.const 0) (i32.const 0))) (i32.const 1))
              (call $check (i64.gt_u (i64.load (i32.const 0)) (i64.const 1577836800000000000)) (i32.const 2))
              (call $check (i32.eqz (call $time (i32.const 1) (i64.const 0) (i32.const 8))) (i32.const 3))
              (call $check (i32.eq (call $time (i32.const 9) (i64.const 0) (i32.const 8)) (i32.const 28)) (i32.const 4))
              (call $check (i32.eqz (call $random (i32.const 100) (i32.const 16))) (i32.const 5))
              (call $check (i64.ne (i64.or (i64.load (i32.const 100)) (i64.load (i32.const 108))) (i64.const 0)) (i32.const 6))
              (call $check (i32.eq (call $open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
                                          (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 0)) (i32.const 8)) (i32.const 7))
              (call $check (i32.eq (call $seek (i32.const 1) (i64.const 0) (i32.const 0) (i32.const 0)) (i32.const 70)) (i32.const 8))
              (call $check (i32.eq (call $prestat (i32.const 3) (i32.const 0)) (i32.const 8)) (i32.const 9))))"#,
    );
    let output = run_wasi(&module, &WasiInput::default(), &test_limits())
        .result
        .expect("runs");
    assert_eq!(output.exit_code, 0, "step {} failed", output.exit_code);
}

#[test]
fn poll_oneoff_sleep_is_bounded_by_the_deadline() {
    let engine = engine();
    // One relative clock subscription of 5 s on the monotonic clock.
    let module = inline(
        &engine,
        r#"(module
            (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (func (export "_start")
              (i32.store8 (i32.const 8) (i32.const 0))
              (i32.store (i32.const 16) (i32.const 1))
              (i64.store (i32.const 24) (i64.const 5000000000))
              (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#,
    );
    let limits = Limits {
        deadline: (Duration::from_millis(300)),
        ..test_limits()
    };
    let started = std::time::Instant::now();
    assert!(matches!(
        run_wasi(&module, &WasiInput::default(), &limits).result,
        Err(RunError::Fault(Fault::Timeout { .. }))
    ));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn kinds_do_not_mix() {
    let engine = engine();
    let answer = wat_module(&engine, "answer.wat");
    assert!(matches!(
        run_wasi(&answer, &WasiInput::default(), &test_limits()).result,
        Err(RunError::Invalid(_))
    ));
    let missing_memory = inline(
        &engine,
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
            (func (export "_start") (drop (call $w (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 0)))))"#,
    );
    assert!(matches!(
        run_wasi(&missing_memory, &WasiInput::default(), &test_limits()).result,
        Err(RunError::Fault(Fault::Host(_) | Fault::Trap(_)))
    ));
    let wrong_signature = inline(
        &engine,
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32) (result i32)))
            (memory (export "memory") 1)
            (func (export "_start")))"#,
    );
    assert!(matches!(
        run_wasi(&wrong_signature, &WasiInput::default(), &test_limits()).result,
        Err(RunError::Invalid(_))
    ));
}

#[test]
fn stderr_keeps_the_tail_across_iovecs() {
    let engine = engine();
    // Two iovecs of 10,000 'a' and 10,000 'b' in one call: the last 16 KiB span both.
    let module = inline(
        &engine,
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (func (export "_start")
              (memory.fill (i32.const 1024) (i32.const 97) (i32.const 10000))
              (memory.fill (i32.const 11024) (i32.const 98) (i32.const 10000))
              (i32.store (i32.const 0) (i32.const 1024))
              (i32.store (i32.const 4) (i32.const 10000))
              (i32.store (i32.const 8) (i32.const 11024))
              (i32.store (i32.const 12) (i32.const 10000))
              (drop (call $w (i32.const 2) (i32.const 0) (i32.const 2) (i32.const 900)))
              (if (i32.ne (i32.load (i32.const 900)) (i32.const 20000)) (then (call $exit (i32.const 1))))
              (call $exit (i32.const 0))))"#,
    );
    let output = run_wasi(&module, &WasiInput::default(), &test_limits())
        .result
        .expect("runs");
    assert_eq!(output.exit_code, 0);
    let capture = wasm_faas::STDERR_CAPTURE;
    let mut expected = vec![b'a'; capture - 10_000];
    expected.extend(vec![b'b'; 10_000]);
    assert_eq!(output.stderr, expected);
    assert_eq!(output.stderr_dropped, 20_000 - capture);

    // 5,000 calls of "abc" + "" + "defgh": the kept end is that pattern's end.

    let module = inline(
        &engine,
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 100) "abc")
            (data (i32.const 300) "defgh")
            (func (export "_start") (local $i i32)
              (i32.store (i32.const 0) (i32.const 100))
              (i32.store (i32.const 4) (i32.const 3))
              (i32.store (i32.const 8) (i32.const 200))
              (i32.store (i32.const 12) (i32.const 0))
              (i32.store (i32.const 16) (i32.const 300))
              (i32.store (i32.const 20) (i32.const 5))
              (loop $more
                (drop (call $w (i32.const 2) (i32.const 0) (i32.const 3) (i32.const 900)))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br_if $more (i32.lt_u (local.get $i) (i32.const 5000))))))"#,
    );
    let output = run_wasi(&module, &WasiInput::default(), &test_limits())
        .result
        .expect("runs");
    let written = b"abcdefgh".repeat(5000);
    assert_eq!(output.stderr, written[written.len() - capture..]);
    assert_eq!(output.stderr_dropped, written.len() - capture);
}

/// A write to stderr of 1,023 iovecs that each cover all of a 4 MiB memory (4 GiB in one call)
/// copies only the kept tail: 64 such calls finish well within a 2 s deadline (copied whole,
/// they are 256 GiB of copying).
#[test]
fn stderr_iovecs_covering_all_memory_copy_only_the_tail() {
    let engine = engine();
    let module = inline(
        &engine,
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 64)
            (func (export "_start") (local $i i32)
              (memory.fill (i32.const 65536) (i32.const 120) (i32.const 4128768))
              (i32.store8 (i32.const 4194303) (i32.const 90))
              (loop $iovec
                (i32.store (i32.shl (local.get $i) (i32.const 3)) (i32.const 0))
                (i32.store (i32.add (i32.shl (local.get $i) (i32.const 3)) (i32.const 4)) (i32.const 4194304))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br_if $iovec (i32.lt_u (local.get $i) (i32.const 1023))))
              (local.set $i (i32.const 0))
              (loop $again
                (if (call $w (i32.const 2) (i32.const 0) (i32.const 1023) (i32.const 65000))
                  (then (call $exit (i32.const 1))))
                (if (i32.ne (i32.load (i32.const 65000)) (i32.const 4290772992))
                  (then (call $exit (i32.const 2))))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br_if $again (i32.lt_u (local.get $i) (i32.const 64))))))"#,
    );
    let limits = Limits {
        deadline: Duration::from_secs(2),
        ..test_limits()
    };
    let output = run_wasi(&module, &WasiInput::default(), &limits)
        .result
        .expect("finishes within its deadline");
    assert_eq!(output.exit_code, 0);
    let capture = wasm_faas::STDERR_CAPTURE;
    let mut expected = vec![b'x'; capture - 1];
    expected.push(b'Z');
    assert_eq!(output.stderr, expected);
    assert_eq!(output.stderr_dropped, 64 * 4_290_772_992 - capture);
}

/// iovec lengths adding up to more than the u32 count `fd_write` returns are refused with
/// EINVAL (as `writev` does), without copying anything.
#[test]
fn writes_longer_than_4_gib_are_invalid() {
    let engine = engine();
    let module = inline(
        &engine,
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 64)
            (func (export "_start") (local $i i32)
              (loop $iovec
                (i32.store (i32.add (i32.shl (local.get $i) (i32.const 3)) (i32.const 4)) (i32.const 4194304))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br_if $iovec (i32.lt_u (local.get $i) (i32.const 2048))))
              (call $exit (call $w (i32.const 2) (i32.const 0) (i32.const 2048) (i32.const 65000)))))"#,
    );
    let output = run_wasi(&module, &WasiInput::default(), &test_limits())
        .result
        .expect("runs");
    assert_eq!(output.exit_code, 28, "EINVAL");
    assert!(output.stderr.is_empty());
}

/// Calls with millions of empty iovecs (to stdout, or reading stdin), each costing the guest
/// one unit of fuel, are stopped by the deadline (checked inside each call too).
#[test]
fn calls_with_millions_of_iovecs_stop_at_the_deadline() {
    let engine = engine();
    for (call, fd) in [("fd_write", 1), ("fd_read", 0)] {
        // 32 MiB of zeros: 4 Mi iovecs of length 0 at address 0.
        let module = inline(
            &engine,
            &format!(
                r#"(module
                (import "wasi_snapshot_preview1" "{call}" (func $io (param i32 i32 i32 i32) (result i32)))
                (memory (export "memory") 512)
                (func (export "_start")
                  (loop $again
                    (drop (call $io (i32.const {fd}) (i32.const 0) (i32.const 4194304) (i32.const 0)))
                    (br $again))))"#
            ),
        );
        let limits = Limits {
            deadline: Duration::from_millis(300),
            ..test_limits()
        };
        let started = std::time::Instant::now();
        let run = run_wasi(&module, &stdin("input"), &limits);
        assert!(
            matches!(run.result, Err(RunError::Fault(Fault::Timeout { .. }))),
            "{call}: {:?}",
            run.result
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{call}");
    }
}

/// `random_get` through the host: a guest that prints 64 random bytes gets different bytes in
/// every invocation (the generator is seeded per invocation from the operating system), and no
/// 8-byte word repeats within one.
#[test]
fn random_get_differs_between_invocations() {
    let engine = engine();
    let module = inline(
        &engine,
        r#"(module
            (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (func (export "_start")
              (drop (call $random (i32.const 64) (i32.const 64)))
              (i32.store (i32.const 0) (i32.const 64))
              (i32.store (i32.const 4) (i32.const 64))
              (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))))"#,
    );
    let run = || {
        run_wasi(&module, &WasiInput::default(), &test_limits())
            .result
            .expect("runs")
            .stdout
    };
    let outputs: Vec<Vec<u8>> = (0..4).map(|_| run()).collect();
    for (i, output) in outputs.iter().enumerate() {
        assert_eq!(output.len(), 64);
        let mut words: Vec<&[u8]> = output.chunks(8).collect();
        words.sort();
        words.dedup();
        assert_eq!(words.len(), 8, "a word repeats in {output:?}");
        for other in &outputs[..i] {
            assert_ne!(output, other, "two invocations got the same bytes");
        }
    }
}
