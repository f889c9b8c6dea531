//! Teacher outputs for distillation, stored beside a dataset: for every token of every shard,
//! a teacher model's top-K next-token ids and log-probabilities.
//!
//! A teacher directory holds, per shard of the dataset, `<shard>.teacher.bin`: one record per
//! token of the shard's `.bin`, in the same order, each `K` token ids (u32, little-endian)
//! followed by their `K` log-probabilities at temperature 1 (IEEE binary16, little-endian) —
//! `6·K` bytes per token, so 6·K GB per billion tokens (48 GB at K = 8). Record `j` is the
//! teacher's distribution of the token after token `j`, given the document up to `j` (within
//! the context window the manifest states). A token without a successor in its document (the
//! last one, usually EOS) has the record [`ABSENT`]: ids all `u32::MAX`, log-probabilities 0.
//!
//! `teacher.json`, written last, names the dataset the records belong to (the xxh3 of its
//! `manifest.json`, its tokenizer's sha256) and the teacher, and lists each shard's file with
//! its token count and xxh3; [`TeacherData::open`] refuses records of another dataset or
//! vocabulary before any of them is read.

use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use crate::error::{Error, Result};
use crate::loader::Span;
use crate::manifest::{hex64, is_plain_name, parse_hex64};
use crate::reader::{Dataset, Shard};

/// The teacher directory's manifest.
pub const TEACHER_FILE: &str = "teacher.json";
/// Format tag of [`TEACHER_FILE`].
pub const FORMAT: &str = "tokenmill-teacher";
/// Format version; a reader refuses any other.
pub const FORMAT_VERSION: u32 = 1;
/// Id of a record without entries.
pub const ABSENT: u32 = u32::MAX;
/// The largest K stored.
pub const MAX_TOP_K: usize = 1024;

/// Bytes per token of a teacher file with `k` entries per token.
pub fn bytes_per_token(k: usize) -> u64 {
    6 * k as u64
}

/// `<dir>/<name>.teacher.bin`.
pub fn teacher_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.teacher.bin"))
}

/// The model that produced the records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeacherModel {
    /// The directory its weights were read from.
    pub dir: String,
    /// xxh3-64 of its `config.json`, hex.
    pub config_xxh3: String,
    /// Its vocabulary (`vocab_size`): every stored id is below it.
    pub vocab_size: u64,
    /// Its context: the teacher saw each document in windows of this many tokens (a window
    /// starts at a multiple of it), as documents packing with attention reset at this sequence
    /// length shows them to a student.
    pub context: u64,
}

/// One shard's records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeacherShard {
    /// The shard's name in the dataset's manifest.
    pub name: String,
    /// Records (= the shard's tokens).
    pub tokens: u64,
    /// Records with entries (the others are [`ABSENT`]).
    pub entries: u64,
    /// xxh3-64 of `<name>.teacher.bin`, hex.
    pub xxh3: String,
}

/// `teacher.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeacherManifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Entries per token.
    pub top_k: u64,
    /// xxh3-64 of the dataset's `manifest.json` ([`crate::manifest::fingerprint`]).
    pub dataset_fingerprint: String,
    /// sha256 of the dataset's tokenizer.
    pub tokenizer_sha256: String,
    /// The teacher.
    pub teacher: TeacherModel,
    /// Records in all shards.
    pub tokens: u64,
    /// Per shard of the dataset, in its order.
    pub shards: Vec<TeacherShard>,
}

impl TeacherManifest {
    /// Reads and checks `dir/teacher.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(TEACHER_FILE);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let m: TeacherManifest = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            path: path.clone(),
            source,
        })?;
        let bad = |d: String| Err(Error::corrupt(&path, "teacher manifest", d));
        if m.format != FORMAT || m.format_version != FORMAT_VERSION {
            return bad(format!(
                "format {:?} version {}, expected {FORMAT:?} version {FORMAT_VERSION}",
                m.format, m.format_version
            ));
        }
        if m.top_k == 0 || m.top_k > MAX_TOP_K as u64 {
            return bad(format!("top_k {} outside 1..={MAX_TOP_K}", m.top_k));
        }
        if let Some(s) = m.shards.iter().find(|s| !is_plain_name(&s.name)) {
            return bad(format!("shard name {:?} is not a plain file name", s.name));
        }
        if m.shards.iter().map(|s| s.tokens).sum::<u64>() != m.tokens {
            return bad(format!("shards' tokens do not sum to {}", m.tokens));
        }
        Ok(m)
    }

    /// Writes `dir/teacher.json` atomically (the last file of a teacher directory).
    pub fn store(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("serialises");
        crate::writer::atomic_write(&dir.join(TEACHER_FILE), &json)
    }
}

