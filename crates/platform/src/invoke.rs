//! Running a function for a request: its memory reserved from the server's budget, its run in
//! the sandbox, and its outcome and cost recorded, failures included.

use std::time::{Duration, Instant};

use http_front::{Request, Response};
use sandbox::{Fault, GUEST_TEXT_MAX, Report, clip_display, clip_end};
use wasm_host::percent_decode_bytes;

use crate::app::{Answer, App};
use crate::error::PlatformError;
use crate::functions::{Deployed, Program};
use crate::memory::{Refused, Reservation, reservation_for};
use crate::stats::{Cost, Outcome};

/// How long a request waits for room in the memory budget before it is answered 503.
pub const RESERVE_WAIT: Duration = Duration::from_millis(500);

/// A failed invocation: the error to answer with and its class for the stats.
pub(crate) type Failure = (PlatformError, Outcome);

/// What one run produced and what it cost.
pub(crate) struct Ran {
    pub(crate) result: Result<Response, Failure>,
    pub(crate) report: Report,
}

impl Ran {
    fn before_running(failure: Failure) -> Ran {
        Ran {
            result: Err(failure),
            report: Report::default(),
        }
    }
}

/// The message for a refused reservation.
pub(crate) fn refusal_message(function: &str, refused: Refused) -> String {
    match refused {
        Refused::TooLarge { bytes, total } => format!(
            "{function} needs {bytes} bytes of the server's memory budget of {total} bytes \
             (2 × max-memory + overhead); lower its max-memory or raise memory-budget="
        ),
        Refused::Busy { bytes, total } => format!(
            "the server's memory budget ({total} bytes) is in use; {function} needs {bytes} \
             bytes: retry shortly"
        ),
    }
}

/// The stats class of a fault.
fn fault_outcome(fault: &Fault) -> Outcome {
    match fault {
        Fault::Timeout { .. } | Fault::OutOfFuel { .. } => Outcome::Timeout,
        Fault::Memory { .. } => Outcome::Memory,
        Fault::Output { .. } => Outcome::BodyTooLarge,
        Fault::Trap(_)
        | Fault::Host(_)
        | Fault::Reentrance(_)
        | Fault::Exit(_)
        | Fault::Instantiate(_) => Outcome::Trap,
    }
}

fn fault_failure(function: String, fault: Fault) -> Failure {
    let outcome = fault_outcome(&fault);
    (PlatformError::Fault { function, fault }, outcome)
}

/// The error for calling `function` through an endpoint of another kind, saying where to call it.
pub(crate) fn wrong_kind(function: &Deployed) -> Failure {
    let name = &function.name;
    let hint = match function.program {
        Program::Http(_) => format!("call /{name}/..."),
        Program::Wasi(_) => format!("call GET /api/{name}/<input>"),
        Program::Nanoprocess(_) => format!("call /exec/{name}?args=..."),
    };
    let kind = function.program.kind();
    (
        PlatformError::WrongKind {
            function: name.clone(),
            kind,
            hint,
        },
        Outcome::BadInput,
    )
}

fn body_too_large(what: &str, size: usize, function: &Deployed) -> PlatformError {
    PlatformError::BodyTooLarge(format!(
        "{what} of {size} bytes exceeds {}'s max-body={} (raise it with ?max-body= when deploying)",
        function.name, function.limits.max_body
    ))
}

/// Why a `POST /exec/{function}` body is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JsonArgsError {
    /// More elements than the function takes (parsing stopped at the first extra one).
    #[error("bad arguments: expected {expected} argument(s), the body has more")]
    TooMany {
        /// Parameters of the function.
        expected: usize,
    },
    /// Not a JSON array of numbers.
    #[error("POST /exec/{{function}} takes a JSON array of numbers ({reason})")]
    Invalid {
        /// What the JSON parser said.
        reason: String,
    },
}

/// The numbers of a JSON array, as text, for a function taking `wanted` arguments: parsing
/// stops at the first element that is not a number and at the first element beyond `wanted`,
/// so a body of a million elements costs what `wanted + 1` cost.
pub(crate) fn json_numbers(body: &[u8], wanted: usize) -> Result<Vec<String>, JsonArgsError> {
    use serde::de::{DeserializeSeed, Error as _, SeqAccess, Visitor};

    struct Numbers<'a> {
        wanted: usize,
        too_many: &'a std::cell::Cell<bool>,
    }

    impl<'de> DeserializeSeed<'de> for Numbers<'_> {
        type Value = Vec<String>;

        fn deserialize<D: serde::Deserializer<'de>>(
            self,
            input: D,
        ) -> Result<Vec<String>, D::Error> {
            input.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for Numbers<'_> {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an array of numbers")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut numbers = Vec::with_capacity(self.wanted.min(64));
            while let Some(number) = seq.next_element::<serde_json::Number>()? {
                if numbers.len() == self.wanted {
                    self.too_many.set(true);
                    return Err(A::Error::custom("too many elements"));
                }
                numbers.push(number.to_string());
            }
            Ok(numbers)
        }
    }

    let too_many = std::cell::Cell::new(false);
    let mut input = serde_json::Deserializer::from_slice(body);
    let parsed = Numbers {
        wanted,
        too_many: &too_many,
    }
    .deserialize(&mut input)
    .and_then(|numbers| input.end().map(|()| numbers));
    parsed.map_err(|error| {
        if too_many.get() {
            JsonArgsError::TooMany { expected: wanted }
        } else {
            JsonArgsError::Invalid {
                reason: error.to_string(),
            }
        }
    })
}

