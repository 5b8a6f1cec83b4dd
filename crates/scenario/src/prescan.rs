//! A cheap look at the raw text before the XML parser sees it: nesting depth and element count.
//!
//! roxmltree 0.20 parses an element's content by calling itself once per open element
//! (`parse_element` → `parse_content` → `parse_element`), so a file of a few thousand nested
//! elements overflows the thread's stack and aborts the process. This scan keeps one counter
//! instead of a call stack. It reads markup the way roxmltree does (comments, CDATA,
//! processing instructions and quoted attribute values are skipped whole); where the two could
//! read the text differently, roxmltree reports an error at or before that point, so the
//! depth counted here is never below the depth roxmltree reaches.

use crate::{MAX_DEPTH, MAX_ELEMENTS};

/// A bound the file breaks, at the byte offset of the element that breaks it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Violation {
    /// Byte offset of the element's `<`.
    pub(crate) offset: usize,
    /// What is wrong.
    pub(crate) message: String,
}

/// Checks [`MAX_DEPTH`] and [`MAX_ELEMENTS`]; malformed markup is left to the XML parser.
pub(crate) fn check(source: &str) -> Result<(), Violation> {
    scan(source).violation.map_or(Ok(()), Err)
}

/// What the scan found: the deepest nesting and the element count up to where it stopped.
#[derive(Debug, Default)]
pub(crate) struct Shape {
    /// Deepest nesting seen (the root element is level 1).
    pub(crate) depth: usize,
    /// Start tags seen.
    pub(crate) elements: usize,
    /// The first bound broken, if any (the scan stops there).
    pub(crate) violation: Option<Violation>,
}

/// Walks the markup without recursion, stopping at the first broken bound.
pub(crate) fn scan(source: &str) -> Shape {
    let b = source.as_bytes();
    let mut shape = Shape::default();
    let mut depth = 0usize;
    let mut i = 0usize;
    while let Some(lt) = find(b, i, b"<") {
        let rest = b.get(lt..).unwrap_or(&[]);
        let after = if rest.starts_with(b"<!--") {
            find(b, lt + 4, b"-->").map(|end| end + 3)
        } else if rest.starts_with(b"<![CDATA[") {
            find(b, lt + 9, b"]]>").map(|end| end + 3)
        } else if rest.starts_with(b"<?") {
            find(b, lt + 2, b"?>").map(|end| end + 2)
        } else if rest.starts_with(b"<!") {
            // A DOCTYPE or other declaration: roxmltree refuses it right there.
            None
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            Some(lt + 2)
        } else {
            shape.elements += 1;
            if shape.elements > MAX_ELEMENTS {
                shape.violation = Some(Violation {
                    offset: lt,
                    message: format!(
                        "more than {MAX_ELEMENTS} elements; split the scenario into several files"
                    ),
                });
                return shape;
            }
            // This element's level, whether it is empty (`<a/>`) or opens content.
            let level = depth + 1;
            shape.depth = shape.depth.max(level);
            if level > MAX_DEPTH {
                shape.violation = Some(Violation {
                    offset: lt,
                    message: format!(
                        "elements nested deeper than {MAX_DEPTH} levels (a scenario needs 3)"
                    ),
                });
                return shape;
            }
            let end = start_tag_end(b, lt + 1);
            if let Some(end) = end {
                if b.get(end.wrapping_sub(1)) != Some(&b'/') {
                    depth = level;
                }
            }
            end.map(|end| end + 1)
        };
        match after {
            Some(next) => i = next,
            // Unterminated markup: the XML parser reports it and goes no deeper.
            None => break,
        }
    }
    shape
}

/// Offset of the `>` that ends a start tag whose name starts at `from`, skipping quoted values.
fn start_tag_end(b: &[u8], from: usize) -> Option<usize> {
    let mut quote = None;
    for (offset, &c) in b.iter().enumerate().skip(from) {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'"' || c == b'\'' => quote = Some(c),
            None if c == b'>' => return Some(offset),
            None => {}
        }
    }
    None
}

/// Offset of the first `needle` at or after `from`.
fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut at = from;
    while let Some(hit) = b.get(at..)?.iter().position(|&c| c == first) {
        let start = at + hit;
        if b.get(start..)?.starts_with(needle) {
            return Some(start);
        }
        at = start + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{check, scan};
    use crate::{MAX_DEPTH, MAX_ELEMENTS};

    fn nested(levels: usize) -> String {
        format!("{}{}", "<a>".repeat(levels), "</a>".repeat(levels))
    }

    #[test]
    fn depth_and_count_follow_the_markup() {
        let s = scan("<?xml version='1.0'?><!-- <x><y> --><a><b x='<c>' y=\"/\"><![CDATA[<d><e>]]><?pi <f> ?></b><g/><h></h></a>");
        assert_eq!((s.depth, s.elements, s.violation), (2, 4, None));
        // `/` inside a quoted value does not make the tag empty; `/>` does.
        assert_eq!(scan("<a x='/'><b y='/'></b></a>").depth, 2);
        assert_eq!(scan("<a><b/><c /></a><d/>").depth, 2);
        assert_eq!(scan("<a><b/><c /></a><d/>").elements, 4);
        // An empty element one level too deep is too deep as well.
        let v = check(&format!("{}<b/>", "<a>".repeat(MAX_DEPTH))).unwrap_err();
        assert_eq!(v.offset, 3 * MAX_DEPTH);
        assert_eq!(scan(&nested(MAX_DEPTH)).depth, MAX_DEPTH);
        assert_eq!(check(&nested(MAX_DEPTH)), Ok(()));
    }

    #[test]
    fn one_level_too_deep_is_refused_at_that_element() {
        let text = nested(MAX_DEPTH + 1);
        let v = check(&text).unwrap_err();
        assert_eq!(v.offset, 3 * MAX_DEPTH);
        assert!(
            v.message.contains("nested deeper than 32 levels"),
            "{}",
            v.message
        );
        // Closed elements free their level again.
        let siblings = format!("<r>{}</r>", nested(MAX_DEPTH - 1).repeat(3));
        assert_eq!(check(&siblings), Ok(()));
    }

    #[test]
    fn too_many_elements_are_refused_at_the_first_one_over() {
        let ok = format!("<r>{}</r>", "<a/>".repeat(MAX_ELEMENTS - 1));
        assert_eq!(check(&ok), Ok(()));
        let text = format!("<r>{}</r>", "<a/>".repeat(MAX_ELEMENTS));
        let v = check(&text).unwrap_err();
        assert_eq!(v.offset, 3 + 4 * (MAX_ELEMENTS - 1));
        assert!(
            v.message.contains("more than 200000 elements"),
            "{}",
            v.message
        );
    }

    #[test]
    fn unterminated_markup_stops_the_scan_quietly() {
        for text in [
            "<a><!-- <b>",
            "<a><![CDATA[",
            "<a><?pi",
            "<a x='",
            "<!DOCTYPE a [<!ENTITY e '<b>'>]><a>",
        ] {
            assert!(check(text).is_ok(), "{text}");
        }
    }
}
