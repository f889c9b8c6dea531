//! The Gopher quality and repetition filters (Rae et al. 2021, appendix A), as datatrove 0.10.1
//! defines them and FineWeb runs them: [`GopherRepetition`] first, then [`GopherQuality`].
//!
//! All lengths are in Unicode code points (Python's `len`); words are [`crate::words::words`]
//! tokens, punctuation tokens included, where datatrove uses spaCy's English tokenizer.

use std::ops::ControlFlow;

use serde::Deserialize;

use crate::error::{Error, Result, check_threshold};
use crate::hash::{map_with_capacity, set_with_capacity};
use crate::verdict::{Drop, Limit, Meter, ratio};
use crate::words::{self, char_len, py_lstrip, py_rstrip, py_splitlines};

/// The stop words of the Gopher quality filter.
pub const GOPHER_STOP_WORDS: [&str; 8] = ["the", "be", "to", "of", "and", "that", "have", "with"];

/// Gopher's document quality rules. A document is dropped by the first rule that fails, in this
/// order (rule names as in [`Drop::rule`] and [`GopherQuality::scores`]):
///
/// 1. `words`: tokens with at least one character outside datatrove's `PUNCTUATION_SET`; fewer
///    than `min_doc_words` or more than `max_doc_words` drops.
/// 2. `mean_word_length`: mean length of those words, outside
///    `min_avg_word_length..=max_avg_word_length` drops.
/// 3. `hash_ratio`: occurrences of `#` in the text per token (all tokens), and
///    `ellipsis_ratio`: occurrences of `...` and `…` per token; above `max_symbol_word_ratio`
///    drops.
/// 4. `bullet_lines_ratio`: lines (`str.splitlines`, empty ones included) that start with `•`
///    or `-` after leading whitespace, above `max_bullet_lines_ratio` drops;
///    `ellipsis_lines_ratio`: lines ending with `...` or `…` before trailing whitespace, above
///    `max_ellipsis_lines_ratio` drops.
/// 5. `alpha_words_ratio`: tokens with an alphabetic character per token (punctuation tokens
///    count in the denominator), below `min_alpha_words_ratio` drops. Alphabetic is Rust's
///    `char::is_alphabetic`, which is a little wider than Python's `isalpha` (it also takes
///    letter numbers and alphabetic marks).
/// 6. `stop_words`: distinct `stop_words` present as tokens (case-sensitive: `The` is not
///    `the`), fewer than `min_stop_words` drops.
///
/// Defaults are datatrove's (the Gopher paper's): 50..100,000 words, mean word length 3..10,
/// symbol ratio 0.1, bullet lines 0.9, ellipsis lines 0.3, 80 % alphabetic words, two of
/// `the be to of and that have with`.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GopherQuality {
    /// When false, [`GopherQuality::check`] keeps every document.
    pub enabled: bool,
    /// Fewest words (non-symbol tokens).
    pub min_doc_words: usize,
    /// Most words (non-symbol tokens).
    pub max_doc_words: usize,
    /// Lowest mean word length, in characters.
    pub min_avg_word_length: f64,
    /// Highest mean word length, in characters.
    pub max_avg_word_length: f64,
    /// Highest `#` per token and highest `...`/`…` per token.
    pub max_symbol_word_ratio: f64,
    /// Highest fraction of lines that start with a bullet.
    pub max_bullet_lines_ratio: f64,
    /// Highest fraction of lines that end with an ellipsis.
    pub max_ellipsis_lines_ratio: f64,
    /// Lowest fraction of tokens with an alphabetic character (datatrove's
    /// `max_non_alpha_words_ratio`, which despite its name is this minimum).
    pub min_alpha_words_ratio: f64,
    /// Fewest distinct stop words present.
    pub min_stop_words: usize,
    /// The stop words.
    pub stop_words: Vec<String>,
}