/// The value of `key` in a query string, decoded.
pub(crate) fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| String::from_utf8_lossy(&percent_decode_bytes(v, true)).into_owned())
    })
}

impl App {
    /// Runs `call` on the function named `name`, recording its outcome and cost.
    pub(crate) fn invoke(&self, name: &str, call: impl FnOnce(&Deployed) -> Ran) -> Answer {
        let function = self
            .lookup(name)
            .ok_or_else(|| PlatformError::NotFound(format!("no function named {name:?}")))?;
        let started = Instant::now();
        let ran = {
            let _running = self.boot.call_running();
            call(&function)
        };
        let cost = Cost {
            elapsed: started.elapsed(),
            fuel: ran.report.fuel_used,
            memory: ran.report.peak_memory as u64,
        };
        match ran.result {
            Ok(response) => {
                self.stats.record(name, Outcome::Ok, cost);
                Ok(response)
            }
            Err((error, outcome)) => {
                self.stats.record(name, outcome, cost);
                if outcome == Outcome::Trap {
                    // A trap or panic is the function's bug: its owner finds it in the log,
                    // with the message the 500 answer has (bounded the same way).
                    let message = sandbox::clip_display(&error, crate::error::MAX_ERROR_MESSAGE);
                    log::warn!(target: "guest", "{message}");
                }
                Err(error)
            }
        }
    }

