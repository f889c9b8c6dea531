//! `tokenmill eval`: a model trained here for a few steps evaluated on a dataset whose documents
//! come from two files, three URL domains and three languages — per-group losses that add back
//! up to the whole, equal an attribution made independently from the shards' own index, and
//! equal the trainer's held-out loss; a model forced to the uniform distribution scores
//! exactly −k·ln V per continuation; the command's table, JSON, SVG and errors; and (ignored
//! unless the Python peers are there) agreement with transformers' DeepseekV3ForCausalLM.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use tokenmill_pipelines::config::BuildConfig;
use tokenmill_pipelines::eval::EvalModel;
use tokenmill_pipelines::eval::dataset::{DatasetEvalConfig, GroupBy, domain, evaluate_dataset};
use tokenmill_pipelines::eval::tasks::{
    Question, TaskConfig, encode_pair, evaluate_tasks, parse_tasks, prefix_token, read_tasks,
};
use tokenmill_pipelines::train::{read_config, train};
use tokenmill_shards::loader::{Loader, LoaderConfig, Shuffle};
use tokenmill_shards::{Dataset, TextTokenizer, TokenizeConfig};
use tokenmill_tests::{fixture, peers_python, repo_root, tokenmill_bin};
use tokenmill_trainer::train::{ComputeDevice, LogKind};

use super::train::{datasets, log, write_config};

const SEQ: u64 = 64;

/// The eval part of tinyshakespeare as two JSONL files of documents with URLs and languages
/// given round robin, built into `ds`.
fn provenance_dataset(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(dir.join("eval.txt")).unwrap();
    let blocks: Vec<&str> = text
        .split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .collect();
    let urls = [
        Some("https://www.alpha.example/play"),
        Some("http://beta.example.org:8080/act?x=1"),
        None,
        Some("https://Alpha.example/other"),
        Some("https://gamma.example.net/"),
    ];
    let langs = [Some("en"), Some("enm"), None];
    let mut files = [String::new(), String::new()];
    for (i, b) in blocks.iter().enumerate() {
        let mut doc = serde_json::json!({"id": format!("d{i}"), "text": b});
        if let Some(u) = urls[i % urls.len()] {
            doc["url"] = u.into();
        }
        if let Some(l) = langs[i % langs.len()] {
            doc["lang"] = l.into();
        }
        files[i % 2].push_str(&format!("{doc}\n"));
    }
    for (k, f) in files.iter().enumerate() {
        std::fs::write(dir.join(format!("part-{k}.jsonl")), f).unwrap();
    }
    let mut cfg = BuildConfig::default();
    cfg.input.paths = vec![dir.join("part-*.jsonl").display().to_string()];
    cfg.tokenizer.path = dir.join("tokenizer.json");
    cfg.output.dir = dir.join("ds");
    cfg.run.quiet = true;
    tokenmill_pipelines::build(&cfg).unwrap();
    dir.join("ds")
}

