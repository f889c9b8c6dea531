//! The document stages between reading and tokenizing, in FineWeb's order: URL filter →
//! main-content extraction (HTML pages) → language id → Gopher repetition → Gopher quality →
//! C4 → FineWeb → PII formatting → the recipe's own SQL condition. Each stage can be disabled;
//! every document it drops is counted in the funnel and recorded with the stage, the rule,
//! the measured value and the threshold.
//!
//! The filters are one [`Chain`] of [`tokenmill_filters::Filter`]s, run by one loop: the
//! URL filters before [extraction](extract), the others after it. The funnel is in [`funnel`]
//! and the recipe's SQL in [`sql`].

use std::borrow::Cow;

use arrow::array::{Array, RecordBatch, StringArray, UInt64Array};
use tokenmill_filters::{Chain, Doc, Filter};

use crate::config::{ExtractConfig, SqlConfig};
use crate::error::Result;

mod extract;
mod funnel;
mod sql;

pub use funnel::{Funnel, FunnelRow};
pub use sql::{SqlWhere, kept_fields};

/// The metadata of a kept document the SQL condition sees.
#[derive(Debug, Clone, Copy)]
pub struct RowMeta<'a> {
    /// The document's id.
    pub id: &'a str,
    /// The file it was read from.
    pub source: &'a str,
    /// Where in that file it starts.
    pub offset: u64,
    /// Its URL, when the input has one.
    pub url: Option<&'a str>,
}

/// The document columns of a reader batch.
#[derive(Debug, Clone, Copy)]
pub struct DocColumns<'a> {
    id: &'a StringArray,
    source: &'a StringArray,
    offset: &'a UInt64Array,
    url: &'a StringArray,
    text: &'a StringArray,
    html: &'a StringArray,
    lang: &'a StringArray,
}

fn opt(a: &StringArray, r: usize) -> Option<&str> {
    a.is_valid(r).then(|| a.value(r))
}

impl<'a> DocColumns<'a> {
    /// The columns of a batch in the document schema.
    pub fn of(b: &'a RecordBatch) -> Self {
        use arrow::array::AsArray;
        let s = |n: &str| {
            b.column_by_name(n)
                .expect("document schema")
                .as_string::<i32>()
        };
        DocColumns {
            id: s("id"),
            source: s("source"),
            offset: b
                .column_by_name("offset")
                .expect("document schema")
                .as_primitive::<arrow::datatypes::UInt64Type>(),
            url: s("url"),
            text: s("text"),
            html: s("html"),
            lang: s("lang"),
        }
    }

    /// Row `r` as the stages see it.
    pub fn doc(&self, r: usize) -> DocIn<'a> {
        DocIn {
            url: opt(self.url, r),
            text: opt(self.text, r),
            html: opt(self.html, r),
        }
    }

    /// Row `r`'s metadata.
    pub fn meta(&self, r: usize) -> RowMeta<'a> {
        RowMeta {
            id: self.id.value(r),
            source: self.source.value(r),
            offset: self.offset.value(r),
            url: opt(self.url, r),
        }
    }

    /// The language the input gives row `r` (e.g. a WET record's), if any.
    pub fn lang(&self, r: usize) -> Option<&'a str> {
        opt(self.lang, r)
    }
}

/// A document every stage kept.
#[derive(Debug, Clone)]
pub struct KeptRow<'a> {
    /// Its row in the batch.
    pub row: usize,
    /// Its metadata.
    pub meta: RowMeta<'a>,
    /// Its text and language after the stages.
    pub kept: Kept<'a>,
}

impl KeptRow<'_> {
    /// Language and confidence: the identifier's, else the input's own language.
    pub fn lang(&self, cols: &DocColumns<'_>) -> (Option<String>, Option<f64>) {
        match &self.kept.lang {
            Some((l, p)) => (Some(l.clone()), Some(*p)),
            None => (cols.lang(self.row).map(str::to_string), None),
        }
    }
}

/// A document entering the stages.
#[derive(Debug, Clone, Copy)]
pub struct DocIn<'a> {
    /// Its URL, when the input has one.
    pub url: Option<&'a str>,
    /// Its text, when the input has text.
    pub text: Option<&'a str>,
    /// Its HTML page, when the input is a crawl's response record.
    pub html: Option<&'a str>,
}

/// Why a stage dropped a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Dropped {
    /// The stage (`url`, `extract`, a filter's name, `sql`), or `read` for a document without
    /// any text.
    pub stage: &'static str,
    /// The rule within the stage.
    pub rule: String,
    /// What was measured (NaN where a rule has none).
    pub value: f64,
    /// The threshold the value crossed (NaN where a rule has none).
    pub threshold: f64,
    /// The text the stage judged (after extraction), kept for `excluded` when asked.
    pub text: Option<String>,
}

impl From<tokenmill_filters::Drop> for Dropped {
    fn from(d: tokenmill_filters::Drop) -> Self {
        Dropped {
            stage: d.filter,
            rule: d.rule.to_string(),
            value: d.value,
            threshold: d.threshold,
            text: None,
        }
    }
}

