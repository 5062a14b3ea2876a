//! The request handler of the whole server: platform endpoints, the admin API and function
//! dispatch. Every failure is a [`PlatformError`], turned into a response in one place.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use http_front::{Handler, Request, Response};
use keyvalue::KeyValue;

use crate::error::PlatformError;
use crate::functions::{
    Compiler, Deployed, FUNCTION_STORE, FunctionLimits, Program, Registry, decode_stored,
    encode_stored, faas_limits,
};
use crate::route::{Route, route};
use crate::stats::{Cost, Outcome, Stats};

/// Version reported by `/healthz`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How the platform is set up at boot.
pub struct AppOptions {
    /// The function that also serves paths nothing else claims (`root=`).
    pub root: Option<String>,
    /// Bearer token of the admin API; `None` disables it.
    pub admin_token: Option<String>,
    /// Key-value backend for HTTP guests; the platform also keeps functions deployed through
    /// the admin API in it (store [`FUNCTION_STORE`]), so that with Redis they survive reboots.
    pub kv: Arc<dyn KeyValue>,
    /// Limits of functions deployed without overrides.
    pub default_limits: FunctionLimits,
}

/// The server's handler. All state is behind `&self`; workers share one `App`.
pub struct App {
    started: Instant,
    stats: Stats,
    registry: Registry,
    compiler: Compiler,
    root: Option<String>,
    admin_token: Option<String>,
    default_limits: FunctionLimits,
    /// Where admin deploys are kept.
    kv: Arc<dyn KeyValue>,
    /// Functions restored from [`FUNCTION_STORE`] at start; boot-time functions of the same
    /// name do not replace them.
    restored: HashSet<String>,
    boot: BootGate,
    shutdown: Option<Box<dyn Fn() + Send + Sync>>,
}

/// Longest a request waits for a boot-time function that is still being compiled.
const BOOT_WAIT: Duration = Duration::from_secs(120);

/// Boot-time functions still being compiled: requests for them wait rather than get 404, so
/// the server can listen (and answer `/healthz`) before every function is ready.
#[derive(Default)]
struct BootGate {
    pending: Mutex<HashSet<String>>,
    deployed: Condvar,
}

impl BootGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks while `name` is still being deployed (at most [`BOOT_WAIT`]).
    fn wait_for(&self, name: &str) {
        let pending = self.lock();
        if pending.contains(name) {
            let _ = self
                .deployed
                .wait_timeout_while(pending, BOOT_WAIT, |p| p.contains(name));
        }
    }

    fn finish(&self, name: &str) {
        self.lock().remove(name);
        self.deployed.notify_all();
    }
}

/// An [`App`] shared between the server and the boot-time deployer; the server's handler.
pub struct SharedApp(pub Arc<App>);

impl Handler for SharedApp {
    fn handle(&self, request: &Request) -> Response {
        self.0.handle(request)
    }

    fn runs_inline(&self, request: &Request) -> bool {
        self.0.runs_inline(request)
    }
}

/// The result of an endpoint: a response, or an error to render.
type Answer = Result<Response, PlatformError>;

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0));
    }
    diff == 0
}

/// Decodes `%XX` escapes (and `+` as space when `plus_is_space`); invalid escapes stay as is.
fn percent_decode(text: &str, plus_is_space: bool) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// The value of `key` in a query string, decoded.
fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| String::from_utf8_lossy(&percent_decode(v, true)).into_owned())
    })
}

/// The error for calling `function` through an endpoint of another kind, saying where to call it.
fn wrong_kind(function: &Deployed) -> (PlatformError, Outcome, Cost) {
    let name = &function.name;
    let hint = match function.program {
        Program::Http(_) => format!("call /{name}/..."),
        Program::Wasi(_) => format!("call GET /api/{name}/<input>"),
        Program::Nanoprocess(_) => format!("call /exec/{name}?args=..."),
    };
    let kind = function.program.kind();
    (
        PlatformError::WrongKind {
            function: name.clone(),
            kind,
            hint,
        },
        Outcome::BadInput,
        Cost::default(),
    )
}

fn not_found_function(name: &str) -> PlatformError {
    PlatformError::NotFound(format!("no function named {name:?}"))
}