/// Trains the tiny model of the training tests for 12 steps (checkpoint at the end) and
/// returns the run directory.
fn trained_run(dir: &Path) -> PathBuf {
    datasets(dir);
    let cfg = write_config(
        dir,
        "run",
        "steps = 12\ncheckpoint_every = 12",
        "peak = 3e-3\nwarmup = 2",
    );
    train(read_config(&cfg).unwrap(), false, true).unwrap();
    dir.join("run")
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

#[test]
fn per_group_losses_add_up_match_an_independent_attribution_and_the_trainers_eval() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained_run(dir.path());
    let ds = provenance_dataset(dir.path());
    let m = EvalModel::load(&run, ComputeDevice::Cpu).unwrap();
    assert!(m.dir.ends_with("checkpoints/step-00000012"), "{:?}", m.dir);
    let cfg = DatasetEvalConfig {
        seq_len: SEQ,
        batch: 16,
        ..Default::default()
    };
    let r = evaluate_dataset(&m, &ds, &cfg).unwrap();
    assert_eq!(r.samples, r.epoch_samples);
    // Windows: every sample's SEQ targets count, and every token but the first is one.
    assert_eq!(r.total.targets, r.samples * SEQ);
    let loss = r.total.loss();
    assert!(loss > 1.0 && loss < 512f64.ln(), "{loss}");
    eprintln!("eval loss {loss:.4} over {} targets", r.total.targets);
    for by in GroupBy::ALL {
        let g = r.groups(by);
        let targets: u64 = g.iter().map(|x| x.sum.targets).sum();
        let docs: u64 = g.iter().map(|x| x.sum.documents).sum();
        let sum: f64 = g.iter().map(|x| x.sum.loss_sum).sum();
        assert_eq!(targets, r.total.targets, "{by:?}");
        assert_eq!(docs, r.total.documents, "{by:?}");
        assert!(
            rel(sum, r.total.loss_sum) < 1e-12,
            "{by:?}: {sum} vs {}",
            r.total.loss_sum
        );
        // Token-weighted: the whole is the groups' loss weighted by their targets.
        let weighted: f64 = g
            .iter()
            .map(|x| x.sum.loss() * x.sum.targets as f64)
            .sum::<f64>()
            / targets as f64;
        assert!(rel(weighted, loss) < 1e-12);
        for w in g.windows(2) {
            assert!(w[0].sum.loss() >= w[1].sum.loss(), "sorted by loss");
        }
        eprintln!(
            "{by:?}: {:?}",
            g.iter()
                .map(|x| (x.key.as_str(), x.sum.targets, x.sum.loss()))
                .collect::<Vec<_>>()
        );
    }
    let keys = |by| -> Vec<String> {
        let mut k: Vec<String> = r.groups(by).iter().map(|g| g.key.clone()).collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(GroupBy::Domain),
        [
            "(none)",
            "alpha.example",
            "beta.example.org",
            "gamma.example.net"
        ]
    );
    assert_eq!(keys(GroupBy::Lang), ["(none)", "en", "enm"]);
    assert_eq!(keys(GroupBy::Source).len(), 2);
    assert!(keys(GroupBy::Source).iter().all(|s| s.ends_with(".jsonl")));
    assert_eq!(keys(GroupBy::Shard).len(), 2);

    // Independently: unmasked forwards over the same samples, each target's token placed in
    // its document by the shards' own index (global token position → shard, document).
    let data = Dataset::open(&ds).unwrap();
    let prov: Vec<_> = (0..data.manifest().shards.len())
        .map(|s| data.provenance(s).unwrap())
        .collect();
    let loader = Loader::open(
        &ds,
        LoaderConfig {
            seq_len: SEQ,
            global_batch: 1,
            shuffle: Shuffle::None,
            ..Default::default()
        },
    )
    .unwrap();
    let mut by_domain: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    let mut by_source: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    let s = SEQ as usize;
    for i in 0..r.samples {
        let smp = loader.sample(0, i);
        let f = m.forward(&smp.tokens, None, 1, s).unwrap();
        for t in 0..s {
            let global = i * SEQ + t as u64 + 1;
            let (shard, doc, _) = data.locate_token(global).unwrap();
            let p = &prov[shard][doc];
            let l = f.token_losses[t] as f64;
            let d = p.url.as_deref().and_then(domain).unwrap_or("(none)".into());
            let e = by_domain.entry(d).or_default();
            e.0 += 1;
            e.1 += l;
            let e = by_source.entry(p.source.clone()).or_default();
            e.0 += 1;
            e.1 += l;
        }
    }
    for (by, want) in [(GroupBy::Domain, &by_domain), (GroupBy::Source, &by_source)] {
        for g in r.groups(by) {
            let (n, sum) = want[&g.key];
            assert_eq!(g.sum.targets, n, "{by:?} {}", g.key);
            assert!(
                rel(g.sum.loss_sum, sum) < 1e-9,
                "{by:?} {}: {} vs {sum}",
                g.key,
                g.sum.loss_sum
            );
        }
        assert_eq!(r.groups(by).len(), want.len());
    }

    // The trainer's held-out loss (4 batches of 16 samples of eval-ds, in order, at the last
    // step) is the same figure as `eval` over those 64 samples of the checkpoint.
    let trainer_eval = log(&run)
        .into_iter()
        .rfind(|l| l.kind == LogKind::Eval)
        .expect("an eval line")
        .loss;
    let ours = evaluate_dataset(
        &m,
        &dir.path().join("eval-ds"),
        &DatasetEvalConfig {
            seq_len: SEQ,
            batch: 16,
            max_samples: Some(64),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(ours.samples, 64);
    assert!(
        rel(ours.total.loss(), trainer_eval) < 1e-6,
        "eval {} vs the trainer's {trainer_eval}",
        ours.total.loss()
    );
}

/// A model whose final norm is zero: every logit is 0, every token has probability 1/V.
fn uniform_model(v: usize) -> EvalModel {
    let mut cfg = tokenmill_trainer::ModelConfig::preset("tiny").unwrap();
    cfg.vocab_size = v;
    let model = tokenmill_trainer::Model::new(cfg).unwrap();
    let mut params = model.init::<f32>(5);
    let norm = model
        .layout
        .specs
        .iter()
        .find(|s| s.name == "model.norm.weight")
        .expect("the final norm")
        .range
        .clone();
    params[norm].fill(0.0);
    EvalModel::on_device(PathBuf::from("uniform"), model, params, ComputeDevice::Cpu).unwrap()
}

#[test]
fn a_uniform_model_scores_minus_k_ln_v_and_its_forced_answers_are_picked() {
    let dir = tempfile::tempdir().unwrap();
    datasets(dir.path());
    let ds = provenance_dataset(dir.path());
    let v = 512;
    let m = uniform_model(v);
    let ln_v = (v as f64).ln();
    // Every group of a dataset: loss ln V.
    let r = evaluate_dataset(
        &m,
        &ds,
        &DatasetEvalConfig {
            seq_len: 32,
            batch: 8,
            ..Default::default()
        },
    )
    .unwrap();
    for by in GroupBy::ALL {
        for g in r.groups(by) {
            assert!(
                rel(g.sum.loss(), ln_v) < 1e-6,
                "{by:?} {}: {}",
                g.key,
                g.sum.loss()
            );
        }
    }
    // Tasks: each continuation's log-likelihood is −k·ln V for its k tokens, so `acc` picks
    // the choice of fewest tokens and `acc_norm` the one of fewest tokens per character.
    let tok = TextTokenizer::load(
        &dir.path().join("tokenizer.json"),
        &TokenizeConfig::default(),
    )
    .unwrap();
    let file = dir.path().join("forced.jsonl");
    let text = [
        r#"{"context": "ROMEO:", "choices": [" the", " xqzj vwkq"], "gold": 0}"#,
        r#"{"context": "KING", "choices": [" qqqqqqq zz", " and"], "gold": 0}"#,
        r#"{"context": "First Citizen:\n", "choices": ["Before we proceed", "xq", "and the"], "gold": 1}"#,
        r#"{"context": "CORIOLANUS:", "choices": [" éàü œ", " the ab", " ß"], "gold": 2}"#,
        r#"{"context": "", "answer": "To be, or not to be"}"#,
    ]
    .join("\n");
    std::fs::write(&file, &text).unwrap();
    let examples = parse_tasks(&file, &text).unwrap();
    let rep = evaluate_tasks(&m, &tok, &file, &examples, &TaskConfig::default()).unwrap();
    let prefix = prefix_token(&tok);
    let mut acc = 0.0;
    let mut acc_norm = 0.0;
    let mut n_mc = 0.0;
    for (ex, sc) in examples.iter().zip(&rep.examples) {
        let conts: Vec<String> = match &ex.question {
            Question::Choice { choices, .. } => choices.clone(),
            Question::Answer { answer } => vec![answer.clone()],
        };
        let ks: Vec<usize> = conts
            .iter()
            .map(|c| encode_pair(&tok, prefix, &ex.context, c).unwrap().1.len())
            .collect();
        assert_eq!(sc.tokens, ks);
        for (ll, &k) in sc.loglik.iter().zip(&ks) {
            assert!(
                rel(*ll, -(k as f64) * ln_v) < 1e-6,
                "line {}: {ll} for {k} tokens",
                ex.line
            );
        }
        if let Question::Choice { gold, .. } = ex.question {
            let fewest = (0..ks.len()).fold(0, |b, j| if ks[j] < ks[b] { j } else { b });
            let per_char = |j: usize| ks[j] as f64 / conts[j].chars().count() as f64;
            let best_norm =
                (0..ks.len()).fold(0, |b, j| if per_char(j) < per_char(b) { j } else { b });
            assert_eq!(sc.pred, Some(fewest), "line {}", ex.line);
            assert_eq!(sc.pred_norm, Some(best_norm), "line {}", ex.line);
            let per_byte = |j: usize| ks[j] as f64 / conts[j].len() as f64;
            let best_bytes =
                (0..ks.len()).fold(0, |b, j| if per_byte(j) < per_byte(b) { j } else { b });
            assert_eq!(sc.pred_bytes, Some(best_bytes), "line {}", ex.line);
            acc += f64::from(u8::from(fewest == gold));
            acc_norm += f64::from(u8::from(best_norm == gold));
            n_mc += 1.0;
        }
    }
    let c = rep.choice.as_ref().unwrap();
    assert_eq!(c.examples, 4);
    assert_eq!(c.acc.value, acc / n_mc);
    assert_eq!(c.acc_norm.value, acc_norm / n_mc);
    assert!(
        c.acc.value >= 0.5,
        "the short gold choices win: {:?}",
        rep.examples
    );
    let a = rep.answer.as_ref().unwrap();
    assert!(rel(a.nats_per_token, ln_v) < 1e-6);
    // All logits equal: the greedy token is id 0, which the answer does not consist of.
    assert_eq!(a.exact.value, 0.0);
}

fn eval_cmd(args: &[&str]) -> std::process::Output {
    Command::new(tokenmill_bin())
        .arg("eval")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_command_prints_tables_json_and_a_chart_and_names_bad_task_lines() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained_run(dir.path());
    let ds = provenance_dataset(dir.path());
    let p = |x: &Path| x.display().to_string();
    let svg = dir.path().join("domains.svg");
    let o = eval_cmd(&[
        "--model",
        &p(&run),
        "--dataset",
        &p(&ds),
        "--seq-len",
        "64",
        "--by",
        "domain",
        "--svg",
        &p(&svg),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8(o.stdout).unwrap();
    for d in [
        "alpha.example",
        "beta.example.org",
        "gamma.example.net",
        "(none)",
        "all",
    ] {
        assert!(table.contains(d), "{d} missing from\n{table}");
    }
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(
        chart.starts_with("<svg") && chart.matches("<rect x=").count() == 4,
        "{chart}"
    );
    let o = eval_cmd(&[
        "--model",
        &p(&run),
        "--dataset",
        &p(&ds),
        "--seq-len",
        "64",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let total = &j["total"];
    assert_eq!(total["targets"], j["samples"].as_u64().unwrap() * 64);
    let lang_targets: u64 = j["breakdowns"]["lang"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["targets"].as_u64().unwrap())
        .sum();
    assert_eq!(lang_targets, total["targets"].as_u64().unwrap());
    let ppl = total["perplexity"].as_f64().unwrap();
    assert!(rel(ppl, total["loss"].as_f64().unwrap().exp()) < 1e-12);

    // Tasks, few-shot: the same seed gives the same scores; the fixtures run.
    let tokzr = p(&dir.path().join("tokenizer.json"));
    let caps = p(&fixture("tasks/capitals.jsonl"));
    let arith = p(&fixture("tasks/arithmetic.jsonl"));
    let task_run = |seed: &str| {
        let o = eval_cmd(&[
            "--model",
            &p(&run),
            "--tokenizer",
            &tokzr,
            "--tasks",
            &caps,
            &arith,
            "--num-fewshot",
            "3",
            "--seed",
            seed,
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let (a, b, c) = (task_run("7"), task_run("7"), task_run("8"));
    assert_eq!(a, b);
    assert_ne!(
        a[0]["examples"], c[0]["examples"],
        "another seed, other shots"
    );
    assert_eq!(a[0]["num_fewshot"], 3);
    assert_eq!(a[0]["choice"]["examples"], 12);
    assert_eq!(a[1]["answer"]["examples"], 12);
    let o = eval_cmd(&["--model", &p(&run), "--tokenizer", &tokzr, "--tasks", &caps]);
    assert!(o.status.success());
    let t = String::from_utf8(o.stdout).unwrap();
    assert!(t.contains("acc_norm") && t.contains("0-shot"), "{t}");

    // A malformed line is named with its file and line; a missing tokenizer is explained.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"context\": \"a\", \"answer\": \" b\"}\n{\"context\": \"a\", \"choices\": [\" x\", \" y\"], \"gold\": 5}\n",
    )
    .unwrap();
    let o = eval_cmd(&[
        "--model",
        &p(&run),
        "--tokenizer",
        &tokzr,
        "--tasks",
        &p(&bad),
    ]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains(&format!("{}:2: gold = 5", bad.display())), "{e}");
    let o = eval_cmd(&["--model", &p(&run), "--tasks", &caps]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tokenizer"));
    // A dataset that is not there is an error, not a panic.
    let o = eval_cmd(&["--model", &p(&run), "--dataset", "/nonexistent-dataset"]);
    assert!(!o.status.success());
    assert!(read_tasks(&dir.path().join("absent.jsonl")).is_err());
    // A dataset built with another tokenizer than the model's vocabulary allows (GPT-2's
    // 50,257 tokens against the model's 512) is refused before any token reaches the model,
    // and so are task files read with that tokenizer.
    let mut cfg = BuildConfig::default();
    cfg.input.paths = vec![dir.path().join("eval.txt").display().to_string()];
    cfg.tokenizer.path = tokenmill_tests::data("tokenizers/gpt2.tokenizer.json");
    cfg.output.dir = dir.path().join("gpt2-ds");
    cfg.run.quiet = true;
    tokenmill_pipelines::build(&cfg).unwrap();
    let o = eval_cmd(&[
        "--model",
        &p(&run),
        "--dataset",
        &p(&dir.path().join("gpt2-ds")),
        "--seq-len",
        "64",
    ]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains(
            "the dataset's tokenizer has 50257 tokens, more than the model's vocab_size 512"
        ),
        "{e}"
    );
    let gpt2 = p(&tokenmill_tests::data("tokenizers/gpt2.tokenizer.json"));
    let o = eval_cmd(&["--model", &p(&run), "--tokenizer", &gpt2, "--tasks", &caps]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("more than the model's vocab_size 512"), "{e}");
}

#[test]
#[ignore = "needs torch and transformers in .venv-peers (or TOKENMILL_PEERS_PYTHON): cargo test -p tokenmill-tests --test e2e -- --ignored eval::"]
fn task_log_likelihoods_agree_with_transformers() {
    let py = peers_python("torch and transformers");
    let dir = tempfile::tempdir().unwrap();
    datasets(dir.path());
    let tok_path = dir.path().join("tokenizer.json");
    let script = repo_root().join("tests/peers/eval_transformers.py");
    let model = dir.path().join("hf");
    let o = Command::new(&py)
        .arg(&script)
        .args(["make", "--vocab", "512", "--out"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // transformers keeps num_nextn_predict_layers = 1 in config.json and saves no MTP weights:
    // tokenmill reads the main model.
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["num_nextn_predict_layers"], 1);
    assert!(cfg.get("rope_parameters").is_some() && cfg.get("rope_theta").is_none());
    let m = EvalModel::load(&model, ComputeDevice::Cpu).unwrap();
    let tok = TextTokenizer::load(&tok_path, &TokenizeConfig::default()).unwrap();
    // A third file whose answers are tokenmill's own greedy next token after each capitals
    // context, so that both sides' greedy flags are exercised when true.
    let greedy_file = dir.path().join("greedy.jsonl");
    let mut lines = String::new();
    for ex in read_tasks(&fixture("tasks/capitals.jsonl")).unwrap() {
        let mut ids = tok.encode(&ex.context).unwrap();
        let s = ids.len();
        ids.push(0);
        let f = m.forward(&ids, None, 1, s).unwrap();
        let v = m.vocab_size();
        let row = &f.logits().unwrap()[(s - 1) * v..s * v];
        let next = tokenmill_pipelines::eval::argmax(row) as u32;
        let answer = tok.decode(&[next]).unwrap();
        lines.push_str(&format!(
            "{}\n",
            serde_json::json!({"context": ex.context, "answer": answer})
        ));
    }
    std::fs::write(&greedy_file, lines).unwrap();
    let mut worst = 0.0f64;
    let mut compared = 0;
    let mut greedy = 0;
    for name in ["capitals", "arithmetic", "greedy"] {
        let file = if name == "greedy" {
            greedy_file.clone()
        } else {
            fixture(&format!("tasks/{name}.jsonl"))
        };
        let examples = read_tasks(&file).unwrap();
        let ours = evaluate_tasks(&m, &tok, &file, &examples, &TaskConfig::default()).unwrap();
        let o = Command::new(&py)
            .arg(&script)
            .arg("score")
            .arg("--model")
            .arg(&model)
            .arg("--tokenizer")
            .arg(&tok_path)
            .arg("--tasks")
            .arg(&file)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let theirs: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(theirs.len(), ours.examples.len());
        for (t, e) in theirs.iter().zip(&ours.examples) {
            assert_eq!(t["line"].as_u64().unwrap() as usize, e.line);
            let tt: Vec<usize> = serde_json::from_value(t["tokens"].clone()).unwrap();
            assert_eq!(tt, e.tokens, "{name}:{}", e.line);
            let tg: Vec<bool> = serde_json::from_value(t["greedy"].clone()).unwrap();
            assert_eq!(tg, e.greedy, "{name}:{}", e.line);
            greedy += tg.iter().filter(|&&g| g).count();
            let tl: Vec<f64> = serde_json::from_value(t["loglik"].clone()).unwrap();
            for (a, b) in e.loglik.iter().zip(&tl) {
                let r = rel(*a, *b);
                assert!(
                    r < 1e-4,
                    "{name}:{}: tokenmill {a} vs transformers {b}",
                    e.line
                );
                worst = worst.max(r);
                compared += 1;
            }
        }
    }
    eprintln!(
        "{compared} log-likelihoods agree with transformers; max relative difference {worst:.3e}; {greedy} greedy continuations"
    );
    assert!(greedy > 0, "no greedy continuation was compared");
}

#[test]
#[ignore = "needs lm-eval[hf] (accelerate), torch and transformers in .venv-peers (or TOKENMILL_PEERS_PYTHON): cargo test -p tokenmill-tests --test e2e -- --ignored eval::"]
fn task_accuracies_agree_with_lm_evaluation_harness() {
    let py = peers_python("lm-eval[hf], torch and transformers");
    let dir = tempfile::tempdir().unwrap();
    datasets(dir.path());
    let tok_path = dir.path().join("tokenizer.json");
    let model = dir.path().join("hf");
    let o = Command::new(&py)
        .arg(repo_root().join("tests/peers/eval_transformers.py"))
        .args(["make", "--vocab", "512", "--seed", "3", "--out"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let files = [
        fixture("tasks/capitals.jsonl"),
        fixture("tasks/arithmetic.jsonl"),
    ];
    let o = Command::new(&py)
        .arg(repo_root().join("tests/peers/eval_lm_harness.py"))
        .arg("--model")
        .arg(&model)
        .arg("--tokenizer")
        .arg(&tok_path)
        .arg("--work")
        .arg(dir.path().join("lm-eval"))
        .arg("--tasks")
        .args(&files)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let theirs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let m = EvalModel::load(&model, ComputeDevice::Cpu).unwrap();
    let tok = TextTokenizer::load(&tok_path, &TokenizeConfig::default()).unwrap();
    let mut worst = 0.0f64;
    for file in &files {
        let examples = read_tasks(file).unwrap();
        let ours = evaluate_tasks(&m, &tok, file, &examples, &TaskConfig::default()).unwrap();
        let t = &theirs[file.display().to_string()];
        let metric = |name: &str| t["metrics"][name].as_f64().unwrap();
        let tex = t["examples"].as_array().unwrap();
        assert_eq!(tex.len(), ours.examples.len());
        for (te, e) in tex.iter().zip(&ours.examples) {
            let tl: Vec<f64> = serde_json::from_value(te["loglik"].clone()).unwrap();
            for (a, b) in e.loglik.iter().zip(&tl) {
                worst = worst.max(rel(*a, *b));
            }
            let tg: Vec<bool> = serde_json::from_value(te["greedy"].clone()).unwrap();
            assert_eq!(tg, e.greedy, "{}:{}", file.display(), e.line);
            if let Some(gold) = e.gold {
                let hit = |p: Option<usize>| f64::from(u8::from(p == Some(gold)));
                assert_eq!(te["acc"], hit(e.pred), "{}:{}", file.display(), e.line);
                assert_eq!(
                    te["acc_norm"],
                    hit(e.pred_norm),
                    "{}:{}",
                    file.display(),
                    e.line
                );
                assert_eq!(
                    te["acc_bytes"],
                    hit(e.pred_bytes),
                    "{}:{}",
                    file.display(),
                    e.line
                );
            }
        }
        if let Some(c) = &ours.choice {
            for (name, ours) in [
                ("acc", c.acc),
                ("acc_norm", c.acc_norm),
                ("acc_bytes", c.acc_bytes),
            ] {
                assert!((metric(name) - ours.value).abs() < 1e-12, "{name}");
                let se = metric(&format!("{name}_stderr"));
                assert!(
                    rel(ours.stderr, se) < 1e-9,
                    "{name} stderr {} vs {se}",
                    ours.stderr
                );
            }
            eprintln!(
                "{}: acc {:.4} acc_norm {:.4} acc_bytes {:.4} (lm-eval: {:.4} {:.4} {:.4})",
                file.display(),
                c.acc.value,
                c.acc_norm.value,
                c.acc_bytes.value,
                metric("acc"),
                metric("acc_norm"),
                metric("acc_bytes")
            );
        }
        if let Some(a) = &ours.answer {
            assert!((metric("acc") - a.exact.value).abs() < 1e-12);
            assert!(rel(a.perplexity, metric("perplexity")) < 1e-4);
            eprintln!(
                "{}: exact {:.4} perplexity {:.1} (lm-eval: acc {:.4} perplexity {:.1})",
                file.display(),
                a.exact.value,
                a.perplexity,
                metric("acc"),
                metric("perplexity")
            );
        }
    }
    assert!(worst < 1e-4, "log-likelihoods differ by up to {worst:e}");
    eprintln!("per-example log-likelihoods: max relative difference to lm-eval {worst:.3e}");
}
