//! The per-case HTML page: a self-contained rendering of a case's `.log` file.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use testarena_core::CaseStatus;

use super::log::{parse_line, LineKind};
use super::CaseLog;

/// What the header of a case's HTML page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseMeta {
    /// The queue the case ran in.
    pub queue_id: i64,
    /// The scenario (name or file) the case belongs to.
    pub scenario: String,
    /// The case id from the scenario.
    pub case_id: String,
    /// The human-readable case name.
    pub case_name: String,
    /// The verdict.
    pub status: CaseStatus,
    /// How long the case ran.
    pub duration_ms: u64,
    /// Why the case failed or errored, if it did.
    pub message: Option<String>,
}

/// Longest log line rendered; the rest of a longer line is skipped with a note.
const MAX_LINE: usize = 256 * 1024;
/// Most log bytes rendered into one page: a longer log shows its end (where failures are),
/// with a note pointing to the raw log, so the page stays loadable in a browser.
pub const MAX_HTML_LOG: u64 = 8 * 1024 * 1024;

/// Where a case's page starts reading a log of `len` bytes: only its last [`MAX_HTML_LOG`]
/// bytes are shown.
pub fn page_start(len: u64) -> u64 {
    len.saturating_sub(MAX_HTML_LOG)
}

/// Renders a case's page into `out`, streaming line by line, from `log`: the case's log from
/// byte `skipped` on (see [`page_start`]; the page then starts at the next line), or `None`
/// for a case that printed nothing.
pub fn render_case_page(
    log: Option<impl Read>,
    skipped: u64,
    meta: &CaseMeta,
    out: &mut impl Write,
) -> io::Result<()> {
    out.write_all(head(meta).as_bytes())?;
    let Some(log) = log else {
        out.write_all(b"<p class=\"none\">No output was recorded for this case.</p>\n")?;
        return out.write_all(FOOT);
    };
    let mut log = BufReader::with_capacity(64 * 1024, log);
    let mut skipped = skipped;
    if skipped > 0 {
        // Start at a line boundary.
        let mut partial = Vec::new();
        log.read_until(b'\n', &mut partial)?;
        skipped += partial.len() as u64;
        let note = format!(
            "<p class=\"none\">The first {skipped} bytes of this case's log are not shown here; the raw log has everything.</p>\n"
        );
        out.write_all(note.as_bytes())?;
    }
    write_lines(log, out)?;
    out.write_all(FOOT)
}

/// The end of every page.
const FOOT: &[u8] = b"</main>\n</body>\n</html>\n";

