//! Instances sharing one key-value backend serve one set of functions: deploys, replaces and
//! deletes through any instance reach the others at their next sync, concurrent deploys of
//! one name end with one winner everywhere, and an instance cut off from the store catches up.
//! (In-process: several `App`s on one `MemoryStore`; `crates/e2e` does it with Redis.)

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_front::Handler;
use keyvalue::{Bounds, KeyValue, KvError, MemoryStore, Write};
use platform::app::App;
use platform::fleet::{FLEET_STORE, FUNCTION_INDEX, VERSION_KEY};
use support::{options, request};

const TOKEN: &str = "fleet-token";

fn answer(n: u32) -> Vec<u8> {
    format!(r#"(module (func (export "_start") (result i32) i32.const {n}))"#).into_bytes()
}

/// One instance's way to a shared backend, which can be cut off, as Redis is when the network
/// to it fails.
struct Switchable {
    inner: Arc<MemoryStore>,
    down: AtomicBool,
}

impl Switchable {
    fn to(inner: &Arc<MemoryStore>) -> Arc<Switchable> {
        Arc::new(Switchable {
            inner: Arc::clone(inner),
            down: AtomicBool::new(false),
        })
    }
}

impl Switchable {
    fn check(&self) -> Result<(), KvError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(KvError::Connection("cut off".into()));
        }
        Ok(())
    }
}

impl KeyValue for Switchable {
    fn open(&self, store: &str, bounds: &Bounds) -> Result<(), KvError> {
        self.check()?;
        self.inner.open(store, bounds)
    }
    fn get(&self, store: &str, key: &str, bounds: &Bounds) -> Result<Vec<u8>, KvError> {
        self.check()?;
        self.inner.get(store, key, bounds)
    }
    fn set(&self, store: &str, key: &str, value: &[u8], bounds: &Bounds) -> Result<(), KvError> {
        self.check()?;
        self.inner.set(store, key, value, bounds)
    }
    fn keys(&self, store: &str, bounds: &Bounds) -> Result<Vec<String>, KvError> {
        self.check()?;
        self.inner.keys(store, bounds)
    }
    fn delete(&self, store: &str, key: &str, bounds: &Bounds) -> Result<(), KvError> {
        self.check()?;
        self.inner.delete(store, key, bounds)
    }
    fn write_counted(
        &self,
        writes: &[Write<'_>],
        counter: (&str, &str),
        bounds: &Bounds,
    ) -> Result<u64, KvError> {
        self.check()?;
        self.inner.write_counted(writes, counter, bounds)
    }
}

/// An instance on `kv`, with one built-in function `builtin` (answers 9).
fn instance(kv: &Arc<dyn KeyValue>) -> App {
    let mut opts = options(TOKEN);
    opts.kv = Arc::clone(kv);
    let app = App::new(opts);
    app.deploy("builtin", &answer(9)).expect("builtin");
    app
}

fn admin(app: &App, method: &str, name: &str, body: &[u8]) -> u16 {
    let target = format!("/_admin/functions/{name}");
    app.handle(&request(method, &target, body.to_vec(), "h", Some(TOKEN)))
        .status
}

/// `/exec/{name}`: status and body.
fn exec(app: &App, name: &str) -> (u16, String) {
    let response = app.handle(&request(
        "GET",
        &format!("/exec/{name}"),
        Vec::new(),
        "h",
        None,
    ));
    (
        response.status,
        String::from_utf8_lossy(&response.body).into_owned(),
    )
}

/// The listing: each function's sha256 by name, and the fleet version.
fn listing(app: &App) -> (Vec<(String, String)>, Option<u64>) {
    let response = app.handle(&request(
        "GET",
        "/_admin/functions",
        Vec::new(),
        "h",
        Some(TOKEN),
    ));
    assert_eq!(response.status, 200);
    let json: serde_json::Value = serde_json::from_slice(&response.body).expect("json");
    let functions = json["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .map(|f| {
            (
                f["name"].as_str().expect("name").to_string(),
                f["sha256"].as_str().expect("sha256").to_string(),
            )
        })
        .collect();
    (functions, json["fleet"]["version"].as_u64())
}

fn sync(app: &App) {
    app.sync_fleet(false).expect("sync");
}

#[test]
fn deploy_replace_and_delete_reach_every_instance() {
    let kv: Arc<dyn KeyValue> = Arc::new(MemoryStore::new());
    let a = instance(&kv);
    let b = instance(&kv);
    assert_eq!(admin(&a, "PUT", "f", &answer(1)), 201);
    assert_eq!(exec(&b, "f").0, 404, "not before b's sync");
    sync(&b);
    assert_eq!(exec(&b, "f"), (200, "1".into()));

    assert_eq!(admin(&b, "PUT", "f", &answer(2)), 200);
    sync(&a);
    assert_eq!(exec(&a, "f"), (200, "2".into()));

    // A built-in function deleted through one instance is deleted on all.
    assert_eq!(admin(&a, "DELETE", "builtin", b""), 204);
    assert_eq!(admin(&a, "DELETE", "f", b""), 204);
    sync(&b);
    assert_eq!(exec(&b, "f").0, 404);
    assert_eq!(exec(&b, "builtin").0, 404);
    sync(&a);
    let (on_a, version_a) = listing(&a);
    let (on_b, version_b) = listing(&b);
    assert_eq!(on_a, on_b);
    assert_eq!(
        (version_a, version_b),
        (Some(4), Some(4)),
        "four admin changes"
    );
}

