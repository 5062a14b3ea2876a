//! What a guest holds on the host during one run (routers, open stores) and the host side of
//! the `http-server` and `keyvalue` imports. Everything held is charged to the run's budget.

use std::sync::Arc;

use keyvalue::{Bounds, KeyValue, KvError};
use sandbox::{Fault, Guest, Spend};

use crate::abi::Resource;
use crate::bindings::{http_server, keyvalue as kv};
use crate::guest_log::RunLog;
use crate::routes::{MAX_PATTERN_BYTES, Route, RouteError};
use crate::{HttpError, Method};

/// Most routes a guest may serve: every request is matched against all of them on the host.
pub const MAX_ROUTES: usize = 1024;

/// Host bytes charged per route besides its strings (the node, its `Arc`, the handle slot).
const ROUTE_OVERHEAD: usize = 96;

/// Host bytes charged per open store handle besides its name.
const STORE_OVERHEAD: usize = 32;

/// A router's routes: a shared list that each `get`/`put`/... extends by one node, so chaining
/// costs one node per call however many routers share the tail.
#[derive(Debug)]
struct RouteNode {
    route: Route,
    len: usize,
    previous: Option<Arc<RouteNode>>,
}

type RouteList = Option<Arc<RouteNode>>;

/// What a router handle holds: the prefix of its patterns and its routes.
#[derive(Debug, Clone, Default)]
struct RouterEntry {
    /// Prepended to every pattern added (`new-with-base`); empty for none.
    base: Arc<str>,
    routes: RouteList,
}

fn routes_in_order(list: &RouteList) -> Vec<Route> {
    let mut routes = Vec::with_capacity(list.as_ref().map_or(0, |node| node.len));
    let mut node = list.as_deref();
    while let Some(current) = node {
        routes.push(current.route.clone());
        node = current.previous.as_deref();
    }
    routes.reverse();
    routes
}

/// The host state of one run.
pub(crate) struct HostState {
    kv: Arc<dyn KeyValue>,
    routers: Vec<Option<RouterEntry>>,
    stores: Vec<Option<String>>,
    /// Live `server` handles (they hold nothing).
    servers: Vec<Option<()>>,
    /// The routes given to `serve`.
    pub(crate) served: Option<Vec<Route>>,
    max_handles: usize,
    /// What the run wrote to the log.
    pub(crate) log: RunLog,
}

impl HostState {
    pub(crate) fn new(kv: Arc<dyn KeyValue>, max_handles: usize, function: &str) -> Self {
        Self {
            kv,
            routers: Vec::new(),
            stores: Vec::new(),
            servers: Vec::new(),
            served: None,
            max_handles,
            log: RunLog::new(function),
        }
    }
}

/// Stores `value` in a free slot of `table` (or a new one, up to `max`); returns its handle.
fn insert<T>(table: &mut Vec<Option<T>>, max: usize, value: T) -> Result<u32, Fault> {
    if let Some((index, slot)) = table.iter_mut().enumerate().find(|(_, s)| s.is_none()) {
        *slot = Some(value);
        return Ok(index as u32 + 1);
    }
    if table.len() >= max {
        return Err(Fault::Host(format!("more than {max} live handles")));
    }
    table.push(Some(value));
    Ok(table.len() as u32)
}

/// The occupied slot of `handle`.
fn slot<'a, T>(
    table: &'a mut [Option<T>],
    handle: u32,
    what: &str,
) -> Result<&'a mut Option<T>, Fault> {
    match table.get_mut((handle as usize).wrapping_sub(1)) {
        Some(slot) if slot.is_some() => Ok(slot),
        _ => Err(Fault::Host(format!("invalid {what} handle {handle}"))),
    }
}

type State = Guest<HostState>;

