//! Exercises the keyvalue interface: two stores, set, keys, get, delete — and reports what it saw.

use uniwasm_sdk::prelude::*;

fn init() -> Result<(), HttpError> {
    Router::new().get("/", "run").serve()
}

fn kv(e: KeyvalueError) -> HttpError {
    HttpError::UnexpectedError(format!("{e:?}"))
}

fn sorted_keys(store: &Store) -> Result<Vec<String>, HttpError> {
    let mut keys = store.keys().map_err(kv)?;
    keys.sort();
    Ok(keys)
}

fn run(_req: Request) -> Result<Response, HttpError> {
    let first = Store::open("kv-demo-a").map_err(kv)?;
    let second = Store::open("kv-demo-b").map_err(kv)?;
    first.set("k1", b"one").map_err(kv)?;
    first.set("k2", b"two").map_err(kv)?;
    second.set("k1", b"other").map_err(kv)?;
    let mut report = String::new();
    report += &format!("a keys: {:?}\n", sorted_keys(&first)?);
    report += &format!("b keys: {:?}\n", sorted_keys(&second)?);
    let value = first.get("k1").map_err(kv)?;
    report += &format!("a k1 = {}\n", String::from_utf8_lossy(&value));
    let value = second.get("k1").map_err(kv)?;
    report += &format!("b k1 = {}\n", String::from_utf8_lossy(&value));
    first.delete("k1").map_err(kv)?;
    match first.get("k1") {
        Err(KeyvalueError::KeyNotFound(_)) => report += "a k1 after delete: not found\n",
        other => report += &format!("a k1 after delete: {other:?}\n"),
    }
    report += &format!("a keys: {:?}\n", sorted_keys(&first)?);
    first.delete("k2").map_err(kv)?;
    second.delete("k1").map_err(kv)?;
    Ok(Response::text(200, report))
}

uniwasm_sdk::http_function!(init; run);
