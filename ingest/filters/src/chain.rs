//! The filters a recipe runs, in order: [`Chain`].

use std::borrow::Cow;

use crate::c4::{C4LineCounts, C4Quality};
use crate::filter::{Doc, Filter};
use crate::verdict::Drop;

/// The enabled filters of a recipe, in FineWeb's order (built by
/// [`crate::FiltersConfig::chain`]). Pipelines iterate it instead of naming filters.
#[derive(Debug, Default)]
pub struct Chain {
    filters: Vec<Box<dyn Filter>>,
}

impl Chain {
    /// The enabled ones of `filters`, in their order.
    pub fn new(filters: Vec<Box<dyn Filter>>) -> Self {
        Chain {
            filters: filters.into_iter().filter(|f| f.enabled()).collect(),
        }
    }

    /// The filters, in order.
    pub fn iter(&self) -> impl Iterator<Item = &dyn Filter> {
        self.filters.iter().map(|f| &**f)
    }

    /// The filter named `name`, if the chain runs it.
    pub fn get(&self, name: &str) -> Option<&dyn Filter> {
        self.iter().find(|f| f.name() == name)
    }

    /// How many filters run.
    pub fn len(&self) -> usize {
        self.filters.len()
    }

    /// Whether no filter runs.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Every measured value of every filter on `text`, keyed `filter.rule`
    /// (`gopher_repetition.dup_line_frac`, `fineweb.line_punct_ratio`, ...), in chain order.
    pub fn scores(&self, text: &str) -> Vec<(String, f64)> {
        self.iter()
            .flat_map(|f| {
                f.scores(text)
                    .into_iter()
                    .map(move |(rule, value)| (format!("{}.{rule}", f.name()), value))
            })
            .collect()
    }

    /// The quality filters ([`crate::Kind::Quality`]) on `text`, in order: the text they leave
    /// (borrowed unless one rewrote it), or the first drop.
    pub fn quality<'a>(&self, text: &'a str) -> Result<Cow<'a, str>, Drop> {
        quality(self.iter(), text, None)
    }

    /// The `filter/rule` key of the quality drop of `text` ([`Chain::quality`]), or `None`
    /// when the quality filters keep it.
    pub fn drop_reason(&self, text: &str) -> Option<String> {
        self.quality(text).err().map(|d| d.key())
    }
}