/// Adds `method route → handler` to the router `this` as a new router handle; a route the host
/// refuses is the inner error (the caller decides whether it traps), limits on the number of
/// routes and handles and the run's memory are faults.
fn add_route(
    state: &mut State,
    this: Resource<http_server::Router>,
    method: Method,
    route: &str,
    handler: &str,
) -> Result<Result<Resource<http_server::Router>, RouteError>, Fault> {
    let previous = slot(&mut state.host.routers, this.handle(), "router")?
        .clone()
        .unwrap_or_default();
    // The route itself must be a pattern: a base does not make "x" into "/basex".
    if !route.starts_with('/') {
        return Ok(Err(RouteError::NoLeadingSlash(route.into())));
    }
    let pattern = format!("{}{route}", previous.base);
    // `-` and `_` name the same handler: guests written for Spiderlightning route to
    // `delete-file` what Rust calls `delete_file`.
    let handler = handler.replace('-', "_");
    let new_route = match Route::new(method, &pattern, &handler) {
        Ok(new_route) => new_route,
        Err(
            limit @ (RouteError::PatternTooLong { .. }
            | RouteError::TooManySegments { .. }
            | RouteError::HandlerTooLong { .. }),
        ) => return Err(Fault::Host(limit.to_string())),
        Err(error) => return Ok(Err(error)),
    };
    let len = previous.routes.as_ref().map_or(0, |node| node.len) + 1;
    if len > MAX_ROUTES {
        return Err(Fault::Host(format!("more than {MAX_ROUTES} routes")));
    }
    state
        .quota
        .charge(pattern.len() + handler.len() + ROUTE_OVERHEAD)?;
    let node = Arc::new(RouteNode {
        route: new_route,
        len,
        previous: previous.routes,
    });
    let entry = RouterEntry {
        base: previous.base,
        routes: Some(node),
    };
    let handle = insert(&mut state.host.routers, state.host.max_handles, entry)?;
    Ok(Ok(Resource::new(handle)))
}

/// [`add_route`] for the router methods that trap on a bad route.
fn add_route_or_trap(
    state: &mut State,
    this: Resource<http_server::Router>,
    method: Method,
    route: &str,
    handler: &str,
) -> Result<Resource<http_server::Router>, Fault> {
    add_route(state, this, method, route, handler)?.map_err(|e| Fault::Host(e.to_string()))
}

/// The routes of the router `router`, charged to the run, become the ones it serves.
fn serve_router(state: &mut State, router: Resource<http_server::Router>) -> Result<(), Fault> {
    let list = slot(&mut state.host.routers, router.handle(), "router")?
        .clone()
        .unwrap_or_default()
        .routes;
    let count = list.as_ref().map_or(0, |node| node.len);
    state
        .quota
        .charge(count.saturating_mul(std::mem::size_of::<Route>()))?;
    state.host.served = Some(routes_in_order(&list));
    Ok(())
}

impl http_server::Host for State {
    fn router_new(&mut self) -> Result<Resource<http_server::Router>, Fault> {
        self.quota.charge(ROUTE_OVERHEAD)?;
        Ok(Resource::new(insert(
            &mut self.host.routers,
            self.host.max_handles,
            RouterEntry::default(),
        )?))
    }

    fn router_get(
        &mut self,
        this: Resource<http_server::Router>,
        route: String,
        handler: String,
    ) -> Result<Resource<http_server::Router>, Fault> {
        add_route_or_trap(self, this, Method::Get, &route, &handler)
    }

    fn router_put(
        &mut self,
        this: Resource<http_server::Router>,
        route: String,
        handler: String,
    ) -> Result<Resource<http_server::Router>, Fault> {
        add_route_or_trap(self, this, Method::Put, &route, &handler)
    }

    fn router_post(
        &mut self,
        this: Resource<http_server::Router>,
        route: String,
        handler: String,
    ) -> Result<Resource<http_server::Router>, Fault> {
        add_route_or_trap(self, this, Method::Post, &route, &handler)
    }

    fn router_delete(
        &mut self,
        this: Resource<http_server::Router>,
        route: String,
        handler: String,
    ) -> Result<Resource<http_server::Router>, Fault> {
        add_route_or_trap(self, this, Method::Delete, &route, &handler)
    }

