;; A component that exports the rules interface by its right name, with the
;; right function names, but none with the contract's type: each takes and
;; returns nothing. It loads (names are all that loading can see); its first
;; instance must be refused with an error that names the export whose type is
;; wrong, and nothing is ever called.
(component
  (core module $m
    (func (export "nothing")))
  (core instance $i (instantiate $m))
  (func $nothing (canon lift (core func $i "nothing")))
  (instance $rules
    (export "describe" (func $nothing))
    (export "condition" (func $nothing))
    (export "plan" (func $nothing)))
  (export "dealbridge:rules/rules@0.1.0" (instance $rules)))
