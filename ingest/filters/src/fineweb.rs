//! FineWeb's own quality filter (Penedo et al. 2024), as datatrove 0.10.1's
//! `FineWebQualityFilter`.

use std::ops::ControlFlow;

use serde::Deserialize;

use crate::error::{Error, Result, check_threshold};
use crate::gopher::find_duplicates;
use crate::punct;
use crate::verdict::{Drop, Limit, Meter, ratio};
use crate::words::{self, char_len, py_strip};

/// FineWeb's line-level heuristics. Lines are the text split at `\n` without those that are
/// blank after stripping; no line left drops the document (`empty`). Then, in this order
/// (rule names as in [`Drop::rule`] and [`FineWebQuality::scores`]):
///
/// 1. `line_punct_ratio`: the fraction of lines ending (as they are, not stripped) with one of
///    `stop_chars` — datatrove's 159 `TERMINAL_PUNCTUATION` characters by default; below
///    `line_punct_thr` drops, unless it is 0 and `line_punct_exclude_zero`.
/// 2. `short_line_ratio`: the fraction of lines of at most `short_line_length` characters;
///    above `short_line_thr` drops.
/// 3. `char_dup_ratio`: characters in lines that repeat an earlier line, over the characters
///    of the text without its newlines; above `char_duplicates_ratio` drops.
/// 4. `list_ratio`: newlines per word token; above `new_line_ratio` drops.
///
/// This is the datatrove 0.10.1 variant (blank lines excluded, strict comparisons, the
/// multilingual stop characters); the repository version FineWeb was probably built with
/// counted blank lines in rules 1–2, compared with `<=`/`>=` and used `. ' " ! ?`.
/// Defaults: 0.12, 0.67 with lines of 30 characters, 0.01, 0.3.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FineWebQuality {
    /// When false, [`FineWebQuality::check`] keeps every document.
    pub enabled: bool,
    /// Lowest fraction of lines ending with a stop character.
    pub line_punct_thr: f64,
    /// Do not drop a document in which no line ends with a stop character.
    pub line_punct_exclude_zero: bool,
    /// The characters that end a line properly; absent: datatrove's `TERMINAL_PUNCTUATION`.
    pub stop_chars: Option<String>,
    /// Highest fraction of short lines.
    pub short_line_thr: f64,
    /// A line of at most this many characters is short.
    pub short_line_length: usize,
    /// Highest fraction of characters in duplicate lines.
    pub char_duplicates_ratio: f64,
    /// Highest number of newlines per word.
    pub new_line_ratio: f64,
}

impl Default for FineWebQuality {
    fn default() -> Self {
        Self {
            enabled: true,
            line_punct_thr: 0.12,
            line_punct_exclude_zero: false,
            stop_chars: None,
            short_line_thr: 0.67,
            short_line_length: 30,
            char_duplicates_ratio: 0.01,
            new_line_ratio: 0.3,
        }
    }
}

impl FineWebQuality {
    const NAME: &'static str = "fineweb";

