//! All filters' settings in one table, and the quality filters run in FineWeb's order.

use std::borrow::Cow;

use serde::Deserialize;

use crate::c4::{C4LineCounts, C4Quality};
use crate::error::Result;
use crate::fineweb::FineWebQuality;
use crate::gopher::{GopherQuality, GopherRepetition};
use crate::lang::LanguageFilter;
use crate::pii::PiiFormatter;
use crate::url::UrlFilterConfig;
use crate::verdict::Drop;

/// The settings of every filter, as a `[filters]` table with one sub-table per filter
/// (`[filters.gopher_quality]`, ...). A missing sub-table is that filter with FineWeb's
/// settings, enabled; FineWeb's order is URL → (extraction) → language → Gopher repetition →
/// Gopher quality → C4 → FineWeb → (dedup) → PII.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FiltersConfig {
    /// URL blocklists.
    pub url: UrlFilterConfig,
    /// Language identification.
    pub language: LanguageFilter,
    /// Gopher repetition.
    pub gopher_repetition: GopherRepetition,
    /// Gopher quality.
    pub gopher_quality: GopherQuality,
    /// C4 (with FineWeb's `filter_no_terminal_punct = false`).
    pub c4: C4Quality,
    /// FineWeb's own rules.
    pub fineweb: FineWebQuality,
    /// E-mail and IP address replacement.
    pub pii: PiiFormatter,
}

impl FiltersConfig {
    /// Checks every filter's settings (blocklist files are read by [`UrlFilterConfig::build`]).
    pub fn validate(&self) -> Result<()> {
        self.language.validate()?;
        self.gopher_repetition.validate()?;
        self.gopher_quality.validate()?;
        self.fineweb.validate()
    }

    /// Gopher repetition → Gopher quality → C4 → FineWeb on `text`: the text C4 leaves
    /// (borrowed when C4 is disabled), or the first drop. FineWeb's rules see C4's text.
    pub fn quality<'a>(&self, text: &'a str) -> std::result::Result<Cow<'a, str>, Drop> {
        self.quality_counted(text, &mut C4LineCounts::default())
    }

    /// [`FiltersConfig::quality`], adding the lines C4 removes to `counts`.
    pub fn quality_counted<'a>(
        &self,
        text: &'a str,
        counts: &mut C4LineCounts,
    ) -> std::result::Result<Cow<'a, str>, Drop> {
        self.gopher_repetition.check(text)?;
        self.gopher_quality.check(text)?;
        let text = if self.c4.enabled {
            Cow::Owned(self.c4.apply_counted(text, counts)?)
        } else {
            Cow::Borrowed(text)
        };
        self.fineweb.check(&text)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::good_text;

    #[test]
    fn runs_in_fineweb_order_and_returns_c4_text() {
        let config = FiltersConfig::default();
        let text = format!("{}Enable JavaScript to see this page.\n", good_text());
        let mut counts = C4LineCounts::default();
        let out = config.quality_counted(&text, &mut counts).unwrap();
        assert_eq!(out, good_text().trim_end());
        assert_eq!(counts.javascript, 1);
        assert_eq!(
            config.quality("").unwrap_err().key(),
            "gopher_repetition/empty"
        );
        // A short text fails repetition before quality: its one longest 2-gram is more than
        // 20 % of its characters (datatrove counts n-grams that occur once too).
        let short = "Too short to be a document.";
        assert_eq!(
            config.quality(short).unwrap_err().key(),
            "gopher_repetition/top_2_gram"
        );
        let no_c4 = FiltersConfig {
            c4: C4Quality {
                enabled: false,
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(matches!(no_c4.quality(&good_text()), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn parses_a_filters_table() {
        let config: FiltersConfig = toml::from_str(
            "[language]\nlanguages = [\"en\", \"de\"]\n[c4]\nfilter_no_terminal_punct = true\n[pii]\nenabled = false\n",
        )
        .unwrap();
        assert_eq!(config.language.languages, ["en", "de"]);
        assert!(config.c4.filter_no_terminal_punct && !config.pii.enabled);
        assert_eq!(config.gopher_quality, GopherQuality::default());
        config.validate().unwrap();
        let err = toml::from_str::<FiltersConfig>("[gopher]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
    }
}
