//! What one hostile request costs the host, measured: the memory it allocates (per thread, with
//! a counting allocator) against the request's reservation, the size of its error body, and the
//! log records it causes (with a capturing logger). Each test runs its requests on its own
//! thread, as a worker does, and counts only that thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use http_front::{Handler, Request, Response};
use platform::app::App;
use platform::memory::reservation_for;

mod support;

const TOKEN: &str = "bounded-test-token";

// ---- Allocation counting, per thread --------------------------------------------------------

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// Notes `peak_extra` more bytes alive for a moment, then `delta` bytes for good.
fn note(peak_extra: isize, delta: isize) {
    let _ = LIVE.try_with(|live| {
        let moment = live.get() + peak_extra;
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(moment)));
        live.set(live.get() + delta);
    });
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are updated besides.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            note(layout.size() as isize, layout.size() as isize);
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc_zeroed(layout) };
        if !pointer.is_null() {
            note(layout.size() as isize, layout.size() as isize);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) };
        note(0, -(layout.size() as isize));
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            // Old and new block may both exist while the contents are copied.
            note(
                new_size as isize,
                new_size as isize - layout.size() as isize,
            );
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `body` and returns its result with the most bytes it had allocated at once on this
/// thread (beyond what was allocated before).
fn peak_allocated<T>(body: impl FnOnce() -> T) -> (T, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(start));
    let result = body();
    let peak = PEAK.with(Cell::get);
    (result, usize::try_from(peak - start).unwrap_or(0))
}

// ---- Log capture, per thread ----------------------------------------------------------------

/// Records logged, with the thread that logged them.
static RECORDS: Mutex<Vec<(std::thread::ThreadId, String, String)>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let entry = (
            std::thread::current().id(),
            record.target().to_string(),
            record.args().to_string(),
        );
        RECORDS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(entry);
    }

    fn flush(&self) {}
}

/// The records this thread logged with `target`.
fn logged_here(target: &str) -> Vec<String> {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        log::set_logger(&Capture).expect("the only logger of this test binary");
        log::set_max_level(log::LevelFilter::Trace);
    });
    let me = std::thread::current().id();
    RECORDS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .filter(|(thread, t, _)| *thread == me && t == target)
        .map(|(_, _, message)| message.clone())
        .collect()
}

// ---- The platform ---------------------------------------------------------------------------

fn app() -> Arc<App> {
    logged_here("");
    Arc::new(App::new(support::options(TOKEN)))
}

fn request(method: &str, target: &str, body: Vec<u8>, admin: bool) -> Request {
    support::request(method, target, body, "bounded.test", admin.then_some(TOKEN))
}

fn deploy(app: &App, name: &str, query: &str, source: &[u8]) {
    let target = format!("/_admin/functions/{name}?{query}");
    let response = app.handle(&request("PUT", &target, source.to_vec(), true));
    assert_eq!(response.status, 201, "{}", text(&response));
}

fn repo_file(path: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(response: &Response) -> String {
    String::from_utf8_lossy(&response.body).into_owned()
}

fn error_message(response: &Response) -> String {
    let json: serde_json::Value = serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(response)));
    json["error"].as_str().unwrap_or_default().to_string()
}

/// Runs `body` on a fresh thread (a worker), so that its allocations and log records are its
/// own.
fn on_worker<T: Send>(body: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(body).join().expect("worker"))
}

/// `[0,0,...,0]` of `bytes` bytes at most.
fn zeros_array(bytes: usize) -> Vec<u8> {
    let mut body = b"[0".to_vec();
    while body.len() + 3 <= bytes {
        body.extend_from_slice(b",0");
    }
    body.push(b']');
    body
}

// ---- Tests ----------------------------------------------------------------------------------

