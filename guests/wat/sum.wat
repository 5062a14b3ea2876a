;; Nanoprocess: `_start(a, b)` returns a + b (args=5,2 gives 7).
(module
  (func (export "_start") (param $a i32) (param $b i32) (result i32)
    local.get $a
    local.get $b
    i32.add))