/// The enabled quality filters of `filters` on `text`, in order. With `c4_lines`, C4 runs as
/// that configuration's [`C4Quality::apply_counted`], adding the lines it removes to the
/// counts (the trait has no place for them); its verdict and text are those of its
/// [`Filter::apply`].
pub(crate) fn quality<'a, 'f>(
    filters: impl IntoIterator<Item = &'f dyn Filter>,
    text: &'a str,
    mut c4_lines: Option<(&C4Quality, &mut C4LineCounts)>,
) -> Result<Cow<'a, str>, Drop> {
    let mut doc = Doc::new(None, text);
    for f in filters {
        if !f.enabled() || f.kind().sql().is_none() {
            continue;
        }
        match &mut c4_lines {
            Some((c4, counts)) if f.name() == c4.name() => {
                doc.text = Cow::Owned(c4.apply_counted(&doc.text, counts)?);
            }
            _ => f.apply(&mut doc)?,
        }
    }
    Ok(doc.text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FiltersConfig;
    use crate::filter::Kind;
    use crate::testutil::good_text;

    const ORDER: [&str; 7] = [
        "url",
        "language",
        "gopher_repetition",
        "gopher_quality",
        "c4",
        "fineweb",
        "pii",
    ];

    fn names(chain: &Chain) -> Vec<&'static str> {
        chain.iter().map(|f| f.name()).collect()
    }

    #[test]
    fn the_chain_runs_every_filter_in_fineweb_order() {
        let config = FiltersConfig::default();
        let all = config.filters().unwrap();
        let kinds: Vec<(&str, Kind)> = all.iter().map(|f| (f.name(), f.kind())).collect();
        assert_eq!(
            kinds,
            [
                ("url", Kind::Url),
                ("language", Kind::Language),
                (
                    "gopher_repetition",
                    Kind::Quality {
                        sql: "gopher_repetition"
                    }
                ),
                (
                    "gopher_quality",
                    Kind::Quality {
                        sql: "gopher_quality"
                    }
                ),
                ("c4", Kind::Quality { sql: "c4_quality" }),
                (
                    "fineweb",
                    Kind::Quality {
                        sql: "fineweb_quality"
                    }
                ),
                ("pii", Kind::Formatter),
            ]
        );
        let chain = config.chain().unwrap();
        assert_eq!(names(&chain), ORDER);
        assert_eq!(chain.len(), 7);
        assert!(Chain::default().is_empty());
    }

    #[test]
    fn a_disabled_filter_is_listed_but_not_in_the_chain() {
        let mut config = FiltersConfig::default();
        config.language.enabled = false;
        config.c4.enabled = false;
        config.url.enabled = false;
        // A disabled URL filter reads no blocklist, so a missing file is no error.
        config.url.blocklists = vec!["/no/such/blocklist.txt".into()];
        let all = config.filters().unwrap();
        assert_eq!(all.iter().map(|f| f.name()).collect::<Vec<_>>(), ORDER);
        let chain = config.chain().unwrap();
        assert_eq!(
            names(&chain),
            ["gopher_repetition", "gopher_quality", "fineweb", "pii"]
        );
        assert!(chain.get("c4").is_none() && chain.get("fineweb").is_some());
        config.url.enabled = true;
        assert!(config.chain().is_err());
    }

    #[test]
    fn apply_leaves_the_document_unchanged_when_it_drops() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("list.txt");
        std::fs::write(&list, "blocked.example\n").unwrap();
        let mut config = FiltersConfig::default();
        config.url.blocklists = vec![list];
        let good = good_text();
        let lorem = format!("{good}Lorem ipsum dolor sit amet.\n");
        let texts = [
            "",
            "Too short to be a document.",
            lorem.as_str(),
            good.as_str(),
            "Write to me@mail.example.com or 8.8.8.8.",
        ];
        let urls = [None, Some("https://blocked.example/page")];
        for f in config.filters().unwrap() {
            let mut drops = 0;
            for url in urls {
                for text in texts {
                    let before = Doc {
                        url,
                        text: Cow::Borrowed(text),
                        lang: Some(("xx".into(), 0.5)),
                    };
                    let mut doc = before.clone();
                    if f.apply(&mut doc).is_err() {
                        drops += 1;
                        assert_eq!(doc, before, "{}", f.name());
                        assert!(matches!(doc.text, Cow::Borrowed(_)));
                    }
                }
            }
            // Every filter but the formatter drops one of these.
            assert_eq!(drops == 0, f.kind() == Kind::Formatter, "{}", f.name());
        }
    }

    #[test]
    fn apply_records_the_language_and_rewrites_the_text() {
        let chain = FiltersConfig::default().chain().unwrap();
        let text = format!("{}Write to me@mail.example.com.\n", good_text());
        let mut doc = Doc::new(Some("https://example.com/"), text.as_str());
        for f in chain.iter() {
            f.apply(&mut doc).unwrap();
        }
        assert_eq!(doc.lang.as_ref().map(|l| l.0.as_str()), Some("en"));
        assert!(
            doc.text.ends_with("Write to email@example.com."),
            "{}",
            doc.text
        );
    }

    /// The score columns as the build's stages computed them before the filters had one
    /// trait: each enabled measuring filter by name, in order.
    fn scores_by_hand(config: &FiltersConfig, text: &str) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        let mut add = |prefix: &str, v: Vec<(&'static str, f64)>| {
            out.extend(v.into_iter().map(|(k, x)| (format!("{prefix}.{k}"), x)));
        };
        if config.gopher_repetition.enabled {
            add("gopher_repetition", config.gopher_repetition.scores(text));
        }
        if config.gopher_quality.enabled {
            add("gopher_quality", config.gopher_quality.scores(text));
        }
        if config.fineweb.enabled {
            add("fineweb", config.fineweb.scores(text));
        }
        out
    }

    #[test]
    fn scores_are_keyed_filter_dot_rule_as_before() {
        let mut config = FiltersConfig::default();
        for text in [good_text().as_str(), "", "Too short to be a document."] {
            let chain = config.chain().unwrap();
            assert_eq!(chain.scores(text), scores_by_hand(&config, text));
        }
        let keys: Vec<String> = config
            .chain()
            .unwrap()
            .scores(&good_text())
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert!(keys.contains(&"gopher_repetition.dup_line_frac".to_string()));
        assert!(keys.contains(&"fineweb.line_punct_ratio".to_string()));
        config.gopher_quality.enabled = false;
        let chain = config.chain().unwrap();
        assert_eq!(
            chain.scores(&good_text()),
            scores_by_hand(&config, &good_text())
        );
    }

    #[test]
    fn quality_and_drop_reason_agree_with_the_config() {
        let config = FiltersConfig::default();
        let chain = config.chain().unwrap();
        let good = good_text();
        let js = format!("{good}Enable JavaScript to see this page.\n");
        for text in [
            good.as_str(),
            js.as_str(),
            "",
            "Too short to be a document.",
        ] {
            assert_eq!(chain.quality(text), config.quality(text));
            assert_eq!(
                chain.drop_reason(text),
                config.quality(text).err().map(|d| d.key())
            );
        }
        assert_eq!(chain.quality(&js).unwrap(), good.trim_end());
        assert_eq!(
            chain.drop_reason("").as_deref(),
            Some("gopher_repetition/empty")
        );
    }
}