/// `POST /exec/{fn}` with a JSON array of millions of numbers: over max-body it is a 413 before
/// anything is parsed; within it, parsing stops after one argument too many, allocating next to
/// nothing (a `Vec<Value>` of the whole array was 30 times the body).
#[test]
fn exec_bodies_are_bounded_before_they_are_parsed() {
    let app = app();
    deploy(&app, "sum", "max-body=1m", &repo_file("guests/wat/sum.wat"));
    on_worker(|| {
        let body = zeros_array(1 << 20);
        let (response, peak) =
            peak_allocated(|| app.handle(&request("POST", "/exec/sum", body, false)));
        // Before the fix: 34 MB for this 1 MiB body.
        assert!(peak < 256 << 10, "peak {peak} bytes");
        assert_eq!(response.status, 400, "{}", text(&response));
        assert!(
            error_message(&response).contains("expected 2 argument(s)"),
            "{}",
            text(&response)
        );

        let huge = zeros_array(4 << 20);
        let response = app.handle(&request("POST", "/exec/sum", huge, false));
        assert_eq!(response.status, 413, "{}", text(&response));
        assert!(error_message(&response).contains("max-body=1048576"));

        let response = app.handle(&request("POST", "/exec/sum", b"[5, 2]".to_vec(), false));
        assert_eq!((response.status, text(&response).as_str()), (200, "7"));
    });
}

/// A guest's `http-error` of 1.8 MiB of control characters: the error body quotes about a
/// kilobyte of it (escaped and cut), and no more than the function's max-body; the host never
/// holds more than the request's reservation while answering it.
#[test]
fn guest_error_strings_are_cut_and_stay_within_the_reservation() {
    let app = app();
    let source = repo_file("guests/hostile/guest_error_huge.wat");
    deploy(&app, "huge-error", "max-memory=4m", &source);
    deploy(&app, "small-body", "max-memory=4m&max-body=100", &source);
    on_worker(|| {
        let (response, peak) =
            peak_allocated(|| app.handle(&request("GET", "/huge-error/x", Vec::new(), false)));
        // Before the fix: 33 MB, with a 10.8 MB body.
        assert!(
            peak <= reservation_for(4 << 20),
            "peak {peak} bytes over the reservation of {}",
            reservation_for(4 << 20)
        );
        assert!(
            response.body.len() <= 8 << 10,
            "{} bytes",
            response.body.len()
        );
        assert_eq!(response.status, 500);
        let message = error_message(&response);
        assert!(
            message.starts_with(
                "huge-error::handle-http(h) returned an error: unexpected error: \\u{1}"
            ),
            "{message}"
        );
        assert!(message.ends_with(sandbox::CUT_MARK), "{message}");

        let response = app.handle(&request("GET", "/small-body/x", Vec::new(), false));
        assert_eq!(response.status, 500);
        let message = error_message(&response);
        assert!(message.len() <= 100 + sandbox::CUT_MARK.len(), "{message}");
    });
}

/// A WASI command writing 16 KiB of line breaks and terminal escapes to stderr causes one log
/// record, on one line, with the escapes escaped.
#[test]
fn wasi_stderr_is_one_bounded_log_record() {
    let app = app();
    let source = br#"(module
        (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "_start")
          (memory.fill (i32.const 1024) (i32.const 10) (i32.const 16384))
          (i32.store8 (i32.const 17000) (i32.const 27))
          (i32.store8 (i32.const 17001) (i32.const 13))
          (i32.store (i32.const 0) (i32.const 1024))
          (i32.store (i32.const 4) (i32.const 16384))
          (i32.store (i32.const 8) (i32.const 17000))
          (i32.store (i32.const 12) (i32.const 2))
          (drop (call $w (i32.const 2) (i32.const 0) (i32.const 2) (i32.const 100)))))"#;
    deploy(&app, "newlines", "", source);
    let records = on_worker(|| {
        let response = app.handle(&request("GET", "/api/newlines/x", Vec::new(), false));
        assert_eq!(response.status, 200, "{}", text(&response));
        logged_here("guest")
    });
    assert_eq!(records.len(), 1, "{} records", records.len());
    let record = &records[0];
    assert!(record.len() <= 8 << 10, "{} bytes", record.len());
    assert!(!record.contains(['\n', '\r', '\u{1b}']), "{record:?}");
    assert!(record.ends_with("\\u{1b}\\r"), "{record:?}");
}
