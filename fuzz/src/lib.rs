//! Fuzz targets for every parser of bytes that come from outside: inputs (WARC/WET/WAT, HTTP,
//! JSONL, Parquet, HTML), datasets (`.idx` + `.bin`, `manifest.json`, provenance Parquet,
//! `tokenizer.json`), configurations (pipeline and training TOML) and checkpoints (safetensors +
//! `state.json`).
//!
//! A target is a `fn(&[u8])` that must return for every input: an error or a counted skip is
//! an answer, a panic, an abort, a hang or an allocation beyond the limit is a finding. Where
//! a cheap invariant holds for every accepted input (documents counted = rows produced, token
//! counts agree with the index, the fast encoder's ids equal Hugging Face's) the target asserts
//! it, so a wrong answer is a finding too.
//!
//! The targets run three ways, all through [`TARGETS`]:
//! - `cargo afl` campaigns (stable toolchain): the `tokenmill-fuzz-afl` binary, `fuzz/run.sh`;
//! - `tokenmill-fuzz seeds DIR`: seed corpora built from the real files of `../shared/data`;
//! - the `replay` test (CI): every seed, every saved corpus entry and every regression input,
//!   bounded in time per target.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub mod seeds;
pub mod targets;

/// One fuzz target.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Its name: the corpus folder and the campaign's argument.
    pub name: &'static str,
    /// What it parses.
    pub what: &'static str,
    /// The function under test.
    pub run: fn(&[u8]),
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "warc",
        what: "WARC/WET/WAT files, plain or gzip members, through the document reader",
        run: targets::input::warc,
    },
    Target {
        name: "http",
        what: "an HTTP response block: status line, headers, chunking, content-encoding, charset",
        run: targets::input::http,
    },
    Target {
        name: "jsonl",
        what: "JSON lines, plain, .gz or .zst, as texts or as conversations",
        run: targets::input::jsonl,
    },
    Target {
        name: "parquet",
        what: "a Parquet input file, as texts or as conversations",
        run: targets::input::parquet,
    },
    Target {
        name: "html",
        what: "the HTML extractor",
        run: targets::input::html,
    },
    Target {
        name: "shard",
        what: "a shard's .idx + .bin (and loss masks), opened and read",
        run: targets::dataset::shard,
    },
    Target {
        name: "manifest",
        what: "a dataset's manifest.json, loaded and verified",
        run: targets::dataset::manifest,
    },
    Target {
        name: "provenance",
        what: "a shard's provenance Parquet table",
        run: targets::dataset::provenance,
    },
    Target {
        name: "tokenizer",
        what: "tokenizer.json: Hugging Face's loader and the fast encoder, whose ids must agree",
        run: targets::dataset::tokenizer,
    },
    Target {
        name: "config",
        what: "pipeline (build) and training TOML, parsed and validated",
        run: targets::config::config,
    },
    Target {
        name: "checkpoint",
        what: "a checkpoint: config.json, model and optimizer safetensors, state.json",
        run: targets::config::checkpoint,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// A scratch directory of this process (under `TMPDIR`, or `/dev/shm` when it exists, so the
/// files a target writes stay in memory), reused by every run.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = match std::env::var_os("TMPDIR") {
            Some(t) => PathBuf::from(t),
            None if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
            None => std::env::temp_dir(),
        };
        let dir = base.join(format!("tokenmill-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the fuzz scratch directory");
        dir
    })
}

/// Writes `bytes` to `name` in the scratch directory and returns its path.
pub fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, bytes).expect("write a scratch file");
    path
}

/// Runs `target` on the contents of `path`.
pub fn run_file(target: &Target, path: &Path) -> std::io::Result<()> {
    let bytes = std::fs::read(path)?;
    (target.run)(&bytes);
    Ok(())
}

/// Cuts `data` into `n` parts: each part but the last is preceded by a little-endian `u32`
/// taken modulo what is left (so every input decodes); the last part is the rest.
///
/// [`join`] is its inverse, for seeds.
pub fn split(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts = Vec::with_capacity(n);
    let mut rest = data;
    for _ in 1..n {
        let (len, tail) = match rest.split_first_chunk::<4>() {
            Some((l, tail)) => (u32::from_le_bytes(*l) as usize, tail),
            None => (0, &rest[rest.len()..]),
        };
        let len = len % (tail.len() + 1);
        parts.push(&tail[..len]);
        rest = &tail[len..];
    }
    parts.push(rest);
    parts
}

/// The input that [`split`] cuts into `parts` (each but the last under 4 GiB).
pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i + 1 < parts.len() {
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_inverts_join_and_decodes_anything() {
        let parts: [&[u8]; 3] = [b"abc", b"", b"tail bytes"];
        assert_eq!(split(&join(&parts), 3), parts);
        for data in [&b""[..], b"\xff\xff\xff\xff", b"\x02\0\0\0xyz"] {
            let p = split(data, 3);
            assert_eq!(p.len(), 3);
            assert!(p.iter().map(|p| p.len()).sum::<usize>() <= data.len());
        }
    }
}
