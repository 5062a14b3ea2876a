//! Loading the application ELF (hermit kernel + app, usually a static PIE): copy the `PT_LOAD`
//! segments, zero their tails, apply the dynamic relocations, and report entry point and TLS.

use crate::boot_info::TlsInfo;

const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_TLS: u32 = 7;
const DT_NULL: u64 = 0;
const DT_RELA: u64 = 7;
const DT_RELASZ: u64 = 8;
const DT_RELAENT: u64 = 9;
const DT_SYMTAB: u64 = 6;
const DT_RELRSZ: u64 = 35;
const DT_RELR: u64 = 36;
const R_X86_64_NONE: u32 = 0;
const R_X86_64_64: u32 = 1;
const R_X86_64_GLOB_DAT: u32 = 6;
const R_X86_64_RELATIVE: u32 = 8;
const SYMBOL_SIZE: u64 = 24;

/// Why the application ELF cannot be loaded.
pub type ElfError = &'static str;

fn read<const N: usize>(bytes: &[u8], offset: usize) -> Result<[u8; N], ElfError> {
    bytes
        .get(offset..offset + N)
        .and_then(|slice| slice.try_into().ok())
        .ok_or("ELF truncated")
}

fn u16_at(bytes: &[u8], offset: usize) -> Result<u16, ElfError> {
    Ok(u16::from_le_bytes(read::<2>(bytes, offset)?))
}

fn u32_at(bytes: &[u8], offset: usize) -> Result<u32, ElfError> {
    Ok(u32::from_le_bytes(read::<4>(bytes, offset)?))
}

fn u64_at(bytes: &[u8], offset: usize) -> Result<u64, ElfError> {
    Ok(u64::from_le_bytes(read::<8>(bytes, offset)?))
}

/// One program header (the fields the loader uses).
#[derive(Clone, Copy)]
struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

/// A checked application ELF.
pub struct KernelElf<'a> {
    bytes: &'a [u8],
    relocatable: bool,
    entry: u64,
    phoff: usize,
    phentsize: usize,
    phnum: usize,
    /// Lowest `p_vaddr` of a `PT_LOAD` segment.
    pub vaddr_start: u64,
    /// Highest `p_vaddr + p_memsz` of a `PT_LOAD` segment.
    pub vaddr_end: u64,
}

/// Where the kernel ended up.
pub struct LoadedKernel {
    /// Absolute entry point.
    pub entry: u64,
    /// Absolute address range of the image.
    pub image: core::ops::Range<u64>,
    /// TLS image, if any.
    pub tls_info: Option<TlsInfo>,
    /// Number of relocations applied.
    pub relocations: u64,
}

impl<'a> KernelElf<'a> {
    /// Checks the header and finds the extent of the loadable segments.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ElfError> {
        if bytes.get(..4) != Some(b"\x7fELF".as_slice()) {
            return Err("module is not an ELF file");
        }
        if bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
            return Err("ELF is not 64-bit little endian");
        }
        if u16_at(bytes, 18)? != EM_X86_64 {
            return Err("ELF is not for x86_64");
        }
        let relocatable = match u16_at(bytes, 16)? {
            ET_DYN => true,
            ET_EXEC => false,
            _ => return Err("ELF is neither an executable nor a PIE"),
        };
        let mut elf = Self {
            bytes,
            relocatable,
            entry: u64_at(bytes, 24)?,
            phoff: u64_at(bytes, 32)? as usize,
            phentsize: usize::from(u16_at(bytes, 54)?),
            phnum: usize::from(u16_at(bytes, 56)?),
            vaddr_start: u64::MAX,
            vaddr_end: 0,
        };
        if elf.phentsize < 56 {
            return Err("ELF program headers too small");
        }
        for index in 0..elf.phnum {
            let segment = elf.segment(index)?;
            if segment.kind != PT_LOAD {
                continue;
            }
            if segment.filesz > segment.memsz
                || segment
                    .offset
                    .checked_add(segment.filesz)
                    .is_none_or(|end| end > bytes.len() as u64)
            {
                return Err("ELF segment outside the file");
            }
            elf.vaddr_start = elf.vaddr_start.min(segment.vaddr);
            elf.vaddr_end = elf.vaddr_end.max(segment.vaddr + segment.memsz);
        }
        if elf.vaddr_end == 0 {
            return Err("ELF has no loadable segment");
        }
        Ok(elf)
    }

    /// Whether the image can be placed anywhere (PIE).
    pub fn is_relocatable(&self) -> bool {
        self.relocatable
    }

    fn segment(&self, index: usize) -> Result<Segment, ElfError> {
        let at = self.phoff + index * self.phentsize;
        Ok(Segment {
            kind: u32_at(self.bytes, at)?,
            offset: u64_at(self.bytes, at + 8)?,
            vaddr: u64_at(self.bytes, at + 16)?,
            filesz: u64_at(self.bytes, at + 32)?,
            memsz: u64_at(self.bytes, at + 40)?,
            align: u64_at(self.bytes, at + 48)?,
        })
    }

    /// Copies the image so that virtual address `v` lands at `bias + v` and relocates it.
    ///
    /// # Safety
    /// `bias + vaddr_start .. bias + vaddr_end` must be free, identity-mapped RAM that does not
    /// overlap the ELF bytes.
    pub unsafe fn load(&self, bias: u64) -> Result<LoadedKernel, ElfError> {
        let mut tls_info = None;
        let mut dynamic = None;
        for index in 0..self.phnum {
            let segment = self.segment(index)?;
            match segment.kind {
                PT_LOAD => {
                    let destination = (bias + segment.vaddr) as *mut u8;
                    let source = &self.bytes[segment.offset as usize..][..segment.filesz as usize];
                    // SAFETY: the caller guarantees the destination range; sizes were checked.
                    unsafe {
                        core::ptr::copy_nonoverlapping(source.as_ptr(), destination, source.len());
                        core::ptr::write_bytes(
                            destination.add(source.len()),
                            0,
                            (segment.memsz - segment.filesz) as usize,
                        );
                    }
                }
                PT_TLS => {
                    tls_info = Some(TlsInfo {
                        start: bias + segment.vaddr,
                        filesz: segment.filesz,
                        memsz: segment.memsz,
                        align: segment.align,
                    });
                }
                PT_DYNAMIC => dynamic = Some(segment),
                _ => {}
            }
        }
        let relocations = match dynamic {
            Some(dynamic) if self.relocatable => {
                // SAFETY: the image was just loaded at `bias`.
                unsafe { relocate(bias, bias + dynamic.vaddr, dynamic.memsz, self.vaddr_end)? }
            }
            _ => 0,
        };
        Ok(LoadedKernel {
            entry: bias + self.entry,
            image: bias + self.vaddr_start..bias + self.vaddr_end,
            tls_info,
            relocations,
        })
    }
}

