//! `tokenmill extract INPUT... --out DIR`: the build's stages without tokenizing; a single
//! `.html` file without `--out`: its extracted text.

use std::path::PathBuf;

use anyhow::bail;
use clap::ValueEnum;
use tokenmill_pipelines::config::BuildConfig;
use tokenmill_pipelines::extract::{KeptFormat, extract_as, extract_html_file};

/// The kept documents' file format.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum FormatArg {
    /// `kept.jsonl`.
    Jsonl,
    /// `kept.parquet`.
    Parquet,
}

/// `tokenmill extract`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Input files or globs (WARC, JSONL, Parquet, text), or one .html file.
    pub inputs: Vec<String>,
    /// Output directory (kept.jsonl, excluded/, stats.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A pipeline.toml: its [input], [extract] and [filters] sections apply.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Drop very short blocks (extraction).
    #[arg(long)]
    pub favor_precision: bool,
    /// Keep the readers' comments after the article (as trafilatura does by default).
    #[arg(long)]
    pub include_comments: bool,
    /// kept.jsonl (default) or kept.parquet.
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: FormatArg,
    /// Print the run's counts as JSON (stats.json's content) instead of the table.
    #[arg(long)]
    pub json: bool,
}

fn is_html_file(path: &str) -> bool {
    let p = path.to_ascii_lowercase();
    [".html", ".htm", ".html.gz", ".htm.gz"]
        .iter()
        .any(|e| p.ends_with(e))
}

/// Runs `tokenmill extract`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let mut cfg = match &a.config {
        Some(p) => BuildConfig::from_file(p)?,
        None => BuildConfig::default(),
    };
    cfg.extract.options.favor_precision |= a.favor_precision;
    cfg.extract.options.include_comments |= a.include_comments;
    cfg.input.paths.extend(a.inputs);
    if cfg.input.paths.len() == 1 && is_html_file(&cfg.input.paths[0]) && a.out.is_none() {
        let p = PathBuf::from(&cfg.input.paths[0]);
        println!("{}", extract_html_file(&p, &cfg.extract.options)?);
        return Ok(());
    }
    let Some(out) = a.out else {
        bail!("extract needs --out DIR (or a single .html file to print)");
    };
    let inputs = cfg.input_files()?;
    let format = match a.format {
        FormatArg::Jsonl => KeptFormat::Jsonl,
        FormatArg::Parquet => KeptFormat::Parquet,
    };
    let st = extract_as(&cfg, &inputs, &out, format)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print!("{}", st.funnel.table());
        println!(
            "{} documents read, {} kept, {} dropped ({} unreadable records); {:.0} documents/s; {}",
            st.documents_read,
            st.documents_kept,
            st.documents_dropped,
            st.reader_skips,
            st.documents_per_s,
            out.display()
        );
    }
    Ok(())
}