    /// Checks the settings (thresholds finite and not negative, stop characters not empty).
    pub fn validate(&self) -> Result<()> {
        for (field, value) in [
            ("line_punct_thr", self.line_punct_thr),
            ("short_line_thr", self.short_line_thr),
            ("char_duplicates_ratio", self.char_duplicates_ratio),
            ("new_line_ratio", self.new_line_ratio),
        ] {
            check_threshold(Self::NAME, field, value)?;
        }
        if self.stop_chars.as_deref() == Some("") {
            return Err(Error::Config {
                filter: Self::NAME,
                field: "stop_chars",
                message: "is empty".into(),
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

    /// Every measured value, by rule name, in rule order (whether or not the filter is enabled;
    /// all 0 for a text without a non-blank line).
    pub fn scores(&self, text: &str) -> Vec<(&'static str, f64)> {
        let mut meter = Meter::scores(Self::NAME);
        let _ = self.measure(text, &mut meter);
        meter.into_scores()
    }

    fn ends_properly(&self, line: &str) -> bool {
        let Some(last) = line.chars().next_back() else {
            return false;
        };
        match &self.stop_chars {
            None => punct::is_terminal_punctuation(last),
            Some(chars) => chars.contains(last),
        }
    }

    fn measure(&self, text: &str, m: &mut Meter) -> ControlFlow<()> {
        let lines: Vec<&str> = text
            .split('\n')
            .filter(|l| !py_strip(l).is_empty())
            .collect();
        if lines.is_empty() {
            m.fail("empty")?;
        }

        let punct = lines.iter().filter(|l| self.ends_properly(l)).count();
        let punct_ratio = ratio(punct, lines.len());
        let limit = if punct == 0 && self.line_punct_exclude_zero {
            &[][..]
        } else {
            &[Limit::Min(self.line_punct_thr)]
        };
        m.measure("line_punct_ratio", punct_ratio, limit)?;

        let short = lines
            .iter()
            .filter(|l| char_len(l) <= self.short_line_length)
            .count();
        m.measure(
            "short_line_ratio",
            ratio(short, lines.len()),
            &[Limit::Max(self.short_line_thr)],
        )?;

        let (_, dup_chars) = find_duplicates(lines.iter().copied());
        let chars = char_len(text) - text.matches('\n').count();
        m.measure(
            "char_dup_ratio",
            ratio(dup_chars, chars),
            &[Limit::Max(self.char_duplicates_ratio)],
        )?;

        let newlines = text.matches('\n').count();
        let n_words = words::words(text).count();
        m.measure(
            "list_ratio",
            ratio(newlines, n_words),
            &[Limit::Max(self.new_line_ratio)],
        )
    }
}

crate::filter::measuring_filter!(FineWebQuality, "fineweb_quality");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::good_text;

    fn rule(f: &FineWebQuality, text: &str) -> Option<&'static str> {
        f.check(text).err().map(|d| d.rule)
    }

    #[test]
    fn keeps_good_text() {
        let f = FineWebQuality::default();
        assert_eq!(f.check(&good_text()), Ok(()));
        let names: Vec<_> = f.scores(&good_text()).into_iter().map(|s| s.0).collect();
        assert_eq!(
            names,
            [
                "line_punct_ratio",
                "short_line_ratio",
                "char_dup_ratio",
                "list_ratio"
            ]
        );
    }

    #[test]
    fn empty_rule() {
        let f = FineWebQuality::default();
        assert_eq!(rule(&f, ""), Some("empty"));
        assert_eq!(rule(&f, " \n\t\n"), Some("empty"));
        assert!(f.scores("").iter().all(|s| s.1 == 0.0));
    }

    #[test]
    fn line_punct_rule() {
        let f = FineWebQuality::default();
        let text: String = good_text()
            .lines()
            .map(|l| format!("{}\n", l.trim_end_matches('.')))
            .collect();
        let d = f.check(&text).unwrap_err();
        assert_eq!(
            (d.rule, d.value, d.threshold),
            ("line_punct_ratio", 0.0, 0.12)
        );
        let exclude = FineWebQuality {
            line_punct_exclude_zero: true,
            ..Default::default()
        };
        assert_eq!(exclude.check(&text), Ok(()));
        // Other scripts' sentence ends count (the Devanagari danda).
        let hindi: String = text.lines().map(|l| format!("{l} ।\n")).collect();
        assert_eq!(f.check(&hindi), Ok(()));
        let ascii_only = FineWebQuality {
            stop_chars: Some(".!?".into()),
            ..Default::default()
        };
        assert_eq!(rule(&ascii_only, &hindi), Some("line_punct_ratio"));
    }

    #[test]
    fn short_line_rule() {
        let f = FineWebQuality::default();
        let text: String = (0..150)
            .map(|i| format!("Item number {i} is here.\n"))
            .collect();
        let d = f.check(&format!("{}{text}", good_text())).unwrap_err();
        assert_eq!((d.rule, d.threshold), ("short_line_ratio", 0.67));
        let text: String = (0..50)
            .map(|i| format!("Item number {i} is here.\n"))
            .collect();
        assert_eq!(f.check(&format!("{}{text}", good_text())), Ok(()));
    }

    #[test]
    fn char_dup_rule() {
        let f = FineWebQuality::default();
        let line = "Subscribe to our newsletter today for the latest news and offers.\n";
        let d = f
            .check(&format!("{}{}", good_text(), line.repeat(3)))
            .unwrap_err();
        assert_eq!(d.rule, "char_dup_ratio");
        assert!(d.value > 0.01, "{d}");
        // Once is no duplicate.
        assert_eq!(f.check(&format!("{}{line}", good_text())), Ok(()));
    }

    #[test]
    fn list_ratio_rule() {
        let f = FineWebQuality::default();
        // Four newlines per ten tokens.
        let text: String = (0..60)
            .map(|i| format!("Entry {i} of the long list of items here.\n\n\n\n"))
            .collect();
        assert_eq!(rule(&f, &text), Some("list_ratio"));
        assert_eq!(
            FineWebQuality {
                enabled: false,
                ..Default::default()
            }
            .check(&text),
            Ok(())
        );
    }

    #[test]
    fn config_from_toml() {
        let f: FineWebQuality =
            toml::from_str("stop_chars = \".!?\"\nshort_line_length = 40").unwrap();
        assert_eq!(f.stop_chars.as_deref(), Some(".!?"));
        assert_eq!(f.line_punct_thr, 0.12);
        assert!(
            FineWebQuality {
                stop_chars: Some(String::new()),
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }
}