impl Default for GopherQuality {
    fn default() -> Self {
        Self {
            enabled: true,
            min_doc_words: 50,
            max_doc_words: 100_000,
            min_avg_word_length: 3.0,
            max_avg_word_length: 10.0,
            max_symbol_word_ratio: 0.1,
            max_bullet_lines_ratio: 0.9,
            max_ellipsis_lines_ratio: 0.3,
            min_alpha_words_ratio: 0.8,
            min_stop_words: 2,
            stop_words: GOPHER_STOP_WORDS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl GopherQuality {
    const NAME: &'static str = "gopher_quality";

    /// Checks the settings (thresholds finite and not negative).
    pub fn validate(&self) -> Result<()> {
        for (field, value) in [
            ("min_avg_word_length", self.min_avg_word_length),
            ("max_avg_word_length", self.max_avg_word_length),
            ("max_symbol_word_ratio", self.max_symbol_word_ratio),
            ("max_bullet_lines_ratio", self.max_bullet_lines_ratio),
            ("max_ellipsis_lines_ratio", self.max_ellipsis_lines_ratio),
            ("min_alpha_words_ratio", self.min_alpha_words_ratio),
        ] {
            check_threshold(Self::NAME, field, value)?;
        }
        if self.min_stop_words > self.stop_words.len() {
            return Err(Error::Config {
                filter: Self::NAME,
                field: "min_stop_words",
                message: format!(
                    "{} is more than the {} stop words given",
                    self.min_stop_words,
                    self.stop_words.len()
                ),
            });
        }
        Ok(())
    }

    /// Keeps the document, or names the first rule that drops it.
    pub fn check(&self, text: &str) -> std::result::Result<(), Drop> {
        if !self.enabled {
            return Ok(());
        }
        let mut meter = Meter::check(Self::NAME);
        let _ = self.measure(text, &mut meter);
        meter.into_result()
    }

    /// Every measured value, by rule name, in rule order (whether or not the filter is enabled).
    pub fn scores(&self, text: &str) -> Vec<(&'static str, f64)> {
        let mut meter = Meter::scores(Self::NAME);
        let _ = self.measure(text, &mut meter);
        meter.into_scores()
    }

    fn measure(&self, text: &str, m: &mut Meter) -> ControlFlow<()> {
        let tokens: Vec<&str> = words::words(text).collect();
        let n_tokens = tokens.len();
        let (n_words, word_chars) = tokens
            .iter()
            .filter(|t| !words::is_symbol_word(t))
            .fold((0, 0), |(n, chars), t| (n + 1, chars + char_len(t)));
        m.measure(
            "words",
            n_words as f64,
            &[
                Limit::Min(self.min_doc_words as f64),
                Limit::Max(self.max_doc_words as f64),
            ],
        )?;
        m.measure(
            "mean_word_length",
            ratio(word_chars, n_words),
            &[
                Limit::Min(self.min_avg_word_length),
                Limit::Max(self.max_avg_word_length),
            ],
        )?;

        let hashes = text.matches('#').count();
        m.measure(
            "hash_ratio",
            ratio(hashes, n_tokens),
            &[Limit::Max(self.max_symbol_word_ratio)],
        )?;
        let ellipses = text.matches("...").count() + text.matches('…').count();
        m.measure(
            "ellipsis_ratio",
            ratio(ellipses, n_tokens),
            &[Limit::Max(self.max_symbol_word_ratio)],
        )?;

        let (mut lines, mut bullets, mut ellipsis_lines) = (0, 0, 0);
        for line in py_splitlines(text) {
            lines += 1;
            let start = py_lstrip(line);
            bullets += usize::from(start.starts_with('•') || start.starts_with('-'));
            let end = py_rstrip(line);
            ellipsis_lines += usize::from(end.ends_with("...") || end.ends_with('…'));
        }
        m.measure(
            "bullet_lines_ratio",
            ratio(bullets, lines),
            &[Limit::Max(self.max_bullet_lines_ratio)],
        )?;
        m.measure(
            "ellipsis_lines_ratio",
            ratio(ellipsis_lines, lines),
            &[Limit::Max(self.max_ellipsis_lines_ratio)],
        )?;

        let alpha = tokens
            .iter()
            .filter(|t| t.chars().any(char::is_alphabetic))
            .count();
        m.measure(
            "alpha_words_ratio",
            ratio(alpha, n_tokens),
            &[Limit::Min(self.min_alpha_words_ratio)],
        )?;

        let mut seen = vec![false; self.stop_words.len()];
        for token in &tokens {
            if let Some(i) = self.stop_words.iter().position(|s| s == token) {
                seen[i] = true;
            }
        }
        let stop_words = seen.iter().filter(|&&s| s).count();
        m.measure(
            "stop_words",
            stop_words as f64,
            &[Limit::Min(self.min_stop_words as f64)],
        )
    }
}

/// Gopher's repetition rules. A document is dropped by the first rule that fails, in this
/// order (fractions of characters are over the length of the whole text):
///
/// 1. `empty`: the text is empty.
/// 2. Paragraphs (`re.split(r"\n{2,}", text.strip())`): `dup_para_frac`, the fraction of
///    paragraphs that repeat an earlier one, above `dup_para_frac`; `dup_para_char_frac`, their
///    characters, above `dup_para_char_frac`.
/// 3. Lines (`re.split("\n+", text)`): `dup_line_frac` and `dup_line_char_frac` likewise.
/// 4. For each `(n, max)` of `top_n_grams`: `top_{n}_gram`, the characters of the most frequent
///    word n-gram (words joined by a space, ties to the first seen) times its count, above `max`.
/// 5. For each `(n, max)` of `dup_n_grams`: `dup_{n}_gram`, the characters of n-grams (words
///    joined without a separator, as datatrove 0.10.1 does) that repeat an earlier one,
///    skipping past each repeat so that repeats do not overlap, above `max`.
///
/// Defaults are datatrove's: 0.3, 0.3, 0.2, 0.2; top n-grams 2: 0.20, 3: 0.18, 4: 0.16;
/// duplicate n-grams 5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GopherRepetition {
    /// When false, [`GopherRepetition::check`] keeps every document.
    pub enabled: bool,
    /// Highest fraction of duplicate lines.
    pub dup_line_frac: f64,
    /// Highest fraction of duplicate paragraphs.
    pub dup_para_frac: f64,
    /// Highest fraction of characters in duplicate lines.
    pub dup_line_char_frac: f64,
    /// Highest fraction of characters in duplicate paragraphs.
    pub dup_para_char_frac: f64,
    /// `(n, max)`: highest fraction of characters in the most frequent n-gram (n in 1..=16).
    pub top_n_grams: Vec<(usize, f64)>,
    /// `(n, max)`: highest fraction of characters in duplicate n-grams (n in 1..=16).
    pub dup_n_grams: Vec<(usize, f64)>,
}

impl Default for GopherRepetition {
    fn default() -> Self {
        Self {
            enabled: true,
            dup_line_frac: 0.3,
            dup_para_frac: 0.3,
            dup_line_char_frac: 0.2,
            dup_para_char_frac: 0.2,
            top_n_grams: vec![(2, 0.20), (3, 0.18), (4, 0.16)],
            dup_n_grams: vec![
                (5, 0.15),
                (6, 0.14),
                (7, 0.13),
                (8, 0.12),
                (9, 0.11),
                (10, 0.10),
            ],
        }
    }
}

const TOP_NAMES: [&str; 16] = [
    "top_1_gram",
    "top_2_gram",
    "top_3_gram",
    "top_4_gram",
    "top_5_gram",
    "top_6_gram",
    "top_7_gram",
    "top_8_gram",
    "top_9_gram",
    "top_10_gram",
    "top_11_gram",
    "top_12_gram",
    "top_13_gram",
    "top_14_gram",
    "top_15_gram",
    "top_16_gram",
];
const DUP_NAMES: [&str; 16] = [
    "dup_1_gram",
    "dup_2_gram",
    "dup_3_gram",
    "dup_4_gram",
    "dup_5_gram",
    "dup_6_gram",
    "dup_7_gram",
    "dup_8_gram",
    "dup_9_gram",
    "dup_10_gram",
    "dup_11_gram",
    "dup_12_gram",
    "dup_13_gram",
    "dup_14_gram",
    "dup_15_gram",
    "dup_16_gram",
];

fn ngram_name(names: &[&'static str; 16], fallback: &'static str, n: usize) -> &'static str {
    n.checked_sub(1)
        .and_then(|i| names.get(i))
        .copied()
        .unwrap_or(fallback)
}

/// datatrove's `find_duplicates`: how many elements repeat an earlier one, and their characters.
pub(crate) fn find_duplicates<'a>(items: impl ExactSizeIterator<Item = &'a str>) -> (usize, usize) {
    let mut seen = set_with_capacity(items.len());
    let (mut count, mut chars) = (0, 0);
    for item in items {
        if !seen.insert(item) {
            count += 1;
            chars += char_len(item);
        }
    }
    (count, chars)
}

/// The tokens of a document laid out so that every n-gram is a slice of one string.
struct NGrams<'a> {
    tokens: Vec<&'a str>,
    /// The tokens joined by single spaces, and where each token starts in it.
    spaced: String,
    spaced_start: Vec<usize>,
    /// The tokens joined without a separator, and where each token starts in it (one more
    /// entry: the end).
    joined: String,
    joined_start: Vec<usize>,
    /// Prefix sums of the tokens' lengths in characters (one more entry).
    char_prefix: Vec<usize>,
}

