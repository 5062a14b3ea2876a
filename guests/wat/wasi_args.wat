;; WASI command: prints argv, one per line, then the environment, one `KEY=value` per line,
;; to stdout, and "args done" to stderr.
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 64) "args done\n")

  ;; Turns the NULs of [buf, buf+len) into newlines and writes the range to `fd`.
  (func $print_list (param $fd i32) (param $buf i32) (param $len i32)
    (local $i i32)
    (block $done
      (loop $scan
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (if (i32.eqz (i32.load8_u (i32.add (local.get $buf) (local.get $i))))
          (then (i32.store8 (i32.add (local.get $buf) (local.get $i)) (i32.const 10))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    (call $write (local.get $fd) (local.get $buf) (local.get $len)))

  (func $write (param $fd i32) (param $buf i32) (param $len i32)
    ;; iovec at 16: { buf, len }; bytes written at 24
    (i32.store (i32.const 16) (local.get $buf))
    (i32.store (i32.const 20) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 24))))

  (func (export "_start")
    ;; counts at 0/4, pointer arrays at 1024, strings at 8192 (args) and 40960 (env)
    (drop (call $args_sizes_get (i32.const 0) (i32.const 4)))
    (drop (call $args_get (i32.const 1024) (i32.const 8192)))
    (call $print_list (i32.const 1) (i32.const 8192) (i32.load (i32.const 4)))
    (drop (call $environ_sizes_get (i32.const 0) (i32.const 4)))
    (drop (call $environ_get (i32.const 1024) (i32.const 40960)))
    (call $print_list (i32.const 1) (i32.const 40960) (i32.load (i32.const 4)))
    (call $write (i32.const 2) (i32.const 64) (i32.const 10))))
