//! Loss spikes traced to their documents, end to end: poisoned documents injected at known
//! byte offsets of real text make the detector fire where they enter, `trace` names them with
//! their source file and offset, and quarantine + rollback re-runs the same steps without the
//! spike; clean text never fires with the default thresholds.

use std::path::{Path, PathBuf};

use tokenmill_pipelines::config::BuildConfig;
use tokenmill_pipelines::train::{read_config, train};
use tokenmill_shards::bpe::{BpeTrainConfig, train_bpe};
use tokenmill_shards::{TextTokenizer, TokenizeConfig};
use tokenmill_tests::data;
use tokenmill_trainer::train::{LogKind, StepLog, superseded};

/// A poisoned document: its kind and the byte offset it was written at.
#[derive(Debug, Clone)]
struct Poison {
    kind: &'static str,
    offset: u64,
}

/// `train.txt`: the first 20 % of tinyshakespeare's blocks (blank-line separated), with three
/// poisoned blocks written at 1/4, 1/2 and 3/4 when `poison`; a 512-token BPE trained on the
/// clean text; the train and held-out (last 10 %) datasets. Returns the poisons.
fn corpus(dir: &Path, poison: bool) -> Vec<Poison> {
    let text = std::fs::read_to_string(data("text/tinyshakespeare.txt")).unwrap();
    let blocks: Vec<&str> = text.split("\n\n").collect();
    let clean = &blocks[..blocks.len() / 5];
    let held_out = blocks[blocks.len() * 9 / 10..].join("\n\n");
    let tok_path = dir.join("tokenizer.json");
    let opts = BpeTrainConfig {
        vocab_size: 512,
        ..Default::default()
    };
    train_bpe(clean.iter().copied(), &opts, &tok_path).unwrap();
    let tok = TextTokenizer::load(&tok_path, &TokenizeConfig::default()).unwrap();
    // Three kinds of poison, ~150-250 tokens each.
    let ja = std::fs::read_to_string(data("multilingual/wagahaiwa_nekodearu.ja.txt")).unwrap();
    let foreign: String = ja
        .lines()
        .skip(30)
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_whitespace())
        .take(70)
        .collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let ids: Vec<u32> = (0..200)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 512) as u32
        })
        .collect();
    let random: String = tok
        .decode(&ids)
        .unwrap()
        .replace("\n\n", " ")
        .replace('\r', " ");
    let repeated = "Z".repeat(200);
    let poisons: [(&str, String); 3] = [
        ("foreign script", foreign),
        ("random tokens", random),
        ("repeated character", repeated),
    ];
    let mut out = String::new();
    let mut placed = Vec::new();
    for (i, b) in clean.iter().enumerate() {
        if poison {
            for (k, (kind, p)) in poisons.iter().enumerate() {
                if i == clean.len() * (k + 1) / 4 {
                    placed.push(Poison {
                        kind,
                        offset: out.len() as u64,
                    });
                    out.push_str(p.trim());
                    out.push_str("\n\n");
                }
            }
        }
        out.push_str(b);
        out.push_str("\n\n");
    }
    std::fs::write(dir.join("train.txt"), &out).unwrap();
    std::fs::write(dir.join("eval.txt"), &held_out).unwrap();
    for (name, file) in [("train-ds", "train.txt"), ("eval-ds", "eval.txt")] {
        let mut cfg = BuildConfig::default();
        cfg.input.paths = vec![dir.join(file).display().to_string()];
        cfg.input.read.text_mode = tokenmill_ingest::TextMode::Blocks;
        cfg.tokenizer.path = tok_path.clone();
        cfg.output.dir = dir.join(name);
        cfg.run.quiet = true;
        tokenmill_pipelines::build(&cfg).unwrap();
    }
    placed
}

fn config(dir: &Path, name: &str, spikes: &str) -> PathBuf {
    let toml = format!(
        r#"
[model]
preset = "tiny"
vocab_size = 512

[data]
train = "train-ds"
eval = "eval-ds"
seq_len = 64
batch = 8
seed = 11

[lr]
peak = 3e-3
min = 3e-4
warmup = 20
constant = 100
decay = 60

[train]
out = "{name}"
steps = 180
threads = 2
eval_batches = 8
checkpoint_every = 10

[train.spikes]
{spikes}
"#
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).unwrap();
    path
}

