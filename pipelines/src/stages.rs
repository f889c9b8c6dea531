//! The document stages between reading and tokenizing, in FineWeb's order: URL filter →
//! main-content extraction (HTML pages) → language id → Gopher repetition → Gopher quality →
//! C4 → FineWeb → PII formatting → the recipe's own SQL condition. Each stage can be disabled;
//! every document it drops is counted in the funnel and recorded with the stage, the rule,
//! the measured value and the threshold.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// `[extract]`: HTML → text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtractSection {
    pub enabled: bool,
    #[serde(flatten)]
    pub options: tokenmill_extract::Options,
    /// Extracted texts shorter than this many characters are dropped (`extract/too_short`).
    pub min_chars: usize,
}

impl Default for ExtractSection {
    fn default() -> Self {
        ExtractSection {
            enabled: true,
            options: Default::default(),
            min_chars: 1,
        }
    }
}

/// A document entering the stages.
#[derive(Debug, Clone, Copy)]
pub struct DocIn<'a> {
    pub url: Option<&'a str>,
    pub text: Option<&'a str>,
    pub html: Option<&'a str>,
}

/// Why a stage dropped a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Dropped {
    pub stage: &'static str,
    pub rule: String,
    /// What was measured, and the threshold it crossed (NaN where a rule has none).
    pub value: f64,
    pub threshold: f64,
}

/// A document the stages kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept<'a> {
    pub text: Cow<'a, str>,
    /// Language code (ISO 639-3) and confidence, when language id ran.
    pub lang: Option<(String, f64)>,
}

/// One stage's row of the funnel: documents and bytes in and out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunnelRow {
    pub stage: String,
    pub docs_in: u64,
    pub docs_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Documents dropped, by rule.
    pub dropped: std::collections::BTreeMap<String, u64>,
}

/// The funnel of a task (or, merged, of a build).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Funnel {
    pub rows: Vec<FunnelRow>,
}

impl Funnel {
    fn row(&mut self, stage: &str) -> &mut FunnelRow {
        if let Some(i) = self.rows.iter().position(|r| r.stage == stage) {
            &mut self.rows[i]
        } else {
            self.rows.push(FunnelRow {
                stage: stage.to_string(),
                ..Default::default()
            });
            self.rows.last_mut().expect("just pushed")
        }
    }

    /// Counts a document through `stage`.
    pub fn pass(&mut self, stage: &str, bytes_in: usize, bytes_out: usize) {
        let r = self.row(stage);
        r.docs_in += 1;
        r.docs_out += 1;
        r.bytes_in += bytes_in as u64;
        r.bytes_out += bytes_out as u64;
    }

    /// Counts a document dropped at `stage` by `rule`.
    pub fn drop(&mut self, stage: &str, rule: &str, bytes_in: usize) {
        let r = self.row(stage);
        r.docs_in += 1;
        r.bytes_in += bytes_in as u64;
        *r.dropped.entry(rule.to_string()).or_default() += 1;
    }

    /// Adds `o` (rows matched by stage name, new ones appended in order).
    pub fn merge(&mut self, o: &Funnel) {
        for r in &o.rows {
            let m = self.row(&r.stage);
            m.docs_in += r.docs_in;
            m.docs_out += r.docs_out;
            m.bytes_in += r.bytes_in;
            m.bytes_out += r.bytes_out;
            for (k, v) in &r.dropped {
                *m.dropped.entry(k.clone()).or_default() += v;
            }
        }
    }

    /// Documents dropped per stage.
    pub fn dropped_by_stage(&self) -> impl Iterator<Item = (&str, u64)> {
        self.rows
            .iter()
            .map(|r| (r.stage.as_str(), r.docs_in - r.docs_out))
    }

    /// The funnel as a table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "  {:<20} {:>10} {:>10} {:>7} {:>14} {:>14}\n",
            "stage", "docs in", "docs out", "kept", "MB in", "MB out"
        );
        for r in &self.rows {
            s.push_str(&format!(
                "  {:<20} {:>10} {:>10} {:>6.1}% {:>14.3} {:>14.3}\n",
                r.stage,
                r.docs_in,
                r.docs_out,
                100.0 * r.docs_out as f64 / r.docs_in.max(1) as f64,
                r.bytes_in as f64 / 1e6,
                r.bytes_out as f64 / 1e6
            ));
            let mut rules: Vec<_> = r.dropped.iter().collect();
            rules.sort_by(|a, b| b.1.cmp(a.1));
            for (k, v) in rules.iter().take(4) {
                s.push_str(&format!("  {:<20}   dropped {v:>8}  {k}\n", ""));
            }
        }
        s
    }
}

/// The configured stages.
#[derive(Debug)]
pub struct Stages {
    extract: ExtractSection,
    filters: Option<tokenmill_filters::FiltersConfig>,
    url: Option<tokenmill_filters::UrlFilter>,
}

fn dropped(d: tokenmill_filters::Drop) -> Dropped {
    Dropped {
        stage: d.filter,
        rule: d.rule.to_string(),
        value: d.value,
        threshold: d.threshold,
    }
}

