//! Chat templates: Jinja, as Hugging Face's `apply_chat_template` renders them, with
//! `minijinja` — the tokenizer's own (`chat_template` in `tokenizer_config.json`) or a named
//! built-in (`chatml`, `llama3`, `deepseek-v3`).
//!
//! The environment is transformers' (`trim_blocks`, `lstrip_blocks`, loop controls,
//! `raise_exception`, `tojson`, Python string methods), and the context its
//! (`messages`, `add_generation_prompt`, the special tokens `bos_token`, `eos_token`, …).

use std::collections::BTreeMap;
use std::path::Path;

use minijinja::{Environment, ErrorKind, Value};
use tokenmill_ingest::chat::Message;

use crate::error::{Error, Result};

/// ChatML (Qwen, Hermes, …).
pub const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Meta Llama 3 Instruct's template.
pub const LLAMA3: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

/// DeepSeek-V3's template for system, user, assistant and tool turns (its tool-call branch
/// left out: conversations here carry no `tool_calls`).
pub const DEEPSEEK_V3: &str = "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='', is_first_sp=true) %}{%- for message in messages %}{%- if message['role'] == 'system' %}{%- if ns.is_first_sp %}{% set ns.system_prompt = ns.system_prompt + message['content'] %}{% set ns.is_first_sp = false %}{%- else %}{% set ns.system_prompt = ns.system_prompt + '\n\n' + message['content'] %}{%- endif %}{%- endif %}{%- endfor %}{{ bos_token }}{{ ns.system_prompt }}{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}{%- if message['role'] == 'assistant' and 'tool_calls' not in message %}{%- if ns.is_tool %}{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}{%- else %}{{'<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- set ns.is_output_first = false %}{%- else %}{{'<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%- endif %}{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜>'}}{% endif %}";

/// The built-in templates: (name, template, bos_token, eos_token).
pub const BUILTINS: [(&str, &str, &str, &str); 3] = [
    ("chatml", CHATML, "", "<|im_end|>"),
    ("llama3", LLAMA3, "<|begin_of_text|>", "<|eot_id|>"),
    (
        "deepseek-v3",
        DEEPSEEK_V3,
        "<｜begin▁of▁sentence｜>",
        "<｜end▁of▁sentence｜>",
    ),
];

/// A compiled chat template with the special tokens its context holds.
#[derive(Debug)]
pub struct ChatTemplate {
    /// `chatml`, `llama3`, `deepseek-v3`, or the `tokenizer_config.json` it came from.
    pub name: String,
    env: Environment<'static>,
    /// `bos_token`, `eos_token`, … as the template sees them.
    pub special: BTreeMap<String, String>,
}

