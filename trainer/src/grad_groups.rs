//! Gradient norms by parameter group — each decoder layer's attention, its feed-forward (dense
//! or MoE) and its norms; the embedding, the final norm, the output head — logged every step,
//! so that a gradient-norm spike no document explains is reported as an **optimizer** spike
//! naming the group whose norm jumped ([`crate::spikes`]).

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokenmill_kernels::Cpu;
use tokenmill_kernels::backend::Backend;
use tokenmill_kernels::cpu::optim::{split_segments, sum_squares};

use crate::optim::SEGMENT;
use crate::params::ParamLayout;

/// The group of a tensor by its Hugging Face name: `layers.3.attn`, `layers.3.ffn`,
/// `layers.3.norms`, `embed`, `norm`, `head`; MTP modules are layers after the main ones.
pub fn group_of(name: &str) -> String {
    let n = name.strip_prefix("model.").unwrap_or(name);
    if let Some(rest) = n.strip_prefix("layers.") {
        let (layer, sub) = rest.split_once('.').unwrap_or((rest, ""));
        let part = if sub.starts_with("self_attn") {
            "attn"
        } else if sub.starts_with("mlp") {
            "ffn"
        } else if sub.contains("norm") {
            "norms"
        } else {
            // MTP's projections and norms (eh_proj, enorm, hnorm, shared_head)
            "mtp"
        };
        return format!("layers.{layer}.{part}");
    }
    if n.starts_with("embed_tokens") {
        "embed".into()
    } else if n.starts_with("norm") {
        "norm".into()
    } else if n.starts_with("lm_head") {
        "head".into()
    } else {
        n.split('.').next().unwrap_or(n).to_string()
    }
}

/// The trainable tensors' ranges of the flat buffer, by group (in name order).
#[derive(Debug, Clone)]
pub struct GradGroups {
    groups: Vec<(String, Vec<Range<usize>>)>,
    /// The segments summed for the last `held` range, kept from step to step.
    plan: Arc<Mutex<Option<SquarePlan>>>,
}

/// What [`GradGroups::squares_on`] sums for one `held` range: the groups' ranges inside it, cut
/// into segments of at most [`SEGMENT`], in group order, and how many belong to each group.
#[derive(Debug)]
struct SquarePlan {
    held: Range<usize>,
    segs: Vec<Range<usize>>,
    per_group: Vec<usize>,
}

impl GradGroups {
    /// The groups of `layout`'s trainable tensors.
    pub fn new(layout: &ParamLayout) -> Self {
        let mut by: BTreeMap<String, Vec<Range<usize>>> = BTreeMap::new();
        for s in layout.specs.iter().filter(|s| s.trainable()) {
            by.entry(group_of(&s.name))
                .or_default()
                .push(s.range.clone());
        }
        GradGroups {
            groups: by.into_iter().collect(),
            plan: Arc::default(),
        }
    }

    /// Group names, in the order of [`GradGroups::squares`].
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.groups.iter().map(|g| g.0.as_str())
    }

    /// [`GradGroups::squares_on`] on the host's CPU.
    pub fn squares(&self, grads: &[f32], held: Range<usize>) -> Vec<f64> {
        self.squares_on(&Cpu, grads, held)
    }

    /// Per group, the sum of squares of `grads` inside `held` (the part of the buffer this
    /// process holds: all of it in one process, its ZeRO chunk across processes, whose sums
    /// add up over the ranks): one `Backend::sum_squares` over every group's segments, on `be`
    /// when it keeps its data, else on the host with the same kernel.
    pub fn squares_on(&self, be: &dyn Backend<f32>, grads: &[f32], held: Range<usize>) -> Vec<f64> {
        let mut plan = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        if plan.as_ref().is_none_or(|p| p.held != held) {
            let mut segs = Vec::new();
            let per_group = self
                .groups
                .iter()
                .map(|(_, ranges)| {
                    let before = segs.len();
                    let inside = ranges
                        .iter()
                        .map(|r| r.start.max(held.start)..r.end.min(held.end));
                    segs.extend(split_segments(inside.filter(|r| r.start < r.end), SEGMENT));
                    segs.len() - before
                })
                .collect();
            *plan = Some(SquarePlan {
                held: held.clone(),
                segs,
                per_group,
            });
        }
        let p = plan.as_ref().expect("planned just above");
        let mut sums = vec![0f64; p.segs.len()];
        if be.moves_data() {
            be.sum_squares(grads, &p.segs, &mut sums);
        } else {
            sum_squares(grads, &p.segs, &mut sums);
        }
        let mut at = 0;
        p.per_group
            .iter()
            .map(|&k| {
                let s = sums[at..at + k].iter().sum();
                at += k;
                s
            })
            .collect()
    }

    /// The norms from summed squares, by name.
    pub fn norms(&self, squares: &[f64]) -> BTreeMap<String, f64> {
        self.names()
            .zip(squares)
            .map(|(n, s)| (n.to_string(), s.sqrt()))
            .collect()
    }
}

/// An optimizer spike: the group whose gradient grew most — the largest part of the rise of
/// the step's squared gradient norm over its typical value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerSpike {
    /// The group (`layers.3.ffn`, `embed`, …).
    pub group: String,
    /// Its gradient norm's robust z-score against its own trailing trend.
    pub z: f64,
    /// Its gradient norm at the spike.
    pub norm: f64,
    /// Its median gradient norm over the trailing window.
    pub typical: f64,
    /// Its share of the rise of the squared norm (`norm² − typical²` over the sum of the
    /// groups' positive rises).
    #[serde(default)]
    pub share: f64,
}

