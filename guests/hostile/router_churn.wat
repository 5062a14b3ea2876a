;; HOSTILE CASE router-churn
;; What:     handle-http creates and drops a router in an endless loop ([constructor]router,
;;           [resource-drop]router): cheap host calls that hold nothing once dropped.
;; Kind:     http (the http-function world of wit/; a plain core module)
;; Deploy:   PUT /_admin/functions/router-churn?timeout-ms=100
;; Call:     GET /router-churn/x
;; EXPECTED: 504 at its deadline ("timeout-ms=100"), counted as timeout: a dropped handle
;;           returns its charge to the memory budget, so churning handles holds nothing and the
;;           loop runs until the deadline (checked at every host call).
;; The manifest cases.json lists the same facts for the tests and the soak.
(module
  (import "uniwasm:platform/http-server@0.1.0" "[resource-drop]router" (func $router_drop (param i32)))
  (import "uniwasm:platform/http-server@0.1.0" "[constructor]router" (func $router_new (result i32)))
  (import "uniwasm:platform/http-server@0.1.0" "[method]router.get"
    (func $router_get (param i32 i32 i32 i32 i32) (result i32)))
  (import "uniwasm:platform/http-server@0.1.0" "serve" (func $serve (param i32 i32 i32 i32)))
  (memory (export "memory") 1)
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
  ;; on-server-init: routes GET /x to handler "h" and serves; serve's result (ok) lands at 512,
  ;; which is also where on-server-init's own result<_, http-error> is read from.
  (func (export "on-server-init") (result i32)
    (call $serve (i32.const 48) (i32.const 4)
      (call $router_get (call $router_new) (i32.const 16) (i32.const 2) (i32.const 32) (i32.const 1))
      (i32.const 512))
    (i32.const 512))
  ;; handle-http(handler: string, req: request) -> result<response, http-error>: 12 flat
  ;; parameters; the result is returned by pointer. Layout of the result at 600 (canonical ABI):
  ;;   600 result discriminant (0 ok, 1 err)   604 response.status: u16
  ;;   608 headers: option discriminant        612 headers ptr    616 headers len
  ;;   620 body: option discriminant           624 body ptr       628 body len
  ;; For an http-error, 604 is its discriminant (3 = status-error) and 608 its payload.
  (func (export "handle-http")
    (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (loop $spin
      (call $router_drop (call $router_new))
      (br $spin))
    unreachable))
