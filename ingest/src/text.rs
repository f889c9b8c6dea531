//! Plain UTF-8 text: one document per file, or per blank-line-separated block.

use std::io::BufRead;
use std::path::Path;

use crate::error::Result;
use crate::reader::{
    Outcome, ReadConfig, RecordSource, TextMode, display, open_decompressed, read_line_capped,
};
use crate::schema::Document;
use crate::skip::{Skip, SkipReason};

/// Documents of a text file. In `File` mode the id is the file name; in `Blocks` mode it is
/// `<file>:<line>` of the block's first line and the offset is that line's byte offset.
pub(crate) struct TextSource {
    source: String,
    input: Box<dyn BufRead + Send>,
    consumed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    mode: TextMode,
    cap: usize,
    line: u64,
    offset: u64,
    buf: Vec<u8>,
    done: bool,
}

impl TextSource {
    pub(crate) fn open(path: &Path, opts: &ReadConfig) -> Result<Self> {
        let (input, consumed) = open_decompressed(path)?;
        Ok(TextSource {
            source: display(path),
            input,
            consumed,
            mode: opts.text_mode,
            cap: opts.max_record_bytes,
            line: 0,
            offset: 0,
            buf: Vec::new(),
            done: false,
        })
    }

    fn skip(&self, reason: SkipReason, record: u64, offset: u64, detail: String) -> Outcome {
        Outcome::Skip(Skip {
            reason,
            source: self.source.clone(),
            record,
            offset,
            documents: 1,
            detail,
            id: None,
            url: None,
        })
    }

    fn finish_doc(&self, bytes: Vec<u8>, first_line: u64, offset: u64) -> Outcome {
        match String::from_utf8(bytes) {
            Ok(text) => Outcome::Doc(Document {
                id: match self.mode {
                    TextMode::File => self.source.clone(),
                    TextMode::Blocks => format!("{}:{first_line}", self.source),
                },
                offset,
                text: Some(text),
                ..Default::default()
            }),
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                self.skip(
                    SkipReason::InvalidUtf8,
                    first_line,
                    offset,
                    format!("invalid UTF-8 at byte {} of the file", offset + at as u64),
                )
            }
        }
    }
}

impl RecordSource for TextSource {
    fn input_position(&self) -> u64 {
        self.consumed.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn next_record(&mut self) -> Option<Result<Outcome>> {
        if self.done {
            return None;
        }
        let mut doc: Vec<u8> = Vec::new();
        let mut first_line = 0u64;
        let mut start = self.offset;
        loop {
            let line_start = self.offset;
            let (n, _cut) = match read_line_capped(&mut *self.input, &mut self.buf, usize::MAX) {
                Ok(x) => x,
                Err(e) if crate::reader::is_remote_failure(&e) => {
                    self.done = true;
                    return Some(Err(crate::Error::from_io(&self.source, e)));
                }
                Err(e) => {
                    self.done = true;
                    return Some(Ok(self.skip(
                        SkipReason::CorruptCompression,
                        self.line + 1,
                        line_start,
                        format!("stream stops decoding ({e}); the rest of the file is lost"),
                    )));
                }
            };
            if n == 0 {
                self.done = true;
                // End of input: an empty file (or trailing blank lines) holds no document.
                if doc.is_empty() && (self.mode == TextMode::Blocks || self.offset == 0) {
                    return None;
                }
                break;
            }
            self.offset += n as u64;
            self.line += 1;
            let blank = self.buf.trim_ascii().is_empty();
            if self.mode == TextMode::Blocks {
                if blank {
                    if doc.is_empty() {
                        continue;
                    }
                    break;
                }
                if doc.is_empty() {
                    first_line = self.line;
                    start = line_start;
                }
            } else if doc.is_empty() {
                first_line = 1;
                start = 0;
            }
            if doc.len() + self.buf.len() > self.cap {
                // Drain the rest of the document, then report it as too large.
                let size = doc.len() + self.buf.len();
                doc.clear();
                let reason = self.skip(
                    SkipReason::TooLarge,
                    first_line,
                    start,
                    format!(
                        "document of over {size} bytes exceeds max_record_bytes {}",
                        self.cap
                    ),
                );
                if self.mode == TextMode::File {
                    self.done = true;
                }
                return Some(Ok(reason));
            }
            doc.extend_from_slice(&self.buf);
        }
        if self.mode == TextMode::Blocks {
            while doc.last().is_some_and(|b| b.is_ascii_whitespace()) {
                doc.pop();
            }
        }
        Some(Ok(self.finish_doc(doc, first_line, start)))
    }
}
