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

fn kv_error(e: KeyvalueError) -> HttpError {
    HttpError::UnexpectedError(format!("{e:?}"))
}

fn set(req: Request) -> Result<Response, HttpError> {
    let store = Store::open(STORE).map_err(kv_error)?;
    store.set(KEY, req.body_bytes()).map_err(kv_error)?;
    Ok(Response::status(204))
}

fn get(_req: Request) -> Result<Response, HttpError> {
    let store = Store::open(STORE).map_err(kv_error)?;
    match store.get(KEY) {
        Ok(value) => Ok(Response::bytes(200, value)),
        Err(KeyvalueError::KeyNotFound(_)) => Ok(Response::text(404, "Key not found")),
        Err(e) => Err(kv_error(e)),
    }
}

fn upload(req: Request) -> Result<Response, HttpError> {
    Ok(Response::bytes(200, req.body.unwrap_or_default()))
}

fn delete_file(_req: Request) -> Result<Response, HttpError> {
    Ok(Response::text(200, "deleted"))
}

uniwasm_sdk::http_function!(init; hello, set, get, upload, delete_file);
