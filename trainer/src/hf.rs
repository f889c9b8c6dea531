//! Hugging Face layout: `config.json` (a `DeepseekV3Config`) and `model.safetensors` with HF
//! tensor names, so a model trained here loads into `transformers`' `DeepseekV3ForCausalLM`
//! (and its checkpoints back into tokenmill). MTP modules are stored as layers
//! `num_hidden_layers + k`, as in DeepSeek-V3's release. See `docs/trainer.md` for the full
//! tensor map.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::params::ParamLayout;

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
    let filtered: serde_json::Map<String, serde_json::Value> = obj
        .iter()
        .filter(|(k, _)| known.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
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

/// Writes named f32 tensors of a flat buffer (names and shapes from `layout`, optionally
/// prefixed) to a safetensors file, atomically.
pub fn save_tensors(
    path: &Path,
    layout: &ParamLayout,
    data: &[f32],
    prefix: &str,
    meta: HashMap<String, String>,
) -> Result<()> {
    let bufs: Vec<(String, Vec<usize>, Vec<u8>)> = layout
        .specs
        .iter()
        .map(|s| {
            (
                format!("{prefix}{}", s.name),
                s.shape.clone(),
                bytes_of(&data[s.range.clone()]),
            )
        })
        .collect();
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
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let not_safetensors = |source| Error::Safetensors {
        path: path.to_path_buf(),
        what: "not a safetensors file",
        source,
    };
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(not_safetensors)?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(not_safetensors)?;
    for s in &layout.specs {
        let name = format!("{prefix}{}", s.name);
        let t = st
            .tensor(&name)
            .map_err(|_| Error::checkpoint(path, format!("tensor {name} is missing")))?;
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
        let dst = &mut data[s.range.clone()];
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
    }
    if !allow_extra {
        let known: std::collections::HashSet<String> = layout
            .specs
            .iter()
            .map(|s| format!("{prefix}{}", s.name))
            .collect();
        if let Some(extra) = st.names().into_iter().find(|n| !known.contains(*n)) {
            return Err(Error::checkpoint(
                path,
                format!("tensor {extra} does not belong to this model"),
            ));
        }
    }
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// Writes `dir/config.json` and `dir/model.safetensors` (temp + rename each).
pub fn save(dir: &Path, model: &Model, params: &[f32]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let cfg = serde_json::to_string_pretty(&hf_config(&model.cfg)).expect("serialises");
    crate::fsutil::write_atomic(&dir.join("config.json"), cfg.as_bytes())?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    save_tensors(
        &dir.join("model.safetensors"),
        &model.layout,
        params,
        "",
        meta,
    )
}

/// Reads a model written by [`save`] or by Hugging Face (`model.safetensors`, F32 or BF16).
pub fn load(dir: &Path) -> Result<(Model, Vec<f32>)> {
    let cfg = read_config(&dir.join("config.json"))?;
    let model = Model::new(cfg)?;
    let mut params = vec![0f32; model.layout.len()];
    load_tensors(
        &dir.join("model.safetensors"),
        &model.layout,
        &mut params,
        "",
        false,
    )?;
    Ok((model, params))
}
