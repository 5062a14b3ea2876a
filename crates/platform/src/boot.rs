//! Functions at boot: those kept in the function store by earlier admin deploys, and those
//! built into the image, compiled on a background thread while the server already answers.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use keyvalue::Bounds;

use crate::app::App;
use crate::function_store::FUNCTION_STORE;
use crate::memory::reservation_for;

/// Longest a request waits for a boot-time function that is still being compiled.
const BOOT_WAIT: Duration = Duration::from_secs(120);

/// Longest a boot-time compile waits for room in the memory budget (its `on-server-init`
/// runs under the function's limits like any request).
const BOOT_RESERVE_WAIT: Duration = Duration::from_secs(60);

/// Longest the deployer defers its next compile while function calls run: it gives way to
/// requests (on one vCPU a compile would otherwise take turns with the first answers), but
/// a steady stream of calls cannot keep the remaining boot functions from being deployed.
const DEFER_TO_CALLS: Duration = Duration::from_millis(100);

/// Boot-time functions still being compiled: requests for them wait rather than get 404, so
/// the server can listen (and answer `/healthz`) before every function is ready.
#[derive(Default)]
pub(crate) struct BootGate {
    pending: Mutex<HashSet<String>>,
    deployed: Condvar,
    /// Function calls running now (see [`BootGate::call_running`]).
    calls: Mutex<usize>,
    calls_done: Condvar,
}

/// A function call in progress, counted until dropped.
pub(crate) struct CallRunning<'a>(&'a BootGate);

impl Drop for CallRunning<'_> {
    fn drop(&mut self) {
        let mut calls = self.0.calls_lock();
        *calls = calls.saturating_sub(1);
        if *calls == 0 {
            self.0.calls_done.notify_all();
        }
    }
}

impl BootGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks while `name` is still being deployed (at most [`BOOT_WAIT`]).
    pub(crate) fn wait_for(&self, name: &str) {
        let pending = self.lock();
        if pending.contains(name) {
            let _ = self
                .deployed
                .wait_timeout_while(pending, BOOT_WAIT, |p| p.contains(name));
        }
    }

    fn finish(&self, name: &str) {
        self.lock().remove(name);
        self.deployed.notify_all();
    }

    fn calls_lock(&self) -> std::sync::MutexGuard<'_, usize> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a function call until the returned guard is dropped.
    pub(crate) fn call_running(&self) -> CallRunning<'_> {
        *self.calls_lock() += 1;
        CallRunning(self)
    }

    /// Waits until no function call runs, at most [`DEFER_TO_CALLS`].
    fn wait_for_calls(&self) {
        let calls = self.calls_lock();
        let _ = self
            .calls_done
            .wait_timeout_while(calls, DEFER_TO_CALLS, |calls| *calls > 0);
    }
}

impl App {
    /// Deploys every function kept in [`FUNCTION_STORE`] (as if an admin deployed it again). A
    /// store that cannot be read (Redis down at boot) or a function that no longer compiles is
    /// logged and skipped: the server still starts.
    pub(crate) fn restore_functions(&self) {
        let names = match self.kv.keys(FUNCTION_STORE, &Bounds::UNBOUNDED) {
            Ok(names) => names,
            Err(err) => {
                log::warn!(
                    "deployed functions not restored: cannot list store {FUNCTION_STORE}: {err}"
                );
                return;
            }
        };
        for name in names {
            if let Err(err) = self.load_stored(&name, BOOT_RESERVE_WAIT) {
                log::warn!("function {name} in store {FUNCTION_STORE} not restored: {err}");
            }
        }
        // Deletes (of built-in functions too) and the fleet version.
        if let Err(err) = self.sync_fleet(true) {
            log::warn!("fleet state not read at boot (retried while serving): {err}");
        }
    }

    /// Deploys `source` as `name` with the default limits (a boot-time function), unless an
    /// admin owns that name (deployed, deleted or restored it): the admin's version wins.
    pub fn deploy(&self, name: &str, source: &[u8]) -> Result<(), String> {
        if self.registry.is_admin_owned(name) {
            log::info!("boot function {name} not deployed: an admin deployed or deleted it");
            return Ok(());
        }
        let function =
            self.compile_reserved(name, source, self.default_limits, BOOT_RESERVE_WAIT)?;
        let (kind, size) = (function.program.kind(), function.size);
        if self.registry.insert_boot(function) {
            log::info!("deployed {name} ({kind}, {size} bytes)");
        } else {
            log::info!(
                "boot function {name} not deployed: an admin deployed or deleted it meanwhile"
            );
        }
        Ok(())
    }

    /// Compiles with the function's memory reserved (an HTTP guest's `on-server-init` runs).
    pub(crate) fn compile_reserved(
        &self,
        name: &str,
        source: &[u8],
        limits: crate::limits::FunctionLimits,
        wait: Duration,
    ) -> Result<crate::functions::Deployed, String> {
        let _reservation = self
            .memory
            .reserve(reservation_for(limits.max_memory), wait)
            .map_err(|refused| crate::invoke::refusal_message(name, refused))?;
        self.compiler.compile(name, source, limits)
    }

    /// Deploys `functions` on a background thread, in order; until each is deployed, requests
    /// for it wait instead of failing. Returns the thread, which ends when all are deployed.
    pub fn deploy_in_background(
        app: &Arc<App>,
        functions: &'static [(&'static str, &'static [u8])],
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        app.boot
            .lock()
            .extend(functions.iter().map(|(name, _)| name.to_string()));
        let app = Arc::clone(app);
        std::thread::Builder::new()
            .name("boot-deployer".into())
            .spawn(move || {
                let started = Instant::now();
                for (name, source) in functions {
                    app.boot.wait_for_calls();
                    if let Err(err) = app.deploy(name, source) {
                        log::error!("boot function {name} not deployed: {err}");
                    }
                    app.boot.finish(name);
                    // Let the I/O thread and the requests that waited for this function in
                    // before the next compile (on one vCPU they would otherwise wait for every
                    // boot function before answering, even `/healthz`).
                    std::thread::yield_now();
                }
                log::info!(
                    "{} boot functions deployed in {} ms",
                    functions.len(),
                    started.elapsed().as_millis()
                );
            })
    }
}
