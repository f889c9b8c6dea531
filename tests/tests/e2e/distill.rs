//! Distillation end to end: a larger teacher trained here on Shakespeare, its top-K stored by
//! `tokenmill distill-data` beside the dataset, and a small student distilled from it
//! (`[train] distill`) against the same student trained on the labels alone for the same steps
//! — compared by held-out loss. Records of another dataset, a rerun with other settings and a
//! teacher with a smaller vocabulary are refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use tokenmill_pipelines::config::BuildConfig;
use tokenmill_shards::Dataset;
use tokenmill_shards::teacher::{TeacherData, TeacherManifest};
use tokenmill_tests::{data, tokenmill_bin};

fn build(text: &str, tok: &Path, out: &Path) {
    let input = out.with_extension("txt");
    std::fs::write(&input, text).unwrap();
    let mut cfg = BuildConfig::default();
    cfg.input.paths = vec![input.display().to_string()];
    cfg.input.read.text_mode = tokenmill_ingest::TextMode::Blocks;
    cfg.tokenizer.path = tok.to_path_buf();
    cfg.output.dir = out.to_path_buf();
    cfg.run.quiet = true;
    tokenmill_pipelines::build(&cfg).unwrap();
}

fn train(d: &Path, name: &str, body: &str) -> PathBuf {
    let path = d.join(format!("{name}.toml"));
    std::fs::write(&path, body).unwrap();
    let cfg = tokenmill_pipelines::train::read_config(&path).unwrap();
    tokenmill_pipelines::train::train(cfg, false, true).unwrap();
    d.join(name)
}

fn distill_data(d: &Path, args: &[&str]) -> std::process::Output {
    Command::new(tokenmill_bin())
        .current_dir(d)
        .arg("distill-data")
        .args(args)
        .output()
        .unwrap()
}

/// `distill-data` from the test's teacher over `train-ds` at K = `k`, context 64, into
/// `teacher-k16`.
fn distill_k(d: &Path, k: &str) -> std::process::Output {
    distill_data(
        d,
        &[
            "--teacher",
            "teacher",
            "--dataset",
            "train-ds",
            "--top-k",
            k,
            "--context",
            "64",
            "--out",
            "teacher-k16",
        ],
    )
}

fn eval_loss(run: &Path) -> f64 {
    super::train::log(run)
        .iter()
        .rev()
        .find(|l| l.kind == tokenmill_trainer::train::LogKind::Eval)
        .expect("an eval line")
        .main_loss
}

