//! `[model] init = "DIR"`: training that starts from weights in the Hugging Face layout — a
//! released (or exported) DeepseekV3-architecture model, or a tokenmill checkpoint — instead of
//! a random initialisation (continued pretraining).
//!
//! `DIR` holds `config.json` and either `model.safetensors` or shards
//! `model-0000N-of-0000M.safetensors` named by `model.safetensors.index.json`; a run directory
//! stands for the checkpoint its `checkpoints/latest` names. Tensors are F32 or BF16 (widened
//! exactly). Every tensor of the main model must be there with the shape the configuration
//! gives. The MTP modules follow DeepSeek-V3's release: module k is decoder layer
//! `num_hidden_layers + k`; a module whose tensors are all absent (transformers saves none)
//! keeps its fresh initialisation, one partly there is an error, and the layers of modules
//! beyond the run's `num_nextn_predict_layers` are skipped. Anything else — another
//! architecture, a tensor the model does not have (an FP8 checkpoint's `weight_scale_inv`), a
//! dtype other than F32/BF16, a shard the index names that is not there, shards without their
//! index — is an error naming the file and the field or tensor.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use safetensors::tensor::Dtype;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::hf::MODEL_INDEX;
use crate::model::Model;

/// What [`load_init`] read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InitReport {
    /// The model directory the weights came from.
    pub dir: PathBuf,
    /// The weight files read, in order.
    pub files: Vec<PathBuf>,
    /// Tensors read into the model.
    pub tensors: usize,
    /// Tensors read per stored dtype (`F32`, `BF16`).
    pub dtypes: BTreeMap<String, usize>,
    /// MTP depths (1-based) whose module was read.
    pub mtp_loaded: Vec<usize>,
    /// MTP depths whose module was absent and keeps its fresh initialisation.
    pub mtp_fresh: Vec<usize>,
    /// Tensors of MTP layers beyond the run's depth, not used.
    pub skipped: Vec<String>,
}

/// The model directory `path` stands for: `path` itself when it holds a `config.json`, else the
/// checkpoint a run directory's `checkpoints/latest` names.
pub fn init_dir(path: &Path) -> Result<PathBuf> {
    if path.join("config.json").is_file() {
        return Ok(path.to_path_buf());
    }
    let latest = path.join("checkpoints").join("latest");
    if latest.is_file() {
        let name = std::fs::read_to_string(&latest).map_err(|e| Error::io(&latest, e))?;
        let name = name.trim();
        if name.is_empty() || name.contains(['/', '\\', '\0']) || name.starts_with('.') {
            return Err(Error::checkpoint(
                &latest,
                format!("names {name:?}, not a checkpoint directory of the run"),
            ));
        }
        return Ok(path.join("checkpoints").join(name));
    }
    Err(Error::checkpoint(
        path,
        "[model] init: neither a model directory (no config.json) nor a run directory (no checkpoints/latest)",
    ))
}

/// The model configuration of the weights `path` names ([`init_dir`]), read with
/// [`crate::hf::read_config`] (which refuses another architecture and YaRN, naming the field).
pub fn init_config(path: &Path) -> Result<ModelConfig> {
    crate::hf::read_config(&init_dir(path)?.join("config.json"))
}

/// The decoder layer a tensor name belongs to (`model.layers.{k}.…`).
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// The weight files of `dir`, each with the tensors the index puts there (`None`: one file,
/// no index). Checks the index: plain file names beside it, every file present, and — for
/// Hugging Face's `…-0000N-of-0000M` names — all M shards named.
#[allow(clippy::type_complexity)]
fn weight_files(dir: &Path) -> Result<Vec<(PathBuf, Option<BTreeSet<String>>)>> {
    let index = dir.join(MODEL_INDEX);
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: BTreeMap<String, String>,
        }
        let ix: Index =
            serde_json::from_str(&text).map_err(|e| Error::json(&index, "not a shard index", e))?;
        let mut files: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for (name, file) in &ix.weight_map {
            files.entry(file).or_default().insert(name.clone());
        }
        let mut out = Vec::new();
        let mut of: BTreeSet<usize> = BTreeSet::new();
        for (file, names) in files {
            if file.is_empty() || file.contains(['/', '\\', '\0']) || file.starts_with('.') {
                return Err(Error::checkpoint(
                    &index,
                    format!("weight_map names `{file}`, not a plain file name beside the index"),
                ));
            }
            let path = dir.join(file);
            if !path.is_file() {
                return Err(Error::checkpoint(
                    &index,
                    format!(
                        "weight_map names {file} ({} tensors, e.g. {}), which is not there",
                        names.len(),
                        names.iter().next().map_or("", |s| s.as_str())
                    ),
                ));
            }
            if let Some(m) = file
                .strip_suffix(".safetensors")
                .and_then(|s| s.rsplit_once("-of-"))
                .and_then(|(_, m)| m.parse::<usize>().ok())
            {
                of.insert(m);
            }
            out.push((path, Some(names)));
        }
        if let (Some(&m), 1) = (of.iter().next(), of.len())
            && out.len() != m
        {
            return Err(Error::checkpoint(
                &index,
                format!(
                    "weight_map names {} files, but their names say there are {m} shards",
                    out.len()
                ),
            ));
        }
        return Ok(out);
    }
    let one = dir.join("model.safetensors");
    if one.is_file() {
        return Ok(vec![(one, None)]);
    }
    let shards: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("model-") && n.ends_with(".safetensors"))
        .collect();
    if let Some(first) = shards.iter().min() {
        return Err(Error::checkpoint(
            &index,
            format!(
                "missing: {} shards (e.g. {first}) are there, but not the index that names their tensors",
                shards.len()
            ),
        ));
    }
    Err(Error::checkpoint(
        dir,
        format!("no weights: neither model.safetensors nor {MODEL_INDEX}"),
    ))
}

