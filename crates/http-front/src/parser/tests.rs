use super::*;

fn limits() -> Limits {
    Limits {
        max_header_bytes: 1024,
        max_headers: 8,
        max_body_bytes: 64,
        ..Limits::default()
    }
}

type Outcome = (Vec<Request>, Option<HttpError>);

/// Feeds `input` in pieces of the given sizes (cycled) and collects everything parsed.
fn feed(input: &[u8], piece_sizes: &[usize], limits: Limits) -> (Outcome, bool) {
    let mut parser = RequestParser::new(limits);
    let mut requests = Vec::new();
    let mut rest = input;
    let mut sizes = piece_sizes.iter().cycle();
    loop {
        let size = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len().max(1));
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        parser.push(piece);
        rest = tail;
        loop {
            match parser.next_request() {
                Ok(Some(request)) => requests.push(request),
                Ok(None) => break,
                Err(error) => return ((requests, Some(error)), false),
            }
        }
        if rest.is_empty() {
            return ((requests, None), parser.is_idle());
        }
    }
}

/// A tiny deterministic generator for split sizes and mutations.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// Parses `input` whole, byte by byte and in random splits; all must agree.
/// Returns the requests, the error (if any) and whether the parser ended idle.
fn parse_with(input: &[u8], limits: Limits) -> (Vec<Request>, Option<HttpError>, bool) {
    let (whole, whole_idle) = feed(input, &[usize::MAX], limits);
    let (bytewise, bytewise_idle) = feed(input, &[1], limits);
    assert_eq!(whole, bytewise, "whole vs byte-by-byte for {input:?}");
    assert_eq!(whole_idle, bytewise_idle);
    for seed in 1..12 {
        let mut rng = Lcg(seed);
        let sizes: Vec<usize> = (0..16).map(|_| 1 + (rng.next() % 40) as usize).collect();
        let (split, split_idle) = feed(input, &sizes, limits);
        assert_eq!(whole, split, "whole vs split {sizes:?} for {input:?}");
        assert_eq!(whole_idle, split_idle);
    }
    (whole.0, whole.1, whole_idle)
}

fn parse(input: &[u8]) -> (Vec<Request>, Option<HttpError>, bool) {
    parse_with(input, limits())
}

fn one(input: &[u8]) -> Request {
    let (mut requests, error, idle) = parse(input);
    assert_eq!(error, None);
    assert!(idle, "bytes left over");
    assert_eq!(requests.len(), 1);
    requests.remove(0)
}

fn error_of(input: &[u8]) -> HttpError {
    let (_, error, _) = parse(input);
    error.unwrap_or_else(|| panic!("no error for {:?}", String::from_utf8_lossy(input)))
}

#[test]
fn parses_a_simple_get() {
    let request = one(b"GET /a/b%20c?x=1&y HTTP/1.1\r\nHost: h\r\nX-Thing:  v  \r\n\r\n");
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, "/a/b%20c");
    assert_eq!(request.query.as_deref(), Some("x=1&y"));
    assert_eq!(request.version, Version::Http11);
    assert_eq!(
        request.headers,
        vec![
            ("host".to_string(), "h".to_string()),
            ("x-thing".to_string(), "v".to_string())
        ]
    );
    assert_eq!(request.header("X-THING"), Some("v"));
    assert!(request.body.is_empty());
    assert!(request.keep_alive());
    assert_eq!(request.target(), "/a/b%20c?x=1&y");
}

