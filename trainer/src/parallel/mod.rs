//! Training across processes: the layout (`[parallel] dp × ep × pp` ranks), the process
//! groups it makes, and the data-parallel step with a sharded optimizer (ZeRO-1).
//!
//! Rank `r` is pipeline rank `r mod pp` of data rank `d = r div pp`; data rank `d` is
//! expert-parallel rank `d mod ep` in the expert group of replica `d div ep`. Every pipeline
//! holds `1/(dp·ep)` of the global batch (DeepSeek-V3's layout: attention and the dense layers
//! are data-parallel over all data ranks, the routed experts are spread over each expert
//! group, the layers over each pipeline's stages: [`crate::pipeline::exec`]). After the
//! backward, the gradients are reduce-scattered over the world in rank order — deterministic:
//! the same layout gives the same bits — each rank updates its shard of the parameters with
//! its shard of AdamW's state, and the shards are all-gathered.

use std::ops::Range;
use std::sync::Arc;

use tokenmill_comm::{Collectives, Communicator, chunk_range};
use tokenmill_kernels::Cpu;
use tokenmill_kernels::backend::Backend;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::model::Parallel;
use crate::optim::{AdamW, AdamWConfig, clip_scale};
use crate::params::ParamLayout;
use crate::pipeline::exec::stage_count;
use crate::pipeline::schedule::{Schedule, plan};

/// `[parallel]`: how many ranks of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParallelConfig {
    /// Data-parallel replicas.
    pub dp: usize,
    /// Expert-parallel ranks per replica (the routed experts are split over them).
    pub ep: usize,
    /// Pipeline ranks (1: no pipeline).
    pub pp: usize,
    /// The pipeline schedule when pp > 1 (DualPipeV: 2·pp stages in a V; DualPipe and 1F1B:
    /// pp stages).
    pub schedule: Schedule,
    /// Ranks per node (0: not said). Node-limited routing: with the expert groups of the
    /// model's group-limited routing (`n_group`, `topk_group`) each on one node, a token's
    /// experts lie on at most `topk_group` nodes — DeepSeek-V3's bound on cross-node traffic.
    pub ranks_per_node: usize,
    /// The most nodes a token's experts may lie on (checked against the model and the layout;
    /// DeepSeek-V3: 4). Needs `ranks_per_node`.
    pub max_nodes_per_token: Option<usize>,
    /// What carries the ranks' bytes (`transport = "mpi" | "nccl"`).
    pub transport: Transport,
}

/// What carries the ranks' bytes. Either way the collectives are built on the same
/// primitives in the same order ([`tokenmill_comm::Collectives`]), so a layout gives the same
/// bits over both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// MPI, the launcher's world (host memory; any machine).
    #[default]
    Mpi,
    /// NCCL between the ranks' GPUs (each rank on its node's GPU of its local rank, modulo the
    /// node's GPUs), bootstrapped over MPI; needs a binary built with the `nccl` feature.
    Nccl,
}

impl Default for ParallelConfig {
    fn default() -> Self {
        ParallelConfig {
            dp: 1,
            ep: 1,
            pp: 1,
            schedule: Schedule::DualPipeV,
            ranks_per_node: 0,
            max_nodes_per_token: None,
            transport: Transport::Mpi,
        }
    }
}

impl ParallelConfig {
    /// One process (dp = ep = pp = 1).
    pub fn is_single(&self) -> bool {
        self.world() == 1
    }

    /// Ranks the layout needs.
    pub fn world(&self) -> usize {
        self.dp * self.ep * self.pp
    }

