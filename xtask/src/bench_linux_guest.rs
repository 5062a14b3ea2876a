//! The Linux guest of `cargo xtask bench vm-compare`: Debian's kernel and a tiny initrd that runs
//! OUR native server build (target/release/kernel-app), so that the image can be compared with
//! the same program on Linux under identical QEMU settings.
//!
//! Everything comes from Debian packages the bench downloads itself with `apt-get download`
//! (the `linux-image-6.x` package `linux-image-amd64` depends on, and `busybox-static`), unpacked
//! with `dpkg-deb -x` and cached in `target/linux-guest/`:
//!
//! - `vmlinuz`: the package's kernel;
//! - `initrd.gz`: a gzip'd newc cpio (written here) with busybox, an `/init` script, the virtio
//!   modules the NIC needs (resolved through their `depends=` modinfo, skipping built-ins,
//!   decompressed on the host), the server binary with its shared libraries and loader (`ldd`).
//!
//! `/init` mounts proc/sys/dev, loads the modules, configures eth0 as QEMU's user network expects
//! (10.0.2.15/24, gateway 10.0.2.2) and runs the server with the words after `--` on the kernel
//! command line; when the server exits, the VM powers off.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};

/// Modules the guest NIC (virtio-net-pci) needs; their dependencies are added.
const NIC_MODULES: [&str; 2] = ["virtio_pci", "virtio_net"];

/// Where the server binary lives inside the guest.
const GUEST_SERVER: &str = "app/kernel-app";

/// The guest's `/init` (busybox sh). Its arguments are the words after `--` on the kernel
/// command line: the server's own `key=value` words.
const INIT_SCRIPT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do
  insmod /modules/$m.ko || echo "init: insmod $m failed"
done
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
ip route add default via 10.0.2.2
echo "init: clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
echo "init: $(uname -r), eth0 up after $i waits; starting /app/kernel-app $*"
/app/kernel-app "$@"
echo "init: kernel-app exited with status $?"
poweroff -f
"#;

/// The kernel and initrd of the Linux guest.
pub(crate) struct LinuxGuest {
    /// Debian's kernel image.
    pub vmlinuz: PathBuf,
    /// Our initrd with the server.
    pub initrd: PathBuf,
    /// Kernel release (e.g. `6.1.0-57-amd64`).
    pub release: String,
    /// Modules `/init` loads, in order.
    pub modules: Vec<String>,
    /// The `.deb` files used.
    pub packages: Vec<String>,
}

/// Downloads (once) and unpacks the packages, writes the initrd when the server binary or the
/// recipe changed; the guest's files.
pub(crate) fn prepare(server: &Path) -> Result<LinuxGuest> {
    let dir = crate::util::target_dir().join("linux-guest");
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs)?;

    let kernel_deb = cached_deb(&debs, |name| {
        name.starts_with("linux-image-6") || name.starts_with("linux-image-7")
    })
    .map_or_else(|| download(&debs, &kernel_package()?), Ok)?;
    let busybox_deb = cached_deb(&debs, |name| name.starts_with("busybox-static_"))
        .map_or_else(|| download(&debs, "busybox-static"), Ok)?;
    let kernel_root = unpack(&kernel_deb, &dir.join("kernel-root"))?;
    let busybox_root = unpack(&busybox_deb, &dir.join("busybox-root"))?;

    let modules_dir = kernel_root.join("lib/modules");
    let release = only_entry(&modules_dir)?;
    let vmlinuz = kernel_root.join(format!("boot/vmlinuz-{release}"));
    ensure!(
        vmlinuz.is_file(),
        "{} missing in {}",
        vmlinuz.display(),
        kernel_deb.display()
    );
    let modules = resolve_modules(&modules_dir.join(&release))?;
    let libraries = shared_libraries(server)?;

    let initrd = dir.join("initrd.gz");
    let packages: Vec<String> = [&kernel_deb, &busybox_deb]
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let meta = std::fs::metadata(server)
        .with_context(|| format!("{} (build it first)", server.display()))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default();
    let stamp = format!(
        "{INIT_SCRIPT}\n{} {} {}\n{packages:?}\n{:?}\n{libraries:?}\n",
        server.display(),
        meta.len(),
        mtime.as_nanos(),
        modules.iter().map(|m| &m.0).collect::<Vec<_>>()
    );
    let stamp_file = dir.join("initrd.stamp");
    if !initrd.is_file() || std::fs::read_to_string(&stamp_file).ok().as_deref() != Some(&stamp) {
        let mut cpio = Cpio::default();
        cpio.file("init", 0o755, INIT_SCRIPT.as_bytes());
        cpio.file(
            "bin/busybox",
            0o755,
            &std::fs::read(busybox_root.join("bin/busybox"))?,
        );
        for d in ["proc", "sys", "dev", "tmp", "etc", "root"] {
            cpio.dir(d);
        }
        cpio.char_device("dev/console", 5, 1);
        let mut order = String::new();
        for (name, path) in &modules {
            cpio.file(&format!("modules/{name}.ko"), 0o644, &read_module(path)?);
            order.push_str(name);
            order.push('\n');
        }
        cpio.file("modules/order", 0o644, order.as_bytes());
        cpio.file(GUEST_SERVER, 0o755, &std::fs::read(server)?);
        for lib in &libraries {
            // Read through symlinks; store the file under the path the binary asks for.
            let bytes = std::fs::read(lib).with_context(|| format!("read {}", lib.display()))?;
            cpio.file(lib.to_string_lossy().trim_start_matches('/'), 0o755, &bytes);
        }
        let raw = dir.join("initrd.cpio");
        std::fs::write(&raw, cpio.finish())?;
        let out = File::create(&initrd)?;
        let status = Command::new("gzip")
            .args(["-9", "-n", "-c"])
            .arg(&raw)
            .stdout(out)
            .status()
            .context("run gzip")?;
        ensure!(status.success(), "gzip failed with {status}");
        std::fs::remove_file(&raw)?;
        std::fs::write(&stamp_file, &stamp)?;
    }
    Ok(LinuxGuest {
        vmlinuz,
        initrd,
        release,
        modules: modules.into_iter().map(|m| m.0).collect(),
        packages,
    })
}

