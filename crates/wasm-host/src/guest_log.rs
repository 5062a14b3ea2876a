//! The host side of the `log` import: a function's messages reach the server's log, tagged with
//! its name and bounded per request; a panic stops the run with the panic's message.

use sandbox::{Fault, GUEST_TEXT_MAX, Guest, clip};

use crate::bindings::log::{Host, Level};
use crate::resources::HostState;

/// Bytes of messages one run may write to the log (each message counts at least
/// [`MESSAGE_MIN_COST`], so empty messages are bounded too).
pub const LOG_BYTES_PER_RUN: usize = 4 * GUEST_TEXT_MAX;

/// What a message costs against [`LOG_BYTES_PER_RUN`] at least.
const MESSAGE_MIN_COST: usize = 64;

/// What one run has written to the log.
#[derive(Debug, Default)]
pub(crate) struct RunLog {
    /// The function's name, the tag of every line.
    pub(crate) function: String,
    /// Bytes counted against [`LOG_BYTES_PER_RUN`].
    written: usize,
    /// Whether the line saying that messages were dropped was written.
    dropped: bool,
}

impl RunLog {
    pub(crate) fn new(function: &str) -> Self {
        Self {
            function: function.to_string(),
            ..Self::default()
        }
    }
}

impl Host for Guest<HostState> {
    fn write(&mut self, level: Level, message: String) -> Result<(), Fault> {
        let run = &mut self.host.log;
        let cost = message.len().max(MESSAGE_MIN_COST);
        if run.written.saturating_add(cost) > LOG_BYTES_PER_RUN {
            if !run.dropped {
                run.dropped = true;
                log::warn!(
                    target: "guest",
                    "{}: more than {LOG_BYTES_PER_RUN} bytes of log messages in one request; the rest are dropped",
                    run.function
                );
            }
            return Ok(());
        }
        run.written += cost;
        let level = match level {
            Level::Debug => log::Level::Debug,
            Level::Info => log::Level::Info,
            Level::Warn => log::Level::Warn,
            Level::Error => log::Level::Error,
        };
        log::log!(target: "guest", level, "{}: {}", run.function, clip(&message, GUEST_TEXT_MAX));
        Ok(())
    }

    fn panic(&mut self, message: String) -> Result<(), Fault> {
        // The platform logs the failed request, with this message, once.
        Err(self.quota.fail(Fault::Trap(format!(
            "panicked: {}",
            clip(&message, GUEST_TEXT_MAX)
        ))))
    }
}
