;; Bad nanoprocess: `_start(n)` returns 100 / n, so n = 0 traps (integer divide by zero),
;; and n < 0 hits `unreachable`.
(module
  (func (export "_start") (param $n i32) (result i32)
    (if (i32.lt_s (local.get $n) (i32.const 0))
      (then unreachable))
    (i32.div_s (i32.const 100) (local.get $n))))