/// The `linux-image-6.x-...` package the `linux-image-amd64` metapackage depends on.
fn kernel_package() -> Result<String> {
    let output = Command::new("apt-cache")
        .args(["depends", "linux-image-amd64"])
        .output()
        .context("run apt-cache")?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .with_context(|| {
            format!("no linux-image dependency in `apt-cache depends linux-image-amd64`: {text}")
        })
}

/// A `.deb` in `debs` whose file name satisfies `wanted`.
fn cached_deb(debs: &Path, wanted: impl Fn(&str) -> bool) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(debs)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.ends_with(".deb") && wanted(&name)
        })
        .collect();
    found.sort();
    found.pop()
}

/// `apt-get download package` into `debs` (after `apt-get update` if the first try fails).
fn download(debs: &Path, package: &str) -> Result<PathBuf> {
    println!("linux guest: apt-get download {package}");
    let attempt = || {
        Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(debs)
            .stdin(Stdio::null())
            .output()
    };
    let mut output = attempt().context("run apt-get")?;
    if !output.status.success() {
        println!("linux guest: apt-get download failed; apt-get update and retry");
        let _ = Command::new("apt-get")
            .args(["update", "-qq"])
            .stdin(Stdio::null())
            .status();
        output = attempt().context("run apt-get")?;
    }
    if !output.status.success() {
        bail!(
            "apt-get download {package} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let prefix = format!("{package}_");
    cached_deb(debs, |name| name.starts_with(&prefix))
        .with_context(|| format!("{package}: no .deb after download"))
}

/// `dpkg-deb -x deb into` unless already done for this very package; `into`.
fn unpack(deb: &Path, into: &Path) -> Result<PathBuf> {
    let marker = into.join(".unpacked-from");
    let name = deb
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(name.as_str()) {
        return Ok(into.to_path_buf());
    }
    if into.exists() {
        std::fs::remove_dir_all(into)?;
    }
    crate::util::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(into))?;
    std::fs::write(&marker, &name)?;
    Ok(into.to_path_buf())
}

/// The single entry of a directory (the kernel release under lib/modules).
fn only_entry(dir: &Path) -> Result<String> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one kernel release in {}, found {names:?}",
            dir.display()
        ),
    }
}

/// A module's name from its file name: `virtio-net.ko.xz` → `virtio_net`.
fn module_name(file: &str) -> Option<String> {
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))?;
    Some(stem.replace('-', "_"))
}

/// Every `.ko*` file below `dir`.
fn module_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            module_files(&path, out)?;
        } else if module_name(&entry.file_name().to_string_lossy()).is_some() {
            out.push(path);
        }
    }
    Ok(())
}

