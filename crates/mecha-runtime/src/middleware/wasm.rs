//! `middleware.http.wasm`: HTTP middleware written as a WebAssembly guest of the http-wasm
//! handler ABI (https://http-wasm.io/http-handler-abi/), run on wasmtime. This is the ABI
//! Dapr's Wasm middleware hosts, so guests built for Dapr (TinyGo's
//! `http-wasm-guest-tinygo`, Rust's `http-wasm-guest`, hand-written WAT) run unchanged.
//!
//! Metadata (Dapr's): `url` (required) is where the module is: `file://<path>` (relative to
//! the working directory unless it starts with `/`), `http://…` or `https://…`; the module
//! may be binary or text (WAT). `guestConfig` (optional) is handed, byte for byte, to the
//! guest's `get_config`.
//!
//! The module is read and compiled once, when the pipeline is built, and refused then, with
//! the reason, when it cannot be read, does not compile, imports anything but `http_handler`
//! and `wasi_snapshot_preview1`, lacks the `handle_request: () -> i64`,
//! `handle_response: (i32, i32) -> ()` or `memory` exports, or fails to start.
//!
//! Per request, a guest instance is taken from a small pool (or started: its `_initialize`
//! or `_start` runs first) and `handle_request` runs on a blocking thread, so the async
//! runtime never waits on guest code. An instance serves one request at a time and keeps its
//! memory between requests, as with Dapr; one that trapped is dropped, not reused. The
//! result's low 32 bits say whether to go on: 0 sends the status, headers and body the guest
//! wrote (200 and empty unless set) and the later handlers never run; anything else hands
//! on the possibly changed method, URI (path and query), headers and body. Then
//! `handle_response(ctx, is_error)` runs with the result's high 32 bits as `ctx`, before
//! the response goes back: it may read and change the status and headers, and replace the
//! body; reading the downstream body needs the `buffer_response` feature (the body is then
//! buffered up to the body limit; a larger one fails the request with 500). The request
//! body is read into memory (up to the body limit, else 413) only when the guest reads it;
//! without `buffer_request` what the guest read is consumed, as in Dapr.
//!
//! Limits (Mecha's own; Dapr sets none and advises limiting concurrency): each guest call
//! may run for [`GUEST_TIME_LIMIT`] (2 s) of wall time, time spent receiving the request body
//! excepted, and its memory may grow to [`MEMORY_LIMIT`] (128 MiB); a guest that runs over,
//! traps, or breaks the ABI fails the request with 500 and is dropped.
//!
//! Not supported: trailers (`enable_features` never grants the trailers feature; trailer
//! reads find none and writes trap), reading the request body in `handle_response`, and
//! WASI beyond what [`wasi`] lists (no files, sockets, arguments or environment).

mod exchange;
mod host;
mod load;
#[cfg(test)]
mod tests;
mod wasi;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use http::StatusCode;
use tokio::runtime::Handle;
use wasmtime::{
    Config, Engine, ExternType, InstancePre, Linker, Module, Store, StoreLimits,
    StoreLimitsBuilder, Trap, TypedFunc, ValType,
};

use self::exchange::Exchange;
use super::{Flow, plain};

/// How long one guest call (start, `handle_request`, `handle_response`) may run.
pub(super) const GUEST_TIME_LIMIT: Duration = Duration::from_secs(2);
/// How often the engine's epoch advances; the time limit is counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// [`GUEST_TIME_LIMIT`] in [`EPOCH_TICK`]s.
const DEADLINE_TICKS: u64 = (GUEST_TIME_LIMIT.as_millis() / EPOCH_TICK.as_millis()) as u64;
/// How large a guest's linear memory may grow.
pub(super) const MEMORY_LIMIT: usize = 128 << 20;
/// How many idle guest instances are kept for later requests.
const MAX_IDLE: usize = 16;

/// A loaded Wasm middleware.
pub(super) struct Wasm {
    guests: Arc<Guests>,
}

/// The compiled guest and its idle instances.
struct Guests {
    component: Arc<str>,
    config: Arc<[u8]>,
    pre: InstancePre<GuestState>,
    idle: Mutex<Vec<Guest>>,
}

/// One guest instance.
struct Guest {
    store: Store<GuestState>,
    handle_request: TypedFunc<(), i64>,
    handle_response: TypedFunc<(i32, i32), ()>,
}