    /// Reserves what one run of `function` may use from the server's memory budget.
    fn reserve(&self, function: &Deployed) -> Result<Reservation<'_>, Failure> {
        self.memory
            .reserve(reservation_for(function.limits.max_memory), RESERVE_WAIT)
            .map_err(|refused| {
                let message = refusal_message(&function.name, refused);
                log::warn!("{message}");
                (PlatformError::Busy(message), Outcome::Busy)
            })
    }

    pub(crate) fn run_http(&self, function: &Deployed, request: &Request, path: &str) -> Ran {
        let Program::Http(guest) = &function.program else {
            return Ran::before_running(wrong_kind(function));
        };
        if request.body.len() > function.limits.max_body {
            let error = body_too_large("request body", request.body.len(), function);
            return Ran::before_running((error, Outcome::BodyTooLarge));
        }
        let Some(method) = wasm_host::Method::parse(&request.method) else {
            let error = PlatformError::MethodNotAllowed {
                method: request.method.clone(),
                allowed: "GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS".into(),
            };
            return Ran::before_running((error, Outcome::BadInput));
        };
        // Everything copied for the run, and the response built from it, is covered by the
        // reservation: it is returned once the response is built.
        let reservation = match self.reserve(function) {
            Ok(reservation) => reservation,
            Err(failure) => return Ran::before_running(failure),
        };
        let uri = match &request.query {
            Some(query) => format!("{path}?{query}"),
            None => path.to_string(),
        };
        let guest_request = wasm_host::GuestRequest {
            method,
            uri,
            headers: request.headers.clone(),
            body: request.body.clone(),
        };
        let invocation = guest.handle(guest_request);
        let result = match invocation.result {
            Ok(answer) if answer.body.len() > function.limits.max_body => {
                let message = format!(
                    "response body of {} bytes exceeds {}'s max-body={}",
                    answer.body.len(),
                    function.name,
                    function.limits.max_body
                );
                Err((
                    PlatformError::Function {
                        status: 500,
                        message,
                    },
                    Outcome::BodyTooLarge,
                ))
            }
            Ok(answer) => {
                let mut response = Response::new(answer.status).with_body(answer.body);
                for (name, value) in &answer.headers {
                    response = response.with_header(name, value);
                }
                Ok(response)
            }
            Err(error) => Err(http_failure(function, error)),
        };
        drop(reservation);
        Ran {
            result,
            report: invocation.report,
        }
    }

    pub(crate) fn run_wasi(&self, function: &Deployed, request: &Request, input: &str) -> Ran {
        let Program::Wasi(module) = &function.program else {
            return Ran::before_running(wrong_kind(function));
        };
        // The input from the path is as long as the request line at most; a body is checked
        // before it is copied.
        let decoded;
        let stdin: &[u8] = if request.method == "POST" {
            &request.body
        } else {
            decoded = percent_decode_bytes(input, false);
            &decoded
        };
        if stdin.len() > function.limits.max_body {
            let error = body_too_large("input", stdin.len(), function);
            return Ran::before_running((error, Outcome::BodyTooLarge));
        }
        let reservation = match self.reserve(function) {
            Ok(reservation) => reservation,
            Err(failure) => return Ran::before_running(failure),
        };
        let input = wasm_faas::WasiInput {
            stdin: stdin.to_vec(),
            program_name: function.name.clone(),
            env: vec![("FAAS_FUNCTION".to_string(), function.name.clone())],
            ..wasm_faas::WasiInput::default()
        };
        let run = wasm_faas::run_wasi(module, &input, &function.limits.faas());
        let result = match run.result {
            Ok(output) => {
                log_stderr(&function.name, &output.stderr, output.stderr_dropped);
                if output.exit_code == 0 {
                    Ok(Response::bytes(
                        200,
                        "text/plain; charset=utf-8",
                        output.stdout,
                    ))
                } else {
                    let tail_start = output.stderr.len().saturating_sub(GUEST_TEXT_MAX);
                    let tail = output.stderr.get(tail_start..).unwrap_or_default();
                    let message = format!(
                        "{} exited with code {}: {}",
                        function.name,
                        output.exit_code,
                        clip_end(String::from_utf8_lossy(tail).trim_end(), GUEST_TEXT_MAX)
                    );
                    Err((
                        PlatformError::Function {
                            status: 500,
                            message,
                        },
                        Outcome::ExitFailure,
                    ))
                }
            }
            Err(error) => Err(faas_failure(function, error)),
        };
        drop(reservation);
        Ran {
            result,
            report: run.report,
        }
    }

    pub(crate) fn run_nanoprocess(&self, function: &Deployed, request: &Request) -> Ran {
        let Some(module) = function.program.as_nanoprocess() else {
            return Ran::before_running(wrong_kind(function));
        };
        let json = match request.method.as_str() {
            "GET" | "HEAD" => false,
            "POST" if request.body.len() > function.limits.max_body => {
                let error = body_too_large("request body", request.body.len(), function);
                return Ran::before_running((error, Outcome::BodyTooLarge));
            }
            "POST" => true,
            other => {
                let error = PlatformError::MethodNotAllowed {
                    method: other.to_string(),
                    allowed: "GET, HEAD, POST".into(),
                };
                return Ran::before_running((error, Outcome::BadInput));
            }
        };
        let reservation = match self.reserve(function) {
            Ok(reservation) => reservation,
            Err(failure) => return Ran::before_running(failure),
        };
        let args = if json {
            let wanted = wasm_faas::nanoprocess_signature(module)
                .map_or(0, |signature| signature.params.len());
            match json_numbers(&request.body, wanted) {
                Ok(numbers) => numbers.join(","),
                Err(error) => {
                    let error = PlatformError::BadRequest(format!("{}: {error}", function.name));
                    return Ran::before_running((error, Outcome::BadInput));
                }
            }
        } else {
            query_value(request.query.as_deref(), "args").unwrap_or_default()
        };
        let run = wasm_faas::run_nanoprocess_str(module, &args, &function.limits.faas());
        let result = run
            .result
            .map(|output| Response::text(200, output.results.join(",")))
            .map_err(|error| faas_failure(function, error));
        drop(reservation);
        Ran {
            result,
            report: run.report,
        }
    }
}

/// An HTTP guest's failure as the platform answers it. The message quotes guest text (its
/// error string, a handler name), so it is cut to the function's `max-body` as well as to
/// [`crate::error::MAX_ERROR_MESSAGE`].
fn http_failure(function: &Deployed, error: wasm_host::InvokeError) -> Failure {
    use wasm_host::InvokeError as E;
    let message = clip_display(
        &error,
        function
            .limits
            .max_body
            .min(crate::error::MAX_ERROR_MESSAGE),
    );
    match error {
        E::NoRoute { .. } => (PlatformError::NotFound(message), Outcome::GuestError),
        E::MethodNotAllowed {
            method, allowed, ..
        } => (
            PlatformError::MethodNotAllowed {
                method: method.to_string(),
                allowed: allowed.into(),
            },
            Outcome::GuestError,
        ),
        E::Guest { error, .. } => (
            PlatformError::Function {
                status: error.status(),
                message,
            },
            Outcome::GuestError,
        ),
        E::InvalidStatus { .. } => (
            PlatformError::Function {
                status: 500,
                message,
            },
            Outcome::Trap,
        ),
        E::Fault { function, fault } => fault_failure(function, fault),
    }
}

