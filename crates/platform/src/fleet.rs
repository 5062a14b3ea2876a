//! A fleet: instances sharing one key-value backend (Redis) serve one set of functions.
//!
//! Every admin change is one atomic batch ([`keyvalue::KeyValue::write_counted`]): the stored
//! function ([`FUNCTION_STORE`]), its entry in [`FUNCTION_INDEX`] (the SHA-256 of what was
//! stored, or a tombstone for a delete) and the increment of the fleet version
//! ([`FLEET_STORE`]/[`VERSION_KEY`]) land together. Each instance polls that version
//! ([`App::start_fleet_sync`]); when it moved (or every [`FULL_SYNC_EVERY`]) it reads the index
//! and applies every entry that differs from what it has loaded: recompiles replaced
//! functions, removes deleted ones. Function by function the registry swaps one `Arc`, so
//! requests in flight finish on their version.
//!
//! Why a polled version rather than Redis pub/sub: the state is read, not the messages, so an
//! instance that was cut off (or booted late) catches up by construction, where pub/sub drops
//! what was published while a subscriber was away and would need this resync anyway. A
//! subscriber would also hold a connection blocked in a read with no timeout (hermit rejects
//! `SO_RCVTIMEO`, so it would poll a non-blocking socket all the same) and a thread of its
//! own; the poll is one `GET` on the pooled, bounded client every [`SYNC_INTERVAL`], cheap
//! even under TCG.
//!
//! Concurrent deploys of one name: Redis orders the two transactions; the later one's value
//! and index entry stand, and its version increment comes last, so every instance's next sync
//! reads that value, including the instance whose deploy lost (its loaded SHA-256 differs
//! from the index). Admin changes and syncs on one instance are serialized, so a sync never
//! applies an older entry over a newer local change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use keyvalue::{Bounds, KvError, Write, parse_counter};
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::function_store::{FUNCTION_STORE, decode_stored};
use crate::functions::Deployed;

/// Store of the fleet's index: per function name, [`Entry`] as text.
pub const FUNCTION_INDEX: &str = "_function-index";
/// Store of the fleet's version counter ([`VERSION_KEY`]).
pub const FLEET_STORE: &str = "_fleet";
/// Key of the fleet version in [`FLEET_STORE`]: how many admin changes the fleet has seen.
pub const VERSION_KEY: &str = "version";

/// How often an instance checks the fleet version.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(200);
/// How often an instance reads the whole index even if the version did not move (a Redis
/// that lost its data and counted up to the same version again, a compile that failed).
pub const FULL_SYNC_EVERY: Duration = Duration::from_secs(30);
/// How long one call to the store may take during a sync or an admin change.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a synced function's compile waits for room in the memory budget.
const SYNC_RESERVE_WAIT: Duration = Duration::from_secs(10);
/// Bytes a stored function may have besides its source (magic and limits lines).
const STORED_HEADER_MAX: usize = 4096;

/// A function's entry in [`FUNCTION_INDEX`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Deployed; the SHA-256 (hex) of its value in [`FUNCTION_STORE`].
    Deployed(String),
    /// Deleted through the admin API (also a function built into the image).
    Deleted,
}

impl Entry {
    fn encode(&self) -> String {
        match self {
            Entry::Deployed(stamp) => format!("deployed {stamp}"),
            Entry::Deleted => "deleted".to_string(),
        }
    }

    fn decode(value: &[u8]) -> Option<Entry> {
        match std::str::from_utf8(value).ok()?.split_once(' ') {
            Some(("deployed", stamp)) => Some(Entry::Deployed(stamp.to_string())),
            None if value == b"deleted" => Some(Entry::Deleted),
            _ => None,
        }
    }
}