/// What the host functions see of an instance.
struct GuestState {
    limits: StoreLimits,
    component: Arc<str>,
    config: Arc<[u8]>,
    /// Features granted while the guest started; each request begins with them.
    features: Features,
    /// The request being handled, if any.
    exchange: Option<Exchange>,
    output: wasi::Output,
}

impl GuestState {
    fn exchange(&mut self) -> Result<&mut Exchange, GuestFault> {
        self.exchange
            .as_mut()
            .ok_or_else(|| GuestFault::new("no request is being handled (the guest is starting)"))
    }
}

/// The http-wasm features a guest asked for that this host grants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Features(u32);

impl Features {
    const BUFFER_REQUEST: u32 = 1;
    const BUFFER_RESPONSE: u32 = 2;
    /// Trailers (4) are not granted.
    const SUPPORTED: u32 = Self::BUFFER_REQUEST | Self::BUFFER_RESPONSE;

    /// Adds what is supported of `asked`; returns everything granted so far.
    fn grant(&mut self, asked: u32) -> u32 {
        self.0 |= asked & Self::SUPPORTED;
        self.0
    }

    fn buffer_request(self) -> bool {
        self.0 & Self::BUFFER_REQUEST != 0
    }

    fn buffer_response(self) -> bool {
        self.0 & Self::BUFFER_RESPONSE != 0
    }
}

/// Why a host function stopped the guest.
#[derive(Debug, thiserror::Error)]
enum GuestFault {
    /// A call the ABI does not allow.
    #[error("{0}")]
    Abi(String),
    /// The request body is over the body limit or could not be received.
    #[error("the request body is too large or unreadable: {0}")]
    BodyTooLarge(String),
    /// The guest called WASI `proc_exit`.
    #[error("the guest exited with code {0}")]
    Exit(i32),
}

impl GuestFault {
    fn new(reason: impl Into<String>) -> GuestFault {
        GuestFault::Abi(reason.into())
    }
}

/// The request after `handle_request`, on its way through the later handlers.
struct Pending {
    guest: Guest,
    exchange: Exchange,
    ctx: u32,
}

enum Handled {
    Respond(Response),
    Next(Request, Box<Pending>),
}

impl Wasm {
    /// Loads, checks and starts the guest of a component's metadata.
    pub(super) fn from_metadata(
        component: &str,
        md: &HashMap<String, String>,
    ) -> Result<Wasm, String> {
        let url = super::required(md, "url")?;
        let config = raw_value(md, "guestConfig").unwrap_or_default();
        let bytes = load::load(url)?;
        let engine = engine()?;
        let module = Module::new(&engine, &bytes)
            .map_err(|e| format!("{url} is not a valid Wasm module: {e:#}"))?;
        check_imports(&module)?;
        check_exports(&module)?;
        let mut linker = Linker::new(&engine);
        host::define(&mut linker)
            .and_then(|()| wasi::define(&mut linker, &module))
            .map_err(|e| format!("defining the host functions: {e:#}"))?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| format!("cannot link {url}: {e:#}"))?;
        let guests = Guests {
            component: component.into(),
            config: config.as_bytes().into(),
            pre,
            idle: Mutex::new(Vec::new()),
        };
        // Fail now rather than on the first request: one instance starts and waits.
        let first = guests
            .instantiate()
            .map_err(|e| format!("the guest in {url} does not start: {e:#}"))?;
        let features = first.store.data().features;
        guests.check_in(first);
        tracing::info!(
            middleware = component,
            url,
            bytes = bytes.len(),
            features = features.0,
            "Wasm middleware loaded"
        );
        Ok(Wasm {
            guests: Arc::new(guests),
        })
    }

    /// Runs `handle_request`; when the guest goes on, `handle_response` runs on the way back.
    pub(super) async fn on_request(&self, req: Request, body_limit: usize) -> Flow {
        let guests = self.guests.clone();
        let runtime = Handle::current();
        let handled =
            tokio::task::spawn_blocking(move || guests.handle_request(req, body_limit, runtime))
                .await;
        match handled {
            Ok(Handled::Respond(res)) => Flow::Respond(res),
            Ok(Handled::Next(req, pending)) => {
                let guests = self.guests.clone();
                Flow::Wrap(
                    req,
                    Box::new(move |res| Box::pin(guests.handle_response(pending, res, body_limit))),
                )
            }
            Err(e) => {
                tracing::error!(middleware = %self.guests.component, error = %e, "Wasm guest call did not finish");
                Flow::Respond(failed())
            }
        }
    }
}

