//! The key-value capability offered to guests, independent of where data lives.
//!
//! A [`KeyValue`] backend holds many named stores (Spiderlightning's `keyvalue::open(name)`); each
//! store maps string keys to binary values. Backends are shared by all requests and workers, so
//! they are `Send + Sync` and take `&self`.
//!
//! Every call carries [`Bounds`]: what the request making it has left of its deadline and memory
//! budget. Guests are hostile, so a backend must not block past the deadline nor allocate a reply
//! larger than the budget.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::time::{Duration, Instant};

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
    /// The caller's deadline ([`Bounds::deadline`]) passed; the message says which operation
    /// gave up and how long it waited.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The reply would be larger than the caller can take ([`Bounds::max_reply_bytes`]); it was
    /// refused before being allocated.
    #[error("{}", too_large_message(*.limit, *.size))]
    TooLarge {
        /// The caller's limit in bytes.
        limit: usize,
        /// Size of the reply in bytes, when known (a key listing stops counting early).
        size: Option<usize>,
    },
}

fn too_large_message(limit: usize, size: Option<usize>) -> String {
    match size {
        Some(size) => format!("reply of {size} bytes exceeds the limit of {limit} bytes"),
        None => format!("reply exceeds the limit of {limit} bytes"),
    }
}

/// What one call may cost its caller (a request with a deadline and a memory budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// When the caller gives up; a backend must not block past it (fails with KvError::Timeout).
    pub deadline: Option<Instant>,
    /// Largest reply the caller can take in bytes: a value for `get`, all key names together
    /// for `keys`. Larger replies fail with KvError::TooLarge before the host allocates them.
    pub max_reply_bytes: usize,
}

impl Bounds {
    /// No deadline and no size limit (for callers that are not serving a request).
    pub const UNBOUNDED: Bounds = Bounds {
        deadline: None,
        max_reply_bytes: usize::MAX,
    };

    /// Bounds giving up at `deadline` (if any) and taking replies of at most `max_reply_bytes`.
    pub const fn new(deadline: Option<Instant>, max_reply_bytes: usize) -> Self {
        Self {
            deadline,
            max_reply_bytes,
        }
    }

    /// Bounds giving up `timeout` from now (never, if that is too far to represent).
    pub fn within(timeout: Duration, max_reply_bytes: usize) -> Self {
        Self::new(Instant::now().checked_add(timeout), max_reply_bytes)
    }

    /// Time left until the deadline (zero once it has passed); `None` without a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// The time left, but at most `limit`: how long one wait may last when the backend's own
    /// timeout for it is `limit`.
    pub fn remaining_capped(&self, limit: Duration) -> Duration {
        self.remaining().map_or(limit, |left| left.min(limit))
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        self.remaining().is_some_and(|left| left.is_zero())
    }

    /// Fails with [`KvError::Timeout`] if the deadline has passed before `operation` started.
    pub fn check_deadline(&self, operation: &str) -> Result<(), KvError> {
        if self.expired() {
            return Err(KvError::Timeout(format!(
                "{operation} not started: the deadline had passed"
            )));
        }
        Ok(())
    }

    /// Fails with [`KvError::TooLarge`] if a reply of `size` bytes exceeds `max_reply_bytes`.
    pub fn check_reply_size(&self, size: usize) -> Result<(), KvError> {
        if size > self.max_reply_bytes {
            return Err(KvError::TooLarge {
                limit: self.max_reply_bytes,
                size: Some(size),
            });
        }
        Ok(())
    }
}

impl Default for Bounds {
    /// [`Bounds::UNBOUNDED`].
    fn default() -> Self {
        Self::UNBOUNDED
    }
}