/// Writes one shard's records in token order to a temporary file, renamed at [`finish`].
///
/// [`finish`]: TeacherShardWriter::finish
pub struct TeacherShardWriter {
    path: PathBuf,
    tmp: PathBuf,
    name: String,
    out: std::io::BufWriter<std::fs::File>,
    hash: Xxh3,
    k: usize,
    tokens: u64,
    entries: u64,
    rec: Vec<u8>,
}

impl std::fmt::Debug for TeacherShardWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeacherShardWriter")
            .field("path", &self.path)
            .field("k", &self.k)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

impl TeacherShardWriter {
    /// Starts `<dir>/<name>.teacher.bin` with `k` entries per record.
    pub fn create(dir: &Path, name: &str, k: usize) -> Result<Self> {
        let path = teacher_path(dir, name);
        let tmp = dir.join(format!("{name}.teacher.bin.tmp"));
        let f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(TeacherShardWriter {
            path,
            tmp,
            name: name.to_string(),
            out: std::io::BufWriter::with_capacity(1 << 20, f),
            hash: Xxh3::new(),
            k,
            tokens: 0,
            entries: 0,
            rec: Vec::with_capacity(6 * k),
        })
    }

    /// Appends the record of the next token: `ids [k]` and their log-probabilities `[k]`,
    /// or [`ABSENT`] when `ids` is `None`.
    pub fn push(&mut self, entry: Option<(&[u32], &[f32])>) -> Result<()> {
        self.rec.clear();
        match entry {
            Some((ids, logp)) => {
                if ids.len() != self.k || logp.len() != self.k {
                    return Err(Error::Internal(format!(
                        "a teacher record of {} ids and {} log-probabilities, expected {}",
                        ids.len(),
                        logp.len(),
                        self.k
                    )));
                }
                for &i in ids {
                    self.rec.extend_from_slice(&i.to_le_bytes());
                }
                for &l in logp {
                    self.rec
                        .extend_from_slice(&half::f16::from_f32(l).to_le_bytes());
                }
                self.entries += 1;
            }
            None => {
                for _ in 0..self.k {
                    self.rec.extend_from_slice(&ABSENT.to_le_bytes());
                }
                self.rec.resize(6 * self.k, 0);
            }
        }
        self.hash.update(&self.rec);
        self.out
            .write_all(&self.rec)
            .map_err(|e| Error::io(&self.tmp, e))?;
        self.tokens += 1;
        Ok(())
    }

    /// Syncs and renames the file into place; its entry for `teacher.json`.
    pub fn finish(self) -> Result<TeacherShard> {
        let f = self
            .out
            .into_inner()
            .map_err(|e| Error::io(&self.tmp, e.into_error()))?;
        f.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        drop(f);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        Ok(TeacherShard {
            name: self.name,
            tokens: self.tokens,
            entries: self.entries,
            xxh3: hex64(self.hash.digest()),
        })
    }
}

/// A teacher directory opened against the dataset it belongs to, for the loader: the records
/// of a sample's positions.
#[derive(Debug)]
pub struct TeacherData {
    dir: PathBuf,
    manifest: TeacherManifest,
    files: Vec<Mmap>,
    /// The dataset's shards (their indices locate a span's tokens).
    shards: Vec<Shard>,
}

