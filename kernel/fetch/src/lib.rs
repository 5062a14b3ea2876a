//! Empty: this package only pins the hermit kernel source (see Cargo.toml).
