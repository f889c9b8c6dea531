//! The `tokenmill` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokenmill_ingest::{Format, OnError, TextMode};
use tokenmill_pipelines::config::{BuildConfig, DEFAULT_SHARD_BYTES};
use tokenmill_pipelines::{bench, inspect, loader_bench, quickstart};
use tokenmill_shards::bpe::{BpeTrainOptions, train_bpe};
use tokenmill_shards::loader::{LoaderConfig, Packing, Shuffle};

#[derive(Parser, Debug)]
#[command(
    name = "tokenmill",
    version,
    about = "Web dumps to deduplicated, tokenized, memory-mapped token shards with provenance"
)]
struct Cli {
    /// Log filter for stderr (e.g. `info`, `tokenmill_pipelines=debug`); also RUST_LOG.
    #[arg(long, global = true)]
    log: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Generate a web-like corpus, train a tokenizer, build, verify and inspect a dataset.
    Quickstart(QuickstartArgs),
    /// Read inputs, tokenize, and write Megatron-compatible shards with provenance.
    Build(BuildArgs),
    /// The pipeline up to tokenization: kept documents (JSONL) and dropped ones (Parquet, with
    /// stage and rule); a single .html file: its extracted text.
    Extract {
        /// Input files or globs (WARC, JSONL, Parquet, text), or one .html file.
        inputs: Vec<String>,
        /// Output directory (kept.jsonl, excluded/, stats.json).
        #[arg(long)]
        out: Option<PathBuf>,
        /// A pipeline.toml: its [input], [extract] and [filters] sections apply.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Drop very short blocks (extraction).
        #[arg(long)]
        favor_precision: bool,
        /// kept.jsonl (default) or kept.parquet.
        #[arg(long, default_value = "jsonl")]
        format: String,
        #[arg(long)]
        json: bool,
    },
    /// Show a dataset's manifest, or one document with its provenance and text.
    Inspect(InspectArgs),
    /// Recompute every checksum and re-validate every index of a dataset.
    Verify {
        dataset: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Exact and fuzzy (MinHash LSH) dedup of documents; writes kept/removed/clusters Parquet.
    Dedup(DedupArgs),
    /// SQL (DataFusion) over the Parquet files of a directory, each a table named by its file
    /// stem (`kept`, `removed`, `clusters`); a dataset's provenance tables as `provenance`, its
    /// dropped documents as `excluded`; a training run's loss table as `losses`.
    Sql {
        dir: PathBuf,
        query: String,
        /// One JSON object per row instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Tokenizer utilities.
    #[command(subcommand)]
    Tokenizer(TokenizerCmd),
    /// Benchmarks that print a table.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Train a DeepSeek-V3-architecture model on a dataset (`--config train.toml`).
    Train {
        #[arg(long)]
        config: PathBuf,
        /// Continue from the newest checkpoint in the run directory.
        #[arg(long)]
        resume: bool,
        #[arg(long)]
        quiet: bool,
    },
    /// The batch of a training step: samples by loss, their documents with source, offset, URL.
    Trace {
        run: PathBuf,
        #[arg(long, required_unless_present = "doc")]
        step: Option<u64>,
        /// Instead: every step a document was trained at, with its loss each time.
        #[arg(long, conflicts_with = "step")]
        doc: Option<String>,
        /// Samples (and top documents) shown.
        #[arg(long, default_value_t = 5)]
        top: usize,
        /// Which run of the step, when a rollback made the run go over it again (0 = first;
        /// default: the last).
        #[arg(long, conflicts_with = "doc")]
        attempt: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// A self-contained HTML report of a run: the loss curve with its spikes, the response to
    /// each, and per spike the documents that added most to the loss with their provenance.
    Report {
        run: PathBuf,
        /// Output page (default: RUN/report.html).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Documents per spike.
        #[arg(long, default_value_t = 5)]
        top: usize,
        /// Also print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Draw the loss curves of one or more runs (SVG).
    Plot {
        runs: Vec<PathBuf>,
        /// Output file (default: RUN/loss.svg of the first run).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Model configurations.
    #[command(subcommand)]
    Model(ModelCmd),
}

#[derive(Subcommand, Debug)]
enum ModelCmd {
    /// Parameter counts, FLOPs per token and memory of a preset or an HF config.json.
    Info {
        /// tiny, small, deepseek-v3, deepseek-v2-lite
        #[arg(long, conflicts_with = "config")]
        preset: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, default_value_t = 4096)]
        seq_len: u64,
    },
    /// Write a freshly initialised model in Hugging Face layout (config.json + safetensors).
    Init {
        #[arg(long, default_value = "tiny")]
        preset: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args, Debug)]
struct QuickstartArgs {
    /// Where to put the corpus, tokenizer and dataset.
    #[arg(long, default_value = "tokenmill-quickstart")]
    out: PathBuf,
    #[arg(long, default_value_t = 3000)]
    docs: usize,
    #[arg(long, default_value_t = 4)]
    files: usize,
    #[arg(long, default_value_t = 4096)]
    vocab_size: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[arg(long)]
    quiet: bool,
    /// Steps of the tiny model trained at the end (0 = no training).
    #[arg(long, default_value_t = 1000)]
    train_steps: u64,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum OnErrorArg {
    Skip,
    Fail,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum FormatArg {
    Warc,
    Jsonl,
    Parquet,
    Text,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum TextModeArg {
    File,
    Blocks,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum PackingArg {
    Windows,
    Documents,
}

impl From<PackingArg> for Packing {
    fn from(p: PackingArg) -> Self {
        match p {
            PackingArg::Windows => Packing::Windows,
            PackingArg::Documents => Packing::Documents,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum ShuffleArg {
    None,
    Full,
    Local,
}

#[derive(Args, Debug)]
struct BuildArgs {
    /// Input files or globs (added to the config's).
    inputs: Vec<String>,
    /// A pipeline.toml; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// tokenizer.json or tokenizer.json.gz.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Output dataset directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// EOS token appended to every document (default: the vocabulary's own).
    #[arg(long)]
    eos: Option<String>,
    /// Do not append an EOS token.
    #[arg(long)]
    no_eos: bool,
    /// What to do with bad records.
    #[arg(long, value_enum)]
    on_error: Option<OnErrorArg>,
    /// Force the input format.
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Plain text: one document per file or per blank-line-separated block.
    #[arg(long, value_enum)]
    text_mode: Option<TextModeArg>,
    /// JSONL/Parquet text field.
    #[arg(long)]
    text_field: Option<String>,
    /// JSONL id field.
    #[arg(long)]
    id_field: Option<String>,
    /// Target bytes of token data per shard.
    #[arg(long)]
    shard_bytes: Option<u64>,
    /// Worker threads (0 = all cores).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long)]
    quiet: bool,
    /// Exact + MinHash LSH dedup between reading and tokenizing (defaults; `[dedup]` in the
    /// config for settings).
    #[arg(long)]
    dedup: bool,
    /// Print stats as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum KeepArg {
    Earliest,
    Longest,
}

#[derive(Args, Debug)]
struct DedupArgs {
    /// Input files or globs (any reader: JSONL, Parquet, WET, text).
    inputs: Vec<String>,
    #[arg(long)]
    out: PathBuf,
    /// Skip exact dedup.
    #[arg(long)]
    no_exact: bool,
    /// Skip fuzzy (MinHash LSH) dedup.
    #[arg(long)]
    no_fuzzy: bool,
    /// Also remove documents whose normalised URL repeats.
    #[arg(long)]
    url: bool,
    #[arg(long, default_value_t = 5)]
    ngram: usize,
    /// Character n-grams instead of words.
    #[arg(long)]
    char_ngrams: bool,
    #[arg(long, default_value_t = 14)]
    bands: usize,
    #[arg(long, default_value_t = 8)]
    rows: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Keep a candidate pair only if its exact Jaccard is at least this.
    #[arg(long)]
    verify: Option<f64>,
    #[arg(long, value_enum, default_value = "earliest")]
    keep: KeepArg,
    /// Memory for bucket records before spilling to disk.
    #[arg(long, default_value_t = 256)]
    memory_mb: usize,
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Also write every LSH candidate pair (JSON lines {"a","b"}) for comparisons.
    #[arg(long)]
    pairs_out: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct InspectArgs {
    dataset: PathBuf,
    /// Show the document(s) with this id.
    #[arg(long, conflicts_with_all = ["shard", "token"])]
    doc: Option<String>,
    /// Shard ordinal (with --index).
    #[arg(long, requires = "index")]
    shard: Option<usize>,
    /// Document index in the shard.
    #[arg(long, requires = "shard")]
    index: Option<usize>,
    /// Show the document holding this global token position.
    #[arg(long)]
    token: Option<u64>,
    /// Show the documents of sample N of the loader's shuffled stream (with --seed, --epoch,
    /// --seq-len, --packing).
    #[arg(long, conflicts_with_all = ["doc", "shard", "token"])]
    sample: Option<u64>,
    #[arg(long, default_value_t = 1234)]
    seed: u64,
    #[arg(long, default_value_t = 0)]
    epoch: u64,
    #[arg(long, default_value_t = 2048)]
    seq_len: u64,
    #[arg(long, value_enum, default_value = "windows")]
    packing: PackingArg,
    /// Characters of text to print.
    #[arg(long, default_value_t = 2000)]
    max_chars: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum TokenizerCmd {
    /// Train a byte-level BPE tokenizer on input documents.
    Train {
        inputs: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 32768)]
        vocab_size: usize,
        #[arg(long, default_value_t = 2)]
        min_frequency: u64,
        /// Special tokens (the first is the EOS); default `<|endoftext|>`.
        #[arg(long = "special")]
        special: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCmd {
    /// Tokenizer stage vs Python `tokenizers` encode_batch, same tokenizer, texts and threads.
    Tokenize {
        inputs: Vec<PathBuf>,
        #[arg(long)]
        tokenizer: PathBuf,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Python with `tokenizers` installed (default: .venv-peers/bin/python if present).
        #[arg(long)]
        python: Option<PathBuf>,
        #[arg(long, default_value = "tests/peers/bench_tokenize.py")]
        script: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// FP8 GEMM accumulation error vs K: limited-precision accumulator with and without
    /// promotion to FP32 every 128 elements (the DeepSeek-V3 report's observation).
    Fp8Gemm {
        #[arg(long, default_value_t = 8)]
        m: usize,
        #[arg(long, default_value_t = 8)]
        n: usize,
        #[arg(long, default_value_t = 14)]
        mantissa_bits: u32,
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "128,512,1024,2048,4096,8192"
        )]
        ks: Vec<usize>,
    },
    /// Training throughput and MFU of a preset vs transformers' DeepseekV3ForCausalLM (torch CPU).
    Train {
        #[arg(long, default_value = "small")]
        preset: String,
        #[arg(long, default_value_t = 4)]
        batch: usize,
        #[arg(long, default_value_t = 256)]
        seq: usize,
        #[arg(long, default_value_t = 5)]
        steps: usize,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Python with torch + transformers (default: .venv-peers/bin/python if present).
        #[arg(long)]
        python: Option<PathBuf>,
        /// Skip the PyTorch side.
        #[arg(long)]
        no_peer: bool,
        #[arg(long, default_value = "tests/peers/bench_torch_train.py")]
        script: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// The same training run in FP32, BF16 and FP8 GEMMs: loss parity and the curves overlaid.
    Precision {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        quiet: bool,
        #[arg(long)]
        json: bool,
    },
    /// f32 GEMM rate of the `gemm` crate (the fast matmul) vs the reference loop and this CPU's
    /// theoretical peak.
    Gemm {
        #[arg(long, value_delimiter = ',', default_value = "128,256,512,1024,2048")]
        sizes: Vec<usize>,
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// The loader: open time, memory, tokens/s on one core vs a raw copy of the same bytes.
    Loader {
        /// A dataset directory; or none, with --simulate-shards, for a sparse simulated one.
        #[arg(long)]
        dataset: Option<PathBuf>,
        /// Shards of a simulated sparse dataset (in a temporary directory).
        #[arg(long, default_value_t = 10_000)]
        simulate_shards: usize,
        /// Total tokens of the simulated dataset.
        #[arg(long, default_value_t = 14_800_000_000_000)]
        simulate_tokens: u64,
        #[arg(long, default_value_t = 4096)]
        seq_len: u64,
        #[arg(long, default_value_t = 8)]
        global_batch: u64,
        #[arg(long, default_value_t = 200)]
        batches: u64,
        #[arg(long, value_enum, default_value = "windows")]
        packing: PackingArg,
        #[arg(long, value_enum, default_value = "full")]
        shuffle: ShuffleArg,
        #[arg(long)]
        json: bool,
    },
}

/// 1234567 → "1,234,567".
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = cli
        .log
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| {
            // The quickstart prints its own account of what happened (spikes included).
            if matches!(cli.cmd, Cmd::Quickstart(_)) {
                "error".into()
            } else {
                "warn".into()
            }
        });
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Quickstart(a) => {
            quickstart::quickstart(&quickstart::QuickstartOptions {
                out: a.out,
                docs: a.docs,
                files: a.files,
                vocab_size: a.vocab_size,
                seed: a.seed,
                threads: a.threads,
                quiet: a.quiet,
                train_steps: a.train_steps,
            })?;
        }
        Cmd::Build(a) => cmd_build(a)?,
        Cmd::Extract {
            inputs,
            out,
            config,
            favor_precision,
            format,
            json,
        } => {
            let mut cfg = match &config {
                Some(p) => BuildConfig::from_file(p)?,
                None => BuildConfig::default(),
            };
            cfg.extract.options.favor_precision |= favor_precision;
            cfg.input.paths.extend(inputs);
            let single_html = cfg.input.paths.len() == 1
                && [".html", ".htm", ".html.gz", ".htm.gz"]
                    .iter()
                    .any(|e| cfg.input.paths[0].to_ascii_lowercase().ends_with(e));
            if single_html && out.is_none() {
                let p = PathBuf::from(&cfg.input.paths[0]);
                print!(
                    "{}",
                    tokenmill_pipelines::extract_cmd::extract_html_file(&p, &cfg.extract.options)?
                );
                println!();
                return Ok(());
            }
            let Some(out) = out else {
                bail!("extract needs --out DIR (or a single .html file to print)");
            };
            let inputs = cfg.input_files()?;
            let format = match format.as_str() {
                "jsonl" => tokenmill_pipelines::extract_cmd::KeptFormat::Jsonl,
                "parquet" => tokenmill_pipelines::extract_cmd::KeptFormat::Parquet,
                f => bail!("--format {f}: jsonl or parquet"),
            };
            let st = tokenmill_pipelines::extract_cmd::extract_as(&cfg, &inputs, &out, format)?;
            if json {
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
        }
        Cmd::Train {
            config,
            resume,
            quiet,
        } => {
            let cfg = tokenmill_pipelines::train_cmd::read_config(&config)?;
            let out = cfg.train.out.clone();
            let o = tokenmill_pipelines::train_cmd::train(cfg, resume, quiet)?;
            println!(
                "trained {} steps: last loss {:.4}, eval loss {}, {:.0} tokens/s; run in {}",
                o.steps,
                o.last_loss,
                o.eval_loss.map_or("-".into(), |l| format!("{l:.4}")),
                o.tokens_per_s,
                out.display()
            );
        }
        Cmd::Trace {
            run,
            step,
            doc,
            top,
            attempt,
            json,
        } => {
            if let Some(id) = doc {
                let (p, seen) = tokenmill_pipelines::trace::trace_doc(&run, &id)?;
                if json {
                    println!("{}", serde_json::json!({ "document": p, "steps": seen }));
                } else {
                    println!(
                        "{} ({} tokens) {} @ byte {} {}",
                        p.id,
                        p.tokens,
                        p.source,
                        p.offset,
                        p.url.as_deref().unwrap_or("")
                    );
                    println!("seen at {} steps:", seen.len());
                    for s in &seen {
                        println!(
                            "  step {:>6}  sample {:>3}  {:>5} tokens  loss {:.4}  (step loss {:.4}){}{}",
                            s.step,
                            s.sample,
                            s.tokens,
                            s.loss,
                            s.step_loss,
                            if s.spike { "  spike" } else { "" },
                            if s.superseded { "  [rolled back]" } else { "" }
                        );
                    }
                }
            } else {
                let t = tokenmill_pipelines::trace::trace_step(
                    &run,
                    step.expect("clap requires --step or --doc"),
                    attempt,
                    top,
                )?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&t)?);
                } else {
                    print!("{}", tokenmill_pipelines::trace::render(&t, top));
                }
            }
        }
        Cmd::Report {
            run,
            out,
            top,
            json,
        } => {
            let (rep, html) = tokenmill_pipelines::report::report(&run, top)?;
            let out = out.unwrap_or_else(|| run.join("report.html"));
            let tmp = out.with_extension("html.tmp");
            std::fs::write(&tmp, html).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &out).with_context(|| format!("writing {}", out.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rep)?);
            } else {
                println!(
                    "{} steps, {} spike(s), {} rollback(s), {} quarantined; wrote {}",
                    rep.steps,
                    rep.spikes.len(),
                    rep.rollbacks,
                    rep.quarantined,
                    out.display()
                );
            }
        }
        Cmd::Plot { runs, out } => {
            if runs.is_empty() {
                bail!("plot needs at least one run directory");
            }
            let mut logs = Vec::new();
            for r in &runs {
                let label = r.file_name().map_or_else(
                    || r.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                logs.push((label, tokenmill_pipelines::plot::read_log(r)?));
            }
            let out = out.unwrap_or_else(|| runs[0].join("loss.svg"));
            let svg = tokenmill_pipelines::plot::svg(&logs, "training loss");
            std::fs::write(&out, svg).with_context(|| format!("writing {}", out.display()))?;
            println!("wrote {}", out.display());
        }
        Cmd::Model(ModelCmd::Info {
            preset,
            config,
            seq_len,
        }) => {
            let cfg = match (preset, config) {
                (_, Some(c)) => tokenmill_trainer::hf::read_config(&c)?,
                (p, None) => {
                    tokenmill_trainer::ModelConfig::preset(p.as_deref().unwrap_or("tiny"))?
                }
            };
            let p = cfg.param_counts();
            let (per_param, per_tok) = tokenmill_pipelines::train_bench::memory_model(&cfg);
            println!("{:<34} {:>18}", "parameters (main model)", group(p.total));
            println!("{:<34} {:>18}", "activated per token", group(p.activated));
            println!("{:<34} {:>18}", "MTP modules", group(p.mtp));
            println!(
                "{:<34} {:>18.3e}",
                format!("train FLOPs/token (seq {seq_len})"),
                tokenmill_trainer::train::flops_per_token(&cfg, seq_len)
            );
            println!("{:<34} {:>18}", "state bytes/param (fp32+AdamW)", per_param);
            println!("{:<34} {:>18.0}", "saved activations bytes/token", per_tok);
        }
        Cmd::Model(ModelCmd::Init { preset, seed, out }) => {
            let m =
                tokenmill_trainer::Model::new(tokenmill_trainer::ModelConfig::preset(&preset)?)?;
            tokenmill_trainer::hf::save(&out, &m, &m.init::<f32>(seed))?;
            println!("wrote {} ({} parameters)", out.display(), m.layout.len());
        }
        Cmd::Dedup(a) => cmd_dedup(a)?,
        Cmd::Sql { dir, query, json } => {
            let batches = tokenmill_pipelines::sql::query_dir(&dir, &query)?;
            if json {
                let mut w = arrow::json::LineDelimitedWriter::new(std::io::stdout().lock());
                for b in &batches {
                    w.write(b)?;
                }
                w.finish()?;
            } else {
                println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
            }
        }
        Cmd::Inspect(a) => cmd_inspect(a)?,
        Cmd::Verify { dataset, json } => {
            let r = tokenmill_shards::verify(&dataset)
                .with_context(|| format!("verifying {}", dataset.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "OK: {} shards, {} documents, {} tokens, {} bytes hashed",
                    r.shards, r.documents, r.tokens, r.bytes_hashed
                );
            }
        }
        Cmd::Tokenizer(TokenizerCmd::Train {
            inputs,
            out,
            vocab_size,
            min_frequency,
            special,
        }) => {
            if inputs.is_empty() {
                bail!("give input files to train on");
            }
            let texts = bench::load_texts(&inputs)?;
            let mut opts = BpeTrainOptions {
                vocab_size,
                min_frequency,
                ..Default::default()
            };
            if !special.is_empty() {
                opts.special_tokens = special;
            }
            let n = train_bpe(texts.iter(), &opts, &out)?;
            println!(
                "trained a byte-level BPE of {n} tokens on {} documents → {}",
                texts.len(),
                out.display()
            );
        }
        Cmd::Bench(BenchCmd::Tokenize {
            inputs,
            tokenizer,
            threads,
            repeat,
            python,
            script,
            json,
        }) => {
            if inputs.is_empty() {
                bail!("give input files with the texts to tokenize");
            }
            let texts = bench::load_texts(&inputs)?;
            let mut rows = Vec::new();
            let python = python.or_else(|| {
                let p = PathBuf::from(".venv-peers/bin/python");
                p.exists().then_some(p)
            });
            match &python {
                Some(py) => rows.extend(bench::bench_python(
                    py, &script, &tokenizer, &texts, threads, repeat,
                )?),
                None => eprintln!(
                    "note: no Python with `tokenizers` (give --python); the peer column is missing"
                ),
            }
            rows.push(bench::bench_ours(&tokenizer, &texts, threads, repeat)?);
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", bench::table(&rows));
                let counts: Vec<u64> = rows.iter().map(|r| r.tokens).collect();
                println!(
                    "token counts equal across implementations: {}",
                    counts.windows(2).all(|w| w[0] == w[1])
                );
            }
        }
        Cmd::Bench(BenchCmd::Fp8Gemm {
            m,
            n,
            mantissa_bits,
            ks,
        }) => {
            use tokenmill_kernels::gemm::{Accumulator, fp8_gemm, reference_gemm, relative_error};
            use tokenmill_kernels::quant::{ScaleRounding, quantize};
            println!(
                "| K | {mantissa_bits}-bit accumulator, no promotion | promoted to FP32 every 128 | FP32 accumulator |\n|---|---|---|---|"
            );
            let mut s = 12345u64;
            let mut next = move || {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) + 0.01
            };
            for k in ks {
                let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
                let b: Vec<f32> = (0..k * n).map(|_| next()).collect();
                let qa = quantize(
                    &a,
                    m,
                    k,
                    1,
                    128,
                    tokenmill_kernels::Fp8Format::E4M3,
                    ScaleRounding::Exact,
                );
                let qb = quantize(
                    &b,
                    k,
                    n,
                    128,
                    128,
                    tokenmill_kernels::Fp8Format::E4M3,
                    ScaleRounding::Exact,
                );
                let r = reference_gemm(&qa, &qb);
                let e = |acc| relative_error(&fp8_gemm(&qa, &qb, acc), &r);
                println!(
                    "| {k} | {:.2e} | {:.2e} | {:.2e} |",
                    e(Accumulator {
                        mantissa_bits,
                        promote_every: None
                    }),
                    e(Accumulator {
                        mantissa_bits,
                        promote_every: Some(128)
                    }),
                    e(Accumulator {
                        mantissa_bits: 23,
                        promote_every: None
                    })
                );
            }
        }
        Cmd::Bench(BenchCmd::Train {
            preset,
            batch,
            seq,
            steps,
            threads,
            python,
            no_peer,
            script,
            json,
        }) => {
            let python = if no_peer {
                None
            } else {
                python.or_else(|| {
                    let p = PathBuf::from(".venv-peers/bin/python");
                    p.exists().then_some(p)
                })
            };
            let o = tokenmill_pipelines::train_bench::TrainBenchOptions {
                preset,
                batch,
                seq,
                steps,
                threads,
                python,
                script,
            };
            let (rows, peak) = tokenmill_pipelines::train_bench::bench_train(&o)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "gemm_peak_flops": peak, "rows": rows })
                );
            } else {
                print!(
                    "{}",
                    tokenmill_pipelines::train_bench::table(&o, &rows, peak)
                );
            }
        }
        Cmd::Bench(BenchCmd::Precision {
            config,
            quiet,
            json,
        }) => {
            let (rows, plot) =
                tokenmill_pipelines::precision_bench::bench_precision(&config, quiet)?;
            if json {
                println!("{}", serde_json::json!({ "rows": rows, "plot": plot }));
            } else {
                print!("{}", tokenmill_pipelines::precision_bench::table(&rows));
                println!("curves: {}", plot.display());
                let cfg = tokenmill_pipelines::train_cmd::read_config(&config)?;
                let tokens =
                    (cfg.data.micro_batch.unwrap_or(cfg.data.batch) * cfg.data.seq_len) as usize;
                print!(
                    "{}",
                    tokenmill_pipelines::precision_bench::memory_table(
                        &cfg.model.resolve()?,
                        tokens
                    )
                );
            }
        }
        Cmd::Bench(BenchCmd::Gemm { sizes, threads }) => {
            let py = PathBuf::from(".venv-peers/bin/python");
            print!(
                "{}",
                tokenmill_pipelines::gemm_bench::bench_gemm(
                    &sizes,
                    threads,
                    py.exists().then_some(py.as_path())
                )?
            );
        }
        Cmd::Bench(BenchCmd::Loader {
            dataset,
            simulate_shards,
            simulate_tokens,
            seq_len,
            global_batch,
            batches,
            packing,
            shuffle,
            json,
        }) => {
            let (dir, name) = match &dataset {
                Some(d) => (d.clone(), d.display().to_string()),
                None => {
                    let tmp =
                        std::env::temp_dir().join(format!("tokenmill-sim-{}", std::process::id()));
                    let per = simulate_tokens / simulate_shards as u64;
                    let docs = per.div_ceil(1 << 30).max(1);
                    tokenmill_shards::loader::simulate::write_sparse_dataset(
                        &tmp,
                        simulate_shards,
                        per,
                        docs,
                        tokenmill_shards::TokenDtype::Uint16,
                    )?;
                    (tmp, format!("simulated, sparse, {simulate_shards} shards"))
                }
            };
            let cfg = LoaderConfig {
                seq_len,
                global_batch,
                packing: packing.into(),
                shuffle: match shuffle {
                    ShuffleArg::None => Shuffle::None,
                    ShuffleArg::Full => Shuffle::Full,
                    ShuffleArg::Local => Shuffle::Local {
                        block: 256,
                        window: 16,
                    },
                },
                ..Default::default()
            };
            let r = loader_bench::bench_loader(&dir, cfg, batches);
            let dtype = tokenmill_shards::Dataset::open(&dir)
                .map(|d| d.manifest().dtype)
                .unwrap_or(tokenmill_shards::TokenDtype::Uint16);
            if dataset.is_none() {
                let _ = std::fs::remove_dir_all(&dir);
            }
            let r = r?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", loader_bench::table(&name, &r, dtype));
            }
        }
    }
    Ok(())
}

