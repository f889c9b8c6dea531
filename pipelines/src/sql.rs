//! `tokenmill sql DIR QUERY`: DataFusion over the Parquet files of a directory.

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::RecordBatch;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::error::{Error, Result};

/// Registers the Parquet files of `dir` as tables and runs `query`. A file `name.parquet` is the
/// table `name`; the per-shard provenance tables `*.prov.parquet` of a dataset are together the
/// table `provenance`, its dropped documents (`excluded/*.parquet`) the table `excluded`; in a
/// training run's directory, the files of its per-document loss table
/// (`losses/seq-*.parquet`) are the table `losses`; a dataset's funnel (`stats.json`) is the
/// table `funnel`.
pub fn query_dir(dir: &Path, query: &str) -> Result<Vec<RecordBatch>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io(dir, e))?;
    let mut tables: BTreeMap<String, String> = BTreeMap::new();
    let mut provenance = false;
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.ends_with(".prov.parquet") {
            provenance = true;
        } else if let Some(stem) = name.strip_suffix(".parquet") {
            tables.insert(stem.replace(['-', '.'], "_"), p.display().to_string());
        }
    }
    let ctx = SessionContext::new();
    // tokenmill's filters as functions (default thresholds): gopher_quality(text), lang(text), …
    crate::udf::register(&ctx, &tokenmill_filters::FiltersConfig::default())?;
    rt.block_on(async {
        for (t, p) in &tables {
            ctx.register_parquet(t, p, ParquetReadOptions::default())
                .await?;
        }
        let excluded = dir.join("excluded");
        if excluded.is_dir() && std::fs::read_dir(&excluded).is_ok_and(|mut d| d.next().is_some()) {
            ctx.register_parquet(
                "excluded",
                excluded.to_string_lossy().as_ref(),
                ParquetReadOptions::default(),
            )
            .await?;
        }
        // A dataset's funnel (stats.json) as the table `funnel`.
        if let Ok(bytes) = std::fs::read(dir.join("stats.json"))
            && let Ok(st) = serde_json::from_slice::<crate::stats::BuildStats>(&bytes)
            && !st.funnel.rows.is_empty()
        {
            use arrow::array::{StringArray, UInt64Array};
            let rows = &st.funnel.rows;
            let u = |f: fn(&crate::stages::FunnelRow) -> u64| {
                std::sync::Arc::new(rows.iter().map(f).collect::<UInt64Array>())
                    as arrow::array::ArrayRef
            };
            let batch = RecordBatch::try_from_iter(vec![
                (
                    "stage",
                    std::sync::Arc::new(
                        rows.iter()
                            .map(|r| Some(r.stage.as_str()))
                            .collect::<StringArray>(),
                    ) as arrow::array::ArrayRef,
                ),
                ("docs_in", u(|r| r.docs_in)),
                ("docs_out", u(|r| r.docs_out)),
                ("bytes_in", u(|r| r.bytes_in)),
                ("bytes_out", u(|r| r.bytes_out)),
            ])?;
            ctx.register_batch("funnel", batch)?;
        }
        let losses = dir.join("losses");
        if losses.is_dir() {
            ctx.register_parquet(
                "losses",
                losses.to_string_lossy().as_ref(),
                ParquetReadOptions::default(),
            )
            .await?;
        }
        if provenance {
            let opts = ParquetReadOptions {
                file_extension: ".prov.parquet",
                ..Default::default()
            };
            ctx.register_parquet("provenance", dir.to_string_lossy().as_ref(), opts)
                .await?;
        }
        ctx.sql(query).await?.collect().await
    })
    .map_err(Error::from)
}
