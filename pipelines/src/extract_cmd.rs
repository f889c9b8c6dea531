//! `tokenmill extract INPUT... --out DIR`: the pipeline up to, not including, tokenization —
//! what a recipe keeps, before compute is spent on it. Writes the kept documents (id, source,
//! offset, url, lang, text) as `DIR/kept.jsonl`, the dropped ones as `DIR/excluded/*.parquet`
//! (stage, rule, value, threshold), and the funnel as `DIR/stats.json`. A single `.html` file
//! is extracted and its text printed.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::UInt64Type;
use serde::Serialize;
use tokenmill_ingest::{DocumentReader, ReadStats};

use crate::config::BuildConfig;
use crate::error::{Error, Result};
use crate::stages::{DocIn, Funnel, Stages};

/// What `extract` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExtractStats {
    pub documents_read: u64,
    pub documents_kept: u64,
    pub documents_dropped: u64,
    pub reader_skips: u64,
    pub funnel: Funnel,
    pub seconds: f64,
    pub documents_per_s: f64,
}

/// Extracts the text of one HTML file (gzip allowed): the page's charset from a BOM or
/// `<meta>`, else UTF-8 if valid, else detected.
pub fn extract_html_file(path: &Path, opts: &tokenmill_extract::Options) -> Result<String> {
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

/// Runs the stages of `cfg` over `inputs`, writing into `out`.
pub fn extract(cfg: &BuildConfig, inputs: &[PathBuf], out: &Path) -> Result<ExtractStats> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut stages = Stages::new(&cfg.extract, cfg.filters.as_ref(), &cfg.sql)?;
    stages.keep_text = cfg.output.keep_excluded_text;
    let kept_path = out.join("kept.jsonl");
    let tmp = out.join("kept.jsonl.tmp");
    let mut kept = BufWriter::new(std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?);
    let mut st = ExtractStats::default();
    let mut read = ReadStats::default();
    for (task, input) in inputs.iter().enumerate() {
        crate::task::clear_task_outputs(out, task)?;
        let mut drops =
            crate::excluded::DropWriter::create(out, task, cfg.output.keep_excluded_text)?;
        let mut reader = DocumentReader::open(input, &cfg.input.read)?;
        for batch in reader.by_ref() {
            let batch = batch?;
            let s = |n: &str| {
                batch
                    .column_by_name(n)
                    .expect("document schema")
                    .as_string::<i32>()
                    .clone()
            };
            let (id, source, url, text, html, lang) = (
                s("id"),
                s("source"),
                s("url"),
                s("text"),
                s("html"),
                s("lang"),
            );
            let offset = batch
                .column_by_name("offset")
                .expect("document schema")
                .as_primitive::<UInt64Type>()
                .clone();
            fn opt(a: &arrow::array::StringArray, r: usize) -> Option<&str> {
                a.is_valid(r).then(|| a.value(r))
            }
            let (mut kept_docs, mut metas, mut langs) = (Vec::new(), Vec::new(), Vec::new());
            for r in 0..batch.num_rows() {
                let doc = DocIn {
                    url: opt(&url, r),
                    text: opt(&text, r),
                    html: opt(&html, r),
                };
                let m = crate::stages::RowMeta {
                    id: id.value(r),
                    source: source.value(r),
                    offset: offset.value(r),
                    url: opt(&url, r),
                };
                match stages.run(doc, &mut st.funnel) {
                    Ok(k) => {
                        kept_docs.push(k);
                        metas.push(m);
                        langs.push(opt(&lang, r));
                    }
                    Err(why) => {
                        st.documents_dropped += 1;
                        drops.push(
                            m.dropped(why.text.as_deref().or(doc.text).or(doc.html)),
                            &why,
                        )?;
                    }
                }
            }
            let pass = stages.apply_sql(&metas, &kept_docs, &mut st.funnel)?;
            for (((k, m), input_lang), ok) in kept_docs.iter().zip(&metas).zip(&langs).zip(pass) {
                if !ok {
                    st.documents_dropped += 1;
                    drops.push(m.dropped(Some(&k.text)), &crate::stages::sql_dropped())?;
                    continue;
                }
                st.documents_kept += 1;
                let line = serde_json::json!({
                    "id": m.id,
                    "source": m.source,
                    "offset": m.offset,
                    "url": m.url,
                    "lang": k.lang.as_ref().map(|l| l.0.as_str()).or(*input_lang),
                    "lang_score": k.lang.as_ref().map(|l| l.1),
                    "text": k.text,
                });
                writeln!(kept, "{line}").map_err(|e| Error::io(&tmp, e))?;
            }
        }
        drops.finish()?;
        read.merge(reader.stats());
    }
    kept.flush().map_err(|e| Error::io(&tmp, e))?;
    drop(kept);
    std::fs::rename(&tmp, &kept_path).map_err(|e| Error::io(&kept_path, e))?;
    st.documents_read = read.read();
    st.reader_skips = read.skipped.by_reason.values().sum();
    st.seconds = started.elapsed().as_secs_f64();
    st.documents_per_s = st.documents_read as f64 / st.seconds;
    let json = serde_json::to_vec_pretty(&st).expect("serialises");
    tokenmill_shards::atomic_write(&out.join("stats.json"), &json)?;
    Ok(st)
}
