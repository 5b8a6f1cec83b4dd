//! The line format shared by every `.log` file (queue.log, build.log, `<case>.log`).

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a log line records: output of the firmware or a tool, or an event of TestArena itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// A line of console, build or command output; written as `<time> | <text>`.
    Output,
    /// Something TestArena did or decided (send, expect, verdict); written as `<time> # <text>`.
    Event,
}

/// Length of the timestamp at the start of every line: `2026-11-25T15:08:56.123Z`.
const TS_LEN: usize = 24;

/// The last second with a four-digit year (9999-12-31T23:59:59Z); later times are clamped.
const MAX_SECS: u64 = 253_402_300_799;

/// Formats one log line (with trailing '\n') into `out` (reusing the buffer; this is a hot path: 200k lines/s must be cheap).
///
/// `out` is cleared first, so one buffer can be reused for every line. Line terminators at the
/// end of `text` (`\n`, `\r`) are dropped; anything else is escaped as [`escape_text`] does, so
/// the result is always exactly one valid UTF-8 line. Times before 1970 are written as the epoch.
pub fn format_line(out: &mut Vec<u8>, at: SystemTime, kind: LineKind, text: &[u8]) {
    out.clear();
    let text = trim_line_end(text);
    out.reserve(TS_LEN + 4 + text.len());
    out.extend_from_slice(&timestamp(at));
    out.extend_from_slice(match kind {
        LineKind::Output => b" | ",
        LineKind::Event => b" # ",
    });
    escape_into(text, out);
    out.push(b'\n');
}

/// Escapes text for display: invalid UTF-8 bytes and control characters other than TAB and ESC become `\xNN`.
///
/// Borrows when nothing needs escaping. A literal backslash is kept as is, so the escaping is
/// not meant to be reversed.
pub fn escape_text(text: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(text) {
        if !s.bytes().any(needs_escape) {
            return Cow::Borrowed(s);
        }
    }
    let mut out = String::with_capacity(text.len() + 16);
    escape_into(text, &mut out);
    Cow::Owned(out)
}

/// Splits a log line (as written by [`format_line`], with or without its `\n`) into timestamp, kind and text; `None` if it has another shape.
pub fn parse_line(line: &str) -> Option<(&str, LineKind, &str)> {
    let line = line.trim_end_matches(['\n', '\r']);
    let ts = line.get(..TS_LEN)?;
    let b = ts.as_bytes();
    let shaped = b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10 | 13 | 16 | 19 | 23) || c.is_ascii_digit());
    if !shaped {
        return None;
    }
    let kind = match line.get(TS_LEN..TS_LEN + 2)? {
        " |" => LineKind::Output,
        " #" => LineKind::Event,
        _ => return None,
    };
    let rest = line.get(TS_LEN + 2..)?;
    let text = match rest.strip_prefix(' ') {
        Some(text) => text,
        None if rest.is_empty() => rest,
        None => return None,
    };
    Some((ts, kind, text))
}

