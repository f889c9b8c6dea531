//! `tokenmill eval --model DIR (--dataset DS | --tasks FILE.jsonl)`: loss and perplexity of a
//! model on a built dataset, broken down by provenance; or log-likelihood task scores.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tokenmill_pipelines::eval::EvalModel;
use tokenmill_pipelines::eval::dataset::{
    DatasetEvalConfig, GroupBy, evaluate_dataset, render_table,
};
use tokenmill_pipelines::eval::tasks::{TaskConfig, evaluate_tasks, read_tasks};
use tokenmill_pipelines::eval::train_tasks::limit_examples;
use tokenmill_shards::loader::Packing;
use tokenmill_shards::{TextTokenizer, TokenizeConfig};
use tokenmill_trainer::train::ComputeDevice;

/// `tokenmill eval`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A checkpoint (`RUN/checkpoints/step-N`), a run directory (its latest checkpoint), or a
    /// Hugging Face-layout DeepseekV3 directory (config.json + safetensors).
    #[arg(long)]
    pub model: PathBuf,
    /// A built dataset: loss and perplexity, broken down by provenance.
    #[arg(long, required_unless_present = "tasks", conflicts_with = "tasks")]
    pub dataset: Option<PathBuf>,
    /// Task files (JSON Lines: context + choices + gold, or context + answer), scored by
    /// log-likelihood.
    #[arg(long, num_args = 1..)]
    pub tasks: Vec<PathBuf>,
    /// The tokenizer of the tasks: a tokenizer.json, or a dataset directory holding one
    /// (default: MODEL/tokenizer.json).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Input tokens per sample (dataset) or the longest input (tasks); default 1024 and
    /// `max_position_embeddings` at most for a dataset, `max_position_embeddings` for tasks.
    #[arg(long)]
    pub seq_len: Option<u64>,
    /// Samples per forward (dataset).
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// How the dataset is cut into samples: windows (every token a target once) or documents.
    #[arg(long, default_value = "windows", value_parser = parse_packing)]
    pub packing: Packing,
    /// Evaluate the first N samples of the dataset only.
    #[arg(long, conflicts_with = "tasks")]
    pub max_samples: Option<u64>,
    /// The breakdown shown in the table and the chart.
    #[arg(long, default_value = "source")]
    pub by: GroupBy,
    /// Examples shown before each task example.
    #[arg(long, default_value_t = 0)]
    pub num_fewshot: usize,
    /// Seed of the few-shot choice.
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// Score the first N examples of each task file only (few-shot examples come from them).
    #[arg(long, requires = "tasks")]
    pub limit: Option<usize>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write the breakdown as an SVG bar chart (dataset).
    #[arg(long, conflicts_with = "tasks")]
    pub svg: Option<PathBuf>,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: ComputeDevice,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

fn parse_packing(s: &str) -> Result<Packing, String> {
    match s {
        "windows" => Ok(Packing::Windows),
        "documents" => Ok(Packing::Documents),
        _ => Err(format!("{s:?}: expected windows or documents")),
    }
}

fn parse_device(s: &str) -> Result<ComputeDevice, String> {
    match s {
        "cpu" => Ok(ComputeDevice::Cpu),
        "cuda" => Ok(ComputeDevice::Cuda),
        "cuda-hmm" => Ok(ComputeDevice::CudaHmm),
        "cuda-managed" => Ok(ComputeDevice::CudaManaged),
        _ => Err(format!(
            "{s:?}: expected cpu, cuda, cuda-hmm or cuda-managed"
        )),
    }
}

/// The tokenizer.json `given` names (a file or a directory holding one), else the model's.
fn tokenizer_path(given: Option<&Path>, model: &Path) -> anyhow::Result<PathBuf> {
    let p = match given {
        Some(p) if p.is_dir() => p.join("tokenizer.json"),
        Some(p) => p.to_path_buf(),
        None => {
            let p = model.join("tokenizer.json");
            if !p.is_file() {
                bail!(
                    "{} has no tokenizer.json: name the tasks' tokenizer with --tokenizer (a tokenizer.json, or the dataset the model was trained on)",
                    model.display()
                );
            }
            p
        }
    };
    Ok(p)
}

/// Runs `tokenmill eval`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(t) = a.threads {
        pool = pool.num_threads(t);
    }
    pool.build()?.install(|| run_in_pool(a))
}

fn run_in_pool(a: Args) -> anyhow::Result<()> {
    let m = EvalModel::load(&a.model, a.device)?;
    if let Some(ds) = &a.dataset {
        let cfg = DatasetEvalConfig {
            seq_len: a
                .seq_len
                .unwrap_or_else(|| 1024.min(m.max_positions() as u64)),
            batch: a.batch,
            packing: a.packing,
            max_samples: a.max_samples,
            quiet: a.quiet || a.json,
        };
        let r = evaluate_dataset(&m, ds, &cfg)?;
        if let Some(out) = &a.svg {
            let svg = tokenmill_pipelines::eval::chart::bar_chart(&r, a.by);
            std::fs::write(out, svg).with_context(|| format!("{}", out.display()))?;
        }
        if a.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            print!("{}", render_table(&r, a.by));
            if let Some(out) = &a.svg {
                println!("chart (loss by {}): {}", a.by.name(), out.display());
            }
        }
        return Ok(());
    }
    let tok_path = tokenizer_path(a.tokenizer.as_deref(), &m.dir)?;
    let tok = TextTokenizer::load(&tok_path, &TokenizeConfig::default())?;
    let cfg = TaskConfig {
        num_fewshot: a.num_fewshot,
        seed: a.seed,
        max_len: a.seq_len.map_or(m.max_positions(), |s| s as usize),
    };
    let mut reports = Vec::new();
    for file in &a.tasks {
        let examples = limit_examples(read_tasks(file)?, a.limit.unwrap_or(0));
        reports.push(evaluate_tasks(&m, &tok, file, &examples, &cfg)?);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            print!("{}", tokenmill_pipelines::eval::tasks::render_table(r));
        }
    }
    Ok(())
}
