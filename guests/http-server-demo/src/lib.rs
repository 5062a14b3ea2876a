//! The classic demo: hello, a key-value round trip, an echo, and a delete. Routes and answers
//! are Spiderlightning's `http-server-demo`'s: `/hello` and the echoes send the request's
//! headers back.

use uniwasm_sdk::prelude::*;

const STORE: &str = "my-container";
const KEY: &str = "my-key";

fn init() -> Result<(), HttpError> {
    Router::new()
        .get("/hello", "hello")
        .put("/set", "set")
        .get("/get", "get")
        .post("/upload", "upload")
        .delete("/delete-file", "delete_file")
        .serve()
}

fn hello(req: Request) -> Result<Response, HttpError> {
    Ok(Response::text(200, "hello").with_headers(req.headers))
}

/// A key-value failure as the answer: 503 (with `Retry-After`) when the store cannot be
/// reached, so clients retry later; any other failure is a 500.
fn kv_failure(e: KeyvalueError) -> Result<Response, HttpError> {
    match e {
        KeyvalueError::ConnectionError(message) | KeyvalueError::TimeoutError(message) => Ok(
            Response::text(503, format!("key-value store unavailable: {message}"))
                .with_header("retry-after", "1"),
        ),
        other => Err(HttpError::UnexpectedError(format!("{other:?}"))),
    }
}

fn set(req: Request) -> Result<Response, HttpError> {
    let store = match Store::open(STORE) {
        Ok(store) => store,
        Err(e) => return kv_failure(e),
    };
    match store.set(KEY, req.body_bytes()) {
        Ok(()) => Ok(Response::status(204)),
        Err(e) => kv_failure(e),
    }
}

fn get(_req: Request) -> Result<Response, HttpError> {
    let store = match Store::open(STORE) {
        Ok(store) => store,
        Err(e) => return kv_failure(e),
    };
    match store.get(KEY) {
        Ok(value) => Ok(Response::bytes(200, value)),
        Err(KeyvalueError::KeyNotFound(_)) => Ok(Response::text(404, "Key not found")),
        Err(e) => kv_failure(e),
    }
}

/// The body and headers, sent back.
fn echo(req: Request) -> Response {
    Response::bytes(200, req.body.unwrap_or_default()).with_headers(req.headers)
}

fn upload(req: Request) -> Result<Response, HttpError> {
    Ok(echo(req))
}

fn delete_file(req: Request) -> Result<Response, HttpError> {
    Ok(echo(req))
}

uniwasm_sdk::http_function!(init; hello, set, get, upload, delete_file);
