//! Inputs in object stores: `s3://bucket/key`, `https://host/path` (and `http://`), read with
//! the Arrow project's `object_store` crate.
//!
//! A remote input travels through the pipeline as a `PathBuf` holding its URL, so plans, task
//! records and the provenance `source` column show the URL. [`is_remote`] tells such a path
//! apart. Credentials, region and endpoint of `s3://` come from the usual AWS environment
//! variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
//! `AWS_ALLOW_HTTP` for a local server). Every request is retried with exponential backoff
//! (`object_store`'s `RetryConfig`), and a body cut midway is resumed from the byte it stopped
//! at (the object's ETag must not change meanwhile).
//!
//! JSONL and plain text stream ([`open_stream`]: a blocking `Read` over the object's byte
//! stream); WARC and Parquet fetch the whole object into memory ([`fetch`]), refusing one over
//! `ReadConfig::remote_max_bytes`. `file://` URLs are plain local paths ([`local_path`]).

mod stream;
pub mod upload;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ObjectStore, ObjectStoreExt, RetryConfig};

use crate::error::{Error, Result};
pub use stream::RemoteRead;

/// Whether `path` is a remote URL (`s3://`, `https://`, `http://`).
pub fn is_remote(path: &Path) -> bool {
    path.to_str().is_some_and(|s| {
        ["s3://", "https://", "http://"]
            .iter()
            .any(|p| s.starts_with(p))
    })
}

/// The local path of a `file://` URL (`file:///data/x.jsonl` → `/data/x.jsonl`), if it is one.
pub fn local_path(s: &str) -> Option<PathBuf> {
    s.strip_prefix("file://").map(PathBuf::from)
}

/// The runtime the blocking readers drive `object_store`'s futures on: two worker threads,
/// shared by every reader of the process.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tokenmill-remote")
            .enable_all()
            .build()
            .expect("starting the object-store runtime")
    })
}

/// Runs a future to completion on the shared runtime (from any non-async thread).
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

/// Retries: 10 attempts within 3 minutes, backoff from 100 ms doubling up to 15 s;
/// `TOKENMILL_REMOTE_RETRIES` and `TOKENMILL_REMOTE_RETRY_SECONDS` change the two bounds (a
/// job that should fail fast on an unreachable store, or a test).
fn retry_config() -> RetryConfig {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: env("TOKENMILL_REMOTE_RETRIES").map_or(10, |n| n as usize),
        retry_timeout: Duration::from_secs(env("TOKENMILL_REMOTE_RETRY_SECONDS").unwrap_or(180)),
    }
}

/// A parsed remote URL: the store (one per bucket or host, cached) and the object key.
#[derive(Debug, Clone)]
pub struct Location {
    /// The store holding the object.
    pub store: Arc<dyn ObjectStore>,
    /// The key inside it (for a pattern: the pattern).
    pub key: String,
    /// `s3://bucket/` or `https://host/`: the URL of a key is `base + key`.
    pub base: String,
}

impl Location {
    /// The URL of `key` in this store.
    pub fn url(&self, key: &str) -> String {
        format!("{}{key}", self.base)
    }
}

fn remote_err(url: &str, detail: impl std::fmt::Display) -> Error {
    Error::Remote {
        url: url.to_string(),
        detail: detail.to_string(),
    }
}

/// Parses `s3://bucket/key` or `http(s)://host/path` into its store and key.
pub fn locate(url: &str) -> Result<Location> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| remote_err(url, "not a URL"))?;
    let (authority, key) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() {
        return Err(remote_err(url, "no bucket or host in the URL"));
    }
    let base = format!("{scheme}://{authority}/");
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let mut stores = STORES
        .get_or_init(Default::default)
        .lock()
        .expect("store cache");
    let store = match stores.get(&base) {
        Some(s) => s.clone(),
        None => {
            let s: Arc<dyn ObjectStore> = match scheme {
                "s3" => Arc::new(
                    object_store::aws::AmazonS3Builder::from_env()
                        .with_bucket_name(authority)
                        .with_retry(retry_config())
                        .build()
                        .map_err(|e| remote_err(url, e))?,
                ),
                "http" | "https" => Arc::new(
                    object_store::http::HttpBuilder::new()
                        .with_url(base.trim_end_matches('/'))
                        .with_client_options(
                            object_store::ClientOptions::new().with_allow_http(scheme == "http"),
                        )
                        .with_retry(retry_config())
                        .build()
                        .map_err(|e| remote_err(url, e))?,
                ),
                other => return Err(remote_err(url, format!("unsupported scheme `{other}`"))),
            };
            stores.insert(base.clone(), s.clone());
            s
        }
    };
    Ok(Location {
        store,
        key: key.to_string(),
        base,
    })
}

