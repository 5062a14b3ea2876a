//! Feeds arbitrary bytes to the request parser, whole and in pieces: it must never panic,
//! never exceed its limits, and give the same result however the input is split.
#![no_main]

use http_front::{Limits, Request, RequestParser};
use libfuzzer_sys::fuzz_target;

fn run(input: &[u8], piece: usize, limits: Limits) -> (Vec<Request>, Option<u16>) {
    let mut parser = RequestParser::new(limits);
    let mut requests = Vec::new();
    for part in input.chunks(piece.max(1)) {
        parser.push(part);
        loop {
            match parser.next_request() {
                Ok(Some(request)) => requests.push(request),
                Ok(None) => break,
                Err(error) => return (requests, Some(error.status())),
            }
        }
    }
    (requests, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_header_bytes: 512,
        max_headers: 8,
        max_body_bytes: 256,
        ..Limits::default()
    };
    let whole = run(input, input.len(), limits);
    let pieces = run(input, usize::from(split % 17) + 1, limits);
    assert_eq!(whole, pieces);
    for request in &whole.0 {
        assert!(request.body.len() <= limits.max_body_bytes);
        assert!(request.headers.len() <= limits.max_headers);
    }
    if let Some(status) = whole.1 {
        assert!((400..600).contains(&status));
    }
});
