//! `tokenmill sql DIR QUERY`: DataFusion over the Parquet files of a directory — a dedup
//! output, a dataset, or a training run — with tokenmill's filters as functions.
//!
//! | table | where from |
//! |---|---|
//! | `<stem>` | every `<stem>.parquet` in DIR (`kept`, `removed`, `clusters`, `dedup_removed`, `dedup_clusters`, …; `-` and `.` become `_`) |
//! | `provenance` | a dataset's per-shard `*.prov.parquet` (shard, index, id, source, offset, url, tokens, …); in a run directory, those of the dataset it trained on |
//! | `shards` | the manifest's shards: `ordinal` (as `losses.shard` counts them), `name` (as `provenance.shard` names them), documents, tokens |
//! | `excluded` | a build's dropped documents, `excluded/*.parquet` (id, source, offset, url, stage, rule, value, threshold) |
//! | `funnel` | a build's funnel from `stats.json` (stage, docs and bytes in and out) |
//! | `losses` | a run's per-document loss table, `losses/*.parquet`, with the document's `id` |
//! | `loss_rows` | the same rows as stored, without the id |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt32Array, UInt64Array};
use datafusion::error::DataFusionError;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::error::{Error, Result};

/// The dataset a training run in `dir` trained on (its `run.json`), `None` when `dir` is no
/// run.
fn run_dataset(dir: &Path) -> Result<Option<PathBuf>> {
    let path = dir.join("run.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    let train = v["config"]["data"]["train"]
        .as_str()
        .ok_or_else(|| Error::Config(format!("{}: no config.data.train", path.display())))?;
    Ok(Some(PathBuf::from(train)))
}

/// The manifest's shards as a table: ordinal, name, documents, tokens.
fn shards_batch(dataset: &Path) -> Result<RecordBatch> {
    let m = tokenmill_shards::Manifest::load(dataset)?;
    let s = &m.shards;
    Ok(RecordBatch::try_from_iter(vec![
        (
            "ordinal",
            Arc::new((0..s.len() as u32).collect::<UInt32Array>()) as ArrayRef,
        ),
        (
            "name",
            Arc::new(
                s.iter()
                    .map(|e| Some(e.name.as_str()))
                    .collect::<StringArray>(),
            ),
        ),
        (
            "documents",
            Arc::new(s.iter().map(|e| e.documents).collect::<UInt64Array>()),
        ),
        (
            "tokens",
            Arc::new(s.iter().map(|e| e.tokens).collect::<UInt64Array>()),
        ),
    ])?)
}

/// A build's funnel (`stats.json`) as a table, if it has one.
fn funnel_batch(dir: &Path) -> Result<Option<RecordBatch>> {
    let Ok(bytes) = std::fs::read(dir.join("stats.json")) else {
        return Ok(None);
    };
    let Ok(st) = serde_json::from_slice::<crate::stats::BuildStats>(&bytes) else {
        return Ok(None);
    };
    let rows = &st.funnel.rows;
    if rows.is_empty() {
        return Ok(None);
    }
    let u = |f: fn(&crate::stages::FunnelRow) -> u64| {
        Arc::new(rows.iter().map(f).collect::<UInt64Array>()) as ArrayRef
    };
    Ok(Some(RecordBatch::try_from_iter(vec![
        (
            "stage",
            Arc::new(
                rows.iter()
                    .map(|r| Some(r.stage.as_str()))
                    .collect::<StringArray>(),
            ) as ArrayRef,
        ),
        ("docs_in", u(|r| r.docs_in)),
        ("docs_out", u(|r| r.docs_out)),
        ("bytes_in", u(|r| r.bytes_in)),
        ("bytes_out", u(|r| r.bytes_out)),
    ])?))
}

fn has_files(dir: &Path) -> bool {
    dir.is_dir() && std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

fn has_provenance(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".prov.parquet"))
    })
}

/// The Parquet files under `dir` ending with `ext` (one level).
fn parquet_files(dir: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(ext))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Reads each file's Parquet footer, so that a damaged file (cut short, overwritten) is named
/// before the query engine meets it (its own error names no file).
fn check_footers(files: &[std::path::PathBuf]) -> Result<()> {
    for f in files {
        let file = std::fs::File::open(f).map_err(|e| Error::io(f, e))?;
        let read = std::panic::catch_unwind(|| {
            parquet::file::reader::SerializedFileReader::new(file).map(|_| ())
        });
        match read {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(Error::Config(format!(
                    "{}: not a readable Parquet file ({e}); it was damaged after it was written",
                    f.display()
                )));
            }
            Err(_) => {
                return Err(Error::Config(format!(
                    "{}: not a readable Parquet file (its footer crashed the decoder)",
                    f.display()
                )));
            }
        }
    }
    Ok(())
}

