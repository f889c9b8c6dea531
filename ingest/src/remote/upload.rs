//! Writing to object stores, the output side of `--out s3://…`: a local file uploaded whole
//! (one `PUT` up to [`PART_BYTES`], above it a multipart upload whose parts are read from the
//! file as they go, so memory stays at a few parts), an object's size and ETag, and deletion.
//!
//! An object appears only when its upload completes (S3 semantics), so a reader never sees a
//! half-written shard; every request goes through the store's retries ([`super::locate`]).

use std::io::Read;
use std::path::Path;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};

use super::{block_on, locate, object_path, remote_err};
use crate::error::{Error, Result};

/// Bytes per part of a multipart upload (S3 wants at least 5 MiB but the last); files up to
/// this size go in one `PUT`.
pub const PART_BYTES: usize = 16 << 20;

/// [`PART_BYTES`], or `TOKENMILL_S3_PART_BYTES` when set (for tests against a local server
/// whose minimum part size is lowered: real S3 refuses parts under 5 MiB).
fn part_bytes() -> usize {
    std::env::var("TOKENMILL_S3_PART_BYTES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n >= 1024)
        .unwrap_or(PART_BYTES)
}

/// Parts in flight at once.
const CONCURRENT_PARTS: usize = 4;

/// An object as the store describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its size in bytes.
    pub size: u64,
    /// The store's entity tag (changes when the object does).
    pub e_tag: Option<String>,
}

fn location(url: &str) -> Result<(super::Location, ObjectPath)> {
    let loc = locate(url)?;
    if !url.starts_with("s3://") {
        return Err(remote_err(
            url,
            "only s3:// outputs are written (an http(s):// store is read-only)",
        ));
    }
    let path = object_path(url, &loc.key)?;
    Ok((loc, path))
}

/// Uploads the file `local` to the object `url`; returns what the store then holds.
pub fn upload(local: &Path, url: &str) -> Result<ObjectInfo> {
    let (loc, path) = location(url)?;
    let mut f = std::fs::File::open(local).map_err(|e| Error::io(local, e))?;
    let size = f.metadata().map_err(|e| Error::io(local, e))?.len();
    let part = part_bytes();
    let put = block_on(async {
        if size as usize <= part {
            let mut buf = Vec::with_capacity(size as usize);
            f.read_to_end(&mut buf).map_err(|e| Error::io(local, e))?;
            return loc
                .store
                .put(&path, PutPayload::from(buf))
                .await
                .map_err(|e| remote_err(url, format!("upload failed: {e}")));
        }
        let up = loc
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| remote_err(url, format!("cannot start a multipart upload: {e}")))?;
        let mut w = WriteMultipart::new_with_chunk_size(up, part);
        let mut buf = vec![0u8; part];
        loop {
            let failed = match read_full(&mut f, &mut buf) {
                Err(e) => Some(Error::io(local, e)),
                Ok(0) => None,
                Ok(n) => match w.wait_for_capacity(CONCURRENT_PARTS).await {
                    Ok(()) => {
                        w.write(&buf[..n]);
                        continue;
                    }
                    Err(e) => Some(remote_err(url, format!("upload failed: {e}"))),
                },
            };
            if let Some(e) = failed {
                // The store keeps (and bills) the parts of an upload never completed.
                let _ = w.abort().await;
                return Err(e);
            }
            break;
        }
        w.finish()
            .await
            .map_err(|e| remote_err(url, format!("upload failed: {e}")))
    })?;
    tracing::debug!(url, bytes = size, "uploaded");
    Ok(ObjectInfo {
        size,
        e_tag: put.e_tag,
    })
}

/// Reads until `buf` is full or the file ends; the bytes read.
fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The object at `url`, or `None` when there is none.
pub fn head(url: &str) -> Result<Option<ObjectInfo>> {
    let (loc, path) = location(url)?;
    match block_on(loc.store.head(&path)) {
        Ok(m) => Ok(Some(ObjectInfo {
            size: m.size,
            e_tag: m.e_tag,
        })),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(remote_err(url, e)),
    }
}

/// Deletes the object at `url` (none there is fine).
pub fn delete(url: &str) -> Result<()> {
    let (loc, path) = location(url)?;
    match block_on(loc.store.delete(&path)) {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(remote_err(url, format!("delete failed: {e}"))),
    }
}
