//! Inputs given as URLs (`s3://bucket/prefix/*.jsonl.gz`, `https://host/f.warc.gz`): expanded
//! through [`tokenmill_ingest::remote`] into `PathBuf`s that hold the URL, which the readers,
//! the plan and the provenance `source` column carry as they are.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Whether an input pattern is a remote URL (`file://` is a local path, not one).
pub fn is_url(pattern: &str) -> bool {
    tokenmill_ingest::remote::is_remote(Path::new(pattern))
}

/// The objects a remote pattern names, sorted; none is an error, as for a local glob.
pub fn expand(pattern: &str) -> Result<Vec<PathBuf>> {
    let found = tokenmill_ingest::remote::expand(pattern)?;
    if found.is_empty() {
        return Err(Error::Config(format!(
            "input `{pattern}` matches no object"
        )));
    }
    Ok(found
        .into_iter()
        .map(|(url, _)| PathBuf::from(url))
        .collect())
}

/// The size in bytes of an input, local or remote (for the plan).
pub fn size(path: &Path) -> Result<u64> {
    if tokenmill_ingest::remote::is_remote(path) {
        return Ok(tokenmill_ingest::remote::size(&path.to_string_lossy())?);
    }
    Ok(std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len())
}

/// The inputs a listing names (`--paths-file`): one per line, blank lines and `#` comments
/// skipped; a line without a scheme or leading `/` is relative to `base` (required then). The
/// listing itself may be local or remote, plain or gzip (`.gz`). Remote entries are checked to
/// exist (their sizes asked 64 at a time, for the plan); local ones must be files. Errors name
/// the listing and the line.
pub fn listed(list: &str, base: Option<&str>) -> Result<Vec<PathBuf>> {
    use std::io::Read;
    let mut raw = Vec::new();
    if is_url(list) {
        tokenmill_ingest::remote::open_stream(list)?
            .read_to_end(&mut raw)
            .map_err(|e| Error::io(list, e))?;
    } else {
        let p = tokenmill_ingest::remote::local_path(list).unwrap_or_else(|| PathBuf::from(list));
        raw = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
    }
    let text = if list.ends_with(".gz") {
        let mut s = String::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_string(&mut s)
            .map_err(|e| Error::Config(format!("{list}: not a gzip text listing: {e}")))?;
        s
    } else {
        String::from_utf8(raw).map_err(|e| Error::Config(format!("{list}: not UTF-8 text: {e}")))?
    };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let full = if line.contains("://") || line.starts_with('/') {
            line.to_string()
        } else {
            let Some(b) = base else {
                return Err(Error::Config(format!(
                    "{list} line {}: `{line}` is relative: give the listing's base with --paths-base (e.g. s3://commoncrawl/ or https://data.commoncrawl.org/)",
                    n + 1
                )));
            };
            if b.contains("://") {
                format!("{}/{line}", b.trim_end_matches('/'))
            } else {
                Path::new(b).join(line).display().to_string()
            }
        };
        out.push((n + 1, full));
    }
    if out.is_empty() {
        return Err(Error::Config(format!("{list}: the listing names no input")));
    }
    let remote: Vec<String> = out
        .iter()
        .filter(|(_, u)| is_url(u))
        .map(|(_, u)| u.clone())
        .collect();
    tokenmill_ingest::remote::sizes(&remote).map_err(|e| Error::Config(format!("{list}: {e}")))?;
    for (n, u) in &out {
        if !is_url(u) {
            let p = tokenmill_ingest::remote::local_path(u).unwrap_or_else(|| PathBuf::from(u));
            if !p.is_file() {
                return Err(Error::Config(format!(
                    "{list} line {n}: {} is not a file",
                    p.display()
                )));
            }
        }
    }
    Ok(out.into_iter().map(|(_, u)| PathBuf::from(u)).collect())
}
