//! "Every guest is hostile": the corpus of `guests/hostile/` (listed in its `cases.json`) against
//! a real server over HTTP, natively and in the image (QEMU, 64 MiB, 2 vCPUs). Each case is
//! deployed through the admin API and called; it must fail only itself, with its documented
//! status and error, within its deadline (plus slack: much more under TCG), while a client keeps
//! calling good functions and `/healthz`, the good functions answer after every case, and the
//! server neither exits nor panics.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use e2e::{Instance, Mode, http};

use crate::ADMIN_TOKEN;

#[path = "../../../../guests/hostile/manifest.rs"]
mod manifest;

use manifest::{Case, Corpus};

fn corpus() -> Corpus {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../guests/hostile");
    Corpus::load(&dir).unwrap_or_else(|e| panic!("hostile corpus: {e}"))
}

/// Slack on top of the manifest's native bounds: under TCG everything is slower.
fn slack(mode: Mode) -> Duration {
    match mode {
        Mode::Native => Duration::ZERO,
        Mode::Qemu => Duration::from_secs(5),
    }
}

/// One request with `Connection: close`, read up to the end of its `Content-Length` body (not
/// to the end of the stream: the answer is what is tested here, not how the connection ends);
/// the raw bytes (for what reaches the wire) and the parsed response.
fn try_send(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
    admin: bool,
) -> Result<(Vec<u8>, http::Response), String> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if admin {
        head.push_str(&format!("Authorization: Bearer {ADMIN_TOKEN}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = http::connect(port).map_err(|e| e.to_string())?;
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if raw.len() >= end + 4 + length {
                raw.truncate(end + 4 + length);
                break;
            }
        }
        let read = stream.read(&mut chunk);
        let so_far = String::from_utf8_lossy(&raw).into_owned();
        match read {
            Ok(0) => return Err(format!("closed after {so_far:?}")),
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("{e} after {so_far:?}")),
        }
    }
    let response = http::parse_responses(&raw)
        .ok()
        .and_then(|r| r.into_iter().next())
        .ok_or_else(|| format!("no response in {:?}", String::from_utf8_lossy(&raw)))?;
    Ok((raw, response))
}

