//! `mpirun -np P tokenmill-parallel-check`: expert parallelism against one process.
//!
//! Every rank first runs the reference — the whole batch, every expert local — then its slice
//! of the batch with the routed experts spread over the P ranks, and compares:
//!
//! - a MoE layer alone, in FP32 and in FP8 (rows dispatched as E4M3 with 1 × 128 scales,
//!   combined in BF16): output and input gradient rows, bitwise; each owned expert's weight
//!   gradients, bitwise; the router's gradient summed over ranks, to 1e-5 relative (each rank
//!   sums over its own tokens, so the order of the sum over tokens differs);
//! - the tiny DeepSeek-V3 model (MLA, MoE, MTP, balance loss): every token's loss, bitwise; the
//!   total loss summed over ranks, to 1e-12 relative; each owned expert's gradients, bitwise;
//!   every other gradient summed over ranks, to 1e-5 relative (same reason as the router).
//!
//! - with `--dp D --ep E` (D·E = the world): training, 12 steps of the tiny model with AdamW
//!   sharded over the world (ZeRO-1) and the routing-bias update, against the same steps on
//!   one process: each step's loss and the final parameters to 1e-5 relative (the gradients
//!   of the dense layers are sums over tokens taken in another order; the experts' are equal).
//!
//! - with `--pp P --schedule 1f1b|dualpipe|dualpipev [--ep E] [--dp D]`: one step of a model of
//!   as many layers as the schedule has stages, 4·P micro-batches per pipeline, through the
//!   pipeline executor against the same micro-batches in one process: the step's loss bitwise
//!   (with E·D > 1 to 1e-12, the ranks' shares summed in another order), every token's loss
//!   bitwise, and the gradients summed over the ranks (each stage's, and DualPipe's two copies
//!   of each) by DualPipe's own measure `1 − 2Σxy / Σ(x² + y²)` in f64, below 1e-13.
//!
//! Prints a line per rank and check; exits non-zero if any check fails on any rank.

use std::process::ExitCode;
use std::sync::Arc;

use tokenmill_comm::{Collectives, Communicator, MpiComm};
use tokenmill_kernels::Cpu;
use tokenmill_kernels::rng::Rng;
use tokenmill_trainer::block::Ffn;
use tokenmill_trainer::moe::dispatch::owned;
use tokenmill_trainer::moe::update_bias;
use tokenmill_trainer::ops::{Ctx, NonFiniteTiles, Precision, WgradQueue};
use tokenmill_trainer::optim::{AdamW, AdamWConfig, clip_scale};
use tokenmill_trainer::parallel::{Groups, ParallelConfig, ShardedAdamW};
use tokenmill_trainer::pipeline::exec::{MicroBatch, Pipeline, stage_count};
use tokenmill_trainer::pipeline::schedule::Schedule;
use tokenmill_trainer::{Batch, LossWeights, Model, ModelConfig, Parallel, WgradMode};

/// One comparison's outcome on this rank.
struct Check {
    name: String,
    ok: bool,
    detail: String,
}

fn bitwise(name: &str, got: &[f32], want: &[f32]) -> Check {
    let diff = got
        .iter()
        .zip(want)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    let ok = got.len() == want.len() && diff == 0;
    Check {
        name: name.into(),
        ok,
        detail: format!("{} values, {diff} differ in bits", want.len()),
    }
}

fn relative(name: &str, got: &[f32], want: &[f32], tol: f64) -> Check {
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum();
    let den: f64 = want.iter().map(|&b| (b as f64).powi(2)).sum();
    let rel = (num / den.max(1e-300)).sqrt();
    Check {
        name: name.into(),
        ok: got.len() == want.len() && rel <= tol,
        detail: format!("relative L2 error {rel:.2e} (limit {tol:.0e})"),
    }
}

/// The expert index of a parameter name (`…mlp.experts.<e>.…`), if it is a routed expert's.
fn expert_of(name: &str) -> Option<usize> {
    let rest = name.split(".mlp.experts.").nth(1)?;
    rest.split('.').next()?.parse().ok()
}

