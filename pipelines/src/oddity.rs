//! What makes a window of text unlike the text of its source: another script, another
//! language, or a layout of few letters (a table of numbers, symbols, a run of blank lines).
//!
//! The spike detectors name a document when its loss stands out from its step's; this says, in
//! terms a reader can check, what is unusual about the text the model saw. `tokenmill bench
//! spikes` uses it to read the flags on clean corpora (is the flagged window another language
//! inside an English corpus, or ordinary text of it?), and checks it both ways: on the injected
//! out-of-distribution documents and on windows nobody flagged.

use whatlang::Lang;

/// A coarse script: enough to tell a Chinese page in an English corpus, or English inside a
/// Japanese novel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Script {
    /// Latin letters (with diacritics).
    Latin,
    /// Cyrillic.
    Cyrillic,
    /// Greek.
    Greek,
    /// Arabic.
    Arabic,
    /// Hebrew.
    Hebrew,
    /// Devanagari, Bengali and the other Brahmic scripts of India.
    Indic,
    /// Han ideographs and the Japanese kana.
    Cjk,
    /// Hangul.
    Hangul,
    /// Thai.
    Thai,
    /// Any other letter.
    Other,
}

const SCRIPTS: usize = 10;

impl Script {
    fn index(self) -> usize {
        self as usize
    }

    fn all() -> [Script; SCRIPTS] {
        use Script::*;
        [
            Latin, Cyrillic, Greek, Arabic, Hebrew, Indic, Cjk, Hangul, Thai, Other,
        ]
    }

    /// The script of a letter; `None` for anything that is not a letter.
    pub fn of(c: char) -> Option<Script> {
        if !c.is_alphabetic() {
            return None;
        }
        let u = c as u32;
        Some(match u {
            0..=0x024F | 0x1E00..=0x1EFF | 0x2C60..=0x2C7F | 0xA720..=0xA7FF | 0xFF21..=0xFF5A => {
                Script::Latin
            }
            0x0370..=0x03FF | 0x1F00..=0x1FFF => Script::Greek,
            0x0400..=0x052F | 0x2DE0..=0x2DFF | 0xA640..=0xA69F => Script::Cyrillic,
            0x0590..=0x05FF => Script::Hebrew,
            0x0600..=0x06FF | 0x0750..=0x077F | 0x08A0..=0x08FF | 0xFB50..=0xFDFF => Script::Arabic,
            0x0900..=0x0DFF => Script::Indic,
            0x0E00..=0x0E7F => Script::Thai,
            0x1100..=0x11FF | 0x3130..=0x318F | 0xAC00..=0xD7AF => Script::Hangul,
            0x3040..=0x30FF
            | 0x31F0..=0x31FF
            | 0x3400..=0x4DBF
            | 0x4E00..=0x9FFF
            | 0xF900..=0xFAFF
            | 0xFF66..=0xFF9F
            | 0x20000..=0x2FA1F => Script::Cjk,
            _ => Script::Other,
        })
    }
}

/// Counts that describe a text.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    letters: [u64; SCRIPTS],
    /// Characters that are not whitespace.
    visible: u64,
    /// Markup and code symbols (`{}[]<>\/|^_~*&%$#@=+`).
    symbols: u64,
    /// All characters.
    chars: u64,
    /// The language, when whatlang is sure of it.
    lang: Option<Lang>,
}

/// What is unusual about a window, compared with its source.
#[derive(Debug, Clone, PartialEq)]
pub enum Oddity {
    /// Most of its letters are in a script its source hardly uses (under 2 % of the source's
    /// letters).
    Script {
        /// The window's main such script.
        script: Script,
        /// Share of the window's letters in scripts rare in the source.
        share: f64,
    },
    /// Few letters: under half of its visible characters (numbers, symbols, a blob), over
    /// half of it whitespace (a run of blank lines), or over 12 % of its visible characters
    /// markup and code symbols (LaTeX, a byte dump) where its source has under a quarter of
    /// that.
    Layout {
        /// Letters among its visible characters.
        letters: f64,
        /// Whitespace among its characters.
        space: f64,
        /// Markup and code symbols among its visible characters.
        symbols: f64,
    },
    /// Another language in the same script, both told reliably by whatlang.
    Language {
        /// The window's language (ISO 639-3).
        window: &'static str,
        /// The source's.
        source: &'static str,
    },
}

impl std::fmt::Display for Oddity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Oddity::Script { script, share } => {
                write!(
                    f,
                    "script {script:?} ({:.0} % of its letters)",
                    share * 100.0
                )
            }
            Oddity::Layout {
                letters,
                space,
                symbols,
            } => write!(
                f,
                "layout ({:.0} % letters, {:.0} % whitespace, {:.0} % symbols)",
                letters * 100.0,
                space * 100.0,
                symbols * 100.0
            ),
            Oddity::Language { window, source } => write!(f, "language {window} in {source}"),
        }
    }
}

impl Oddity {
    /// A short name of the kind (`script`, `layout`, `language`).
    pub fn kind(&self) -> &'static str {
        match self {
            Oddity::Script { .. } => "script",
            Oddity::Layout { .. } => "layout",
            Oddity::Language { .. } => "language",
        }
    }
}

/// Characters of a source's text that [`Profile::of`] reads for the language (whatlang's
/// time grows with the text; a sample says it).
const LANG_SAMPLE: usize = 64 << 10;

