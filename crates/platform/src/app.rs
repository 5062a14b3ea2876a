//! The request handler of the whole server: which endpoint a request addresses, health and
//! stats. The admin API ([`crate::admin`]), function runs ([`crate::invoke`]) and boot-time
//! functions ([`crate::boot`]) are `App` methods in their own modules. Every failure is a
//! [`PlatformError`], turned into a response in one place.

use std::sync::Arc;
use std::time::Instant;

use http_front::{Handler, Request, Response, ServerStats};
use keyvalue::KeyValue;

use crate::boot::BootGate;
use crate::error::PlatformError;
use crate::functions::{Compiler, Deployed};
use crate::limits::FunctionLimits;
use crate::memory::MemoryPool;
use crate::registry::Registry;
use crate::route::{Route, route};
use crate::stats::Stats;

/// Version reported by `/healthz`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How the platform is set up at boot.
pub struct AppOptions {
    /// The function that also serves paths nothing else claims (`root=`).
    pub root: Option<String>,
    /// Bearer token of the admin API; `None` disables it.
    pub admin_token: Option<String>,
    /// Key-value backend for HTTP guests; the platform also keeps functions deployed through
    /// the admin API in it (store [`crate::function_store::FUNCTION_STORE`]), so that with
    /// Redis they survive reboots.
    pub kv: Arc<dyn KeyValue>,
    /// Limits of functions deployed without overrides.
    pub default_limits: FunctionLimits,
    /// Bytes that function runs may reserve at once, all requests together.
    pub memory_budget: usize,
    /// Bytes the server uses now (resident set, or heap under hermit), for `/metrics`.
    pub memory_in_use: fn() -> Option<u64>,
}

/// The server's handler. All state is behind `&self`; workers share one `App`.
pub struct App {
    started: Instant,
    pub(crate) stats: Stats,
    pub(crate) registry: Registry,
    pub(crate) compiler: Compiler,
    root: Option<String>,
    pub(crate) admin_token: Option<String>,
    pub(crate) default_limits: FunctionLimits,
    /// Where admin deploys are kept.
    pub(crate) kv: Arc<dyn KeyValue>,
    pub(crate) memory: MemoryPool,
    memory_in_use: fn() -> Option<u64>,
    pub(crate) boot: BootGate,
    pub(crate) fleet: crate::fleet::Fleet,
    pub(crate) shutdown: Option<Box<dyn Fn() + Send + Sync>>,
    /// The HTTP server's counters, for `/metrics`.
    server_stats: Option<Arc<ServerStats>>,
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
pub(crate) type Answer = Result<Response, PlatformError>;

pub(crate) fn not_found_function(name: &str) -> PlatformError {
    PlatformError::NotFound(format!("no function named {name:?}"))
}

impl App {
    /// A platform serving the functions kept in the key-value store by earlier admin deploys
    /// (none with a fresh or in-memory store).
    pub fn new(options: AppOptions) -> Self {
        if options.admin_token.is_none() {
            log::info!("admin API disabled: no admin-token= on the command line");
        }
        let app = App {
            started: Instant::now(),
            stats: Stats::new(),
            registry: Registry::default(),
            compiler: Compiler::new(Arc::clone(&options.kv)),
            root: options.root,
            admin_token: options.admin_token,
            default_limits: options.default_limits,
            kv: options.kv,
            memory: MemoryPool::new(options.memory_budget),
            memory_in_use: options.memory_in_use,
            boot: BootGate::default(),
            fleet: crate::fleet::Fleet::default(),
            shutdown: None,
            server_stats: None,
        };
        log::info!(
            "functions: memory budget {} bytes, default max-memory {} bytes per run",
            app.memory.total(),
            app.default_limits.max_memory
        );
        app.restore_functions();
        app
    }

    /// Enables `POST /_admin/shutdown`, which answers 202 and then calls `hook` (which should
    /// end the process soon, after the answer is sent).
    pub fn with_shutdown(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.shutdown = Some(Box::new(hook));
        self
    }