fn cmd_build(a: BuildArgs) -> anyhow::Result<()> {
    let mut cfg = match &a.config {
        Some(p) => BuildConfig::from_file(p)?,
        None => BuildConfig::default(),
    };
    if cfg.output.shard_bytes == 0 {
        cfg.output.shard_bytes = DEFAULT_SHARD_BYTES;
    }
    cfg.input.paths.extend(a.inputs);
    if let Some(t) = a.tokenizer {
        cfg.tokenizer.path = t;
    }
    if let Some(o) = a.out {
        cfg.output.dir = o;
    }
    if let Some(e) = a.eos {
        cfg.tokenizer.eos = Some(e);
    }
    if a.no_eos {
        cfg.tokenizer.append_eos = false;
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
    let out = tokenmill_pipelines::build(&cfg)
        .with_context(|| format!("building {}", cfg.output.dir.display()))?;
    if a.json {
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
    }
    Ok(())
}

fn cmd_inspect(a: InspectArgs) -> anyhow::Result<()> {
    let ds = inspect::open(&a.dataset)?;
    let views = if let Some(id) = &a.doc {
        let tok = inspect::dataset_tokenizer(&ds)?;
        inspect::by_id(&ds, &tok, id)?
    } else if let (Some(s), Some(i)) = (a.shard, a.index) {
        let tok = inspect::dataset_tokenizer(&ds)?;
        vec![inspect::by_position(&ds, &tok, s, i)?]
    } else if let Some(n) = a.sample {
        let tok = inspect::dataset_tokenizer(&ds)?;
        let cfg = LoaderConfig {
            seq_len: a.seq_len,
            global_batch: 1,
            seed: a.seed,
            packing: a.packing.into(),
            ..Default::default()
        };
        let (id, docs) = inspect::sample_docs(&ds, &tok, cfg, a.epoch, n)?;
        if a.json {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({ "sample_id": id, "documents": docs })
                )?
            );
        } else {
            println!(
                "sample {n} of epoch {} (seed {}, seq_len {}, {:?}) = stored sample {id}, {} document(s):",
                a.epoch,
                a.seed,
                a.seq_len,
                Packing::from(a.packing),
                docs.len()
            );
            for d in &docs {
                let p = &d.provenance;
                let snippet: String = d.text.chars().take(a.max_chars.min(300)).collect();
                println!(
                    "- tokens {}..{} of the sample: {} (shard {} doc {}, its tokens {}..{})\n  source {} offset {} url {}\n  {:?}",
                    d.span.start,
                    d.span.start + d.span.len,
                    p.id,
                    p.shard,
                    p.index,
                    d.span.doc_offset,
                    d.span.doc_offset + d.span.len as u64,
                    p.source,
                    p.offset,
                    p.url.as_deref().unwrap_or("-"),
                    snippet
                );
            }
        }
        return Ok(());
    } else if let Some(t) = a.token {
        let tok = inspect::dataset_tokenizer(&ds)?;
        vec![inspect::by_token(&ds, &tok, t)?]
    } else {
        if a.json {
            println!("{}", serde_json::to_string_pretty(ds.manifest())?);
        } else {
            print!("{}", inspect::summary(&ds));
        }
        return Ok(());
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&views)?);
    } else {
        for v in &views {
            print!("{}", inspect::render(v, a.max_chars));
        }
    }
    Ok(())
}