impl Profile {
    /// The profile of `text`.
    pub fn of(text: &str) -> Profile {
        let mut p = Profile::default();
        for c in text.chars() {
            p.chars += 1;
            if !c.is_whitespace() {
                p.visible += 1;
            }
            if "{}[]<>\\/|^_~*&%$#@=+`".contains(c) {
                p.symbols += 1;
            }
            if let Some(s) = Script::of(c) {
                p.letters[s.index()] += 1;
            }
        }
        let mut cut = text.len().min(LANG_SAMPLE);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        p.lang = whatlang::detect(&text[..cut])
            .filter(|i| i.is_reliable())
            .map(|i| i.lang());
        p
    }

    /// The profile of a text without a part of it (`part`'s counts taken out; the language
    /// stays this text's): a document judged against the other documents of its source.
    pub fn without(&self, part: &Profile) -> Profile {
        let mut p = self.clone();
        for (a, b) in p.letters.iter_mut().zip(&part.letters) {
            *a = a.saturating_sub(*b);
        }
        p.visible = p.visible.saturating_sub(part.visible);
        p.symbols = p.symbols.saturating_sub(part.symbols);
        p.chars = p.chars.saturating_sub(part.chars);
        p
    }

    fn letters(&self) -> u64 {
        self.letters.iter().sum()
    }

    /// Share of the letters in `s`.
    pub fn share(&self, s: Script) -> f64 {
        self.letters[s.index()] as f64 / self.letters().max(1) as f64
    }

    /// The language whatlang told reliably (ISO 639-3).
    pub fn lang(&self) -> Option<&'static str> {
        self.lang.map(|l| l.code())
    }

    /// What is unusual about `self` (a window) against `source`, if anything: script first,
    /// then layout, then language.
    pub fn oddity(&self, source: &Profile) -> Option<Oddity> {
        let letters = self.letters();
        if letters > 0 {
            let rare: Vec<Script> = Script::all()
                .into_iter()
                .filter(|&s| source.share(s) < 0.02)
                .collect();
            let in_rare: u64 = rare.iter().map(|s| self.letters[s.index()]).sum();
            let share = in_rare as f64 / letters as f64;
            if share > 0.3 {
                let script = *rare
                    .iter()
                    .max_by_key(|s| self.letters[s.index()])
                    .expect("some script is rare");
                return Some(Oddity::Script { script, share });
            }
        }
        let letter_share = letters as f64 / self.visible.max(1) as f64;
        let space = 1.0 - self.visible as f64 / self.chars.max(1) as f64;
        let symbols = self.symbols as f64 / self.visible.max(1) as f64;
        let source_symbols = source.symbols as f64 / source.visible.max(1) as f64;
        if self.chars > 0
            && (letter_share < 0.5 || space > 0.5 || (symbols > 0.12 && source_symbols < 0.03))
        {
            return Some(Oddity::Layout {
                letters: letter_share,
                space,
                symbols,
            });
        }
        match (self.lang, source.lang) {
            (Some(w), Some(s)) if w != s => Some(Oddity::Language {
                window: w.code(),
                source: s.code(),
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENGLISH: &str = "The model reads a great deal of ordinary English prose, sentence after \
        sentence, about the weather, the markets, the city council and the football results, and \
        it learns what usually comes next in such text. Nothing here is unusual in any way.";

    #[test]
    fn another_script_layout_or_language_is_named() {
        let src = Profile::of(&ENGLISH.repeat(20));
        assert_eq!(src.lang(), Some("eng"));
        assert_eq!(Profile::of(ENGLISH).oddity(&src), None);
        let zh =
            Profile::of("本文研究了深度学习模型在自然语言处理任务中的表现，并提出了一种新的方法。");
        assert!(matches!(
            zh.oddity(&src),
            Some(Oddity::Script {
                script: Script::Cjk,
                ..
            })
        ));
        let mk = Profile::of("Македонија е држава во Југоисточна Европа, со главен град Скопје.");
        assert!(matches!(
            mk.oddity(&src),
            Some(Oddity::Script {
                script: Script::Cyrillic,
                ..
            })
        ));
        let table = Profile::of("12.4 | 15.9 | 33.1 | 2019 | 2020 | 48.0 | 51.7 | 0.33 | 9.81");
        assert_eq!(table.oddity(&src).map(|o| o.kind()), Some("layout"));
        let blank = Profile::of(&format!("end of part one{}", "\n".repeat(60)));
        assert_eq!(blank.oddity(&src).map(|o| o.kind()), Some("layout"));
        let latex = Profile::of(
            r"\frac{\partial T}{\partial z}\left(k_{z} \frac{T}{\partial z}\right)=-q_{\rm v}",
        );
        assert_eq!(latex.oddity(&src).map(|o| o.kind()), Some("layout"));
        let de = Profile::of(
            "Die Bundesregierung hat am Mittwoch beschlossen, die Förderung für Wärmepumpen \
             im kommenden Jahr deutlich zu erhöhen, wie ein Sprecher des Ministeriums mitteilte.",
        );
        assert_eq!(
            de.oddity(&src),
            Some(Oddity::Language {
                window: "deu",
                source: "eng"
            })
        );
        // a source whose letters are partly Cyrillic because of this very document: judged
        // against the others, its window is another script
        let doc = "Македонија е држава во Југоисточна Европа. ".repeat(30);
        let with_doc = Profile::of(&format!("{}{doc}", ENGLISH.repeat(20)));
        assert_eq!(mk.oddity(&with_doc), None);
        assert_eq!(
            mk.oddity(&with_doc.without(&Profile::of(&doc)))
                .map(|o| o.kind()),
            Some("script")
        );
        // English inside a Japanese novel is another script there
        let ja = Profile::of(
            &"吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。".repeat(20),
        );
        assert_eq!(
            Profile::of(ENGLISH).oddity(&ja).map(|o| o.kind()),
            Some("script")
        );
    }
}
