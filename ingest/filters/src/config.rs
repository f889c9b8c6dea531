//! All filters' settings in one table, and the one list of filters built from it.

use std::borrow::Cow;

use serde::Deserialize;

use crate::c4::{C4LineCounts, C4Quality};
use crate::chain::{self, Chain};
use crate::error::Result;
use crate::filter::Filter;
use crate::fineweb::FineWebQuality;
use crate::gopher::{GopherQuality, GopherRepetition};
use crate::lang::LanguageFilter;
use crate::pii::PiiFormatter;
use crate::url::{UrlFilter, UrlFilterConfig};
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
    /// Checks every filter's settings (blocklist files are read by [`FiltersConfig::filters`]).
    pub fn validate(&self) -> Result<()> {
        self.language.validate()?;
        self.gopher_repetition.validate()?;
        self.gopher_quality.validate()?;
        self.fineweb.validate()
    }

    /// Every filter, enabled or not, in FineWeb's order: url → language → gopher_repetition →
    /// gopher_quality → c4 → fineweb → pii. The URL filter reads its blocklists here when it is
    /// enabled (an unreadable file or a bad line is an error); a disabled one reads nothing.
    pub fn filters(&self) -> Result<Vec<Box<dyn Filter>>> {
        let url = if self.url.enabled {
            self.url.build()?
        } else {
            UrlFilter::default()
        };
        Ok(self.list(url))
    }

    /// The enabled filters, in order: what a pipeline runs.
    pub fn chain(&self) -> Result<Chain> {
        Ok(Chain::new(self.filters()?))
    }

    /// The list of filters, with `url` as the URL stage. A new filter is one line here.
    fn list(&self, url: UrlFilter) -> Vec<Box<dyn Filter>> {
        vec![
            Box::new(url),
            Box::new(self.language.clone()),
            Box::new(self.gopher_repetition.clone()),
            Box::new(self.gopher_quality.clone()),
            Box::new(self.c4.clone()),
            Box::new(self.fineweb.clone()),
            Box::new(self.pii.clone()),
        ]
    }

    /// Gopher repetition → Gopher quality → C4 → FineWeb on `text` (the quality filters, see
    /// [`Chain::quality`]): the text C4 leaves (borrowed when C4 is disabled), or the first
    /// drop. FineWeb's rules see C4's text. This builds the filters on every call; to judge
    /// many texts, build a [`Chain`] once.
    pub fn quality<'a>(&self, text: &'a str) -> std::result::Result<Cow<'a, str>, Drop> {
        self.quality_counted(text, &mut C4LineCounts::default())
    }

    /// [`FiltersConfig::quality`], adding the lines C4 removes to `counts`.
    pub fn quality_counted<'a>(
        &self,
        text: &'a str,
        counts: &mut C4LineCounts,
    ) -> std::result::Result<Cow<'a, str>, Drop> {
        // The quality filters need no blocklist: an empty URL filter stands in.
        let filters = self.list(UrlFilter::default());
        chain::quality(filters.iter().map(|f| &**f), text, Some((&self.c4, counts)))
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
