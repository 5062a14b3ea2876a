//! A newcomer's first functions: `cargo xtask new http|wasi` in a temporary directory, deployed
//! with `cargo xtask deploy NAME DIR` (which builds the crate) to the native server, then called;
//! and what the server says about them: their log lines, a panic, routes, a wrong method.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{Instance, Mode};

use crate::{ADMIN_TOKEN, call};

/// A directory removed when dropped, also when the test fails.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `cargo xtask ARGS` and returns its stdout; panics with its output if it fails.
fn xtask(args: &[&str]) -> String {
    // The functions' builds share one target directory across runs: std for wasm is built once.
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/first-function");
    let output = Command::new(e2e::xtask_bin())
        .args(args)
        .env("CARGO_TARGET_DIR", shared)
        .output()
        .expect("start xtask");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "xtask {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Waits until the server's output holds `text` (its lines arrive through a pipe).
fn wait_for_output(instance: &Instance, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let output = instance.output();
        if output.contains(text) || Instant::now() > deadline {
            return output;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Edits the scaffold's `src/` file `file`: each `(from, to)` must match.
fn edit(dir: &Path, file: &str, edits: &[(&str, &str)]) {
    let path = dir.join("src").join(file);
    let mut text = std::fs::read_to_string(&path).expect("scaffold source");
    for (from, to) in edits {
        assert!(
            text.contains(from),
            "{from:?} not in {}:\n{text}",
            path.display()
        );
        text = text.replacen(from, to, 1);
    }
    std::fs::write(&path, text).expect("write scaffold source");
}

/// Both kinds scaffolded, deployed from their directories and answering; their logs, panics and
/// routing errors reach the log and the client.
#[test]
fn scaffolded_functions_build_deploy_and_answer() {
    let temp = TempDir(std::env::temp_dir().join(format!("first-function-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&temp.0);
    let http_dir = temp.0.join("greet");
    let wasi_dir = temp.0.join("shout");
    xtask(&["new", "http", "greet", "--dir", &http_dir.to_string_lossy()]);
    xtask(&["new", "wasi", "shout", "--dir", &wasi_dir.to_string_lossy()]);
    for file in [
        "rust-toolchain.toml",
        ".cargo/config.toml",
        "Cargo.toml",
        "README.md",
    ] {
        assert!(http_dir.join(file).is_file(), "{file}");
        assert!(wasi_dir.join(file).is_file(), "{file}");
    }
    let readme = std::fs::read_to_string(http_dir.join("README.md")).expect("README");
    assert_eq!(readme.lines().count(), 3, "{readme}");

    // More handlers next to the scaffold's own route: a panic, Spin's `{id}`, a chatty one.
    edit(
        &http_dir,
        "lib.rs",
        &[
            (
                ".get(\"/hello/:name\", \"hello\")",
                ".get(\"/hello/:name\", \"hello\").get(\"/boom\", \"boom\")\
                 .post(\"/items/{id}\", \"item\").get(\"/chatty\", \"chatty\")",
            ),
            ("(init; hello)", "(init; hello, boom, item, chatty)"),
        ],
    );
    let extra = r#"
fn boom(_req: Request) -> Result<Response, HttpError> {
    let items: Vec<u32> = Vec::new();
    panic!("boom with {} items", items.len());
}

fn item(req: Request) -> Result<Response, HttpError> {
    Ok(Response::text(200, format!("item {}", req.param("id").unwrap_or("?"))))
}

fn chatty(_req: Request) -> Result<Response, HttpError> {
    for i in 0..1000 {
        uniwasm_sdk::log::info(&format!("chatty line {i}"));
    }
    Ok(Response::text(200, "said a lot"))
}
"#;
    let lib = http_dir.join("src/lib.rs");
    let text = std::fs::read_to_string(&lib).expect("lib.rs") + extra;
    std::fs::write(&lib, text).expect("write lib.rs");
    edit(
        &wasi_dir,
        "main.rs",
        &[(
            "    println!(",
            "    if input.trim() == \"panic\" {\n        panic!(\"asked to panic\");\n    }\n    println!(",
        )],
    );

    let instance = Instance::start(
        Mode::Native,
        &format!("log=info admin-token={ADMIN_TOKEN}"),
        &[],
    );
    let port = instance.port.to_string();
    for (name, dir) in [("greet", &http_dir), ("shout", &wasi_dir)] {
        let deployed = xtask(&[
            "deploy",
            name,
            &dir.to_string_lossy(),
            "--port",
            &port,
            "--token",
            ADMIN_TOKEN,
        ]);
        assert!(deployed.starts_with("201 "), "{deployed}");
    }
    let port = instance.port;

    let hello = call(port, "GET", "/greet/hello/world", b"");
    assert_eq!(
        (hello.status, hello.text().as_str()),
        (200, "hello, world\n")
    );
    wait_for_output(&instance, "greet: greeting world");
    assert!(instance.output().contains("greet: greeting world"));

    let boom = call(port, "GET", "/greet/boom", b"");
    assert_eq!(boom.status, 500, "{}", boom.text());
    assert!(
        boom.text()
            .contains("panicked: boom with 0 items (src/lib.rs:"),
        "{}",
        boom.text()
    );
    let output = wait_for_output(&instance, "panicked: boom with 0 items");
    assert!(output.contains("panicked: boom with 0 items"), "{output}");

    let item = call(port, "POST", "/greet/items/7", b"");
    assert_eq!((item.status, item.text().as_str()), (200, "item 7"));
    let wrong_method = call(port, "GET", "/greet/items/7", b"");
    assert_eq!(wrong_method.status, 405, "{}", wrong_method.text());
    assert_eq!(wrong_method.header("allow"), Some("POST"));
    let unrouted = call(port, "GET", "/greet/nope", b"");
    assert_eq!(unrouted.status, 404);
    assert!(
        unrouted
            .text()
            .contains("GET /hello/:name, GET /boom, POST /items/{id}"),
        "{}",
        unrouted.text()
    );

    // 1,000 messages in one request: 4 KiB of them reach the log, then one line says so.
    let chatty = call(port, "GET", "/greet/chatty", b"");
    assert_eq!(chatty.status, 200);
    let output = wait_for_output(&instance, "the rest are dropped");
    let logged = output.matches("greet: chatty line").count();
    assert_eq!(logged, 64, "4096 bytes at 64 bytes a short message");
    assert_eq!(
        output.matches("the rest are dropped").count(),
        1,
        "{output}"
    );

    let shout = call(port, "GET", "/api/shout/world", b"");
    assert_eq!(
        (shout.status, shout.text().as_str()),
        (200, "hello, world\n")
    );
    let posted = call(port, "POST", "/api/shout", b"bob");
    assert_eq!(
        (posted.status, posted.text().as_str()),
        (200, "hello, bob\n")
    );
    let output = wait_for_output(&instance, "shout: stderr (13 bytes): read 3 bytes");
    assert!(
        output.contains("shout: stderr (13 bytes): read 3 bytes"),
        "{output}"
    );
    let panicked = call(port, "GET", "/api/shout/panic", b"");
    assert_eq!(panicked.status, 500);
    assert!(
        panicked.text().contains("asked to panic"),
        "{}",
        panicked.text()
    );
    let output = wait_for_output(&instance, "asked to panic");
    assert!(output.contains("asked to panic"), "{output}");
}