fn cmd_dedup(a: DedupArgs) -> anyhow::Result<()> {
    let cfg = tokenmill_dedup::DedupConfig {
        exact: !a.no_exact,
        fuzzy: !a.no_fuzzy,
        url: a.url,
        ngram: a.ngram,
        char_ngrams: a.char_ngrams,
        bands: a.bands,
        rows: a.rows,
        seed: a.seed,
        verify_threshold: a.verify,
        keep: match a.keep {
            KeepArg::Earliest => tokenmill_dedup::KeepRule::Earliest,
            KeepArg::Longest => tokenmill_dedup::KeepRule::Longest,
        },
        memory_budget_bytes: a.memory_mb << 20,
        ..Default::default()
    };
    let bc = BuildConfig {
        input: tokenmill_pipelines::config::InputConfig {
            paths: a.inputs,
            read: Default::default(),
        },
        tokenizer: tokenmill_pipelines::config::TokenizerConfig {
            path: "unused".into(),
            ..Default::default()
        },
        output: tokenmill_pipelines::config::OutputConfig {
            dir: a.out.clone(),
            shard_bytes: DEFAULT_SHARD_BYTES,
            keep_excluded_text: false,
        },
        ..Default::default()
    };
    let inputs = bc.resolve_inputs()?;
    let read = tokenmill_ingest::ReadOptions::default();
    let (_, r) =
        tokenmill_pipelines::dedup_cmd::dedup_files(&inputs, &read, &cfg, &a.out, a.threads)?;
    if let Some(p) = &a.pairs_out {
        let fps = tokenmill_pipelines::dedup_cmd::fingerprint_files(&inputs, &read, &cfg)?;
        let pairs = tokenmill_pipelines::dedup_cmd::all_candidate_pairs(&cfg, &fps);
        let mut out = String::new();
        for (x, y) in &pairs {
            out.push_str(&format!("{{\"a\": {x}, \"b\": {y}}}\n"));
        }
        std::fs::write(p, out).with_context(|| p.display().to_string())?;
        eprintln!("{} candidate pairs → {}", pairs.len(), p.display());
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        let d = &r.dedup;
        println!("dedup → {}", a.out.display());
        for (k, v) in [
            ("documents read", r.read.read()),
            ("documents deduplicated", d.documents),
            ("  empty (not deduplicated)", d.empty),
            ("  shorter than one n-gram", d.short),
            ("removed: exact", d.exact_removed),
            ("removed: url", d.url_removed),
            ("removed: fuzzy", d.fuzzy_removed),
            ("kept", r.kept),
            ("clusters", d.clusters),
            ("candidate pairs", d.candidate_pairs),
            ("rejected by verification", d.verified_rejected),
            ("bucket records", d.bucket_records),
            ("spilled bytes", d.spilled_bytes),
        ] {
            println!("  {k:<30} {v:>12}");
        }
        println!(
            "  {:<30} {:>12.0}",
            "fingerprints/s per core", r.fingerprints_per_s_per_core
        );
        println!("  {:<30} {:>12.2}", "seconds", r.total_seconds);
        if let Some(p) = r.peak_rss_bytes {
            println!(
                "  {:<30} {:>12.1}",
                "peak RSS MiB",
                p as f64 / (1 << 20) as f64
            );
        }
    }
    Ok(())
}
