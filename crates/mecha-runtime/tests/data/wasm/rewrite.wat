;; Rewrites the request URI /v1.0/hi?name=panda to /v1.0/hello?name=teddy (the example of
;; Dapr's Wasm middleware documentation); any other URI passes unchanged.
(module
  (import "http_handler" "get_uri" (func $get_uri (param i32 i32) (result i32)))
  (import "http_handler" "set_uri" (func $set_uri (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "/v1.0/hi?name=panda")
  (data (i32.const 64) "/v1.0/hello?name=teddy")

  ;; 1 when the n bytes at a and b are equal.
  (func $same (param $a i32) (param $b i32) (param $n i32) (result i32)
    (loop $each
      (if (i32.eqz (local.get $n)) (then (return (i32.const 1))))
      (if (i32.ne (i32.load8_u (local.get $a)) (i32.load8_u (local.get $b)))
        (then (return (i32.const 0))))
      (local.set $a (i32.add (local.get $a) (i32.const 1)))
      (local.set $b (i32.add (local.get $b) (i32.const 1)))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br $each))
    (unreachable))

  (func (export "handle_request") (result i64)
    (local $len i32)
    (local.set $len (call $get_uri (i32.const 1024) (i32.const 256)))
    (if (i32.eq (local.get $len) (i32.const 19))
      (then
        (if (call $same (i32.const 1024) (i32.const 0) (i32.const 19))
          (then (call $set_uri (i32.const 64) (i32.const 22))))))
    (i64.const 1))

  (func (export "handle_response") (param i32 i32)))
