;; Nanoprocess: busy-waits `ms` milliseconds of wall-clock time (3000 if `ms` <= 0)
;; by polling `platform.now`, then returns the milliseconds actually waited.
;; Used to show that a wall-clock deadline stops a guest that has fuel left.
(module
  (import "platform" "now" (func $now (result f64)))
  (func (export "_start") (param $ms i32) (result f64)
    (local $start f64)
    (local $wait f64)
    (local.set $wait
      (if (result f64) (i32.le_s (local.get $ms) (i32.const 0))
        (then (f64.const 3000))
        (else (f64.convert_i32_s (local.get $ms)))))
    (local.set $start (call $now))
    (loop $spin
      (br_if $spin (f64.lt (f64.sub (call $now) (local.get $start)) (local.get $wait))))
    (f64.sub (call $now) (local.get $start))))
