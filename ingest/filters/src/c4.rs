//! The C4 quality filter (Raffel et al. 2020) as datatrove 0.10.1's `C4QualityFilter`: it
//! removes lines, drops documents, and rewrites the text of the documents it keeps.

use std::borrow::Cow;
use std::ops::AddAssign;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::filter::{Doc, Filter, Kind};
use crate::verdict::Drop;
use crate::words::{self, char_len, py_split_whitespace, py_splitlines, py_strip};

/// Substrings (of the lowercased line) that mark a line as a policy notice.
pub const POLICY_SUBSTRINGS: [&str; 6] = [
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
];

/// C4's line and document rules. Units are lines (`str.splitlines`, each stripped), or
/// sentences when `split_paragraph` is false. For each unit, in this order:
///
/// 1. a whitespace-separated word longer than `max_word_length` characters removes the line;
/// 2. citation markers `[1]`, `[]`, `[edit]` and `[citation needed]` are deleted (when
///    `remove_citations`);
/// 3. when `filter_no_terminal_punct`, a line that does not end with `.`, `?`, `!`, `"` or
///    `'`, or that ends with `...`, is removed;
/// 4. a line with fewer than `min_words_per_line` words (counted before step 2) is removed;
/// 5. `lorem ipsum` (any case) drops the document (`lorem_ipsum`);
/// 6. `javascript` (any case) removes the line;
/// 7. `{` drops the document (`curly_bracket`);
/// 8. a line containing one of [`POLICY_SUBSTRINGS`] (any case) is removed;
/// 9. the line is kept and its sentences are counted.
///
/// Then fewer than `min_num_sentences` sentences drops the document (`too_few_sentences`), and
/// otherwise its text becomes the kept lines joined by `\n`, stripped.
///
/// Defaults are datatrove's except `filter_no_terminal_punct`, which is false as in FineWeb's
/// recipe (`C4QualityFilter(filter_no_terminal_punct=False)`); C4 itself and datatrove's class
/// default have it true. A numeric setting of 0 disables its rule (datatrove uses -1).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct C4Quality {
    /// When false, [`C4Quality::apply`] returns every text unchanged.
    pub enabled: bool,
    /// Units are lines (true) or sentences of the whole text (false).
    pub split_paragraph: bool,
    /// Delete Wikipedia-style citation markers.
    pub remove_citations: bool,
    /// Remove lines without terminal punctuation (false in FineWeb, true in C4).
    pub filter_no_terminal_punct: bool,
    /// Fewest sentences in the kept lines (0: no minimum).
    pub min_num_sentences: usize,
    /// Fewest words in a line (0: no minimum).
    pub min_words_per_line: usize,
    /// Longest word, in characters (0: no maximum).
    pub max_word_length: usize,
    /// Drop documents containing `lorem ipsum`.
    pub filter_lorem_ipsum: bool,
    /// Remove lines mentioning `javascript`.
    pub filter_javascript: bool,
    /// Drop documents containing `{` in a kept line.
    pub filter_curly_bracket: bool,
    /// Remove lines with a policy notice.
    pub filter_policy: bool,
}

impl Default for C4Quality {
    fn default() -> Self {
        Self {
            enabled: true,
            split_paragraph: true,
            remove_citations: true,
            filter_no_terminal_punct: false,
            min_num_sentences: 5,
            min_words_per_line: 3,
            max_word_length: 1000,
            filter_lorem_ipsum: true,
            filter_javascript: true,
            filter_curly_bracket: true,
            filter_policy: true,
        }
    }
}

/// Lines that [`C4Quality`] removed, by rule (across documents when reused).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct C4LineCounts {
    /// Removed for a word longer than `max_word_length`.
    pub long_word: u64,
    /// Removed for no terminal punctuation.
    pub no_terminal_punct: u64,
    /// Removed for fewer than `min_words_per_line` words.
    pub too_few_words: u64,
    /// Removed for mentioning javascript.
    pub javascript: u64,
    /// Removed for a policy notice.
    pub policy: u64,
    /// Kept.
    pub kept: u64,
}

impl C4LineCounts {
    /// `(rule, count)` for each removal rule, then `("kept", count)`.
    pub fn by_rule(&self) -> [(&'static str, u64); 6] {
        [
            ("long_word", self.long_word),
            ("no_terminal_punct", self.no_terminal_punct),
            ("too_few_words", self.too_few_words),
            ("javascript", self.javascript),
            ("policy", self.policy),
            ("kept", self.kept),
        ]
    }
}

impl AddAssign for C4LineCounts {
    fn add_assign(&mut self, o: Self) {
        self.long_word += o.long_word;
        self.no_terminal_punct += o.no_terminal_punct;
        self.too_few_words += o.too_few_words;
        self.javascript += o.javascript;
        self.policy += o.policy;
        self.kept += o.kept;
    }
}

/// `\[\d*]|\[edit]|\[citation needed]`, the citation markers datatrove deletes (`\d` is any
/// Unicode decimal digit in both Python and the `regex` crate).
static CITATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\[\d*\]|\[edit\]|\[citation needed\]").expect("the citation pattern is valid")
});

