//! The pipeline executor: runs one rank's ops of a [`Plan`] on the model's stages, with the
//! activations and their gradients travelling between ranks through a [`Mailbox`].
//!
//! The model is cut into stages of equally many blocks ([`Model::stages`]): P for 1F1B and
//! DualPipe, 2P for DualPipeV; the first holds the embedding, the last the final norm, the
//! output head and the MTP modules. Rank r runs the stage(s) the plan places there: 1F1B stage
//! r; DualPipe stage r for the micro-batches entering at rank 0 and stage P − 1 − r for those
//! entering at the last rank (two copies of the parameters); DualPipeV stages r and 2P − 1 − r.
//!
//! - **F**: receive the previous stage's output (none on the first stage), run the stage's
//!   forward, send the output on (the last stage keeps its losses).
//! - **B**: receive the gradient of the stage's output (none on the last stage), run the
//!   stage's backward, send the gradient of its input back. A full B adds its weight gradients
//!   at once; a split one leaves them in a queue ([`WgradMode::Deferred`]) for its W.
//! - **W**: the weight gradients of the oldest split B.
//! - **F&B**: the forward of one micro-batch and the backward of another at the same time,
//!   the backward on a second thread, so that each one's exchanges — the experts' all-to-all,
//!   the pipeline's messages — are in flight while the other computes (DualPipe's overlap). The
//!   backward chunks exchange on an expert group of their own, so the two never mix up their
//!   collectives; the pipeline's messages go through a [`Mailbox`], whose sends never wait for
//!   the receiver's schedule.
//!
//! Every rank holds the whole parameter buffer and adds the gradients of its stages into a
//! buffer of the whole model's size, zero elsewhere; the trainer's reduction over the world
//! then sums each parameter's gradient over the ranks that hold it (the embedding, used by the
//! first stage and the MTP modules on the last, and DualPipe's two copies of every stage).
//! One micro-batch runs the same arithmetic as in one process, so the losses are bitwise those
//! of one process and a gradient differs only in the order its micro-batches' parts are added.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokenmill_comm::{Collectives, Communicator, Mailbox};
use tokenmill_kernels::Backend;

use crate::error::{Error, Result};
use crate::model::{Batch, Forward, LossWeights, Model, Stage, WgradMode, mtp_mean, total_loss};
use crate::ops::WgradQueue;
use crate::pipeline::schedule::{Chunk, Kind, Op, Plan, Schedule, plan};

/// One micro-batch: `b` samples of `s + 1` tokens and their loss masks `[b, s]`.
#[derive(Debug, Clone)]
pub struct MicroBatch {
    /// Token ids `[b, s + 1]`.
    pub tokens: Vec<u32>,
    /// Loss masks `[b, s]`.
    pub mask: Vec<u8>,
    /// Document starts for attention reset `[b, s]` ([`Batch::starts`]).
    pub starts: Option<Vec<u32>>,
    /// Samples.
    pub b: usize,
}

/// The whole model's figures of one micro-batch, the same on every rank of the pipeline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Mean next-token cross-entropy.
    pub main_loss: f64,
    /// Mean cross-entropy of each MTP depth.
    pub mtp_losses: Vec<f64>,
    /// The balance loss of each MoE layer, in the order of [`Model::moe_biases`].
    pub balance: Vec<f64>,
}

impl Figures {
    /// The total loss, computed as one process's forward computes it.
    pub fn loss(&self, w: LossWeights) -> f64 {
        total_loss(self.main_loss, &self.mtp_losses, self.balance_loss(), w)
    }
    /// The balance losses summed over the layers, in order.
    pub fn balance_loss(&self) -> f64 {
        self.balance.iter().sum()
    }
}

/// What a pipelined step leaves on a rank.
#[derive(Debug, Clone)]
pub struct StepOut {
    /// Per micro-batch, in order.
    pub figures: Vec<Figures>,
    /// On the pipeline's rank 0: every micro-batch's next-token loss per target `[b, s]`.
    pub token_losses: Option<Vec<Vec<f32>>>,
    /// Tokens routed to each expert of each MoE layer, summed over the micro-batches.
    pub loads: Vec<Vec<u64>>,
    /// FP8 tiles with a non-finite amax in this rank's forwards and backwards.
    pub nonfinite_fp8_tiles: u64,
}

