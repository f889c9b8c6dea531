//! Language identification with `whatlang` (70 languages, trigram and alphabet models, pure
//! Rust), and the filter FineWeb applies with it.
//!
//! FineWeb kept documents whose fastText `lid.176` English score was at least 0.65. whatlang's
//! confidence is a different quantity (how far the best language's score is ahead of the
//! second's, saturating at 1), so the same threshold does not select the same documents; see
//! `docs/filters.md` for how it was chosen and measured.

use serde::Deserialize;
use whatlang::Lang;

use crate::error::{Error, Result, check_threshold};
use crate::filter::{Doc, Filter, Kind};
use crate::verdict::Drop;

/// A detected language.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LangGuess {
    /// ISO 639-3 code, as whatlang names it (`"eng"`, `"cmn"` for Mandarin, `"pes"` for
    /// Persian, `"nob"` for Norwegian Bokmål).
    pub code: &'static str,
    /// ISO 639-1 code, when the language has one (`"en"`, `"zh"`, `"fa"`, `"nb"`).
    pub iso639_1: Option<&'static str>,
    /// whatlang's confidence in 0..=1.
    pub confidence: f64,
}

/// The language of `text`, or `None` when whatlang cannot tell (no letters, for example).
pub fn detect(text: &str) -> Option<LangGuess> {
    let info = whatlang::detect(text)?;
    let lang = info.lang();
    Some(LangGuess {
        code: lang.code(),
        iso639_1: Some(iso639_1(lang)),
        confidence: info.confidence(),
    })
}

/// The ISO 639-3 codes of the languages [`detect`] can answer.
pub fn supported_languages() -> impl Iterator<Item = &'static str> {
    Lang::all().iter().map(|l| l.code())
}

/// ISO 639-1 code of a whatlang language (each of the 70 has one; Akan's `ak` stands for the
/// macrolanguage).
fn iso639_1(lang: Lang) -> &'static str {
    use Lang::*;
    match lang {
        Epo => "eo",
        Eng => "en",
        Rus => "ru",
        Cmn => "zh",
        Spa => "es",
        Por => "pt",
        Ita => "it",
        Ben => "bn",
        Fra => "fr",
        Deu => "de",
        Ukr => "uk",
        Kat => "ka",
        Ara => "ar",
        Hin => "hi",
        Jpn => "ja",
        Heb => "he",
        Yid => "yi",
        Pol => "pl",
        Amh => "am",
        Jav => "jv",
        Kor => "ko",
        Nob => "nb",
        Dan => "da",
        Swe => "sv",
        Fin => "fi",
        Tur => "tr",
        Nld => "nl",
        Hun => "hu",
        Ces => "cs",
        Ell => "el",
        Bul => "bg",
        Bel => "be",
        Mar => "mr",
        Kan => "kn",
        Ron => "ro",
        Slv => "sl",
        Hrv => "hr",
        Srp => "sr",
        Mkd => "mk",
        Lit => "lt",
        Lav => "lv",
        Est => "et",
        Tam => "ta",
        Vie => "vi",
        Urd => "ur",
        Tha => "th",
        Guj => "gu",
        Uzb => "uz",
        Pan => "pa",
        Aze => "az",
        Ind => "id",
        Tel => "te",
        Pes => "fa",
        Mal => "ml",
        Ori => "or",
        Mya => "my",
        Nep => "ne",
        Sin => "si",
        Khm => "km",
        Tuk => "tk",
        Aka => "ak",
        Zul => "zu",
        Sna => "sn",
        Afr => "af",
        Lat => "la",
        Slk => "sk",
        Cat => "ca",
        Tgl => "tl",
        Hye => "hy",
        Cym => "cy",
    }
}

/// Whether a configured code names the guessed language: its ISO 639-1 or 639-3 code, any case.
fn names(code: &str, guess: &LangGuess) -> bool {
    let code = code.trim();
    code.eq_ignore_ascii_case(guess.code)
        || guess.iso639_1.is_some_and(|c| code.eq_ignore_ascii_case(c))
}

/// Keeps documents in the given languages detected with enough confidence.
///
/// Drop rules: `undetected` (no language detected, only through
/// [`LanguageFilter::check_text`]), `other_language` (detected, not one of `languages`;
/// the value is the confidence), `confidence` (one of `languages`, below `min_confidence`).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LanguageFilter {
    /// When false, every document is kept.
    pub enabled: bool,
    /// Accepted languages as ISO 639-1 (`"en"`) or ISO 639-3 (`"eng"`) codes; empty accepts
    /// any language (then only `min_confidence` applies).
    pub languages: Vec<String>,
    /// Lowest confidence kept (FineWeb: 0.65 on fastText's scale).
    pub min_confidence: f64,
}

impl Default for LanguageFilter {
    fn default() -> Self {
        Self {
            enabled: true,
            languages: vec!["en".into()],
            min_confidence: 0.65,
        }
    }
}

impl LanguageFilter {
    const NAME: &'static str = "language";