#[test]
fn a_new_instance_boots_with_the_fleets_functions() {
    let kv: Arc<dyn KeyValue> = Arc::new(MemoryStore::new());
    let a = instance(&kv);
    assert_eq!(admin(&a, "PUT", "g", &answer(5)), 201);
    assert_eq!(admin(&a, "DELETE", "builtin", b""), 204);
    let late = instance(&kv);
    assert_eq!(exec(&late, "g"), (200, "5".into()));
    assert_eq!(exec(&late, "builtin").0, 404, "its delete holds at boot");
    assert_eq!(listing(&late).1, Some(2));
}

#[test]
fn concurrent_deploys_of_one_name_end_with_one_winner_everywhere() {
    let kv: Arc<dyn KeyValue> = Arc::new(MemoryStore::new());
    let instances: Vec<App> = (0..3).map(|_| instance(&kv)).collect();
    for round in 0..20u32 {
        std::thread::scope(|scope| {
            for (i, app) in instances.iter().enumerate() {
                let code = answer(round * 10 + i as u32);
                scope.spawn(move || {
                    let status = admin(app, "PUT", "contested", &code);
                    assert!(status == 200 || status == 201, "{status}");
                });
            }
        });
        for app in &instances {
            sync(app);
        }
        let answers: Vec<_> = instances.iter().map(|a| exec(a, "contested")).collect();
        assert!(
            answers.iter().all(|a| a == &answers[0]),
            "round {round}: {answers:?}"
        );
        let listings: Vec<_> = instances.iter().map(listing).collect();
        assert!(listings.iter().all(|l| l == &listings[0]), "{listings:?}");
    }
}

#[test]
fn an_instance_cut_off_from_the_store_catches_up() {
    let shared = Arc::new(MemoryStore::new());
    // `b`'s way to the shared store is cut off for a while; `a`'s never is.
    let store = Switchable::to(&shared);
    let b_kv: Arc<dyn KeyValue> = store.clone();
    let a_kv: Arc<dyn KeyValue> = Switchable::to(&shared);
    let a = instance(&a_kv);
    let b = instance(&b_kv);
    assert_eq!(admin(&a, "PUT", "h", &answer(3)), 201);
    sync(&b);
    assert_eq!(exec(&b, "h"), (200, "3".into()));

    store.down.store(true, Ordering::SeqCst);
    assert!(b.sync_fleet(false).is_err());
    assert_eq!(admin(&a, "PUT", "h", &answer(4)), 200);
    assert_eq!(admin(&a, "PUT", "i", &answer(6)), 201);
    assert_eq!(admin(&a, "DELETE", "builtin", b""), 204);
    assert!(b.sync_fleet(false).is_err());
    assert_eq!(
        exec(&b, "h"),
        (200, "3".into()),
        "keeps serving what it has"
    );

    store.down.store(false, Ordering::SeqCst);
    sync(&b);
    assert_eq!(exec(&b, "h"), (200, "4".into()));
    assert_eq!(exec(&b, "i"), (200, "6".into()));
    assert_eq!(exec(&b, "builtin").0, 404);
    sync(&a);
    assert_eq!(listing(&a), listing(&b));
    assert_eq!(listing(&b).1, Some(kv_version(&shared)));
}

fn kv_version(kv: &MemoryStore) -> u64 {
    keyvalue::parse_counter(
        &kv.get(FLEET_STORE, VERSION_KEY, &Bounds::UNBOUNDED)
            .expect("version"),
    )
    .expect("a counter")
}

#[test]
fn each_change_writes_function_index_and_version_together() {
    let kv = Arc::new(MemoryStore::new());
    let dyn_kv: Arc<dyn KeyValue> = kv.clone();
    let a = instance(&dyn_kv);
    assert_eq!(admin(&a, "PUT", "f", &answer(1)), 201);
    let entry = kv
        .get(FUNCTION_INDEX, "f", &Bounds::UNBOUNDED)
        .expect("index");
    let stored = kv
        .get(
            platform::function_store::FUNCTION_STORE,
            "f",
            &Bounds::UNBOUNDED,
        )
        .expect("stored");
    assert_eq!(
        entry,
        format!("deployed {}", platform::fleet::stamp(&stored)).into_bytes()
    );
    assert_eq!(kv_version(&kv), 1);
    assert_eq!(admin(&a, "DELETE", "f", b""), 204);
    assert_eq!(
        kv.get(FUNCTION_INDEX, "f", &Bounds::UNBOUNDED)
            .expect("tombstone"),
        b"deleted"
    );
    assert_eq!(kv_version(&kv), 2);
    assert_eq!(
        listing(&a).1,
        Some(2),
        "its own changes keep its view current"
    );
}
