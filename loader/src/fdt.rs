//! A minimal flattened device tree (DTB v17) writer into a fixed buffer: the kernel reads RAM
//! (`/memory@*`), the command line (`/chosen/bootargs`) and the ACPI RSDP (`/hermit,rsdp@*`) from it.

const FDT_MAGIC: u32 = 0xD00D_FEED;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_END: u32 = 9;
const HEADER_SIZE: usize = 40;
const RESERVE_MAP_SIZE: usize = 16;

/// Capacity of the structure block and of the strings block.
const STRUCT_CAPACITY: usize = 3072;
const STRINGS_CAPACITY: usize = 128;

/// The buffer does not fit what the loader wants to describe.
#[derive(Debug)]
pub struct FdtFull;

/// Builds a device tree; [`FdtWriter::finish`] writes the blob.
pub struct FdtWriter {
    structure: [u8; STRUCT_CAPACITY],
    structure_len: usize,
    strings: [u8; STRINGS_CAPACITY],
    strings_len: usize,
}

impl FdtWriter {
    /// An empty tree.
    pub const fn new() -> Self {
        Self {
            structure: [0; STRUCT_CAPACITY],
            structure_len: 0,
            strings: [0; STRINGS_CAPACITY],
            strings_len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) -> Result<(), FdtFull> {
        let end = self.structure_len + bytes.len();
        // Pad to 4 bytes (the padding is already zero).
        let padded = end.next_multiple_of(4);
        if padded > STRUCT_CAPACITY {
            return Err(FdtFull);
        }
        self.structure[self.structure_len..end].copy_from_slice(bytes);
        self.structure_len = padded;
        Ok(())
    }

    fn push_u32(&mut self, value: u32) -> Result<(), FdtFull> {
        self.push(&value.to_be_bytes())
    }

    fn string_offset(&mut self, name: &str) -> Result<u32, FdtFull> {
        // Reuse an existing entry if present.
        let mut offset = 0;
        while offset < self.strings_len {
            let end = offset
                + self.strings[offset..self.strings_len]
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(self.strings_len - offset);
            if &self.strings[offset..end] == name.as_bytes() {
                return Ok(offset as u32);
            }
            offset = end + 1;
        }
        let start = self.strings_len;
        let end = start + name.len();
        if end + 1 > STRINGS_CAPACITY {
            return Err(FdtFull);
        }
        self.strings[start..end].copy_from_slice(name.as_bytes());
        self.strings[end] = 0;
        self.strings_len = end + 1;
        Ok(start as u32)
    }

    /// Opens a node; `name` parts are concatenated (e.g. `["memory@", hex]`).
    pub fn begin_node(&mut self, name: &[&[u8]]) -> Result<(), FdtFull> {
        self.push_u32(FDT_BEGIN_NODE)?;
        for part in name {
            let end = self.structure_len + part.len();
            if end >= STRUCT_CAPACITY {
                return Err(FdtFull);
            }
            self.structure[self.structure_len..end].copy_from_slice(part);
            self.structure_len = end;
        }
        self.push(&[0])
    }

    /// Closes the innermost open node.
    pub fn end_node(&mut self) -> Result<(), FdtFull> {
        self.push_u32(FDT_END_NODE)
    }

    /// Adds a property with raw bytes as value.
    pub fn property(&mut self, name: &str, value: &[u8]) -> Result<(), FdtFull> {
        let name_offset = self.string_offset(name)?;
        self.push_u32(FDT_PROP)?;
        self.push_u32(value.len() as u32)?;
        self.push_u32(name_offset)?;
        self.push(value)
    }

    /// Adds a NUL-terminated string property (`value` without the NUL).
    pub fn property_string(&mut self, name: &str, value: &[u8]) -> Result<(), FdtFull> {
        let name_offset = self.string_offset(name)?;
        self.push_u32(FDT_PROP)?;
        self.push_u32(value.len() as u32 + 1)?;
        self.push_u32(name_offset)?;
        let end = self.structure_len + value.len();
        if end >= STRUCT_CAPACITY {
            return Err(FdtFull);
        }
        self.structure[self.structure_len..end].copy_from_slice(value);
        self.structure_len = end;
        self.push(&[0])
    }

    /// Adds a single big-endian u32 property.
    pub fn property_u32(&mut self, name: &str, value: u32) -> Result<(), FdtFull> {
        self.property(name, &value.to_be_bytes())
    }

    /// Adds a `reg` property of one (address, size) pair with two cells each.
    pub fn property_reg(&mut self, address: u64, size: u64) -> Result<(), FdtFull> {
        let mut value = [0u8; 16];
        value[..8].copy_from_slice(&address.to_be_bytes());
        value[8..].copy_from_slice(&size.to_be_bytes());
        self.property("reg", &value)
    }

    /// Writes the blob into `out`, returning its length.
    pub fn finish(&mut self, out: &mut [u8]) -> Result<usize, FdtFull> {
        self.push_u32(FDT_END)?;
        let struct_offset = HEADER_SIZE + RESERVE_MAP_SIZE;
        let strings_offset = struct_offset + self.structure_len;
        let total = strings_offset + self.strings_len;
        if total > out.len() {
            return Err(FdtFull);
        }
        let header: [u32; 10] = [
            FDT_MAGIC,
            total as u32,
            struct_offset as u32,
            strings_offset as u32,
            HEADER_SIZE as u32, // memory reservation map right after the header
            17,
            16,
            0,
            self.strings_len as u32,
            self.structure_len as u32,
        ];
        for (index, word) in header.iter().enumerate() {
            out[index * 4..index * 4 + 4].copy_from_slice(&word.to_be_bytes());
        }
        out[HEADER_SIZE..struct_offset].fill(0);
        out[struct_offset..strings_offset].copy_from_slice(&self.structure[..self.structure_len]);
        out[strings_offset..total].copy_from_slice(&self.strings[..self.strings_len]);
        Ok(total)
    }
}

/// Formats `value` as lowercase hex without prefix into `buffer`, returning the digits.
pub fn hex_digits(value: u64, buffer: &mut [u8; 16]) -> &[u8] {
    let mut len = 0;
    let mut started = false;
    for shift in (0..16).rev() {
        let nibble = ((value >> (shift * 4)) & 0xF) as u8;
        if nibble != 0 || started || shift == 0 {
            started = true;
            buffer[len] = if nibble < 10 {
                b'0' + nibble
            } else {
                b'a' + nibble - 10
            };
            len += 1;
        }
    }
    &buffer[..len]
}