    fn router_new_with_base(
        &mut self,
        base: String,
    ) -> Result<Result<Resource<http_server::Router>, http_server::HttpRouterError>, Fault> {
        let base = base.trim_end_matches('/');
        if !(base.is_empty() || base.starts_with('/')) || base.len() > MAX_PATTERN_BYTES {
            return Ok(Err(http_server::HttpRouterError::InvalidRoute(format!(
                "base \"{}\" is not empty and does not start with '/' or is longer than \
                 {MAX_PATTERN_BYTES} bytes",
                sandbox::Clipped(base)
            ))));
        }
        self.quota.charge(ROUTE_OVERHEAD + base.len())?;
        let entry = RouterEntry {
            base: base.into(),
            routes: None,
        };
        Ok(Ok(Resource::new(insert(
            &mut self.host.routers,
            self.host.max_handles,
            entry,
        )?)))
    }

    fn router_add_route(
        &mut self,
        this: Resource<http_server::Router>,
        method: Method,
        route: String,
        handler: String,
    ) -> Result<Result<Resource<http_server::Router>, http_server::HttpRouterError>, Fault> {
        Ok(add_route(self, this, method, &route, &handler)?
            .map_err(|e| http_server::HttpRouterError::InvalidRoute(e.to_string())))
    }

    fn serve(
        &mut self,
        _address: String,
        router: Resource<http_server::Router>,
    ) -> Result<Result<(), HttpError>, Fault> {
        serve_router(self, router)?;
        Ok(Ok(()))
    }

    fn server_serve(
        &mut self,
        _address: String,
        router: Resource<http_server::Router>,
    ) -> Result<Result<Resource<http_server::Server>, http_server::HttpRouterError>, Fault> {
        serve_router(self, router)?;
        let handle = insert(&mut self.host.servers, self.host.max_handles, ())?;
        Ok(Ok(Resource::new(handle)))
    }

    fn server_stop(
        &mut self,
        this: Resource<http_server::Server>,
    ) -> Result<Result<(), http_server::HttpRouterError>, Fault> {
        slot(&mut self.host.servers, this.handle(), "server")?;
        self.host.served = None;
        Ok(Ok(()))
    }

    fn server_drop(&mut self, handle: Resource<http_server::Server>) -> Result<(), Fault> {
        *slot(&mut self.host.servers, handle.handle(), "server")? = None;
        Ok(())
    }

    fn router_drop(&mut self, handle: Resource<http_server::Router>) -> Result<(), Fault> {
        *slot(&mut self.host.routers, handle.handle(), "router")? = None;
        // The handle's own charge; its routes may be shared by other routers and stay charged.
        self.quota.budget.release(ROUTE_OVERHEAD);
        Ok(())
    }
}

/// The key-value error a guest sees, or the fault that stops it: a deadline that passed
/// while the backend waited, or a reply larger than the run's memory budget. A backend that is
/// full ([`KvError::Full`]) is an error the guest sees: its write failed, the run goes on.
fn kv_outcome<T>(
    state: &mut State,
    result: Result<T, KvError>,
) -> Result<Result<T, kv::KeyvalueError>, Fault> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(KvError::Timeout(_)) => Err(state.quota.fail(Fault::Timeout {
            limit: state.quota.limits().timeout,
        })),
        Err(KvError::TooLarge { limit, size }) => Err(state.quota.fail(Fault::Memory {
            spent: Spend::HostAllocation,
            needed: size.unwrap_or(limit.saturating_add(1)),
            used: state.quota.budget.used(),
            limit: state.quota.budget.limit(),
        })),
        Err(error) => Ok(Err(kv_error(error))),
    }
}

fn kv_error(e: KvError) -> kv::KeyvalueError {
    match e {
        KvError::KeyNotFound(m) => kv::KeyvalueError::KeyNotFound(m),
        KvError::InvalidKey(m) => kv::KeyvalueError::InvalidKey(m),
        KvError::Connection(m) => kv::KeyvalueError::ConnectionError(m),
        KvError::Io(m) => kv::KeyvalueError::IoError(m),
        KvError::InvalidValue(m) => kv::KeyvalueError::InvalidValue(m),
        KvError::Authentication(m) => kv::KeyvalueError::AuthenticationError(m),
        KvError::BackendTimeout(m) => kv::KeyvalueError::TimeoutError(m),
        // The write failed and the guest may go on (delete keys, answer an error of its own).
        full @ KvError::Full { .. } => kv::KeyvalueError::IoError(full.to_string()),
        other => kv::KeyvalueError::UnexpectedError(other.to_string()),
    }
}

