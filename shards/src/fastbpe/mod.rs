//! A fast encoder for byte-level BPE tokenizers (GPT-2, Llama 3, Qwen 2, DeepSeek-V3 and any
//! `tokenizer.json` of the same form), giving exactly the ids HF `tokenizers` gives.
//!
//! Speed comes from three things: pre-tokenization on the `regex` crate's automata instead of
//! a backtracking engine ([`pretok`]); merging on token ids with a flat hash map, a scan for
//! short pieces and a heap for long ones ([`merge`]); and a per-thread memo of whole pieces
//! (natural text repeats its words). Everything else — added and special tokens, normalizers,
//! pre-tokenizers of other kinds — is left to HF `tokenizers`: [`FastBpe::from_json`] returns
//! why a `tokenizer.json` is not of the supported form, and [`FastBpe::encode`] returns `None`
//! for a text that contains an added token, which the caller then encodes with HF.

pub mod classes;
pub mod merge;
pub mod pretok;
pub mod scan;

use std::cell::RefCell;

use aho_corasick::AhoCorasick;
use rustc_hash::FxHashMap;
use serde_json::Value;

use merge::Merges;
use pretok::{GPT2_PATTERN, Pretokenizer, SplitRule};

/// The byte-level alphabet: byte `b` is written as this character in the vocabulary.
pub fn byte_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable(b) {
        return char::from(b);
    }
    // The others get 256, 257, … in byte order.
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).expect("a valid code point")
}

/// A byte-level BPE encoder.
#[derive(Debug)]
pub struct FastBpe {
    /// Unicode normalization forms applied to the whole text first, in order.
    normalizers: Vec<Form>,
    pre: Pretokenizer,
    byte_ids: [u32; 256],
    merges: Merges,
    added: Option<AhoCorasick>,
    /// Per thread: the tokens of the pieces seen (dropped with the encoder).
    memo: thread_local::ThreadLocal<RefCell<Memo>>,
}

/// Entries in a thread's memo before it is cleared.
const MEMO_MAX: usize = 1 << 20;

/// A thread's memo: piece → where its tokens are in `ids`.
#[derive(Debug, Default)]
struct Memo {
    map: FxHashMap<Box<[u8]>, (u32, u32)>,
    ids: Vec<u32>,
}

/// Why a `tokenizer.json` is not for the fast encoder.
pub type Unsupported = String;

/// A Unicode normalization form (HF's `NFC`, `NFD`, `NFKC`, `NFKD` normalizers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Nfc,
    Nfd,
    Nfkc,
    Nfkd,
}

impl Form {
    /// `text` in this form, with the normalization tables HF `tokenizers` uses.
    fn apply(self, text: &str) -> String {
        use unicode_normalization_alignments::UnicodeNormalization;
        match self {
            Form::Nfc => text.nfc().map(|(c, _)| c).collect(),
            Form::Nfd => text.nfd().map(|(c, _)| c).collect(),
            Form::Nfkc => text.nfkc().map(|(c, _)| c).collect(),
            Form::Nfkd => text.nfkd().map(|(c, _)| c).collect(),
        }
    }
}

/// The normalizer of a `tokenizer.json`: none, a form, or a sequence of forms.
fn normalizers(n: &Value) -> Result<Vec<Form>, Unsupported> {
    let one = |v: &Value| match v["type"].as_str() {
        Some("NFC") => Ok(Form::Nfc),
        Some("NFD") => Ok(Form::Nfd),
        Some("NFKC") => Ok(Form::Nfkc),
        Some("NFKD") => Ok(Form::Nfkd),
        _ => Err(format!("normalizer {}", v["type"])),
    };
    if n.is_null() {
        return Ok(Vec::new());
    }
    if n["type"] == "Sequence" {
        return n["normalizers"]
            .as_array()
            .ok_or("a normalizer Sequence without a list")?
            .iter()
            .map(one)
            .collect();
    }
    Ok(vec![one(n)?])
}

fn split_rule(v: &Value) -> Result<SplitRule, Unsupported> {
    let pattern = v["pattern"]["Regex"]
        .as_str()
        .ok_or("a Split pre-tokenizer without a regex pattern")?;
    if v["behavior"] != "Isolated" || v["invert"].as_bool() == Some(true) {
        return Err(format!(
            "a Split pre-tokenizer with behavior {} / invert {}",
            v["behavior"], v["invert"]
        ));
    }
    // Only the patterns whose hand-written scanners are checked against Hugging Face (GPT-2,
    // DeepSeek-V3, cl100k and its digit/CJK companions): an arbitrary Oniguruma pattern can
    // mean something else to the `regex` crate (fuzzing found `\pzP` and `\ppL` read
    // differently), and the stage then falls back to Hugging Face.
    match SplitRule::new(pattern) {
        Some(rule) if rule.hand_written() => Ok(rule),
        _ => Err(format!(
            "a Split pattern without a scanner checked against Hugging Face: {pattern}"
        )),
    }
}

