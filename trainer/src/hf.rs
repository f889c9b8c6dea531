//! Hugging Face layout: `config.json` (a `DeepseekV3Config`) and `model.safetensors` with HF
//! tensor names, so a model trained here loads into `transformers`' `DeepseekV3ForCausalLM`
//! (and its checkpoints back into tokenmill). MTP modules are stored as layers
//! `num_hidden_layers + k`, as in DeepSeek-V3's release. See `docs/trainer.md` for the full
//! tensor map.
//!
//! Weights may also be sharded the Hugging Face way: files `model-00001-of-0000N.safetensors`
//! … and the index `model.safetensors.index.json` (`{"metadata": {"total_size": …},
//! "weight_map": {tensor name: file}}`); [`load`] reads either form. The tensors of a shard are
//! consecutive in the flat buffer ([`partition_specs`], [`save_tensor_range`]).

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::params::{ParamId, ParamLayout};

/// The `config.json` of a model: every `ModelConfig` field plus the keys `transformers` needs.
pub fn hf_config(cfg: &ModelConfig) -> serde_json::Value {
    let mut v = serde_json::to_value(cfg).expect("a config serialises");
    let o = v.as_object_mut().expect("an object");
    let extra = serde_json::json!({
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "torch_dtype": "float32",
        "hidden_act": "silu",
        "attention_bias": false,
        "attention_dropout": 0.0,
        "rope_interleave": true,
        "rope_scaling": null,
        "tie_word_embeddings": false,
        "topk_method": "noaux_tc",
        "scoring_func": "sigmoid",
        "use_cache": false,
        "num_key_value_heads": cfg.num_attention_heads,
        "bos_token_id": null,
        "eos_token_id": null,
        "pad_token_id": null
    });
    for (k, val) in extra.as_object().expect("an object") {
        o.insert(k.clone(), val.clone());
    }
    v
}

/// Reads a `config.json` written by tokenmill or by Hugging Face, ignoring the keys tokenmill
/// does not model (they must hold their DeepSeek-V3 values where they change the math).
pub fn read_config(path: &Path) -> Result<ModelConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::json(path, "not JSON", e))?;
    let obj = v
        .as_object()
        .ok_or_else(|| Error::checkpoint(path, "config.json is not an object"))?;
    let must = |key: &str, ok: &dyn Fn(&serde_json::Value) -> bool, what: &str| -> Result<()> {
        match obj.get(key) {
            Some(val) if !ok(val) => Err(Error::checkpoint(
                path,
                format!("{key} = {val} is not supported ({what})"),
            )),
            _ => Ok(()),
        }
    };
    // Another architecture is refused by its name, before its fields are read as DeepseekV3's.
    if let Some(t) = obj.get("model_type").filter(|v| !v.is_null())
        && t != "deepseek_v3"
    {
        return Err(Error::checkpoint(
            path,
            format!("model_type = {t} is not supported (DeepseekV3 only: \"deepseek_v3\")"),
        ));
    }
    if let Some(a) = obj.get("architectures").and_then(|a| a.as_array())
        && !a.iter().any(|x| x == "DeepseekV3ForCausalLM")
    {
        return Err(Error::checkpoint(
            path,
            format!(
                "architectures = {} is not supported (DeepseekV3ForCausalLM only)",
                serde_json::Value::Array(a.clone())
            ),
        ));
    }
    must(
        "quantization_config",
        &|v| v.is_null(),
        "quantized weights: dequantize to BF16 first",
    )?;
    must(
        "attention_bias",
        &|v| v == &serde_json::Value::Bool(false),
        "no biases",
    )?;
    must(
        "tie_word_embeddings",
        &|v| v == &serde_json::Value::Bool(false),
        "untied head",
    )?;
    must(
        "rope_interleave",
        &|v| v == &serde_json::Value::Bool(true),
        "interleaved RoPE",
    )?;
    must("rope_scaling", &|v| v.is_null(), "YaRN is not implemented")?;
    must("scoring_func", &|v| v == "sigmoid", "sigmoid routing")?;
    let known = serde_json::to_value(ModelConfig::preset("tiny")?).expect("serialises");
    let known = known.as_object().expect("an object");
    let mut filtered: serde_json::Map<String, serde_json::Value> = obj
        .iter()
        .filter(|(k, _)| known.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // transformers 5 writes `rope_parameters: {rope_type, rope_theta}` instead of
    // `rope_theta` + `rope_scaling`.
    if let Some(rp) = obj.get("rope_parameters").filter(|v| !v.is_null()) {
        let kind = rp
            .get("rope_type")
            .and_then(|t| t.as_str())
            .unwrap_or("default");
        if kind != "default" {
            return Err(Error::checkpoint(
                path,
                format!(
                    "rope_parameters.rope_type = {kind:?} is not supported (YaRN is not implemented)"
                ),
            ));
        }
        if let Some(theta) = rp
            .get("rope_theta")
            .filter(|_| !obj.contains_key("rope_theta"))
        {
            filtered.insert("rope_theta".into(), theta.clone());
        }
    }
    let cfg: ModelConfig = serde_json::from_value(serde_json::Value::Object(filtered))
        .map_err(|e| Error::json(path, "bad model config", e))?;
    cfg.validate().map_err(|e| Error::ConfigFile {
        path: path.to_path_buf(),
        source: Box::new(e),
    })?;
    Ok(cfg)
}

