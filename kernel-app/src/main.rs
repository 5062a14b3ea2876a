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
use platform::functions::FunctionLimits;

/// Stack of HTTP worker threads: wasm interpretation runs on them.
const WORKER_STACK_BYTES: usize = 1 << 20;

fn key_value(config: &Config) -> Arc<dyn KeyValue> {
    match &config.kv {
        KvBackend::Memory => Arc::new(keyvalue::MemoryStore::new()),
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

/// Connections served at once when `max-connections=` is not given.
///
/// Under hermit each connection holds 128 KiB of kernel socket buffers (64 KiB each way in kernel
/// 0.11), so the RAM bounds them: 128 connections take 16 MiB. Natively the bound is the
/// descriptor limit, raised to its hard limit first.
fn default_max_connections() -> usize {
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
        // Descriptors for the listener, Redis, logs and a margin.
        let descriptors = usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX);
        descriptors.saturating_sub(64).clamp(16, 65_536)
    }
    #[cfg(not(unix))]
    {
        128
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

    let app = Arc::new(
        App::new(AppOptions {
            root: config.root.clone(),
            admin_token: config.admin_token.clone(),
            kv: key_value(&config),
            default_limits: FunctionLimits {
                max_body: config.max_body,
                ..FunctionLimits::default()
            },
        })
        .with_shutdown(exit_soon),
    );
    // Compiling the built-in functions takes a while under emulation: serve meanwhile.
    if let Err(err) = App::deploy_in_background(&app, boot_functions::FUNCTIONS) {
        log::error!("boot functions not deployed: {err}");
    }

    let defaults = ServerConfig::default();
    let server_config = ServerConfig {
        io_threads: config.io_threads.unwrap_or(defaults.io_threads),
        workers: config.workers,
        queue_capacity: config.queue,
        max_connections: config
            .max_connections
            .unwrap_or_else(default_max_connections),
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
    };
    let server = match Server::bind((config.bind, config.port), server_config) {
        Ok(server) => server,
        Err(err) => {
            log::error!("cannot listen on {}:{}: {err}", config.bind, config.port);
            return ExitCode::FAILURE;
        }
    };
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