/// [`try_send`], panicking with the request line if it fails.
fn send(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
    admin: bool,
) -> (Vec<u8>, http::Response) {
    try_send(port, method, path, body, admin).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn call(port: u16, method: &str, path: &str) -> http::Response {
    send(port, method, path, b"", false).1
}

fn admin(port: u16, method: &str, path: &str, body: &[u8]) -> http::Response {
    send(port, method, path, body, true).1
}

fn error_of(response: &http::Response) -> String {
    serde_json::from_slice::<serde_json::Value>(&response.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| response.text())
}

/// The good functions present on this server (boot functions, plus those deployed from the
/// corpus), each answering as the manifest says; problems as text.
fn check_good(port: u16, corpus: &Corpus) -> Vec<String> {
    let mut problems = Vec::new();
    let health = call(port, "GET", "/healthz");
    if health.status != 200 {
        problems.push(format!("/healthz answered {}", health.status));
    }
    for good in &corpus.good {
        let response = call(port, &good.request.method, &good.request.path);
        if (response.status, response.text()) != (good.status, good.body.clone()) {
            problems.push(format!(
                "good function {} answered {} {:?}",
                good.name,
                response.status,
                response.text()
            ));
        }
    }
    problems
}

/// Deploys and calls `case`; the problems found, and a report line.
fn run_case(inst: &Instance, mode: Mode, corpus: &Corpus, case: &Case) -> (Vec<String>, String) {
    let port = inst.port;
    let mut problems = Vec::new();
    let source = case.source().unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let deployed = admin(port, "PUT", &case.deploy_target(), &source);
    let deploy_time = started.elapsed();
    let bound = Duration::from_millis(case.max_ms) + slack(mode);
    if deployed.status != case.deploy_status {
        problems.push(format!(
            "deploy answered {} (expected {}): {}",
            deployed.status,
            case.deploy_status,
            deployed.text()
        ));
    }
    if deploy_time > bound {
        problems.push(format!("deploy took {deploy_time:?} (max {bound:?})"));
    }
    let mut line = format!(
        "{:<24} deploy {} in {:>5} ms",
        case.name,
        deployed.status,
        deploy_time.as_millis()
    );
    if !case.deploys() {
        let message = error_of(&deployed);
        if let Some(expected) = &case.deploy_error
            && !message.contains(expected.as_str())
        {
            problems.push(format!("deploy error lacks {expected:?}: {message}"));
        }
        if let Some(deadline) = case.deadline_ms
            && deploy_time < Duration::from_millis(deadline)
        {
            problems.push(format!(
                "deploy refused after {deploy_time:?}, before its {deadline} ms deadline"
            ));
        }
        let info = admin(
            port,
            "GET",
            &format!("/_admin/functions/{}", case.name),
            b"",
        );
        if info.status != 404 {
            problems.push(format!("refused deploy is listed ({})", info.status));
        }
        line.push_str(&format!(
            "  | {}",
            message.chars().take(110).collect::<String>()
        ));
        problems.extend(check_good(port, corpus));
        return (problems, line);
    }
    let spec = case
        .request
        .as_ref()
        .expect("the manifest reader checks that deployed cases have a request");
    let started = Instant::now();
    let (raw, response) = send(port, &spec.method, &spec.path, b"", false);
    let elapsed = started.elapsed();
    let message = if response.status >= 400 {
        error_of(&response)
    } else {
        response.text()
    };
    line.push_str(&format!(
        "  call {} in {:>5} ms  | {}",
        response.status,
        elapsed.as_millis(),
        message.chars().take(110).collect::<String>()
    ));
    if Some(response.status) != case.status {
        problems.push(format!(
            "answered {} (expected {:?}): {message}",
            response.status, case.status
        ));
    }
    if let Some(expected) = &case.error
        && !message.contains(expected.as_str())
    {
        problems.push(format!("error lacks {expected:?}: {message}"));
    }
    if let Some(expected) = &case.body
        && response.text() != *expected
    {
        problems.push(format!(
            "body {:?} (expected {expected:?})",
            response.text()
        ));
    }
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    for absent in &case.absent {
        if head.contains(absent.as_str()) {
            problems.push(format!("{absent:?} reached the wire: {head:?}"));
        }
    }
    if elapsed > bound {
        problems.push(format!("took {elapsed:?} (max {bound:?})"));
    }
    problems.extend(case.deadline_problem(elapsed));
    let stats = call(port, "GET", &format!("/stats/{}", case.name)).json();
    problems.extend(case.stats_problems(&stats));
    problems.extend(check_good(port, corpus));
    (problems, line)
}

/// What the background client saw: answers by status, and unexpected ones.
#[derive(Debug, Default)]
struct Background {
    ok: usize,
    shed: usize,
    unexpected: Vec<String>,
}

/// Calls `/healthz` and the boot functions in a loop until `stop`: every answer must be the
/// right one, or (a function only) 503 with `Retry-After` while the memory budget is spent.
fn background_client(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Background> {
    std::thread::spawn(move || {
        let mut seen = Background::default();
        let paths = [
            ("/healthz", None),
            ("/exec/answer", Some("42")),
            ("/http-server-demo/hello", Some("hello")),
        ];
        while !stop.load(Ordering::SeqCst) {
            for (path, body) in paths {
                match try_send(port, "GET", path, b"", false).map(|(_, r)| r) {
                    Ok(r) if r.status == 200 && body.is_none_or(|b| r.text() == b) => seen.ok += 1,
                    Ok(r)
                        if r.status == 503
                            && body.is_some()
                            && r.header("retry-after").is_some() =>
                    {
                        seen.shed += 1;
                    }
                    Ok(r) => seen
                        .unexpected
                        .push(format!("{path}: {} {}", r.status, r.text())),
                    Err(e) => seen.unexpected.push(format!("{path}: {e}")),
                }
            }
        }
        seen
    })
}

fn hostile_corpus(mode: Mode, extra: &[&str]) {
    let corpus = corpus();
    let mut inst = Instance::start(mode, &format!("log=info admin-token={ADMIN_TOKEN}"), extra);
    let port = inst.port;
    for good in corpus.good.iter().filter(|g| !g.boot) {
        let file = good
            .file
            .as_ref()
            .expect("non-boot good functions have a file");
        let source = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let deployed = admin(
            port,
            "PUT",
            &format!("/_admin/functions/{}", good.name),
            &source,
        );
        assert_eq!(deployed.status, 201, "{}: {}", good.name, deployed.text());
    }
    let before = check_good(port, &corpus);
    assert!(before.is_empty(), "before any hostile case: {before:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let client = background_client(port, Arc::clone(&stop));
    let mut problems = Vec::new();
    for case in &corpus.cases {
        let (found, line) = run_case(&inst, mode, &corpus, case);
        println!("{line}");
        problems.extend(found.into_iter().map(|p| format!("{}: {p}", case.name)));
    }
    stop.store(true, Ordering::SeqCst);
    let seen = client.join().expect("background client");
    println!(
        "background client: {} answered, {} shed with 503 + Retry-After, {} unexpected",
        seen.ok,
        seen.shed,
        seen.unexpected.len()
    );
    problems.extend(seen.unexpected.iter().map(|u| format!("background: {u}")));
    if seen.ok == 0 {
        problems.push("background client got no answer at all".into());
    }
    assert!(
        inst.wait_exit(Duration::from_millis(200)).is_none(),
        "the server exited"
    );
    let output = inst.output();
    if output.contains("panicked") {
        problems.push("the server log shows a panic".into());
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}\n--- server output (tail) ---\n{}",
        problems.len(),
        problems.join("\n"),
        output
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn native_hostile_corpus() {
    hostile_corpus(Mode::Native, &[]);
}

#[test]
fn qemu_hostile_corpus() {
    hostile_corpus(Mode::Qemu, &["--memory", "64", "--smp", "2"]);
}
