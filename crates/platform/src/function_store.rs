//! Functions deployed through the admin API are kept in the key-value backend (so that with
//! Redis they survive reboots); guests cannot reach that store.

use std::sync::Arc;

use keyvalue::{Bounds, KeyValue, KvError};

use crate::limits::FunctionLimits;

/// The key-value store in which deployed functions are kept, so that a server booting with the
/// same (Redis) backend serves them again. Guests cannot open it.
pub const FUNCTION_STORE: &str = "_functions";

/// First line of a stored function.
const STORED_MAGIC: &[u8] = b"uniwasm-function v1\n";

/// A deployed function as stored in [`FUNCTION_STORE`]: a magic line, its limits as a query
/// line, then the deployed source unchanged.
pub fn encode_stored(source: &[u8], limits: &FunctionLimits) -> Vec<u8> {
    let mut value = STORED_MAGIC.to_vec();
    value.extend_from_slice(limits.to_query().as_bytes());
    value.push(b'\n');
    value.extend_from_slice(source);
    value
}

/// The limits and source of a stored function ([`encode_stored`]); limits it does not name
/// keep their `defaults`.
pub fn decode_stored(
    value: &[u8],
    defaults: FunctionLimits,
) -> Result<(FunctionLimits, &[u8]), String> {
    let rest = value
        .strip_prefix(STORED_MAGIC)
        .ok_or_else(|| "not a stored function (unknown format)".to_string())?;
    let mut lines = rest.splitn(2, |&b| b == b'\n');
    let (Some(query), Some(source)) = (lines.next(), lines.next()) else {
        return Err("stored function has no limits line".to_string());
    };
    let query =
        std::str::from_utf8(query).map_err(|_| "stored limits are not UTF-8".to_string())?;
    Ok((defaults.with_overrides(Some(query))?, source))
}

/// The key-value backend as guests see it: [`FUNCTION_STORE`] is off limits. Other stores are
/// named globally, as in Spiderlightning: every function can open, read, overwrite and delete
/// any of them (and fill a bounded backend for all).
pub(crate) struct GuestKeyValue(pub(crate) Arc<dyn KeyValue>);

impl GuestKeyValue {
    fn check(store: &str) -> Result<(), KvError> {
        if [
            FUNCTION_STORE,
            crate::fleet::FUNCTION_INDEX,
            crate::fleet::FLEET_STORE,
        ]
        .contains(&store)
        {
            return Err(KvError::InvalidKey(format!(
                "store {store:?} is reserved for the platform"
            )));
        }
        Ok(())
    }
}

impl KeyValue for GuestKeyValue {
    fn open(&self, store: &str, bounds: &Bounds) -> Result<(), KvError> {
        Self::check(store)?;
        self.0.open(store, bounds)
    }

    fn get(&self, store: &str, key: &str, bounds: &Bounds) -> Result<Vec<u8>, KvError> {
        Self::check(store)?;
        self.0.get(store, key, bounds)
    }

    fn set(&self, store: &str, key: &str, value: &[u8], bounds: &Bounds) -> Result<(), KvError> {
        Self::check(store)?;
        self.0.set(store, key, value, bounds)
    }

    fn keys(&self, store: &str, bounds: &Bounds) -> Result<Vec<String>, KvError> {
        Self::check(store)?;
        self.0.keys(store, bounds)
    }

    fn delete(&self, store: &str, key: &str, bounds: &Bounds) -> Result<(), KvError> {
        Self::check(store)?;
        self.0.delete(store, key, bounds)
    }

    fn usage(&self) -> Option<keyvalue::Usage> {
        self.0.usage()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn stored_functions_round_trip() {
        let limits = FunctionLimits {
            fuel: 7,
            timeout: Duration::from_millis(1500),
            max_memory: 1 << 20,
            max_body: 99,
        };
        let source = b"\0asm\x01\0\0\0 binary\n with newlines";
        let value = encode_stored(source, &limits);
        let (decoded, body) = decode_stored(&value, FunctionLimits::default()).unwrap();
        assert_eq!(decoded, limits);
        assert_eq!(body, source);
        assert!(decode_stored(b"garbage", FunctionLimits::default()).is_err());
        assert!(
            decode_stored(
                b"uniwasm-function v1\nfuel=x\n(module)",
                FunctionLimits::default()
            )
            .is_err()
        );
        assert!(
            decode_stored(
                b"uniwasm-function v1\nno newline",
                FunctionLimits::default()
            )
            .is_err()
        );
    }

    #[test]
    fn guests_cannot_open_the_function_store() {
        let kv: Arc<dyn KeyValue> = Arc::new(keyvalue::MemoryStore::new());
        kv.set(FUNCTION_STORE, "f", b"secret", &Bounds::UNBOUNDED)
            .unwrap();
        let guest = GuestKeyValue(Arc::clone(&kv));
        assert!(matches!(
            guest.open(FUNCTION_STORE, &Bounds::UNBOUNDED),
            Err(KvError::InvalidKey(_))
        ));
        assert!(matches!(
            guest.get(FUNCTION_STORE, "f", &Bounds::UNBOUNDED),
            Err(KvError::InvalidKey(_))
        ));
        assert!(matches!(
            guest.set(FUNCTION_STORE, "f", b"x", &Bounds::UNBOUNDED),
            Err(KvError::InvalidKey(_))
        ));
        assert!(matches!(
            guest.keys(FUNCTION_STORE, &Bounds::UNBOUNDED),
            Err(KvError::InvalidKey(_))
        ));
        assert!(matches!(
            guest.delete(FUNCTION_STORE, "f", &Bounds::UNBOUNDED),
            Err(KvError::InvalidKey(_))
        ));
        for fleet in [crate::fleet::FUNCTION_INDEX, crate::fleet::FLEET_STORE] {
            assert!(matches!(
                guest.get(fleet, "version", &Bounds::UNBOUNDED),
                Err(KvError::InvalidKey(_))
            ));
        }
        assert_eq!(
            kv.get(FUNCTION_STORE, "f", &Bounds::UNBOUNDED).unwrap(),
            b"secret"
        );
        guest.set("other", "k", b"v", &Bounds::UNBOUNDED).unwrap();
        assert_eq!(guest.get("other", "k", &Bounds::UNBOUNDED).unwrap(), b"v");
    }
}
