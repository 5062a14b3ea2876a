//! Per-function execution statistics and their Prometheus rendering.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http_front::ServerStats;

/// How many recent latencies each function keeps for percentiles.
const LATENCY_WINDOW: usize = 4096;

/// The outcome class of one invocation, as counted in stats and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// The function answered (whatever status it chose).
    Ok,
    /// The guest trapped or failed.
    Trap,
    /// The deadline or fuel limit was hit.
    Timeout,
    /// The memory limit was hit.
    Memory,
    /// A request or response body exceeded its limit.
    BodyTooLarge,
    /// The guest answered with an error of its own (`http-error`, no route).
    GuestError,
    /// A WASI command exited with a non-zero code.
    ExitFailure,
    /// The request did not fit the function (kind, method, arguments).
    BadInput,
    /// The server's memory budget was in use; the request was refused (503).
    Busy,
}

impl Outcome {
    /// Label used in JSON and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Trap => "trap",
            Outcome::Timeout => "timeout",
            Outcome::Memory => "memory",
            Outcome::BodyTooLarge => "body_too_large",
            Outcome::GuestError => "guest_error",
            Outcome::ExitFailure => "exit_failure",
            Outcome::BadInput => "bad_input",
            Outcome::Busy => "busy",
        }
    }
}

/// Statistics of one function.
#[derive(Debug, Default, Clone)]
struct FunctionStats {
    invocations: u64,
    outcomes: BTreeMap<Outcome, u64>,
    latencies_us: Vec<u64>,
    next_slot: usize,
    total_us: u64,
    fuel_used: u64,
    peak_memory: u64,
}

/// Statistics of all functions, shared by all workers.
#[derive(Debug, Default)]
pub struct Stats {
    functions: Mutex<BTreeMap<String, FunctionStats>>,
}

/// A snapshot of one function's statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Invocations counted (all outcomes).
    pub invocations: u64,
    /// Count per non-ok outcome label.
    pub errors: BTreeMap<&'static str, u64>,
    /// Latency percentiles over the recent window, in microseconds: p50, p95, p99.
    pub p50_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Mean latency over all invocations, in microseconds.
    pub mean_us: u64,
    /// Time spent in all invocations together, in microseconds (what pay-per-use bills).
    pub total_us: u64,
    /// Total fuel consumed.
    pub fuel_used: u64,
    /// Largest linear memory seen, in bytes.
    pub peak_memory: u64,
}

/// What one invocation cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cost {
    /// Wall-clock time.
    pub elapsed: Duration,
    /// Fuel consumed (0 when not metered).
    pub fuel: u64,
    /// Peak linear memory in bytes.
    pub memory: u64,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len()) - 1)
        .copied()
        .unwrap_or(0)
}

impl Stats {
    /// Empty statistics.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, FunctionStats>> {
        self.functions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one invocation of `function`.
    pub fn record(&self, function: &str, outcome: Outcome, cost: Cost) {
        let mut all = self.lock();
        let stats = all.entry(function.to_string()).or_default();
        let us = u64::try_from(cost.elapsed.as_micros()).unwrap_or(u64::MAX);
        stats.invocations += 1;
        *stats.outcomes.entry(outcome).or_default() += 1;
        match stats.latencies_us.get_mut(stats.next_slot) {
            Some(slot) => *slot = us,
            None => stats.latencies_us.push(us),
        }
        stats.next_slot = (stats.next_slot + 1) % LATENCY_WINDOW;
        stats.total_us = stats.total_us.saturating_add(us);
        stats.fuel_used = stats.fuel_used.saturating_add(cost.fuel);
        stats.peak_memory = stats.peak_memory.max(cost.memory);
    }

    /// Forgets `function` (after it is deleted).
    pub fn remove(&self, function: &str) {
        self.lock().remove(function);
    }

    /// The statistics of `function`, if it was ever invoked.
    pub fn snapshot(&self, function: &str) -> Option<Snapshot> {
        let all = self.lock();
        let stats = all.get(function)?;
        let mut sorted = stats.latencies_us.clone();
        sorted.sort_unstable();
        Some(Snapshot {
            invocations: stats.invocations,
            errors: stats
                .outcomes
                .iter()
                .filter(|(o, _)| **o != Outcome::Ok)
                .map(|(o, n)| (o.label(), *n))
                .collect(),
            p50_us: percentile(&sorted, 50.0),
            p95_us: percentile(&sorted, 95.0),
            p99_us: percentile(&sorted, 99.0),
            mean_us: stats.total_us / stats.invocations.max(1),
            total_us: stats.total_us,
            fuel_used: stats.fuel_used,
            peak_memory: stats.peak_memory,
        })
    }

