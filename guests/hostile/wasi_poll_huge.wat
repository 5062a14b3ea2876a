;; HOSTILE CASE wasi-poll-huge
;; What:     _start calls poll_oneoff with 4,294,967,295 subscriptions (about 200 GB of records) in
;;           its 64 KiB memory.
;; Kind:     wasi (a WASI preview1 command: stdin = input, stdout = body)
;; Deploy:   PUT /_admin/functions/wasi-poll-huge (no limits)
;; Call:     GET /api/wasi-poll-huge/input
;; EXPECTED: 500 "outside linear memory": the count is checked against memory before anything is
;;           read or allocated.
;; The manifest cases.json lists the same facts for the tests and the soak.
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $poll (i32.const 0) (i32.const 0) (i32.const -1) (i32.const 16)))))