impl Stages {
    /// The stages of a build configuration: extraction, and with a `[filters]` table the
    /// FineWeb recipe (each filter on unless `enabled = false`).
    pub fn new(
        extract: &ExtractSection,
        filters: Option<&tokenmill_filters::FiltersConfig>,
    ) -> Result<Self> {
        let url = match filters {
            Some(f) if f.url.enabled => Some(
                f.url
                    .build()
                    .map_err(|e| crate::error::Error::Config(format!("[filters.url]: {e}")))?,
            ),
            _ => None,
        };
        if let Some(f) = filters {
            f.validate()
                .map_err(|e| crate::error::Error::Config(format!("[filters]: {e}")))?;
        }
        Ok(Stages {
            extract: extract.clone(),
            filters: filters.cloned(),
            url,
        })
    }

    /// Runs `text` through the filters (after extraction).
    fn filter<'a>(
        &self,
        f: &tokenmill_filters::FiltersConfig,
        text: Cow<'a, str>,
        funnel: &mut Funnel,
    ) -> std::result::Result<Kept<'a>, Dropped> {
        let n = text.len();
        let mut lang = None;
        if f.language.enabled {
            let (guess, verdict) = f.language.check_text(&text);
            lang = guess.map(|g| (g.code.to_string(), g.confidence));
            if let Err(d) = verdict {
                funnel.drop("language", d.rule, n);
                return Err(dropped(d));
            }
            funnel.pass("language", n, n);
        }
        for (stage, on, check) in [
            (
                "gopher_repetition",
                f.gopher_repetition.enabled,
                &(|t: &str| f.gopher_repetition.check(t))
                    as &dyn Fn(&str) -> std::result::Result<(), tokenmill_filters::Drop>,
            ),
            ("gopher_quality", f.gopher_quality.enabled, &|t: &str| {
                f.gopher_quality.check(t)
            }),
        ] {
            if on {
                if let Err(d) = check(&text) {
                    funnel.drop(stage, d.rule, n);
                    return Err(dropped(d));
                }
                funnel.pass(stage, n, n);
            }
        }
        let text = if f.c4.enabled {
            match f.c4.apply(&text) {
                Ok(t) => {
                    funnel.pass("c4", n, t.len());
                    Cow::Owned(t)
                }
                Err(d) => {
                    funnel.drop("c4", d.rule, n);
                    return Err(dropped(d));
                }
            }
        } else {
            text
        };
        let n = text.len();
        if f.fineweb.enabled {
            if let Err(d) = f.fineweb.check(&text) {
                funnel.drop("fineweb", d.rule, n);
                return Err(dropped(d));
            }
            funnel.pass("fineweb", n, n);
        }
        let text = if f.pii.enabled {
            let t = match f.pii.apply(&text) {
                Cow::Borrowed(_) => text,
                Cow::Owned(o) => Cow::Owned(o),
            };
            funnel.pass("pii", n, t.len());
            t
        } else {
            text
        };
        Ok(Kept { text, lang })
    }

    /// Runs `doc` through the stages, counting it in `funnel`.
    pub fn run<'a>(
        &self,
        doc: DocIn<'a>,
        funnel: &mut Funnel,
    ) -> std::result::Result<Kept<'a>, Dropped> {
        if let Some(u) = &self.url {
            let n = doc.text.or(doc.html).map_or(0, str::len);
            match doc.url.map(|url| u.check(url)) {
                Some(Err(d)) => {
                    funnel.drop("url", d.rule, n);
                    return Err(dropped(d));
                }
                _ => funnel.pass("url", n, n),
            }
        }
        let text: Cow<'a, str> = match (doc.text, doc.html) {
            (Some(t), _) if !t.trim().is_empty() => Cow::Borrowed(t),
            (_, Some(h)) if self.extract.enabled => {
                let x = tokenmill_extract::extract(h, &self.extract.options);
                let chars = x.text.chars().count();
                if chars < self.extract.min_chars {
                    let rule = if chars == 0 { "no_text" } else { "too_short" };
                    funnel.drop("extract", rule, h.len());
                    return Err(Dropped {
                        stage: "extract",
                        rule: rule.into(),
                        value: chars as f64,
                        threshold: self.extract.min_chars as f64,
                    });
                }
                funnel.pass("extract", h.len(), x.text.len());
                Cow::Owned(x.text)
            }
            (_, Some(h)) => {
                funnel.drop("extract", "disabled", h.len());
                return Err(Dropped {
                    stage: "extract",
                    rule: "html_without_extraction".into(),
                    value: f64::NAN,
                    threshold: f64::NAN,
                });
            }
            _ => {
                funnel.drop("read", "empty_text", 0);
                return Err(Dropped {
                    stage: "read",
                    rule: "empty_text".into(),
                    value: 0.0,
                    threshold: f64::NAN,
                });
            }
        };
        match &self.filters {
            Some(f) => self.filter(f, text, funnel),
            None => Ok(Kept { text, lang: None }),
        }
    }
}