impl TeacherData {
    /// Opens `dir` for `dataset`: refuses records written for another dataset (fingerprint),
    /// another tokenizer, or whose shards differ from the dataset's; checks each file's size,
    /// and its xxh3 too with `verify`.
    pub fn open(dir: &Path, dataset: &Dataset, verify: bool) -> Result<Self> {
        let manifest = TeacherManifest::load(dir)?;
        let mpath = dir.join(TEACHER_FILE);
        let foreign = |detail: String| {
            Err(Error::Mismatch {
                path: mpath.clone(),
                detail,
            })
        };
        let fp = crate::manifest::fingerprint(dataset.dir())?;
        if manifest.dataset_fingerprint != fp {
            return foreign(format!(
                "written for the dataset with fingerprint {}, not {} ({fp}); rerun `tokenmill distill-data` for it",
                manifest.dataset_fingerprint,
                dataset.dir().display()
            ));
        }
        let dm = dataset.manifest();
        if manifest.tokenizer_sha256 != dm.tokenizer.sha256 {
            return foreign(format!(
                "written with the tokenizer {}, the dataset's is {}",
                manifest.tokenizer_sha256, dm.tokenizer.sha256
            ));
        }
        if manifest.shards.len() != dm.shards.len()
            || manifest
                .shards
                .iter()
                .zip(&dm.shards)
                .any(|(t, s)| t.name != s.name || t.tokens != s.tokens)
        {
            return foreign(format!(
                "its {} shards are not the dataset's {} (names and token counts)",
                manifest.shards.len(),
                dm.shards.len()
            ));
        }
        let k = manifest.top_k as usize;
        let mut files = Vec::with_capacity(manifest.shards.len());
        let mut shards = Vec::with_capacity(manifest.shards.len());
        for (i, t) in manifest.shards.iter().enumerate() {
            let path = teacher_path(dir, &t.name);
            let f = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            // SAFETY: the file is opened read-only and only read through the map; teacher
            // files are written once (temp + rename) and never modified in place.
            let map = unsafe { Mmap::map(&f) }.map_err(|e| Error::io(&path, e))?;
            let want = t.tokens * bytes_per_token(k);
            if map.len() as u64 != want {
                return Err(Error::corrupt(
                    &path,
                    "teacher records",
                    format!(
                        "{} bytes, expected {} tokens × {} bytes = {want}",
                        map.len(),
                        t.tokens,
                        bytes_per_token(k)
                    ),
                ));
            }
            if verify {
                let expected = parse_hex64(&mpath, &t.xxh3)?;
                let actual = xxhash_rust::xxh3::xxh3_64(&map);
                if actual != expected {
                    return Err(Error::Checksum {
                        path,
                        expected,
                        actual,
                    });
                }
            }
            files.push(map);
            shards.push(dataset.shard(i)?);
        }
        Ok(TeacherData {
            dir: dir.to_path_buf(),
            manifest,
            files,
            shards,
        })
    }

    /// The teacher directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Its manifest.
    pub fn manifest(&self) -> &TeacherManifest {
        &self.manifest
    }
    /// Entries per token.
    pub fn k(&self) -> usize {
        self.manifest.top_k as usize
    }

    /// The record of token `token` of shard `shard` into `ids [k]` and `logp [k]` (ids
    /// [`ABSENT`] when it has none). An id at or above `vocab` is refused (a damaged file).
    pub fn read(
        &self,
        shard: usize,
        token: u64,
        vocab: u64,
        ids: &mut [u32],
        logp: &mut [f32],
    ) -> Result<()> {
        let k = self.k();
        let t = &self.manifest.shards[shard];
        if token >= t.tokens {
            return Err(Error::NotFound(format!(
                "token {token} of shard {} ({} tokens)",
                t.name, t.tokens
            )));
        }
        let at = (token * bytes_per_token(k)) as usize;
        let rec = &self.files[shard][at..at + 6 * k];
        for (i, c) in ids.iter_mut().zip(rec[..4 * k].chunks_exact(4)) {
            *i = u32::from_le_bytes(c.try_into().expect("4 bytes"));
        }
        if ids[0] == ABSENT {
            ids.fill(ABSENT);
            logp.fill(0.0);
            return Ok(());
        }
        if let Some(&bad) = ids.iter().find(|&&i| u64::from(i) >= vocab) {
            return Err(Error::corrupt(
                teacher_path(&self.dir, &t.name),
                "teacher records",
                format!("token {token}: id {bad} outside the vocabulary of {vocab}"),
            ));
        }
        for (l, c) in logp.iter_mut().zip(rec[4 * k..].chunks_exact(2)) {
            *l = half::f16::from_le_bytes(c.try_into().expect("2 bytes")).to_f32();
        }
        Ok(())
    }

    /// Appends the records of a sample's `s` input positions (`[s, k]` ids and log-
    /// probabilities): position `p` of span `sp` is token `start(sp.doc) + sp.doc_offset +
    /// p − sp.start` of its shard; positions no span covers are [`ABSENT`].
    pub fn sample(
        &self,
        spans: &[Span],
        s: usize,
        vocab: u64,
        ids: &mut Vec<u32>,
        logp: &mut Vec<f32>,
    ) -> Result<()> {
        let k = self.k();
        let base = ids.len();
        ids.resize(base + s * k, ABSENT);
        logp.resize(base + s * k, 0.0);
        for sp in spans {
            let sh = sp.shard as usize;
            let idx = self
                .shards
                .get(sh)
                .ok_or_else(|| Error::NotFound(format!("shard {sh}")))?
                .index();
            let first = idx.token_start(sp.doc as usize) + sp.doc_offset;
            let (a, b) = (
                sp.start as usize,
                (sp.start as usize + sp.len as usize).min(s),
            );
            for p in a..b {
                let r = base + p * k;
                self.read(
                    sh,
                    first + (p - a) as u64,
                    vocab,
                    &mut ids[r..r + k],
                    &mut logp[r..r + k],
                )?;
            }
        }
        Ok(())
    }
}
