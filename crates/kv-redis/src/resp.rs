//! RESP2, the Redis wire protocol: command encoding and a bounded, streaming reply parser.
//!
//! The parser works on whatever bytes have arrived so far: [`parse`] either returns a complete
//! reply and how many bytes it used, or says more input is needed (with the total length it
//! needs when a bulk string header already told it). Every length the peer announces is checked
//! against [`Limits`] before anything is allocated, so a broken or hostile server cannot make us
//! reserve unbounded memory or recurse without end. A [`ReplyBudget`] additionally bounds the
//! payload of one reply by what the caller of that one command can take.

use std::io::{self, Read};

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A status reply such as `+OK`.
    SimpleString(String),
    /// An error reply such as `-ERR unknown command`.
    Error(String),
    /// An integer reply such as `:1`.
    Integer(i64),
    /// A binary-safe bulk string.
    BulkString(Vec<u8>),
    /// The null bulk string `$-1` or the null array `*-1`.
    Nil,
    /// An array of replies.
    Array(Vec<Value>),
}

impl Value {
    /// A short description for error messages (never the full payload).
    pub fn describe(&self) -> String {
        match self {
            Value::SimpleString(s) => format!("status {:?}", truncate(s)),
            Value::Error(s) => format!("error {:?}", truncate(s)),
            Value::Integer(i) => format!("integer {i}"),
            Value::BulkString(b) => format!("bulk string of {} bytes", b.len()),
            Value::Nil => "nil".to_string(),
            Value::Array(items) => format!("array of {} items", items.len()),
        }
    }
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(80) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// Bounds applied while parsing replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted bulk string, in bytes (Redis itself allows 512 MiB).
    pub max_bulk_len: usize,
    /// Largest accepted array, in elements.
    pub max_array_len: usize,
    /// Deepest accepted nesting of arrays (a top-level array has depth 1).
    pub max_depth: usize,
    /// Longest accepted status, error or integer line, in bytes (without CRLF).
    pub max_line_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bulk_len: 512 * 1024 * 1024,
            max_array_len: 1024 * 1024,
            max_depth: 16,
            max_line_len: 64 * 1024,
        }
    }
}

/// Why a reply could not be parsed. The connection is out of step afterwards and must be dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The first byte of a reply is not a RESP2 type marker.
    #[error("unknown reply type byte 0x{0:02x}")]
    UnknownType(u8),
    /// A line ended in a bare LF or holds a bare CR.
    #[error("line not terminated by CRLF")]
    BadLineEnding,
    /// A status, error or integer line is longer than allowed.
    #[error("reply line longer than {0} bytes")]
    LineTooLong(usize),
    /// A length or integer is not a decimal number in range.
    #[error("malformed number {0:?}")]
    BadNumber(String),
    /// A length below -1.
    #[error("negative length {0}")]
    NegativeLength(i64),
    /// A bulk string larger than [`Limits::max_bulk_len`].
    #[error("bulk string of {len} bytes exceeds the limit of {limit}")]
    BulkTooLarge {
        /// Announced length.
        len: i64,
        /// Configured limit.
        limit: usize,
    },
    /// An array longer than [`Limits::max_array_len`].
    #[error("array of {len} elements exceeds the limit of {limit}")]
    ArrayTooLarge {
        /// Announced length.
        len: i64,
        /// Configured limit.
        limit: usize,
    },
    /// Arrays nested deeper than [`Limits::max_depth`].
    #[error("arrays nested deeper than {0}")]
    TooDeep(usize),
    /// A bulk string's payload is not followed by CRLF.
    #[error("bulk string payload not followed by CRLF")]
    MissingBulkTerminator,
    /// Bytes arrived after a complete reply although no further reply was expected.
    #[error("{0} unexpected bytes after the reply")]
    TrailingData(usize),
    /// A whole reply would exceed the reader's size limit.
    #[error("reply larger than {0} bytes")]
    ReplyTooLarge(usize),
}

/// What one reply may cost: the share of memory the caller of one command can take, counted as
/// each bulk string's payload plus [`ReplyBudget::per_bulk`]. Checked as each bulk string's
/// length header arrives, before its payload is buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyBudget {
    /// Most bytes all bulk strings of the reply may cost together.
    pub max_bytes: usize,
    /// Bytes charged for each bulk string besides its payload, such as what its parsed form
    /// and the caller's copy of it cost the host.
    pub per_bulk: usize,
}

