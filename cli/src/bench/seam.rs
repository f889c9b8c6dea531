//! `tokenmill bench seam`: what one training step asks of the backend seam — calls and bytes
//! per operation — measured on the CPU through [`Metered`]. The seam passes host slices, so a
//! device backend behind it (the CUDA one) copies every input to the device and every output
//! back, one synchronous round trip per call: these are the bytes a GPU step moves across
//! PCIe and the round trips it waits for, for any preset, without a GPU.

use std::collections::BTreeMap;

use anyhow::Result;
use tokenmill_kernels::Cpu;
use tokenmill_kernels::backend::{Backend, Metered, Residency, Traffic};
use tokenmill_trainer::ModelConfig;
use tokenmill_trainer::model::{Batch, Model, WgradMode};
use tokenmill_trainer::ops::{Precision, WgradQueue};
use tokenmill_trainer::rng::Rng;

/// `tokenmill bench seam`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model preset (tiny, small, 1b, deepseek-v3, deepseek-v2-lite).
    #[arg(long, default_value = "small")]
    pub preset: String,
    /// Sequences per step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 512)]
    pub seq: usize,
    /// GEMM precision of the linear layers (fp32, bf16, fp8).
    #[arg(long, default_value = "fp32")]
    pub precision: String,
    /// Keep the preset's multi-token prediction modules (the device check runs without).
    #[arg(long)]
    pub mtp: bool,
    /// Print the counts as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One step's traffic.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeamTraffic {
    pub preset: String,
    pub batch: usize,
    pub seq: usize,
    /// Parameters (bytes as f32), for scale.
    pub param_bytes: u64,
    pub ops: BTreeMap<&'static str, Traffic>,
    /// The same bytes by the buffer they belong to: `parameters`, `gradients`, `activations`
    /// (everything else: activations, caches, the token ids); `calls` counts slices copied.
    pub by_kind: BTreeMap<&'static str, Traffic>,
    pub total: Traffic,
    /// What a device-resident backend (every buffer it was given or wrote kept on the device,
    /// parameters and gradients from the start) would still copy in: the inputs host code
    /// wrote — the model's loops between seam operations.
    pub resident: Residency,
    /// Calls of the step under residency (the data movement included).
    pub resident_calls: u64,
}

/// Runs one forward and backward of `cfg` (preset `preset`) on random tokens through a metered
/// CPU backend: once as the copying seam (the model moving rows on the host), once under
/// residency (the model moving rows with the backend's operations).
pub fn measure(
    preset: &str,
    cfg: &ModelConfig,
    batch: usize,
    seq: usize,
    precision: Precision,
) -> Result<SeamTraffic> {
    let mut model = Model::new(cfg.clone())?;
    model.precision = precision;
    let params: Vec<f32> = model.init(1);
    let mut grads = vec![0f32; params.len()];
    let mut rng = Rng::new(7);
    let tokens: Vec<u32> = (0..batch * (seq + 1))
        .map(|_| (rng.next_u64() % cfg.vocab_size as u64) as u32)
        .collect();
    let bt = Batch {
        starts: None,
        distill: None,
        tokens: &tokens,
        mask: None,
        b: batch,
        s: seq,
    };
    let w = super::train::loss_weights(cfg);
    // One step through `be` with gradients `grads`.
    let step = |be: &Metered<'_, f32>, grads: &mut [f32]| -> Result<()> {
        let mut f = model.forward(be, &params, &bt, w, true)?;
        let mut q = WgradQueue::new();
        model.backward(be, &params, &mut f, grads, &mut q, WgradMode::Immediate);
        Ok(())
    };
    // The copying seam: the model moves its rows on the host, as it does for the CUDA backend.
    let be = Metered::new(&Cpu as &dyn Backend<f32>)
        .region("parameters", &params)
        .region("gradients", &grads);
    step(&be, &mut grads)?;
    // Residency: the data movement runs on the backend too (the same step again, into the
    // same gradient buffer, zeroed; one buffer, so that `1b` fits in 24 GB).
    grads.fill(0.0);
    let tensors = || model.layout.specs.iter().map(|s| s.range.clone());
    let resident = Metered::new(&Cpu as &dyn Backend<f32>)
        .resident()
        .region("parameters", &params)
        .region("gradients", &grads)
        .holding(&params, tensors())
        .holding(&grads, tensors());
    step(&resident, &mut grads)?;
    Ok(SeamTraffic {
        preset: preset.into(),
        batch,
        seq,
        param_bytes: params.len() as u64 * 4,
        ops: be.traffic(),
        by_kind: be.by_kind(),
        total: be.total(),
        resident: resident.residency().expect("metered with residency"),
        resident_calls: resident.total().calls,
    })
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

