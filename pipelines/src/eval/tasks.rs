//! Log-likelihood tasks in the manner of EleutherAI's lm-evaluation-harness.
//!
//! A task file is JSON Lines, one example a line (blank lines are skipped), of one of two kinds:
//!
//! ```text
//! {"context": "The capital of France is", "choices": [" Paris", " Rome"], "gold": 0}
//! {"context": "2 + 2 =", "answer": " 4"}
//! ```
//!
//! - **Multiple choice**: each choice is a continuation of the context, appended as written
//!   (put the separating space in the choice). The prediction is the choice of highest
//!   log-likelihood (`acc`), or of highest log-likelihood per character of the choice
//!   (`acc_norm`: lm-eval divides by `len(choice)` of the Python string, i.e. characters), or
//!   per UTF-8 byte of the choice (`acc_bytes`, lm-eval's metric of that name).
//! - **Exact answer**: the log-likelihood of the gold answer; `exact` is lm-eval's `acc` of a
//!   `loglikelihood` task (every answer token is the model's most likely next token) and
//!   `perplexity` its `exp(−mean log-likelihood)` over examples.
//!
//! An optional `"id"` is carried to the per-example results. Few-shot: `k` other examples of
//! the same file, chosen by a seeded hash of (seed, example, candidate) so that an example's
//! shots do not depend on the order of evaluation, each written as its context and gold
//! continuation, joined by a blank line (lm-eval's `fewshot_delimiter`), before the example's
//! context.
//!
//! Tokenization follows lm-eval's `HFLM._encode_pair`: trailing whitespace of the context moves
//! to the continuation; the continuation's tokens are those of `context + continuation` after
//! the first `len(tokens(context))`; an empty context is the end-of-text token.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokenmill_shards::TextTokenizer;

use super::{LogLik, ModelRef};
use crate::error::{Error, Result};

/// One line of a task file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    id: Option<serde_json::Value>,
    context: String,
    choices: Option<Vec<String>>,
    gold: Option<i64>,
    answer: Option<String>,
}

/// What an example asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Question {
    /// Pick one of `choices`; `gold` is the right one.
    Choice {
        /// The continuations.
        choices: Vec<String>,
        /// Index of the right one.
        gold: usize,
    },
    /// The continuation `answer` is right.
    Answer {
        /// The gold continuation.
        answer: String,
    },
}

/// One example of a task file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Example {
    /// Its line in the file (1-based).
    pub line: usize,
    /// The `id` it gave, if any.
    pub id: Option<String>,
    /// The text before the continuation.
    pub context: String,
    /// What it asks.
    #[serde(flatten)]
    pub question: Question,
}

impl Example {
    /// The continuation a few-shot prompt shows for it.
    fn target(&self) -> &str {
        match &self.question {
            Question::Choice { choices, gold } => &choices[*gold],
            Question::Answer { answer } => answer,
        }
    }
}

fn bad(path: &Path, line: usize, msg: impl std::fmt::Display) -> Error {
    Error::Unsupported(format!("{}:{line}: {msg}", path.display()))
}

/// Parses a task file's text; errors name `path` and the line.
pub fn parse_tasks(path: &Path, text: &str) -> Result<Vec<Example>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let l: Line = serde_json::from_str(raw).map_err(|e| bad(path, line, e))?;
        let question = match (l.choices, l.gold, l.answer) {
            (Some(choices), Some(gold), None) => {
                if choices.len() < 2 {
                    return Err(bad(
                        path,
                        line,
                        "a multiple-choice example needs at least 2 choices",
                    ));
                }
                if let Some(j) = choices.iter().position(String::is_empty) {
                    return Err(bad(path, line, format!("choice {j} is empty")));
                }
                let gold = usize::try_from(gold)
                    .ok()
                    .filter(|&g| g < choices.len())
                    .ok_or_else(|| {
                        bad(
                            path,
                            line,
                            format!(
                                "gold = {gold} is not an index of its {} choices",
                                choices.len()
                            ),
                        )
                    })?;
                Question::Choice { choices, gold }
            }
            (None, None, Some(answer)) => {
                if answer.is_empty() {
                    return Err(bad(path, line, "the answer is empty"));
                }
                Question::Answer { answer }
            }
            (Some(_), None, _) => return Err(bad(path, line, "`choices` without `gold`")),
            (None, Some(_), _) => return Err(bad(path, line, "`gold` without `choices`")),
            (Some(_), Some(_), Some(_)) => {
                return Err(bad(path, line, "both `choices` and `answer`: give one"));
            }
            (None, None, None) => {
                return Err(bad(
                    path,
                    line,
                    "neither `choices` + `gold` (multiple choice) nor `answer` (exact answer)",
                ));
            }
        };
        let id = l.id.map(|v| match v {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        });
        out.push(Example {
            line,
            id,
            context: l.context,
            question,
        });
    }
    if out.is_empty() {
        return Err(Error::Unsupported(format!(
            "{}: no examples",
            path.display()
        )));
    }
    Ok(out)
}

