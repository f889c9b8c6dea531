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
