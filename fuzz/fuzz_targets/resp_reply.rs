//! A hostile Redis server: arbitrary reply bytes, delivered in pieces of arbitrary sizes, to the
//! RESP reader. It must never panic, and what it accepts must keep within its limits: a reply
//! is whole and alone in the stream, bulk strings and arrays no longer and no deeper than
//! allowed, bulk payload within the reply budget; the split must not change the outcome.
#![no_main]

use std::io::Read;

use kv_redis::resp::{
    Limits, Parsed, ProtocolError, ReadError, ReplyBudget, ReplyReader, Value, parse_within,
};
use libfuzzer_sys::fuzz_target;

/// A server that sends `reply` in pieces whose sizes cycle through `sizes`, then closes.
struct Pieces<'a> {
    reply: &'a [u8],
    sizes: &'a [u8],
    turn: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let size = match self.sizes.get(self.turn % self.sizes.len().max(1)) {
            Some(&size) => usize::from(size).max(1),
            None => usize::MAX,
        };
        self.turn += 1;
        let n = size.min(buf.len()).min(self.reply.len());
        let (now, rest) = self.reply.split_at(n);
        buf[..n].copy_from_slice(now);
        self.reply = rest;
        Ok(n)
    }
}

const LIMITS: Limits = Limits {
    max_bulk_len: 64,
    max_array_len: 8,
    max_depth: 3,
    max_line_len: 32,
};

/// Checks the limits on an accepted value; returns the bulk payload bytes it holds.
fn check(value: &Value, depth: usize) -> usize {
    match value {
        Value::SimpleString(s) | Value::Error(s) => {
            // The limit is on the wire; each invalid UTF-8 byte becomes U+FFFD (3 bytes).
            assert!(s.len() <= 3 * LIMITS.max_line_len);
            assert!(!s.contains(['\r', '\n']));
            0
        }
        Value::BulkString(bytes) => {
            assert!(bytes.len() <= LIMITS.max_bulk_len);
            bytes.len()
        }
        Value::Integer(_) | Value::Nil => 0,
        Value::Array(items) => {
            assert!(depth < LIMITS.max_depth, "array nested deeper than allowed");
            assert!(items.len() <= LIMITS.max_array_len);
            items.iter().map(|item| check(item, depth + 1)).sum()
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // First byte: budget; next up to 8 bytes: piece sizes; the rest: the server's reply.
    let Some((&budget, rest)) = data.split_first() else {
        return;
    };
    let (sizes, reply) = rest.split_at(rest.len().min(8));
    let budget = ReplyBudget {
        max_bytes: usize::from(budget),
        per_bulk: 2,
    };
    let mut reader = ReplyReader::new(LIMITS);
    let mut server = Pieces {
        reply,
        sizes,
        turn: 0,
    };
    let outcome = reader.read_reply(&mut server, &budget);
    let mut whole = Pieces {
        reply,
        sizes: &[],
        turn: 0,
    };
    let at_once = ReplyReader::new(LIMITS).read_reply(&mut whole, &budget);
    match (&outcome, &at_once) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        // How many bytes trail the reply depends on how many had arrived.
        (
            Err(ReadError::Protocol(ProtocolError::TrailingData(_))),
            Err(ReadError::Protocol(ProtocolError::TrailingData(_))),
        ) => {}
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        // Two replies in one stream: read in pieces, the reader stops after the first (the rest
        // has not arrived yet); read at once, it sees the second and refuses the stream.
        (Ok(_), Err(ReadError::Protocol(ProtocolError::TrailingData(_)))) => {}
        _ => panic!("the split changed the outcome: {outcome:?} vs {at_once:?}"),
    }
    if let Ok(value) = &outcome {
        let payload = check(value, 0);
        assert!(payload <= budget.max_bytes);
        // A reply read from the stream parses the same from a buffer.
        assert!(matches!(
            parse_within(reply, &LIMITS, &budget),
            Ok(Parsed::Complete(ref v, used)) if v == value && used <= reply.len()
        ));
    }
    if let Err(ReadError::OverBudget { limit, .. }) = outcome {
        assert_eq!(limit, budget.max_bytes);
    }
});
