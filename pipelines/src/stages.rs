//! The document stages between reading and tokenizing, in FineWeb's order: URL filter →
//! main-content extraction (HTML pages) → language id → Gopher repetition → Gopher quality →
//! C4 → FineWeb → PII formatting → the recipe's own SQL condition. Each stage can be disabled;
//! every document it drops is counted in the funnel and recorded with the stage, the rule,
//! the measured value and the threshold.

use std::borrow::Cow;

use arrow::array::Array;

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

/// `[sql]`: the recipe's own condition, a DataFusion SQL expression over the columns `id`,
/// `source`, `offset`, `url`, `lang`, `lang_score` and `text` (after the filters), with
/// tokenmill's filters as functions ([`crate::udf`]): e.g.
/// `where = "lang = 'en' AND length(text) > 500 AND NOT regexp_like(url, 'forum')"`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqlSection {
    #[serde(rename = "where")]
    pub where_: Option<String>,
    /// Derived columns: name = SQL expression (`[sql.columns] words = "word_count(text)"`),
    /// written with each kept document by `tokenmill extract`.
    pub columns: std::collections::BTreeMap<String, String>,
}

/// The metadata of a kept document the SQL condition sees.
#[derive(Debug, Clone, Copy)]
pub struct RowMeta<'a> {
    pub id: &'a str,
    pub source: &'a str,
    pub offset: u64,
    pub url: Option<&'a str>,
}

/// The document columns of a reader batch.
#[derive(Debug, Clone, Copy)]
pub struct DocColumns<'a> {
    id: &'a arrow::array::StringArray,
    source: &'a arrow::array::StringArray,
    offset: &'a arrow::array::UInt64Array,
    url: &'a arrow::array::StringArray,
    text: &'a arrow::array::StringArray,
    html: &'a arrow::array::StringArray,
    lang: &'a arrow::array::StringArray,
}

fn opt(a: &arrow::array::StringArray, r: usize) -> Option<&str> {
    a.is_valid(r).then(|| a.value(r))
}

impl<'a> DocColumns<'a> {
    /// The columns of a batch in the document schema.
    pub fn of(b: &'a arrow::array::RecordBatch) -> Self {
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
    pub meta: RowMeta<'a>,
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

/// Why `[sql] where` dropped a document.
fn sql_dropped() -> Dropped {
    Dropped {
        stage: "sql",
        rule: "where".into(),
        value: f64::NAN,
        threshold: f64::NAN,
        text: None,
    }
}

/// The columns of a kept document as the SQL condition and `tokenmill extract` see them.
pub fn kept_fields() -> Vec<arrow::datatypes::Field> {
    use arrow::datatypes::{DataType, Field};
    vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("offset", DataType::UInt64, false),
        Field::new("url", DataType::Utf8, true),
        Field::new("lang", DataType::Utf8, true),
        Field::new("lang_score", DataType::Float64, true),
        Field::new("text", DataType::Utf8, false),
    ]
}

/// A compiled `[sql]`: the condition and the derived columns, parsed and planned once.
pub struct SqlWhere {
    expr: Option<std::sync::Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
    columns: Vec<(
        String,
        std::sync::Arc<dyn datafusion::physical_expr::PhysicalExpr>,
    )>,
    schema: arrow::datatypes::SchemaRef,
    text: String,
}

impl std::fmt::Debug for SqlWhere {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlWhere")
            .field("where", &self.text)
            .finish()
    }
}