impl ReplyBudget {
    /// No bound beyond [`Limits`].
    pub const UNLIMITED: ReplyBudget = ReplyBudget::bytes(usize::MAX);

    /// At most `max_bytes` of bulk string payload in the whole reply.
    pub const fn bytes(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            per_bulk: 0,
        }
    }
}

/// Why [`parse_within`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The bytes are not valid RESP2 within the [`Limits`].
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// A bulk string header announced more payload than the [`ReplyBudget`] has left.
    #[error("bulk string of {len} bytes exceeds the reply budget of {limit} bytes")]
    OverBudget {
        /// The budget's `max_bytes`.
        limit: usize,
        /// Announced length of the bulk string that did not fit.
        len: usize,
    },
}

/// Outcome of [`parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole reply and the number of input bytes it occupied.
    Complete(Value, usize),
    /// The input ends inside a reply. `needed` is the total input length required, when known.
    Incomplete {
        /// Total number of bytes (from the start of the input) needed before parsing can progress.
        needed: Option<usize>,
    },
}

/// Appends the RESP2 encoding of a command (an array of bulk strings) to `out`.
pub fn encode_command(args: &[&[u8]], out: &mut Vec<u8>) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        out.extend_from_slice(arg.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses one reply from the start of `input`.
pub fn parse(input: &[u8], limits: &Limits) -> Result<Parsed, ProtocolError> {
    match parse_within(input, limits, &ReplyBudget::UNLIMITED) {
        Ok(parsed) => Ok(parsed),
        Err(ParseError::Protocol(e)) => Err(e),
        // An unlimited budget is never exceeded; report it like the reader's whole-reply limit.
        Err(ParseError::OverBudget { limit, .. }) => Err(ProtocolError::ReplyTooLarge(limit)),
    }
}

/// Parses one reply from the start of `input`, refusing it as soon as a bulk string header
/// announces more payload than `budget` has left.
pub fn parse_within(
    input: &[u8],
    limits: &Limits,
    budget: &ReplyBudget,
) -> Result<Parsed, ParseError> {
    let mut parser = Parser {
        input,
        limits,
        budget,
        charged: 0,
    };
    Ok(match parser.parse_at(0, 0)? {
        Step::Done(value, end) => Parsed::Complete(value, end),
        Step::Need(needed) => Parsed::Incomplete { needed },
    })
}

enum Step {
    Done(Value, usize),
    Need(Option<usize>),
}

/// One parse of one reply: the input, its bounds and the payload charged to the budget so far.
struct Parser<'a> {
    input: &'a [u8],
    limits: &'a Limits,
    budget: &'a ReplyBudget,
    charged: usize,
}

