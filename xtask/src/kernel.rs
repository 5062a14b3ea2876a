//! `cargo xtask kernel`: builds `libhermit.a`, the hermit kernel as a static library that the
//! application links against.
//!
//! The kernel is crates.io's `hermit-kernel` 0.11.0, taken from cargo's registry cache (fetched by
//! `cargo metadata` on `kernel/fetch/Cargo.toml`), copied to `target/hermit-kernel/src-patched` and
//! patched with `kernel/patches/*.patch` for this toolchain. Its smoltcp 0.12.0 is likewise copied
//! to `target/hermit-kernel/smoltcp-patched` and patched with `kernel/patches/smoltcp/*.patch`
//! (the kernel's manifest points there, kernel/patches/0009). The crate ships without the kernel
//! repository's xtask, so the archive post-processing lives here:
//!
//! 1. build the kernel for `x86_64-unknown-none` and `kernel/builtins` (C math functions for
//!    `std`) for `x86_64-unknown-hermit`;
//! 2. keep only the interface global (`sys_*`, `_start`, ... in the kernel; the math and `mem*`
//!    functions in the builtins) and prefix every other defined symbol, so that the kernel's own
//!    `core`, `alloc` and `compiler_builtins` do not clash with the application's `std`;
//! 3. append the builtins to the kernel archive and mark every member `ELFOSABI_STANDALONE`, which
//!    `ld.lld` copies into the application ELF (the hermit loaders check it).
//!
//! Every step is skipped when its inputs have not changed, so a second build takes seconds.
//! `HERMIT_KERNEL_FEATURES` replaces the default kernel features (e.g. `...,rtl8139` for an RTL8139
//! NIC instead of virtio-net); the LLVM tools can be named by `LLVM_NM`, `LLVM_OBJCOPY`, `LLVM_AR`,
//! `LLVM_AS` and `LD_LLD`.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};

use crate::util;

/// The crates.io version of the kernel that `kernel/fetch/Cargo.toml` pins.
const KERNEL_VERSION: &str = "0.11.0";

/// The smoltcp version of the kernel's `Cargo.lock`, also pinned by `kernel/fetch/Cargo.toml`.
const SMOLTCP_VERSION: &str = "0.12.0";

/// Kernel features: PCI and ACPI discovery, SMP, and TCP/DHCPv4 over virtio-net. The `rtl8139`
/// feature would replace the virtio-net driver, so it stays off.
const KERNEL_FEATURES: &str = "pci,acpi,smp,tcp,dhcpv4,fsgsbase";

/// Environment variable that replaces [`KERNEL_FEATURES`] (comma-separated kernel features).
const KERNEL_FEATURES_ENV: &str = "HERMIT_KERNEL_FEATURES";

/// The target the kernel itself is compiled for (soft-float, kernel code model).
const KERNEL_TARGET: &str = "x86_64-unknown-none";

/// The application target; the builtins use its floating point ABI.
const APP_TARGET: &str = "x86_64-unknown-hermit";

/// Kernel symbols that stay global besides the `sys_*` system calls.
const KERNEL_ENTRY_SYMBOLS: &[&str] = &["_start", "__bss_start", "mcount", "runtime_entry"];

/// Memory functions that the application's `std` takes from the kernel archive (from the builtins'
/// `compiler_builtins`, built with `compiler-builtins-mem`).
const MEMORY_SYMBOLS: &[&str] = &["memcpy", "memmove", "memset", "memcmp", "bcmp", "strlen"];

/// `e_ident[EI_OSABI]` and its value for a standalone (embedded) ELF application.
const EI_OSABI: usize = 7;
const ELFOSABI_STANDALONE: u8 = 255;

/// Bump when the archive post-processing changes, to redo it for unchanged inputs.
const ARCHIVE_FORMAT: &str = "archive-v1";

/// LLVM tools used on the archives, resolved once.
struct LlvmTools {
    nm: PathBuf,
    objcopy: PathBuf,
    ar: PathBuf,
    llvm_as: PathBuf,
    ld_lld: PathBuf,
}

impl LlvmTools {
    /// Finds the tools on `PATH`, preferring Debian's versioned names (`llvm-nm-22`, ...).
    fn find() -> Result<Self> {
        Ok(Self {
            nm: find_tool("LLVM_NM", &["llvm-nm-22", "llvm-nm"])?,
            objcopy: find_tool("LLVM_OBJCOPY", &["llvm-objcopy-22", "llvm-objcopy"])?,
            ar: find_tool("LLVM_AR", &["llvm-ar-22", "llvm-ar"])?,
            llvm_as: find_tool("LLVM_AS", &["llvm-as-22", "llvm-as"])?,
            ld_lld: find_tool("LD_LLD", &["ld.lld-22", "ld.lld"])?,
        })
    }
}

