//! Test data: the WASI Fibonacci function of the seed "Building Nebula - Chapter 2: Let's
//! write some Wasm/Wasi modules" (/work/shared/seeds/nebula-ch2-wasi-modules.txt), as the
//! article writes it (its listing's one-tab indent removed): reads a count from stdin (1 if it
//! is not a number), prints the first that many Fibonacci numbers as a Rust list. Served at
//! `/api/{name}/{input}`: `echo 10 | wasmtime fibonacci.wasm` prints
//! `[0, 1, 1, 2, 3, 5, 8, 13, 21, 34]`.

// Import stdin and "attach" BufRead to the program
use std::io::{stdin, BufRead};

fn main() {
    // Create stdin instance
    let stdin = stdin();
    let mut input = String::new();

    // Wait for data to be passed to stdin
    stdin
        .lock()
        .read_line(&mut input)
        .expect("Failed to read line");

    // Attempt to parse it
    let parsed_input: Result<u32, _> = input.trim().parse();
    
    // Pattern match on the input. Default to 1 if the stdin was invalid 
    let size = if let Ok(size) = parsed_input {
        size
    } else {
        1
    };
    // Calculate the sequence and print it to stdout
    let sequence = fibonacci(size);
    println!("{:?}", sequence);
}

fn fibonacci(size: u32) -> Vec<u64> {
    let mut sequence = Vec::<u64>::new();

    for i in 0..size {
        let j = i as usize;
        if i == 0 || i == 1 {
            sequence.push(i as u64);
        } else {
            let next_value = sequence[j - 1] + sequence[j - 2];
            sequence.push(next_value);
        }
    }

    // println!("Help me");

    sequence
}