/// Reads and parses a task file.
pub fn read_tasks(path: &Path) -> Result<Vec<Example>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_tasks(path, &text)
}

/// The `k` examples (indices, in prompt order) shown before example `i` of `n`: the `k` others
/// with the smallest `xxh3(seed, i, j)`.
pub fn fewshot_indices(i: usize, n: usize, k: usize, seed: u64) -> Vec<usize> {
    let key = |j: usize| {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&(i as u64).to_le_bytes());
        b[8..].copy_from_slice(&(j as u64).to_le_bytes());
        xxhash_rust::xxh3::xxh3_64_with_seed(&b, seed)
    };
    let mut others: Vec<(u64, usize)> = (0..n).filter(|&j| j != i).map(|j| (key(j), j)).collect();
    others.sort_unstable();
    others.into_iter().take(k).map(|(_, j)| j).collect()
}

/// Settings of a task evaluation.
#[derive(Debug, Clone)]
pub struct TaskConfig {
    /// Examples shown before each one.
    pub num_fewshot: usize,
    /// Seed of the few-shot choice.
    pub seed: u64,
    /// Longest input (tokens); the context is cut from the left beyond it.
    pub max_len: usize,
}

impl Default for TaskConfig {
    fn default() -> Self {
        TaskConfig {
            num_fewshot: 0,
            seed: 1234,
            max_len: usize::MAX,
        }
    }
}

/// The scores of one example.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExampleScore {
    /// Its line in the file.
    pub line: usize,
    /// Its `id`, if it gave one.
    pub id: Option<String>,
    /// Per continuation (the choices, or the one answer): its log-likelihood (nats).
    pub loglik: Vec<f64>,
    /// Per continuation: its tokens.
    pub tokens: Vec<usize>,
    /// Per continuation: every token was the model's most likely.
    pub greedy: Vec<bool>,
    /// Multiple choice: the gold index, the choice of highest log-likelihood, and of highest
    /// log-likelihood per character.
    pub gold: Option<usize>,
    /// See `gold`.
    pub pred: Option<usize>,
    /// See `gold`.
    pub pred_norm: Option<usize>,
    /// Multiple choice: the choice of highest log-likelihood per UTF-8 byte.
    pub pred_bytes: Option<usize>,
}

/// A mean over examples and its standard error (lm-eval's `mean_stderr`: the sample standard
/// deviation over √n).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Mean {
    /// The mean.
    pub value: f64,
    /// Its standard error (NaN for fewer than two examples).
    pub stderr: f64,
}

impl Mean {
    /// Of `xs`.
    pub fn of(xs: &[f64]) -> Mean {
        let n = xs.len() as f64;
        let value = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - value).powi(2)).sum::<f64>() / (n - 1.0);
        Mean {
            value,
            stderr: (var / n).sqrt(),
        }
    }
}

/// Metrics of a task file's multiple-choice examples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChoiceMetrics {
    /// Examples.
    pub examples: usize,
    /// Share predicted right by total log-likelihood.
    pub acc: Mean,
    /// Share predicted right by log-likelihood per character.
    pub acc_norm: Mean,
    /// Share predicted right by log-likelihood per UTF-8 byte.
    pub acc_bytes: Mean,
}

