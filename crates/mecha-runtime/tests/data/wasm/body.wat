;; Reads the whole request body, 7 bytes at a time, and hands on "wasm saw: " followed by
;; it, written in two calls.
(module
  (import "http_handler" "read_body" (func $read_body (param i32 i32 i32) (result i64)))
  (import "http_handler" "write_body" (func $write_body (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "wasm saw: ")

  (func (export "handle_request") (result i64)
    (local $end i32) (local $read i64)
    (local.set $end (i32.const 4096))
    (loop $more
      (local.set $read (call $read_body (i32.const 0) (local.get $end) (i32.const 7)))
      (local.set $end (i32.add (local.get $end) (i32.wrap_i64 (local.get $read))))
      ;; Until the EOF bit (the high half) is set.
      (br_if $more (i64.eqz (i64.shr_u (local.get $read) (i64.const 32)))))
    (call $write_body (i32.const 0) (i32.const 0) (i32.const 10))
    (call $write_body (i32.const 0) (i32.const 4096) (i32.sub (local.get $end) (i32.const 4096)))
    (i64.const 1))

  (func (export "handle_response") (param i32 i32)))
