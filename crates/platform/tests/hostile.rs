//! The hostile-guest corpus (`guests/hostile/`, listed in its `cases.json`) against the platform
//! in process: each case is deployed through the admin API and called as the HTTP server would
//! call [`App`], and must fail only itself, with its documented status and error, within its
//! deadline; health, the good functions and the stats must show that nothing else was hurt.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_front::{Handler, Request, Response, Version};
use platform::app::{App, AppOptions};

#[path = "../../../guests/hostile/manifest.rs"]
mod manifest;
mod support;

use manifest::{CallSpec, Case, Corpus};

const TOKEN: &str = "hostile-test-token";

fn corpus() -> Corpus {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../guests/hostile");
    Corpus::load(&dir).unwrap_or_else(|e| panic!("hostile corpus: {e}"))
}

fn app(memory_budget: usize) -> App {
    App::new(AppOptions {
        memory_budget,
        ..support::options(TOKEN)
    })
}

/// A request as the HTTP front hands it over; `target` may carry a query.
fn request(method: &str, target: &str, body: &[u8], admin: bool) -> Request {
    support::request(
        method,
        target,
        body.to_vec(),
        "hostile.test",
        admin.then_some(TOKEN),
    )
}

fn send(app: &App, method: &str, target: &str, body: &[u8], admin: bool) -> (Response, Duration) {
    let started = Instant::now();
    let response = app.handle(&request(method, target, body, admin));
    (response, started.elapsed())
}

fn text(response: &Response) -> String {
    String::from_utf8_lossy(&response.body).into_owned()
}

fn json(response: &Response) -> serde_json::Value {
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(response)))
}

/// The response head as the server would write it (invalid headers dropped), lower-cased.
fn wire_head(response: &Response) -> String {
    let bytes = response.serialize(true, true, Version::Http11, None);
    String::from_utf8_lossy(&bytes).to_ascii_lowercase()
}

/// Deploys the good functions that have a source in the corpus.
fn deploy_good(app: &App, corpus: &Corpus) {
    for good in &corpus.good {
        let Some(file) = &good.file else { continue };
        let source = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let (response, _) = send(
            app,
            "PUT",
            &format!("/_admin/functions/{}", good.name),
            &source,
            true,
        );
        assert_eq!(
            response.status,
            201,
            "deploy {}: {}",
            good.name,
            text(&response)
        );
    }
}

/// Problems with health or the good functions, if any.
fn check_still_serving(app: &App, corpus: &Corpus) -> Vec<String> {
    let mut problems = Vec::new();
    let (health, _) = send(app, "GET", "/healthz", b"", false);
    if health.status != 200 {
        problems.push(format!("/healthz answered {}", health.status));
    }
    for good in corpus.good.iter().filter(|g| g.file.is_some()) {
        let CallSpec { method, path } = &good.request;
        let (response, _) = send(app, method, path, b"", false);
        if (response.status, text(&response).as_str()) != (good.status, good.body.as_str()) {
            problems.push(format!(
                "good function {} answered {} {:?}",
                good.name,
                response.status,
                text(&response)
            ));
        }
    }
    problems
}

/// What one case did.
struct Observed {
    deploy_status: u16,
    deploy_ms: u128,
    status: Option<u16>,
    call_ms: Option<u128>,
    message: String,
    problems: Vec<String>,
}

