;; A guest built for WASI: prints a line while starting, and on each request checks that
;; random_get and clock_time_get work and that an unsupported WASI call answers ENOSYS (52);
;; sets x-wasi: ok when all hold.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get"
    (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_readdir"
    (func $fd_readdir (param i32 i32 i32 i64 i32) (result i32)))
  (import "http_handler" "set_header_value"
    (func $set_header_value (param i32 i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "hello from the guest\n")  ;; 21
  (data (i32.const 32) "x-wasi")                 ;; 6
  (data (i32.const 48) "ok")                     ;; 2

  (func (export "_start")
    ;; One iovec at 256: {ptr 0, len 21}; bytes written land at 264.
    (i32.store (i32.const 256) (i32.const 0))
    (i32.store (i32.const 260) (i32.const 21))
    (if (call $fd_write (i32.const 1) (i32.const 256) (i32.const 1) (i32.const 264))
      (then (unreachable)))
    (if (i32.ne (i32.load (i32.const 264)) (i32.const 21)) (then (unreachable))))

  (func (export "handle_request") (result i64)
    (local $ok i32)
    (local.set $ok (i32.const 1))
    (if (call $random_get (i32.const 512) (i32.const 16)) (then (local.set $ok (i32.const 0))))
    (if (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 600))
      (then (local.set $ok (i32.const 0))))
    (if (i64.eqz (i64.load (i32.const 600))) (then (local.set $ok (i32.const 0))))
    (if (call $args_sizes_get (i32.const 700) (i32.const 704)) (then (local.set $ok (i32.const 0))))
    (if (i32.load (i32.const 700)) (then (local.set $ok (i32.const 0))))
    (if (i32.ne (call $fd_readdir (i32.const 3) (i32.const 800) (i32.const 64) (i64.const 0) (i32.const 900))
                (i32.const 52))
      (then (local.set $ok (i32.const 0))))
    (if (local.get $ok)
      (then
        (call $set_header_value (i32.const 0) (i32.const 32) (i32.const 6) (i32.const 48) (i32.const 2))))
    (i64.const 1))

  (func (export "handle_response") (param i32 i32)))
