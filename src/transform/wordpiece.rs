//! tensorwire's own BERT tokenizer: BertNormalizer + BertPreTokenizer +
//! WordPiece, built from a tokenizer.json, with the ids of the `tokenizers`
//! crate (the differential tests in `tests/tokenize_diff.rs` are the judge).
//!
//! Speed comes from: a byte-class table that normalizes and splits ASCII
//! text in one pass (the common case), greedy longest-match-first over two
//! double-array tries (`yada`, the crate `tokenizers` itself uses), one for
//! word-initial pieces and one for continuing pieces with the prefix
//! already stripped (so no candidate string is built per piece), and no
//! allocation per token or per word: the word buffers live in a reusable
//! [`WordPieceScratch`].
//!
//! Not the failure-link method of "Fast WordPiece Tokenization"
//! (LinMaxMatch, patented): plain greedy longest match.

use serde_json::Value;
use unicode_categories::UnicodeCategories;
use unicode_normalization::UnicodeNormalization;
use yada::builder::DoubleArrayBuilder;
use yada::DoubleArray;

/// Why a tokenizer.json cannot take the fast path (it then goes through
/// the `tokenizers` crate).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a plain BERT WordPiece tokenizer: {0}")]
pub struct NotBert(pub String);

/// BertNormalizer options, `strip_accents` resolved (None = lowercase).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BertNormalization {
    pub clean_text: bool,
    pub handle_chinese_chars: bool,
    pub strip_accents: bool,
    pub lowercase: bool,
}

/// What an ASCII byte does in the normalizer + pre-tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AsciiClass {
    /// Part of a word; the byte is the normalized (maybe lowercased) one.
    Word(u8),
    /// Ends a word.
    Space,
    /// Ends a word and is a word of its own.
    Punct,
    /// Removed by clean_text.
    Removed,
}

/// A BERT WordPiece tokenizer that runs without the `tokenizers` crate.
pub struct FastWordPiece {
    norm: BertNormalization,
    ascii: [AsciiClass; 128],
    /// Every vocabulary entry, for the first piece of a word.
    initial: DoubleArray<Vec<u8>>,
    /// Entries that start with the continuing-subword prefix, prefix
    /// removed, for the following pieces.
    continuing: Option<DoubleArray<Vec<u8>>>,
    unk: u32,
    max_input_chars_per_word: usize,
    /// Added tokens matched on the raw text (content, id).
    added: Vec<(Box<[u8]>, u32)>,
    added_first_byte: [bool; 256],
}

impl std::fmt::Debug for FastWordPiece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastWordPiece")
            .field("norm", &self.norm)
            .field("unk", &self.unk)
            .field("max_input_chars_per_word", &self.max_input_chars_per_word)
            .finish_non_exhaustive()
    }
}

/// Reusable buffers of one tokenizing thread or request.
#[derive(Debug, Default)]
pub struct WordPieceScratch {
    word: Vec<u8>,
    normalized: String,
}

fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value, NotBert> {
    v.get(key).ok_or_else(|| NotBert(format!("no {key}")))
}

fn flag(v: &Value, key: &str) -> Result<bool, NotBert> {
    field(v, key)?
        .as_bool()
        .ok_or_else(|| NotBert(format!("{key} is not a boolean")))
}

fn type_of(v: &Value) -> Option<&str> {
    v.get("type").and_then(Value::as_str)
}

/// The crate's `is_whitespace` of the BERT normalizer.
fn is_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

fn is_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && c.is_other()
}

/// BertPreTokenizer's classes of a normalized char. The crate splits with
/// `bitcannon`'s Unicode tables (a newer Unicode than `unicode_categories`
/// has), so the same classifier is used here: ids must match for chars
/// assigned in recent Unicode versions too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SplitClass {
    Space,
    Punct,
    Word,
}

fn split_class(c: char) -> SplitClass {
    let mut buf = [0u8; 4];
    let bytes = c.encode_utf8(&mut buf).as_bytes();
    let mut tags = [0u8; 4];
    bitcannon::classify::classify(bytes, &mut tags[..bytes.len()]);
    if bitcannon::classify::in_mask(tags[0], bitcannon::classify::mask::WS) {
        SplitClass::Space
    } else if bitcannon::classify::in_mask(tags[0], bitcannon::classify::mask::PUNCT) {
        SplitClass::Punct
    } else {
        SplitClass::Word
    }
}