/// A key-value backend holding many named stores.
///
/// Every method runs within `bounds`: it returns [`KvError::Timeout`] rather than block past
/// `bounds.deadline`, and [`KvError::TooLarge`] rather than allocate a reply larger than
/// `bounds.max_reply_bytes`.
pub trait KeyValue: Send + Sync {
    /// Checks that `store` can be opened (names are validated, connections tried).
    fn open(&self, store: &str, bounds: &Bounds) -> Result<(), KvError>;
    /// Returns the value of `key` in `store`.
    fn get(&self, store: &str, key: &str, bounds: &Bounds) -> Result<Vec<u8>, KvError>;
    /// Sets `key` in `store` to `value`, replacing any previous value.
    fn set(&self, store: &str, key: &str, value: &[u8], bounds: &Bounds) -> Result<(), KvError>;
    /// Lists the keys of `store` (in no particular order); `bounds.max_reply_bytes` bounds the
    /// key names' lengths added up.
    fn keys(&self, store: &str, bounds: &Bounds) -> Result<Vec<String>, KvError>;
    /// Deletes `key` from `store`; deleting a missing key is not an error.
    fn delete(&self, store: &str, key: &str, bounds: &Bounds) -> Result<(), KvError>;
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

/// An in-process backend: stores live as long as the server does. Operations never wait for
/// anything but a short lock, so only a deadline that has already passed fails them.
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
    fn open(&self, store: &str, bounds: &Bounds) -> Result<(), KvError> {
        bounds.check_deadline("open")?;
        validate_name(store)
    }

    fn get(&self, store: &str, key: &str, bounds: &Bounds) -> Result<Vec<u8>, KvError> {
        bounds.check_deadline("get")?;
        validate_name(store)?;
        validate_name(key)?;
        let stores = self.read();
        let value = stores
            .get(store)
            .and_then(|s| s.get(key))
            .ok_or_else(|| KvError::KeyNotFound(key.to_string()))?;
        bounds.check_reply_size(value.len())?;
        Ok(value.clone())
    }

    fn set(&self, store: &str, key: &str, value: &[u8], bounds: &Bounds) -> Result<(), KvError> {
        bounds.check_deadline("set")?;
        validate_name(store)?;
        validate_name(key)?;
        self.write()
            .entry(store.to_string())
            .or_default()
            .insert(key.to_string(), value.to_vec());
        Ok(())
    }

    fn keys(&self, store: &str, bounds: &Bounds) -> Result<Vec<String>, KvError> {
        bounds.check_deadline("keys")?;
        validate_name(store)?;
        let stores = self.read();
        let Some(keys) = stores.get(store) else {
            return Ok(Vec::new());
        };
        // Names are at most MAX_NAME_LEN bytes each, so this sum cannot overflow in practice.
        let size = keys
            .keys()
            .fold(0usize, |sum, k| sum.saturating_add(k.len()));
        bounds.check_reply_size(size)?;
        Ok(keys.keys().cloned().collect())
    }

    fn delete(&self, store: &str, key: &str, bounds: &Bounds) -> Result<(), KvError> {
        bounds.check_deadline("delete")?;
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
        kv.set("a", "k", &[0, 255, 10], &Bounds::UNBOUNDED).unwrap();
        kv.set("b", "k", b"other", &Bounds::UNBOUNDED).unwrap();
        assert_eq!(
            kv.get("a", "k", &Bounds::UNBOUNDED).unwrap(),
            vec![0, 255, 10]
        );
        assert_eq!(
            kv.get("b", "k", &Bounds::UNBOUNDED).unwrap(),
            b"other".to_vec()
        );
        assert_eq!(
            kv.keys("a", &Bounds::UNBOUNDED).unwrap(),
            vec!["k".to_string()]
        );
    }

    #[test]
    fn missing_and_deleted_keys_are_not_found() {
        let kv = MemoryStore::new();
        assert_eq!(
            kv.get("s", "x", &Bounds::UNBOUNDED),
            Err(KvError::KeyNotFound("x".into()))
        );
        kv.set("s", "x", b"1", &Bounds::UNBOUNDED).unwrap();
        kv.delete("s", "x", &Bounds::UNBOUNDED).unwrap();
        assert_eq!(
            kv.get("s", "x", &Bounds::UNBOUNDED),
            Err(KvError::KeyNotFound("x".into()))
        );
        assert!(kv.keys("s", &Bounds::UNBOUNDED).unwrap().is_empty());
        kv.delete("s", "never-there", &Bounds::UNBOUNDED).unwrap();
    }

