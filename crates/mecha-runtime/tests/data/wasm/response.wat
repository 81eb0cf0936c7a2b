;; Asks, while starting, for the response to be buffered. handle_request goes on with the
;; request context 7; handle_response marks x-ctx when it gets 7 back, changes a 200 into
;; 201 and wraps the body in angle brackets.
(module
  (import "http_handler" "enable_features" (func $enable_features (param i32) (result i32)))
  (import "http_handler" "get_status_code" (func $get_status_code (result i32)))
  (import "http_handler" "set_status_code" (func $set_status_code (param i32)))
  (import "http_handler" "set_header_value"
    (func $set_header_value (param i32 i32 i32 i32 i32)))
  (import "http_handler" "read_body" (func $read_body (param i32 i32 i32) (result i64)))
  (import "http_handler" "write_body" (func $write_body (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "x-ctx")   ;; 5
  (data (i32.const 16) "7")      ;; 1
  (data (i32.const 32) "<>")

  (func (export "_initialize")
    ;; buffer_response
    (drop (call $enable_features (i32.const 2))))

  (func (export "handle_request") (result i64)
    (i64.or (i64.shl (i64.const 7) (i64.const 32)) (i64.const 1)))

  (func (export "handle_response") (param $ctx i32) (param $is_error i32)
    (local $end i32) (local $read i64)
    (if (i32.eq (local.get $ctx) (i32.const 7))
      (then
        (call $set_header_value (i32.const 1) (i32.const 0) (i32.const 5) (i32.const 16) (i32.const 1))))
    (if (i32.eq (call $get_status_code) (i32.const 200))
      (then (call $set_status_code (i32.const 201))))
    (local.set $end (i32.const 4096))
    (loop $more
      (local.set $read (call $read_body (i32.const 1) (local.get $end) (i32.const 1024)))
      (local.set $end (i32.add (local.get $end) (i32.wrap_i64 (local.get $read))))
      (br_if $more (i64.eqz (i64.shr_u (local.get $read) (i64.const 32)))))
    (call $write_body (i32.const 1) (i32.const 32) (i32.const 1))
    (call $write_body (i32.const 1) (i32.const 4096) (i32.sub (local.get $end) (i32.const 4096)))
    (call $write_body (i32.const 1) (i32.const 33) (i32.const 1))))
