//! Spiderlightning's keyvalue demo as an HTTP function: `GET /` opens two stores, sets the same
//! key in both, lists their keys, reports the value from each, deletes the key from both and
//! checks that it is gone.

use uniwasm_sdk::prelude::*;

const KEY: &str = "key";
const VALUE: &[u8] = b"spiderlightning";

fn init() -> Result<(), HttpError> {
    Router::new().get("/", "run").serve()
}

fn kv(e: KeyvalueError) -> HttpError {
    HttpError::UnexpectedError(e.to_string())
}

fn sorted_keys(store: &Keyvalue) -> Result<Vec<String>, HttpError> {
    let mut keys = store.keys().map_err(kv)?;
    keys.sort();
    Ok(keys)
}

fn run(_req: Request) -> Result<Response, HttpError> {
    let keyvalue1 = Keyvalue::open("my-container").map_err(kv)?;
    let keyvalue2 = Keyvalue::open("my-container2").map_err(kv)?;
    keyvalue1.set(KEY, VALUE).map_err(kv)?;
    keyvalue2.set(KEY, VALUE).map_err(kv)?;
    let mut report = format!("keyvalue1 keys: {:?}\n", sorted_keys(&keyvalue1)?);
    report += &format!("keyvalue2 keys: {:?}\n", sorted_keys(&keyvalue2)?);
    let value1 = keyvalue1.get(KEY).map_err(kv)?;
    let value2 = keyvalue2.get(KEY).map_err(kv)?;
    report += &format!(
        "The value for keyvalue1 is: {}, keyvalue2 is {}\n",
        String::from_utf8_lossy(&value1),
        String::from_utf8_lossy(&value2)
    );
    keyvalue1.delete(KEY).map_err(kv)?;
    keyvalue2.delete(KEY).map_err(kv)?;
    for (name, store) in [("keyvalue1", &keyvalue1), ("keyvalue2", &keyvalue2)] {
        match store.get(KEY) {
            Err(KeyvalueError::KeyNotFound(_)) => report += &format!("{name} after delete: gone\n"),
            other => {
                return Err(HttpError::UnexpectedError(format!(
                    "{name} after delete: {other:?}"
                )));
            }
        }
    }
    Ok(Response::text(200, report))
}

uniwasm_sdk::http_function!(init; run);
