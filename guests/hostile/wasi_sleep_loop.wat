;; HOSTILE CASE wasi-sleep-loop
;; What:     _start sleeps 10 ms with poll_oneoff (one relative monotonic clock subscription) in an
;;           endless loop.
;; Kind:     wasi (a WASI preview1 command: stdin = input, stdout = body)
;; Deploy:   PUT /_admin/functions/wasi-sleep-loop?timeout-ms=100
;; Call:     GET /api/wasi-sleep-loop/input
;; EXPECTED: 504 naming the deadline ("timeout-ms=100") within 100 ms + slack: a sleep never
;;           outlasts the deadline.
;; The manifest cases.json lists the same facts for the tests and the soak.
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    ;; subscription at 0: userdata 0, tag 0 (clock), clock id 1 (monotonic) at 16,
    ;; timeout 10 ms at 24, flags 0 (relative) at 40; the event goes to 64, the count to 128.
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 10000000))
    (loop $again
      (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
      (br $again))))