/// What every chunk of a step needs.
struct ChunkCx<'a> {
    plan: &'a Plan,
    n: usize,
    micro: &'a [MicroBatch],
    s: usize,
    w: LossWeights,
    be: &'a dyn Backend<f32>,
    params: &'a [f32],
}

impl ChunkCx<'_> {
    fn batch(&self, m: usize) -> Batch<'_> {
        Batch {
            tokens: &self.micro[m].tokens,
            mask: Some(&self.micro[m].mask),
            starts: self.micro[m].starts.as_deref(),
            distill: None,
            b: self.micro[m].b,
            s: self.s,
        }
    }
}

/// A live forward's key: (stream, stage, micro-batch).
type Key = (u8, usize, usize);

fn take_live(live: &mut HashMap<Key, Forward<f32>>, key: Key) -> Result<Forward<f32>> {
    live.remove(&key).ok_or_else(|| {
        Error::Layout(format!(
            "backward of micro-batch {} before its forward on stage {}",
            key.2, key.1
        ))
    })
}

/// What a step's forwards collect.
struct StepState {
    figures: Vec<Figures>,
    token_losses: Vec<Option<Vec<f32>>>,
    loads: Vec<Vec<u64>>,
    nonfinite: u64,
}

impl StepState {
    /// A backward's weight-gradient queue: counted when it was flushed (full), else kept for
    /// its W.
    fn finish_backward(
        &mut self,
        wq: WgradQueue<f32>,
        full: bool,
        deferred: &mut VecDeque<WgradQueue<f32>>,
    ) {
        if full {
            self.nonfinite += wq.nonfinite_fp8_tiles();
        } else {
            deferred.push_back(wq);
        }
    }

    /// The figures of a forward of `stage` on micro-batch `m`.
    fn record(&mut self, model: &Model, stage: &Stage, m: usize, f: &mut Forward<f32>) {
        self.nonfinite += f.nonfinite_fp8_tiles;
        let first_moe = model.first_moe_layer(stage);
        for (i, ms) in f.moe.iter().enumerate() {
            self.figures[m].balance[first_moe + i] = ms.balance_loss;
            for (a, &l) in self.loads[first_moe + i].iter_mut().zip(&ms.load) {
                *a += l;
            }
        }
        if stage.last {
            self.figures[m].main_loss = f.main_loss;
            self.figures[m].mtp_losses.clone_from(&f.mtp_losses);
            self.token_losses[m] = Some(std::mem::take(&mut f.token_losses));
        }
    }
}

/// A rank's place in a pipeline: its plan, the model's stages, and the messages.
#[derive(Debug)]
pub struct Pipeline {
    /// The schedule.
    pub schedule: Schedule,
    /// Ranks in the pipeline.
    pub ranks: usize,
    /// This rank.
    pub rank: usize,
    /// The model's stages, in order along a micro-batch's path.
    pub stages: Vec<Stage>,
    /// The pipeline's ranks, for its reductions.
    comm: Arc<dyn Communicator>,
    /// The activations and gradients between the ranks (a communicator of its own).
    mail: Mailbox,
    /// The expert group the backward chunks exchange on (a second communicator over the same
    /// ranks as the model's), when the experts are spread.
    backward_experts: Option<Arc<dyn Communicator>>,
}

const TAG_F: u16 = 0;
const TAG_B: u16 = 1;
const TAG_LOSSES: u16 = 2;

/// A message's tag: what (forward output, input gradient, losses), which stream, which
/// micro-batch.
fn tag(what: u16, stream: u8, micro: usize) -> Result<u16> {
    if micro >= 1 << 13 {
        return Err(Error::Config(format!(
            "{micro} micro-batches exceed the pipeline's 8192"
        )));
    }
    Ok(what << 14 | u16::from(stream) << 13 | micro as u16)
}

/// The number of stages a schedule cuts the model into.
pub fn stage_count(schedule: Schedule, ranks: usize) -> usize {
    match schedule {
        Schedule::OneFOneB | Schedule::DualPipe => ranks,
        Schedule::DualPipeV => 2 * ranks,
    }
}

