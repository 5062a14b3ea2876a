//! Loading functions and answering requests with them, each run in the [`sandbox`].

use std::sync::Arc;

use keyvalue::KeyValue;
use sandbox::{Clipped, Fault, GUEST_TEXT_MAX, Guest, Report, clip};
use wasmi::{Engine, ExternType, Linker, Module, Store};

use crate::bindings::{self, http_types};
use crate::resources::HostState;
use crate::routes::{self, Route, RouteMatch};
use crate::{HttpError, Method};

type GuestLinker = Linker<Guest<HostState>>;

/// Limits applied to every guest run (`on-server-init` and each request).
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Fuel, wall-clock time and memory budget of one run.
    pub limits: sandbox::Limits,
    /// Most resource handles (routers, stores) a guest may hold at once.
    pub max_handles: usize,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            limits: sandbox::Limits {
                fuel: 100_000_000,
                timeout: std::time::Duration::from_secs(10),
                max_memory: 64 << 20,
            },
            max_handles: 10_000,
        }
    }
}

/// Why a guest could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a valid wasm module.
    #[error("function {function}: invalid wasm module: {message}")]
    InvalidModule { function: String, message: String },
    /// The guest imports something the world does not offer.
    #[error("function {function}: unknown import {module}::{name}")]
    UnknownImport {
        function: String,
        module: String,
        name: String,
    },
    /// The guest imports a world function with the wrong core type.
    #[error(
        "function {function}: import {module}::{name} has type {found}, the world expects {expected}"
    )]
    ImportType {
        function: String,
        module: String,
        name: String,
        expected: String,
        found: String,
    },
    /// An export of the world is missing or has the wrong type.
    #[error("function {function}: {error}")]
    Export {
        function: String,
        error: crate::glue::ExportError,
    },
    /// Instantiating or running `on-server-init` failed.
    #[error("function {function}: on-server-init failed: {error}")]
    Init {
        function: String,
        error: Box<InvokeError>,
    },
    /// `on-server-init` returned without calling `serve`.
    #[error("function {function}: on-server-init never called serve")]
    NotServed { function: String },
    /// The host's imports could not be defined for the guest's engine (a bug of the host).
    #[error("function {function}: the host imports cannot be linked: {message}")]
    Linker { function: String, message: String },
}

/// Why a request could not be answered by the guest.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// No registered route matches; `routes` lists the function's routes (bounded).
    #[error("no route for {method} {path}; {function}'s routes: {routes}")]
    NoRoute {
        function: String,
        method: &'static str,
        path: String,
        routes: String,
    },
    /// A route matches the path, but not with this method.
    #[error("{function} has no route for {method} {path}; allowed: {allowed}")]
    MethodNotAllowed {
        function: String,
        method: &'static str,
        path: String,
        /// The methods that have a route for the path, as for `Allow`: `GET, PUT`.
        allowed: String,
    },
    /// The run stopped: a trap, a limit, or a misuse of the host.
    #[error("{function}: {fault}")]
    Fault { function: String, fault: Fault },
    /// The guest answered with an `http-error`.
    #[error("{function} returned an error: {error}")]
    Guest { function: String, error: HttpError },
    /// The guest answered, or failed with `status-error`, with a status outside 200..=599 (1xx is
    /// not a final answer).
    #[error("{function} returned invalid status {status}")]
    InvalidStatus { function: String, status: u16 },
}

/// A request as handed to a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRequest {
    /// The method.
    pub method: Method,
    /// Path plus optional `?query`, as received.
    pub uri: String,
    /// Header fields (names are lower-cased before the guest sees them).
    pub headers: Vec<(String, String)>,
    /// The body (empty if none).
    pub body: Vec<u8>,
}

/// A guest's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestResponse {
    /// Status code (200..=599).
    pub status: u16,
    /// Header fields set by the guest.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// The outcome of one request and what its run cost.
#[derive(Debug)]
pub struct Invocation {
    /// The guest's answer, or why there is none.
    pub result: Result<GuestResponse, InvokeError>,
    /// Fuel, peak memory and time of the run, whatever its outcome.
    pub report: Report,
}

type GuestStore = Store<Guest<HostState>>;

struct Shared {
    kv: Arc<dyn KeyValue>,
    config: HostConfig,
}

/// Compiles guests, each on an engine of its own, and shares the key-value backend and limits
/// between them.
#[derive(Clone)]
pub struct FunctionHost {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FunctionHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionHost")
            .field("config", &self.shared.config)
            .finish()
    }
}

/// A loaded guest: compiled once, instantiated afresh for every request. Its code lives on its
/// own engine, freed when the last clone is dropped.
#[derive(Clone)]
pub struct Function {
    name: String,
    module: sandbox::Module,
    linker: Arc<GuestLinker>,
    routes: Arc<Vec<Route>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function")
            .field("name", &self.name)
            .field("routes", &self.routes)
            .finish()
    }
}