fn object_path(url: &str, key: &str) -> Result<ObjectPath> {
    ObjectPath::parse(key).map_err(|e| remote_err(url, format!("bad object key: {e}")))
}

/// Sizes learnt from listings, so that planning a listed input needs no second request.
fn known_sizes() -> &'static Mutex<HashMap<String, u64>> {
    static SIZES: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
    SIZES.get_or_init(Default::default)
}

/// The size of the object at `url` (from an earlier listing, else a `HEAD` request).
pub fn size(url: &str) -> Result<u64> {
    if let Some(&n) = known_sizes().lock().expect("sizes").get(url) {
        return Ok(n);
    }
    let loc = locate(url)?;
    let path = object_path(url, &loc.key)?;
    let meta = block_on(loc.store.head(&path)).map_err(|e| remote_err(url, e))?;
    Ok(meta.size)
}

/// The sizes of the objects at `urls` (a listing's entries), asked 64 at a time (`HEAD`); the
/// first missing or unreadable object is an error naming it.
pub fn sizes(urls: &[String]) -> Result<Vec<u64>> {
    use futures::StreamExt;
    let asks = urls.iter().map(|url| async move {
        if let Some(&n) = known_sizes().lock().expect("sizes").get(url) {
            return Ok(n);
        }
        let loc = locate(url)?;
        let path = object_path(url, &loc.key)?;
        let meta = loc.store.head(&path).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => {
                remote_err(url, "no such object (named by the listing)")
            }
            e => remote_err(url, e),
        })?;
        known_sizes()
            .lock()
            .expect("sizes")
            .insert(url.clone(), meta.size);
        Ok(meta.size)
    });
    block_on(
        futures::stream::iter(asks)
            .buffered(64)
            .collect::<Vec<Result<u64>>>(),
    )
    .into_iter()
    .collect()
}

/// The objects a URL pattern names, sorted, with their sizes: for `s3://`, the keys under the
/// pattern's literal prefix that match its glob (`*` stays within one `/` segment); a pattern
/// without glob characters, and any `http(s)://` URL, names one object.
pub fn expand(pattern: &str) -> Result<Vec<(String, u64)>> {
    let loc = locate(pattern)?;
    let glob_at = loc.key.find(['*', '?', '[']);
    let Some(at) = glob_at.filter(|_| pattern.starts_with("s3://")) else {
        return Ok(vec![(pattern.to_string(), size(pattern)?)]);
    };
    let matcher =
        glob::Pattern::new(&loc.key).map_err(|e| remote_err(pattern, format!("bad glob: {e}")))?;
    let opts = glob::MatchOptions {
        require_literal_separator: true,
        ..Default::default()
    };
    let prefix = &loc.key[..loc.key[..at].rfind('/').map_or(0, |i| i + 1)];
    let prefix_path = (!prefix.is_empty())
        .then(|| object_path(pattern, prefix.trim_end_matches('/')))
        .transpose()?;
    let metas: Vec<object_store::ObjectMeta> =
        block_on(loc.store.list(prefix_path.as_ref()).try_collect())
            .map_err(|e| remote_err(pattern, format!("listing failed: {e}")))?;
    let mut found: Vec<(String, u64)> = metas
        .into_iter()
        .filter(|m| matcher.matches_with(m.location.as_ref(), opts))
        .map(|m| (loc.url(m.location.as_ref()), m.size))
        .collect();
    found.sort();
    known_sizes()
        .lock()
        .expect("sizes")
        .extend(found.iter().cloned());
    tracing::debug!(pattern, objects = found.len(), "listed remote inputs");
    Ok(found)
}

/// A blocking, streaming reader of the object at `url` (for JSONL and plain text).
pub fn open_stream(url: &str) -> Result<RemoteRead> {
    let loc = locate(url)?;
    let path = object_path(url, &loc.key)?;
    let got =
        block_on(loc.store.get(&path)).map_err(|e| remote_err(url, format!("cannot open: {e}")))?;
    Ok(RemoteRead::new(url.to_string(), got.into_stream()))
}

/// The whole object at `url` in memory (for WARC and Parquet), refused when it is larger than
/// `cap` bytes.
pub fn fetch(url: &str, cap: u64) -> Result<Vec<u8>> {
    let n = size(url)?;
    if n > cap {
        return Err(remote_err(
            url,
            format!(
                "object of {n} bytes is over remote_max_bytes ({cap}): WARC and Parquet objects \
                 are read into memory; raise [input] remote_max_bytes or copy the file locally"
            ),
        ));
    }
    let mut out = Vec::with_capacity(n as usize);
    std::io::Read::read_to_end(&mut open_stream(url)?, &mut out)
        .map_err(|e| Error::from_io(url, e))?;
    tracing::debug!(url, bytes = out.len(), "fetched remote input");
    Ok(out)
}
