//! Loading functions and answering requests with them.

use std::sync::Arc;

use keyvalue::{KeyValue, KvError};
use wasmi::{Engine, ExternType, Linker, Module, Store, StoreLimits, StoreLimitsBuilder};

use crate::abi::Resource;
use crate::bindings::{self, http_server, http_types, keyvalue as kv};
use crate::glue::{CallError, HostTrap};
use crate::routes::{self, Route, RouteMatch};
use crate::{HttpError, Method};

/// Limits applied to every guest call.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Fuel (roughly: wasm instructions) for one call of `on-server-init` or `handle-http`.
    pub fuel_per_call: u64,
    /// Largest linear memory a guest may grow to, in bytes.
    pub max_memory_bytes: usize,
    /// Most resource handles (routers, stores) a guest may hold at once.
    pub max_handles: usize,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            fuel_per_call: 100_000_000,
            max_memory_bytes: 64 << 20,
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
}

/// Why a request could not be answered by the guest.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// No registered route matches.
    #[error("no route for {method} {path}")]
    NoRoute { method: &'static str, path: String },
    /// The call used up its fuel (an endless or too long computation).
    #[error("{function}: out of fuel")]
    OutOfFuel { function: String },
    /// The guest tried to grow its memory past the limit.
    #[error("{function}: memory limit exceeded: {message}")]
    MemoryLimit { function: String, message: String },
    /// The guest trapped (or a host function trapped it).
    #[error("{function} trapped: {message}")]
    Trap { function: String, message: String },
    /// The guest broke the canonical ABI (bad pointer, UTF-8, discriminant, ...).
    #[error("{function}: invalid data from guest: {error}")]
    Abi {
        function: String,
        error: crate::abi::AbiError,
    },
    /// Creating the instance failed.
    #[error("instantiating {function} failed: {message}")]
    Instantiate { function: String, message: String },
    /// The guest answered with an `http-error`.
    #[error("{function} returned an error: {error}")]
    Guest { function: String, error: HttpError },
    /// The guest answered with a status outside 100..=599.
    #[error("{function} returned invalid status {status}")]
    InvalidStatus { function: String, status: u16 },
}

impl InvokeError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            InvokeError::NoRoute { .. } => 404,
            InvokeError::OutOfFuel { .. } => 504,
            InvokeError::Guest { error, .. } => error.status(),
            InvokeError::MemoryLimit { .. }
            | InvokeError::Trap { .. }
            | InvokeError::Abi { .. }
            | InvokeError::Instantiate { .. }
            | InvokeError::InvalidStatus { .. } => 500,
        }
    }

    fn from_call(function: String, error: CallError) -> Self {
        match error {
            CallError::Abi(error) => InvokeError::Abi { function, error },
            CallError::Wasm(e) => {
                if let Some(error) = e.downcast_ref::<crate::abi::AbiError>() {
                    return InvokeError::Abi {
                        function,
                        error: error.clone(),
                    };
                }
                if e.as_trap_code() == Some(wasmi::TrapCode::OutOfFuel) {
                    return InvokeError::OutOfFuel { function };
                }
                if e.as_trap_code() == Some(wasmi::TrapCode::GrowthOperationLimited)
                    || matches!(e.kind(), wasmi::errors::ErrorKind::Memory(_))
                {
                    return InvokeError::MemoryLimit {
                        function,
                        message: e.to_string(),
                    };
                }
                InvokeError::Trap {
                    function,
                    message: e.to_string(),
                }
            }
        }
    }
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
    /// Status code (100..=599).
    pub status: u16,
    /// Header fields set by the guest.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

struct Shared {
    engine: Engine,
    linker: Linker<HostState>,
    kv: Arc<dyn KeyValue>,
    config: HostConfig,
}

/// Compiles guests and shares the engine, linker and key-value backend between them.
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

/// A loaded guest: compiled once, instantiated afresh for every request.
#[derive(Clone)]
pub struct Function {
    name: String,
    module: Module,
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
        let mut wasm_config = wasmi::Config::default();
        wasm_config.consume_fuel(true);
        let engine = Engine::new(&wasm_config);
        let mut linker = Linker::new(&engine);
        // The generated registration cannot fail on a fresh linker except by a bug in build.rs.
        #[allow(clippy::expect_used)]
        bindings::add_to_linker(&mut linker).expect("world imports are registered once");
        Self {
            shared: Arc::new(Shared {
                engine,
                linker,
                kv,
                config,
            }),
        }
    }

    /// Compiles `wasm`, checks it against the world, and runs `on-server-init` to learn its routes.
    pub fn load(&self, name: &str, wasm: &[u8]) -> Result<Function, LoadError> {
        let function = name.to_string();
        let module =
            Module::new(&self.shared.engine, wasm).map_err(|e| LoadError::InvalidModule {
                function: function.clone(),
                message: e.to_string(),
            })?;
        check_imports(&function, &module)?;
        check_exports(&function, &module)?;
        let mut store = self.shared.store();
        let exports = instantiate(&self.shared, &mut store, &module, &function).map_err(|e| {
            LoadError::Init {
                function: function.clone(),
                error: Box::new(e),
            }
        })?;
        let init = exports
            .call_on_server_init(&mut store)
            .map_err(|e| InvokeError::from_call(format!("{function}::on-server-init"), e));
        match init {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                let error = InvokeError::Guest {
                    function: format!("{function}::on-server-init"),
                    error,
                };
                return Err(LoadError::Init {
                    function,
                    error: Box::new(error),
                });
            }
            Err(error) => {
                return Err(LoadError::Init {
                    function,
                    error: Box::new(error),
                });
            }
        }
        let routes = store.into_data().served.ok_or(LoadError::NotServed {
            function: function.clone(),
        })?;
        Ok(Function {
            name: function,
            module,
            routes: Arc::new(routes),
            shared: self.shared.clone(),
        })
    }
}

