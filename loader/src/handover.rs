//! What a boot protocol (multiboot v1 or PVH) handed over, in one form: RAM, the application ELF,
//! the command line, the memory it occupies, and where the kernel image can go.

/// Most RAM regions and reserved ranges the loader keeps track of.
const CAPACITY: usize = 32;

/// A range of physical addresses, `start..end`.
#[derive(Clone, Copy, Default)]
pub struct Span {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Span {
    /// `start..start + len` (saturating).
    pub fn with_len(start: u64, len: u64) -> Self {
        Self {
            start,
            end: start.saturating_add(len),
        }
    }

    fn overlaps(&self, other: &Span) -> bool {
        self.start < other.end && other.start < self.end
    }

    fn contains(&self, other: &Span) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

/// The boot protocol the loader was entered through.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Multiboot v1 (QEMU `-kernel` with our flat loader image); the information's address.
    Multiboot(u64),
    /// PVH (`hvm_start_info`): QEMU `-kernel` with the loader ELF, Firecracker, Cloud Hypervisor.
    Pvh,
}

/// A fixed-capacity list of spans.
#[derive(Clone, Copy)]
pub struct Spans {
    items: [Span; CAPACITY],
    len: usize,
}

impl Spans {
    const fn new() -> Self {
        Self {
            items: [Span { start: 0, end: 0 }; CAPACITY],
            len: 0,
        }
    }

    /// Adds `span` (empty ones are skipped).
    pub fn push(&mut self, span: Span) -> Result<(), &'static str> {
        if span.end <= span.start {
            return Ok(());
        }
        let slot = self
            .items
            .get_mut(self.len)
            .ok_or("more than 32 memory ranges handed over")?;
        *slot = span;
        self.len += 1;
        Ok(())
    }

    /// The spans added so far.
    pub fn as_slice(&self) -> &[Span] {
        self.items.get(..self.len).unwrap_or(&[])
    }
}

/// What the boot protocol handed over.
pub struct Handover {
    /// How the loader was entered.
    pub protocol: Protocol,
    /// The application ELF (the first module / initrd).
    pub module: Span,
    /// The kernel command line (the multiboot file-name word already dropped), or empty.
    pub command_line: &'static [u8],
    /// The ACPI RSDP, if the protocol names it.
    pub rsdp: Option<u64>,
    /// Usable RAM.
    pub ram: Spans,
    /// Memory in use: the loader, the protocol's structures, the command line and the modules.
    pub reserved: Spans,
}

impl Handover {
    /// An empty handover for `protocol`.
    pub const fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            module: Span { start: 0, end: 0 },
            command_line: &[],
            rsdp: None,
            ram: Spans::new(),
            reserved: Spans::new(),
        }
    }

    /// Reserves an array of `count` entries of `size` bytes at `address`; the entries' addresses.
    pub fn reserve_array(
        &mut self,
        address: u64,
        count: u64,
        size: u64,
    ) -> Result<impl Iterator<Item = u64> + use<>, &'static str> {
        self.reserved
            .push(Span::with_len(address, count.saturating_mul(size)))?;
        Ok((0..count).map(move |index| address + index * size))
    }

    /// Reserves a boot module; the first non-empty one is the application ELF.
    pub fn add_module(&mut self, module: Span) -> Result<(), &'static str> {
        self.reserved.push(module)?;
        if self.module.end <= self.module.start {
            self.module = module;
        }
        Ok(())
    }

    /// End of RAM (highest end of a RAM region).
    pub fn ram_end(&self) -> u64 {
        self.ram.as_slice().iter().map(|r| r.end).max().unwrap_or(0)
    }

    /// Whether `span` lies in one RAM region, below `limit`, and overlaps nothing reserved.
    pub fn is_free(&self, span: Span, limit: u64) -> bool {
        span.end <= limit
            && self.ram.as_slice().iter().any(|ram| ram.contains(&span))
            && !self.reserved.as_slice().iter().any(|r| r.overlaps(&span))
    }

    /// The highest `align`-aligned address at or above 1 MiB (clear of the real-mode area and the
    /// kernel's SMP trampoline) where `size` bytes are free below `limit`.
    pub fn highest_free(&self, size: u64, align: u64, limit: u64) -> Option<u64> {
        let before_reserved = self.reserved.as_slice().iter().map(|r| r.start);
        let ram_ends = self.ram.as_slice().iter().map(|r| r.end.min(limit));
        before_reserved
            .chain(ram_ends)
            .filter_map(|end| end.checked_sub(size))
            .map(|start| start - start % align)
            .filter(|&start| start >= 0x10_0000 && self.is_free(Span::with_len(start, size), limit))
            .max()
    }

    /// The lowest `align`-aligned address at or above `floor` where `size` bytes are free below
    /// `limit`.
    ///
    /// Low is best: hermit-kernel 0.11 uses the RAM above its image as its heap.
    pub fn lowest_free(&self, size: u64, align: u64, floor: u64, limit: u64) -> Option<u64> {
        let after_reserved = self.reserved.as_slice().iter().map(|r| r.end);
        let ram_starts = self.ram.as_slice().iter().map(|r| r.start);
        after_reserved
            .chain(ram_starts)
            .map(|candidate| candidate.max(floor))
            .filter_map(|candidate| candidate.checked_next_multiple_of(align))
            .filter(|&start| self.is_free(Span::with_len(start, size), limit))
            .min()
    }
}