/// The trailing per-group gradient norms of non-spiking steps.
#[derive(Debug, Clone, Default)]
pub struct GroupHistory {
    window: usize,
    steps: VecDeque<(u64, Vec<f64>)>,
}

impl GroupHistory {
    /// A history of `window` steps.
    pub fn new(window: usize) -> Self {
        GroupHistory {
            window: window.max(3),
            steps: VecDeque::new(),
        }
    }

    /// Forgets the steps from `step` on (they were rolled back).
    pub fn forget_from(&mut self, step: u64) {
        while self.steps.back().is_some_and(|s| s.0 >= step) {
            self.steps.pop_back();
        }
    }

    /// Adds a non-spiking step's group norms (in [`GradGroups::names`] order).
    pub fn push(&mut self, step: u64, norms: Vec<f64>) {
        self.steps.push_back((step, norms));
        if self.steps.len() > self.window {
            self.steps.pop_front();
        }
    }

    /// The group that makes up most of the rise of the squared gradient norm at `step` over
    /// the groups' typical (median) norms, with its own trend z-score
    /// ([`crate::spikes::trend_z`]); `None` before 3 steps of history or when no group rose.
    pub fn jump(&self, names: &[String], step: u64, norms: &[f64]) -> Option<OptimizerSpike> {
        if self.steps.len() < 3 {
            return None;
        }
        let per: Vec<(usize, f64, f64)> = (0..norms.len())
            .map(|g| {
                let pts: Vec<(f64, f64)> = self
                    .steps
                    .iter()
                    .filter_map(|(t, v)| v.get(g).map(|&n| (*t as f64, n)))
                    .collect();
                let z = crate::spikes::trend_z(&pts, step as f64, norms[g]).unwrap_or(0.0);
                let mut hist: Vec<f64> = pts.iter().map(|p| p.1).collect();
                hist.sort_by(f64::total_cmp);
                let typical = hist.get(hist.len() / 2).copied().unwrap_or(0.0);
                (g, z, typical)
            })
            .collect();
        let rise = |&(g, _, typical): &(usize, f64, f64)| norms[g] * norms[g] - typical * typical;
        let total: f64 = per.iter().map(rise).filter(|r| *r > 0.0).sum();
        let best = per.iter().max_by(|a, b| rise(a).total_cmp(&rise(b)))?;
        (rise(best) > 0.0).then(|| OptimizerSpike {
            group: names.get(best.0).cloned().unwrap_or_default(),
            z: best.1,
            norm: norms[best.0],
            typical: best.2,
            share: rise(best) / total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tensor_of_the_model_has_a_group_and_the_groups_make_the_norm() {
        let m = crate::model::Model::new(crate::ModelConfig::preset("tiny").unwrap()).unwrap();
        let g = GradGroups::new(&m.layout);
        let names: Vec<&str> = g.names().collect();
        for want in [
            "embed",
            "head",
            "norm",
            "layers.0.attn",
            "layers.0.ffn",
            "layers.0.norms",
            "layers.1.ffn",
            "layers.2.mtp",
        ] {
            assert!(names.contains(&want), "{want} in {names:?}");
        }
        let grads: Vec<f32> = (0..m.layout.len())
            .map(|i| ((i % 13) as f32) - 6.0)
            .collect();
        let all: f64 = m
            .layout
            .specs
            .iter()
            .filter(|s| s.trainable())
            .flat_map(|s| grads[s.range.clone()].iter())
            .map(|&x| f64::from(x) * f64::from(x))
            .sum();
        let sq = g.squares(&grads, 0..grads.len());
        assert!((sq.iter().sum::<f64>() - all).abs() < 1e-6 * all);
        // Chunks (ZeRO) add up to the whole.
        let half = grads.len() / 3;
        let a = g.squares(&grads, 0..half);
        let b = g.squares(&grads, half..grads.len());
        for ((x, y), z) in a.iter().zip(&b).zip(&sq) {
            assert!((x + y - z).abs() <= 1e-9 * z.max(1.0));
        }
    }

    #[test]
    fn a_jump_in_one_group_is_named_against_its_own_trend() {
        let names: Vec<String> = ["embed", "layers.0.attn", "layers.0.ffn"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut h = GroupHistory::new(50);
        for t in 0..30u64 {
            // Falling norms with a little noise; the ffn's an order of magnitude larger.
            let f = 1.0 / (1.0 + t as f64 * 0.05);
            let e = 0.01 * ((t * 7 % 5) as f64 - 2.0);
            h.push(t, vec![0.5 * f + e, 1.0 * f + e, 10.0 * f + 3.0 * e]);
        }
        // The attention's norm (the smaller one) jumps 20×; the ffn's stays on its trend.
        let f = 1.0 / (1.0 + 30.0 * 0.05);
        let s = h.jump(&names, 30, &[0.5 * f, 20.0 * f, 10.0 * f]).unwrap();
        assert_eq!(s.group, "layers.0.attn");
        assert!(s.z > 50.0 && s.share > 0.99, "{s:?}");
        assert!((s.typical - 0.67).abs() < 0.1, "{s:?}");
        // A small group's large relative jump (the embedding ×5) does not outweigh a large
        // group's rise (the ffn ×2), which makes most of the squared norm's rise.
        let s = h
            .jump(&names, 30, &[0.5 * f * 5.0, 1.0 * f, 10.0 * f * 2.0])
            .unwrap();
        assert_eq!(s.group, "layers.0.ffn", "{s:?}");
        assert!(s.share > 0.9, "{s:?}");
        assert!(
            GroupHistory::new(10)
                .jump(&names, 0, &[1.0, 1.0, 1.0])
                .is_none()
        );
    }
}
