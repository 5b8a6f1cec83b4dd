//! Byte offset → (line, column), the way roxmltree's `Document::text_pos_at` counts, but in
//! O(log n) per lookup so that a large file with many diagnostics stays fast.

/// Start offsets of every line of a source text.
pub(crate) struct LineIndex<'s> {
    source: &'s str,
    starts: Vec<usize>,
}

impl<'s> LineIndex<'s> {
    /// Indexes `source`; lines are split at `\n` only (a `\r` before it counts as a column).
    pub(crate) fn new(source: &'s str) -> Self {
        let mut starts = vec![0];
        starts.extend(
            source
                .bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex { source, starts }
    }

    /// 1-based line and column (in characters) of a byte offset; out-of-range offsets clamp to the end.
    pub(crate) fn position(&self, offset: usize) -> (u32, u32) {
        let mut offset = offset.min(self.source.len());
        while offset > 0 && !self.source.is_char_boundary(offset) {
            offset -= 1;
        }
        let line_index = match self.starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let line_start = self.starts.get(line_index).copied().unwrap_or(0);
        let column = self
            .source
            .get(line_start..offset)
            .map_or(0, |s| s.chars().count())
            + 1;
        (to_u32(line_index + 1), to_u32(column))
    }

    /// Position of the end of the text.
    pub(crate) fn end(&self) -> (u32, u32) {
        self.position(self.source.len())
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::LineIndex;

    #[test]
    fn agrees_with_roxmltree() {
        let text = "<a>\r\n  <b x='é'/>\n\n<c>ü</c>\n</a>";
        let doc = roxmltree::Document::parse(text).unwrap();
        let index = LineIndex::new(text);
        for offset in (0..=text.len() + 3).filter(|&o| o > text.len() || text.is_char_boundary(o)) {
            let expected = doc.text_pos_at(offset);
            assert_eq!(
                index.position(offset),
                (expected.row, expected.col),
                "offset {offset}"
            );
        }
    }

    #[test]
    fn inside_a_multibyte_char_clamps_back() {
        let index = LineIndex::new("aé");
        assert_eq!(index.position(2), (1, 2));
        assert_eq!(index.end(), (1, 3));
    }
}
