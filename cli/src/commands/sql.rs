//! `tokenmill sql DIR "SELECT …"`: DataFusion over a directory's Parquet files.

use std::path::PathBuf;

/// `tokenmill sql`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Tables (those DIR has):
  <stem>       every <stem>.parquet in DIR, `-` and `.` as `_`: kept, removed, clusters
               (tokenmill dedup); dedup_removed, dedup_clusters (a dataset built with dedup)
  provenance   a dataset's documents: shard, index, id, source, offset, url, tokens,
               token_start, text_xxh3, lang, lang_score; in a run directory, those of the
               dataset it trained on
  shards       the manifest's shards: ordinal, name, documents, tokens
  excluded     a build's dropped documents: id, source, offset, url, stage, rule, value,
               threshold, text
  funnel       a build's funnel: stage, docs_in, docs_out, bytes_in, bytes_out
  losses       a training run's per-document losses: seq, step, sample, span, shard, doc,
               doc_offset, tokens, targets, loss, peak_token, peak_loss, sample_loss, id
  loss_rows    the same as stored, without id

Functions (tokenmill's filters, default thresholds):
  gopher_quality(text), gopher_repetition(text), c4_quality(text), fineweb_quality(text)
               whether the text passes the filter
  drop_reason(text)      the first failing filter/rule, or NULL
  lang(text), lang_score(text)  the detected language and its confidence
  word_count(text)       words, as the filters count them

Example, over a run:
  tokenmill sql RUN \"SELECT l.id, p.url, avg(l.loss) AS loss FROM losses l
    JOIN provenance p ON p.id = l.id WHERE l.targets > 0
    GROUP BY 1, 2 ORDER BY loss DESC LIMIT 5\"")]
pub struct Args {
    /// The directory whose tables to query: a `tokenmill dedup` output, a dataset, or a
    /// training run.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The SQL query (DataFusion's dialect; quote it for the shell).
    #[arg(value_name = "QUERY")]
    pub query: String,
    /// One JSON object per row instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `tokenmill sql`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let batches = tokenmill_pipelines::sql::query_dir(&a.dir, &a.query)?;
    if a.json {
        let mut w = arrow::json::LineDelimitedWriter::new(std::io::stdout().lock());
        for b in &batches {
            w.write(b)?;
        }
        w.finish()?;
    } else {
        println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
    }
    Ok(())
}
