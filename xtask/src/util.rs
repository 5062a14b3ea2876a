//! Small helpers shared by the xtask commands: paths and process execution.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The repository root (the parent of `xtask/`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the root")
        .to_path_buf()
}

/// The shared cargo target directory (`target/` at the root unless `CARGO_TARGET_DIR` says otherwise).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Runs `cmd` to completion, failing with the command line if it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| redacted(&format!("could not start {cmd:?}")))?;
    if !status.success() {
        bail!("{} failed with {status}", redacted(&format!("{cmd:?}")));
    }
    Ok(())
}

/// A `cargo` command that uses Debian's toolchain with nightly features unlocked
/// (`-Zbuild-std` needs `RUSTC_BOOTSTRAP=1`).
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.env("RUSTC_BOOTSTRAP", "1");
    cmd
}

/// `text` (a command line, or a command's `{:?}`) with its secrets as `<redacted>`: the value of
/// `admin-token=` and the credentials of `kv=scheme://user:password@host`. Our output ends up in
/// log files; the xtask never echoes a secret.
pub fn redacted(text: &str) -> String {
    let word_end = |rest: &str| {
        rest.find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(rest.len())
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = ["admin-token=", "kv="]
        .iter()
        .filter_map(|key| rest.find(key))
        .min()
    {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        let (key, after_key) = from.split_at(from.find('=').map_or(0, |eq| eq + 1));
        let (value, after) = after_key.split_at(word_end(after_key));
        out.push_str(key);
        if key == "admin-token=" {
            out.push_str("<redacted>");
        } else {
            match (value.split_once("://"), value.rsplit_once('@')) {
                (Some((scheme, _)), Some((_, host))) => {
                    out.push_str(&format!("{scheme}://<redacted>@{host}"))
                }
                _ => out.push_str(value),
            }
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_are_redacted() {
        let line = r#""qemu" "-append" "-freq 0 -- admin-token=s3cret kv=redis://u:pw@10.0.2.2:6379/1 log=info""#;
        let shown = super::redacted(line);
        assert!(
            !shown.contains("s3cret") && !shown.contains("pw@"),
            "{shown}"
        );
        assert!(shown.contains("admin-token=<redacted>"), "{shown}");
        assert!(
            shown.contains("kv=redis://<redacted>@10.0.2.2:6379/1 log=info"),
            "{shown}"
        );
        assert_eq!(super::redacted("kv=memory port=1"), "kv=memory port=1");
    }
}
