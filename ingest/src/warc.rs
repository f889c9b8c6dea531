//! A streaming WARC reader for WARC, WET and WAT files (WARC 1.0/1.1), plain or gzip.
//!
//! The file is memory-mapped. A `.warc.gz` is decoded one gzip member at a time, so a record's
//! `offset` is the compressed offset of its member (what a Common Crawl index gives for a range
//! request); a plain `.warc` is parsed in place and offsets are file offsets. Records after the
//! first inside one multi-record member share the member's offset.
//!
//! Tolerated Common Crawl quirks: extra CR/LF between records, a `Content-Length` that is off
//! (the record then ends at its gzip member's end or at the next `WARC/1.` line), target URIs in
//! angle brackets (`<http://…>`, WARC 1.0 drafts and wget). A truncated record, a corrupt gzip
//! member (reading resumes at the next good member) or a non-WARC span are counted skips.
//!
//! Record types: `response` (HTTP parsed; de-chunked; gzip/deflate content-encoding decoded;
//! the HTML decoded to UTF-8 by the declared charset — HTTP header, then `<meta>`, then UTF-8 —
//! with `encoding_rs`), `conversion` (WET text), `metadata` (WAT JSON), `resource` (text/*).
//! Other types (`warcinfo`, `request`, `revisit`, …) are not documents and are counted by kind.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::http::{HttpPayload, decode_response_capped};
use crate::reader::{Outcome, ReadConfig, RecordSource, display};
use crate::schema::Document;
use crate::skip::{Skip, SkipReason};

/// The bytes of a WARC file: a memory map of a local file; a remote gzip WARC read member by
/// member through a window ([`Window`], [`ReadConfig::remote_window_bytes`] ahead); a remote plain WARC fetched whole.
enum Data {
    Map(Mmap),
    Bytes(Vec<u8>),
    Stream(Window),
    Empty,
}

impl Data {
    /// The whole file (not for a stream).
    fn bytes(&self) -> &[u8] {
        match self {
            Data::Map(m) => m,
            Data::Bytes(b) => b,
            Data::Stream(_) | Data::Empty => &[],
        }
    }
}

/// A window over a remote object's bytes as the parser reaches them: bytes `[base, base +
/// buf.len())` of the object. Bytes before the member being decoded are dropped, so memory stays
/// at about one member (not the object).
struct Window {
    read: crate::remote::RemoteRead,
    url: String,
    buf: Vec<u8>,
    base: usize,
    eof: bool,
    /// Bytes behind the member kept before the buffer is compacted (the window's size).
    slack: usize,
}

impl Window {
    /// The bytes from `at` (absolute, at or after `base`) with at least `want` of them held, or
    /// all that is left; and whether they reach the object's end.
    fn view(&mut self, at: usize, want: usize) -> Result<(&[u8], bool)> {
        // Bytes behind `at` go once they are over half the buffer (and the window's size):
        // each byte is moved at most once on average, not once per member.
        let behind = at.saturating_sub(self.base).min(self.buf.len());
        if behind > self.slack && behind * 2 > self.buf.len() {
            self.buf.drain(..behind);
            self.base += behind;
        }
        let from = at.saturating_sub(self.base).min(self.buf.len());
        let mut chunk = [0u8; 64 << 10];
        while !self.eof && self.buf.len() - from < want {
            let n = (want - (self.buf.len() - from)).min(chunk.len());
            let got = self
                .read
                .read(&mut chunk[..n])
                .map_err(|e| Error::from_io(self.url.as_str(), e))?;
            self.buf.extend_from_slice(&chunk[..got]);
            self.eof = got == 0;
        }
        Ok((&self.buf[from..], self.eof))
    }

    /// The largest window a member may need: its compressed bytes are at most about its
    /// decoded size, which `cap` bounds.
    fn limit(cap: usize, window: usize) -> usize {
        cap.saturating_mul(2).saturating_add(window)
    }
}