/// Deletes citation markers.
fn remove_citations(line: &str) -> Cow<'_, str> {
    if !line.contains('[') {
        return line.into();
    }
    CITATION.replace_all(line, "")
}

fn ends_with_terminal_punct(line: &str) -> bool {
    line.ends_with(['.', '?', '!', '"', '\'']) && !line.ends_with("...")
}

impl C4Quality {
    const NAME: &'static str = "c4";

    /// The text with C4's line rules applied, or the rule that drops the document.
    pub fn apply(&self, text: &str) -> Result<String, Drop> {
        self.apply_counted(text, &mut C4LineCounts::default())
    }

    /// [`C4Quality::apply`], adding the lines it removes to `counts` (also for documents it
    /// then drops, as datatrove's line statistics do).
    pub fn apply_counted(&self, text: &str, counts: &mut C4LineCounts) -> Result<String, Drop> {
        if !self.enabled {
            return Ok(text.to_owned());
        }
        let units: Vec<&str> = if self.split_paragraph {
            py_splitlines(text).collect()
        } else {
            words::sentence_spans(text)
                .into_iter()
                .map(|r| &text[r])
                .collect()
        };
        let mut kept: Vec<String> = Vec::new();
        let mut sentences = 0usize;
        for unit in units {
            let line = py_strip(unit);
            let n_words = py_split_whitespace(line).count();
            if self.max_word_length > 0
                && py_split_whitespace(line).any(|w| char_len(w) > self.max_word_length)
            {
                counts.long_word += 1;
                continue;
            }
            let line = if self.remove_citations {
                remove_citations(line)
            } else {
                line.into()
            };
            if self.filter_no_terminal_punct && !ends_with_terminal_punct(&line) {
                counts.no_terminal_punct += 1;
                continue;
            }
            if n_words < self.min_words_per_line {
                counts.too_few_words += 1;
                continue;
            }
            let lower = line.to_lowercase();
            if self.filter_lorem_ipsum && lower.contains("lorem ipsum") {
                return Err(Drop::matched(Self::NAME, "lorem_ipsum"));
            }
            if self.filter_javascript && lower.contains("javascript") {
                counts.javascript += 1;
                continue;
            }
            if self.filter_curly_bracket && line.contains('{') {
                return Err(Drop::matched(Self::NAME, "curly_bracket"));
            }
            if self.filter_policy && POLICY_SUBSTRINGS.iter().any(|p| lower.contains(p)) {
                counts.policy += 1;
                continue;
            }
            sentences += if self.split_paragraph {
                words::count_sentences(&line)
            } else {
                1
            };
            counts.kept += 1;
            kept.push(line.into_owned());
        }
        if sentences < self.min_num_sentences {
            return Err(Drop {
                filter: Self::NAME,
                rule: "too_few_sentences",
                value: sentences as f64,
                threshold: self.min_num_sentences as f64,
            });
        }
        Ok(py_strip(&kept.join("\n")).to_owned())
    }
}

impl Filter for C4Quality {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn enabled(&self) -> bool {
        self.enabled
    }

    fn kind(&self) -> Kind {
        Kind::Quality { sql: "c4_quality" }
    }