/// Applies `DT_RELA` and `DT_RELR` relocations of an image loaded with `bias`.
///
/// # Safety
/// The image must be loaded; `dynamic_address..+dynamic_size` is its `PT_DYNAMIC`.
unsafe fn relocate(
    bias: u64,
    dynamic_address: u64,
    dynamic_size: u64,
    vaddr_end: u64,
) -> Result<u64, ElfError> {
    let (mut rela, mut rela_size, mut rela_entry, mut symtab, mut relr, mut relr_size) =
        (0, 0, 24, 0, 0, 0);
    let mut entry = dynamic_address;
    while entry + 16 <= dynamic_address + dynamic_size {
        // SAFETY: inside the loaded PT_DYNAMIC.
        let (tag, value) = unsafe { (*(entry as *const u64), *((entry + 8) as *const u64)) };
        match tag {
            DT_NULL => break,
            DT_RELA => rela = value,
            DT_RELASZ => rela_size = value,
            DT_RELAENT => rela_entry = value,
            DT_SYMTAB => symtab = value,
            DT_RELR => relr = value,
            DT_RELRSZ => relr_size = value,
            _ => {}
        }
        entry += 16;
    }
    if rela_entry < 24 || rela + rela_size > vaddr_end || relr + relr_size > vaddr_end {
        return Err("ELF dynamic section is inconsistent");
    }
    let target = |offset: u64| -> Result<*mut u64, ElfError> {
        if offset + 8 > vaddr_end {
            return Err("ELF relocation outside the image");
        }
        Ok((bias + offset) as *mut u64)
    };
    let mut count = 0;
    let mut at = bias + rela;
    while at < bias + rela + rela_size {
        // SAFETY: inside the loaded image (checked above).
        let (offset, info, addend) = unsafe {
            (
                *(at as *const u64),
                *((at + 8) as *const u64),
                *((at + 16) as *const i64),
            )
        };
        let symbol_value = || -> u64 {
            let symbol = bias + symtab + (info >> 32) * SYMBOL_SIZE;
            // SAFETY: symbol table entries of the loaded image.
            let (shndx, value) =
                unsafe { (*((symbol + 6) as *const u16), *((symbol + 8) as *const u64)) };
            // Undefined (weak) symbols resolve to 0.
            if shndx == 0 { 0 } else { bias + value }
        };
        let value = match info as u32 {
            R_X86_64_NONE => None,
            R_X86_64_RELATIVE => Some(bias.wrapping_add_signed(addend)),
            R_X86_64_64 | R_X86_64_GLOB_DAT => Some(symbol_value().wrapping_add_signed(addend)),
            other => {
                crate::serial::print("loader: relocation type ");
                crate::serial::print_dec(u64::from(other));
                crate::serial::print("\n");
                return Err("ELF has an unsupported relocation type");
            }
        };
        if let Some(value) = value {
            // SAFETY: `target` checked the range; relocations may be unaligned.
            unsafe { target(offset)?.write_unaligned(value) };
            count += 1;
        }
        at += rela_entry;
    }
    // RELR: an address entry relocates one word; bitmap entries relocate up to 63 following words.
    let mut next = 0u64;
    let mut at = bias + relr;
    while at < bias + relr + relr_size {
        // SAFETY: inside the loaded image (checked above).
        let word = unsafe { *(at as *const u64) };
        if word & 1 == 0 {
            let place = target(word)?;
            // SAFETY: checked by `target`.
            unsafe { place.write_unaligned(place.read_unaligned().wrapping_add(bias)) };
            count += 1;
            next = word + 8;
        } else {
            let mut bitmap = word >> 1;
            let mut offset = next;
            while bitmap != 0 {
                if bitmap & 1 != 0 {
                    let place = target(offset)?;
                    // SAFETY: checked by `target`.
                    unsafe { place.write_unaligned(place.read_unaligned().wrapping_add(bias)) };
                    count += 1;
                }
                bitmap >>= 1;
                offset += 8;
            }
            next += 63 * 8;
        }
        at += 8;
    }
    Ok(count)
}
