//! The `http_handler` host module: the functions an http-wasm guest imports to see and change
//! the request and response (https://http-wasm.io/http-handler-abi/).
//!
//! Every function that takes a buffer follows the ABI: a value is written only when it fits
//! in `buf_limit`, and its length is returned either way so the guest can retry with more
//! room. Lists (header names and values) are NUL-terminated and returned as `count << 32 |
//! len`; `read_body` returns `eof << 32 | len`. A call the ABI forbids (a bad kind, memory
//! out of range, changing the request after it was handed on) traps the guest, which fails
//! the request with 500.

use wasmtime::{AsContextMut as _, Caller, Extern, Linker};

use super::exchange::{BodyKind, HeaderKind};
use super::{DEADLINE_TICKS, GuestFault, GuestState};

/// The import module name of the ABI.
pub(super) const MODULE: &str = "http_handler";

type Ctx<'a> = Caller<'a, GuestState>;
type HostResult<T> = wasmtime::Result<T>;

/// Adds every `http_handler` function to `linker`.
pub(super) fn define(linker: &mut Linker<GuestState>) -> HostResult<()> {
    linker.func_wrap(MODULE, "enable_features", enable_features)?;
    linker.func_wrap(MODULE, "get_config", get_config)?;
    linker.func_wrap(MODULE, "log_enabled", log_enabled)?;
    linker.func_wrap(MODULE, "log", log)?;
    linker.func_wrap(MODULE, "get_method", get_method)?;
    linker.func_wrap(MODULE, "set_method", set_method)?;
    linker.func_wrap(MODULE, "get_uri", get_uri)?;
    linker.func_wrap(MODULE, "set_uri", set_uri)?;
    linker.func_wrap(MODULE, "get_protocol_version", get_protocol_version)?;
    linker.func_wrap(MODULE, "get_source_addr", get_source_addr)?;
    linker.func_wrap(MODULE, "get_header_names", get_header_names)?;
    linker.func_wrap(MODULE, "get_header_values", get_header_values)?;
    linker.func_wrap(MODULE, "set_header_value", set_header_value)?;
    linker.func_wrap(MODULE, "add_header_value", add_header_value)?;
    linker.func_wrap(MODULE, "remove_header", remove_header)?;
    linker.func_wrap(MODULE, "read_body", read_body)?;
    linker.func_wrap(MODULE, "write_body", write_body)?;
    linker.func_wrap(MODULE, "get_status_code", get_status_code)?;
    linker.func_wrap(MODULE, "set_status_code", set_status_code)?;
    Ok(())
}

// === configuration and logging ===

/// Grants what this host supports of `features` (buffering, not trailers), for the guest as a
/// whole when called while it starts, else for the current request; returns all granted.
fn enable_features(mut c: Ctx<'_>, features: u32) -> u32 {
    let state = c.data_mut();
    match state.exchange.as_mut() {
        Some(ex) => ex.features.grant(features),
        None => state.features.grant(features),
    }
}

fn get_config(mut c: Ctx<'_>, buf: u32, limit: u32) -> HostResult<u32> {
    with_memory(&mut c, |mem, st| write_if_fits(mem, buf, limit, &st.config))
}

/// ABI log levels: -1 debug, 0 info, 1 warn, 2 error, 3 none.
fn log_enabled(_c: Ctx<'_>, level: i32) -> u32 {
    let on = match level {
        -1 => tracing::enabled!(tracing::Level::DEBUG),
        0 => tracing::enabled!(tracing::Level::INFO),
        1 => tracing::enabled!(tracing::Level::WARN),
        2 => tracing::enabled!(tracing::Level::ERROR),
        _ => false,
    };
    u32::from(on)
}

fn log(mut c: Ctx<'_>, level: i32, message: u32, len: u32) -> HostResult<()> {
    with_memory(&mut c, |mem, st| {
        let text = String::from_utf8_lossy(slice(mem, message, len)?);
        let middleware = &*st.component;
        match level {
            -1 => tracing::debug!(%middleware, "{text}"),
            0 => tracing::info!(%middleware, "{text}"),
            1 => tracing::warn!(%middleware, "{text}"),
            2 => tracing::error!(%middleware, "{text}"),
            _ => {}
        }
        Ok(())
    })
}

// === request line ===