/// Deploys and calls `case`, checking everything the manifest promises about it.
fn run_case(app: &App, corpus: &Corpus, case: &Case) -> Observed {
    let mut problems = Vec::new();
    let source = case.source().unwrap_or_else(|e| panic!("{e}"));
    let (deployed, deploy_time) = send(app, "PUT", &case.deploy_target(), &source, true);
    let mut observed = Observed {
        deploy_status: deployed.status,
        deploy_ms: deploy_time.as_millis(),
        status: None,
        call_ms: None,
        message: String::new(),
        problems: Vec::new(),
    };
    let max = Duration::from_millis(case.max_ms);
    if deployed.status != case.deploy_status {
        problems.push(format!(
            "deploy answered {} (expected {}): {}",
            deployed.status,
            case.deploy_status,
            text(&deployed)
        ));
    }
    if deploy_time > max {
        problems.push(format!("deploy took {deploy_time:?} (max {max:?})"));
    }
    if !case.deploys() {
        observed.message = json(&deployed)["error"].as_str().unwrap_or("").to_string();
        if let Some(expected) = &case.deploy_error
            && !observed.message.contains(expected.as_str())
        {
            problems.push(format!(
                "deploy error lacks {expected:?}: {}",
                observed.message
            ));
        }
        if let Some(deadline) = case.deadline_ms
            && deploy_time < Duration::from_millis(deadline)
        {
            problems.push(format!(
                "deploy refused after {deploy_time:?}, before its {deadline} ms deadline"
            ));
        }
        let (info, _) = send(
            app,
            "GET",
            &format!("/_admin/functions/{}", case.name),
            b"",
            true,
        );
        if info.status != 404 {
            problems.push(format!("refused deploy is listed: {}", info.status));
        }
        problems.extend(check_still_serving(app, corpus));
        observed.problems = problems;
        return observed;
    }
    let Some(CallSpec { method, path }) = &case.request else {
        unreachable!("the manifest reader checks that deployed cases have a request");
    };
    let (response, elapsed) = send(app, method, path, b"", false);
    observed.status = Some(response.status);
    observed.call_ms = Some(elapsed.as_millis());
    if Some(response.status) != case.status {
        problems.push(format!(
            "answered {} (expected {:?}): {}",
            response.status,
            case.status,
            text(&response)
        ));
    }
    if response.status >= 400 {
        observed.message = json(&response)["error"].as_str().unwrap_or("").to_string();
    } else {
        observed.message = text(&response);
    }
    if let Some(expected) = &case.error
        && !observed.message.contains(expected.as_str())
    {
        problems.push(format!("error lacks {expected:?}: {}", observed.message));
    }
    if let Some(expected) = &case.body
        && text(&response) != *expected
    {
        problems.push(format!(
            "body {:?} (expected {expected:?})",
            text(&response)
        ));
    }
    let head = wire_head(&response);
    for absent in &case.absent {
        if head.contains(absent.as_str()) {
            problems.push(format!("{absent:?} reached the response head: {head:?}"));
        }
    }
    if elapsed > max {
        problems.push(format!("took {elapsed:?} (max {max:?})"));
    }
    problems.extend(case.deadline_problem(elapsed));
    let (stats, _) = send(app, "GET", &format!("/stats/{}", case.name), b"", false);
    problems.extend(case.stats_problems(&json(&stats)));
    problems.extend(check_still_serving(app, corpus));
    observed.problems = problems;
    observed
}

#[test]
fn every_corpus_file_is_in_the_manifest_and_says_what_to_expect() {
    let corpus = corpus();
    let mut listed: Vec<PathBuf> = corpus.cases.iter().map(|c| c.file.clone()).collect();
    listed.extend(corpus.good.iter().filter_map(|g| g.file.clone()));
    let mut names = std::collections::HashSet::new();
    for case in &corpus.cases {
        assert!(names.insert(&case.name), "{} listed twice", case.name);
    }
    for entry in std::fs::read_dir(&corpus.dir).expect("corpus directory") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_none_or(|ext| ext != "wat") {
            continue;
        }
        assert!(
            listed
                .iter()
                .any(|l| l.ends_with(path.file_name().unwrap_or_default())),
            "{} is not in cases.json",
            path.display()
        );
        let source = std::fs::read_to_string(&path).expect("read corpus file");
        let comment: Vec<&str> = source
            .lines()
            .take_while(|line| line.starts_with(";;"))
            .collect();
        for label in ["What:", "Kind:", "Deploy:", "Call:", "EXPECTED:"] {
            assert!(
                comment.iter().any(|line| line.contains(label)),
                "{}: the leading comment block has no {label} line",
                path.display()
            );
        }
        wat::parse_str(&source).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    for case in &corpus.cases {
        let source = std::fs::read_to_string(&case.file).expect("read case");
        assert!(
            source.contains(&format!("HOSTILE CASE {}", case.name)),
            "{} does not name its case {}",
            case.file.display(),
            case.name
        );
    }
}

