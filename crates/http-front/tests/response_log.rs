//! Invalid response headers are dropped with one log record per response, however many a
//! handler (a guest) set: the records go to the serial console from the I/O thread.

use std::sync::Mutex;

use http_front::{Response, Version};

static RECORDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        RECORDS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(record.args().to_string());
    }

    fn flush(&self) {}
}

#[test]
fn thousands_of_invalid_headers_make_one_bounded_log_record() {
    log::set_logger(&Capture).expect("the only logger of this test binary");
    log::set_max_level(log::LevelFilter::Trace);
    let huge_name = format!("bad name{}", "\n".repeat(1 << 20));
    let mut response = Response::text(200, "ok").with_header(&huge_name, "x");
    for index in 0..10_000 {
        response = response
            .with_header(&format!("bad name {index}"), "x")
            .with_header("x-injected", "a\r\nset-cookie: b");
    }
    let response = response.with_header("x-good", "kept");
    let wire = response.serialize(false, true, Version::Http11, None);
    let head = String::from_utf8_lossy(&wire).to_ascii_lowercase();
    assert!(head.contains("x-good: kept"));
    assert!(!head.contains("bad name") && !head.contains("set-cookie"));
    let records = RECORDS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    assert_eq!(records.len(), 1, "{} records", records.len());
    assert!(records[0].contains("20001"), "{}", records[0]);
    assert!(records[0].len() < 1024, "{} bytes", records[0].len());
    assert!(!records[0].contains('\n'), "{}", records[0]);
}
