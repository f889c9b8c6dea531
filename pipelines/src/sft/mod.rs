//! Supervised fine-tuning data: conversations rendered by a chat template, tokenized, and a
//! per-token loss mask beside the tokens ([docs/sft.md](../../docs/sft.md)).
//!
//! A build with an `[sft]` table reads conversations (`[input.chat]`), runs the same stages
//! and dedup over their text, then renders each with the chat template, tokenizes the
//! rendering in one piece (the ids `apply_chat_template(tokenize=True)` gives) and marks the
//! tokens the loss counts: those the assistant turns produce (`train_on = "assistant"`), or all.
//! Tokens and masks go to the shards (`<shard>.mask.bin/.idx` beside `.bin/.idx`), one row of
//! provenance per conversation.

pub mod template;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokenmill_ingest::chat::Message;

pub use template::ChatTemplate;

use crate::error::{Error, Result};

/// Which tokens the loss counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainOn {
    /// The tokens of the assistant turns (their end markers included).
    #[default]
    Assistant,
    /// Every token.
    All,
}

/// What a conversation longer than `max_tokens` becomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlong {
    /// Dropped (funnel: `sft` / `too_long`).
    #[default]
    Drop,
    /// Cut to `max_tokens` (funnel note: `sft` / `truncated`).
    Truncate,
}

/// `[sft]`: conversations to supervised fine-tuning shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftConfig {
    /// `tokenizer` (the `chat_template` of `tokenizer_config`) or a built-in: `chatml`,
    /// `llama3`, `deepseek-v3` (rendered with the special tokens of `tokenizer_config` when
    /// there is one, else its model's own).
    pub template: String,
    /// The `tokenizer_config.json` (default: beside `[tokenizer] path`).
    pub tokenizer_config: Option<PathBuf>,
    /// Which tokens the loss counts.
    pub train_on: TrainOn,
    /// The longest conversation kept whole, in tokens (e.g. the training `seq_len + 1`);
    /// none: no limit.
    pub max_tokens: Option<u64>,
    /// What a longer one becomes.
    pub overlong: Overlong,
}

impl Default for SftConfig {
    fn default() -> Self {
        SftConfig {
            template: "tokenizer".into(),
            tokenizer_config: None,
            train_on: TrainOn::Assistant,
            max_tokens: None,
            overlong: Overlong::Drop,
        }
    }
}

impl SftConfig {
    /// The chat template it names; `tokenizer_json` locates the default `tokenizer_config.json`.
    pub fn chat_template(&self, tokenizer_json: &std::path::Path) -> Result<ChatTemplate> {
        let path = self.tokenizer_config.clone().unwrap_or_else(|| {
            tokenizer_json
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join("tokenizer_config.json")
        });
        if self.template != "tokenizer" {
            // A built-in renders the tokenizer's own special tokens when its config is there.
            let t = ChatTemplate::builtin(&self.template)?;
            return if path.is_file() {
                t.with_tokens_of(&path)
            } else {
                Ok(t)
            };
        }
        if !path.is_file() {
            return Err(Error::Config(format!(
                "[sft] template = \"tokenizer\" needs {} (or name a built-in: chatml, llama3, deepseek-v3)",
                path.display()
            )));
        }
        ChatTemplate::from_tokenizer_config(&path)
    }
}

/// A conversation as tokens and loss mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The rendering's token ids.
    pub ids: Vec<u32>,
    /// 1 where the loss counts the token.
    pub mask: Vec<u8>,
    /// Whether it was cut to `max_tokens`.
    pub truncated: bool,
    /// xxh3-64 of the rendering (the text tokenized), for the provenance row.
    pub text_xxh3: u64,
}

/// What became of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SftOutcome {
    /// Written.
    Keep(Encoded),
    /// Dropped by `rule` (`too_long`, `no_trained_tokens`), with the tokens it had.
    Drop(&'static str, usize),
}

/// Renders, tokenizes and masks conversations.
#[derive(Debug)]
pub struct SftEncoder {
    /// The chat template.
    pub template: ChatTemplate,
    cfg: SftConfig,
}

impl SftEncoder {
    /// The encoder of `cfg`, its template found from `tokenizer_json`.
    pub fn new(cfg: &SftConfig, tokenizer_json: &std::path::Path) -> Result<Self> {
        Ok(SftEncoder {
            template: cfg.chat_template(tokenizer_json)?,
            cfg: cfg.clone(),
        })
    }

