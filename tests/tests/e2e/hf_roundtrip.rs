//! In and out of the Hugging Face layout: `tokenmill export` (sharded safetensors with the
//! index, F32 or BF16) read back bit for bit; `[model] init` continuing from the export (the
//! same weights, the same held-out loss as the run it came from) and refusing what it cannot
//! represent; `tokenmill generate` (greedy equal to argmax over full forwards, sampling fixed
//! by the seed); and (ignored unless the Python peers are there) transformers loading the
//! export with the same loss, and transformers' greedy `generate` giving the same tokens.

use std::path::{Path, PathBuf};
use std::process::Command;

use tokenmill_pipelines::eval::EvalModel;
use tokenmill_pipelines::train::{read_config, train};
use tokenmill_shards::{TextTokenizer, TokenizeConfig};
use tokenmill_tests::{repo_root, tokenmill_bin};
use tokenmill_trainer::train::{ComputeDevice, LogKind, Trainer};

use super::train::{datasets, log, write_config};

/// The tiny model of the training tests, trained 6 steps (checkpoint at the end).
fn trained_run(dir: &Path) -> PathBuf {
    datasets(dir);
    let cfg = write_config(
        dir,
        "run",
        "steps = 6\ncheckpoint_every = 6",
        "peak = 3e-3\nwarmup = 2",
    );
    train(read_config(&cfg).unwrap(), false, true).unwrap();
    dir.join("run")
}

fn tm(args: &[&str]) -> std::process::Output {
    Command::new(tokenmill_bin()).args(args).output().unwrap()
}

fn p(x: &Path) -> String {
    x.display().to_string()
}

/// A training config for `name` whose `[model]` section is `model` (the data and loop of the
/// training tests).
fn config_with_model(dir: &Path, name: &str, model: &str) -> PathBuf {
    let path = write_config(dir, name, "steps = 1", "peak = 3e-3\nwarmup = 2");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace("preset = \"tiny\"\nvocab_size = 512\n", model);
    assert!(text.contains(model));
    std::fs::write(&path, text).unwrap();
    path
}

