//! Load generation with Debian's `wrk` (keep-alive HTTP/1.1, `--latency` for the percentiles):
//! runs it against 127.0.0.1 only, bounded in time, and parses what it prints.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// The `wrk` binary (`WRK` overrides; `./setup.sh` installs Debian's package).
fn wrk_binary() -> String {
    std::env::var("WRK").unwrap_or_else(|_| "wrk".into())
}

/// Per-request timeout given to wrk: a slow answer under TCG is a latency, not an error.
pub(crate) const WRK_TIMEOUT_SECS: u64 = 10;

/// Fails early, with the fix, when wrk is missing.
pub(crate) fn ensure_wrk() -> Result<()> {
    match Command::new(wrk_binary()).arg("--version").output() {
        Ok(_) => Ok(()),
        Err(err) => bail!("wrk not found ({err}): run ./setup.sh (apt-get install wrk)"),
    }
}

/// What one wrk run reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Wrk {
    /// Connections wrk held open (`-c`).
    pub connections: usize,
    /// Responses of any status (wrk's "N requests in ...").
    pub requests: u64,
    /// Length of the run as wrk measured it.
    pub seconds: f64,
    /// wrk's "Requests/sec" (all statuses).
    pub rps: f64,
    /// "Non-2xx or 3xx responses" (0 when wrk did not print the line).
    pub non_2xx: u64,
    /// "Socket errors: connect, read, write, timeout".
    pub socket_errors: [u64; 4],
    /// Latency percentiles from `--latency`, in microseconds.
    pub p50_us: f64,
    /// 99th percentile latency in microseconds.
    pub p99_us: f64,
}

impl Wrk {
    /// Responses with a 2xx/3xx status per second.
    pub fn ok_rps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests.saturating_sub(self.non_2xx) as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// All socket errors together.
    pub fn socket_error_total(&self) -> u64 {
        self.socket_errors.iter().sum()
    }

    /// "connect/read/write/timeout", or "0".
    pub fn socket_errors_text(&self) -> String {
        if self.socket_error_total() == 0 {
            return "0".into();
        }
        let [c, r, w, t] = self.socket_errors;
        format!("{c}/{r}/{w}/{t}")
    }
}

/// `wrk` with `connections` keep-alive connections on `http://127.0.0.1:{port}{path}` for
/// `seconds`; threads = min(connections, available cores).
pub(crate) fn run(port: u16, path: &str, connections: usize, seconds: u64) -> Result<Wrk> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    run_with_threads(
        port,
        path,
        connections,
        connections.clamp(1, cores),
        seconds,
    )
}

/// [`run`] with `threads` wrk threads (`-t`).
pub(crate) fn run_with_threads(
    port: u16,
    path: &str,
    connections: usize,
    threads: usize,
    seconds: u64,
) -> Result<Wrk> {
    let threads = threads.clamp(1, connections.max(1));
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut cmd = Command::new(wrk_binary());
    cmd.args([
        "-t",
        &threads.to_string(),
        "-c",
        &connections.max(1).to_string(),
        "-d",
        &format!("{}s", seconds.max(1)),
        "--timeout",
        &format!("{WRK_TIMEOUT_SECS}s"),
        "--latency",
        &url,
    ]);
    let output = cmd.output().with_context(|| format!("start {cmd:?}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "{cmd:?} failed with {}: {}{}",
            output.status,
            text,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut wrk = parse(&text).with_context(|| format!("unexpected output of {cmd:?}:\n{text}"))?;
    wrk.connections = connections;
    Ok(wrk)
}

/// A duration as wrk prints it (`412.00us`, `1.20ms`, `2.00s`, `1.00m`), in microseconds.
fn parse_time_us(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(value * scale)
}

/// Parses wrk's report (with `--latency`).
pub(crate) fn parse(text: &str) -> Result<Wrk> {
    let mut wrk = Wrk::default();
    let (mut have_rps, mut have_requests) = (false, false);
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", value] => {
                wrk.rps = value.parse().context("Requests/sec")?;
                have_rps = true;
            }
            ["50%", value] => wrk.p50_us = parse_time_us(value).context("50% latency")?,
            ["99%", value] => wrk.p99_us = parse_time_us(value).context("99% latency")?,
            [count, "requests", "in", duration, ..] => {
                wrk.requests = count.parse().context("request count")?;
                let duration = duration.trim_end_matches(',');
                wrk.seconds = parse_time_us(duration).context("run length")? / 1e6;
                have_requests = true;
            }
            ["Non-2xx", "or", "3xx", "responses:", value] => {
                wrk.non_2xx = value.parse().context("Non-2xx count")?;
            }
            ["Socket", "errors:", rest @ ..] => {
                // "connect 0, read 12, write 0, timeout 3"
                for pair in rest.chunks(2) {
                    if let [name, value] = pair {
                        let value: u64 = value
                            .trim_end_matches(',')
                            .parse()
                            .context("socket errors")?;
                        let slot = match *name {
                            "connect" => 0,
                            "read" => 1,
                            "write" => 2,
                            "timeout" => 3,
                            _ => continue,
                        };
                        wrk.socket_errors[slot] = value;
                    }
                }
            }
            _ => {}
        }
    }
    if !have_rps || !have_requests {
        bail!("no \"Requests/sec\" or \"requests in\" line");
    }
    Ok(wrk)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Running 2s test @ http://127.0.0.1:18998/exec/answer
  2 threads and 256 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.23ms    7.77ms 411.71ms   99.75%
    Req/Sec    16.98k     4.02k   22.62k    50.00%
  Latency Distribution
     50%  412.00us
     75%    3.21ms
     90%    4.28ms
     99%    1.30s
  68139 requests in 2.03s, 12.40MB read
  Socket errors: connect 0, read 12, write 1, timeout 3
  Non-2xx or 3xx responses: 51326
Requests/sec:  33607.35
Transfer/sec:      6.12MB
";

    #[test]
    fn parses_a_report_with_errors() {
        let wrk = parse(SAMPLE).expect("parse");
        assert_eq!(wrk.requests, 68139);
        assert!((wrk.seconds - 2.03).abs() < 1e-9);
        assert!((wrk.rps - 33607.35).abs() < 1e-9);
        assert_eq!(wrk.non_2xx, 51326);
        assert_eq!(wrk.socket_errors, [0, 12, 1, 3]);
        assert_eq!(wrk.socket_errors_text(), "0/12/1/3");
        assert!((wrk.p50_us - 412.0).abs() < 1e-9);
        assert!((wrk.p99_us - 1.3e6).abs() < 1e-3);
        assert!((wrk.ok_rps() - (68139.0 - 51326.0) / 2.03).abs() < 1e-6);
    }

    #[test]
    fn parses_a_clean_report() {
        let clean = "  1 threads and 1 connections\n     50%  100.00us\n     99%  200.00us\n  \
                     500 requests in 5.00s, 1.00MB read\nRequests/sec:    100.00\n";
        let wrk = parse(clean).expect("parse");
        assert_eq!(wrk.non_2xx, 0);
        assert_eq!(wrk.socket_errors_text(), "0");
        assert_eq!(wrk.ok_rps(), 100.0);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("unable to connect to 127.0.0.1:1 Connection refused").is_err());
        assert_eq!(parse_time_us("1.00m"), Some(60e6));
        assert_eq!(parse_time_us("7"), None);
    }
}
