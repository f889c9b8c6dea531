//! What counts as a word and as the end of a sentence in any writing system.
//!
//! Selection judges blocks by how many words they have (a label has few, prose many) and by
//! whether they end like a sentence. Counting words as runs between spaces makes a Chinese,
//! Japanese or Thai paragraph one word, and a sentence ending in `。`, `।`, `؟` or `።` not a
//! sentence; so a lead in Chinese never joined its article, a Hindi paragraph over a list of
//! links read as its label, and `favor_precision` dropped two thirds of the UDHR's Chinese
//! blocks as "under four words". Here a run of a script written without spaces counts as the
//! words it would hold: one per two characters of Han and kana (Chinese words average 1.5–2
//! characters, Japanese ones about 2), one per four code points of the Brahmic scripts of
//! South-East Asia and Tibet (Thai, Lao, Khmer, Myanmar, Tibetan, Javanese, Balinese: a
//! syllable is two to four code points with its vowel and tone marks).

/// How a character's script separates words.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Spacing {
    /// Words between spaces (Latin, Cyrillic, Greek, Arabic, Devanagari, Hangul, …).
    Spaced,
    /// Han and kana: a word is about two characters.
    Ideographic,
    /// Brahmic scripts without spaces: a word is about four code points.
    Syllabic,
}

fn spacing(c: char) -> Spacing {
    match c as u32 {
        0x3040..=0x30FF // Hiragana, Katakana
        | 0x31F0..=0x31FF // Katakana phonetic extensions
        | 0x3400..=0x4DBF // CJK extension A
        | 0x4E00..=0x9FFF // CJK unified ideographs
        | 0xF900..=0xFAFF // CJK compatibility ideographs
        | 0xFF66..=0xFF9F // half-width katakana
        | 0x20000..=0x3134F => Spacing::Ideographic, // CJK extensions B–G
        0x0E00..=0x0EFF // Thai, Lao
        | 0x0F00..=0x0FFF // Tibetan
        | 0x1000..=0x109F // Myanmar
        | 0x1780..=0x17FF // Khmer
        | 0x1B00..=0x1B7F // Balinese
        | 0xA980..=0xA9DF => Spacing::Syllabic, // Javanese
        _ => Spacing::Spaced,
    }
}

/// The words of `t`: its space-separated runs, where a run in a script written without spaces
/// counts as the words its length holds (at least one).
pub fn words(t: &str) -> usize {
    let mut n = 0;
    for run in t.split_whitespace() {
        // fast path: ASCII and the spaced scripts
        let (mut ideo, mut syll) = (0usize, 0usize);
        if !run.is_ascii() {
            for c in run.chars() {
                match spacing(c) {
                    Spacing::Spaced => {}
                    Spacing::Ideographic => ideo += 1,
                    Spacing::Syllabic => syll += 1,
                }
            }
        }
        n += (ideo.div_ceil(2) + syll.div_ceil(4)).max(1);
    }
    n
}

/// Full stops, question and exclamation marks of the world's scripts: Latin, CJK (full and
/// half width), Devanagari and Bengali (danda, double danda), Arabic and Urdu, Ethiopic,
/// Myanmar, Khmer, Armenian. Not the ellipsis: it ends the cut-off teasers of link boxes.
const SENTENCE_END: [char; 17] = [
    '.', '!', '?', '。', '．', '！', '？', '｡', '।', '॥', '۔', '؟', '።', '፧', '။', '៕', '։',
];

/// Whether `t` ends like a sentence (a full stop, question or exclamation mark of any script).
pub fn ends_sentence(t: &str) -> bool {
    t.ends_with(SENTENCE_END)
}

/// Closing quotation marks and brackets a sentence may end inside.
const CLOSERS: [char; 9] = ['"', '”', '’', ')', '）', '」', '』', '»', '›'];

/// Whether `t` ends like a sentence, or like a quoted or bracketed one (`…."`, `…。」`).
pub fn ends_sentence_or_quote(t: &str) -> bool {
    ends_sentence(t) || t.ends_with(CLOSERS)
}

/// Whether `t` ends with a colon (Latin, full width, Ethiopic preface colon).
pub fn ends_colon(t: &str) -> bool {
    t.ends_with([':', '：', '፥'])
}

/// Commas of the world's scripts (Latin, CJK full width and ideographic, Arabic, Ethiopic,
/// small form): how many clauses a block has, which selection scores.
pub const COMMAS: [char; 6] = [',', '，', '、', '،', '፣', '﹐'];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_of_spaced_and_unspaced_scripts() {
        assert_eq!(words("The quick brown fox."), 4);
        assert_eq!(words("Всеки човек има право"), 4);
        // 20 Han characters between a comma and a full stop: ten words, not one
        assert_eq!(words("人人生而自由，在尊严和权利上一律平等。他们赋"), 10);
        // Japanese: kana and Han together
        assert_eq!(words("すべての人間は、生まれながらにして自由であり"), 11);
        // Thai: 16 code points
        assert_eq!(words("มนุษย์ทั้งหลายเก"), 4);
        // a run mixing digits and Han counts its Han; a lone digit run is a word
        assert_eq!(words("2020年 12"), 2);
        assert_eq!(words(""), 0);
    }

    #[test]
    fn sentence_ends_across_scripts() {
        for t in [
            "A sentence.",
            "一句话。",
            "यह एक वाक्य है।",
            "هل هذا سؤال؟",
            "ይህ ዓረፍተ ነገር ነው።",
        ] {
            assert!(ends_sentence(t), "{t}");
        }
        assert!(
            !ends_sentence("Related articles") && !ends_sentence("The first lines of a teaser…")
        );
        assert!(!ends_sentence("他说：「好。」") && ends_sentence_or_quote("他说：「好。」"));
        assert!(ends_colon("相关阅读：") && ends_colon("Read more:"));
    }
}