    /// Checks the settings: every code is one whatlang knows, `min_confidence` in 0..=1.
    pub fn validate(&self) -> Result<()> {
        for code in &self.languages {
            let known = Lang::all().iter().any(|&lang| {
                names(
                    code,
                    &LangGuess {
                        code: lang.code(),
                        iso639_1: Some(iso639_1(lang)),
                        confidence: 0.0,
                    },
                )
            });
            if !known {
                return Err(Error::UnknownLanguage { code: code.clone() });
            }
        }
        check_threshold(Self::NAME, "min_confidence", self.min_confidence)?;
        if self.min_confidence > 1.0 {
            return Err(Error::Config {
                filter: Self::NAME,
                field: "min_confidence",
                message: format!("{} is above 1", self.min_confidence),
            });
        }
        Ok(())
    }

    /// Keeps a detected language, or says why not.
    pub fn check(&self, guess: &LangGuess) -> std::result::Result<(), Drop> {
        if !self.enabled {
            return Ok(());
        }
        if !self.languages.is_empty() && !self.languages.iter().any(|code| names(code, guess)) {
            return Err(Drop {
                filter: Self::NAME,
                rule: "other_language",
                value: guess.confidence,
                threshold: self.min_confidence,
            });
        }
        if guess.confidence < self.min_confidence {
            return Err(Drop {
                filter: Self::NAME,
                rule: "confidence",
                value: guess.confidence,
                threshold: self.min_confidence,
            });
        }
        Ok(())
    }

    /// Detects the language of `text` and checks it; the guess is returned either way it was
    /// made, so that it can be recorded.
    pub fn check_text(&self, text: &str) -> (Option<LangGuess>, std::result::Result<(), Drop>) {
        let guess = detect(text);
        let verdict = match (&guess, self.enabled) {
            (_, false) => Ok(()),
            (None, true) => Err(Drop::matched(Self::NAME, "undetected")),
            (Some(g), true) => self.check(g),
        };
        (guess, verdict)
    }
}

impl Filter for LanguageFilter {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn enabled(&self) -> bool {
        self.enabled
    }

    fn kind(&self) -> Kind {
        Kind::Language
    }

    /// Detects the language, judges it, and on a pass records it in [`Doc::lang`] (the ISO
    /// 639-1 code where the language has one, else the 639-3 code, with the confidence).
    fn apply(&self, doc: &mut Doc<'_>) -> std::result::Result<(), Drop> {
        if !self.enabled {
            return Ok(());
        }
        let (guess, verdict) = self.check_text(&doc.text);
        verdict?;
        doc.lang = guess.map(|g| (g.iso639_1.unwrap_or(g.code).to_string(), g.confidence));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EN: &str = "The quick brown fox jumps over the lazy dog, and then it runs back into the forest \
                      where it lives with its family during the long and cold winter months.";
    const DE: &str = "Der schnelle braune Fuchs springt über den faulen Hund und läuft dann zurück in den \
                      Wald, wo er mit seiner Familie während der langen und kalten Wintermonate lebt.";

    #[test]
    fn detects_with_both_codes() {
        let g = detect(EN).unwrap();
        assert_eq!((g.code, g.iso639_1), ("eng", Some("en")));
        assert!(g.confidence > 0.9, "{g:?}");
        let g =
            detect("吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。").unwrap();
        assert_eq!((g.code, g.iso639_1), ("jpn", Some("ja")));
        assert_eq!(detect("12345 !!! ..."), None);
        assert_eq!(supported_languages().count(), 70);
        assert!(Lang::all().iter().all(|&l| iso639_1(l).len() == 2));
    }

    #[test]
    fn filter_accepts_either_code() {
        let en = detect(EN).unwrap();
        let de = detect(DE).unwrap();
        let filter = LanguageFilter::default();
        assert_eq!(filter.check(&en), Ok(()));
        assert_eq!(filter.check(&de).unwrap_err().rule, "other_language");
        let both = LanguageFilter {
            languages: vec!["ENG".into(), "de".into()],
            ..Default::default()
        };
        assert!(both.check(&en).is_ok() && both.check(&de).is_ok());
        let any = LanguageFilter {
            languages: vec![],
            ..Default::default()
        };
        assert!(any.check(&de).is_ok());
    }

    #[test]
    fn confidence_rule() {
        let weak = LangGuess {
            code: "eng",
            iso639_1: Some("en"),
            confidence: 0.3,
        };
        let d = LanguageFilter::default().check(&weak).unwrap_err();
        assert_eq!((d.rule, d.value, d.threshold), ("confidence", 0.3, 0.65));
        let off = LanguageFilter {
            enabled: false,
            ..Default::default()
        };
        assert!(off.check(&weak).is_ok());
    }

    #[test]
    fn check_text_reports_undetected() {
        let (guess, verdict) = LanguageFilter::default().check_text("... 123");
        assert_eq!(guess, None);
        assert_eq!(verdict.unwrap_err().rule, "undetected");
        let (guess, verdict) = LanguageFilter::default().check_text(EN);
        assert_eq!(guess.map(|g| g.code), Some("eng"));
        assert!(verdict.is_ok());
    }

    #[test]
    fn validate_rejects_unknown_codes() {
        assert!(LanguageFilter::default().validate().is_ok());
        let f = LanguageFilter {
            languages: vec!["xx".into()],
            ..Default::default()
        };
        assert!(f.validate().unwrap_err().to_string().contains("\"xx\""));
        let f = LanguageFilter {
            min_confidence: 1.5,
            ..Default::default()
        };
        assert!(f.validate().is_err());
        let f: LanguageFilter = toml::from_str("languages = [\"fr\", \"deu\"]").unwrap();
        assert!(f.validate().is_ok() && f.min_confidence == 0.65);
    }
}
