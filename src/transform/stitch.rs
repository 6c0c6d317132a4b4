//! Streaming tokenization of a text that arrives as (offset, bytes) chunks,
//! in any order, possibly overlapping, cut anywhere (even inside a UTF-8
//! character).
//!
//! A *cut* is a position where the tokenizer's output splits into "ids of
//! the text before" ++ "ids of the text after", whatever the rest of the
//! text is ([`CutRule`] says which positions qualify for a tokenizer, from
//! the bytes right around them). Every run of received bytes is tokenized
//! from its first cut to its last as soon as it arrives (an *island* of
//! final ids); the bytes outside islands wait for their neighbours. So a
//! chunk that arrives early is tokenized at once, and when the chunk
//! before it comes, only the few bytes between the two islands are left.
//! A span with no cut in it (a word longer than the chunks) simply stays
//! until its ends are known, and is tokenized then.
//!
//! The received bytes are kept (sparse, never more than the text) so that
//! every overlapping byte of a later chunk can be checked (MALFORMED if it
//! differs): a chunk may overlap any earlier one, by any amount.

/// Which positions of a text are cuts for a tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutRule {
    /// BERT: after an ASCII space, tab, CR or LF (BertNormalizer maps them
    /// to a space, a starter, so NFD cannot reach across, and
    /// BertPreTokenizer drops it); with `chinese`, also on both sides of a
    /// CJK ideograph, which BertNormalizer surrounds with spaces.
    AfterAsciiWhitespace { chinese: bool },
    /// Byte-level BPE with the GPT-2 or cl100k split regex: before an ASCII
    /// space that follows a printable ASCII char and precedes an ASCII
    /// letter. No alternative of those regexes can match across `X| L`:
    /// the pre-token holding X ends at X (letters, digits and punctuation
    /// runs all stop at a space), and " L..." starts a `?\p{L}+` pre-token
    /// that cannot look behind.
    BeforeSpaceLetter,
    /// No known cut: the text is tokenized whole once it is complete.
    Never,
}

fn ascii_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The char whose bytes start at `i` of `buf`, if they are all in `buf`
/// and valid.
fn char_at(buf: &[u8], i: usize) -> Option<char> {
    let len = match buf.get(i)? {
        0..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => return None,
    };
    let bytes = buf.get(i..i + len)?;
    std::str::from_utf8(bytes).ok()?.chars().next()
}

/// The char whose bytes end right before `i`, if valid and in `buf`.
fn char_before(buf: &[u8], i: usize) -> Option<char> {
    (1..=4.min(i))
        .filter(|&n| (buf[i - n] & 0xC0) != 0x80)
        .find_map(|n| char_at(buf, i - n).filter(|c| c.len_utf8() == n))
}

impl CutRule {
    /// Whether `i` (0 < i < buf.len()) of a run of known bytes is a cut.
    /// Cuts are always char boundaries of a valid text: right after an
    /// ASCII byte, or at the lead byte / after the last byte of a validated
    /// multi-byte char.
    pub fn is_cut(self, buf: &[u8], i: usize) -> bool {
        match self {
            CutRule::AfterAsciiWhitespace { chinese } => {
                ascii_ws(buf[i - 1])
                    || (chinese
                        && buf[i] >= 0xE0
                        && char_at(buf, i).is_some_and(super::wordpiece::is_chinese_char))
                    || (chinese
                        && buf[i - 1] >= 0x80
                        && char_before(buf, i).is_some_and(super::wordpiece::is_chinese_char))
            }
            CutRule::BeforeSpaceLetter => {
                buf[i] == b' '
                    && (0x21..=0x7E).contains(&buf[i - 1])
                    && buf.get(i + 1).is_some_and(u8::is_ascii_alphabetic)
            }
            CutRule::Never => false,
        }
    }
}

use smallvec::SmallVec;

/// Bytes (and tokens x4) reserved up front for a text's first run and
/// island: most texts fit, and a large claimed total_len costs at most this.
const PREALLOCATE: usize = 64 * 1024;

/// How far from a position [`CutRule::is_cut`] looks (a UTF-8 char).
const CUT_CONTEXT: usize = 4;

/// A protocol error found while stitching.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StitchError {
    #[error("overlapping chunks disagree at byte {0}")]
    OverlapMismatch(usize),
    #[error("chunk [{offset}, {end}) lies outside the text of {total_len} bytes")]
    OutOfRange {
        offset: usize,
        end: usize,
        total_len: usize,
    },
    #[error("chunks leave bytes of the text uncovered")]
    Uncovered,
    #[error("text is not valid UTF-8 (around byte {0})")]
    InvalidUtf8(usize),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