    /// Checks the layout against the world size, the model and the batch: clear errors, before
    /// any rank starts work.
    pub fn validate(
        &self,
        world: usize,
        model: &ModelConfig,
        global_batch: usize,
        micro_batch: usize,
    ) -> Result<()> {
        if self.dp == 0 || self.ep == 0 || self.pp == 0 {
            return Err(Error::Layout(format!(
                "dp, ep and pp must be at least 1 (got {self:?})"
            )));
        }
        if self.world() != world {
            return Err(Error::Layout(format!(
                "dp {} × ep {} × pp {} = {} ranks, but the job has {world} (mpirun -np {})",
                self.dp,
                self.ep,
                self.pp,
                self.world(),
                self.world()
            )));
        }
        if !model.n_routed_experts.is_multiple_of(self.ep) {
            return Err(Error::Layout(format!(
                "{} routed experts cannot be split over ep = {} ranks",
                model.n_routed_experts, self.ep
            )));
        }
        self.validate_nodes(model)?;
        let ranks = self.dp * self.ep;
        if !global_batch.is_multiple_of(ranks)
            || !(global_batch / ranks).is_multiple_of(micro_batch.max(1))
        {
            return Err(Error::Layout(format!(
                "the global batch of {global_batch} samples must split into {ranks} equal slices of whole micro-batches of {micro_batch}"
            )));
        }
        if self.pp > 1 {
            let stages = stage_count(self.schedule, self.pp);
            let layers = model.num_hidden_layers;
            if !layers.is_multiple_of(stages) {
                return Err(Error::Layout(format!(
                    "{layers} layers cannot be cut into the {stages} pipeline stages of {:?} on pp = {} ranks (equally many layers each)",
                    self.schedule, self.pp
                )));
            }
            let micro = global_batch / ranks / micro_batch.max(1);
            plan(self.schedule, self.pp, micro).map_err(|e| {
                Error::Layout(format!(
                    "{e}: each pipeline runs {} samples in micro-batches of {micro_batch}",
                    global_batch / ranks
                ))
            })?;
        }
        Ok(())
    }
}

impl ParallelConfig {
    /// Node-limited routing: every expert group on one node, and `topk_group` within
    /// `max_nodes_per_token`.
    fn validate_nodes(&self, model: &ModelConfig) -> Result<()> {
        let Some(max) = self.max_nodes_per_token else {
            return Ok(());
        };
        let rpn = self.ranks_per_node;
        if rpn == 0 || !self.ep.is_multiple_of(rpn) {
            return Err(Error::Layout(format!(
                "max_nodes_per_token needs ranks_per_node dividing ep = {} (got {rpn})",
                self.ep
            )));
        }
        let e = model.n_routed_experts;
        let per_node = e * rpn / self.ep;
        let per_group = e / model.n_group.max(1);
        if model.n_group <= 1 || !per_node.is_multiple_of(per_group) {
            return Err(Error::Layout(format!(
                "node-limited routing needs each of the model's expert groups on one node: {e} experts in {} groups of {per_group}, {per_node} experts per node",
                model.n_group
            )));
        }
        if model.topk_group > max {
            return Err(Error::Layout(format!(
                "the model routes each token to topk_group = {} groups, which can lie on {} nodes > max_nodes_per_token = {max}",
                model.topk_group, model.topk_group
            )));
        }
        Ok(())
    }

    /// The node of expert-parallel rank `ep_rank` (ranks_per_node > 0).
    pub fn node_of(&self, ep_rank: usize) -> usize {
        ep_rank / self.ranks_per_node.max(1)
    }
}

/// The process groups of a layout, from this rank's point of view.
///
/// Rank `r` of the world is pipeline rank `r mod pp` of data rank `r div pp`; data rank `d`
/// is expert-parallel rank `d mod ep` of replica `d div ep`. With pp = 1 this is the layout
/// without a pipeline: rank `r` is expert rank `r mod ep` of replica `r div ep`.
#[derive(Debug, Clone)]
pub struct Groups {
    /// Every rank (the gradients are summed and the optimizer sharded over all of them).
    pub world: Arc<dyn Communicator>,
    /// The ranks that hold the same pipeline stages, one per data rank (the world when
    /// pp = 1): a micro-batch's losses and routing loads are taken over them.
    pub stage: Arc<dyn Communicator>,
    /// This rank's expert group (`None` when ep = 1).
    pub experts: Option<Arc<dyn Communicator>>,
    /// A second communicator over the expert group, for a pipeline's backward chunks (which
    /// run beside forward chunks: `None` unless ep > 1 and pp > 1).
    pub experts_backward: Option<Arc<dyn Communicator>>,
    /// This rank's pipeline and the communicator of its activations' messages (`None` when
    /// pp = 1).
    pub pipe: Option<(Arc<dyn Communicator>, Arc<dyn Communicator>)>,
    /// This rank's data-parallel replica.
    pub dp_rank: usize,
    /// This rank's place in its expert group.
    pub ep_rank: usize,
    /// This rank's place in its pipeline.
    pub pp_rank: usize,
    /// Which slice of the batch this rank works on (`dp_rank · ep + ep_rank`), of
    /// `data_ranks = dp · ep`.
    pub data_rank: usize,
    /// Slices the batch is cut into.
    pub data_ranks: usize,
}

