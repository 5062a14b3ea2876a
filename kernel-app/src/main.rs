//! The unikernel application (also runs natively on Linux): reads its configuration from the
//! kernel command line (argv natively), logs to the serial console (stdout), deploys the
//! functions built into the image and serves HTTP.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use boot_config::{Config, KvBackend};
use http_front::{Limits, Server, ServerConfig, Timeouts};
use keyvalue::KeyValue;
use platform::app::{App, AppOptions, SharedApp};
use platform::limits::FunctionLimits;

mod machine;

/// Stack of HTTP worker threads: wasm interpretation runs on them.
const WORKER_STACK_BYTES: usize = 1 << 20;

/// The key-value backend; `kv_memory` bounds what the in-memory one holds.
fn key_value(config: &Config, kv_memory: usize) -> Arc<dyn KeyValue> {
    match &config.kv {
        KvBackend::Memory => {
            log::info!("key-value store in memory, at most {kv_memory} bytes");
            Arc::new(keyvalue::MemoryStore::with_limit(kv_memory))
        }
        KvBackend::Redis(info) => Arc::new(kv_redis::RedisStore::with_config(
            kv_redis::RedisConfig::new(info.clone()),
        )),
    }
}

/// Ends the process (under QEMU: powers the VM off with exit code 0) once the answer to the
/// shutdown request had time to leave.
fn exit_soon() {
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(200));
        log::info!("exiting");
        std::process::exit(0);
    });
}

/// The HTTP server's settings from the configuration.
fn server_config(config: &Config, max_connections: usize, buffer_budget: usize) -> ServerConfig {
    let defaults = ServerConfig::default();
    ServerConfig {
        io_threads: config.io_threads.unwrap_or(defaults.io_threads),
        workers: config.workers,
        queue_capacity: config.queue,
        queue_timeout: Duration::from_millis(config.queue_timeout_ms),
        max_connections,
        buffer_budget,
        limits: Limits {
            max_body_bytes: config.max_body,
            ..Limits::default()
        },
        timeouts: Timeouts {
            header: Duration::from_millis(config.header_timeout_ms),
            body: Duration::from_millis(config.body_timeout_ms),
            send: Duration::from_millis(config.send_timeout_ms),
            min_rate: config.min_rate as u64,
            keep_alive: Duration::from_millis(config.keepalive_ms),
            ..Timeouts::default()
        },
        worker_stack_size: Some(WORKER_STACK_BYTES),
        ..defaults
    }
}

fn main() -> ExitCode {
    let config = match Config::from_args(std::env::args().skip(1)) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("kernel-app: bad configuration: {err}");
            return ExitCode::from(2);
        }
    };
    let _ = boot_config::init_logging(config.log);
    log::info!(
        "kernel-app {} starting: {}",
        platform::app::VERSION,
        config.summary()
    );

    // The listener first: under hermit its backlog takes kernel memory, which the memory
    // budget below must not count on.
    let max_connections = config
        .max_connections
        .unwrap_or_else(machine::default_max_connections);
    let buffer_budget = config
        .buffer_budget
        .unwrap_or_else(|| machine::default_buffer_budget(config.max_body));
    let server = match Server::bind(
        (config.bind, config.port),
        server_config(&config, max_connections, buffer_budget),
    ) {
        Ok(server) => server,
        Err(err) => {
            log::error!("cannot listen on {}:{}: {err}", config.bind, config.port);
            return ExitCode::FAILURE;
        }
    };
    // Data kept in memory outlives requests: its bound comes out of the functions' budget.
    let kv_memory = match config.kv {
        KvBackend::Memory => config.kv_memory.unwrap_or_else(machine::default_kv_memory),
        KvBackend::Redis(_) => 0,
    };
    let memory_budget = config
        .memory_budget
        .unwrap_or_else(|| machine::default_budget(max_connections, buffer_budget, kv_memory));
    let app = Arc::new(
        App::new(AppOptions {
            root: config.root.clone(),
            admin_token: config.admin_token.clone(),
            kv: key_value(&config, kv_memory),
            default_limits: FunctionLimits {
                max_body: config.max_body,
                ..FunctionLimits::default()
            },
            memory_budget,
            memory_in_use: machine::in_use,
        })
        .with_shutdown(exit_soon)
        .with_server_stats(server.stats()),
    );
    // With a shared store, other instances deploy too: follow the fleet's changes.
    if matches!(config.kv, KvBackend::Redis(_))
        && let Err(err) = App::start_fleet_sync(&app, platform::fleet::SYNC_INTERVAL)
    {
        log::error!("fleet sync not started: {err}");
    }
    // Compiling the built-in functions takes a while under emulation: serve meanwhile.
    if let Err(err) = App::deploy_in_background(&app, boot_functions::FUNCTIONS) {
        log::error!("boot functions not deployed: {err}");
    }
    log::info!(
        "ready: listening on http://{}:{}/",
        config.bind,
        config.port
    );
    if let Err(err) = server.run(SharedApp(app)) {
        log::error!("server stopped: {err}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
