//! The fast byte-level BPE encoder (`tokenmill_shards::fastbpe`) gives exactly HF
//! `tokenizers`' ids, for GPT-2's and DeepSeek-V3's `tokenizer.json`, on every text of the
//! shared real data: the Common Crawl JSONL corpora, the WARC files' raw records (HTML,
//! headers), the UDHR's HTML in 532 languages, the Japanese novel, the English books, the
//! 69-language paragraphs — and on generated strings made to stress the pre-tokenizer (runs of
//! digits, spaces, newlines, punctuation, mixed scripts, emoji, combining marks).

use std::io::Read;
use std::path::Path;

use tokenizers::Tokenizer;
use tokenmill_shards::fastbpe::FastBpe;
use tokenmill_tests::{data, data_dir};

/// A gzip file's bytes (as far as they decode: one WARC file is truncated on purpose).
fn gunzip(p: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut r = flate2::read::MultiGzDecoder::new(std::fs::File::open(p).unwrap());
    let mut buf = [0u8; 1 << 16];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// `text` in pieces of about `n` bytes, cut at character boundaries (and the whole text).
fn chunks(text: &str, n: usize, out: &mut Vec<String>) {
    let mut at = 0;
    while at < text.len() {
        let mut end = (at + n).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push(text[at..end].to_string());
        at = end;
    }
}

/// Every text of the shared data, as documents.
fn corpus() -> Vec<String> {
    let mut docs = Vec::new();
    let dir = data_dir();
    for f in std::fs::read_dir(dir.join("jsonl")).unwrap() {
        let p = f.unwrap().path();
        for line in String::from_utf8_lossy(&gunzip(&p)).lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
                && let Some(t) = v["text"].as_str()
            {
                docs.push(t.to_string());
            }
        }
    }
    for f in std::fs::read_dir(dir.join("warc")).unwrap() {
        let p = f.unwrap().path();
        chunks(&String::from_utf8_lossy(&gunzip(&p)), 4096, &mut docs);
    }
    for name in [
        "tinyshakespeare.txt",
        "canterbury-alice29.txt",
        "botchan.txt",
    ] {
        let t = std::fs::read_to_string(data(&format!("text/{name}"))).unwrap();
        chunks(&t, 8192, &mut docs);
    }
    let ja = std::fs::read_to_string(data("multilingual/wagahaiwa_nekodearu.ja.txt")).unwrap();
    chunks(&ja, 8192, &mut docs);
    let wl: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data("multilingual/whatlang-examples.json")).unwrap(),
    )
    .unwrap();
    docs.extend(
        wl.as_object()
            .unwrap()
            .values()
            .filter_map(|v| v.as_str().map(String::from)),
    );
    let udhr = tempfile::tempdir().unwrap();
    let st = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(data("multilingual/udhr-532-languages.tar.gz"))
        .arg("-C")
        .arg(udhr.path())
        .status()
        .unwrap();
    assert!(st.success(), "tar could not unpack the UDHR");
    let mut n = 0;
    for f in std::fs::read_dir(udhr.path().join("declaration")).unwrap() {
        let p = f.unwrap().path();
        docs.push(String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned());
        n += 1;
    }
    assert!(n >= 530, "{n} UDHR pages");
    docs
}

/// Strings made to stress the pre-tokenizer: random sequences of awkward pieces.
fn generated(n: usize) -> Vec<String> {
    let parts = [
        " ",
        "  ",
        "   ",
        "\t",
        "\n",
        "\n\n",
        "\r\n",
        " \n ",
        "\u{a0}",
        "\u{3000}",
        "1",
        "12",
        "1234567",
        "٣٤٥",
        "Ⅻ",
        "½",
        "a",
        "Word",
        "'s",
        "'ll",
        "'S",
        "don't",
        "é",
        "e\u{301}",
        "中文",
        "日本語の",
        "カタカナ",
        "한국어",
        "ไทย",
        "עברית",
        "العربية",
        "Ελληνικά",
        "😀",
        "👨‍👩‍👧",
        "!",
        "!!",
        "...",
        "—",
        "«»",
        "#",
        "$5",
        "@user",
        "http://x.org/a?b=c",
        "\\",
        "_",
        "{}",
        "()",
        "<b>",
        "&amp;",
        "\u{200b}",
        "\u{feff}",
        "ß",
        "İ",
        "ﬁ",
    ];
    let mut rng = 0x9E3779B97F4A7C15u64;
    (0..n)
        .map(|_| {
            let mut s = String::new();
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let len = 1 + (rng % 24) as usize;
            for _ in 0..len {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                s.push_str(parts[(rng % parts.len() as u64) as usize]);
            }
            s
        })
        .collect()
}

fn check(tokenizer: &str, docs: &[String]) {
    let json = tokenmill_shards::tokenizer::read_tokenizer_json(&data(tokenizer)).unwrap();
    check_json(tokenizer, &json, docs);
}