/// Received bytes [start, end()): `buf[head..]`. The free room before
/// `head` lets chunks that arrive in reverse order be prepended without
/// moving the run each time.
#[derive(Debug)]
struct Run {
    start: usize,
    buf: Vec<u8>,
    head: usize,
}

impl Run {
    fn new(start: usize, bytes: &[u8], capacity: usize) -> Run {
        let mut buf = Vec::with_capacity(capacity.max(bytes.len()));
        buf.extend_from_slice(bytes);
        Run {
            start,
            buf,
            head: 0,
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.head..]
    }

    fn end(&self) -> usize {
        self.start + self.buf.len() - self.head
    }

    fn append(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn prepend(&mut self, bytes: &[u8]) {
        if bytes.len() > self.head {
            // Room grows geometrically: amortized O(1) per byte whatever
            // the arrival order.
            let len = self.buf.len() - self.head;
            let room = bytes.len().max(len);
            let mut buf = Vec::with_capacity(room + len);
            buf.resize(room, 0);
            buf.extend_from_slice(self.bytes());
            self.buf = buf;
            self.head = room;
        }
        self.head -= bytes.len();
        self.buf[self.head..self.head + bytes.len()].copy_from_slice(bytes);
        self.start -= bytes.len();
    }
}

/// Final ids of the text [start, end), whose ends are cuts.
#[derive(Debug)]
struct Island<T> {
    start: usize,
    end: usize,
    ids: Vec<T>,
}

/// The streaming state of one text. Pure: no clock, no I/O. `T` is the
/// token id type the span tokenizer appends.
#[derive(Debug)]
pub struct Stitcher<T = u32> {
    total_len: usize,
    rule: CutRule,
    /// Sorted, disjoint and not adjacent (adjacent runs are merged).
    runs: SmallVec<[Run; 2]>,
    /// Sorted, disjoint and not adjacent.
    islands: SmallVec<[Island<T>; 2]>,
    /// First invalid UTF-8 position seen; reported at `finish` so that a
    /// later overlap mismatch (MALFORMED) still takes precedence.
    invalid_at: Option<usize>,
    /// Spans shorter than this wait for more bytes (until `finish`): a
    /// tokenizer with a fixed cost per call runs on fewer, longer spans.
    min_span: usize,
    /// Cut pairs of spans that waited: (first cut, last cut) of their gap.
    deferred: SmallVec<[(usize, usize); 2]>,
    /// Reused buffer of the gaps between islands of a run.
    gaps: SmallVec<[(usize, usize); 4]>,
}

impl<T: Copy> Stitcher<T> {
    pub fn new(total_len: usize, rule: CutRule) -> Stitcher<T> {
        Stitcher {
            total_len,
            rule,
            runs: SmallVec::new(),
            islands: SmallVec::new(),
            invalid_at: None,
            min_span: 0,
            deferred: SmallVec::new(),
            gaps: SmallVec::new(),
        }
    }

    /// Spans shorter than `min_span` bytes are tokenized later, with the
    /// bytes that follow them (or at `finish`).
    pub fn with_min_span(mut self, min_span: usize) -> Stitcher<T> {
        self.min_span = min_span;
        self
    }

    /// Bytes held (received text and ids), for the in-flight limits.
    pub fn held_bytes(&self) -> usize {
        self.runs.iter().map(|r| r.buf.capacity()).sum::<usize>()
            + self
                .islands
                .iter()
                .map(|i| i.ids.capacity() * 4)
                .sum::<usize>()
            + (self.runs.capacity() + self.islands.capacity()) * 48
    }

    /// Number of bytes tokenized so far (for tests and stats).
    pub fn tokenized_bytes(&self) -> usize {
        self.islands.iter().map(|i| i.end - i.start).sum()
    }

