//! `tokenmill build INPUT... --tokenizer T --out DIR`: read → stages → [dedup] → tokenize →
//! shard, one resumable task per input file.

use std::path::PathBuf;

use anyhow::Context;
use clap::ValueEnum;
use tokenmill_ingest::{Format, OnError, TextMode};
use tokenmill_pipelines::config::{BuildConfig, DEFAULT_SHARD_BYTES};

/// The tokenizer stage's encoder.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum EngineArg {
    /// The fast byte-level BPE encoder when the tokenizer.json is of its form, else HF.
    Auto,
    /// HF `tokenizers`.
    Hf,
    /// The fast encoder (an error when the tokenizer.json is not of its form).
    Fast,
}

/// What to do with a bad record.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum OnErrorArg {
    /// Count it, record it and go on.
    Skip,
    /// Stop with an error naming the file, record and offset.
    Fail,
}

/// An input format.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum FormatArg {
    /// WARC/WET/WAT, plain or gzip.
    Warc,
    /// JSON lines, plain, gzip or zstd.
    Jsonl,
    /// Parquet.
    Parquet,
    /// Plain text.
    Text,
}

/// How plain text is cut into documents.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum TextModeArg {
    /// One document per file.
    File,
    /// One document per blank-line-separated block.
    Blocks,
}

/// `tokenmill build`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Input files or globs (added to the config's).
    pub inputs: Vec<String>,
    /// A listing of inputs, one per line, local or remote, plain or .gz (Common Crawl's
    /// `warc.paths.gz`).
    #[arg(long)]
    pub paths_file: Option<String>,
    /// The prefix of the listing's relative lines (e.g. `s3://commoncrawl/` or
    /// `https://data.commoncrawl.org/`).
    #[arg(long, requires = "paths_file")]
    pub paths_base: Option<String>,
    /// A pipeline.toml; flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// tokenizer.json or tokenizer.json.gz.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Output dataset directory, or an `s3://bucket/prefix` URL: built in a local stage
    /// (`--stage`), then uploaded with the manifest last.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// With `--out s3://…`: the local directory the build writes before uploading (default:
    /// `<temp dir>/tokenmill-stage-<hash of the URL>`); a rerun resumes build and upload.
    #[arg(long)]
    pub stage: Option<PathBuf>,
    /// EOS token appended to every document (default: the vocabulary's own).
    #[arg(long)]
    pub eos: Option<String>,
    /// Do not append an EOS token.
    #[arg(long)]
    pub no_eos: bool,
    /// The encoder (all give the same ids).
    #[arg(long, value_enum)]
    pub tokenizer_engine: Option<EngineArg>,
    /// What to do with bad records.
    #[arg(long, value_enum)]
    pub on_error: Option<OnErrorArg>,
    /// Force the input format.
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Plain text: one document per file or per blank-line-separated block.
    #[arg(long, value_enum)]
    pub text_mode: Option<TextModeArg>,
    /// JSONL/Parquet text field.
    #[arg(long)]
    pub text_field: Option<String>,
    /// JSONL id field.
    #[arg(long)]
    pub id_field: Option<String>,
    /// Target bytes of token data per shard.
    #[arg(long)]
    pub shard_bytes: Option<u64>,
    /// Worker threads (0 = all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar; only warnings and errors on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Exact + MinHash LSH dedup between reading and tokenizing (defaults; `[dedup]` in the
    /// config for settings).
    #[arg(long)]
    pub dedup: bool,
    /// Print stats as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Where the tasks run: here (`local`), or as Slurm jobs (`slurm`: a dedup job, job arrays
    /// of tasks, a finalize job; the same dataset byte for byte).
    #[arg(long, value_enum, default_value = "local")]
    pub executor: ExecutorArg,
    /// Slurm: the partition.
    #[arg(long)]
    pub partition: Option<String>,
    /// Slurm: build tasks (input files) per array element.
    #[arg(long, default_value_t = 1)]
    pub tasks_per_job: usize,
    /// Slurm: CPUs (threads) per job.
    #[arg(long, default_value_t = 1)]
    pub cpus_per_task: usize,
    /// Slurm: memory per job (`--mem`, e.g. 4G).
    #[arg(long)]
    pub mem: Option<String>,
    /// Slurm: time limit per job (`--time`, e.g. 2:00:00).
    #[arg(long)]
    pub time: Option<String>,
    /// Slurm: the cluster's MaxArraySize (array indices stay below it).
    #[arg(long, default_value_t = 1001)]
    pub max_array_size: usize,
    /// Slurm: follow the jobs until the build is finished or has failed.
    #[arg(long)]
    pub wait: bool,
    /// Slurm: write the scripts under OUT/.build/slurm without submitting them.
    #[arg(long)]
    pub dry_run: bool,
}

/// Where a build's tasks run.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorArg {
    /// In this process, on its thread pool.
    Local,
    /// As Slurm jobs (`sbatch`).
    Slurm,
}