/// Reads the weights of `path` ([`init_dir`]) into `params`, the flat buffer of `model`, which
/// holds a fresh initialisation: every main-model tensor is overwritten; each MTP module is
/// overwritten when the weights have it, else kept (see the module documentation).
pub fn load_init(path: &Path, model: &Model, params: &mut [f32]) -> Result<InitReport> {
    let dir = init_dir(path)?;
    let layout = &model.layout;
    let main_layers = model.cfg.num_hidden_layers;
    let depth = model.mtp.len();
    let by_name: BTreeMap<&str, usize> = layout
        .specs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut filled = vec![false; layout.specs.len()];
    let mut where_listed: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut report = InitReport {
        dir: dir.clone(),
        ..Default::default()
    };
    for (file, listed) in weight_files(&dir)? {
        let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
        let st =
            safetensors::SafeTensors::deserialize(&bytes).map_err(|source| Error::Safetensors {
                path: file.clone(),
                what: "not a safetensors file",
                source,
            })?;
        if let Some(names) = &listed {
            if let Some(n) = names.iter().find(|n| st.tensor(n).is_err()) {
                return Err(Error::checkpoint(
                    &file,
                    format!("tensor {n} is missing (the index puts it here)"),
                ));
            }
            for n in names {
                where_listed.insert(n.clone(), file.clone());
            }
        }
        let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
        names.sort();
        for name in names {
            if let Some(names) = &listed
                && !names.contains(&name)
            {
                return Err(Error::checkpoint(
                    &file,
                    format!("tensor {name} is here, but the index does not put it here"),
                ));
            }
            let t = st.tensor(&name).expect("listed by the file");
            let Some(&id) = by_name.get(name.as_str()) else {
                match layer_of(&name) {
                    Some(k) if k >= main_layers + depth => {
                        report.skipped.push(name);
                        continue;
                    }
                    _ => {}
                }
                let hint = if name.ends_with("weight_scale_inv") {
                    " (FP8 block scales: a quantized checkpoint; dequantize it to BF16 first)"
                } else {
                    ""
                };
                return Err(Error::checkpoint(
                    &file,
                    format!("tensor {name} does not belong to this DeepseekV3 model{hint}"),
                ));
            };
            let s = &layout.specs[id];
            let dst = &mut params[s.range.clone()];
            match t.dtype() {
                Dtype::F32 => {
                    check_shape(&file, &name, t.shape(), &s.shape)?;
                    for (d, c) in dst.iter_mut().zip(t.data().chunks_exact(4)) {
                        *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    }
                }
                Dtype::BF16 => {
                    check_shape(&file, &name, t.shape(), &s.shape)?;
                    for (d, c) in dst.iter_mut().zip(t.data().chunks_exact(2)) {
                        *d = f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16);
                    }
                }
                other => {
                    return Err(Error::checkpoint(
                        &file,
                        format!("tensor {name} is stored as {other:?}; F32 or BF16 is supported"),
                    ));
                }
            }
            if std::mem::replace(&mut filled[id], true) {
                return Err(Error::checkpoint(
                    &file,
                    format!("tensor {name} is stored twice"),
                ));
            }
            *report.dtypes.entry(format!("{:?}", t.dtype())).or_default() += 1;
            report.tensors += 1;
        }
        report.files.push(file);
    }
    let missing = |id: usize| {
        let name = &layout.specs[id].name;
        let at = where_listed
            .get(name)
            .cloned()
            .unwrap_or_else(|| report.files.first().cloned().unwrap_or_else(|| dir.clone()));
        Error::checkpoint(at, format!("tensor {name} is missing"))
    };
    for (id, s) in layout.specs.iter().enumerate() {
        let mtp = layer_of(&s.name).is_some_and(|k| k >= main_layers);
        if !mtp && !filled[id] {
            return Err(missing(id));
        }
    }
    for k in 0..depth {
        let prefix = format!("model.layers.{}.", main_layers + k);
        let ids: Vec<usize> = (0..layout.specs.len())
            .filter(|&i| layout.specs[i].name.starts_with(&prefix))
            .collect();
        let got = ids.iter().filter(|&&i| filled[i]).count();
        if got == 0 {
            report.mtp_fresh.push(k + 1);
        } else if let Some(&id) = ids.iter().find(|&&i| !filled[i]) {
            return Err(missing(id));
        } else {
            report.mtp_loaded.push(k + 1);
        }
    }
    Ok(report)
}

