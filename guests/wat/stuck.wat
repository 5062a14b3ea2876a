;; Nanoprocess that never returns: only fuel or the deadline stops it.
(module
  (func (export "_start") (result i32)
    (loop $forever
      (br $forever))
    i32.const 0))
