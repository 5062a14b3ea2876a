//! The boot module in compressed form: `HLZ4`, the ELF's length as a little-endian `u64`, then the
//! ELF as one LZ4 block (written by `cargo xtask`, see `xtask/src/compress.rs`).
//!
//! The image is under half the size this way; the loader expands it into free RAM before loading.

/// The first bytes of a compressed boot module.
pub const MAGIC: &[u8; 4] = b"HLZ4";

/// Length of the header: magic and the expanded length.
const HEADER_LEN: usize = 12;

/// Shortest ELF (its header).
const MIN_EXPANDED_LEN: u64 = 64;

/// Most an LZ4 block expands: 255 bytes per input byte, plus the last literals.
const MAX_RATIO: u64 = 255;

/// A compressed boot module.
pub struct Compressed<'a> {
    /// Length of the ELF once expanded.
    pub expanded_len: u64,
    block: &'a [u8],
}

/// Why a module could not be expanded.
#[derive(Debug)]
pub enum ExpandError {
    /// The header is cut short.
    TruncatedHeader,
    /// The header names a length no ELF has or this block cannot expand to.
    ImpossibleLength,
    /// The LZ4 block is corrupt or does not expand to the length the header names.
    Corrupt,
}

impl ExpandError {
    /// What to print.
    pub fn message(&self) -> &'static str {
        match self {
            Self::TruncatedHeader => "the compressed boot module's header is cut short",
            Self::ImpossibleLength => {
                "the compressed boot module's header names a length its block cannot expand to"
            }
            Self::Corrupt => {
                "the compressed boot module is corrupt or does not expand to its declared length"
            }
        }
    }
}

impl<'a> Compressed<'a> {
    /// The compressed module in `bytes`, or `None` when `bytes` does not start with [`MAGIC`].
    pub fn parse(bytes: &'a [u8]) -> Option<Result<Self, ExpandError>> {
        if bytes.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
            return None;
        }
        let parsed = bytes
            .get(MAGIC.len()..HEADER_LEN)
            .and_then(|len| <[u8; 8]>::try_from(len).ok())
            .zip(bytes.get(HEADER_LEN..))
            .map(|(len, block)| Self {
                expanded_len: u64::from_le_bytes(len),
                block,
            })
            .ok_or(ExpandError::TruncatedHeader)
            .and_then(|module| {
                let most = (module.block.len() as u64).saturating_mul(MAX_RATIO) + 16;
                if (MIN_EXPANDED_LEN..=most).contains(&module.expanded_len) {
                    Ok(module)
                } else {
                    Err(ExpandError::ImpossibleLength)
                }
            });
        Some(parsed)
    }

    /// Expands the module into `out`, which must be exactly `expanded_len` bytes long.
    pub fn expand_into(&self, out: &mut [u8]) -> Result<(), ExpandError> {
        match lz4_flex::block::decompress_into(self.block, out) {
            Ok(written) if written == out.len() => Ok(()),
            _ => Err(ExpandError::Corrupt),
        }
    }
}
