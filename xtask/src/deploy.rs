//! `cargo xtask deploy NAME FILE`: deploys a `.wasm` or `.wat` file to a running server through
//! its admin API (`PUT /_admin/functions/NAME`).

use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use harness::http;

/// Options of `cargo xtask deploy`.
#[derive(clap::Args, Debug, Clone)]
pub struct DeployArgs {
    /// Function name (its path prefix).
    pub name: String,
    /// The `.wasm` binary or `.wat` text to deploy, or a function crate's directory (built
    /// first, as `cargo xtask build-function DIR` does).
    pub file: PathBuf,
    /// Port of the server on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Admin token (the server's `admin-token=`); default: `$ADMIN_TOKEN`.
    #[arg(long, env = "ADMIN_TOKEN")]
    pub token: String,
    /// Limits as a query string, e.g. `fuel=1000000&timeout-ms=500&max-memory=1048576`.
    #[arg(long)]
    pub limits: Option<String>,
}

/// Sends the deploy and prints the server's answer; fails unless it is 200 or 201.
pub fn run(args: &DeployArgs) -> Result<()> {
    let file = if args.file.is_dir() {
        crate::build_function::build(&args.file, None)?
    } else {
        args.file.clone()
    };
    let body = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let query = args
        .limits
        .as_deref()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let (status, text) = put_function(args.port, &args.name, &query, &args.token, &body)?;
    println!("{status} {text}");
    if status != 200 && status != 201 {
        bail!("deploy of {} failed with {status}", args.name);
    }
    Ok(())
}

/// `PUT /_admin/functions/{name}{query}` with `body` on 127.0.0.1:`port`; the status and the
/// answer's body.
pub fn put_function(
    port: u16,
    name: &str,
    query: &str,
    token: &str,
    body: &[u8],
) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let path = format!("/_admin/functions/{name}{query}");
    let authorization = format!("Bearer {token}");
    let request = http::request_bytes("PUT", &path, &[("Authorization", &authorization)], body);
    let response = http::send(&mut stream, &request)?;
    Ok((response.status, response.text()))
}
