//! Text normalisation before hashing.

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

/// Unicode normal form applied first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    /// The text as it is.
    None,
    /// Canonical composition.
    Nfc,
    /// Compatibility composition: also folds width variants and ligatures (`ﬁ` → `fi`).
    #[default]
    Nfkc,
}

/// How text is normalised for exact hashing and shingling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Normalize {
    /// Unicode normal form, applied first.
    pub form: Form,
    /// Fold to lower case.
    pub lowercase: bool,
    /// Runs of whitespace become one space; leading and trailing whitespace goes.
    pub collapse_whitespace: bool,
    /// Punctuation (ASCII and common Unicode) is dropped and separates words like a space.
    pub strip_punctuation: bool,
    /// Numeric characters are dropped.
    pub strip_digits: bool,
}

impl Default for Normalize {
    fn default() -> Self {
        Normalize {
            form: Form::Nfkc,
            lowercase: true,
            collapse_whitespace: true,
            strip_punctuation: true,
            strip_digits: false,
        }
    }
}

impl Normalize {
    /// The normalised text.
    pub fn apply(&self, text: &str) -> String {
        let formed: Box<dyn Iterator<Item = char>> = match self.form {
            Form::None => Box::new(text.chars()),
            Form::Nfc => Box::new(text.nfc()),
            Form::Nfkc => Box::new(text.nfkc()),
        };
        let mut out = String::with_capacity(text.len());
        let mut pending_space = false;
        for c in formed {
            if self.strip_punctuation && (c.is_ascii_punctuation() || is_unicode_punct(c)) {
                // Punctuation separates words.
                pending_space = true;
                continue;
            }
            if self.strip_digits && c.is_numeric() {
                continue;
            }
            if self.collapse_whitespace && c.is_whitespace() {
                pending_space = true;
                continue;
            }
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            if self.lowercase {
                out.extend(c.to_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }
}

fn is_unicode_punct(c: char) -> bool {
    matches!(c, '\u{2000}'..='\u{206F}' | '\u{3000}'..='\u{303F}' | '\u{FF01}'..='\u{FF0F}' | '\u{FF1A}'..='\u{FF20}' | '«' | '»' | '¡' | '¿' | '·')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fold_case_width_punctuation_and_spaces() {
        let n = Normalize::default();
        assert_eq!(
            n.apply("  Hello,\tWORLD!!  ﬁne ＡＢＣ 123 "),
            "hello world fine abc 123"
        );
        assert_eq!(n.apply("「日本」、東京。"), "日本 東京");
        let digits = Normalize {
            strip_digits: true,
            ..n
        };
        assert_eq!(digits.apply("room 101 b"), "room b");
    }
}