impl App {
    /// A platform serving the functions kept in the key-value store by earlier admin deploys
    /// (none with a fresh or in-memory store).
    pub fn new(options: AppOptions) -> Self {
        if options.admin_token.is_none() {
            log::info!("admin API disabled: no admin-token= on the command line");
        }
        let mut app = App {
            started: Instant::now(),
            stats: Stats::new(),
            registry: Registry::default(),
            compiler: Compiler::new(Arc::clone(&options.kv)),
            root: options.root,
            admin_token: options.admin_token,
            default_limits: options.default_limits,
            kv: options.kv,
            restored: HashSet::new(),
            boot: BootGate::default(),
            shutdown: None,
        };
        app.restored = app.restore_functions();
        app
    }

    /// Deploys every function kept in [`FUNCTION_STORE`]; the names deployed. A store that
    /// cannot be read (Redis down at boot) or a function that no longer compiles is logged and
    /// skipped: the server still starts.
    fn restore_functions(&self) -> HashSet<String> {
        let mut restored = HashSet::new();
        let names = match self.kv.keys(FUNCTION_STORE) {
            Ok(names) => names,
            Err(err) => {
                log::warn!(
                    "deployed functions not restored: cannot list store {FUNCTION_STORE}: {err}"
                );
                return restored;
            }
        };
        for name in names {
            let compiled = self
                .kv
                .get(FUNCTION_STORE, &name)
                .map_err(|e| e.to_string())
                .and_then(|value| {
                    let (limits, source) = decode_stored(&value, self.default_limits)?;
                    self.compiler.compile(&name, source, limits)
                });
            match compiled {
                Ok(function) => {
                    log::info!(
                        "restored {name} ({}, {} bytes) from store {FUNCTION_STORE}",
                        function.program.kind(),
                        function.size
                    );
                    self.registry.insert(function);
                    restored.insert(name);
                }
                Err(err) => {
                    log::warn!("function {name} in store {FUNCTION_STORE} not restored: {err}")
                }
            }
        }
        restored
    }

    /// Deploys `source` as `name` with the default limits (boot-time functions), unless a
    /// function of that name was restored from the store (an admin deploy replaced it).
    pub fn deploy(&self, name: &str, source: &[u8]) -> Result<(), String> {
        if self.restored.contains(name) {
            log::info!(
                "boot function {name} not deployed: the version in store {FUNCTION_STORE} serves"
            );
            return Ok(());
        }
        let function = self.compiler.compile(name, source, self.default_limits)?;
        log::info!(
            "deployed {name} ({}, {} bytes)",
            function.program.kind(),
            function.size
        );
        self.registry.insert(function);
        Ok(())
    }

    /// Enables `POST /_admin/shutdown`, which answers 202 and then calls `hook` (which should
    /// end the process soon, after the answer is sent).
    pub fn with_shutdown(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.shutdown = Some(Box::new(hook));
        self
    }

    /// Deploys `functions` on a background thread, in order; until each is deployed, requests
    /// for it wait instead of failing. Returns the thread, which ends when all are deployed.
    pub fn deploy_in_background(
        app: &Arc<App>,
        functions: &'static [(&'static str, &'static [u8])],
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        app.boot
            .lock()
            .extend(functions.iter().map(|(name, _)| name.to_string()));
        let app = Arc::clone(app);
        std::thread::Builder::new()
            .name("boot-deployer".into())
            .spawn(move || {
                let started = Instant::now();
                for (name, source) in functions {
                    if let Err(err) = app.deploy(name, source) {
                        log::error!("boot function {name} not deployed: {err}");
                    }
                    app.boot.finish(name);
                }
                log::info!(
                    "{} boot functions deployed in {} ms",
                    functions.len(),
                    started.elapsed().as_millis()
                );
            })
    }

    /// The function named `name`, once it is deployed if it is a boot function in progress.
    fn lookup(&self, name: &str) -> Option<Arc<Deployed>> {
        self.boot.wait_for(name);
        self.registry.get(name)
    }

    fn health(&self) -> Response {
        let uptime_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Response::json(
            200,
            &serde_json::json!({
                "status": "ok",
                "version": VERSION,
                "uptime_ms": uptime_ms,
                "functions": self.registry.list().len(),
            }),
        )
    }

