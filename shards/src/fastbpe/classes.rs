//! The Unicode classes the pre-tokenizers' patterns use — letters `\p{L}`, marks `\p{M}`,
//! numbers `\p{N}`, punctuation `\p{P}`, symbols `\p{S}`, whitespace `\s` — as one bit set per
//! character: a table for the Basic Multilingual Plane, sorted ranges above it. The ranges
//! come from `regex-syntax`, the tables the `regex` crate itself matches with, so the
//! hand-written scanners and the regex path agree character for character.

use regex_syntax::hir::{Class, HirKind};

/// `\p{L}`.
pub const L: u8 = 1;
/// `\p{M}`.
pub const M: u8 = 2;
/// `\p{N}`.
pub const N: u8 = 4;
/// `\p{P}`.
pub const P: u8 = 8;
/// `\p{S}`.
pub const S: u8 = 16;
/// `\s` (Unicode `White_Space`).
pub const WS: u8 = 32;

/// Every character's classes.
#[derive(Debug, Clone)]
pub struct Classes {
    bmp: Box<[u8]>,
    /// Above the BMP: (start, end, bits), sorted, not overlapping.
    astral: Vec<(u32, u32, u8)>,
}

fn ranges(pattern: &str) -> Vec<(u32, u32)> {
    let hir = regex_syntax::Parser::new()
        .parse(pattern)
        .expect("a Unicode class");
    match hir.kind() {
        HirKind::Class(Class::Unicode(c)) => c
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        other => panic!("{pattern} is not a Unicode class: {other:?}"),
    }
}

impl Classes {
    /// Builds the tables.
    pub fn new() -> Self {
        let mut bmp = vec![0u8; 0x10000].into_boxed_slice();
        let mut astral_bits: Vec<(u32, u32, u8)> = Vec::new();
        for (pattern, bit) in [
            (r"\p{L}", L),
            (r"\p{M}", M),
            (r"\p{N}", N),
            (r"\p{P}", P),
            (r"\p{S}", S),
            (r"\s", WS),
        ] {
            for (a, b) in ranges(pattern) {
                for c in a..=b.min(0xFFFF) {
                    bmp[c as usize] |= bit;
                }
                if b > 0xFFFF {
                    astral_bits.push((a.max(0x10000), b, bit));
                }
            }
        }
        // Cut the astral ranges at every boundary so that each piece has one bit set.
        let mut cuts: Vec<u32> = astral_bits.iter().flat_map(|r| [r.0, r.1 + 1]).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut astral = Vec::new();
        for w in cuts.windows(2) {
            let (a, b) = (w[0], w[1] - 1);
            let bits = astral_bits
                .iter()
                .filter(|r| r.0 <= a && b <= r.1)
                .fold(0, |acc, r| acc | r.2);
            if bits != 0 {
                astral.push((a, b, bits));
            }
        }
        Classes { bmp, astral }
    }

    /// The classes of `c`.
    #[inline]
    pub fn of(&self, c: char) -> u8 {
        let u = c as u32;
        if u < 0x10000 {
            return self.bmp[u as usize];
        }
        match self.astral.binary_search_by(|r| {
            if r.1 < u {
                std::cmp::Ordering::Less
            } else if r.0 > u {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        }) {
            Ok(i) => self.astral[i].2,
            Err(_) => 0,
        }
    }
}

impl Default for Classes {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_agree_with_the_regex_crate_on_every_character() {
        let c = Classes::new();
        let res: Vec<(u8, regex::Regex)> = [
            (L, r"^\p{L}$"),
            (M, r"^\p{M}$"),
            (N, r"^\p{N}$"),
            (P, r"^\p{P}$"),
            (S, r"^\p{S}$"),
            (WS, r"^\s$"),
        ]
        .into_iter()
        .map(|(b, p)| (b, regex::Regex::new(p).unwrap()))
        .collect();
        // Every 7th code point, and the whole ASCII and Latin-1 range.
        let mut buf = [0u8; 4];
        for u in (0..0x110000u32).step_by(7).chain(0..0x100) {
            let Some(ch) = char::from_u32(u) else {
                continue;
            };
            let s = ch.encode_utf8(&mut buf);
            for (bit, re) in &res {
                assert_eq!(c.of(ch) & bit != 0, re.is_match(s), "U+{u:04X} class {bit}");
            }
        }
    }
}
