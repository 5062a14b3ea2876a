;; Bad WASI command: hands fd_write an iovec whose buffer lies far outside linear memory.
;; The host must trap this invocation instead of reading out of bounds.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 0x7fff0000))
    (i32.store (i32.const 4) (i32.const 100))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
