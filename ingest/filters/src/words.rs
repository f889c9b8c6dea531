//! Words, sentences, lines and paragraphs: the units the quality filters measure.
//!
//! datatrove splits English text into words with spaCy's blank English tokenizer (whitespace,
//! then prefix/suffix/infix rules and a table of exceptions); punctuation tokens count as words.
//! [`words`] is a rule-based splitter in the same spirit that needs no tables:
//!
//! * Python whitespace separates tokens (Rust's `White_Space` plus U+001C–001F, like
//!   `str.isspace`).
//! * A word is a run of letters, digits, combining marks, `_`, ZWJ and ZWNJ. Inside a word
//!   (a word character on both sides) the joiners follow spaCy's infix rules: `'`, `’` and `@`
//!   join; `.` joins unless it sits between a lowercase and an uppercase letter (`end.Start`
//!   splits); `,` joins unless between letters (`1,000`); `:`, `/` and `=` join before a digit
//!   (`10:30`, `1/2`, `and/or` splits); `-` joins only a letter to a digit (`COVID-19`;
//!   `well-known` and `2018-2019` are three tokens, as in spaCy).
//! * Initials and dotted abbreviations keep their period (`J.`, `U.S.`, `e.g.`).
//! * A chunk that starts with `http://`, `https://` or `www.` is one token up to its trailing
//!   punctuation (spaCy keeps URLs whole too).
//! * Every other character is a token of its own, except that a run of two or more `.` is one
//!   token (`...`, as in spaCy).
//! * Han ideographs and kana are one token each: there is no dictionary segmentation, but
//!   n-grams over CJK text become character n-grams instead of whole sentences.
//!
//! * English clitics are split off as spaCy's exceptions do: `it's` → `it` `'s`, `don't` →
//!   `do` `n't` (also `'re 've 'd 'll 'm`, with `'` or `’`).
//!
//! Where this differs from spaCy (so token counts, which include punctuation, differ slightly):
//! abbreviations lose their final
//! period to a separate token (`e.g.` is `e.g` `.`, spaCy keeps `e.g.`, `U.S.`, `Mr.`);
//! repeated punctuation other than `.` is one token per character; a run of CJK text without
//! spaces is one spaCy token but one token per ideograph here.
//!
//! The line and paragraph helpers reproduce Python's `str.splitlines`, `str.strip` and the
//! regular-expression splits datatrove uses, so that line-based rules count the same lines.

use std::ops::Range;

use crate::punct;