/// Registers the tables of `dir` (see the module's table) and runs `query`.
pub fn query_dir(dir: &Path, query: &str) -> Result<Vec<RecordBatch>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io(dir, e))?;
    let mut tables: BTreeMap<String, String> = BTreeMap::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.ends_with(".prov.parquet") {
            continue;
        }
        if let Some(stem) = name.strip_suffix(".parquet") {
            tables.insert(stem.replace(['-', '.'], "_"), p.display().to_string());
        }
    }
    // A run's dataset gives it `provenance` and `shards`; a dataset gives its own.
    let dataset = match run_dataset(dir)? {
        Some(d) => Some(d),
        None => dir
            .join("manifest.json")
            .is_file()
            .then(|| dir.to_path_buf()),
    };
    let mut files: Vec<std::path::PathBuf> =
        tables.values().map(std::path::PathBuf::from).collect();
    files.extend(parquet_files(&dir.join("excluded"), ".parquet"));
    files.extend(parquet_files(&dir.join("losses"), ".parquet"));
    if let Some(d) = &dataset {
        files.extend(parquet_files(d, ".prov.parquet"));
    }
    check_footers(&files)?;
    let ctx = SessionContext::new();
    // tokenmill's filters as functions (default thresholds): gopher_quality(text), lang(text), …
    crate::udf::register(&ctx, &tokenmill_filters::FiltersConfig::default())?;
    if let Some(d) = &dataset {
        ctx.register_batch("shards", shards_batch(d)?)?;
    }
    if let Some(b) = funnel_batch(dir)? {
        ctx.register_batch("funnel", b)?;
    }
    let run = rt.block_on(async {
        for (t, p) in &tables {
            ctx.register_parquet(t, p, ParquetReadOptions::default())
                .await?;
        }
        let excluded = dir.join("excluded");
        if has_files(&excluded) {
            ctx.register_parquet(
                "excluded",
                excluded.to_string_lossy().as_ref(),
                ParquetReadOptions::default(),
            )
            .await?;
        }
        if let Some(d) = dataset.as_ref().filter(|d| has_provenance(d)) {
            let opts = ParquetReadOptions {
                file_extension: ".prov.parquet",
                ..Default::default()
            };
            ctx.register_parquet("provenance", d.to_string_lossy().as_ref(), opts)
                .await?;
        }
        let losses = dir.join("losses");
        if has_files(&losses) {
            ctx.register_parquet(
                "loss_rows",
                losses.to_string_lossy().as_ref(),
                ParquetReadOptions::default(),
            )
            .await?;
            let with_id = ctx.table_exist("provenance")? && ctx.table_exist("shards")?;
            let view = if with_id {
                "CREATE VIEW losses AS SELECT l.*, p.id FROM loss_rows l \
                 JOIN shards s ON l.shard = s.ordinal \
                 JOIN provenance p ON p.shard = s.name AND p.\"index\" = l.doc"
            } else {
                // the run's dataset is gone: the rows as stored
                "CREATE VIEW losses AS SELECT * FROM loss_rows"
            };
            ctx.sql(view).await?.collect().await?;
        }
        let run = async { ctx.sql(query).await?.collect().await };
        Ok::<_, DataFusionError>(run.await)
    })?;
    run.map_err(|e| explain(&e, &table_names(&ctx), dir))
}

/// The tables registered in `ctx`, sorted.
fn table_names(ctx: &SessionContext) -> Vec<String> {
    let mut names: Vec<String> = ctx
        .catalog("datafusion")
        .and_then(|c| c.schema("public"))
        .map(|s| s.table_names())
        .unwrap_or_default();
    names.sort();
    names
}

/// A failed query said once, in a person's terms: the parser's message without Rust's debug
/// form, an unknown table with the tables `dir` has, an unknown column with the columns.
pub(crate) fn explain(e: &DataFusionError, tables: &[String], dir: &Path) -> Error {
    let root = e.find_root();
    let msg = match root {
        DataFusionError::SQL(p, _) => format!(
            "SQL syntax: {}",
            p.to_string().trim_start_matches("sql parser error: ")
        ),
        DataFusionError::Plan(m) if m.starts_with("table '") && m.ends_with("' not found") => {
            let name = &m["table '".len()..m.len() - "' not found".len()];
            let name = name.rsplit('.').next().unwrap_or(name);
            format!(
                "no table `{name}` in {}; its tables: {}",
                dir.display(),
                if tables.is_empty() {
                    "none (no Parquet file, dataset or run there)".to_string()
                } else {
                    tables.join(", ")
                }
            )
        }
        other => other.strip_backtrace().replace('\n', " "),
    };
    Error::Sql(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(dir: &Path, q: &str) -> String {
        query_dir(dir, q).unwrap_err().to_string()
    }

    #[test]
    fn query_errors_are_said_once_in_a_persons_terms() {
        let dir = tempfile::tempdir().unwrap();
        let b = RecordBatch::try_from_iter(vec![(
            "id",
            Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef,
        )])
        .unwrap();
        let f = std::fs::File::create(dir.path().join("kept.parquet")).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(f, b.schema(), None).unwrap();
        w.write(&b).unwrap();
        w.close().unwrap();
        let rows: usize = query_dir(dir.path(), "SELECT id FROM kept")
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 2);

        let e = err(dir.path(), "SELEC id FROM kept");
        assert!(e.starts_with("query: SQL syntax: Expected"), "{e}");
        assert!(
            !e.contains("ParserError") && e.matches("Expected").count() == 1,
            "{e}"
        );

        let e = err(dir.path(), "SELECT * FROM nope");
        assert!(
            e.contains("no table `nope`") && e.contains("its tables: kept"),
            "{e}"
        );

        let e = err(dir.path(), "SELECT nope FROM kept");
        assert_eq!(e.matches("nope").count(), 1, "{e}");
        assert_eq!(e.matches("kept.id").count(), 1, "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}