impl Parser<'_> {
    /// Parses the reply starting at `pos`; `depth` is the number of enclosing arrays.
    fn parse_at(&mut self, pos: usize, depth: usize) -> Result<Step, ParseError> {
        let (input, limits) = (self.input, self.limits);
        let Some(&marker) = input.get(pos) else {
            return Ok(Step::Need(None));
        };
        if !matches!(marker, b'+' | b'-' | b':' | b'$' | b'*') {
            return Err(ProtocolError::UnknownType(marker).into());
        }
        let line_start = pos + 1;
        // Lengths and integers are short; only status and error lines may use the full line limit.
        let max_line = match marker {
            b'+' | b'-' => limits.max_line_len,
            _ => 32,
        };
        let Some((line, after_line)) = read_line(input, line_start, max_line)? else {
            return Ok(Step::Need(None));
        };
        match marker {
            b'+' => Ok(Step::Done(
                Value::SimpleString(String::from_utf8_lossy(line).into_owned()),
                after_line,
            )),
            b'-' => Ok(Step::Done(
                Value::Error(String::from_utf8_lossy(line).into_owned()),
                after_line,
            )),
            b':' => Ok(Step::Done(Value::Integer(parse_number(line)?), after_line)),
            b'$' => {
                let len = parse_number(line)?;
                let Some(len) = checked_length(len)? else {
                    return Ok(Step::Done(Value::Nil, after_line));
                };
                self.charge(len)?;
                if len > limits.max_bulk_len {
                    return Err(ProtocolError::BulkTooLarge {
                        len: len as i64,
                        limit: limits.max_bulk_len,
                    }
                    .into());
                }
                // `len` is bounded by the limit, so this cannot overflow on 64-bit targets.
                let payload_end = after_line + len;
                let total = payload_end + 2;
                if input.len() < total {
                    return Ok(Step::Need(Some(total)));
                }
                if &input[payload_end..total] != b"\r\n" {
                    return Err(ProtocolError::MissingBulkTerminator.into());
                }
                Ok(Step::Done(
                    Value::BulkString(input[after_line..payload_end].to_vec()),
                    total,
                ))
            }
            _ => {
                let len = parse_number(line)?;
                let Some(len) = checked_length(len)? else {
                    return Ok(Step::Done(Value::Nil, after_line));
                };
                if len > limits.max_array_len {
                    return Err(ProtocolError::ArrayTooLarge {
                        len: len as i64,
                        limit: limits.max_array_len,
                    }
                    .into());
                }
                if depth + 1 > limits.max_depth {
                    return Err(ProtocolError::TooDeep(limits.max_depth).into());
                }
                // Never trust the announced length for the allocation size.
                let mut items = Vec::with_capacity(len.min(1024));
                let mut next = after_line;
                for _ in 0..len {
                    match self.parse_at(next, depth + 1)? {
                        Step::Done(item, end) => {
                            items.push(item);
                            next = end;
                        }
                        need @ Step::Need(_) => return Ok(need),
                    }
                }
                Ok(Step::Done(Value::Array(items), next))
            }
        }
    }

    /// Charges a bulk string of `len` bytes to the budget, refusing it if the budget is spent.
    fn charge(&mut self, len: usize) -> Result<(), ParseError> {
        let cost = len.saturating_add(self.budget.per_bulk);
        match self.charged.checked_add(cost) {
            Some(total) if total <= self.budget.max_bytes => {
                self.charged = total;
                Ok(())
            }
            _ => Err(ParseError::OverBudget {
                limit: self.budget.max_bytes,
                len,
            }),
        }
    }
}

/// Finds the CRLF-terminated line starting at `start`; returns it and the position after CRLF.
fn read_line(
    input: &[u8],
    start: usize,
    max_len: usize,
) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let available = &input[start.min(input.len())..];
    // Look no further than the longest acceptable line plus its CRLF.
    let window = &available[..available.len().min(max_len + 2)];
    match window.iter().position(|&b| b == b'\n') {
        Some(lf) => {
            // A bare CR inside the line is no line ending either (RESP lines hold neither).
            if lf == 0 || window[lf - 1] != b'\r' || window[..lf - 1].contains(&b'\r') {
                return Err(ProtocolError::BadLineEnding);
            }
            if lf - 1 > max_len {
                return Err(ProtocolError::LineTooLong(max_len));
            }
            Ok(Some((&window[..lf - 1], start + lf + 1)))
        }
        None if window.len() >= max_len + 2 => Err(ProtocolError::LineTooLong(max_len)),
        None => Ok(None),
    }
}

/// Parses a strict decimal `i64`: optional `-`, then 1 to 19 ASCII digits.
fn parse_number(line: &[u8]) -> Result<i64, ProtocolError> {
    let bad = || ProtocolError::BadNumber(String::from_utf8_lossy(line).into_owned());
    let digits = line.strip_prefix(b"-").unwrap_or(line);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    std::str::from_utf8(line)
        .ok()
        .and_then(|text| text.parse::<i64>().ok())
        .ok_or_else(bad)
}

/// `-1` means null (`None`); other negative lengths are errors.
fn checked_length(len: i64) -> Result<Option<usize>, ProtocolError> {
    match len {
        -1 => Ok(None),
        len if len < -1 => Err(ProtocolError::NegativeLength(len)),
        // Lengths beyond usize are rejected by the limit checks that follow.
        len => Ok(Some(usize::try_from(len).unwrap_or(usize::MAX))),
    }
}

