;; Bad nanoprocess: grows its memory one 64 KiB page at a time until the host refuses
;; (memory.grow returns -1), then traps. Returns nothing if growth never fails.
(module
  (memory (export "memory") 1)
  (func (export "_start") (result i32)
    (loop $grow
      (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1))
        (then unreachable))
      (br $grow))
    i32.const 0))