    /// Takes a chunk, checks it against the bytes already received, and
    /// tokenizes whatever it makes final. `tokenize` appends the ids of a
    /// text span (no special tokens) to the vector.
    pub fn add<F>(
        &mut self,
        offset: usize,
        chunk: &[u8],
        tokenize: &mut F,
    ) -> Result<(), StitchError>
    where
        F: FnMut(&str, &mut Vec<T>) -> Result<(), String>,
    {
        let end = offset + chunk.len();
        if end > self.total_len {
            return Err(StitchError::OutOfRange {
                offset,
                end,
                total_len: self.total_len,
            });
        }
        if chunk.is_empty() {
            return Ok(());
        }
        let at = self.merge(offset, chunk)?;
        if self.invalid_at.is_none() {
            // Whether a position is a cut depends on the bytes within
            // CUT_CONTEXT of it, so only positions that close to the new
            // bytes can have become cuts; every other position of the run
            // was decided before. This keeps each chunk's work in
            // proportion to its size even when no cut comes for long.
            let window = (offset.saturating_sub(CUT_CONTEXT), end + CUT_CONTEXT);
            self.tokenize_run(at, window, false, tokenize)?;
        }
        Ok(())
    }

    /// Puts the chunk into `runs`, checking overlaps; returns the index of
    /// the run that now holds it.
    fn merge(&mut self, offset: usize, chunk: &[u8]) -> Result<usize, StitchError> {
        let end = offset + chunk.len();
        // Runs that overlap or touch [offset, end).
        let first = self.runs.partition_point(|r| r.end() < offset);
        let last = self.runs.partition_point(|r| r.start <= end);
        for r in &self.runs[first..last] {
            let (lo, hi) = (r.start.max(offset), r.end().min(end));
            if lo < hi {
                let theirs = &r.bytes()[lo - r.start..hi - r.start];
                let ours = &chunk[lo - offset..hi - offset];
                if let Some(k) = theirs.iter().zip(ours).position(|(a, b)| a != b) {
                    return Err(StitchError::OverlapMismatch(lo + k));
                }
            }
        }
        if first == last {
            // Room for the rest of the text when the run starts it (the
            // in-order case), capped so that a claimed total_len costs
            // nothing before its bytes arrive.
            let capacity = if offset == 0 {
                self.total_len.min(PREALLOCATE)
            } else {
                0
            };
            self.runs.insert(first, Run::new(offset, chunk, capacity));
            return Ok(first);
        }
        // Runs first+1..last are folded into run `first`.
        let later: Vec<Run> = self.runs.drain(first + 1..last).collect();
        let base = &mut self.runs[first];
        if offset < base.start {
            base.prepend(&chunk[..base.start - offset]);
        }
        if end > base.end() {
            let from = base.end() - offset;
            base.append(&chunk[from..]);
        }
        for r in later {
            if r.end() > base.end() {
                let from = base.end() - r.start;
                base.append(&r.bytes()[from..]);
            }
        }
        Ok(first)
    }

    fn is_cut_at(&self, run: &Run, pos: usize) -> bool {
        pos == 0
            || pos == self.total_len
            || (pos > run.start
                && pos < run.end()
                && self.rule.is_cut(run.bytes(), pos - run.start))
    }

    /// Tokenizes every span of run `at` between cuts that is not an island
    /// yet. New cuts are looked for only in `window`: outside it, the
    /// parts of the run that are not islands have none (the invariant
    /// each call leaves behind: a gap is tokenized from its first cut to
    /// its last).
    fn tokenize_run<F>(
        &mut self,
        at: usize,
        window: (usize, usize),
        force: bool,
        tokenize: &mut F,
    ) -> Result<(), StitchError>
    where
        F: FnMut(&str, &mut Vec<T>) -> Result<(), String>,
    {
        let (run_start, run_end) = (self.runs[at].start, self.runs[at].end());
        // Gaps between the islands inside the run.
        let mut gaps = std::mem::take(&mut self.gaps);
        gaps.clear();
        let mut pos = run_start;
        let first = self.islands.partition_point(|i| i.end <= run_start);
        for island in self.islands[first..]
            .iter()
            .take_while(|i| i.start < run_end)
        {
            if island.start > pos {
                gaps.push((pos, island.start));
            }
            pos = island.end;
        }
        if pos < run_end {
            gaps.push((pos, run_end));
        }
        let result = self.tokenize_gaps(at, window, force, &gaps, tokenize);
        self.gaps = gaps;
        result
    }

