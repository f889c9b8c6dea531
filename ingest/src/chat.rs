//! Conversations: OpenAI-style `messages` (role/content), ShareGPT (`conversations` with
//! from/value) and Alpaca (instruction/input/output) records, read from JSON lines or Parquet
//! rows into one form, a list of [`Message`]s with the roles `system`, `user`, `assistant` and
//! `tool`.
//!
//! A conversation travels through the build as a document: its `text` is the turns' contents
//! joined by blank lines (what filters and dedup judge) and its `metadata` is
//! `{"messages": [{"role", "content"}, ...]}` (what the chat template renders). A record whose
//! roles are unknown, whose turns are empty, or that has no conversation is a counted skip
//! ([`crate::SkipReason::BadConversation`]) or, with `on_error = "fail"`, an error naming the
//! file, the line and the conversation id.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schema::Document;

/// The record layouts of conversation data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatFormat {
    /// `{"messages": [{"role": "user", "content": "..."}, ...]}` (OpenAI, HF chat datasets);
    /// a content may also be a list of `{"type": "text", "text": ...}` parts.
    #[default]
    Openai,
    /// `{"conversations": [{"from": "human", "value": "..."}, ...]}`.
    Sharegpt,
    /// `{"instruction": "...", "input": "...", "output": "..."}`: one user turn (instruction,
    /// then the input after a blank line when there is one) and one assistant turn.
    Alpaca,
}

/// `[input.chat]`: how conversation records are laid out. Field names may be dotted
/// (`data.messages`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatFields {
    /// The record layout.
    pub format: ChatFormat,
    /// The list of turns (default `messages`, ShareGPT `conversations`).
    pub messages: Option<String>,
    /// A turn's role (default `role`, ShareGPT `from`).
    pub role: Option<String>,
    /// A turn's text (default `content`, ShareGPT `value`).
    pub content: Option<String>,
    /// Alpaca's fields (default `instruction`, `input`, `output`).
    pub instruction: Option<String>,
    /// Alpaca's optional input.
    pub input: Option<String>,
    /// Alpaca's answer.
    pub output: Option<String>,
    /// A top-level system prompt, prepended as a `system` turn when present (default `system`).
    pub system: Option<String>,
    /// Role names of the input → `system`, `user`, `assistant` or `tool`, beside the built-in
    /// ones (`human` → user, `gpt`/`model` → assistant, `function`/`ipython` → tool).
    pub roles: BTreeMap<String, String>,
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The turn's text.
    pub content: String,
}

/// The roles a conversation may hold after mapping.
pub const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

fn builtin_role(name: &str) -> Option<&'static str> {
    Some(match name {
        "system" => "system",
        "user" | "human" => "user",
        "assistant" | "gpt" | "model" => "assistant",
        "tool" | "function" | "ipython" => "tool",
        _ => return None,
    })
}

impl ChatFields {
    fn or<'a>(field: &'a Option<String>, default: &'a str) -> &'a str {
        field.as_deref().unwrap_or(default)
    }

    /// The canonical role of input role `name`, if it is known.
    pub fn role_of(&self, name: &str) -> Option<String> {
        if let Some(r) = self.roles.get(name) {
            return ROLES.contains(&r.as_str()).then(|| r.clone());
        }
        builtin_role(name).map(str::to_string)
    }

    /// Checks the role map (every target must be a known role).
    pub fn validate(&self) -> Result<(), String> {
        for (from, to) in &self.roles {
            if !ROLES.contains(&to.as_str()) {
                return Err(format!(
                    "[input.chat] roles maps `{from}` to `{to}`, not one of {ROLES:?}"
                ));
            }
        }
        Ok(())
    }

    /// The top-level fields a record must have, for projecting Parquet columns.
    pub fn required_field(&self) -> &str {
        match self.format {
            ChatFormat::Openai => Self::or(&self.messages, "messages"),
            ChatFormat::Sharegpt => Self::or(&self.messages, "conversations"),
            ChatFormat::Alpaca => Self::or(&self.instruction, "instruction"),
        }
    }