/// How decoding one gzip member ended.
#[derive(Debug)]
enum Member {
    /// Fully decoded; `consumed` compressed bytes.
    Complete { out: Vec<u8>, consumed: usize },
    /// The file ended inside the member; `out` holds what decoded.
    Truncated { out: Vec<u8>, err: String },
    /// Not a gzip member, or its deflate stream is broken.
    Corrupt { err: String },
    /// Decodes to more than the cap; `consumed` compressed bytes were skipped.
    TooLarge { consumed: usize },
    /// Decodes to more than the cap, and the bytes ended before the member did.
    TooLargeCut,
}

fn decode_member(data: &[u8], cap: usize) -> Member {
    let mut rest = data;
    let mut dec = flate2::bufread::GzDecoder::new(&mut rest);
    let mut out = Vec::new();
    match (&mut dec).take(cap as u64 + 1).read_to_end(&mut out) {
        Ok(_) if out.len() > cap => {
            match std::io::copy(&mut dec, &mut std::io::sink()) {
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Member::TooLargeCut;
                }
                Err(_) => {
                    return Member::Corrupt {
                        err: "broken deflate stream in an oversized member".into(),
                    };
                }
                Ok(_) => {}
            }
            drop(dec);
            Member::TooLarge {
                consumed: data.len() - rest.len(),
            }
        }
        Ok(_) => {
            drop(dec);
            Member::Complete {
                out,
                consumed: data.len() - rest.len(),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Member::Truncated {
            out,
            err: e.to_string(),
        },
        Err(e) => Member::Corrupt { err: e.to_string() },
    }
}

/// The records of one WARC/WET/WAT file.
pub(crate) struct WarcSource {
    source: String,
    data: Data,
    gz: bool,
    cap: usize,
    /// The stream window ([`ReadConfig::remote_window_bytes`]).
    window: usize,
    /// Next unread byte of `data` (compressed position for gzip).
    pos: usize,
    /// The decoded member being parsed (gzip only), its compressed offset and whether it was cut.
    member: Vec<u8>,
    member_offset: u64,
    member_pos: usize,
    member_truncated: bool,
    member_active: bool,
    record: u64,
    pending: VecDeque<Outcome>,
}

impl WarcSource {
    pub(crate) fn open(path: &Path, opts: &ReadConfig) -> Result<Self> {
        let (data, gz) = if crate::remote::is_remote(path) {
            let url = path.to_string_lossy().into_owned();
            let mut w = Window {
                read: crate::remote::open_stream(&url)?,
                url: url.clone(),
                buf: Vec::new(),
                base: 0,
                eof: false,
                slack: opts.remote_window_bytes.max(4096),
            };
            if w.view(0, 2)?.0.starts_with(&[0x1f, 0x8b]) {
                // gzip: member by member, as the bytes arrive.
                (Data::Stream(w), true)
            } else {
                // Plain WARC records are parsed over the whole file: fetched, up to the cap.
                drop(w);
                let bytes = crate::remote::fetch(&url, opts.remote_max_bytes)?;
                (Data::Bytes(bytes), false)
            }
        } else {
            let data = Self::map(path)?;
            let gz = data.bytes().starts_with(&[0x1f, 0x8b]);
            (data, gz)
        };
        Ok(WarcSource {
            source: display(path),
            data,
            gz,
            cap: opts.max_record_bytes,
            window: opts.remote_window_bytes.max(4096),
            pos: 0,
            member: Vec::new(),
            member_offset: 0,
            member_pos: 0,
            member_truncated: false,
            member_active: false,
            record: 0,
            pending: VecDeque::new(),
        })
    }

    /// A memory map of a local file (nothing for an empty one).
    fn map(path: &Path) -> Result<Data> {
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
        if len == 0 {
            return Ok(Data::Empty);
        }
        // SAFETY: mapped read-only; inputs are not modified while a build reads them (a
        // concurrent truncation by another process could fault, as for any mmap reader).
        Ok(Data::Map(
            unsafe { Mmap::map(&f) }.map_err(|e| Error::io(path, e))?,
        ))
    }

    fn skip(&self, reason: SkipReason, offset: u64, detail: String) -> Outcome {
        Outcome::Skip(Skip {
            reason,
            source: self.source.clone(),
            record: self.record,
            offset,
            documents: 1,
            detail,
            id: None,
            url: None,
        })
    }

    /// A skip of a record whose id and URL are known.
    fn skip_doc(&self, reason: SkipReason, doc: &Document, detail: String) -> Outcome {
        match self.skip(reason, doc.offset, detail) {
            Outcome::Skip(mut s) => {
                s.id = Some(doc.id.clone());
                s.url = doc.url.clone();
                Outcome::Skip(s)
            }
            o => o,
        }
    }

    /// The bytes from `at` on, at least `want` of them for a stream, and whether they reach
    /// the end of the file.
    fn view(&mut self, at: usize, want: usize) -> Result<(&[u8], bool)> {
        match &mut self.data {
            Data::Stream(w) => w.view(at, want),
            d => {
                let b = d.bytes();
                Ok((&b[at.min(b.len())..], true))
            }
        }
    }

    /// Whether every byte of the file has been consumed.
    fn at_end(&self) -> bool {
        match &self.data {
            Data::Stream(w) => w.eof && self.pos >= w.base + w.buf.len(),
            d => self.pos >= d.bytes().len(),
        }
    }

    /// Loads the next gzip member into `self.member`, queueing skips for bad ones; false when
    /// none was loaded (the file ended, or the member was skipped and counted). A stream holds
    /// a window of the bytes from the member on, grown while the member does not fit.
    fn next_member(&mut self) -> Result<bool> {
        let at = self.pos;
        let cap = self.cap;
        let window = self.window;
        let mut want = window;
        // (what decoding gave, bytes viewed, whether they reach the end, where to resume after
        // a corrupt member)
        let (member, seen, eof, resume) = loop {
            let (rest, eof) = self.view(at, want)?;
            // Trailing zero padding or whitespace after the last member is not an error (a
            // stream's run of it longer than the window's limit is passed over).
            if rest.iter().all(|&b| b == 0 || b.is_ascii_whitespace()) {
                if eof || want >= Window::limit(cap, window) {
                    self.pos = at + rest.len();
                    return Ok(false);
                }
                want = want.saturating_mul(2).min(Window::limit(cap, window));
                continue;
            }
            let m = decode_member(rest, cap);
            // A stream: a member cut by the window's end (not a corrupt one) gets a larger window.
            let cut = matches!(m, Member::Truncated { .. } | Member::TooLargeCut);
            if cut && !eof && want < Window::limit(cap, window) {
                want = want.saturating_mul(2).min(Window::limit(cap, window));
                continue;
            }
            let resume = match &m {
                // Resume at the next offset where a whole member decodes (in a stream, or one
                // that the window's end cuts).
                Member::Corrupt { .. } => (1..rest.len().saturating_sub(2))
                    .filter(|&q| rest[q] == 0x1f && rest[q + 1] == 0x8b && rest[q + 2] == 0x08)
                    .find(|&q| match decode_member(&rest[q..], cap) {
                        Member::Complete { .. } => true,
                        Member::Truncated { .. } | Member::TooLargeCut => !eof,
                        _ => false,
                    }),
                _ => None,
            };
            break (m, rest.len(), eof, resume);
        };
        match member {
            Member::Complete { out, consumed } => {
                self.pos += consumed.max(1);
                self.load(out, at, false);
                Ok(true)
            }
            Member::Truncated { out, err } => {
                self.pos = at + seen;
                let why = if eof {
                    String::new()
                } else {
                    format!(
                        " (a member over {} compressed bytes)",
                        Window::limit(cap, window)
                    )
                };
                if out.is_empty() {
                    let o = self.skip(
                        SkipReason::TruncatedRecord,
                        at as u64,
                        format!("gzip member cut short before any record ({err}){why}"),
                    );
                    self.pending.push_back(o);
                    return Ok(false);
                }
                self.load(out, at, true);
                Ok(true)
            }
            Member::TooLargeCut => {
                // The file (or the window's limit) ends inside an oversized member.
                self.pos = at + seen;
                self.record += 1;
                let o = self.skip(
                    SkipReason::TooLarge,
                    at as u64,
                    format!(
                        "gzip member decodes to over max_record_bytes {} and is cut short",
                        self.cap
                    ),
                );
                self.pending.push_back(o);
                Ok(false)
            }
            Member::TooLarge { consumed } => {
                self.pos += consumed.max(1);
                self.record += 1;
                let o = self.skip(
                    SkipReason::TooLarge,
                    at as u64,
                    format!("gzip member decodes to over max_record_bytes {}", self.cap),
                );
                self.pending.push_back(o);
                Ok(false)
            }
            Member::Corrupt { err } => {
                self.record += 1;
                let lost = resume.unwrap_or(seen);
                let o = self.skip(
                    SkipReason::CorruptGzip,
                    at as u64,
                    format!("corrupt gzip member ({err}); {lost} bytes skipped"),
                );
                self.pending.push_back(o);
                self.pos = at + lost;
                Ok(false)
            }
        }
    }

    fn load(&mut self, out: Vec<u8>, offset: usize, truncated: bool) {
        self.member = out;
        self.member_offset = offset as u64;
        self.member_pos = 0;
        self.member_truncated = truncated;
        self.member_active = true;
    }
}

impl RecordSource for WarcSource {
    fn input_position(&self) -> u64 {
        self.pos as u64
    }

    fn next_record(&mut self) -> Option<Result<Outcome>> {
        loop {
            if let Some(o) = self.pending.pop_front() {
                return Some(Ok(o));
            }
            if self.gz {
                if self.member_active {
                    let buf = std::mem::take(&mut self.member);
                    let out = match parse_record(&buf, self.member_pos) {
                        Some((rec, next)) => {
                            self.member_pos = next;
                            self.record += 1;
                            Some(self.outcome(rec, self.member_offset))
                        }
                        None => None,
                    };
                    self.member = buf;
                    match out {
                        Some(o) => return Some(Ok(o)),
                        None => self.member_active = false,
                    }
                } else if self.at_end() {
                    return None;
                } else if let Err(e) = self.next_member() {
                    // A remote read that failed after its retries: the file cannot go on.
                    self.data = Data::Empty;
                    self.pos = 0;
                    return Some(Err(e));
                }
            } else {
                let data = std::mem::replace(&mut self.data, Data::Empty);
                let out = parse_record(data.bytes(), self.pos).map(|(rec, next)| {
                    self.pos = next;
                    self.record += 1;
                    let off = rec.start as u64;
                    self.outcome(rec, off)
                });
                self.data = data;
                return out.map(Ok);
            }
        }
    }
}

/// One parsed record (or a span that is not one).
struct RawRecord<'a> {
    start: usize,
    kind: RawKind<'a>,
}