/// A WASI command's or nanoprocess's failure as the platform answers it.
fn faas_failure(function: &Deployed, error: wasm_faas::RunError) -> Failure {
    use wasm_faas::RunError as E;
    match error {
        E::Fault(fault) => fault_failure(function.name.clone(), fault),
        E::BadArgs(_) | E::Invalid(_) => (
            PlatformError::BadRequest(format!("{}: {error}", function.name)),
            Outcome::BadInput,
        ),
    }
}

/// Bytes of a run's stderr (its end, escapes included) logged at most: the log record of one
/// request.
pub(crate) const STDERR_LOGGED: usize = 2 * GUEST_TEXT_MAX;

/// The one log record of a WASI command's stderr: its end on one line, at most
/// [`STDERR_LOGGED`] bytes with control characters (line breaks, terminal escapes) escaped,
/// and how many bytes it wrote in all.
pub(crate) fn stderr_record(function: &str, stderr: &[u8], dropped: usize) -> Option<String> {
    if stderr.is_empty() && dropped == 0 {
        return None;
    }
    // Every escaped byte takes one byte at least: more than this is never shown.
    let start = stderr.len().saturating_sub(STDERR_LOGGED);
    let tail = stderr.get(start..).unwrap_or_default();
    let text = String::from_utf8_lossy(tail);
    let mut shown = clip_end(text.trim_end_matches('\n'), STDERR_LOGGED);
    if start > 0 && !shown.starts_with(sandbox::CUT_START_MARK) {
        shown.insert_str(0, sandbox::CUT_START_MARK);
    }
    let total = dropped.saturating_add(stderr.len());
    Some(format!("{function}: stderr ({total} bytes): {shown}"))
}

/// Logs a WASI command's stderr as one bounded record (see [`stderr_record`]).
fn log_stderr(function: &str, stderr: &[u8], dropped: usize) {
    if let Some(record) = stderr_record(function, stderr, dropped) {
        log::info!(target: "guest", "{record}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(
            query_value(Some("x=1&args=5%2C2"), "args").as_deref(),
            Some("5,2")
        );
        assert_eq!(query_value(Some("x=1"), "args"), None);
        assert_eq!(query_value(None, "args"), None);
    }

    /// The bounded parser reads what `serde_json::Value` read, number by number.
    #[test]
    fn json_arguments_parse_as_before() {
        for body in [
            "[5, 2]",
            "[-3, 1.5]",
            " [ 0 , 1e3 ] ",
            "[18446744073709551615, -1]",
            "[]",
        ] {
            let values: Vec<serde_json::Value> = serde_json::from_slice(body.as_bytes()).unwrap();
            let expected: Vec<String> = values.iter().map(ToString::to_string).collect();
            assert_eq!(json_numbers(body.as_bytes(), 2), Ok(expected), "{body}");
        }
        for body in [
            "", "5", "[1,", "[1] x", r#"["1"]"#, "[[1]]", "[null]", "{}", "[1,]",
        ] {
            assert!(
                matches!(
                    json_numbers(body.as_bytes(), 2),
                    Err(JsonArgsError::Invalid { .. })
                ),
                "{body}"
            );
        }
    }

    /// Parsing stops at the first element beyond what the function takes: the rest of the body,
    /// even malformed, is never read.
    #[test]
    fn json_arguments_stop_after_one_too_many() {
        assert_eq!(
            json_numbers(b"[1, 2, 3, this is not read", 2),
            Err(JsonArgsError::TooMany { expected: 2 })
        );
        let mut huge = b"[0".to_vec();
        huge.extend(b",0".repeat(1 << 20));
        huge.push(b']');
        assert_eq!(
            json_numbers(&huge, 0),
            Err(JsonArgsError::TooMany { expected: 0 })
        );
    }

    #[test]
    fn stderr_is_logged_as_one_escaped_bounded_record() {
        assert_eq!(stderr_record("f", b"", 0), None);
        assert_eq!(
            stderr_record("f", b"one\ntwo\n", 0).as_deref(),
            Some("f: stderr (8 bytes): one\\ntwo")
        );
        let mut flood = b"\x01\n".repeat(8 << 10);
        flood.extend_from_slice(b"the end");
        let record = stderr_record("f", &flood, 5).expect("a record");
        assert!(!record.contains(['\n', '\r', '\u{1}']), "one line");
        assert!(
            record.len() <= STDERR_LOGGED + 100,
            "{} bytes",
            record.len()
        );
        assert!(record.starts_with(&format!(
            "f: stderr ({} bytes): {}",
            (16 << 10) + 12,
            sandbox::CUT_START_MARK
        )));
        assert!(record.ends_with("\\u{1}\\nthe end"), "{record}");
        let escapes = stderr_record("f", b"\x1b[2J\rforged", 0).expect("a record");
        assert_eq!(escapes, "f: stderr (11 bytes): \\u{1b}[2J\\rforged");
    }
}