impl Shared {
    fn store(&self) -> Store<HostState> {
        let state = HostState {
            kv: self.kv.clone(),
            routers: Vec::new(),
            stores: Vec::new(),
            served: None,
            max_handles: self.config.max_handles,
            limits: StoreLimitsBuilder::new()
                .memory_size(self.config.max_memory_bytes)
                .instances(1)
                .memories(1)
                .tables(4)
                .trap_on_grow_failure(true)
                .build(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // Fuel metering is enabled in `FunctionHost::new`, so this cannot fail.
        let _ = store.set_fuel(self.config.fuel_per_call);
        store
    }
}

fn instantiate(
    shared: &Shared,
    store: &mut Store<HostState>,
    module: &Module,
    function: &str,
) -> Result<bindings::Exports, InvokeError> {
    let instance = shared
        .linker
        .instantiate_and_start(&mut *store, module)
        .map_err(|e| match e.kind() {
            wasmi::errors::ErrorKind::Memory(_) => InvokeError::MemoryLimit {
                function: function.into(),
                message: e.to_string(),
            },
            _ => InvokeError::Instantiate {
                function: function.into(),
                message: e.to_string(),
            },
        })?;
    bindings::Exports::new(&*store, &instance).map_err(|e| InvokeError::Instantiate {
        function: function.into(),
        message: e.to_string(),
    })
}

fn check_imports(function: &str, module: &Module) -> Result<(), LoadError> {
    for import in module.imports() {
        let unknown = || LoadError::UnknownImport {
            function: function.into(),
            module: import.module().into(),
            name: import.name().into(),
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
                module: import.module().into(),
                name: import.name().into(),
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

    /// The routes registered by `on-server-init`, in registration order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The handler answering `method path` and the route parameters, if any route matches.
    pub fn route(&self, method: Method, path: &str) -> Option<RouteMatch> {
        routes::find(&self.routes, method, path)
    }

    /// Answers `request` with a fresh instance of the guest.
    pub fn handle(&self, request: GuestRequest) -> Result<GuestResponse, InvokeError> {
        let (path, query) = match request.uri.split_once('?') {
            Some((p, q)) => (p, q),
            None => (request.uri.as_str(), ""),
        };
        let matched = self
            .route(request.method, path)
            .ok_or_else(|| InvokeError::NoRoute {
                method: request.method.as_str(),
                path: path.into(),
            })?;
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
            body: if request.body.is_empty() {
                None
            } else {
                Some(request.body)
            },
        };
        let function = format!("{}::handle-http({})", self.name, matched.handler);
        let mut store = self.shared.store();
        let exports = instantiate(&self.shared, &mut store, &self.module, &function)?;
        let response = exports
            .call_handle_http(&mut store, &matched.handler, &wit_request)
            .map_err(|e| InvokeError::from_call(function.clone(), e))?
            .map_err(|error| InvokeError::Guest {
                function: function.clone(),
                error,
            })?;
        if !(100..=599).contains(&response.status) {
            return Err(InvokeError::InvalidStatus {
                function,
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

/// Per-request host state: the resource tables of one instance.
struct HostState {
    kv: Arc<dyn KeyValue>,
    routers: Vec<Option<Vec<Route>>>,
    stores: Vec<Option<String>>,
    served: Option<Vec<Route>>,
    max_handles: usize,
    limits: StoreLimits,
}

fn insert<T>(table: &mut Vec<Option<T>>, max: usize, value: T) -> Result<u32, HostTrap> {
    if let Some(i) = table.iter().position(Option::is_none) {
        table[i] = Some(value);
        return Ok(i as u32 + 1);
    }
    if table.len() >= max {
        return Err(HostTrap(format!("more than {max} live handles")));
    }
    table.push(Some(value));
    Ok(table.len() as u32)
}

fn lookup<T>(table: &[Option<T>], handle: u32, what: &str) -> Result<usize, HostTrap> {
    let index = (handle as usize).wrapping_sub(1);
    match table.get(index) {
        Some(Some(_)) => Ok(index),
        _ => Err(HostTrap(format!("invalid {what} handle {handle}"))),
    }
}

impl HostState {
    fn add_route(
        &mut self,
        this: Resource<http_server::Router>,
        method: Method,
        route: String,
        handler: String,
    ) -> Result<Resource<http_server::Router>, HostTrap> {
        let index = lookup(&self.routers, this.handle(), "router")?;
        let new_route =
            Route::new(method, &route, &handler).map_err(|e| HostTrap(e.to_string()))?;
        let mut routes = self.routers[index].clone().unwrap_or_default();
        routes.push(new_route);
        Ok(Resource::new(insert(
            &mut self.routers,
            self.max_handles,
            routes,
        )?))
    }

    fn store_name(&self, this: Resource<kv::Store>) -> Result<String, HostTrap> {
        let index = lookup(&self.stores, this.handle(), "store")?;
        Ok(self.stores[index].clone().unwrap_or_default())
    }
}

impl http_server::Host for HostState {
    fn router_new(&mut self) -> Result<Resource<http_server::Router>, HostTrap> {
        Ok(Resource::new(insert(
            &mut self.routers,
            self.max_handles,
            Vec::new(),
        )?))
    }

    fn router_get(
        &mut self,
        this: Resource<http_server::Router>,
        route: String,
        handler: String,
    ) -> Result<Resource<http_server::Router>, HostTrap> {
        self.add_route(this, Method::Get, route, handler)
    }

    fn router_put(
        &mut self,
        this: Resource<http_server::Router>,
        route: String,
        handler: String,
    ) -> Result<Resource<http_server::Router>, HostTrap> {
        self.add_route(this, Method::Put, route, handler)
    }

    fn router_post(
        &mut self,
        this: Resource<http_server::Router>,
        route: String,
        handler: String,
    ) -> Result<Resource<http_server::Router>, HostTrap> {
        self.add_route(this, Method::Post, route, handler)
    }

    fn router_delete(
        &mut self,
        this: Resource<http_server::Router>,
        route: String,
        handler: String,
    ) -> Result<Resource<http_server::Router>, HostTrap> {
        self.add_route(this, Method::Delete, route, handler)
    }

    fn serve(
        &mut self,
        _address: String,
        router: Resource<http_server::Router>,
    ) -> Result<Result<(), HttpError>, HostTrap> {
        let index = lookup(&self.routers, router.handle(), "router")?;
        self.served = self.routers[index].clone();
        Ok(Ok(()))
    }

    fn router_drop(&mut self, handle: Resource<http_server::Router>) -> Result<(), HostTrap> {
        let index = lookup(&self.routers, handle.handle(), "router")?;
        self.routers[index] = None;
        Ok(())
    }
}

fn kv_error(e: KvError) -> kv::KeyvalueError {
    match e {
        KvError::KeyNotFound(m) => kv::KeyvalueError::KeyNotFound(m),
        KvError::InvalidKey(m) => kv::KeyvalueError::InvalidKey(m),
        KvError::Connection(m) => kv::KeyvalueError::ConnectionError(m),
        KvError::Io(m) => kv::KeyvalueError::IoError(m),
        KvError::Unexpected(m) => kv::KeyvalueError::UnexpectedError(m),
    }
}

impl kv::Host for HostState {
    fn store_open(
        &mut self,
        name: String,
    ) -> Result<Result<Resource<kv::Store>, kv::KeyvalueError>, HostTrap> {
        if let Err(e) = self.kv.open(&name) {
            return Ok(Err(kv_error(e)));
        }
        Ok(Ok(Resource::new(insert(
            &mut self.stores,
            self.max_handles,
            name,
        )?)))
    }

    fn store_get(
        &mut self,
        this: Resource<kv::Store>,
        key: String,
    ) -> Result<Result<Vec<u8>, kv::KeyvalueError>, HostTrap> {
        let store = self.store_name(this)?;
        Ok(self.kv.get(&store, &key).map_err(kv_error))
    }

    fn store_set(
        &mut self,
        this: Resource<kv::Store>,
        key: String,
        value: Vec<u8>,
    ) -> Result<Result<(), kv::KeyvalueError>, HostTrap> {
        let store = self.store_name(this)?;
        Ok(self.kv.set(&store, &key, &value).map_err(kv_error))
    }

    fn store_keys(
        &mut self,
        this: Resource<kv::Store>,
    ) -> Result<Result<Vec<String>, kv::KeyvalueError>, HostTrap> {
        let store = self.store_name(this)?;
        Ok(self.kv.keys(&store).map_err(kv_error))
    }

    fn store_delete(
        &mut self,
        this: Resource<kv::Store>,
        key: String,
    ) -> Result<Result<(), kv::KeyvalueError>, HostTrap> {
        let store = self.store_name(this)?;
        Ok(self.kv.delete(&store, &key).map_err(kv_error))
    }

    fn store_drop(&mut self, handle: Resource<kv::Store>) -> Result<(), HostTrap> {
        let index = lookup(&self.stores, handle.handle(), "store")?;
        self.stores[index] = None;
        Ok(())
    }
}
