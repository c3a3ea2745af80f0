;; A component of the rules world whose instantiation never ends: its core
;; module's start function spins. It imports nothing, so the host may start it
;; without a fiber; the deadline must still stop it, and it must not hold the
;; caller's thread meanwhile. (Its exports are never reached.)
(component
  (core module $m
    (func $spin (loop $again (br $again)))
    (start $spin)
    (func (export "unreached")))
  (core instance $i (instantiate $m))
  (func $unreached (canon lift (core func $i "unreached")))
  (instance $rules
    (export "describe" (func $unreached))
    (export "condition" (func $unreached))
    (export "plan" (func $unreached)))
  (export "dealbridge:rules/rules@0.1.0" (instance $rules)))
