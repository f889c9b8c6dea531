//! A dataset built locally, published to an object store: `tokenmill build --out s3://b/p`
//! builds into a local stage directory (resumable as any build) and then uploads it here.
//!
//! Order makes the remote dataset appear whole or not at all: the remote `manifest.json` is
//! deleted first (a reader finds no dataset while files change), every other file is uploaded
//! (shards, provenance, masks, tokenizer, stats, excluded tables; not the stage's `.build/`
//! work state, its lock or temporary files), and `manifest.json` last. A journal in the stage
//! (`.build/published.json`: per file its size, xxh3 and the ETag the store gave it) lets a
//! rerun skip the files already there unchanged — same size and ETag remotely, same xxh3
//! locally — so an interrupted upload resumes where it stopped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokenmill_ingest::remote::upload::{ObjectInfo, delete, head, upload};

use crate::error::{Error, Result};

/// What a publication did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Published {
    /// Where the dataset went.
    pub url: String,
    /// The local stage it came from.
    pub stage: PathBuf,
    /// Files of the dataset.
    pub files: usize,
    /// Files uploaded by this run.
    pub uploaded: usize,
    /// Files found already there (same size, ETag and content).
    pub kept: usize,
    /// Bytes uploaded by this run.
    pub bytes_uploaded: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Entry {
    bytes: u64,
    xxh3: String,
    e_tag: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Journal {
    url: String,
    files: BTreeMap<String, Entry>,
}

fn journal_path(stage: &Path) -> PathBuf {
    stage.join(".build").join("published.json")
}

/// The dataset's files under `stage`, relative, sorted (`/`-separated), manifest excluded.
fn dataset_files(stage: &Path) -> Result<Vec<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
        let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        for e in rd {
            let e = e.map_err(|e| Error::io(dir, e))?;
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name.ends_with(".tmp") {
                continue; // .build/, .tokenmill.lock, temporary files
            }
            let ft = e.file_type().map_err(|e| Error::io(&p, e))?;
            if ft.is_dir() {
                walk(root, &p, out)?;
            } else if ft.is_file() {
                let rel = p.strip_prefix(root).expect("under the root");
                let rel: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(rel.join("/"));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(stage, stage, &mut out)?;
    out.retain(|f| f != tokenmill_shards::MANIFEST_FILE);
    out.sort();
    Ok(out)
}

fn xxh3_hex(path: &Path) -> Result<String> {
    Ok(tokenmill_shards::manifest::hex64(
        tokenmill_shards::checksum::xxh3_file(path)?,
    ))
}

/// Uploads the dataset built in `stage` to `url` (`s3://bucket/prefix`), manifest last.
pub fn publish(stage: &Path, url: &str) -> Result<Published> {
    let base = url.trim_end_matches('/');
    let manifest = stage.join(tokenmill_shards::MANIFEST_FILE);
    if !manifest.is_file() {
        return Err(Error::Config(format!(
            "{}: no manifest.json, nothing to publish to {url}",
            stage.display()
        )));
    }
    let jpath = journal_path(stage);
    let mut journal: Journal = std::fs::read(&jpath)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|j: &Journal| j.url == base)
        .unwrap_or_else(|| Journal {
            url: base.to_string(),
            files: BTreeMap::new(),
        });
    let save = |j: &Journal| -> Result<()> {
        let json = serde_json::to_vec_pretty(j).expect("serialises");
        Ok(tokenmill_shards::atomic_write(&jpath, &json)?)
    };
    // The remote dataset stops existing while its files change.
    delete(&format!("{base}/{}", tokenmill_shards::MANIFEST_FILE))?;
    let files = dataset_files(stage)?;
    let mut rep = Published {
        url: base.to_string(),
        stage: stage.to_path_buf(),
        files: files.len() + 1,
        ..Default::default()
    };
    let put = |rel: &str, journal: &mut Journal, rep: &mut Published| -> Result<()> {
        let local = stage.join(rel);
        let obj = format!("{base}/{rel}");
        let xxh3 = xxh3_hex(&local)?;
        let bytes = std::fs::metadata(&local)
            .map_err(|e| Error::io(&local, e))?
            .len();
        if let Some(e) = journal.files.get(rel)
            && e.bytes == bytes
            && e.xxh3 == xxh3
            && head(&obj)?.is_some_and(|o| o.size == bytes && o.e_tag == e.e_tag)
        {
            rep.kept += 1;
            return Ok(());
        }
        let ObjectInfo { e_tag, .. } = upload(&local, &obj)?;
        journal
            .files
            .insert(rel.to_string(), Entry { bytes, xxh3, e_tag });
        save(journal)?;
        rep.uploaded += 1;
        rep.bytes_uploaded += bytes;
        Ok(())
    };
    for rel in &files {
        put(rel, &mut journal, &mut rep)?;
    }
    put(tokenmill_shards::MANIFEST_FILE, &mut journal, &mut rep)?;
    tracing::info!(
        url = base,
        uploaded = rep.uploaded,
        kept = rep.kept,
        "published"
    );
    Ok(rep)
}