    fn tokenize_gaps<F>(
        &mut self,
        at: usize,
        window: (usize, usize),
        force: bool,
        gaps: &[(usize, usize)],
        tokenize: &mut F,
    ) -> Result<(), StitchError>
    where
        F: FnMut(&str, &mut Vec<T>) -> Result<(), String>,
    {
        for &(g0, g1) in gaps {
            let run = &self.runs[at];
            let island_end_at_g0 = self.islands.iter().any(|i| i.end == g0);
            let island_start_at_g1 = self.islands.iter().any(|i| i.start == g1);
            let c0 = if island_end_at_g0 || self.is_cut_at(run, g0) {
                Some(g0)
            } else {
                (window.0.max(g0 + 1)..=window.1.min(g1)).find(|&p| self.is_cut_at(run, p))
            };
            let c1 = if island_start_at_g1 || self.is_cut_at(run, g1) {
                Some(g1)
            } else {
                (window.0.max(g0)..window.1.min(g1))
                    .rev()
                    .find(|&p| self.is_cut_at(run, p))
            };
            // Cuts found earlier in this gap by a span that waited.
            let (mut c0, mut c1) = (c0, c1);
            self.deferred.retain(|&mut (d0, d1)| {
                let inside = g0 <= d0 && d1 <= g1;
                if inside {
                    c0 = Some(c0.map_or(d0, |c| c.min(d0)));
                    c1 = Some(c1.map_or(d1, |c| c.max(d1)));
                }
                !inside
            });
            let (Some(c0), Some(c1)) = (c0, c1) else {
                continue;
            };
            if c0 >= c1 {
                continue;
            }
            if !force && c1 - c0 < self.min_span {
                self.deferred.push((c0, c1));
                continue;
            }
            let run = &self.runs[at];
            let bytes = &run.bytes()[c0 - run.start..c1 - run.start];
            let text = match std::str::from_utf8(bytes) {
                Ok(t) => t,
                Err(e) => {
                    self.invalid_at = Some(c0 + e.valid_up_to());
                    return Ok(());
                }
            };
            // Appended straight to the island it extends, if any (the
            // in-order case): no allocation per chunk.
            let k = self.islands.partition_point(|i| i.end < c0);
            if k < self.islands.len() && self.islands[k].end == c0 {
                tokenize(text, &mut self.islands[k].ids).map_err(StitchError::Tokenizer)?;
                self.islands[k].end = c1;
                if k + 1 < self.islands.len() && self.islands[k + 1].start == c1 {
                    let right = self.islands.remove(k + 1);
                    self.islands[k].ids.extend_from_slice(&right.ids);
                    self.islands[k].end = right.end;
                }
            } else {
                let expected = if c0 == 0 {
                    self.total_len.min(PREALLOCATE) / 4
                } else {
                    text.len() / 4
                };
                let mut ids = Vec::with_capacity(expected.max(text.len() / 4));
                tokenize(text, &mut ids).map_err(StitchError::Tokenizer)?;
                self.insert_island(c0, c1, ids);
            }
        }
        Ok(())
    }

    fn insert_island(&mut self, start: usize, end: usize, ids: Vec<T>) {
        let k = self.islands.partition_point(|i| i.end <= start);
        let joins_left = k > 0 && self.islands[k - 1].end == start;
        let joins_right = k < self.islands.len() && self.islands[k].start == end;
        match (joins_left, joins_right) {
            (true, true) => {
                let right = self.islands.remove(k);
                let left = &mut self.islands[k - 1];
                left.ids.extend_from_slice(&ids);
                left.ids.extend_from_slice(&right.ids);
                left.end = right.end;
            }
            (true, false) => {
                let left = &mut self.islands[k - 1];
                left.ids.extend_from_slice(&ids);
                left.end = end;
            }
            (false, true) => {
                let right = &mut self.islands[k];
                let mut joined = ids;
                joined.extend_from_slice(&right.ids);
                right.ids = joined;
                right.start = start;
            }
            (false, false) => self.islands.insert(k, Island { start, end, ids }),
        }
    }