    fn require_get(request: &Request) -> Result<(), PlatformError> {
        if request.method == "GET" || request.method == "HEAD" {
            return Ok(());
        }
        Err(PlatformError::MethodNotAllowed {
            method: request.method.clone(),
            allowed: "GET, HEAD",
        })
    }

    fn dispatch(&self, request: &Request) -> (Option<String>, Answer) {
        match route(&request.path) {
            Route::Health => (None, Self::require_get(request).map(|()| self.health())),
            Route::Metrics => (
                None,
                Self::require_get(request).map(|()| {
                    Response::bytes(200, "text/plain; version=0.0.4", self.stats.prometheus())
                }),
            ),
            Route::Stats { function } => (None, self.function_stats(request, function)),
            Route::Admin { rest } => (None, self.admin(request, rest)),
            Route::Api { function, input } => (
                Some(function.to_string()),
                self.invoke(function, |f| self.run_wasi(f, request, input)),
            ),
            Route::Exec { function } => (
                Some(function.to_string()),
                self.invoke(function, |f| self.run_nanoprocess(f, request)),
            ),
            Route::Function { function, rest } if self.lookup(function).is_some() => (
                Some(function.to_string()),
                self.invoke(function, |f| self.run_http(f, request, rest)),
            ),
            _ => match &self.root {
                Some(root) => (
                    Some(root.clone()),
                    self.invoke(root, |f| self.run_http(f, request, &request.path)),
                ),
                None => (
                    None,
                    Err(PlatformError::NotFound(format!(
                        "nothing at {}",
                        request.path
                    ))),
                ),
            },
        }
    }

    fn function_stats(&self, request: &Request, function: &str) -> Answer {
        Self::require_get(request)?;
        if self.lookup(function).is_none() {
            return Err(not_found_function(function));
        }
        let json = match self.stats.snapshot(function) {
            Some(snapshot) => snapshot.to_json(function),
            None => serde_json::json!({ "function": function, "invocations": 0 }),
        };
        Ok(Response::json(200, &json))
    }

    /// Runs `call` on the function named `name`, recording its outcome and cost.
    fn invoke(
        &self,
        name: &str,
        call: impl FnOnce(&Deployed) -> Result<(Response, Cost), (PlatformError, Outcome, Cost)>,
    ) -> Answer {
        let function = self.lookup(name).ok_or_else(|| not_found_function(name))?;
        let started = Instant::now();
        match call(&function) {
            Ok((response, mut cost)) => {
                cost.elapsed = started.elapsed();
                self.stats.record(name, Outcome::Ok, cost);
                Ok(response)
            }
            Err((error, outcome, mut cost)) => {
                cost.elapsed = started.elapsed();
                self.stats.record(name, outcome, cost);
                Err(error)
            }
        }
    }

    fn run_http(
        &self,
        function: &Deployed,
        request: &Request,
        path: &str,
    ) -> Result<(Response, Cost), (PlatformError, Outcome, Cost)> {
        let cost = Cost::default();
        let Program::Http(guest) = &function.program else {
            return Err(wrong_kind(function));
        };
        if request.body.len() > function.limits.max_body {
            let message = format!(
                "request body of {} bytes exceeds {}'s limit of {} bytes",
                request.body.len(),
                function.name,
                function.limits.max_body
            );
            return Err((
                PlatformError::BodyTooLarge(message),
                Outcome::BodyTooLarge,
                cost,
            ));
        }
        let Some(method) = wasm_host::Method::parse(&request.method) else {
            let error = PlatformError::MethodNotAllowed {
                method: request.method.clone(),
                allowed: "GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS",
            };
            return Err((error, Outcome::BadInput, cost));
        };
        let uri = match &request.query {
            Some(query) => format!("{path}?{query}"),
            None => path.to_string(),
        };
        let guest_request = wasm_host::GuestRequest {
            method,
            uri,
            headers: request.headers.clone(),
            body: request.body.clone(),
        };
        match guest.handle(guest_request) {
            Ok(answer) if answer.body.len() > function.limits.max_body => {
                let message = format!(
                    "response body of {} bytes exceeds {}'s limit of {} bytes",
                    answer.body.len(),
                    function.name,
                    function.limits.max_body
                );
                Err((
                    PlatformError::BodyTooLarge(message),
                    Outcome::BodyTooLarge,
                    cost,
                ))
            }
            Ok(answer) => {
                let mut response = Response::new(answer.status).with_body(answer.body);
                for (name, value) in &answer.headers {
                    response = response.with_header(name, value);
                }
                Ok((response, cost))
            }
            Err(err) => {
                use wasm_host::InvokeError as E;
                let outcome = match &err {
                    E::OutOfFuel { .. } => Outcome::Timeout,
                    E::MemoryLimit { .. } => Outcome::Memory,
                    E::NoRoute { .. } | E::Guest { .. } => Outcome::GuestError,
                    _ => Outcome::Trap,
                };
                let error = match outcome {
                    Outcome::Timeout => PlatformError::Timeout(format!(
                        "{err} (fuel limit {})",
                        function.limits.fuel
                    )),
                    _ => PlatformError::Function {
                        status: err.status(),
                        message: err.to_string(),
                    },
                };
                Err((error, outcome, cost))
            }
        }
    }