fn check_shape(file: &Path, name: &str, got: &[usize], want: &[usize]) -> Result<()> {
    if got != want {
        return Err(Error::checkpoint(
            file,
            format!("tensor {name} has shape {got:?}; the model's configuration gives {want:?}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::hf;

    fn tiny() -> Model {
        let mut cfg = ModelConfig::preset("tiny").unwrap();
        cfg.vocab_size = 64;
        Model::new(cfg).unwrap()
    }

    /// Writes `model` with `params` to `dir` as `n` shards and their index.
    fn save_sharded(dir: &Path, model: &Model, params: &[f32], n: usize) {
        hf::save_config(dir, &model.cfg).unwrap();
        let l = &model.layout;
        let mut map = BTreeMap::new();
        for (r, g) in hf::partition_specs(l, n).into_iter().enumerate() {
            let file = hf::shard_file_name("model", r, n);
            let span = hf::specs_span(l, g.clone());
            for s in &l.specs[g.clone()] {
                map.insert(s.name.clone(), file.clone());
            }
            hf::save_tensor_range(
                &dir.join(&file),
                l,
                g,
                &[("", &params[span])],
                HashMap::new(),
            )
            .unwrap();
        }
        hf::write_index(&dir.join(MODEL_INDEX), 0, &map).unwrap();
    }

    fn err(r: Result<InitReport>) -> String {
        format!("{}", r.unwrap_err())
    }

    #[test]
    fn sharded_and_single_files_load_every_tensor_exactly_and_mtp_is_optional() {
        let m = tiny();
        let want: Vec<f32> = m.init(7);
        let d = tempfile::tempdir().unwrap();
        save_sharded(d.path(), &m, &want, 3);
        let mut got: Vec<f32> = m.init(8);
        let r = load_init(d.path(), &m, &mut got).unwrap();
        assert_eq!(got, want);
        assert_eq!(r.files.len(), 3);
        assert_eq!(r.tensors, m.layout.specs.len());
        assert_eq!(r.mtp_loaded, vec![1]);
        // The main model alone (what transformers saves): the MTP module keeps its init.
        let mut main = m.cfg.clone();
        main.num_nextn_predict_layers = 0;
        let mm = Model::new(main).unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let w2: Vec<f32> = mm.init(5);
        hf::save_config(d2.path(), &m.cfg).unwrap();
        hf::save_tensors(
            &d2.path().join("model.safetensors"),
            &mm.layout,
            &w2,
            "",
            HashMap::new(),
        )
        .unwrap();
        let fresh: Vec<f32> = m.init(9);
        let mut got = fresh.clone();
        let r = load_init(d2.path(), &m, &mut got).unwrap();
        assert_eq!(r.mtp_fresh, vec![1]);
        assert_eq!(&got[..w2.len()], &w2[..], "main tensors come first");
        assert_eq!(&got[w2.len()..], &fresh[w2.len()..], "MTP keeps its init");
        // A run without MTP skips the module's layer.
        let mut got = vec![0f32; mm.layout.len()];
        let r = load_init(d.path(), &mm, &mut got).unwrap();
        assert!(
            !r.skipped.is_empty() && r.skipped.iter().all(|n| n.starts_with("model.layers.2."))
        );
        assert_eq!(got[..], want[..got.len()]);
    }

    #[test]
    fn bad_checkpoints_are_named() {
        let m = tiny();
        let w: Vec<f32> = m.init(7);
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        save_sharded(dir, &m, &w, 3);
        let mut p = w.clone();
        // A shard the index names is gone.
        let gone = dir.join(hf::shard_file_name("model", 1, 3));
        let kept = dir.join("kept");
        std::fs::rename(&gone, &kept).unwrap();
        let e = err(load_init(dir, &m, &mut p));
        assert!(
            e.contains(MODEL_INDEX)
                && e.contains("model-00002-of-00003.safetensors")
                && e.contains("not there"),
            "{e}"
        );
        std::fs::rename(&kept, &gone).unwrap();
        // The index names a file that does not exist, for every tensor of a shard.
        let ix = dir.join(MODEL_INDEX);
        let text = std::fs::read_to_string(&ix).unwrap();
        std::fs::write(
            &ix,
            text.replace("model-00003-of-00003", "model-00003-of-00004"),
        )
        .unwrap();
        let e = err(load_init(dir, &m, &mut p));
        assert!(
            e.contains("model-00003-of-00004.safetensors") && e.contains("not there"),
            "{e}"
        );
        // Shards without their index.
        std::fs::remove_file(&ix).unwrap();
        let e = err(load_init(dir, &m, &mut p));
        assert!(e.contains(MODEL_INDEX) && e.contains("missing"), "{e}");
        // Another architecture, named by its field.
        let cfg = dir.join("config.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
        v["model_type"] = "llama".into();
        std::fs::write(&cfg, v.to_string()).unwrap();
        let e = format!("{}", init_config(dir).unwrap_err());
        assert!(
            e.contains("config.json") && e.contains("model_type") && e.contains("llama"),
            "{e}"
        );
        v["model_type"] = "deepseek_v3".into();
        v["architectures"] = serde_json::json!(["Qwen2ForCausalLM"]);
        std::fs::write(&cfg, v.to_string()).unwrap();
        let e = format!("{}", init_config(dir).unwrap_err());
        assert!(
            e.contains("architectures") && e.contains("Qwen2ForCausalLM"),
            "{e}"
        );
        // An unsupported dtype and an FP8 checkpoint's scales, naming the tensor and the file.
        let one = tempfile::tempdir().unwrap();
        hf::save_config(one.path(), &m.cfg).unwrap();
        let f = one.path().join("model.safetensors");
        let write = |extra: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>| {
            let mut bufs: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = m
                .layout
                .specs
                .iter()
                .map(|s| {
                    let bytes: Vec<u8> = w[s.range.clone()]
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect();
                    (s.name.clone(), Dtype::F32, s.shape.clone(), bytes)
                })
                .collect();
            for e in extra {
                bufs.retain(|b| b.0 != e.0);
                bufs.push(e);
            }
            let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bufs
                .iter()
                .map(|(n, dt, sh, b)| {
                    (
                        n.clone(),
                        safetensors::tensor::TensorView::new(*dt, sh.clone(), b).unwrap(),
                    )
                })
                .collect();
            safetensors::serialize_to_file(views, None, &f).unwrap();
        };
        let name = "model.layers.0.self_attn.o_proj.weight";
        let shape = m.layout.specs[m.layout.find(name).unwrap()].shape.clone();
        let n: usize = shape.iter().product();
        write(vec![(
            name.into(),
            Dtype::F16,
            shape.clone(),
            vec![0; 2 * n],
        )]);
        let e = err(load_init(one.path(), &m, &mut p));
        assert!(
            e.contains("model.safetensors") && e.contains(name) && e.contains("F16"),
            "{e}"
        );
        write(vec![(
            "model.layers.0.self_attn.o_proj.weight_scale_inv".into(),
            Dtype::F32,
            vec![1, 1],
            vec![0; 4],
        )]);
        let e = err(load_init(one.path(), &m, &mut p));
        assert!(e.contains("weight_scale_inv") && e.contains("FP8"), "{e}");
        // A shape the configuration does not give.
        write(vec![(name.into(), Dtype::F32, vec![n], vec![0; 4 * n])]);
        let e = err(load_init(one.path(), &m, &mut p));
        assert!(e.contains(name) && e.contains("shape"), "{e}");
        // A main tensor missing, an MTP module partly there.
        let mut cut = m.cfg.clone();
        cut.num_hidden_layers = 1;
        cut.num_nextn_predict_layers = 0;
        let small = Model::new(cut).unwrap();
        let ws: Vec<f32> = small.init(1);
        hf::save_tensors(&f, &small.layout, &ws, "", HashMap::new()).unwrap();
        let e = err(load_init(one.path(), &m, &mut p));
        assert!(
            e.contains("model.safetensors") && e.contains("is missing"),
            "{e}"
        );
        // BF16 weights widen exactly.
        let bf: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = vec![(
            name.into(),
            Dtype::BF16,
            shape,
            (0..n)
                .flat_map(|i| tokenmill_kernels::bf16::to_bf16((i % 64) as f32 * 0.5).to_le_bytes())
                .collect(),
        )];
        write(bf);
        let r = load_init(one.path(), &m, &mut p).unwrap();
        assert_eq!(r.dtypes["BF16"], 1);
        let o = &p[m.layout.range(m.layout.find(name).unwrap())];
        assert!(
            o.iter()
                .enumerate()
                .all(|(i, &x)| x == (i % 64) as f32 * 0.5)
        );
    }
}
