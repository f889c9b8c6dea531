//! `tokenmill bench seam`: what one training step asks of the backend seam — calls and bytes
//! per operation — measured on the CPU through [`Metered`]. The seam passes host slices, so a
//! device backend behind it (the CUDA one) copies every input to the device and every output
//! back, one synchronous round trip per call: these are the bytes a GPU step moves across
//! PCIe and the round trips it waits for, for any preset, without a GPU.

use std::collections::BTreeMap;

use anyhow::Result;
use tokenmill_kernels::Cpu;
use tokenmill_kernels::backend::{Backend, Metered, Partial, Residency, Traffic};
use tokenmill_trainer::ModelConfig;
use tokenmill_trainer::grad_groups::GradGroups;
use tokenmill_trainer::model::{Batch, Model, WgradMode};
use tokenmill_trainer::moe::update_bias;
use tokenmill_trainer::ops::{Precision, WgradQueue};
use tokenmill_trainer::optim::{AdamW, AdamWConfig, clip_scale};
use tokenmill_trainer::params::view_mut;
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
    /// The managed-memory threshold of the managed-memory counts, bytes (the
    /// `TOKENMILL_CUDA_MANAGED_FROM` of a run; at least 4096).
    #[arg(long, default_value_t = tokenmill_cuda::managed::DEFAULT_FROM)]
    pub managed_from: usize,
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
    /// Under residency, what the optimizer after the step would still copy in: the gradient
    /// norms and AdamW on the device (their first call uploads the element kinds and segment
    /// tables, kept from then on), the routing biases' update on the host.
    pub optimizer: Residency,
    /// Calls of the optimizer under residency.
    pub optimizer_calls: u64,
    /// Under residency, a second step on new tokens after the update: nothing the optimizer
    /// wrote goes up, only what host code wrote (the routing biases among the parameters).
    pub second_step: Residency,
    /// Calls of the second step under residency.
    pub second_step_calls: u64,
    /// In managed memory (`device = "cuda-managed"`): what the second step would copy, every
    /// slice outside a block of [`SeamTraffic::managed_from`] bytes or more. `None` where the
    /// process's allocator does not record such blocks (`tokenmill_cuda::managed::shadow`).
    pub managed_step: Option<Partial>,
    /// The same for the optimizer before it (the gradient norms and AdamW).
    pub managed_optimizer: Option<Partial>,
    /// The managed-memory threshold those blocks are counted from, bytes.
    pub managed_from: usize,
}

/// Whether this process records the blocks managed memory would serve (the `tokenmill`
/// binary's allocator under [`tokenmill_cuda::managed::shadow`]): a block of the threshold's
/// size is one.
fn shadowed() -> bool {
    let probe: Vec<u8> = Vec::with_capacity(tokenmill_cuda::managed::from());
    tokenmill_cuda::managed::contains(probe.as_ptr() as u64, probe.capacity())
}

