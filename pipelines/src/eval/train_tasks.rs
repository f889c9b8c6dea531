//! `[train] eval_tasks`: task files scored at every evaluation of a training run, by the code
//! of `tokenmill eval --tasks` ([`super::tasks`]), through the trainer's [`EvalHook`].
//!
//! [`TrainTasks::open`] reads and checks every file before training starts (a missing file or
//! a malformed line is an error naming `FILE:LINE`); at each evaluation the hook scores the
//! model as it stands — its main model, the MTP modules dropped as `tokenmill eval` drops them —
//! and the eval line of `log.jsonl` carries each task's `acc`, `acc_norm` (multiple choice) and
//! `exact` (exact answers).

use std::path::{Path, PathBuf};

use tokenmill_kernels::Backend;
use tokenmill_shards::{TextTokenizer, TokenizeConfig};
use tokenmill_trainer::Model;
use tokenmill_trainer::train::{EvalHook, TaskScores, TrainConfig};

use super::tasks::{Example, TaskConfig, TaskReport, evaluate_tasks, read_tasks};
use super::{ModelRef, main_only};
use crate::error::{Error, Result};

/// The first `limit` examples of a task file (all of them for 0), as `tokenmill eval --limit`
/// and `[train] eval_tasks_limit` take them.
pub fn limit_examples(mut examples: Vec<Example>, limit: usize) -> Vec<Example> {
    if limit > 0 {
        examples.truncate(limit);
    }
    examples
}

/// A task's name in the log: its file's stem.
pub fn task_name(file: &Path) -> String {
    file.file_stem().map_or_else(
        || file.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

/// The scores an eval line carries of a task report.
pub fn scores(name: &str, r: &TaskReport) -> TaskScores {
    TaskScores {
        name: name.to_string(),
        examples: r.examples.len(),
        acc: r.choice.as_ref().map(|c| c.acc.value),
        acc_norm: r.choice.as_ref().map(|c| c.acc_norm.value),
        exact: r.answer.as_ref().map(|a| a.exact.value),
        nats_per_token: r.answer.as_ref().map(|a| a.nats_per_token),
    }
}

/// One task of a run.
struct Task {
    name: String,
    file: PathBuf,
    examples: Vec<Example>,
}

/// The `[train] eval_tasks` of a run, read and checked: the [`EvalHook`] `tokenmill train`
/// installs.
pub struct TrainTasks {
    tasks: Vec<Task>,
    tok: TextTokenizer,
    cfg: TaskConfig,
    /// The run directory (named in reports).
    dir: PathBuf,
    /// The trainer's model without its MTP modules, made at the first evaluation.
    main: Option<Model>,
}

impl std::fmt::Debug for TrainTasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainTasks")
            .field(
                "tasks",
                &self.tasks.iter().map(|t| &t.file).collect::<Vec<_>>(),
            )
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl TrainTasks {
    /// Reads the task files of `cfg` (`None` without any) with the training dataset's
    /// tokenizer. Refuses a missing or malformed file (naming `FILE:LINE`), two files of the
    /// same name, more few-shot examples than a file has others, and tasks without a held-out
    /// dataset (evaluations run only with one).
    pub fn open(cfg: &TrainConfig) -> Result<Option<Self>> {
        let t = &cfg.train;
        if t.eval_tasks.is_empty() {
            return Ok(None);
        }
        if cfg.data.eval.is_none() {
            return Err(Error::Config(
                "[train] eval_tasks are scored at each evaluation, and evaluations need a held-out dataset: set [data] eval".into(),
            ));
        }
        let mut tasks: Vec<Task> = Vec::new();
        for file in &t.eval_tasks {
            let examples = limit_examples(read_tasks(file)?, t.eval_tasks_limit);
            let name = task_name(file);
            if let Some(o) = tasks.iter().find(|o| o.name == name) {
                return Err(Error::Config(format!(
                    "[train] eval_tasks: {} and {} are both named {name:?} in the log: rename one",
                    o.file.display(),
                    file.display()
                )));
            }
            if t.eval_tasks_fewshot >= examples.len() {
                return Err(Error::Config(format!(
                    "{}: eval_tasks_fewshot = {} but {} examples are scored ({} others at most)",
                    file.display(),
                    t.eval_tasks_fewshot,
                    examples.len(),
                    examples.len() - 1
                )));
            }
            tasks.push(Task {
                name,
                file: file.clone(),
                examples,
            });
        }
        let tok_path = cfg.data.train.join("tokenizer.json");
        let tok = TextTokenizer::load(&tok_path, &TokenizeConfig::default())?;
        Ok(Some(TrainTasks {
            tasks,
            tok,
            cfg: TaskConfig {
                num_fewshot: t.eval_tasks_fewshot,
                seed: t.eval_tasks_seed,
                max_len: usize::MAX,
            },
            dir: t.out.clone(),
            main: None,
        }))
    }

    /// Scores every task with `model` (its MTP modules ignored) and `params`, run on `be`.
    pub fn score(
        &mut self,
        model: &Model,
        params: &[f32],
        be: &dyn Backend<f32>,
    ) -> Result<Vec<TaskScores>> {
        let main = self.main.get_or_insert_with(|| {
            let mut m = model.clone();
            main_only(&mut m);
            m
        });
        let m = ModelRef {
            dir: &self.dir,
            model: main,
            params,
            be,
        };
        self.tasks
            .iter()
            .map(|t| {
                let r = evaluate_tasks(m, &self.tok, &t.file, &t.examples, &self.cfg)?;
                Ok(scores(&t.name, &r))
            })
            .collect()
    }
}

impl EvalHook for TrainTasks {
    fn evaluate(
        &mut self,
        step: u64,
        model: &Model,
        params: &[f32],
        be: &dyn Backend<f32>,
    ) -> std::result::Result<Vec<TaskScores>, Box<dyn std::error::Error + Send + Sync>> {
        let _span = tracing::info_span!("eval_tasks", step).entered();
        Ok(self.score(model, params, be)?)
    }
}

/// The scores as the progress output shows them: `capitals acc 0.250 acc_norm 0.333  …`.
pub fn render_scores(scores: &[TaskScores]) -> String {
    let mut parts = Vec::new();
    for s in scores {
        let mut p = s.name.clone();
        for (k, v) in [("acc", s.acc), ("acc_norm", s.acc_norm), ("exact", s.exact)] {
            if let Some(v) = v {
                p.push_str(&format!(" {k} {v:.3}"));
            }
        }
        parts.push(p);
    }
    parts.join("  ")
}