fn bytes_of(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The index of a sharded model's weights (Hugging Face's name).
pub const MODEL_INDEX: &str = "model.safetensors.index.json";
/// The index of a sharded checkpoint's optimizer moments.
pub const OPTIMIZER_INDEX: &str = "optimizer.safetensors.index.json";

/// The name of shard `rank` (0-based) of `n`: `{stem}-{rank+1:05}-of-{n:05}.safetensors`, as
/// Hugging Face names them (`model-00001-of-00004.safetensors`).
pub fn shard_file_name(stem: &str, rank: usize, n: usize) -> String {
    format!("{stem}-{:05}-of-{n:05}.safetensors", rank + 1)
}

/// Cuts a sequence of tensors of `sizes` elements into `n ≥ 1` runs of consecutive tensors
/// (ranges of indices) of about equal total size: the boundaries fall at the tensor ends
/// nearest `k · total / n`. Every tensor is in exactly one run, in order; no run is empty
/// unless there are fewer tensors than runs, when the first `sizes.len()` runs hold one tensor
/// each and the others none.
pub fn partition_sizes(sizes: &[usize], n: usize) -> Vec<Range<usize>> {
    assert!(n >= 1, "a partition into no groups");
    let t = sizes.len();
    let mut cum = Vec::with_capacity(t + 1);
    cum.push(0u128);
    for &s in sizes {
        cum.push(cum.last().copied().unwrap_or(0) + s as u128);
    }
    let total = cum[t];
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    for k in 0..n {
        let end = if k == n - 1 {
            t
        } else if t <= n {
            (start + 1).min(t)
        } else {
            // At least one tensor here, and one for each run after this one.
            let (lo, hi) = (start + 1, t - (n - 1 - k));
            let target = total * (k as u128 + 1) / n as u128;
            let above = cum.partition_point(|&c| c < target).clamp(lo, hi);
            let below = above.saturating_sub(1).clamp(lo, hi);
            if target.abs_diff(cum[below]) <= cum[above].abs_diff(target) {
                below
            } else {
                above
            }
        };
        out.push(start..end);
        start = end;
    }
    out
}

/// [`partition_sizes`] of the tensors of `layout`: `n` groups of consecutive tensors (ranges
/// of indices into `layout.specs`) of about equal bytes.
pub fn partition_specs(layout: &ParamLayout, n: usize) -> Vec<Range<usize>> {
    let sizes: Vec<usize> = layout.specs.iter().map(|s| s.range.len()).collect();
    partition_sizes(&sizes, n)
}

