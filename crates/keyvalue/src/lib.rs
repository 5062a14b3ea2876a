//! The key-value capability offered to guests, independent of where data lives.
//!
//! A [`KeyValue`] backend holds many named stores (Spiderlightning's `keyvalue::open(name)`); each
//! store maps string keys to binary values. Backends are shared by all requests and workers, so
//! they are `Send + Sync` and take `&self`.
//!
//! Every call carries [`Bounds`]: what the request making it has left of its deadline and memory
//! budget. Guests are hostile, so a backend must not block past the deadline nor allocate a reply
//! larger than the budget.
//!
//! What a backend keeps in this process outlives the request that wrote it, so it is bounded
//! too: [`MemoryStore`] holds at most its limit (keys, values and bookkeeping together) and
//! refuses a write beyond it with [`KvError::Full`].

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
    /// The value is not acceptable to the backend (e.g. larger than it takes).
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// The backend refused the credentials.
    #[error("authentication error: {0}")]
    Authentication(String),
    /// The backend did not answer within its own configured time limit (the caller's deadline
    /// passing is [`KvError::Timeout`]).
    #[error("backend timeout: {0}")]
    BackendTimeout(String),
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
    /// The backend holds as much as it may: a write would take it over its limit, so nothing
    /// was written. Deleting keys makes room; overwrites that do not grow still work.
    #[error(
        "key-value store full: a write of {needed} more bytes does not fit in its limit of \
         {limit} bytes"
    )]
    Full {
        /// The backend's limit in bytes.
        limit: usize,
        /// Bytes the write would have added (key, value and bookkeeping).
        needed: usize,
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
    /// Largest reply the caller can take in bytes: a value for `get`; for `keys`, the names
    /// together with what each costs the host besides ([`listed_key_cost`]), and whatever the
    /// backend holds while it collects them. Larger replies fail with KvError::TooLarge before
    /// the host allocates them.
    pub max_reply_bytes: usize,
}

/// Host bytes one listed key costs besides its name: its `String` in the returned `Vec`
/// (24 bytes) and the header and rounding of its own allocation (up to 32 bytes with glibc).
pub const LISTED_KEY_OVERHEAD: usize = 64;

/// Host bytes a key named with `name_len` bytes costs in a listing ([`KeyValue::keys`]).
pub const fn listed_key_cost(name_len: usize) -> usize {
    name_len.saturating_add(LISTED_KEY_OVERHEAD)
}

/// Host bytes `names` cost as a listing: what [`KeyValue::keys`] checks against
/// [`Bounds::max_reply_bytes`] and what a caller charges for the listing it got.
pub fn listing_cost<S: AsRef<str>>(names: &[S]) -> usize {
    names.iter().fold(0usize, |sum, name| {
        sum.saturating_add(listed_key_cost(name.as_ref().len()))
    })
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
    /// Lists the keys of `store` (in no particular order). `bounds.max_reply_bytes` bounds the
    /// listing's [`listing_cost`] (names and per-key overhead), and what the backend holds
    /// while collecting them: a listing that would take more fails with [`KvError::TooLarge`]
    /// before the host allocates it.
    fn keys(&self, store: &str, bounds: &Bounds) -> Result<Vec<String>, KvError>;
    /// Deletes `key` from `store`; deleting a missing key is not an error.
    fn delete(&self, store: &str, key: &str, bounds: &Bounds) -> Result<(), KvError>;
    /// How much this backend holds in this process and may hold at most, for metrics; `None`
    /// for backends that keep their data elsewhere.
    fn usage(&self) -> Option<Usage> {
        None
    }
    /// Applies `writes` in one atomic step together with incrementing the counter at `counter`
    /// (store, key; a missing counter counts from 0): no reader sees some of them without the
    /// others. Returns the counter's new value. If it fails, nothing was written (on Redis,
    /// whose transactions do not roll back, except when the counter holds no number). Backends
    /// without atomic batches refuse ([`KvError::Unexpected`]).
    fn write_counted(
        &self,
        writes: &[Write<'_>],
        counter: (&str, &str),
        bounds: &Bounds,
    ) -> Result<u64, KvError> {
        let _ = (writes, counter, bounds);
        Err(KvError::Unexpected(
            "this key-value backend has no atomic batches".into(),
        ))
    }
}

/// One write of an atomic batch ([`KeyValue::write_counted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write<'a> {
    /// Sets `key` in `store` to `value`.
    Set {
        /// The store.
        store: &'a str,
        /// The key.
        key: &'a str,
        /// The new value.
        value: &'a [u8],
    },
    /// Deletes `key` from `store` (a missing key is not an error).
    Delete {
        /// The store.
        store: &'a str,
        /// The key.
        key: &'a str,
    },
}

