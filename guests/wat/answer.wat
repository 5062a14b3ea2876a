;; Nanoprocess: `_start` returns 42.
(module
  (func (export "_start") (result i32)
    i32.const 42))