/// Metrics of a task file's exact-answer examples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnswerMetrics {
    /// Examples.
    pub examples: usize,
    /// Share whose answer is the model's greedy continuation.
    pub exact: Mean,
    /// Mean log-likelihood of the answer per example.
    pub loglik: Mean,
    /// `exp(−mean log-likelihood)` (lm-eval's `perplexity` of a loglikelihood task).
    pub perplexity: f64,
    /// Answer tokens in all.
    pub tokens: usize,
    /// −Σ log-likelihood / Σ tokens.
    pub nats_per_token: f64,
}

/// What [`evaluate_tasks`] measured on one task file.
#[derive(Debug, Clone, Serialize)]
pub struct TaskReport {
    /// The task file.
    pub file: PathBuf,
    /// The model directory.
    pub model: PathBuf,
    /// Few-shot examples per prompt.
    pub num_fewshot: usize,
    /// Few-shot seed.
    pub seed: u64,
    /// Multiple-choice metrics (absent without such examples).
    pub choice: Option<ChoiceMetrics>,
    /// Exact-answer metrics (absent without such examples).
    pub answer: Option<AnswerMetrics>,
    /// Every example's scores, in file order.
    pub examples: Vec<ExampleScore>,
}

/// Token ids of (context, continuation) as lm-eval's `HFLM._encode_pair` makes them.
pub fn encode_pair(
    tok: &TextTokenizer,
    prefix: Option<u32>,
    context: &str,
    continuation: &str,
) -> Result<(Vec<u32>, Vec<u32>)> {
    if context.is_empty() {
        let p = prefix.ok_or_else(|| {
            Error::Config(
                "an empty context needs an end-of-text token, and the tokenizer has none".into(),
            )
        })?;
        return Ok((vec![p], tok.encode(continuation)?));
    }
    let trimmed = context.trim_end();
    let (ctx, cont) = if trimmed.len() < context.len() {
        (
            trimmed,
            format!("{}{continuation}", &context[trimmed.len()..]),
        )
    } else {
        (context, continuation.to_string())
    };
    let whole = tok.encode(&format!("{ctx}{cont}"))?;
    let ce = tok.encode(ctx)?;
    let cont_enc = whole.get(ce.len()..).unwrap_or_default().to_vec();
    Ok((ce, cont_enc))
}

/// The end-of-text token lm-eval puts before an empty context: the first of
/// [`tokenmill_shards::tokenizer::EOS_CANDIDATES`] the tokenizer knows.
pub fn prefix_token(tok: &TextTokenizer) -> Option<u32> {
    tokenmill_shards::tokenizer::EOS_CANDIDATES
        .iter()
        .find_map(|c| tok.inner().token_to_id(c))
}