/// `x` rounded to bfloat16 (nearest even), as f32; finite values only.
fn round_bf16(x: f32) -> f32 {
    let b = x.to_bits();
    f32::from_bits(b.wrapping_add(0x7fff + ((b >> 16) & 1)) & 0xffff_0000)
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

#[test]
fn export_reads_back_init_continues_the_run_and_generate_decodes_greedily() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let run = trained_run(dir);
    let ckpt = run.join("checkpoints/step-00000006");
    let (_, want) = tokenmill_trainer::hf::load(&ckpt).unwrap();

    // F32, sharded once over 100 KB: every tensor bit for bit, and the run's tokenizer beside.
    let exp32 = dir.join("exp32");
    let o = tm(&[
        "export",
        &p(&run),
        "--out",
        &p(&exp32),
        "--shard-size",
        "100KB",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let files = rep["weights"]["files"].as_array().unwrap();
    assert!(files.len() > 2, "{rep}");
    assert!(exp32.join("model.safetensors.index.json").is_file());
    assert!(!exp32.join("model.safetensors").exists());
    assert!(exp32.join("tokenizer.json").is_file());
    let (_, got) = tokenmill_trainer::hf::load(&exp32).unwrap();
    assert_eq!(got, want);

    // BF16 in one file (under the default 5 GB): the weights rounded to nearest even.
    let exp16 = dir.join("exp16");
    let o = tm(&[
        "export",
        &p(&run),
        "--step",
        "6",
        "--dtype",
        "bf16",
        "--out",
        &p(&exp16),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(exp16.join("model.safetensors").is_file());
    let (m16, got16) = tokenmill_trainer::hf::load(&exp16).unwrap();
    // Rounded, but for the MoE routers and their biases, which stay F32.
    let mut rounded = want.clone();
    for s in &m16.layout.specs {
        if !s.name.contains("mlp.gate.") {
            rounded[s.range.clone()]
                .iter_mut()
                .for_each(|x| *x = round_bf16(*x));
        }
    }
    assert_eq!(got16, rounded);
    assert_ne!(got16, want);
    let bytes = |d: &Path| -> u64 {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    };
    let (b32, b16) = (bytes(&exp32), bytes(&exp16));
    assert!(
        b16 * 2 < b32 + 200_000 && b16 * 2 > b32 - 200_000,
        "{b16} vs {b32}"
    );

    // Bad requests: a step without a checkpoint, a directory already holding files.
    let o = tm(&[
        "export",
        &p(&run),
        "--step",
        "3",
        "--out",
        &p(&dir.join("x")),
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("step 3") && e.contains("6"),
        "{e}"
    );
    let o = tm(&["export", &p(&run), "--out", &p(&exp16)]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("not empty"), "{e}");

    // `[model] init` from the sharded export: the same weights (MTP module included) and the
    // same held-out loss as the run at its last step.
    let cfg = config_with_model(dir, "cont", "init = \"exp32\"\n");
    let mut t = Trainer::new(read_config(&cfg).unwrap(), false).unwrap();
    assert_eq!(t.params(), &want[..]);
    let eval = t.evaluate().unwrap().unwrap();
    let logged = log(&run)
        .into_iter()
        .rfind(|l| l.kind == LogKind::Eval && l.step == 6)
        .expect("the run's eval at step 6")
        .loss;
    assert!(rel(eval, logged) < 1e-12, "{eval} vs {logged}");
    let step = t.train_step().unwrap();
    assert!(step.loss.is_finite());
    drop(t);
    // From the run directory itself (its latest checkpoint) and from the BF16 export.
    let cfg = config_with_model(dir, "cont2", "init = \"run\"\n");
    let t = Trainer::new(read_config(&cfg).unwrap(), false).unwrap();
    assert_eq!(t.params(), &want[..]);
    drop(t);
    let cfg = config_with_model(dir, "cont3", "init = \"exp16\"\n");
    let t = Trainer::new(read_config(&cfg).unwrap(), false).unwrap();
    assert_eq!(t.params(), &rounded[..]);
    drop(t);

    // What init cannot represent is named: a model whose tensors differ from the weights' (by
    // preset or by field), YaRN, another architecture.
    let cfg = config_with_model(dir, "bad1", "preset = \"small\"\ninit = \"exp32\"\n");
    let e = Trainer::new(read_config(&cfg).unwrap(), false)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("shape") && e.contains("50304"), "{e}");
    let cfg = config_with_model(dir, "bad2", "init = \"exp32\"\nvocab_size = 1024\n");
    let e = Trainer::new(read_config(&cfg).unwrap(), false)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("shape") && e.contains("1024"), "{e}");
    let yarn = dir.join("yarn");
    std::fs::create_dir(&yarn).unwrap();
    for f in std::fs::read_dir(&exp32).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), yarn.join(f.file_name())).unwrap();
    }
    let cj = yarn.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cj).unwrap()).unwrap();
    v["rope_scaling"] = serde_json::json!({"type": "yarn", "factor": 40});
    std::fs::write(&cj, v.to_string()).unwrap();
    let cfg = config_with_model(dir, "bad3", "init = \"yarn\"\n");
    let e = Trainer::new(read_config(&cfg).unwrap(), false)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("rope_scaling") && e.contains("config.json"),
        "{e}"
    );
    v["rope_scaling"] = serde_json::Value::Null;
    v["model_type"] = "mixtral".into();
    std::fs::write(&cj, v.to_string()).unwrap();
    let e = Trainer::new(read_config(&cfg).unwrap(), false)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("model_type") && e.contains("mixtral"), "{e}");

    // Generation: greedy tokens are the argmax of a full forward over everything before them.
    let prompt = "ROMEO:\nWhat";
    let o = tm(&[
        "generate",
        "--model",
        &p(&exp32),
        "--prompt",
        prompt,
        "--max-tokens",
        "16",
        "--ignore-eos",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let g: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let toks: Vec<u32> = serde_json::from_value(g["tokens"].clone()).unwrap();
    assert_eq!(toks.len(), 16);
    let tok =
        TextTokenizer::load(&exp32.join("tokenizer.json"), &TokenizeConfig::default()).unwrap();
    let mut seq = tok.encode(prompt).unwrap();
    assert_eq!(
        serde_json::from_value::<Vec<u32>>(g["prompt_tokens"].clone()).unwrap(),
        seq
    );
    let m = EvalModel::load(&exp32, ComputeDevice::Cpu).unwrap();
    let v = m.vocab_size();
    for &t in &toks {
        let s = seq.len();
        let mut ids = seq.clone();
        ids.push(0);
        let f = m.forward(&ids, None, 1, s).unwrap();
        let next = tokenmill_pipelines::eval::argmax(&f.logits().unwrap()[(s - 1) * v..s * v]);
        assert_eq!(t, next as u32, "after {} tokens", s);
        seq.push(t);
    }
    assert_eq!(g["text"].as_str().unwrap(), tok.decode(&toks).unwrap());
    // The cache: layers · (kv_lora + rope) f32 values per token.
    assert_eq!(g["kv_cache_bytes_per_token"], 2 * (16 + 4) * 4);
    let cached = seq.len() - 1;
    assert_eq!(
        g["kv_cache_bytes"].as_u64().unwrap() as usize,
        cached * 2 * 20 * 4
    );
    // Sampling is fixed by its seed.
    let sample = |seed: &str| {
        let o = tm(&[
            "generate",
            "--model",
            &p(&exp32),
            "--prompt",
            prompt,
            "--max-tokens",
            "24",
            "--temperature",
            "1.5",
            "--top-p",
            "0.95",
            "--seed",
            seed,
            "--ignore-eos",
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let g: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        serde_json::from_value::<Vec<u32>>(g["tokens"].clone()).unwrap()
    };
    let (a, b, c) = (sample("1"), sample("1"), sample("2"));
    assert_eq!(a, b);
    assert_ne!(a, c);
}

fn peers() -> PathBuf {
    tokenmill_tests::peers_python("torch and transformers")
}

fn peer(py: &Path, args: &[&str]) -> serde_json::Value {
    let o = Command::new(py)
        .arg(repo_root().join("tests/peers/hf_roundtrip.py"))
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
#[ignore = "needs torch and transformers in .venv-peers (or TOKENMILL_PEERS_PYTHON): cargo test -p tokenmill-tests --test e2e -- --ignored hf_roundtrip::"]
fn transformers_loads_the_export_with_the_same_loss() {
    let py = peers();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let run = trained_run(dir);
    let (exp32, exp16) = (dir.join("exp32"), dir.join("exp16"));
    for (out, extra) in [
        (&exp32, vec!["--shard-size", "100KB"]),
        (&exp16, vec!["--dtype", "bf16"]),
    ] {
        let mut args = vec!["export".to_string(), p(&run), "--out".into(), p(out)];
        args.extend(extra.iter().map(|s| s.to_string()));
        let o = Command::new(tokenmill_bin()).args(&args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // A batch of 4 rows of 65 tokens of the held-out text.
    let tok = TextTokenizer::load(&dir.join("tokenizer.json"), &TokenizeConfig::default()).unwrap();
    let ids = tok
        .encode(&std::fs::read_to_string(dir.join("eval.txt")).unwrap())
        .unwrap();
    let (b, s) = (4, 64);
    let rows: Vec<Vec<u32>> = (0..b)
        .map(|i| ids[i * 100..i * 100 + s + 1].to_vec())
        .collect();
    let batch = dir.join("batch.json");
    std::fs::write(&batch, serde_json::json!({ "tokens": rows }).to_string()).unwrap();
    let flat: Vec<u32> = rows.concat();
    let ours = |m: &Path| {
        let m = EvalModel::load(m, ComputeDevice::Cpu).unwrap();
        m.forward(&flat, None, b, s).unwrap().main_loss
    };
    let (l32, l16) = (ours(&exp32), ours(&exp16));
    let t32 = peer(&py, &["loss", "--model", &p(&exp32), "--batch", &p(&batch)]);
    assert_eq!(t32["class"], "DeepseekV3ForCausalLM");
    // transformers does not model MTP: the module's layer is all it leaves unused.
    let unexpected = t32["unexpected"].as_array().unwrap();
    for k in unexpected {
        assert!(k.as_str().unwrap().starts_with("model.layers.2."), "{k}");
    }
    eprintln!(
        "transformers leaves {} MTP tensors unused",
        unexpected.len()
    );
    let t32 = t32["loss"].as_f64().unwrap();
    // The BF16 export: in float32 (the same rounded weights, exactly) and computed in bfloat16.
    let t16_f32 = peer(&py, &["loss", "--model", &p(&exp16), "--batch", &p(&batch)])["loss"]
        .as_f64()
        .unwrap();
    let t16 = peer(
        &py,
        &[
            "loss",
            "--model",
            &p(&exp16),
            "--batch",
            &p(&batch),
            "--dtype",
            "bfloat16",
        ],
    );
    assert_eq!(t16["weights_dtype"], "torch.bfloat16");
    let t16 = t16["loss"].as_f64().unwrap();
    eprintln!(
        "loss: tokenmill f32 {l32:.7} transformers {t32:.7} (rel {:.2e}); bf16 export: tokenmill {l16:.7} transformers fp32 {t16_f32:.7} (rel {:.2e}), transformers bf16 {t16:.7} (rel {:.2e} to tokenmill's f32)",
        rel(l32, t32),
        rel(l16, t16_f32),
        rel(t16, l32)
    );
    assert!(rel(l32, t32) < 1e-5, "{l32} vs {t32}");
    assert!(rel(l16, t16_f32) < 1e-5, "{l16} vs {t16_f32}");
    assert!(rel(t16, l32) < 1e-3, "{t16} vs {l32}");
}

#[test]
#[ignore = "needs torch and transformers in .venv-peers (or TOKENMILL_PEERS_PYTHON): cargo test -p tokenmill-tests --test e2e -- --ignored hf_roundtrip::"]
fn greedy_generation_matches_transformers_generate() {
    let py = peers();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    datasets(dir);
    let tok_path = dir.join("tokenizer.json");
    let model = dir.join("hf");
    let o = Command::new(&py)
        .arg(repo_root().join("tests/peers/eval_transformers.py"))
        .args(["make", "--vocab", "512", "--seed", "5", "--out"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let tok = TextTokenizer::load(&tok_path, &TokenizeConfig::default()).unwrap();
    let n = 48;
    let mut compared = 0;
    for prompt in [
        "ROMEO:\nWhat say you",
        "First Citizen:\nBefore we proceed",
        "O",
    ] {
        let o = tm(&[
            "generate",
            "--model",
            &p(&model),
            "--tokenizer",
            &p(&tok_path),
            "--prompt",
            prompt,
            "--max-tokens",
            &n.to_string(),
            "--ignore-eos",
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let g: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let ours: Vec<u32> = serde_json::from_value(g["tokens"].clone()).unwrap();
        let ids = tok.encode(prompt).unwrap();
        let ids: Vec<String> = ids.iter().map(|t| t.to_string()).collect();
        let theirs = peer(
            &py,
            &[
                "generate",
                "--model",
                &p(&model),
                "--prompt-ids",
                &ids.join(","),
                "--max-new",
                &n.to_string(),
            ],
        );
        let theirs: Vec<u32> = serde_json::from_value(theirs["tokens"].clone()).unwrap();
        assert_eq!(ours, theirs, "prompt {prompt:?}");
        compared += ours.len();
        let distinct: std::collections::BTreeSet<_> = ours.iter().collect();
        assert!(
            distinct.len() > 2,
            "a degenerate continuation proves little: {ours:?}"
        );
    }
    eprintln!("{compared} greedy tokens identical to transformers' generate");
    // `[model] init` from the checkpoint transformers wrote (config.json keeps
    // num_nextn_predict_layers = 1 but no MTP weights): its main model exactly, the MTP module
    // freshly initialised, and training goes on.
    let cfg = config_with_model(dir, "cont", "init = \"hf\"\n");
    let mut t = Trainer::new(read_config(&cfg).unwrap(), false).unwrap();
    let main = EvalModel::load(&model, ComputeDevice::Cpu).unwrap();
    let n = main.model.layout.len();
    assert!(t.params().len() > n, "the run has its MTP module");
    assert_eq!(&t.params()[..n], &main.params[..n]);
    assert!(t.train_step().unwrap().loss.is_finite());
}
