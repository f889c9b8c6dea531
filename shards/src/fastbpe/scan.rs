//! Hand-written scanners for the pre-tokenizer patterns of the common byte-level tokenizers,
//! each the exact leftmost-first semantics of its Oniguruma pattern (look-ahead included),
//! one pass over the characters with a table lookup each — no regex engine on the hot path.
//! A pattern not listed here runs on the `regex` crate ([`super::pretok`]).
//!
//! - GPT-2 (`ByteLevel`): `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//! - DeepSeek-V3's three `Split`s: `\p{N}{1,3}`; `[一-龥぀-ゟ゠-ヿ]+`; and
//!   `[!"#…~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`

use super::classes::{Classes, L, M, N, P, S, WS};

/// DeepSeek-V3's main pattern.
pub const DEEPSEEK_V3_PATTERN: &str = r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##;
/// Llama 3's and Qwen 2's pattern (OpenAI's cl100k).
pub const CL100K_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// DeepSeek-V3's digits.
pub const DIGITS_1_3: &str = r"\p{N}{1,3}";
/// DeepSeek-V3's Chinese and Japanese kana.
pub const CJK_KANA: &str = "[一-龥぀-ゟ゠-ヿ]+";

/// A pattern with a hand-written scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scanner {
    /// GPT-2's `ByteLevel` pattern.
    Gpt2,
    /// DeepSeek-V3's main pattern.
    DeepSeekV3,
    /// Llama 3's and Qwen 2's pattern.
    Cl100k,
    /// `\p{N}{1,3}`.
    Digits3,
    /// `[一-龥぀-ゟ゠-ヿ]+`.
    CjkKana,
}

impl Scanner {
    /// The scanner of `pattern`, if it has one. Line breaks written as the characters
    /// themselves (as `tokenizer.json` files often do) or as `\r`, `\n` are the same.
    pub fn of(pattern: &str) -> Option<Self> {
        let pattern = pattern.replace('\r', r"\r").replace('\n', r"\n");
        match pattern.as_str() {
            p if p == super::pretok::GPT2_PATTERN => Some(Scanner::Gpt2),
            DEEPSEEK_V3_PATTERN => Some(Scanner::DeepSeekV3),
            CL100K_PATTERN => Some(Scanner::Cl100k),
            DIGITS_1_3 => Some(Scanner::Digits3),
            CJK_KANA => Some(Scanner::CjkKana),
            _ => None,
        }
    }

    /// The leftmost match at or after byte `from`: `(start, end)`.
    pub fn find(self, cl: &Classes, text: &str, from: usize) -> Option<(usize, usize)> {
        let mut p = from;
        while p < text.len() {
            let c = char_at(text, p);
            if let Some(end) = self.match_at(cl, text, p, c) {
                return Some((p, end));
            }
            p += c.len_utf8();
        }
        None
    }

    /// The end of the match that starts at `p` (whose character is `c`), if one does.
    fn match_at(self, cl: &Classes, text: &str, p: usize, c: char) -> Option<usize> {
        match self {
            Scanner::Gpt2 => Some(gpt2(cl, text, p, c)),
            Scanner::DeepSeekV3 => deepseek(cl, text, p, c),
            Scanner::Cl100k => Some(cl100k(cl, text, p, c)),
            Scanner::Digits3 => {
                if cl.of(c) & N == 0 {
                    return None;
                }
                let mut end = p + c.len_utf8();
                for _ in 0..2 {
                    match text[end..].chars().next() {
                        Some(d) if cl.of(d) & N != 0 => end += d.len_utf8(),
                        _ => break,
                    }
                }
                Some(end)
            }
            Scanner::CjkKana => {
                let cjk = |c: char| matches!(c, '\u{4E00}'..='\u{9FA5}' | '\u{3040}'..='\u{309F}' | '\u{30A0}'..='\u{30FF}');
                if !cjk(c) {
                    return None;
                }
                Some(run(text, p, cjk))
            }
        }
    }
}

#[inline]
fn char_at(text: &str, p: usize) -> char {
    text[p..].chars().next().expect("p < len, on a boundary")
}

/// The end of the run of characters from `p` that satisfy `f`.
#[inline]
fn run(text: &str, p: usize, f: impl Fn(char) -> bool) -> usize {
    let mut end = p;
    for c in text[p..].chars() {
        if !f(c) {
            break;
        }
        end += c.len_utf8();
    }
    end
}

/// `\s+(?!\S)|\s+` at a whitespace character: the run, less its last character when a
/// non-space follows and the run has more than one.
fn whitespace_idiom(cl: &Classes, text: &str, p: usize) -> usize {
    let end = run(text, p, |d| cl.of(d) & WS != 0);
    if end == text.len() {
        return end;
    }
    let last = text[p..end].chars().next_back().expect("non-empty run");
    if end - p > last.len_utf8() {
        end - last.len_utf8()
    } else {
        end
    }
}