impl<'a> NGrams<'a> {
    fn new(text: &'a str) -> Self {
        let tokens: Vec<&str> = words::words(text).collect();
        let bytes: usize = tokens.iter().map(|t| t.len()).sum();
        let mut g = Self {
            spaced: String::with_capacity(bytes + tokens.len()),
            spaced_start: Vec::with_capacity(tokens.len()),
            joined: String::with_capacity(bytes),
            joined_start: Vec::with_capacity(tokens.len() + 1),
            char_prefix: Vec::with_capacity(tokens.len() + 1),
            tokens,
        };
        g.char_prefix.push(0);
        for (i, t) in g.tokens.iter().enumerate() {
            if i > 0 {
                g.spaced.push(' ');
            }
            g.spaced_start.push(g.spaced.len());
            g.spaced.push_str(t);
            g.joined_start.push(g.joined.len());
            g.joined.push_str(t);
            let last = g.char_prefix[i];
            g.char_prefix.push(last + char_len(t));
        }
        g.joined_start.push(g.joined.len());
        g
    }

    /// The n-gram at `i` joined by spaces.
    fn spaced(&self, i: usize, n: usize) -> &str {
        let last = i + n - 1;
        let end = self.spaced_start[last] + self.tokens[last].len();
        &self.spaced[self.spaced_start[i]..end]
    }

