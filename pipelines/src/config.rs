//! The pipeline configuration (`pipeline.toml`), validated before a build starts.
//!
//! ```toml
//! [input]
//! paths = ["crawl/*.warc.wet.gz", "extra/*.jsonl.zst"]   # globs, expanded and sorted
//! # or URLs: "s3://bucket/crawl/*.jsonl.gz" (listed), "https://host/f.warc.gz", "file:///x/*.gz"
//! on_error = "skip"            # or "fail"
//! # format = "jsonl"           # force a format instead of guessing from file names
//! # text_mode = "blocks"       # plain text: one document per blank-line-separated block
//! [input.jsonl]
//! text = "text"
//! id = ["id"]
//! [input.parquet]
//! text = "text"
//!
//! [tokenizer]
//! path = "tokenizer.json"      # or tokenizer.json.gz
//! # eos = "<|endoftext|>"      # default: the first known EOS token in the vocabulary
//! append_eos = true
//!
//! [output]
//! dir = "dataset"
//! shard_bytes = 1073741824     # target size of a shard's .bin
//!
//! [dedup]                      # between reading and tokenizing; off by default
//! enabled = true
//! ngram = 5
//! bands = 14
//! rows = 8
//! # threshold = 0.7           # exact Jaccard a removed document has with the kept one
//!
//! [run]
//! threads = 0                  # 0 = all cores
//!
//! # [input.chat]               # SFT: conversations (docs/sft.md)
//! # format = "openai"          # or "sharegpt", "alpaca"
//! # [sft]
//! # template = "chatml"        # or "tokenizer" (tokenizer_config.json), "llama3", "deepseek-v3"
//! # max_tokens = 4097
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokenmill_ingest::ReadConfig;

use crate::error::{Error, Result};

/// `[input]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InputConfig {
    /// Files or globs.
    pub paths: Vec<String>,
    /// A listing of inputs, one per line (local or remote, plain or `.gz`; Common Crawl's
    /// `warc.paths.gz`), added to `paths`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths_file: Option<String>,
    /// The prefix of the listing's relative lines (`s3://commoncrawl/`,
    /// `https://data.commoncrawl.org/`, or a local directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths_base: Option<String>,
    /// How the files are read (format, errors, JSONL and Parquet fields, text mode).
    #[serde(flatten)]
    pub read: ReadConfig,
}

/// `[tokenizer]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenizerConfig {
    /// The HF `tokenizer.json` (or `tokenizer.json.gz`).
    pub path: PathBuf,
    /// The end-of-sequence token; by default the first known one in the vocabulary.
    pub eos: Option<String>,
    /// End every document with the EOS token.
    pub append_eos: bool,
    /// The encoder: `auto` (the fast byte-level BPE encoder when the tokenizer is of its
    /// form), `hf` or `fast`. All give the same ids.
    pub engine: tokenmill_shards::TokenizerEngine,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        TokenizerConfig {
            path: PathBuf::new(),
            eos: None,
            append_eos: true,
            engine: Default::default(),
        }
    }
}

/// Default target shard size: 1 GiB of token data.
pub const DEFAULT_SHARD_BYTES: u64 = 1 << 30;

/// `[output]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OutputConfig {
    /// The dataset directory.
    pub dir: PathBuf,
    /// A shard is closed once its `.bin` reaches this many bytes.
    pub shard_bytes: u64,
    /// Keep the text of dropped documents in `excluded/*.parquet`.
    pub keep_excluded_text: bool,
    /// With `dir` an `s3://` URL: the local directory the build writes before publishing
    /// ([`crate::publish`]); default `<temp dir>/tokenmill-stage-<xxh3 of the URL>`. A rerun
    /// with the same stage resumes the build and the upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<PathBuf>,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            dir: PathBuf::new(),
            shard_bytes: DEFAULT_SHARD_BYTES,
            keep_excluded_text: false,
            stage: None,
        }
    }
}

/// `[dedup]`: exact and fuzzy dedup between reading and tokenizing (off unless `enabled`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DedupStageConfig {
    /// Whether the build dedups.
    pub enabled: bool,
    /// The dedup settings (n-gram, bands, rows, ...).
    #[serde(flatten)]
    pub config: tokenmill_dedup::DedupConfig,
}