fn gpt2(cl: &Classes, text: &str, p: usize, c: char) -> usize {
    let k = cl.of(c);
    let next = text[p + c.len_utf8()..].chars().next();
    if c == '\'' {
        let rest = &text.as_bytes()[p + 1..];
        for suffix in [&b"s"[..], b"t", b"re", b"ve", b"m", b"ll", b"d"] {
            if rest.starts_with(suffix) {
                return p + 1 + suffix.len();
            }
        }
    }
    let other = |d: char| cl.of(d) & (WS | L | N) == 0;
    for class in [L, N] {
        if c == ' '
            && let Some(d) = next
            && cl.of(d) & class != 0
        {
            return run(text, p + 1, |x| cl.of(x) & class != 0);
        }
        if k & class != 0 {
            return run(text, p, |x| cl.of(x) & class != 0);
        }
    }
    if c == ' '
        && let Some(d) = next
        && other(d)
    {
        return run(text, p + 1, other);
    }
    if other(c) {
        return run(text, p, other);
    }
    // Whitespace.
    whitespace_idiom(cl, text, p)
}

fn deepseek(cl: &Classes, text: &str, p: usize, c: char) -> Option<usize> {
    let k = cl.of(c);
    let after = p + c.len_utf8();
    let next = text[after..].chars().next();
    let crlf = |d: char| d == '\r' || d == '\n';
    // [!"#…~][A-Za-z]+
    if c.is_ascii_punctuation()
        && let Some(d) = next
        && d.is_ascii_alphabetic()
    {
        return Some(run(text, after, |x| x.is_ascii_alphabetic()));
    }
    // [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+
    let lm = |x: char| cl.of(x) & (L | M) != 0;
    if !crlf(c)
        && k & (L | P | S) == 0
        && let Some(d) = next
        && lm(d)
    {
        return Some(run(text, after, lm));
    }
    if k & (L | M) != 0 {
        return Some(run(text, p, lm));
    }
    // ` ?[\p{P}\p{S}]+[\r\n]*`
    let ps = |x: char| cl.of(x) & (P | S) != 0;
    let from = if c == ' ' && next.is_some_and(ps) {
        Some(after)
    } else if k & (P | S) != 0 {
        Some(p)
    } else {
        None
    };
    if let Some(f) = from {
        let e = run(text, f, ps);
        return Some(run(text, e, crlf));
    }
    if k & WS == 0 {
        return None;
    }
    // `\s*[\r\n]+`: the whitespace run up to its last line break.
    let end = run(text, p, |d| cl.of(d) & WS != 0);
    if let Some(i) = text[p..end].rfind(['\r', '\n']) {
        return Some(p + i + 1);
    }
    Some(whitespace_idiom(cl, text, p))
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)` after the apostrophe at `p`: the end, if one matches. Case
/// folding is Unicode's simple folding, as both regex engines do: `s` is also `S` and `ſ`
/// (U+017F); the other letters of these suffixes fold only to their ASCII capitals.
fn contraction(text: &str, p: usize) -> Option<usize> {
    let fold = |c: char| match c {
        'S' | '\u{17F}' => 's',
        c => c.to_ascii_lowercase(),
    };
    let mut it = text[p + 1..].char_indices();
    let (_, a0) = it.next()?;
    let a = fold(a0);
    if matches!(a, 's' | 't' | 'm' | 'd') {
        return Some(p + 1 + a0.len_utf8());
    }
    let (i, b0) = it.next()?;
    let two = matches!((a, fold(b0)), ('r', 'e') | ('v', 'e') | ('l', 'l'));
    two.then(|| p + 1 + i + b0.len_utf8())
}

fn cl100k(cl: &Classes, text: &str, p: usize, c: char) -> usize {
    if c == '\''
        && let Some(end) = contraction(text, p)
    {
        return end;
    }
    let k = cl.of(c);
    let after = p + c.len_utf8();
    let next = text[after..].chars().next();
    let crlf = |d: char| d == '\r' || d == '\n';
    let letter = |x: char| cl.of(x) & L != 0;
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if !crlf(c) && k & (L | N) == 0 && next.is_some_and(letter) {
        return run(text, after, letter);
    }
    if k & L != 0 {
        return run(text, p, letter);
    }
    // \p{N}{1,3}
    if k & N != 0 {
        let mut end = after;
        for _ in 0..2 {
            match text[end..].chars().next() {
                Some(d) if cl.of(d) & N != 0 => end += d.len_utf8(),
                _ => break,
            }
        }
        return end;
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    let other = |x: char| cl.of(x) & (WS | L | N) == 0;
    let from = if c == ' ' && next.is_some_and(other) {
        Some(after)
    } else if other(c) {
        Some(p)
    } else {
        None
    };
    if let Some(f) = from {
        let e = run(text, f, other);
        return run(text, e, crlf);
    }
    // Whitespace: `\s*[\r\n]+`, then the idiom.
    let end = run(text, p, |d| cl.of(d) & WS != 0);
    if let Some(i) = text[p..end].rfind(['\r', '\n']) {
        return p + i + 1;
    }
    whitespace_idiom(cl, text, p)
}