/// The counts as a table.
pub fn table(t: &SeamTraffic) -> String {
    let all = (t.total.to_device + t.total.to_host).max(1);
    let mut s = format!(
        "{:<22} {:>9} {:>14} {:>12} {:>7}\n",
        "operation", "calls", "to device MB", "to host MB", "bytes"
    );
    let mut ops: Vec<_> = t.ops.iter().collect();
    ops.sort_by_key(|(_, v)| std::cmp::Reverse(v.to_device + v.to_host));
    for (op, v) in ops {
        s += &format!(
            "{:<22} {:>9} {:>14.1} {:>12.1} {:>6.1}%\n",
            op,
            v.calls,
            mb(v.to_device),
            mb(v.to_host),
            100.0 * (v.to_device + v.to_host) as f64 / all as f64
        );
    }
    let tokens = (t.batch * t.seq) as f64;
    s += &format!(
        "{:<22} {:>9} {:>14.1} {:>12.1} {:>6.1}%\n",
        "total",
        t.total.calls,
        mb(t.total.to_device),
        mb(t.total.to_host),
        100.0
    );
    s += &format!(
        "\n{:<22} {:>9} {:>14} {:>12} {:>7}\n",
        "buffer", "slices", "to device MB", "to host MB", "bytes"
    );
    for (kind, v) in &t.by_kind {
        s += &format!(
            "{:<22} {:>9} {:>14.1} {:>12.1} {:>6.1}%\n",
            kind,
            v.calls,
            mb(v.to_device),
            mb(v.to_host),
            100.0 * (v.to_device + v.to_host) as f64 / all as f64
        );
    }
    s += &format!(
        "{:.2} GB across the seam per step ({:.0} KB per token; the parameters are {:.2} GB as f32), \
         {} round trips\n",
        all as f64 / 1e9,
        all as f64 / tokens / 1e3,
        t.param_bytes as f64 / 1e9,
        t.total.calls
    );
    let r = &t.resident;
    let up = r.to_device().max(1);
    s += &format!(
        "\nunder residency (every buffer the device was given or wrote kept there): the inputs \
         host code wrote\n{:<22} {:>9} {:>14} {:>7}\n",
        "operation", "calls", "to device MB", "bytes"
    );
    let mut ops: Vec<_> = r.ops.iter().filter(|(_, v)| v.to_device > 0).collect();
    ops.sort_by_key(|(_, v)| std::cmp::Reverse(v.to_device));
    for (op, v) in ops {
        s += &format!(
            "{:<22} {:>9} {:>14.1} {:>6.1}%\n",
            op,
            v.calls,
            mb(v.to_device),
            100.0 * v.to_device as f64 / up as f64
        );
    }
    s += &format!(
        "{:.2} GB up per step under residency ({:.1}% of the copying seam's bytes; of it {:.1} MB \
         may be held already inside larger ranges), {} calls with the data movement; the host's \
         reads of device results are not counted\n",
        r.to_device() as f64 / 1e9,
        100.0 * r.to_device() as f64 / all as f64,
        mb(r.edge),
        t.resident_calls
    );
    s
}

/// Runs `tokenmill bench seam`.
pub fn run(a: Args) -> Result<()> {
    let precision = match a.precision.as_str() {
        "fp32" => Precision::Fp32,
        "bf16" => Precision::Bf16,
        "fp8" => Precision::Fp8,
        other => anyhow::bail!("--precision {other:?}: expected fp32, bf16 or fp8"),
    };
    let mut cfg = ModelConfig::preset(&a.preset)?;
    cfg.max_position_embeddings = cfg.max_position_embeddings.max(a.seq);
    if !a.mtp {
        cfg.num_nextn_predict_layers = 0;
    }
    let t = measure(&a.preset, &cfg, a.batch, a.seq, precision)?;
    if a.json {
        println!("{}", serde_json::to_string(&t)?);
    } else {
        println!(
            "seam traffic of one training step (forward + backward): preset {}, batch {} × {}, {}, {}",
            a.preset,
            a.batch,
            a.seq,
            a.precision,
            if a.mtp { "with MTP" } else { "no MTP" }
        );
        print!("{}", table(&t));
    }
    Ok(())
}