impl<'a> Write<'a> {
    /// The store and key written.
    pub fn target(&self) -> (&'a str, &'a str) {
        match *self {
            Write::Set { store, key, .. } | Write::Delete { store, key } => (store, key),
        }
    }
}

/// A counter's value as stored by [`KeyValue::write_counted`]: decimal ASCII (what Redis'
/// `INCR` keeps). Anything else reads as `None`.
pub fn parse_counter(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// Memory a backend holds in this process ([`KeyValue::usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes held now (keys, values and bookkeeping).
    pub used: usize,
    /// Most bytes it may hold.
    pub limit: usize,
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

/// Default limit of a [`MemoryStore`]: 256 MiB.
pub const DEFAULT_MEMORY_LIMIT: usize = 256 << 20;

/// Host bytes one stored key costs besides its name and value: its `String` and `Vec` in a
/// B-tree node (48 bytes, about twice that in nodes at their minimum fill of 5 of 11 slots),
/// its share of the inner nodes (about 30) and the headers and rounding of the key's and the
/// value's allocations (up to 32 each with glibc).
pub const ENTRY_OVERHEAD: usize = 192;

/// Host bytes one store costs besides its name, from its first key to its last: its slot in
/// the table of stores (its name's `String` and its map, 48 bytes, up to 112 with the table's
/// control bytes and spare capacity), its name's allocation (up to 32) and the B-tree's first
/// node (544 bytes, however few keys it holds).
pub const STORE_OVERHEAD: usize = 112 + 32 + 544;

/// What a key of `key_len` bytes holding `value_len` bytes costs a [`MemoryStore`].
const fn entry_cost(key_len: usize, value_len: usize) -> usize {
    key_len
        .saturating_add(value_len)
        .saturating_add(ENTRY_OVERHEAD)
}

/// What a store named with `name_len` bytes costs a [`MemoryStore`] besides its keys.
const fn store_cost(name_len: usize) -> usize {
    name_len.saturating_add(STORE_OVERHEAD)
}

/// An in-process backend: stores live as long as the server does, so they hold at most
/// `limit` bytes, keys, values and bookkeeping ([`ENTRY_OVERHEAD`], [`STORE_OVERHEAD`]) counted
/// together. A write that would go beyond fails with [`KvError::Full`] and changes nothing;
/// overwrites that do not grow always work and deletes free their bytes (a store whose last
/// key is deleted is gone). Operations never wait for anything but a short lock, so only a
/// deadline that has already passed fails them.
#[derive(Debug)]
pub struct MemoryStore {
    limit: usize,
    state: RwLock<Stores>,
}

/// The stores and the bytes they are charged.
#[derive(Debug, Default)]
struct Stores {
    maps: HashMap<String, BTreeMap<String, Vec<u8>>>,
    used: usize,
}

impl Default for MemoryStore {
    /// [`MemoryStore::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty backend holding at most [`DEFAULT_MEMORY_LIMIT`] bytes.
    pub fn new() -> Self {
        Self::with_limit(DEFAULT_MEMORY_LIMIT)
    }

    /// An empty backend holding at most `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            limit,
            state: RwLock::new(Stores::default()),
        }
    }

    /// Most bytes the stores may hold.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes the stores hold now (as counted against [`MemoryStore::limit`]).
    pub fn used(&self) -> usize {
        self.read().used
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Stores> {
        // A poisoned lock only means another thread panicked mid-operation; the maps stay valid.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Stores> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
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
        let state = self.read();
        let value = state
            .maps
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
        self.write().set(self.limit, store, key, value)
    }

    fn keys(&self, store: &str, bounds: &Bounds) -> Result<Vec<String>, KvError> {
        bounds.check_deadline("keys")?;
        validate_name(store)?;
        let state = self.read();
        let Some(keys) = state.maps.get(store) else {
            return Ok(Vec::new());
        };
        // Counted before anything is copied: the names and each one's `String` in the reply.
        let size = keys.keys().fold(0usize, |sum, k| {
            sum.saturating_add(listed_key_cost(k.len()))
        });
        bounds.check_reply_size(size)?;
        Ok(keys.keys().cloned().collect())
    }

    fn delete(&self, store: &str, key: &str, bounds: &Bounds) -> Result<(), KvError> {
        bounds.check_deadline("delete")?;
        validate_name(store)?;
        validate_name(key)?;
        self.write().delete(store, key);
        Ok(())
    }

    fn usage(&self) -> Option<Usage> {
        Some(Usage {
            used: self.used(),
            limit: self.limit,
        })
    }

    fn write_counted(
        &self,
        writes: &[Write<'_>],
        (counter_store, counter_key): (&str, &str),
        bounds: &Bounds,
    ) -> Result<u64, KvError> {
        bounds.check_deadline("write_counted")?;
        validate_name(counter_store)?;
        validate_name(counter_key)?;
        for write in writes {
            let (store, key) = write.target();
            validate_name(store)?;
            validate_name(key)?;
        }
        let mut state = self.write();
        let count = state
            .maps
            .get(counter_store)
            .and_then(|keys| keys.get(counter_key))
            .map_or(Some(0), |value| parse_counter(value))
            .and_then(|count| count.checked_add(1))
            .ok_or_else(|| {
                KvError::InvalidKey(format!(
                    "{counter_store}/{counter_key} is not a counter below 2^64 - 1"
                ))
            })?;
        let count_text = count.to_string();
        let all = writes.iter().copied().chain(std::iter::once(Write::Set {
            store: counter_store,
            key: counter_key,
            value: count_text.as_bytes(),
        }));
        // Each write's previous value, to undo the batch if one does not fit.
        let mut undo: Vec<(&str, &str, Option<Vec<u8>>)> = Vec::new();
        for write in all {
            let (store, key) = write.target();
            let previous = state
                .maps
                .get(store)
                .and_then(|keys| keys.get(key))
                .cloned();
            let done = match write {
                Write::Set { value, .. } => state.set(self.limit, store, key, value),
                Write::Delete { .. } => {
                    state.delete(store, key);
                    Ok(())
                }
            };
            if let Err(error) = done {
                for (store, key, previous) in undo.into_iter().rev() {
                    match previous {
                        // Restoring takes back at most what the undone write used.
                        Some(value) => {
                            let _ = state.set(usize::MAX, store, key, &value);
                        }
                        None => state.delete(store, key),
                    }
                }
                return Err(error);
            }
            undo.push((store, key, previous));
        }
        Ok(count)
    }
}

impl Stores {
    /// Sets `key` in `store`, unless that takes the stores over `limit` bytes.
    fn set(&mut self, limit: usize, store: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        let Stores { maps, used } = self;
        // What the write adds (a new store, a new key, a larger value) against what it replaces.
        let (replaced, added) = match maps.get(store) {
            Some(keys) => (
                keys.get(key)
                    .map_or(0, |old| entry_cost(key.len(), old.len())),
                entry_cost(key.len(), value.len()),
            ),
            None => (
                0,
                store_cost(store.len()).saturating_add(entry_cost(key.len(), value.len())),
            ),
        };
        if added > replaced {
            let needed = added - replaced;
            if needed > limit.saturating_sub(*used) {
                return Err(KvError::Full { limit, needed });
            }
        }
        match maps.get_mut(store) {
            Some(keys) => match keys.get_mut(key) {
                // A fresh copy of exactly the new length: a shorter value frees the difference.
                Some(old) => *old = value.to_vec(),
                None => {
                    keys.insert(key.to_string(), value.to_vec());
                }
            },
            None => {
                let keys = BTreeMap::from([(key.to_string(), value.to_vec())]);
                maps.insert(store.to_string(), keys);
            }
        }
        *used = used.saturating_sub(replaced).saturating_add(added);
        Ok(())
    }

    /// Deletes `key` from `store` (and the store with its last key).
    fn delete(&mut self, store: &str, key: &str) {
        let Stores { maps, used } = self;
        let Some(keys) = maps.get_mut(store) else {
            return;
        };
        if let Some(old) = keys.remove(key) {
            *used = used.saturating_sub(entry_cost(key.len(), old.len()));
        }
        if keys.is_empty() {
            maps.remove(store);
            *used = used.saturating_sub(store_cost(store.len()));
            // The table of stores keeps its capacity; give most of it back once it is mostly
            // empty, so that what it holds stays near what its stores are charged.
            if maps.capacity() > 64 && maps.len() < maps.capacity() / 4 {
                maps.shrink_to(maps.len() * 2);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_counted_applies_all_or_nothing() {
        let kv = MemoryStore::with_limit(4096);
        let set = |key, value| Write::Set {
            store: "s",
            key,
            value,
        };
        let counter = ("c", "n");
        assert_eq!(
            kv.write_counted(
                &[set("a", b"1"), set("b", b"2")],
                counter,
                &Bounds::UNBOUNDED
            ),
            Ok(1)
        );
        assert_eq!(
            kv.write_counted(
                &[Write::Delete {
                    store: "s",
                    key: "a"
                }],
                counter,
                &Bounds::UNBOUNDED
            ),
            Ok(2)
        );
        assert!(kv.get("s", "a", &Bounds::UNBOUNDED).is_err());
        let used = kv.used();
        // The second write does not fit: the first is undone and the counter stays.
        let big = vec![0u8; 4096];
        assert!(matches!(
            kv.write_counted(
                &[set("b", b"3"), set("huge", &big)],
                counter,
                &Bounds::UNBOUNDED
            ),
            Err(KvError::Full { .. })
        ));
        assert_eq!(kv.get("s", "b", &Bounds::UNBOUNDED), Ok(b"2".to_vec()));
        assert_eq!(kv.get("c", "n", &Bounds::UNBOUNDED), Ok(b"2".to_vec()));
        assert_eq!(kv.used(), used);
        kv.set("c", "n", b"x", &Bounds::UNBOUNDED).unwrap();
        assert!(kv.write_counted(&[], counter, &Bounds::UNBOUNDED).is_err());
    }

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
        // Key names add up, each with its overhead: "big" + "k2" = 5 bytes + 2 × 64.
        assert_eq!(
            kv.keys("s", &Bounds::new(None, 132)),
            Err(KvError::TooLarge {
                limit: 132,
                size: Some(133)
            })
        );
        let keys = kv.keys("s", &Bounds::new(None, 133)).unwrap();
        assert_eq!(listing_cost(&keys), 133);
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
    fn listing_many_short_keys_counts_what_each_costs_the_host() {
        // The attack: names short enough that they fit the caller's budget, while the host
        // structures of the listing (a `String` each) are many times larger.
        let kv = MemoryStore::new();
        for i in 0..1000 {
            kv.set("s", &format!("{i:04}"), b"", &Bounds::UNBOUNDED)
                .unwrap();
        }
        let names = 1000 * 4;
        let budget = Bounds::new(None, 10 * names);
        assert_eq!(
            kv.keys("s", &budget),
            Err(KvError::TooLarge {
                limit: 10 * names,
                size: Some(1000 * listed_key_cost(4))
            })
        );
        let enough = Bounds::new(None, 1000 * listed_key_cost(4));
        assert_eq!(kv.keys("s", &enough).unwrap().len(), 1000);
        // Each listed key costs at least its `String` besides its name.
        assert!(LISTED_KEY_OVERHEAD >= std::mem::size_of::<String>());
    }

    /// Sets `store`/`key` to a value of `len` bytes.
    fn set_len(kv: &MemoryStore, store: &str, key: &str, len: usize) -> Result<(), KvError> {
        kv.set(store, key, &vec![7; len], &Bounds::UNBOUNDED)
    }

    #[test]
    fn memory_store_refuses_writes_beyond_its_limit() {
        // Room for the store and three entries of 10 000 bytes, not four.
        let entry = entry_cost(2, 10_000);
        let limit = store_cost(1) + 3 * entry + entry / 2;
        let kv = MemoryStore::with_limit(limit);
        assert_eq!(kv.usage(), Some(Usage { used: 0, limit }));
        for key in ["k0", "k1", "k2"] {
            set_len(&kv, "s", key, 10_000).unwrap();
        }
        assert_eq!(kv.used(), store_cost(1) + 3 * entry);
        assert_eq!(
            set_len(&kv, "s", "k3", 10_000),
            Err(KvError::Full {
                limit,
                needed: entry
            })
        );
        // Nothing was written, and the stores hold no more than before.
        assert!(matches!(
            kv.get("s", "k3", &Bounds::UNBOUNDED),
            Err(KvError::KeyNotFound(_))
        ));
        assert_eq!(kv.used(), store_cost(1) + 3 * entry);
        // A new store is charged its name and bookkeeping too.
        assert!(matches!(
            set_len(
                &kv,
                &"t".repeat(MAX_NAME_LEN),
                "k",
                entry / 2 - 2 * ENTRY_OVERHEAD
            ),
            Err(KvError::Full { .. })
        ));
        // Overwrites that grow need room; those that stay equal or shrink always work.
        assert!(matches!(
            set_len(&kv, "s", "k0", 10_000 + entry / 2 + 1),
            Err(KvError::Full { needed, .. }) if needed == entry / 2 + 1
        ));
        assert_eq!(kv.get("s", "k0", &Bounds::UNBOUNDED).unwrap().len(), 10_000);
        set_len(&kv, "s", "k0", 10_000).unwrap();
        set_len(&kv, "s", "k1", 10).unwrap();
        assert_eq!(kv.used(), store_cost(1) + 2 * entry + entry_cost(2, 10));
        // The room freed by shrinking (and by deleting) takes new keys.
        set_len(&kv, "s", "k3", 10_000).unwrap();
        kv.delete("s", "k0", &Bounds::UNBOUNDED).unwrap();
        set_len(&kv, "s", "k4", 10_000).unwrap();
        assert!(kv.used() <= limit);
        // Deleting every key frees everything, the store's own bytes included.
        for key in kv.keys("s", &Bounds::UNBOUNDED).unwrap() {
            kv.delete("s", &key, &Bounds::UNBOUNDED).unwrap();
        }
        assert_eq!(kv.used(), 0);
        // An entry larger than the whole limit never fits.
        assert!(matches!(
            set_len(&kv, "s", "huge", limit),
            Err(KvError::Full { .. })
        ));
        assert_eq!(kv.used(), 0);
    }

    #[test]
    fn many_stores_with_long_names_are_charged_their_names() {
        // The attack: store names of 1 KiB with one empty value each. Counting only keys and
        // values, each would cost a byte; counted honestly, a store costs over 1.8 KiB.
        let limit = 1 << 20;
        let kv = MemoryStore::with_limit(limit);
        let mut stored = 0;
        for i in 0.. {
            let name = format!("{i:01024}");
            match kv.set(&name, "k", b"", &Bounds::UNBOUNDED) {
                Ok(()) => stored += 1,
                Err(KvError::Full { .. }) => break,
                Err(other) => panic!("{other}"),
            }
        }
        let per_store = store_cost(1024) + entry_cost(1, 0);
        assert_eq!(stored, limit / per_store);
        assert_eq!(kv.used(), stored * per_store);
        // Deleting a store's last key frees its name and bookkeeping.
        kv.delete(&format!("{:01024}", 0), "k", &Bounds::UNBOUNDED)
            .unwrap();
        assert_eq!(kv.used(), (stored - 1) * per_store);
        kv.set(&"x".repeat(1024), "k", b"", &Bounds::UNBOUNDED)
            .unwrap();
    }

    #[test]
    fn concurrent_writers_never_exceed_the_limit() {
        let limit = 200_000;
        let kv = MemoryStore::with_limit(limit);
        std::thread::scope(|s| {
            for t in 0..4 {
                let kv = &kv;
                s.spawn(move || {
                    for i in 0..500 {
                        let key = format!("{t}-{}", i % 50);
                        let _ = set_len(kv, "s", &key, (i * 37) % 3000);
                        if i % 7 == 0 {
                            kv.delete("s", &key, &Bounds::UNBOUNDED).unwrap();
                        }
                        assert!(kv.used() <= limit);
                    }
                });
            }
        });
        // What is counted is what is held.
        let keys = kv.keys("s", &Bounds::UNBOUNDED).unwrap();
        let held: usize = keys
            .iter()
            .map(|k| entry_cost(k.len(), kv.get("s", k, &Bounds::UNBOUNDED).unwrap().len()))
            .sum();
        let store = if keys.is_empty() { 0 } else { store_cost(1) };
        assert_eq!(kv.used(), held + store);
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
        let error = KvError::Full {
            limit: 4096,
            needed: 300,
        };
        assert_eq!(
            error.to_string(),
            "key-value store full: a write of 300 more bytes does not fit in its limit of 4096 \
             bytes"
        );
        let error = KvError::Timeout("get gave up after 200 ms".into());
        assert_eq!(error.to_string(), "timed out: get gave up after 200 ms");
        assert_eq!(error.clone(), error);
    }
}
