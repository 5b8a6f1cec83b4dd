//! Tests of `html`.

use super::super::log::format_line;
use super::super::test_util::TempDir;
use super::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn at() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_795_619_336_123)
}

fn render(kind: LineKind, text: &[u8]) -> String {
    let mut line = Vec::new();
    format_line(&mut line, at(), kind, text);
    let mut html = String::new();
    line_to_html(&String::from_utf8(line).unwrap(), &mut html);
    html
}

fn text_of(html: &str) -> &str {
    let start = html.find("<span class=\"x\">").unwrap() + "<span class=\"x\">".len();
    let end = html.rfind("</span></div>").unwrap();
    &html[start..end]
}

#[test]
fn script_renders_as_text() {
    let html = render(LineKind::Output, b"<script>alert(1)</script> & \"q\"");
    assert!(!html.contains("<script>"), "{html}");
    assert_eq!(
        text_of(&html),
        "&lt;script&gt;alert(1)&lt;/script&gt; &amp; \"q\""
    );
}

#[test]
fn output_and_event_lines_differ() {
    let out = render(LineKind::Output, b"pong");
    assert_eq!(
        out,
        "<div class=\"l o\"><span class=\"t\" title=\"2026-11-25T15:08:56.123Z\">15:08:56.123</span>\
         <span class=\"x\">pong</span></div>\n"
    );
    let ev = render(LineKind::Event, b"expect /^pong$/ matched");
    assert!(ev.starts_with("<div class=\"l e\">"), "{ev}");
    assert_eq!(text_of(&ev), "expect /^pong$/ matched");
}

#[test]
fn foreign_lines_are_shown_whole() {
    let mut html = String::new();
    line_to_html("no timestamp <b>\r\n", &mut html);
    assert_eq!(
        html,
        "<div class=\"l o\"><span class=\"x\">no timestamp &lt;b&gt;</span></div>\n"
    );
}

#[test]
fn ansi_colours_become_spans() {
    let html = render(LineKind::Output, b"\x1b[0;32mI (123) boot: ok\x1b[0m");
    assert_eq!(
        text_of(&html),
        "<span class=\"a32\">I (123) boot: ok</span>"
    );

    let html = render(
        LineKind::Output,
        b"\x1b[1;91mE <x>\x1b[39m still bold\x1b[m plain",
    );
    assert_eq!(
        text_of(&html),
        "<span class=\"a91 b\">E &lt;x&gt;</span><span class=\"b\"> still bold</span> plain"
    );

    // A colour left open at the end of the line is closed there.
    let html = render(LineKind::Output, b"\x1b[33mW warn");
    assert_eq!(text_of(&html), "<span class=\"a33\">W warn</span>");
}

#[test]
fn other_escapes_are_removed() {
    // Erase-line CSI, cursor move, stray ESC, 256-colour argument that looks like 31,
    // unsupported SGR code (4 = underline), and a cut sequence at the end.
    let html = render(
        LineKind::Output,
        b"\x1b[2Ka\x1b[10;5Hb\x1bc\x1b[38;5;31md\x1b[4me\x1b[",
    );
    assert_eq!(text_of(&html), "abcde");
    let html = render(LineKind::Output, b"x\x1b[12");
    assert_eq!(text_of(&html), "x12");
    let html = render(LineKind::Output, b"\x1b[31m\x1b[0m");
    assert_eq!(text_of(&html), "", "no empty spans");
}

#[test]
fn durations_for_people() {
    assert_eq!(human_duration(12), "12 ms");
    assert_eq!(human_duration(1234), "1.234 s");
    assert_eq!(human_duration(123_456), "2 min 03.456 s");
}

/// The whole file at `path` as a case log.
fn whole(path: &std::path::Path) -> CaseLog {
    CaseLog {
        file: path.to_path_buf(),
        from: 0,
        to: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        name: "x.log".into(),
    }
}

fn meta() -> CaseMeta {
    CaseMeta {
        queue_id: 12,
        scenario: "smoke <main>".into(),
        case_id: "TC_PING".into(),
        case_name: "Ping & pong".into(),
        status: CaseStatus::Failed,
        duration_ms: 1500,
        message: Some("expect /^pong$/ timed out\n<script>x</script>".into()),
    }
}

