;; A valid component of another world entirely: it exports no dealbridge:rules
;; interface, so the host must say that it does not fit the `plugin` world.
(component
  (core module $m
    (func (export "run") (result i32) i32.const 0))
  (core instance $i (instantiate $m))
  (func $run (result u32) (canon lift (core func $i "run")))
  (instance $api (export "run" (func $run)))
  (export "example:other/api@1.0.0" (instance $api)))
