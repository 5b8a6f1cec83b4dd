//! Byte offset → (line, column), the way roxmltree's `Document::text_pos_at` counts, but fast:
//! the line by binary search, the column by counting characters on from the previous lookup
//! when it was earlier on the same line, so lookups in source order along one long line (a
//! whole file written on one line) cost linear time in total, not quadratic.

use std::cell::Cell;

/// Start offsets of every line of a source text.
pub(crate) struct LineIndex<'s> {
    source: &'s str,
    starts: Vec<usize>,
    /// The last lookup: line index, byte offset and 0-based column.
    last: Cell<(usize, usize, usize)>,
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
        LineIndex {
            source,
            starts,
            last: Cell::new((0, 0, 0)),
        }
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
        let (last_line, last_offset, last_column) = self.last.get();
        let (from, before) =
            if last_line == line_index && (line_start..=offset).contains(&last_offset) {
                (last_offset, last_column)
            } else {
                (line_start, 0)
            };
        let column = before
            + self
                .source
                .get(from..offset)
                .map_or(0, |s| s.chars().count());
        self.last.set((line_index, offset, column));
        (to_u32(line_index + 1), to_u32(column + 1))
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
    fn any_order_of_lookups_gives_the_same_positions() {
        let text = "<a é='1'>\n  <b x='ü'/> <c/>\n<d>€</d></a>";
        let fresh = |offset| LineIndex::new(text).position(offset);
        let index = LineIndex::new(text);
        for offset in [30, 5, 6, 12, 40, 11, 3, 29, 0, 100, 14, 13] {
            assert_eq!(index.position(offset), fresh(offset), "offset {offset}");
        }
    }

    #[test]
    fn lookups_along_one_long_line_take_linear_time() {
        let text = "<r>".to_string() + &"<é/>".repeat(400_000) + "</r>";
        let index = LineIndex::new(&text);
        let start = std::time::Instant::now();
        let mut last = (0, 0);
        for (offset, _) in text.match_indices('<') {
            last = index.position(offset);
        }
        assert_eq!(last, (1, 3 + 4 * 400_000 + 1));
        // Counting from the line start each time would be 4e11 bytes: about a minute.
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn inside_a_multibyte_char_clamps_back() {
        let index = LineIndex::new("aé");
        assert_eq!(index.position(2), (1, 2));
        assert_eq!(index.end(), (1, 3));
    }
}