fn moe_layer(world: &Arc<MpiComm>, precision: Precision, out: &mut Vec<Check>) {
    let (p, r) = (world.size(), world.rank());
    let mut model = Model::new(ModelConfig::preset("tiny").expect("preset")).expect("model");
    model.precision = precision;
    let tag = match precision {
        Precision::Fp8 => "moe layer (fp8 dispatch, bf16 combine)",
        _ => "moe layer",
    };
    let params: Vec<f32> = model.init(3);
    let layer = model
        .blocks
        .iter()
        .position(|b| matches!(b.ffn, Ffn::Moe(_)))
        .expect("the tiny preset has a MoE layer");
    let Ffn::Moe(moe) = &model.blocks[layer].ffn else {
        unreachable!()
    };
    let prefix = format!("model.layers.{layer}.");
    let (b, s, d) = (8usize, 12usize, model.cfg.hidden_size);
    let n = b * s;
    let mut rng = Rng::new(11);
    let x: Vec<f32> = (0..n * d).map(|_| rng.normal() as f32).collect();
    let dout: Vec<f32> = (0..n * d).map(|_| rng.normal() as f32 * 0.1).collect();
    let run = |ep: Option<&dyn Communicator>, rows: std::ops::Range<usize>, bs: usize| {
        let nonfinite = NonFiniteTiles::default();
        let cx = Ctx {
            be: &Cpu,
            layout: &model.layout,
            params: &params,
            precision: model.precision,
            ep,
            batch: ep,
            nonfinite: &nonfinite,
            key_starts: None,
        };
        let xs = Arc::new(x[rows.start * d..rows.end * d].to_vec());
        let (y, cache, _) = moe.fwd(&cx, xs, bs, s, 1e-3);
        // Per token: the ranks its rows went to.
        let mut reached = vec![Vec::new(); bs * s];
        for (&(t, _), q) in cache
            .plan()
            .send_rows()
            .iter()
            .zip(cache.plan().destinations())
        {
            reached[t].push(q);
        }
        let mut wq = WgradQueue::new();
        let dx = moe.bwd(
            &cx,
            cache,
            dout[rows.start * d..rows.end * d].to_vec(),
            &mut wq,
        );
        let mut grads = vec![0f32; params.len()];
        wq.flush(&Cpu, &model.layout, &mut grads);
        (y, dx, grads, reached)
    };
    let (y_ref, dx_ref, g_ref, _) = run(None, 0..n, b);
    let mine = r * n / p..(r + 1) * n / p;
    let (y, dx, g, reached) = run(
        Some(world.as_ref() as &dyn Communicator),
        mine.clone(),
        b / p,
    );
    // Node-limited routing: the ranks in two simulated nodes, each holding one of the
    // model's two expert groups; topk_group = 1, so every token's experts are on one node.
    let layout = ParallelConfig {
        ep: p,
        ranks_per_node: p / 2,
        max_nodes_per_token: Some(model.cfg.topk_group),
        ..Default::default()
    };
    layout
        .validate(p, &model.cfg, 2 * p, 1)
        .expect("node layout");
    let nodes: Vec<usize> = reached
        .iter()
        .map(|qs| {
            let mut ns: Vec<usize> = qs.iter().map(|&q| layout.node_of(q)).collect();
            ns.sort_unstable();
            ns.dedup();
            ns.len()
        })
        .collect();
    let most = nodes.iter().copied().max().unwrap_or(0);
    let cross = reached
        .iter()
        .filter(|qs| qs.iter().any(|&q| layout.node_of(q) != layout.node_of(r)))
        .count();
    out.push(Check {
        name: format!(
            "{tag}: nodes per token ≤ max_nodes_per_token = {}",
            model.cfg.topk_group
        ),
        ok: most <= model.cfg.topk_group && most > 0,
        detail: format!(
            "{} tokens, most nodes reached {most}, {cross} tokens sent to the other node",
            nodes.len()
        ),
    });
    out.push(bitwise(
        &format!("{tag}: output"),
        &y,
        &y_ref[mine.start * d..mine.end * d],
    ));
    out.push(bitwise(
        &format!("{tag}: input gradient"),
        &dx,
        &dx_ref[mine.start * d..mine.end * d],
    ));
    let e = moe.experts.len();
    let owned_experts = owned(e, p, r);
    let (mut ex, mut ex_ref, mut other, mut other_ref) = (vec![], vec![], vec![], vec![]);
    for spec in model
        .layout
        .specs
        .iter()
        .filter(|s| s.name.starts_with(&prefix))
    {
        let (got, want) = (&g[spec.range.clone()], &g_ref[spec.range.clone()]);
        match expert_of(&spec.name) {
            Some(i) if owned_experts.contains(&i) => {
                ex.extend_from_slice(got);
                ex_ref.extend_from_slice(want);
            }
            Some(_) => {}
            None => {
                other.extend_from_slice(got);
                other_ref.extend_from_slice(want);
            }
        }
    }
    out.push(bitwise(
        &format!("{tag}: owned experts' gradients"),
        &ex,
        &ex_ref,
    ));
    world.all_reduce_sum(&mut other).expect("all-reduce");
    out.push(relative(
        &format!("{tag}: router and shared expert gradients, summed"),
        &other,
        &other_ref,
        1e-5,
    ));
}

