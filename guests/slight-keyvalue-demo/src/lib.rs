// Spiderlightning's keyvalue demo as a slight HTTP guest: `GET /` opens two stores, sets the
// same key in both, reports the value from each, deletes it and checks that it is gone. The
// same source builds for `slight` with its own `use` lines.
use anyhow::Result;

use http_server::*;
use keyvalue::*;
use uniwasm_sdk::slight::{on_server_init, register_handler, wit_bindgen_rust, wit_error_rs};

wit_bindgen_rust::import!("../../wit/http-server.wit");
wit_bindgen_rust::export!("../../wit/http-server-export.wit");
wit_bindgen_rust::import!("../../wit/keyvalue.wit");
wit_error_rs::impl_error!(http_server::HttpRouterError);
wit_error_rs::impl_error!(keyvalue::KeyvalueError);

#[on_server_init]
fn main() -> Result<()> {
    let router = Router::new()?.get("/", "keyvalue-demo")?;
    let _server = Server::serve("0.0.0.0:3000", &router)?;
    Ok(())
}

/// The demo itself; its report lines are what slight's version prints.
fn run() -> Result<String> {
    let keyvalue1 = Keyvalue::open("slight-container")?;
    let keyvalue2 = Keyvalue::open("slight-container2")?;
    let value = b"spiderlightning";
    keyvalue1.set("key", value)?;
    keyvalue2.set("key", value)?;
    let _keys = keyvalue1.keys()?;
    let mut report = format!(
        "The value for keyvalue1 is: {}, keyvalue2 is {}\n",
        std::str::from_utf8(&keyvalue1.get("key")?)?,
        std::str::from_utf8(&keyvalue2.get("key")?)?,
    );
    keyvalue1.delete("key")?;
    keyvalue2.delete("key")?;
    let gone = keyvalue1.get("key").is_err() && keyvalue2.get("key").is_err();
    report += &format!("deleted from both: {gone}\n");
    Ok(report)
}

#[register_handler]
fn keyvalue_demo(req: Request) -> Result<Response, HttpError> {
    let report = run().map_err(|e| HttpError::UnexpectedError(e.to_string()))?;
    Ok(Response {
        status: 200,
        headers: Some(req.headers),
        body: Some(report.into_bytes()),
    })
}