/// `text` without the `\n` / `\r` bytes at its end.
fn trim_line_end(text: &[u8]) -> &[u8] {
    let mut end = text.len();
    while end > 0 && matches!(text[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &text[..end]
}

/// Whether a byte of valid UTF-8 must be written as `\xNN`: ASCII controls except TAB and ESC.
#[inline]
fn needs_escape(b: u8) -> bool {
    (b < 0x20 && b != b'\t' && b != 0x1b) || b == 0x7f
}

/// Where escaped text goes: a byte buffer (log files) or a `String` ([`escape_text`]).
trait Sink {
    /// Appends text that needs no escaping.
    fn put(&mut self, s: &str);
    /// Appends `\xNN` for one byte.
    fn put_hex(&mut self, b: u8);
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl Sink for Vec<u8> {
    #[inline]
    fn put(&mut self, s: &str) {
        self.extend_from_slice(s.as_bytes());
    }
    #[inline]
    fn put_hex(&mut self, b: u8) {
        self.extend_from_slice(&[
            b'\\',
            b'x',
            HEX[usize::from(b >> 4)],
            HEX[usize::from(b & 15)],
        ]);
    }
}

impl Sink for String {
    #[inline]
    fn put(&mut self, s: &str) {
        self.push_str(s);
    }
    #[inline]
    fn put_hex(&mut self, b: u8) {
        self.push('\\');
        self.push('x');
        self.push(char::from(HEX[usize::from(b >> 4)]));
        self.push(char::from(HEX[usize::from(b & 15)]));
    }
}

/// Whether `text` is printable ASCII (TAB and ESC allowed): nothing to escape, and valid UTF-8.
/// One pass the compiler vectorises: most console lines are like this, and the general path
/// costs ~20 instructions per byte (callgrind).
#[inline]
fn plain_ascii(text: &[u8]) -> bool {
    text.iter().fold(true, |ok, &b| {
        ok & ((0x20..0x7f).contains(&b) | (b == b'\t') | (b == 0x1b))
    })
}

/// Appends `text` to `out`, escaping invalid UTF-8 and control bytes as `\xNN`.
fn escape_into(text: &[u8], out: &mut impl Sink) {
    if plain_ascii(text) {
        // Printable ASCII is valid UTF-8; `from_utf8` checks it word by word, cheaply.
        if let Ok(s) = std::str::from_utf8(text) {
            out.put(s);
            return;
        }
    }
    for chunk in text.utf8_chunks() {
        let valid = chunk.valid();
        let mut start = 0;
        for (i, b) in valid.bytes().enumerate() {
            if needs_escape(b) {
                // `i` is an ASCII byte, hence a char boundary.
                out.put(&valid[start..i]);
                out.put_hex(b);
                start = i + 1;
            }
        }
        out.put(&valid[start..]);
        for &b in chunk.invalid() {
            out.put_hex(b);
        }
    }
}

/// `at` as `YYYY-MM-DDTHH:MM:SS.mmmZ`, by hand (no allocation, no format parsing).
fn timestamp(at: SystemTime) -> [u8; TS_LEN] {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let (secs, millis) = if since.as_secs() > MAX_SECS {
        (MAX_SECS, 999)
    } else {
        (since.as_secs(), since.subsec_millis())
    };
    let mut b = LAST_SECOND.with(|last| {
        let (at, stamp) = last.get();
        if at == secs {
            return stamp;
        }
        let stamp = second_stamp(secs);
        last.set((secs, stamp));
        stamp
    });
    put_digits(&mut b[20..23], millis);
    b
}

thread_local! {
    /// The last second [`timestamp`] wrote on this thread, formatted: a console writes
    /// thousands of lines a second, and the date needs working out once per second only.
    static LAST_SECOND: std::cell::Cell<(u64, [u8; TS_LEN])> =
        const { std::cell::Cell::new((u64::MAX, [0; TS_LEN])) };
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SS.000Z`.
fn second_stamp(secs: u64) -> [u8; TS_LEN] {
    // Both fit easily: days <= 2_932_896, second of day < 86_400.
    let days = (secs / 86_400) as u32;
    let sod = (secs % 86_400) as u32;
    let (year, month, day) = civil_from_days(days);

    let mut b = *b"0000-00-00T00:00:00.000Z";
    put_digits(&mut b[0..4], year);
    put_digits(&mut b[5..7], month);
    put_digits(&mut b[8..10], day);
    put_digits(&mut b[11..13], sod / 3600);
    put_digits(&mut b[14..16], sod / 60 % 60);
    put_digits(&mut b[17..19], sod % 60);
    b
}

/// Writes `v` as zero-padded decimal filling `dst`.
#[inline]
fn put_digits(dst: &mut [u8], mut v: u32) {
    for d in dst.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// (year, month, day) of the day `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u32) -> (u32, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u32::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-25T15:08:56.123Z
    fn fixed_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_795_619_336_123)
    }

    fn line(kind: LineKind, text: &[u8]) -> String {
        let mut buf = Vec::new();
        format_line(&mut buf, fixed_time(), kind, text);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn output_and_event_lines_are_exact() {
        assert_eq!(
            line(LineKind::Output, b"pong"),
            "2026-11-25T15:08:56.123Z | pong\n"
        );
        assert_eq!(
            line(LineKind::Event, b"send: ping"),
            "2026-11-25T15:08:56.123Z # send: ping\n"
        );
        assert_eq!(line(LineKind::Output, b""), "2026-11-25T15:08:56.123Z | \n");
    }

    #[test]
    fn buffer_is_cleared_and_line_ends_dropped() {
        let mut buf = b"old content".to_vec();
        format_line(
            &mut buf,
            fixed_time(),
            LineKind::Output,
            b"I (31) boot: ok\r\n",
        );
        assert_eq!(buf, b"2026-11-25T15:08:56.123Z | I (31) boot: ok\n");
        format_line(&mut buf, fixed_time(), LineKind::Output, b"a\nb\r\n\r\n");
        assert_eq!(
            buf, b"2026-11-25T15:08:56.123Z | a\\x0ab\n",
            "inner newline escaped"
        );
    }

    #[test]
    fn timestamps_at_the_edges() {
        let mut buf = Vec::new();
        format_line(&mut buf, UNIX_EPOCH, LineKind::Event, b"x");
        assert_eq!(buf, b"1970-01-01T00:00:00.000Z # x\n");
        format_line(
            &mut buf,
            UNIX_EPOCH - Duration::from_secs(10),
            LineKind::Event,
            b"x",
        );
        assert_eq!(
            buf, b"1970-01-01T00:00:00.000Z # x\n",
            "before the epoch clamps"
        );
        format_line(
            &mut buf,
            UNIX_EPOCH + Duration::from_secs(MAX_SECS * 2),
            LineKind::Event,
            b"x",
        );
        assert_eq!(buf, b"9999-12-31T23:59:59.999Z # x\n", "far future clamps");
        // Leap day; milliseconds are truncated, not rounded.
        let leap = UNIX_EPOCH + Duration::from_micros(951_782_400_999_999);
        format_line(&mut buf, leap, LineKind::Output, b"x");
        assert_eq!(buf, b"2000-02-29T00:00:00.999Z | x\n");
    }

    #[test]
    fn timestamp_agrees_with_the_time_crate() {
        use time::OffsetDateTime;
        let step = 86_400 * 7 + 3_661 + 17; // walk over weekdays, hours and leap years
        let mut secs: i64 = 0;
        while secs < 4_200_000_000 {
            let at = UNIX_EPOCH + Duration::from_secs(secs as u64) + Duration::from_millis(42);
            let ts = timestamp(at);
            let dt = OffsetDateTime::from_unix_timestamp(secs).unwrap();
            let expected = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.042Z",
                dt.year(),
                u8::from(dt.month()),
                dt.day(),
                dt.hour(),
                dt.minute(),
                dt.second()
            );
            assert_eq!(std::str::from_utf8(&ts).unwrap(), expected, "at {secs}");
            secs += step;
        }
    }

    #[test]
    fn invalid_utf8_and_controls_are_escaped() {
        assert_eq!(escape_text(b"ok \xff\xfe end"), "ok \\xff\\xfe end");
        // A truncated multi-byte sequence, a valid one, NUL, BEL, DEL.
        assert_eq!(escape_text("é".as_bytes()), "é");
        assert_eq!(escape_text(b"\xc3"), "\\xc3");
        assert_eq!(escape_text(b"a\x00b\x07c\x7f"), "a\\x00b\\x07c\\x7f");
        // TAB and ESC survive; backslash stays a backslash.
        assert_eq!(
            escape_text(b"\t\x1b[31mred\x1b[0m \\x41"),
            "\t\x1b[31mred\x1b[0m \\x41"
        );
        assert_eq!(
            line(LineKind::Output, b"\x80\r\x1b"),
            "2026-11-25T15:08:56.123Z | \\x80\\x0d\x1b\n"
        );
    }

    #[test]
    fn the_ascii_fast_path_agrees_with_the_general_one() {
        // Every single byte, alone and inside plain text: the fast path may only take what
        // the general path would copy unchanged.
        for b in 0..=255u8 {
            for text in [vec![b], [b"plain ".as_slice(), &[b], b" text"].concat()] {
                let mut fast = Vec::new();
                escape_into(&text, &mut fast);
                let mut general = String::new();
                for chunk in text.utf8_chunks() {
                    for c in chunk.valid().chars() {
                        if c.is_ascii() && needs_escape(c as u8) {
                            general.push_str(&format!("\\x{:02x}", c as u8));
                        } else {
                            general.push(c);
                        }
                    }
                    for &x in chunk.invalid() {
                        general.push_str(&format!("\\x{x:02x}"));
                    }
                }
                assert_eq!(String::from_utf8(fast).unwrap(), general, "byte {b:#04x}");
            }
        }
    }

    #[test]
    fn clean_text_is_borrowed() {
        assert!(matches!(
            escape_text(b"plain text"),
            Cow::Borrowed("plain text")
        ));
        assert!(matches!(escape_text(b"bad \x01"), Cow::Owned(_)));
    }

    #[test]
    fn parse_line_reads_back_what_format_line_wrote() {
        let out = line(LineKind::Output, b"hello | world");
        assert_eq!(
            parse_line(&out),
            Some((
                "2026-11-25T15:08:56.123Z",
                LineKind::Output,
                "hello | world"
            ))
        );
        let ev = line(LineKind::Event, b"");
        assert_eq!(
            parse_line(&ev),
            Some(("2026-11-25T15:08:56.123Z", LineKind::Event, ""))
        );
        assert_eq!(
            parse_line("2026-11-25T15:08:56.123Z #"),
            Some(("2026-11-25T15:08:56.123Z", LineKind::Event, ""))
        );
        for bad in [
            "",
            "hello",
            "2026-11-25T15:08:56.123Z ! x",
            "2026-11-25 15:08:56.123Z | x",
            "2026-11-25T15:08:56.123Z |x",
            "é026-11-25T15:08:56.123Z | x",
        ] {
            assert_eq!(parse_line(bad), None, "{bad:?}");
        }
    }
}
