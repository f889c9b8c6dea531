//! Pre-tokenization: a text cut into the pieces BPE encodes one by one, as HF `tokenizers`
//! cuts it for the byte-level family — GPT-2's `ByteLevel` regex, or DeepSeek-V3's `Sequence`
//! of `Split` rules (each applied to every piece the previous one left).
//!
//! The rules are Oniguruma regexes in `tokenizer.json`. They run here on the `regex` crate
//! (automata, no backtracking), which has the same leftmost-first alternation and the same
//! Unicode classes but no look-around. The one look-ahead these patterns use is the
//! whitespace idiom `\s+(?!\S)|\s+` at the end of the alternation: a run of whitespace, less
//! its last character when a non-space follows (that character then starts the next piece,
//! e.g. the space of " word"). It is compiled as `\s+` and the match shortened afterwards —
//! only when no earlier alternative matched there, which a second regex of the earlier
//! alternatives, anchored, decides.

use std::sync::OnceLock;

use regex::Regex;

use super::classes::Classes;
use super::scan::Scanner;

/// The character classes, built once.
fn classes() -> &'static Classes {
    static C: OnceLock<Classes> = OnceLock::new();
    C.get_or_init(Classes::new)
}

/// The whitespace idiom, as it ends a pattern.
const WS_TAIL: &str = r"|\s+(?!\S)|\s+";

/// GPT-2's pattern (HF `ByteLevel` with `use_regex`).
pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// One `Split` rule with `Isolated` behaviour: every match a piece, and every stretch between
/// matches a piece.
#[derive(Debug, Clone)]
pub struct SplitRule {
    /// The hand-written scanner of a known pattern (the regex is then only a reference).
    scanner: Option<Scanner>,
    re: Regex,
    /// With the whitespace idiom: the alternatives before it, anchored.
    earlier: Option<Regex>,
}

impl SplitRule {
    /// Compiles an Oniguruma pattern of the supported form; `None` for look-around (other
    /// than the trailing idiom) or syntax the `regex` crate does not accept.
    pub fn new(pattern: &str) -> Option<Self> {
        let (body, idiom) = match pattern.strip_suffix(WS_TAIL) {
            Some(head) => (format!(r"{head}|\s+"), Some(head)),
            None => (pattern.to_string(), None),
        };
        if body.contains("(?=") || body.contains("(?!") || body.contains("(?<") {
            return None;
        }
        let re = Regex::new(&body).ok()?;
        let earlier = match idiom {
            Some(head) => Some(Regex::new(&format!("^(?:{head})")).ok()?),
            None => None,
        };
        Some(SplitRule {
            scanner: Scanner::of(pattern),
            re,
            earlier,
        })
    }

    /// The same rule on the `regex` crate only (for checking the scanners against it).
    pub fn regex_only(pattern: &str) -> Option<Self> {
        let mut r = Self::new(pattern)?;
        r.scanner = None;
        Some(r)
    }

    /// Whether a hand-written scanner runs it.
    pub fn hand_written(&self) -> bool {
        self.scanner.is_some()
    }

    /// The leftmost match at or after `at`: `(start, end)`.
    fn find(&self, text: &str, at: usize) -> Option<(usize, usize)> {
        if let Some(s) = self.scanner {
            return s.find(classes(), text, at);
        }
        let m = self.re.find_at(text, at)?;
        let (start, mut end) = (m.start(), m.end());
        if let Some(earlier) = &self.earlier {
            end = self.idiom_end(earlier, text, start, end);
        }
        Some((start, end))
    }

    /// Calls `out` with each piece of `text`, in order.
    pub fn split<'t>(&self, text: &'t str, out: &mut impl FnMut(&'t str)) {
        let mut at = 0;
        let mut last = 0;
        while at < text.len() {
            let Some((start, end)) = self.find(text, at) else {
                break;
            };
            if start > last {
                out(&text[last..start]);
            }
            if end > start {
                out(&text[start..end]);
                at = end;
            } else {
                // An empty match: step over one character.
                at = start + text[start..].chars().next().map_or(1, char::len_utf8);
            }
            last = end.max(last);
        }
        if last < text.len() {
            out(&text[last..]);
        }
    }

    /// Where a match of the pattern really ends, given the idiom: a whitespace run matched by
    /// the idiom and followed by a non-space gives back its last character.
    fn idiom_end(&self, earlier: &Regex, text: &str, start: usize, end: usize) -> usize {
        let m = &text[start..end];
        if !m.chars().all(char::is_whitespace) {
            return end;
        }
        let Some(next) = text[end..].chars().next() else {
            return end;
        };
        if next.is_whitespace() {
            return end;
        }
        // An empty match (a pattern that can match nothing; found by fuzzing) ends where it is.
        let Some(last) = m.chars().next_back() else {
            return end;
        };
        if m.len() == last.len_utf8() {
            // One character: `\s+(?!\S)` failed and `\s+` took it.
            return end;
        }
        if earlier.is_match(&text[start..]) {
            // An earlier alternative matched here (leftmost-first): not the idiom.
            return end;
        }
        end - last.len_utf8()
    }
}