fn whole_model(world: &Arc<MpiComm>, out: &mut Vec<Check>) {
    let (p, r) = (world.size(), world.rank());
    let mut model = Model::new(ModelConfig::preset("tiny").expect("preset")).expect("model");
    let params: Vec<f32> = model.init(5);
    let (b, s) = (8usize, 16usize);
    let mut rng = Rng::new(17);
    let vocab = model.cfg.vocab_size;
    let tokens: Vec<u32> = (0..b * (s + 1)).map(|_| rng.below(vocab) as u32).collect();
    let w = LossWeights {
        mtp_lambda: 0.3,
        balance_alpha: 1e-3,
    };
    let step = |model: &Model, toks: &[u32], bs: usize| {
        let batch = Batch {
            starts: None,
            distill: None,
            tokens: toks,
            mask: None,
            b: bs,
            s,
        };
        let mut f = model
            .forward(&Cpu, &params, &batch, w, true)
            .expect("forward");
        let mut grads = vec![0f32; params.len()];
        let mut wq = WgradQueue::new();
        model.backward(
            &Cpu,
            &params,
            &mut f,
            &mut grads,
            &mut wq,
            WgradMode::Immediate,
        );
        (f.loss, f.token_losses, grads)
    };
    let (loss_ref, tl_ref, g_ref) = step(&model, &tokens, b);
    let world_dyn: Arc<dyn Communicator> = world.clone();
    model.parallel = Parallel {
        batch: Some(world_dyn.clone()),
        experts: Some(world_dyn),
    };
    let bs = b / p;
    let slice = &tokens[r * bs * (s + 1)..(r + 1) * bs * (s + 1)];
    let (loss, tl, mut g) = step(&model, slice, bs);
    out.push(bitwise(
        "model: every token's loss",
        &tl,
        &tl_ref[r * bs * s..(r + 1) * bs * s],
    ));
    let mut total = [loss];
    world.all_reduce_sum(&mut total).expect("all-reduce");
    let rel = ((total[0] - loss_ref) / loss_ref).abs();
    out.push(Check {
        name: "model: total loss summed over ranks".into(),
        ok: rel <= 1e-12,
        detail: format!("{:.10} vs {loss_ref:.10}, relative {rel:.1e}", total[0]),
    });
    let e = model.cfg.n_routed_experts;
    let owned_experts = owned(e, p, r);
    let (mut ex, mut ex_ref) = (vec![], vec![]);
    for spec in &model.layout.specs {
        match expert_of(&spec.name) {
            Some(i) if owned_experts.contains(&i) => {
                ex.extend_from_slice(&g[spec.range.clone()]);
                ex_ref.extend_from_slice(&g_ref[spec.range.clone()]);
            }
            // Not this rank's expert: its gradient lives on its owner.
            Some(_) => g[spec.range.clone()].fill(0.0),
            None => {}
        }
    }
    out.push(bitwise("model: owned experts' gradients", &ex, &ex_ref));
    // Everything else (and every expert, each from its owner) summed over the ranks.
    world.all_reduce_sum(&mut g).expect("all-reduce");
    out.push(relative("model: all gradients, summed", &g, &g_ref, 1e-5));
}

