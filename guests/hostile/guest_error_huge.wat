;; HOSTILE CASE guest-error-huge
;; What:     handle-http fails with http-error unexpected-error whose message is 1.8 MiB of
;;           control characters (each one a 6-byte JSON escape): the error body would be 10.8 MB,
;;           built outside the request's memory reservation, with max-body=1 MiB.
;; Kind:     http (the http-function world of wit/; a plain core module)
;; Deploy:   PUT /_admin/functions/guest-error-huge (no limits: max-memory=4m, max-body=1m)
;; Call:     GET /guest-error-huge/x
;; EXPECTED: 500 "returned an error: unexpected error" quoting about 1 KiB of the message, cut
;;           with "…[truncated]" and escaped (crates/platform/tests/bounded_requests.rs checks sizes).
;; The manifest cases.json lists the same facts for the tests and the soak.
(module
  (import "uniwasm:platform/http-server@0.1.0" "[constructor]router" (func $router_new (result i32)))
  (import "uniwasm:platform/http-server@0.1.0" "[method]router.get"
    (func $router_get (param i32 i32 i32 i32 i32) (result i32)))
  (import "uniwasm:platform/http-server@0.1.0" "serve" (func $serve (param i32 i32 i32 i32)))
  (memory (export "memory") 32)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 16) "/x")
  (data (i32.const 32) "h")
  (data (i32.const 48) "addr")
  ;; cabi_realloc: a bump allocator from 4096; nothing is ever freed.
  (func $bump (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get 2))))
    (global.set $heap (i32.add (local.get $p) (local.get 3)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.add (i32.div_u (local.get 3) (i32.const 65536)) (i32.const 1))))))
    (local.get $p))
  (export "cabi_realloc" (func $bump))
  ;; on-server-init: routes GET /x to handler "h" and serves.
  (func (export "on-server-init") (result i32)
    (call $serve (i32.const 48) (i32.const 4)
      (call $router_get (call $router_new) (i32.const 16) (i32.const 2) (i32.const 32) (i32.const 1))
      (i32.const 512))
    (i32.const 512))
  ;; handle-http: result at 600 is err (1), http-error unexpected-error (4) at 604, its string
  ;; (pointer, length) at 608: 1.8 MiB of 0x01 from 128 KiB.
  (func (export "handle-http")
    (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (memory.fill (i32.const 131072) (i32.const 1) (i32.const 1887436))
    (i32.store8 (i32.const 600) (i32.const 1))
    (i32.store8 (i32.const 604) (i32.const 4))
    (i32.store (i32.const 608) (i32.const 131072))
    (i32.store (i32.const 612) (i32.const 1887436))
    (i32.const 600)))