/// Renders the case log `log` (a range of a local queue log) as a self-contained HTML page at
/// `html_path`. The page is written to a temporary sibling and renamed into place, so readers
/// never see half a page; a log that is empty or gone gives a page that says no output was
/// recorded.
pub fn write_case_html(log: &CaseLog, html_path: &Path, meta: &CaseMeta) -> io::Result<()> {
    let skipped = page_start(log.len());
    let reader = match File::open(&log.file) {
        Ok(mut file) if !log.is_empty() => {
            file.seek(SeekFrom::Start(log.from + skipped))?;
            Some(file.take(log.len() - skipped))
        }
        Ok(_) => None,
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    super::write_atomically(html_path, |out| {
        render_case_page(reader, skipped, meta, out)
    })
}

/// Renders one log line (as written by format_line) as an HTML fragment; used by write_case_html and usable by the dashboard.
///
/// Appends one `<div class="l o">` (output) or `<div class="l e">` (event) to `out`, with the
/// time of day in a `<span class="t">` (full timestamp as its title) and the text in a
/// `<span class="x">`. Everything is HTML-escaped; ANSI SGR colours (30–37, 90–97, 39, bold
/// 1/22, reset 0) become `<span class="aNN b">`, other escape sequences are dropped. Colour
/// state does not carry over from one line to the next. A line without a timestamp is shown
/// whole as output.
pub fn line_to_html(line: &str, out: &mut String) {
    let line = line.trim_end_matches(['\n', '\r']);
    match parse_line(line) {
        Some((ts, kind, text)) => {
            out.push_str(match kind {
                LineKind::Output => "<div class=\"l o\"><span class=\"t\" title=\"",
                // A retried case's tries stand out: `case X try 2 of 3 …`.
                LineKind::Event if is_try_marker(text) => {
                    "<div class=\"l e try\"><span class=\"t\" title=\""
                }
                LineKind::Event => "<div class=\"l e\"><span class=\"t\" title=\"",
            });
            out.push_str(ts); // digits and separators only (checked by parse_line)
            out.push_str("\">");
            out.push_str(&ts[11..23]);
            out.push_str("</span><span class=\"x\">");
            ansi_to_html(text, out);
        }
        None => {
            out.push_str("<div class=\"l o\"><span class=\"x\">");
            ansi_to_html(line, out);
        }
    }
    out.push_str("</span></div>\n");
}

/// Whether an event line starts or ends one try of a retried case: `case <id> try <n> of <m>`.
fn is_try_marker(text: &str) -> bool {
    let mut words = text.split(' ');
    let digits =
        |w: Option<&str>| w.is_some_and(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()));
    words.next() == Some("case")
        && words.next().is_some()
        && words.next() == Some("try")
        && digits(words.next())
        && words.next() == Some("of")
        && digits(words.next())
}

/// Streams every line of `log` into `out` as HTML.
fn write_lines(mut log: impl BufRead, out: &mut impl Write) -> io::Result<()> {
    let mut raw = Vec::with_capacity(1024);
    let mut html = String::with_capacity(4096);
    loop {
        raw.clear();
        let got = (&mut log)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut raw)?;
        if got == 0 {
            break;
        }
        let skipped = if raw.last() != Some(&b'\n') && raw.len() >= MAX_LINE {
            skip_line(&mut log)?
        } else {
            0
        };
        html.clear();
        line_to_html(&String::from_utf8_lossy(&raw), &mut html);
        if skipped > 0 {
            let _ = writeln!(
                html,
                "<div class=\"l cut\">[line cut: {skipped} more bytes not shown]</div>"
            );
        }
        out.write_all(html.as_bytes())?;
    }
    Ok(())
}

/// Consumes the rest of the current line (through its `\n`) and says how many bytes it had before the `\n`.
fn skip_line(log: &mut impl BufRead) -> io::Result<u64> {
    let mut skipped = 0u64;
    loop {
        let buf = log.fill_buf()?;
        if buf.is_empty() {
            return Ok(skipped);
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(p) => {
                log.consume(p + 1);
                return Ok(skipped + p as u64);
            }
            None => {
                let n = buf.len();
                log.consume(n);
                skipped += n as u64;
            }
        }
    }
}

/// Colour and weight set by ANSI SGR sequences.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Style {
    /// SGR foreground code (30–37 or 90–97), `None` for the default colour.
    fg: Option<u8>,
    /// Bold (SGR 1).
    bold: bool,
}