enum RawKind<'a> {
    Record {
        headers: Vec<(&'a str, &'a str)>,
        block: &'a [u8],
        length_off: bool,
    },
    Truncated {
        headers: Vec<(&'a str, &'a str)>,
        have: usize,
        want: Option<usize>,
    },
    Garbage {
        len: usize,
    },
    BadHeader {
        detail: String,
    },
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from >= hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Next version line (`WARC/1.0`, `WARC/1.1`, ClueWeb's `WARC/0.18`) at the start of a line,
/// at or after `from`.
fn next_record_start(buf: &[u8], from: usize) -> Option<usize> {
    let mut q = from;
    while let Some(p) = find(buf, b"WARC/", q) {
        let digit = buf.get(p + 5).is_some_and(u8::is_ascii_digit) && buf.get(p + 6) == Some(&b'.');
        if digit && (p == 0 || buf[p - 1] == b'\n') {
            return Some(p);
        }
        q = p + 1;
    }
    None
}

/// A `response` record's HTTP message; or, when the block does not start with a status line
/// and the record's `Content-Type` is the document's own (Wayback-derived crawls fold the
/// HTTP headers into the WARC headers), the block as the body with that media type and status
/// 200, marked `http_headers: absent`.
fn response(
    headers: &[(&str, &str)],
    block: &[u8],
    meta: &mut serde_json::Map<String, serde_json::Value>,
    cap: usize,
) -> Result<crate::http::HttpResponse, String> {
    let ct = header(headers, "Content-Type").unwrap_or("");
    let http = ct
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("application/http");
    if block.trim_ascii_start().starts_with(b"HTTP/") || http || ct.is_empty() {
        return decode_response_capped(block, cap);
    }
    meta.insert("http_headers".into(), "absent".into());
    let (mime, payload) = crate::http::decode_body(ct, block.to_vec());
    Ok(crate::http::HttpResponse {
        status: 200,
        mime,
        payload,
    })
}

/// Whether a `WARC-Date` is a date: `YYYY-MM-DD`, optionally `Thh:mm:ss` with a fraction and
/// a zone, the fields in range.
fn valid_date(d: &str) -> bool {
    let b = d.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = d.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (Some(_), Some(mo), Some(day)) = (num(0..4), num(5..7), num(8..10)) else {
        return false;
    };
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&day)
    {
        return false;
    }
    if b.len() == 10 {
        return true;
    }
    let (Some(h), Some(mi), Some(s)) = (num(11..13), num(14..16), num(17..19)) else {
        return false;
    };
    b.get(10) == Some(&b'T') && h < 24 && mi < 60 && s <= 60
}