    /// All chunks are in: the ids of the whole text (no special tokens).
    pub fn finish<F>(mut self, tokenize: &mut F) -> Result<Vec<T>, StitchError>
    where
        F: FnMut(&str, &mut Vec<T>) -> Result<(), String>,
    {
        let covered = match self.runs.as_slice() {
            [] => self.total_len == 0,
            [r] => r.start == 0 && r.end() == self.total_len,
            _ => false,
        };
        if !covered {
            return Err(StitchError::Uncovered);
        }
        if self.invalid_at.is_none() && !self.runs.is_empty() {
            // What waited: with the whole text here, every gap ends at cuts.
            self.tokenize_run(0, (0, 0), true, tokenize)?;
        }
        if let Some(at) = self.invalid_at {
            return Err(StitchError::InvalidUtf8(at));
        }
        match self.islands.as_mut_slice() {
            [] => Ok(Vec::new()),
            [i] if i.start == 0 && i.end == self.total_len => Ok(std::mem::take(&mut i.ids)),
            _ => Err(StitchError::Tokenizer(
                "internal: text complete but not all tokenized".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy whitespace tokenizer: one id per word, its byte length. Cuts
    /// after ASCII whitespace are exact for it.
    fn words(text: &str, out: &mut Vec<u32>) -> Result<(), String> {
        out.extend(text.split_ascii_whitespace().map(|w| w.len() as u32));
        Ok(())
    }

    fn whole(text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        words(text, &mut out).unwrap();
        out
    }

    const RULE: CutRule = CutRule::AfterAsciiWhitespace { chinese: false };

    #[test]
    fn cuts_follow_the_rules() {
        let b = "ab cd\u{4e2d}e".as_bytes();
        let cuts = |rule: CutRule| {
            (1..b.len())
                .filter(|&i| rule.is_cut(b, i))
                .collect::<Vec<_>>()
        };
        assert_eq!(cuts(RULE), vec![3]);
        // Before and after the 3-byte ideograph at 5..8.
        assert_eq!(
            cuts(CutRule::AfterAsciiWhitespace { chinese: true }),
            vec![3, 5, 8]
        );
        assert_eq!(cuts(CutRule::BeforeSpaceLetter), vec![2]);
        assert_eq!(cuts(CutRule::Never), Vec::<usize>::new());
        // A truncated or invalid sequence is no cut.
        assert!(!CutRule::AfterAsciiWhitespace { chinese: true }.is_cut(&[b'a', 0xE4, 0xB8], 1));
    }

    #[test]
    fn a_word_longer_than_every_chunk_waits_for_its_ends() {
        let text = format!("x {} y", "w".repeat(10_000));
        let mut s = Stitcher::new(text.len(), RULE);
        for (i, c) in text.as_bytes().chunks(7).enumerate() {
            s.add(i * 7, c, &mut words).unwrap();
        }
        assert_eq!(s.finish(&mut words).unwrap(), whole(&text));
    }

    #[test]
    fn without_a_cut_rule_the_whole_text_is_tokenized_at_the_end() {
        let text = "no rule means one span, whatever the chunks";
        let b = text.as_bytes();
        let mut s = Stitcher::new(b.len(), CutRule::Never);
        for (a, e) in [(20, b.len()), (0, 10)] {
            s.add(a, &b[a..e], &mut words).unwrap();
            assert_eq!(s.tokenized_bytes(), 0);
        }
        // The chunk that completes the text: its ends are cuts.
        s.add(8, &b[8..22], &mut words).unwrap();
        assert_eq!(s.tokenized_bytes(), b.len());
        assert_eq!(s.finish(&mut words).unwrap(), whole(text));
    }

    #[test]
    fn islands_from_both_sides_join() {
        let text = "one two three four five six seven eight nine ten";
        let b = text.as_bytes();
        let mut s = Stitcher::new(b.len(), RULE);
        s.add(30, &b[30..], &mut words).unwrap();
        s.add(0, &b[..12], &mut words).unwrap();
        assert!(s.tokenized_bytes() > 20);
        s.add(10, &b[10..32], &mut words).unwrap();
        assert_eq!(s.tokenized_bytes(), b.len());
        assert_eq!(s.finish(&mut words).unwrap(), whole(text));
    }

    #[test]
    fn short_spans_wait_with_min_span_and_are_flushed_at_the_end() {
        let text = "a b c d e f g h";
        let b = text.as_bytes();
        let mut s = Stitcher::new(b.len(), RULE).with_min_span(100);
        for i in 0..b.len() {
            s.add(i, &b[i..i + 1], &mut words).unwrap();
        }
        assert_eq!(s.tokenized_bytes(), 0);
        assert_eq!(s.finish(&mut words).unwrap(), whole(text));
    }

    #[test]
    fn invalid_utf8_is_reported_after_a_later_overlap_mismatch() {
        let b = b"ok \xff ok ok";
        let mut s = Stitcher::new(b.len(), RULE);
        s.add(0, &b[..6], &mut words).unwrap();
        assert_eq!(
            s.add(4, b"X ok o", &mut words),
            Err(StitchError::OverlapMismatch(4))
        );
        let mut s = Stitcher::new(b.len(), RULE);
        s.add(0, b, &mut words).unwrap();
        assert_eq!(s.finish(&mut words), Err(StitchError::InvalidUtf8(3)));
    }
}