impl Pipeline {
    /// This rank's part of a pipeline of `comm`'s ranks running `schedule`; `mail` is a
    /// communicator over the same ranks that nothing else receives on.
    /// `backward_experts` is a second communicator over the model's expert group (when it has
    /// one), for the backward chunks.
    pub fn new(
        model: &Model,
        schedule: Schedule,
        comm: Arc<dyn Communicator>,
        mail: Arc<dyn Communicator>,
        backward_experts: Option<Arc<dyn Communicator>>,
    ) -> Result<Self> {
        let ranks = comm.size();
        let stages = model.stages(stage_count(schedule, ranks))?;
        Ok(Pipeline {
            schedule,
            ranks,
            rank: comm.rank(),
            stages,
            comm,
            mail: Mailbox::open(mail),
            backward_experts,
        })
    }

    /// The rank holding stage `s` of `stream`.
    fn holder(&self, stream: u8, s: usize) -> usize {
        let p = self.ranks;
        match (self.schedule, stream) {
            (Schedule::OneFOneB, _) | (Schedule::DualPipe, 0) => s,
            (Schedule::DualPipe, _) => p - 1 - s,
            (Schedule::DualPipeV, _) => {
                if s < p {
                    s
                } else {
                    2 * p - 1 - s
                }
            }
        }
    }

    /// The micro-batch (of `n`) a chunk works on: DualPipe feeds the first half from rank 0,
    /// the second from the last rank.
    fn micro_of(&self, c: &Chunk, n: usize) -> usize {
        match (self.schedule, c.dir) {
            (Schedule::DualPipe, 1) => n / 2 + c.micro,
            _ => c.micro,
        }
    }

    /// The rank whose stage computes the losses of a micro-batch of `stream`.
    fn head_rank(&self, stream: u8) -> usize {
        self.holder(stream, self.stages.len() - 1)
    }

