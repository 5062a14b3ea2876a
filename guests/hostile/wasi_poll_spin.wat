;; HOSTILE CASE wasi-poll-spin
;; What:     _start calls poll_oneoff with 40,000 subscriptions (clock, timeout 0) in an endless
;;           loop: each call makes the host read 40,000 records, for a few instructions of fuel.
;; Kind:     wasi (a WASI preview1 command: stdin = input, stdout = body)
;; Deploy:   PUT /_admin/functions/wasi-poll-spin?timeout-ms=100
;; Call:     GET /api/wasi-poll-spin/input
;; EXPECTED: 504 naming the deadline ("timeout-ms=100") within 100 ms + slack (< 2 s natively).
;; The manifest cases.json lists the same facts for the tests and the soak.
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  ;; 40,000 × 48-byte subscriptions at 0 (zeroes: realtime clock, relative timeout 0),
  ;; 40,000 × 32-byte events at 2,000,000, the event count at 3,300,000.
  (memory (export "memory") 52)
  (func (export "_start")
    (loop $again
      (drop (call $poll (i32.const 0) (i32.const 2000000) (i32.const 40000) (i32.const 3300000)))
      (br $again))))
