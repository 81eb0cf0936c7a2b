;; Changes the request head: lists the request header names (comma-separated) in x-names,
;; adds x-added, replaces x-replaced, removes x-secret, counts the values of x-multi into
;; x-multi-count (when there are two), and turns the method into PATCH.
(module
  (import "http_handler" "get_header_names"
    (func $get_header_names (param i32 i32 i32) (result i64)))
  (import "http_handler" "get_header_values"
    (func $get_header_values (param i32 i32 i32 i32 i32) (result i64)))
  (import "http_handler" "set_header_value"
    (func $set_header_value (param i32 i32 i32 i32 i32)))
  (import "http_handler" "add_header_value"
    (func $add_header_value (param i32 i32 i32 i32 i32)))
  (import "http_handler" "remove_header" (func $remove_header (param i32 i32 i32)))
  (import "http_handler" "set_method" (func $set_method (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "x-names")        ;; 7
  (data (i32.const 16) "x-added")       ;; 7
  (data (i32.const 32) "yes")           ;; 3
  (data (i32.const 48) "x-replaced")    ;; 10
  (data (i32.const 64) "new")           ;; 3
  (data (i32.const 80) "x-secret")      ;; 8
  (data (i32.const 96) "x-multi")       ;; 7
  (data (i32.const 112) "x-multi-count");; 13
  (data (i32.const 128) "2")            ;; 1
  (data (i32.const 144) "PATCH")        ;; 5

  (func (export "handle_request") (result i64)
    (local $names i64) (local $len i32) (local $i i32)
    ;; x-names: the NUL-terminated names with each NUL but the last turned into a comma.
    (local.set $names (call $get_header_names (i32.const 0) (i32.const 1024) (i32.const 2048)))
    (local.set $len (i32.wrap_i64 (local.get $names)))
    (if (i32.gt_u (local.get $len) (i32.const 0))
      (then
        (local.set $i (i32.const 0))
        (loop $each
          (if (i32.eqz (i32.load8_u (i32.add (i32.const 1024) (local.get $i))))
            (then (i32.store8 (i32.add (i32.const 1024) (local.get $i)) (i32.const 44))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $each (i32.lt_u (local.get $i) (local.get $len))))
        (call $set_header_value (i32.const 0) (i32.const 0) (i32.const 7)
          (i32.const 1024) (i32.sub (local.get $len) (i32.const 1)))))
    (call $add_header_value (i32.const 0) (i32.const 16) (i32.const 7) (i32.const 32) (i32.const 3))
    (call $set_header_value (i32.const 0) (i32.const 48) (i32.const 10) (i32.const 64) (i32.const 3))
    (call $remove_header (i32.const 0) (i32.const 80) (i32.const 8))
    ;; x-multi has two values: count 2 and "a\0b\0" (4 bytes).
    (if (i64.eq
          (call $get_header_values (i32.const 0) (i32.const 96) (i32.const 7) (i32.const 4096) (i32.const 64))
          (i64.or (i64.shl (i64.const 2) (i64.const 32)) (i64.const 4)))
      (then
        (call $set_header_value (i32.const 0) (i32.const 112) (i32.const 13) (i32.const 128) (i32.const 1))))
    (call $set_method (i32.const 144) (i32.const 5))
    (i64.const 1))

  (func (export "handle_response") (param i32 i32)))
