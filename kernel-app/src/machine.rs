//! What the machine allows the server: connections (descriptors natively, RAM under hermit),
//! memory for functions, and what the server uses now. Only this module and `main` know that
//! the program may run as a unikernel.

/// Memory budget for functions natively when `memory-budget=` is not given.
#[cfg(not(target_os = "hermit"))]
const NATIVE_BUDGET: usize = 1 << 30;

/// Budget for request and response buffers natively when `buffer-budget=` is not given.
#[cfg(not(target_os = "hermit"))]
const NATIVE_BUFFER_BUDGET: usize = 256 << 20;

/// What the in-memory key-value store may hold natively when `kv-memory=` is not given.
#[cfg(not(target_os = "hermit"))]
const NATIVE_KV_MEMORY: usize = keyvalue::DEFAULT_MEMORY_LIMIT;

/// Kernel memory per open connection under hermit: the listener slot that replaces an accepted
/// socket (16 KiB each way, kernel patch 0012), smoltcp's bookkeeping, our own buffers.
#[cfg(target_os = "hermit")]
const CONNECTION_BYTES: usize = 48 << 10;

/// Heap kept free under hermit for everything that is not a function run, a connection's
/// kernel buffers or the buffer budget: compiled boot functions (under 1 MiB), the free
/// allowance of each connection's buffers, logging, the network stack's packets.
#[cfg(target_os = "hermit")]
const SERVER_RESERVE: usize = 4 << 20;

/// Smallest budget derived from the heap: one run of a function with the default limits.
#[cfg(target_os = "hermit")]
fn min_budget() -> usize {
    platform::memory::reservation_for(platform::limits::DEFAULT_MAX_MEMORY)
}

#[cfg(target_os = "hermit")]
unsafe extern "C" {
    /// Our kernel patch 0011: bytes the heap has allocated and can still allocate.
    fn sys_heap_usage(allocated: *mut usize, available: *mut usize) -> i32;
}

/// Heap bytes allocated and still available (hermit only).
#[cfg(target_os = "hermit")]
fn heap_usage() -> Option<(usize, usize)> {
    let (mut allocated, mut available) = (0usize, 0usize);
    // SAFETY: the kernel writes one usize through each pointer, both valid for writes.
    let status = unsafe { sys_heap_usage(&mut allocated, &mut available) };
    (status == 0).then_some((allocated, available))
}

/// Bytes in use by the server now: the heap under hermit, the resident set natively.
pub fn in_use() -> Option<u64> {
    #[cfg(target_os = "hermit")]
    {
        heap_usage().map(|(allocated, _)| allocated as u64)
    }
    #[cfg(not(target_os = "hermit"))]
    {
        // Second field of /proc/self/statm: resident pages.
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * 4096)
    }
}

/// The function memory budget when `memory-budget=` is not given. Under hermit: the heap still
/// available once the listener exists, minus the kernel buffers of `max_connections`
/// connections, the request and response buffer budget, what the in-memory key-value store may
/// hold (`kv_memory`, 0 with Redis) and a reserve for the server itself.
/// Natively: [`NATIVE_BUDGET`].
pub fn default_budget(max_connections: usize, buffer_budget: usize, kv_memory: usize) -> usize {
    #[cfg(target_os = "hermit")]
    {
        let Some((allocated, available)) = heap_usage() else {
            return min_budget();
        };
        log::info!("heap: {allocated} bytes allocated, {available} available");
        available
            .saturating_sub(max_connections.saturating_mul(CONNECTION_BYTES))
            .saturating_sub(buffer_budget)
            .saturating_sub(kv_memory)
            .saturating_sub(SERVER_RESERVE)
            .max(min_budget())
    }
    #[cfg(not(target_os = "hermit"))]
    {
        let _ = (max_connections, buffer_budget, kv_memory);
        NATIVE_BUDGET
    }
}

/// The request and response buffer budget when `buffer-budget=` is not given: under hermit a
/// sixth of the heap still available once the listener exists (at least `max_body` and 1 MiB
/// more, so that one largest body fits), natively [`NATIVE_BUFFER_BUDGET`].
pub fn default_buffer_budget(max_body: usize) -> usize {
    #[cfg(target_os = "hermit")]
    {
        let available = heap_usage().map_or(0, |(_, available)| available);
        (available / 6).max(max_body.saturating_add(1 << 20))
    }
    #[cfg(not(target_os = "hermit"))]
    {
        let _ = max_body;
        NATIVE_BUFFER_BUDGET
    }
}

/// What the in-memory key-value store may hold when `kv-memory=` is not given: under hermit an
/// eighth of the heap still available once the listener exists, natively [`NATIVE_KV_MEMORY`].
pub fn default_kv_memory() -> usize {
    #[cfg(target_os = "hermit")]
    {
        heap_usage().map_or(0, |(_, available)| available) / 8
    }
    #[cfg(not(target_os = "hermit"))]
    {
        NATIVE_KV_MEMORY
    }
}

/// Connections served at once when `max-connections=` is not given.
///
/// Natively the bound is the descriptor limit, raised to its hard limit first. Under hermit each
/// connection holds kernel socket buffers ([`CONNECTION_BYTES`]); an eighth of the heap still
/// available once the listener exists goes to connections (about 70 in a 64 MiB VM).
pub fn default_max_connections() -> usize {
    #[cfg(target_os = "hermit")]
    {
        let available = heap_usage().map_or(0, |(_, available)| available);
        (available / 8 / CONNECTION_BYTES).clamp(16, 4096)
    }
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit read and write one `rlimit` we own.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                limit.rlim_cur = limit.rlim_max;
                let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
                let _ = libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            }
        }
        // Descriptors for the listener, Redis, logs and a margin; of the rest, a fifth for
        // connections that are refused (503 and close) once the limit is reached.
        let descriptors = usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX);
        (descriptors.saturating_sub(64) / 5 * 4).clamp(16, 65_536)
    }
}