    /// All functions' statistics in Prometheus text exposition format.
    pub fn prometheus(&self) -> String {
        let all = self.lock();
        let mut out = String::new();
        out.push_str("# HELP faas_invocations_total Function invocations by outcome.\n");
        out.push_str("# TYPE faas_invocations_total counter\n");
        for (name, stats) in all.iter() {
            for (outcome, n) in &stats.outcomes {
                let _ = writeln!(
                    out,
                    "faas_invocations_total{{function=\"{name}\",outcome=\"{}\"}} {n}",
                    outcome.label()
                );
            }
        }
        out.push_str("# HELP faas_latency_seconds Recent invocation latency quantiles.\n");
        out.push_str("# TYPE faas_latency_seconds summary\n");
        for (name, stats) in all.iter() {
            let mut sorted = stats.latencies_us.clone();
            sorted.sort_unstable();
            for (q, p) in [("0.5", 50.0), ("0.95", 95.0), ("0.99", 99.0)] {
                let _ = writeln!(
                    out,
                    "faas_latency_seconds{{function=\"{name}\",quantile=\"{q}\"}} {:.6}",
                    percentile(&sorted, p) as f64 / 1e6
                );
            }
            let _ = writeln!(
                out,
                "faas_latency_seconds_sum{{function=\"{name}\"}} {:.6}",
                stats.total_us as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "faas_latency_seconds_count{{function=\"{name}\"}} {}",
                stats.invocations
            );
        }
        out.push_str("# HELP faas_fuel_used_total Fuel consumed by function.\n");
        out.push_str("# TYPE faas_fuel_used_total counter\n");
        for (name, stats) in all.iter() {
            let _ = writeln!(
                out,
                "faas_fuel_used_total{{function=\"{name}\"}} {}",
                stats.fuel_used
            );
        }
        out.push_str("# HELP faas_peak_memory_bytes Largest guest linear memory seen.\n");
        out.push_str("# TYPE faas_peak_memory_bytes gauge\n");
        for (name, stats) in all.iter() {
            let _ = writeln!(
                out,
                "faas_peak_memory_bytes{{function=\"{name}\"}} {}",
                stats.peak_memory
            );
        }
        out
    }
}

/// The server-wide gauges of `/metrics`: memory in use, the functions' memory budget and how
/// much of it runs have reserved now.
pub fn server_gauges(in_use: Option<u64>, budget: usize, reserved: usize) -> String {
    let mut out = String::new();
    if let Some(bytes) = in_use {
        out.push_str("# HELP server_memory_bytes Memory the server uses now (resident set, or heap under hermit).\n");
        out.push_str("# TYPE server_memory_bytes gauge\n");
        let _ = writeln!(out, "server_memory_bytes {bytes}");
    }
    out.push_str("# HELP function_memory_budget_bytes Memory function runs may reserve at once.\n");
    out.push_str("# TYPE function_memory_budget_bytes gauge\n");
    let _ = writeln!(out, "function_memory_budget_bytes {budget}");
    out.push_str("# HELP function_memory_reserved_bytes Memory reserved by function runs now.\n");
    out.push_str("# TYPE function_memory_reserved_bytes gauge\n");
    let _ = writeln!(out, "function_memory_reserved_bytes {reserved}");
    out
}

/// The gauges of a key-value backend that keeps its data in this process (`kv=memory`): bytes
/// held now (keys, values and bookkeeping) and its limit (`kv-memory=`).
pub fn kv_memory_gauges(used: usize, limit: usize) -> String {
    let mut out = String::new();
    out.push_str("# HELP kv_memory_used_bytes Bytes the in-memory key-value store holds.\n");
    out.push_str("# TYPE kv_memory_used_bytes gauge\n");
    let _ = writeln!(out, "kv_memory_used_bytes {used}");
    out.push_str(
        "# HELP kv_memory_limit_bytes Bytes the in-memory key-value store may hold (kv-memory).\n",
    );
    out.push_str("# TYPE kv_memory_limit_bytes gauge\n");
    let _ = writeln!(out, "kv_memory_limit_bytes {limit}");
    out
}

