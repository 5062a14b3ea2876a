//! The classic demo: hello, a key-value round trip, an echo, and a delete.

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

fn hello(_req: Request) -> Result<Response, HttpError> {
    Ok(Response::text(200, "hello"))
}

/// A key-value failure as the answer: 503 (with `Retry-After`) when the store cannot be
/// reached, so clients retry later; any other failure is a 500.
fn kv_failure(e: KeyvalueError) -> Result<Response, HttpError> {
    match e {
        KeyvalueError::ConnectionError(message) => Ok(Response::text(
            503,
            format!("key-value store unavailable: {message}"),
        )
        .with_header("retry-after", "1")),
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

fn upload(req: Request) -> Result<Response, HttpError> {
    Ok(Response::bytes(200, req.body.unwrap_or_default()))
}

fn delete_file(_req: Request) -> Result<Response, HttpError> {
    Ok(Response::text(200, "deleted"))
}

uniwasm_sdk::http_function!(init; hello, set, get, upload, delete_file);