/// Runs one forward and backward of `cfg` (preset `preset`) on random tokens through a metered
/// CPU backend: once as the copying seam (the model moving rows on the host), once under
/// residency (the model moving rows with the backend's operations), followed there by the
/// optimizer and a second step on new tokens.
pub fn measure(
    preset: &str,
    cfg: &ModelConfig,
    batch: usize,
    seq: usize,
    precision: Precision,
) -> Result<SeamTraffic> {
    let mut model = Model::new(cfg.clone())?;
    model.precision = precision;
    let mut params: Vec<f32> = model.init(1);
    let mut grads = vec![0f32; params.len()];
    let mut rng = Rng::new(7);
    let mut tokens = || -> Vec<u32> {
        (0..batch * (seq + 1))
            .map(|_| (rng.next_u64() % cfg.vocab_size as u64) as u32)
            .collect()
    };
    let (first_tokens, second_tokens) = (tokens(), tokens());
    let w = super::train::loss_weights(cfg);
    let model = model;
    // One step through `be` on `tokens` into `grads`; returns each MoE layer's expert loads.
    let step = |be: &Metered<'_, f32>,
                params: &[f32],
                grads: &mut [f32],
                tokens: &[u32]|
     -> Result<Vec<Vec<u64>>> {
        let bt = Batch {
            starts: None,
            distill: None,
            tokens,
            mask: None,
            b: batch,
            s: seq,
        };
        let mut f = model.forward(be, params, &bt, w, true)?;
        let loads = f.moe.iter().map(|m| m.load.clone()).collect();
        let mut q = WgradQueue::new();
        model.backward(be, params, &mut f, grads, &mut q, WgradMode::Immediate);
        Ok(loads)
    };
    // The copying seam: the model moves its rows on the host, as it does for the CUDA backend.
    let be = Metered::new(&Cpu as &dyn Backend<f32>)
        .region("parameters", &params)
        .region("gradients", &grads);
    step(&be, &params, &mut grads, &first_tokens)?;
    // Residency: the data movement runs on the backend too (the same step again, into the
    // same gradient buffer, zeroed; one buffer, so that `1b` fits in 24 GB).
    grads.fill(0.0);
    let tensors = || model.layout.specs.iter().map(|s| s.range.clone());
    let resident = Metered::new(&Cpu as &dyn Backend<f32>)
        .resident()
        .reaching(tokenmill_cuda::managed::contains)
        .region("parameters", &params)
        .region("gradients", &grads)
        .holding(&params, tensors())
        .holding(&grads, tensors());
    let loads = step(&resident, &params, &mut grads, &first_tokens)?;
    let first = resident.residency().expect("metered with residency");
    let first_calls = resident.total().calls;
    // The optimizer as the trainer runs it on a backend that keeps its data: the gradient
    // norms and AdamW on the device, the routing biases' update on the host. Its moments are
    // dropped after the update (so that `1b` fits): the second step does not read them.
    resident.reset();
    // The buffers kept for the next step (the head's logits, the allocator's large blocks,
    // glibc's free heap) make room for the moments.
    tokenmill_trainer::recycle::release();
    crate::alloc::release();
    {
        let mut opt = AdamW::new(AdamWConfig::default(), &model.layout);
        let norm = opt.grad_norm_on(&resident, &grads);
        GradGroups::new(&model.layout).squares_on(&resident, &grads, 0..grads.len());
        opt.step_on(&resident, &mut params, &grads, 1e-4, clip_scale(norm, 1.0));
    }
    // AdamW wrote the whole buffer: the device holds each tensor as written.
    resident.hold(&params, tensors());
    for (id, load) in model.moe_biases().into_iter().zip(&loads) {
        update_bias(view_mut(&model.layout, &mut params, id), load, 1e-3);
    }
    let optimizer = resident.residency().expect("metered with residency");
    let optimizer_calls = resident.total().calls;
    let managed_optimizer = resident.partial();
    // A second step on new tokens, its gradients zeroed by the host (zeros cost nothing).
    resident.reset();
    grads.fill(0.0);
    step(&resident, &params, &mut grads, &second_tokens)?;
    let managed = tokenmill_cuda::managed::stats();
    Ok(SeamTraffic {
        preset: preset.into(),
        batch,
        seq,
        param_bytes: params.len() as u64 * 4,
        ops: be.traffic(),
        by_kind: be.by_kind(),
        total: be.total(),
        resident: first,
        resident_calls: first_calls,
        optimizer,
        optimizer_calls,
        second_step: resident.residency().expect("metered with residency"),
        second_step_calls: resident.total().calls,
        managed_step: shadowed().then(|| resident.partial()).flatten(),
        managed_optimizer: shadowed().then_some(managed_optimizer).flatten(),
        managed_from: managed.from,
    })
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

/// Bytes in MB, or in KB under a tenth of a megabyte.
fn size(b: u64) -> String {
    if b < 100_000 {
        format!("{:.1} KB", b as f64 / 1e3)
    } else {
        format!("{:.2} MB", mb(b))
    }
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
    let kinds = |r: &Residency| {
        r.by_kind
            .iter()
            .map(|(k, v)| format!("{k} {}", size(v.to_device)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    s += &format!(
        "then the optimizer (gradient norms and AdamW on the device, the routing biases' update \
         on the host): {} up ({}), {} calls\n",
        size(t.optimizer.to_device()),
        kinds(&t.optimizer),
        t.optimizer_calls
    );
    s += &format!(
        "then a second step on new tokens: {} up ({}; ≤ {} page edges), {} calls\n",
        size(t.second_step.to_device()),
        kinds(&t.second_step),
        size(t.second_step.edge),
        t.second_step_calls
    );
    match &t.managed_step {
        Some(m) => {
            s += &format!(
                "in managed memory (device = \"cuda-managed\": blocks from {} KiB on reached, \
                 the rest copied), the second step: {} slices copied in {} of its {} calls, {} \
                 up, {} back ({:.3}% of the copying seam's bytes); {} waits for the device, {} \
                 with defer_waits\n",
                t.managed_from / 1024,
                m.copies,
                m.calls,
                t.second_step_calls,
                size(m.to_device),
                size(m.to_host),
                100.0 * (m.to_device + m.to_host) as f64 / all as f64,
                m.waits,
                m.waits_deferred
            );
        }
        None => s += "in managed memory: not measured (this allocator records no blocks)\n",
    }
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
    // Which blocks `device = "cuda-managed"` would serve, recorded as the model allocates them.
    tokenmill_cuda::managed::shadow(a.managed_from)?;
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