/// `llvm-objcopy`, for stripping the image (`app.rs`).
pub fn llvm_objcopy() -> Result<PathBuf> {
    find_tool("LLVM_OBJCOPY", &["llvm-objcopy-22", "llvm-objcopy"])
}

/// `llvm-nm`, for the symbols of the linked application (`bench profile`).
pub fn llvm_nm() -> Result<PathBuf> {
    find_tool("LLVM_NM", &["llvm-nm-22", "llvm-nm"])
}

/// The `ld.lld` linker, for the application link (`app.rs`).
pub fn ld_lld() -> Result<PathBuf> {
    find_tool("LD_LLD", &["ld.lld-22", "ld.lld"])
}

/// Returns `$env_var` if set, else the first of `names` found on `PATH`.
fn find_tool(env_var: &str, names: &[&str]) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path_var) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "none of {names:?} is on PATH (set {env_var} or install Debian's llvm-22 and lld-22 packages)"
    )
}

/// Kernel features of the variant for `-M microvm` and tap devices (deployment forms): virtio-net
/// over virtio-mmio (no `pci`, so no PCI scan) and a static IPv4 configuration from the kernel
/// command line (`-ip`, `-gateway`, `-mask`; no `dhcpv4`, which would ignore them).
pub const MMIO_STATIC_FEATURES: &str = "acpi,smp,tcp,fsgsbase";

/// Builds the kernel archive and returns the directory that holds `libhermit.a`.
pub fn build_kernel() -> Result<PathBuf> {
    let features = std::env::var(KERNEL_FEATURES_ENV).unwrap_or_else(|_| KERNEL_FEATURES.into());
    build_kernel_in(&util::target_dir().join("hermit-kernel"), &features)
}

/// Builds a kernel archive with `features` in `work_dir` (one directory per feature set) and
/// returns the directory that holds `libhermit.a`.
pub fn build_kernel_in(work_dir: &Path, features: &str) -> Result<PathBuf> {
    let tools = LlvmTools::find()?;
    let work_dir = work_dir.to_path_buf();
    let cargo_target_dir = work_dir.join("build");
    fs::create_dir_all(&work_dir)?;
    // Several xtask runs may build at once: the copy, patch and archive steps are not atomic.
    let lock_path = work_dir.join("xtask.lock");
    let lock = fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;

    let source = registry_source("hermit-kernel", KERNEL_VERSION)?;
    let patched = work_dir.join("src-patched");
    prepare_patched_source(
        &source,
        &patched,
        &patch_files(&util::root().join("kernel/patches"))?,
    )?;
    // The kernel's manifest refers to it as `../smoltcp-patched` (kernel/patches/0009).
    let smoltcp = registry_source("smoltcp", SMOLTCP_VERSION)?;
    prepare_patched_source(
        &smoltcp,
        &work_dir.join("smoltcp-patched"),
        &patch_files(&util::root().join("kernel/patches/smoltcp"))?,
    )?;

    let kernel_archive = build_kernel_crate(&patched, &cargo_target_dir, &tools, features)?;
    let builtins_archive = build_builtins(&cargo_target_dir)?;

    let dist_dir = work_dir.join("dist");
    let dist_archive = dist_dir.join("libhermit.a");
    if is_up_to_date(&dist_archive, &[&kernel_archive, &builtins_archive])? {
        eprintln!("kernel: {} is up to date", dist_archive.display());
    } else {
        fs::create_dir_all(&dist_dir)?;
        assemble_archive(&kernel_archive, &builtins_archive, &dist_archive, &tools)?;
        eprintln!("kernel: wrote {}", dist_archive.display());
    }
    Ok(dist_dir)
}

