//! `tokenmill extract INPUT... --out DIR`: the pipeline up to, not including, tokenization —
//! what a recipe keeps, before compute is spent on it. Writes the kept documents (id, source,
//! offset, url, lang, lang_score, text and the filters' scores) as `DIR/kept.jsonl` or
//! `DIR/kept.parquet`, the dropped ones as `DIR/excluded/*.parquet` (stage, rule, value,
//! threshold), and the funnel as `DIR/stats.json`. A single `.html` file is extracted and its
//! text printed.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use tokenmill_ingest::{DocumentReader, ReadStats};

use crate::config::BuildConfig;
use crate::error::{Error, Result};
use crate::stages::{Funnel, Stages};

/// What `extract` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExtractStats {
    /// Documents read from the inputs, before any stage: those the reader produced plus those
    /// it skipped.
    pub documents_read: u64,
    /// Documents that passed every stage and were written to `kept.*`.
    pub documents_kept: u64,
    /// Documents the stages dropped (URL filter, extraction, filters, SQL condition).
    pub documents_dropped: u64,
    /// Records the reader skipped as bad input, all reasons together.
    pub reader_skips: u64,
    /// Documents and bytes in and out of each stage.
    pub funnel: Funnel,
    /// Wall-clock seconds of the whole run.
    pub seconds: f64,
    /// `documents_read` per second.
    pub documents_per_s: f64,
}

/// Extracts the text of one HTML file (gzip allowed): the page's charset from a BOM or
/// `<meta>`, else UTF-8 if valid, else detected.
pub fn extract_html_file(path: &Path, opts: &tokenmill_extract::ExtractorConfig) -> Result<String> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&raw[..]), &mut out)
            .map_err(|e| Error::io(path, e))?;
        out
    } else {
        raw
    };
    let resp = tokenmill_ingest::http::decode_response(
        &[
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n".as_slice(),
            &bytes,
        ]
        .concat(),
    )
    .map_err(|e| Error::Unsupported(format!("{}: {e}", path.display())))?;
    match resp.payload {
        tokenmill_ingest::http::HttpPayload::Html { text, .. } => {
            Ok(tokenmill_extract::extract(&text, opts).text)
        }
        _ => Err(Error::Unsupported(format!(
            "{}: not an HTML page (binary content)",
            path.display()
        ))),
    }
}

/// The kept documents' file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeptFormat {
    /// `kept.jsonl`: one JSON object per line, `scores` and `columns` as nested objects.
    #[default]
    Jsonl,
    /// `kept.parquet`: `scores` and `columns` as JSON strings.
    Parquet,
}

/// One kept document.
struct KeptDoc {
    id: String,
    source: String,
    offset: u64,
    url: Option<String>,
    lang: Option<String>,
    lang_score: Option<f64>,
    text: String,
    scores: String,
    /// The recipe's derived columns (`[sql.columns]`), as a JSON object.
    columns: String,
}

/// Writes kept documents as JSONL or Parquet (temp file, renamed by `finish`).
enum KeptWriter {
    Jsonl(BufWriter<std::fs::File>),
    Parquet(Box<parquet::arrow::ArrowWriter<std::fs::File>>),
}

fn kept_schema() -> arrow::datatypes::SchemaRef {
    use arrow::datatypes::{DataType, Field, Schema};
    let mut fields = crate::stages::kept_fields();
    fields.push(Field::new("scores", DataType::Utf8, false));
    fields.push(Field::new("columns", DataType::Utf8, false));
    std::sync::Arc::new(Schema::new(fields))
}

impl KeptWriter {
    fn write(&mut self, docs: &[KeptDoc], path: &Path) -> Result<()> {
        match self {
            KeptWriter::Jsonl(w) => {
                for d in docs {
                    let line = serde_json::json!({
                        "id": d.id, "source": d.source, "offset": d.offset, "url": d.url,
                        "lang": d.lang, "lang_score": d.lang_score, "text": d.text,
                        "scores": serde_json::from_str::<serde_json::Value>(&d.scores)
                            .unwrap_or_default(),
                        "columns": serde_json::from_str::<serde_json::Value>(&d.columns)
                            .unwrap_or_default(),
                    });
                    writeln!(w, "{line}").map_err(|e| Error::io(path, e))?;
                }
            }
            KeptWriter::Parquet(w) => {
                use arrow::array::{ArrayRef, Float64Array, StringArray, UInt64Array};
                use std::sync::Arc;
                let s = |f: fn(&KeptDoc) -> Option<&str>| {
                    Arc::new(docs.iter().map(f).collect::<StringArray>()) as ArrayRef
                };
                let cols = vec![
                    s(|d| Some(&d.id)),
                    s(|d| Some(&d.source)),
                    Arc::new(docs.iter().map(|d| d.offset).collect::<UInt64Array>()) as ArrayRef,
                    s(|d| d.url.as_deref()),
                    s(|d| d.lang.as_deref()),
                    Arc::new(docs.iter().map(|d| d.lang_score).collect::<Float64Array>()),
                    s(|d| Some(&d.text)),
                    s(|d| Some(&d.scores)),
                    s(|d| Some(&d.columns)),
                ];
                let batch = arrow::array::RecordBatch::try_new(kept_schema(), cols)?;
                w.write(&batch).map_err(|e| Error::parquet(path, e))?;
            }
        }
        Ok(())
    }

