;; HOSTILE CASE wasi-stderr-spin
;; What:     _start writes 1 MiB to stderr in an endless loop: each call costs the host a 1 MiB
;;           copy but the guest only a few instructions (little fuel).
;; Kind:     wasi (a WASI preview1 command: stdin = input, stdout = body)
;; Deploy:   PUT /_admin/functions/wasi-stderr-spin?timeout-ms=100
;; Call:     GET /api/wasi-stderr-spin/input
;; EXPECTED: 504 naming the deadline ("timeout-ms=100") within 100 ms + slack (< 2 s natively).
;; The manifest cases.json lists the same facts for the tests and the soak.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 17)
  (func (export "_start")
    (memory.fill (i32.const 65536) (i32.const 101) (i32.const 0x100000))
    (i32.store (i32.const 0) (i32.const 65536))
    (i32.store (i32.const 4) (i32.const 0x100000))
    (loop $again
      (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br $again))))
