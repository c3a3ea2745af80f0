;; A plain core WebAssembly module, not a component: the host must say so.
(module
  (memory (export "memory") 1)
  (func (export "plan") (result i32) i32.const 0))