fn log(run: &Path) -> Vec<StepLog> {
    tokenmill_pipelines::plot::read_log(run).unwrap()
}

/// Per training step of `run` (effective lines), the poison targets in its batch: traced
/// through `trace --doc` of each poisoned document.
fn poison_steps(run: &Path, ids: &[String]) -> std::collections::BTreeMap<u64, u64> {
    poison_exposures(run, ids)
        .into_iter()
        .map(|(s, (n, _))| (s, n))
        .collect()
}

/// Per step: the poisoned targets, and the highest loss of a poisoned span above the step's
/// next-token loss (the exposure's excess, nats).
fn poison_exposures(run: &Path, ids: &[String]) -> std::collections::BTreeMap<u64, (u64, f64)> {
    let mut m = std::collections::BTreeMap::new();
    for id in ids {
        let (_, seen) = tokenmill_pipelines::trace::trace_doc(run, id).unwrap();
        for s in seen.iter().filter(|s| !s.superseded) {
            let e = m.entry(s.step).or_insert((0, f64::MIN));
            e.0 += s.tokens as u64;
            e.1 = e.1.max(s.loss - s.step_loss);
        }
    }
    m
}

fn spiked(l: &[StepLog]) -> Vec<u64> {
    l.iter()
        .filter(|x| x.kind == LogKind::Train && !x.spikes.is_empty())
        .map(|x| x.step)
        .collect()
}

