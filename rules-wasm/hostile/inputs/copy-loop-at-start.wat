;; A component of the rules world whose instantiation never ends: its core
;; module's start function copies 8 MiB of its linear memory over and over, a
;; handful of instructions per 8 MiB. The host must meter bulk memory work by
;; the byte (wasmtime charges `memory.copy` one unit of fuel per byte), so that
;; the fuel limit bounds such a guest's CPU time as it bounds any other loop's.
;; (Its exports are never reached.)
(component
  (core module $m
    (memory 256)
    (func $copy
      (loop $again
        (memory.copy (i32.const 0) (i32.const 8388608) (i32.const 8388608))
        (br $again)))
    (start $copy)
    (func (export "unreached")))
  (core instance $i (instantiate $m))
  (func $unreached (canon lift (core func $i "unreached")))
  (instance $rules
    (export "describe" (func $unreached))
    (export "condition" (func $unreached))
    (export "plan" (func $unreached)))
  (export "dealbridge:rules/rules@0.1.0" (instance $rules)))