/// Why reading a reply failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The transport failed (including timeouts).
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The peer closed the connection before a whole reply arrived.
    #[error("connection closed by the server")]
    Closed,
    /// The bytes received are not valid RESP2 within the limits.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// A bulk string would exceed the [`ReplyBudget`]; refused on its header, so its payload
    /// (and the rest of the reply) is still unread and the stream is out of step.
    #[error("bulk string of {len} bytes exceeds the reply budget of {limit} bytes")]
    OverBudget {
        /// The budget's `max_bytes`.
        limit: usize,
        /// Announced length of the bulk string that did not fit.
        len: usize,
    },
}

impl From<ParseError> for ReadError {
    fn from(error: ParseError) -> Self {
        match error {
            ParseError::Protocol(e) => ReadError::Protocol(e),
            ParseError::OverBudget { limit, len } => ReadError::OverBudget { limit, len },
        }
    }
}

/// Smallest read issued while waiting for more of a reply.
const READ_CHUNK: usize = 16 * 1024;
/// Largest single read, so a huge announced bulk string is filled in steps.
const MAX_READ_CHUNK: usize = 4 * 1024 * 1024;
/// Buffer capacity kept between replies; larger buffers are released after a big reply.
const KEPT_CAPACITY: usize = 64 * 1024;

/// Reads whole replies from a byte stream, one request at a time.
#[derive(Debug)]
pub struct ReplyReader {
    buf: Vec<u8>,
    limits: Limits,
    max_reply_len: usize,
}

impl ReplyReader {
    /// A reader applying `limits`; a whole reply may not exceed `max_bulk_len` plus 1 MiB.
    pub fn new(limits: Limits) -> Self {
        Self {
            buf: Vec::new(),
            limits,
            max_reply_len: limits.max_bulk_len.saturating_add(1024 * 1024),
        }
    }

    /// Reads exactly one reply whose bulk strings fit `budget`. Bytes beyond it are a protocol
    /// error: requests are not pipelined.
    pub fn read_reply(
        &mut self,
        stream: &mut impl Read,
        budget: &ReplyBudget,
    ) -> Result<Value, ReadError> {
        let result = self.read_reply_inner(stream, budget);
        self.buf.clear();
        if self.buf.capacity() > KEPT_CAPACITY {
            self.buf.shrink_to(KEPT_CAPACITY);
        }
        result
    }

