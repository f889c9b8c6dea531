//! Parity with an implementation nobody here wrote: `transformers`' `DeepseekV3ForCausalLM`
//! (fp32, eager) ran the committed tiny model (exported by `examples/hf_fixture.rs`) on a
//! fixed batch and saved its logits, loss and every parameter gradient
//! (`tests/peers/deepseek_v3_golden.py`); MTP, which transformers runs only for inference,
//! against the PyTorch reference written from the paper in the same script. Everything must
//! agree within 1e-4 relative (to each tensor's largest magnitude).

use std::path::PathBuf;

use safetensors::SafeTensors;
use tokenmill_kernels::Cpu;
use tokenmill_trainer::model::{Batch, LossWeights, WgradMode};
use tokenmill_trainer::ops::WgradQueue;

fn fixture() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../tests/fixtures/deepseek_v3/tiny")
}

fn f32s(st: &SafeTensors<'_>, name: &str) -> Vec<f32> {
    let t = st
        .tensor(name)
        .unwrap_or_else(|_| panic!("golden lacks {name}"));
    t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b
        .iter()
        .fold(0.0f64, |m, &x| m.max(x.abs() as f64))
        .max(1e-30);
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs())
        .fold(0.0, f64::max)
        / scale
}

fn batch() -> (Vec<u32>, usize, usize, f64) {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("batch.json")).unwrap())
            .unwrap();
    let rows = v["tokens"].as_array().unwrap();
    let b = rows.len();
    let tokens: Vec<u32> = rows
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
        })
        .collect();
    let s = tokens.len() / b - 1;
    (tokens, b, s, v["mtp_lambda"].as_f64().unwrap())
}

fn check(golden_file: &str, lambda: f64) -> f64 {
    let (model, params) = tokenmill_trainer::hf::load(&fixture()).unwrap();
    let (tokens, b, s, _) = batch();
    let bytes = std::fs::read(fixture().join(golden_file)).unwrap();
    let golden = SafeTensors::deserialize(&bytes).unwrap();
    let bt = Batch {
        starts: None,
        distill: None,
        tokens: &tokens,
        mask: None,
        b,
        s,
    };
    let w = LossWeights {
        mtp_lambda: lambda,
        balance_alpha: 0.0,
    };
    let mut f = model.forward(&Cpu, &params, &bt, w, true).unwrap();
    let logits = model.forward(&Cpu, &params, &bt, w, false).unwrap();
    assert_eq!(
        logits.loss, f.loss,
        "training and evaluation forwards agree"
    );
    let mut worst: f64 = 0.0;
    let main = f32s(&golden, "loss")[0] as f64;
    assert!(
        (f.main_loss - main).abs() / main < 1e-5,
        "main loss {} vs transformers {main}",
        f.main_loss
    );
    if golden_file == "golden.safetensors" {
        let e = rel_err(logits.logits().unwrap(), &f32s(&golden, "logits"));
        assert!(e < 1e-4, "logits: {e:e}");
        worst = worst.max(e);
    } else {
        let mtp = f32s(&golden, "mtp_loss")[0] as f64;
        assert!(
            (f.mtp_losses[0] - mtp).abs() / mtp < 1e-5,
            "mtp loss {:?} vs {mtp}",
            f.mtp_losses
        );
        let total = f32s(&golden, "total")[0] as f64;
        assert!(
            (f.loss - total).abs() / total < 1e-5,
            "total {} vs {total}",
            f.loss
        );
        let e = rel_err(
            logits.mtp_logits(1).unwrap(),
            &f32s(&golden, "mtp_logits.1"),
        );
        assert!(e < 1e-4, "mtp logits: {e:e}");
    }
    let mut grads = vec![0f32; params.len()];
    let mut q = WgradQueue::new();
    model.backward(
        &Cpu,
        &params,
        &mut f,
        &mut grads,
        &mut q,
        WgradMode::Immediate,
    );
    let mut compared = 0;
    for spec in &model.layout.specs {
        if !spec.trainable() {
            continue;
        }
        let ours = &grads[spec.range.clone()];
        let name = format!("grad.{}", spec.name);
        let Ok(_) = golden.tensor(&name) else {
            // Only the MTP golden holds the MTP modules' gradients; without MTP they are zero.
            assert!(
                lambda == 0.0 && ours.iter().all(|&g| g == 0.0),
                "{name} missing from {golden_file}"
            );
            continue;
        };
        let e = rel_err(ours, &f32s(&golden, &name));
        assert!(e < 1e-4, "{name}: relative error {e:e}");
        worst = worst.max(e);
        compared += 1;
    }
    assert!(compared >= 40, "{compared} gradients compared");
    worst
}

#[test]
fn logits_loss_and_every_gradient_match_transformers() {
    let worst = check("golden.safetensors", 0.0);
    eprintln!("worst relative error vs transformers: {worst:.2e}");
}

#[test]
fn mtp_loss_and_gradients_match_the_pytorch_reference() {
    let (_, _, _, lambda) = batch();
    let worst = check("golden_mtp.safetensors", lambda);
    eprintln!("worst relative error vs the PyTorch MTP reference: {worst:.2e}");
}

#[test]
fn export_import_round_trip_is_exact() {
    let (model, params) = tokenmill_trainer::hf::load(&fixture()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    tokenmill_trainer::hf::save(dir.path(), &model, &params).unwrap();
    let (m2, p2) = tokenmill_trainer::hf::load(dir.path()).unwrap();
    assert_eq!(m2.cfg, model.cfg);
    assert_eq!(p2, params);
    assert_eq!(
        std::fs::read(dir.path().join("model.safetensors")).unwrap(),
        std::fs::read(fixture().join("model.safetensors")).unwrap()
    );
}

#[test]
fn mismatched_weights_are_named() {
    let (model, params) = tokenmill_trainer::hf::load(&fixture()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = model.cfg.clone();
    cfg.hidden_size = 48;
    let other = tokenmill_trainer::Model::new(cfg).unwrap();
    tokenmill_trainer::hf::save(dir.path(), &other, &other.init::<f32>(1)).unwrap();
    // config.json of one model with the weights of another
    std::fs::copy(
        fixture().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let e = tokenmill_trainer::hf::load(dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("has shape"),
        "{e}"
    );
    std::fs::write(dir.path().join("model.safetensors"), b"garbage").unwrap();
    let e = tokenmill_trainer::hf::load(dir.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a safetensors file"), "{e}");
    drop(params);
}
