;; HOSTILE CASE wasi-stderr-flood
;; What:     _start writes 64 MiB to stderr (64 writes of 1 MiB), then "ok" to stdout and returns.
;; Kind:     wasi (a WASI preview1 command: stdin = input, stdout = body)
;; Deploy:   PUT /_admin/functions/wasi-stderr-flood (no limits)
;; Call:     GET /api/wasi-stderr-flood/input
;; EXPECTED: 200 "ok": stderr is not the answer; the host keeps only its last 16 KiB (and logs
;;           that, bounded), so the flood costs neither memory nor the response.
;; The manifest cases.json lists the same facts for the tests and the soak.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 17)
  (data (i32.const 32) "ok")
  (func (export "_start")
    (local $i i32)
    ;; 1 MiB of lines of 'e' at 65536
    (memory.fill (i32.const 65536) (i32.const 101) (i32.const 0x100000))
    (i32.store8 (i32.const 0x10ffff) (i32.const 10))
    (i32.store (i32.const 0) (i32.const 65536))
    (i32.store (i32.const 4) (i32.const 0x100000))
    (loop $again
      (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 64))))
    (i32.store (i32.const 16) (i32.const 32))
    (i32.store (i32.const 20) (i32.const 2))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 8)))))