impl FunctionHost {
    /// A host whose guests reach `kv` through the `keyvalue` interface.
    pub fn new(kv: Arc<dyn KeyValue>, config: HostConfig) -> Self {
        Self {
            shared: Arc::new(Shared { kv, config }),
        }
    }

    /// Compiles `wasm` (binary or WAT) on an engine of its own and loads it (see
    /// [`FunctionHost::load_module`]).
    pub fn load(&self, name: &str, wasm: &[u8]) -> Result<Function, LoadError> {
        let module = sandbox::compile(wasm).map_err(|e| LoadError::InvalidModule {
            function: name.to_string(),
            message: e.to_string(),
        })?;
        self.load_module(name, module)
    }

    /// Checks the compiled `module` against the world and runs `on-server-init` (under the same
    /// limits as a request) to learn its routes.
    pub fn load_module(&self, name: &str, module: sandbox::Module) -> Result<Function, LoadError> {
        let function = name.to_string();
        check_imports(&function, &module)?;
        check_exports(&function, &module)?;
        let linker = module
            .attachment(build_linker)
            .map_err(|e| LoadError::Linker {
                function: function.clone(),
                message: e.to_string(),
            })?;
        let init_name = format!("{function}::on-server-init");
        let init_error = |error: InvokeError| LoadError::Init {
            function: function.clone(),
            error: Box::new(error),
        };
        let mut store = self.shared.store(module.engine(), &function);
        let exports = instantiate(&mut store, &linker, &module, &init_name).map_err(init_error)?;
        match exports.call_on_server_init(&mut store) {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                return Err(init_error(InvokeError::Guest {
                    function: init_name,
                    error: clipped(error),
                }));
            }
            Err(error) => return Err(init_error(fault(&mut store, &init_name, error))),
        }
        let routes = store.into_data().host.served.ok_or(LoadError::NotServed {
            function: function.clone(),
        })?;
        Ok(Function {
            name: function,
            module,
            linker,
            routes: Arc::new(routes),
            shared: self.shared.clone(),
        })
    }
}

/// The world's imports, defined for `engine`.
fn build_linker(engine: &Engine) -> Result<GuestLinker, wasmi::Error> {
    let mut linker = Linker::new(engine);
    bindings::add_to_linker(&mut linker)?;
    Ok(linker)
}

impl Shared {
    fn store(&self, engine: &Engine, function: &str) -> GuestStore {
        sandbox::store(
            engine,
            self.config.limits,
            HostState::new(self.kv.clone(), self.config.max_handles, function),
        )
    }
}

/// A guest's `http-error` as the host quotes it: its message cut to [`GUEST_TEXT_MAX`] bytes
/// with control characters escaped (see [`sandbox::clip`]), so an error string as large as the
/// guest's memory never reaches an error body or a log.
fn clipped(error: HttpError) -> HttpError {
    let cut = |message: String| clip(&message, GUEST_TEXT_MAX);
    match error {
        HttpError::InvalidUrl(message) => HttpError::InvalidUrl(cut(message)),
        HttpError::TimeoutError(message) => HttpError::TimeoutError(cut(message)),
        HttpError::ProtocolError(message) => HttpError::ProtocolError(cut(message)),
        HttpError::UnexpectedError(message) => HttpError::UnexpectedError(cut(message)),
        HttpError::StatusError(status) => HttpError::StatusError(status),
    }
}

/// The fault behind a failed export call: the one the run recorded, else the call's own error.
fn fault(store: &mut GuestStore, function: &str, error: crate::glue::CallError) -> InvokeError {
    let fault = match error {
        crate::glue::CallError::Fault(fault) => fault,
        crate::glue::CallError::Abi(error) => {
            store.data_mut().quota.fail(crate::glue::abi_fault(error))
        }
    };
    InvokeError::Fault {
        function: function.to_string(),
        fault,
    }
}

fn instantiate(
    store: &mut GuestStore,
    linker: &GuestLinker,
    module: &sandbox::Module,
    function: &str,
) -> Result<bindings::Exports, InvokeError> {
    let as_error = |fault: Fault| InvokeError::Fault {
        function: function.into(),
        fault,
    };
    let instance = sandbox::instantiate(store, linker, module).map_err(as_error)?;
    bindings::Exports::new(&*store, &instance)
        .map_err(|e| as_error(Fault::Instantiate(e.to_string())))
}

fn check_imports(function: &str, module: &Module) -> Result<(), LoadError> {
    for import in module.imports() {
        let unknown = || LoadError::UnknownImport {
            function: function.into(),
            module: clip(import.module(), GUEST_TEXT_MAX),
            name: clip(import.name(), GUEST_TEXT_MAX),
        };
        let sig = bindings::IMPORTS
            .iter()
            .find(|f| f.module == import.module() && f.name == import.name())
            .ok_or_else(unknown)?;
        let ExternType::Func(found) = import.ty() else {
            return Err(unknown());
        };
        let expected = sig.func_type();
        if found != &expected {
            return Err(LoadError::ImportType {
                function: function.into(),
                module: clip(import.module(), GUEST_TEXT_MAX),
                name: clip(import.name(), GUEST_TEXT_MAX),
                expected: format!("{expected:?}"),
                found: format!("{found:?}"),
            });
        }
    }
    Ok(())
}