fn check_json(tokenizer: &str, json: &[u8], docs: &[String]) {
    let hf = Tokenizer::from_bytes(json).unwrap();
    let fast = FastBpe::from_json(json).unwrap_or_else(|e| panic!("{tokenizer}: {e}"));
    let (mut bytes, mut tokens, mut fell_back) = (0usize, 0usize, 0usize);
    for (i, d) in docs.iter().enumerate() {
        let want = hf
            .encode_fast(d.as_str(), false)
            .unwrap()
            .get_ids()
            .to_vec();
        match fast.encode(d) {
            Some(got) => {
                if got != want {
                    let at = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
                    let lo = at.saturating_sub(3);
                    panic!(
                        "{tokenizer}: document {i} differs at token {at}: fast {:?} vs HF {:?}\nHF tokens: {:?}",
                        &got[lo..(at + 4).min(got.len())],
                        &want[lo..(at + 4).min(want.len())],
                        want[lo..(at + 4).min(want.len())]
                            .iter()
                            .map(|&t| hf.id_to_token(t))
                            .collect::<Vec<_>>()
                    );
                }
                bytes += d.len();
                tokens += got.len();
            }
            None => fell_back += 1,
        }
    }
    eprintln!(
        "{tokenizer}: {} documents, {bytes} bytes, {tokens} tokens identical; {fell_back} with added tokens left to HF",
        docs.len()
    );
    assert!(fell_back * 20 < docs.len(), "{fell_back} fell back");
}

#[test]
fn fast_bpe_gives_hf_ids_on_every_real_text_for_gpt2_and_deepseek_v3() {
    let docs = corpus();
    assert!(docs.len() > 2000, "{} documents", docs.len());
    for t in [
        "tokenizers/gpt2.tokenizer.json",
        "tokenizers/deepseek-v3.tokenizer.json.gz",
    ] {
        check(t, &docs);
    }
}

#[test]
fn fast_bpe_gives_hf_ids_on_strings_that_stress_the_pre_tokenizer() {
    let docs = generated(20_000);
    for t in [
        "tokenizers/gpt2.tokenizer.json",
        "tokenizers/deepseek-v3.tokenizer.json.gz",
    ] {
        check(t, &docs);
    }
}

#[test]
fn a_tokenizer_json_of_another_form_is_named() {
    let json = tokenmill_shards::tokenizer::read_tokenizer_json(&data(
        "tokenizers/bert-base-uncased.tokenizer.json",
    ))
    .unwrap();
    let e = FastBpe::from_json(&json).unwrap_err();
    assert!(e.contains("WordPiece"), "{e}");
}

/// Found by fuzzing: GPT-2's vocabulary with one id given to two tokens ("I" takes "h"'s) —
/// Hugging Face loads it and encodes its own way; the fast encoder refuses it, so the
/// tokenizer stage falls back to Hugging Face and the ids stay Hugging Face's. And a
/// `tokenizer.json` that makes the tokenizers library panic (a number where its decoder
/// section wants a string key) is an error naming the file, not a crash.
#[test]
fn malformed_tokenizer_jsons_found_by_fuzzing_are_refused_or_fall_back() {
    use tokenmill_shards::{TextTokenizer, TokenizeConfig};
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data("tokenizers/gpt2.tokenizer.json")).unwrap())
            .unwrap();
    v["model"]["vocab"]["I"] = v["model"]["vocab"]["h"].clone();
    let json = serde_json::to_vec(&v).unwrap();
    let e = FastBpe::from_json(&json).unwrap_err();
    assert!(e.contains("given to two tokens"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, &json).unwrap();
    let t = TextTokenizer::load(&path, &TokenizeConfig::default()).unwrap();
    assert_eq!(t.identity().engine, "hf");
    let text = "It is high time. I said hi.";
    let hf = Tokenizer::from_bytes(&json).unwrap();
    assert_eq!(
        t.encode(text).unwrap(),
        hf.encode_fast(text, false).unwrap().get_ids()
    );

    // An id far beyond the vocabulary: the fast encoder's tables are indexed by id (a 3 GB
    // table for this one before the fix; fuzzing saw a 10 s "hang").
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data("tokenizers/gpt2.tokenizer.json")).unwrap())
            .unwrap();
    v["model"]["vocab"]["I"] = serde_json::json!(1_666_666_666u64);
    let e = FastBpe::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert!(e.contains("beyond the"), "{e}");

    // A merge listed twice (HF keeps the later rank), and a DeepSeek-V3 Split pattern with a
    // mutated class (`\\p{L}` → `\\psL}`, read differently by Oniguruma and the regex crate):
    // refused, so the stage uses HF.
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data("tokenizers/gpt2.tokenizer.json")).unwrap())
            .unwrap();
    let merges = v["model"]["merges"].as_array_mut().unwrap();
    let later = merges[40].clone();
    merges[0] = later;
    let e = FastBpe::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert!(e.contains("listed twice"), "{e}");
    let ds = tokenmill_shards::tokenizer::read_tokenizer_json(&data(
        "tokenizers/deepseek-v3.tokenizer.json.gz",
    ))
    .unwrap();
    let text = String::from_utf8(ds)
        .unwrap()
        .replacen("\\\\p{L}", "\\\\psL}", 1);
    let e = FastBpe::from_json(text.as_bytes()).unwrap_err();
    assert!(e.contains("without a scanner"), "{e}");

    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data("tokenizers/gpt2.tokenizer.json")).unwrap())
            .unwrap();
    v["decoder"] = serde_json::json!({"type": "ByteLevel", "add_prefix_space": {"1": 2}});
    let text = serde_json::to_string(&v)
        .unwrap()
        .replace("{\"1\":2}", "{1:2}");
    std::fs::write(&path, text).unwrap();
    let e = TextTokenizer::load(&path, &TokenizeConfig::default()).unwrap_err();
    let msg = format!("{e}: {:?}", std::error::Error::source(&e));
    assert!(
        msg.contains("tokenizer.json") && msg.contains("the tokenizers library failed"),
        "{msg}"
    );
}

