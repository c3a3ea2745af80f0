;; A component that exports the rules interface of another contract version
;; (dealbridge:rules@0.2.0): the host must report a version mismatch.
(component
  (core module $m
    (func (export "describe") (result i32) i32.const 0))
  (core instance $i (instantiate $m))
  (func $describe (result u32) (canon lift (core func $i "describe")))
  (instance $rules (export "describe" (func $describe)))
  (export "dealbridge:rules/rules@0.2.0" (instance $rules)))