fn get_method(mut c: Ctx<'_>, buf: u32, limit: u32) -> HostResult<u32> {
    with_memory(&mut c, |mem, st| {
        write_if_fits(mem, buf, limit, st.exchange()?.method().as_bytes())
    })
}

fn set_method(mut c: Ctx<'_>, method: u32, len: u32) -> HostResult<()> {
    with_memory(&mut c, |mem, st| {
        st.exchange()?.set_method(slice(mem, method, len)?)
    })
}

fn get_uri(mut c: Ctx<'_>, buf: u32, limit: u32) -> HostResult<u32> {
    with_memory(&mut c, |mem, st| {
        write_if_fits(mem, buf, limit, st.exchange()?.uri().as_bytes())
    })
}

fn set_uri(mut c: Ctx<'_>, uri: u32, len: u32) -> HostResult<()> {
    with_memory(&mut c, |mem, st| {
        st.exchange()?.set_uri(slice(mem, uri, len)?)
    })
}

fn get_protocol_version(mut c: Ctx<'_>, buf: u32, limit: u32) -> HostResult<u32> {
    with_memory(&mut c, |mem, st| {
        write_if_fits(
            mem,
            buf,
            limit,
            st.exchange()?.protocol_version().as_bytes(),
        )
    })
}

fn get_source_addr(mut c: Ctx<'_>, buf: u32, limit: u32) -> HostResult<u32> {
    with_memory(&mut c, |mem, st| {
        write_if_fits(mem, buf, limit, st.exchange()?.source_addr().as_bytes())
    })
}

// === headers ===

fn get_header_names(mut c: Ctx<'_>, kind: u32, buf: u32, limit: u32) -> HostResult<u64> {
    let kind = HeaderKind::from_abi(kind)?;
    with_memory(&mut c, |mem, st| {
        let list = match st.exchange()?.headers(kind) {
            Some(h) => nul_terminated(h.keys().map(|k| k.as_str().as_bytes())),
            None => NulList::default(),
        };
        write_list_if_fits(mem, buf, limit, &list)
    })
}

fn get_header_values(
    mut c: Ctx<'_>,
    kind: u32,
    name: u32,
    name_len: u32,
    buf: u32,
    limit: u32,
) -> HostResult<u64> {
    let kind = HeaderKind::from_abi(kind)?;
    with_memory(&mut c, |mem, st| {
        let name = slice(mem, name, name_len)?;
        if name.is_empty() {
            return Err(GuestFault::new("a header name cannot be empty"));
        }
        let list = match (
            st.exchange()?.headers(kind),
            http::HeaderName::from_bytes(name),
        ) {
            (Some(h), Ok(name)) => nul_terminated(h.get_all(name).iter().map(|v| v.as_bytes())),
            _ => NulList::default(),
        };
        write_list_if_fits(mem, buf, limit, &list)
    })
}

fn set_header_value(
    c: Ctx<'_>,
    kind: u32,
    name: u32,
    name_len: u32,
    value: u32,
    value_len: u32,
) -> HostResult<()> {
    put_header(c, kind, (name, name_len), (value, value_len), false)
}

fn add_header_value(
    c: Ctx<'_>,
    kind: u32,
    name: u32,
    name_len: u32,
    value: u32,
    value_len: u32,
) -> HostResult<()> {
    put_header(c, kind, (name, name_len), (value, value_len), true)
}

fn put_header(
    mut c: Ctx<'_>,
    kind: u32,
    (name, name_len): (u32, u32),
    (value, value_len): (u32, u32),
    append: bool,
) -> HostResult<()> {
    let kind = HeaderKind::from_abi(kind)?;
    with_memory(&mut c, |mem, st| {
        let name = slice(mem, name, name_len)?;
        let value = slice(mem, value, value_len)?;
        st.exchange()?.set_header(kind, name, value, append)
    })
}

fn remove_header(mut c: Ctx<'_>, kind: u32, name: u32, name_len: u32) -> HostResult<()> {
    let kind = HeaderKind::from_abi(kind)?;
    with_memory(&mut c, |mem, st| {
        st.exchange()?
            .remove_header(kind, slice(mem, name, name_len)?)
    })
}

// === bodies and status ===

