;; HOSTILE CASE wasi-stdout-flood
;; What:     _start writes 4 KiB to stdout in an endless loop.
;; Kind:     wasi (a WASI preview1 command: stdin = input, stdout = body)
;; Deploy:   PUT /_admin/functions/wasi-stdout-flood?max-body=64k
;; Call:     GET /api/wasi-stdout-flood/input
;; EXPECTED: 500 naming the output limit ("output exceeded 65536 bytes (max-body=65536)"), counted
;;           as body_too_large.
;; The manifest cases.json lists the same facts for the tests and the soak.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (memory.fill (i32.const 4096) (i32.const 111) (i32.const 4096))
    ;; iovec at 0: 4 KiB at 4096; bytes written go to 8
    (i32.store (i32.const 0) (i32.const 4096))
    (i32.store (i32.const 4) (i32.const 4096))
    (loop $again
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br $again))))