#[test]
fn targets_in_other_forms() {
    let request = one(b"GET http://example.com:80/p?q HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(
        (request.path.as_str(), request.query.as_deref()),
        ("/p", Some("q"))
    );
    let request = one(b"GET HTTPS://example.com HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(request.path, "/");
    let request = one(b"GET http://example.com?z HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(
        (request.path.as_str(), request.query.as_deref()),
        ("/", Some("z"))
    );
    let request = one(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(request.path, "*");
    let request = one(b"GET /? HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(request.query.as_deref(), Some(""));
    assert_eq!(
        error_of(b"GET foo HTTP/1.1\r\nHost: h\r\n\r\n").status(),
        400
    );
    assert_eq!(error_of(b"CONNECT host:443 HTTP/1.1\r\n\r\n").status(), 400);
}

#[test]
fn leading_empty_lines_are_skipped() {
    let request = one(b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(request.path, "/");
}

#[test]
fn garbage_is_a_bad_request() {
    for input in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
        b"HELLO WORLD\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nno colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nBad Name: v\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n",
        b" GET / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n continued\r\n\r\n",
    ] {
        assert_eq!(error_of(input).status(), 400, "{input:?}");
    }
}

#[test]
fn unsupported_versions_get_505() {
    assert_eq!(
        error_of(b"GET / HTTP/2.0\r\n\r\n"),
        HttpError::VersionNotSupported
    );
    assert_eq!(
        error_of(b"GET / HTTP/1.2\r\n\r\n"),
        HttpError::VersionNotSupported
    );
    assert_eq!(error_of(b"GET / FTP/1.1\r\n\r\n").status(), 400);
}

#[test]
fn http_1_0_and_connection_tokens() {
    let request = one(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(request.version, Version::Http10);
    assert!(!request.keep_alive());
    assert!(one(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive());
    assert!(!one(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade, CLOSE\r\n\r\n").keep_alive());
    assert!(one(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n").keep_alive());
}

#[test]
fn oversized_heads_get_431() {
    let long = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nX-Long: {}\r\n\r\n",
        "a".repeat(2000)
    );
    assert_eq!(error_of(long.as_bytes()), HttpError::HeadersTooLarge);
    // Still incomplete but already over the limit.
    let unfinished = format!("GET / HTTP/1.1\r\nHost: h\r\nX-Long: {}", "a".repeat(2000));
    assert_eq!(error_of(unfinished.as_bytes()), HttpError::HeadersTooLarge);
    // Endless empty lines are bounded too.
    assert_eq!(
        error_of("\r\n".repeat(600).as_bytes()),
        HttpError::HeadersTooLarge
    );
    // Exactly at the limit is fine.
    let base = "GET / HTTP/1.1\r\nHost: h\r\nX: \r\n\r\n".len();
    let exact = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
        "b".repeat(1024 - base)
    );
    assert_eq!(exact.len(), 1024);
    assert_eq!(
        one(exact.as_bytes()).header("x").map(str::len),
        Some(1024 - base)
    );
}

#[test]
fn too_many_headers_get_431() {
    let mut input = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
    for i in 0..8 {
        input.push_str(&format!("X-{i}: v\r\n"));
    }
    input.push_str("\r\n");
    assert_eq!(error_of(input.as_bytes()), HttpError::HeadersTooLarge);
    let seven: String = (0..7).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(
        one(format!("GET / HTTP/1.1\r\nHost: h\r\n{seven}\r\n").as_bytes())
            .headers
            .len(),
        8
    );
}

#[test]
fn non_utf8_header_values_are_rejected() {
    assert_eq!(
        error_of(b"GET / HTTP/1.1\r\nHost: h\r\nX: \xff\xfe\r\n\r\n").status(),
        400
    );
}

#[test]
fn content_length_bodies() {
    let request = one(b"POST /f HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world");
    assert_eq!(request.body, b"hello world");
    let request = one(b"POST /f HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
    assert!(request.body.is_empty());
    // Repeated identical values are accepted.
    let request =
        one(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3, 3\r\n\r\nabc");
    assert_eq!(request.body, b"abc");
    // Exactly the limit.
    let body = "x".repeat(64);
    let input = format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 64\r\n\r\n{body}");
    assert_eq!(one(input.as_bytes()).body.len(), 64);
}

#[test]
fn truncated_bodies_wait_for_more() {
    let (requests, error, idle) =
        parse(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc");
    assert!(requests.is_empty());
    assert_eq!(error, None);
    assert!(!idle);
    let (requests, error, idle) =
        parse(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab");
    assert!(requests.is_empty() && error.is_none() && !idle);
    let (requests, error, idle) = parse(b"GET / HTTP/1.1\r\nHost: x\r\n");
    assert!(requests.is_empty() && error.is_none() && !idle);
}

#[test]
fn bad_content_lengths_are_rejected() {
    for value in [
        "abc",
        "-1",
        "+5",
        "",
        "1 2",
        "0x10",
        "5, 6",
        "99999999999999999999999999",
    ] {
        let input = format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {value}\r\n\r\n");
        assert_eq!(error_of(input.as_bytes()).status(), 400, "{value:?}");
    }
    let conflicting =
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd";
    assert_eq!(error_of(conflicting).status(), 400);
}

#[test]
fn large_bodies_get_413_before_they_arrive() {
    let (_, error, _) = parse(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 65\r\n\r\n");
    assert_eq!(error, Some(HttpError::PayloadTooLarge { limit: 64 }));
}

#[test]
fn transfer_encoding_rules() {
    let both =
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
    assert_eq!(error_of(both).status(), 400);
    let gzip = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n";
    assert_eq!(error_of(gzip).status(), 501);
    let gzip_chunked = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
    assert_eq!(error_of(gzip_chunked).status(), 501);
    let twice =
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(error_of(twice).status(), 400);
    let empty = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \r\n\r\n";
    assert_eq!(error_of(empty).status(), 400);
}

#[test]
fn chunked_bodies() {
    let request = one(
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n\
          4\r\nWiki\r\n5;name=value\r\npedia\r\nD \r\n in\r\n\r\nchunks\r\n0\r\n\r\n",
    );
    assert_eq!(request.body, b"Wikipedia in\r\n\r\nchunks");
    assert!(request.trailers.is_empty());
    let request = one(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert!(request.body.is_empty());
}

#[test]
fn chunked_trailers() {
    let request = one(
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nabc\r\n0\r\nX-Checksum: 42\r\nX-Other: y\r\n\r\n",
    );
    assert_eq!(request.body, b"abc");
    assert_eq!(
        request.trailers,
        vec![
            ("x-checksum".to_string(), "42".to_string()),
            ("x-other".to_string(), "y".to_string())
        ]
    );
    let mut many =
        String::from("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n");
    for i in 0..9 {
        many.push_str(&format!("T-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(error_of(many.as_bytes()), HttpError::HeadersTooLarge);
    let long = format!(
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: {}",
        "v".repeat(2000)
    );
    assert_eq!(error_of(long.as_bytes()), HttpError::HeadersTooLarge);
    let bad =
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nnot a field\r\n\r\n";
    assert_eq!(error_of(bad).status(), 400);
}

#[test]
fn chunked_errors() {
    let head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    let cases: &[(&str, u16)] = &[
        ("ffffffffffffffffffff\r\n", 400), // overflow
        ("10000000000000000\r\n", 400),    // 17 digits
        ("zz\r\n", 400),                   // not hex
        ("\r\n", 400),                     // empty size
        ("-1\r\n", 400),                   // sign
        ("4\r\nWikiX\r\n0\r\n\r\n", 400),  // data longer than size
        ("4\nWiki\r\n0\r\n\r\n", 400),     // bare LF after size
        ("41\r\n", 413),                   // single chunk over the limit
        ("ffffffffffffff\r\n", 413),       // huge but parseable
    ];
    for (body, status) in cases {
        let input = format!("{head}{body}");
        assert_eq!(error_of(input.as_bytes()).status(), *status, "{body:?}");
    }
    // Many small chunks adding up beyond the limit.
    let chunks = "8\r\n01234567\r\n".repeat(9);
    let input = format!("{head}{chunks}0\r\n\r\n");
    assert_eq!(error_of(input.as_bytes()).status(), 413);
    // An endless chunk extension is bounded.
    let input = format!("{head}1;{}", "e".repeat(5000));
    assert_eq!(error_of(input.as_bytes()).status(), 400);
}

#[test]
fn pipelined_requests_come_out_in_order() {
    let input = b"GET /one HTTP/1.1\r\nHost: h\r\n\r\n\
        POST /two HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc\
        POST /three HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n\
        GET /four HTTP/1.0\r\n\r\n";
    let (requests, error, idle) = parse(input);
    assert_eq!(error, None);
    assert!(idle);
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/one", "/two", "/three", "/four"]);
    assert_eq!(requests[1].body, b"abc");
    assert_eq!(requests[2].body, b"xy");
    assert_eq!(requests[3].version, Version::Http10);
}

/// Found by `cargo xtask fuzz` (http_request): `GET /  HTTP/1.1` got 505 when the request line
/// arrived whole and 400 when it arrived in pieces.
#[test]
fn a_bad_version_gets_one_status_however_it_arrives() {
    let input = b"GET /  HTTP/1.1\r\nHost: x\r\n\r\n";
    let (whole, _) = feed(input, &[input.len()], limits());
    for size in 1..input.len() {
        assert_eq!(feed(input, &[size], limits()).0, whole, "pieces of {size}");
    }
    assert_eq!(whole.1.map(|e| e.status()), Some(505));
}

/// Found by `cargo xtask fuzz` (http_request): a malformed byte beyond the head limit gave 400
/// when the head arrived whole and 431 when it arrived in pieces.
#[test]
fn a_bad_byte_beyond_the_head_limit_is_431_however_it_arrives() {
    let mut input = b"GET / HTTP/1.1\r\nX: ".to_vec();
    input.extend(std::iter::repeat_n(b'a', 1100));
    input.extend(b"\x01\r\n\r\n");
    for size in [1, 4, 100, 1000, input.len()] {
        let ((requests, error), _) = feed(&input, &[size], limits());
        assert!(requests.is_empty());
        assert_eq!(error.map(|e| e.status()), Some(431), "pieces of {size}");
    }
    // A bad byte within the limit, on a line that ends beyond it: 400 however it arrives.
    let mut input = b"GET / HTTP/1.1\r\nX: \r\x01".to_vec();
    input.extend(std::iter::repeat_n(b'a', 1100));
    input.extend(b"\r\n\r\n");
    for size in [1, 4, 100, 1000, input.len()] {
        let ((_, error), _) = feed(&input, &[size], limits());
        assert_eq!(error.map(|e| e.status()), Some(400), "pieces of {size}");
    }
}

/// Found by `cargo xtask fuzz` (http_request) in a CI run: the same in a chunked body's
/// trailer section, where a bad byte within the limit on a line ending beyond it gave 400 when
/// the request arrived whole and 431 when it arrived byte by byte.
#[test]
fn a_bad_trailer_byte_gives_the_same_answer_however_it_arrives() {
    let head = b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n";
    let mut within = head.to_vec();
    within.extend(b"N: v\r\nTransfer\x00");
    within.extend(std::iter::repeat_n(b'a', 1100));
    within.extend(b"\r\n\r\n");
    let mut beyond = head.to_vec();
    beyond.extend(b"N: v\r\nX: ");
    beyond.extend(std::iter::repeat_n(b'a', 1100));
    beyond.extend(b"\x00\r\n\r\n");
    for (input, status) in [(within, 400), (beyond, 431)] {
        for size in [1, 4, 100, 1000, input.len()] {
            let ((requests, error), _) = feed(&input, &[size], limits());
            assert!(requests.is_empty());
            assert_eq!(error.map(|e| e.status()), Some(status), "pieces of {size}");
        }
    }
}

#[test]
fn requests_before_an_error_are_still_returned() {
    let (requests, error, _) = parse(b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\nBROKEN\x00\r\n\r\n");
    assert_eq!(requests.len(), 1);
    assert_eq!(error.map(|e| e.status()), Some(400));
}

#[test]
fn errors_are_sticky() {
    let mut parser = RequestParser::new(limits());
    parser.push(b"GET / HTTP/9.9\r\n\r\n");
    assert_eq!(parser.next_request(), Err(HttpError::VersionNotSupported));
    parser.push(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(parser.next_request(), Err(HttpError::VersionNotSupported));
}

#[test]
fn expect_continue_is_signalled_once() {
    let mut parser = RequestParser::new(limits());
    parser.push(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    assert_eq!(parser.next_request(), Ok(None));
    assert!(parser.take_continue());
    assert!(!parser.take_continue());
    parser.push(b"abc");
    let request = parser.next_request().ok().flatten().expect("request");
    assert_eq!(request.body, b"abc");
    assert!(!parser.take_continue());

    // Not for HTTP/1.0, not without a body, not when the body came along.
    for input in [
        &b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
    ] {
        let mut parser = RequestParser::new(limits());
        parser.push(input);
        let _ = parser.next_request();
        assert!(!parser.take_continue(), "{input:?}");
    }
    assert_eq!(
        error_of(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: teapot\r\n\r\n").status(),
        417
    );
}

#[test]
fn idle_tracks_partial_input() {
    let mut parser = RequestParser::new(limits());
    assert!(parser.is_idle());
    parser.push(b"G");
    assert!(!parser.is_idle());
    assert_eq!(parser.next_request(), Ok(None));
    parser.push(b"ET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(parser.next_request().ok().flatten().is_some());
    assert!(parser.is_idle());
    assert_eq!(parser.buffered(), 0);
}

/// Mutated valid requests must never panic and must parse the same however they are split.
#[test]
fn mutated_inputs_are_consistent() {
    let seeds: [&[u8]; 3] = [
        b"POST /a?b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;e\r\nabc\r\n0\r\nT: 1\r\n\r\n",
        b"GET http://h/p HTTP/1.1\r\nHost: h\r\nConnection: close\r\nExpect: 100-continue\r\n\r\n",
    ];
    let alphabet = b"\r\n :;0123456789abcdefxGET/HTTP1.\x00\xff";
    let mut rng = Lcg(7);
    for seed in seeds {
        for _ in 0..150 {
            let mut input = seed.to_vec();
            for _ in 0..1 + rng.next() % 4 {
                let at = (rng.next() as usize) % input.len();
                let byte = alphabet[(rng.next() as usize) % alphabet.len()];
                match rng.next() % 3 {
                    0 => input[at] = byte,
                    1 => input.insert(at, byte),
                    _ => {
                        input.remove(at);
                    }
                }
            }
            let (requests, error, _) = parse(&input);
            if let Some(error) = error {
                assert!((400..600).contains(&error.status()));
            }
            for request in requests {
                assert!(request.body.len() <= 64);
                assert!(request.path.starts_with('/') || request.path == "*");
            }
        }
    }
}

/// A head trickled byte by byte is parsed once per byte of its first few bytes, then once per
/// line: not once per byte (which is quadratic in the head's size).
#[test]
fn a_trickled_head_is_parsed_once_per_line() {
    let head = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n";
    let mut scan = LineScan::default();
    let windows = (1..=head.len())
        .filter(|&end| scan.next_window(&head[..end]).is_some())
        .count();
    // 16 windows while the first line (16 bytes) arrives, then one per further line.
    assert_eq!(windows, FIRST_BYTES + 3);
    let long = [b"GET / HTTP/1.1\r\n".as_slice(), &[b'a'; 8000]].concat();
    let mut scan = LineScan::default();
    let windows = (1..=long.len())
        .filter(|&end| scan.next_window(&long[..end]).is_some())
        .count();
    assert_eq!(
        windows, FIRST_BYTES,
        "an unfinished line is not parsed again"
    );
}

/// A declared body counts whole from the head on, but memory is reserved as it arrives and
/// never beyond the declared length.
#[test]
fn declared_bodies_are_charged_up_front_and_reserved_as_they_arrive() {
    let limits = Limits {
        max_body_bytes: 1 << 20,
        ..Limits::default()
    };
    let mut parser = RequestParser::new(limits);
    parser.push(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n");
    assert_eq!(parser.next_request(), Ok(None));
    assert!(parser.footprint() >= 1_000_000, "{}", parser.footprint());
    let State::Body { request, .. } = &parser.state else {
        panic!("not reading the body");
    };
    assert!(request.body.capacity() <= BODY_RESERVE);
    let piece = [b'x'; 10_000];
    let mut request = None;
    for _ in 0..100 {
        parser.push(&piece);
        if let Some(done) = parser.next_request().expect("valid body") {
            request = Some(done);
        }
    }
    let request = request.expect("complete");
    assert_eq!(request.body.len(), 1_000_000);
    assert_eq!(request.body.capacity(), 1_000_000);
}

#[test]
fn http11_needs_exactly_one_host_http10_may_omit_it() {
    let missing = error_of(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(missing.status(), 400);
    assert!(missing.to_string().contains("without Host"), "{missing}");
    let twice = error_of(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    assert_eq!(twice.status(), 400);
    assert_eq!(
        error_of(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n").status(),
        400
    );
    assert_eq!(one(b"GET / HTTP/1.0\r\n\r\n").version, Version::Http10);
    assert_eq!(one(b"GET / HTTP/1.1\r\nhOsT: h\r\n\r\n").path, "/");
}