#[test]
fn poisoned_documents_spike_are_traced_and_quarantine_with_rollback_removes_the_spikes() {
    let dir = tempfile::tempdir().unwrap();
    let poisons = corpus(dir.path(), true);
    assert_eq!(poisons.len(), 3);
    let source = dir.path().join("train.txt").display().to_string();
    // 1. The poisoned run: default detectors, response `log`.
    let cfg = config(dir.path(), "poisoned", "");
    let poisoned_eval = train(read_config(&cfg).unwrap(), false, true)
        .unwrap()
        .eval_loss
        .unwrap();
    let run = dir.path().join("poisoned");
    let l = log(&run);
    // The poisoned documents' ids, found by their source file and byte offset.
    let ds = tokenmill_shards::Dataset::open(&dir.path().join("train-ds")).unwrap();
    let prov = ds.provenance(0).unwrap();
    let ids: Vec<String> = poisons
        .iter()
        .map(|p| {
            let d = prov.iter().find(|d| d.offset == p.offset);
            d.unwrap_or_else(|| panic!("no {} document at byte {}", p.kind, p.offset))
                .id
                .clone()
        })
        .collect();
    let poisoned = poison_steps(&run, &ids);
    let fired = spiked(&l);
    // Every training line carries the gradient norm of each parameter group, which make up the
    // step's norm; a gradient-norm spike without a flagged document names the group that jumped.
    let mut optimizer = Vec::new();
    for x in l.iter().filter(|x| x.kind == LogKind::Train) {
        assert!(
            x.grad_norms.len() >= 8,
            "step {}: {:?}",
            x.step,
            x.grad_norms
        );
        let total = x.grad_norms.values().map(|n| n * n).sum::<f64>().sqrt();
        assert!(
            (total - x.grad_norm).abs() <= 1e-6 * x.grad_norm,
            "step {}: groups {total} vs {}",
            x.step,
            x.grad_norm
        );
        let grad_only = x.spikes.iter().any(|f| f.starts_with("grad-norm"))
            && !x.spikes.iter().any(|f| f.starts_with("doc"));
        if grad_only {
            let o = x.optimizer.as_ref().unwrap_or_else(|| {
                panic!(
                    "step {}: a grad-norm spike without a group: {:?}",
                    x.step, x.spikes
                )
            });
            assert!(x.grad_norms.contains_key(&o.group) && o.norm > o.typical);
            optimizer.push(format!(
                "{} {} {:.0} % z={:.0}",
                x.step,
                o.group,
                100.0 * o.share,
                o.z
            ));
        } else {
            assert!(x.optimizer.is_none(), "step {}", x.step);
        }
    }
    eprintln!("optimizer spikes: {optimizer:?}");
    let summary = format!("spikes at {fired:?}; poison targets per step {poisoned:?}");
    // Where the poison enters once the model knows the text (step ≥ 100), with at least half a
    // sample of it standing ≥ 1.5 nats above its step's loss (an out-of-distribution exposure,
    // as the calibration counts them; a poison seen again may have been learnt), a detector
    // fires.
    let strong: Vec<u64> = poison_exposures(&run, &ids)
        .iter()
        .filter(|&(&s, &(n, excess))| s >= 100 && n >= 32 && excess >= 1.5)
        .map(|(&s, _)| s)
        .collect();
    assert!(strong.len() >= 3, "{summary}");
    assert!(strong.iter().all(|s| fired.contains(s)), "{summary}");
    // The document detector fires only where poison is, and `trace` names the poisoned
    // document — its source file and byte offset — as the top contributor.
    let doc_fired: Vec<&StepLog> = l
        .iter()
        .filter(|x| x.kind == LogKind::Train && x.spikes.iter().any(|s| s.starts_with("doc z=")))
        .collect();
    assert!(doc_fired.len() >= 3, "{summary}");
    for x in &doc_fired {
        assert!(poisoned.contains_key(&x.step), "step {}: {summary}", x.step);
        let t = tokenmill_pipelines::trace::trace_step(&run, x.step, None, 3).unwrap();
        // Among the step's top three contributors (a short flagged span can add less to the
        // step's loss than a long clean one): a poisoned document.
        let top = t
            .top_documents(3)
            .into_iter()
            .find(|d| ids.contains(&d.id))
            .unwrap_or_else(|| {
                panic!(
                    "step {}: no poison among the top documents {:?}",
                    x.step,
                    t.top_documents(3)
                )
            });
        let p = poisons
            .iter()
            .zip(&ids)
            .find(|(_, id)| **id == top.id)
            .unwrap();
        assert_eq!(
            (top.source.as_str(), top.offset),
            (source.as_str(), p.0.offset)
        );
        let peak = top.peak.as_ref().unwrap();
        assert!(peak.loss > top.loss && peak.at.is_some(), "{peak:?}");
    }
    // The loss table is SQL-queryable: the poisoned documents' highest span losses.
    let batches = tokenmill_pipelines::sql::query_dir(
        &run,
        "SELECT count(*) AS n, count(DISTINCT seq) AS lines, \
         (SELECT max(loss) FROM losses WHERE targets > 0) AS worst FROM losses",
    )
    .unwrap();
    let b = &batches[0];
    use arrow::array::AsArray;
    let lines = b
        .column(1)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0);
    let worst = b
        .column(2)
        .as_primitive::<arrow::datatypes::Float32Type>()
        .value(0);
    assert_eq!(lines, 180);
    assert!(worst > 8.0, "{worst}");
    // Each spike's report was written as the run went: JSON and text.
    let reports: Vec<_> = std::fs::read_dir(run.join("spikes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(reports.len(), fired.len());
    for p in &reports {
        let t: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        assert!(!t["spikes"].as_array().unwrap().is_empty());
        assert!(p.with_extension("txt").is_file());
    }
    // The report shows them.
    let (rep, html) = tokenmill_pipelines::report::report(&run, 3).unwrap();
    assert_eq!(rep.spikes.len(), fired.len());
    assert!(html.contains(&ids[0]) || html.contains(&ids[1]) || html.contains(&ids[2]));
    assert!(html.contains("<mark>") && html.contains("<svg"));

    // 2. The same run with quarantine + rollback: every spike is undone, the poison is
    // quarantined, and the steps that spiked run again without a spike.
    let cfg = config(
        dir.path(),
        "healed",
        "response = [\"quarantine\", \"rollback\"]",
    );
    let healed_eval = train(read_config(&cfg).unwrap(), false, true)
        .unwrap()
        .eval_loss
        .unwrap();
    let hrun = dir.path().join("healed");
    let hl = log(&hrun);
    let gone = superseded(&hl);
    let effective: Vec<&StepLog> = hl
        .iter()
        .zip(&gone)
        .filter(|(x, g)| x.kind == LogKind::Train && !**g)
        .map(|(x, _)| x)
        .collect();
    assert_eq!(effective.len(), 180);
    let after: Vec<u64> = effective
        .iter()
        .filter(|x| !x.spikes.is_empty())
        .map(|x| x.step)
        .collect();
    assert!(after.is_empty(), "spikes left at {after:?}");
    let rollbacks = hl.iter().filter(|x| x.rollback.is_some()).count();
    assert!(rollbacks >= 3, "{rollbacks} rollbacks");
    let q = tokenmill_trainer::train::read_quarantine(&hrun.join("quarantine.json")).unwrap();
    assert!(q.len() >= 2, "{q:?}");
    assert!(
        q.iter().all(|d| ids.contains(&d.id)),
        "innocent quarantined: {q:?}"
    );
    eprintln!(
        "{summary}\nhealed: {rollbacks} rollbacks, quarantined {:?}, held-out {healed_eval:.4} vs poisoned {poisoned_eval:.4}",
        q.iter().map(|d| (&d.id, d.step)).collect::<Vec<_>>()
    );
    assert!(
        healed_eval <= poisoned_eval + 0.01,
        "held-out {healed_eval} vs poisoned {poisoned_eval}"
    );
    // A poisoned document, once quarantined, is never trained on again (its tokens are
    // masked in windows packing: no loss).
    for d in &q {
        let (_, seen) = tokenmill_pipelines::trace::trace_doc(&hrun, &d.id).unwrap();
        assert!(
            seen.iter()
                .filter(|s| !s.superseded && s.step > d.step)
                .all(|s| s.loss.is_nan()),
            "{seen:?}"
        );
    }
}

#[test]
fn clean_text_never_fires_the_default_detectors() {
    let dir = tempfile::tempdir().unwrap();
    assert!(corpus(dir.path(), false).is_empty());
    let cfg = config(dir.path(), "clean", "");
    train(read_config(&cfg).unwrap(), false, true).unwrap();
    let l = log(&dir.path().join("clean"));
    let max = |f: &dyn Fn(&StepLog) -> Option<f64>| l.iter().filter_map(f).fold(f64::MIN, f64::max);
    eprintln!(
        "clean: highest z of loss {:.1}, grad norm {:.1}, document {:.1}",
        max(&|x| x.loss_z),
        max(&|x| x.grad_norm_z),
        max(&|x| x.doc_z)
    );
    assert_eq!(spiked(&l), Vec::<u64>::new());
    // the detectors did look: z-scores from min_history on
    assert!(
        l.iter()
            .filter(|x| x.kind == LogKind::Train && x.doc_z.is_some())
            .count()
            >= 150
    );
}

/// A dataset of two input files — English plays and Japanese prose — trained with
/// `doc_reference = "source"`: every step's logged document z equals the detector replayed
/// over the run's loss table with each span's source read from the dataset's provenance (the
/// same figures with one source for all would differ), so the trainer judges each span against
/// its own input file's spans.
#[test]
fn a_dataset_of_two_sources_is_judged_per_source() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let en: Vec<String> = std::fs::read_to_string(data("text/tinyshakespeare.txt"))
        .unwrap()
        .split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .take(1200)
        .map(str::to_string)
        .collect();
    let ja: Vec<String> = std::fs::read_to_string(data("multilingual/wagahaiwa_nekodearu.ja.txt"))
        .unwrap()
        .lines()
        .skip(100)
        .take(120)
        .collect::<Vec<_>>()
        .chunks(3)
        .map(|c| c.join("\n"))
        .collect();
    let write = |name: &str, docs: &[String]| {
        let lines: Vec<String> = docs
            .iter()
            .enumerate()
            .map(|(i, t)| serde_json::json!({"id": format!("{name}-{i}"), "text": t}).to_string())
            .collect();
        std::fs::write(d.join(format!("{name}.jsonl")), lines.join("\n") + "\n").unwrap();
    };
    write("en", &en);
    write("ja", &ja);
    let tok = d.join("tokenizer.json");
    train_bpe(
        en.iter().chain(&ja).map(String::as_str),
        &BpeTrainConfig {
            vocab_size: 512,
            ..Default::default()
        },
        &tok,
    )
    .unwrap();
    let mut cfg = BuildConfig::default();
    cfg.input.paths = vec![
        d.join("en.jsonl").display().to_string(),
        d.join("ja.jsonl").display().to_string(),
    ];
    cfg.tokenizer.path = tok;
    cfg.output.dir = d.join("train-ds");
    cfg.run.quiet = true;
    tokenmill_pipelines::build(&cfg).unwrap();
    std::fs::create_dir_all(d.join("eval-ds")).unwrap();
    let toml = std::fs::read_to_string(config(
        d,
        "run",
        "doc_reference = \"source\"\ndoc_source_min = 8",
    ))
    .unwrap()
    .replace("eval = \"eval-ds\"\n", "")
    .replace("steps = 180", "steps = 60")
    .replace("checkpoint_every = 10", "checkpoint_every = 60");
    std::fs::write(d.join("run.toml"), toml).unwrap();
    train(read_config(&d.join("run.toml")).unwrap(), false, true).unwrap();

    let run = tokenmill_cli::bench::spikes::read_run(&d.join("run"), &d.join("train-ds")).unwrap();
    let sources: std::collections::BTreeSet<u32> = run
        .iter()
        .flat_map(|s| s.spans.iter().map(|x| x.0.source))
        .collect();
    assert_eq!(sources.len(), 2, "both input files seen: {sources:?}");
    let logged: Vec<Option<f64>> = log(&d.join("run"))
        .iter()
        .filter(|l| l.kind == LogKind::Train)
        .map(|l| l.doc_z)
        .collect();
    let replay = |reference, one_source: bool| -> Vec<Option<f64>> {
        let mut steps = run.clone();
        if one_source {
            steps
                .iter_mut()
                .for_each(|s| s.spans.iter_mut().for_each(|x| x.0.source = 0));
        }
        let cfg = tokenmill_trainer::spikes::SpikeConfig {
            doc_reference: reference,
            doc_source_min: 8,
            ..Default::default()
        };
        tokenmill_cli::bench::spikes::replay_observations(&steps, &cfg)
            .into_iter()
            .map(|(_, o)| o.doc_z.map(|z| z.0))
            .collect()
    };
    use tokenmill_trainer::spikes::DocReference;
    let same = |a: &[Option<f64>], b: &[Option<f64>]| {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| match (x, y) {
                (Some(x), Some(y)) => (x - y).abs() <= 1e-3 * x.abs().max(1.0),
                (None, None) => true,
                _ => false,
            })
    };
    let judged = logged.iter().filter(|z| z.is_some()).count();
    assert!(judged >= 35, "the detector judged {judged} of 60 steps");
    assert!(
        same(&logged, &replay(DocReference::Source, false)),
        "logged {logged:?}"
    );
    assert!(!same(&logged, &replay(DocReference::Source, true)));
    assert!(!same(&logged, &replay(DocReference::Global, false)));

    // The spans read back as the text the model saw, from the right source file; judged
    // against the English file, the Japanese windows are another script and the English ones
    // ordinary text.
    use tokenmill_pipelines::oddity::{Profile, Script};
    let mut spans = tokenmill_pipelines::trace::SpanText::open(&d.join("train-ds")).unwrap();
    let english = Profile::of(&en.join("\n\n"));
    let (mut ja_odd, mut ja_n, mut en_odd, mut en_n) = (0, 0, 0, 0);
    for s in run.iter().take(20) {
        for ((sp, id), at) in s.spans.iter().zip(&s.at) {
            let text = spans
                .text(at.shard, at.doc, at.doc_offset, at.tokens)
                .unwrap();
            // a document's tokens end with the end-of-text token
            let text = text.replace("<|endoftext|>", "");
            let source = spans.source(at.shard, at.doc).unwrap();
            let i: usize = id.rsplit('-').next().unwrap().parse().unwrap();
            // judged as the calibration judges them: windows of at least 16 targets
            let odd = Profile::of(&text)
                .oddity(&english)
                .filter(|_| sp.targets >= 16);
            let n = (sp.targets >= 16) as usize;
            if id.starts_with("ja-") {
                assert!(source.ends_with("ja.jsonl"), "{source}");
                assert!(ja[i].contains(text.trim()), "{text:?} is not in {id}");
                ja_n += n;
                ja_odd += matches!(
                    odd,
                    Some(tokenmill_pipelines::oddity::Oddity::Script {
                        script: Script::Cjk,
                        ..
                    })
                ) as usize;
            } else {
                assert!(source.ends_with("en.jsonl"), "{source}");
                assert!(en[i].contains(text.trim()), "{text:?} is not in {id}");
                en_n += n;
                en_odd += odd.is_some() as usize;
            }
        }
    }
    assert!(ja_n > 0 && en_n > 0);
    assert_eq!(ja_odd, ja_n, "every Japanese window is another script");
    assert!(
        en_odd * 10 <= en_n,
        "{en_odd} of {en_n} English windows called unusual"
    );
}