fn check_exports(function: &str, module: &Module) -> Result<(), LoadError> {
    use crate::glue::ExportError;
    let export_err = |error| LoadError::Export {
        function: function.into(),
        error,
    };
    let find = |name: &str| {
        module
            .exports()
            .find(|e| e.name() == name)
            .map(|e| e.ty().clone())
    };
    match find("memory") {
        Some(ExternType::Memory(_)) => {}
        _ => return Err(export_err(ExportError::Missing("memory".into()))),
    }
    if find("cabi_realloc").is_none() {
        return Err(export_err(ExportError::Missing("cabi_realloc".into())));
    }
    for sig in bindings::EXPORTS {
        let expected = sig.func_type();
        match find(sig.name) {
            Some(ExternType::Func(found)) if found == expected => {}
            Some(other) => {
                return Err(export_err(ExportError::WrongType {
                    name: sig.name.into(),
                    expected: format!("{expected:?}"),
                    found: format!("{other:?}"),
                }));
            }
            None => return Err(export_err(ExportError::Missing(sig.name.into()))),
        }
    }
    Ok(())
}

impl Function {
    /// The name given at load time.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The engine holding the function's code: its own, dropped with the last clone.
    pub fn engine(&self) -> &Engine {
        self.module.engine()
    }

    /// The routes registered by `on-server-init`, in registration order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The handler answering `method path` and the route parameters, if any route matches.
    pub fn route(&self, method: Method, path: &str) -> Option<RouteMatch> {
        routes::find(&self.routes, method, path)
    }

    /// Answers `request` with a fresh instance of the guest.
    pub fn handle(&self, request: GuestRequest) -> Invocation {
        let (path, query) = match request.uri.split_once('?') {
            Some((p, q)) => (p, q),
            None => (request.uri.as_str(), ""),
        };
        // The run's clock starts before the routes are matched: the host's time on them counts
        // toward the request's deadline and shows in its report, whatever the outcome.
        let mut store = self.shared.store(self.module.engine(), &self.name);
        let matched = self.route(request.method, path);
        if let Err(fault) = store.data_mut().quota.check_deadline() {
            return Invocation {
                result: Err(InvokeError::Fault {
                    function: self.name.clone(),
                    fault,
                }),
                report: sandbox::report(&store),
            };
        }
        let Some(matched) = matched else {
            return Invocation {
                result: Err(self.unrouted(request.method, path)),
                report: sandbox::report(&store),
            };
        };
        let mut params = matched.params;
        params.extend(routes::query_pairs(query));
        let wit_request = http_types::Request {
            method: request.method,
            uri: request.uri,
            headers: request
                .headers
                .into_iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value))
                .collect(),
            params,
            // Spiderlightning hands every request a body, empty when none was sent.
            body: Some(request.body),
        };
        let function = format!("{}::handle-http({})", self.name, Clipped(&matched.handler));
        let result = self.run(&mut store, &function, &matched.handler, &wit_request);
        Invocation {
            result,
            report: sandbox::report(&store),
        }
    }

    /// Why no route answers `method path`: another method would (405), or none does (404,
    /// listing the routes).
    fn unrouted(&self, method: Method, path: &str) -> InvokeError {
        let allowed = routes::allowed_methods(&self.routes, path);
        if allowed.is_empty() {
            return InvokeError::NoRoute {
                function: self.name.clone(),
                method: method.as_str(),
                path: clip(path, GUEST_TEXT_MAX),
                routes: routes::listing(&self.routes, GUEST_TEXT_MAX),
            };
        }
        InvokeError::MethodNotAllowed {
            function: self.name.clone(),
            method: method.as_str(),
            path: clip(path, GUEST_TEXT_MAX),
            allowed: allowed
                .iter()
                .map(|method| method.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    fn run(
        &self,
        store: &mut GuestStore,
        function: &str,
        handler: &str,
        request: &http_types::Request,
    ) -> Result<GuestResponse, InvokeError> {
        let exports = instantiate(store, &self.linker, &self.module, function)?;
        let response = exports
            .call_handle_http(store, &handler.to_string(), request)
            .map_err(|e| fault(store, function, e))?
            .map_err(|error| match error {
                // The error path may not smuggle out a status the response path refuses.
                HttpError::StatusError(status) if !(200..=599).contains(&status) => {
                    InvokeError::InvalidStatus {
                        function: function.to_string(),
                        status,
                    }
                }
                error => InvokeError::Guest {
                    function: function.to_string(),
                    error: clipped(error),
                },
            })?;
        if !(200..=599).contains(&response.status) {
            return Err(InvokeError::InvalidStatus {
                function: function.to_string(),
                status: response.status,
            });
        }
        Ok(GuestResponse {
            status: response.status,
            headers: response.headers.unwrap_or_default(),
            body: response.body.unwrap_or_default(),
        })
    }
}