    #[test]
    fn invalid_names_are_rejected() {
        let kv = MemoryStore::new();
        assert!(matches!(
            kv.set("", "k", b"", &Bounds::UNBOUNDED),
            Err(KvError::InvalidKey(_))
        ));
        let long = "k".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            kv.get("s", &long, &Bounds::UNBOUNDED),
            Err(KvError::InvalidKey(_))
        ));
    }

    #[test]
    fn bounds_report_time_left() {
        assert_eq!(Bounds::UNBOUNDED.remaining(), None);
        assert!(!Bounds::UNBOUNDED.expired());
        assert_eq!(Bounds::default(), Bounds::UNBOUNDED);
        let cap = Duration::from_secs(5);
        assert_eq!(Bounds::UNBOUNDED.remaining_capped(cap), cap);
        let soon = Bounds::within(Duration::from_secs(60), 10);
        let left = soon.remaining().unwrap();
        assert!(left > Duration::from_secs(59) && left <= Duration::from_secs(60));
        assert_eq!(soon.remaining_capped(cap), cap);
        assert!(soon.remaining_capped(Duration::from_secs(120)) <= Duration::from_secs(60));
        let past = Bounds::new(Some(Instant::now()), 10);
        assert_eq!(past.remaining(), Some(Duration::ZERO));
        assert_eq!(past.remaining_capped(cap), Duration::ZERO);
        assert!(past.expired());
        // A timeout too far to represent means no deadline.
        assert_eq!(Bounds::within(Duration::MAX, 1).deadline, None);
    }

    #[test]
    fn memory_store_refuses_replies_over_the_limit() {
        let kv = MemoryStore::new();
        kv.set("s", "big", &[7; 100], &Bounds::UNBOUNDED).unwrap();
        kv.set("s", "k2", b"", &Bounds::UNBOUNDED).unwrap();
        let small = Bounds::new(None, 99);
        assert_eq!(
            kv.get("s", "big", &small),
            Err(KvError::TooLarge {
                limit: 99,
                size: Some(100)
            })
        );
        assert_eq!(
            kv.get("s", "big", &Bounds::new(None, 100)).unwrap().len(),
            100
        );
        // A missing key is still "not found", whatever the limit.
        assert_eq!(
            kv.get("s", "nope", &Bounds::new(None, 0)),
            Err(KvError::KeyNotFound("nope".into()))
        );
        // Key names add up: "big" + "k2" = 5 bytes.
        assert_eq!(
            kv.keys("s", &Bounds::new(None, 4)),
            Err(KvError::TooLarge {
                limit: 4,
                size: Some(5)
            })
        );
        assert_eq!(kv.keys("s", &Bounds::new(None, 5)).unwrap().len(), 2);
        // Writes and deletes return nothing, so the limit does not apply to them.
        kv.set("s", "k3", &[0; 1000], &Bounds::new(None, 0))
            .unwrap();
        kv.delete("s", "k3", &Bounds::new(None, 0)).unwrap();
    }

    #[test]
    fn memory_store_honours_a_passed_deadline() {
        let kv = MemoryStore::new();
        kv.set("s", "k", b"v", &Bounds::UNBOUNDED).unwrap();
        let past = Bounds::new(Some(Instant::now()), usize::MAX);
        for result in [
            kv.open("s", &past),
            kv.get("s", "k", &past).map(drop),
            kv.set("s", "k", b"w", &past),
            kv.keys("s", &past).map(drop),
            kv.delete("s", "k", &past),
        ] {
            assert!(matches!(result, Err(KvError::Timeout(_))), "{result:?}");
        }
        // Nothing was changed.
        assert_eq!(kv.get("s", "k", &Bounds::UNBOUNDED).unwrap(), b"v");
        let later = Bounds::within(Duration::from_secs(60), usize::MAX);
        assert_eq!(kv.get("s", "k", &later).unwrap(), b"v");
    }

    #[test]
    fn errors_name_their_limits() {
        let error = KvError::TooLarge {
            limit: 65536,
            size: Some(1_048_576),
        };
        assert_eq!(
            error.to_string(),
            "reply of 1048576 bytes exceeds the limit of 65536 bytes"
        );
        let error = KvError::TooLarge {
            limit: 10,
            size: None,
        };
        assert_eq!(error.to_string(), "reply exceeds the limit of 10 bytes");
        let error = KvError::Timeout("get gave up after 200 ms".into());
        assert_eq!(error.to_string(), "timed out: get gave up after 200 ms");
        assert_eq!(error.clone(), error);
    }
}