    /// Adds the HTTP server's connection and buffer counters to `/metrics`.
    pub fn with_server_stats(mut self, stats: Arc<ServerStats>) -> Self {
        self.server_stats = Some(stats);
        self
    }

    /// The function named `name`, once it is deployed if it is a boot function in progress.
    pub(crate) fn lookup(&self, name: &str) -> Option<Arc<Deployed>> {
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
                "functions": self.registry.len(),
            }),
        )
    }

    fn metrics(&self) -> Response {
        let mut text = self.stats.prometheus();
        text.push_str(&crate::stats::server_gauges(
            (self.memory_in_use)(),
            self.memory.total(),
            self.memory.reserved(),
        ));
        if let Some(usage) = self.kv.usage() {
            text.push_str(&crate::stats::kv_memory_gauges(usage.used, usage.limit));
        }
        if let Some(stats) = &self.server_stats {
            text.push_str(&crate::stats::http_server_metrics(stats));
        }
        Response::bytes(200, "text/plain; version=0.0.4", text)
    }

    pub(crate) fn require_get(request: &Request) -> Result<(), PlatformError> {
        if request.method == "GET" || request.method == "HEAD" {
            return Ok(());
        }
        Err(PlatformError::MethodNotAllowed {
            method: request.method.clone(),
            allowed: "GET, HEAD".into(),
        })
    }

    fn dispatch(&self, request: &Request) -> (Option<String>, Answer) {
        match route(&request.path) {
            Route::Health => (None, Self::require_get(request).map(|()| self.health())),
            Route::Metrics => (None, Self::require_get(request).map(|()| self.metrics())),
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
    use keyvalue::Bounds;

    use super::*;
    use crate::function_store::FUNCTION_STORE;

    fn app_with(kv: Arc<dyn KeyValue>) -> App {
        App::new(AppOptions {
            root: None,
            admin_token: Some("token".into()),
            kv,
            default_limits: FunctionLimits::default(),
            memory_budget: 1 << 30,
            memory_in_use: || None,
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
    fn the_deployer_gives_way_to_running_calls_but_not_for_ever() {
        static FUNCTIONS: &[(&str, &[u8])] = &[(
            "only",
            br#"(module (func (export "_start") (result i32) i32.const 1))"#,
        )];
        let app = Arc::new(app_with(Arc::new(keyvalue::MemoryStore::new())));
        let call = app.boot.call_running();
        let started = std::time::Instant::now();
        let deployer = App::deploy_in_background(&app, FUNCTIONS).expect("spawn deployer");
        std::thread::sleep(std::time::Duration::from_millis(30));
        if started.elapsed() < std::time::Duration::from_millis(90) {
            assert!(
                app.registry.get("only").is_none(),
                "deployed while a call was running"
            );
        }
        // A call that never ends delays the deployment by a bounded time only.
        deployer.join().expect("deployer");
        assert!(app.registry.get("only").is_some());
        drop(call);
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
        assert!(kv.get(FUNCTION_STORE, "gone", &Bounds::UNBOUNDED).is_err());

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
            kv.get(FUNCTION_STORE, "fresh", &Bounds::UNBOUNDED).is_err(),
            "boot-time functions are not stored"
        );
    }

    /// The engine holding the code of the function deployed as `name`.
    fn engine_of(app: &App, name: &str) -> wasm_faas::Engine {
        match &app.registry.get(name).expect("deployed").program {
            crate::functions::Program::Http(function) => function.engine().clone(),
            crate::functions::Program::Wasi(module)
            | crate::functions::Program::Nanoprocess(module) => module.engine().clone(),
        }
    }

    #[test]
    fn replaced_and_deleted_functions_free_their_code() {
        let app = app_with(Arc::new(keyvalue::MemoryStore::new()));
        let http = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../guests/hostile/good_http.wat"),
        )
        .expect("good_http.wat");
        const WASI: &[u8] =
            br#"(module (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
            (memory (export "memory") 1) (func (export "_start")))"#;
        let call = |path: &str| {
            let mut request = admin_request("GET", "x", None, b"");
            request.path = path.into();
            app.handle(&request).status
        };
        for (name, first, second, path) in [
            ("nano", ANSWER_7, ANSWER_8, "/exec/nano"),
            ("http", http.as_slice(), http.as_slice(), "/http/hello"),
            ("wasi", WASI, WASI, "/api/wasi/x"),
        ] {
            assert_eq!(
                app.handle(&admin_request("PUT", name, None, first)).status,
                201
            );
            assert_eq!(call(path), 200, "{name}");
            let replaced = engine_of(&app, name).weak();
            assert_eq!(
                app.handle(&admin_request("PUT", name, None, second)).status,
                200
            );
            assert!(
                replaced.upgrade().is_none(),
                "{name}: the replaced version's engine lives on"
            );
            assert_eq!(call(path), 200, "{name}");
            let deleted = engine_of(&app, name).weak();
            assert!(deleted.upgrade().is_some());
            assert_eq!(
                app.handle(&admin_request("DELETE", name, None, b"")).status,
                204
            );
            assert!(
                deleted.upgrade().is_none(),
                "{name}: the deleted function's engine lives on"
            );
        }
    }

    /// A module without imports whose `_start` takes and returns nothing (the nanoprocess
    /// seed's stuck.wat) runs at `/exec` and at `/api`, into the deadline either way.
    #[test]
    fn a_module_that_runs_either_way_answers_at_both_routes() {
        let app = app_with(Arc::new(keyvalue::MemoryStore::new()));
        let stuck = br#"(module (func (export "_start") (loop $l (br $l))))"#;
        let deployed = app.handle(&admin_request(
            "PUT",
            "stuck",
            Some("timeout-ms=100&fuel=100000000000"),
            stuck,
        ));
        assert_eq!(
            deployed.status,
            201,
            "{}",
            String::from_utf8_lossy(&deployed.body)
        );
        for path in ["/exec/stuck", "/api/stuck/x"] {
            let mut request = admin_request("GET", "x", None, b"");
            request.path = path.into();
            let answer = app.handle(&request);
            assert_eq!(
                answer.status,
                504,
                "{path}: {}",
                String::from_utf8_lossy(&answer.body)
            );
        }
        let stats = app.stats.snapshot("stuck").expect("counted");
        assert_eq!(stats.errors.get("timeout"), Some(&2), "{stats:?}");
        // A module that imports WASI does not run at /exec.
        const WASI: &[u8] =
            br#"(module (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
            (memory (export "memory") 1) (func (export "_start")))"#;
        assert_eq!(
            app.handle(&admin_request("PUT", "wasi", None, WASI)).status,
            201
        );
        let mut exec = admin_request("GET", "x", None, b"");
        exec.path = "/exec/wasi".into();
        assert_eq!(app.handle(&exec).status, 400);
    }

    /// A store whose writes always fail, as Redis does while it is down.
    struct DownStore;

    impl KeyValue for DownStore {
        fn open(&self, _: &str, _: &Bounds) -> Result<(), keyvalue::KvError> {
            Err(keyvalue::KvError::Connection("down".into()))
        }
        fn get(&self, _: &str, _: &str, _: &Bounds) -> Result<Vec<u8>, keyvalue::KvError> {
            Err(keyvalue::KvError::Connection("down".into()))
        }
        fn set(&self, _: &str, _: &str, _: &[u8], _: &Bounds) -> Result<(), keyvalue::KvError> {
            Err(keyvalue::KvError::Connection("down".into()))
        }
        fn keys(&self, _: &str, _: &Bounds) -> Result<Vec<String>, keyvalue::KvError> {
            Err(keyvalue::KvError::Connection("down".into()))
        }
        fn delete(&self, _: &str, _: &str, _: &Bounds) -> Result<(), keyvalue::KvError> {
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