/// Whether `c` is whitespace for Python's `str.isspace` (what `split()` and `strip()` use).
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()`.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// Python's `str.lstrip()`.
pub fn py_lstrip(s: &str) -> &str {
    s.trim_start_matches(is_py_space)
}

/// Python's `str.rstrip()`.
pub fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(is_py_space)
}

/// Python's `str.split()` with no argument: runs of whitespace separate, no empty pieces.
pub fn py_split_whitespace(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_py_space).filter(|w| !w.is_empty())
}

/// Number of Unicode code points: Python's `len()` of a `str`.
pub fn char_len(s: &str) -> usize {
    // Counting the bytes that do not continue a UTF-8 sequence is faster than `chars()`.
    s.bytes().filter(|&b| (b as i8) >= -0x40).count()
}

fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r'
            | '\u{b}'
            | '\u{c}'
            | '\u{1c}'
            | '\u{1d}'
            | '\u{1e}'
            | '\u{85}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

/// Python's `str.splitlines()`: breaks at `\n`, `\r`, `\r\n`, `\v`, `\f`, U+001C–001E, U+0085,
/// U+2028 and U+2029; a final line break does not start an empty line; `""` has no lines.
pub fn py_splitlines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match rest.char_indices().find(|&(_, c)| is_line_break(c)) {
            None => {
                let line = rest;
                rest = "";
                Some(line)
            }
            Some((i, c)) => {
                let line = &rest[..i];
                let mut next = i + c.len_utf8();
                if c == '\r' && rest[next..].starts_with('\n') {
                    next += 1;
                }
                rest = &rest[next..];
                Some(line)
            }
        }
    })
}

/// `re.split("\n+", text)`: the pieces between runs of `\n`, with an empty first (last) piece
/// when the text starts (ends) with `\n`. Gopher repetition's lines.
pub fn split_newline_runs(text: &str) -> Vec<&str> {
    split_runs(text, 1)
}

/// `re.split(r"\n{2,}", text.strip())`: paragraphs, the pieces between runs of two or more
/// `\n` after stripping the text. Gopher repetition's paragraphs (`[""]` for a blank text).
pub fn split_paragraphs(text: &str) -> Vec<&str> {
    split_runs(py_strip(text), 2)
}

/// Splits at runs of at least `min_run` newlines.
fn split_runs(text: &str, min_run: usize) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            let run_start = i;
            while i < bytes.len() && bytes[i] == b'\n' {
                i += 1;
            }
            if i - run_start >= min_run {
                pieces.push(&text[start..run_start]);
                start = i;
            }
        } else {
            i += 1;
        }
    }
    pieces.push(&text[start..]);
    pieces
}

/// A character that is its own token although it is a letter: Han ideographs and kana.
fn is_cjk_single(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF     // Hiragana, Katakana
        | 0x31F0..=0x31FF   // Katakana phonetic extensions
        | 0x3400..=0x4DBF   // CJK extension A
        | 0x4E00..=0x9FFF   // CJK unified ideographs
        | 0xF900..=0xFAFF   // CJK compatibility ideographs
        | 0xFF66..=0xFF9F   // halfwidth Katakana
        | 0x20000..=0x3FFFF // CJK extensions B–H, compatibility supplement
    )
}

/// Letters, digits, combining marks, `_`, ZWNJ and ZWJ (not the CJK single characters).
fn is_word_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    if is_cjk_single(c) {
        return false;
    }
    c.is_alphanumeric()
        || matches!(c, '\u{200c}' | '\u{200d}')
        || unicode_normalization::char::is_combining_mark(c)
}

/// Whether the joiner `j` between `prev` and `next` (both word characters) keeps one word.
/// spaCy's infix rules, which split `a.B`, `a,b`, `a-b` and `a:b`/`a/b`/`a=b` before a letter,
/// and `1-2` between digits.
fn joins(prev: char, j: char, next: char) -> bool {
    match j {
        '\'' | '’' | '@' => true,
        '.' => !(prev.is_lowercase() && next.is_uppercase()),
        ',' => !(prev.is_alphabetic() && next.is_alphabetic()),
        ':' | '/' | '=' => next.is_ascii_digit(),
        '-' => next.is_ascii_digit() && !prev.is_ascii_digit(),
        _ => false,
    }
}

/// Whether a word is an initial or a dotted abbreviation (`J`, `U.S`, `e.g`, `a.m`): single
/// letters separated by dots, which keep a following period (spaCy's exceptions).
fn is_initialism(word: &str) -> bool {
    word.split('.').all(|part| {
        let mut chars = part.chars();
        matches!((chars.next(), chars.next()), (Some(c), None) if c.is_alphabetic())
    })
}

fn starts_url(s: &str) -> bool {
    let prefix =
        |p: &str| s.len() >= p.len() && s.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes());
    prefix("http://") || prefix("https://") || prefix("www.")
}

/// Byte ranges of the tokens of `text` (see the module documentation for the rules).
pub fn word_spans(text: &str) -> impl Iterator<Item = Range<usize>> + '_ {
    WordSpans {
        text,
        pos: 0,
        pending: None,
    }
}

/// The iterator behind [`word_spans`]; `pending` holds the clitic split off the last word.
struct WordSpans<'a> {
    text: &'a str,
    pos: usize,
    pending: Option<Range<usize>>,
}

impl Iterator for WordSpans<'_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        if let Some(span) = self.pending.take() {
            return Some(span);
        }
        let text = self.text;
        let rest = &text[self.pos..];
        let skipped = rest.len() - rest.trim_start_matches(is_py_space).len();
        self.pos += skipped;
        let rest = &text[self.pos..];
        let mut chars = rest.char_indices().peekable();
        let (_, first) = chars.next()?;
        let start = self.pos;
        let len = if is_word_char(first) && starts_url(rest) {
            url_len(rest)
        } else if is_word_char(first) {
            let mut end = first.len_utf8();
            let mut prev = first;
            while let Some((i, c)) = chars.next() {
                if is_word_char(c) {
                    end = i + c.len_utf8();
                    prev = c;
                    continue;
                }
                match chars.peek() {
                    Some(&(k, next)) if is_word_char(next) && joins(prev, c, next) => {
                        chars.next();
                        end = k + next.len_utf8();
                        prev = next;
                    }
                    _ => break,
                }
            }
            if rest[end..].starts_with('.')
                && !rest[end + 1..].starts_with('.')
                && is_initialism(&rest[..end])
            {
                end += 1;
            }
            let stem = clitic_start(&rest[..end]);
            if stem > 0 && stem < end {
                self.pending = Some(start + stem..start + end);
                self.pos += end;
                return Some(start..start + stem);
            }
            end
        } else if first == '.' {
            rest.len() - rest.trim_start_matches('.').len()
        } else {
            first.len_utf8()
        };
        self.pos += len;
        Some(start..start + len)
    }
}

/// Where an English clitic starts in `word`, as spaCy's English exceptions split them:
/// `'s 're 've 'd 'll 'm` (`it's` → `it` `'s`) and `n't` (`don't` → `do` `n't`, `can't` →
/// `ca` `n't`), with `'` or `’`, any case; 0 when there is none.
fn clitic_start(word: &str) -> usize {
    let Some(apostrophe) = word.rfind(['\'', '’']) else {
        return 0;
    };
    let after = &word[apostrophe..];
    let suffix = &after[after.chars().next().map_or(0, char::len_utf8)..];
    let is = |s: &str| suffix.eq_ignore_ascii_case(s);
    if is("t") && word[..apostrophe].ends_with(['n', 'N']) {
        apostrophe - 1
    } else if is("s") || is("re") || is("ve") || is("d") || is("ll") || is("m") {
        apostrophe
    } else {
        0
    }
}

/// Length of the URL token at the start of `s`: up to the next whitespace, less its trailing
/// punctuation (`/` stays).
fn url_len(s: &str) -> usize {
    let chunk = &s[..s.find(is_py_space).unwrap_or(s.len())];
    chunk
        .trim_end_matches(|c: char| !is_word_char(c) && c != '/')
        .len()
}

/// The tokens of `text`, punctuation tokens included (datatrove's `split_into_words`).
pub fn words(text: &str) -> impl Iterator<Item = &str> {
    word_spans(text).map(move |r| &text[r])
}

/// Whether the token consists only of datatrove `PUNCTUATION_SET` characters (Gopher quality
/// does not count it as a word).
pub fn is_symbol_word(word: &str) -> bool {
    word.chars().all(punct::is_punctuation)
}

/// Whether the token is punctuation: no letter, digit or mark (spaCy's `is_punct`, roughly).
fn is_punct_token(word: &str) -> bool {
    !word.chars().any(|c| is_word_char(c) || is_cjk_single(c))
}

/// Whether a token ends a sentence: exactly one sentencizer character (`...` does not).
fn ends_sentence(word: &str) -> bool {
    let mut chars = word.chars();
    matches!((chars.next(), chars.next()), (Some(c), None) if punct::is_sentence_end(c))
}

/// Byte ranges of the sentences of `text`, as spaCy's sentencizer cuts them: a token that is
/// one sentence-final character ends a sentence, the punctuation tokens right after it (closing
/// quotes, brackets) still belong to it, and the next other token starts a new sentence.
pub fn sentence_spans(text: &str) -> Vec<Range<usize>> {
    let mut sentences = Vec::new();
    let mut current: Option<Range<usize>> = None;
    let mut ended = false;
    for span in word_spans(text) {
        let word = &text[span.clone()];
        match current.as_mut() {
            Some(sentence) if !ended || is_punct_token(word) => sentence.end = span.end,
            _ => {
                if let Some(done) = current.take() {
                    sentences.push(done);
                }
                current = Some(span.clone());
                ended = false;
            }
        }
        if ends_sentence(word) {
            ended = true;
        }
    }
    sentences.extend(current);
    sentences
}

/// Number of sentences in `text` (see [`sentence_spans`]).
pub fn count_sentences(text: &str) -> usize {
    sentence_spans(text).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(text: &str) -> Vec<&str> {
        words(text).collect()
    }

    #[test]
    fn splits_punctuation_off_words() {
        assert_eq!(w("Hello, world."), ["Hello", ",", "world", "."]);
        assert_eq!(
            w("  (quoted)  \"text\"!"),
            ["(", "quoted", ")", "\"", "text", "\"", "!"]
        );
        assert_eq!(w("Wait... what?!"), ["Wait", "...", "what", "?", "!"]);
        assert_eq!(w("#tag"), ["#", "tag"]);
        assert_eq!(w(""), Vec::<&str>::new());
        assert_eq!(w(" \n\t "), Vec::<&str>::new());
    }

    #[test]
    fn keeps_joined_words_whole() {
        assert_eq!(
            w("O’Neil e.g. J. Smith, U.S. 3.5 1,000 10:30 1/2 a@b.org COVID-19 x=1"),
            [
                "O’Neil", "e.g.", "J.", "Smith", ",", "U.S.", "3.5", "1,000", "10:30", "1/2",
                "a@b.org", "COVID-19", "x=1"
            ]
        );
        assert_eq!(w("Mr. X... end"), ["Mr", ".", "X", "...", "end"]);
        assert_eq!(
            w("It's Gutenberg’s, don't CAN'T we'll I'm students' rock'n"),
            [
                "It",
                "'s",
                "Gutenberg",
                "’s",
                ",",
                "do",
                "n't",
                "CA",
                "N'T",
                "we",
                "'ll",
                "I",
                "'m",
                "students",
                "'",
                "rock'n"
            ]
        );
        assert_eq!(
            w("well-known and/or a,b end.Start 2018-2019"),
            [
                "well", "-", "known", "and", "/", "or", "a", ",", "b", "end", ".", "Start", "2018",
                "-", "2019"
            ]
        );
        assert_eq!(
            w("See https://example.com/a?b=1, or www.x.org."),
            [
                "See",
                "https://example.com/a?b=1",
                ",",
                "or",
                "www.x.org",
                "."
            ]
        );
    }

    #[test]
    fn unicode_words_marks_and_cjk() {
        assert_eq!(
            w("naïve café Привет мир"),
            ["naïve", "café", "Привет", "мир"]
        );
        // Devanagari with a virama (a combining mark that is not alphabetic) stays one word.
        assert_eq!(w("नमस्ते दुनिया"), ["नमस्ते", "दुनिया"]);
        assert_eq!(
            w("吾輩は猫である。"),
            ["吾", "輩", "は", "猫", "で", "あ", "る", "。"]
        );
        assert_eq!(w("한국어 문장"), ["한국어", "문장"]);
    }

    #[test]
    fn python_whitespace_and_lines() {
        assert!(is_py_space('\u{1f}') && is_py_space('\u{a0}') && !is_py_space('\u{200b}'));
        assert_eq!(py_strip("\u{1c} a b \n"), "a b");
        let lines: Vec<_> = py_splitlines("a\r\nb\rc\n\nd\u{2028}e\n").collect();
        assert_eq!(lines, ["a", "b", "c", "", "d", "e"]);
        assert_eq!(py_splitlines("").count(), 0);
        assert_eq!(split_newline_runs("\na\n\nb\n"), ["", "a", "b", ""]);
        assert_eq!(split_paragraphs("\n\na\nb\n\n\nc\n"), ["a\nb", "c"]);
        assert_eq!(split_paragraphs("  "), [""]);
        let split: Vec<_> = py_split_whitespace(" a  b\u{1d}c ").collect();
        assert_eq!(split, ["a", "b", "c"]);
        assert_eq!(char_len("héllo…"), 6);
    }

    #[test]
    fn sentences_like_the_sentencizer() {
        assert_eq!(count_sentences("One. Two! Three? Four"), 4);
        assert_eq!(count_sentences("He said \"stop.\" Then left."), 2);
        assert_eq!(count_sentences("Wait... and more"), 1);
        assert_eq!(count_sentences("Really?! Yes."), 2);
        assert_eq!(count_sentences("吾輩は猫である。名前はまだ無い。"), 2);
        assert_eq!(count_sentences(""), 0);
        let text = "First one. (Second.) Third";
        let spans: Vec<_> = sentence_spans(text).into_iter().map(|r| &text[r]).collect();
        // An opening bracket right after a sentence end still belongs to it, as in spaCy.
        assert_eq!(spans, ["First one. (", "Second.)", "Third"]);
    }

    #[test]
    fn symbol_words() {
        assert!(is_symbol_word("...") && is_symbol_word("#") && is_symbol_word("»"));
        assert!(!is_symbol_word("a.") && !is_symbol_word("$5") && !is_symbol_word("¿"));
    }
}