/// One training step's forward and backward: (loss, gradients, each MoE layer's load).
fn grads_of(
    model: &Model,
    params: &[f32],
    tokens: &[u32],
    b: usize,
    s: usize,
) -> (f64, Vec<f32>, Vec<Vec<u64>>) {
    let w = LossWeights {
        mtp_lambda: 0.3,
        balance_alpha: 1e-3,
    };
    let batch = Batch {
        starts: None,
        distill: None,
        tokens,
        mask: None,
        b,
        s,
    };
    let mut f = model
        .forward(&Cpu, params, &batch, w, true)
        .expect("forward");
    let mut grads = vec![0f32; params.len()];
    let mut wq = WgradQueue::new();
    model.backward(
        &Cpu,
        params,
        &mut f,
        &mut grads,
        &mut wq,
        WgradMode::Immediate,
    );
    (
        f.loss,
        grads,
        f.moe.iter().map(|m| m.load.clone()).collect(),
    )
}

fn bias_update(model: &Model, params: &mut [f32], loads: &[Vec<u64>]) {
    for (id, load) in model.moe_biases().into_iter().zip(loads) {
        update_bias(&mut params[model.layout.range(id)], load, 1e-3);
    }
}

fn training(world: &Arc<MpiComm>, layout: ParallelConfig, out: &mut Vec<Check>) {
    let (b, s, steps, lr) = (8usize, 16usize, 12, 3e-3);
    let mut model = Model::new(ModelConfig::preset("tiny").expect("preset")).expect("model");
    layout
        .validate(world.size(), &model.cfg, b, b / world.size())
        .expect("layout");
    let vocab = model.cfg.vocab_size;
    let batches: Vec<Vec<u32>> = (0..steps)
        .map(|i| {
            let mut rng = Rng::new(100 + i as u64);
            (0..b * (s + 1)).map(|_| rng.below(vocab) as u32).collect()
        })
        .collect();
    let cfg = AdamWConfig::default();
    // One process.
    let mut p_ref: Vec<f32> = model.init(9);
    let mut opt = AdamW::new(cfg.clone(), &model.layout);
    let mut ref_losses = Vec::new();
    for toks in &batches {
        let (loss, g, loads) = grads_of(&model, &p_ref, toks, b, s);
        let norm = opt.grad_norm(&g);
        opt.step(&mut p_ref, &g, lr, clip_scale(norm, 1.0));
        bias_update(&model, &mut p_ref, &loads);
        ref_losses.push(loss);
    }
    // The layout.
    let world_dyn: Arc<dyn Communicator> = world.clone();
    let groups = Groups::new(world_dyn.clone(), &layout).expect("groups");
    model.parallel = groups.model_parallel();
    let mut params: Vec<f32> = model.init(9);
    let mut sharded = ShardedAdamW::new(cfg, &model.layout, world_dyn.as_ref());
    let mine = groups.batch_slice(b);
    let mut worst = 0.0f64;
    let mut lines = Vec::new();
    let mut last = 0.0f64;
    for (i, toks) in batches.iter().enumerate() {
        let slice = &toks[mine.start * (s + 1)..mine.end * (s + 1)];
        let (loss, mut g, loads) = grads_of(&model, &params, slice, mine.len(), s);
        let mut total = [loss];
        world.all_reduce_sum(&mut total).expect("all-reduce");
        sharded
            .step(world_dyn.as_ref(), &mut params, &mut g, lr, 1.0)
            .expect("step");
        bias_update(&model, &mut params, &loads);
        last = total[0];
        let rel = ((total[0] - ref_losses[i]) / ref_losses[i]).abs();
        worst = worst.max(rel);
        lines.push(format!("{i}:{:.6}/{:.6}", total[0], ref_losses[i]));
    }
    let name = format!(
        "training dp {} × ep {}: {steps} steps' losses",
        layout.dp, layout.ep
    );
    out.push(Check {
        name,
        ok: worst <= 1e-5,
        detail: format!(
            "worst relative difference {worst:.1e} (limit 1e-5); last loss bits {:016x}; {}",
            last.to_bits(),
            lines.join(" ")
        ),
    });
    out.push(relative(
        &format!(
            "training dp {} × ep {}: final parameters",
            layout.dp, layout.ep
        ),
        &params,
        &p_ref,
        1e-5,
    ));
}

