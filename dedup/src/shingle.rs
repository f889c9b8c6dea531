//! Shingles: hashed word n-grams of normalised text. Scripts written without spaces (Han, kana,
//! Hangul, Thai) are split into single characters, so n-grams work for them too.

use xxhash_rust::xxh3::xxh3_64;

fn is_unspaced(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // Hiragana, Katakana
        | 0x3400..=0x4DBF    // CJK Extension A
        | 0x4E00..=0x9FFF    // CJK Unified Ideographs
        | 0xF900..=0xFAFF    // CJK Compatibility Ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0x0E00..=0x0E7F    // Thai
        | 0x20000..=0x2FFFF) // CJK Extensions B+
}

/// Hashes of the words of `text` (split on whitespace; unspaced scripts one character a word).
pub fn word_hashes(text: &str, out: &mut Vec<u64>) {
    out.clear();
    for tok in text.split_whitespace() {
        if !tok.chars().any(is_unspaced) {
            out.push(xxh3_64(tok.as_bytes()));
            continue;
        }
        let mut start = None;
        for (i, c) in tok.char_indices() {
            if is_unspaced(c) {
                if let Some(s) = start.take() {
                    out.push(xxh3_64(&tok.as_bytes()[s..i]));
                }
                out.push(xxh3_64(&tok.as_bytes()[i..i + c.len_utf8()]));
            } else if start.is_none() {
                start = Some(i);
            }
        }
        if let Some(s) = start {
            out.push(xxh3_64(&tok.as_bytes()[s..]));
        }
    }
}

/// The set of shingle hashes (sorted, unique) of normalised `text`: n-grams of words, or of
/// characters with `chars`. A text shorter than one n-gram gives one shingle of all of it; at
/// most `max` n-grams (the first ones) are taken. Returns whether the text was short.
pub fn shingles(
    text: &str,
    n: usize,
    chars: bool,
    max: usize,
    scratch: &mut Vec<u64>,
    out: &mut Vec<u64>,
) -> bool {
    out.clear();
    if chars {
        scratch.clear();
        scratch.extend(text.chars().map(|c| c as u64));
    } else {
        word_hashes(text, scratch);
    }
    let units = scratch.len();
    if units == 0 {
        return false;
    }
    let short = units < n;
    let windows = if short { 1 } else { (units - n + 1).min(max) };
    let width = n.min(units);
    let mut buf = Vec::with_capacity(width * 8);
    for w in 0..windows {
        buf.clear();
        for h in &scratch[w..w + width] {
            buf.extend_from_slice(&h.to_le_bytes());
        }
        out.push(xxh3_64(&buf));
    }
    out.sort_unstable();
    out.dedup();
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cjk_is_split_into_characters() {
        let mut v = Vec::new();
        word_hashes("吾輩は猫である abc 東京tower", &mut v);
        assert_eq!(v.len(), 7 + 1 + 2 + 1);
    }

    #[test]
    fn short_texts_give_one_shingle_and_sets_are_unique() {
        let (mut s, mut o) = (Vec::new(), Vec::new());
        assert!(shingles("two words", 5, false, 100, &mut s, &mut o));
        assert_eq!(o.len(), 1);
        assert!(!shingles("a b a b a b a b", 2, false, 100, &mut s, &mut o));
        assert_eq!(o.len(), 2, "the 2-grams are (a b) and (b a)");
        assert!(!shingles("", 5, false, 100, &mut s, &mut o));
        assert!(o.is_empty());
        shingles(
            &"w ".repeat(1000).replace("w w", "w x"),
            1,
            false,
            3,
            &mut s,
            &mut o,
        );
        assert!(o.len() <= 3);
    }
}