/// A document the stages kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept<'a> {
    /// Its text after the filters (C4 and PII may have rewritten it).
    pub text: Cow<'a, str>,
    /// Language code (ISO 639-1 where it has one, else 639-3) and confidence, when language
    /// id ran.
    pub lang: Option<(String, f64)>,
}

/// The configured stages.
#[derive(Debug)]
pub struct Stages {
    extract: ExtractConfig,
    /// The enabled filters, in order (none without a `[filters]` table).
    chain: Chain,
    /// The recipe's SQL condition and derived columns.
    sql: Option<SqlWhere>,
    /// Dropped documents carry the text their stage judged.
    pub keep_text: bool,
}

/// Runs filter `f` on `doc`, counted at its stage: bytes before and after on a pass; on a
/// drop, the bytes of the text it judged, which the drop carries when `keep`.
fn gate(
    f: &dyn Filter,
    doc: &mut Doc<'_>,
    funnel: &mut Funnel,
    keep: bool,
) -> std::result::Result<(), Dropped> {
    let bytes_in = doc.text.len();
    match f.apply(doc) {
        Ok(()) => {
            funnel.pass(f.name(), bytes_in, doc.text.len());
            Ok(())
        }
        Err(d) => {
            // A filter that drops leaves the document unchanged: this is the judged text.
            funnel.drop(f.name(), d.rule, bytes_in);
            Err(Dropped {
                text: keep.then(|| doc.text.to_string()),
                ..d.into()
            })
        }
    }
}

impl Stages {
    /// The stages of a build configuration: extraction, and with a `[filters]` table the
    /// FineWeb recipe (each filter on unless `enabled = false`).
    pub fn new(
        extract: &ExtractConfig,
        filters: Option<&tokenmill_filters::FiltersConfig>,
        sql: &SqlConfig,
    ) -> Result<Self> {
        let chain = match filters {
            Some(f) => {
                let chain = f.chain()?;
                f.validate()?;
                chain
            }
            None => Chain::default(),
        };
        let sql = if sql.where_.is_some() || !sql.columns.is_empty() {
            Some(SqlWhere::new(
                sql.where_.as_deref(),
                &sql.columns,
                &filters.cloned().unwrap_or_default(),
            )?)
        } else {
            None
        };
        Ok(Stages {
            extract: extract.clone(),
            chain,
            sql,
            keep_text: false,
        })
    }

    /// Every filter's measured values on `text` (`gopher_repetition.dup_line_frac`,
    /// `gopher_quality.mean_word_length`, `fineweb.line_punct_ratio`, …), for the filters the
    /// recipe runs.
    pub fn scores(&self, text: &str) -> Vec<(String, f64)> {
        self.chain.scores(text)
    }

