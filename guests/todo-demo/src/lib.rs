//! A small JSON todo API with route parameters, persisted in the `todos` key-value store.
//!
//! - `GET /todos` → all todos (sorted by id)
//! - `POST /todos` with `{"title": "..."}` → 201 and the created todo
//! - `GET /todos/:id` → the todo or 404
//! - `DELETE /todos/:id` → 204 or 404

use serde::{Deserialize, Serialize};
use uniwasm_sdk::prelude::*;

const STORE: &str = "todos";
const NEXT_ID: &str = "next-id";

#[derive(Serialize, Deserialize)]
struct Todo {
    id: u64,
    title: String,
    done: bool,
}

#[derive(Deserialize)]
struct NewTodo {
    title: String,
    #[serde(default)]
    done: bool,
}

fn init() -> Result<(), HttpError> {
    Router::new()
        .get("/todos", "list")
        .post("/todos", "create")
        .get("/todos/:id", "get_one")
        .delete("/todos/:id", "delete_one")
        .serve()
}

fn kv(e: KeyvalueError) -> HttpError {
    HttpError::UnexpectedError(format!("{e:?}"))
}

fn json<T: Serialize>(status: u16, value: &T) -> Result<Response, HttpError> {
    let body = serde_json::to_vec(value).map_err(|e| HttpError::UnexpectedError(e.to_string()))?;
    Ok(Response::json(status, body))
}

fn error(status: u16, message: &str) -> Result<Response, HttpError> {
    json(status, &serde_json::json!({ "error": message }))
}

fn todo_key(id: u64) -> String {
    format!("todo:{id:020}")
}

fn id_param(req: &Request) -> Option<u64> {
    req.param("id").and_then(|id| id.parse().ok())
}

fn list(_req: Request) -> Result<Response, HttpError> {
    let store = Store::open(STORE).map_err(kv)?;
    let mut keys: Vec<String> = store
        .keys()
        .map_err(kv)?
        .into_iter()
        .filter(|k| k.starts_with("todo:"))
        .collect();
    keys.sort();
    let mut todos = Vec::new();
    for key in keys {
        let raw = store.get(&key).map_err(kv)?;
        if let Ok(todo) = serde_json::from_slice::<Todo>(&raw) {
            todos.push(todo);
        }
    }
    json(200, &todos)
}

fn create(req: Request) -> Result<Response, HttpError> {
    let Ok(new) = serde_json::from_slice::<NewTodo>(req.body_bytes()) else {
        return error(400, "expected {\"title\": string}");
    };
    let store = Store::open(STORE).map_err(kv)?;
    let id = match store.get(NEXT_ID) {
        Ok(raw) => String::from_utf8_lossy(&raw).parse::<u64>().unwrap_or(1),
        Err(KeyvalueError::KeyNotFound(_)) => 1,
        Err(e) => return Err(kv(e)),
    };
    store
        .set(NEXT_ID, (id + 1).to_string().as_bytes())
        .map_err(kv)?;
    let todo = Todo {
        id,
        title: new.title,
        done: new.done,
    };
    let raw = serde_json::to_vec(&todo).map_err(|e| HttpError::UnexpectedError(e.to_string()))?;
    store.set(&todo_key(id), &raw).map_err(kv)?;
    json(201, &todo)
}

fn get_one(req: Request) -> Result<Response, HttpError> {
    let Some(id) = id_param(&req) else {
        return error(400, "id must be a number");
    };
    let store = Store::open(STORE).map_err(kv)?;
    match store.get(&todo_key(id)) {
        Ok(raw) => Ok(Response::json(200, raw)),
        Err(KeyvalueError::KeyNotFound(_)) => error(404, "no such todo"),
        Err(e) => Err(kv(e)),
    }
}

fn delete_one(req: Request) -> Result<Response, HttpError> {
    let Some(id) = id_param(&req) else {
        return error(400, "id must be a number");
    };
    let store = Store::open(STORE).map_err(kv)?;
    match store.get(&todo_key(id)) {
        Ok(_) => {
            store.delete(&todo_key(id)).map_err(kv)?;
            Ok(Response::status(204))
        }
        Err(KeyvalueError::KeyNotFound(_)) => error(404, "no such todo"),
        Err(e) => Err(kv(e)),
    }
}

uniwasm_sdk::http_function!(init; list, create, get_one, delete_one);
