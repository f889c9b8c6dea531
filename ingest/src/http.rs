//! HTTP responses inside WARC records: status, headers, de-chunking, content-encoding and
//! charset decoding of the payload.

use std::io::Read;

use encoding_rs::{Encoding, UTF_8};

/// The payload of a response, decoded.
#[derive(Debug)]
pub enum HttpPayload {
    /// HTML (text/html, application/xhtml+xml) decoded to UTF-8.
    Html {
        /// The page, decoded.
        text: String,
        /// The charset it was decoded from (lower-case WHATWG name).
        charset: String,
        /// Where the charset came from: `bom`, `http` (Content-Type), `meta`, `bytes` (sniffed)
        /// or `default`.
        charset_from: &'static str,
    },
    /// text/plain decoded to UTF-8.
    Text {
        /// The text, decoded.
        text: String,
        /// The charset it was decoded from (lower-case WHATWG name).
        charset: String,
        /// Where the charset came from, as for [`HttpPayload::Html`].
        charset_from: &'static str,
    },
    /// Anything else (images, PDFs, scripts, binaries).
    Other,
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Lower-case media type without parameters (`text/html`).
    pub mime: String,
    /// The body, de-chunked, decompressed and decoded.
    pub payload: HttpPayload,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What [`decode_response`] lets a compressed body inflate to: the default `max_record_bytes`.
pub const MAX_DECODED_BODY: usize = 64 << 20;

/// Parses an `application/http; msgtype=response` block; a compressed body may inflate to
/// [`MAX_DECODED_BODY`] bytes.
pub fn decode_response(block: &[u8]) -> Result<HttpResponse, String> {
    decode_response_capped(block, MAX_DECODED_BODY)
}

/// Inflates `r` into a buffer of at most `cap` bytes; a body that inflates past it (a gzip
/// bomb) is refused naming the limit, never held.
fn inflate_capped(r: impl Read, cap: usize, what: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    r.take(cap as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|err| format!("{what} content-encoding does not decode: {err}"))?;
    if out.len() > cap {
        return Err(format!(
            "{what} content-encoding inflates to over max_record_bytes {cap}"
        ));
    }
    Ok(out)
}

/// [`decode_response`] with a cap of `cap` bytes on the decompressed body.
pub fn decode_response_capped(block: &[u8], cap: usize) -> Result<HttpResponse, String> {
    let (head_end, body_start) = match (find(block, b"\r\n\r\n"), find(block, b"\n\n")) {
        (Some(a), Some(b)) if b < a => (b, b + 2),
        (Some(a), _) => (a, a + 4),
        (None, Some(b)) => (b, b + 2),
        (None, None) => (block.len(), block.len()),
    };
    let head = String::from_utf8_lossy(&block[..head_end]);
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or("");
    if !status_line.starts_with("HTTP/") {
        return Err(format!(
            "not an HTTP response (status line {:?})",
            truncate(status_line, 60)
        ));
    }
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {:?}", truncate(status_line, 60)))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    let content_type = get("content-type").unwrap_or("");
    let mut body: Vec<u8> = block[body_start.min(block.len())..].to_vec();
    if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        // Common Crawl stores de-chunked payloads (and renames the header); wget does not.
        if let Some(b) = dechunk(&body) {
            body = b;
        }
    }
    match get("content-encoding").map(|v| v.trim().to_ascii_lowercase()) {
        None => {}
        Some(e) if e.is_empty() || e == "identity" => {}
        // A gzip header over a body that is not gzip (crawlers that stored the decoded
        // body but kept the header): the bytes decide.
        Some(e) if (e == "gzip" || e == "x-gzip") && !body.starts_with(&[0x1f, 0x8b]) => {}
        Some(e) if e == "gzip" || e == "x-gzip" => {
            body = inflate_capped(flate2::read::MultiGzDecoder::new(&body[..]), cap, "gzip")?;
        }
        Some(e) if e == "deflate" => {
            body = match inflate_capped(flate2::read::ZlibDecoder::new(&body[..]), cap, "deflate") {
                Err(e) if !e.contains("max_record_bytes") => {
                    inflate_capped(flate2::read::DeflateDecoder::new(&body[..]), cap, "deflate")?
                }
                r => r?,
            };
        }
        Some(e) => return Err(format!("unsupported content-encoding `{e}`")),
    }
    let (mime, payload) = decode_body(content_type, body);
    Ok(HttpResponse {
        status,
        mime,
        payload,
    })
}