    /// The recipe's derived columns (`[sql.columns]`) of kept documents.
    pub fn derive(
        &self,
        rows: &[KeptRow<'_>],
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
        match &self.sql {
            Some(w) => w.derive(rows),
            None => Ok(vec![serde_json::Map::new(); rows.len()]),
        }
    }

    /// Runs rows `rows` of a reader batch through every stage, the SQL condition included:
    /// returns the kept ones in order; each dropped one is recorded in `drops` (with the text
    /// its stage judged) and passed to `on_drop`.
    pub fn run_rows<'a>(
        &self,
        cols: &DocColumns<'a>,
        rows: impl IntoIterator<Item = usize>,
        funnel: &mut Funnel,
        drops: &mut crate::excluded::DropWriter,
        mut on_drop: impl FnMut(&Dropped),
    ) -> Result<Vec<KeptRow<'a>>> {
        let mut kept = Vec::new();
        for r in rows {
            let doc = cols.doc(r);
            let meta = cols.meta(r);
            match self.run(doc, funnel) {
                Ok(k) => kept.push(KeptRow {
                    row: r,
                    meta,
                    kept: k,
                }),
                Err(why) => {
                    on_drop(&why);
                    drops.push(&meta, why.text.as_deref().or(doc.text).or(doc.html), &why)?;
                }
            }
        }
        let Some(w) = self.sql.as_ref().filter(|w| w.has_condition()) else {
            return Ok(kept);
        };
        // The recipe's SQL condition, over the batch's kept documents at once.
        let pass = w.eval(&kept)?;
        let mut out = Vec::with_capacity(kept.len());
        for (k, ok) in kept.into_iter().zip(pass) {
            let n = k.kept.text.len();
            if ok {
                funnel.pass("sql", n, n);
                out.push(k);
            } else {
                funnel.drop("sql", "where", n);
                let why = sql::dropped();
                on_drop(&why);
                drops.push(&k.meta, Some(&k.kept.text), &why)?;
            }
        }
        Ok(out)
    }

    /// Runs `doc` through the stages, counting it in `funnel`.
    pub fn run<'a>(
        &self,
        doc: DocIn<'a>,
        funnel: &mut Funnel,
    ) -> std::result::Result<Kept<'a>, Dropped> {
        // Before extraction the filters judge the URL; the funnel counts the row's text or
        // page, and a drop carries no text (`excluded` records the row's own).
        let mut page = Doc::new(doc.url, doc.text.or(doc.html).unwrap_or(""));
        for f in self.chain.iter().filter(|f| f.kind().before_extraction()) {
            gate(f, &mut page, funnel, false)?;
        }
        let mut text = Doc::new(doc.url, extract::text(doc, &self.extract, funnel)?);
        for f in self.chain.iter().filter(|f| !f.kind().before_extraction()) {
            gate(f, &mut text, funnel, self.keep_text)?;
        }
        Ok(Kept {
            text: text.text,
            lang: text.lang,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stages(filters: &tokenmill_filters::FiltersConfig, keep_text: bool) -> Stages {
        let mut st = Stages::new(
            &ExtractConfig::default(),
            Some(filters),
            &SqlConfig::default(),
        )
        .unwrap();
        st.keep_text = keep_text;
        st
    }

    fn doc<'a>(url: Option<&'a str>, text: &'a str) -> DocIn<'a> {
        DocIn {
            url,
            text: Some(text),
            html: None,
        }
    }

    /// English prose that every filter keeps: 50 lines of two sentences, words drawn
    /// pseudo-randomly so that no line or n-gram repeats.
    fn prose() -> String {
        const WORDS: [&str; 40] = [
            "river", "mountain", "garden", "harbour", "library", "market", "valley", "tower",
            "forest", "village", "teacher", "farmer", "sailor", "doctor", "painter", "student",
            "walked", "painted", "noticed", "carried", "followed", "opened", "wrote", "visited",
            "quiet", "distant", "broken", "ancient", "narrow", "golden", "morning", "evening",
            "the", "of", "and", "to", "with", "that", "the", "and",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            WORDS[(state % WORDS.len() as u64) as usize]
        };
        let mut out = String::new();
        for _ in 0..50 {
            for end in [". ", ".\n"] {
                out.push_str("Then");
                for _ in 0..7 {
                    out.push(' ');
                    out.push_str(next());
                }
                out.push_str(end);
            }
        }
        out
    }

    #[test]
    fn every_filter_is_a_funnel_row_with_the_bytes_it_saw() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("list.txt");
        std::fs::write(&list, "blocked.example\n").unwrap();
        let mut filters = tokenmill_filters::FiltersConfig::default();
        filters.url.blocklists = vec![list];
        let st = stages(&filters, true);
        let mut f = Funnel::default();
        let text = format!(
            "{}Enable JavaScript to read this page.\nWrite to me@mail.example.com for the whole story.\n",
            prose()
        );
        let kept = st.run(doc(Some("https://ok.example/"), &text), &mut f);
        let blocked = st
            .run(doc(Some("https://www.blocked.example/"), &text), &mut f)
            .unwrap_err();
        assert_eq!((blocked.stage, blocked.rule.as_str()), ("url", "domain"));
        assert_eq!(blocked.text, None);
        // Too short to tell its language: dropped, carrying the text the stage judged.
        let short = st.run(doc(None, "Too short."), &mut f).unwrap_err();
        assert_eq!(short.stage, "language");
        assert_eq!(short.text.as_deref(), Some("Too short."));
        let stages: Vec<&str> = f.rows.iter().map(|r| r.stage.as_str()).collect();
        assert_eq!(
            stages,
            [
                "url",
                "language",
                "gopher_repetition",
                "gopher_quality",
                "c4",
                "fineweb",
                "pii"
            ]
        );
        let kept = kept.unwrap();
        assert_eq!(kept.lang.as_ref().map(|l| l.0.as_str()), Some("en"));
        // C4 removed the JavaScript line, and the formatter replaced the e-mail address.
        let (c4, pii) = (&f.rows[4], &f.rows[6]);
        assert_eq!((c4.docs_in, c4.docs_out, pii.docs_out), (1, 1, 1));
        assert!(c4.bytes_out < c4.bytes_in && pii.bytes_out < pii.bytes_in);
        assert_eq!(pii.bytes_out, kept.text.len() as u64);
        let url = &f.rows[0];
        assert_eq!((url.docs_in, url.docs_out), (3, 2));
        assert_eq!(
            url.bytes_in,
            2 * text.len() as u64 + "Too short.".len() as u64
        );
        assert_eq!(url.dropped["domain"], 1);
        let scores = st.scores(&kept.text);
        assert_eq!(scores, filters.chain().unwrap().scores(&kept.text));
    }

    #[test]
    fn without_filters_the_text_passes_untouched() {
        let st = Stages::new(&ExtractConfig::default(), None, &SqlConfig::default()).unwrap();
        let mut f = Funnel::default();
        let k = st.run(doc(None, "Short."), &mut f).unwrap();
        assert_eq!((k.text.as_ref(), k.lang), ("Short.", None));
        assert!(f.rows.is_empty() && st.scores("Short.").is_empty());
    }
}