    /// Maps a classic-FaaS run error to the platform error and its outcome class.
    fn faas_error(function: &Deployed, err: wasm_faas::RunError) -> (PlatformError, Outcome) {
        use wasm_faas::RunError as E;
        let message = format!("{}: {err}", function.name);
        match err {
            E::Timeout(_) | E::OutOfFuel => (PlatformError::Timeout(message), Outcome::Timeout),
            E::MemoryLimit => (
                PlatformError::Function {
                    status: 500,
                    message,
                },
                Outcome::Memory,
            ),
            E::OutputTooLarge => (PlatformError::BodyTooLarge(message), Outcome::BodyTooLarge),
            E::BadArgs(_) | E::Invalid(_) => {
                (PlatformError::BadRequest(message), Outcome::BadInput)
            }
            E::Trap(_) => (
                PlatformError::Function {
                    status: 500,
                    message,
                },
                Outcome::Trap,
            ),
        }
    }

    fn run_wasi(
        &self,
        function: &Deployed,
        request: &Request,
        input: &str,
    ) -> Result<(Response, Cost), (PlatformError, Outcome, Cost)> {
        let cost = Cost::default();
        let Program::Wasi(module) = &function.program else {
            return Err(wrong_kind(function));
        };
        let stdin = if request.method == "POST" {
            request.body.clone()
        } else {
            percent_decode(input, false)
        };
        if stdin.len() > function.limits.max_body {
            let message = format!(
                "input of {} bytes exceeds {}'s limit of {} bytes",
                stdin.len(),
                function.name,
                function.limits.max_body
            );
            return Err((
                PlatformError::BodyTooLarge(message),
                Outcome::BodyTooLarge,
                cost,
            ));
        }
        let input = wasm_faas::WasiInput {
            stdin,
            program_name: function.name.clone(),
            env: vec![("FAAS_FUNCTION".to_string(), function.name.clone())],
            ..wasm_faas::WasiInput::default()
        };
        match wasm_faas::run_wasi(module, &input, &faas_limits(&function.limits)) {
            Ok(output) => {
                let cost = Cost {
                    elapsed: output.elapsed,
                    fuel: output.fuel_used,
                    memory: output.peak_memory as u64,
                };
                for line in String::from_utf8_lossy(&output.stderr).lines() {
                    log::info!(target: "guest", "{}: {line}", function.name);
                }
                if output.exit_code == 0 {
                    return Ok((
                        Response::bytes(200, "text/plain; charset=utf-8", output.stdout),
                        cost,
                    ));
                }
                let tail_start = output.stderr.len().saturating_sub(1024);
                let message = format!(
                    "{} exited with code {}: {}",
                    function.name,
                    output.exit_code,
                    String::from_utf8_lossy(&output.stderr[tail_start..]).trim_end()
                );
                Err((
                    PlatformError::Function {
                        status: 500,
                        message,
                    },
                    Outcome::ExitFailure,
                    cost,
                ))
            }
            Err(err) => {
                let (error, outcome) = Self::faas_error(function, err);
                Err((error, outcome, cost))
            }
        }
    }