/// [`NIC_MODULES`] with their dependencies, dependencies first, leaving out built-in ones;
/// `(name, file)` pairs.
fn resolve_modules(release_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let builtin: BTreeSet<String> = std::fs::read_to_string(release_dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| module_name(l.rsplit('/').next()?))
        .collect();
    let mut files = Vec::new();
    module_files(&release_dir.join("kernel"), &mut files)?;
    let find = |name: &str| -> Option<PathBuf> {
        files
            .iter()
            .find(|p| {
                module_name(&p.file_name().unwrap_or_default().to_string_lossy()).as_deref()
                    == Some(name)
            })
            .cloned()
    };
    let mut order: Vec<(String, PathBuf)> = Vec::new();
    let mut visiting = BTreeSet::new();
    fn visit(
        name: &str,
        find: &dyn Fn(&str) -> Option<PathBuf>,
        builtin: &BTreeSet<String>,
        visiting: &mut BTreeSet<String>,
        order: &mut Vec<(String, PathBuf)>,
    ) -> Result<()> {
        if builtin.contains(name)
            || order.iter().any(|(n, _)| n == name)
            || !visiting.insert(name.to_string())
        {
            return Ok(());
        }
        let path = find(name)
            .with_context(|| format!("module {name} is neither built in nor in the package"))?;
        for dep in module_depends(&read_module(&path)?) {
            visit(&dep, find, builtin, visiting, order)?;
        }
        order.push((name.to_string(), path));
        Ok(())
    }
    for name in NIC_MODULES {
        visit(name, &find, &builtin, &mut visiting, &mut order)?;
    }
    Ok(order)
}

/// A module's bytes, decompressed on the host when the package compresses modules (busybox's
/// insmod takes plain `.ko` files).
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else if name.ends_with(".gz") {
        "gzip"
    } else {
        return std::fs::read(path).with_context(|| format!("read {name}"));
    };
    let output = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("run {tool}"))?;
    ensure!(output.status.success(), "{tool} -dc {name} failed");
    Ok(output.stdout)
}

/// The `depends=` list of a module's `.modinfo` strings.
fn module_depends(ko: &[u8]) -> Vec<String> {
    let key = b"depends=";
    let Some(at) = ko.windows(key.len()).position(|w| w == key) else {
        return Vec::new();
    };
    let rest = &ko[at + key.len()..];
    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .map(|d| d.trim().replace('-', "_"))
        .filter(|d| !d.is_empty())
        .collect()
}

/// The shared libraries and the loader `ldd` lists for `binary` (absolute paths).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .context("run ldd")?;
    ensure!(output.status.success(), "ldd {} failed", binary.display());
    let text = String::from_utf8_lossy(&output.stdout);
    let mut libs: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let path = line.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect();
    libs.sort();
    libs.dedup();
    ensure!(
        !libs.is_empty(),
        "ldd found no libraries for {}: {text}",
        binary.display()
    );
    Ok(libs)
}

/// A newc ("070701") cpio archive, as the kernel unpacks initramfs; parents come first.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    inode: u32,
    dirs: BTreeSet<String>,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        if let Some((parent, _)) = name.rsplit_once('/') {
            self.dir(parent);
        }
        self.inode += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            self.inode,
            mode,
            0,
            0,
            nlink,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for field in fields {
            self.out
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        if !self.dirs.contains(name) {
            self.dirs.insert(name.to_string());
            self.entry(name, 0o040755, &[], (0, 0));
        }
    }

    fn file(&mut self, name: &str, permissions: u32, data: &[u8]) {
        self.entry(name, 0o100000 | permissions, data, (0, 0));
    }

    fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, &[], (major, minor));
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        while !self.out.len().is_multiple_of(512) {
            self.out.push(0);
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_and_depends() {
        assert_eq!(
            module_name("virtio-net.ko.xz").as_deref(),
            Some("virtio_net")
        );
        assert_eq!(module_name("failover.ko").as_deref(), Some("failover"));
        assert_eq!(module_name("modules.order"), None);
        let ko = b"\x7fELF...\0license=GPL\0depends=virtio_ring,net-failover\0name=virtio_net\0";
        assert_eq!(module_depends(ko), ["virtio_ring", "net_failover"]);
        assert!(module_depends(b"\0depends=\0").is_empty());
    }

    #[test]
    fn cpio_entries_are_aligned_and_parents_first() {
        let mut cpio = Cpio::default();
        cpio.file("a/b/c", 0o644, b"hello");
        let out = cpio.finish();
        assert_eq!(out.len() % 512, 0);
        let text = String::from_utf8_lossy(&out);
        let (a, ab, abc) = (text.find("a\0"), text.find("a/b\0"), text.find("a/b/c\0"));
        assert!(a < ab && ab < abc, "{a:?} {ab:?} {abc:?}");
        assert!(text.starts_with("070701"));
        assert!(text.contains("TRAILER!!!"));
        // header (110) + "a\0" = 112: the next header starts 4-aligned
        assert_eq!(&out[112..118], b"070701");
    }
}