    /// Replaces the text with the lines C4 keeps (a disabled C4 leaves it as it is).
    fn apply(&self, doc: &mut Doc<'_>) -> Result<(), Drop> {
        if self.enabled {
            doc.text = Cow::Owned(C4Quality::apply(self, &doc.text)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::good_text;

    fn apply(f: &C4Quality, text: &str) -> (Result<String, Drop>, C4LineCounts) {
        let mut counts = C4LineCounts::default();
        (f.apply_counted(text, &mut counts), counts)
    }

    #[test]
    fn keeps_good_text_and_strips_lines() {
        let text = good_text();
        let (out, counts) = apply(
            &C4Quality::default(),
            &format!("  {}\n\n", text.replace('\n', "  \n")),
        );
        assert_eq!(out.unwrap(), text.trim_end());
        // The two blank lines at the end have too few words.
        assert_eq!(
            counts,
            C4LineCounts {
                kept: 50,
                too_few_words: 2,
                ..Default::default()
            }
        );
        assert_eq!(
            C4Quality {
                enabled: false,
                ..Default::default()
            }
            .apply(" x ")
            .unwrap(),
            " x "
        );
    }

    #[test]
    fn long_word_line_rule() {
        let text = format!("{}\nA line with {} in it.", good_text(), "x".repeat(1001));
        let (out, counts) = apply(&C4Quality::default(), &text);
        assert_eq!(counts.long_word, 1);
        assert_eq!(out.unwrap(), good_text().trim_end());
        let text = format!("{}\nA line with {} in it.", good_text(), "x".repeat(1000));
        assert_eq!(apply(&C4Quality::default(), &text).1.long_word, 0);
    }

    #[test]
    fn citations_are_removed() {
        let text = format!(
            "{}The sky is blue.[1][citation needed] Really[edit] [x] [23]",
            good_text()
        );
        let out = C4Quality::default().apply(&text).unwrap();
        assert!(out.ends_with("The sky is blue. Really [x]"), "{out:?}");
        assert_eq!(remove_citations("a[]b[١٢]c[²][edit ]"), "abc[²][edit ]");
        let kept = C4Quality {
            remove_citations: false,
            ..Default::default()
        }
        .apply(&text)
        .unwrap();
        assert!(kept.ends_with("[23]"));
    }

    #[test]
    fn terminal_punctuation_line_rule() {
        let text = format!(
            "{}No punctuation at the end\nTrailing dots here...\nA \"quoted end.\"",
            good_text()
        );
        let fineweb = apply(&C4Quality::default(), &text);
        assert_eq!(fineweb.1.no_terminal_punct, 0);
        let c4 = C4Quality {
            filter_no_terminal_punct: true,
            ..Default::default()
        };
        let (out, counts) = apply(&c4, &text);
        assert_eq!(counts.no_terminal_punct, 2);
        assert!(out.unwrap().ends_with("A \"quoted end.\""));
    }

    #[test]
    fn too_few_words_line_rule() {
        let text = format!("Home\nTwo words.\n{}", good_text());
        let (out, counts) = apply(&C4Quality::default(), &text);
        assert_eq!(counts.too_few_words, 2);
        assert_eq!(out.unwrap(), good_text().trim_end());
    }

    #[test]
    fn lorem_ipsum_document_rule() {
        let text = format!("{}Lorem Ipsum dolor sit amet.", good_text());
        assert_eq!(
            C4Quality::default().apply(&text).unwrap_err().rule,
            "lorem_ipsum"
        );
        // A line removed before the rule (too short) does not drop the document.
        let text = format!("{}Lorem ipsum.", good_text());
        assert!(C4Quality::default().apply(&text).is_ok());
    }

    #[test]
    fn javascript_line_rule() {
        let text = format!("{}Please enable JavaScript in your browser.", good_text());
        let (out, counts) = apply(&C4Quality::default(), &text);
        assert_eq!(counts.javascript, 1);
        assert_eq!(out.unwrap(), good_text().trim_end());
    }

    #[test]
    fn curly_bracket_document_rule() {
        let text = format!("{}function f() {{ return 1; }}", good_text());
        let d = C4Quality::default().apply(&text).unwrap_err();
        assert_eq!((d.filter, d.rule), ("c4", "curly_bracket"));
        let off = C4Quality {
            filter_curly_bracket: false,
            ..Default::default()
        };
        assert!(off.apply(&text).is_ok());
    }

    #[test]
    fn policy_line_rule() {
        let text = format!(
            "{}This site uses cookies to improve things.\nRead our Privacy Policy here.",
            good_text()
        );
        let (out, counts) = apply(&C4Quality::default(), &text);
        assert_eq!(counts.policy, 2);
        assert_eq!(out.unwrap(), good_text().trim_end());
    }

    #[test]
    fn too_few_sentences_document_rule() {
        let text = "One sentence here. Two sentences here.\nThree sentences are here. Four.";
        let d = C4Quality::default().apply(text).unwrap_err();
        assert_eq!(
            (d.rule, d.value, d.threshold),
            ("too_few_sentences", 4.0, 5.0)
        );
        assert!(C4Quality::default().apply(&format!("{text} Five.")).is_ok());
    }

    #[test]
    fn sentence_units() {
        let f = C4Quality {
            split_paragraph: false,
            ..Default::default()
        };
        let text =
            "First one here. Second one here. Third one here. Fourth one here. Fifth one here. Hi.";
        // Six sentences; "Hi." has too few words.
        let (out, counts) = apply(&f, text);
        assert_eq!(counts.too_few_words, 1);
        assert_eq!(out.unwrap().lines().count(), 5);
    }
}