impl Groups {
    /// Splits `world` by `cfg` (call on every rank).
    pub fn new(world: Arc<dyn Communicator>, cfg: &ParallelConfig) -> Result<Self> {
        let r = world.rank();
        let pp = cfg.pp.max(1);
        let (data_rank, pp_rank) = (r / pp, r % pp);
        let (dp_rank, ep_rank) = (data_rank / cfg.ep, data_rank % cfg.ep);
        let experts = if cfg.ep > 1 {
            Some(Arc::from(world.split(dp_rank * pp + pp_rank, ep_rank)?))
        } else {
            None
        };
        let experts_backward = if cfg.ep > 1 && pp > 1 {
            Some(Arc::from(world.split(dp_rank * pp + pp_rank, ep_rank)?))
        } else {
            None
        };
        let (stage, pipe) = if pp > 1 {
            let stage: Arc<dyn Communicator> = Arc::from(world.split(pp_rank, data_rank)?);
            let pipe: Arc<dyn Communicator> = Arc::from(world.split(data_rank, pp_rank)?);
            let mail: Arc<dyn Communicator> = Arc::from(world.split(data_rank, pp_rank)?);
            (stage, Some((pipe, mail)))
        } else {
            (world.clone(), None)
        };
        Ok(Groups {
            world,
            stage,
            experts,
            experts_backward,
            pipe,
            dp_rank,
            ep_rank,
            pp_rank,
            data_rank,
            data_ranks: cfg.dp * cfg.ep,
        })
    }

    /// What the model needs to know: the batch over the ranks holding the same stages, the
    /// experts over the group.
    pub fn model_parallel(&self) -> Parallel {
        Parallel {
            batch: (self.stage.size() > 1).then(|| self.stage.clone()),
            experts: self.experts.clone(),
        }
    }

    /// This rank's samples of a global batch of `batch` samples (the same on every rank of a
    /// pipeline).
    pub fn batch_slice(&self, batch: usize) -> Range<usize> {
        let (w, r) = (self.data_ranks, self.data_rank);
        r * batch / w..(r + 1) * batch / w
    }
}

/// AdamW with its state sharded over the world (ZeRO-1): each rank keeps the moments of one
/// contiguous chunk of the parameters.
#[derive(Debug)]
pub struct ShardedAdamW {
    /// This rank's parameters.
    pub range: Range<usize>,
    /// The state of that chunk.
    pub opt: AdamW,
}

impl ShardedAdamW {
    /// This rank's shard of a fresh optimizer.
    pub fn new(cfg: AdamWConfig, layout: &ParamLayout, world: &dyn Communicator) -> Self {
        let range = chunk_range(layout.len(), world.size(), world.rank());
        ShardedAdamW {
            opt: AdamW::shard(cfg, layout, range.clone()),
            range,
        }
    }

    /// One data-parallel update: the gradients summed over the world (each rank receives
    /// its chunk), clipped by their global norm, applied to this rank's chunk, and the
    /// updated chunks gathered into `params` on every rank. Returns the gradient norm.
    pub fn step(
        &mut self,
        world: &dyn Communicator,
        params: &mut [f32],
        grads: &mut [f32],
        lr: f64,
        max_norm: f64,
    ) -> Result<f64> {
        let norm = reduce_gradients(&Cpu, world, &self.opt, self.range.clone(), grads)?;
        let clip = clip_scale(norm, max_norm);
        update_shard(
            &Cpu,
            world,
            &mut self.opt,
            self.range.clone(),
            params,
            grads,
            lr,
            clip,
        )?;
        Ok(norm)
    }
}

/// ZeRO-1, first half: `grads[range]` becomes this rank's chunk of the gradients summed over
/// the world (reduce-scatter in rank order; the rest of `grads` is left as it was); returns
/// the global norm of the summed gradients (`opt` holds the state of `range` only), the
/// chunk's part summed on `be` when it keeps its data.
pub fn reduce_gradients(
    be: &dyn Backend<f32>,
    world: &dyn Communicator,
    opt: &AdamW,
    range: Range<usize>,
    grads: &mut [f32],
) -> Result<f64> {
    let _c = crate::timeline::span("comm", || "gradient reduce-scatter".into());
    let mine = world.reduce_scatter_sum(grads)?;
    grads[range.clone()].copy_from_slice(&mine);
    let mut sq = [opt.grad_norm_on(be, &grads[range]).powi(2)];
    world.all_reduce_sum(&mut sq)?;
    Ok(sq[0].sqrt())
}

