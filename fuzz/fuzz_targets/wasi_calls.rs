//! A hostile WASI command: arbitrary arguments and environment, and a guest that reads its
//! stdin and replays it as a script of WASI calls with arbitrary pointers, lengths and iovec
//! arrays (`fd_write`, `fd_read`, `args_*`, `environ_*`, `random_get`, `clock_time_get`,
//! `poll_oneoff`, `fd_fdstat_get`, `fd_seek`, `fd_prestat_dir_name`, `proc_exit`). The host must
//! never panic, and whatever the guest does, stdout, stderr and the memory used stay within
//! their limits.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use wasm_faas::{Limits, Module, STDERR_CAPTURE, WasiInput, load_module, run_wasi};

/// Reads stdin to offset 1024 (the script), then runs its 20-byte records
/// `op a b c d` (little-endian u32s) as WASI calls; results are ignored.
const GUEST: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fd_fdstat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_seek" (func $fd_seek (param i32 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $fd_prestat_dir_name (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (local $end i32) (local $at i32) (local $a i32) (local $b i32) (local $c i32) (local $d i32)
    ;; One read of stdin into 1024.. (iovec at 0, count written at 8).
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 60000))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (local.set $end (i32.add (i32.const 1024) (i32.load (i32.const 8))))
    (local.set $at (i32.const 1024))
    (block $done
      (loop $next
        (br_if $done (i32.gt_u (i32.add (local.get $at) (i32.const 20)) (local.get $end)))
        (local.set $a (i32.load (i32.add (local.get $at) (i32.const 4))))
        (local.set $b (i32.load (i32.add (local.get $at) (i32.const 8))))
        (local.set $c (i32.load (i32.add (local.get $at) (i32.const 12))))
        (local.set $d (i32.load (i32.add (local.get $at) (i32.const 16))))
        (block $call
          (block $exit (block $dir (block $seek (block $fdstat (block $poll (block $clock
          (block $random (block $env (block $env_sizes (block $args (block $args_sizes
          (block $read (block $write
            (br_table $write $read $args_sizes $args $env_sizes $env $random $clock $poll
                      $fdstat $seek $dir $exit
                      (i32.rem_u (i32.load (local.get $at)) (i32.const 13))))
            (drop (call $fd_write (local.get $a) (local.get $b) (local.get $c) (local.get $d)))
            (br $call))
            (drop (call $fd_read (local.get $a) (local.get $b) (local.get $c) (local.get $d)))
            (br $call))
            (drop (call $args_sizes_get (local.get $a) (local.get $b)))
            (br $call))
            (drop (call $args_get (local.get $a) (local.get $b)))
            (br $call))
            (drop (call $environ_sizes_get (local.get $a) (local.get $b)))
            (br $call))
            (drop (call $environ_get (local.get $a) (local.get $b)))
            (br $call))
            (drop (call $random_get (local.get $a) (local.get $b)))
            (br $call))
            (drop (call $clock_time_get (local.get $a) (i64.extend_i32_u (local.get $b)) (local.get $c)))
            (br $call))
            (drop (call $poll_oneoff (local.get $a) (local.get $b) (local.get $c) (local.get $d)))
            (br $call))
            (drop (call $fd_fdstat_get (local.get $a) (local.get $b)))
            (br $call))
            (drop (call $fd_seek (local.get $a) (i64.extend_i32_s (local.get $b)) (local.get $c) (local.get $d)))
            (br $call))
            (drop (call $fd_prestat_dir_name (local.get $a) (local.get $b) (local.get $c)))
            (br $call))
          (call $proc_exit (local.get $a)))
        (local.set $at (i32.add (local.get $at) (i32.const 20)))
        (br $next))))
)
"#;

const LIMITS: Limits = Limits {
    fuel: 2_000_000,
    deadline: Duration::from_secs(2),
    max_memory_bytes: 1 << 20,
    max_output_bytes: 4096,
};

fn guest() -> &'static Module {
    static GUEST_MODULE: OnceLock<Module> = OnceLock::new();
    GUEST_MODULE.get_or_init(|| {
        load_module(&wasm_faas::engine(), GUEST.as_bytes()).expect("the fuzz guest compiles")
    })
}

fuzz_target!(|data: &[u8]| {
    // First byte: length of the argument block (NUL-separated words; `k=v` words go to the
    // environment); the rest is the guest's stdin, its script.
    let Some((&words_len, rest)) = data.split_first() else {
        return;
    };
    let (words, stdin) = rest.split_at(usize::from(words_len).min(rest.len()));
    let mut input = WasiInput {
        stdin: stdin.to_vec(),
        ..WasiInput::default()
    };
    for word in String::from_utf8_lossy(words).split('\0') {
        match word.split_once('=') {
            Some((key, value)) => input.env.push((key.into(), value.into())),
            None => input.args.push(word.into()),
        }
    }
    let run = run_wasi(guest(), &input, &LIMITS);
    assert!(
        run.report.peak_memory <= LIMITS.max_memory_bytes,
        "{:?}",
        run.report
    );
    if let Ok(output) = &run.result {
        assert!(output.stdout.len() <= LIMITS.max_output_bytes);
        assert!(output.stderr.len() <= STDERR_CAPTURE);
    }
});
