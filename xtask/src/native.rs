//! The server as a Linux process: the same `kernel-app` code built for the host.

use std::path::PathBuf;

use anyhow::Result;

use crate::util;

/// Builds the native server (release, with the boot functions) and returns the binary's path.
pub fn build_server() -> Result<PathBuf> {
    crate::image::build_boot_functions()?;
    util::run(util::cargo().args(["build", "--quiet", "--release", "-p", "kernel-app"]))?;
    Ok(util::target_dir().join("release").join("kernel-app"))
}

/// The application's part of a kernel command line: the words after `--` if there is one,
/// otherwise every word.
pub fn app_args(append: &str) -> Vec<String> {
    let words: Vec<&str> = append.split_whitespace().collect();
    let app = match words.iter().position(|w| *w == "--") {
        Some(i) => &words[i + 1..],
        None => &words[..],
    };
    app.iter().map(|w| w.to_string()).collect()
}