    /// The n-gram at `i` joined without a separator.
    fn joined(&self, i: usize, n: usize) -> &str {
        &self.joined[self.joined_start[i]..self.joined_start[i + n]]
    }

    /// Characters of the n-gram at `i` without separators.
    fn chars(&self, i: usize, n: usize) -> usize {
        self.char_prefix[i + n] - self.char_prefix[i]
    }

    /// Characters of the most frequent n-gram times its count (`Counter.most_common(1)`: ties
    /// go to the n-gram seen first); 0 when there are fewer than `n` tokens.
    fn top_chars(&self, n: usize) -> usize {
        if n == 0 || self.tokens.len() < n {
            return 0;
        }
        let mut counts = map_with_capacity::<&str, (usize, usize)>(self.tokens.len() - n + 1);
        for i in 0..=self.tokens.len() - n {
            counts.entry(self.spaced(i, n)).or_insert((0, i)).0 += 1;
        }
        let best = counts
            .values()
            .copied()
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        best.map_or(0, |(count, first)| (self.chars(first, n) + n - 1) * count)
    }

    /// datatrove's `find_all_duplicate`: characters of n-grams that repeat an earlier one,
    /// jumping past each repeat.
    fn duplicate_chars(&self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let mut seen = set_with_capacity(self.tokens.len() + 1 - n.min(self.tokens.len()));
        let mut dup = 0;
        let mut i = 0;
        while i + n <= self.tokens.len() {
            let gram = self.joined(i, n);
            if seen.contains(gram) {
                dup += self.chars(i, n);
                i += n;
            } else {
                seen.insert(gram);
                i += 1;
            }
        }
        dup
    }
}

