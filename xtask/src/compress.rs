//! The image's boot module: the application ELF compressed as one LZ4 block behind a small header
//! (`HLZ4`, the ELF's length as a little-endian `u64`), which our loader expands before loading
//! (`loader/src/compressed.rs`). The loader also boots an uncompressed ELF; uhyve needs one.
//!
//! LZ4 because it expands fastest: under TCG every cycle of the loader is emulated. The block is
//! written in liblz4's high-compression mode (level 9: 41 % of the ELF instead of 52 % with the
//! fast mode; the expansion is no slower).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The first bytes of a compressed module (the loader checks them).
pub const MAGIC: &[u8; 4] = b"HLZ4";

/// Where the compressed module of the ELF at `elf` goes: `kernel-app` → `kernel-app.lz4`.
pub fn module_path(elf: &Path) -> PathBuf {
    let mut name = elf.file_name().unwrap_or_default().to_os_string();
    name.push(".lz4");
    elf.with_file_name(name)
}

/// liblz4's high-compression level (1..=12; above 9 it gains under 0.5 % at 2.5 times the time).
const LEVEL: i32 = 9;

/// The compressed form of `elf`.
pub fn compress(elf: &[u8]) -> Result<Vec<u8>> {
    let mode = lz4::block::CompressionMode::HIGHCOMPRESSION(LEVEL);
    let block = lz4::block::compress(elf, Some(mode), false).context("LZ4 compression")?;
    let mut module = Vec::with_capacity(12 + block.len());
    module.extend_from_slice(MAGIC);
    module.extend_from_slice(&(elf.len() as u64).to_le_bytes());
    module.extend_from_slice(&block);
    Ok(module)
}

/// Writes the compressed module of the ELF at `elf` next to it; returns its path.
pub fn write_module(elf: &Path) -> Result<PathBuf> {
    let bytes = fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
    let module = module_path(elf);
    fs::write(&module, compress(&bytes)?)
        .with_context(|| format!("writing {}", module.display()))?;
    Ok(module)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_is_header_then_a_block_that_expands_to_the_elf() {
        let elf: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let module = compress(&elf).expect("compress");
        assert_eq!(&module[..4], MAGIC);
        assert_eq!(module[4..12], (elf.len() as u64).to_le_bytes());
        assert!(module.len() < elf.len() / 2);
        let mut expanded = vec![0; elf.len()];
        let written = lz4_flex::block::decompress_into(&module[12..], &mut expanded);
        assert_eq!(written.ok(), Some(elf.len()));
        assert_eq!(expanded, elf);
    }

    #[test]
    fn module_path_appends_the_suffix() {
        assert_eq!(
            module_path(Path::new("/t/image/kernel-app")),
            Path::new("/t/image/kernel-app.lz4")
        );
    }
}