/// Scores every example of `examples` (read from `file`) with `m` (an
/// [`EvalModel`](super::EvalModel), or a [`ModelRef`] to a model in memory).
pub fn evaluate_tasks<'a>(
    m: impl Into<ModelRef<'a>>,
    tok: &TextTokenizer,
    file: &Path,
    examples: &[Example],
    cfg: &TaskConfig,
) -> Result<TaskReport> {
    let m: ModelRef<'a> = m.into();
    let vocab = tok.identity().vocab_size as usize;
    if vocab > m.vocab_size() {
        return Err(Error::Config(format!(
            "the tokenizer has {vocab} tokens, more than the model's vocab_size {} ({})",
            m.vocab_size(),
            m.dir.display()
        )));
    }
    let n = examples.len();
    if cfg.num_fewshot >= n {
        return Err(Error::Config(format!(
            "{}: {} few-shot examples asked for, but the file has {n} examples ({} others at most)",
            file.display(),
            cfg.num_fewshot,
            n - 1
        )));
    }
    let prefix = prefix_token(tok);
    let mut scores = Vec::with_capacity(n);
    for (i, ex) in examples.iter().enumerate() {
        let mut context = String::new();
        for j in fewshot_indices(i, n, cfg.num_fewshot, cfg.seed) {
            context.push_str(&examples[j].context);
            context.push_str(examples[j].target());
            context.push_str("\n\n");
        }
        context.push_str(&ex.context);
        let conts: Vec<&str> = match &ex.question {
            Question::Choice { choices, .. } => choices.iter().map(String::as_str).collect(),
            Question::Answer { answer } => vec![answer.as_str()],
        };
        let mut lls: Vec<LogLik> = Vec::with_capacity(conts.len());
        for (c, cont) in conts.iter().enumerate() {
            let (ce, cc) = encode_pair(tok, prefix, &context, cont)?;
            if cc.is_empty() {
                return Err(bad(
                    file,
                    ex.line,
                    format!(
                        "continuation {c} ({cont:?}) has no tokens of its own after the context"
                    ),
                ));
            }
            let ll = m
                .loglikelihood(&ce, &cc, cfg.max_len)
                .map_err(|e| bad(file, ex.line, e))?;
            lls.push(ll);
        }
        let (gold, pred, pred_norm, pred_bytes) = match &ex.question {
            Question::Choice { choices, gold } => {
                let first_max = |f: &dyn Fn(usize) -> f64| {
                    (0..choices.len()).fold(0, |best, j| if f(j) > f(best) { j } else { best })
                };
                let pred = first_max(&|j| lls[j].logprob);
                let pred_norm = first_max(&|j| lls[j].logprob / choices[j].chars().count() as f64);
                let pred_bytes = first_max(&|j| lls[j].logprob / choices[j].len() as f64);
                (Some(*gold), Some(pred), Some(pred_norm), Some(pred_bytes))
            }
            Question::Answer { .. } => (None, None, None, None),
        };
        scores.push(ExampleScore {
            line: ex.line,
            id: ex.id.clone(),
            loglik: lls.iter().map(|l| l.logprob).collect(),
            tokens: lls.iter().map(|l| l.tokens).collect(),
            greedy: lls.iter().map(|l| l.greedy).collect(),
            gold,
            pred,
            pred_norm,
            pred_bytes,
        });
    }
    let mc: Vec<&ExampleScore> = scores.iter().filter(|s| s.gold.is_some()).collect();
    let choice = (!mc.is_empty()).then(|| {
        let hit = |p: fn(&ExampleScore) -> Option<usize>| -> Vec<f64> {
            mc.iter()
                .map(|s| f64::from(u8::from(p(s) == s.gold)))
                .collect()
        };
        ChoiceMetrics {
            examples: mc.len(),
            acc: Mean::of(&hit(|s| s.pred)),
            acc_norm: Mean::of(&hit(|s| s.pred_norm)),
            acc_bytes: Mean::of(&hit(|s| s.pred_bytes)),
        }
    });
    let ans: Vec<&ExampleScore> = scores.iter().filter(|s| s.gold.is_none()).collect();
    let answer = (!ans.is_empty()).then(|| {
        let exact: Vec<f64> = ans
            .iter()
            .map(|s| f64::from(u8::from(s.greedy[0])))
            .collect();
        let ll: Vec<f64> = ans.iter().map(|s| s.loglik[0]).collect();
        let tokens: usize = ans.iter().map(|s| s.tokens[0]).sum();
        let loglik = Mean::of(&ll);
        AnswerMetrics {
            examples: ans.len(),
            exact: Mean::of(&exact),
            loglik,
            perplexity: (-loglik.value).exp(),
            tokens,
            nats_per_token: -ll.iter().sum::<f64>() / tokens as f64,
        }
    });
    Ok(TaskReport {
        file: file.to_path_buf(),
        model: m.dir.to_path_buf(),
        num_fewshot: cfg.num_fewshot,
        seed: cfg.seed,
        choice,
        answer,
        examples: scores,
    })
}

