//! Writing a model for the Hugging Face ecosystem (`tokenmill export`): `config.json` and the
//! weights as `model.safetensors`, or — once they pass a size threshold — as shards
//! `model-0000N-of-0000M.safetensors` with the index `model.safetensors.index.json`, the way
//! `transformers`' `save_pretrained` cuts them: tensors in order, a new shard when the next
//! tensor would take the current one past the threshold (a tensor larger than the threshold
//! gets a shard of its own). Weights in F32 or BF16 (round to nearest even) — a BF16 export
//! keeps the MoE router (`mlp.gate.weight`) and its routing bias (`e_score_correction_bias`) in
//! F32, as transformers keeps them (`_keep_in_fp32_modules_strict`) and as tokenmill computes
//! them in every precision: rounding them could change which experts a token goes to. The
//! index's `total_size` is the tensors' bytes. MTP modules are written as decoder layers
//! `num_hidden_layers + k` (DeepSeek-V3's release; transformers' `DeepseekV3ForCausalLM` does
//! not use them).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hf::{MODEL_INDEX, hf_config, shard_file_name, write_index};
use crate::model::Model;

/// The number format of exported weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightDtype {
    /// IEEE single precision (the trainer's master weights, exactly).
    #[default]
    F32,
    /// bfloat16, rounded to nearest even.
    Bf16,
}

impl WeightDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            WeightDtype::F32 => 4,
            WeightDtype::Bf16 => 2,
        }
    }
    /// PyTorch's name (`torch_dtype` in `config.json`).
    pub fn torch_name(self) -> &'static str {
        match self {
            WeightDtype::F32 => "float32",
            WeightDtype::Bf16 => "bfloat16",
        }
    }
    /// The format tensor `name` is written in: F32 for the router and its bias whatever the
    /// export's format, else this one.
    pub fn of_tensor(self, name: &str) -> WeightDtype {
        if name.ends_with("mlp.gate.weight") || name.ends_with("mlp.gate.e_score_correction_bias") {
            WeightDtype::F32
        } else {
            self
        }
    }
    fn safetensors(self) -> Dtype {
        match self {
            WeightDtype::F32 => Dtype::F32,
            WeightDtype::Bf16 => Dtype::BF16,
        }
    }
    fn bytes(self, x: &[f32]) -> Vec<u8> {
        match self {
            WeightDtype::F32 => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
            WeightDtype::Bf16 => x
                .iter()
                .flat_map(|&v| tokenmill_kernels::bf16::to_bf16(v).to_le_bytes())
                .collect(),
        }
    }
}

/// One weight file written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WrittenFile {
    /// Its name in the directory.
    pub name: String,
    /// Tensors in it.
    pub tensors: usize,
    /// Bytes of its tensors' data.
    pub bytes: u64,
}

/// What [`save_hf`] wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportReport {
    /// The weight files, in order.
    pub files: Vec<WrittenFile>,
    /// Bytes of all tensors' data (the index's `total_size`).
    pub total_size: u64,
    /// The weights are sharded, with an index.
    pub sharded: bool,
    /// The number format.
    pub dtype: WeightDtype,
}

/// The groups of consecutive tensors (indices into `sizes`, in bytes) that `save_pretrained`'s
/// rule makes with a threshold of `max` bytes per shard.
pub fn shard_groups(sizes: &[u64], max: u64) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut acc) = (0, 0u64);
    for (i, &s) in sizes.iter().enumerate() {
        if i > start && acc + s > max {
            out.push(start..i);
            (start, acc) = (i, 0);
        }
        acc += s;
    }
    if start < sizes.len() || out.is_empty() {
        out.push(start..sizes.len());
    }
    out
}

