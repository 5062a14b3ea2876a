//! Classic FaaS guest (WASI preview1 command).
//!
//! Reads a count `n` from stdin and prints the first `n` Fibonacci numbers,
//! `fib(0)` to `fib(n-1)`, comma separated on one line: stdin `10` gives
//! `0,1,1,2,3,5,8,13,21,34`. Empty stdin means `n = 10`. A malformed number
//! or a term that overflows `u128` (n > 186) is reported on stderr with exit code 1.

use std::io::{Read, Write};
use std::process::ExitCode;

/// Largest count whose terms all fit into `u128`.
const MAX_COUNT: u32 = 186;

fn main() -> ExitCode {
    let mut input = String::new();
    if let Err(error) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("fib: cannot read stdin: {error}");
        return ExitCode::FAILURE;
    }
    let input = input.trim();
    let count: u32 = if input.is_empty() {
        10
    } else {
        match input.parse() {
            Ok(count) => count,
            Err(error) => {
                eprintln!("fib: expected a non-negative count on stdin, got {input:?}: {error}");
                return ExitCode::FAILURE;
            }
        }
    };
    if count > MAX_COUNT {
        eprintln!("fib: count {count} is too large (at most {MAX_COUNT})");
        return ExitCode::FAILURE;
    }
    let mut line = String::new();
    let (mut current, mut next) = (0u128, 1u128);
    for index in 0..count {
        if index > 0 {
            line.push(',');
        }
        line.push_str(&current.to_string());
        // Cannot overflow for count <= MAX_COUNT; saturate to keep the guest panic-free anyway.
        (current, next) = (next, current.saturating_add(next));
    }
    line.push('\n');
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(line.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
