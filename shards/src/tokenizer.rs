//! The tokenizer stage: HF `tokenizers` from a `tokenizer.json` (or `.json.gz`), EOS per
//! document, parallel over documents on the rayon pool; and byte-level BPE training.

use std::io::Read;
use std::path::Path;

use rayon::prelude::*;
use tokenizers::Tokenizer;

use crate::checksum::sha256_hex;
use crate::dtype::TokenDtype;
use crate::error::{Error, Result};
use crate::fastbpe::FastBpe;
use crate::manifest::TokenizerIdentity;

/// End-of-document tokens recognised when none is configured, in order of preference
/// (GPT-2/Llama-3/DeepSeek-V3/Llama-2/T5/BERT conventions).
pub const EOS_CANDIDATES: &[&str] = &[
    "<|endoftext|>",
    "<｜end▁of▁sentence｜>",
    "<|end_of_text|>",
    "</s>",
    "<eos>",
    "[SEP]",
];

/// Which encoder the tokenizer stage uses (`--tokenizer-engine`, `[tokenizer] engine`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerEngine {
    /// The fast byte-level BPE encoder when the `tokenizer.json` is of its form (said once in
    /// the log when it is not), else HF `tokenizers`.
    #[default]
    Auto,
    /// HF `tokenizers` always.
    Hf,
    /// The fast encoder, or an error naming why the `tokenizer.json` is not of its form.
    Fast,
}

/// How documents are turned into token ids.
#[derive(Debug, Clone, Default)]
pub struct TokenizeConfig {
    /// EOS token to append to each document; `None` picks from [`EOS_CANDIDATES`].
    pub eos_token: Option<String>,
    /// Append the EOS token to each document (Megatron's `--append-eod`).
    pub append_eos: bool,
    /// The encoder.
    pub engine: TokenizerEngine,
}

/// A loaded tokenizer with the identity recorded in manifests.
#[derive(Debug)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// The fast encoder, when in use.
    fast: Option<FastBpe>,
    identity: TokenizerIdentity,
    append_eos: bool,
}

fn tok_err(path: &Path, detail: impl ToString) -> Error {
    Error::Tokenizer {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

pub(crate) fn lib_err(path: &Path, what: &'static str, source: tokenizers::Error) -> Error {
    Error::TokenizerLib {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// Reads a `tokenizer.json`, gunzipping it when the name ends in `.gz`.
pub fn read_tokenizer_json(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => tok_err(path, "file not found"),
        _ => Error::io(path, e),
    })?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| lib_err(path, "gzip", Box::new(e)))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Hugging Face's tokenizer of a `tokenizer.json`'s bytes. The library panics on some
/// malformed files (an `unwrap` where it deserializes the decoder section, found by fuzzing):
/// that becomes an error too.
pub fn parse_hf(bytes: &[u8]) -> std::result::Result<Tokenizer, tokenizers::Error> {
    crate::guard::decoding(|| Tokenizer::from_bytes(bytes))
        .unwrap_or_else(|why| Err(format!("the tokenizers library failed: {why}").into()))
}

impl TextTokenizer {
    /// Loads `path` (`tokenizer.json` or `tokenizer.json.gz`).
    pub fn load(path: &Path, opts: &TokenizeConfig) -> Result<Self> {
        let bytes = read_tokenizer_json(path)?;
        let inner = parse_hf(&bytes).map_err(|e| lib_err(path, "not a valid tokenizer.json", e))?;
        let (eos_token, eos_id) = if opts.append_eos {
            let name = match &opts.eos_token {
                Some(t) => t.clone(),
                None => EOS_CANDIDATES
                    .iter()
                    .find(|c| inner.token_to_id(c).is_some())
                    .map(|c| c.to_string())
                    .ok_or_else(|| {
                        tok_err(
                            path,
                            format!(
                                "no EOS token found among {EOS_CANDIDATES:?}; name one with --eos"
                            ),
                        )
                    })?,
            };
            let id = inner.token_to_id(&name).ok_or_else(|| {
                tok_err(path, format!("EOS token `{name}` is not in the vocabulary"))
            })?;
            (Some(name), Some(id))
        } else {
            (None, None)
        };
        let identity = TokenizerIdentity {
            file: path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            sha256: sha256_hex(&bytes),
            vocab_size: inner.get_vocab_size(true) as u64,
            eos_token,
            eos_id,
            engine: String::new(),
        };
        let fast = match opts.engine {
            TokenizerEngine::Hf => None,
            TokenizerEngine::Auto => match FastBpe::from_json(&bytes) {
                Ok(f) => Some(f),
                Err(why) => {
                    tracing::info!(tokenizer = %path.display(), %why, "not of the fast encoder's form; using HF tokenizers");
                    None
                }
            },
            TokenizerEngine::Fast => {
                Some(FastBpe::from_json(&bytes).map_err(|why| {
                    tok_err(path, format!("the fast encoder cannot run it: {why}"))
                })?)
            }
        };
        let identity = TokenizerIdentity {
            engine: if fast.is_some() { "fast" } else { "hf" }.into(),
            ..identity
        };
        Ok(TextTokenizer {
            inner,
            fast,
            identity,
            append_eos: opts.append_eos,
        })
    }

    /// What the manifest records about this tokenizer.
    pub fn identity(&self) -> &TokenizerIdentity {
        &self.identity
    }
    /// Shard dtype for this vocabulary.
    pub fn dtype(&self) -> TokenDtype {
        TokenDtype::for_vocab(self.identity.vocab_size)
    }
    /// The wrapped HF tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Token ids of one document, EOS appended if configured.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let fast = self.fast.as_ref().and_then(|f| f.encode(text));
        let mut ids = match fast {
            Some(ids) => ids,
            None => self
                .inner
                .encode_fast(text, false)
                .map_err(|e| lib_err(Path::new(&self.identity.file), "encode", e))?
                .get_ids()
                .to_vec(),
        };
        if let Some(eos) = self.identity.eos_id.filter(|_| self.append_eos) {
            ids.push(eos);
        }
        Ok(ids)
    }

    /// Token ids of many documents, in parallel on the current rayon pool (no pool of its own,
    /// so it nests inside task-level parallelism without oversubscription). Order is preserved.
    pub fn encode_batch<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>> {
        texts
            .par_iter()
            .with_min_len(8)
            .map(|t| self.encode(t.as_ref()))
            .collect()
    }

    /// Text of token ids (special tokens kept, so EOS shows).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| lib_err(Path::new(&self.identity.file), "decode", e))
    }
}