#[test]
fn the_tokenizer_stage_picks_the_fast_encoder_and_leaves_added_tokens_to_hf() {
    use tokenmill_shards::{TextTokenizer, TokenizeConfig, TokenizerEngine};
    let gpt2 = data("tokenizers/gpt2.tokenizer.json");
    let cfg = |engine| TokenizeConfig {
        engine,
        ..Default::default()
    };
    let fast = TextTokenizer::load(&gpt2, &cfg(TokenizerEngine::Auto)).unwrap();
    let hf = TextTokenizer::load(&gpt2, &cfg(TokenizerEngine::Hf)).unwrap();
    assert_eq!(fast.identity().engine, "fast");
    assert_eq!(hf.identity().engine, "hf");
    // A special token inside the text: HF's added-token rules (here single_word, lstrip,
    // rstrip) apply, through HF.
    for text in [
        "one<|endoftext|>two",
        "a <|endoftext|> b",
        "x<|endoftext|>",
        "plain text, no special token",
    ] {
        assert_eq!(
            fast.encode(text).unwrap(),
            hf.encode(text).unwrap(),
            "{text:?}"
        );
    }
    // A 1 MB word (no spaces): one piece, merged by the heap in n log n, the same ids.
    let long: String = "abcdefghij".repeat(100_000);
    let t0 = std::time::Instant::now();
    let a = fast.encode(&long).unwrap();
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(a, hf.encode(&long).unwrap());
    eprintln!(
        "a 1 MB word: {} tokens in {secs:.3} s (fast encoder)",
        a.len()
    );
    // WordPiece: auto falls back, fast refuses with the reason.
    let bert = data("tokenizers/bert-base-uncased.tokenizer.json");
    assert_eq!(
        TextTokenizer::load(&bert, &cfg(TokenizerEngine::Auto))
            .unwrap()
            .identity()
            .engine,
        "hf"
    );
    let e = TextTokenizer::load(&bert, &cfg(TokenizerEngine::Fast))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("the fast encoder cannot run it: model \"WordPiece\""),
        "{e}"
    );
}

/// GPT-2's vocabulary and merges under another tokenizer's normalizer and pre-tokenizer: the
/// forms of Llama 3 (one cl100k-style `Split`, then `ByteLevel` without its regex) and of
/// tokenizers with a Unicode normalizer (Qwen 2: NFC). No such `tokenizer.json` is in the
/// shared data; HF `tokenizers` on the same file is the reference either way.
fn variant(normalizer: serde_json::Value, pre: Option<serde_json::Value>) -> Vec<u8> {
    let json =
        tokenmill_shards::tokenizer::read_tokenizer_json(&data("tokenizers/gpt2.tokenizer.json"))
            .unwrap();
    let mut t: serde_json::Value = serde_json::from_slice(&json).unwrap();
    t["normalizer"] = normalizer;
    if let Some(p) = pre {
        t["pre_tokenizer"] = p;
    }
    serde_json::to_vec(&t).unwrap()
}

#[test]
fn fast_bpe_gives_hf_ids_with_normalizers_and_the_llama3_pattern() {
    use serde_json::json;
    let mut docs = corpus();
    docs.extend(generated(20_000));
    let llama3 = json!({
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": tokenmill_shards::fastbpe::scan::CL100K_PATTERN}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]
    });
    check_json(
        "cl100k-pattern",
        &variant(serde_json::Value::Null, Some(llama3)),
        &docs,
    );
    check_json("NFC", &variant(json!({"type": "NFC"}), None), &docs);
    check_json(
        "NFKC then NFD",
        &variant(
            json!({"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "NFD"}]}),
            None,
        ),
        &docs,
    );
}