    /// The conversation of record `v`, or why it is not one.
    pub fn conversation(&self, v: &Value) -> Result<Vec<Message>, String> {
        let mut out = Vec::new();
        let system = Self::or(&self.system, "system");
        if let Some(Value::String(s)) = crate::jsonl::lookup(v, system)
            && self.format != ChatFormat::Openai
        {
            out.push(Message {
                role: "system".into(),
                content: s.clone(),
            });
        }
        match self.format {
            ChatFormat::Openai | ChatFormat::Sharegpt => {
                let (dl, dr, dc) = match self.format {
                    ChatFormat::Sharegpt => ("conversations", "from", "value"),
                    _ => ("messages", "role", "content"),
                };
                let (fl, fr, fc) = (
                    Self::or(&self.messages, dl),
                    Self::or(&self.role, dr),
                    Self::or(&self.content, dc),
                );
                let turns = match crate::jsonl::lookup(v, fl) {
                    Some(Value::Array(a)) => a,
                    Some(_) => return Err(format!("field `{fl}` is not a list of turns")),
                    None => return Err(format!("no field `{fl}`")),
                };
                for (i, t) in turns.iter().enumerate() {
                    let role = match t.get(fr) {
                        Some(Value::String(r)) => r,
                        _ => return Err(format!("turn {i} has no string `{fr}`")),
                    };
                    let canon = self.role_of(role).ok_or_else(|| {
                        format!(
                            "turn {i} has the unknown role `{role}` (map it in [input.chat] roles)"
                        )
                    })?;
                    let content = match t.get(fc) {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Array(parts)) => text_parts(parts).ok_or_else(|| {
                            format!("turn {i}: `{fc}` has a part that is not text")
                        })?,
                        Some(Value::Null) | None => {
                            return Err(format!("turn {i} ({role}) has no `{fc}`"));
                        }
                        Some(_) => return Err(format!("turn {i}: `{fc}` is not a string")),
                    };
                    out.push(Message {
                        role: canon,
                        content,
                    });
                }
            }
            ChatFormat::Alpaca => {
                let s = |name: &str| match crate::jsonl::lookup(v, name) {
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    Some(Value::Null) | None => Ok(None),
                    Some(_) => Err(format!("field `{name}` is not a string")),
                };
                let fi = Self::or(&self.instruction, "instruction");
                let fo = Self::or(&self.output, "output");
                let instruction = s(fi)?.ok_or_else(|| format!("no field `{fi}`"))?;
                let input = s(Self::or(&self.input, "input"))?.filter(|x| !x.trim().is_empty());
                let output = s(fo)?.ok_or_else(|| format!("no field `{fo}`"))?;
                let user = match input {
                    Some(inp) => format!("{instruction}\n\n{inp}"),
                    None => instruction,
                };
                out.push(Message {
                    role: "user".into(),
                    content: user,
                });
                out.push(Message {
                    role: "assistant".into(),
                    content: output,
                });
            }
        }
        if out.is_empty() {
            return Err("a conversation without turns".into());
        }
        if let Some((i, m)) = out
            .iter()
            .enumerate()
            .find(|(_, m)| m.content.trim().is_empty())
        {
            return Err(format!("turn {i} ({}) is empty", m.role));
        }
        Ok(out)
    }
}

/// The text of OpenAI content parts (`[{"type": "text", "text": ...}]`), joined; `None` when a
/// part is not text.
fn text_parts(parts: &[Value]) -> Option<String> {
    let mut s = String::new();
    for p in parts {
        match (p.get("type"), p.get("text")) {
            (Some(Value::String(t)), Some(Value::String(x))) if t == "text" => s.push_str(x),
            _ => return None,
        }
    }
    Some(s)
}

/// The text filters and dedup judge: the turns' contents joined by blank lines.
pub fn conversation_text(messages: &[Message]) -> String {
    let mut s = String::new();
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            s.push_str("\n\n");
        }
        s.push_str(&m.content);
    }
    s
}

/// The `metadata` a conversation document carries: `{"messages": [...]}`.
pub fn conversation_metadata(messages: &[Message]) -> String {
    serde_json::json!({ "messages": messages }).to_string()
}

