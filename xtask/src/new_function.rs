//! `cargo xtask new http|wasi NAME [--dir DIR]`: writes a function crate that builds anywhere
//! with this machine's toolchain: Debian's rustc (`rust-toolchain.toml`), `-Zbuild-std` and the
//! `wasm-ld-19` linker (`.cargo/config.toml`), the SDK by absolute path for an HTTP function,
//! Debian's wasi-libc for a WASI command. `cargo xtask build-function DIR` builds it.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::faas_guests::{WASI_LIBC, WASM_LINKER};
use crate::util;

/// The kind of function to scaffold.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewKind {
    /// An HTTP function (routes and handlers, the uniwasm SDK): served at `/NAME/...`.
    Http,
    /// A WASI command (stdin → stdout): served at `/api/NAME/INPUT`.
    Wasi,
}

/// Options of `cargo xtask new`.
#[derive(clap::Args, Debug, Clone)]
pub struct NewArgs {
    /// What kind of function.
    #[arg(value_enum)]
    pub kind: NewKind,
    /// The function's name: its crate name and the name it is deployed under.
    pub name: String,
    /// Directory to create (default: `./NAME`); it must not exist yet or be empty.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Rust's target for each kind.
pub fn target_of(kind: NewKind) -> &'static str {
    match kind {
        NewKind::Http => "wasm32-unknown-unknown",
        NewKind::Wasi => "wasm32-wasip1",
    }
}

/// Writes the crate and returns its directory.
pub fn run(args: &NewArgs) -> Result<PathBuf> {
    check_name(&args.name)?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists() && fs::read_dir(&dir)?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    fs::create_dir_all(dir.join("src")).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let files = match args.kind {
        NewKind::Http => http_files(&args.name, &dir)?,
        NewKind::Wasi => wasi_files(&args.name, &dir),
    };
    let common = [
        (
            "rust-toolchain.toml",
            "# Debian's rustc (./setup.sh installs it), which ships the std sources -Zbuild-std needs.\n\
             [toolchain]\npath = \"/usr\"\n"
                .to_string(),
        ),
        (".gitignore", "/target\n".to_string()),
        (".cargo/config.toml", cargo_config(args.kind)),
    ];
    for (path, text) in files.into_iter().chain(common) {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(dir)
}

/// A function name that is also a crate name: a letter, then letters, digits, `-` or `_`.
fn check_name(name: &str) -> Result<()> {
    let mut bytes = name.bytes();
    let starts_with_letter = bytes.next().is_some_and(|b| b.is_ascii_alphabetic());
    if !starts_with_letter
        || name.len() > 64
        || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        bail!(
            "{name:?} cannot name a function: use a letter, then up to 63 letters, digits, - or _"
        );
    }
    Ok(())
}

fn cargo_config(kind: NewKind) -> String {
    let target = target_of(kind);
    let rustflags = match kind {
        NewKind::Http => String::new(),
        // Debian's wasi-libc instead of a self-contained one (Debian's rustc ships none).
        NewKind::Wasi => format!(
            "rustflags = [\"-C\", \"link-self-contained=no\", \"-L\", \"native={WASI_LIBC}\", \
             \"-C\", \"link-arg={WASI_LIBC}/crt1-command.o\"]\n"
        ),
    };
    format!(
        "# Build with `cargo xtask build-function DIR` (release, then wasm-opt), or by hand with\n\
         # `RUSTC_BOOTSTRAP=1 cargo build --release` (build-std is a nightly feature).\n\
         [build]\ntarget = \"{target}\"\n\n\
         [unstable]\nbuild-std = [\"std\", \"panic_abort\"]\n\n\
         [target.{target}]\nlinker = \"{WASM_LINKER}\"\n{rustflags}"
    )
}

/// The release profile of every function: small code, abort on panic.
const RELEASE_PROFILE: &str = "# A crate of its own, not part of an enclosing workspace.\n[workspace]\n\n\
    [profile.release]\nopt-level = \"s\"\nlto = true\ncodegen-units = 1\npanic = \"abort\"\n\
    strip = true\ndebug = false\n";

fn readme(name: &str, what: &str, dir: &Path, call: &str) -> String {
    let root = util::root();
    format!(
        "# {name}: {what}\n\
         Build: `cargo xtask build-function {dir}` (run in {root}) writes `target/{name}.wasm` here.\n\
         Deploy and call: `cargo xtask deploy {name} {dir} --token TOKEN`, then `{call}`.\n",
        dir = dir.display(),
        root = root.display(),
    )
}

fn http_files(name: &str, dir: &Path) -> Result<Vec<(&'static str, String)>> {
    let sdk = util::root().join("guests/sdk");
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
         [lib]\ncrate-type = [\"cdylib\"]\n\n\
         [dependencies]\nuniwasm-sdk = {{ path = \"{}\" }}\n\n{RELEASE_PROFILE}",
        sdk.display()
    );
    let lib = "//! An HTTP function: `init` registers the routes once, a handler answers each request.\n\
        \n\
        use uniwasm_sdk::prelude::*;\n\
        \n\
        fn init() -> Result<(), HttpError> {\n    \
            // `:name` (or `{name}`) is a route parameter, read with `req.param(\"name\")`.\n    \
            Router::new().get(\"/hello/:name\", \"hello\").serve()\n\
        }\n\
        \n\
        fn hello(req: Request) -> Result<Response, HttpError> {\n    \
            let name = req.param(\"name\").unwrap_or(\"world\");\n    \
            uniwasm_sdk::log::info(&format!(\"greeting {name}\"));\n    \
            Ok(Response::text(200, format!(\"hello, {name}\\n\")))\n\
        }\n\
        \n\
        uniwasm_sdk::http_function!(init; hello);\n";
    // The SDK workspace's lock file pins wit-bindgen and friends to the versions this machine
    // already has; cargo drops the entries this crate does not use.
    let lock = fs::read_to_string(util::root().join("guests/Cargo.lock"))
        .context("reading guests/Cargo.lock")?;
    Ok(vec![
        ("Cargo.toml", manifest),
        ("Cargo.lock", lock),
        ("src/lib.rs", lib.to_string()),
        (
            "README.md",
            readme(
                name,
                "an HTTP function",
                dir,
                &format!("curl http://127.0.0.1:8080/{name}/hello/world"),
            ),
        ),
    ])
}

fn wasi_files(name: &str, dir: &Path) -> Vec<(&'static str, String)> {
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
         {RELEASE_PROFILE}"
    );
    let main = "//! A WASI command: the request body (or the path after `/api/NAME/`) arrives on stdin,\n\
        //! stdout is the response body, stderr goes to the server log; a non-zero exit is a 500.\n\
        \n\
        use std::io::Read;\n\
        \n\
        fn main() {\n    \
            let mut input = String::new();\n    \
            if let Err(error) = std::io::stdin().read_to_string(&mut input) {\n        \
                eprintln!(\"cannot read stdin: {error}\");\n        \
                std::process::exit(1);\n    \
            }\n    \
            eprintln!(\"read {} bytes\", input.len());\n    \
            println!(\"hello, {}\", input.trim());\n\
        }\n";
    vec![
        ("Cargo.toml", manifest),
        ("src/main.rs", main.to_string()),
        (
            "README.md",
            readme(
                name,
                "a WASI command (stdin → stdout)",
                dir,
                &format!("curl http://127.0.0.1:8080/api/{name}/world"),
            ),
        ),
    ]
}