/// The CJK ranges BertNormalizer puts spaces around.
pub fn is_chinese_char(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

fn build_trie(mut keys: Vec<(Vec<u8>, u32)>) -> Result<Option<DoubleArray<Vec<u8>>>, NotBert> {
    keys.retain(|(k, _)| !k.is_empty());
    if keys.is_empty() {
        return Ok(None);
    }
    keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    keys.dedup_by(|a, b| a.0 == b.0);
    if keys.iter().any(|&(_, id)| id >= 1 << 31) {
        return Err(NotBert("token id too large for the trie".into()));
    }
    let bytes = DoubleArrayBuilder::build(&keys)
        .map_err(|e| NotBert(format!("cannot build the vocabulary trie: {e:?}")))?;
    Ok(Some(DoubleArray::new(bytes).map_err(|e| {
        NotBert(format!("cannot load the vocabulary trie: {e:?}"))
    })?))
}

impl FastWordPiece {
    /// Builds the fast path from a tokenizer.json, or says why it does not
    /// apply (any component other than BertNormalizer / BertPreTokenizer /
    /// WordPiece, or added tokens the raw-text matcher here does not model).
    pub fn from_json(json: &str) -> Result<FastWordPiece, NotBert> {
        let root: Value = serde_json::from_str(json).map_err(|e| NotBert(e.to_string()))?;
        let normalizer = field(&root, "normalizer")?;
        if type_of(normalizer) != Some("BertNormalizer") {
            return Err(NotBert("normalizer is not BertNormalizer".into()));
        }
        let lowercase = flag(normalizer, "lowercase")?;
        let strip_accents = match field(normalizer, "strip_accents")? {
            Value::Null => lowercase,
            Value::Bool(b) => *b,
            _ => return Err(NotBert("strip_accents is not a boolean or null".into())),
        };
        let norm = BertNormalization {
            clean_text: flag(normalizer, "clean_text")?,
            handle_chinese_chars: flag(normalizer, "handle_chinese_chars")?,
            strip_accents,
            lowercase,
        };
        if type_of(field(&root, "pre_tokenizer")?) != Some("BertPreTokenizer") {
            return Err(NotBert("pre_tokenizer is not BertPreTokenizer".into()));
        }
        let model = field(&root, "model")?;
        if type_of(model) != Some("WordPiece") {
            return Err(NotBert("model is not WordPiece".into()));
        }
        let vocab = field(model, "vocab")?
            .as_object()
            .ok_or_else(|| NotBert("vocab is not an object".into()))?;
        let prefix = field(model, "continuing_subword_prefix")?
            .as_str()
            .ok_or_else(|| NotBert("continuing_subword_prefix is not a string".into()))?;
        let unk_token = field(model, "unk_token")?
            .as_str()
            .ok_or_else(|| NotBert("unk_token is not a string".into()))?;
        let max_input_chars_per_word = field(model, "max_input_chars_per_word")?
            .as_u64()
            .ok_or_else(|| NotBert("max_input_chars_per_word is not a number".into()))?
            as usize;
        let mut initial = Vec::with_capacity(vocab.len());
        let mut continuing = Vec::new();
        for (token, id) in vocab {
            let id = id
                .as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| NotBert(format!("id of {token:?} is not a u32")))?;
            initial.push((token.as_bytes().to_vec(), id));
            if let Some(rest) = token.strip_prefix(prefix) {
                continuing.push((rest.as_bytes().to_vec(), id));
            }
        }
        let unk = vocab
            .get(unk_token)
            .and_then(Value::as_u64)
            .ok_or_else(|| NotBert("unk_token is not in the vocabulary".into()))?
            as u32;
        let mut added: Vec<(Box<[u8]>, u32)> = Vec::new();
        let mut added_first_byte = [false; 256];
        if let Some(tokens) = root.get("added_tokens").and_then(Value::as_array) {
            for t in tokens {
                let content = field(t, "content")?
                    .as_str()
                    .ok_or_else(|| NotBert("added token content".into()))?;
                let id = field(t, "id")?
                    .as_u64()
                    .ok_or_else(|| NotBert("added token id".into()))?
                    as u32;
                // Only tokens matched verbatim on the raw text, and that no
                // whitespace can be part of (the stitcher cuts at whitespace).
                for key in ["single_word", "lstrip", "rstrip", "normalized"] {
                    if t.get(key).and_then(Value::as_bool).unwrap_or(false) {
                        return Err(NotBert(format!("added token {content:?} has {key}")));
                    }
                }
                if content.is_empty() || content.chars().any(char::is_whitespace) {
                    return Err(NotBert(format!("added token {content:?}")));
                }
                added_first_byte[content.as_bytes()[0] as usize] = true;
                added.push((content.as_bytes().into(), id));
            }
        }
        // Longest first: at one position the longest added token wins.
        added.sort_by_key(|(c, _)| std::cmp::Reverse(c.len()));
        let mut ascii = [AsciiClass::Removed; 128];
        for (b, class) in ascii.iter_mut().enumerate() {
            let c = b as u8 as char;
            *class = if norm.clean_text && (c == '\0' || is_control(c)) {
                AsciiClass::Removed
            } else if split_class(c) == SplitClass::Space {
                AsciiClass::Space
            } else if split_class(c) == SplitClass::Punct {
                AsciiClass::Punct
            } else if norm.lowercase {
                AsciiClass::Word(c.to_ascii_lowercase() as u8)
            } else {
                AsciiClass::Word(b as u8)
            };
        }
        Ok(FastWordPiece {
            norm,
            ascii,
            initial: build_trie(initial)?.ok_or_else(|| NotBert("empty vocabulary".into()))?,
            continuing: build_trie(continuing)?,
            unk,
            max_input_chars_per_word,
            added,
            added_first_byte,
        })
    }

    pub fn normalization(&self) -> BertNormalization {
        self.norm
    }

    /// Appends the ids of `text` (no special tokens, no truncation) to `out`.
    pub fn encode<T: From<u32>>(
        &self,
        text: &str,
        scratch: &mut WordPieceScratch,
        out: &mut Vec<T>,
    ) {
        let bytes = text.as_bytes();
        if self.added.is_empty() {
            return self.encode_piece(text, scratch, out);
        }
        let (mut start, mut i) = (0, 0);
        while i < bytes.len() {
            if self.added_first_byte[bytes[i] as usize] {
                if let Some((len, id)) = self.added_at(&bytes[i..]) {
                    // Both cuts are at ASCII-or-lead bytes of added tokens,
                    // so they are char boundaries.
                    self.encode_piece(&text[start..i], scratch, out);
                    out.push(T::from(id));
                    i += len;
                    start = i;
                    continue;
                }
            }
            i += 1;
        }
        self.encode_piece(&text[start..], scratch, out);
    }

    fn added_at(&self, rest: &[u8]) -> Option<(usize, u32)> {
        self.added
            .iter()
            .find(|(c, _)| rest.starts_with(c))
            .map(|(c, id)| (c.len(), *id))
    }

    /// Normalizes, splits and WordPieces a text with no added tokens.
    fn encode_piece<T: From<u32>>(
        &self,
        text: &str,
        scratch: &mut WordPieceScratch,
        out: &mut Vec<T>,
    ) {
        let bytes = text.as_bytes();
        let WordPieceScratch { word, normalized } = scratch;
        word.clear();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b < 0x80 {
                match self.ascii[b as usize] {
                    AsciiClass::Word(_) => {
                        // The whole ASCII run at once; a word that is all
                        // of it and already lowercase is not even copied.
                        let start = i;
                        let mut unchanged = true;
                        while let Some(AsciiClass::Word(n)) =
                            bytes.get(i).and_then(|&b| self.ascii.get(b as usize))
                        {
                            unchanged &= *n == bytes[i];
                            i += 1;
                        }
                        let run = &bytes[start..i];
                        let ends_word = bytes.get(i).is_none_or(|&b| {
                            matches!(
                                self.ascii.get(b as usize),
                                Some(AsciiClass::Space | AsciiClass::Punct)
                            )
                        });
                        if word.is_empty() && ends_word && unchanged {
                            self.word_pieces(run, out);
                        } else {
                            word.extend(run.iter().map(|&b| match self.ascii[b as usize] {
                                AsciiClass::Word(n) => n,
                                _ => b,
                            }));
                        }
                        continue;
                    }
                    AsciiClass::Space => self.flush(word, out),
                    AsciiClass::Punct => {
                        self.flush(word, out);
                        self.word_pieces(&bytes[i..i + 1], out);
                    }
                    AsciiClass::Removed => {}
                }
                i += 1;
                continue;
            }
            // Non-ASCII: the crate's normalizer over the run up to the next
            // ASCII byte. Cutting its input there is exact: ASCII chars are
            // NFD starters, so no reordering or composition crosses them.
            let end = bytes[i..]
                .iter()
                .position(|&b| b < 0x80)
                .map_or(bytes.len(), |p| i + p);
            self.normalize_into(&text[i..end], normalized);
            let mut utf8 = [0u8; 4];
            for c in normalized.chars() {
                let c_bytes = c.encode_utf8(&mut utf8).as_bytes();
                match split_class(c) {
                    SplitClass::Space => self.flush(word, out),
                    SplitClass::Punct => {
                        self.flush(word, out);
                        self.word_pieces(c_bytes, out);
                    }
                    SplitClass::Word => word.extend_from_slice(c_bytes),
                }
            }
            i = end;
        }
        self.flush(word, out);
    }

    /// BertNormalizer on a run of non-ASCII text, as the crate does it.
    fn normalize_into(&self, run: &str, out: &mut String) {
        out.clear();
        let n = self.norm;
        let cleaned = run
            .chars()
            .filter(|&c| !(n.clean_text && (c == '\0' || c == '\u{fffd}' || is_control(c))))
            .flat_map(|c| {
                let c = if n.clean_text && is_whitespace(c) {
                    ' '
                } else {
                    c
                };
                if n.handle_chinese_chars && is_chinese_char(c) {
                    [Some(' '), Some(c), Some(' ')]
                } else {
                    [Some(c), None, None]
                }
            })
            .flatten();
        match (n.strip_accents, n.lowercase) {
            (true, true) => out.extend(
                cleaned
                    .nfd()
                    .filter(|c| !c.is_mark_nonspacing())
                    .flat_map(char::to_lowercase),
            ),
            (true, false) => out.extend(cleaned.nfd().filter(|c| !c.is_mark_nonspacing())),
            (false, true) => out.extend(cleaned.flat_map(char::to_lowercase)),
            (false, false) => out.extend(cleaned),
        }
    }

    /// WordPieces the word in `word` (if any) and empties it.
    fn flush<T: From<u32>>(&self, word: &mut Vec<u8>, out: &mut Vec<T>) {
        if word.is_empty() {
            return;
        }
        self.word_pieces(word, out);
        word.clear();
    }

    /// Greedy longest-match-first over the tries.
    fn word_pieces<T: From<u32>>(&self, word: &[u8], out: &mut Vec<T>) {
        let max = self.max_input_chars_per_word;
        if word.len() > max {
            // `word` is UTF-8 (built from chars): count the lead bytes.
            let chars = word.iter().filter(|&&b| (b & 0xC0) != 0x80).count();
            if chars > max {
                out.push(T::from(self.unk));
                return;
            }
        }
        let checkpoint = out.len();
        let mut start = 0;
        while start < word.len() {
            let rest = &word[start..];
            let found = if start == 0 {
                self.initial.common_prefix_search(rest).last()
            } else {
                self.continuing
                    .as_ref()
                    .and_then(|t| t.common_prefix_search(rest).last())
            };
            match found {
                Some((id, len)) => {
                    out.push(T::from(id));
                    start += len;
                }
                None => {
                    out.truncate(checkpoint);
                    out.push(T::from(self.unk));
                    return;
                }
            }
        }
    }
}