/// The conversation of a document's `metadata` (as [`conversation_metadata`] wrote it).
pub fn messages_of_metadata(metadata: &str) -> Option<Vec<Message>> {
    #[derive(Deserialize)]
    struct M {
        messages: Vec<Message>,
    }
    serde_json::from_str::<M>(metadata).ok().map(|m| m.messages)
}

/// A conversation document: id, offset and the rest from the caller; text and metadata from
/// the turns.
pub(crate) fn document(id: String, offset: u64, messages: &[Message]) -> Document {
    Document {
        id,
        offset,
        text: Some(conversation_text(messages)),
        metadata: Some(conversation_metadata(messages)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(format: ChatFormat) -> ChatFields {
        ChatFields {
            format,
            ..Default::default()
        }
    }

    fn pairs(m: &[Message]) -> Vec<(&str, &str)> {
        m.iter()
            .map(|m| (m.role.as_str(), m.content.as_str()))
            .collect()
    }

    #[test]
    fn the_three_layouts_give_the_same_turns() {
        let openai = json!({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "!"}]},
            {"role": "assistant", "content": "Hello."}]});
        let m = fields(ChatFormat::Openai).conversation(&openai).unwrap();
        assert_eq!(
            pairs(&m),
            [
                ("system", "Be brief."),
                ("user", "Hi!"),
                ("assistant", "Hello.")
            ]
        );
        let share = json!({"system": "Be brief.", "conversations": [
            {"from": "human", "value": "Hi!"}, {"from": "gpt", "value": "Hello."}]});
        assert_eq!(
            fields(ChatFormat::Sharegpt).conversation(&share).unwrap(),
            m
        );
        let alpaca =
            json!({"system": "Be brief.", "instruction": "Hi!", "input": "", "output": "Hello."});
        assert_eq!(fields(ChatFormat::Alpaca).conversation(&alpaca).unwrap(), m);
        let with_input = json!({"instruction": "Add.", "input": "2 3", "output": "5"});
        assert_eq!(
            pairs(
                &fields(ChatFormat::Alpaca)
                    .conversation(&with_input)
                    .unwrap()
            ),
            [("user", "Add.\n\n2 3"), ("assistant", "5")]
        );
        assert_eq!(conversation_text(&m), "Be brief.\n\nHi!\n\nHello.");
        assert_eq!(messages_of_metadata(&conversation_metadata(&m)).unwrap(), m);
    }

    #[test]
    fn field_names_and_roles_are_mapped() {
        let mut f = fields(ChatFormat::Openai);
        f.messages = Some("data.turns".into());
        f.role = Some("speaker".into());
        f.content = Some("text".into());
        f.roles.insert("client".into(), "user".into());
        f.roles.insert("agent".into(), "assistant".into());
        let v = json!({"data": {"turns": [{"speaker": "client", "text": "a"}, {"speaker": "agent", "text": "b"}]}});
        assert_eq!(
            pairs(&f.conversation(&v).unwrap()),
            [("user", "a"), ("assistant", "b")]
        );
        f.roles.insert("x".into(), "narrator".into());
        assert!(f.validate().unwrap_err().contains("narrator"));
    }

    #[test]
    fn unknown_roles_empty_turns_and_missing_fields_say_which_turn() {
        let f = fields(ChatFormat::Openai);
        let bad = |v: Value| f.conversation(&v).unwrap_err();
        assert!(
            bad(json!({"messages": [{"role": "narrator", "content": "x"}]}))
                .contains("turn 0 has the unknown role `narrator`")
        );
        assert!(bad(json!({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "  "}]})).contains("turn 1 (assistant) is empty"));
        assert!(bad(json!({"messages": []})).contains("without turns"));
        assert!(bad(json!({"text": "x"})).contains("no field `messages`"));
        assert!(
            bad(json!({"messages": [{"role": "user"}]})).contains("turn 0 (user) has no `content`")
        );
        let a = fields(ChatFormat::Alpaca);
        assert!(
            a.conversation(&json!({"instruction": "x"}))
                .unwrap_err()
                .contains("no field `output`")
        );
    }
}
