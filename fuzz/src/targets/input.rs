//! Inputs a build reads: WARC/WET/WAT, HTTP responses, JSONL, Parquet, HTML.

use std::io::Write;
use std::path::Path;

use tokenmill_ingest::chat::{ChatFields, ChatFormat};
use tokenmill_ingest::{DocumentReader, ReadConfig};

/// Reads `path` to its end and checks that every record is accounted for: the rows of the
/// batches are the documents counted, and every skipped document counted is also handed out
/// in a skip record.
fn read_all(path: &Path, opts: &ReadConfig) {
    let Ok(mut reader) = DocumentReader::open(path, opts) else {
        return;
    };
    let mut rows = 0u64;
    let mut skips = 0u64;
    for batch in reader.by_ref() {
        match batch {
            Ok(b) => rows += b.num_rows() as u64,
            // An error ends the file: an answer, not a finding.
            Err(_) => return,
        }
    }
    skips += reader.take_skips().iter().map(|s| s.documents).sum::<u64>();
    let stats = reader.stats();
    assert_eq!(rows, stats.documents, "rows produced ≠ documents counted");
    assert_eq!(
        skips,
        stats.skipped.total(),
        "skips handed out ≠ skips counted"
    );
}

/// Reader settings for fuzzing: records up to 4 MiB (a 1 MiB input cannot ask for more than
/// the limit through a gzip bomb), small batches so batching is exercised.
fn opts() -> ReadConfig {
    ReadConfig {
        max_record_bytes: 4 << 20,
        batch_rows: 7,
        ..ReadConfig::default()
    }
}

/// WARC, WET or WAT bytes (the reader sniffs gzip by its magic bytes).
pub fn warc(data: &[u8]) {
    let path = crate::scratch_file("input.warc", data);
    read_all(&path, &opts());
}

/// An HTTP response block (what follows the WARC headers of a `response` record).
pub fn http(data: &[u8]) {
    if let Ok(r) = tokenmill_ingest::http::decode_response_capped(data, 4 << 20) {
        let _ = r;
    }
    let _ = tokenmill_ingest::http::meta_charset(data);
    // The body decoder on its own, with a content type from the first line.
    let (ct, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => (String::new(), data),
    };
    let _ = tokenmill_ingest::http::decode_body(&ct, body.to_vec());
}

/// The first byte picks the container and the record layout; the rest is the file:
/// bits 0–1: plain `.jsonl`, `.jsonl.gz`, `.jsonl.zst`, or plain text compressed here with gzip
/// (so mutations reach the JSON under a valid container); bits 2–3: texts, or conversations
/// in OpenAI, ShareGPT or Alpaca layout.
pub fn jsonl(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let path = match mode & 3 {
        0 => crate::scratch_file("input.jsonl", body),
        1 => crate::scratch_file("input.jsonl.gz", body),
        2 => crate::scratch_file("input.jsonl.zst", body),
        _ => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(body).expect("in memory");
            crate::scratch_file("input.jsonl.gz", &gz.finish().expect("in memory"))
        }
    };
    read_all(&path, &with_chat(opts(), mode >> 2));
}

/// A Parquet input file; the first byte picks texts or a conversation layout, as for JSONL.
pub fn parquet(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let path = crate::scratch_file("input.parquet", body);
    read_all(&path, &with_chat(opts(), mode));
}

fn with_chat(opts: ReadConfig, mode: u8) -> ReadConfig {
    let format = match mode & 3 {
        0 => return opts,
        1 => ChatFormat::Openai,
        2 => ChatFormat::Sharegpt,
        _ => ChatFormat::Alpaca,
    };
    ReadConfig {
        chat: Some(ChatFields {
            format,
            ..ChatFields::default()
        }),
        ..opts
    }
}

/// An HTML page through the extractor (as `extract` and the web recipe run it), with both
/// precision settings.
pub fn html(data: &[u8]) {
    let page = String::from_utf8_lossy(data);
    let mut cfg = tokenmill_extract::ExtractorConfig {
        max_bytes: 1 << 20,
        ..Default::default()
    };
    let out = tokenmill_extract::extract(&page, &cfg);
    assert!(
        out.text.len() <= 4 * page.len() + 64,
        "extracted text of {} bytes from a page of {}",
        out.text.len(),
        page.len()
    );
    cfg.favor_precision = true;
    cfg.include_comments = true;
    let _ = tokenmill_extract::extract(&page, &cfg);
}