    /// Runs this rank's ops of one step over `micro` (the same micro-batches on every rank of
    /// the pipeline), adding the gradients of its stages into `grads` (not averaged over the
    /// micro-batches). Every rank of the pipeline calls it.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &self,
        model: &Model,
        be: &dyn Backend<f32>,
        params: &[f32],
        micro: &[MicroBatch],
        s: usize,
        w: LossWeights,
        grads: &mut [f32],
    ) -> Result<StepOut> {
        let n = micro.len();
        let plan: Plan = plan(self.schedule, self.ranks, n).map_err(Error::Layout)?;
        let n_moe = model.moe_biases().len();
        let experts = model.cfg.n_routed_experts;
        let depth = model.mtp.len();
        let mut st = StepState {
            figures: vec![
                Figures {
                    main_loss: 0.0,
                    mtp_losses: vec![0.0; depth],
                    balance: vec![0.0; n_moe],
                };
                n
            ],
            token_losses: vec![None; n],
            loads: vec![vec![0u64; experts]; n_moe],
            nonfinite: 0,
        };
        let mut live: HashMap<(u8, usize, usize), Forward<f32>> = HashMap::new();
        let mut deferred: VecDeque<WgradQueue<f32>> = VecDeque::new();
        // The backward chunks run with their own expert group, so that a pair's forward and
        // backward can exchange at the same time (each group's collectives in one order on
        // every rank: the forwards' and the backwards' orders are each the same on all ranks).
        let with_own_experts;
        let bmodel = match &self.backward_experts {
            Some(e) => {
                let mut m = model.clone();
                m.parallel.experts = Some(e.clone());
                with_own_experts = m;
                &with_own_experts
            }
            None => model,
        };
        let cx = ChunkCx {
            plan: &plan,
            n,
            micro,
            s,
            w,
            be,
            params,
        };
        for op in &plan.ops[self.rank] {
            match *op {
                Op::One(c) => match c.kind {
                    Kind::F => {
                        let (key, mut f) = self.forward_chunk(model, &cx, &c)?;
                        st.record(model, &self.stages[key.1], key.2, &mut f);
                        live.insert(key, f);
                    }
                    Kind::B { full } => {
                        let key = self.key(&cx, &c);
                        let f = take_live(&mut live, key)?;
                        let wq = self.backward_chunk(bmodel, &cx, key, f, full, grads)?;
                        st.finish_backward(wq, full, &mut deferred);
                    }
                    Kind::W => {
                        let _t = crate::timeline::span("compute", || format!("W{}", c.micro));
                        let mut wq = deferred.pop_front().ok_or_else(|| {
                            Error::Layout("a W with no split backward before it".into())
                        })?;
                        wq.flush(be, &model.layout, grads);
                        st.nonfinite += wq.nonfinite_fp8_tiles();
                    }
                },
                Op::Pair(fc, bc) => {
                    // DualPipe's overlapped pair: the backward on a thread of its own beside
                    // the forward, so that each one's exchanges (the experts' all-to-all, the
                    // pipeline's messages) are in flight while the other computes.
                    let Kind::B { full } = bc.kind else {
                        return Err(Error::Layout(format!("a pair whose second op is {bc:?}")));
                    };
                    let key = self.key(&cx, &bc);
                    let fb = take_live(&mut live, key)?;
                    let (fwd, bwd) = std::thread::scope(|sc| {
                        let cx = &cx;
                        let grads = &mut *grads;
                        let b = sc.spawn(move || {
                            crate::timeline::set_lane(1);
                            self.backward_chunk(bmodel, cx, key, fb, full, grads)
                        });
                        let f = self.forward_chunk(model, cx, &fc);
                        (f, b.join())
                    });
                    let wq = bwd.map_err(|_| {
                        Error::Layout("the backward of a pipeline pair panicked".into())
                    })??;
                    st.finish_backward(wq, full, &mut deferred);
                    let (fkey, mut f) = fwd?;
                    st.record(model, &self.stages[fkey.1], fkey.2, &mut f);
                    live.insert(fkey, f);
                }
            }
        }
        let StepState {
            mut figures,
            token_losses,
            mut loads,
            nonfinite,
        } = st;
        if !live.is_empty() || !deferred.is_empty() {
            return Err(Error::Layout(format!(
                "the {:?} plan left {} forwards without a backward and {} weight gradients undone on rank {}",
                self.schedule,
                live.len(),
                deferred.len(),
                self.rank
            )));
        }
        // The token losses to the pipeline's rank 0 (where the trainer's per-sample figures
        // are gathered), in micro-batch order.
        let mut gathered = None;
        for (m, tl) in token_losses.into_iter().enumerate() {
            let stream = self.stream_of(m, n);
            let from = self.head_rank(stream);
            match (tl, self.rank) {
                (Some(tl), 0) => gathered.get_or_insert_with(Vec::new).push(tl),
                (None, 0) => {
                    let tl = self.mail.recv::<f32>(from, tag(TAG_LOSSES, stream, m)?)?;
                    gathered.get_or_insert_with(Vec::new).push(tl);
                }
                (Some(tl), _) => self.mail.send(0, tag(TAG_LOSSES, stream, m)?, &tl)?,
                (None, _) => {}
            }
        }
        // Every rank of the pipeline gets the whole model's figures: each entry was computed
        // on one rank and is zero on the others, so the sums are exact.
        let mut flat: Vec<f64> = figures
            .iter()
            .flat_map(|f| {
                std::iter::once(f.main_loss)
                    .chain(f.mtp_losses.iter().copied())
                    .chain(f.balance.iter().copied())
            })
            .collect();
        let mut counts: Vec<u64> = loads.concat();
        {
            let _t = crate::timeline::span("comm", || "pipeline figures".into());
            self.comm.all_reduce_sum(&mut flat)?;
            self.comm.all_reduce_sum(&mut counts)?;
        }
        let per = 1 + depth + n_moe;
        for (f, v) in figures.iter_mut().zip(flat.chunks(per)) {
            f.main_loss = v[0];
            f.mtp_losses.copy_from_slice(&v[1..1 + depth]);
            f.balance.copy_from_slice(&v[1 + depth..]);
        }
        for (l, v) in loads.iter_mut().zip(counts.chunks(experts.max(1))) {
            l.copy_from_slice(v);
        }
        Ok(StepOut {
            figures,
            token_losses: gathered,
            loads,
            nonfinite_fp8_tiles: nonfinite,
        })
    }

    /// The live forward a chunk works on.
    fn key(&self, cx: &ChunkCx<'_>, c: &Chunk) -> Key {
        let (stream, st, _) = cx.plan.place(c.dir, self.rank);
        (stream, st, self.micro_of(c, cx.n))
    }

    /// An F: the stage's input received (or the tokens), its forward, its output sent on.
    fn forward_chunk(
        &self,
        model: &Model,
        cx: &ChunkCx<'_>,
        c: &Chunk,
    ) -> Result<(Key, Forward<f32>)> {
        let key @ (stream, si, m) = self.key(cx, c);
        let stage = &self.stages[si];
        let input = if stage.first {
            None
        } else {
            let _t = crate::timeline::span("comm", || format!("pipeline receive F{m}"));
            let from = self.holder(stream, si - 1);
            Some(self.mail.recv::<f32>(from, tag(TAG_F, stream, m)?)?)
        };
        let mut f =
            model.forward_stage(cx.be, cx.params, stage, &cx.batch(m), input, cx.w, true)?;
        if !stage.last {
            let out = f
                .hidden
                .take()
                .expect("a stage before the last has an output");
            let to = self.holder(stream, si + 1);
            self.mail.send(to, tag(TAG_F, stream, m)?, &out)?;
        }
        Ok((key, f))
    }

    /// A B: the gradient of the stage's output received (none on the last), its backward, the
    /// gradient of its input sent back. Returns the weight-gradient queue (flushed when `full`).
    fn backward_chunk(
        &self,
        model: &Model,
        cx: &ChunkCx<'_>,
        (stream, si, m): Key,
        mut f: Forward<f32>,
        full: bool,
        grads: &mut [f32],
    ) -> Result<WgradQueue<f32>> {
        let stage = &self.stages[si];
        let dout = if stage.last {
            None
        } else {
            let _t = crate::timeline::span("comm", || format!("pipeline receive B{m}"));
            let from = self.holder(stream, si + 1);
            Some(self.mail.recv::<f32>(from, tag(TAG_B, stream, m)?)?)
        };
        let mut wq = WgradQueue::new();
        let mode = if full {
            WgradMode::Immediate
        } else {
            WgradMode::Deferred
        };
        let din = model.backward_stage(cx.be, cx.params, stage, &mut f, dout, grads, &mut wq, mode);
        if let Some(din) = din {
            let to = self.holder(stream, si - 1);
            self.mail.send(to, tag(TAG_B, stream, m)?, &din)?;
        }
        Ok(wq)
    }

    /// The stream micro-batch `m` (of `n`) travels in.
    fn stream_of(&self, m: usize, n: usize) -> u8 {
        u8::from(self.schedule == Schedule::DualPipe && m >= n / 2)
    }

    /// A forward through the pipeline without gradients (evaluation): each micro-batch
    /// through the stages in order. Returns, on every rank, each micro-batch's main loss and
    /// mean MTP loss.
    pub fn evaluate(
        &self,
        model: &Model,
        be: &dyn Backend<f32>,
        params: &[f32],
        micro: &[MicroBatch],
        s: usize,
        w: LossWeights,
    ) -> Result<Vec<[f64; 2]>> {
        let mut out = vec![[0.0; 2]; micro.len()];
        for (m, mb) in micro.iter().enumerate() {
            let bt = Batch {
                tokens: &mb.tokens,
                mask: Some(&mb.mask),
                starts: mb.starts.as_deref(),
                distill: None,
                b: mb.b,
                s,
            };
            // Stream 0 only: evaluation goes down the pipeline (and back up in DualPipeV).
            for (st, stage) in self.stages.iter().enumerate() {
                if self.holder(0, st) != self.rank {
                    continue;
                }
                let input = if stage.first {
                    None
                } else {
                    Some(
                        self.mail
                            .recv::<f32>(self.holder(0, st - 1), tag(TAG_F, 0, m)?)?,
                    )
                };
                let mut f = model.forward_stage(be, params, stage, &bt, input, w, false)?;
                if stage.last {
                    out[m] = [f.main_loss, mtp_mean(&f.mtp_losses)];
                } else {
                    let h = f
                        .hidden
                        .take()
                        .expect("a stage before the last has an output");
                    self.mail
                        .send(self.holder(0, st + 1), tag(TAG_F, 0, m)?, &h)?;
                }
            }
        }
        let mut flat: Vec<f64> = out.concat();
        self.comm.all_reduce_sum(&mut flat)?;
        Ok(flat.chunks(2).map(|v| [v[0], v[1]]).collect())
    }
}