    fn finish(self, path: &Path) -> Result<()> {
        match self {
            KeptWriter::Jsonl(mut w) => w.flush().map_err(|e| Error::io(path, e)),
            KeptWriter::Parquet(w) => w.close().map(|_| ()).map_err(|e| Error::parquet(path, e)),
        }
    }
}

/// Runs the stages of `cfg` over `inputs`, writing into `out` (kept documents as JSONL).
pub fn extract(cfg: &BuildConfig, inputs: &[PathBuf], out: &Path) -> Result<ExtractStats> {
    extract_as(cfg, inputs, out, KeptFormat::Jsonl)
}

/// Runs the stages of `cfg` over `inputs`, writing into `out`.
pub fn extract_as(
    cfg: &BuildConfig,
    inputs: &[PathBuf],
    out: &Path,
    format: KeptFormat,
) -> Result<ExtractStats> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut stages = Stages::new(&cfg.extract, cfg.filters.as_ref(), &cfg.sql)?;
    stages.keep_text = cfg.output.keep_excluded_text;
    let name = match format {
        KeptFormat::Jsonl => "kept.jsonl",
        KeptFormat::Parquet => "kept.parquet",
    };
    let kept_path = out.join(name);
    let tmp = out.join(format!("{name}.tmp"));
    let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut kept = match format {
        KeptFormat::Jsonl => KeptWriter::Jsonl(BufWriter::new(file)),
        KeptFormat::Parquet => KeptWriter::Parquet(Box::new(
            parquet::arrow::ArrowWriter::try_new(file, kept_schema(), None)
                .map_err(|e| Error::parquet(&tmp, e))?,
        )),
    };
    let mut st = ExtractStats::default();
    let mut read = ReadStats::default();
    for (task, input) in inputs.iter().enumerate() {
        crate::task::clear_task_outputs(out, task)?;
        let mut drops =
            crate::excluded::DropWriter::create(out, task, cfg.output.keep_excluded_text)?;
        let mut reader = DocumentReader::open(input, &cfg.input.read)?;
        while let Some(batch) = reader.next() {
            let batch = batch?;
            drops.push_skips(reader.take_skips())?;
            let cols = crate::stages::DocColumns::of(&batch);
            let rows = stages.run_rows(
                &cols,
                0..batch.num_rows(),
                &mut st.funnel,
                &mut drops,
                |_| st.documents_dropped += 1,
            )?;
            let derived = stages.derive(&rows)?;
            st.documents_kept += rows.len() as u64;
            let docs: Vec<KeptDoc> = rows
                .iter()
                .zip(derived)
                .map(|(k, columns)| {
                    let scores: serde_json::Map<String, serde_json::Value> = stages
                        .scores(&k.kept.text)
                        .into_iter()
                        .map(|(n, v)| (n, serde_json::json!(v)))
                        .collect();
                    let (lang, lang_score) = k.lang(&cols);
                    KeptDoc {
                        id: k.meta.id.to_string(),
                        source: k.meta.source.to_string(),
                        offset: k.meta.offset,
                        url: k.meta.url.map(str::to_string),
                        lang,
                        lang_score,
                        text: k.kept.text.to_string(),
                        scores: serde_json::Value::Object(scores).to_string(),
                        columns: serde_json::Value::Object(columns).to_string(),
                    }
                })
                .collect();
            kept.write(&docs, &tmp)?;
        }
        drops.push_skips(reader.take_skips())?;
        drops.finish()?;
        read.merge(reader.stats());
    }
    kept.finish(&tmp)?;
    std::fs::rename(&tmp, &kept_path).map_err(|e| Error::io(&kept_path, e))?;
    st.documents_read = read.read();
    st.reader_skips = read.skipped.by_reason.values().sum();
    st.seconds = started.elapsed().as_secs_f64();
    st.documents_per_s = st.documents_read as f64 / st.seconds;
    let json = serde_json::to_vec_pretty(&st).expect("serialises");
    tokenmill_shards::atomic_write(&out.join("stats.json"), &json)?;
    Ok(st)
}