/// A body (de-chunked and decompressed) of media type `content_type` decoded: the media type
/// (sniffed as HTML when none is given and the body starts with `<`) and the payload. Also
/// what a `response` record without HTTP headers gets, with the WARC `Content-Type`.
pub fn decode_body(content_type: &str, body: Vec<u8>) -> (String, HttpPayload) {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let sniffed_html = mime.is_empty() && body.trim_ascii_start().first() == Some(&b'<');
    let kind = match mime.as_str() {
        "text/html" | "application/xhtml+xml" => 'h',
        "text/plain" => 't',
        _ if sniffed_html => 'h',
        _ => 'o',
    };
    let payload = match kind {
        'o' => HttpPayload::Other,
        // A text content type on bytes that are not text (images, archives served as
        // text/html): NUL bytes do not occur in text in any ASCII-compatible charset.
        _ if looks_binary(&body) => HttpPayload::Other,
        k => {
            let (enc, from) = choose_encoding(content_type, &body, k == 'h');
            // `decode` sniffs a BOM first, as browsers do, and replaces malformed sequences.
            let (text, used, _had_errors) = enc.decode(&body);
            let text = text.into_owned();
            let charset = used.name().to_ascii_lowercase();
            if k == 'h' {
                HttpPayload::Html {
                    text,
                    charset,
                    charset_from: from,
                }
            } else {
                HttpPayload::Text {
                    text,
                    charset,
                    charset_from: from,
                }
            }
        }
    };
    (
        if sniffed_html {
            "text/html".into()
        } else {
            mime
        },
        payload,
    )
}

/// NUL bytes in the first 4 KiB (outside a UTF-16 BOM'd body): not text.
fn looks_binary(body: &[u8]) -> bool {
    if body.starts_with(&[0xFF, 0xFE]) || body.starts_with(&[0xFE, 0xFF]) {
        return false;
    }
    body[..body.len().min(4096)].contains(&0)
}

/// The body's encoding: a BOM; else the declared charset (HTTP header, then `<meta>`) when the
/// bytes agree with it; else `chardetng`'s guess. A declared UTF-8 that is not valid UTF-8, or
/// a declared single-byte charset on bytes that are valid UTF-8 with non-ASCII, is a wrong
/// declaration (both are common) and the bytes win.
fn choose_encoding(
    content_type: &str,
    body: &[u8],
    html: bool,
) -> (&'static Encoding, &'static str) {
    if let Some((e, _)) = Encoding::for_bom(body) {
        return (e, "bom");
    }
    let declared = charset_param(content_type)
        .and_then(|c| Encoding::for_label(c.as_bytes()))
        .map(|e| (e, "http"))
        .or_else(|| {
            html.then(|| meta_charset(body))
                .flatten()
                .map(|e| (e, "meta"))
        });
    let utf8 = std::str::from_utf8(body).is_ok();
    match declared {
        Some((e, from)) if e == UTF_8 && utf8 => (e, from),
        Some((e, from)) if e != UTF_8 && (!utf8 || body.is_ascii()) => (e, from),
        _ if utf8 => (
            UTF_8,
            if declared.is_some() {
                "bytes"
            } else {
                "default"
            },
        ),
        _ => {
            let mut det = chardetng::EncodingDetector::new(chardetng::Iso2022JpDetection::Deny);
            det.feed(body, true);
            (det.guess(None, chardetng::Utf8Detection::Allow), "detected")
        }
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn charset_param(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| v.trim().trim_matches(['"', '\'']).to_string())
    })
}

/// The charset a `<meta charset>` or `<meta http-equiv=Content-Type content=...>` declares in
/// the first 1024 bytes (the HTML standard's prescan window).
pub fn meta_charset(body: &[u8]) -> Option<&'static Encoding> {
    let head = &body[..body.len().min(1024)];
    let lower: Vec<u8> = head.to_ascii_lowercase();
    let mut from = 0;
    while let Some(p) = find(&lower[from..], b"<meta").map(|p| p + from) {
        let end = lower[p..]
            .iter()
            .position(|&b| b == b'>')
            .map_or(lower.len(), |e| p + e);
        let tag = &lower[p..end];
        if let Some(c) = find(tag, b"charset") {
            let mut rest = &tag[c + 7..];
            rest = rest.trim_ascii_start();
            if let Some(r) = rest.strip_prefix(b"=") {
                let r = r.trim_ascii_start();
                let r = r
                    .strip_prefix(b"\"")
                    .or_else(|| r.strip_prefix(b"'"))
                    .unwrap_or(r);
                let label_end = r
                    .iter()
                    .position(|&b| {
                        b == b'"' || b == b'\'' || b == b';' || b == b'/' || b.is_ascii_whitespace()
                    })
                    .unwrap_or(r.len());
                if let Some(e) = Encoding::for_label(&r[..label_end]) {
                    // A page that claims UTF-16 in ASCII-compatible bytes is UTF-8 (HTML standard).
                    return Some(
                        if e == encoding_rs::UTF_16LE || e == encoding_rs::UTF_16BE {
                            UTF_8
                        } else {
                            e
                        },
                    );
                }
            }
        }
        from = end.max(p + 5);
    }
    None
}