fn read_body(mut c: Ctx<'_>, kind: u32, buf: u32, limit: u32) -> HostResult<u64> {
    let kind = BodyKind::from_abi(kind)?;
    if limit == 0 {
        return Err(GuestFault::new("read_body needs a buf_limit above 0").into());
    }
    let (n, eof, waited) = with_memory(&mut c, |mem, st| {
        let ex = st.exchange()?;
        let waited = kind == BodyKind::Request && ex.request_body_unread();
        let (n, eof) = ex.read_body(kind, slice_mut(mem, buf, limit)?)?;
        Ok((n, eof, waited))
    })?;
    if waited {
        // Time spent receiving the body from the client is not the guest's.
        c.as_context_mut().set_epoch_deadline(DEADLINE_TICKS);
    }
    // `n` is at most `limit`, a u32.
    Ok((u64::from(eof) << 32) | n as u64)
}

fn write_body(mut c: Ctx<'_>, kind: u32, body: u32, len: u32) -> HostResult<()> {
    let kind = BodyKind::from_abi(kind)?;
    with_memory(&mut c, |mem, st| {
        st.exchange()?.write_body(kind, slice(mem, body, len)?)
    })
}

fn get_status_code(mut c: Ctx<'_>) -> HostResult<u32> {
    Ok(u32::from(c.data_mut().exchange()?.status()))
}

fn set_status_code(mut c: Ctx<'_>, code: u32) -> HostResult<()> {
    Ok(c.data_mut().exchange()?.set_status(code)?)
}

// === guest memory ===

/// Runs `f` over the guest's exported memory and the store's state together.
pub(super) fn with_memory<R>(
    c: &mut Ctx<'_>,
    f: impl FnOnce(&mut [u8], &mut GuestState) -> Result<R, GuestFault>,
) -> HostResult<R> {
    let memory = c
        .get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or_else(|| GuestFault::new("the guest exports no memory"))?;
    let (mem, state) = memory.data_and_store_mut(c);
    Ok(f(mem, state)?)
}

fn range(mem_len: usize, ptr: u32, len: u32) -> Result<std::ops::Range<usize>, GuestFault> {
    let start = ptr as usize;
    start
        .checked_add(len as usize)
        .filter(|end| *end <= mem_len)
        .map(|end| start..end)
        .ok_or_else(|| GuestFault::new(format!("memory range {ptr}+{len} is out of bounds")))
}

/// `len` bytes of guest memory at `ptr`.
pub(super) fn slice(mem: &[u8], ptr: u32, len: u32) -> Result<&[u8], GuestFault> {
    Ok(&mem[range(mem.len(), ptr, len)?])
}

/// `len` writable bytes of guest memory at `ptr`.
pub(super) fn slice_mut(mem: &mut [u8], ptr: u32, len: u32) -> Result<&mut [u8], GuestFault> {
    let r = range(mem.len(), ptr, len)?;
    Ok(&mut mem[r])
}

fn len_u32(len: usize) -> Result<u32, GuestFault> {
    u32::try_from(len).map_err(|_| GuestFault::new("a value is larger than 4 GiB"))
}

/// Writes `value` at `buf` when it fits in `limit`; returns its length either way.
fn write_if_fits(mem: &mut [u8], buf: u32, limit: u32, value: &[u8]) -> Result<u32, GuestFault> {
    let len = len_u32(value.len())?;
    if len > 0 && len <= limit {
        slice_mut(mem, buf, len)?.copy_from_slice(value);
    }
    Ok(len)
}

/// Values, each followed by a NUL byte.
#[derive(Default)]
struct NulList {
    count: usize,
    bytes: Vec<u8>,
}

fn nul_terminated<'a>(items: impl Iterator<Item = &'a [u8]>) -> NulList {
    let mut list = NulList::default();
    for item in items {
        list.bytes.extend_from_slice(item);
        list.bytes.push(0);
        list.count += 1;
    }
    list
}

/// Writes `list` at `buf` when it fits in `limit`; returns `count << 32 | len` either way.
fn write_list_if_fits(
    mem: &mut [u8],
    buf: u32,
    limit: u32,
    list: &NulList,
) -> Result<u64, GuestFault> {
    let len = write_if_fits(mem, buf, limit, &list.bytes)?;
    Ok((u64::from(len_u32(list.count)?) << 32) | u64::from(len))
}
