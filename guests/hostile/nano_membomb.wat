;; HOSTILE CASE nano-membomb
;; What:     _start grows linear memory 16 pages (1 MiB) at a time until the host refuses, then
;;           traps.
;; Kind:     nanoprocess (a module whose _start maps numbers to numbers)
;; Deploy:   PUT /_admin/functions/nano-membomb (no limits: max-memory 4 MiB)
;; Call:     GET /exec/nano-membomb
;; EXPECTED: 500 naming the memory limit ("max-memory=4194304"), counted as memory.
;; The manifest cases.json lists the same facts for the tests and the soak.
(module
  (memory (export "memory") 1)
  (func (export "_start") (result i32)
    (loop $grow
      (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    unreachable))