/// `[extract]`: HTML → text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtractConfig {
    /// Whether HTML pages are extracted; when off, a page without text is dropped
    /// (`extract/disabled`).
    pub enabled: bool,
    /// The extractor's settings.
    #[serde(flatten)]
    pub options: tokenmill_extract::ExtractorConfig,
    /// Extracted texts shorter than this many characters are dropped (`extract/too_short`).
    pub min_chars: usize,
}

impl Default for ExtractConfig {
    fn default() -> Self {
        ExtractConfig {
            enabled: true,
            options: Default::default(),
            min_chars: 1,
        }
    }
}

/// `[sql]`: the recipe's own condition, a DataFusion SQL expression over the columns `id`,
/// `source`, `offset`, `url`, `lang`, `lang_score` and `text` (after the filters), with
/// tokenmill's filters as functions ([`crate::udf`]): e.g.
/// `where = "lang = 'en' AND length(text) > 500 AND NOT regexp_like(url, 'forum')"`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqlConfig {
    /// The condition a kept document must meet (`where = "..."`); none keeps every document.
    #[serde(rename = "where")]
    pub where_: Option<String>,
    /// Derived columns: name = SQL expression (`[sql.columns] words = "word_count(text)"`),
    /// written with each kept document by `tokenmill extract`.
    pub columns: std::collections::BTreeMap<String, String>,
}

/// `[run]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunConfig {
    /// Worker threads; 0 = all cores.
    pub threads: usize,
    /// Hide the progress bar.
    pub quiet: bool,
}

/// The whole `pipeline.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BuildConfig {
    /// What to read.
    pub input: InputConfig,
    /// How to tokenize.
    pub tokenizer: TokenizerConfig,
    /// Where and how to write the dataset.
    pub output: OutputConfig,
    /// Dedup before tokenizing.
    pub dedup: DedupStageConfig,
    /// HTML → text for WARC response records.
    pub extract: ExtractConfig,
    /// The filters (FineWeb's recipe); absent = none.
    pub filters: Option<tokenmill_filters::FiltersConfig>,
    /// The recipe's own SQL condition on the filtered documents.
    pub sql: SqlConfig,
    /// Threads and progress.
    pub run: RunConfig,
    /// Supervised fine-tuning data: conversations through a chat template, with loss masks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sft: Option<crate::sft::SftConfig>,
}