    fn run_nanoprocess(
        &self,
        function: &Deployed,
        request: &Request,
    ) -> Result<(Response, Cost), (PlatformError, Outcome, Cost)> {
        let cost = Cost::default();
        let Program::Nanoprocess(module) = &function.program else {
            return Err(wrong_kind(function));
        };
        let args = match request.method.as_str() {
            "GET" | "HEAD" => query_value(request.query.as_deref(), "args").unwrap_or_default(),
            "POST" => match serde_json::from_slice::<Vec<serde_json::Value>>(&request.body) {
                Ok(values) if values.iter().all(|v| v.is_number()) => values
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                _ => {
                    let error = PlatformError::BadRequest(
                        "POST /exec/{function} takes a JSON array of numbers".into(),
                    );
                    return Err((error, Outcome::BadInput, cost));
                }
            },
            other => {
                let error = PlatformError::MethodNotAllowed {
                    method: other.to_string(),
                    allowed: "GET, HEAD, POST",
                };
                return Err((error, Outcome::BadInput, cost));
            }
        };
        match wasm_faas::run_nanoprocess_str(module, &args, &faas_limits(&function.limits)) {
            Ok(output) => {
                let cost = Cost {
                    elapsed: output.elapsed,
                    fuel: output.fuel_used,
                    memory: output.peak_memory as u64,
                };
                Ok((Response::text(200, output.results.join(",")), cost))
            }
            Err(err) => {
                let (error, outcome) = Self::faas_error(function, err);
                Err((error, outcome, cost))
            }
        }
    }

    fn check_token(&self, request: &Request) -> Result<(), PlatformError> {
        let Some(token) = &self.admin_token else {
            return Err(PlatformError::AdminDisabled);
        };
        let presented = request
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        if constant_time_eq(presented.as_bytes(), token.as_bytes()) {
            Ok(())
        } else {
            Err(PlatformError::Unauthorized)
        }
    }

    /// The answer when [`FUNCTION_STORE`] cannot be written: 503, nothing changed.
    fn store_unavailable(name: &str, error: &keyvalue::KvError) -> PlatformError {
        log::warn!("admin change of {name} refused: store {FUNCTION_STORE} unavailable: {error}");
        PlatformError::Function {
            status: 503,
            message: format!("function store unavailable, {name} left unchanged: {error}"),
        }
    }

    fn admin(&self, request: &Request, rest: &str) -> Answer {
        self.check_token(request)?;
        let path = rest.trim_end_matches('/');
        if path == "/shutdown" {
            if request.method != "POST" {
                return Err(PlatformError::MethodNotAllowed {
                    method: request.method.clone(),
                    allowed: "POST",
                });
            }
            let hook = self
                .shutdown
                .as_ref()
                .ok_or_else(|| PlatformError::NotFound("no shutdown hook in this server".into()))?;
            log::info!("shutdown requested through the admin API");
            hook();
            return Ok(Response::json(
                202,
                &serde_json::json!({ "status": "shutting down" }),
            ));
        }
        if path == "/functions" {
            Self::require_get(request)?;
            let list: Vec<_> = self.registry.list().iter().map(|f| f.to_json()).collect();
            return Ok(Response::json(
                200,
                &serde_json::json!({ "functions": list }),
            ));
        }
        let Some(name) = path
            .strip_prefix("/functions/")
            .filter(|n| !n.contains('/'))
        else {
            return Err(PlatformError::NotFound(format!(
                "no admin endpoint at /_admin{rest}"
            )));
        };
        match request.method.as_str() {
            "GET" | "HEAD" => {
                let function = self.lookup(name).ok_or_else(|| not_found_function(name))?;
                Ok(Response::json(200, &function.to_json()))
            }
            "PUT" | "POST" => {
                let reject = |reason: String| PlatformError::DeployRejected {
                    function: name.to_string(),
                    reason,
                };
                if request.body.is_empty() {
                    return Err(reject(
                        "empty body: send the .wasm binary or .wat text".into(),
                    ));
                }
                let limits = self
                    .default_limits
                    .with_overrides(request.query.as_deref())
                    .map_err(reject)?;
                let started = Instant::now();
                let function = self
                    .compiler
                    .compile(name, &request.body, limits)
                    .map_err(reject)?;
                // Kept first: a deploy that would not survive a reboot is not made at all.
                self.kv
                    .set(FUNCTION_STORE, name, &encode_stored(&request.body, &limits))
                    .map_err(|e| Self::store_unavailable(name, &e))?;
                let info = function.to_json();
                let replaced = self.registry.insert(function);
                log::info!(
                    "{} {name} ({}, {} bytes) in {} us",
                    if replaced { "replaced" } else { "deployed" },
                    info["kind"],
                    request.body.len(),
                    started.elapsed().as_micros()
                );
                Ok(Response::json(if replaced { 200 } else { 201 }, &info))
            }
            "DELETE" => {
                if self.lookup(name).is_none() {
                    return Err(not_found_function(name));
                }
                self.kv
                    .delete(FUNCTION_STORE, name)
                    .map_err(|e| Self::store_unavailable(name, &e))?;
                if !self.registry.remove(name) {
                    return Err(not_found_function(name));
                }
                self.stats.remove(name);
                log::info!("deleted {name}");
                Ok(Response::new(204))
            }
            other => Err(PlatformError::MethodNotAllowed {
                method: other.to_string(),
                allowed: "GET, HEAD, PUT, POST, DELETE",
            }),
        }
    }
}

