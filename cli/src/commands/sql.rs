//! `tokenmill sql DIR "SELECT …"`: DataFusion over a directory's Parquet files.

use std::path::PathBuf;

/// `tokenmill sql`.
#[derive(clap::Args, Debug)]
pub struct Args {
    pub dir: PathBuf,
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