/// SHA-256 (hex) of a stored function's value: what [`Entry::Deployed`] names.
pub fn stamp(stored: &[u8]) -> String {
    Sha256::digest(stored)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// This instance's view of the fleet.
#[derive(Default)]
pub(crate) struct Fleet {
    /// Held while admin changes or a sync change the registry's admin-owned functions.
    apply: Mutex<()>,
    /// Per name, the entry this instance has applied.
    loaded: Mutex<HashMap<String, Entry>>,
    view: Mutex<View>,
}

#[derive(Default)]
struct View {
    /// The fleet version this instance's functions reflect; `None` before the first sync.
    version: Option<u64>,
    /// When the index was last read completely.
    full_sync: Option<Instant>,
    /// Why the last sync could not read the fleet's state (store unreachable): the next poll
    /// reads the whole index.
    unreachable: Option<String>,
    /// What the last complete sync could not apply (retried at the next full sync).
    failed: Option<String>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn store_bounds() -> Bounds {
    Bounds::within(STORE_TIMEOUT, usize::MAX)
}

/// What one sync did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// The fleet version read.
    pub version: u64,
    /// Functions (re)deployed from the store.
    pub deployed: Vec<String>,
    /// Functions deleted.
    pub deleted: Vec<String>,
    /// Functions that could not be applied, with the reason.
    pub failed: Vec<(String, String)>,
}

impl App {
    /// Deploys `function` (kept as `stored`) for the whole fleet: store, index and version in
    /// one batch, then this instance's registry. Returns whether it replaced a function.
    pub(crate) fn fleet_deploy(&self, function: Deployed, stored: &[u8]) -> Result<bool, KvError> {
        let name = function.name.clone();
        let entry = Entry::Deployed(stamp(stored));
        let _apply = lock(&self.fleet.apply);
        let count = self.kv.write_counted(
            &[
                Write::Set {
                    store: FUNCTION_STORE,
                    key: &name,
                    value: stored,
                },
                Write::Set {
                    store: FUNCTION_INDEX,
                    key: &name,
                    value: entry.encode().as_bytes(),
                },
            ],
            (FLEET_STORE, VERSION_KEY),
            &store_bounds(),
        )?;
        let replaced = self.registry.insert_admin(function);
        self.applied_own_change(name, entry, count);
        Ok(replaced)
    }

    /// Deletes `name` for the whole fleet (a tombstone in the index, so that instances booting
    /// later do not deploy a built-in function of that name either). Returns whether it existed
    /// here.
    pub(crate) fn fleet_delete(&self, name: &str) -> Result<bool, KvError> {
        let _apply = lock(&self.fleet.apply);
        let deleted = Entry::Deleted.encode();
        let count = self.kv.write_counted(
            &[
                Write::Delete {
                    store: FUNCTION_STORE,
                    key: name,
                },
                Write::Set {
                    store: FUNCTION_INDEX,
                    key: name,
                    value: deleted.as_bytes(),
                },
            ],
            (FLEET_STORE, VERSION_KEY),
            &store_bounds(),
        )?;
        let existed = self.registry.remove_admin(name);
        self.stats.remove(name);
        self.applied_own_change(name.to_string(), Entry::Deleted, count);
        Ok(existed)
    }

    /// Records a change this instance made, which took the fleet to version `count`: if no other
    /// change came between (the view was `count - 1`), the view is current again.
    fn applied_own_change(&self, name: String, entry: Entry, count: u64) {
        lock(&self.fleet.loaded).insert(name, entry);
        let mut view = lock(&self.fleet.view);
        if view
            .version
            .is_some_and(|seen| seen.checked_add(1) == Some(count))
        {
            view.version = Some(count);
        }
    }

    /// Loads the function `name` kept in [`FUNCTION_STORE`] into the registry (as an admin's
    /// deploy) unless this instance already has that very value. `Ok(false)`: nothing to do.
    pub(crate) fn load_stored(&self, name: &str, reserve_wait: Duration) -> Result<bool, String> {
        let max_reply = self
            .default_limits
            .max_body
            .saturating_add(STORED_HEADER_MAX);
        let value = self
            .kv
            .get(
                FUNCTION_STORE,
                name,
                &Bounds::within(STORE_TIMEOUT, max_reply),
            )
            .map_err(|e| e.to_string())?;
        let entry = Entry::Deployed(stamp(&value));
        if lock(&self.fleet.loaded).get(name) == Some(&entry) {
            return Ok(false);
        }
        let (limits, source) = decode_stored(&value, self.default_limits)?;
        let function = self.compile_reserved(name, source, limits, reserve_wait)?;
        log::info!(
            "restored {name} ({}, {} bytes, sha256 {}) from store {FUNCTION_STORE}",
            function.program.kind(),
            function.size,
            function.sha256
        );
        self.registry.insert_admin(function);
        lock(&self.fleet.loaded).insert(name.to_string(), entry);
        Ok(true)
    }

    /// Brings this instance's functions to the fleet's state if the fleet version moved since
    /// the last sync (or a full sync is due, or `force`).
    pub fn sync_fleet(&self, force: bool) -> Result<Option<SyncReport>, KvError> {
        let version = match self.kv.get(FLEET_STORE, VERSION_KEY, &store_bounds()) {
            Ok(value) => parse_counter(&value).unwrap_or(0),
            Err(KvError::KeyNotFound(_)) => 0,
            Err(error) => {
                self.sync_failed(&error);
                return Err(error);
            }
        };
        {
            let view = lock(&self.fleet.view);
            let full_due = view
                .full_sync
                .is_none_or(|at| at.elapsed() >= FULL_SYNC_EVERY);
            if !force && !full_due && view.version == Some(version) && view.unreachable.is_none() {
                return Ok(None);
            }
        }
        let report = self
            .apply_index(version)
            .inspect_err(|e| self.sync_failed(e))?;
        let mut view = lock(&self.fleet.view);
        view.version = Some(version);
        view.full_sync = Some(Instant::now());
        if view.unreachable.take().is_some() {
            log::info!("fleet sync: store reachable again, at fleet version {version}");
        }
        view.failed = (!report.failed.is_empty()).then(|| {
            report
                .failed
                .iter()
                .map(|(name, reason)| format!("{name}: {reason}"))
                .collect::<Vec<_>>()
                .join("; ")
        });
        Ok(Some(report))
    }

    fn sync_failed(&self, error: &KvError) {
        let problem = format!("cannot read the fleet's state: {error}");
        let mut view = lock(&self.fleet.view);
        if view.unreachable.as_deref() != Some(problem.as_str()) {
            log::warn!("fleet sync: {problem}");
            view.unreachable = Some(problem);
        }
    }

    /// Applies every index entry that differs from what this instance has loaded.
    fn apply_index(&self, version: u64) -> Result<SyncReport, KvError> {
        let names = self.kv.keys(FUNCTION_INDEX, &store_bounds())?;
        let _apply = lock(&self.fleet.apply);
        let mut report = SyncReport {
            version,
            ..SyncReport::default()
        };
        for name in names {
            let entry = match self.kv.get(FUNCTION_INDEX, &name, &store_bounds()) {
                Ok(value) => Entry::decode(&value),
                Err(KvError::KeyNotFound(_)) => continue,
                Err(error) => return Err(error),
            };
            let Some(entry) = entry else {
                report
                    .failed
                    .push((name, "index entry in an unknown format".into()));
                continue;
            };
            if lock(&self.fleet.loaded).get(&name) == Some(&entry) {
                continue;
            }
            match entry {
                Entry::Deleted => {
                    if self.registry.remove_admin(&name) {
                        self.stats.remove(&name);
                        log::info!("deleted {name} (fleet version {version})");
                        report.deleted.push(name.clone());
                    }
                    lock(&self.fleet.loaded).insert(name, Entry::Deleted);
                }
                Entry::Deployed(_) => match self.load_stored(&name, SYNC_RESERVE_WAIT) {
                    Ok(true) => report.deployed.push(name),
                    Ok(false) => {}
                    Err(reason) => {
                        log::warn!("fleet sync: {name} not applied: {reason}");
                        report.failed.push((name, reason));
                    }
                },
            }
        }
        Ok(report)
    }

    /// The fleet as this instance sees it, for `GET /_admin/functions`.
    pub(crate) fn fleet_json(&self) -> serde_json::Value {
        let view = lock(&self.fleet.view);
        serde_json::json!({
            "version": view.version,
            "full_sync_ms_ago": view.full_sync.map(|at| u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX)),
            "unreachable": view.unreachable,
            "failed": view.failed,
        })
    }

    /// Keeps this instance in step with the fleet: a thread that calls [`App::sync_fleet`]
    /// every `interval` (errors are logged once and retried: an instance cut off from the
    /// store catches up when it is back).
    pub fn start_fleet_sync(
        app: &Arc<App>,
        interval: Duration,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let app = Arc::clone(app);
        std::thread::Builder::new()
            .name("fleet-sync".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(interval);
                    if let Ok(Some(report)) = app.sync_fleet(false)
                        && (!report.deployed.is_empty() || !report.deleted.is_empty())
                    {
                        log::info!(
                            "fleet version {}: deployed {:?}, deleted {:?}",
                            report.version,
                            report.deployed,
                            report.deleted
                        );
                    }
                }
            })
    }
}