impl Handler for App {
    /// Health and metrics never block: the I/O thread answers them, so they answer even while
    /// every worker runs a function.
    fn runs_inline(&self, request: &Request) -> bool {
        matches!(route(&request.path), Route::Health | Route::Metrics)
    }

    fn handle(&self, request: &Request) -> Response {
        let started = Instant::now();
        let (function, answer) = self.dispatch(request);
        let response = answer.unwrap_or_else(|e| e.to_response());
        log::info!(
            target: "access",
            "method={} path={} function={} status={} duration_us={}",
            request.method,
            request.path,
            function.as_deref().unwrap_or("-"),
            response.status,
            started.elapsed().as_micros()
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-tokem", b"secret-token"));
        assert!(!constant_time_eq(b"secret", b"secret-token"));
        assert!(!constant_time_eq(b"", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token-longer", b"secret-token"));
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%20b+c", false), b"a b+c");
        assert_eq!(percent_decode("a%20b+c", true), b"a b c");
        assert_eq!(percent_decode("100%", false), b"100%");
        assert_eq!(percent_decode("%zz%4", false), b"%zz%4");
        assert_eq!(
            query_value(Some("x=1&args=5%2C2"), "args").as_deref(),
            Some("5,2")
        );
        assert_eq!(query_value(Some("x=1"), "args"), None);
        assert_eq!(query_value(None, "args"), None);
    }

    fn app_with(kv: Arc<dyn KeyValue>) -> App {
        App::new(AppOptions {
            root: None,
            admin_token: Some("token".into()),
            kv,
            default_limits: FunctionLimits::default(),
        })
    }

    fn admin_request(method: &str, name: &str, query: Option<&str>, body: &[u8]) -> Request {
        Request {
            method: method.into(),
            path: format!("/_admin/functions/{name}"),
            query: query.map(Into::into),
            version: http_front::Version::Http11,
            headers: vec![("authorization".into(), "Bearer token".into())],
            trailers: Vec::new(),
            body: body.to_vec(),
        }
    }

    const ANSWER_7: &[u8] = br#"(module (func (export "_start") (result i32) i32.const 7))"#;

    #[test]
    fn shutdown_calls_the_hook_once_authorized() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let app = app_with(Arc::new(keyvalue::MemoryStore::new())).with_shutdown(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        let mut request = admin_request("POST", "x", None, b"");
        request.path = "/_admin/shutdown".into();
        request.headers.clear();
        assert_eq!(app.handle(&request).status, 401);
        request.headers = vec![("authorization".into(), "Bearer token".into())];
        request.method = "GET".into();
        assert_eq!(app.handle(&request).status, 405);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
        request.method = "POST".into();
        assert_eq!(app.handle(&request).status, 202);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn requests_for_boot_functions_wait_until_deployed() {
        static FUNCTIONS: &[(&str, &[u8])] = &[
            (
                "first",
                br#"(module (func (export "_start") (result i32) i32.const 1))"#,
            ),
            (
                "second",
                br#"(module (func (export "_start") (result i32) i32.const 2))"#,
            ),
        ];
        let app = Arc::new(app_with(Arc::new(keyvalue::MemoryStore::new())));
        let deployer = App::deploy_in_background(&app, FUNCTIONS).expect("spawn deployer");
        let mut request = admin_request("GET", "x", None, b"");
        request.path = "/exec/second".into();
        let response = app.handle(&request);
        assert_eq!(
            (response.status, response.body.as_slice()),
            (200, b"2".as_slice())
        );
        deployer.join().expect("deployer");
        request.path = "/exec/never-deployed".into();
        assert_eq!(
            app.handle(&request).status,
            404,
            "unknown names do not wait"
        );
    }
    const ANSWER_8: &[u8] = br#"(module (func (export "_start") (result i32) i32.const 8))"#;

    #[test]
    fn admin_deploys_survive_a_restart_on_the_same_store() {
        let kv: Arc<dyn KeyValue> = Arc::new(keyvalue::MemoryStore::new());
        let first = app_with(Arc::clone(&kv));
        let put = first.handle(&admin_request("PUT", "kept", Some("fuel=12345"), ANSWER_7));
        assert_eq!(put.status, 201);
        assert_eq!(
            first
                .handle(&admin_request("PUT", "gone", None, ANSWER_7))
                .status,
            201
        );
        assert_eq!(
            first
                .handle(&admin_request("PUT", "builtin", None, ANSWER_8))
                .status,
            201
        );
        assert_eq!(
            first
                .handle(&admin_request("DELETE", "gone", None, b""))
                .status,
            204
        );
        assert!(kv.get(FUNCTION_STORE, "gone").is_err());

        let second = app_with(Arc::clone(&kv));
        // A boot-time function does not replace the version an admin deployed.
        second.deploy("builtin", ANSWER_7).unwrap();
        second.deploy("fresh", ANSWER_7).unwrap();
        let kept = second.registry.get("kept").expect("restored");
        assert_eq!(kept.limits.fuel, 12345);
        assert!(second.registry.get("gone").is_none());
        let builtin = second.registry.get("builtin").expect("restored");
        assert_eq!(
            builtin.sha256,
            first.registry.get("builtin").unwrap().sha256
        );
        assert!(second.registry.get("fresh").is_some());
        assert!(
            kv.get(FUNCTION_STORE, "fresh").is_err(),
            "boot-time functions are not stored"
        );
    }

    /// A store whose writes always fail, as Redis does while it is down.
    struct DownStore;

    impl KeyValue for DownStore {
        fn open(&self, _: &str) -> Result<(), keyvalue::KvError> {
            Err(keyvalue::KvError::Connection("down".into()))
        }
        fn get(&self, _: &str, _: &str) -> Result<Vec<u8>, keyvalue::KvError> {
            Err(keyvalue::KvError::Connection("down".into()))
        }
        fn set(&self, _: &str, _: &str, _: &[u8]) -> Result<(), keyvalue::KvError> {
            Err(keyvalue::KvError::Connection("down".into()))
        }
        fn keys(&self, _: &str) -> Result<Vec<String>, keyvalue::KvError> {
            Err(keyvalue::KvError::Connection("down".into()))
        }
        fn delete(&self, _: &str, _: &str) -> Result<(), keyvalue::KvError> {
            Err(keyvalue::KvError::Connection("down".into()))
        }
    }

    #[test]
    fn admin_changes_need_the_function_store() {
        let app = app_with(Arc::new(DownStore));
        app.deploy("builtin", ANSWER_7).unwrap();
        let put = app.handle(&admin_request("PUT", "new", None, ANSWER_7));
        assert_eq!(put.status, 503, "{}", String::from_utf8_lossy(&put.body));
        assert!(app.registry.get("new").is_none(), "nothing deployed");
        assert_eq!(
            app.handle(&admin_request("DELETE", "builtin", None, b""))
                .status,
            503
        );
        assert!(app.registry.get("builtin").is_some(), "nothing deleted");
    }
}