impl FastBpe {
    /// The encoder of a `tokenizer.json`, or why it is not of the supported form: model BPE
    /// without dropout, unknown-token handling, prefixes, suffixes or byte fallback; no
    /// normalizer (or an empty sequence); pre-tokenizer `ByteLevel` (without prefix space) or a
    /// `Sequence` of isolating `Split`s (patterns with a scanner checked against Hugging Face),
    /// `Digits` and that `ByteLevel`; ids numbering the tokens densely, each once; each merge
    /// pair once.
    pub fn from_json(json: &[u8]) -> Result<Self, Unsupported> {
        let t: Value = serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
        let m = &t["model"];
        if m["type"] != "BPE" {
            return Err(format!("model {}", m["type"]));
        }
        if !m["dropout"].is_null() || m["byte_fallback"].as_bool() == Some(true) {
            return Err("BPE with dropout or byte fallback".into());
        }
        if m["ignore_merges"].as_bool() == Some(true) {
            return Err("BPE with ignore_merges".into());
        }
        for k in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if m[k].as_str().is_some_and(|s| !s.is_empty()) {
                return Err(format!("BPE with {k}"));
            }
        }
        let normalizers = normalizers(&t["normalizer"])?;
        let pre = &t["pre_tokenizer"];
        let byte_level = |v: &Value| -> Result<Option<SplitRule>, Unsupported> {
            if v["add_prefix_space"].as_bool() == Some(true) {
                return Err("ByteLevel with add_prefix_space".into());
            }
            // `use_regex` defaults to true.
            if v["use_regex"].as_bool().unwrap_or(true) {
                Ok(Some(SplitRule::new(GPT2_PATTERN).expect("compiles")))
            } else {
                Ok(None)
            }
        };
        let mut rules = Vec::new();
        match pre["type"].as_str() {
            Some("ByteLevel") => rules.extend(byte_level(pre)?),
            Some("Sequence") => {
                let list = pre["pretokenizers"].as_array().ok_or("an empty Sequence")?;
                let last = list.len().saturating_sub(1);
                for (i, p) in list.iter().enumerate() {
                    match p["type"].as_str() {
                        Some("Split") => rules.push(split_rule(p)?),
                        Some("Digits") if p["individual_digits"].as_bool() == Some(true) => {
                            rules.push(SplitRule::new(r"\p{Nd}").expect("compiles"))
                        }
                        Some("Digits") => rules.push(SplitRule::new(r"\p{Nd}+").expect("compiles")),
                        Some("ByteLevel") if i == last => rules.extend(byte_level(p)?),
                        other => return Err(format!("pre-tokenizer {other:?} in a Sequence")),
                    }
                }
                if list.last().is_none_or(|p| p["type"] != "ByteLevel") {
                    return Err("a Sequence that does not end in ByteLevel".into());
                }
            }
            other => return Err(format!("pre-tokenizer {other:?}")),
        }
        // The vocabulary, in bytes.
        let mut inverse = FxHashMap::default();
        for b in 0..=255u8 {
            inverse.insert(byte_char(b), b);
        }
        let vocab = m["vocab"]
            .as_object()
            .ok_or("a BPE model without a vocab")?;
        let mut by_bytes: FxHashMap<Vec<u8>, u32> = FxHashMap::default();
        let to_bytes =
            |s: &str| -> Option<Vec<u8>> { s.chars().map(|c| inverse.get(&c).copied()).collect() };
        // Ids must name one token each (a vocabulary giving two tokens one id, which Hugging
        // Face resolves its own way, was found by fuzzing to encode differently here).
        let mut ids_seen = rustc_hash::FxHashSet::default();
        let id_bound = vocab.len() + t["added_tokens"].as_array().map_or(0, Vec::len);
        for (tok, id) in vocab {
            let id = id
                .as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or("a vocab id that is not a number below 2³²")?;
            if !ids_seen.insert(id) {
                return Err(format!("vocab id {id} is given to two tokens"));
            }
            // The merge tables are indexed by id: ids must number the tokens densely (a
            // 4-kB file with id 1,666,666,666 made them 3 GB; found by fuzzing).
            if id as usize >= id_bound {
                return Err(format!(
                    "vocab id {id} is beyond the {id_bound} tokens and added tokens"
                ));
            }
            if let Some(b) = to_bytes(tok) {
                by_bytes.insert(b, id);
            }
        }
        let mut byte_ids = [0u32; 256];
        for b in 0..=255u8 {
            byte_ids[b as usize] = *by_bytes
                .get(&vec![b])
                .ok_or_else(|| format!("byte {b:#04x} has no token (not byte-level)"))?;
        }
        let mut merges = Merges::default();
        let list = m["merges"].as_array().ok_or("a BPE model without merges")?;
        let mut pairs_seen = rustc_hash::FxHashSet::default();
        for (rank, mv) in list.iter().enumerate() {
            let (a, b) = match mv {
                Value::String(s) => s
                    .split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| format!("merge {rank} `{s}` is not two tokens"))?,
                Value::Array(v) if v.len() == 2 => (
                    v[0].as_str().unwrap_or_default().to_string(),
                    v[1].as_str().unwrap_or_default().to_string(),
                ),
                _ => return Err(format!("merge {rank} is neither \"a b\" nor [a, b]")),
            };
            let id = |s: &str| {
                vocab
                    .get(s)
                    .and_then(Value::as_u64)
                    .map(|v| v as u32)
                    .ok_or_else(|| format!("merge {rank}: `{s}` is not in the vocab"))
            };
            let merged = format!("{a}{b}");
            let pair = (id(&a)?, id(&b)?);
            // A pair listed twice: Hugging Face keeps the later rank (found by fuzzing to
            // encode differently here): not of the supported form.
            if !pairs_seen.insert(pair) {
                return Err(format!("merge {rank}: the pair `{a} {b}` is listed twice"));
            }
            merges.insert(pair.0, pair.1, rank as u32, id(&merged)?);
        }
        merges.finish(&byte_ids);
        let added: Vec<String> = t["added_tokens"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|a| a["content"].as_str())
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let added = if added.is_empty() {
            None
        } else {
            Some(AhoCorasick::new(&added).map_err(|e| format!("added tokens: {e}"))?)
        };
        Ok(FastBpe {
            normalizers,
            pre: Pretokenizer::new(rules),
            byte_ids,
            merges,
            added,
            memo: thread_local::ThreadLocal::new(),
        })
    }

    /// Calls `f` with every piece the pre-tokenizer cuts `text` into (for profiling).
    pub fn for_each_piece<'t>(&self, text: &'t str, f: &mut impl FnMut(&'t str)) {
        self.pre.pieces(text, f);
    }

    /// The ids of `text`, or `None` when it contains an added (special) token, whose
    /// matching rules (single word, stripping) HF applies.
    pub fn encode(&self, text: &str) -> Option<Vec<u32>> {
        if self.added.as_ref().is_some_and(|a| a.is_match(text)) {
            return None;
        }
        if !self.normalizers.is_empty() {
            // HF normalizes the whole text (no added token in it), then pre-tokenizes.
            let mut t = text.to_string();
            for f in &self.normalizers {
                t = f.apply(&t);
            }
            return self.encode_normalized(&t);
        }
        self.encode_normalized(text)
    }

    fn encode_normalized(&self, text: &str) -> Option<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 1);
        let mut memo = self.memo.get_or_default().borrow_mut();
        if memo.map.len() > MEMO_MAX {
            memo.map.clear();
            memo.ids.clear();
        }
        let memo = &mut *memo;
        let mut word = Vec::new();
        self.pre.pieces(text, &mut |piece| {
            if let &[b] = piece.as_bytes() {
                // One byte: nothing to merge.
                ids.push(self.byte_ids[b as usize]);
                return;
            }
            if let Some(&(at, len)) = memo.map.get(piece.as_bytes()) {
                ids.extend_from_slice(&memo.ids[at as usize..(at + len) as usize]);
                return;
            }
            word.clear();
            word.extend(piece.bytes().map(|b| self.byte_ids[b as usize]));
            self.merges.apply(&mut word);
            ids.extend_from_slice(&word);
            let at = memo.ids.len() as u32;
            memo.ids.extend_from_slice(&word);
            memo.map
                .insert(piece.as_bytes().into(), (at, word.len() as u32));
        });
        Some(ids)
    }
}