/// The pre-tokenizer: rules applied in sequence, each to every piece of the previous.
#[derive(Debug, Clone)]
pub struct Pretokenizer {
    rules: Vec<SplitRule>,
}

impl Pretokenizer {
    /// From rules in their order.
    pub fn new(rules: Vec<SplitRule>) -> Self {
        Pretokenizer { rules }
    }

    /// Calls `out` with each final piece of `text`, in order.
    pub fn pieces<'t>(&self, text: &'t str, out: &mut impl FnMut(&'t str)) {
        self.apply(0, text, out);
    }

    fn apply<'t>(&self, i: usize, text: &'t str, out: &mut impl FnMut(&'t str)) {
        match self.rules.get(i) {
            None => {
                if !text.is_empty() {
                    out(text);
                }
            }
            Some(rule) => rule.split(text, &mut |p| self.apply(i + 1, p, out)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(rule: &SplitRule, text: &str) -> Vec<String> {
        let mut v = Vec::new();
        rule.split(text, &mut |p| v.push(p.to_string()));
        v
    }

    #[test]
    fn gpt2_pattern_cuts_as_the_lookahead_would() {
        let r = SplitRule::new(GPT2_PATTERN).unwrap();
        assert_eq!(
            pieces(&r, "Hello  world's 123\n\n  end   "),
            ["Hello", " ", " world", "'s", " 123", "\n\n ", " end", "   "]
        );
        assert_eq!(pieces(&r, " a"), [" a"]);
        assert_eq!(pieces(&r, "  "), ["  "]);
        assert_eq!(pieces(&r, "x \t!"), ["x", " ", "\t", "!"]);
    }

    #[test]
    fn an_earlier_whitespace_alternative_is_not_shortened() {
        // DeepSeek-V3's: `\s*[\r\n]+` comes before the idiom.
        let r = SplitRule::new(
            r"[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        )
        .unwrap();
        assert_eq!(pieces(&r, "a\n\nb"), ["a", "\n\n", "b"]);
        assert_eq!(pieces(&r, "a   b"), ["a", "  ", " b"]);
    }

    #[test]
    fn other_lookaround_is_not_supported() {
        assert!(SplitRule::new(r"a(?=b)").is_none());
    }
}

#[cfg(test)]
mod scanner_tests {
    use super::*;
    use crate::fastbpe::scan::{CJK_KANA, CL100K_PATTERN, DEEPSEEK_V3_PATTERN, DIGITS_1_3};

    fn cut(rule: &SplitRule, text: &str) -> Vec<String> {
        let mut v = Vec::new();
        rule.split(text, &mut |p| v.push(p.to_string()));
        v
    }

    /// Every hand-written scanner cuts random strings of awkward characters exactly as its
    /// pattern does on the `regex` crate.
    #[test]
    fn scanners_cut_as_their_patterns_do() {
        let parts = [
            " ",
            "  ",
            "\t",
            "\n",
            "\r\n",
            "\r",
            "\u{a0}",
            "\u{2028}",
            "\u{3000}",
            "a",
            "Z",
            "é",
            "e\u{301}",
            "\u{301}",
            "ß",
            "中",
            "の",
            "カ",
            "ー",
            "한",
            "ก",
            "ا",
            "1",
            "٣",
            "²",
            "Ⅻ",
            "'",
            "'s",
            "'ll",
            "'re",
            "'x",
            "'S",
            "'LL",
            "'Re",
            "'\u{17F}",
            "'vE",
            "!",
            "?!",
            "...",
            "-",
            "$",
            "€",
            "©",
            "😀",
            "\u{1F3FB}",
            "\u{200b}",
            "\u{feff}",
            "\u{1}",
            "#",
            "@",
            "_",
            "`",
            "~",
            "%",
            "(",
            ")",
            "\"",
            "x1",
        ];
        let mut rng = 0x2545F4914F6CDD1Du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for pattern in [
            GPT2_PATTERN,
            DEEPSEEK_V3_PATTERN,
            CL100K_PATTERN,
            DIGITS_1_3,
            CJK_KANA,
        ] {
            let fast = SplitRule::new(pattern).unwrap();
            let slow = SplitRule::regex_only(pattern).unwrap();
            assert!(fast.hand_written() && !slow.hand_written());
            for _ in 0..20_000 {
                let len = 1 + (next() % 12) as usize;
                let s: String = (0..len)
                    .map(|_| parts[(next() % parts.len() as u64) as usize])
                    .collect();
                assert_eq!(cut(&fast, &s), cut(&slow, &s), "{pattern} on {s:?}");
            }
        }
    }
}