/// Removes HTTP/1.1 chunked transfer coding; `None` if the body is not validly chunked.
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    loop {
        let nl = find(b, b"\n")?;
        let line = std::str::from_utf8(&b[..nl]).ok()?.trim();
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        b = &b[nl + 1..];
        if size == 0 {
            return Some(out);
        }
        if b.len() < size {
            return None;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size..];
        b = b
            .strip_prefix(b"\r\n")
            .or_else(|| b.strip_prefix(b"\n"))
            .unwrap_or(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charset_from_header_then_meta_then_default() {
        let r = decode_response(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=ISO-8859-1\r\n\r\n<p>caf\xe9</p>",
        )
        .unwrap();
        match r.payload {
            HttpPayload::Html {
                text,
                charset,
                charset_from,
            } => {
                assert_eq!(text, "<p>café</p>");
                assert_eq!(charset, "windows-1252");
                assert_eq!(charset_from, "http");
            }
            other => panic!("{other:?}"),
        }
        let r = decode_response(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<meta charset=\"shift_jis\"><p>\x93\xfa\x96\x7b</p>").unwrap();
        match r.payload {
            HttpPayload::Html {
                text, charset_from, ..
            } => {
                assert!(text.contains("日本"), "{text}");
                assert_eq!(charset_from, "meta");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_or_missing_charsets_are_detected_and_binary_bodies_refused() {
        // no declaration, windows-1252 bytes: detected
        let r = decode_response(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<p>Le caf\xe9 \xe9tait d\xe9j\xe0 ferm\xe9 quand nous sommes arriv\xe9s \xe0 la gare.</p>",
        )
        .unwrap();
        match r.payload {
            HttpPayload::Html {
                text, charset_from, ..
            } => {
                assert!(text.contains("café était déjà fermé"), "{text}");
                assert_eq!(charset_from, "detected");
            }
            other => panic!("{other:?}"),
        }
        // declared UTF-8 but Latin-1 bytes: the declaration is wrong
        let r = decode_response(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>na\xefve r\xe9sum\xe9 du caf\xe9 et de la cr\xe8me br\xfbl\xe9e</p>",
        )
        .unwrap();
        assert!(
            matches!(r.payload, HttpPayload::Html { ref text, charset_from: "detected", .. } if text.contains("résumé"))
        );
        // declared Latin-1 but the bytes are UTF-8
        let r = decode_response(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=iso-8859-1\r\n\r\n<p>déjà vu</p>"
                .as_bytes(),
        )
        .unwrap();
        assert!(
            matches!(r.payload, HttpPayload::Html { ref text, charset_from: "bytes", .. } if text.contains("déjà"))
        );
        // a PNG served as text/html
        let r = decode_response(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR").unwrap();
        assert!(matches!(r.payload, HttpPayload::Other));
    }

    #[test]
    fn chunked_and_gzip_bodies_are_decoded() {
        let r = decode_response(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").unwrap();
        assert!(matches!(r.payload, HttpPayload::Text { ref text, .. } if text == "hello world"));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, b"<b>zipped</b>").unwrap();
        let mut block =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Encoding: gzip\r\n\r\n"
                .to_vec();
        block.extend(gz.finish().unwrap());
        let r = decode_response(&block).unwrap();
        assert!(matches!(r.payload, HttpPayload::Html { ref text, .. } if text == "<b>zipped</b>"));
    }

    #[test]
    fn non_text_and_bad_status_lines() {
        let r =
            decode_response(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\r\n\x89PNG").unwrap();
        assert!(matches!(r.payload, HttpPayload::Other));
        assert_eq!(r.mime, "image/png");
        assert!(decode_response(b"garbage\r\n\r\n").is_err());
        assert_eq!(
            decode_response(b"HTTP/1.1 404 Not Found\r\n\r\n")
                .unwrap()
                .status,
            404
        );
    }
}