impl SqlWhere {
    /// Parses and plans the condition `sql` (if any) and the derived `columns` once.
    pub fn new(
        sql: Option<&str>,
        columns: &std::collections::BTreeMap<String, String>,
        filters: &tokenmill_filters::FiltersConfig,
    ) -> Result<Self> {
        let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(kept_fields()));
        let ctx = datafusion::prelude::SessionContext::new();
        crate::udf::register(&ctx, filters);
        let df = datafusion::common::DFSchema::try_from(schema.as_ref().clone())
            .map_err(|e| crate::error::Error::Config(format!("[sql]: {e}")))?;
        let plan = |what: String, sql: &str| {
            let bad = |e: datafusion::error::DataFusionError| {
                crate::error::Error::Config(format!("[sql] {what} = {sql:?}: {e}"))
            };
            let logical = ctx.parse_sql_expr(sql, &df).map_err(bad)?;
            ctx.create_physical_expr(logical, &df).map_err(bad)
        };
        let expr = match sql {
            Some(w) => Some(plan("where".into(), w)?),
            None => None,
        };
        let columns = columns
            .iter()
            .map(|(name, e)| Ok((name.clone(), plan(format!("columns.{name}"), e)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(SqlWhere {
            expr,
            columns,
            schema,
            text: sql.unwrap_or("").to_string(),
        })
    }

    /// The documents as the table the expressions see.
    fn batch(&self, rows: &[KeptRow<'_>]) -> Result<arrow::array::RecordBatch> {
        use arrow::array::{ArrayRef, Float64Array, StringArray, UInt64Array};
        let cols: Vec<ArrayRef> = vec![
            std::sync::Arc::new(
                rows.iter()
                    .map(|k| Some(k.meta.id))
                    .collect::<StringArray>(),
            ),
            std::sync::Arc::new(
                rows.iter()
                    .map(|k| Some(k.meta.source))
                    .collect::<StringArray>(),
            ),
            std::sync::Arc::new(rows.iter().map(|k| k.meta.offset).collect::<UInt64Array>()),
            std::sync::Arc::new(rows.iter().map(|k| k.meta.url).collect::<StringArray>()),
            std::sync::Arc::new(
                rows.iter()
                    .map(|k| k.kept.lang.as_ref().map(|l| l.0.as_str()))
                    .collect::<StringArray>(),
            ),
            std::sync::Arc::new(
                rows.iter()
                    .map(|k| k.kept.lang.as_ref().map(|l| l.1))
                    .collect::<Float64Array>(),
            ),
            std::sync::Arc::new(
                rows.iter()
                    .map(|k| Some(k.kept.text.as_ref()))
                    .collect::<StringArray>(),
            ),
        ];
        Ok(arrow::array::RecordBatch::try_new(
            self.schema.clone(),
            cols,
        )?)
    }

    /// Whether each document passes (NULL counts as no; all pass without a condition).
    pub fn eval(&self, rows: &[KeptRow<'_>]) -> Result<Vec<bool>> {
        let Some(expr) = &self.expr else {
            return Ok(vec![true; rows.len()]);
        };
        let batch = self.batch(rows)?;
        let v = expr
            .evaluate(&batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(|e| {
                crate::error::Error::Config(format!("[sql] where = {:?}: {e}", self.text))
            })?;
        let b = v
            .as_any()
            .downcast_ref::<arrow::array::BooleanArray>()
            .ok_or_else(|| {
                crate::error::Error::Config(format!(
                    "[sql] where = {:?} is not a boolean condition ({})",
                    self.text,
                    v.data_type()
                ))
            })?;
        Ok((0..b.len()).map(|i| b.is_valid(i) && b.value(i)).collect())
    }

    /// The derived columns of each document, as JSON values by name.
    pub fn derive(
        &self,
        rows: &[KeptRow<'_>],
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
        let mut out = vec![serde_json::Map::new(); rows.len()];
        if self.columns.is_empty() || rows.is_empty() {
            return Ok(out);
        }
        let batch = self.batch(rows)?;
        for (name, expr) in &self.columns {
            let arr = expr
                .evaluate(&batch)
                .and_then(|v| v.into_array(batch.num_rows()))
                .map_err(|e| crate::error::Error::Config(format!("[sql] columns.{name}: {e}")))?;
            for (i, row) in out.iter_mut().enumerate() {
                let v = datafusion::scalar::ScalarValue::try_from_array(&arr, i).map_err(|e| {
                    crate::error::Error::Config(format!("[sql] columns.{name}: {e}"))
                })?;
                row.insert(name.clone(), scalar_json(&v));
            }
        }
        Ok(out)
    }
}

/// A SQL value as JSON: numbers and booleans as themselves, NULL as null, the rest as text.
fn scalar_json(v: &datafusion::scalar::ScalarValue) -> serde_json::Value {
    use datafusion::scalar::ScalarValue as S;
    match v {
        _ if v.is_null() => serde_json::Value::Null,
        S::Boolean(Some(b)) => (*b).into(),
        S::Int8(Some(x)) => (*x).into(),
        S::Int16(Some(x)) => (*x).into(),
        S::Int32(Some(x)) => (*x).into(),
        S::Int64(Some(x)) => (*x).into(),
        S::UInt8(Some(x)) => (*x).into(),
        S::UInt16(Some(x)) => (*x).into(),
        S::UInt32(Some(x)) => (*x).into(),
        S::UInt64(Some(x)) => (*x).into(),
        S::Float32(Some(x)) => serde_json::json!(*x),
        S::Float64(Some(x)) => serde_json::json!(*x),
        S::Utf8(Some(t)) | S::LargeUtf8(Some(t)) | S::Utf8View(Some(t)) => t.clone().into(),
        other => other.to_string().into(),
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
    /// The text the stage judged (after extraction), kept for `excluded` when asked.
    pub text: Option<String>,
}

/// A document the stages kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept<'a> {
    pub text: Cow<'a, str>,
    /// Language code (ISO 639-1 where it has one, else 639-3) and confidence, when language
    /// id ran.
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
    /// Documents passed on with a note (e.g. `capped_at_max_bytes`: a page longer than
    /// `[extract] max_bytes` extracted from its first `max_bytes`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub noted: std::collections::BTreeMap<String, u64>,
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
            for (k, v) in &r.noted {
                *m.noted.entry(k.clone()).or_default() += v;
            }
        }
    }

    /// Documents dropped per stage.
    pub fn dropped_by_stage(&self) -> impl Iterator<Item = (&str, u64)> {
        self.rows
            .iter()
            .map(|r| (r.stage.as_str(), r.docs_in - r.docs_out))
    }

    /// The funnel as an SVG bar chart: per stage, the documents in (grey) and out (blue), with
    /// the share kept and the top drop rule.
    pub fn svg(&self, title: &str) -> String {
        let (w, row_h, left) = (900.0, 34.0, 150.0);
        let h = 50.0 + row_h * self.rows.len() as f64 + 20.0;
        let max = self
            .rows
            .iter()
            .map(|r| r.docs_in)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let scale = (w - left - 330.0) / max;
        let esc = crate::plot::esc;
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
             <text x=\"10\" y=\"24\" font-size=\"15\">{}</text>\n",
            esc(title)
        );
        for (i, r) in self.rows.iter().enumerate() {
            let y = 40.0 + row_h * i as f64;
            let top = r
                .dropped
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(k, n)| format!(" — {k} {n}"))
                .unwrap_or_default();
            s.push_str(&format!(
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
                 <rect x=\"{left}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#ddd\"/>\
                 <rect x=\"{left}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#1f77b4\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\">{} of {} ({:.1} %){}</text>\n",
                left - 8.0,
                y + row_h * 0.55,
                esc(&r.stage),
                r.docs_in as f64 * scale,
                row_h * 0.7,
                r.docs_out as f64 * scale,
                row_h * 0.7,
                left + r.docs_in as f64 * scale + 6.0,
                y + row_h * 0.55,
                r.docs_out,
                r.docs_in,
                100.0 * r.docs_out as f64 / r.docs_in.max(1) as f64,
                esc(&top)
            ));
        }
        s.push_str("</svg>\n");
        s
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
            for (k, v) in &r.noted {
                s.push_str(&format!("  {:<20}   noted   {v:>8}  {k}\n", ""));
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
    /// The recipe's SQL condition and derived columns.
    sql: Option<SqlWhere>,
    /// Dropped documents carry the text their stage judged.
    pub keep_text: bool,
}

/// Counts a filter's drop of `t` at `stage`; the drop carries `t` when `keep`.
fn drop_at(
    funnel: &mut Funnel,
    keep: bool,
    stage: &str,
    d: tokenmill_filters::Drop,
    t: &str,
) -> Dropped {
    funnel.drop(stage, d.rule, t.len());
    Dropped {
        text: keep.then(|| t.to_string()),
        ..dropped(d)
    }
}

/// Counts a filter's verdict on `t` at `stage`.
fn gate(
    funnel: &mut Funnel,
    keep: bool,
    stage: &str,
    verdict: std::result::Result<(), tokenmill_filters::Drop>,
    t: &str,
) -> std::result::Result<(), Dropped> {
    match verdict {
        Ok(()) => {
            funnel.pass(stage, t.len(), t.len());
            Ok(())
        }
        Err(d) => Err(drop_at(funnel, keep, stage, d, t)),
    }
}

fn dropped(d: tokenmill_filters::Drop) -> Dropped {
    Dropped {
        stage: d.filter,
        rule: d.rule.to_string(),
        value: d.value,
        threshold: d.threshold,
        text: None,
    }
}

impl Stages {
    /// The stages of a build configuration: extraction, and with a `[filters]` table the
    /// FineWeb recipe (each filter on unless `enabled = false`).
    pub fn new(
        extract: &ExtractSection,
        filters: Option<&tokenmill_filters::FiltersConfig>,
        sql: &SqlSection,
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
            filters: filters.cloned(),
            url,
            sql,
            keep_text: false,
        })
    }

    /// Runs `text` through the filters (after extraction).
    fn filter<'a>(
        &self,
        f: &tokenmill_filters::FiltersConfig,
        text: Cow<'a, str>,
        funnel: &mut Funnel,
    ) -> std::result::Result<Kept<'a>, Dropped> {
        let keep = self.keep_text;
        let mut lang = None;
        if f.language.enabled {
            let (guess, verdict) = f.language.check_text(&text);
            lang = guess.map(|g| (g.iso639_1.unwrap_or(g.code).to_string(), g.confidence));
            gate(funnel, keep, "language", verdict, &text)?;
        }
        if f.gopher_repetition.enabled {
            gate(
                funnel,
                keep,
                "gopher_repetition",
                f.gopher_repetition.check(&text),
                &text,
            )?;
        }
        if f.gopher_quality.enabled {
            gate(
                funnel,
                keep,
                "gopher_quality",
                f.gopher_quality.check(&text),
                &text,
            )?;
        }
        let text = if f.c4.enabled {
            match f.c4.apply(&text) {
                Ok(t) => {
                    funnel.pass("c4", text.len(), t.len());
                    Cow::Owned(t)
                }
                Err(d) => return Err(drop_at(funnel, keep, "c4", d, &text)),
            }
        } else {
            text
        };
        if f.fineweb.enabled {
            gate(funnel, keep, "fineweb", f.fineweb.check(&text), &text)?;
        }
        let n = text.len();
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

    /// Every filter's measured values on `text` (`gopher_repetition.dup_line_frac`,
    /// `gopher_quality.mean_word_length`, `fineweb.line_punct_ratio`, …), for the filters the
    /// recipe runs.
    pub fn scores(&self, text: &str) -> Vec<(String, f64)> {
        let Some(f) = &self.filters else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut add = |prefix: &str, v: Vec<(&'static str, f64)>| {
            out.extend(v.into_iter().map(|(k, x)| (format!("{prefix}.{k}"), x)));
        };
        if f.gopher_repetition.enabled {
            add("gopher_repetition", f.gopher_repetition.scores(text));
        }
        if f.gopher_quality.enabled {
            add("gopher_quality", f.gopher_quality.scores(text));
        }
        if f.fineweb.enabled {
            add("fineweb", f.fineweb.scores(text));
        }
        out
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
        let Some(w) = self.sql.as_ref().filter(|w| w.expr.is_some()) else {
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
                let why = sql_dropped();
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
        if let Some(u) = &self.url {
            // no URL: nothing to block
            let verdict = doc.url.map_or(Ok(()), |url| u.check(url));
            gate(
                funnel,
                false,
                "url",
                verdict,
                doc.text.or(doc.html).unwrap_or(""),
            )?;
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
                        text: None,
                    });
                }
                funnel.pass("extract", h.len(), x.text.len());
                if x.truncated {
                    *funnel
                        .row("extract")
                        .noted
                        .entry("capped_at_max_bytes".into())
                        .or_default() += 1;
                }
                Cow::Owned(x.text)
            }
            (_, Some(h)) => {
                funnel.drop("extract", "disabled", h.len());
                return Err(Dropped {
                    stage: "extract",
                    rule: "html_without_extraction".into(),
                    value: f64::NAN,
                    threshold: f64::NAN,
                    text: None,
                });
            }
            _ => {
                // no text at all: a reader-level skip (`empty_text`), not a stage's decision
                return Err(Dropped {
                    stage: "read",
                    rule: "empty_text".into(),
                    value: 0.0,
                    threshold: f64::NAN,
                    text: None,
                });
            }
        };
        match &self.filters {
            Some(f) => self.filter(f, text, funnel),
            None => Ok(Kept { text, lang: None }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_over_the_cap_are_cut_and_noted_and_empty_pages_dropped() {
        let ex = ExtractSection {
            options: tokenmill_extract::Options {
                max_bytes: 200,
                ..Default::default()
            },
            ..Default::default()
        };
        let st = Stages::new(&ex, None, &SqlSection::default()).unwrap();
        let mut f = Funnel::default();
        let long = format!(
            "<html><body><article><p>{}</p></article></body></html>",
            "The council approved the plan. ".repeat(40)
        );
        let k = st
            .run(
                DocIn {
                    url: None,
                    text: None,
                    html: Some(&long),
                },
                &mut f,
            )
            .unwrap();
        assert!(k.text.len() < 200 && k.text.starts_with("The council"));
        assert_eq!(f.rows[0].noted["capped_at_max_bytes"], 1);
        let d = st
            .run(
                DocIn {
                    url: None,
                    text: None,
                    html: Some("<html><body><nav>Home</nav></body></html>"),
                },
                &mut f,
            )
            .unwrap_err();
        assert_eq!((d.stage, d.rule.as_str()), ("extract", "no_text"));
        assert_eq!((f.rows[0].docs_in, f.rows[0].docs_out), (2, 1));
    }
}
