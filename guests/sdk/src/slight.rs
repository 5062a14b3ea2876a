//! Spiderlightning compatibility: a guest written for `slight` builds here by changing its
//! `use` lines (and its `Cargo.toml`):
//!
//! ```ignore
//! use http_server::*;
//! use keyvalue::*;
//! use uniwasm_sdk::slight::{on_server_init, register_handler, wit_bindgen_rust, wit_error_rs};
//!
//! wit_bindgen_rust::import!("../../wit/http-server.wit");
//! wit_bindgen_rust::export!("../../wit/http-server-export.wit");
//! wit_bindgen_rust::import!("../../wit/keyvalue.wit");
//! wit_error_rs::impl_error!(http_server::HttpRouterError);
//! wit_error_rs::impl_error!(keyvalue::KeyvalueError);
//!
//! #[on_server_init]
//! fn main() -> anyhow::Result<()> {
//!     let router = Router::new()?.get("/hello", "handle_hello")?;
//!     let _ = Server::serve("0.0.0.0:3000", &router)?;
//!     Ok(())
//! }
//!
//! #[register_handler]
//! fn handle_hello(req: Request) -> Result<Response, HttpError> { /* … */ }
//! ```
//!
//! What differs from `slight` underneath: one `handle-http` export dispatches to the
//! registered handlers by name (`-` and `_` are the same character in names), the address given
//! to `serve` is ignored (the host serves the function at `/{function}/…`), and the error types
//! already implement `Display` and `Error` (`impl_error!` expands to nothing).

use std::sync::Mutex;

use crate::bindings::uniwasm::platform::http_server as wit;
pub use crate::bindings::uniwasm::platform::http_server::HttpRouterError;
use crate::{HttpError, Method, Request, Response};

pub use uniwasm_sdk_macros::{on_server_init, register_handler};

/// Stand-ins for the `wit_bindgen_rust` macros: `import!("…/http-server.wit")` and
/// `import!("…/keyvalue.wit")` declare modules `http_server` and `keyvalue` with this layer's
/// types; `export!("…/http-server-export.wit")` expands to nothing.
pub mod wit_bindgen_rust {
    pub use uniwasm_sdk_macros::{export, import};
}

/// Stand-in for `wit_error_rs`: the error types already implement `Display` and `Error`.
pub mod wit_error_rs {
    pub use crate::__slight_impl_error as impl_error;
}

#[doc(hidden)]
#[macro_export]
macro_rules! __slight_impl_error {
    ($($error:tt)*) => {};
}

/// Spiderlightning's `http-server` interface.
pub mod http_server {
    pub use super::{HttpRouterError, Router, Server};
    pub use crate::{HttpError, Method, Request, Response};
}

/// Spiderlightning's `keyvalue` interface.
pub mod keyvalue {
    pub use crate::{Keyvalue, KeyvalueError};
}

/// Routes (Spiderlightning's `router`): each call returns a new router with one more route; a
/// route the host refuses is an error.
pub struct Router(wit::Router);

impl Router {
    /// A router without routes.
    pub fn new() -> Result<Self, HttpRouterError> {
        Self::new_with_base("")
    }

    /// A router whose routes are all below `base` (e.g. `/api`).
    pub fn new_with_base(base: &str) -> Result<Self, HttpRouterError> {
        wit::Router::new_with_base(base).map(Self)
    }

    /// Routes `GET route` to the handler named `handler`.
    pub fn get(&self, route: &str, handler: &str) -> Result<Self, HttpRouterError> {
        self.add(Method::Get, route, handler)
    }

    /// Routes `PUT route` to the handler named `handler`.
    pub fn put(&self, route: &str, handler: &str) -> Result<Self, HttpRouterError> {
        self.add(Method::Put, route, handler)
    }

    /// Routes `POST route` to the handler named `handler`.
    pub fn post(&self, route: &str, handler: &str) -> Result<Self, HttpRouterError> {
        self.add(Method::Post, route, handler)
    }

    /// Routes `DELETE route` to the handler named `handler`.
    pub fn delete(&self, route: &str, handler: &str) -> Result<Self, HttpRouterError> {
        self.add(Method::Delete, route, handler)
    }

    fn add(&self, method: Method, route: &str, handler: &str) -> Result<Self, HttpRouterError> {
        self.0.add_route(method, route, handler).map(Self)
    }
}

/// A served router (Spiderlightning's `server`).
pub struct Server(wit::Server);

impl Server {
    /// Serves `router`'s routes; `address` is not used (the host decides where functions are
    /// reachable).
    pub fn serve(address: &str, router: &Router) -> Result<Self, HttpRouterError> {
        wit::Server::serve(address, &router.0).map(Self)
    }

    /// Stops serving: called in `on-server-init`, the function serves no routes.
    pub fn stop(&self) -> Result<(), HttpRouterError> {
        self.0.stop()
    }
}

/// A handler as `#[register_handler]` registers it.
pub type Handler = fn(Request) -> Result<Response, HttpError>;

static HANDLERS: Mutex<Vec<(&'static str, Handler)>> = Mutex::new(Vec::new());

/// Adds `handler` under `name` (called by `#[register_handler]` when the module starts).
#[doc(hidden)]
pub fn register_handler_fn(name: &'static str, handler: Handler) {
    if let Ok(mut handlers) = HANDLERS.lock() {
        handlers.push((name, handler));
    }
}

/// Whether two handler names are the same, `-` and `_` counting as one character.
pub fn same_handler_name(a: &str, b: &str) -> bool {
    let unify = |c: u8| if c == b'-' { b'_' } else { c };
    a.len() == b.len() && a.bytes().map(unify).eq(b.bytes().map(unify))
}

/// Runs the registered handler called `name` (the `handle-http` export of `#[on_server_init]`).
#[doc(hidden)]
pub fn dispatch(name: &str, req: Request) -> Result<Response, HttpError> {
    let found = HANDLERS.lock().ok().and_then(|handlers| {
        handlers
            .iter()
            .find(|(registered, _)| same_handler_name(registered, name))
            .map(|(_, handler)| *handler)
    });
    match found {
        Some(handler) => handler(req),
        None => Err(HttpError::UnexpectedError(format!(
            "no handler named {name:?}"
        ))),
    }
}
