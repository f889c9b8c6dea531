//! Training end to end on real text: a tiny DeepSeek-V3 model learns Shakespeare well below
//! the text's unigram entropy; resuming from a checkpoint gives bitwise the same losses; a
//! non-finite step never reaches a checkpoint; bad configurations and checkpoints are named.

use std::path::{Path, PathBuf};

use tokenmill_pipelines::config::BuildConfig;
use tokenmill_pipelines::train::{read_config, train};
use tokenmill_shards::bpe::{BpeTrainConfig, train_bpe};
use tokenmill_shards::{TextTokenizer, TokenizeConfig};
use tokenmill_tests::{data, kill_until_done, tokenmill_bin};
use tokenmill_trainer::train::{LogKind, StepLog};

/// Train/eval datasets from tinyshakespeare (first 90 % / last 10 % of its lines) with a
/// 512-token BPE trained on the training part. Returns (dir, train text).
pub(crate) fn datasets(dir: &Path) -> String {
    let text = std::fs::read_to_string(data("text/tinyshakespeare.txt")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let cut = lines.len() * 9 / 10;
    let (tr, ev) = (lines[..cut].join("\n"), lines[cut..].join("\n"));
    std::fs::write(dir.join("train.txt"), &tr).unwrap();
    std::fs::write(dir.join("eval.txt"), &ev).unwrap();
    let opts = BpeTrainConfig {
        vocab_size: 512,
        ..Default::default()
    };
    train_bpe(tr.split("\n\n"), &opts, &dir.join("tokenizer.json")).unwrap();
    for (name, file) in [("train-ds", "train.txt"), ("eval-ds", "eval.txt")] {
        let mut cfg = BuildConfig::default();
        cfg.input.paths = vec![dir.join(file).display().to_string()];
        cfg.input.read.text_mode = tokenmill_ingest::TextMode::Blocks;
        cfg.tokenizer.path = dir.join("tokenizer.json");
        cfg.output.dir = dir.join(name);
        cfg.run.quiet = true;
        tokenmill_pipelines::build(&cfg).unwrap();
    }
    tr
}

pub(crate) fn write_config(dir: &Path, name: &str, extra_train: &str, lr: &str) -> PathBuf {
    let toml = format!(
        r#"
[model]
preset = "tiny"
vocab_size = 512

[data]
train = "train-ds"
eval = "eval-ds"
seq_len = 64
batch = 16
seed = 7

[lr]
{lr}

[train]
out = "{name}"
threads = 2
eval_batches = 4
{extra_train}
"#
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).unwrap();
    path
}

pub(crate) fn log(run: &Path) -> Vec<StepLog> {
    tokenmill_pipelines::plot::read_log(run).unwrap()
}

fn unigram_entropy(tokenizer: &Path, text: &str) -> f64 {
    let tok = TextTokenizer::load(tokenizer, &TokenizeConfig::default()).unwrap();
    let ids = tok.encode(text).unwrap();
    let mut counts = std::collections::HashMap::new();
    for id in &ids {
        *counts.entry(*id).or_insert(0u64) += 1;
    }
    let n = ids.len() as f64;
    counts
        .values()
        .map(|&c| -(c as f64 / n) * (c as f64 / n).ln())
        .sum()
}

#[test]
fn tiny_model_learns_real_text_below_its_unigram_entropy() {
    let dir = tempfile::tempdir().unwrap();
    let text = datasets(dir.path());
    let h = unigram_entropy(&dir.path().join("tokenizer.json"), &text);
    let cfg = write_config(
        dir.path(),
        "learn",
        "steps = 200\neval_every = 50\ncheckpoint_every = 100",
        "peak = 3e-3\nmin = 3e-4\nwarmup = 20\nconstant = 80\ndecay = 100",
    );
    let out = train(read_config(&cfg).unwrap(), false, true).unwrap();
    let eval = out.eval_loss.expect("an eval dataset was given");
    let lines = log(&dir.path().join("learn"));
    let train_lines: Vec<&StepLog> = lines.iter().filter(|l| l.kind == LogKind::Train).collect();
    assert_eq!(train_lines.len(), 200);
    let first = train_lines[0].main_loss;
    assert!(
        (first - 512f64.ln()).abs() < 0.3,
        "a fresh model starts near ln V: {first}"
    );
    let evals: Vec<f64> = lines
        .iter()
        .filter(|l| l.kind == LogKind::Eval)
        .map(|l| l.loss)
        .collect();
    assert_eq!(evals.len(), 4, "evaluations at 50, 100, 150 and the end");
    eprintln!("unigram entropy {h:.3} nats; eval losses {evals:?}; first train loss {first:.3}");
    assert!(
        eval < 0.85 * h,
        "eval loss {eval:.3} not well below the unigram entropy {h:.3}"
    );
    // Every step logs its MTP loss, balance loss and expert loads; its per-sample and
    // per-document losses are in the loss table.
    let l = train_lines[199];
    assert!(l.mtp_loss > 0.0 && l.balance_loss > 0.0 && l.grad_norm > 0.0 && l.tokens_per_s > 0.0);
    assert_eq!(
        l.expert_load.len(),
        2,
        "one MoE layer in the main model, one in the MTP block"
    );
    let rows = tokenmill_trainer::losslog::rows_of(&dir.path().join("learn"), l.seq).unwrap();
    let samples: std::collections::BTreeSet<u32> = rows.iter().map(|r| r.sample).collect();
    assert_eq!(samples.len(), 16);
    assert!(rows.iter().all(|r| r.step == 199));
    let files = tokenmill_trainer::losslog::files(&dir.path().join("learn")).unwrap();
    assert_eq!(files.first().map(|f| f.0), Some(0));
    assert_eq!(files.last().map(|f| f.1), Some(199));
    // The routing bias moved: loads are not all equal and the final checkpoint carries it.
    let ckpt = dir.path().join("learn/checkpoints/step-00000200");
    let (model, params) = tokenmill_trainer::hf::load(&ckpt).unwrap();
    let bias = model.moe_biases()[0];
    assert!(params[model.layout.range(bias)].iter().any(|&b| b != 0.0));
    // `tokenmill plot` draws the curves.
    let st = std::process::Command::new(tokenmill_bin())
        .arg("plot")
        .arg(dir.path().join("learn"))
        .status()
        .unwrap();
    assert!(st.success());
    let svg = std::fs::read_to_string(dir.path().join("learn/loss.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("polyline") && svg.contains("learn held-out loss")
    );
}

#[test]
fn resume_gives_bitwise_the_same_losses_and_weights() {
    let dir = tempfile::tempdir().unwrap();
    datasets(dir.path());
    let lr = "peak = 2e-3\nwarmup = 2";
    let full = write_config(dir.path(), "full", "steps = 6", lr);
    train(read_config(&full).unwrap(), false, true).unwrap();
    // The same run, interrupted after 5 steps with its newest checkpoint at step 3 (the one at
    // 5 lost), and resumed: steps 3 and 4 run again.
    let part = write_config(dir.path(), "part", "steps = 5\ncheckpoint_every = 3", lr);
    train(read_config(&part).unwrap(), false, true).unwrap();
    let ck = dir.path().join("part/checkpoints");
    std::fs::remove_dir_all(ck.join("step-00000005")).unwrap();
    std::fs::write(ck.join("latest"), "step-00000003").unwrap();
    let resumed = write_config(dir.path(), "part", "steps = 6", lr);
    let o = train(read_config(&resumed).unwrap(), true, true).unwrap();
    assert_eq!(o.steps, 6);
    let (a, b) = (log(&dir.path().join("full")), log(&dir.path().join("part")));
    let losses = |l: &[StepLog]| {
        l.iter()
            .filter(|x| x.kind == LogKind::Train)
            .map(|x| (x.step, x.loss.to_bits(), x.grad_norm.to_bits()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        losses(&a),
        losses(&b),
        "the resumed run's log has each step once, with identical losses"
    );
    let w = |run: &str| {
        std::fs::read(
            dir.path()
                .join(run)
                .join("checkpoints/step-00000006/model.safetensors"),
        )
        .unwrap()
    };
    assert_eq!(w("full"), w("part"), "identical final weights");
    // The loss table too: each line once, the same rows.
    let table = |run: &str| {
        let p = dir.path().join(run);
        let mut rows = Vec::new();
        for (_, _, f) in tokenmill_trainer::losslog::files(&p).unwrap() {
            rows.extend(
                tokenmill_trainer::losslog::read(&f)
                    .unwrap()
                    .into_iter()
                    .map(|r| (r.seq, r.step, r.sample, r.span, r.doc, r.loss.to_bits())),
            );
        }
        rows
    };
    let (ta, tb) = (table("full"), table("part"));
    assert_eq!(ta.len(), tb.len());
    assert_eq!(ta, tb);
    assert_eq!(ta.last().map(|r| r.0), Some(5));
}

#[test]
fn a_non_finite_step_never_reaches_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    datasets(dir.path());
    // An absurd learning rate: step 0 is finite, its update overflows the next forward.
    let cfg = write_config(
        dir.path(),
        "nan",
        "steps = 4\ncheckpoint_every = 1",
        "peak = 1e36\nwarmup = 0",
    );
    let err = train(read_config(&cfg).unwrap(), false, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("non-finite"), "{err}");
    let bad: u64 = err
        .rsplit("at step ")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(bad >= 1, "step 0 runs on the initial weights: {err}");
    let root = dir.path().join("nan/checkpoints");
    let last = format!("step-{bad:08}");
    assert_eq!(
        std::fs::read_to_string(root.join("latest")).unwrap(),
        last,
        "the newest checkpoint is from before the bad step"
    );
    assert!(!root.join(format!("step-{:08}", bad + 1)).exists());
    let (_, params) = tokenmill_trainer::hf::load(&root.join(&last)).unwrap();
    assert!(
        params.iter().all(|p| p.is_finite()),
        "the saved state is finite"
    );
    // With on_nonfinite = "skip" the step is logged as skipped and the run goes on.
    let cfg = write_config(
        dir.path(),
        "skip",
        "steps = 3\non_nonfinite = \"skip\"",
        "peak = 1e36\nwarmup = 0",
    );
    train(read_config(&cfg).unwrap(), false, true).unwrap();
    let l = log(&dir.path().join("skip"));
    assert!(l.iter().any(|x| x.skipped), "a skipped step is logged");
}

#[test]
fn bad_configurations_and_checkpoints_are_named() {
    let dir = tempfile::tempdir().unwrap();
    datasets(dir.path());
    let run = |toml_extra: &str, model_extra: &str, resume: bool| {
        let path = write_config(dir.path(), "bad", "steps = 1", "peak = 1e-3\nwarmup = 1");
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "vocab_size = 512",
            &format!("vocab_size = 512\n{model_extra}"),
        );
        std::fs::write(&path, format!("{text}\n{toml_extra}")).unwrap();
        train(read_config(&path).unwrap(), resume, true)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let e = run("", "n_group = 3", false);
    assert!(e.contains("not divisible by n_group"), "{e}");
    let e = run("", "num_experts_per_tok = 9", false);
    assert!(e.contains("num_experts_per_tok"), "{e}");
    // A tokenizer larger than the model's vocabulary.
    let path = write_config(dir.path(), "small-vocab", "steps = 1", "peak = 1e-3");
    let t = std::fs::read_to_string(&path)
        .unwrap()
        .replace("vocab_size = 512", "vocab_size = 300");
    std::fs::write(&path, t).unwrap();
    let e = train(read_config(&path).unwrap(), false, true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("vocabulary of 512 exceeds the model's vocab_size 300"),
        "{e}"
    );
    // Resume without a checkpoint.
    let e = run("", "", true);
    assert!(e.contains("latest"), "{e}");
    // A run, then its checkpoint corrupted.
    let path = write_config(dir.path(), "ok", "steps = 1", "peak = 1e-3");
    train(read_config(&path).unwrap(), false, true).unwrap();
    let st = dir
        .path()
        .join("ok/checkpoints/step-00000001/model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let e = train(read_config(&path).unwrap(), true, true)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.safetensors"), "{e}");
    std::fs::write(&st, &bytes).unwrap();
    // Resume over another dataset.
    let t = std::fs::read_to_string(&path)
        .unwrap()
        .replace("train = \"train-ds\"", "train = \"eval-ds\"");
    std::fs::write(&path, t).unwrap();
    let e = train(read_config(&path).unwrap(), true, true)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("another dataset"), "{e}");
}

#[test]
fn fp8_training_runs_and_resumes_a_checkpoint_saved_in_fp32() {
    let dir = tempfile::tempdir().unwrap();
    datasets(dir.path());
    let lr = "peak = 2e-3\nwarmup = 2";
    let fp32 = write_config(dir.path(), "mixed", "steps = 3", lr);
    train(read_config(&fp32).unwrap(), false, true).unwrap();
    // The same run continued in FP8 (and BF16 moments): weights and moments are FP32 in the
    // checkpoint, so any precision resumes it.
    let fp8 = write_config(dir.path(), "mixed", "steps = 6\nprecision = \"fp8\"", lr);
    let text = std::fs::read_to_string(&fp8)
        .unwrap()
        .replace("[lr]", "[optim]\nbf16_moments = true\n\n[lr]");
    std::fs::write(&fp8, text).unwrap();
    let o = train(read_config(&fp8).unwrap(), true, true).unwrap();
    assert_eq!(o.steps, 6);
    let l = log(&dir.path().join("mixed"));
    let train_lines: Vec<&StepLog> = l.iter().filter(|x| x.kind == LogKind::Train).collect();
    assert_eq!(train_lines.len(), 6);
    assert!(train_lines.iter().all(|x| x.loss.is_finite() && !x.skipped));
    // The FP8 steps differ from what FP32 would have computed from the same state.
    let fp32_more = write_config(dir.path(), "ref", "steps = 6", lr);
    train(read_config(&fp32_more).unwrap(), false, true).unwrap();
    let r = log(&dir.path().join("ref"));
    let step5 = |l: &[StepLog]| {
        l.iter()
            .find(|x| x.kind == LogKind::Train && x.step == 5)
            .unwrap()
            .loss
    };
    let (a, b) = (step5(&l), step5(&r));
    assert!(a != b && (a - b).abs() / b < 0.02, "fp8 {a} vs fp32 {b}");
}

#[test]
fn trace_replays_a_step_and_names_its_documents() {
    let dir = tempfile::tempdir().unwrap();
    datasets(dir.path());
    let cfg = write_config(dir.path(), "traced", "steps = 5", "peak = 2e-3\nwarmup = 2");
    train(read_config(&cfg).unwrap(), false, true).unwrap();
    let run = dir.path().join("traced");
    let t = tokenmill_pipelines::trace::trace_step(&run, 3, None, 5).unwrap();
    let line = log(&run)
        .into_iter()
        .find(|l| l.kind == LogKind::Train && l.step == 3)
        .unwrap();
    assert_eq!(t.samples.len(), 16);
    // The samples' losses average to the step's next-token loss (each sample has 64 targets).
    let mean = t.samples.iter().map(|s| s.loss).sum::<f64>() / 16.0;
    assert!(
        (mean - line.main_loss).abs() < 1e-5,
        "{mean} vs {}",
        line.main_loss
    );
    assert!(t.samples.windows(2).all(|w| w[0].loss >= w[1].loss));
    let text = std::fs::read(dir.path().join("train.txt")).unwrap();
    let (mut docs, mut finite) = (0, 0);
    for s in &t.samples {
        let tokens: u32 = s.docs.iter().map(|d| d.tokens).sum();
        assert_eq!(tokens, 65, "a sample's spans cover its seq_len + 1 tokens");
        for d in &s.docs {
            docs += 1;
            assert!(d.source.ends_with("train.txt"), "{}", d.source);
            let o = d.offset as usize;
            assert!(
                o < text.len() && (o == 0 || text[o - 1] == b'\n'),
                "a block starts at byte {o}"
            );
            // NaN only for a span without a target: a lone token at position 0
            assert!(d.loss > 0.0 || (d.loss.is_nan() && d.tokens == 1), "{d:?}");
            finite += usize::from(d.loss.is_finite());
        }
    }
    assert!(docs >= 16 && finite >= docs - 16);
    // The batch is the one trained on: its replay gives the logged per-sample losses' count
    // and the same documents twice.
    let again = tokenmill_pipelines::trace::trace_step(&run, 3, None, 5).unwrap();
    assert_eq!(
        serde_json::to_string(&again).unwrap(),
        serde_json::to_string(&t).unwrap()
    );
    // `--doc`: the top sample's first document was seen at step 3, with the same loss.
    let d0 = &t.samples[0].docs[0];
    let (p, seen) = tokenmill_pipelines::trace::trace_doc(&run, &d0.id).unwrap();
    assert_eq!(
        (p.source.as_str(), p.offset),
        (d0.source.as_str(), d0.offset)
    );
    let at3: Vec<_> = seen.iter().filter(|s| s.step == 3).collect();
    assert!(
        at3.iter().any(|s| s.loss.to_bits() == d0.loss.to_bits()),
        "{seen:?}"
    );
    assert!(tokenmill_pipelines::trace::trace_doc(&run, "no-such-doc").is_err());
    // Bad input: a step beyond the run, a run of another dataset.
    let e = tokenmill_pipelines::trace::trace_step(&run, 99, None, 5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("step 99") && e.contains("steps 0..=4"), "{e}");
    // A loss table missing for the step asked, a missing log: named.
    std::fs::rename(run.join("losses"), run.join("losses.bak")).unwrap();
    let e = tokenmill_pipelines::trace::trace_step(&run, 3, None, 5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("losses") && e.contains("line 3"), "{e}");
    std::fs::rename(run.join("losses.bak"), run.join("losses")).unwrap();
    std::fs::rename(run.join("log.jsonl"), run.join("log.bak")).unwrap();
    let e = tokenmill_pipelines::trace::trace_step(&run, 3, None, 5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("log.jsonl"), "{e}");
    std::fs::rename(run.join("log.bak"), run.join("log.jsonl")).unwrap();
    let rj = run.join("run.json");
    let v = std::fs::read_to_string(&rj).unwrap();
    let fp = serde_json::from_str::<serde_json::Value>(&v).unwrap()["dataset_fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(&rj, v.replace(&fp, "0000000000000000")).unwrap();
    let e = tokenmill_pipelines::trace::trace_step(&run, 3, None, 5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("another dataset"), "{e}");
}

#[test]
fn the_skip_response_drops_the_updates_of_spiking_steps() {
    let dir = tempfile::tempdir().unwrap();
    datasets(dir.path());
    let lr = "peak = 2e-3\nwarmup = 2";
    // A detector that fires at every step once it has five steps of history.
    let spiky = write_config(dir.path(), "spiky", "steps = 8", lr);
    let t = std::fs::read_to_string(&spiky).unwrap();
    std::fs::write(
        &spiky,
        format!("{t}\n[train.spikes]\nmin_history = 5\nloss_z = -1e9\nresponse = \"skip\"\n"),
    )
    .unwrap();
    train(read_config(&spiky).unwrap(), false, true).unwrap();
    let l = log(&dir.path().join("spiky"));
    let tr: Vec<&StepLog> = l.iter().filter(|x| x.kind == LogKind::Train).collect();
    assert!(tr[..5].iter().all(|x| x.spikes.is_empty() && !x.skipped));
    assert!(
        tr[5..].iter().all(|x| !x.spikes.is_empty() && x.skipped),
        "{:?}",
        tr.iter().map(|x| &x.spikes).collect::<Vec<_>>()
    );
    assert!(tr.iter().all(|x| x.spike_score >= 0.0));
    // So its weights are those of a 5-step run.
    let five = write_config(dir.path(), "five", "steps = 5", lr);
    train(read_config(&five).unwrap(), false, true).unwrap();
    let w = |p: &str| std::fs::read(dir.path().join(p)).unwrap();
    assert_eq!(
        w("spiky/checkpoints/step-00000008/model.safetensors"),
        w("five/checkpoints/step-00000005/model.safetensors")
    );
}

#[test]
fn quarantine_excludes_the_top_documents_from_then_on_and_in_later_runs() {
    let dir = tempfile::tempdir().unwrap();
    datasets(dir.path());
    let lr = "peak = 2e-3\nwarmup = 2";
    let q = write_config(dir.path(), "quar", "steps = 6", lr);
    let t = std::fs::read_to_string(&q).unwrap();
    // Every step spikes from the third on, every span with a target counts as an outlier.
    let spikes = "\n[train.spikes]\nmin_history = 2\nloss_z = -1e9\ndoc_z = -1e9\ndoc_min_targets = 1\ndoc_min_excess = -1e9\nresponse = \"quarantine\"\nquarantine_top_k = 1\n";
    std::fs::write(&q, format!("{t}{spikes}")).unwrap();
    train(read_config(&q).unwrap(), false, true).unwrap();
    let run = dir.path().join("quar");
    let list = tokenmill_trainer::train::read_quarantine(&run.join("quarantine.json")).unwrap();
    assert_eq!(list.len(), 4, "one document per spiking step (2..=5)");
    assert_eq!(
        list.iter().map(|q| q.step).collect::<Vec<_>>(),
        vec![2, 3, 4, 5]
    );
    let l = log(&run);
    let tr: Vec<&StepLog> = l.iter().filter(|x| x.kind == LogKind::Train).collect();
    assert_eq!(tr[2].quarantined, vec![list[0].id.clone()]);
    // From the next step on, the document's tokens no longer count (windows packing masks them).
    let (_, seen) = tokenmill_pipelines::trace::trace_doc(&run, &list[0].id).unwrap();
    assert!(seen.iter().any(|s| s.step == 2 && s.loss.is_finite()));
    assert!(
        seen.iter().filter(|s| s.step > 2).all(|s| s.loss.is_nan()),
        "{seen:?}"
    );
    // A later run over the same dataset leaves them out too; a missing list is an error.
    let later = write_config(dir.path(), "later", "steps = 2", lr);
    let t = std::fs::read_to_string(&later).unwrap().replace(
        "seed = 7",
        "seed = 7\nexclude_from = [\"quar/quarantine.json\"]",
    );
    std::fs::write(&later, &t).unwrap();
    train(read_config(&later).unwrap(), false, true).unwrap();
    std::fs::write(&later, t.replace("quar/quarantine.json", "nowhere.json")).unwrap();
    let e = train(read_config(&later).unwrap(), false, true)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("nowhere.json"), "{e}");
}

/// `tokenmill train` killed with SIGKILL at 20 seeded random moments — in a step, in a
/// checkpoint, in the loss table's writes — and rerun each time (resumed when a checkpoint
/// exists, fresh otherwise) until it finishes: the log's losses, the loss table and the final
/// weights are bitwise those of an uninterrupted run.
#[test]
fn train_killed_anywhere_resumes_to_the_same_bits() {
    use std::process::{Command, Stdio};
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    datasets(d);
    let lr = "peak = 2e-3\nwarmup = 2";
    let extra = "steps = 12\ncheckpoint_every = 2\nlosses_every = 1";
    let run = |cfg: &Path, resume: bool| {
        let mut c = Command::new(tokenmill_bin());
        c.current_dir(d)
            .args(["train", "--quiet", "--config"])
            .arg(cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if resume {
            c.arg("--resume");
        }
        c
    };
    let full = write_config(d, "full", extra, lr);
    let t0 = Instant::now();
    let o = run(&full, false).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let whole = t0.elapsed();
    let losses = |l: &[StepLog]| {
        l.iter()
            .filter(|x| x.kind == LogKind::Train)
            .map(|x| (x.step, x.loss.to_bits(), x.grad_norm.to_bits()))
            .collect::<Vec<_>>()
    };
    let w = |r: &str| {
        std::fs::read(
            d.join(r)
                .join("checkpoints/step-00000012/model.safetensors"),
        )
        .unwrap()
    };
    let table = |r: &str| {
        let mut rows = Vec::new();
        for (_, _, f) in tokenmill_trainer::losslog::files(&d.join(r)).unwrap() {
            rows.extend(
                tokenmill_trainer::losslog::read(&f)
                    .unwrap()
                    .into_iter()
                    .map(|x| (x.seq, x.step, x.sample, x.span, x.doc, x.loss.to_bits())),
            );
        }
        rows.sort_by_key(|x| (x.0, x.2, x.3));
        rows
    };
    let reference = (losses(&log(&d.join("full"))), w("full"), table("full"));
    let mut rng = 0x5DEECE66Du64;
    let (mut kills, mut cycles) = (0, 0);
    // Cycles of a fresh run killed again and again until it finishes (a resumed run is
    // short, so one cycle holds a few kills), each then compared; until 20 kills in all.
    while kills < 20 {
        assert!(cycles < 40, "only {kills} kills landed in 40 cycles");
        let name = format!("killed-{cycles}");
        let cfg = write_config(d, &name, extra, lr);
        kills += kill_until_done(whole.mul_f64(0.8), &mut rng, || {
            let resume = d.join(&name).join("checkpoints/latest").exists();
            run(&cfg, resume).spawn().unwrap()
        });
        assert_eq!(
            losses(&log(&d.join(&name))),
            reference.0,
            "{name}: each step once, identical losses"
        );
        assert_eq!(w(&name), reference.1, "{name}: identical final weights");
        assert_eq!(table(&name), reference.2, "{name}: the same loss table");
        cycles += 1;
    }
    eprintln!(
        "{kills} kills in {cycles} runs, each resumed to the end: identical to the uninterrupted run ({whole:?} a run)"
    );
}