#[test]
fn hostile_corpus_fails_only_itself() {
    let corpus = corpus();
    let app = app(1 << 30);
    deploy_good(&app, &corpus);
    assert!(check_still_serving(&app, &corpus).is_empty());
    let mut failures = Vec::new();
    println!(
        "{:<24} {:>6} {:>9} {:>6} {:>8}  message",
        "case", "deploy", "deploy_ms", "status", "call_ms"
    );
    for case in &corpus.cases {
        let observed = run_case(&app, &corpus, case);
        println!(
            "{:<24} {:>6} {:>9} {:>6} {:>8}  {}",
            case.name,
            observed.deploy_status,
            observed.deploy_ms,
            observed.status.map_or("-".into(), |s| s.to_string()),
            observed.call_ms.map_or("-".into(), |ms| ms.to_string()),
            observed.message.chars().take(140).collect::<String>()
        );
        for problem in observed.problems {
            failures.push(format!("{}: {problem}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Everything that was deployed is still listed, and the server still deploys.
    let (list, _) = send(&app, "GET", "/_admin/functions", b"", true);
    let listed = json(&list)["functions"].as_array().map_or(0, Vec::len);
    let deployed = corpus.cases.iter().filter(|c| c.deploys()).count();
    assert_eq!(listed, deployed + 2, "{}", text(&list));
}

/// All hostile cases at once, from several threads, while a client keeps calling the good
/// functions: every good call answers, every hostile call gets its own status.
#[test]
fn hostile_corpus_concurrently_with_good_traffic() {
    let corpus = corpus();
    let app = app(1 << 30);
    deploy_good(&app, &corpus);
    let callable: Vec<&Case> = corpus.cases.iter().filter(|c| c.deploys()).collect();
    for case in &callable {
        let source = case.source().unwrap_or_else(|e| panic!("{e}"));
        let (response, _) = send(&app, "PUT", &case.deploy_target(), &source, true);
        assert_eq!(response.status, 201, "{}: {}", case.name, text(&response));
    }
    let stop = AtomicBool::new(false);
    let good_calls = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let good = s.spawn(|| {
            let mut problems = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                for good in corpus.good.iter().filter(|g| g.file.is_some()) {
                    let (response, _) =
                        send(&app, &good.request.method, &good.request.path, b"", false);
                    if (response.status, text(&response)) != (good.status, good.body.clone()) {
                        problems.push(format!(
                            "{}: {} {}",
                            good.name,
                            response.status,
                            text(&response)
                        ));
                    }
                    good_calls.fetch_add(1, Ordering::SeqCst);
                }
            }
            problems
        });
        let hostile: Vec<_> = (0..3)
            .map(|lane| {
                let (app, callable) = (&app, &callable);
                s.spawn(move || {
                    let mut problems = Vec::new();
                    for case in callable.iter().skip(lane).step_by(3) {
                        let spec = case
                            .request
                            .as_ref()
                            .expect("deployed cases have a request");
                        for _ in 0..2 {
                            let (response, elapsed) =
                                send(app, &spec.method, &spec.path, b"", false);
                            if Some(response.status) != case.status {
                                problems.push(format!(
                                    "{}: {} {}",
                                    case.name,
                                    response.status,
                                    text(&response)
                                ));
                            }
                            // Two cores shared by four threads: generous, but bounded.
                            let bound = Duration::from_millis(case.max_ms) * 3;
                            if elapsed > bound {
                                problems.push(format!("{}: took {elapsed:?}", case.name));
                            }
                        }
                    }
                    problems
                })
            })
            .collect();
        let mut problems: Vec<String> = hostile
            .into_iter()
            .flat_map(|h| h.join().expect("hostile lane"))
            .collect();
        stop.store(true, Ordering::SeqCst);
        problems.extend(good.join().expect("good client"));
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    });
    assert!(good_calls.load(Ordering::SeqCst) > 0);
    assert!(check_still_serving(&app, &corpus).is_empty());
}

/// Memory bombs that together need more than the server's memory budget: the ones that do not
/// fit wait briefly and are refused with 503 and `Retry-After`, while health and a small good
/// function keep answering, and the budget is whole again afterwards.
#[test]
fn concurrent_memory_bombs_beyond_the_budget_get_503_with_retry_after() {
    let corpus = corpus();
    // A bomb that fills its 4 MiB and then holds it until its 1.5 s deadline.
    const HOLDING_BOMB: &[u8] = br#"(module
      (memory (export "memory") 1)
      (func (export "_start") (result i32)
        (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
        (loop $hold (br $hold))
        (i32.const 0)))"#;
    let bomb_reservation = platform::memory::reservation_for(4 << 20);
    let small_reservation = platform::memory::reservation_for(64 << 10);
    // Room for two bombs and one small run.
    let app = app(2 * bomb_reservation + small_reservation);
    let answer = corpus
        .good
        .iter()
        .find(|g| g.name == "answer")
        .and_then(|g| g.file.clone())
        .expect("the corpus lists answer.wat");
    let source = std::fs::read(answer).expect("answer.wat");
    let (deployed, _) = send(
        &app,
        "PUT",
        "/_admin/functions/answer?max-memory=64k",
        &source,
        true,
    );
    assert_eq!(deployed.status, 201, "{}", text(&deployed));
    let (deployed, _) = send(
        &app,
        "PUT",
        "/_admin/functions/bomb?timeout-ms=1500",
        HOLDING_BOMB,
        true,
    );
    assert_eq!(deployed.status, 201, "{}", text(&deployed));

    let bombs = 6;
    let started = Instant::now();
    let results: Vec<(u16, Option<String>, String, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..bombs)
            .map(|_| {
                let app = &app;
                s.spawn(move || {
                    let (response, elapsed) = send(app, "GET", "/exec/bomb", b"", false);
                    (
                        response.status,
                        response.header("retry-after").map(str::to_string),
                        text(&response),
                        elapsed,
                    )
                })
            })
            .collect();
        // While the bombs hold the budget: health and the small function answer.
        std::thread::sleep(Duration::from_millis(200));
        let (health, health_time) = send(&app, "GET", "/healthz", b"", false);
        assert_eq!(health.status, 200);
        assert!(health_time < Duration::from_millis(100), "{health_time:?}");
        let (small, _) = send(&app, "GET", "/exec/answer", b"", false);
        assert_eq!((small.status, text(&small).as_str()), (200, "42"));
        handles
            .into_iter()
            .map(|h| h.join().expect("bomb thread"))
            .collect()
    });
    let total = started.elapsed();
    let ran = results.iter().filter(|r| r.0 == 504).count();
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert_eq!(
        ran + refused.len(),
        bombs,
        "only 504 (ran into the deadline) and 503 (no room): {results:?}"
    );
    assert!(ran >= 2, "two bombs fit the budget at once: {results:?}");
    assert!(!refused.is_empty(), "{results:?}");
    for (_, retry_after, body, elapsed) in &refused {
        assert_eq!(retry_after.as_deref(), Some("1"), "{body}");
        assert!(body.contains("retry shortly"), "{body}");
        assert!(*elapsed < Duration::from_secs(3), "{elapsed:?}");
    }
    assert!(total < Duration::from_secs(10), "{total:?}");
    let (stats, _) = send(&app, "GET", "/stats/bomb", b"", false);
    let stats = json(&stats);
    assert_eq!(
        stats["errors"]["busy"].as_u64(),
        Some(refused.len() as u64),
        "{stats}"
    );
    let (metrics, _) = send(&app, "GET", "/metrics", b"", false);
    assert!(
        text(&metrics).contains("function_memory_reserved_bytes 0\n"),
        "the budget is whole again: {}",
        text(&metrics)
    );
    let (again, _) = send(&app, "GET", "/exec/answer", b"", false);
    assert_eq!(text(&again), "42");
}
