//! JSON lines: one document per line, configurable field names.

use std::io::BufRead;
use std::path::Path;

use serde_json::Value;

use crate::error::Result;
use crate::reader::{
    JsonlFields, Outcome, ReadConfig, RecordSource, display, open_decompressed, read_line_capped,
};
use crate::schema::Document;
use crate::skip::{Skip, SkipReason};

/// Records of a `.jsonl`/`.json`/`.ndjson` file (plain, `.gz` or `.zst`). Offsets are byte
/// offsets of the line in the decompressed stream; record numbers are 1-based line numbers.
pub(crate) struct JsonlSource {
    source: String,
    input: Box<dyn BufRead + Send>,
    consumed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    fields: JsonlFields,
    chat: Option<crate::chat::ChatFields>,
    cap: usize,
    line: u64,
    offset: u64,
    buf: Vec<u8>,
    done: bool,
}

impl JsonlSource {
    pub(crate) fn open(path: &Path, opts: &ReadConfig) -> Result<Self> {
        let (input, consumed) = open_decompressed(path)?;
        Ok(JsonlSource {
            source: display(path),
            input,
            consumed,
            fields: opts.jsonl.clone(),
            chat: opts.chat.clone(),
            cap: opts.max_record_bytes,
            line: 0,
            offset: 0,
            buf: Vec::new(),
            done: false,
        })
    }

    fn skip(&self, reason: SkipReason, offset: u64, detail: impl Into<String>) -> Outcome {
        Outcome::Skip(Skip {
            reason,
            source: self.source.clone(),
            record: self.line,
            offset,
            documents: 1,
            detail: detail.into(),
            id: None,
            url: None,
        })
    }
}

/// Looks up a dotted path (`metadata.url`) in a JSON object.
pub(crate) fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(x) = v.get(path) {
        return Some(x);
    }
    let mut cur = v;
    for part in path.split('.') {
        cur = cur.get(part)?;
    }
    Some(cur)
}

fn first_string(v: &Value, paths: &[String]) -> Option<String> {
    paths.iter().find_map(|p| match lookup(v, p)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

impl RecordSource for JsonlSource {
    fn input_position(&self) -> u64 {
        self.consumed.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn next_record(&mut self) -> Option<Result<Outcome>> {
        loop {
            if self.done {
                return None;
            }
            let start = self.offset;
            let (n, cut) = match read_line_capped(&mut *self.input, &mut self.buf, self.cap) {
                Ok(x) => x,
                Err(e) if crate::reader::is_remote_failure(&e) => {
                    // The object store failed after its retries: not bad data, an error.
                    self.done = true;
                    return Some(Err(crate::Error::from_io(&self.source, e)));
                }
                Err(e) => {
                    // A decompression error: nothing after this point can be read.
                    self.done = true;
                    self.line += 1;
                    return Some(Ok(self.skip(
                        SkipReason::CorruptCompression,
                        start,
                        format!("stream stops decoding ({e}); the rest of the file is lost"),
                    )));
                }
            };
            if n == 0 {
                self.done = true;
                return None;
            }
            self.offset += n as u64;
            self.line += 1;
            if cut {
                return Some(Ok(self.skip(
                    SkipReason::TooLarge,
                    start,
                    format!("line of {n} bytes exceeds max_record_bytes {}", self.cap),
                )));
            }
            let line = self.buf.trim_ascii();
            if line.is_empty() {
                continue;
            }
            if let Err(e) = std::str::from_utf8(line) {
                return Some(Ok(self.skip(
                    SkipReason::InvalidUtf8,
                    start,
                    format!("invalid UTF-8 at byte {} of the line", e.valid_up_to()),
                )));
            }
            let v: Value = match serde_json::from_slice(line) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) => {
                    return Some(Ok(self.skip(
                        SkipReason::MalformedJson,
                        start,
                        "line is JSON but not an object",
                    )));
                }
                Err(e) => {
                    return Some(Ok(self.skip(
                        SkipReason::MalformedJson,
                        start,
                        e.to_string(),
                    )));
                }
            };
            if let Some(chat) = &self.chat {
                let id = first_string(&v, &self.fields.id)
                    .unwrap_or_else(|| format!("{}:{}", self.source, self.line));
                return Some(Ok(match chat.conversation(&v) {
                    Ok(messages) => Outcome::Doc(crate::chat::document(id, start, &messages)),
                    Err(why) => match self.skip(
                        SkipReason::BadConversation,
                        start,
                        format!("conversation `{id}`: {why}"),
                    ) {
                        Outcome::Skip(s) => Outcome::Skip(Skip { id: Some(id), ..s }),
                        other => other,
                    },
                }));
            }
            let text = match lookup(&v, &self.fields.text) {
                Some(Value::String(s)) => s.clone(),
                Some(other) => {
                    return Some(Ok(self.skip(
                        SkipReason::MissingText,
                        start,
                        format!(
                            "field `{}` is {} not a string",
                            self.fields.text,
                            kind(other)
                        ),
                    )));
                }
                None => {
                    return Some(Ok(self.skip(
                        SkipReason::MissingText,
                        start,
                        format!("no field `{}`", self.fields.text),
                    )));
                }
            };
            let doc = Document {
                id: first_string(&v, &self.fields.id)
                    .unwrap_or_else(|| format!("{}:{}", self.source, self.line)),
                offset: start,
                url: first_string(&v, &self.fields.url),
                date: first_string(&v, &self.fields.date),
                lang: first_string(&v, &self.fields.lang),
                text: Some(text),
                html: None,
                metadata: None,
            };
            return Some(Ok(Outcome::Doc(doc)));
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
