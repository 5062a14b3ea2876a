;; HOSTILE CASE wasi-stderr-iovecs
;; What:     _start loops over two fd_write calls to stderr whose iovecs all cover the whole
;;           3.75 MiB memory: 131,072 of them (480 GiB in one call, more than the u32 count
;;           fd_write returns), then 1,092 of them (just under 4 GiB). Each call costs the guest
;;           one unit of fuel; copied whole, the first one takes the host many seconds.
;; Kind:     wasi (a WASI preview1 command: stdin = input, stdout = body)
;; Deploy:   PUT /_admin/functions/wasi-stderr-iovecs?timeout-ms=200
;; Call:     GET /api/wasi-stderr-iovecs/input
;; EXPECTED: 504 naming the deadline ("timeout-ms=200") within 200 ms + slack (< 2 s natively):
;;           the first call is EINVAL, the second copies only the kept 16 KiB tail of stderr.
;; The manifest cases.json lists the same facts for the tests and the soak.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 60)
  (func (export "_start")
    (local $size i32)
    ;; iovec 0 at 0 is (0, 3,932,160); doubling copies make 131,072 of them (1 MiB).
    (i32.store (i32.const 4) (i32.const 3932160))
    (local.set $size (i32.const 8))
    (loop $double
      (memory.copy (local.get $size) (i32.const 0) (local.get $size))
      (local.set $size (i32.shl (local.get $size) (i32.const 1)))
      (br_if $double (i32.lt_u (local.get $size) (i32.const 1048576))))
    (loop $again
      (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 131072) (i32.const 3932000)))
      (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1092) (i32.const 3932000)))
      (br $again))))