#[test]
fn page_has_header_and_escaped_log() {
    let dir = TempDir::new("html");
    let log_path = dir.path().join("TC_PING.log");
    let html_path = dir.path().join("TC_PING.html");
    let mut log = Vec::new();
    let mut line = Vec::new();
    for (kind, text) in [
        (LineKind::Event, &b"send: ping"[..]),
        (LineKind::Output, b"<script>alert(1)</script>"),
        (LineKind::Output, b"\x1b[0;31mE (5) bad\x1b[0m"),
        (LineKind::Event, b"case TC_PING failed in 1500 ms"),
    ] {
        format_line(&mut line, at(), kind, text);
        log.extend_from_slice(&line);
    }
    std::fs::write(&log_path, &log).unwrap();

    write_case_html(&whole(&log_path), &html_path, &meta()).unwrap();
    let page = std::fs::read_to_string(&html_path).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.trim_end().ends_with("</html>"));
    assert!(!page.contains("<script"), "nothing unescaped");
    assert!(!page.contains("http"), "no external resources");
    assert!(page.contains("<body class=\"s-failed\">"));
    assert!(page.contains(
        "<span class=\"badge\">failed</span> TC_PING <span class=\"name\">Ping &amp; pong</span>"
    ));
    assert!(page.contains("<td>smoke &lt;main&gt;</td>"));
    assert!(page.contains("<td>1.500 s</td>"));
    assert!(page.contains(
        "<pre class=\"msg\">expect /^pong$/ timed out\n&lt;script&gt;x&lt;/script&gt;</pre>"
    ));
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains("<span class=\"a31\">E (5) bad</span>"));
    assert_eq!(page.matches("<div class=\"l e\">").count(), 2);
    assert_eq!(page.matches("<div class=\"l o\">").count(), 2);
    assert!(!super::super::temp_sibling(&html_path).exists());
}

#[test]
fn missing_log_gives_a_page_saying_so() {
    let dir = TempDir::new("html-missing");
    let html_path = dir.path().join("x.html");
    let mut m = meta();
    m.status = CaseStatus::Skipped;
    m.message = None;
    write_case_html(&whole(&dir.path().join("nope.log")), &html_path, &m).unwrap();
    let page = std::fs::read_to_string(&html_path).unwrap();
    assert!(page.contains("No output was recorded"));
    assert!(!page.contains("class=\"msg\""));
}

#[test]
fn huge_lines_are_cut_and_invalid_utf8_survives() {
    let mut log = Vec::new();
    log.extend_from_slice(b"2026-11-25T15:08:56.123Z | ");
    log.resize(log.len() + MAX_LINE + 1000, b'a');
    log.extend_from_slice(b"\nraw \xff bytes\nlast line without newline");
    let mut out = Vec::new();
    write_lines(&log[..], &mut out).unwrap();
    let html = String::from_utf8(out).unwrap();
    let cut = 27 + MAX_LINE + 1000 - MAX_LINE;
    assert!(
        html.contains(&format!("[line cut: {cut} more bytes not shown]")),
        "{}",
        &html[html.len() - 300..]
    );
    assert!(html.contains("raw \u{fffd} bytes"));
    assert!(html.ends_with("<span class=\"x\">last line without newline</span></div>\n"));
    assert_eq!(html.matches("<div class=\"l").count(), 4);
}

#[test]
fn a_huge_log_shows_its_end_with_a_note() {
    let dir = TempDir::new("html-cap");
    let log = dir.path().join("big.log");
    let mut text = Vec::new();
    let mut line = Vec::new();
    let mut i = 0u64;
    while (text.len() as u64) < MAX_HTML_LOG + 1_000_000 {
        format_line(
            &mut line,
            at(),
            LineKind::Output,
            format!("line {i}").as_bytes(),
        );
        text.extend_from_slice(&line);
        i += 1;
    }
    std::fs::write(&log, &text).unwrap();
    let html = dir.path().join("big.html");
    write_case_html(&whole(&log), &html, &meta()).unwrap();
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("bytes of this case&#x27;s log are not shown")
            || page.contains("bytes of this case's log are not shown")
    );
    assert!(
        page.contains(&format!(">line {}<", i - 1)),
        "the end is shown"
    );
    assert!(!page.contains(">line 0<"), "the start is not");
    assert!((page.len() as u64) < 4 * MAX_HTML_LOG);
}

#[test]
fn a_retried_case_tries_stand_out() {
    for marker in [
        "case TC try 2 of 3 (same boot)",
        "case TC try 1 of 3 failed in 5 ms: step <run>: command exited with code 1, expected 0",
    ] {
        let html = render(LineKind::Event, marker.as_bytes());
        assert!(html.starts_with("<div class=\"l e try\">"), "{html}");
    }
    for other in [
        "case TC started",
        "case TC try again",
        "case TC try 2 of x",
        "try 2 of 3",
    ] {
        let html = render(LineKind::Event, other.as_bytes());
        assert!(html.starts_with("<div class=\"l e\">"), "{other}: {html}");
    }
    let html = render(LineKind::Output, b"case TC try 2 of 3");
    assert!(html.starts_with("<div class=\"l o\">"), "{html}");
}
