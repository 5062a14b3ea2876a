;; HOSTILE CASE nano-fuel
;; What:     _start loops forever without calling the host.
;; Kind:     nanoprocess (a module whose _start maps numbers to numbers)
;; Deploy:   PUT /_admin/functions/nano-fuel?fuel=1000000
;; Call:     GET /exec/nano-fuel
;; EXPECTED: 504 naming the fuel limit ("out of fuel (fuel=1000000)"), counted as a timeout.
;; The manifest cases.json lists the same facts for the tests and the soak.
(module
  (func (export "_start") (result i32)
    (loop $forever (br $forever))
    (i32.const 0)))