/// The report as a short table.
pub fn render_table(r: &TaskReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "model {}\ntasks {} · {}-shot (seed {})",
        r.model.display(),
        r.file.display(),
        r.num_fewshot,
        r.seed
    );
    let _ = writeln!(
        out,
        "{:<16} {:>8} {:>10} {:>10}",
        "metric", "examples", "value", "stderr"
    );
    let mut row = |name: &str, n: usize, m: Mean| {
        let _ = writeln!(
            out,
            "{name:<16} {n:>8} {:>10.4} {:>10.4}",
            m.value, m.stderr
        );
    };
    if let Some(c) = &r.choice {
        row("acc", c.examples, c.acc);
        row("acc_norm", c.examples, c.acc_norm);
        row("acc_bytes", c.examples, c.acc_bytes);
    }
    if let Some(a) = &r.answer {
        row("exact", a.examples, a.exact);
        row("loglik", a.examples, a.loglik);
        let _ = writeln!(
            out,
            "{:<16} {:>8} {:>10.4}\n{:<16} {:>8} {:>10.4}",
            "perplexity", a.examples, a.perplexity, "nats/token", a.tokens, a.nats_per_token
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("t.jsonl")
    }

    #[test]
    fn both_kinds_of_line_parse_and_blank_lines_are_skipped() {
        let text = "{\"context\": \"a\", \"choices\": [\" b\", \" c\"], \"gold\": 1, \"id\": 7}\n\n{\"context\": \"\", \"answer\": \"x\"}\n";
        let ex = parse_tasks(p(), text).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].line, 1);
        assert_eq!(ex[0].id.as_deref(), Some("7"));
        assert_eq!(
            ex[0].question,
            Question::Choice {
                choices: vec![" b".into(), " c".into()],
                gold: 1
            }
        );
        assert_eq!(ex[1].line, 3);
        assert_eq!(ex[1].target(), "x");
    }

    #[test]
    fn malformed_lines_are_named_by_file_and_line() {
        let ok = "{\"context\": \"a\", \"answer\": \"b\"}\n";
        for (bad_line, what) in [
            (
                "{\"context\": \"a\", \"choices\": [\"x\", \"y\"], \"gold\": 2}",
                "gold = 2",
            ),
            (
                "{\"context\": \"a\", \"choices\": [\"x\", \"y\"], \"gold\": -1}",
                "gold = -1",
            ),
            (
                "{\"context\": \"a\", \"choices\": [\"x\"], \"gold\": 0}",
                "at least 2",
            ),
            (
                "{\"context\": \"a\", \"choices\": [\"x\", \"\"], \"gold\": 0}",
                "choice 1 is empty",
            ),
            (
                "{\"context\": \"a\", \"choices\": [\"x\", \"y\"]}",
                "without `gold`",
            ),
            ("{\"context\": \"a\"}", "neither"),
            ("{\"context\": \"a\", \"answer\": \"\"}", "empty"),
            (
                "{\"context\": \"a\", \"answer\": \"b\", \"lable\": 1}",
                "unknown field",
            ),
            ("{\"answer\": \"b\"}", "context"),
            ("{\"context\": \"a\", \"answer\": ", "EOF"),
            ("[1, 2]", "expected"),
        ] {
            let text = format!("{ok}{ok}{bad_line}\n{ok}");
            let e = parse_tasks(p(), &text).unwrap_err().to_string();
            assert!(e.starts_with("t.jsonl:3: "), "{bad_line}: {e}");
            assert!(e.contains(what), "{bad_line}: {e}");
        }
        let e = parse_tasks(p(), "\n \n").unwrap_err().to_string();
        assert!(e.contains("no examples"), "{e}");
    }

    #[test]
    fn fewshot_choice_is_seeded_excludes_the_example_and_is_order_free() {
        let a = fewshot_indices(3, 10, 4, 1234);
        assert_eq!(a.len(), 4);
        assert!(!a.contains(&3));
        let mut u = a.clone();
        u.sort_unstable();
        u.dedup();
        assert_eq!(u.len(), 4);
        assert_eq!(a, fewshot_indices(3, 10, 4, 1234));
        assert_ne!(a, fewshot_indices(3, 10, 4, 99));
        assert_ne!(a, fewshot_indices(4, 10, 4, 1234));
        assert_eq!(fewshot_indices(0, 3, 5, 1).len(), 2);
    }

    #[test]
    fn standard_error_is_the_sample_deviation_over_root_n() {
        let m = Mean::of(&[1.0, 0.0, 1.0, 1.0]);
        assert_eq!(m.value, 0.75);
        assert!((m.stderr - (0.25f64 / 4.0).sqrt()).abs() < 1e-12);
        assert!(Mean::of(&[1.0]).stderr.is_nan());
    }
}