#[test]
fn a_student_distilled_from_a_larger_teacher_beats_the_labels_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let shakespeare = std::fs::read_to_string(data("text/tinyshakespeare.txt")).unwrap();
    let paragraphs: Vec<&str> = shakespeare.split("\n\n").collect();
    // Every tenth paragraph held out.
    let pick = |held: bool| {
        paragraphs
            .iter()
            .enumerate()
            .filter(|(i, _)| (i % 10 == 9) == held)
            .map(|(_, p)| *p)
            .collect::<Vec<_>>()
            .join("\n\n")
    };
    let opts = tokenmill_shards::bpe::BpeTrainConfig {
        vocab_size: 512,
        special_tokens: vec!["<|endoftext|>".into()],
        ..Default::default()
    };
    let tok = d.join("tokenizer.json");
    tokenmill_shards::bpe::train_bpe(paragraphs.iter(), &opts, &tok).unwrap();
    build(&pick(false), &tok, &d.join("train-ds"));
    build(&pick(true), &tok, &d.join("held-ds"));
    let data_section = "[data]\ntrain = \"train-ds\"\neval = \"held-ds\"\nseq_len = 64\nbatch = 16\npacking = \"documents\"\nattention_reset = true\n";
    // The teacher: 4× the student's width, trained 4× as long.
    let teacher = train(
        d,
        "teacher",
        &format!(
            "[model]\npreset = \"tiny\"\nhidden_size = 128\nintermediate_size = 256\nmoe_intermediate_size = 64\nnum_attention_heads = 4\n\n{data_section}\n[lr]\npeak = 3e-3\nwarmup = 10\n\n[train]\nout = \"teacher\"\nsteps = 240\neval_batches = 24\nthreads = 2\n"
        ),
    );
    let t0 = std::time::Instant::now();
    let out = distill_k(d, "16");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secs = t0.elapsed().as_secs_f64();
    assert!(
        said.contains("96 bytes per token (96 GB per billion tokens)"),
        "{said}"
    );
    // The records cover every token; each document's last token has none.
    let ds = Dataset::open(&d.join("train-ds")).unwrap();
    let m = TeacherManifest::load(&d.join("teacher-k16")).unwrap();
    assert_eq!(m.tokens, ds.manifest().tokens);
    let entries: u64 = m.shards.iter().map(|s| s.entries).sum();
    assert_eq!(entries, ds.manifest().tokens - ds.manifest().documents);
    assert_eq!(m.teacher.context, 64);
    // The stored top-1 is the teacher's greedy choice: agrees with the next token often.
    let td = TeacherData::open(&d.join("teacher-k16"), &ds, true).unwrap();
    let shard = ds.shard(0).unwrap();
    let (mut ids, mut logp) = (vec![0u32; 16], vec![0f32; 16]);
    let (mut hits, mut n) = (0, 0);
    for t in 0..shard.total_tokens().min(20_000) - 1 {
        td.read(0, t, 512, &mut ids, &mut logp).unwrap();
        if ids[0] == u32::MAX {
            continue;
        }
        assert!(logp.windows(2).all(|w| w[0] >= w[1]), "sorted: {logp:?}");
        assert!(logp.iter().map(|&l| f64::from(l).exp()).sum::<f64>() <= 1.001);
        hits += usize::from(shard.tokens(t + 1, t + 2).unwrap()[0] == ids[0]);
        n += 1;
    }
    let top1 = hits as f64 / n as f64;
    // The students: the same model, seed and steps; one distilled.
    let student = |name: &str, distill: &str| {
        train(
            d,
            name,
            &format!(
                "[model]\npreset = \"tiny\"\n\n{data_section}\n[lr]\npeak = 3e-3\nwarmup = 10\n\n[train]\nout = \"{name}\"\nsteps = 120\neval_batches = 24\nthreads = 2\n{distill}"
            ),
        )
    };
    let labels = student("labels", "");
    let distilled = student(
        "distilled",
        "distill = { data = \"teacher-k16\", alpha = 0.5, temperature = 1.0 }\n",
    );
    let (lt, ll, ld) = (
        eval_loss(&teacher),
        eval_loss(&labels),
        eval_loss(&distilled),
    );
    let kl: Vec<f64> = super::train::log(&distilled)
        .iter()
        .filter_map(|l| l.distill_kl)
        .collect();
    eprintln!(
        "held-out loss: teacher {lt:.4}, student on labels {ll:.4}, distilled {ld:.4}; teacher top-1 {top1:.3}; distill-data {secs:.1} s; KL {:.3} → {:.3}",
        kl[0],
        kl[kl.len() - 1]
    );
    assert!(
        lt < ll,
        "the teacher ({lt}) is better than the student ({ll})"
    );
    assert!(ld < ll - 0.04, "distilled {ld:.4} vs labels alone {ll:.4}");
    assert_eq!(kl.len(), 120, "every step logs its KL");
    assert!(kl[kl.len() - 1] < kl[0] * 0.5, "the KL falls: {kl:?}");

    // A rerun keeps every shard; other settings into the same directory are refused.
    let out = distill_k(d, "16");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("1 kept from an earlier run"),
        "{said}"
    );
    let out = distill_k(d, "4");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("another dataset, teacher or settings"),
        "{err}"
    );
    // Records of another dataset are refused by fingerprint, naming both.
    let held = Dataset::open(&d.join("held-ds")).unwrap();
    let e = TeacherData::open(&d.join("teacher-k16"), &held, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("teacher.json") && e.contains("held-ds"), "{e}");
    let cfg = d.join("wrong.toml");
    std::fs::write(
        &cfg,
        "[model]\npreset = \"tiny\"\n\n[data]\ntrain = \"held-ds\"\nseq_len = 64\nbatch = 16\n\n[train]\nout = \"wrong\"\nsteps = 1\ndistill = { data = \"teacher-k16\" }\n",
    )
    .unwrap();
    let c = tokenmill_pipelines::train::read_config(&cfg).unwrap();
    let e = tokenmill_pipelines::train::train(c, false, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("written for the dataset"), "{e}");
    // A teacher whose vocabulary is smaller than the tokenizer's.
    let mut small = tokenmill_trainer::ModelConfig::preset("tiny").unwrap();
    small.vocab_size = 256;
    let m = tokenmill_trainer::model::Model::new(small).unwrap();
    tokenmill_trainer::hf::save(&d.join("small-vocab"), &m, &m.init::<f32>(1)).unwrap();
    let out = distill_data(
        d,
        &[
            "--teacher",
            "small-vocab",
            "--dataset",
            "held-ds",
            "--out",
            "x",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("smaller than the dataset's tokenizer"),
        "{err}"
    );
}
