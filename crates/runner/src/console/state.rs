//! The console's searchable state: unconsumed lines, the partial line, the recent-lines ring, the fail pattern and the lines around its hit.

use super::*;

pub(super) struct State {
    pub(super) lines: VecDeque<Line>,
    pub(super) next_seq: u64,
    pub(super) partial: Vec<u8>,
    pub(super) partial_consumed: usize,
    pub(super) closed: Option<String>,
    pub(super) last_output: Instant,
    pub(super) fail_pattern: Option<Regex>,
    pub(super) fail_hit: Option<u64>,
    /// The lines around the fail pattern's hit, kept apart from `recent` so that a crash
    /// followed by a long reboot banner is still quoted with its own lines.
    pub(super) crash: Vec<(u64, Arc<[u8]>)>,
    pub(super) recent: VecDeque<(u64, Arc<[u8]>)>,
}

/// One unconsumed console line: shared with the recent-lines ring (one allocation per line).
pub(super) struct Line {
    pub(super) seq: u64,
    pub(super) text: Arc<[u8]>,
    /// Bytes at the start already consumed by an `expect` that matched the partial line.
    pub(super) skip: usize,
}

impl Line {
    /// The part an `expect` may still match.
    pub(super) fn searchable(&self) -> &[u8] {
        &self.text[self.skip.min(self.text.len())..]
    }
}

impl State {
    pub(super) fn new() -> State {
        State {
            lines: VecDeque::new(),
            next_seq: 0,
            partial: Vec::new(),
            partial_consumed: 0,
            closed: None,
            last_output: Instant::now(),
            fail_pattern: None,
            fail_hit: None,
            crash: Vec::new(),
            recent: VecDeque::new(),
        }
    }

    /// The last `n` lines seen (and the pending partial line), indented, for messages.
    pub(super) fn last_lines(&self, n: usize) -> String {
        let mut out: Vec<String> = self
            .recent
            .iter()
            .rev()
            .take(n)
            .rev()
            .map(|(_, l)| format!("  {}", lossy(l)))
            .collect();
        if !self.partial.is_empty() {
            out.push(format!(
                "  {} (no newline yet)",
                lossy(&self.partial).trim_end()
            ));
        }
        if out.is_empty() {
            "  (no output)".into()
        } else {
            out.join("\n")
        }
    }

    pub(super) fn push_line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.fail_hit.is_none() {
            if let Some(re) = &self.fail_pattern {
                if re.is_match(&lossy(line)) {
                    self.fail_hit = Some(seq);
                }
            }
        }
        let text: Arc<[u8]> = Arc::from(line);
        self.keep_crash_context(seq, &text);
        if self.recent.len() == RECENT_LINES {
            self.recent.pop_front();
        }
        self.recent.push_back((seq, text.clone()));
        let skip = std::mem::take(&mut self.partial_consumed);
        if self.lines.len() == MAX_BUFFERED_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(Line { seq, text, skip });
    }
}

impl State {
    /// On the fail pattern's hit, keeps the lines before it; then the lines after it.
    pub(super) fn keep_crash_context(&mut self, seq: u64, text: &Arc<[u8]>) {
        let Some(hit) = self.fail_hit else { return };
        if seq == hit {
            let before = self.recent.len().saturating_sub(CRASH_BEFORE);
            self.crash = self.recent.iter().skip(before).cloned().collect();
        }
        if seq <= hit + CRASH_AFTER {
            self.crash.push((seq, text.clone()));
        }
    }
}

/// `b` as text, invalid UTF-8 replaced. Every console line goes through here (for `expect`),
/// so valid text is checked with `from_utf8` first: its ASCII fast path is ~1 instruction per
/// byte, `from_utf8_lossy`'s decoder ~8 (callgrind).
pub(super) fn lossy(b: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(b),
    }
}

pub(super) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}
