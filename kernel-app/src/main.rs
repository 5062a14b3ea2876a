//! The unikernel application (also runs natively on Linux): reads its configuration from the
//! kernel command line (argv natively), logs to the serial console (stdout) and serves HTTP.

use std::process::ExitCode;
use std::time::Duration;

use boot_config::Config;
use http_front::{Limits, Server, ServerConfig};

fn main() -> ExitCode {
    let config = match Config::from_args(std::env::args().skip(1)) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("kernel-app: bad configuration: {err}");
            return ExitCode::from(2);
        }
    };
    let _ = boot_config::init_logging(config.log);
    log::info!("kernel-app {} starting: {}", platform::app::VERSION, config.summary());

    let server_config = ServerConfig {
        workers: config.workers,
        queue_capacity: config.queue,
        limits: Limits {
            max_body_bytes: config.max_body,
            read_timeout: Duration::from_millis(config.timeout_ms),
            ..Limits::default()
        },
        ..ServerConfig::default()
    };
    let server = match Server::bind((config.bind, config.port), server_config) {
        Ok(server) => server,
        Err(err) => {
            log::error!("cannot listen on {}:{}: {err}", config.bind, config.port);
            return ExitCode::FAILURE;
        }
    };
    match server.local_addr() {
        Ok(addr) => log::info!("ready: listening on http://{addr}/"),
        Err(_) => log::info!("ready: listening on port {}", config.port),
    }
    if let Err(err) = server.run(platform::app::App::new()) {
        log::error!("server stopped: {err}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
