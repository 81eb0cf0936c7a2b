//! The few `wasi_snapshot_preview1` functions a guest built for WASI needs to start and run
//! (TinyGo's and Rust's `wasm32-wasip1` runtimes import them), with no file system, network
//! or environment: no arguments and no environment variables, real clocks, random bytes from
//! the operating system, standard output and error sent to the log at debug level (as Dapr
//! does), `proc_exit` ending the call. Any other WASI function the module imports answers
//! `ENOSYS` (or traps, when its signature has no errno result).

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ring::rand::SecureRandom as _;
use wasmtime::{Caller, ExternType, Linker, Module, Val, ValType};

use super::host::{slice, slice_mut, with_memory};
use super::{GuestFault, GuestState};

/// The import module name of WASI preview 1.
pub(super) const MODULE: &str = "wasi_snapshot_preview1";

const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EINVAL: i32 = 28;
const ENOSYS: i32 = 52;

/// Longest line of guest output kept before it is logged anyway.
const MAX_LINE: usize = 16 << 10;

type Ctx<'a> = Caller<'a, GuestState>;
type HostResult<T> = wasmtime::Result<T>;

/// What the guest printed on standard output and error, logged a line at a time.
#[derive(Default)]
pub(super) struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Output {
    fn write(&mut self, component: &str, fd: u32, bytes: &[u8]) {
        let (stream, buf) = if fd == 1 {
            ("stdout", &mut self.stdout)
        } else {
            ("stderr", &mut self.stderr)
        };
        buf.extend_from_slice(bytes);
        while let Some(end) = buf
            .iter()
            .position(|b| *b == b'\n')
            .or((buf.len() > MAX_LINE).then_some(MAX_LINE))
        {
            let line: Vec<u8> = buf.drain(..=end.min(buf.len() - 1)).collect();
            let text = String::from_utf8_lossy(&line);
            tracing::debug!(middleware = component, stream, "{}", text.trim_end());
        }
    }
}

/// Adds the WASI functions `module` imports to `linker`.
pub(super) fn define(linker: &mut Linker<GuestState>, module: &Module) -> HostResult<()> {
    let engine = module.engine();
    for import in module.imports().filter(|i| i.module() == MODULE) {
        let ExternType::Func(ty) = import.ty() else {
            continue;
        };
        let name = import.name();
        match name {
            "args_sizes_get" | "environ_sizes_get" => {
                linker.func_wrap(MODULE, name, sizes_get)?;
            }
            "args_get" | "environ_get" => {
                linker.func_wrap(MODULE, name, |_: Ctx<'_>, _: u32, _: u32| ESUCCESS)?;
            }
            "clock_res_get" => {
                linker.func_wrap(MODULE, name, clock_res_get)?;
            }
            "clock_time_get" => {
                linker.func_wrap(MODULE, name, clock_time_get)?;
            }
            "random_get" => {
                linker.func_wrap(MODULE, name, random_get)?;
            }
            "fd_write" => {
                linker.func_wrap(MODULE, name, fd_write)?;
            }
            "fd_fdstat_get" => {
                linker.func_wrap(MODULE, name, fd_fdstat_get)?;
            }
            "fd_prestat_get" | "fd_prestat_dir_name" => {
                // No preopened directories: the first descriptor asked for is not one.
                linker.func_wrap(MODULE, name, |_: Ctx<'_>, _: u32, _: u32| EBADF)?;
            }
            "sched_yield" => {
                linker.func_wrap(MODULE, name, |_: Ctx<'_>| ESUCCESS)?;
            }
            "proc_exit" => {
                linker.func_wrap(MODULE, name, |_: Ctx<'_>, code: i32| -> HostResult<()> {
                    Err(GuestFault::Exit(code).into())
                })?;
            }
            _ => {
                let errno =
                    ty.results().len() == 1 && ty.results().all(|r| matches!(r, ValType::I32));
                let unsupported = format!("WASI function {name} is not supported");
                let ty = wasmtime::FuncType::new(engine, ty.params(), ty.results());
                linker.func_new(MODULE, name, ty, move |_, _, results| {
                    if errno && let Some(r) = results.first_mut() {
                        *r = Val::I32(ENOSYS);
                        return Ok(());
                    }
                    Err(GuestFault::new(unsupported.clone()).into())
                })?;
            }
        }
    }
    Ok(())
}

/// `args_sizes_get` / `environ_sizes_get`: none, and no bytes.
fn sizes_get(mut c: Ctx<'_>, count: u32, size: u32) -> HostResult<i32> {
    with_memory(&mut c, |mem, _| {
        slice_mut(mem, count, 4)?.fill(0);
        slice_mut(mem, size, 4)?.fill(0);
        Ok(ESUCCESS)
    })
}

fn clock_res_get(mut c: Ctx<'_>, id: u32, out: u32) -> HostResult<i32> {
    if id > 3 {
        return Ok(EINVAL);
    }
    with_memory(&mut c, |mem, _| {
        slice_mut(mem, out, 8)?.copy_from_slice(&1_000u64.to_le_bytes());
        Ok(ESUCCESS)
    })
}

/// Clock 0 is the wall clock (nanoseconds since 1970); the others count from a fixed
/// instant of this process.
fn clock_time_get(mut c: Ctx<'_>, id: u32, _precision: u64, out: u32) -> HostResult<i32> {
    static START: OnceLock<Instant> = OnceLock::new();
    let nanos = match id {
        0 => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
        1..=3 => START.get_or_init(Instant::now).elapsed().as_nanos(),
        _ => return Ok(EINVAL),
    };
    let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
    with_memory(&mut c, |mem, _| {
        slice_mut(mem, out, 8)?.copy_from_slice(&nanos.to_le_bytes());
        Ok(ESUCCESS)
    })
}

fn random_get(mut c: Ctx<'_>, buf: u32, len: u32) -> HostResult<i32> {
    with_memory(&mut c, |mem, _| {
        ring::rand::SystemRandom::new()
            .fill(slice_mut(mem, buf, len)?)
            .map_err(|_| GuestFault::new("the system's random source failed"))?;
        Ok(ESUCCESS)
    })
}

/// Standard output and error go to the log; other descriptors do not exist.
fn fd_write(mut c: Ctx<'_>, fd: u32, iovs: u32, iovs_len: u32, written: u32) -> HostResult<i32> {
    if fd != 1 && fd != 2 {
        return Ok(EBADF);
    }
    with_memory(&mut c, |mem, st| {
        let vectors = slice(mem, iovs, iovs_len.saturating_mul(8))?;
        let mut bytes = Vec::new();
        for v in vectors.chunks_exact(8) {
            let ptr = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
            let len = u32::from_le_bytes([v[4], v[5], v[6], v[7]]);
            bytes.extend_from_slice(slice(mem, ptr, len)?);
        }
        let n = u32::try_from(bytes.len())
            .map_err(|_| GuestFault::new("fd_write of more than 4 GiB"))?;
        st.output.write(&st.component, fd, &bytes);
        slice_mut(mem, written, 4)?.copy_from_slice(&n.to_le_bytes());
        Ok(ESUCCESS)
    })
}

/// Descriptors 0-2 are character devices; there are no others.
fn fd_fdstat_get(mut c: Ctx<'_>, fd: u32, out: u32) -> HostResult<i32> {
    if fd > 2 {
        return Ok(EBADF);
    }
    with_memory(&mut c, |mem, _| {
        // fs_filetype (u8) = character_device, then flags (u16) and rights (2 × u64).
        let stat = slice_mut(mem, out, 24)?;
        stat.fill(0);
        stat[0] = 2;
        Ok(ESUCCESS)
    })
}