    fn read_reply_inner(
        &mut self,
        stream: &mut impl Read,
        budget: &ReplyBudget,
    ) -> Result<Value, ReadError> {
        loop {
            // The buffer only grows past a bulk string header once the budget accepted it.
            let needed = match parse_within(&self.buf, &self.limits, budget)? {
                Parsed::Complete(value, used) => {
                    if used != self.buf.len() {
                        return Err(ProtocolError::TrailingData(self.buf.len() - used).into());
                    }
                    return Ok(value);
                }
                Parsed::Incomplete { needed } => needed,
            };
            if needed.unwrap_or(0) > self.max_reply_len || self.buf.len() >= self.max_reply_len {
                return Err(ProtocolError::ReplyTooLarge(self.max_reply_len).into());
            }
            let missing = needed.map_or(0, |n| n.saturating_sub(self.buf.len()));
            let chunk = missing.clamp(READ_CHUNK, MAX_READ_CHUNK);
            let start = self.buf.len();
            self.buf.resize(start + chunk, 0);
            let read = loop {
                match stream.read(&mut self.buf[start..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            match read {
                Ok(0) => {
                    self.buf.truncate(start);
                    return Err(ReadError::Closed);
                }
                Ok(n) => self.buf.truncate(start + n),
                Err(e) => {
                    self.buf.truncate(start);
                    return Err(ReadError::Io(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(input: &[u8]) -> (Value, usize) {
        match parse(input, &Limits::default()) {
            Ok(Parsed::Complete(value, used)) => (value, used),
            other => panic!("expected a complete reply for {input:?}, got {other:?}"),
        }
    }

    fn parse_err(input: &[u8], limits: &Limits) -> ProtocolError {
        match parse(input, limits) {
            Err(e) => e,
            other => panic!("expected an error for {input:?}, got {other:?}"),
        }
    }

    /// A reply exercising every type, nesting and binary payloads.
    fn sample() -> (Vec<u8>, Value) {
        let mut bytes =
            b"*6\r\n+OK\r\n-ERR bad thing\r\n:-42\r\n$5\r\na\r\n\0\xff\r\n$-1\r\n".to_vec();
        bytes.extend_from_slice(b"*3\r\n$0\r\n\r\n*0\r\n*-1\r\n");
        let value = Value::Array(vec![
            Value::SimpleString("OK".into()),
            Value::Error("ERR bad thing".into()),
            Value::Integer(-42),
            Value::BulkString(b"a\r\n\0\xff".to_vec()),
            Value::Nil,
            Value::Array(vec![
                Value::BulkString(Vec::new()),
                Value::Array(Vec::new()),
                Value::Nil,
            ]),
        ]);
        (bytes, value)
    }

    #[test]
    fn encodes_commands_as_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode_command(&[b"SET", b"k", b"a\r\nb"], &mut out);
        assert_eq!(
            out,
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n".to_vec()
        );
        out.clear();
        encode_command(&[b"GET", b""], &mut out);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n".to_vec());
    }

    #[test]
    fn parses_every_reply_type() {
        assert_eq!(
            complete(b"+PONG\r\n"),
            (Value::SimpleString("PONG".into()), 7)
        );
        assert_eq!(
            complete(b"-WRONGPASS x\r\n").0,
            Value::Error("WRONGPASS x".into())
        );
        assert_eq!(
            complete(b":9223372036854775807\r\n").0,
            Value::Integer(i64::MAX)
        );
        assert_eq!(
            complete(b":-9223372036854775808\r\n").0,
            Value::Integer(i64::MIN)
        );
        assert_eq!(complete(b"$-1\r\n").0, Value::Nil);
        assert_eq!(complete(b"*-1\r\n").0, Value::Nil);
        let (bytes, value) = sample();
        assert_eq!(complete(&bytes), (value, bytes.len()));
    }

    #[test]
    fn every_split_point_is_incomplete_then_complete() {
        let (bytes, value) = sample();
        for cut in 0..bytes.len() {
            match parse(&bytes[..cut], &Limits::default()) {
                Ok(Parsed::Incomplete { needed }) => {
                    if let Some(needed) = needed {
                        assert!(
                            needed > cut && needed <= bytes.len(),
                            "cut {cut}: needed {needed}"
                        );
                    }
                }
                other => panic!("prefix of {cut} bytes gave {other:?}"),
            }
        }
        assert_eq!(complete(&bytes), (value, bytes.len()));
    }

    #[test]
    fn bulk_header_announces_total_length() {
        assert_eq!(
            parse(b"$10\r\nabc", &Limits::default()),
            Ok(Parsed::Incomplete { needed: Some(17) })
        );
    }

    #[test]
    fn reports_consumed_length_and_leaves_the_rest() {
        let (value, used) = complete(b":1\r\n:2\r\n");
        assert_eq!((value, used), (Value::Integer(1), 4));
    }

    /// Found by `cargo xtask fuzz` (resp_reply): an error line holding a bare CR was accepted,
    /// CR and all, as the error's text.
    #[test]
    fn a_bare_cr_inside_a_line_is_refused() {
        let limits = Limits::default();
        for input in [
            &b"-11\rD$-1\r\n"[..],
            b"+O\rK\r\n",
            b":1\r2\r\n",
            b"$1\r\r\nx\r\n",
        ] {
            assert_eq!(
                parse_err(input, &limits),
                ProtocolError::BadLineEnding,
                "{input:?}"
            );
        }
    }

    #[test]
    fn rejects_malformed_input() {
        let limits = Limits::default();
        assert_eq!(
            parse_err(b"!3\r\n", &limits),
            ProtocolError::UnknownType(b'!')
        );
        assert_eq!(
            parse_err(b"%1\r\n", &limits),
            ProtocolError::UnknownType(b'%')
        );
        assert_eq!(parse_err(b"+OK\n", &limits), ProtocolError::BadLineEnding);
        assert!(matches!(
            parse_err(b":12a\r\n", &limits),
            ProtocolError::BadNumber(_)
        ));
        assert!(matches!(
            parse_err(b":\r\n", &limits),
            ProtocolError::BadNumber(_)
        ));
        assert!(matches!(
            parse_err(b":+1\r\n", &limits),
            ProtocolError::BadNumber(_)
        ));
        assert!(matches!(
            parse_err(b":9223372036854775808\r\n", &limits),
            ProtocolError::BadNumber(_)
        ));
        assert_eq!(
            parse_err(b"$-2\r\n", &limits),
            ProtocolError::NegativeLength(-2)
        );
        assert_eq!(
            parse_err(b"$3\r\nabcXY", &limits),
            ProtocolError::MissingBulkTerminator
        );
        // A length line that never ends is rejected as soon as it is too long to be a number.
        assert!(matches!(
            parse_err(&[b'$'; 40], &limits),
            ProtocolError::LineTooLong(_)
        ));
    }

    #[test]
    fn enforces_limits_before_allocating() {
        let limits = Limits {
            max_bulk_len: 10,
            max_array_len: 3,
            max_depth: 2,
            max_line_len: 8,
        };
        assert_eq!(
            parse_err(b"$11\r\n", &limits),
            ProtocolError::BulkTooLarge { len: 11, limit: 10 }
        );
        assert_eq!(
            parse_err(b"$9223372036854775807\r\n", &Limits::default()),
            ProtocolError::BulkTooLarge {
                len: i64::MAX,
                limit: Limits::default().max_bulk_len
            }
        );
        assert_eq!(
            parse_err(b"*4\r\n", &limits),
            ProtocolError::ArrayTooLarge { len: 4, limit: 3 }
        );
        assert_eq!(
            parse_err(b"*1\r\n*1\r\n*1\r\n", &limits),
            ProtocolError::TooDeep(2)
        );
        assert_eq!(
            parse_err(b"+123456789\r\n", &limits),
            ProtocolError::LineTooLong(8)
        );
        assert_eq!(
            parse_err(b"+1234567890", &limits),
            ProtocolError::LineTooLong(8)
        );
        assert_eq!(
            parse(b"+123456789", &limits),
            Ok(Parsed::Incomplete { needed: None })
        );
        assert!(matches!(
            parse(b"+12345678\r\n", &limits),
            Ok(Parsed::Complete(..))
        ));
        assert!(matches!(
            parse(b"*1\r\n*1\r\n:1\r\n", &limits),
            Ok(Parsed::Complete(..))
        ));
    }

    /// Hands out the given bytes a few at a time, then reports end of stream.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn reader_assembles_replies_from_small_reads() {
        let (bytes, value) = sample();
        for step in [1, 2, 3, 7, 64] {
            let mut stream = Trickle {
                data: bytes.clone(),
                pos: 0,
                step,
            };
            let mut reader = ReplyReader::new(Limits::default());
            assert_eq!(
                reader
                    .read_reply(&mut stream, &ReplyBudget::UNLIMITED)
                    .expect("reply"),
                value,
                "step {step}"
            );
        }
    }

    #[test]
    fn reader_handles_large_bulk_strings() {
        let payload: Vec<u8> = (0..3 * 1024 * 1024 + 5).map(|i| (i % 251) as u8).collect();
        let mut bytes = format!("${}\r\n", payload.len()).into_bytes();
        bytes.extend_from_slice(&payload);
        bytes.extend_from_slice(b"\r\n");
        let mut stream = Trickle {
            data: bytes,
            pos: 0,
            step: 100_000,
        };
        let mut reader = ReplyReader::new(Limits::default());
        assert_eq!(
            reader
                .read_reply(&mut stream, &ReplyBudget::UNLIMITED)
                .expect("reply"),
            Value::BulkString(payload)
        );
    }

    #[test]
    fn reader_reports_closed_stream_and_trailing_bytes() {
        let mut reader = ReplyReader::new(Limits::default());
        let mut cut = Trickle {
            data: b"$5\r\nab".to_vec(),
            pos: 0,
            step: 3,
        };
        assert!(matches!(
            reader.read_reply(&mut cut, &ReplyBudget::UNLIMITED),
            Err(ReadError::Closed)
        ));
        let mut extra = Trickle {
            data: b"+OK\r\n+OK\r\n".to_vec(),
            pos: 0,
            step: 100,
        };
        assert!(matches!(
            reader.read_reply(&mut extra, &ReplyBudget::UNLIMITED),
            Err(ReadError::Protocol(ProtocolError::TrailingData(5)))
        ));
        // The reader starts afresh for the next reply.
        let mut fine = Trickle {
            data: b":7\r\n".to_vec(),
            pos: 0,
            step: 1,
        };
        assert_eq!(
            reader
                .read_reply(&mut fine, &ReplyBudget::UNLIMITED)
                .expect("reply"),
            Value::Integer(7)
        );
    }

    #[test]
    fn reader_rejects_oversized_bulk_without_reading_it() {
        let limits = Limits {
            max_bulk_len: 1024,
            ..Limits::default()
        };
        let mut reader = ReplyReader::new(limits);
        let mut stream = Trickle {
            data: b"$1025\r\n".to_vec(),
            pos: 0,
            step: 100,
        };
        assert!(matches!(
            reader.read_reply(&mut stream, &ReplyBudget::UNLIMITED),
            Err(ReadError::Protocol(ProtocolError::BulkTooLarge {
                len: 1025,
                limit: 1024
            }))
        ));
    }

    #[test]
    fn budget_is_charged_on_bulk_headers() {
        let limits = Limits::default();
        let budget = ReplyBudget::bytes(5);
        assert_eq!(
            parse_within(b"$5\r\nhello\r\n", &limits, &budget),
            Ok(Parsed::Complete(Value::BulkString(b"hello".to_vec()), 11))
        );
        // Refused on the header alone, before any payload arrived.
        assert_eq!(
            parse_within(b"$6\r\n", &limits, &budget),
            Err(ParseError::OverBudget { limit: 5, len: 6 })
        );
        // The budget covers the whole reply, not each bulk string.
        assert_eq!(
            parse_within(b"*2\r\n$3\r\nabc\r\n$3\r\n", &limits, &budget),
            Err(ParseError::OverBudget { limit: 5, len: 3 })
        );
        // Status lines, integers and nils cost nothing.
        assert!(matches!(
            parse_within(
                b"*3\r\n+OK\r\n:12345\r\n$-1\r\n",
                &limits,
                &ReplyBudget::bytes(0)
            ),
            Ok(Parsed::Complete(..))
        ));
        // A cost per bulk string besides its payload: three names of 3 bytes with 10 bytes
        // each besides fit 39 bytes, not 38, and an empty one still costs its 10.
        let per_name = ReplyBudget {
            max_bytes: 39,
            per_bulk: 10,
        };
        assert!(matches!(
            parse_within(
                b"*3\r\n$3\r\ns:a\r\n$3\r\ns:b\r\n$3\r\ns:c\r\n",
                &limits,
                &per_name
            ),
            Ok(Parsed::Complete(..))
        ));
        let tighter = ReplyBudget {
            max_bytes: 38,
            ..per_name
        };
        assert_eq!(
            parse_within(b"*3\r\n$3\r\ns:a\r\n$3\r\ns:b\r\n$3\r\n", &limits, &tighter),
            Err(ParseError::OverBudget { limit: 38, len: 3 })
        );
        assert_eq!(
            parse_within(
                b"*4\r\n$0\r\n\r\n$0\r\n\r\n$0\r\n\r\n$0\r\n",
                &limits,
                &per_name
            ),
            Err(ParseError::OverBudget { limit: 39, len: 0 })
        );
        // Nils and integers are not bulk strings: they cost nothing.
        assert!(matches!(
            parse_within(
                b"*2\r\n$-1\r\n:5\r\n",
                &limits,
                &ReplyBudget {
                    max_bytes: 0,
                    per_bulk: 10
                }
            ),
            Ok(Parsed::Complete(..))
        ));
        // A huge announced length does not overflow the accounting.
        assert!(matches!(
            parse_within(
                b"*2\r\n$1\r\na\r\n$9223372036854775807\r\n",
                &limits,
                &budget
            ),
            Err(ParseError::OverBudget { limit: 5, .. })
        ));
    }

    #[test]
    fn reader_refuses_a_reply_over_budget_without_buffering_it() {
        // Only the header is read: the payload is never requested.
        let mut bytes = b"$1048576\r\n".to_vec();
        bytes.resize(bytes.len() + 1024 * 1024 + 2, b'x');
        let mut stream = Trickle {
            data: bytes,
            pos: 0,
            step: 4,
        };
        let mut reader = ReplyReader::new(Limits::default());
        assert!(matches!(
            reader.read_reply(&mut stream, &ReplyBudget::bytes(64 * 1024)),
            Err(ReadError::OverBudget {
                limit: 65536,
                len: 1_048_576
            })
        ));
        assert!(stream.pos <= 16, "read {} bytes", stream.pos);
    }
}
