//! A minimal `log` backend: one line per record on stdout (the serial console under hermit).

use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use log::{LevelFilter, Log, Metadata, Record, SetLoggerError};

static START: OnceLock<Instant> = OnceLock::new();
static LOGGER: ConsoleLogger = ConsoleLogger;

struct ConsoleLogger;

/// Time since logging was initialised (or since the first call to this function).
pub fn uptime() -> Duration {
    START.get_or_init(Instant::now).elapsed()
}

/// Installs the console logger with `level` as the maximum level.
///
/// Lines look like `[  0.123456 INFO  http_front::server] message`, the number being
/// [`uptime`] in seconds. Fails if a logger is already installed.
pub fn init_logging(level: LevelFilter) -> Result<(), SetLoggerError> {
    START.get_or_init(Instant::now);
    log::set_logger(&LOGGER)?;
    log::set_max_level(level);
    Ok(())
}

/// Formats one log line (without writing it).
fn format_line(
    uptime: Duration,
    level: log::Level,
    target: &str,
    message: &std::fmt::Arguments<'_>,
) -> String {
    format!(
        "[{:>3}.{:06} {:<5} {}] {}\n",
        uptime.as_secs(),
        uptime.subsec_micros(),
        level,
        target,
        message
    )
}

impl Log for ConsoleLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_line(uptime(), record.level(), record.target(), record.args());
        // One write per line so lines from different threads do not interleave.
        let _ = std::io::stdout().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stdout().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format() {
        let line = format_line(
            Duration::from_micros(1_234_567),
            log::Level::Warn,
            "http_front::server",
            &format_args!("hello {}", 42),
        );
        assert_eq!(line, "[  1.234567 WARN  http_front::server] hello 42\n");
        let line = format_line(
            Duration::from_secs(12_345),
            log::Level::Info,
            "app",
            &format_args!("x"),
        );
        assert_eq!(line, "[12345.000000 INFO  app] x\n");
    }

    #[test]
    fn init_sets_the_level_once() {
        assert!(init_logging(LevelFilter::Debug).is_ok());
        assert_eq!(log::max_level(), LevelFilter::Debug);
        log::debug!("logging from a test");
        assert!(init_logging(LevelFilter::Info).is_err());
        assert!(uptime() > Duration::ZERO);
    }
}