/// DualPipe's parity measure: `1 − 2Σxy / Σ(x² + y²)` in f64 (0 when equal).
fn dissimilarity(x: &[f32], y: &[f32]) -> f64 {
    let (mut xy, mut sq) = (0.0f64, 0.0f64);
    for (&a, &b) in x.iter().zip(y) {
        let (a, b) = (a as f64, b as f64);
        xy += a * b;
        sq += a * a + b * b;
    }
    1.0 - 2.0 * xy / sq.max(1e-300)
}

fn pipeline(world: &Arc<MpiComm>, layout: ParallelConfig, out: &mut Vec<Check>) {
    let mut cfg = ModelConfig::preset("tiny").expect("preset");
    cfg.num_hidden_layers = stage_count(layout.schedule, layout.pp).max(2);
    let mut model = Model::new(cfg).expect("model");
    let params: Vec<f32> = model.init(5);
    let data_ranks = layout.dp * layout.ep;
    // 4·P micro-batches of 1 sample per pipeline (DualPipe(V) needs at least 2·P).
    let (n, mb, s) = (4 * layout.pp, 1usize, 16usize);
    let b = data_ranks * n * mb;
    if let Err(e) = layout.validate(world.size(), &model.cfg, b, mb) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    let mut rng = Rng::new(23);
    let vocab = model.cfg.vocab_size;
    let tokens: Vec<u32> = (0..b * (s + 1)).map(|_| rng.below(vocab) as u32).collect();
    let sample = |j: usize| &tokens[j * (s + 1)..(j + 1) * (s + 1)];
    let w = LossWeights {
        mtp_lambda: 0.3,
        balance_alpha: 1e-3,
    };
    // One process: micro-batch i is every data rank's i-th micro-batch, in rank order.
    let per = n * mb;
    let (mut loss_ref, mut g_ref, mut tl_ref) = (0.0, vec![0f32; params.len()], Vec::new());
    for i in 0..n {
        let toks: Vec<u32> = (0..data_ranks)
            .flat_map(|r| (0..mb).flat_map(move |k| sample(r * per + i * mb + k).to_vec()))
            .collect();
        let batch = Batch {
            starts: None,
            distill: None,
            tokens: &toks,
            mask: None,
            b: data_ranks * mb,
            s,
        };
        let mut f = model
            .forward(&Cpu, &params, &batch, w, true)
            .expect("forward");
        loss_ref += f.loss / n as f64;
        let mut wq = WgradQueue::new();
        model.backward(
            &Cpu,
            &params,
            &mut f,
            &mut g_ref,
            &mut wq,
            WgradMode::Immediate,
        );
        tl_ref.push(f.token_losses);
    }
    let inv = 1.0 / n as f32;
    g_ref.iter_mut().for_each(|g| *g *= inv);
    // The pipeline.
    let world_dyn: Arc<dyn Communicator> = world.clone();
    let groups = Groups::new(world_dyn, &layout).expect("groups");
    model.parallel = groups.model_parallel();
    let (comm, mail) = groups.pipe.clone().expect("pp > 1");
    let pipe = Pipeline::new(
        &model,
        layout.schedule,
        comm,
        mail,
        groups.experts_backward.clone(),
    )
    .expect("pipeline");
    let mine = groups.batch_slice(b);
    let mbs: Vec<MicroBatch> = (0..n)
        .map(|i| MicroBatch {
            starts: None,
            tokens: (0..mb)
                .flat_map(|k| sample(mine.start + i * mb + k).to_vec())
                .collect(),
            mask: vec![1; mb * s],
            b: mb,
        })
        .collect();
    let mut g = vec![0f32; params.len()];
    let step = pipe
        .step(&model, &Cpu, &params, &mbs, s, w, &mut g)
        .expect("pipeline step");
    let mut loss = [step
        .figures
        .iter()
        .map(|f| f.loss(w) / n as f64)
        .sum::<f64>()];
    groups.stage.all_reduce_sum(&mut loss).expect("all-reduce");
    let name = format!(
        "{:?} pp {} × ep {} × dp {}",
        layout.schedule, layout.pp, layout.ep, layout.dp
    );
    if data_ranks == 1 {
        out.push(Check {
            name: format!("{name}: the step's loss, bitwise"),
            ok: loss[0].to_bits() == loss_ref.to_bits(),
            detail: format!("{:.17} vs {loss_ref:.17}", loss[0]),
        });
    } else {
        let rel = ((loss[0] - loss_ref) / loss_ref).abs();
        out.push(Check {
            name: format!("{name}: the step's loss"),
            ok: rel <= 1e-12,
            detail: format!(
                "{:.12} vs {loss_ref:.12}, relative {rel:.1e} (limit 1e-12)",
                loss[0]
            ),
        });
    }
    if let Some(tl) = &step.token_losses {
        let (got, want): (Vec<f32>, Vec<f32>) = (
            tl.concat(),
            tl_ref
                .iter()
                .flat_map(|t| {
                    t[groups.data_rank * mb * s..(groups.data_rank + 1) * mb * s].to_vec()
                })
                .collect(),
        );
        out.push(bitwise(&format!("{name}: every token's loss"), &got, &want));
    }
    g.iter_mut().for_each(|x| *x *= inv);
    world.all_reduce_sum(&mut g).expect("all-reduce");
    let d = dissimilarity(&g, &g_ref);
    let differ = g
        .iter()
        .zip(&g_ref)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    out.push(Check {
        name: format!("{name}: gradients summed over the ranks"),
        ok: d < 1e-13,
        detail: format!(
            "1 − 2Σxy/Σ(x²+y²) = {d:.1e} (limit 1e-13); {differ} of {} values differ in bits",
            g.len()
        ),
    });
}