fn raise_exception(msg: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

/// Python's `json.dumps` layout on one line: `", "` between items, `": "` after keys.
struct PythonJson;

impl serde_json::ser::Formatter for PythonJson {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False)` (keys in their order).
fn tojson(v: Value) -> std::result::Result<Value, minijinja::Error> {
    use serde::Serialize;
    let mut out = Vec::new();
    v.serialize(&mut serde_json::Serializer::with_formatter(
        &mut out, PythonJson,
    ))
    .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(Value::from_safe_string(
        String::from_utf8(out).expect("serde_json writes UTF-8"),
    ))
}

/// A special token of `tokenizer_config.json`: a string or `{"content": ...}`.
fn token_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// The special tokens of a `tokenizer_config.json`.
fn special_tokens(v: &serde_json::Value) -> BTreeMap<String, String> {
    let mut special = BTreeMap::new();
    for key in [
        "bos_token",
        "eos_token",
        "unk_token",
        "pad_token",
        "sep_token",
        "cls_token",
        "mask_token",
    ] {
        if let Some(t) = v.get(key).and_then(token_string) {
            special.insert(key.to_string(), t);
        }
    }
    special
}

impl ChatTemplate {
    /// Compiles `source` under `name` with the special tokens `special`.
    pub fn new(name: &str, source: &str, special: BTreeMap<String, String>) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::Config(format!("chat template {name}: {e:#}")))?;
        Ok(ChatTemplate {
            name: name.to_string(),
            env,
            special,
        })
    }

    /// A built-in template by name.
    pub fn builtin(name: &str) -> Result<Self> {
        let (_, src, bos, eos) = BUILTINS
            .iter()
            .find(|b| b.0 == name)
            .ok_or_else(|| {
                let names: Vec<&str> = BUILTINS.iter().map(|b| b.0).collect();
                Error::Config(format!(
                    "unknown chat template `{name}` (built-in: {}; or \"tokenizer\" for the tokenizer_config.json's)",
                    names.join(", ")
                ))
            })?;
        let special = [("bos_token", *bos), ("eos_token", *eos)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::new(name, src, special)
    }

    /// The `chat_template` of a `tokenizer_config.json` (a string, or a list of named
    /// templates of which `default` is taken), with its special tokens.
    pub fn from_tokenizer_config(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: not JSON: {e}", path.display())))?;
        let src = match v.get("chat_template") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template")?.as_str().map(str::to_string))
                .ok_or_else(|| {
                    Error::Config(format!(
                        "{}: chat_template is a list without a `default` template",
                        path.display()
                    ))
                })?,
            _ => {
                return Err(Error::Config(format!(
                    "{}: no chat_template string",
                    path.display()
                )));
            }
        };
        Self::new(&path.display().to_string(), &src, special_tokens(&v))
    }

    /// Takes the special tokens (`bos_token`, …) of a `tokenizer_config.json`, over the ones
    /// it has: a built-in template used with a tokenizer renders that tokenizer's tokens.
    pub fn with_tokens_of(mut self, path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: not JSON: {e}", path.display())))?;
        self.special.extend(special_tokens(&v));
        Ok(self)
    }

    /// The text of `messages`, with the assistant's opening when `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> std::result::Result<String, String> {
        let t = self
            .env
            .get_template("chat")
            .map_err(|e| format!("{e:#}"))?;
        let mut ctx: BTreeMap<&str, Value> = self
            .special
            .iter()
            .map(|(k, v)| (k.as_str(), Value::from(v.as_str())))
            .collect();
        ctx.insert("messages", Value::from_serialize(messages));
        ctx.insert("add_generation_prompt", Value::from(add_generation_prompt));
        t.render(ctx).map_err(|e| {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(x) = src {
                s.push_str(&format!(": {x}"));
                src = x.source();
            }
            s
        })
    }

    /// Byte ranges of `full` (the rendering of `messages`) that the assistant turns produce:
    /// for turn `i`, what `messages[..=i]` adds to `messages[..i]` with the generation prompt
    /// (so the turn's end marker is in, its header out). A template whose renderings are not
    /// prefixes of each other falls back to where each assistant content lies in `full`.
    pub fn assistant_spans(
        &self,
        messages: &[Message],
        full: &str,
    ) -> std::result::Result<Vec<std::ops::Range<usize>>, String> {
        let mut spans = Vec::new();
        let mut cursor = 0;
        for (i, m) in messages.iter().enumerate() {
            if m.role != "assistant" {
                continue;
            }
            let before = self.render(&messages[..i], true)?;
            let upto = self.render(&messages[..=i], false)?;
            if upto.starts_with(&before) && full.starts_with(&upto) && before.len() >= cursor {
                spans.push(before.len()..upto.len());
                cursor = upto.len();
                continue;
            }
            let at = full[cursor..]
                .find(m.content.as_str())
                .map(|p| cursor + p)
                .ok_or_else(|| {
                    format!("assistant turn {i}'s text is not in the rendered conversation")
                })?;
            spans.push(at..at + m.content.len());
            cursor = at + m.content.len();
        }
        Ok(spans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv() -> Vec<Message> {
        let m = |r: &str, c: &str| Message {
            role: r.into(),
            content: c.into(),
        };
        vec![
            m("system", "Be brief."),
            m("user", "Hi"),
            m("assistant", "Hello."),
            m("user", "2+2?"),
            m("assistant", "4"),
        ]
    }

    #[test]
    fn builtins_render_their_formats() {
        let c = conv();
        let chatml = ChatTemplate::builtin("chatml").unwrap();
        let text = chatml.render(&c[..3], false).unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"
        );
        let ds = ChatTemplate::builtin("deepseek-v3").unwrap();
        assert_eq!(
            ds.render(&c[..2], true).unwrap(),
            "<｜begin▁of▁sentence｜>Be brief.<｜User｜>Hi<｜Assistant｜>"
        );
        let l3 = ChatTemplate::builtin("llama3").unwrap();
        assert_eq!(
            l3.render(&c[1..3], false).unwrap(),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
        );
        assert!(
            ChatTemplate::builtin("vicuna")
                .unwrap_err()
                .to_string()
                .contains("chatml")
        );
    }

    #[test]
    fn assistant_spans_hold_the_answers_and_their_end_markers() {
        let c = conv();
        for name in ["chatml", "llama3", "deepseek-v3"] {
            let t = ChatTemplate::builtin(name).unwrap();
            let full = t.render(&c, false).unwrap();
            let spans = t.assistant_spans(&c, &full).unwrap();
            let texts: Vec<&str> = spans.iter().map(|r| &full[r.clone()]).collect();
            let want: [&str; 2] = match name {
                "chatml" => ["Hello.<|im_end|>\n", "4<|im_end|>\n"],
                "llama3" => ["Hello.<|eot_id|>", "4<|eot_id|>"],
                _ => ["Hello.<｜end▁of▁sentence｜>", "4<｜end▁of▁sentence｜>"],
            };
            assert_eq!(texts, want, "{name}");
        }
    }

    #[test]
    fn raise_exception_and_bad_syntax_are_errors() {
        let t = ChatTemplate::new(
            "strict",
            "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversations must start with the user') }}{% endif %}ok",
            BTreeMap::new(),
        )
        .unwrap();
        let err = t.render(&conv(), false).unwrap_err();
        assert!(
            err.contains("Conversations must start with the user"),
            "{err}"
        );
        assert_eq!(t.render(&conv()[1..], false).unwrap(), "ok");
        assert!(ChatTemplate::new("bad", "{% for %}", BTreeMap::new()).is_err());
        // Python string methods work as in transformers.
        let p = ChatTemplate::new(
            "py",
            "{{ messages[0]['content'].strip().upper() }}",
            BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(p.render(&conv()[1..], false).unwrap(), "HI");
    }
}