    /// The rendering, ids and mask of `messages` with `tok`; a template that fails is an
    /// error naming conversation `id` and where it was read.
    pub fn encode(
        &self,
        tok: &tokenizers::Tokenizer,
        messages: &[Message],
        id: &str,
        source: &str,
        offset: u64,
    ) -> Result<SftOutcome> {
        let bad = |detail: String| Error::Conversation {
            id: id.to_string(),
            file: source.to_string(),
            offset,
            detail,
        };
        let full = self.template.render(messages, false).map_err(|e| {
            bad(format!(
                "chat template {} failed to render: {e}",
                self.template.name
            ))
        })?;
        let enc = tok
            .encode(full.as_str(), false)
            .map_err(|e| bad(format!("tokenizing the rendered conversation: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        let mut mask = match self.cfg.train_on {
            TrainOn::All => vec![1u8; ids.len()],
            TrainOn::Assistant => {
                let spans = self
                    .template
                    .assistant_spans(messages, &full)
                    .map_err(|e| bad(format!("chat template {}: {e}", self.template.name)))?;
                enc.get_offsets()
                    .iter()
                    // A token counts when it starts inside an assistant span.
                    .map(|&(a, _)| u8::from(spans.iter().any(|s| s.contains(&a))))
                    .collect()
            }
        };
        let mut truncated = false;
        if let Some(max) = self.cfg.max_tokens.map(|m| m as usize)
            && ids.len() > max
        {
            match self.cfg.overlong {
                Overlong::Drop => return Ok(SftOutcome::Drop("too_long", ids.len())),
                Overlong::Truncate => {
                    ids.truncate(max);
                    mask.truncate(max);
                    truncated = true;
                }
            }
        }
        if !mask.contains(&1) {
            return Ok(SftOutcome::Drop("no_trained_tokens", ids.len()));
        }
        Ok(SftOutcome::Keep(Encoded {
            ids,
            mask,
            truncated,
            text_xxh3: xxhash_rust::xxh3::xxh3_64(full.as_bytes()),
        }))
    }
}

/// Kept conversations of one reader batch, rendered, tokenized and masked (in parallel on the
/// current pool): the ones written with their ids and masks; the dropped ones counted in the
/// funnel (`sft`) and `stats`, and recorded in `drops`.
pub fn encode_kept<'a>(
    enc: &SftEncoder,
    tok: &tokenizers::Tokenizer,
    batch: &arrow::array::RecordBatch,
    kept: Vec<crate::stages::KeptRow<'a>>,
    stats: &mut crate::stats::TaskStats,
    drops: &mut crate::excluded::DropWriter,
) -> Result<Vec<(crate::stages::KeptRow<'a>, Encoded)>> {
    use arrow::array::{Array, AsArray};
    use rayon::prelude::*;
    let metadata = batch
        .column_by_name("metadata")
        .expect("document schema")
        .as_string::<i32>();
    let outcomes: Vec<SftOutcome> = kept
        .par_iter()
        .with_min_len(4)
        .map(|k| {
            let meta = &k.meta;
            let messages = (metadata.is_valid(k.row))
                .then(|| tokenmill_ingest::chat::messages_of_metadata(metadata.value(k.row)))
                .flatten()
                .ok_or_else(|| Error::Conversation {
                    id: meta.id.to_string(),
                    file: meta.source.to_string(),
                    offset: meta.offset,
                    detail: "not a conversation: [sft] needs conversation inputs ([input.chat])"
                        .into(),
                })?;
            enc.encode(tok, &messages, meta.id, meta.source, meta.offset)
        })
        .collect::<Result<_>>()?;
    let mut out = Vec::with_capacity(kept.len());
    for (k, o) in kept.into_iter().zip(outcomes) {
        let bytes = k.kept.text.len();
        match o {
            SftOutcome::Keep(e) => {
                stats.funnel.pass("sft", bytes, bytes);
                if e.truncated {
                    stats.funnel.note("sft", "truncated");
                }
                out.push((k, e));
            }
            SftOutcome::Drop(rule, tokens) => {
                stats.funnel.drop("sft", rule, bytes);
                *stats.dropped.entry("sft".into()).or_default() += 1;
                let why = crate::stages::Dropped {
                    stage: "sft",
                    rule: rule.to_string(),
                    value: tokens as f64,
                    threshold: enc.cfg.max_tokens.map_or(f64::NAN, |m| m as f64),
                    text: None,
                };
                drops.push(&k.meta, Some(&k.kept.text), &why)?;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> tokenizers::Tokenizer {
        // A word-level vocabulary is enough to see which tokens the mask takes.
        let json = serde_json::json!({
            "version": "1.0",
            "added_tokens": [
                {"id": 0, "content": "<|im_start|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 1, "content": "<|im_end|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
            ],
            "normalizer": null,
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null,
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": {
                "<|im_start|>": 0, "<|im_end|>": 1, "user": 2, "assistant": 3, "hi": 4,
                "hello": 5, "system": 6, "be": 7, "brief": 8, "[UNK]": 9},
                "unk_token": "[UNK]"}
        });
        tokenizers::Tokenizer::from_bytes(json.to_string().as_bytes()).unwrap()
    }

    fn msgs(turns: &[(&str, &str)]) -> Vec<Message> {
        turns
            .iter()
            .map(|(r, c)| Message {
                role: r.to_string(),
                content: c.to_string(),
            })
            .collect()
    }

    fn encoder(cfg: SftConfig) -> SftEncoder {
        SftEncoder {
            template: ChatTemplate::builtin("chatml").unwrap(),
            cfg,
        }
    }

    #[test]
    fn the_mask_takes_the_assistant_turns_or_everything() {
        let tok = tokenizer();
        let m = msgs(&[
            ("system", "be brief"),
            ("user", "hi"),
            ("assistant", "hello"),
        ]);
        let cfg = SftConfig {
            template: "chatml".into(),
            ..Default::default()
        };
        let SftOutcome::Keep(e) = encoder(cfg.clone()).encode(&tok, &m, "c1", "f", 0).unwrap()
        else {
            panic!("kept")
        };
        // <|im_start|> system be brief <|im_end|> <|im_start|> user hi <|im_end|>
        // <|im_start|> assistant hello <|im_end|>
        assert_eq!(e.ids, [0, 6, 7, 8, 1, 0, 2, 4, 1, 0, 3, 5, 1]);
        assert_eq!(e.mask, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
        let all = SftConfig {
            train_on: TrainOn::All,
            ..cfg.clone()
        };
        let SftOutcome::Keep(e) = encoder(all).encode(&tok, &m, "c1", "f", 0).unwrap() else {
            panic!("kept")
        };
        assert!(e.mask.iter().all(|&x| x == 1));
        // Too long: dropped, or cut.
        let short = SftConfig {
            max_tokens: Some(12),
            ..cfg.clone()
        };
        assert_eq!(
            encoder(short.clone())
                .encode(&tok, &m, "c1", "f", 0)
                .unwrap(),
            SftOutcome::Drop("too_long", 13)
        );
        let cut = SftConfig {
            overlong: Overlong::Truncate,
            ..short
        };
        let SftOutcome::Keep(e) = encoder(cut).encode(&tok, &m, "c1", "f", 0).unwrap() else {
            panic!("kept")
        };
        assert_eq!((e.ids.len(), e.truncated, e.mask[11]), (12, true, 1));
        // Nothing to train on: dropped.
        let q = msgs(&[("user", "hi")]);
        assert_eq!(
            encoder(cfg).encode(&tok, &q, "c2", "f", 0).unwrap(),
            SftOutcome::Drop("no_trained_tokens", 4)
        );
    }

    #[test]
    fn a_template_that_fails_names_the_conversation() {
        let tok = tokenizer();
        let enc = SftEncoder {
            template: ChatTemplate::new(
                "strict",
                "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}",
                Default::default(),
            )
            .unwrap(),
            cfg: SftConfig::default(),
        };
        let m = msgs(&[
            ("system", "be brief"),
            ("user", "hi"),
            ("assistant", "hello"),
        ]);
        let err = enc
            .encode(&tok, &m, "conv-17", "chats.jsonl", 512)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("conv-17") && err.contains("chats.jsonl") && err.contains("512"),
            "{err}"
        );
        assert!(err.contains("System role not supported"), "{err}");
    }
}