fn main() -> ExitCode {
    let world = match MpiComm::world() {
        Ok(w) => Arc::new(w),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global()
        .expect("thread pool");
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<usize>().ok())
    };
    let mut checks = Vec::new();
    let schedule = args
        .iter()
        .position(|a| a == "--schedule")
        .and_then(|i| args.get(i + 1))
        .map(|v| match v.as_str() {
            "1f1b" => Schedule::OneFOneB,
            "dualpipe" => Schedule::DualPipe,
            _ => Schedule::DualPipeV,
        });
    if let Some(pp) = arg("--pp") {
        let layout = ParallelConfig {
            dp: arg("--dp").unwrap_or(1),
            ep: arg("--ep").unwrap_or(1),
            pp,
            schedule: schedule.unwrap_or(Schedule::DualPipeV),
            ..Default::default()
        };
        pipeline(&world, layout, &mut checks);
    } else if let (Some(dp), Some(ep)) = (arg("--dp"), arg("--ep")) {
        let layout = ParallelConfig {
            dp,
            ep,
            ..Default::default()
        };
        training(&world, layout, &mut checks);
    } else {
        moe_layer(&world, Precision::Fp32, &mut checks);
        moe_layer(&world, Precision::Fp8, &mut checks);
        whole_model(&world, &mut checks);
    }
    let failed = checks.iter().filter(|c| !c.ok).count() as u64;
    for c in &checks {
        println!(
            "rank {} of {}: {} {}: {}",
            world.rank(),
            world.size(),
            if c.ok { "PASS" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    let mut bad = [failed];
    world.all_reduce_sum(&mut bad).expect("all-reduce");
    if bad[0] == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