/// What a key-value call may cost: the run's remaining time and memory.
fn bounds(state: &State) -> Bounds {
    Bounds {
        deadline: state.quota.deadline(),
        max_reply_bytes: state.quota.budget.available(),
    }
}

fn store_name(state: &mut State, this: Resource<kv::Store>) -> Result<String, Fault> {
    Ok(slot(&mut state.host.stores, this.handle(), "store")?
        .clone()
        .unwrap_or_default())
}

impl kv::Host for State {
    fn store_open(
        &mut self,
        name: String,
    ) -> Result<Result<Resource<kv::Store>, kv::KeyvalueError>, Fault> {
        let opened = self.host.kv.open(&name, &bounds(self));
        if let Err(error) = kv_outcome(self, opened)? {
            return Ok(Err(error));
        }
        self.quota.charge(name.len() + STORE_OVERHEAD)?;
        Ok(Ok(Resource::new(insert(
            &mut self.host.stores,
            self.host.max_handles,
            name,
        )?)))
    }

    fn store_get(
        &mut self,
        this: Resource<kv::Store>,
        key: String,
    ) -> Result<Result<Vec<u8>, kv::KeyvalueError>, Fault> {
        let store = store_name(self, this)?;
        let value = self.host.kv.get(&store, &key, &bounds(self));
        let value = kv_outcome(self, value)?;
        if let Ok(value) = &value {
            self.quota.charge_transient(value.len())?;
        }
        Ok(value)
    }

    fn store_set(
        &mut self,
        this: Resource<kv::Store>,
        key: String,
        value: Vec<u8>,
    ) -> Result<Result<(), kv::KeyvalueError>, Fault> {
        let store = store_name(self, this)?;
        let done = self.host.kv.set(&store, &key, &value, &bounds(self));
        kv_outcome(self, done)
    }

    fn store_keys(
        &mut self,
        this: Resource<kv::Store>,
    ) -> Result<Result<Vec<String>, kv::KeyvalueError>, Fault> {
        let store = store_name(self, this)?;
        let keys = self.host.kv.keys(&store, &bounds(self));
        let keys = kv_outcome(self, keys)?;
        if let Ok(keys) = &keys {
            // What the backend checked against the budget before it listed them.
            self.quota.charge_transient(keyvalue::listing_cost(keys))?;
        }
        Ok(keys)
    }

    fn store_delete(
        &mut self,
        this: Resource<kv::Store>,
        key: String,
    ) -> Result<Result<(), kv::KeyvalueError>, Fault> {
        let store = store_name(self, this)?;
        let done = self.host.kv.delete(&store, &key, &bounds(self));
        kv_outcome(self, done)
    }

    fn store_drop(&mut self, handle: Resource<kv::Store>) -> Result<(), Fault> {
        let name = slot(&mut self.host.stores, handle.handle(), "store")?.take();
        let held = name.map_or(0, |name| name.len() + STORE_OVERHEAD);
        self.quota.budget.release(held);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_errors_reach_the_guest_as_spiderlightnings_cases() {
        let cases = [
            (KvError::InvalidValue("v".into()), "InvalidValue"),
            (KvError::Authentication("a".into()), "AuthenticationError"),
            (KvError::BackendTimeout("t".into()), "TimeoutError"),
            (KvError::Connection("c".into()), "ConnectionError"),
            (KvError::KeyNotFound("k".into()), "KeyNotFound"),
        ];
        for (error, case) in cases {
            let guest = format!("{:?}", kv_error(error));
            assert!(guest.starts_with(case), "{guest} is not {case}");
        }
    }
}