impl Style {
    /// Applies the parameters of one SGR sequence (`ESC [ params m`).
    fn apply(&mut self, params: &str) {
        let mut codes = params.split(';');
        while let Some(code) = codes.next() {
            let code = if code.is_empty() {
                Some(0)
            } else {
                code.parse::<u32>().ok()
            };
            match code {
                Some(0) => *self = Style::default(),
                Some(1) => self.bold = true,
                Some(22) => self.bold = false,
                Some(c @ (30..=37 | 90..=97)) => self.fg = u8::try_from(c).ok(),
                Some(39) => self.fg = None,
                // Extended colours: skip their arguments so they are not read as codes.
                Some(38 | 48 | 58) => match codes.next() {
                    Some("5") => {
                        codes.next();
                    }
                    Some("2") => {
                        codes.next();
                        codes.next();
                        codes.next();
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
}

/// Appends `text` HTML-escaped, with ANSI SGR colours as spans and every other escape sequence removed.
fn ansi_to_html(text: &str, out: &mut String) {
    let bytes = text.as_bytes();
    let mut style = Style::default();
    let mut open: Option<Style> = None;
    let mut run_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != 0x1b {
            i += 1;
            continue;
        }
        emit(&text[run_start..i], style, &mut open, out);
        if bytes.get(i + 1) == Some(&b'[') {
            // CSI: parameter bytes 0x30–0x3f, intermediate bytes 0x20–0x2f, final byte 0x40–0x7e.
            let params_start = i + 2;
            let mut j = params_start;
            while j < bytes.len() && (0x30..=0x3f).contains(&bytes[j]) {
                j += 1;
            }
            let params_end = j;
            while j < bytes.len() && (0x20..=0x2f).contains(&bytes[j]) {
                j += 1;
            }
            if j < bytes.len() && (0x40..=0x7e).contains(&bytes[j]) {
                if bytes[j] == b'm' && params_end == j {
                    style.apply(&text[params_start..params_end]);
                }
                i = j + 1;
            } else {
                // Malformed or cut: drop ESC and '[' and show the rest as text.
                i = params_start;
            }
        } else {
            i += 1; // a stray ESC
        }
        run_start = i;
    }
    emit(&text[run_start..], style, &mut open, out);
    if open.is_some() {
        out.push_str("</span>");
    }
}

/// Appends one run of text in `style`, switching spans when the style changed.
fn emit(run: &str, style: Style, open: &mut Option<Style>, out: &mut String) {
    if run.is_empty() {
        return;
    }
    let current = open.unwrap_or_default();
    if current != style {
        if open.is_some() {
            out.push_str("</span>");
        }
        if style == Style::default() {
            *open = None;
        } else {
            out.push_str("<span class=\"");
            if let Some(fg) = style.fg {
                let _ = write!(out, "a{fg}");
            }
            if style.bold {
                out.push_str(if style.fg.is_some() { " b" } else { "b" });
            }
            out.push_str("\">");
            *open = Some(style);
        }
    }
    html_escape::encode_text_to_string(run, out);
}

/// A duration for people: `12 ms`, `1.234 s`, `2 min 03.456 s`.
fn human_duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{}.{:03} s", ms / 1000, ms % 1000)
    } else {
        format!(
            "{} min {:02}.{:03} s",
            ms / 60_000,
            ms / 1000 % 60,
            ms % 1000
        )
    }
}

/// Escapes text for HTML element content.
fn esc(text: &str) -> std::borrow::Cow<'_, str> {
    html_escape::encode_text(text)
}

/// The page up to the opening of the log: document head with inline CSS and the case header.
fn head(meta: &CaseMeta) -> String {
    let status = meta.status.as_str(); // a fixed lower-case word, safe in a class name
    let mut h = String::with_capacity(4096);
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(
        h,
        "<title>{} {} · {} · queue {}</title>",
        esc(&meta.case_id),
        status,
        esc(&meta.scenario),
        meta.queue_id
    );
    h.push_str("<style>\n");
    h.push_str(CSS);
    h.push_str("</style>\n</head>\n");
    let _ = writeln!(h, "<body class=\"s-{status}\">\n<header>");
    let _ = write!(
        h,
        "<h1><span class=\"badge\">{status}</span> {}",
        esc(&meta.case_id)
    );
    if !meta.case_name.is_empty() && meta.case_name != meta.case_id {
        let _ = write!(h, " <span class=\"name\">{}</span>", esc(&meta.case_name));
    }
    h.push_str("</h1>\n<table class=\"meta\">\n");
    let _ = writeln!(h, "<tr><th>Queue</th><td>{}</td></tr>", meta.queue_id);
    let _ = writeln!(
        h,
        "<tr><th>Scenario</th><td>{}</td></tr>",
        esc(&meta.scenario)
    );
    let _ = writeln!(h, "<tr><th>Case</th><td>{}</td></tr>", esc(&meta.case_id));
    if !meta.case_name.is_empty() {
        let _ = writeln!(h, "<tr><th>Name</th><td>{}</td></tr>", esc(&meta.case_name));
    }
    let _ = writeln!(
        h,
        "<tr><th>Status</th><td class=\"status\">{status}</td></tr>"
    );
    let _ = writeln!(
        h,
        "<tr><th>Duration</th><td>{}</td></tr>",
        human_duration(meta.duration_ms)
    );
    h.push_str("</table>\n");
    if let Some(message) = meta.message.as_deref().filter(|m| !m.is_empty()) {
        let _ = writeln!(h, "<pre class=\"msg\">{}</pre>", esc(message));
    }
    h.push_str("</header>\n<main class=\"log\">\n");
    h
}

/// The page's whole style sheet: status colours, console look, ANSI palette.
const CSS: &str = r#"
:root { --st: #6b7280; }
body.s-passed { --st: #15803d; }
body.s-failed { --st: #c2410c; }
body.s-error { --st: #b91c1c; }
body.s-skipped { --st: #6b7280; }
body.s-flaky { --st: #b45309; }
body.s-pending, body.s-running { --st: #1d4ed8; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #111827; background: #f3f4f6; border-top: 6px solid var(--st); }
header { padding: 16px 20px 8px; background: #fff; border-bottom: 1px solid #e5e7eb; }
h1 { margin: 0 0 10px; font-size: 20px; font-weight: 600; }
h1 .name { font-weight: 400; color: #374151; }
.badge { display: inline-block; padding: 1px 10px; border-radius: 999px; color: #fff; background: var(--st); font-size: 13px; text-transform: uppercase; letter-spacing: .04em; vertical-align: 2px; }
table.meta { border-collapse: collapse; margin-bottom: 8px; }
table.meta th { text-align: left; font-weight: 500; color: #6b7280; padding: 1px 16px 1px 0; }
table.meta td { padding: 1px 0; word-break: break-all; }
td.status { color: var(--st); font-weight: 600; }
pre.msg { margin: 8px 0; padding: 8px 12px; white-space: pre-wrap; word-break: break-word; border-left: 4px solid var(--st); background: #fef2f2; font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
body.s-passed pre.msg, body.s-skipped pre.msg { background: #f9fafb; }
body.s-flaky pre.msg { background: #fffbeb; }
main.log { margin: 0; padding: 10px 0; background: #111827; color: #e5e7eb; font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; min-height: 50vh; }
.l { padding: 0 20px 0 12px; white-space: pre-wrap; word-break: break-all; min-height: 1.4em; border-left: 3px solid transparent; }
.l:hover { background: #1f2937; }
.t { color: #6b7280; margin-right: 1ch; user-select: none; }
.e { color: #93c5fd; border-left-color: #3b82f6; background: #172036; font-style: italic; }
.e.try { color: #fcd34d; border-left-color: #f59e0b; border-top: 1px dashed #78350f; font-weight: 600; }
.cut, .none { color: #fbbf24; font-style: italic; }
.none { padding: 0 20px; }
.b { font-weight: 700; }
.a30 { color: #4b5563; } .a31 { color: #f87171; } .a32 { color: #4ade80; } .a33 { color: #facc15; }
.a34 { color: #60a5fa; } .a35 { color: #e879f9; } .a36 { color: #22d3ee; } .a37 { color: #e5e7eb; }
.a90 { color: #9ca3af; } .a91 { color: #fca5a5; } .a92 { color: #86efac; } .a93 { color: #fde047; }
.a94 { color: #93c5fd; } .a95 { color: #f0abfc; } .a96 { color: #67e8f9; } .a97 { color: #ffffff; }
"#;

#[cfg(test)]
mod tests;