impl BuildConfig {
    /// Parses a TOML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Checks the settings and expands the input globs into a sorted, de-duplicated file list.
    pub fn resolve_inputs(&self) -> Result<Vec<PathBuf>> {
        if self.input.paths.is_empty() && self.input.paths_file.is_none() {
            return Err(Error::Config("no inputs: give input paths or globs".into()));
        }
        if self.tokenizer.path.as_os_str().is_empty() {
            return Err(Error::Config(
                "no tokenizer: give --tokenizer or [tokenizer] path".into(),
            ));
        }
        if self.output.dir.as_os_str().is_empty() {
            return Err(Error::Config(
                "no output directory: give --out or [output] dir".into(),
            ));
        }
        match (&self.sft, &self.input.read.chat) {
            (Some(_), None) => {
                return Err(Error::Config(
                    "[sft] needs conversation inputs: add [input.chat] (format = \"openai\", \"sharegpt\" or \"alpaca\")".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(Error::Config(
                    "[input.chat] reads conversations: add [sft] (the chat template and loss masks)".into(),
                ));
            }
            (Some(_), Some(c)) => c.validate().map_err(Error::Config)?,
            (None, None) => {}
        }
        if self.output.shard_bytes < 4096 {
            return Err(Error::Config(format!(
                "shard_bytes {} is below 4096",
                self.output.shard_bytes
            )));
        }
        self.input_files()
    }

    /// The input globs expanded into a sorted, de-duplicated file list.
    pub fn input_files(&self) -> Result<Vec<PathBuf>> {
        self.input.files()
    }
}

impl InputConfig {
    /// The input globs expanded into a sorted, de-duplicated file list; a pattern that matches
    /// no file is an error.
    pub fn files(&self) -> Result<Vec<PathBuf>> {
        if self.paths.is_empty() && self.paths_file.is_none() {
            return Err(Error::Config("no inputs: give input paths or globs".into()));
        }
        let mut files = match &self.paths_file {
            Some(list) => crate::remote_inputs::listed(list, self.paths_base.as_deref())?,
            None => Vec::new(),
        };
        for pat in &self.paths {
            if crate::remote_inputs::is_url(pat) {
                files.extend(crate::remote_inputs::expand(pat)?);
                continue;
            }
            let local = tokenmill_ingest::remote::local_path(pat);
            let pat = local.as_deref().and_then(Path::to_str).unwrap_or(pat);
            let direct = Path::new(pat);
            if direct.is_file() {
                files.push(direct.to_path_buf());
                continue;
            }
            let matches =
                glob::glob(pat).map_err(|e| Error::Config(format!("bad glob `{pat}`: {e}")))?;
            let before = files.len();
            for m in matches {
                let p = m.map_err(|e| Error::io(e.path().to_path_buf(), e.into()))?;
                if p.is_file() {
                    files.push(p);
                }
            }
            if files.len() == before {
                return Err(Error::Config(format!("input `{pat}` matches no file")));
            }
        }
        files.sort();
        files.dedup();
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_with_nested_reader_settings_parses() {
        let c: BuildConfig = toml::from_str(
            r#"
            [input]
            paths = ["a/*.jsonl"]
            on_error = "fail"
            text_mode = "blocks"
            [input.jsonl]
            text = "content"
            [tokenizer]
            path = "tok.json"
            eos = "</s>"
            [output]
            dir = "out"
            shard_bytes = 65536
            "#,
        )
        .unwrap();
        assert_eq!(c.input.read.on_error, tokenmill_ingest::OnError::Fail);
        assert_eq!(c.input.read.jsonl.text, "content");
        assert_eq!(c.input.read.text_mode, tokenmill_ingest::TextMode::Blocks);
        assert_eq!(c.tokenizer.eos.as_deref(), Some("</s>"));
        assert!(c.tokenizer.append_eos);
        assert_eq!(c.output.shard_bytes, 65536);
    }

    #[test]
    fn sft_tables_parse() {
        let c: BuildConfig = toml::from_str(
            r#"
            [input]
            paths = ["chats/*.jsonl"]
            [input.chat]
            format = "sharegpt"
            messages = "data.turns"
            [input.chat.roles]
            client = "user"
            [tokenizer]
            path = "tok.json"
            [sft]
            template = "deepseek-v3"
            train_on = "all"
            max_tokens = 4097
            overlong = "truncate"
            "#,
        )
        .unwrap();
        let chat = c.input.read.chat.as_ref().unwrap();
        assert_eq!(chat.format, tokenmill_ingest::chat::ChatFormat::Sharegpt);
        assert_eq!(chat.messages.as_deref(), Some("data.turns"));
        assert_eq!(chat.role_of("client").as_deref(), Some("user"));
        let sft = c.sft.as_ref().unwrap();
        assert_eq!(sft.template, "deepseek-v3");
        assert_eq!(sft.train_on, crate::sft::TrainOn::All);
        assert_eq!(
            (sft.max_tokens, sft.overlong),
            (Some(4097), crate::sft::Overlong::Truncate)
        );
        let bad = toml::from_str::<BuildConfig>("[sft]\ntemplte = \"chatml\"\n");
        assert!(bad.unwrap_err().to_string().contains("templte"));
    }

    #[test]
    fn the_dedup_threshold_parses_under_its_old_name_too() {
        for key in ["threshold", "verify_threshold"] {
            let c: BuildConfig =
                toml::from_str(&format!("[dedup]\nenabled = true\n{key} = 0.85\n")).unwrap();
            assert!(c.dedup.enabled);
            assert_eq!(c.dedup.config.threshold, 0.85, "{key}");
        }
        let c: BuildConfig = toml::from_str("[dedup]\nenabled = true\n").unwrap();
        assert_eq!(c.dedup.config.threshold, tokenmill_dedup::DEFAULT_THRESHOLD);
    }
}
