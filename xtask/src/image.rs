//! The bootable image: our loader plus the application ELF (hermit kernel + app).

use std::path::{Path, PathBuf};

use anyhow::{Result, ensure};

use crate::qemu::BootEntry;
use crate::util;

/// Paths of the image's parts.
#[derive(Debug, Clone)]
pub struct Image {
    /// Multiboot loader, QEMU's `-kernel` with `--entry multiboot`.
    pub loader: PathBuf,
    /// PVH loader ELF, QEMU's `-kernel` with `--entry pvh` (and Firecracker's kernel).
    pub loader_pvh: PathBuf,
    /// Application ELF (uhyve's kernel argument).
    pub app: PathBuf,
    /// The application ELF compressed (`crate::compress`), QEMU's `-initrd`.
    pub module: PathBuf,
}

impl Image {
    /// The loader QEMU enters through `entry`.
    pub fn loader_for(&self, entry: BootEntry) -> &Path {
        match entry {
            BootEntry::Multiboot => &self.loader,
            BootEntry::Pvh => &self.loader_pvh,
        }
    }
}

/// Builds the guests the image serves from boot (`crates/boot-functions` embeds them).
pub fn build_boot_functions() -> Result<()> {
    crate::guests::build_guests()?;
    crate::faas_guests::build_faas_guests()?;
    Ok(())
}

/// Builds guests, kernel, application and loader (incrementally) and returns the image.
pub fn build() -> Result<Image> {
    build_boot_functions()?;
    let app = crate::app::build_app(true)?;
    let loader = crate::loader::build_loader()?;
    Ok(Image {
        loader,
        loader_pvh: crate::loader::pvh_loader_image_path(),
        module: crate::compress::module_path(&app),
        app,
    })
}

/// The image of an earlier build, without building.
pub fn existing() -> Result<Image> {
    let dir = util::target_dir().join("image");
    let app = dir.join("kernel-app");
    let image = Image {
        loader: dir.join("hermit-loader"),
        loader_pvh: crate::loader::pvh_loader_image_path(),
        module: crate::compress::module_path(&app),
        app,
    };
    for part in [&image.loader, &image.loader_pvh, &image.app, &image.module] {
        ensure!(
            part.exists(),
            "{} is missing: build first (drop --no-build)",
            part.display()
        );
    }
    Ok(image)
}

/// Files of the functions embedded into the image (`crates/boot-functions/functions.txt`), in
/// `target/guests/`.
pub fn boot_function_files() -> Vec<String> {
    let list = util::root().join("crates/boot-functions/functions.txt");
    std::fs::read_to_string(list)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_whitespace().nth(1).map(str::to_string))
        .collect()
}
