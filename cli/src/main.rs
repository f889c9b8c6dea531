//! The `tokenmill` binary: parses the command line and hands each command to its module in
//! [`tokenmill_cli::commands`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokenmill_cli::commands::{
    bench, build, dedup, distill_data, doctor, eval, export, extract, generate, inspect, model,
    plot, quickstart, report, schedule, slurm_task, sql, status, tokenizer, trace, train, verify,
};

/// Large blocks on huge pages ([`tokenmill_cli::alloc`]); in CUDA managed memory once a
/// backend with `device = "cuda-managed"` opened ([`tokenmill_cuda::managed`]).
#[global_allocator]
static ALLOC: tokenmill_cuda::managed::ManagedOr<tokenmill_cli::alloc::HugePages> =
    tokenmill_cuda::managed::ManagedOr(tokenmill_cli::alloc::HugePages);

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
    /// The whole flow on generated data: a web-like corpus, a BPE tokenizer, a dataset built
    /// with dedup, verified and inspected, a generated crawl through the FineWeb recipe (its
    /// funnel), and a tiny DeepSeek-V3 model trained on the dataset with its spikes traced to
    /// documents (`run/loss.svg`, `run/report.html`).
    Quickstart(quickstart::Args),
    /// Read inputs, tokenize, and write Megatron-compatible shards with provenance.
    Build(build::Args),
    /// The pipeline up to tokenization: kept documents (JSONL) and dropped ones (Parquet, with
    /// stage and rule); a single .html file: its extracted text.
    Extract(extract::Args),
    /// Show a dataset's manifest, or one document with its provenance and text.
    Inspect(inspect::Args),
    /// Recompute every checksum and re-validate every index of a dataset.
    Verify(verify::Args),
    /// Exact and fuzzy (MinHash LSH) dedup of documents; writes kept/removed/clusters Parquet.
    Dedup(dedup::Args),
    /// SQL (DataFusion) over a directory's tables: each Parquet file by its stem (`kept`,
    /// `removed`, `clusters`, `dedup_removed`, …), a dataset's `provenance`, `shards`,
    /// `excluded` and `funnel`, a run's `losses` (with document ids) and its dataset's
    /// `provenance`; the filters as SQL functions (see `tokenmill sql --help`).
    Sql(sql::Args),
    /// Tokenizer utilities.
    #[command(subcommand)]
    Tokenizer(tokenizer::Cmd),
    /// Benchmarks that print a table.
    #[command(subcommand)]
    Bench(bench::Cmd),
    /// Train a DeepSeek-V3-architecture model on a dataset (`--config train.toml`).
    Train(train::Args),
    /// The batch of a training step (`--step`): samples by loss, their documents with source,
    /// offset, URL; or every step a document was in (`--doc`).
    Trace(trace::Args),
    /// A self-contained HTML report of a run: the loss curve with its spikes, the response to
    /// each, and per spike the documents that added most to the loss with their provenance.
    Report(report::Args),
    /// Loss and perplexity of a model on a dataset, by source, language, domain or shard; or
    /// multiple-choice and exact-answer tasks scored by log-likelihood (lm-eval style).
    Eval(eval::Args),
    /// A run's checkpoint as a Hugging Face model directory (sharded safetensors with the index,
    /// F32 or BF16) that transformers' from_pretrained loads.
    Export(export::Args),
    /// Text from a model, decoded with MLA's compressed key-value cache (greedy, or sampled
    /// with temperature and top-p).
    Generate(generate::Args),
    /// A teacher model's top-K next-token distribution for every token of a dataset, stored
    /// beside it (6·K bytes per token) for `[train] distill`.
    DistillData(distill_data::Args),
    /// Draw the loss curves of one or more runs (SVG).
    Plot(plot::Args),
    /// Model configurations.
    #[command(subcommand)]
    Model(model::Cmd),
    /// A pipeline schedule (1F1B, DualPipe) as a grid, its simulated bubble and memory.
    Schedule(schedule::Args),
    /// What this machine can run: NVRTC, the CUDA driver, the kernels; `--gpu`: the device
    /// check (every CUDA kernel against the CPU reference, GEMM throughput, GPU vs CPU training).
    Doctor(doctor::Args),
    /// Where a build stands: tasks done, running, failed (with log and error), waiting.
    Status(status::Args),
    /// One job of a build submitted with `--executor slurm` (run by Slurm, not by hand).
    #[command(hide = true)]
    SlurmTask(slurm_task::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A reader that goes away (`tokenmill extract page.html | head`) ends the output quietly,
    // as it ends `cat`'s: Rust ignores SIGPIPE, so every `println!` after it would panic with
    // "failed printing to stdout". Not for the commands that talk over sockets (training
    // under MPI, Slurm's tasks): a peer that goes away there is an error to report.
    #[cfg(unix)]
    if !matches!(cli.cmd, Cmd::Train(_) | Cmd::SlurmTask(_)) {
        // SAFETY: restores the default disposition of one signal, before any thread starts;
        // no handler is installed.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    // The quickstart prints its own account of what happened (spikes included).
    let quiet_default = if matches!(cli.cmd, Cmd::Quickstart(_)) {
        "error"
    } else {
        "warn"
    };
    let filter = cli
        .log
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| quiet_default.into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.cmd {
        Cmd::Quickstart(a) => quickstart::run(a),
        Cmd::Build(a) => build::run(a),
        Cmd::Extract(a) => extract::run(a),
        Cmd::Inspect(a) => inspect::run(a),
        Cmd::Verify(a) => verify::run(a),
        Cmd::Dedup(a) => dedup::run(a),
        Cmd::Sql(a) => sql::run(a),
        Cmd::Tokenizer(c) => tokenizer::run(c),
        Cmd::Bench(c) => bench::run(c),
        Cmd::Train(a) => train::run(a),
        Cmd::Trace(a) => trace::run(a),
        Cmd::Report(a) => report::run(a),
        Cmd::Eval(a) => eval::run(a),
        Cmd::Export(a) => export::run(a),
        Cmd::Generate(a) => generate::run(a),
        Cmd::DistillData(a) => distill_data::run(a),
        Cmd::Plot(a) => plot::run(a),
        Cmd::Model(c) => model::run(c),
        Cmd::Schedule(a) => schedule::run(a),
        Cmd::Doctor(a) => doctor::run(a),
        Cmd::Status(a) => status::run(a),
        Cmd::SlurmTask(a) => slurm_task::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", tokenmill_cli::error_message(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every option and positional of every command (nested ones included) says what it is
    /// in `--help`; hidden ones (internal) are exempt.
    #[test]
    fn every_argument_of_every_command_is_described() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if a.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.is_hide_set() {
                    continue;
                }
                if sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(format!("{path} {} (the command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "tokenmill", &mut missing);
        assert!(
            missing.is_empty(),
            "undescribed in --help:\n{}",
            missing.join("\n")
        );
    }
}
