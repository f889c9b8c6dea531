//! `tokenmill export RUN [--step N] --out DIR [--dtype f32|bf16] [--shard-size 5GB]`: a
//! checkpoint of a run written as a Hugging Face model directory that
//! `transformers.AutoModelForCausalLM.from_pretrained` loads (`config.json`, the weights as one
//! `model.safetensors` or as shards with `model.safetensors.index.json` once over the shard
//! size, F32 or BF16), with the run's `tokenizer.json` beside them (the training dataset's).
//! See [`tokenmill_trainer::hf_export`] and `docs/hf.md`.
//!
//! The directory is written under a temporary name beside `DIR` and renamed into place when
//! complete; an existing non-empty `DIR` is refused.

use std::path::{Path, PathBuf};

use tokenmill_trainer::hf_export::{ExportReport, WeightDtype, save_hf};

use crate::error::{Error, Result};

/// How to export.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// The checkpoint step (`None`: the one `checkpoints/latest` names).
    pub step: Option<u64>,
    /// The directory to write.
    pub out: PathBuf,
    /// The weights' number format.
    pub dtype: WeightDtype,
    /// The largest shard in bytes before the weights are sharded.
    pub shard_size: u64,
}

/// What [`export`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportOutcome {
    /// The checkpoint exported.
    pub checkpoint: PathBuf,
    /// The directory written.
    pub out: PathBuf,
    /// The weight files.
    pub weights: ExportReport,
    /// The tokenizer copied beside them (from the run's training dataset), if found.
    pub tokenizer: Option<PathBuf>,
    /// Parameters (MTP modules included).
    pub parameters: usize,
}

/// Parses a size: bytes, or a number with a unit — `KB`, `MB`, `GB`, `TB` (powers of 1000,
/// as `transformers`' `max_shard_size` reads them) or `KiB`, `MiB`, `GiB`, `TiB` (of 1024).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (t[..split].trim(), t[split..].trim());
    let mult: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024f64.powi(4),
        _ => {
            return Err(Error::Config(format!(
                "size {s:?}: unknown unit {unit:?} (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            )));
        }
    };
    let v: f64 = num
        .parse()
        .map_err(|_| Error::Config(format!("size {s:?}: not a number followed by a unit")))?;
    let bytes = (v * mult).round();
    if !(1.0..1.8e19).contains(&bytes) {
        return Err(Error::Config(format!(
            "size {s:?}: must be at least 1 byte"
        )));
    }
    Ok(bytes as u64)
}

/// The checkpoint directory of `run` at `step` (`RUN/checkpoints/step-NNNNNNNN`), or the one
/// `checkpoints/latest` names; `run` may also be a checkpoint directory itself.
pub fn checkpoint_of(run: &Path, step: Option<u64>) -> Result<PathBuf> {
    let root = run.join("checkpoints");
    match step {
        None => crate::eval::resolve_model_dir(run),
        Some(n) => {
            let dir = root.join(format!("step-{n:08}"));
            if dir.join("config.json").is_file() {
                return Ok(dir);
            }
            let mut have: Vec<String> = std::fs::read_dir(&root)
                .map(|rd| {
                    rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                        .filter_map(|n| n.strip_prefix("step-")?.parse::<u64>().ok())
                        .map(|n| n.to_string())
                        .collect()
                })
                .unwrap_or_default();
            have.sort_by_key(|s| s.parse::<u64>().unwrap_or(0));
            Err(Error::NotFound(format!(
                "{}: no checkpoint of step {n} (steps with one: {})",
                root.display(),
                if have.is_empty() {
                    "none".to_string()
                } else {
                    have.join(", ")
                }
            )))
        }
    }
}

/// The tokenizer of the run a checkpoint belongs to: `tokenizer.json` of the training dataset
/// named in `RUN/run.json` (or beside the checkpoint, when it has one).
fn run_tokenizer(checkpoint: &Path) -> Option<PathBuf> {
    let beside = checkpoint.join("tokenizer.json");
    if beside.is_file() {
        return Some(beside);
    }
    let run = checkpoint.parent()?.parent()?;
    let text = std::fs::read_to_string(run.join("run.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let train = PathBuf::from(v["config"]["data"]["train"].as_str()?);
    let tok = train.join("tokenizer.json");
    tok.is_file().then_some(tok)
}

/// Exports a checkpoint of `run` (see the module documentation).
pub fn export(run: &Path, cfg: &ExportConfig) -> Result<ExportOutcome> {
    let checkpoint = checkpoint_of(run, cfg.step)?;
    let (model, params) = tokenmill_trainer::hf::load(&checkpoint)?;
    let out = &cfg.out;
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .map_err(|e| Error::io(out, e))?
            .next()
            .is_none();
        if !empty {
            return Err(Error::Config(format!(
                "{}: exists and is not empty; export into a new directory",
                out.display()
            )));
        }
        std::fs::remove_dir(out).map_err(|e| Error::io(out, e))?;
    }
    let name = out
        .file_name()
        .ok_or_else(|| Error::Config(format!("{}: not a directory name", out.display())))?;
    let tmp = out.with_file_name(format!(".tmp-{}", name.to_string_lossy()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let weights = save_hf(&tmp, &model, &params, cfg.dtype, cfg.shard_size)?;
    let tokenizer = run_tokenizer(&checkpoint);
    if let Some(t) = &tokenizer {
        std::fs::copy(t, tmp.join("tokenizer.json")).map_err(|e| Error::io(t, e))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
    Ok(ExportOutcome {
        checkpoint,
        out: out.clone(),
        weights,
        tokenizer,
        parameters: params.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_transformers_reads_them() {
        assert_eq!(parse_size("5GB").unwrap(), 5_000_000_000);
        assert_eq!(parse_size("100KB").unwrap(), 100_000);
        assert_eq!(parse_size("1.5 MiB").unwrap(), 1_572_864);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        for bad in ["", "GB", "5 parsecs", "0", "-1GB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
