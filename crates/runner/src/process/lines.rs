//! Splitting a child's output into lines for a callback, with a bounded buffer.

use super::*;

/// Splits a byte stream into lines for a callback, with a bounded buffer.
#[derive(Debug, Default)]
pub(super) struct LineSplitter {
    /// The start of a line whose end has not arrived yet; never longer than `MAX_LINE`.
    pub(super) partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds one chunk; hands every completed line (and every full `MAX_LINE` piece) to `emit`.
    pub(super) fn push(&mut self, mut chunk: &[u8], emit: &mut (dyn FnMut(&[u8]) + Send)) {
        while !chunk.is_empty() {
            let newline = chunk.iter().position(|&b| b == b'\n');
            let seg_len = newline.unwrap_or(chunk.len());
            let room = MAX_LINE - self.partial.len();
            if seg_len > room {
                // The line would exceed MAX_LINE: deliver a full piece and carry on.
                self.partial.extend_from_slice(&chunk[..room]);
                emit(&self.partial);
                self.partial.clear();
                chunk = &chunk[room..];
                continue;
            }
            match newline {
                Some(i) => {
                    if self.partial.is_empty() {
                        emit(strip_cr(&chunk[..i]));
                    } else {
                        self.partial.extend_from_slice(&chunk[..i]);
                        let line = strip_cr(&self.partial);
                        emit(line);
                        self.partial.clear();
                    }
                    chunk = &chunk[i + 1..];
                }
                None => {
                    self.partial.extend_from_slice(chunk);
                    chunk = &[];
                }
            }
        }
    }

    /// Delivers a final line that had no newline.
    pub(super) fn finish(&mut self, emit: &mut (dyn FnMut(&[u8]) + Send)) {
        if !self.partial.is_empty() {
            emit(&self.partial);
            self.partial.clear();
        }
    }
}

/// Drops the `\r` of a `\r\n` line ending.
pub(super) fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}