/// End of `buf[from..to]` without its trailing CR/LF bytes.
fn trim_crlf_end(buf: &[u8], from: usize, mut to: usize) -> usize {
    while to > from && (buf[to - 1] == b'\r' || buf[to - 1] == b'\n') {
        to -= 1;
    }
    to
}

fn parse_headers(h: &[u8]) -> Vec<(&str, &str)> {
    let text = std::str::from_utf8(h).unwrap_or("");
    text.split('\n')
        .skip(1)
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim(), v.trim()))
        })
        .collect()
}

fn header<'a>(hs: &[(&'a str, &'a str)], name: &str) -> Option<&'a str> {
    hs.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// Parses the record starting at or after `pos`.
fn parse_record(buf: &[u8], mut pos: usize) -> Option<(RawRecord<'_>, usize)> {
    while pos < buf.len()
        && (buf[pos] == b'\r'
            || buf[pos] == b'\n'
            || buf[pos] == b' '
            || buf[pos] == b'\t'
            || buf[pos] == 0)
    {
        pos += 1;
    }
    if pos >= buf.len() {
        return None;
    }
    let start = pos;
    if !buf[pos..].starts_with(b"WARC/") {
        let next = next_record_start(buf, pos).unwrap_or(buf.len());
        return Some((
            RawRecord {
                start,
                kind: RawKind::Garbage { len: next - pos },
            },
            next,
        ));
    }
    let (hend, body) = match (find(buf, b"\r\n\r\n", pos), find(buf, b"\n\n", pos)) {
        (Some(a), Some(b)) if b + 2 < a + 4 => (b, b + 2),
        (Some(a), _) => (a, a + 4),
        (None, Some(b)) => (b, b + 2),
        (None, None) => {
            let headers = parse_headers(&buf[pos..]);
            return Some((
                RawRecord {
                    start,
                    kind: RawKind::Truncated {
                        headers,
                        have: 0,
                        want: None,
                    },
                },
                buf.len(),
            ));
        }
    };
    let headers = parse_headers(&buf[pos..hend]);
    let Some(len) = header(&headers, "Content-Length").and_then(|v| v.parse::<usize>().ok()) else {
        let next = next_record_start(buf, body).unwrap_or(buf.len());
        let detail = format!(
            "missing or bad Content-Length {:?}",
            header(&headers, "Content-Length")
        );
        return Some((
            RawRecord {
                start,
                kind: RawKind::BadHeader { detail },
            },
            next,
        ));
    };
    let end = body.saturating_add(len);
    if end > buf.len() {
        // Fewer bytes than the record declares, whether its gzip member or the file ended:
        // one rule, a truncated record (the declared length may be a crawler's cut).
        let have = buf.len() - body;
        return Some((
            RawRecord {
                start,
                kind: RawKind::Truncated {
                    headers,
                    have,
                    want: Some(len),
                },
            },
            buf.len(),
        ));
    }
    // The block should be followed by CRLF CRLF, then the next record or the end.
    let mut after = end;
    while after < buf.len() && (buf[after] == b'\r' || buf[after] == b'\n') {
        after += 1;
    }
    if after >= buf.len() || buf[after..].starts_with(b"WARC/") {
        return Some((
            RawRecord {
                start,
                kind: RawKind::Record {
                    headers,
                    block: &buf[body..end],
                    length_off: false,
                },
            },
            after,
        ));
    }
    // Content-Length is off: the record ends before the next `WARC/1.` line (or at the end).
    let next = next_record_start(buf, body).unwrap_or(buf.len());
    let e = trim_crlf_end(buf, body, next);
    Some((
        RawRecord {
            start,
            kind: RawKind::Record {
                headers,
                block: &buf[body..e],
                length_off: true,
            },
        },
        next,
    ))
}

fn strip_brackets(uri: &str) -> &str {
    let u = uri.trim();
    let u = u
        .strip_prefix('<')
        .or_else(|| u.strip_prefix('‹'))
        .unwrap_or(u);
    u.strip_suffix('>')
        .or_else(|| u.strip_suffix('›'))
        .unwrap_or(u)
}

impl WarcSource {
    fn outcome(&self, rec: RawRecord<'_>, offset: u64) -> Outcome {
        let (headers, block, length_off) = match rec.kind {
            RawKind::Record {
                headers,
                block,
                length_off,
            } => (headers, block, length_off),
            RawKind::Garbage { len } => {
                return self.skip(
                    SkipReason::MalformedWarc,
                    offset,
                    format!("{len} bytes that are not a WARC record"),
                );
            }
            RawKind::BadHeader { detail } => {
                return self.skip(SkipReason::MalformedWarc, offset, detail);
            }
            RawKind::Truncated {
                headers,
                have,
                want,
            } => {
                let id = header(&headers, "WARC-Record-ID").unwrap_or("(no record id)");
                let detail = match want {
                    Some(w) => {
                        format!("record {id} is truncated: {have} of {w} block bytes present")
                    }
                    None => format!("record {id} is truncated inside its headers"),
                };
                return self.skip(SkipReason::TruncatedRecord, offset, detail);
            }
        };
        let warc_type = header(&headers, "WARC-Type")
            .unwrap_or("")
            .to_ascii_lowercase();
        let id = header(&headers, "WARC-Record-ID")
            .map(|s| s.to_string())
            .unwrap_or_else(|| format!("{}:{}", self.source, offset));
        let url = header(&headers, "WARC-Target-URI").map(|u| strip_brackets(u).to_string());
        let raw_date = header(&headers, "WARC-Date");
        let date = raw_date.filter(|d| valid_date(d)).map(str::to_string);
        let mut meta = serde_json::Map::new();
        if let Some(d) = raw_date.filter(|d| !valid_date(d)) {
            // Kept, the date left empty: the record is still a document.
            meta.insert("warc_date_unparsed".into(), d.into());
        }
        meta.insert("warc_type".into(), warc_type.clone().into());
        if length_off {
            meta.insert("content_length_off".into(), true.into());
        }
        let mut doc = Document {
            id,
            offset,
            url,
            date,
            ..Default::default()
        };
        match warc_type.as_str() {
            "response" => match response(&headers, block, &mut meta, self.cap) {
                Err(detail) => {
                    let reason = if detail.contains("max_record_bytes") {
                        SkipReason::TooLarge
                    } else {
                        SkipReason::MalformedHttp
                    };
                    return self.skip_doc(reason, &doc, format!("{}: {detail}", doc.id));
                }
                Ok(p) => {
                    meta.insert("http_status".into(), p.status.into());
                    // Crawlers cut long payloads (`length`, `time`, `disconnect`): the page's
                    // start is kept, and marked.
                    if let Some(t) = header(&headers, "WARC-Truncated") {
                        meta.insert("warc_truncated".into(), t.into());
                    }
                    meta.insert("content_type".into(), p.mime.clone().into());
                    if !(200..300).contains(&p.status) {
                        return self.skip_doc(
                            SkipReason::HttpStatus,
                            &doc,
                            format!("{}: HTTP status {}", doc.id, p.status),
                        );
                    }
                    let (text, charset, charset_from, html) = match p.payload {
                        HttpPayload::Html {
                            text,
                            charset,
                            charset_from,
                        } => (text, charset, charset_from, true),
                        HttpPayload::Text {
                            text,
                            charset,
                            charset_from,
                        } => (text, charset, charset_from, false),
                        HttpPayload::Other => {
                            return self.skip_doc(
                                SkipReason::NonTextPayload,
                                &doc,
                                format!("{}: content type `{}`", doc.id, p.mime),
                            );
                        }
                    };
                    if text.is_empty() {
                        return self.skip_doc(
                            SkipReason::EmptyText,
                            &doc,
                            format!("{}: empty payload", doc.id),
                        );
                    }
                    meta.insert("charset".into(), charset.into());
                    meta.insert("charset_from".into(), charset_from.into());
                    if html {
                        doc.html = Some(text);
                    } else {
                        doc.text = Some(text);
                    }
                }
            },
            "conversion" => {
                doc.lang = header(&headers, "WARC-Identified-Content-Language").map(str::to_string);
                if let Some(r) = header(&headers, "WARC-Refers-To") {
                    meta.insert("refers_to".into(), r.into());
                }
                match std::str::from_utf8(block) {
                    Ok(t) => doc.text = Some(t.to_string()),
                    Err(e) => {
                        return self.skip(
                            SkipReason::InvalidUtf8,
                            offset,
                            format!(
                                "{}: WET text is not UTF-8 at block byte {}",
                                doc.id,
                                e.valid_up_to()
                            ),
                        );
                    }
                }
            }
            // WAT files carry JSON metadata records; crawler WARCs carry `application/warc-fields`
            // metadata (fetch times, outlinks) that is not a document.
            "metadata" => match serde_json::from_slice::<serde_json::Value>(block) {
                Ok(v) => {
                    meta.insert("wat".into(), v);
                }
                Err(_) => return Outcome::Ignored("metadata"),
            },
            "resource" => {
                let ct = header(&headers, "Content-Type")
                    .unwrap_or("")
                    .to_ascii_lowercase();
                if !ct.starts_with("text/") {
                    return self.skip(
                        SkipReason::NonTextPayload,
                        offset,
                        format!("{}: resource of type `{ct}`", doc.id),
                    );
                }
                doc.text = Some(String::from_utf8_lossy(block).into_owned());
            }
            "warcinfo" => return Outcome::Ignored("warcinfo"),
            "request" => return Outcome::Ignored("request"),
            "revisit" => return Outcome::Ignored("revisit"),
            "continuation" => return Outcome::Ignored("continuation"),
            _ => return Outcome::Ignored("other"),
        }
        doc.metadata = Some(serde_json::Value::Object(meta).to_string());
        Outcome::Doc(doc)
    }
}