/// Writes `dir/config.json` (with `torch_dtype`) and the weights of `model` from `params` in
/// `dtype`: one `model.safetensors` when they fit in `max_shard_bytes`, else shards and the
/// index. `dir` must exist; files are written in place (write into a directory that is renamed
/// once complete).
pub fn save_hf(
    dir: &Path,
    model: &Model,
    params: &[f32],
    dtype: WeightDtype,
    max_shard_bytes: u64,
) -> Result<ExportReport> {
    let layout = &model.layout;
    if params.len() != layout.len() {
        return Err(Error::Config(format!(
            "{} parameters given for a model of {}",
            params.len(),
            layout.len()
        )));
    }
    let sizes: Vec<u64> = layout
        .specs
        .iter()
        .map(|s| (s.range.len() * dtype.of_tensor(&s.name).size()) as u64)
        .collect();
    let groups = shard_groups(&sizes, max_shard_bytes.max(1));
    let n = groups.len();
    let sharded = n > 1;
    let mut files = Vec::with_capacity(n);
    let mut weight_map = BTreeMap::new();
    for (r, g) in groups.into_iter().enumerate() {
        let name = if sharded {
            shard_file_name("model", r, n)
        } else {
            "model.safetensors".to_string()
        };
        let bufs: Vec<(String, WeightDtype, Vec<usize>, Vec<u8>)> = layout.specs[g.clone()]
            .iter()
            .map(|s| {
                weight_map.insert(s.name.clone(), name.clone());
                let dt = dtype.of_tensor(&s.name);
                (
                    s.name.clone(),
                    dt,
                    s.shape.clone(),
                    dt.bytes(&params[s.range.clone()]),
                )
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = bufs
            .iter()
            .map(|(nm, dt, shape, b)| {
                (
                    nm.clone(),
                    TensorView::new(dt.safetensors(), shape.clone(), b).expect("sizes agree"),
                )
            })
            .collect();
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        let path = dir.join(&name);
        safetensors::serialize_to_file(views, Some(meta), &path).map_err(|source| {
            Error::Safetensors {
                path: path.clone(),
                what: "cannot write",
                source,
            }
        })?;
        files.push(WrittenFile {
            name,
            tensors: g.len(),
            bytes: sizes[g].iter().sum(),
        });
    }
    let total_size: u64 = sizes.iter().sum();
    if sharded {
        write_index(&dir.join(MODEL_INDEX), total_size, &weight_map)?;
    }
    let mut cfg = hf_config(&model.cfg);
    cfg["torch_dtype"] = dtype.torch_name().into();
    let text = serde_json::to_string_pretty(&cfg).expect("serialises");
    crate::fsutil::write_atomic(&dir.join("config.json"), text.as_bytes())?;
    Ok(ExportReport {
        files,
        total_size,
        sharded,
        dtype,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    #[test]
    fn shards_follow_save_pretrained_and_cover_every_tensor_once() {
        assert_eq!(shard_groups(&[4, 4, 4], 100), vec![0..3]);
        assert_eq!(shard_groups(&[4, 4, 4], 8), vec![0..2, 2..3]);
        // A tensor over the threshold gets a shard of its own.
        assert_eq!(shard_groups(&[2, 50, 2, 2], 8), vec![0..1, 1..2, 2..4]);
        assert_eq!(shard_groups(&[], 8), vec![0..0]);
    }

    #[test]
    fn sharded_bf16_export_reads_back_as_the_rounded_weights() {
        let mut cfg = ModelConfig::preset("tiny").unwrap();
        cfg.vocab_size = 64;
        let model = Model::new(cfg).unwrap();
        let params: Vec<f32> = model.init(4);
        for (dtype, max, want_sharded) in [
            (WeightDtype::F32, 1 << 30, false),
            (WeightDtype::F32, 20_000, true),
            (WeightDtype::Bf16, 10_000, true),
        ] {
            let d = tempfile::tempdir().unwrap();
            let r = save_hf(d.path(), &model, &params, dtype, max).unwrap();
            assert_eq!(r.sharded, want_sharded);
            let want_size: usize = model
                .layout
                .specs
                .iter()
                .map(|s| s.range.len() * dtype.of_tensor(&s.name).size())
                .sum();
            assert_eq!(r.total_size, want_size as u64);
            if want_sharded {
                assert!(r.files.len() > 2, "{:?}", r.files);
                // Every shard within the threshold unless it is one tensor.
                assert!(r.files.iter().all(|f| f.bytes <= max || f.tensors == 1));
                let ix: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(d.path().join(MODEL_INDEX)).unwrap(),
                )
                .unwrap();
                assert_eq!(ix["metadata"]["total_size"], r.total_size);
                assert_eq!(
                    ix["weight_map"].as_object().unwrap().len(),
                    model.layout.specs.len()
                );
            } else {
                assert!(d.path().join("model.safetensors").is_file());
            }
            let cfg: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(d.path().join("config.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(cfg["torch_dtype"], dtype.torch_name());
            let (m2, back) = crate::hf::load(d.path()).unwrap();
            assert_eq!(m2.cfg, model.cfg);
            let mut want = params.clone();
            let mut kept = 0;
            for s in &model.layout.specs {
                match dtype.of_tensor(&s.name) {
                    WeightDtype::Bf16 => want[s.range.clone()]
                        .iter_mut()
                        .for_each(|x| *x = tokenmill_kernels::bf16::round_bf16(*x)),
                    WeightDtype::F32 => kept += 1,
                }
            }
            if dtype == WeightDtype::Bf16 {
                // The router and its bias of both MoE layers (main and MTP) stay F32.
                assert_eq!(kept, 4);
            }
            assert_eq!(back, want);
            if dtype == WeightDtype::Bf16 {
                assert_ne!(back, params, "BF16 rounds");
            }
        }
    }
}
