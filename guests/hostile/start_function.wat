;; HOSTILE CASE start-function
;; What:     the module has a start function that loops forever: it would run while the module is
;;           instantiated, outside any export call.
;; Kind:     nanoprocess (a module whose _start maps numbers to numbers)
;; Deploy:   PUT /_admin/functions/start-function (no limits)
;; Call:     none: the deploy itself must fail
;; EXPECTED: DEPLOY refused with 400 (start functions are not allowed), at once.
;; The manifest cases.json lists the same facts for the tests and the soak.
(module
  (func $forever (loop $l (br $l)))
  (start $forever)
  (func (export "_start") (result i32)
    (i32.const 1)))
