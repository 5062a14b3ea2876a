//! The key-value capability offered to guests, independent of where data lives.
//!
//! A [`KeyValue`] backend holds many named stores (Spiderlightning's `keyvalue::open(name)`); each
//! store maps string keys to binary values. Backends are shared by all requests and workers, so
//! they are `Send + Sync` and take `&self`.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

/// Why a key-value operation failed. Mirrors the `keyvalue-error` variant of `wit/keyvalue.wit`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The key does not exist in the store.
    #[error("key not found: {0}")]
    KeyNotFound(String),
    /// The key or store name is not acceptable to the backend.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The backend could not be reached.
    #[error("connection error: {0}")]
    Connection(String),
    /// The backend failed while reading or writing.
    #[error("i/o error: {0}")]
    Io(String),
    /// Anything else.
    #[error("unexpected error: {0}")]
    Unexpected(String),
}

/// A key-value backend holding many named stores.
pub trait KeyValue: Send + Sync {
    /// Checks that `store` can be opened (names are validated, connections tried).
    fn open(&self, store: &str) -> Result<(), KvError>;
    /// Returns the value of `key` in `store`.
    fn get(&self, store: &str, key: &str) -> Result<Vec<u8>, KvError>;
    /// Sets `key` in `store` to `value`, replacing any previous value.
    fn set(&self, store: &str, key: &str, value: &[u8]) -> Result<(), KvError>;
    /// Lists the keys of `store` (in no particular order).
    fn keys(&self, store: &str) -> Result<Vec<String>, KvError>;
    /// Deletes `key` from `store`; deleting a missing key is not an error.
    fn delete(&self, store: &str, key: &str) -> Result<(), KvError>;
}

/// Longest accepted store name or key, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// Rejects empty or over-long store names and keys.
pub fn validate_name(name: &str) -> Result<(), KvError> {
    if name.is_empty() {
        return Err(KvError::InvalidKey("empty name".into()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(KvError::InvalidKey(format!(
            "name of {} bytes exceeds {MAX_NAME_LEN}",
            name.len()
        )));
    }
    Ok(())
}

/// An in-process backend: stores live as long as the server does.
#[derive(Debug, Default)]
pub struct MemoryStore {
    stores: RwLock<HashMap<String, BTreeMap<String, Vec<u8>>>>,
}

impl MemoryStore {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, BTreeMap<String, Vec<u8>>>> {
        // A poisoned lock only means another thread panicked mid-operation; the maps stay valid.
        self.stores.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, BTreeMap<String, Vec<u8>>>> {
        self.stores.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl KeyValue for MemoryStore {
    fn open(&self, store: &str) -> Result<(), KvError> {
        validate_name(store)
    }

    fn get(&self, store: &str, key: &str) -> Result<Vec<u8>, KvError> {
        validate_name(store)?;
        validate_name(key)?;
        self.read()
            .get(store)
            .and_then(|s| s.get(key))
            .cloned()
            .ok_or_else(|| KvError::KeyNotFound(key.to_string()))
    }

    fn set(&self, store: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        validate_name(store)?;
        validate_name(key)?;
        self.write()
            .entry(store.to_string())
            .or_default()
            .insert(key.to_string(), value.to_vec());
        Ok(())
    }

    fn keys(&self, store: &str) -> Result<Vec<String>, KvError> {
        validate_name(store)?;
        Ok(self
            .read()
            .get(store)
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default())
    }

    fn delete(&self, store: &str, key: &str) -> Result<(), KvError> {
        validate_name(store)?;
        validate_name(key)?;
        if let Some(s) = self.write().get_mut(store) {
            s.remove(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_are_separate_and_values_binary_safe() {
        let kv = MemoryStore::new();
        kv.set("a", "k", &[0, 255, 10]).unwrap();
        kv.set("b", "k", b"other").unwrap();
        assert_eq!(kv.get("a", "k").unwrap(), vec![0, 255, 10]);
        assert_eq!(kv.get("b", "k").unwrap(), b"other".to_vec());
        assert_eq!(kv.keys("a").unwrap(), vec!["k".to_string()]);
    }

    #[test]
    fn missing_and_deleted_keys_are_not_found() {
        let kv = MemoryStore::new();
        assert_eq!(kv.get("s", "x"), Err(KvError::KeyNotFound("x".into())));
        kv.set("s", "x", b"1").unwrap();
        kv.delete("s", "x").unwrap();
        assert_eq!(kv.get("s", "x"), Err(KvError::KeyNotFound("x".into())));
        assert!(kv.keys("s").unwrap().is_empty());
        kv.delete("s", "never-there").unwrap();
    }

    #[test]
    fn invalid_names_are_rejected() {
        let kv = MemoryStore::new();
        assert!(matches!(kv.set("", "k", b""), Err(KvError::InvalidKey(_))));
        let long = "k".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(kv.get("s", &long), Err(KvError::InvalidKey(_))));
    }
}