impl Guests {
    /// Starts a new instance of the guest.
    fn instantiate(&self) -> wasmtime::Result<Guest> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(MEMORY_LIMIT)
            .memories(1)
            .table_elements(1 << 20)
            .build();
        let state = GuestState {
            limits,
            component: self.component.clone(),
            config: self.config.clone(),
            features: Features::default(),
            exchange: None,
            output: wasi::Output::default(),
        };
        let mut store = Store::new(self.pre.module().engine(), state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(DEADLINE_TICKS);
        let instance = self.pre.instantiate(&mut store)?;
        // A reactor initialises with `_initialize`, a command (TinyGo) runs `main` in `_start`.
        for init in ["_initialize", "_start"] {
            if let Ok(f) = instance.get_typed_func::<(), ()>(&mut store, init) {
                match f.call(&mut store, ()) {
                    Ok(()) => {}
                    Err(e)
                        if matches!(e.downcast_ref::<GuestFault>(), Some(GuestFault::Exit(0))) => {}
                    Err(e) => return Err(e.context(format!("{init} failed"))),
                }
                break;
            }
        }
        Ok(Guest {
            handle_request: instance.get_typed_func(&mut store, "handle_request")?,
            handle_response: instance.get_typed_func(&mut store, "handle_response")?,
            store,
        })
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Guest>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_out(&self) -> wasmtime::Result<Guest> {
        match self.idle().pop() {
            Some(g) => Ok(g),
            None => self.instantiate(),
        }
    }

    fn check_in(&self, guest: Guest) {
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE {
            idle.push(guest);
        }
    }

    /// Calls `handle_request` (on a blocking thread).
    fn handle_request(&self, req: Request, body_limit: usize, runtime: Handle) -> Handled {
        let mut guest = match self.check_out() {
            Ok(g) => g,
            Err(e) => return Handled::Respond(self.failure(&e)),
        };
        let features = guest.store.data().features;
        guest.store.data_mut().exchange = Some(Exchange::new(req, features, body_limit, runtime));
        guest.store.set_epoch_deadline(DEADLINE_TICKS);
        let called = guest.handle_request.call(&mut guest.store, ());
        let exchange = guest.store.data_mut().exchange.take();
        let (ctx_next, exchange) = match (called, exchange) {
            (Ok(v), Some(ex)) => (v.cast_unsigned(), ex),
            (Err(e), _) => return Handled::Respond(self.failure(&e)),
            (Ok(_), None) => return Handled::Respond(failed()),
        };
        if ctx_next & 0xffff_ffff == 0 {
            let res = exchange.into_response();
            self.check_in(guest);
            return Handled::Respond(res);
        }
        let (req, exchange) = exchange.into_next();
        let ctx = (ctx_next >> 32) as u32;
        Handled::Next(
            req,
            Box::new(Pending {
                guest,
                exchange,
                ctx,
            }),
        )
    }

    /// Gives the later handlers' response to `handle_response`, then sends what it made of it.
    async fn handle_response(
        self: Arc<Self>,
        pending: Box<Pending>,
        res: Response,
        body_limit: usize,
    ) -> Response {
        let Pending {
            mut guest,
            mut exchange,
            ctx,
        } = *pending;
        let (head, body) = res.into_parts();
        let (buffered, stream) = if exchange.features.buffer_response() {
            match axum::body::to_bytes(body, body_limit).await {
                Ok(b) => (Some(b), None),
                Err(e) => {
                    tracing::warn!(middleware = %self.component, error = %e, "Response body too large or unreadable for the Wasm guest to buffer");
                    (None, None)
                }
            }
        } else {
            (None, Some(body))
        };
        let is_error = exchange.features.buffer_response() && buffered.is_none();
        exchange.set_downstream(head, buffered);
        let guests = self.clone();
        let called = tokio::task::spawn_blocking(move || {
            guest.store.data_mut().exchange = Some(exchange);
            guest.store.set_epoch_deadline(DEADLINE_TICKS);
            let args = (ctx.cast_signed(), i32::from(is_error));
            let called = guest.handle_response.call(&mut guest.store, args);
            let exchange = guest.store.data_mut().exchange.take();
            match (called, exchange) {
                (Ok(()), Some(ex)) => {
                    guests.check_in(guest);
                    Ok(ex)
                }
                (Err(e), _) => Err(e),
                (Ok(()), None) => Err(wasmtime::Error::msg("the exchange was lost")),
            }
        })
        .await;
        match called {
            Ok(Ok(_)) if is_error => plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "response body too large or unreadable",
            ),
            Ok(Ok(ex)) => ex.into_final_response(stream),
            Ok(Err(e)) => self.failure(&e),
            Err(e) => {
                tracing::error!(middleware = %self.component, error = %e, "Wasm guest call did not finish");
                failed()
            }
        }
    }