/// ZeRO-1, second half: AdamW on `params[range]` with `grads[range]` scaled by `clip` (on `be`
/// when it keeps its data), then every rank's updated chunk gathered into `params`.
#[allow(clippy::too_many_arguments)]
pub fn update_shard(
    be: &dyn Backend<f32>,
    world: &dyn Communicator,
    opt: &mut AdamW,
    range: Range<usize>,
    params: &mut [f32],
    grads: &[f32],
    lr: f64,
    clip: f64,
) -> Result<()> {
    opt.step_on(
        be,
        &mut params[range.clone()],
        &grads[range.clone()],
        lr,
        clip,
    );
    let _c = crate::timeline::span("comm", || "parameter all-gather".into());
    let (all, _) = world.all_gather_v(&params[range])?;
    params.copy_from_slice(&all);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_that_do_not_fit_are_named() {
        let m = ModelConfig::preset("tiny").unwrap(); // 8 routed experts
        let ok = ParallelConfig {
            dp: 2,
            ep: 2,
            pp: 1,
            ..Default::default()
        };
        ok.validate(4, &m, 8, 2).unwrap();
        let err = |c: ParallelConfig, world, batch, micro| {
            c.validate(world, &m, batch, micro).unwrap_err().to_string()
        };
        assert!(err(ok, 3, 8, 2).contains("= 4 ranks, but the job has 3"));
        assert!(
            err(
                ParallelConfig {
                    dp: 1,
                    ep: 3,
                    pp: 1,
                    ..Default::default()
                },
                3,
                6,
                1
            )
            .contains("8 routed experts cannot be split over ep = 3")
        );
        assert!(err(ok, 4, 6, 1).contains("global batch of 6 samples"));
        assert!(err(ok, 4, 8, 4).contains("micro-batches of 4"));
        // Pipelines: tiny has 2 layers; DualPipeV on 2 ranks cuts 4 stages.
        let pipe = |pp, schedule| ParallelConfig {
            pp,
            schedule,
            ..Default::default()
        };
        let mut four = m.clone();
        four.num_hidden_layers = 4;
        pipe(2, Schedule::DualPipeV)
            .validate(2, &four, 8, 2)
            .unwrap();
        pipe(2, Schedule::OneFOneB).validate(2, &m, 8, 8).unwrap();
        assert!(
            err(pipe(2, Schedule::DualPipeV), 2, 8, 1)
                .contains("2 layers cannot be cut into the 4 pipeline stages of DualPipeV")
        );
        let few = pipe(2, Schedule::DualPipeV)
            .validate(2, &four, 8, 4)
            .unwrap_err()
            .to_string();
        assert!(
            few.contains("needs at least 4 micro-batches (got 2)")
                && few.contains("runs 8 samples in micro-batches of 4"),
            "{few}"
        );
        assert!(
            pipe(2, Schedule::DualPipe)
                .validate(2, &m, 6, 2)
                .unwrap_err()
                .to_string()
                .contains("even number of micro-batches, at least 4 (got 3)")
        );
        // tiny: 8 experts in 2 groups, topk_group 1.
        let nodes = |ep, rpn, max| ParallelConfig {
            ep,
            ranks_per_node: rpn,
            max_nodes_per_token: Some(max),
            ..Default::default()
        };
        nodes(4, 2, 1).validate(4, &m, 8, 2).unwrap();
        assert!(
            err(nodes(4, 1, 1), 4, 8, 2).contains("each of the model's expert groups on one node")
        );
        assert!(err(nodes(4, 3, 1), 4, 8, 2).contains("ranks_per_node dividing ep"));
        let mut two = m.clone();
        two.topk_group = 2;
        assert!(
            nodes(4, 2, 1)
                .validate(4, &two, 8, 2)
                .unwrap_err()
                .to_string()
                .contains("max_nodes_per_token = 1")
        );
        assert!(
            err(
                ParallelConfig {
                    dp: 0,
                    ep: 1,
                    pp: 1,
                    ..Default::default()
                },
                1,
                8,
                1
            )
            .contains("at least 1")
        );
    }
}