/// The build configuration: the config file's, with the flags over it.
pub fn config(a: Args) -> anyhow::Result<(BuildConfig, bool)> {
    let (cfg, json, _) = config_and_executor(a)?;
    Ok((cfg, json))
}

/// The Slurm executor's settings of the flags.
#[derive(Debug)]
pub struct Executor {
    /// `--executor`.
    pub kind: ExecutorArg,
    /// The sbatch settings.
    pub slurm: tokenmill_pipelines::slurm::SlurmOptions,
    /// `--wait`.
    pub wait: bool,
    /// `--dry-run`.
    pub dry_run: bool,
}

fn config_and_executor(a: Args) -> anyhow::Result<(BuildConfig, bool, Executor)> {
    let ex = Executor {
        kind: a.executor,
        slurm: tokenmill_pipelines::slurm::SlurmOptions {
            partition: a.partition.clone(),
            tasks_per_job: a.tasks_per_job,
            cpus_per_task: a.cpus_per_task,
            mem: a.mem.clone(),
            time: a.time.clone(),
            max_array_size: a.max_array_size,
            extra: Vec::new(),
        },
        wait: a.wait,
        dry_run: a.dry_run,
    };
    let mut cfg = match &a.config {
        Some(p) => BuildConfig::from_file(p)?,
        None => BuildConfig::default(),
    };
    if cfg.output.shard_bytes == 0 {
        cfg.output.shard_bytes = DEFAULT_SHARD_BYTES;
    }
    cfg.input.paths.extend(a.inputs);
    if let Some(f) = a.paths_file {
        cfg.input.paths_file = Some(f);
    }
    if let Some(b) = a.paths_base {
        cfg.input.paths_base = Some(b);
    }
    if let Some(t) = a.tokenizer {
        cfg.tokenizer.path = t;
    }
    if let Some(o) = a.out {
        cfg.output.dir = o;
    }
    if let Some(s) = a.stage {
        cfg.output.stage = Some(s);
    }
    if let Some(e) = a.eos {
        cfg.tokenizer.eos = Some(e);
    }
    if a.no_eos {
        cfg.tokenizer.append_eos = false;
    }
    if let Some(e) = a.tokenizer_engine {
        cfg.tokenizer.engine = match e {
            EngineArg::Auto => tokenmill_shards::TokenizerEngine::Auto,
            EngineArg::Hf => tokenmill_shards::TokenizerEngine::Hf,
            EngineArg::Fast => tokenmill_shards::TokenizerEngine::Fast,
        };
    }
    if let Some(o) = a.on_error {
        cfg.input.read.on_error = match o {
            OnErrorArg::Skip => OnError::Skip,
            OnErrorArg::Fail => OnError::Fail,
        };
    }
    if let Some(f) = a.format {
        cfg.input.read.format = Some(match f {
            FormatArg::Warc => Format::Warc,
            FormatArg::Jsonl => Format::Jsonl,
            FormatArg::Parquet => Format::Parquet,
            FormatArg::Text => Format::Text,
        });
    }
    if let Some(m) = a.text_mode {
        cfg.input.read.text_mode = match m {
            TextModeArg::File => TextMode::File,
            TextModeArg::Blocks => TextMode::Blocks,
        };
    }
    if let Some(f) = a.text_field {
        cfg.input.read.jsonl.text = f.clone();
        cfg.input.read.parquet.text = f;
    }
    if let Some(f) = a.id_field {
        cfg.input.read.jsonl.id = vec![f.clone()];
        cfg.input.read.parquet.id = Some(f);
    }
    if let Some(b) = a.shard_bytes {
        cfg.output.shard_bytes = b;
    }
    if let Some(t) = a.threads {
        cfg.run.threads = t;
    }
    cfg.run.quiet |= a.quiet;
    cfg.dedup.enabled |= a.dedup;
    Ok((cfg, a.json, ex))
}

/// Runs `tokenmill build`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let (cfg, json, ex) = config_and_executor(a)?;
    if ex.kind == ExecutorArg::Slurm {
        return super::slurm_task::submit(&cfg, &ex.slurm, ex.wait, ex.dry_run);
    }
    let out = tokenmill_pipelines::build(&cfg)
        .with_context(|| format!("building {}", cfg.output.dir.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&out.stats)?);
    } else {
        println!(
            "built {} ({} shards)",
            cfg.output.dir.display(),
            out.manifest.shards.len()
        );
        print!("{}", out.stats.table());
        for s in out.stats.skip_samples.iter().take(5) {
            println!("  skipped: {s}");
        }
        if let Some(p) = &out.published {
            println!(
                "published {} from {}: {} files, {} uploaded ({:.1} MB), {} already there; manifest.json last",
                p.url,
                p.stage.display(),
                p.files,
                p.uploaded,
                p.bytes_uploaded as f64 / 1e6,
                p.kept
            );
        }
    }
    Ok(())
}
