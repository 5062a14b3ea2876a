//! Polled output on COM1 (0x3F8), with tiny number formatting (`core::fmt` only for error texts
//! from `hermit-entry` and panics).

/// I/O port base of COM1.
pub const COM1: u16 = 0x3F8;

fn outb(port: u16, value: u8) {
    // SAFETY: port I/O to the UART has no memory effects.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack))
    };
}

fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: see `outb`.
    unsafe {
        core::arch::asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack))
    };
    value
}

fn write_byte(byte: u8) {
    // Wait for an empty transmit holding register (immediately true under QEMU).
    let mut spins = 0u32;
    while inb(COM1 + 5) & 0x20 == 0 && spins < 100_000 {
        spins += 1;
    }
    outb(COM1, byte);
}

/// Writes `text` (with `\n` expanded to `\r\n`).
pub fn print(text: &str) {
    for byte in text.bytes() {
        if byte == b'\n' {
            write_byte(b'\r');
        }
        write_byte(byte);
    }
}

/// Writes `value` as `0x...` hexadecimal.
pub fn print_hex(value: u64) {
    let mut digits = [0u8; 18];
    digits[0] = b'0';
    digits[1] = b'x';
    let mut len = 2;
    let mut started = false;
    for shift in (0..16).rev() {
        let nibble = ((value >> (shift * 4)) & 0xF) as u8;
        if nibble != 0 || started || shift == 0 {
            started = true;
            digits[len] = if nibble < 10 {
                b'0' + nibble
            } else {
                b'a' + nibble - 10
            };
            len += 1;
        }
    }
    for &digit in &digits[..len] {
        write_byte(digit);
    }
}

/// Writes `value` in decimal.
pub fn print_dec(mut value: u64) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (value % 10) as u8;
        len += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for &digit in digits[..len].iter().rev() {
        write_byte(digit);
    }
}

/// `core::fmt` output to COM1.
struct SerialWriter;

impl core::fmt::Write for SerialWriter {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        print(text);
        Ok(())
    }
}

/// Writes `value`'s `Display` form.
pub fn print_display(value: &dyn core::fmt::Display) {
    // Writing to the UART cannot fail.
    let _ = core::fmt::write(&mut SerialWriter, format_args!("{value}"));
}