/// The HTTP server's counters and gauges for `/metrics`.
pub fn http_server_metrics(stats: &ServerStats) -> String {
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    let rows: [(&str, &str, &str, u64); 12] = [
        (
            "http_connections_accepted_total",
            "counter",
            "Connections accepted and served.",
            load(&stats.connections_accepted),
        ),
        (
            "http_connections_rejected_total",
            "counter",
            "Connections answered 503 and closed at max-connections.",
            load(&stats.connections_rejected),
        ),
        (
            "http_requests_total",
            "counter",
            "Requests parsed and dispatched.",
            load(&stats.requests),
        ),
        (
            "http_queue_full_total",
            "counter",
            "Requests answered 503 because the worker queue was full.",
            load(&stats.queue_full),
        ),
        (
            "http_queue_expired_total",
            "counter",
            "Requests answered 503 without running after waiting longer than queue-timeout-ms.",
            load(&stats.queue_expired),
        ),
        (
            "http_cancelled_total",
            "counter",
            "Queued requests not run because their client went away.",
            load(&stats.cancelled),
        ),
        (
            "http_buffers_full_total",
            "counter",
            "Requests or responses answered 503 because the buffer budget was used up.",
            load(&stats.buffers_full),
        ),
        (
            "http_protocol_errors_total",
            "counter",
            "Requests answered with a protocol error.",
            load(&stats.protocol_errors),
        ),
        (
            "http_timeouts_total",
            "counter",
            "Requests cut at their header or body deadline (408).",
            load(&stats.timeouts),
        ),
        (
            "http_busy_workers",
            "gauge",
            "Workers running a request now.",
            load(&stats.busy_workers),
        ),
        (
            "http_buffered_bytes",
            "gauge",
            "Bytes held in request and response buffers beyond each connection's allowance.",
            stats.buffered_bytes() as u64,
        ),
        (
            "http_buffer_budget_bytes",
            "gauge",
            "Bound on http_buffered_bytes (buffer-budget).",
            stats.buffer_budget() as u64,
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in rows {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    }
    out
}

impl Snapshot {
    /// The snapshot as a JSON object.
    pub fn to_json(&self, function: &str) -> serde_json::Value {
        serde_json::json!({
            "function": function,
            "invocations": self.invocations,
            "errors": self.errors,
            "latency_us": { "p50": self.p50_us, "p95": self.p95_us, "p99": self.p99_us, "mean": self.mean_us },
            "execution_time_ms": self.total_us / 1000,
            "fuel_used": self.fuel_used,
            "peak_memory_bytes": self.peak_memory,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(ms: u64) -> Cost {
        Cost {
            elapsed: Duration::from_millis(ms),
            fuel: 10,
            memory: ms * 1000,
        }
    }

    #[test]
    fn percentiles_and_errors() {
        let stats = Stats::new();
        for ms in 1..=100 {
            stats.record("f", Outcome::Ok, cost(ms));
        }
        stats.record("f", Outcome::Timeout, cost(1000));
        let snap = stats.snapshot("f").unwrap();
        assert_eq!(snap.invocations, 101);
        assert_eq!(snap.errors.get("timeout"), Some(&1));
        assert_eq!(snap.errors.get("ok"), None);
        assert_eq!(snap.p50_us, 51_000);
        assert_eq!(snap.p99_us, 100_000);
        assert_eq!(snap.fuel_used, 1010);
        assert_eq!(snap.peak_memory, 1_000_000);
        assert_eq!(snap.to_json("f")["execution_time_ms"], 5050 + 1000);
        assert!(stats.snapshot("g").is_none());
    }

    #[test]
    fn window_is_bounded() {
        let stats = Stats::new();
        for _ in 0..(LATENCY_WINDOW + 10) {
            stats.record("f", Outcome::Ok, cost(1));
        }
        assert_eq!(stats.lock()["f"].latencies_us.len(), LATENCY_WINDOW);
    }

    #[test]
    fn prometheus_text() {
        let stats = Stats::new();
        stats.record("fib", Outcome::Ok, cost(2));
        stats.record("fib", Outcome::Trap, cost(3));
        let text = stats.prometheus();
        assert!(
            text.contains("faas_invocations_total{function=\"fib\",outcome=\"ok\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("faas_invocations_total{function=\"fib\",outcome=\"trap\"} 1\n"));
        assert!(text.contains("faas_latency_seconds_count{function=\"fib\"} 2\n"));
        assert!(text.contains("# TYPE faas_fuel_used_total counter\n"));
    }
}
