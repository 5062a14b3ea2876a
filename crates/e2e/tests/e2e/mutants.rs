//! The image aborts on a panic (hermit's std has no unwinder), so no guest may reach one: mutated
//! copies of a real guest, deployed and called, must each get an answer while the server stays up.
//! Deterministic mutations (a fixed seed), so a failure names the mutant that caused it.

use e2e::{Instance, Mode, http};

use crate::ADMIN_TOKEN;

/// A small deterministic generator (xorshift64*).
struct Mutator(u64);

impl Mutator {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// `original` with a few bytes flipped, overwritten or a run of bytes repeated: anywhere
    /// (mostly invalid modules: the validator's turn), or only inside `keep_valid` (the data
    /// section: valid modules whose strings, tables and constants changed: the runtime's turn).
    fn mutate(&mut self, original: &[u8], keep_valid: Option<std::ops::Range<usize>>) -> Vec<u8> {
        let mut bytes = original.to_vec();
        for _ in 0..1 + self.below(4) {
            let at = match &keep_valid {
                Some(range) => range.start + self.below(range.len()),
                None => 8 + self.below(bytes.len().saturating_sub(8)),
            };
            if keep_valid.is_some() {
                bytes[at] = self.next() as u8;
                continue;
            }
            match self.below(3) {
                0 => bytes[at] ^= 1 << self.below(8),
                1 => bytes[at] = self.next() as u8,
                _ => {
                    let end = (at + 1 + self.below(16)).min(bytes.len());
                    let run = bytes[at..end].to_vec();
                    bytes.splice(at..at, run);
                }
            }
        }
        bytes
    }
}

/// The byte range of the module's data section (id 11), if it has one.
fn data_section(module: &[u8]) -> Option<std::ops::Range<usize>> {
    let leb = |at: &mut usize| -> Option<usize> {
        let (mut value, mut shift) = (0usize, 0);
        loop {
            let byte = *module.get(*at)?;
            *at += 1;
            value |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
            shift += 7;
        }
    };
    let mut at = 8;
    while at < module.len() {
        let id = module[at];
        at += 1;
        let size = leb(&mut at)?;
        if id == 11 && size > 16 {
            // Past the segment count and the first segment's header.
            return Some(at + 8..at + size);
        }
        at += size;
    }
    None
}

fn guest_bytes(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        std::path::PathBuf::from,
    );
    let path = dir.join("guests").join(name);
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (built by cargo xtask test)", path.display()))
}

fn mutants(mode: Mode, count: usize) {
    let inst = Instance::start(
        mode,
        &format!("log=warn admin-token={ADMIN_TOKEN}"),
        &["--memory", "64", "--smp", "2"],
    );
    let port = inst.port;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let original = guest_bytes("http-server-demo.wasm");
    let data = data_section(&original);
    assert!(data.is_some(), "http-server-demo.wasm has a data section");
    let mut mutator = Mutator(0x5eed_cafe_f00d_0001);
    let mut deployed = 0;
    for index in 0..count {
        let keep_valid = (index % 2 == 0).then(|| data.clone()).flatten();
        let mutant = mutator.mutate(&original, keep_valid);
        let name = format!("mutant-{index}");
        let path = format!("/_admin/functions/{name}?timeout-ms=2000");
        let put = http::request(port, "PUT", &path, &[("Authorization", &auth)], &mutant)
            .unwrap_or_else(|e| {
                panic!(
                    "{name}: deploy got no answer ({e}); output:\n{}",
                    inst.output()
                )
            });
        assert!(
            matches!(put.status, 200 | 201 | 400),
            "{name}: deploy answered {}: {}",
            put.status,
            put.text()
        );
        if put.status != 400 {
            deployed += 1;
            for route in ["/hello", "/upload", "/get"] {
                let method = if route == "/upload" { "POST" } else { "GET" };
                let called = http::request(port, method, &format!("/{name}{route}"), &[], b"data")
                    .unwrap_or_else(|e| {
                        panic!("{name}{route}: no answer ({e}); output:\n{}", inst.output())
                    });
                assert!(called.status >= 200, "{name}{route}: {}", called.status);
            }
        }
        let health = http::get(port, "/healthz").unwrap_or_else(|e| {
            panic!(
                "after {name}: /healthz failed ({e}); output:\n{}",
                inst.output()
            )
        });
        assert_eq!(health.status, 200, "after {name}");
    }
    let output = inst.output();
    assert!(
        !output.contains("PANIC") && !output.contains("panicked"),
        "{output}"
    );
    println!("{count} mutants: {deployed} deployed and called, the rest refused; server up");
}

#[test]
fn native_mutated_guests_never_bring_the_server_down() {
    mutants(Mode::Native, 200);
}

#[test]
fn qemu_mutated_guests_never_bring_the_server_down() {
    mutants(Mode::Qemu, 40);
}