/// The registry source directory of crate `name` `version` (`hermit-kernel` or one of the crates
/// `kernel/fetch/Cargo.toml` pins), fetched by cargo if missing.
fn registry_source(name: &str, version: &str) -> Result<PathBuf> {
    let manifest = util::root().join("kernel/fetch/Cargo.toml");
    let output = util::cargo()
        .args([
            "metadata",
            "--format-version",
            "1",
            "--filter-platform",
            KERNEL_TARGET,
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .context("could not run cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata on {} failed:\n{}",
            manifest.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("cargo metadata printed invalid JSON")?;
    let packages = metadata["packages"]
        .as_array()
        .context("cargo metadata without packages")?;
    let package = packages
        .iter()
        .find(|p| p["name"] == name && p["version"] == version)
        .with_context(|| format!("{name} {version} not in cargo metadata"))?;
    let manifest_path = package["manifest_path"]
        .as_str()
        .with_context(|| format!("{name} without manifest_path"))?;
    Path::new(manifest_path)
        .parent()
        .map(Path::to_path_buf)
        .context("manifest path without parent")
}

/// The patch files in `dir`, sorted by name.
fn patch_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut patches = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?;
    patches.retain(|p| p.extension().is_some_and(|ext| ext == "patch"));
    patches.sort();
    Ok(patches)
}

/// Copies `source` to `patched` and applies `patches`, unless a previous run did so with the same
/// source and patches (recorded in a stamp file next to `patched`).
fn prepare_patched_source(source: &Path, patched: &Path, patches: &[PathBuf]) -> Result<()> {
    let mut stamp = format!("source {}\n", source.display());
    for patch in patches {
        stamp.push_str(&format!("patch {}\n", patch.display()));
        stamp.push_str(&fs::read_to_string(patch)?);
    }
    let stamp_path = patched.with_extension("stamp");
    if patched.is_dir() && fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str()) {
        return Ok(());
    }

    eprintln!(
        "kernel: copying {} to {}",
        source.display(),
        patched.display()
    );
    let _ = fs::remove_file(&stamp_path);
    if patched.exists() {
        fs::remove_dir_all(patched)?;
    }
    copy_dir(source, patched)?;
    for patch in patches {
        eprintln!("kernel: applying {}", patch.display());
        // `git apply` outside any repository (the copy lies inside our work tree): strict, no
        // fuzz, and git is there wherever this repository is.
        util::run(
            Command::new("git")
                .args(["apply", "-p1"])
                .arg(patch)
                .env("GIT_DIR", patched.join(".no-git"))
                .current_dir(patched),
        )?;
    }
    fs::write(&stamp_path, stamp)?;
    Ok(())
}

/// Recursively copies the directory `from` to `to`.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// A cargo command for a nested build: no flags or target directory leak in from the outer cargo.
fn nested_cargo(dir: &Path) -> Command {
    let mut cmd = util::cargo();
    cmd.current_dir(dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET");
    cmd
}

/// Builds the patched kernel crate and returns the path of its `libhermit.a`.
fn build_kernel_crate(
    patched: &Path,
    target_dir: &Path,
    tools: &LlvmTools,
    features: &str,
) -> Result<PathBuf> {
    eprintln!("kernel: building hermit-kernel {KERNEL_VERSION} ({features})");
    run_quietly(
        nested_cargo(patched)
            .args(["build", "--release", "--target", KERNEL_TARGET])
            .args([
                "-Zbuild-std=core,alloc",
                "-Zbuild-std-features=compiler-builtins-mem",
            ])
            .args(["--no-default-features", "--features", features])
            .arg("--target-dir")
            .arg(target_dir)
            // The kernel's own xtask sets this: hermit-os/kernel#200.
            .env("CARGO_ENCODED_RUSTFLAGS", "-Zmutable-noalias=no")
            // Read by the patched build.rs (kernel/patches/0002) for the SMP boot blob.
            .env("HERMIT_LLVM_AS", &tools.llvm_as)
            .env("HERMIT_LD_LLD", &tools.ld_lld),
    )?;
    Ok(target_dir.join(KERNEL_TARGET).join("release/libhermit.a"))
}

/// Runs a cargo build showing only its progress lines: the third-party kernel's warnings (which
/// cargo replays on every build) appear only when the build fails.
fn run_quietly(cmd: &mut Command) -> Result<()> {
    const PROGRESS: &[&str] = &[
        "Compiling",
        "Finished",
        "Blocking",
        "Updating",
        "Locking",
        "Downloading",
        "Downloaded",
    ];
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {cmd:?}"))?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let mut transcript = String::new();
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        if PROGRESS
            .iter()
            .any(|word| line.trim_start().starts_with(word))
        {
            eprintln!("{line}");
        }
        transcript.push_str(&line);
        transcript.push('\n');
    }
    let status = child.wait()?;
    if !status.success() {
        eprint!("{transcript}");
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Builds `kernel/builtins` and returns the path of its static library.
fn build_builtins(target_dir: &Path) -> Result<PathBuf> {
    let dir = util::root().join("kernel/builtins");
    eprintln!("kernel: building hermit-builtins");
    util::run(
        nested_cargo(&dir)
            .args(["build", "--release", "--target", APP_TARGET])
            .args([
                "-Zbuild-std=core",
                "-Zbuild-std-features=compiler-builtins-mem",
            ])
            .arg("--target-dir")
            .arg(target_dir),
    )?;
    Ok(target_dir
        .join(APP_TARGET)
        .join("release/libhermit_builtins.a"))
}

/// Whether `output` exists, was made by this archive format, and is newer than all `inputs`.
fn is_up_to_date(output: &Path, inputs: &[&Path]) -> Result<bool> {
    let format_stamp = output.with_extension("format");
    if fs::read_to_string(&format_stamp).ok().as_deref() != Some(ARCHIVE_FORMAT) {
        return Ok(false);
    }
    let Ok(output_time) = fs::metadata(output).and_then(|m| m.modified()) else {
        return Ok(false);
    };
    for input in inputs {
        let input_time: SystemTime = fs::metadata(input)
            .and_then(|m| m.modified())
            .with_context(|| format!("missing {}", input.display()))?;
        if input_time > output_time {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Post-processes the two archives into `output` (see the module documentation).
fn assemble_archive(
    kernel: &Path,
    builtins: &Path,
    output: &Path,
    tools: &LlvmTools,
) -> Result<()> {
    // A scratch directory per process: two xtask runs may assemble at the same time.
    let scratch = output.with_extension(format!("tmp-{}", std::process::id()));
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let kernel_copy = scratch.join("libhermit.a");
    let builtins_copy = scratch.join("libhermit_builtins.a");
    fs::copy(kernel, &kernel_copy)?;
    fs::copy(builtins, &builtins_copy)?;

    let mut kernel_exports: BTreeSet<String> = member_symbols(tools, &kernel_copy, "hermit-")?
        .into_iter()
        .filter(|s| s.starts_with("sys_"))
        .collect();
    kernel_exports.extend(KERNEL_ENTRY_SYMBOLS.iter().map(|s| s.to_string()));
    if !kernel_exports.contains("sys_write") {
        bail!(
            "no sys_* symbols in {}: not a hermit kernel?",
            kernel.display()
        );
    }
    prefix_symbols(tools, &kernel_copy, "hermit", &kernel_exports)?;

    let mut builtins_exports: BTreeSet<String> =
        member_symbols(tools, &builtins_copy, "hermit_builtins-")?
            .into_iter()
            .filter(|s| !s.starts_with("_R") && !s.starts_with("_ZN"))
            .collect();
    builtins_exports.extend(MEMORY_SYMBOLS.iter().map(|s| s.to_string()));
    prefix_symbols(tools, &builtins_copy, "hermit_builtins", &builtins_exports)?;

    // `L` adds the members of the given archive rather than the archive itself; `s` rewrites the
    // symbol index.
    util::run(
        Command::new(&tools.ar)
            .arg("qL")
            .arg(&kernel_copy)
            .arg(&builtins_copy),
    )?;
    util::run(Command::new(&tools.ar).arg("s").arg(&kernel_copy))?;

    let mut bytes = fs::read(&kernel_copy)?;
    let marked = mark_members_standalone(&mut bytes)?;
    fs::write(&kernel_copy, bytes)?;
    eprintln!(
        "kernel: {} kernel and {} builtin symbols global, {marked} members marked standalone",
        kernel_exports.len(),
        builtins_exports.len()
    );

    fs::rename(&kernel_copy, output)
        .with_context(|| format!("moving the archive to {}", output.display()))?;
    fs::remove_dir_all(&scratch)?;
    fs::write(output.with_extension("format"), ARCHIVE_FORMAT)?;
    Ok(())
}

/// The defined global symbols of the archive members whose names start with `member_prefix`.
fn member_symbols(tools: &LlvmTools, archive: &Path, member_prefix: &str) -> Result<Vec<String>> {
    // `-A --format=posix` prints one `archive[member]: symbol type value size` line per symbol.
    let output = Command::new(&tools.nm)
        .args(["-A", "--defined-only", "--extern-only", "--format=posix"])
        .arg(archive)
        .output()
        .with_context(|| format!("could not run {}", tools.nm.display()))?;
    if !output.status.success() {
        bail!("{} failed on {}", tools.nm.display(), archive.display());
    }
    let listing = String::from_utf8(output.stdout)?;
    let symbols = listing
        .lines()
        .filter_map(|line| {
            let (location, rest) = line.split_once("]: ")?;
            let (_, member) = location.rsplit_once('[')?;
            member
                .starts_with(member_prefix)
                .then(|| rest.split_whitespace().next())
                .flatten()
        })
        .map(String::from)
        .collect();
    Ok(symbols)
}

/// Renames every defined global symbol of `archive` that is not in `keep` to `{prefix}_{symbol}`
/// (definitions and references alike, in all members).
fn prefix_symbols(
    tools: &LlvmTools,
    archive: &Path,
    prefix: &str,
    keep: &BTreeSet<String>,
) -> Result<()> {
    let output = Command::new(&tools.nm)
        .arg("--export-symbols")
        .arg(archive)
        .output()
        .with_context(|| format!("could not run {}", tools.nm.display()))?;
    if !output.status.success() {
        bail!(
            "{} --export-symbols failed on {}",
            tools.nm.display(),
            archive.display()
        );
    }
    let all_symbols = String::from_utf8(output.stdout)?;
    let renames: String = all_symbols
        .lines()
        .filter(|symbol| !symbol.is_empty() && !keep.contains(*symbol))
        .map(|symbol| format!("{symbol} {prefix}_{symbol}\n"))
        .collect();
    let rename_file = archive.with_extension("redefine-syms");
    fs::write(&rename_file, renames)?;
    util::run(
        Command::new(&tools.objcopy)
            .arg(format!("--redefine-syms={}", rename_file.display()))
            .arg(archive),
    )?;
    fs::remove_file(&rename_file)?;
    Ok(())
}

/// Sets `EI_OSABI` to `ELFOSABI_STANDALONE` in every ELF member of the `ar` archive in `bytes`.
/// Returns how many members it marked.
fn mark_members_standalone(bytes: &mut [u8]) -> Result<usize> {
    const MAGIC: &[u8] = b"!<arch>\n";
    const HEADER_LEN: usize = 60;
    if !bytes.starts_with(MAGIC) {
        bail!("not an ar archive");
    }
    let mut offset = MAGIC.len();
    let mut marked = 0;
    while offset + HEADER_LEN <= bytes.len() {
        let header = &bytes[offset..offset + HEADER_LEN];
        let size: usize = std::str::from_utf8(&header[48..58])?
            .trim()
            .parse()
            .context("bad member size in archive header")?;
        let mut data = offset + HEADER_LEN;
        // BSD-style long names (`#1/len`) put the name in front of the data.
        if header.starts_with(b"#1/") {
            let name_len: usize = std::str::from_utf8(&header[3..16])?.trim().parse()?;
            data += name_len;
        }
        let end = offset + HEADER_LEN + size;
        if end > bytes.len() {
            bail!("archive member overruns the file");
        }
        if bytes[data..end].starts_with(b"\x7fELF") && data + EI_OSABI < end {
            bytes[data + EI_OSABI] = ELFOSABI_STANDALONE;
            marked += 1;
        }
        offset = end + (end % 2);
    }
    Ok(marked)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An archive with one ELF member and one non-ELF member (GNU format).
    fn sample_archive() -> Vec<u8> {
        let mut archive = b"!<arch>\n".to_vec();
        for (name, data) in [
            ("a.o/", &b"\x7fELF\x02\x01\x01\x00\x00"[..]),
            ("b.txt/", b"hi"),
        ] {
            archive.extend(
                format!(
                    "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    0,
                    0,
                    0,
                    644,
                    data.len()
                )
                .bytes(),
            );
            archive.extend_from_slice(data);
            if data.len() % 2 == 1 {
                archive.push(b'\n');
            }
        }
        archive
    }

    #[test]
    fn marks_only_elf_members() {
        let mut archive = sample_archive();
        assert_eq!(mark_members_standalone(&mut archive).ok(), Some(1));
        let elf = 8 + 60;
        assert_eq!(archive[elf + EI_OSABI], ELFOSABI_STANDALONE);
        assert!(archive.ends_with(b"hi"));
    }

    #[test]
    fn rejects_non_archives() {
        assert!(mark_members_standalone(&mut b"\x7fELF".to_vec()).is_err());
    }
}
