;; HOSTILE CASE nano-huge-memory
;; What:     the module declares an initial memory of 65,536 pages (4 GiB): instantiating it at all
;;           would take that much.
;; Kind:     nanoprocess (a module whose _start maps numbers to numbers)
;; Deploy:   PUT /_admin/functions/nano-huge-memory (no limits: max-memory 4 MiB)
;; Call:     GET /exec/nano-huge-memory
;; EXPECTED: 500 naming the memory limit ("max-memory=4194304"); the guest never runs.
;; The manifest cases.json lists the same facts for the tests and the soak.
(module
  (memory (export "memory") 65536)
  (func (export "_start") (result i32)
    (i32.const 1)))
