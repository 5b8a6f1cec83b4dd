//! Text content of an element, trimmed of the whitespace that was written literally.
//!
//! Leading and trailing spaces, tabs and line breaks typed into the file (indentation) are
//! trimmed; whitespace written as a character reference (`&#32;`, `&#13;`) or inside a CDATA
//! section is part of the text and kept. To know which is which, the element's raw source is
//! decoded here once more; the result is checked against roxmltree's decoding, and if they ever
//! disagree, roxmltree's text trimmed of all surrounding whitespace is used.

use roxmltree::{Node, NodeType};

/// One decoded character and whether it was written literally in the file.
type Marked = (char, bool);

/// The element's text children joined, trimmed of literal surrounding whitespace.
pub(crate) fn element_text(source: &str, node: Node<'_, '_>) -> String {
    let plain: String = node
        .children()
        .filter(|c| c.is_text())
        .filter_map(|c| c.text())
        .collect();
    match marked_text(source, node) {
        Some(marked) if marked.iter().map(|m| m.0).eq(plain.chars()) => trim_literal(&marked),
        _ => {
            #[cfg(test)]
            MISMATCHES.with(|m| m.set(m.get() + 1));
            plain.trim_matches(is_xml_space).to_string()
        }
    }
}

#[cfg(test)]
thread_local! {
    /// How often the own decoding disagreed with roxmltree's (must stay 0; checked by the fuzz test).
    pub(crate) static MISMATCHES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn trim_literal(marked: &[Marked]) -> String {
    let trimmable = |m: &&Marked| m.1 && is_xml_space(m.0);
    let start = marked.iter().take_while(trimmable).count();
    let end = marked.len() - marked.iter().rev().take_while(trimmable).count();
    marked
        .get(start..end.max(start))
        .unwrap_or(&[])
        .iter()
        .map(|m| m.0)
        .collect()
}

/// Decodes every text child of `node` from the raw source, marking literal characters.
fn marked_text(source: &str, node: Node<'_, '_>) -> Option<Vec<Marked>> {
    if !node.children().any(|c| c.is_text()) {
        return Some(Vec::new());
    }
    let range = node.range();
    let raw = source.get(range.clone())?;
    // Content ends where the end tag starts (an element with children always has one).
    let content_end = range.start + raw.rfind("</")?;
    let mut out = Vec::new();
    for child in node.children() {
        if child.node_type() != NodeType::Text {
            continue;
        }
        // A text node's range covers only its first segment when text and CDATA are merged,
        // so the segment runs to the next sibling (or the end tag) instead.
        let start = child.range().start;
        let end = child
            .next_sibling()
            .map_or(content_end, |n| n.range().start);
        decode(source.get(start..end)?, &mut out)?;
    }
    Some(out)
}

/// Decodes character data: entities, character references, CDATA, line-end normalisation.
fn decode(mut rest: &str, out: &mut Vec<Marked>) -> Option<()> {
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("<![CDATA[") {
            let end = after.find("]]>")?;
            push_normalized(after.get(..end)?, false, out);
            rest = after.get(end + 3..)?;
        } else if let Some(after) = rest.strip_prefix('&') {
            let end = after.find(';')?;
            out.push((reference(after.get(..end)?)?, false));
            rest = after.get(end + 1..)?;
        } else if rest.starts_with('<') {
            return None;
        } else {
            let end = rest.find(['&', '<']).unwrap_or(rest.len());
            push_normalized(rest.get(..end)?, true, out);
            rest = rest.get(end..)?;
        }
    }
    Some(())
}

/// Pushes text with XML line-end normalisation (`\r\n` and a lone `\r` become `\n`).
fn push_normalized(text: &str, literal: bool, out: &mut Vec<Marked>) {
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' {
            if chars.peek() == Some(&'\n') {
                chars.next();
            }
            out.push(('\n', literal));
        } else {
            out.push((c, literal));
        }
    }
}

/// Resolves the name between `&` and `;`: a predefined entity or a character reference.
fn reference(name: &str) -> Option<char> {
    let code = match name {
        "lt" => return Some('<'),
        "gt" => return Some('>'),
        "amp" => return Some('&'),
        "quot" => return Some('"'),
        "apos" => return Some('\''),
        _ => match name.strip_prefix("#x") {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => name.strip_prefix('#')?.parse().ok()?,
        },
    };
    // Like roxmltree: a code point that is no `char` (a surrogate) reads as U+FFFD.
    Some(char::from_u32(code).unwrap_or('\u{FFFD}'))
}

#[cfg(test)]
mod tests {
    use super::{element_text, MISMATCHES};

    fn text_of(xml: &str) -> String {
        let doc = roxmltree::Document::parse(xml).unwrap();
        element_text(xml, doc.root_element())
    }

    #[test]
    fn literal_whitespace_is_trimmed_references_and_cdata_are_kept() {
        let before = MISMATCHES.with(|m| m.get());
        assert_eq!(text_of("<a>\n   help  \n</a>"), "help");
        assert_eq!(text_of("<a>\r\n  AT&#13;\r\n</a>"), "AT\r");
        assert_eq!(text_of("<a> &#32;y&#x20; </a>"), " y ");
        assert_eq!(text_of("<a>\n  <![CDATA[ x<y ]]>\n</a>"), " x<y ");
        assert_eq!(text_of("<a> p <!-- c --> q </a>"), "p  q");
        assert_eq!(
            text_of("<a> x <![CDATA[ y ]]> z &lt;&gt;&amp;&quot;&apos; </a>"),
            "x  y  z <>&\"'"
        );
        assert_eq!(text_of("<a>one\r\n  two\rthree</a>"), "one\n  two\nthree");
        assert_eq!(text_of("<a><![CDATA[\r\n]]></a>"), "\n");
        assert_eq!(text_of("<a>   </a>"), "");
        assert_eq!(text_of("<a/>"), "");
        assert_eq!(text_of("<a>é&#xE9;&#233;</a>"), "ééé");
        assert_eq!(text_of("<a>&#xD800;</a>"), "\u{FFFD}");
        assert_eq!(MISMATCHES.with(|m| m.get()), before);
    }
}
