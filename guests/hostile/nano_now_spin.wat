;; HOSTILE CASE nano-now-spin
;; What:     _start calls the host's platform.now in an endless loop.
;; Kind:     nanoprocess (a module whose _start maps numbers to numbers)
;; Deploy:   PUT /_admin/functions/nano-now-spin?timeout-ms=100
;; Call:     GET /exec/nano-now-spin
;; EXPECTED: 504 naming the deadline ("timeout-ms=100") within 100 ms + slack (< 2 s natively).
;; The manifest cases.json lists the same facts for the tests and the soak.
(module
  (import "platform" "now" (func $now (result f64)))
  (func (export "_start") (result i32)
    (loop $forever
      (drop (call $now))
      (br $forever))
    (i32.const 0)))