    /// Logs why a guest call failed and picks the answer: 413 for a request body over the
    /// limit, else 500.
    fn failure(&self, e: &wasmtime::Error) -> Response {
        let middleware = &*self.component;
        if let Some(GuestFault::BodyTooLarge(reason)) = e.downcast_ref::<GuestFault>() {
            tracing::debug!(
                middleware,
                reason,
                "Wasm guest could not read the request body"
            );
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large or unreadable",
            );
        }
        if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            tracing::warn!(middleware, limit = ?GUEST_TIME_LIMIT, "Wasm guest ran over its time limit and was stopped");
        } else {
            tracing::warn!(middleware, error = format!("{e:#}"), "Wasm guest failed");
        }
        failed()
    }
}

fn failed() -> Response {
    plain(StatusCode::INTERNAL_SERVER_ERROR, "wasm middleware failed")
}

/// The engine all Wasm middleware share, with a thread advancing its epoch every
/// [`EPOCH_TICK`] (which is what stops a guest at its deadline).
fn engine() -> Result<Engine, String> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = Config::new();
            config.epoch_interruption(true);
            let engine =
                Engine::new(&config).map_err(|e| format!("starting the Wasm engine: {e:#}"))?;
            let ticker = engine.clone();
            std::thread::Builder::new()
                .name("wasm-epoch".to_owned())
                .spawn(move || {
                    loop {
                        #[expect(
                            clippy::disallowed_methods,
                            reason = "a thread of its own, not an async worker"
                        )]
                        std::thread::sleep(EPOCH_TICK);
                        ticker.increment_epoch();
                    }
                })
                .map_err(|e| format!("starting the Wasm epoch thread: {e}"))?;
            Ok(engine)
        })
        .clone()
}

/// A metadata value as given (not trimmed: the guest decides what its configuration means),
/// its name matched case-insensitively.
fn raw_value<'a>(md: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    md.get(key)
        .or_else(|| {
            md.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        })
        .map(String::as_str)
}

fn check_imports(module: &Module) -> Result<(), String> {
    match module
        .imports()
        .find(|i| i.module() != host::MODULE && i.module() != wasi::MODULE)
    {
        Some(i) => Err(format!(
            "the module imports {}.{}; a guest may import only from {} and {}",
            i.module(),
            i.name(),
            host::MODULE,
            wasi::MODULE
        )),
        None => Ok(()),
    }
}

fn check_exports(module: &Module) -> Result<(), String> {
    let func = |name: &str, params: &[ValType], results: &[ValType], sig: &str| {
        let Some(ExternType::Func(f)) = module.get_export(name) else {
            return Err(format!(
                "the module does not export the function {name}: {sig}"
            ));
        };
        let same = |got: &mut dyn ExactSizeIterator<Item = ValType>, want: &[ValType]| {
            got.len() == want.len() && got.zip(want).all(|(g, w)| g.matches(w))
        };
        if same(&mut f.params(), params) && same(&mut f.results(), results) {
            Ok(())
        } else {
            Err(format!("the module's {name} is not {sig}"))
        }
    };
    func("handle_request", &[], &[ValType::I64], "() -> i64")?;
    func(
        "handle_response",
        &[ValType::I32, ValType::I32],
        &[],
        "(i32, i32) -> ()",
    )?;
    match module.get_export("memory") {
        Some(ExternType::Memory(_)) => Ok(()),
        _ => Err("the module does not export its memory as \"memory\"".to_owned()),
    }
}
