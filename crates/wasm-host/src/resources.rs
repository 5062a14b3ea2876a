//! What a guest holds on the host during one run (routers, open stores) and the host side of
//! the `http-server` and `keyvalue` imports. Everything held is charged to the run's budget.

use std::sync::Arc;

use keyvalue::{Bounds, KeyValue, KvError};
use sandbox::{Fault, Guest, Spend};

use crate::abi::Resource;
use crate::bindings::{http_server, keyvalue as kv};
use crate::guest_log::RunLog;
use crate::routes::Route;
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
    routers: Vec<Option<RouteList>>,
    stores: Vec<Option<String>>,
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

fn add_route(
    state: &mut State,
    this: Resource<http_server::Router>,
    method: Method,
    route: String,
    handler: String,
) -> Result<Resource<http_server::Router>, Fault> {
    let previous = slot(&mut state.host.routers, this.handle(), "router")?
        .clone()
        .flatten();
    let new_route = Route::new(method, &route, &handler).map_err(|e| Fault::Host(e.to_string()))?;
    let len = previous.as_ref().map_or(0, |node| node.len) + 1;
    if len > MAX_ROUTES {
        return Err(Fault::Host(format!("more than {MAX_ROUTES} routes")));
    }
    state
        .quota
        .charge(route.len() + handler.len() + ROUTE_OVERHEAD)?;
    let node = Arc::new(RouteNode {
        route: new_route,
        len,
        previous,
    });
    let handle = insert(&mut state.host.routers, state.host.max_handles, Some(node))?;
    Ok(Resource::new(handle))
}

impl http_server::Host for State {
    fn router_new(&mut self) -> Result<Resource<http_server::Router>, Fault> {
        self.quota.charge(ROUTE_OVERHEAD)?;
        Ok(Resource::new(insert(
            &mut self.host.routers,
            self.host.max_handles,
            None,
        )?))
    }

    fn router_get(
        &mut self,
        this: Resource<http_server::Router>,
        route: String,
        handler: String,
    ) -> Result<Resource<http_server::Router>, Fault> {
        add_route(self, this, Method::Get, route, handler)
    }

    fn router_put(
        &mut self,
        this: Resource<http_server::Router>,
        route: String,
        handler: String,
    ) -> Result<Resource<http_server::Router>, Fault> {
        add_route(self, this, Method::Put, route, handler)
    }

    fn router_post(
        &mut self,
        this: Resource<http_server::Router>,
        route: String,
        handler: String,
    ) -> Result<Resource<http_server::Router>, Fault> {
        add_route(self, this, Method::Post, route, handler)
    }

    fn router_delete(
        &mut self,
        this: Resource<http_server::Router>,
        route: String,
        handler: String,
    ) -> Result<Resource<http_server::Router>, Fault> {
        add_route(self, this, Method::Delete, route, handler)
    }

    fn serve(
        &mut self,
        _address: String,
        router: Resource<http_server::Router>,
    ) -> Result<Result<(), HttpError>, Fault> {
        let list = slot(&mut self.host.routers, router.handle(), "router")?
            .clone()
            .flatten();
        let count = list.as_ref().map_or(0, |node| node.len);
        self.quota
            .charge(count.saturating_mul(std::mem::size_of::<Route>()))?;
        self.host.served = Some(routes_in_order(&list));
        Ok(Ok(()))
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