impl GopherRepetition {
    const NAME: &'static str = "gopher_repetition";

    /// Checks the settings (fractions finite and not negative, n in 1..=16).
    pub fn validate(&self) -> Result<()> {
        for (field, value) in [
            ("dup_line_frac", self.dup_line_frac),
            ("dup_para_frac", self.dup_para_frac),
            ("dup_line_char_frac", self.dup_line_char_frac),
            ("dup_para_char_frac", self.dup_para_char_frac),
        ] {
            check_threshold(Self::NAME, field, value)?;
        }
        for (field, list) in [
            ("top_n_grams", &self.top_n_grams),
            ("dup_n_grams", &self.dup_n_grams),
        ] {
            for &(n, max) in list {
                if !(1..=16).contains(&n) {
                    return Err(Error::Config {
                        filter: Self::NAME,
                        field,
                        message: format!("n = {n} is not in 1..=16"),
                    });
                }
                check_threshold(Self::NAME, field, max)?;
            }
        }
        Ok(())
    }

    /// Keeps the document, or names the first rule that drops it.
    pub fn check(&self, text: &str) -> std::result::Result<(), Drop> {
        if !self.enabled {
            return Ok(());
        }
        let mut meter = Meter::check(Self::NAME);
        let _ = self.measure(text, &mut meter);
        meter.into_result()
    }

    /// Every measured value, by rule name, in rule order (whether or not the filter is enabled).
    pub fn scores(&self, text: &str) -> Vec<(&'static str, f64)> {
        let mut meter = Meter::scores(Self::NAME);
        let _ = self.measure(text, &mut meter);
        meter.into_scores()
    }

    fn measure(&self, text: &str, m: &mut Meter) -> ControlFlow<()> {
        if text.is_empty() {
            m.fail("empty")?;
        }
        let text_chars = char_len(text);

        let paragraphs = words::split_paragraphs(text);
        let (dups, dup_chars) = find_duplicates(paragraphs.iter().copied());
        m.measure(
            "dup_para_frac",
            ratio(dups, paragraphs.len()),
            &[Limit::Max(self.dup_para_frac)],
        )?;
        m.measure(
            "dup_para_char_frac",
            ratio(dup_chars, text_chars),
            &[Limit::Max(self.dup_para_char_frac)],
        )?;

        let lines = words::split_newline_runs(text);
        let (dups, dup_chars) = find_duplicates(lines.iter().copied());
        m.measure(
            "dup_line_frac",
            ratio(dups, lines.len()),
            &[Limit::Max(self.dup_line_frac)],
        )?;
        m.measure(
            "dup_line_char_frac",
            ratio(dup_chars, text_chars),
            &[Limit::Max(self.dup_line_char_frac)],
        )?;

        let grams = NGrams::new(text);
        for &(n, max) in &self.top_n_grams {
            let name = ngram_name(&TOP_NAMES, "top_n_gram", n);
            m.measure(
                name,
                ratio(grams.top_chars(n), text_chars),
                &[Limit::Max(max)],
            )?;
        }
        for &(n, max) in &self.dup_n_grams {
            let name = ngram_name(&DUP_NAMES, "dup_n_gram", n);
            m.measure(
                name,
                ratio(grams.duplicate_chars(n), text_chars),
                &[Limit::Max(max)],
            )?;
        }
        ControlFlow::Continue(())
    }
}

