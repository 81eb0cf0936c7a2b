;; Hands its guestConfig on in the request header x-guest-config, and logs that it did.
(module
  (import "http_handler" "get_config" (func $get_config (param i32 i32) (result i32)))
  (import "http_handler" "set_header_value"
    (func $set_header_value (param i32 i32 i32 i32 i32)))
  (import "http_handler" "log_enabled" (func $log_enabled (param i32) (result i32)))
  (import "http_handler" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "x-guest-config")      ;; 14
  (data (i32.const 16) "guest config read")  ;; 17

  (func (export "handle_request") (result i64)
    (local $len i32)
    (local.set $len (call $get_config (i32.const 1024) (i32.const 4096)))
    (if (i32.gt_u (local.get $len) (i32.const 4096)) (then (unreachable)))
    (call $set_header_value (i32.const 0) (i32.const 0) (i32.const 14) (i32.const 1024) (local.get $len))
    (if (call $log_enabled (i32.const 0))
      (then (call $log (i32.const 0) (i32.const 16) (i32.const 17))))
    (i64.const 1))

  (func (export "handle_response") (param i32 i32)))
