// A Spiderlightning guest, written as slight's examples are: the same source builds for
// `slight` with its own `use` lines (see "Porting a Spiderlightning guest" in the README).
use anyhow::Result;

use http_server::*;
use keyvalue::*;
use uniwasm_sdk::slight::{on_server_init, register_handler, wit_bindgen_rust, wit_error_rs};

wit_bindgen_rust::import!("../../wit/http-server.wit");
wit_bindgen_rust::export!("../../wit/http-server-export.wit");
wit_bindgen_rust::import!("../../wit/keyvalue.wit");
wit_error_rs::impl_error!(http_server::HttpRouterError);
wit_error_rs::impl_error!(keyvalue::KeyvalueError);

const CONTAINER: &str = "slight-container";

#[on_server_init]
fn main() -> Result<()> {
    let router = Router::new()?
        .get("/hello", "handle_hello")?
        .get("/get", "handle_get")?
        .put("/set", "handle_set")?
        .post("/upload", "upload")?
        .delete("/delete-file", "delete-file-handler")?;
    let _server = Server::serve("0.0.0.0:3000", &router)?;
    Ok(())
}

/// Says hello, with the request's headers sent back.
#[register_handler]
fn handle_hello(req: Request) -> Result<Response, HttpError> {
    Ok(Response {
        status: 200,
        headers: Some(req.headers),
        body: Some(b"hello".to_vec()),
    })
}

fn unexpected(error: KeyvalueError) -> HttpError {
    HttpError::UnexpectedError(error.to_string())
}

/// The stored value, or 404 "Key not found".
#[register_handler]
fn handle_get(req: Request) -> Result<Response, HttpError> {
    let store = Keyvalue::open(CONTAINER).map_err(unexpected)?;
    let (status, body) = match store.get("key") {
        Ok(value) => (200, value),
        Err(KeyvalueError::KeyNotFound(_)) => (404, b"Key not found".to_vec()),
        Err(error) => return Err(unexpected(error)),
    };
    Ok(Response {
        status,
        headers: Some(req.headers),
        body: Some(body),
    })
}

/// Stores the body (a PUT), answering 204.
#[register_handler]
fn handle_set(req: Request) -> Result<Response, HttpError> {
    assert_eq!(req.method, Method::Put);
    if let Some(body) = req.body {
        let store = Keyvalue::open(CONTAINER).map_err(unexpected)?;
        store.set("key", &body).map_err(unexpected)?;
    }
    Ok(Response {
        status: 204,
        headers: Some(req.headers),
        body: None,
    })
}

/// Sends the body and headers back (a POST).
#[register_handler]
fn upload(req: Request) -> Result<Response, HttpError> {
    assert_eq!(req.method, Method::Post);
    Ok(Response {
        status: 200,
        headers: Some(req.headers),
        body: req.body,
    })
}

/// Sends the body and headers back (a DELETE); routed as `delete-file-handler`.
#[register_handler]
fn delete_file_handler(req: Request) -> Result<Response, HttpError> {
    assert_eq!(req.method, Method::Delete);
    Ok(Response {
        status: 200,
        headers: Some(req.headers),
        body: req.body,
    })
}