crate::filter::measuring_filter!(GopherQuality, "gopher_quality");

crate::filter::measuring_filter!(GopherRepetition, "gopher_repetition");

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::{good_text, prose};

    fn quality_rule(f: &GopherQuality, text: &str) -> Option<&'static str> {
        f.check(text).err().map(|d| d.rule)
    }

    #[test]
    fn quality_keeps_good_prose() {
        let f = GopherQuality::default();
        assert_eq!(f.check(&good_text()), Ok(()));
        let scores = f.scores(&good_text());
        let names: Vec<_> = scores.iter().map(|s| s.0).collect();
        assert_eq!(
            names,
            [
                "words",
                "mean_word_length",
                "hash_ratio",
                "ellipsis_ratio",
                "bullet_lines_ratio",
                "ellipsis_lines_ratio",
                "alpha_words_ratio",
                "stop_words"
            ]
        );
        assert_eq!(scores[7].1, 6.0); // the six stop words of the generated prose
    }

    #[test]
    fn quality_word_count_rule() {
        let f = GopherQuality::default();
        let short = "the cat and the dog sat with me. ".repeat(5); // 40 words
        let d = f.check(&short).unwrap_err();
        assert_eq!((d.rule, d.value, d.threshold), ("words", 40.0, 50.0));
        let f = GopherQuality {
            max_doc_words: 100,
            ..Default::default()
        };
        let d = f.check(&good_text()).unwrap_err();
        assert_eq!((d.rule, d.threshold), ("words", 100.0));
    }

    #[test]
    fn quality_mean_word_length_rule() {
        let f = GopherQuality::default();
        let tiny = "a b c d e f g h of the to be ".repeat(10);
        assert_eq!(quality_rule(&f, &tiny), Some("mean_word_length"));
        let long = "the and extraordinarily incomprehensibilities ".repeat(20);
        let d = f.check(&long).unwrap_err();
        assert_eq!((d.rule, d.threshold), ("mean_word_length", 10.0));
    }

    #[test]
    fn quality_symbol_ratio_rules() {
        let f = GopherQuality::default();
        let hashes = format!("{}\n{}", good_text(), "#tag ".repeat(150));
        assert_eq!(quality_rule(&f, &hashes), Some("hash_ratio"));
        let dots = format!("{}\n{}", good_text(), "so… ".repeat(150));
        assert_eq!(quality_rule(&f, &dots), Some("ellipsis_ratio"));
    }

    #[test]
    fn quality_line_rules() {
        let f = GopherQuality::default();
        let bullets: String = good_text().lines().map(|l| format!("  - {l}\n")).collect();
        assert_eq!(quality_rule(&f, &bullets), Some("bullet_lines_ratio"));
        let ellipses: String = good_text()
            .lines()
            .map(|l| format!("{l} and so on...  \n"))
            .collect();
        assert_eq!(quality_rule(&f, &ellipses), Some("ellipsis_lines_ratio"));
    }

    #[test]
    fn quality_alpha_rule() {
        let f = GopherQuality::default();
        let numbers = format!("{} {}", good_text(), "1234 5678 ".repeat(200));
        assert_eq!(quality_rule(&f, &numbers), Some("alpha_words_ratio"));
    }

    #[test]
    fn quality_stop_word_rule() {
        let f = GopherQuality::default();
        let text = format!("{} the end.", prose(50, false));
        let d = f.check(&text).unwrap_err();
        assert_eq!((d.rule, d.value, d.threshold), ("stop_words", 1.0, 2.0));
        assert!(
            GopherQuality {
                enabled: false,
                ..Default::default()
            }
            .check(&text)
            .is_ok()
        );
    }

    fn repetition_rule(text: &str) -> Option<&'static str> {
        GopherRepetition::default()
            .check(text)
            .err()
            .map(|d| d.rule)
    }

    #[test]
    fn repetition_keeps_varied_text() {
        assert_eq!(GopherRepetition::default().check(&good_text()), Ok(()));
        assert_eq!(repetition_rule(""), Some("empty"));
        assert_eq!(repetition_rule("   "), None);
    }

    #[test]
    fn repetition_paragraph_rules() {
        let para = "A paragraph that is repeated.";
        let text = format!("{para}\n\nOne.\n\nTwo.\n\n{para}\n\n{para}");
        let d = GopherRepetition::default().check(&text).unwrap_err();
        assert_eq!(d.rule, "dup_para_frac");
        assert!((d.value - 0.4).abs() < 1e-12);
        // One duplicate in six paragraphs (0.17 < 0.3), but most of the characters.
        let text = format!(
            "{}\n\na\n\nb\n\nc\n\nd\n\n{}",
            para.repeat(3),
            para.repeat(3)
        );
        assert_eq!(repetition_rule(&text), Some("dup_para_char_frac"));
    }

    #[test]
    fn repetition_line_rules() {
        // Single newlines: one paragraph, so the line rules decide.
        let text = "same line\nother\nsame line\nthird\nsame line";
        assert_eq!(repetition_rule(text), Some("dup_line_frac"));
        let long = "a much longer line that repeats itself";
        let text = format!("{long}\nb\nc\nd\ne\nf\ng\n{long}");
        assert_eq!(repetition_rule(&text), Some("dup_line_char_frac"));
    }

    #[test]
    fn repetition_top_ngram_rules() {
        let mut text = good_text();
        text.push_str(&"buy cheap shoes now ".repeat(300));
        let scores = GopherRepetition::default().scores(&text);
        assert!(
            scores.iter().any(|&(n, v)| n == "top_2_gram" && v > 0.2),
            "{scores:?}"
        );
        assert_eq!(repetition_rule(&text), Some("top_2_gram"));
    }

    #[test]
    fn repetition_duplicate_ngram_rules() {
        // One line holding a block of distinct words twice: every 5-gram of the second copy
        // repeats, while no line, paragraph or top n-gram does.
        let block: Vec<String> = (0..300).map(|i| format!("w{i}")).collect();
        let text = format!("{} {}", block.join(" "), block.join(" "));
        let d = GopherRepetition::default().check(&text).unwrap_err();
        assert_eq!(d.rule, "dup_5_gram");
        assert!(GopherRepetition::default().check(&good_text()).is_ok());
    }

    #[test]
    fn ngram_helpers_follow_datatrove() {
        let g = NGrams::new("a b a b a b");
        // "a b" occurs 3 times: 3 characters times 3.
        assert_eq!(g.top_chars(2), 9);
        // Windows: ab (new), ba (new), ab (dup: +2, jump 2) -> ab at 4 (dup: +2).
        assert_eq!(g.duplicate_chars(2), 4);
        // Joined without a separator: "ab"+"c" and "a"+"bc" are the same n-gram.
        let g = NGrams::new("ab c a bc");
        assert_eq!(g.duplicate_chars(2), 3);
        assert_eq!(g.top_chars(0), 0);
        assert_eq!(g.top_chars(9), 0);
        assert_eq!(find_duplicates(["x", "", "x", ""].into_iter()), (2, 1));
    }

    #[test]
    fn validate_rejects_bad_settings() {
        assert!(GopherRepetition::default().validate().is_ok());
        assert!(GopherQuality::default().validate().is_ok());
        let bad = GopherRepetition {
            top_n_grams: vec![(0, 0.1)],
            ..Default::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("top_n_grams")
        );
        let bad = GopherQuality {
            max_symbol_word_ratio: f64::NAN,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn config_from_toml() {
        let f: GopherRepetition =
            toml::from_str("top_n_grams = [[2, 0.5]]\nenabled = false").unwrap();
        assert_eq!(f.top_n_grams, [(2, 0.5)]);
        assert!(!f.enabled);
        assert_eq!(f.dup_line_frac, 0.3);
        assert!(toml::from_str::<GopherQuality>("min_words = 3").is_err());
    }
}
