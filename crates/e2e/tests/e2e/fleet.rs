//! A fleet behind a real load balancer: redis-server, three instances sharing it and Debian's
//! HAProxy in front (natively, and with an image in QEMU in the mix). A deploy, a replace and a
//! delete made through the balancer reach every instance; 300 requests spread over all of them
//! answer the new code; two instances deploying one name at once end with one winner on all;
//! an instance killed is routed around; a fourth instance boots serving everything without a
//! deploy. Everything started here is stopped on drop (also when an assertion fails).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use e2e::cut_proxy::CutProxy;
use e2e::http;
use e2e::redis_server::RedisServer;
use e2e::{Instance, Mode};
use load_balancer::{HaProxy, SERVED_BY};

use crate::{ADMIN_TOKEN, admin, call};

/// How long a change may take to reach every instance before the test gives up (the
/// propagation time itself is measured by `cargo xtask bench fleet`).
const PROPAGATION_LIMIT: Duration = Duration::from_secs(20);

/// Requests sent through the balancer after each change.
const SPREAD_REQUESTS: usize = 300;

/// The function deployed through the balancer.
const FUNCTION: &str = "fleet-answer";

fn answer(n: u32) -> Vec<u8> {
    format!(r#"(module (func (export "_start") (result i32) i32.const {n}))"#).into_bytes()
}

fn start(mode: Mode, redis: &RedisServer) -> Instance {
    crate::redis::start_with_redis_and(mode, redis, &format!("admin-token={ADMIN_TOKEN}"))
}

/// Waits until `check` holds, at most [`PROPAGATION_LIMIT`]; returns how long it took.
fn wait_until(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < PROPAGATION_LIMIT,
            "{what}: not within {PROPAGATION_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

/// `/exec/{name}` on `port`: status and body.
fn exec(port: u16, name: &str) -> (u16, String) {
    let response = call(port, "GET", &format!("/exec/{name}"), b"");
    (response.status, response.text())
}

/// Each function's sha256 by name and the fleet version, as the instance on `port` lists them.
fn listing(port: u16) -> (BTreeMap<String, String>, Option<u64>) {
    let response = admin(port, "GET", "/_admin/functions", b"");
    assert_eq!(response.status, 200, "{}", response.text());
    let json = response.json();
    let functions = json["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap_or_default().to_string(),
                f["sha256"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    (functions, json["fleet"]["version"].as_u64())
}

/// Waits until every instance on `ports` answers `/exec/{name}` with `expected`.
fn wait_everywhere(ports: &[u16], name: &str, expected: (u16, &str)) {
    for &port in ports {
        let took = wait_until(&format!("{name} on port {port}"), || {
            let (status, body) = exec(port, name);
            status == expected.0 && (status != 200 || body == expected.1)
        });
        println!("fleet: {name} -> {expected:?} on port {port} after {took:?}");
    }
}

/// Sends `count` requests for `/exec/{name}` through the balancer; every one must answer
/// `expected`. Returns how many each instance answered.
fn through_balancer(
    lb: &HaProxy,
    name: &str,
    expected: &str,
    count: usize,
) -> BTreeMap<String, usize> {
    let mut served = BTreeMap::new();
    for i in 0..count {
        let response = http::request(lb.port(), "GET", &format!("/exec/{name}"), &[], b"")
            .unwrap_or_else(|e| panic!("request {i} through the balancer: {e}"));
        assert_eq!(
            (response.status, response.text().as_str()),
            (200, expected),
            "request {i} (served by {:?})",
            response.header(SERVED_BY)
        );
        let by = response.header(SERVED_BY).unwrap_or("?").to_string();
        *served.entry(by).or_insert(0) += 1;
    }
    println!("fleet: {count} requests for {name} served by {served:?}");
    served
}

/// Waits until every instance on `ports` lists the same functions (by sha256) and the same
/// fleet version; returns that listing.
fn wait_agreement(ports: &[u16]) -> (BTreeMap<String, String>, Option<u64>) {
    let mut agreed = None;
    wait_until("instances agree on functions and fleet version", || {
        let listings: Vec<_> = ports.iter().map(|&p| listing(p)).collect();
        let same = listings.iter().all(|l| l == &listings[0]) && listings[0].1.is_some();
        agreed = same.then(|| listings[0].clone());
        same
    });
    agreed.expect("agreed")
}

fn fleet_behind_haproxy(modes: [Mode; 3], fourth: Mode) {
    let redis = RedisServer::start();
    let mut instances: Vec<Instance> = modes.iter().map(|&m| start(m, &redis)).collect();
    let ports: Vec<u16> = instances.iter().map(|i| i.port).collect();
    let mut lb = HaProxy::start(&ports).expect("start haproxy");

    // A deploy and a replace through the balancer: every instance serves the new code.
    for (version, status) in [(1, 201), (2, 200)] {
        let put = admin(
            lb.port(),
            "PUT",
            &format!("/_admin/functions/{FUNCTION}"),
            &answer(version),
        );
        assert_eq!(put.status, status, "{}", put.text());
        let expected = version.to_string();
        wait_everywhere(&ports, FUNCTION, (200, &expected));
        let served = through_balancer(&lb, FUNCTION, &expected, SPREAD_REQUESTS);
        assert_eq!(served.len(), 3, "all three instances answered: {served:?}");
    }

    // A delete through the balancer (of a function built into the image) reaches all.
    assert_eq!(exec(ports[1], "answer").0, 200, "built in");
    let delete = admin(lb.port(), "DELETE", "/_admin/functions/answer", b"");
    assert_eq!(delete.status, 204, "{}", delete.text());
    wait_everywhere(&ports, "answer", (404, ""));

    // Two instances deploy one name at the same time: one winner everywhere.
    std::thread::scope(|scope| {
        for (i, &port) in ports.iter().enumerate().skip(1) {
            scope.spawn(move || {
                let put = admin(
                    port,
                    "PUT",
                    "/_admin/functions/contested",
                    &answer(100 + i as u32),
                );
                assert!(matches!(put.status, 200 | 201), "{}", put.text());
            });
        }
    });
    let (functions, version) = wait_agreement(&ports);
    let winner = exec(ports[0], "contested");
    assert!(matches!(winner.1.as_str(), "101" | "102"), "{winner:?}");
    for &port in &ports {
        assert_eq!(exec(port, "contested"), winner, "port {port}");
    }
    println!("fleet: contested won by {winner:?}; fleet version {version:?}");
    assert!(!functions.contains_key("answer"));

    // An instance dies: requests through the balancer keep succeeding.
    let killed = instances.remove(0);
    killed.stop();
    let served = through_balancer(&lb, FUNCTION, "2", 100);
    assert!(!served.contains_key("i0"), "{served:?}");

    // A fourth instance boots serving everything, without a deploy.
    let late = start(fourth, &redis);
    assert_eq!(exec(late.port, FUNCTION), (200, "2".into()));
    assert_eq!(exec(late.port, "answer").0, 404);
    assert_eq!(exec(late.port, "contested"), winner);
    let live: Vec<u16> = instances
        .iter()
        .map(|i| i.port)
        .chain(std::iter::once(late.port))
        .collect();
    assert_eq!(wait_agreement(&live), (functions, version));
    lb.reconfigure(&live).expect("reconfigure haproxy");
    let served = through_balancer(&lb, FUNCTION, "2", 30);
    assert_eq!(served.len(), 3, "{served:?}");
    instances.push(late);
}

#[test]
fn native_fleet_behind_haproxy() {
    fleet_behind_haproxy([Mode::Native; 3], Mode::Native);
}

#[test]
fn fleet_with_an_image_behind_haproxy() {
    // The image is the instance killed, and the fourth instance is an image again.
    fleet_behind_haproxy([Mode::Qemu, Mode::Native, Mode::Native], Mode::Qemu);
}

/// An instance whose network to Redis fails keeps serving what it has, says so in its listing,
/// and catches up with every change made meanwhile once Redis is reachable again.
fn cut_off_instance_catches_up(mode: Mode) {
    let redis = RedisServer::start();
    let proxy = CutProxy::start(redis.port()).expect("start the proxy");
    let steady = start(Mode::Native, &redis);
    let host = match mode {
        Mode::Native => "127.0.0.1",
        Mode::Qemu => "10.0.2.2",
    };
    let append = format!(
        "log=info admin-token={ADMIN_TOKEN} kv=redis://{host}:{}",
        proxy.port()
    );
    let cut_off = Instance::start(mode, &append, &[]);
    let put = |name: &str, n: u32| {
        let path = format!("/_admin/functions/{name}");
        let response = admin(steady.port, "PUT", &path, &answer(n));
        assert!(matches!(response.status, 200 | 201), "{}", response.text());
    };
    put(FUNCTION, 1);
    wait_everywhere(&[cut_off.port], FUNCTION, (200, "1"));

    proxy.cut();
    put(FUNCTION, 2);
    put("fleet-later", 3);
    let delete = admin(steady.port, "DELETE", "/_admin/functions/answer", b"");
    assert_eq!(delete.status, 204, "{}", delete.text());
    wait_until("the cut-off instance reports the store unreachable", || {
        let listing = admin(cut_off.port, "GET", "/_admin/functions", b"").json();
        listing["fleet"]["unreachable"].is_string()
    });
    assert_eq!(
        exec(cut_off.port, FUNCTION),
        (200, "1".into()),
        "keeps serving"
    );
    assert_eq!(exec(cut_off.port, "answer").0, 200);
    assert_ne!(listing(cut_off.port).1, listing(steady.port).1);

    proxy.restore();
    let started = Instant::now();
    wait_everywhere(&[cut_off.port], FUNCTION, (200, "2"));
    wait_everywhere(&[cut_off.port], "fleet-later", (200, "3"));
    wait_everywhere(&[cut_off.port], "answer", (404, ""));
    println!(
        "fleet: caught up {:?} after the cut ended",
        started.elapsed()
    );
    wait_agreement(&[steady.port, cut_off.port]);
}

#[test]
fn native_instance_cut_off_from_redis_catches_up() {
    cut_off_instance_catches_up(Mode::Native);
}

#[test]
fn image_cut_off_from_redis_catches_up() {
    cut_off_instance_catches_up(Mode::Qemu);
}