/// The part of the flat buffer the tensors `layout.specs[specs]` occupy (they are
/// contiguous); for no tensors, an empty range where they would start.
pub fn specs_span(layout: &ParamLayout, specs: Range<usize>) -> Range<usize> {
    if specs.is_empty() {
        let at = layout
            .specs
            .get(specs.start)
            .map_or(layout.len(), |s| s.range.start);
        return at..at;
    }
    layout.specs[specs.start].range.start..layout.specs[specs.end - 1].range.end
}

/// Writes the tensors `layout.specs[specs]` to a safetensors file with `meta`, once for each
/// part `(prefix, data)`: named `prefix + name`, their elements taken from `data`, which
/// starts at the first of them — `data[0]` is element
/// `layout.specs[specs.start].range.start` of the flat buffer, so pass
/// `&flat[specs_span(layout, specs)]` (or the flat buffer itself when `specs` starts at 0).
/// `data` must hold at least the span. The file is written in place: write it into a
/// directory that is renamed once complete (as checkpoints are).
pub fn save_tensor_range(
    path: &Path,
    layout: &ParamLayout,
    specs: Range<usize>,
    parts: &[(&str, &[f32])],
    meta: HashMap<String, String>,
) -> Result<()> {
    let span = specs_span(layout, specs.clone());
    let mut bufs: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (prefix, data) in parts {
        if data.len() < span.len() {
            return Err(Error::checkpoint(
                path,
                format!(
                    "{} elements given for tensors {prefix}… of {} elements",
                    data.len(),
                    span.len()
                ),
            ));
        }
        for s in &layout.specs[specs.clone()] {
            let r = s.range.start - span.start..s.range.end - span.start;
            bufs.push((
                format!("{prefix}{}", s.name),
                s.shape.clone(),
                bytes_of(&data[r]),
            ));
        }
    }
    let views: Vec<(String, TensorView<'_>)> = bufs
        .iter()
        .map(|(n, shape, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, shape.clone(), b).expect("sizes agree"),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, Some(meta), path).map_err(|source| Error::Safetensors {
        path: path.to_path_buf(),
        what: "cannot write",
        source,
    })
}

/// Writes every tensor of `layout` from the flat buffer `data` (optionally prefixed) to a
/// safetensors file ([`save_tensor_range`] of all of them).
pub fn save_tensors(
    path: &Path,
    layout: &ParamLayout,
    data: &[f32],
    prefix: &str,
    meta: HashMap<String, String>,
) -> Result<()> {
    save_tensor_range(path, layout, 0..layout.specs.len(), &[(prefix, data)], meta)
}

/// The tensors [`load_tensors_present`] filled: (target index, tensor id).
pub type Filled = Vec<(usize, ParamId)>;

/// Reads the tensors of `layout` that a safetensors file holds into `targets`: a tensor named
/// `prefix + name` for a target `(prefix, data)` goes to `data[spec.range]` (`data` is a flat
/// buffer of the whole layout), as F32 (or BF16, widened), with the shape the layout gives.
/// A tensor that matches no target is an error unless `allow_extra`. Returns the tensors it
/// filled, as (target index, tensor id), and the file's metadata.
pub fn load_tensors_present(
    path: &Path,
    layout: &ParamLayout,
    targets: &mut [(&str, &mut [f32])],
    allow_extra: bool,
) -> Result<(Filled, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let not_safetensors = |source| Error::Safetensors {
        path: path.to_path_buf(),
        what: "not a safetensors file",
        source,
    };
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(not_safetensors)?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(not_safetensors)?;
    let known = names(layout, targets);
    let mut filled = Vec::new();
    for (name, t) in st.iter() {
        let Some(&(k, id)) = known.get(name) else {
            if allow_extra {
                continue;
            }
            return Err(Error::checkpoint(
                path,
                format!("tensor {name} does not belong to this model"),
            ));
        };
        let s = &layout.specs[id];
        if t.shape() != s.shape.as_slice() {
            return Err(Error::checkpoint(
                path,
                format!(
                    "tensor {name} has shape {:?}, the model needs {:?}",
                    t.shape(),
                    s.shape
                ),
            ));
        }
        let dst = &mut targets[k].1[s.range.clone()];
        match t.dtype() {
            Dtype::F32 => {
                for (d, c) in dst.iter_mut().zip(t.data().chunks_exact(4)) {
                    *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            Dtype::BF16 => {
                for (d, c) in dst.iter_mut().zip(t.data().chunks_exact(2)) {
                    *d = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
                }
            }
            other => {
                return Err(Error::checkpoint(
                    path,
                    format!("tensor {name} is {other:?}; F32 or BF16 expected"),
                ));
            }
        }
        filled.push((k, id));
    }
    Ok((filled, meta.metadata().clone().unwrap_or_default()))
}

/// Every tensor name of `targets` (`prefix + name`) → (target index, tensor id).
fn names(
    layout: &ParamLayout,
    targets: &[(&str, &mut [f32])],
) -> HashMap<String, (usize, ParamId)> {
    let mut known = HashMap::new();
    for (k, (prefix, _)) in targets.iter().enumerate() {
        for (id, s) in layout.specs.iter().enumerate() {
            known
                .entry(format!("{prefix}{}", s.name))
                .or_insert((k, id));
        }
    }
    known
}

/// Reads every tensor of `layout` (optionally prefixed) from a safetensors file into `data`.
/// Every tensor must be present with its shape, as F32 (or BF16, widened); tensors the layout
/// does not know are an error unless `allow_extra`.
pub fn load_tensors(
    path: &Path,
    layout: &ParamLayout,
    data: &mut [f32],
    prefix: &str,
    allow_extra: bool,
) -> Result<HashMap<String, String>> {
    let (filled, meta) = load_tensors_present(path, layout, &mut [(prefix, data)], allow_extra)?;
    let mut have = vec![false; layout.specs.len()];
    for (_, id) in filled {
        have[id] = true;
    }
    if let Some(id) = have.iter().position(|h| !h) {
        return Err(Error::checkpoint(
            path,
            format!("tensor {prefix}{} is missing", layout.specs[id].name),
        ));
    }
    Ok(meta)
}

/// Writes a Hugging Face shard index: `{"metadata": {"total_size": bytes}, "weight_map":
/// {tensor name: file name}}`, atomically.
pub fn write_index(
    path: &Path,
    total_size: u64,
    weight_map: &BTreeMap<String, String>,
) -> Result<()> {
    let v = serde_json::json!({
        "metadata": { "total_size": total_size },
        "weight_map": weight_map,
    });
    let text = serde_json::to_string_pretty(&v).expect("serialises");
    crate::fsutil::write_atomic(path, text.as_bytes())
}

/// Reads the tensors of `layout` from the files a Hugging Face shard index names (they lie
/// beside it) into `targets`, as [`load_tensors_present`] does: every tensor of every target
/// (`prefix + name`) must be in the index and found in the file it names, exactly once; a name
/// in the index or a file that the model does not know is an error naming the file. Returns the
/// files' metadata (merged; the files must agree on it).
pub fn load_sharded(
    index: &Path,
    layout: &ParamLayout,
    targets: &mut [(&str, &mut [f32])],
) -> Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let ix: Index =
        serde_json::from_str(&text).map_err(|e| Error::json(index, "not a shard index", e))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let known = names(layout, targets);
    if let Some((name, file)) = ix.weight_map.iter().find(|(n, _)| !known.contains_key(*n)) {
        return Err(Error::checkpoint(
            index,
            format!("tensor {name} (in {file}) does not belong to this model"),
        ));
    }
    for (prefix, _) in targets.iter() {
        if let Some(s) = layout
            .specs
            .iter()
            .find(|s| !ix.weight_map.contains_key(&format!("{prefix}{}", s.name)))
        {
            return Err(Error::checkpoint(
                index,
                format!("tensor {prefix}{} is missing from the index", s.name),
            ));
        }
    }
    let files: std::collections::BTreeSet<&String> = ix.weight_map.values().collect();
    // Shard files are plain names beside the index: never `..`, an absolute path or a
    // subdirectory (Hugging Face's own indexes name them so too).
    if let Some(bad) = files
        .iter()
        .find(|f| f.is_empty() || f.contains(['/', '\\', '\0']) || f.starts_with('.'))
    {
        return Err(Error::checkpoint(
            index,
            format!("shard file `{bad}` is not a plain file name beside the index"),
        ));
    }
    let mut meta: HashMap<String, String> = HashMap::new();
    let mut meta_from: HashMap<String, &String> = HashMap::new();
    let mut filled = vec![vec![false; layout.specs.len()]; targets.len()];
    for file in files {
        let path = dir.join(file);
        let (got, m) = load_tensors_present(&path, layout, targets, false)?;
        for (k, id) in got {
            let name = format!("{}{}", targets[k].0, layout.specs[id].name);
            let listed = &ix.weight_map[&name];
            if listed != file || filled[k][id] {
                return Err(Error::checkpoint(
                    &path,
                    format!("tensor {name} is also here; the index puts it in {listed}"),
                ));
            }
            filled[k][id] = true;
        }
        for (key, val) in m {
            match meta.get(&key) {
                Some(prev) if *prev != val => {
                    return Err(Error::checkpoint(
                        &path,
                        format!("metadata {key} = {val}, but {} has {prev}", meta_from[&key]),
                    ));
                }
                Some(_) => {}
                None => {
                    meta_from.insert(key.clone(), file);
                    meta.insert(key, val);
                }
            }
        }
    }
    for (k, (prefix, _)) in targets.iter().enumerate() {
        if let Some(id) = filled[k].iter().position(|f| !f) {
            let name = format!("{prefix}{}", layout.specs[id].name);
            return Err(Error::checkpoint(
                dir.join(&ix.weight_map[&name]),
                format!("tensor {name} is missing (the index puts it here)"),
            ));
        }
    }
    Ok(meta)
}

/// Writes `dir/config.json` (atomically), creating `dir`.
pub fn save_config(dir: &Path, cfg: &ModelConfig) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let text = serde_json::to_string_pretty(&hf_config(cfg)).expect("serialises");
    crate::fsutil::write_atomic(&dir.join("config.json"), text.as_bytes())
}

/// Writes `dir/config.json` and `dir/model.safetensors`.
pub fn save(dir: &Path, model: &Model, params: &[f32]) -> Result<()> {
    save_config(dir, &model.cfg)?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    save_tensors(
        &dir.join("model.safetensors"),
        &model.layout,
        params,
        "",
        meta,
    )
}

/// Reads the weights of a model in `dir` into the flat buffer `params`: from the shards
/// [`MODEL_INDEX`] names when it is there, else from `model.safetensors`.
pub fn load_params(dir: &Path, layout: &ParamLayout, params: &mut [f32]) -> Result<()> {
    let index = dir.join(MODEL_INDEX);
    if index.is_file() {
        load_sharded(&index, layout, &mut [("", params)])?;
        return Ok(());
    }
    load_tensors(&dir.join("model.safetensors"), layout, params, "", false)?;
    Ok(())
}

/// Reads a model written by [`save`], by a run's checkpoint (one file or shards) or by Hugging
/// Face (`model.safetensors` or shards with their index, F32 or BF16).
pub fn load(dir: &Path) -> Result<(Model, Vec<f32>)> {
    let cfg = read_config(&dir.join("config.json"))?;
    let model = Model::new(cfg)?;
    let mut params = vec![0f32; model.layout.len()];
    load_params(dir, &model.layout, &mut params)?;
    Ok((model, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(sizes: &[usize], n: usize) -> Vec<Range<usize>> {
        let p = partition_sizes(sizes, n);
        assert_eq!(p.len(), n, "{sizes:?} in {n}");
        let mut next = 0;
        for g in &p {
            assert_eq!(g.start, next, "{sizes:?} in {n}: {p:?}");
            assert!(
                !g.is_empty() || sizes.len() < n,
                "{sizes:?} in {n}: an empty group {p:?}"
            );
            next = g.end;
        }
        assert_eq!(next, sizes.len(), "{sizes:?} in {n}: {p:?}");
        p
    }

    #[test]
    fn partition_covers_every_tensor_once_in_order_and_balances_bytes() {
        // Equal tensors split evenly.
        assert_eq!(check(&[10; 8], 4), vec![0..2, 2..4, 4..6, 6..8]);
        assert_eq!(check(&[10; 8], 1), vec![0..8]);
        // A big tensor alone; the small ones share.
        assert_eq!(check(&[100, 1, 1, 1, 1], 2), vec![0..1, 1..5]);
        assert_eq!(check(&[1, 1, 1, 1, 100], 2), vec![0..4, 4..5]);
        // Two big tensors at the front still leave one tensor for each later group.
        assert_eq!(check(&[100, 100, 1, 1], 4), vec![0..1, 1..2, 2..3, 3..4]);
        // As many tensors as groups, and fewer: one each, then empty groups.
        assert_eq!(check(&[5, 1, 9], 3), vec![0..1, 1..2, 2..3]);
        assert_eq!(check(&[5, 1], 4), vec![0..1, 1..2, 2..2, 2..2]);
        assert_eq!(check(&[], 3), vec![0..0, 0..0, 0..0]);
        // Empty tensors are placed too.
        check(&[0, 0, 7, 0, 3, 0], 3);
        // Balance: no group is heavier than its fair share plus the biggest tensor.
        let sizes: Vec<usize> = (0..97).map(|i| (i * 7919) % 1000 + 1).collect();
        let total: usize = sizes.iter().sum();
        let big = *sizes.iter().max().unwrap();
        for n in 1..=12 {
            for g in check(&sizes, n) {
                let bytes: usize = sizes[g].iter().sum();
                assert!(bytes <= total / n + big, "{n}: {bytes} of {total}");
            }
        }
    }

    #[test]
    fn rope_parameters_of_transformers_5_give_rope_theta_and_refuse_yarn() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("config.json");
        let mut v = hf_config(&ModelConfig::preset("tiny").unwrap());
        let o = v.as_object_mut().unwrap();
        o.remove("rope_theta");
        o.remove("rope_scaling");
        o.insert(
            "rope_parameters".into(),
            serde_json::json!({"rope_theta": 50000.0, "rope_type": "default"}),
        );
        std::fs::write(&path, v.to_string()).unwrap();
        assert_eq!(read_config(&path).unwrap().rope_theta, 50000.0);
        v["rope_parameters"]["rope_type"] = "yarn".into();
        std::fs::write(&path, v.to_string()).unwrap();
        let e = read_config(&path).unwrap_err().to_string();
        assert!(e.contains("rope_parameters.rope_type = \"yarn\""), "{e}");
    }

    #[test]
    fn partition_of_a_model_covers_its_buffer_contiguously() {
        let model = Model::new(ModelConfig::preset("tiny").unwrap()).unwrap();
        let l = &model.layout;
        for n in [1, 2, 3, 4, 7] {
            let groups = partition_specs(l, n);
            let mut at = 0;
            for g in &groups {
                let span = specs_span(l, g.clone());
                assert_eq!(span.start, at);
                at = span.end;
            }
            assert_eq!(at, l.len());
        }
        let few = ParamLayout::default();
        assert_eq!(specs_span(&few, 0..0), 0..0);
    }
}
