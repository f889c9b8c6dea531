//! `tokenmill trace RUN --step N` / `--doc ID`: a step's batch, or a document's every step,
//! with provenance.

use std::path::PathBuf;

use tokenmill_pipelines::trace::{render, trace_doc, trace_step};

/// `tokenmill trace`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["step", "doc"])))]
pub struct Args {
    /// The training run's directory (the `[train] out` of its config: run.json, log.jsonl,
    /// losses/).
    #[arg(value_name = "RUN")]
    pub run: PathBuf,
    /// The training step (0-based) whose batch to show: its samples by loss, each document
    /// with its provenance, what it added to the loss, and where its token losses peak.
    #[arg(long)]
    pub step: Option<u64>,
    /// Instead of --step: every step a document (by id) was trained at, with its loss each
    /// time.
    #[arg(long, conflicts_with = "step")]
    pub doc: Option<String>,
    /// Samples shown (highest loss first), and documents listed as adding most to the loss.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// Which run of the step, when a rollback made the run go over it again (0 = first;
    /// default: the last).
    #[arg(long, conflicts_with = "doc")]
    pub attempt: Option<usize>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `tokenmill trace`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let Some(id) = a.doc else {
        let step = a.step.expect("clap requires one of --step and --doc");
        let t = trace_step(&a.run, step, a.attempt, a.top)?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&t)?);
        } else {
            print!("{}", render(&t, a.top));
        }
        return Ok(());
    };
    let (p, seen) = trace_doc(&a.run, &id)?;
    if a.json {
        println!("{}", serde_json::json!({ "document": p, "steps": seen }));
        return Ok(());
    }
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{Args as _, Command};

    /// Every option and positional of the commands a person runs first says what it is.
    #[test]
    fn every_argument_of_the_first_commands_is_described() {
        let commands = [
            (
                "quickstart",
                crate::commands::quickstart::Args::augment_args(Command::new("q")),
            ),
            ("trace", super::Args::augment_args(Command::new("t"))),
            (
                "inspect",
                crate::commands::inspect::Args::augment_args(Command::new("i")),
            ),
            (
                "sql",
                crate::commands::sql::Args::augment_args(Command::new("s")),
            ),
            (
                "report",
                crate::commands::report::Args::augment_args(Command::new("r")),
            ),
            (
                "plot",
                crate::commands::plot::Args::augment_args(Command::new("p")),
            ),
        ];
        for (name, c) in commands {
            let bare: Vec<String> = c
                .get_arguments()
                .filter(|a| a.get_help().is_none_or(|h| h.to_string().trim().is_empty()))
                .map(|a| a.get_id().to_string())
                .collect();
            assert!(bare.is_empty(), "`tokenmill {name}`: {bare:?} without help");
        }
        let sql = crate::commands::sql::Args::augment_args(Command::new("s"))
            .get_after_help()
            .map(|h| h.to_string())
            .unwrap_or_default();
        for t in [
            "dedup_removed",
            "provenance",
            "excluded",
            "funnel",
            "losses",
            "shards",
        ] {
            assert!(sql.contains(t), "sql --help lacks the table {t}");
        }
        for f in [
            "gopher_quality(text)",
            "drop_reason(text)",
            "lang(text)",
            "word_count(text)",
        ] {
            assert!(sql.contains(f), "sql --help lacks the function {f}");
        }
    }
}
