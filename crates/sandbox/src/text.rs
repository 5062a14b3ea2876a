//! Guest-provided text inside host messages (errors answered to clients, log records): bounded
//! in size and printable, whatever the guest wrote.
//!
//! A guest's error string, route pattern or stderr can be as large as its memory and contain
//! line breaks and terminal escapes. Quoted in a message it is cut to a few bytes (on a char
//! boundary, the cut marked with [`CUT_MARK`]) and its control characters are escaped (`\n`,
//! `\u{1b}`), so one record stays one line and the escaped text still fits the bound.

use std::fmt::{self, Write};

/// Bytes of guest-provided text one host message quotes at most.
pub const GUEST_TEXT_MAX: usize = 1024;

/// Appended where text was cut.
pub const CUT_MARK: &str = "…[truncated]";

/// Prepended where the start of text was cut (see [`clip_end`]).
pub const CUT_START_MARK: &str = "[truncated]…";

/// Whether `c` is shown escaped: control characters, and the invisible format characters that
/// reorder or hide text on a terminal (bidi overrides, zero-width characters, BOM).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}'
        )
}

/// Bytes `c` takes once escaped.
fn escaped_width(c: char) -> usize {
    if needs_escape(c) {
        c.escape_default().len()
    } else {
        c.len_utf8()
    }
}

/// Writes `text` to `out`, escaped, while it fits in `room` bytes (which it decrements).
/// Returns `Ok(false)` when it stopped for lack of room; nothing is written past `room`.
fn write_escaped(out: &mut impl Write, text: &str, room: &mut usize) -> Result<bool, fmt::Error> {
    for c in text.chars() {
        let width = escaped_width(c);
        if width > *room {
            return Ok(false);
        }
        *room -= width;
        if needs_escape(c) {
            for e in c.escape_default() {
                out.write_char(e)?;
            }
        } else {
            out.write_char(c)?;
        }
    }
    Ok(true)
}

/// `text` for a message: at most [`GUEST_TEXT_MAX`] bytes of it (escapes included), control
/// characters escaped, and [`CUT_MARK`] where it was cut. Displays without allocating.
#[derive(Debug, Clone, Copy)]
pub struct Clipped<'a>(pub &'a str);

impl fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut room = GUEST_TEXT_MAX;
        if !write_escaped(f, self.0, &mut room)? {
            f.write_str(CUT_MARK)?;
        }
        Ok(())
    }
}

/// A `fmt::Write` that keeps at most `room` bytes and then refuses more, which stops the
/// `Display` writing into it.
struct Bounded {
    out: String,
    room: usize,
    cut: bool,
}

impl Write for Bounded {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if write_escaped(&mut self.out, text, &mut self.room)? {
            Ok(())
        } else {
            self.cut = true;
            Err(fmt::Error)
        }
    }
}

/// What `value` displays, cut to at most `max` bytes (escapes included; [`CUT_MARK`] is added
/// after a cut) with control characters escaped. Formatting stops at the cut: a huge value is
/// never rendered whole.
pub fn clip_display(value: &dyn fmt::Display, max: usize) -> String {
    let mut bounded = Bounded {
        out: String::with_capacity(max.min(256)),
        room: max,
        cut: false,
    };
    let _ = write!(bounded, "{value}");
    if bounded.cut {
        bounded.out.push_str(CUT_MARK);
    }
    bounded.out
}

/// `text` cut to at most `max` bytes, control characters escaped (see [`clip_display`]).
pub fn clip(text: &str, max: usize) -> String {
    clip_display(&text, max)
}

/// The end of `text`, for tails such as stderr where the last words matter: at most `max` bytes
/// (escapes included) with control characters escaped, and [`CUT_START_MARK`] before it when
/// the start was cut. Only the kept end is looked at.
pub fn clip_end(text: &str, max: usize) -> String {
    let mut room = max;
    let mut start = text.len();
    for (index, c) in text.char_indices().rev() {
        let width = escaped_width(c);
        if width > room {
            break;
        }
        room -= width;
        start = index;
    }
    let kept = text.get(start..).unwrap_or_default();
    let mut out = String::with_capacity(CUT_START_MARK.len() + max.min(4 * kept.len()));
    if start > 0 {
        out.push_str(CUT_START_MARK);
    }
    let mut unlimited = usize::MAX;
    let _ = write_escaped(&mut out, kept, &mut unlimited);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_and_controls_are_escaped() {
        assert_eq!(clip("plain text", 100), "plain text");
        assert_eq!(
            clip("a\r\nb\x1b[31mc\u{202e}d", 100),
            "a\\r\\nb\\u{1b}[31mc\\u{202e}d"
        );
        assert_eq!(Clipped("x\ny").to_string(), "x\\ny");
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary_and_marked() {
        let text = "é".repeat(10_000);
        let cut = clip(&text, 101);
        assert!(cut.ends_with(CUT_MARK));
        assert_eq!(
            cut.len(),
            100 + CUT_MARK.len(),
            "50 two-byte chars fit in 101"
        );
        let shown = Clipped(&text).to_string();
        assert!(shown.len() <= GUEST_TEXT_MAX + CUT_MARK.len());
        assert!(shown.ends_with(CUT_MARK));
    }

    #[test]
    fn escapes_count_against_the_bound() {
        let text = "\n".repeat(1 << 20);
        let cut = clip(&text, 1000);
        assert_eq!(cut.len(), 1000 + CUT_MARK.len());
        assert!(!cut.contains('\n'));
        let shown = Clipped(&text).to_string();
        assert_eq!(shown.len(), GUEST_TEXT_MAX + CUT_MARK.len());
    }

    #[test]
    fn tails_keep_the_end() {
        assert_eq!(clip_end("short\n", 100), "short\\n");
        let text = format!("{}panicked at the end\n", "x".repeat(10_000));
        let tail = clip_end(&text, 30);
        let kept = format!("{}panicked at the end\\n", "x".repeat(9));
        assert_eq!(tail, format!("{CUT_START_MARK}{kept}"));
        let controls = "\u{1}".repeat(100_000);
        let tail = clip_end(&controls, 1000);
        assert_eq!(tail.len(), CUT_START_MARK.len() + 1000);
        assert!(tail.ends_with("\\u{1}"));
    }

    #[test]
    fn display_stops_at_the_cut() {
        struct Endless;
        impl fmt::Display for Endless {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                loop {
                    f.write_str("again ")?;
                }
            }
        }
        let cut = clip_display(&Endless, 64);
        assert!(cut.starts_with("again again"));
        assert!(cut.len() <= 64 + CUT_MARK.len());
    }
}
